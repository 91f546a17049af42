"""Command line: the return and success rate of a trained policy, with CIs.

  python -m erljax.evaluate --workdir=runs/sac_reacher --episodes=20 \
      [--step=N] [--seed_index=K] [--rng_seed=R] [--video=out.gif] \
      [--out=eval.json]

Loads the actor of a training run's checkpoint with erljax.online.policy (the
latest unless --step; seed index --seed_index of the run's vmapped seeds,
default 0, which is the run's PRNG seed config.seed + K), plays --episodes
deterministic episodes at once in fresh envs of the run's task and episode
length (erljax.envs.rollout.evaluate, the evaluator of the run's own eval
records: return summed until a true termination, success if any counted
step succeeds) and prints the mean return
and success rate with percentile bootstrap 95% intervals over the episodes
(erljax.io.stats). The intervals say how well this one actor is measured, not
how much training seeds differ: evaluate each --seed_index for that. The
deprecated --seed takes a seed index or, where that is out of range, one of
the run's PRNG seeds (so after `--config.seed=3`, --seed=3 is the run's seed
3). --video writes one deterministic episode as a GIF (erljax.vision.media),
--out the figures and the per-episode values as JSON.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Dict, NoReturn, Optional, Sequence

from absl import flags
from absl import logging
import jax
import numpy as np

from erljax import cli_errors
from erljax import cli_flags
from erljax.envs import vec_env as envs
from erljax.envs import rollout as rollout_lib
from erljax.io import stats


def play(policy: Any, episodes: int, key: jax.Array) -> Dict[str, np.ndarray]:
  """Per-episode return [N] and success [N] (0 / 1 float) of N = episodes
  deterministic episodes of `policy` (an erljax.online.policy.Policy, its seed),
  played by erljax.envs.rollout.evaluate in envs reset with `key`."""
  if episodes < 1:
    raise ValueError(f"episodes={episodes}: must be >= 1")
  env = envs.make_vec_env(
    policy.trainer.env.task, episodes, policy.trainer.env.episode_length
  )

  @functools.partial(jax.jit, compiler_options=envs.compiler_options(env))
  def run(params, key):
    ev = rollout_lib.evaluate(env, functools.partial(policy.apply, params), key)
    return {k: ev[f"eval_{k}_episodes"] for k in ("return", "success")}

  return {k: np.asarray(v) for k, v in run(policy.seed_params, key).items()}


def summarize(
  returns: np.ndarray, successes: np.ndarray, reps: int = 2000
) -> Dict[str, Dict[str, Any]]:
  """Mean return and success rate over episodes (returns, successes [N]),
  each with its percentile bootstrap 95% interval: {"return": {"mean",
  "ci95": [lo, hi]}, "success": {"rate", "ci95"}}."""
  out = {}
  for name, point, values in (
    ("return", "mean", returns),
    ("success", "rate", successes),
  ):
    m, lo, hi = stats.stratified_bootstrap(
      np.asarray(values), stats.mean, reps=reps
    )
    out[name] = {point: m, "ci95": [lo, hi]}
  return out


def _fail(message: str) -> NoReturn:
  cli_errors.fail("erljax.evaluate", message)


def legacy_seed_index(value: int, first_seed: int, num_seeds: int) -> int:
  """The seed index the deprecated `--seed=value` names in a run of
  `num_seeds` seeds whose PRNG seeds are first_seed, first_seed + 1, ...

  A seed index (its old meaning) where that is in range, else one of the
  run's PRNG seeds; ValueError where it is neither, or both with different
  seeds.
  """
  as_index = 0 <= value < num_seeds
  as_seed = first_seed <= value < first_seed + num_seeds
  last = first_seed + num_seeds - 1
  if as_index and as_seed and first_seed != 0:
    raise ValueError(
      f"--seed={value} is ambiguous: seed index {value} is PRNG seed "
      f"{first_seed + value}, and PRNG seed {value} is seed index "
      f"{value - first_seed}; give --seed_index={value} or "
      f"--seed_index={value - first_seed}"
    )
  if as_index:
    return value
  if as_seed:
    return value - first_seed
  raise ValueError(
    f"--seed={value}: the run has {num_seeds} seeds, seed indices "
    f"0..{num_seeds - 1} (PRNG seeds {first_seed}..{last}); give "
    "--seed_index"
  )


def _check_flags(f: flags.FlagValues, argv: Sequence[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {list(argv[1:])}")
  if f.episodes < 1:
    _fail(f"--episodes={f.episodes}: must be >= 1")
  if f.seed_index < 0:
    _fail(f"--seed_index={f.seed_index}: must be a seed index >= 0")
  if f.step is not None and f.step < 0:
    _fail(f"--step={f.step}: must be >= 0 (or left out: the latest)")
  if f.video is not None and not f.video.lower().endswith(".gif"):
    _fail(f"--video={f.video}: must name a .gif file")


def main(
  argv: Sequence[str], flag_values: Optional[flags.FlagValues] = None
) -> None:
  """Runs the command; flag_values: parsed flags (default absl's FLAGS)."""
  f = flag_values if flag_values is not None else flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  _check_flags(f, argv)
  t0 = time.perf_counter()
  # pylint: disable-next=g-import-not-at-top (loads the whole training stack)
  from erljax.online import policy as policy_lib

  try:
    if f["seed"].present:
      if f["seed_index"].present:
        raise ValueError(
          "give only --seed_index (--seed is its deprecated name)"
        )
      policy = policy_lib.load(f.workdir, f.step)
      index = legacy_seed_index(f.seed, policy.config.seed, policy.num_seeds)
      cli_flags.warn_deprecated(
        "--seed",
        f"--seed_index={index}",
        f" (PRNG seed {f.seed})" if index != f.seed else "",
      )
      policy = policy.with_seed(index)
    else:
      policy = policy_lib.load(f.workdir, f.step, f.seed_index)
  except (FileNotFoundError, ValueError) as e:
    _fail(str(e))
  key = jax.random.PRNGKey(f.rng_seed)
  per_episode = play(policy, f.episodes, key)
  figures = summarize(per_episode["return"], per_episode["success"])
  length = policy.trainer.env.episode_length
  result = {
    "workdir": policy.workdir,
    "task": policy.task,
    "step": policy.step,
    "seed_index": policy.seed,
    "num_seeds": policy.num_seeds,
    "run_seed": policy.config.seed + policy.seed,
    "episodes": f.episodes,
    "episode_length": length,
    "rng_seed": f.rng_seed,
    **figures,
    "episode_returns": per_episode["return"].tolist(),
    "episode_successes": per_episode["success"].tolist(),
  }
  r, s = figures["return"], figures["success"]
  print(
    f"{policy.workdir}: {policy.task}, checkpoint step {policy.step}, "
    f"seed index {policy.seed} of {policy.num_seeds} (PRNG seed "
    f"{result['run_seed']}), {f.episodes} deterministic episodes of "
    f"{length} steps"
  )
  print(
    f"  return   {r['mean']:10.3f}  95% CI [{r['ci95'][0]:.3f}, "
    f"{r['ci95'][1]:.3f}]"
  )
  if policy.trainer.env.task.has_success:
    print(
      f"  success  {s['rate']:10.3f}  95% CI [{s['ci95'][0]:.3f}, "
      f"{s['ci95'][1]:.3f}]"
    )
  if f.video:
    # pylint: disable-next=g-import-not-at-top (imports MuJoCo rendering)
    from erljax.vision import media

    path = media.rollout_gif(
      policy.trainer, policy.seed_params, jax.random.fold_in(key, 1), f.video
    )
    print(f"  video    {path}")
  if f.out:
    os.makedirs(os.path.dirname(os.path.abspath(f.out)), exist_ok=True)
    with open(f.out, "w") as fh:
      json.dump(result, fh, indent=2)
    print(f"  wrote    {f.out}")
  print(f"  took     {time.perf_counter() - t0:.1f}s")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the command's flags in flag_values."""
  fv = {"flag_values": flag_values}
  flags.DEFINE_string(
    "workdir",
    None,
    "workdir of a python -m erljax.train run",
    required=True,
    **fv,
  )
  flags.DEFINE_integer(
    "step", None, "checkpoint step (default: the latest)", **fv
  )
  flags.DEFINE_integer("episodes", 10, "deterministic episodes (>= 1)", **fv)
  flags.DEFINE_integer(
    "seed_index",
    0,
    "which of the run's seeds acts (index K is PRNG seed config.seed + K)",
    **fv,
  )
  flags.DEFINE_integer(
    "seed",
    None,
    "deprecated: --seed_index, or one of the run's PRNG seeds where that "
    "index is out of range",
    **fv,
  )
  flags.DEFINE_integer("rng_seed", 0, "PRNG seed of the episodes' resets", **fv)
  flags.DEFINE_string("video", None, "write one episode as this .gif", **fv)
  flags.DEFINE_string(
    "out", None, "JSON file to write the figures into (optional)", **fv
  )


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top

  define_flags()
  app.run(main)
