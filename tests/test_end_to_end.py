"""benchmarks.end_to_end's machinery: commands, report timing, the table
(the real runs compile for minutes; `python -m benchmarks.end_to_end`)."""

import re
import subprocess
import sys
import time

import pytest
from benchmarks import end_to_end as e2e


def test_case_steps_are_ten_chunks_of_whole_vectorized_steps():
  assert e2e.case_steps(8, 4, 400) == 10 * 100 * 8
  # 400 / 32 = 12.5 rounds up to 13 vectorized steps of 256 envs.
  assert e2e.case_steps(256, 32, 400) == 10 * 13 * 256


def test_erljax_command_parses_with_every_override():
  """The CLI parses the whole command; a deliberately bad last override
  then stops it at validation (exit 2, nothing compiled)."""
  s = e2e.setup(32, 8)
  cmd = e2e.erljax_command(s, e2e.case_steps(32, 8, 400), num_seeds=2)
  assert cmd[1:3] == ["-m", "erljax.train"]
  assert "--config.updates_per_step=8" in cmd
  assert "--config.sac.hidden_sizes=(256,256,256,)" in cmd
  _stops_at_validation(cmd)


def _stops_at_validation(cmd):
  """cmd (an erljax.train command line) parses in the checkout; a bad last
  override then stops it at validation (exit 2, nothing compiled)."""
  proc = subprocess.run(
    cmd + ["--config.seed_steps=-1"],
    cwd=e2e._ROOT,  # pylint: disable=protected-access
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "config.seed_steps=-1" in proc.stderr


def _fake(lines, code=0):
  body = "".join(
    f"import time; print({ln!r}, flush=True); time.sleep({dt})\n"
    for ln, dt in lines
  )
  return [sys.executable, "-c", body + f"raise SystemExit({code})"]


def test_timed_reports_time_the_second_report_to_the_last():
  cmd = _fake(
    [
      ("erljax: task=x compile=12.5s", 0.0),
      ("report 0 training_sps nan", 0.3),
      ("noise", 0.0),
      ("report 100 training_sps 50.0", 0.3),
      ("report 300 training_sps 70.5", 0),
    ]
  )
  rec = e2e.timed_reports(cmd, e2e._BRAX_REPORT, timeout=60)  # pylint: disable=protected-access
  assert [s for _, s in rec["reports"]] == [0, 100, 300]
  t1, t2 = rec["reports"][1][0], rec["reports"][2][0]
  assert 0.25 < t2 - t1 < 5.0
  assert rec["steady_env_steps_per_s"] == pytest.approx(200 / (t2 - t1))
  assert rec["steady_env_steps"] == 200 and rec["wall_s"] == t2
  assert rec["compile_s"] == 12.5 and rec["peak_rss_mb"] > 1.0
  # Brax's own epoch figures over the same window: the last epoch only.
  assert rec["inner_env_steps_per_s"] == 70.5


def test_timed_reports_name_the_command_when_it_fails():
  cmd = _fake([("report 0", 0)], code=3)
  with pytest.raises(RuntimeError, match="exited with 3 after 1 reports"):
    e2e.timed_reports(cmd, re.compile(r"^report\s+(\d+)"), timeout=60)


def test_table_has_a_row_per_case_and_ratios_where_brax_ran():
  side = {"steady_env_steps_per_s": 110.0, "wall_s": 50.0}
  out = {
    "machine": {"cpu_model": "cpu", "cpu_count": 2, "devices": ["cpu:cpu"]},
    "versions": {"jax": "x", "brax": "y"},
    "cases": [
      {
        "num_envs": 8,
        "updates_per_step": 4,
        "num_seeds": 1,
        "erljax": {**side, "steady_env_steps_per_s_all_seeds": 110.0},
        "brax": {"steady_env_steps_per_s": 100.0, "wall_s": 60.0},
        "ratio_steady": 1.1,
        "ratio_wall": 1.2,
      },
      {
        "num_envs": 8,
        "updates_per_step": 4,
        "num_seeds": 4,
        "erljax": {**side, "steady_env_steps_per_s_all_seeds": 440.0},
      },
    ],
  }
  rows = e2e.table(out).splitlines()[3:]
  assert len(rows) == 2
  assert rows[0].split()[:7] == ["8", "4", "1", "110", "100", "1.10", "|"]
  assert rows[1].split()[:4] == ["8", "4", "4", "440"]


def test_a_silent_child_past_the_timeout_is_killed():
  cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
  t = time.perf_counter()
  with pytest.raises(RuntimeError, match="after 0 reports"):
    e2e.timed_reports(cmd, re.compile(r"^report\s+(\d+)"), timeout=1.0)
  assert time.perf_counter() - t < 30


# -- the command line's results folder (erljax.train) -----------------------

# A run that compiles in seconds: tiny networks, short episodes, small frames.
_TINY = [
  "--config.total_steps=200",
  "--config.seed_steps=40",
  "--config.log_every=100",
  "--config.eval_every=100",
  "--config.num_envs=4",
  "--config.episode_length=20",
  "--config.num_eval_envs=2",
  "--config.batch_size=8",
  "--config.replay_capacity=200",
  "--config.sac.hidden_sizes=(16,16)",
  "--config.render.height=24",
  "--config.render.width=24",
]


def test_resolve_workdir_defaults_to_a_named_folder_and_none_opts_out():
  import datetime  # pylint: disable=g-import-not-at-top

  from erljax.config import defaults as config_lib  # pylint: disable=g-import-not-at-top
  from erljax import train  # pylint: disable=g-import-not-at-top

  c = config_lib.default()
  c.task, c.method = "CartpoleSwingup", "erlvlm"
  now = datetime.datetime(2026, 12, 5, 8, 1, 2, tzinfo=datetime.timezone.utc)
  assert train.default_workdir(c, now) == (
    "runs/CartpoleSwingup-erlvlm-20261205T080102Z"
  )
  train.resolve_workdir(c)
  assert c.workdir.startswith("runs/CartpoleSwingup-erlvlm-2")
  for opt_out in ("none", "None", "NONE"):
    c.workdir = opt_out
    train.resolve_workdir(c)
    assert c.workdir == ""
  c.workdir, c.resume = "", True  # resuming needs the run's own folder
  train.resolve_workdir(c)
  assert c.workdir == ""
  with pytest.raises(config_lib.ConfigError, match="resume=True needs"):
    config_lib.validate(c)


def test_cli_run_from_another_directory_leaves_its_results(tmp_path):
  """erljax:sac.py from outside the checkout, no workdir given: the run says
  it compiles, ends every line with progress and ETA (output not a
  terminal), and names a folder holding metrics, curve and video, with
  commands that work."""
  proc = subprocess.run(
    [sys.executable, "-m", "erljax.train", "--config=erljax:sac.py:reacher"]
    + _TINY,
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=900,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout.splitlines()
  (compiling,) = [i for i, ln in enumerate(out) if ln.startswith("compiling")]
  assert out[compiling].startswith("compiling reacher (1 seed(s) x 4 envs")
  assert out[compiling + 1].startswith("erljax: task=reacher")  # compiled
  steps = [ln for ln in out if ln.startswith("step ")]
  assert len(steps) == 3 and all(re.search(r"\[ *\d+%", s) for s in steps)
  assert re.search(r"\[100%, eta \d+s\]$", steps[-1])
  (folder,) = [ln for ln in out if ln.startswith("results in ")]
  workdir = tmp_path / folder[len("results in ") :].rstrip("/")
  assert re.fullmatch(r"reacher-sac-\d{8}T\d{6}Z", workdir.name)
  assert workdir.parent == tmp_path / "runs"
  for name in ("metrics.jsonl", "eval.csv", "config.json", "curve.png"):
    assert (workdir / name).is_file(), name
  assert (workdir / "rollout.gif").is_file()  # or a warning said why not
  assert (workdir / "checkpoints").is_dir()
  rel = workdir.relative_to(tmp_path)
  assert f"  plot         python -m erljax.plots {rel}" in out
  assert any(f"tensorboard --logdir {rel}/tb" in ln for ln in out)
  assert any(f"erljax.evaluate --workdir={rel} " in ln for ln in out)
  (workdir / "curve.png").unlink()
  subprocess.run(
    [sys.executable, "-m", "erljax.plots", str(workdir)], check=True
  )
  assert (workdir / "curve.png").is_file()


def test_config_spellings_old_path_new_name_and_unknown_name():
  """From the checkout the old experiments/configs path still loads (a bad
  last override then stops it at validation: exit 2, nothing compiled); an
  unknown erljax: name exits 2 naming it and the ones there are."""
  for spec in (
    "experiments/configs/rating.py:reacher,erlvlm",
    "erljax:rating.py:reacher,erlvlm",
  ):
    _stops_at_validation(
      [sys.executable, "-m", "erljax.train", f"--config={spec}"]
    )
  proc = subprocess.run(
    [sys.executable, "-m", "erljax.train", "--config=erljax:ratings.py:x"],
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode == 2
  assert "no config 'ratings.py'" in proc.stderr
  assert "'rating.py'" in proc.stderr
