"""Checkpoints: a stopped or killed run resumes to exactly the same state.

All runs share one tiny learned-reward config (feedback sessions at 80, 120
and 160 env steps); in-process runs share one Trainer, so its programs are
compiled once.
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from erljax import checkpoint as checkpoint_lib
from erljax import config as config_lib
from erljax import runner
from erljax import trainer as trainer_lib
from erljax.raters import scripted
from test_trainer import learned_config

TOTAL = 200


def run_config(workdir, **overrides):
  c = learned_config(TOTAL, 2, queries=10, budget=25, warmup_updates=5)
  c.workdir = str(workdir)
  c.progress = False
  c.checkpoint.every = 40
  c.checkpoint.keep = 2
  for k, v in overrides.items():
    c[k] = v
  return c


def assert_trees_equal(a, b):
  la, ta = jax.tree_util.tree_flatten(a)
  lb, tb = jax.tree_util.tree_flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def without_time(records):
  """JSON of the records without wall-clock fields (JSON: NaN == NaN)."""
  return json.dumps(
    [
      {
        k: v
        for k, v in r.items()
        if k not in ("time", "seconds", "env_steps_per_s", "latency_seconds")
      }
      for r in records
    ]
  )


def read_jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def assert_same_run(res, ref):
  """Same TrainState (params, buffer, env, keys, steps) and same records."""
  assert_trees_equal(res.state, ref.state)
  assert without_time(res.history) == without_time(ref.history)
  assert without_time(res.feedback) == without_time(ref.feedback)


@pytest.fixture(scope="module")
def trainer():
  return trainer_lib.Trainer.create(run_config(""))


def run(trainer, workdir, log=lambda _: None, resume=False):
  """runner.run with the shared trainer, its config pointed at workdir."""
  trainer.config.workdir = str(workdir)
  trainer.config.resume = resume
  return runner.run(trainer.config, log=log, trainer=trainer)


@pytest.fixture(scope="module")
def reference(trainer, tmp_path_factory):
  """The uninterrupted run (checkpointing too)."""
  workdir = tmp_path_factory.mktemp("reference")
  return workdir, run(trainer, workdir)


def run_stopped_in_first_session(trainer, workdir):
  """`run`, stopped by SIGTERM during the first feedback session (step 80)."""
  before = signal.getsignal(signal.SIGTERM)

  def log(line):
    if line.startswith("feedback   1"):
      os.kill(os.getpid(), signal.SIGTERM)

  res = run(trainer, workdir, log)
  assert signal.getsignal(signal.SIGTERM) == before  # handler removed again
  return res


@pytest.fixture(scope="module")
def stopped(trainer, tmp_path_factory):
  """A run stopped by SIGTERM during step 80's feedback session."""
  workdir = tmp_path_factory.mktemp("stopped")
  return workdir, run_stopped_in_first_session(trainer, workdir)


def test_reference_run_writes_checkpoints(reference):
  workdir, ref = reference
  assert ref.interrupted is None
  assert [f["queries_sent"] for f in ref.feedback] == [10, 20, 25]
  steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints"))
  assert steps == [160, 200]  # keep=2
  for name in (
    "metrics.jsonl",
    "eval.csv",
    "feedback.csv",
    "seed_0.csv",
    "seed_1.csv",
    "config.json",
  ):
    assert os.path.getsize(workdir / name) > 0, name
  assert os.listdir(workdir / "tb")


def test_signal_stops_at_chunk_boundary_then_resume_matches(
  trainer, reference, stopped, tmp_path
):
  _, ref = reference
  workdir, res = stopped
  assert res.interrupted == signal.SIGTERM
  assert res.history[-1]["env_steps"] == 80
  resumed_dir = tmp_path / "run"
  shutil.copytree(workdir, resumed_dir)
  lines = []
  out = run(trainer, resumed_dir, lines.append, resume=True)
  assert any("resumed from the checkpoint at step 80" in ln for ln in lines)
  assert out.interrupted is None
  assert_same_run(out, ref)
  # The logs hold every record once, as the uninterrupted run's do.
  assert without_time(read_jsonl(resumed_dir)) == without_time(
    read_jsonl(reference[0])
  )


def test_fresh_run_refuses_a_workdir_with_checkpoints(stopped):
  workdir, _ = stopped
  with pytest.raises(checkpoint_lib.WorkdirError, match="resume=True"):
    runner.run(run_config(workdir), log=lambda _: None)


