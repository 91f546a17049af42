"""experiments/run_times.py: wall times and pre-training shares, by hand."""

import datetime as dt
import json
import os
import sys

import pytest

sys.path.insert(
  0,
  os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"),
)
# pylint: disable=wrong-import-position
import run_times  # noqa: E402


def write_metrics(path, evals, sessions=()):
  """evals: [(env_steps, time)]; sessions: [(env_steps, seconds)]."""
  os.makedirs(os.path.dirname(path))
  records = [{"kind": "eval", "env_steps": s, "time": t} for s, t in evals]
  records += [
    {"kind": "feedback", "env_steps": s, "seconds": x} for s, x in sessions
  ]
  records.sort(key=lambda r: (r["env_steps"], r["kind"] == "eval"))
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)


def test_run_times_by_hand(tmp_path, capsys):
  # Learned reward: the loop runs 10:05:00-10:15:00 (600 s of `time`),
  # the first session (100 s) ends at 10:10:00 (time 300), and a 60 s pause
  # at 10:06 falls in steps 0-10k. wall = 900 - 60 = 840 (from config.json
  # at 10:00:00); steps 0-10k = 300 - 100 - 60 = 140.
  write_metrics(
    str(tmp_path / "reacher" / "erlvlm" / "metrics.jsonl"),
    [(0, 0.0), (10_000, 300.0), (20_000, 600.0)],
    [(10_000, 100.0), (15_000, 50.0)],
  )
  # SAC: wall 400, steps 0-10k 100 -> the k-NN's extra 40 s, 40/840 = 5%.
  write_metrics(
    str(tmp_path / "reacher" / "sac" / "metrics.jsonl"),
    [(0, 0.0), (10_000, 100.0), (20_000, 400.0)],
  )
  csv_path = tmp_path / "run_times.csv"
  csv_path.write_text(
    "run,started_utc,last_record_utc,pauses_utc\n"
    "reacher/sac,2026-12-05T09:00:00Z,2026-12-05T09:06:40Z,\n"
    "reacher/erlvlm,2026-12-05T10:00:00Z,2026-12-05T10:15:00Z,"
    "10:06:00-10:07:00\n"
  )
  run_times.main([str(csv_path), str(tmp_path)])
  out = capsys.readouterr().out
  assert "| reacher/sac | 6.7 | 1.7 | - | - | 0.0 |" in out
  assert "| reacher/erlvlm | 14.0 | 2.3 | 0.7 | 5% | 1.0 |" in out


def test_pauses_past_midnight_and_bad_values():
  start = run_times.parse_utc("2026-12-05T23:50:00Z")
  (a, b), (c, d) = run_times.parse_pauses(
    "23:55:00-00:05:00 00:10:00-00:11:00", start
  )
  assert (b - a, d - c) == (dt.timedelta(minutes=10), dt.timedelta(minutes=1))
  assert c.day == 6
  assert run_times.paused([(a, b)], start, a + dt.timedelta(minutes=4)) == 240
  with pytest.raises(ValueError, match="'23:55-x'"):
    run_times.parse_pauses("23:55-x", start)


def test_missing_first_evaluation_is_named(tmp_path):
  write_metrics(
    str(tmp_path / "r" / "metrics.jsonl"), [(0, 0.0), (5_000, 10.0)]
  )
  row = {
    "run": "r",
    "started_utc": "2026-12-05T10:00:00Z",
    "last_record_utc": "2026-12-05T10:01:00Z",
  }
  with pytest.raises(ValueError, match="env_steps=10000"):
    run_times.run_time(row, str(tmp_path / "r"), 10_000)
