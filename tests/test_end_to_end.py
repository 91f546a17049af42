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