def test_resume_refuses_a_different_config(stopped, tmp_path):
  workdir, _ = stopped
  shutil.copytree(workdir, tmp_path / "run")
  c = run_config(tmp_path / "run", resume=True)
  c.reward.lr = 1e-3
  with pytest.raises(config_lib.ConfigError, match="reward.lr"):
    runner.run(c, log=lambda _: None)


def test_corrupted_latest_checkpoint_falls_back(trainer, reference, tmp_path):
  workdir, ref = reference
  run_dir = tmp_path / "run"
  shutil.copytree(workdir, run_dir)
  # Damage every file of the array data of the latest checkpoint (200).
  latest = run_dir / "checkpoints" / "200" / "arrays"
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  lines = []
  out = run(trainer, run_dir, lines.append, resume=True)
  assert any("step 200" in ln and "unreadable" in ln for ln in lines)
  assert any("resumed from the checkpoint at step 160" in ln for ln in lines)
  assert os.path.isdir(run_dir / "checkpoints_corrupt" / "200")
  # 160 -> 200 is recomputed and ends where the reference ended.
  assert_same_run(out, ref)


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_checkpoint import run_config
    from erljax import runner

    def log(line):
      print(line, flush=True)
      if line.startswith("step       120"):
        time.sleep(600)  # killed here: after checkpoint 80, before 120

    runner.run(run_config({workdir!r}), log=log)
