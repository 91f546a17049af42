"""Start-up: the main job's time to its first training step, cold and warm.

Runs the README's main job (`python -m erljax.train
--config=erljax:rating.py:CartpoleSwingup,erlvlm`, stopped after its first
chunk) as a user does, in a fresh process each time, with the compilation
cache in an empty directory of its own (`XDG_CACHE_HOME`, so the default
cache path and its settings apply): once cold, then `--warm` times warm.
Every line the child prints is stamped with wall seconds since launch and
the child's CPU seconds (user + system, all threads, from /proc), so a
loaded machine shows in the gap between the two. "First training step" is
the `step 0` evaluation line, printed right before the first chunk is
dispatched; "compiling" is the line printed before the programs are built.

  PYTHONPATH=$PWD/src python -m benchmarks.startup --warm=2 \
      --out=benchmarks/results/startup.json [--config.KEY=VALUE ...]

`--config.KEY=VALUE` flags go to every run (e.g. a smaller run for a quick
check); without them it times the main job as the README gives it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import common

MAIN_JOB = "erljax:rating.py:CartpoleSwingup,erlvlm"
_STEP0 = re.compile(r"step\s+0\s+eval_return")


def timed_start(
  cmd: Sequence[str], env: Dict[str, str], timeout: float
) -> Dict[str, Any]:
  """Runs cmd; each stdout line with (wall s, CPU s) at its arrival, and the
  wall and CPU seconds to the "compiling" and the `step 0` lines."""
  code, usage, stderr, lines = common.stamped_run(cmd, timeout, env=env)
  if code != 0:
    tail = "\n".join(t for _, _, t in lines[-10:])
    raise RuntimeError(
      f"{' '.join(cmd)} exited with {code}:\n{tail}\n{stderr[-3000:]}"
    )

  def first(pattern: re.Pattern) -> Tuple[float, float]:
    for wall, cpu, text in lines:
      if pattern.search(text):
        return wall, cpu
    raise RuntimeError(f"no line matches {pattern.pattern!r} in {cmd}")

  compiling = first(re.compile(r"^compiling "))
  step0 = first(_STEP0)
  return {
    "wall_to_compiling_s": compiling[0],
    "cpu_to_compiling_s": compiling[1],
    "wall_to_step0_s": step0[0],
    "cpu_to_step0_s": step0[1],
    "wall_total_s": lines[-1][0] if lines else None,
    "cpu_total_s": usage.ru_utime + usage.ru_stime,
    "load_average_after": os.getloadavg()[0],
    "lines": lines,
  }


def main_job_command(steps: int, workdir: str, extra: Sequence[str]):
  return [
    sys.executable,
    "-m",
    "erljax.train",
    f"--config={MAIN_JOB}",
    f"--config.total_steps={steps}",
    f"--config.workdir={workdir}",
    "--config.progress=False",
    *extra,
  ]


def table(runs: List[Dict[str, Any]]) -> str:
  rows = [
    "| run | wall to compiling | CPU to compiling | wall to step 0 | "
    "CPU to step 0 | load after |",
    "|---|---|---|---|---|---|",
  ]
  for r in runs:
    rows.append(
      f"| {r['run']} | {r['wall_to_compiling_s']:.1f} s | "
      f"{r['cpu_to_compiling_s']:.1f} s | {r['wall_to_step0_s']:.1f} s | "
      f"{r['cpu_to_step0_s']:.1f} s | {r['load_average_after']:.1f} |"
    )
  return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--warm", type=int, default=2, help="warm runs after cold")
  p.add_argument(
    "--steps", type=int, default=5000, help="total_steps (one chunk)"
  )
  p.add_argument("--timeout", type=float, default=1800.0)
  p.add_argument("--out", default="benchmarks/results/startup.json")
  # Any --config.KEY=VALUE flags given are passed on to every run.
  a, extra = p.parse_known_args(argv)
  bad = [f for f in extra if not f.startswith("--config.")]
  if bad:
    p.error(f"unknown arguments {bad} (only --config.KEY=VALUE passes on)")
  a.extra = extra
  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = os.path.join(tmp, "cache")
    env["PYTHONUNBUFFERED"] = "1"  # lines stamped as printed, not at exit
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("ERLJAX_COMPILE_CACHE", None)
    for i in range(1 + a.warm):
      name = "cold" if i == 0 else f"warm {i}"
      cmd = main_job_command(a.steps, os.path.join(tmp, f"run{i}"), a.extra)
      r = timed_start(cmd, env, a.timeout)
      r["run"] = name
      print(
        f"{name}: step 0 after {r['wall_to_step0_s']:.1f} s wall, "
        f"{r['cpu_to_step0_s']:.1f} s CPU",
        flush=True,
      )
      runs.append(r)
  print(table(runs))
  common.write_json(
    a.out,
    {
      "benchmark": "startup",
      "main_job": MAIN_JOB,
      "steps": a.steps,
      "extra": a.extra,
      "machine": common.machine(),
      "runs": runs,
    },
  )


if __name__ == "__main__":
  main()
