"""Each run's wall time and the share of it spent before the first session.

  python experiments/run_times.py RUN_TIMES.csv RUNS_ROOT > table.md

`RUN_TIMES.csv` has one row per run (columns `run`, `started_utc`,
`last_record_utc`, `pauses_utc`): when the run started (its `config.json`
was written), when it wrote its last record (its `metrics.jsonl`), and the
SIGSTOP pauses inside it as space-separated `HH:MM:SS-HH:MM:SS` (UTC, the
day of the start or, when earlier than the start, the day after). File
times do not survive `git`, so a study records them in this file.
`RUNS_ROOT/<run>/metrics.jsonl` gives each evaluation's `time`: seconds
since the training loop began (compilation and set-up come before it),
wall-clock, pauses included. `config.json` is written once the programs
are compiled, as that loop begins, so compilation is not in these times.

Per run, with every pause taken out:
  wall          start to last record
  steps 0-10k   the seed phase and, for a learned reward, the k-NN
                pre-training (PEBBLE): the `time` of the evaluation at
                `--first` env steps less the seconds of the feedback
                sessions up to it (the first rating session, which is not
                pre-training)
  k-NN extra    steps 0-10k less the same of the run `<task>/--baseline`
                (SAC on the true reward: the same steps and updates without
                the k-NN reward), and its share of the wall time
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
from typing import Dict, List, Tuple

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
)
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from erljax.io import curves  # noqa: E402

Interval = Tuple[dt.datetime, dt.datetime]


def parse_utc(s: str) -> dt.datetime:
  """'2026-12-05T09:37:49Z' -> aware datetime."""
  return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(
    tzinfo=dt.timezone.utc
  )


def parse_pauses(text: str, start: dt.datetime) -> List[Interval]:
  """'14:35:29-14:51:17 ...' on `start`'s day (or the next) -> intervals."""
  out = []
  for item in text.split():
    try:
      a, b = (dt.time.fromisoformat(x) for x in item.split("-"))
    except ValueError as e:
      raise ValueError(f"pause {item!r}: expected HH:MM:SS-HH:MM:SS") from e
    lo = dt.datetime.combine(start.date(), a, start.tzinfo)
    if lo < start:
      lo += dt.timedelta(days=1)
    hi = dt.datetime.combine(lo.date(), b, start.tzinfo)
    if hi < lo:
      hi += dt.timedelta(days=1)
    out.append((lo, hi))
  return out


def paused(pauses: List[Interval], lo: dt.datetime, hi: dt.datetime) -> float:
  """Seconds of `pauses` that fall inside [lo, hi]."""
  return sum(
    max(0.0, (min(b, hi) - max(a, lo)).total_seconds()) for a, b in pauses
  )


def run_time(row: Dict[str, str], run_dir: str, first: int) -> Dict:
  """One row of the table, in seconds (see the module docstring)."""
  start = parse_utc(row["started_utc"])
  end = parse_utc(row["last_record_utc"])
  pauses = parse_pauses(row.get("pauses_utc") or "", start)
  records = curves.read_records(run_dir)
  evals = [r for r in records if r.get("kind") == "eval"]
  t_eval = {r["env_steps"]: r["time"] for r in evals}
  if first not in t_eval:
    raise ValueError(
      f"{run_dir}/metrics.jsonl: no evaluation at env_steps={first}"
    )
  t_first = t_eval[first]
  sessions = sum(
    r["seconds"]
    for r in records
    if r.get("kind") == "feedback" and r["env_steps"] <= first
  )
  origin = end - dt.timedelta(seconds=evals[-1]["time"])
  at_first = origin + dt.timedelta(seconds=t_first)
  stopped = paused(pauses, start, end)
  return {
    "run": row["run"],
    "wall": (end - start).total_seconds() - stopped,
    "early": t_first - sessions - paused(pauses, origin, at_first),
    "paused": stopped,
  }


def table(rows: List[Dict], first: int, baseline: str) -> str:
  """Markdown table of `run_time` rows, minutes and percent."""
  k = f"{first // 1000}k" if first % 1000 == 0 else str(first)
  early = {r["run"]: r["early"] for r in rows}
  lines = [
    f"| run | wall (min) | steps 0-{k} (min) | k-NN extra (min) | its share "
    "| paused (min) |",
    "|---|---|---|---|---|---|",
  ]
  for r in rows:
    base = early.get(os.path.join(os.path.dirname(r["run"]), baseline))
    if base is None or r["run"].endswith("/" + baseline):
      extra = "- | -"
    else:
      x = r["early"] - base
      extra = f"{x / 60:.1f} | {100 * x / r['wall']:.0f}%"
    lines.append(
      f"| {r['run']} | {r['wall'] / 60:.1f} | {r['early'] / 60:.1f} "
      f"| {extra} | {r['paused'] / 60:.1f} |"
    )
  return "\n".join(lines) + "\n"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("run_times", help="CSV: run,started_utc,last_record_utc,...")
  p.add_argument("root", help="directory holding <run>/metrics.jsonl")
  p.add_argument(
    "--first",
    type=int,
    default=10_000,
    help="env steps of the first rating session (the end of pre-training)",
  )
  p.add_argument(
    "--baseline",
    default="sac",
    help="run, within each task's directory, without the k-NN reward",
  )
  a = p.parse_args(argv)
  with open(a.run_times) as f:
    rows = list(csv.DictReader(f))
  out = [run_time(r, os.path.join(a.root, r["run"]), a.first) for r in rows]
  sys.stdout.write(table(out, a.first, a.baseline))


if __name__ == "__main__":
  main()
