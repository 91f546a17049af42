"""MetaWorld task throughput: erljax's two backends and MetaWorld's own env.

  PYTHONPATH=$PWD/src python -m benchmarks.metaworld_envs \
      --out=benchmarks/results/metaworld_envs.json \
      [--metaworld_python=/tmp/mwvenv/bin/python]

For each task (Sweep Into, Drawer Open, Soccer) and backend, times
`VecEnv.step` with uniform random actions inside one compiled scan of
--steps vectorized steps (benchmarks.run.env_throughput: compile apart,
median of --repeats calls after a warm-up), at each of --host_envs
(erljax's host backend: MuJoCo's C simulator through jax.pure_callback)
and --mjx_envs (MJX; slow to compile and to step on a CPU, so few envs by
default there). Env steps/s count every env.

With --metaworld_python=PY (an interpreter with `metaworld` installed,
e.g. a venv with metaworld==3.1.1), the same run times MetaWorld's own
env in that interpreter, one env stepped from Python with the same random
actions for 2,000 steps (reset every 500): the peer. Ratios erljax / peer
are reported per task and size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any, Dict, Optional, Sequence

from benchmarks import common
from benchmarks import run as bench_run
from erljax import cli_flags

TASKS = ("drawer-open", "sweep-into", "soccer")
_PEER = r"""
import importlib, json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import make_reference as mr
out = {}
for task in sys.argv[2].split(","):
  env = mr.make_env(task)
  rng = np.random.default_rng(0)
  env.reset()
  steps = int(sys.argv[3])
  t = time.perf_counter()
  for i in range(steps):
    if i and i % 500 == 0:
      env.reset()
    env.step(rng.uniform(-1, 1, 4).astype(np.float32))
  out[task] = steps / (time.perf_counter() - t)
print(json.dumps(out))
"""


def peer(python: str, tasks: Sequence[str], steps: int) -> Dict[str, float]:
  """MetaWorld's own env's steps/s per task, in interpreter `python`."""
  here = os.path.join(
    os.path.dirname(__file__), "..", "experiments", "metaworld"
  )
  res = subprocess.run(
    [python, "-c", _PEER, os.path.abspath(here), ",".join(tasks), str(steps)],
    capture_output=True,
    text=True,
    check=True,
    env={**os.environ, "MUJOCO_GL": "egl"},
  )
  return json.loads(res.stdout.strip().splitlines()[-1])


def _sizes(text: str):
  return tuple(int(v) for v in text.split(",") if v)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tasks", default=",".join(TASKS))
  p.add_argument("--host_envs", default="1,64,1024")
  p.add_argument("--mjx_envs", default="1")
  p.add_argument(
    "--steps", type=int, default=50, help="vectorized steps per timed call"
  )
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument(
    "--metaworld_python",
    default="",
    help="interpreter with metaworld installed (the peer)",
  )
  p.add_argument("--peer_steps", type=int, default=2_000)
  p.add_argument("--out", default="", help="JSON file to write (optional)")
  for name in ("host_envs", "mjx_envs", "metaworld_python"):
    cli_flags.add_alias(p, "--" + name.replace("_", "-"), "--" + name)
  cli_flags.add_alias(p, "--peer-steps", "--peer_steps", type=int)
  args = p.parse_args(argv)
  names = [t for t in args.tasks.split(",") if t]
  for t in names:
    if t not in TASKS:
      p.error(f"--tasks: unknown task {t!r}; choose from {TASKS}")
  out: Dict[str, Any] = {
    "machine": common.machine(),
    "versions": common.versions(),
    "args": vars(args),
    "results": [],
    "peer": None,
  }
  if args.metaworld_python:
    out["peer"] = peer(args.metaworld_python, names, args.peer_steps)
    print(
      "MetaWorld's own env (one env, Python loop): "
      + ", ".join(f"{t} {v:,.0f} steps/s" for t, v in out["peer"].items()),
      flush=True,
    )
  for task in names:
    for backend, sizes in (("host", args.host_envs), ("mjx", args.mjx_envs)):
      for n in _sizes(sizes):
        name = task if backend == "host" else f"{task}-mjx"
        r = bench_run.env_throughput(name, n, args.steps, args.repeats)
        r["backend"] = backend
        if out["peer"]:
          r["vs_metaworld"] = r["steps_per_s"] / out["peer"][task]
        out["results"].append(r)
        ratio = (
          f", {r['vs_metaworld']:.2f}x MetaWorld's env"
          if "vs_metaworld" in r
          else ""
        )
        print(
          f"{task:12s} {backend:4s} {n:5d} envs: "
          f"{r['steps_per_s']:9,.0f} env steps/s, "
          f"compile {r['compile_s']:6.1f} s{ratio}",
          flush=True,
        )
  if args.out:
    with open(args.out, "w") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main(sys.argv[1:])
