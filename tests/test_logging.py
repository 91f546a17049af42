"""Metric files: JSON lines, CSVs, TensorBoard events, progress bar."""

import csv
import glob
import json
import math
import os

import pytest

from erljax.io import metrics as metrics_writer
from erljax.loop import run_loop
from erljax.online import runner


def eval_rec(step, returns, train_return=math.nan):
  return {
    "kind": "eval",
    "env_steps": step,
    "time": 1.0 + step,
    "env_steps_per_s": 10.0,
    "eval_return_per_seed": returns,
    "eval_return": sum(returns) / len(returns),
    "eval_return_std": 0.0,
    "train_return_per_seed": [train_return] * len(returns),
    "train_return": train_return,
  }


FEEDBACK = {
  "kind": "feedback",
  "env_steps": 40,
  "session": 1,
  "queries_sent": 10,
  "answered": [9, 10],
  "dropped": [1, 0],
  "ratings_stored": [9, 10],
  "epochs": [2, 3],
  "reward_accuracy": [0.5, 1.0],
  "reward_corr": [0.2, 0.4],
  "label_histogram": [[3, 6], [5, 5]],
  "label_accuracy": [1.0, 0.5],
  "seconds": 0.1,
}


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_writer_files(tmp_path):
  w = metrics_writer.MetricsWriter(str(tmp_path), [3, 4], tensorboard=True)
  w.write(eval_rec(0, [1.0, 2.0]))
  w.write(FEEDBACK)
  w.write(eval_rec(40, [3.0, 5.0], train_return=0.5))
  w.close()
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(ln)["kind"] for ln in f] == ["eval", "feedback", "eval"]
  rows = read_csv(tmp_path / "eval.csv")
  assert [r["eval_return"] for r in rows] == ["1.5", "4.0"]
  assert rows[0]["train_return"] == "nan"
  assert [r["eval_return"] for r in read_csv(tmp_path / "seed_4.csv")] == [
    "2.0",
    "5.0",
  ]
  fb = read_csv(tmp_path / "feedback.csv")[0]
  assert float(fb["answered"]) == 9.5 and float(fb["dropped"]) == 0.5
  assert float(fb["reward_corr"]) == pytest.approx(0.3)
  assert float(fb["label_frac_0"]) == pytest.approx(8 / 19)
  events = glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
  assert len(events) == 1 and os.path.getsize(events[0]) > 100


_VLM_COUNTS = ("requests", "prompt_tokens", "completion_tokens", "drop_reasons")


def _vlm_feedback(session, prompt, completion, reasons):
  """A feedback record of two seeds rated by a VLM (per-seed counts)."""
  return {
    **FEEDBACK,
    "session": session,
    "requests": [4, 2],
    "prompt_tokens": prompt,
    "completion_tokens": completion,
    "drop_reasons": reasons,
  }


def test_feedback_csv_counts_tokens_and_drop_reasons(tmp_path):
  w = metrics_writer.MetricsWriter(str(tmp_path), [3, 4], tensorboard=False)
  w.write(
    _vlm_feedback(1, [300, 100], [30, 10], [{"truncated": 1}, {"refused": 2}])
  )
  w.write(_vlm_feedback(2, [50, 50], [5, 5], [{}, {"truncated": 1}]))
  w.close()
  first, second = read_csv(tmp_path / "feedback.csv")
  # The session's cost over all seeds, and the run's running totals.
  assert (first["prompt_tokens"], first["completion_tokens"]) == ("400", "40")
  assert (second["prompt_tokens"], second["prompt_tokens_total"]) == (
    "100",
    "500",
  )
  assert second["completion_tokens_total"] == "50"
  assert (first["requests"], second["requests_total"]) == ("6", "12")
  # Drop reasons as seed means, like `dropped`.
  assert float(first["dropped_truncated"]) == 0.5
  assert float(first["dropped_refused"]) == 1.0
  assert float(second["dropped_truncated"]) == 0.5
  assert second["dropped_refused"] in ("", "0.0")


def test_feedback_line_shows_tokens_and_why_queries_were_dropped():
  rec = {
    **_vlm_feedback(1, [300, 100], [30, 10], [{"truncated": 1}, {}]),
    "requested_at": 40,
    "reward_balanced_accuracy": [0.5, 1.0],
    "signal_corr": [0.2, 0.4],
  }
  line = runner.feedback_line(rec)
  assert "(dropped 0.5±0.5: truncated 1)" in line
  assert "6 requests, tokens 400 in / 40 out" in line
  scripted = {k: v for k, v in rec.items() if k not in _VLM_COUNTS}
  assert "tokens" not in runner.feedback_line(scripted)


