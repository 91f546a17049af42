"""End to end: `python -m erljax.train` against Brax's `sac.train`, as a user
runs them, back to back on one machine.

  python -m benchmarks.end_to_end --out=benchmarks/results/end_to_end.json

Each case (parallel envs N, updates per vectorized step U, seeds S) starts
two fresh processes one after the other: erljax's CLI
(`experiments/configs/sac.py:reacher` with the case's overrides) and a
worker that calls `brax.training.agents.sac.train` with the same settings
(`benchmarks.common.brax_sac_train`: task, envs, episode length 200, batch
256, 3x256 networks, U gradient updates per vectorized step, replay size,
1,000 random prefill steps rounded up to whole vectorized steps, 16
evaluation episodes, 11 evaluations). This
process timestamps every report line as it arrives on the child's stdout,
the same way for both, and reports:

  * steady env steps/s: env steps from the second report to the last,
    divided by the time between them (training and evaluations both count;
    Brax compiles lazily inside its first epoch, erljax ahead of time, so the
    first report is excluded on both sides);
  * wall seconds from launch to the last report (what a user waits for,
    compile and start-up included).

Seeds > 1 run erljax alone (vmapped seeds; Brax has no seed axis): the
"seeds per device" rows report env steps/s summed over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks import common  # sets TF_CPP_MIN_LOG_LEVEL before jax loads
from erljax import cli_flags

EVALS = 11  # reports: the evaluation at step 0 and 10 more
_ERLJAX_REPORT = re.compile(r"^step\s+(\d+)\s+eval_return")
_BRAX_REPORT = re.compile(r"^report\s+(\d+)(?:\s+training_sps\s+([\d.na]+))?")
_COMPILE = re.compile(r"compile=([\d.]+)s")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def case_steps(num_envs: int, updates: int, target_updates: int) -> int:
  """Total env steps: 10 chunks of about `target_updates` SAC updates each,
  a chunk a whole number of vectorized steps."""
  vec_steps = max(1, -(-target_updates // updates))
  return 10 * vec_steps * num_envs


def setup(num_envs: int, updates: int) -> common.SACSetup:
  return common.SACSetup(
    task="reacher",
    num_envs=num_envs,
    episode_length=200,
    batch_size=256,
    updates_per_step=updates,
    hidden=(256, 256, 256),
    # 1,000 random prefill steps rounded up to whole vectorized steps, as
    # Brax rounds its min_replay_size (erljax requires the multiple).
    seed_steps=-(-1_000 // num_envs) * num_envs,
    replay_capacity=100_000,
    num_eval_envs=16,
  )


def erljax_command(
  s: common.SACSetup, total_steps: int, num_seeds: int
) -> List[str]:
  """The user's command line: the reacher SAC config plus overrides."""
  every = total_steps // (EVALS - 1)
  overrides = {
    "num_envs": s.num_envs,
    "num_seeds": num_seeds,
    "episode_length": s.episode_length,
    "total_steps": total_steps,
    "log_every": every,
    "eval_every": every,
    "batch_size": s.batch_size,
    "updates_per_step": s.updates_per_step,
    "seed_steps": s.seed_steps,
    "replay_capacity": s.replay_capacity,
    "num_eval_envs": s.num_eval_envs,
    "sac.hidden_sizes": "(" + ",".join(map(str, s.hidden)) + ",)",
    "progress": False,
    "workdir": "none",  # times training, as Brax's run writes no files
  }
  return [
    sys.executable,
    "-m",
    "erljax.train",
    "--config=experiments/configs/sac.py:reacher",
  ] + [f"--config.{k}={v}" for k, v in overrides.items()]


def brax_command(s: common.SACSetup, total_steps: int) -> List[str]:
  return [
    sys.executable,
    "-m",
    "benchmarks.end_to_end",
    "--brax_worker",
    f"--envs={s.num_envs}",
    f"--updates={s.updates_per_step}",
    f"--total_steps={total_steps}",
  ]


