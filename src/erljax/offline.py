"""Offline runs: rate a demonstration dataset, learn its reward, train IQL.

  python -m erljax.offline \
      --config=erljax:offline.py:pusher,erlvlm_iql \
      --config.dataset=data/pusher --config.workdir=runs/off_pusher_erlvlm

A run (all `num_seeds` seeds at once, over one seed axis of one compiled
program):
  1. loads the dataset (erljax.dataset) and flattens its valid steps;
  2. sets the reward by method: the env reward (true_iql), the success signal
     (sparse_iql), or, for erlvlm_iql / rbrl_iql, rates the dataset (from
     its stored ratings file when this rater rated it before) and trains one
     reward ensemble per seed with the online loop's learner, then relabels
     every transition with the ensemble mean (erljax.offline_reward); bc
     needs no reward;
  3. rescales each seed's rewards (iql.reward_norm) by the IQL paper's
     MuJoCo rule, 1000 / (max - min episode return over the dataset): a
     scale that keeps the optimal policy and puts every reward source on
     the one scale beta = 3 was chosen for;
  4. trains IQL (erljax.iql) in compiled chunks of offline.log_every
     gradient steps, evaluating the deterministic policy every
     offline.eval_every steps on offline.num_eval_envs fresh episodes.
With a workdir it writes config.json, metrics.jsonl / eval.csv /
seed_<S>.csv (erljax.metrics_writer; their `env_steps` column counts
gradient steps), orbax checkpoints (erljax.checkpoint; --config.resume=True
continues) and final.json (per-seed success and return, reward
diagnostics, timings).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from erljax import checkpoint as checkpoint_lib
from erljax import config as config_lib
from erljax import dataset as dataset_lib
from erljax import envs
from erljax import iql as iql_lib
from erljax import metrics_writer
from erljax import offline_config
from erljax import offline_reward
from erljax import rollout as rollout_lib


def normalize_rewards(
  rewards: np.ndarray, how: str, episode: np.ndarray | None = None
) -> np.ndarray:
  """rewards [S, M] -> [S, M], per seed.

  "returns" (the IQL paper's MuJoCo rule): r * 1000 / (max - min) of the
  dataset's episode returns under that seed's reward, episode [M] int giving
  each transition's episode (returns all equal: unscaled); "minmax" maps the
  rewards onto [0, 1] (constant rewards map to 0); "none" leaves them.
  """
  r = np.asarray(rewards, np.float32)
  if how == "none":
    return r
  if how == "returns":
    if episode is None:
      raise ValueError("normalize_rewards: 'returns' needs episode ids")
    returns = np.stack(
      [np.bincount(episode, weights=row) for row in r.astype(np.float64)]
    )
    ids = np.unique(episode)
    span = returns[:, ids].max(1) - returns[:, ids].min(1)
    scale = np.where(span > 0, 1000.0 / np.where(span > 0, span, 1.0), 1.0)
    return (r * scale[:, None]).astype(np.float32)
  lo = r.min(axis=1, keepdims=True)
  span = r.max(axis=1, keepdims=True) - lo
  return np.where(
    span > 0, (r - lo) / np.where(span > 0, span, 1.0), 0.0
  ).astype(np.float32)


def dataset_rewards(
  c: ml_collections.ConfigDict,
  data: Dict[str, np.ndarray],
  keys: jax.Array,
  log: Callable[[str], None],
) -> tuple[np.ndarray, Dict[str, Any]]:
  """Each seed's reward of every transition [S, M] for the method, and
  diagnostics of how it was obtained."""
  s, m = keys.shape[0], data["rewards"].shape[0]
  info: Dict[str, Any] = {}
  if c.method == "true_iql":
    r = np.broadcast_to(data["rewards"], (s, m))
  elif c.method == "sparse_iql":
    r = np.broadcast_to(data["success"].astype(np.float32), (s, m))
  elif c.method == "bc":
    r = np.zeros((s, m), np.float32)
  else:
    index, ratings, rate_info = offline_reward.rate_dataset(
      c, c.dataset, data, log
    )
    t0 = time.perf_counter()
    _, r, learn_info = offline_reward.learn_reward(
      c,
      data,
      index,
      ratings,
      jax.vmap(lambda k: jax.random.fold_in(k, 7))(keys),
    )
    r = np.asarray(r)
    info = {
      "ratings": rate_info,
      "reward": learn_info,
      "reward_seconds": time.perf_counter() - t0,
    }
    log(
      f"reward: epochs {learn_info['epochs']}, accuracy "
      f"{np.round(learn_info['reward_accuracy'], 3).tolist()}, "
      f"corr(r_hat, r) {np.round(learn_info['reward_corr'], 3).tolist()}, "
      f"corr(r_hat, rated) "
      f"{np.round(learn_info['signal_corr'], 3).tolist()}, labels "
      f"{learn_info['label_histogram']} ({learn_info['label_accuracy']:.3f}"
      " match the noise-free rater)"
    )
  return normalize_rewards(r, c.iql.reward_norm, data["episode"]), info


def _seed_axis(fn: Callable[..., Any], how: str, in_axes) -> Callable:
  """fn over a leading seed axis: vmap, or a sequential jax.lax.map."""
  if how == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    seeded = [a for a, ax in zip(args, in_axes) if ax == 0]

    def one(xs):
      it = iter(xs)
      return fn(*[next(it) if ax == 0 else a for a, ax in zip(args, in_axes)])

    return jax.lax.map(one, tuple(seeded))

  return mapped


def run(
  c: ml_collections.ConfigDict,
  log: Callable[[str], None] = functools.partial(print, flush=True),
) -> Dict[str, Any]:
  """One offline run of `c.num_seeds` seeds; returns the final summary
  (what final.json holds)."""
  offline_config.validate(c)
  t_start = time.perf_counter()
  ds = dataset_lib.load(c.dataset)
  if ds.task != c.task:
    raise config_lib.ConfigError(
      f"config.task={c.task!r}: the dataset in {c.dataset} holds "
      f"{ds.task!r} episodes"
    )
  data = ds.transitions()
  m = data["rewards"].shape[0]
  seeds = list(range(c.seed, c.seed + c.num_seeds))
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  rewards, reward_info = dataset_rewards(c, data, keys, log)

  obs_size, act_size = data["observations"].shape[1], data["actions"].shape[1]
  agent = iql_lib.IQL(obs_size, act_size, offline_config.iql_hyper(c))
  if c.iql.normalize_obs:
    obs_mean = data["observations"].mean(0)
    obs_std = data["observations"].std(0) + 1e-3
  else:
    obs_mean, obs_std = np.zeros(obs_size), np.ones(obs_size)
  shared = iql_lib.Batch(
    obs=jnp.asarray(data["observations"]),
    action=jnp.asarray(np.clip(data["actions"], -1.0, 1.0)),
    reward=jnp.zeros((m,)),
    discount=jnp.asarray(data["discount"]),
    next_obs=jnp.asarray(data["next_observations"]),
  )
  eval_env = envs.make_vec_env(
    c.task,
    c.offline.num_eval_envs,
    c.offline.episode_length or ds.episode_length,
  )
  axis = c.offline.seed_axis

  def init(key):
    return agent.init(
      key, jnp.asarray(obs_mean, jnp.float32), jnp.asarray(obs_std, jnp.float32)
    )

  def chunk(state, reward, key):
    return agent.train_steps(
      state, shared.replace(reward=reward), key, c.offline.log_every
    )

  def evaluate(state, key):
    ev = rollout_lib.evaluate(eval_env, lambda o: agent.act(state, o), key)
    return {k: ev[k] for k in ("eval_return", "eval_success")}

  t0 = time.perf_counter()
  init_fn = jax.jit(jax.vmap(init))
  state = init_fn(keys)
  chunk_fn = jax.jit(_seed_axis(chunk, axis, (0, 0, 0)), donate_argnums=0)
  eval_fn = jax.jit(_seed_axis(evaluate, axis, (0, 0)))
  rewards_d = jnp.asarray(rewards)
  chunk_keys = lambda step: jax.vmap(lambda k: jax.random.fold_in(k, step))(
    keys
  )
  eval_keys = lambda step: jax.vmap(
    lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), step)
  )(keys)
  chunk_fn = chunk_fn.lower(state, rewards_d, chunk_keys(0)).compile()
  eval_fn = eval_fn.lower(state, eval_keys(0)).compile()
  compile_s = time.perf_counter() - t0
  log(
    f"erljax.offline: task={c.task} method={c.method} seeds={c.num_seeds} "
    f"transitions={m} episodes={ds.num_episodes} compile={compile_s:.1f}s"
  )

  step, train_s, eval_s = 0, 0.0, 0.0
  records: List[Dict[str, Any]] = []
  ckpt = writer = None
  if c.workdir:
    ckpt = checkpoint_lib.Checkpointer.open(
      c, jax.eval_shape(init_fn, keys), log
    )
    template = {"iql": state, "progress": {}}
    restored = ckpt.restore(template) if c.resume else None
    if restored is not None:
      step, tree = restored
      state = tree["iql"]
      records = tree["progress"]["records"]
      log(f"resumed from the checkpoint at step {step}")
    with open(os.path.join(c.workdir, "config.json"), "w") as f:
      f.write(c.to_json_best_effort(indent=2))
    writer = metrics_writer.MetricsWriter(
      c.workdir,
      seeds,
      c.tensorboard,
      records,
      resume_step=step if restored is not None else None,
    )
    if writer.kept:
      log(f"metrics.jsonl of an earlier run kept as {writer.kept}")

  start = step

  def throughput() -> float:
    """Gradient steps per second of training in this process (0 if none:
    a resumed run that had nothing left to do)."""
    return (step - start) / train_s if train_s > 0 else 0.0

  def write(rec):
    if writer is not None:
      writer.write(rec)
    else:
      records.append(rec)

  def do_eval(train: Dict[str, Any]) -> Dict[str, Any]:
    nonlocal eval_s
    t = time.perf_counter()
    ev = {
      k: np.asarray(v).tolist()
      for k, v in jax.device_get(eval_fn(state, eval_keys(step))).items()
    }
    eval_s += time.perf_counter() - t
    rec: Dict[str, Any] = {
      "kind": "eval",
      "env_steps": step,
      "grad_steps": step,
      "time": train_s,
      "grad_steps_per_s": throughput(),
    }
    for k, v in {**ev, **train}.items():
      arr = np.asarray(v, np.float64)
      rec[f"{k}_per_seed"] = v
      rec[k] = float(arr.mean())
      rec[f"{k}_std"] = float(arr.std())
    write(rec)
    log(
      f"step {step:>7d}  eval_return {rec['eval_return']:9.3f} ± "
      f"{rec['eval_return_std']:.3f}  success {rec['eval_success']:.2f}  "
      f"steps/s {rec['grad_steps_per_s']:6.1f}"
    )
    return rec

  try:
    with checkpoint_lib.StopOnSignal() as stop:
      if step == 0:
        do_eval({})
      while step < c.offline.steps and not stop.requested:
        t = time.perf_counter()
        state, metrics = chunk_fn(state, rewards_d, chunk_keys(step))
        metrics = {
          k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()
        }
        train_s += time.perf_counter() - t
        step += c.offline.log_every
        bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
        if bad:
          raise FloatingPointError(
            f"non-finite IQL metric {bad[0]}={metrics[bad[0]]} at step {step}"
          )
        if step % c.offline.eval_every == 0 or step >= c.offline.steps:
          do_eval(metrics)
        if ckpt and (
          (c.checkpoint.every and ckpt.due(step))
          or stop.requested
          or step >= c.offline.steps
        ):
          ckpt.save(step, {"iql": state, "progress": {"records": records}})
  finally:
    if ckpt is not None:
      ckpt.close()
    if writer is not None:
      writer.close()
  last = [r for r in records if r["kind"] == "eval"][-1]
  summary = {
    "task": c.task,
    "method": c.method,
    "dataset": os.path.abspath(c.dataset),
    "seeds": seeds,
    "grad_steps": step,
    "transitions": m,
    "episodes": ds.num_episodes,
    "eval_success_per_seed": last["eval_success_per_seed"],
    "eval_return_per_seed": last["eval_return_per_seed"],
    "eval_success": last["eval_success"],
    "eval_return": last["eval_return"],
    "dataset_success": float(ds.episode_success.mean()),
    "dataset_return": float(ds.episode_return.mean()),
    "compile_seconds": compile_s,
    "train_seconds": train_s,
    "eval_seconds": eval_s,
    "grad_steps_per_s": throughput(),
    "seed_axis": axis,
    "total_seconds": time.perf_counter() - t_start,
    **reward_info,
  }
  if c.workdir:
    with open(os.path.join(c.workdir, "final.json"), "w") as f:
      json.dump(summary, f, indent=2)
  log(
    f"done: success {summary['eval_success']:.2f} return "
    f"{summary['eval_return']:.2f} ({c.num_seeds} seeds), "
    f"{summary['grad_steps_per_s']:.1f} grad steps/s"
  )
  return summary


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  if config is None:
    print(
      "erljax.offline: --config is required, e.g. "
      "--config=erljax:offline.py:pusher,erlvlm_iql",
      file=sys.stderr,
    )
    sys.exit(2)
  try:
    run(config)
  except config_lib.ConfigError as e:
    print(f"erljax: bad config: {e}", file=sys.stderr)
    sys.exit(2)
  except (dataset_lib.DatasetError, checkpoint_lib.WorkdirError) as e:
    print(f"erljax: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:
    print(f"erljax: training diverged: {e}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file(
    "config",
    None,
    "an erljax:offline.py:TASK,METHOD config (or a path to one)",
    lock_config=True,
  )
  from erljax import configs  # pylint: disable=g-import-not-at-top

  app.run(main, argv=configs.main_argv())