def test_resumed_writer_drops_records_after_the_checkpoint(tmp_path):
  w = metrics_writer.MetricsWriter(str(tmp_path), [0], tensorboard=False)
  for step in (0, 40, 80):  # the killed run logged 80, the checkpoint is 40
    w.write(eval_rec(step, [float(step)]))
  w.close()
  kept = [eval_rec(0, [0.0]), eval_rec(40, [40.0])]
  w = metrics_writer.MetricsWriter(
    str(tmp_path), [0], tensorboard=False, records=kept, resume_step=40
  )
  w.write(eval_rec(80, [81.0]))
  w.close()
  with open(tmp_path / "metrics.jsonl") as f:
    steps = [json.loads(ln)["env_steps"] for ln in f]
  assert steps == [0, 40, 80]
  assert [r["eval_return"] for r in read_csv(tmp_path / "seed_0.csv")] == [
    "0.0",
    "40.0",
    "81.0",
  ]
  assert len(kept) == 3  # the caller's list is the one appended to


def test_progress_bar(capsys):
  bar = metrics_writer.ProgressBar(100, 20, enabled=True)
  bar.update(60, {"return": "1.0"})
  bar.close()
  err = capsys.readouterr().err
  assert "60.0/100" in err and "return=1.0" in err
  off = metrics_writer.ProgressBar(100, 0, enabled=False)
  off.update(50)
  off.close()
  assert capsys.readouterr().err == ""


def test_eval_line_shows_ci_a_dash_for_no_episode_and_success_if_defined():
  rec = {
    **eval_rec(40, [3.0, 5.0]),
    "eval_success": 0.5,
    "eval_return_lo": 2.5,
    "eval_return_hi": 5.25,
    "eval_return_episodes": [[2.0, 4.0], [5.0, 5.0]],
  }
  line = runner.eval_line(rec, with_success=True)
  assert "eval_return     4.000 [2.500, 5.250] (4 episodes)" in line
  assert "success 0.50" in line
  assert "train_return         -  sps" in line  # no training episode ended
  assert "nan" not in line
  line = runner.eval_line({**rec, "train_return": 1.5}, with_success=False)
  assert "success" not in line
  assert "train_return     1.500" in line


def test_a_run_that_did_not_resume_keeps_the_metrics_it_finds(tmp_path):
  """metrics.jsonl of an earlier run (stopped before its first checkpoint)
  is kept under a new name, never truncated, however often it happens."""
  path = str(tmp_path / "metrics.jsonl")
  for step, kept in ((1, None), (2, path + ".1"), (3, path + ".2")):
    w = metrics_writer.MetricsWriter(str(tmp_path), [0], tensorboard=False)
    assert w.kept == kept
    w.write(eval_rec(step, [float(step)]))
    w.close()
  for name, steps in (("", [3]), (".1", [1]), (".2", [2])):
    with open(path + name) as f:
      assert [json.loads(ln)["env_steps"] for ln in f] == steps


def test_feedback_line_shows_one_number_per_value_not_lists():
  rec = {
    **FEEDBACK,
    "requested_at": 40,
    "reward_balanced_accuracy": [0.5, 0.75],
    "signal_corr": [0.2, 0.4],
  }
  line = runner.feedback_line(rec)
  assert "[" not in line
  assert "acc 0.750±0.250 (balanced 0.625±0.125)" in line
  assert "(dropped 0.5±0.5), epochs 2.5±0.5," in line
  assert "corr(r_hat, r) 0.300±0.100" in line
  one = {k: v[:1] if isinstance(v, list) else v for k, v in rec.items()}
  assert "acc 0.500 (balanced 0.500), corr(r_hat, r) 0.200" in (
    runner.feedback_line(one)
  )


def test_eta_reads_as_minutes_and_hours():
  assert run_loop._eta(42.4) == "42s"  # pylint: disable=protected-access
  assert run_loop._eta(125) == "2m05s"  # pylint: disable=protected-access
  assert run_loop._eta(7385) == "2h03m"  # pylint: disable=protected-access


def test_learning_curve_png_from_records_and_from_a_workdir(tmp_path):
  from erljax.io import curves as plots  # pylint: disable=g-import-not-at-top
  from erljax import plots as plots_command  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  recs = [
    {**eval_rec(s, [s / 10, s / 20]), "eval_return_lo": 0, "eval_return_hi": 9}
    for s in (0, 40, 80)
  ]
  w = metrics_writer.MetricsWriter(str(tmp_path), [0, 1], False)
  for r in recs + [FEEDBACK]:
    w.write(r)
  w.close()
  path = plots.plot_workdir(str(tmp_path))
  assert path == str(tmp_path / "curve.png")
  with Image.open(path) as im:
    assert im.size == (600, 360)
    assert im.convert("RGB").getextrema()[0] != (255, 255)  # not blank
  with pytest.raises(ValueError, match="no evaluation records"):
    plots.learning_curve([FEEDBACK], str(tmp_path / "x.png"))
  assert plots_command.main([str(tmp_path / "missing")]) == 2