def timed_reports(
  cmd: Sequence[str], pattern: re.Pattern, timeout: float
) -> Dict[str, Any]:
  """Runs cmd; (seconds since launch, env steps) of each report line, the
  child's peak resident memory and, where it prints one, its compile time
  (erljax's "compile=XXs")."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
    [_ROOT, os.path.join(_ROOT, "src"), env.get("PYTHONPATH", "")]
  ).rstrip(os.pathsep)
  reports: List[Tuple[float, int]] = []
  inner: List[float] = []  # Brax's training/sps of each epoch after the first
  lines: List[str] = []
  compile_s = None
  t0 = time.perf_counter()

  def on_line(_, line):
    nonlocal compile_s
    now = time.perf_counter() - t0
    lines.append(line.rstrip())
    m = pattern.match(line)
    if m:
      reports.append((now, int(m.group(1))))
      if m.lastindex == 2 and m.group(2) != "nan" and len(reports) > 2:
        inner.append(float(m.group(2)))
    c = _COMPILE.search(line)
    if c and compile_s is None:
      compile_s = float(c.group(1))

  code, usage, stderr = common.stream_process(
    cmd, on_line, timeout, cwd=_ROOT, env=env
  )
  if code != 0 or len(reports) < 3:
    raise RuntimeError(
      f"{' '.join(cmd)} exited with {code} after "
      f"{len(reports)} reports:\n" + "\n".join(lines[-10:]) + stderr[-3000:]
    )
  (t1, s1), (t2, s2) = reports[1], reports[-1]
  return {
    "command": " ".join(cmd),
    # 1-minute load average when it ended: a busy machine slows both sides.
    "load_average_after": os.getloadavg()[0],
    "reports": reports,
    "steady_env_steps_per_s": (s2 - s1) / (t2 - t1),
    "steady_env_steps": s2 - s1,
    "wall_s": t2,
    "first_report_s": reports[0][0],
    "compile_s": compile_s,
    # Brax only: the mean of its own per-epoch training/sps (evaluation
    # excluded) over the same epochs as steady_env_steps_per_s.
    "inner_env_steps_per_s": sum(inner) / len(inner) if inner else None,
    "peak_rss_mb": usage.ru_maxrss / 1024.0,
    "last_lines": lines[-3:],
  }


def run_case(
  num_envs: int,
  updates: int,
  num_seeds: int,
  target_updates: int,
  with_brax: bool,
  timeout: float,
) -> Dict[str, Any]:
  s = setup(num_envs, updates)
  total = case_steps(num_envs, updates, target_updates)
  rec: Dict[str, Any] = {
    "num_envs": num_envs,
    "updates_per_step": updates,
    "num_seeds": num_seeds,
    "total_steps": total,
    "setup": s.as_dict(),
  }
  _log(f"erljax envs={num_envs} upd={updates} seeds={num_seeds} T={total}")
  rec["erljax"] = timed_reports(
    erljax_command(s, total, num_seeds), _ERLJAX_REPORT, timeout
  )
  # Summed over seeds: every report covers num_seeds runs of these steps.
  rec["erljax"]["steady_env_steps_per_s_all_seeds"] = (
    rec["erljax"]["steady_env_steps_per_s"] * num_seeds
  )
  if with_brax and num_seeds == 1:
    _log(f"brax envs={num_envs} upd={updates}")
    rec["brax"] = timed_reports(brax_command(s, total), _BRAX_REPORT, timeout)
    rec["ratio_steady"] = (
      rec["erljax"]["steady_env_steps_per_s"]
      / rec["brax"]["steady_env_steps_per_s"]
    )
    rec["ratio_wall"] = rec["brax"]["wall_s"] / rec["erljax"]["wall_s"]
  return rec


def table(out: Dict[str, Any]) -> str:
  m = out["machine"]
  lines = [
    f"{m.get('cpu_model')} x{m.get('cpu_count')}  devices "
    f"{m.get('devices')}  jax {out['versions'].get('jax')}  "
    f"brax {out['versions'].get('brax')}",
    "",
    "envs upd/step seeds   erljax sps    brax sps  ratio | erljax wall"
    "  brax wall  ratio",
  ]
  for r in out["cases"]:
    e, b = r["erljax"], r.get("brax")
    row = (
      f"{r['num_envs']:>4d} {r['updates_per_step']:>8d} {r['num_seeds']:>5d}"
      f"  {e['steady_env_steps_per_s_all_seeds']:>11.0f}"
    )
    if b:
      row += (
        f" {b['steady_env_steps_per_s']:>11.0f} {r['ratio_steady']:>6.2f}"
        f" | {e['wall_s']:>10.1f}s {b['wall_s']:>9.1f}s"
        f" {r['ratio_wall']:>6.2f}"
      )
    else:
      row += f" {'-':>11s} {'-':>6s} | {e['wall_s']:>10.1f}s"
    lines.append(row)
  return "\n".join(lines)


def _log(msg: str):
  print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _brax_worker(num_envs: int, updates: int, total_steps: int) -> None:
  """Brax's SAC with the case's settings; one line per progress report."""

  def progress(step, metrics):
    # Brax's own figure for the epoch alone (no evaluation), beside ours.
    sps = float(metrics.get("training/sps", float("nan")))
    print(f"report {int(step)} training_sps {sps:.2f}", flush=True)

  common.brax_sac_train(
    setup(num_envs, updates), 0, total_steps, EVALS, progress
  )


def _ints(text: str) -> List[int]:
  return [int(x) for x in text.split(",") if x]


def main(argv: Optional[Sequence[str]] = None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--envs", default="8,32,256")
  p.add_argument(
    "--updates",
    default="4,8,32",
    help="updates per vectorized step, one per --envs entry",
  )
  p.add_argument(
    "--seed_counts",
    default="1",
    help="vmapped seed counts; > 1 runs erljax only, at the first --envs",
  )
  cli_flags.add_alias(p, "--seeds", "--seed_counts")
  p.add_argument(
    "--target_updates",
    type=int,
    default=400,
    help="about this many SAC updates between reports",
  )
  # The Brax worker's budget (cases size themselves with --target_updates).
  p.add_argument("--total_steps", type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument("--skip_brax", action="store_true")
  p.add_argument(
    "--timeout", type=float, default=3600.0, help="seconds per process"
  )
  p.add_argument("--out", default="", help="JSON file to write (optional)")
  p.add_argument("--brax_worker", action="store_true", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.brax_worker:
    return _brax_worker(int(a.envs), int(a.updates), a.total_steps)
  envs, updates = _ints(a.envs), _ints(a.updates)
  if len(envs) != len(updates):
    p.error(f"--envs={a.envs} and --updates={a.updates}: one each")
  out: Dict[str, Any] = {
    "versions": common.versions(),
    "machine": common.machine(),
    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "cases": [],
  }
  cases = [(n, u, 1) for n, u in zip(envs, updates)]
  cases += [(envs[0], updates[0], s) for s in _ints(a.seed_counts) if s > 1]
  for n, u, s in cases:
    out["cases"].append(
      run_case(n, u, s, a.target_updates, not a.skip_brax, a.timeout)
    )
    if a.out:
      os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
      with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
  print(table(out))
  return out


if __name__ == "__main__":
  main()
