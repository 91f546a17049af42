"""Refit reward models offline on the ratings a run stored: a loss ablation
that takes seconds instead of a training run per variant.

  python experiments/refit_ratings.py runs/study/CartpoleSwingup/erlvlm_noise0 \
      --noise=0,0.2 --epochs=50 --out=experiments/results/refit_cartpole

Reads the run's latest checkpoint: every seed's rating set (the rated
transitions and the quantity the rater judged) and replay buffer. The labels
are recomputed from the rated quantity by the run's scripted rater (its bins
and `rater.noise_kind`: "uniform" flips to a random other class, "boundary"
perturbs the rated value; see erljax.raters.scripted) at each label-noise
level in --noise (one fixed draw per level, the same for every variant).
Each variant (erlvlm, rbrl and the single enhancements, as in
experiments/configs/rating.py) trains a fresh reward ensemble for --epochs
epochs (no early stop) and is scored by the Pearson correlation of its reward
with the env reward over the seed's whole replay buffer, the figure a
feedback session logs as corr(r_hat, r).

Writes OUT.md (mean and per-seed correlations) and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

import numpy as np

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
)
sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
)
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import ml_collections

import rating
from erljax.io import snapshot
from erljax import cli_flags
from erljax.envs import tasks
from erljax.rewards import queries as feedback_lib
from erljax.rewards import learner as reward_learner
from erljax.rewards import source as reward_source
from erljax.raters.api import Queries, ScriptedRater

VARIANTS = ("erlvlm", "rbrl", "rbrl_mae", "rbrl_weights", "rbrl_stratified")


def read(run_dir: str):
  """(config, checkpoint step, rating sets [S, ...], buffer arrays
  {name: [S, N, ...]}) of a run that learned from ratings: its latest
  checkpoint, read without a template (erljax.io.snapshot.read_arrays), so
  checkpoints of older code read too. The buffer is cut to the fewest
  transitions any seed holds."""
  with open(os.path.join(run_dir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.reward.source != "learned" or (
    config.reward.feedback_type != "rating"
  ):
    raise ValueError(
      f"{run_dir}: not a run that learned from ratings "
      f"(reward.source={config.reward.source!r}, "
      f"feedback_type={config.reward.feedback_type!r})"
    )
  step, arrays = snapshot.read_arrays(run_dir)
  rs = feedback_lib.RatingSet(
    **{
      k: jnp.asarray(arrays[f"['loop']['rating_sets'].{k}"])
      for k in ("obs", "action", "label", "true_reward", "size", "insert_pos")
    }
  )
  size = arrays["['train'].buffer.size"]
  buf = {
    k: arrays[f"['train'].buffer.data.{k}"][:, : int(size.min())]
    for k in ("obs", "action", "true_reward")
  }
  return config, step, rs, buf


def load(run_dir: str):
  """(config, rating sets [S, ...], buffer arrays {name: [S, N, ...]}) of a
  run whose reward model is the state-action MLP (`read`)."""
  config, _, rs, buf = read(run_dir)
  if config.reward.model != "mlp":
    raise ValueError(
      f"{run_dir}: reward.model={config.reward.model!r}; "
      "refits are of the state-action 'mlp' (the r_hat-r "
      "correlation is taken over the buffer's obs, action)"
    )
  return config, rs, buf


def noisy_labels(
  config, rs: feedback_lib.RatingSet, noise: float, seed: int
) -> np.ndarray:
  """Labels [S, cap] of the rated quantity from the run's scripted rater
  (bins, rater.noise_kind) at label noise `noise`, drawn from `seed`."""
  task = tasks.rated_task(
    tasks.get_task(config.task), config.rater.rated, config.rater.range
  )
  n = config.rater.num_classes or task.num_classes
  rater = ScriptedRater.for_segments(
    n,
    task.rated_range,
    config.feedback.get("segment_length", 1),
    noise=noise,
    noise_kind=config.rater.noise_kind,
    seed=seed,
  )
  returns = np.asarray(rs.true_reward[..., 0]).reshape(-1)
  labels = rater.rate(Queries(true_return=returns)).labels
  return labels.reshape(rs.label.shape).astype(np.int32)


def refit(config, rs, buf, variant: str, epochs: int, seed: int) -> List[float]:
  """Per-seed corr(r_hat, env reward) of a fresh ensemble trained on rs."""
  c = config.copy_and_resolve_references()
  rating.apply_method(c, variant)
  c.reward.max_epochs, c.reward.stop_accuracy = epochs, 1.0
  num_seeds = rs.label.shape[0]
  src = reward_source.make(c, buf["obs"].shape[-1], buf["action"].shape[-1])
  learner = reward_learner.make_learner(
    c, c.rater.num_classes or tasks.get_task(c.task).num_classes, src.model
  )
  params = jax.vmap(src.init)(
    jax.random.split(jax.random.PRNGKey(seed), num_seeds)
  )
  opt_state = jax.vmap(learner.optimizer.init)(params)
  params, *_ = reward_learner.train_reward(
    learner,
    jax.jit(jax.vmap(learner.epoch)),
    params,
    opt_state,
    rs,
    np.random.default_rng(seed),
  )
  r_hat = jax.jit(jax.vmap(src.model.reward))(
    params, jnp.asarray(buf["obs"]), jnp.asarray(buf["action"])
  )
  return [
    float(np.corrcoef(np.asarray(r_hat[s]), buf["true_reward"][s])[0, 1])
    for s in range(num_seeds)
  ]


def main(argv=None) -> Dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("run", help="workdir of a run that learned from ratings")
  p.add_argument("--noise", default="0,0.2", help="comma-separated levels")
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--epochs", type=int, default=50)
  p.add_argument(
    "--rng_seed", type=int, default=0, help="seed of label noise and fits"
  )
  cli_flags.add_alias(p, "--seed", "--rng_seed", type=int)
  p.add_argument("--out", default="", help="path without suffix")
  a = p.parse_args(argv)
  config, rs, buf = load(a.run)
  variants = a.variants.split(",")
  for v in variants:
    if v not in VARIANTS:
      raise ValueError(
        f"--variants: unknown variant {v!r}; choose from {VARIANTS}"
      )
  sizes = np.asarray(rs.size).tolist()
  results = []
  for noise in (float(x) for x in a.noise.split(",")):
    labelled = rs.replace(
      label=jnp.asarray(noisy_labels(config, rs, noise, a.rng_seed))
    )
    for v in variants:
      corr = refit(config, labelled, buf, v, a.epochs, a.rng_seed)
      results.append(
        {
          "noise": noise,
          "variant": v,
          "corr": corr,
          "mean": float(np.mean(corr)),
        }
      )
      print(
        f"noise {noise:.2f}  {v:<16} corr {np.mean(corr):.3f}  "
        f"per seed {np.round(corr, 3).tolist()}",
        flush=True,
      )
  out = {
    "run": a.run,
    "task": config.task,
    "ratings_per_seed": sizes,
    "buffer_per_seed": int(buf["obs"].shape[1]),
    "epochs": a.epochs,
    "results": results,
  }
  if a.out:
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out + ".json", "w") as f:
      json.dump(out, f, indent=2)
    lines = [
      f"# Offline refit: {config.task}",
      "",
      f"`python experiments/refit_ratings.py {a.run} --noise={a.noise} "
      f"--epochs={a.epochs}`: {sizes[0]} ratings per seed, reward "
      f"correlation with the env reward over {buf['obs'].shape[1]} "
      "buffer transitions per seed.",
      "",
      "| noise | variant | corr (mean) | per seed |",
      "|---|---|---|---|",
    ]
    lines += [
      f"| {r['noise']:.2f} | {r['variant']} | {r['mean']:.3f} | "
      f"{', '.join(f'{c:.2f}' for c in r['corr'])} |"
      for r in results
    ]
    with open(a.out + ".md", "w") as f:
      f.write("\n".join(lines) + "\n")
    print(f"wrote {a.out}.md and {a.out}.json")
  return out


if __name__ == "__main__":
  main()