""")


def test_sigkill_then_resume_matches_and_keeps_ratings(
  trainer, reference, tmp_path, monkeypatch
):
  _, ref = reference
  workdir = tmp_path / "run"
  child = subprocess.Popen(
    [
      sys.executable,
      "-c",
      _CHILD.format(tests=os.path.dirname(__file__), workdir=str(workdir)),
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
  )
  try:
    for line in child.stdout:
      if line.startswith("step       120"):
        break
    # Checkpoint 80 is written in a background thread that goes on while the
    # child sleeps; kill once orbax has renamed it into place (on a loaded
    # machine it may still be in flight when "step 120" is printed, and a run
    # killed mid-save rightly resumes from 40).
    finished = workdir / "checkpoints" / "80"
    deadline = time.monotonic() + 300
    while not finished.is_dir() and time.monotonic() < deadline:
      time.sleep(0.05)
    assert finished.is_dir(), os.listdir(workdir / "checkpoints")
    child.send_signal(signal.SIGKILL)
  finally:
    child.kill()
    child.wait()
  assert child.returncode == -signal.SIGKILL
  # The killed process had rated session 2 (step 120) but not checkpointed
  # it: sessions 2 and 3 are rated after the resume, session 1 is not.
  calls = []
  rate = scripted.ScriptedRater.rate

  def counting_rate(self, queries):
    calls.append(len(queries))
    return rate(self, queries)

  monkeypatch.setattr(scripted.ScriptedRater, "rate", counting_rate)
  lines = []
  out = run(trainer, workdir, lines.append, resume=True)
  assert any("resumed from the checkpoint at step 80" in ln for ln in lines)
  assert calls == [10, 10, 5, 5]  # 2 seeds x (session 2, session 3)
  assert [f["queries_sent"] for f in out.feedback] == [10, 20, 25]
  assert_same_run(out, ref)
  sessions = [
    r["session"] for r in read_jsonl(workdir) if r["kind"] == "feedback"
  ]
  assert sessions == [1, 2, 3]


def test_nan_stops_and_keeps_last_good_checkpoint(stopped, tmp_path):
  """A reward that turns NaN after the resume at step 80: the run stops at
  the next chunk and step 80 stays the latest checkpoint."""
  workdir, _ = stopped
  run_dir = tmp_path / "run"
  shutil.copytree(workdir, run_dir)
  c = run_config(run_dir, resume=True)
  learned = trainer_lib.Trainer.create(c).reward

  class NaNReward:
    model = learned.model
    init = learned.init

    def __call__(self, params, transitions):
      return learned(params, transitions) * np.nan

  trainer = trainer_lib.Trainer.create(c, reward=NaNReward())
  with pytest.raises(
    FloatingPointError, match=r"non-finite .* at env step 120.*step 80"
  ):
    runner.run(trainer.config, log=lambda _: None, trainer=trainer)
  steps = sorted(int(d) for d in os.listdir(run_dir / "checkpoints"))
  assert steps[-1] == 80


def test_unwritable_workdir_fails_before_compiling(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  c = run_config(blocker / "run")
  with pytest.raises(checkpoint_lib.WorkdirError, match="not writable"):
    runner.run(c, log=pytest.fail)  # log: would mean it compiled


def test_too_little_disk_space_fails_before_compiling(tmp_path, monkeypatch):
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(
    checkpoint_lib.shutil, "disk_usage", lambda _: usage._replace(free=1 << 20)
  )
  with pytest.raises(checkpoint_lib.WorkdirError, match="MiB free"):
    runner.run(run_config(tmp_path / "run"), log=pytest.fail)


def test_config_checks():
  c = run_config("")
  c.checkpoint.keep = 1
  with pytest.raises(config_lib.ConfigError, match="checkpoint.keep=1"):
    config_lib.validate(c)
  c = run_config("", resume=True)
  with pytest.raises(config_lib.ConfigError, match="config.workdir=''"):
    config_lib.validate(c)


def test_split_and_merge_round_trip():
  tree = {
    "a": np.arange(3),
    "b": {"c": 1, "d": np.zeros(2), "e": [1, 2]},
    "f": None,
    "g": {"h": "x"},
  }
  arrays, host = checkpoint_lib.split(tree)
  assert set(arrays) == {"a", "b"} and set(arrays["b"]) == {"d"}
  json.dumps(host)
  merged = checkpoint_lib.merge(arrays, json.loads(json.dumps(host)))
  assert merged["b"]["c"] == 1 and merged["b"]["e"] == [1, 2]
  assert merged["f"] is None and merged["g"] == {"h": "x"}
  np.testing.assert_array_equal(merged["b"]["d"], np.zeros(2))


# The compiled programs of a run and of its feedback sessions, by the name
# JAX compiles them under (abstract traces such as jax.eval_shape of the
# state's shape compile nothing and are not counted).
PROGRAMS = (
  "init",
  "train_chunk",
  "evaluate",
  "sample_queries",
  "epoch",
  "after_feedback",
  "after_feedback_reset",
  "empty_rating_sets",
  "init_fn",
)


def test_each_program_compiles_once_across_sessions_eval_and_resume(tmp_path):
  """Retrace guard: a run with feedback sessions, evaluations and
  checkpoints, stopped and resumed in the same process with the same
  Trainer, compiles every program exactly once."""
  compiled = []

  class Names(logging.Handler):
    def emit(self, record):
      m = re.match(r"Compiling jit\((\S+)\) with", record.getMessage())
      if m:
        compiled.append(m.group(1))

  # A fresh Trainer: the module's shared one may have compiled already.
  # Budget 30 = three full sessions of 10, so the query count (a static
  # argument of sample_queries) never changes.
  c = run_config(tmp_path, total_steps=120)
  c.feedback.budget = 30
  fresh = trainer_lib.Trainer.create(c)
  handler = Names()
  logger = logging.getLogger("jax._src.interpreters.pxla")
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(logging.WARNING)
  try:
    with jax.log_compiles(True):
      first = runner.run(c, log=lambda _: None, trainer=fresh)
      c.total_steps, c.resume = TOTAL, True
      second = runner.run(c, log=lambda _: None, trainer=fresh)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
  # Sessions on both sides of the resume, evaluations and checkpoints ran.
  assert [f["env_steps"] for f in first.feedback] == [80]
  # No session at the end of the first run (120): the resumed one asks at
  # its first chunk boundary, 160.
  assert [f["env_steps"] for f in second.feedback] == [80, 160]
  assert second.history[-1]["env_steps"] == TOTAL
  counts = {name: compiled.count(name) for name in PROGRAMS}
  assert counts == {name: 1 for name in PROGRAMS}, counts
  # The rated signal of a reward-rated task is the reward itself: its jit
  # forwards the input and compiles nothing.
  assert compiled.count("signal") <= 1


def test_a_key_added_since_the_checkpoint_may_hold_its_default():
  saved = {"num_envs": 8, "reward.lr": 3e-4}
  now = {"num_envs": 8, "reward.lr": 3e-4, "replay_shards": 0}
  assert checkpoint_lib.changed_key(saved, now) is None
  # At another value the new key changes what is computed.
  assert checkpoint_lib.changed_key(saved, {**now, "replay_shards": 2}) == (
    "replay_shards"
  )
  assert checkpoint_lib.changed_key(saved, {**now, "reward.lr": 1e-3}) == (
    "reward.lr"
  )
  # Keys that steer only logging and the launch may change.
  assert checkpoint_lib.changed_key(saved, {**now, "total_steps": 9}) is None
