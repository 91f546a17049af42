"""IQM, stratified bootstrap and the one-command aggregate report."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from erljax.config import defaults as config_lib
from erljax.io import metrics as metrics_writer
from erljax.io import stats

AGGREGATE = os.path.join(
  os.path.dirname(__file__), "..", "experiments", "aggregate.py"
)


def test_iqm_hand_computed():
  # 8 scores: drop 2 from each end -> mean(3, 4, 5, 6).
  assert stats.iqm(np.arange(1, 9)) == 4.5
  # 5 scores: floor(1.25) = 1 dropped each end -> mean(2, 3, 4).
  assert stats.iqm([100.0, 1.0, 3.0, 2.0, 4.0]) == 3.0
  # Over runs x tasks as one pool; NaN padding ignored.
  x = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, np.nan]])
  assert stats.iqm(x) == 5.0  # pool 1, 2, 3, 10, 20: k=1 -> mean(2, 3, 10)
  rng = np.random.default_rng(0)
  y = rng.normal(size=37)
  assert np.isclose(stats.iqm(y), scipy.stats.trim_mean(y, 0.25))


def test_stratified_bootstrap_hand_computed():
  # Two runs 0 and 1: resampled means are 0, .5, 1 with probability
  # 1/4, 1/2, 1/4, so the 95% percentile interval is [0, 1].
  point, lo, hi = stats.stratified_bootstrap(np.array([0.0, 1.0]), stats.mean)
  assert (point, lo, hi) == (0.5, 0.0, 1.0)
  # Stratified: every replicate keeps two runs of each task, so the mean
  # of task 0 in {0, 1} and task 1 in {10, 11} stays within [5, 6].
  x = np.array([[0.0, 10.0], [1.0, 11.0]])
  point, lo, hi = stats.stratified_bootstrap(x, stats.mean, reps=500)
  assert point == 5.5 and 5.0 <= lo < point < hi <= 6.0
  # Identical runs: no spread.
  assert stats.stratified_bootstrap(np.ones((4, 3))) == (1.0, 1.0, 1.0)


def test_bootstrap_band_and_normalize():
  curves = np.array([[0.0, 1.0, 2.0], [0.0, 3.0, 2.0]])
  m, lo, hi = stats.bootstrap_band(curves)
  np.testing.assert_array_equal(m, [0.0, 2.0, 2.0])
  np.testing.assert_array_equal(lo, [0.0, 1.0, 2.0])
  np.testing.assert_array_equal(hi, [0.0, 3.0, 2.0])
  np.testing.assert_allclose(
    stats.min_max_normalize([[1.0, 5.0]], [0.0, 5.0], [2.0, 5.0]), [[0.5, 0.0]]
  )


def fake_run(workdir, task, seed, num_seeds, method, returns):
  """A workdir as erljax.train writes it; returns [T, S]."""
  os.makedirs(workdir)
  c = config_lib.default()
  c.task, c.seed, c.num_seeds = task, seed, num_seeds
  if method != "sac":
    c.reward.source = "learned"
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(c.to_json_best_effort())
  seeds = list(range(seed, seed + num_seeds))
  w = metrics_writer.MetricsWriter(str(workdir), seeds, tensorboard=False)
  for t, r in enumerate(returns):
    if method != "sac" and t:
      w.write(
        {
          "kind": "feedback",
          "env_steps": 100 * t,
          "session": t,
          "queries_sent": 10 * t,
          "seconds": 0.1,
          "label_accuracy": [0.5 + 0.1 * t] * num_seeds,
          "reward_corr": [0.2 * t] * num_seeds,
        }
      )
    w.write(
      {
        "kind": "eval",
        "env_steps": 100 * t,
        "eval_return_per_seed": list(r),
        "eval_return": float(np.mean(r)),
        "eval_success_per_seed": [float(v > 1) for v in r],
      }
    )
  w.close()


def test_aggregate_one_command(tmp_path):
  fake_run(tmp_path / "a", "reacher", 0, 2, "sac", [[0, 0], [1, 3]])
  fake_run(tmp_path / "b", "reacher", 2, 1, "sac", [[0], [2]])
  fake_run(tmp_path / "c", "reacher", 0, 2, "erlvlm", [[0, 0], [0, 1]])
  fake_run(tmp_path / "d", "CartpoleSwingup", 0, 2, "erlvlm", [[0, 0], [5, 7]])
  out = tmp_path / "report" / "study"
  subprocess.run(
    [
      sys.executable,
      AGGREGATE,
      "--out",
      str(out),
      *(str(tmp_path / d) for d in "abcd"),
    ],
    check=True,
    capture_output=True,
  )
  md = open(f"{out}.md").read()
  # Pooled sac on reacher: seeds 0, 1 (run a) and 2 (run b): final 1, 3, 2.
  assert "| reacher | sac | 3 | 100 | 2.000 |" in md
  assert "| reacher | erlvlm | 2 | 100 | 0.500 |" in md
  # The last feedback session's diagnostics; none for the env reward.
  assert md.count("| 10 | 0.60 | 0.20 |") == 2
  assert md.count("| - | - | - |") == 1
  # Aggregate: reacher normalised over all final scores 0..3, cartpole 5..7.
  # erlvlm: reacher 0, 1/3; cartpole 0, 1 -> IQM of {0, 0, 1/3, 1} = 1/6.
  assert "| erlvlm | 0.167 |" in md
  assert os.path.getsize(f"{out}.png") > 0
  with open(f"{out}_seeds.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 * (2 + 1 + 2 + 2)
  assert {r["seed"] for r in rows if r["method"] == "sac"} == {"0", "1", "2"}


def test_aggregate_reference_gain(tmp_path):
  # Both start at 0 (first evaluation); sac ends at mean 2, erlvlm at 0.5.
  fake_run(tmp_path / "a", "reacher", 0, 2, "sac", [[0, 0], [1, 3]])
  fake_run(tmp_path / "c", "reacher", 0, 2, "erlvlm", [[0, 0], [0, 1]])
  out = tmp_path / "r"
  subprocess.run(
    [
      sys.executable,
      AGGREGATE,
      "--out",
      str(out),
      "--reference",
      "sac",
      "--compare",
      "erlvlm",
      str(tmp_path / "a"),
      str(tmp_path / "c"),
    ],
    check=True,
    capture_output=True,
  )
  md = open(f"{out}.md").read()
  assert "| 0.20 | 0.25 |" in md  # erlvlm: corr 0.20, (0.5 - 0) / (2 - 0)
  assert "| - | - | - | 1.00 |" in md
  # Per run: erlvlm's gains 0 and 0.5 (IQM of two keeps both), sac's 0.5
  # and 1.5.
  assert "| erlvlm | 2 | 0.25 |" in md and "| sac | 2 | 1.00 |" in md
  # P(erlvlm > sac): finals (0, 1) vs (1, 3): one tie of four pairs.
  assert "| erlvlm | sac | 0.12 |" in md
  # ... the same per task, and each seed's share of the gain per task.
  assert "| reacher | erlvlm | sac | 0.12 |" in md
  assert "| reacher | erlvlm | 2 | 0.25 |" in md
  bad = subprocess.run(
    [
      sys.executable,
      AGGREGATE,
      "--out",
      str(out),
      "--compare",
      "ERL",
      str(tmp_path / "a"),
    ],
    capture_output=True,
    text=True,
  )
  assert bad.returncode != 0 and "--compare='ERL' names no method" in (
    bad.stderr
  )
  bad = subprocess.run(
    [
      sys.executable,
      AGGREGATE,
      "--out",
      str(out),
      "--reference",
      "SAC",
      str(tmp_path / "a"),
    ],
    capture_output=True,
    text=True,
  )
  assert bad.returncode != 0 and "--reference='SAC' names no method" in (
    bad.stderr
  )


def test_aggregate_per_session_labels_accuracy_and_corr(tmp_path):
  # 2 seeds, 4 answers per seed and session. The records hold the rating
  # set's cumulative histograms and accuracies; by hand, what each session
  # added: session 1 [3, 1] + [2, 2], accuracies 0.75, 0.5; session 2
  # [2, 2] (acc (0.5 * 8 - 0.75 * 4) / 4 = 0.25) + [0, 4] (acc (0.75 * 8 -
  # 0.5 * 4) / 4 = 1); session 3 seed 0 [1, 3] (acc (0.5 * 12 - 0.5 * 8) /
  # 4 = 0.5), seed 1's set full (8 stored of 12 answered): left out.
  fake_run(tmp_path / "sac", "reacher", 0, 2, "sac", [[0, 0], [1, 1]])
  fake_run(tmp_path / "e", "reacher", 0, 2, "erlvlm", [[0, 0], [1, 1]])
  sessions = [
    ([[3, 1], [2, 2]], [0.75, 0.5], [0.1, 0.3]),
    ([[5, 3], [2, 6]], [0.5, 0.75], [0.2, 0.4]),
    ([[6, 6], [3, 5]], [0.5, 0.5], [0.5, 0.5]),
  ]
  with open(tmp_path / "e" / "metrics.jsonl", "a") as f:
    for i, (hist, acc, corr) in enumerate(sessions, 1):
      rec = {
        "kind": "feedback",
        "env_steps": 1000 * i,
        "session": i,
        "queries_sent": 8 * i,
        "answered": [4, 4],
        "label_histogram": hist,
        "label_accuracy": acc,
        "reward_corr": corr,
      }
      f.write(json.dumps(rec) + "\n")
  out = tmp_path / "r"
  subprocess.run(
    [sys.executable, AGGREGATE, "--out", str(out), str(tmp_path / "sac")]
    + [str(tmp_path / "e")],
    check=True,
    capture_output=True,
  )
  md = open(f"{out}.md").read()
  assert "| reacher | erlvlm | 1 | 1000 | 8 | 0.62 / 0.38 | 0.62 | 0.20 |" in md
  assert "| reacher | erlvlm | 2 | 2000 | 8 | 0.25 / 0.75 | 0.62 | 0.30 |" in md
  assert "| reacher | erlvlm | 3 | 3000 | 4 | 0.25 / 0.75 | 0.50 | 0.50 |" in md
  with open(f"{out}_sessions.csv") as f:
    rows = [r for r in csv.DictReader(f) if r["session"] == "2"]
  assert rows[0]["class_shares"] == "0.2500 0.7500"
  assert float(rows[0]["label_accuracy"]) == pytest.approx(0.625)


def test_aggregate_needs_eval_records(tmp_path):
  os.makedirs(tmp_path / "empty")
  with open(tmp_path / "empty" / "config.json", "w") as f:
    f.write(config_lib.default().to_json_best_effort())
  open(tmp_path / "empty" / "metrics.jsonl", "w").close()
  res = subprocess.run(
    [
      sys.executable,
      AGGREGATE,
      "--out",
      str(tmp_path / "r"),
      str(tmp_path / "empty"),
    ],
    capture_output=True,
    text=True,
  )
  assert res.returncode != 0 and "no evaluation records" in res.stderr


def test_probability_of_improvement_by_hand():
  # One task: x (1, 3) against y (2, 2): pairs 1>2 no, 1>2 no, 3>2 yes x2.
  assert stats.probability_of_improvement([1.0, 3.0], [2.0, 2.0]) == 0.5
  # Ties count half: (2 vs 2) -> 0.5.
  assert stats.probability_of_improvement([2.0], [2.0]) == 0.5
  # Two tasks, averaged: task 0 always better (1.0), task 1 never (0.0);
  # a NaN-padded run is ignored.
  x = np.array([[5.0, 0.0], [6.0, np.nan]])
  y = np.array([[1.0, 9.0], [2.0, 8.0]])
  assert stats.probability_of_improvement(x, y) == 0.5
  # Identical methods: 0.5, and the bootstrap interval contains it.
  z = np.arange(10.0)[:, None]
  point, lo, hi = stats.probability_of_improvement_ci(z, z, reps=300)
  assert point == 0.5 and lo <= 0.5 <= hi and lo < hi
  # A clear winner: the interval is a point at 1.
  assert stats.probability_of_improvement_ci(z + 100, z, reps=50) == (
    1.0,
    1.0,
    1.0,
  )


def test_nested_bootstrap_mean():
  x = np.array([[1.0, 3.0], [5.0, 7.0]])
  mean, lo, hi = stats.nested_bootstrap_mean(x, reps=4000)
  assert mean == 4.0
  # Resampled means lie in [1, 7]; seeds differ far more than episodes.
  assert 1.0 <= lo < 3.0 and 5.0 < hi <= 7.0
  # One seed, one episode: no interval.
  assert stats.nested_bootstrap_mean(np.array([[2.0]])) == (2.0, 2.0, 2.0)
  # One seed: a bootstrap over its episodes only.
  _, lo, hi = stats.nested_bootstrap_mean(np.array([[0.0, 10.0]]), reps=4000)
  assert lo == 0.0 and hi == 10.0
  with pytest.raises(ValueError, match="shape"):
    stats.nested_bootstrap_mean(np.array([1.0, np.nan]))


OFFLINE_REPORT = os.path.join(
  os.path.dirname(__file__), "..", "experiments", "offline_report.py"
)


def test_offline_report_tables_weights_and_differences(tmp_path):
  finals = []
  for k, method in enumerate(("bc", "sparse_iql", "true_iql", "erlvlm_iql")):
    d = tmp_path / "pusher" / method
    d.mkdir(parents=True)
    final = {
      "task": "pusher",
      "method": method,
      "seeds": [0, 1],
      "episodes": 50,
      "transitions": 10000,
      "dataset_success": 0.1,
      "dataset_return": -200.0,
      "grad_steps": 100,
      "grad_steps_per_s": 20.0,
      "train_seconds": 5.0,
      "compile_seconds": 1.0,
      "eval_success_per_seed": [0.1 * k, 0.1 * k],
      "eval_return_per_seed": [-50.0 + k, -48.0 + k],
    }
    (d / "final.json").write_text(json.dumps(final))
    evals = [{"kind": "eval", "weight": 1.0 + k, "weight_max": 10.0 * k}]
    (d / "metrics.jsonl").write_text("\n".join(map(json.dumps, evals)))
    finals.append(str(d / "final.json"))
  out = str(tmp_path / "table")
  subprocess.run(
    [sys.executable, OFFLINE_REPORT, "--out", out, *finals],
    check=True,
    capture_output=True,
  )
  md = open(out + ".md").read()
  # Weights for IQL runs, none for BC.
  assert (
    "| IQL + true reward | 0.20 [0.20, 0.20] | -47.0 [-48.0, -46.0] |" in md
  )
  assert "| 3.00 / 20.0 |" in md and "| BC | 0.00 [0.00, 0.00]" in md
  assert "| 1.00 / 0.0 |" not in md
  # true - bc: success +0.2 (no spread over seeds); return +2, and seeds
  # resampled apart give differences 0..4, each end with probability 1/16.
  assert "| IQL + true reward - BC | 0.20 [0.20, 0.20] | 2.0 [0.0, 4.0] |" in md
  assert "| ERL-VLM + IQL - IQL + sparse (success) | 0.20 [0.20, 0.20] |" in md
  assert "RbRL" not in md  # no rbrl run: no row, no difference
  table = json.load(open(out + ".json"))
  assert table["pusher"]["erlvlm_iql"]["advantage_weights"] == {
    "mean": 4.0,
    "max": 30.0,
  }


def test_precision_check_puts_bf16_means_against_fp32_cis(tmp_path):
  """experiments/precision_check.py: per shared evaluation, the bf16 run's
  mean inside the FP32 run's CI or not; evaluations one run lacks skipped."""
  rng = np.random.default_rng(0)

  def run(name, means):
    d = tmp_path / name
    d.mkdir()
    with open(d / "metrics.jsonl", "w") as f:
      for step, m in means.items():
        episodes = m + rng.normal(0, 1, (5, 50))
        f.write(json.dumps({"kind": "train", "env_steps": step}) + "\n")
        f.write(
          json.dumps(
            {
              "kind": "eval",
              "env_steps": step,
              "eval_return_episodes": episodes.tolist(),
            }
          )
          + "\n"
        )
    return str(d)

  fp32 = run("fp32", {0: -50.0, 5000: -30.0, 10000: -20.0})
  bf16 = run("bf16", {0: -50.0, 5000: -10.0})
  out = tmp_path / "check.md"
  script = os.path.join(
    os.path.dirname(__file__), "..", "experiments", "precision_check.py"
  )
  subprocess.run(
    [sys.executable, script, f"--out={out}", f"SAC={fp32},{bf16}"],
    check=True,
    capture_output=True,
    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
  )
  rows = json.loads((tmp_path / "check.json").read_text())["SAC"]
  assert [(r["env_steps"], r["inside"]) for r in rows] == [
    (0, True),
    (5000, False),
  ]
  fp32_0 = rows[0]["fp32"]
  assert fp32_0["lo"] < fp32_0["mean"] < fp32_0["hi"]
  assert fp32_0["iqm_lo"] <= fp32_0["iqm"] <= fp32_0["iqm_hi"]
  assert "| SAC | 5000 |" in out.read_text() and "**no**" in out.read_text()
