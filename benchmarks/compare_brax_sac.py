"""Learning check: erljax SAC vs Brax's own SAC on the same task and budget.

Both learn from the environment reward on the same Brax env (same backend,
episode length, parallel envs, env-step budget, batch size, network sizes,
updates per vectorized step, discount, tau, replay size and random prefill)
and are evaluated the same way: the mean undiscounted return of deterministic
episodes. erljax runs all seeds at once (vmapped); Brax runs them one after
the other.

  python -m benchmarks.compare_brax_sac --seeds=3 --total_steps=60000 \
      --out=experiments/results/brax_sac_reacher.json

Prints per-seed final returns and the ratio erljax / brax, and writes JSON.
Differences that remain by design: Brax's SAC initialises alpha at 1 (erljax:
0.1, the reference value) and uses lecun-uniform init (erljax: orthogonal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from benchmarks import common  # sets TF_CPP_MIN_LOG_LEVEL before jax loads
import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from erljax.online import runner


def _args():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--task", default="reacher")
  p.add_argument("--seeds", type=int, default=3, help="seeds (a count)")
  p.add_argument("--total_steps", type=int, default=60_000)
  p.add_argument("--num_envs", type=int, default=8)
  p.add_argument("--episode_length", type=int, default=200)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--updates_per_step", type=int, default=4)
  p.add_argument("--hidden", default="256,256,256")
  p.add_argument("--seed_steps", type=int, default=1_000)
  p.add_argument("--num_evals", type=int, default=7)
  p.add_argument("--num_eval_envs", type=int, default=16)
  p.add_argument("--lr", type=float, default=3e-4)
  p.add_argument("--out", default="", help="JSON file to write (optional)")
  p.add_argument("--skip_brax", action="store_true")
  return p.parse_args()


def _setup(a) -> common.SACSetup:
  return common.SACSetup(
    task=a.task,
    num_envs=a.num_envs,
    episode_length=a.episode_length,
    batch_size=a.batch_size,
    updates_per_step=a.updates_per_step,
    hidden=tuple(int(h) for h in a.hidden.split(",")),
    seed_steps=a.seed_steps,
    lr=a.lr,
    replay_capacity=a.total_steps,
    num_eval_envs=a.num_eval_envs,
  )


def run_erljax(a):
  c = common.erljax_config(
    _setup(a), a.total_steps, a.total_steps // (a.num_evals - 1), a.seeds
  )
  res = runner.run(c, log=lambda s: print("[erljax]", s, flush=True))
  curve = [(r["env_steps"], r["eval_return_per_seed"]) for r in res.history]
  return {
    "final_per_seed": res.history[-1]["eval_return_per_seed"],
    "curve": curve,
    "compile_s": res.compile_seconds,
    "train_s": res.train_seconds,
  }


def run_brax(a):
  finals, curves, times = [], [], []
  for seed in range(a.seeds):
    curve = []

    def progress(step, metrics, curve=curve, seed=seed):
      curve.append((int(step), float(metrics["eval/episode_reward"])))
      print(
        f"[brax seed {seed}] step {step} eval_return {curve[-1][1]:.3f}",
        flush=True,
      )

    t = time.perf_counter()
    common.brax_sac_train(_setup(a), seed, a.total_steps, a.num_evals, progress)
    times.append(time.perf_counter() - t)
    finals.append(curve[-1][1])
    curves.append(curve)
  return {"final_per_seed": finals, "curves": curves, "wall_s": times}


def _ci95(x):
  x = np.asarray(x, np.float64)
  if x.size < 2:
    return 0.0
  return float(1.96 * x.std(ddof=1) / np.sqrt(x.size))


def main():
  a = _args()
  out = {
    "args": vars(a),
    "device": jax.devices()[0].device_kind,
    "platform": platform.platform(),
    "jax": jax.__version__,
  }
  out["erljax"] = run_erljax(a)
  if not a.skip_brax:
    out["brax"] = run_brax(a)
  e = np.asarray(out["erljax"]["final_per_seed"])
  print(
    f"erljax final eval return: {e.mean():.3f} ± {_ci95(e):.3f} "
    f"(per seed {np.round(e, 3).tolist()})"
  )
  if "brax" in out:
    b = np.asarray(out["brax"]["final_per_seed"])
    print(
      f"brax   final eval return: {b.mean():.3f} ± {_ci95(b):.3f} "
      f"(per seed {np.round(b, 3).tolist()})"
    )
    # Returns are negative on reacher: compare the gap to Brax's mean relative
    # to |Brax's mean|.
    rel = (e.mean() - b.mean()) / abs(b.mean())
    out["relative_difference"] = float(rel)
    print(f"relative difference (erljax - brax) / |brax|: {100 * rel:+.1f}%")
  if a.out:
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
      json.dump(out, f, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
  main()
