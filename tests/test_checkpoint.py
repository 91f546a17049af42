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

import erljax
from erljax.io import checkpoint as checkpoint_lib
from erljax.config import defaults as config_lib
from erljax.online import runner
from erljax.io import snapshot
from erljax.online import trainer as trainer_lib
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
  # run_info.json names the code of both starts (erljax.io.provenance).
  with open(resumed_dir / "run_info.json") as f:
    starts = json.load(f)["starts"]
  assert [s["resumed"] for s in starts] == [False, True]
  assert starts[1]["erljax_dir"] == os.path.dirname(erljax.__file__)


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
  assert any("step 200" in ln and "damaged" in ln for ln in lines)
  assert any("resumed from the checkpoint at step 160" in ln for ln in lines)
  assert os.path.isdir(run_dir / "checkpoints_corrupt" / "200")
  # 160 -> 200 is recomputed and ends where the reference ended.
  assert_same_run(out, ref)


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_checkpoint import run_config
    from erljax.online import runner

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
  arrays, host = snapshot.split(tree)
  assert set(arrays) == {"a", "b"} and set(arrays["b"]) == {"d"}
  json.dumps(host)
  merged = snapshot.merge(arrays, json.loads(json.dumps(host)))
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
  Trainer, compiles every program exactly once (the reward epoch once per
  block length)."""
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
  # The reward epoch compiles once per block length (erljax.rewards.learner.
  # block_lengths): 10 then 20 ratings in batches of 8 are epochs of 2 and 3
  # minibatch steps, run as one block of 2 and one of 4.
  assert counts == {**{name: 1 for name in PROGRAMS}, "epoch": 2}, counts
  # The rated signal of a reward-rated task is the reward itself: its jit
  # forwards the input and compiles nothing.
  assert compiled.count("signal") <= 1


def test_a_key_added_since_the_checkpoint_may_hold_its_default():
  saved = {"num_envs": 8, "reward.lr": 3e-4}
  now = {"num_envs": 8, "reward.lr": 3e-4, "replay_shards": 0}
  assert snapshot.changed_key(saved, now) is None
  # At another value the new key changes what is computed.
  assert snapshot.changed_key(saved, {**now, "replay_shards": 2}) == (
    "replay_shards"
  )
  assert snapshot.changed_key(saved, {**now, "reward.lr": 1e-3}) == (
    "reward.lr"
  )
  # Keys that steer only logging and the launch may change.
  assert snapshot.changed_key(saved, {**now, "total_steps": 9}) is None


# -- restore: a changed state is an error, only damaged files move aside ----


def small_tree(a=None):
  """A tiny run tree: one array field and host values."""
  return {
    "a": np.arange(3, dtype=np.float32) if a is None else a,
    "b": {"c": np.ones((2, 2), np.int32)},
    "progress": {"env_steps": 0},
  }


def small_checkpoints(workdir, steps=(1, 2)):
  """Checkpoints at `steps` of small_tree (step s has a = arange(3) + s)."""
  c = run_config(workdir, resume=True)
  ckpt = checkpoint_lib.Checkpointer(c, lambda _: None)
  for s in steps:
    ckpt.save(s, {**small_tree(np.arange(3, dtype=np.float32) + s)})
  ckpt.close()
  return c


def listing(workdir):
  """Every path under workdir (what a restore may not change)."""
  return sorted(
    os.path.relpath(os.path.join(root, n), workdir)
    for root, dirs, files in os.walk(workdir)
    for n in dirs + files
  )


def restore(c, template, lines=None):
  log = lines.append if lines is not None else (lambda _: None)
  ckpt = checkpoint_lib.Checkpointer(c, log)
  try:
    return ckpt.restore(template)
  finally:
    ckpt.close()


def damage(step_dir):
  """Garbage in every file of a checkpoint's array data."""
  for root, _, files in os.walk(step_dir / "arrays"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")


@pytest.mark.parametrize(
  "template, match",
  [
    (  # a field added by a code upgrade
      {**small_tree(), "new": np.zeros(2, np.float32)},
      r"\['new'\]: in the template \(2,\) float32, not in the checkpoint",
    ),
    (
      small_tree(np.zeros(4, np.float32)),
      r"\['a'\]: template \(4,\) float32, saved \(3,\) float32",
    ),
    (
      small_tree(np.zeros(3, np.int32)),
      r"\['a'\]: template \(3,\) int32, saved \(3,\) float32",
    ),
    (
      {"a": np.zeros(3, np.float32), "progress": {}},
      r"\['b'\]\['c'\]: in the checkpoint \(2, 2\) int32, not in the template",
    ),
  ],
  ids=["new_field", "shape", "dtype", "dropped_field"],
)
def test_restore_refuses_a_changed_state_and_moves_nothing(
  tmp_path, template, match
):
  c = small_checkpoints(tmp_path)
  before = listing(tmp_path)
  with pytest.raises(checkpoint_lib.RestoreError, match=match) as e:
    restore(c, template)
  assert "step 2" in str(e.value) and "nothing was moved" in str(e.value)
  assert listing(tmp_path) == before
  # The same checkpoints still restore with the state they were written for.
  step, tree = restore(c, small_tree())
  assert step == 2
  np.testing.assert_array_equal(tree["a"], np.arange(3) + 2)


def test_restore_checks_shapes_and_dtypes_of_what_orbax_returns(
  tmp_path, monkeypatch
):
  """A restore that casts or reshapes silently is caught after the read."""
  c = small_checkpoints(tmp_path)
  restore_fn = checkpoint_lib.ocp.CheckpointManager.restore

  def casting_restore(self, step, args):
    got = restore_fn(self, step, args=args)
    if "arrays" not in got.keys():
      return got
    return {"arrays": {**got["arrays"], "['a']": np.zeros(3, np.float16)}}

  monkeypatch.setattr(
    checkpoint_lib.ocp.CheckpointManager, "restore", casting_restore
  )
  with pytest.raises(checkpoint_lib.RestoreError, match="float16"):
    restore(c, small_tree())


def test_two_successive_corruptions_keep_both_set_aside_copies(tmp_path):
  c = small_checkpoints(tmp_path)
  corrupt = tmp_path / "checkpoints_corrupt"
  for n in (1, 2):
    damage(tmp_path / "checkpoints" / "2")
    lines = []
    step, _ = restore(c, small_tree(), lines)
    assert step == 1
    assert any("step 2" in ln and "moved to" in ln for ln in lines), lines
    assert len(os.listdir(corrupt)) == n
    # The run goes on and writes step 2 again, which is damaged again.
    ckpt = checkpoint_lib.Checkpointer(c, lambda _: None)
    ckpt.save(2, small_tree())
    ckpt.close()
  kept = sorted(os.listdir(corrupt))
  assert kept == ["2", "2.1"]
  for name in kept:  # each copy whole: its array files are there
    assert os.listdir(corrupt / name / "arrays")


def test_missing_file_is_damage_but_no_readable_checkpoint_is_an_error(
  tmp_path,
):
  c = small_checkpoints(tmp_path)
  os.remove(tmp_path / "checkpoints" / "2" / "host" / "metadata")
  step, _ = restore(c, small_tree())
  assert step == 1
  assert os.listdir(tmp_path / "checkpoints_corrupt") == ["2"]
  # The only one left is damaged too: an error, and it stays where it is.
  damage(tmp_path / "checkpoints" / "1")
  before = listing(tmp_path)
  with pytest.raises(
    checkpoint_lib.RestoreError, match=r"none is readable \(step 1: "
  ):
    restore(c, small_tree())
  assert listing(tmp_path) == before


@pytest.mark.parametrize(
  "error", [OSError(5, "Input/output error"), MemoryError()]
)
def test_transient_errors_propagate_and_move_nothing(
  tmp_path, monkeypatch, error
):
  c = small_checkpoints(tmp_path)
  before = listing(tmp_path)

  def failing(self, step, args):
    raise error

  monkeypatch.setattr(checkpoint_lib.ocp.CheckpointManager, "restore", failing)
  with pytest.raises(type(error)):
    restore(c, small_tree())
  assert listing(tmp_path) == before


def test_resume_with_a_changed_state_keeps_metrics_and_checkpoints(
  trainer, reference, tmp_path, monkeypatch
):
  """A code upgrade adds a field to the run state: the resume stops with
  the difference named, before metrics.jsonl or a checkpoint is touched."""
  workdir, _ = reference
  run_dir = tmp_path / "run"
  shutil.copytree(workdir, run_dir)
  metrics = (run_dir / "metrics.jsonl").read_bytes()
  before = listing(run_dir)
  snapshot = runner._Run._snapshot

  def with_new_field(self):
    return {**snapshot(self), "new": np.zeros(5, np.float32)}

  monkeypatch.setattr(runner._Run, "_snapshot", with_new_field)
  with pytest.raises(checkpoint_lib.RestoreError, match=r"\['new'\]"):
    run(trainer, run_dir, resume=True)
  assert (run_dir / "metrics.jsonl").read_bytes() == metrics
  assert listing(run_dir) == before


def test_rater_transport_settings_may_change_on_resume():
  """How the service is reached (a moved server, a longer timeout, more
  retries) changes no answer: a resume accepts it. What is asked and of
  which model does not change."""
  saved = snapshot.flat_config(config_lib.default())
  for key, value in (
    ("rater.base_url", "http://10.0.0.2:8000/v1"),
    ("rater.api_key_env", "OTHER_KEY"),
    ("rater.timeout", 600.0),
    ("rater.max_retries", 9),
    ("rater.backoff_base", 2.0),
    ("rater.backoff_max", 120.0),
    ("rater.max_wait", 900.0),
    ("rater.concurrency", 2),
    # How long and how much the run may wait and ask (issue 31): a run
    # stopped at its request cap goes on with a larger one.
    ("rater.max_requests", 500),
    ("rater.requests_per_minute", 60.0),
    ("rater.breaker_failures", 20),
    ("rater.cache_dir", "/shared/replies"),
    ("feedback.drain_wait_s", 30.0),
  ):
    assert snapshot.changed_key(saved, {**saved, key: value}) is None, key
  for key, value in (("rater.model", "other"), ("rater.temperature", 0.7)):
    assert snapshot.changed_key(saved, {**saved, key: value}) == key
