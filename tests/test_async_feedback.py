"""Asynchronous feedback sessions (trainer.FeedbackLoop), driven chunk by
chunk with raters whose answers the test releases: deterministic."""

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.online import runner
from erljax.online import sessions
from erljax.runtime import sharding
from erljax.online import trainer as trainer_lib
from erljax.raters.api import Ratings, ScriptedRater
from test_trainer import learned_config

QUERIES = 10


class GatedRater:
  """Answers like the noise-free scripted rater, but only once `gate` is
  set; drops the odd-numbered queries. A remote rater (no `remote` flag)."""

  needs_frames = False

  def __init__(self, low, high, num_classes=3):
    self.num_classes = num_classes
    self.truth = ScriptedRater(num_classes, low, high)
    self.gate = threading.Event()
    self.calls = 0

  def rate(self, queries):
    self.calls += 1
    if not self.gate.wait(timeout=60):
      raise TimeoutError("the test never opened the gate")
    labels = self.truth.true_labels(queries.true_return)
    answered = np.arange(len(labels)) % 2 == 0
    return Ratings(labels=np.where(answered, labels, -1), answered=answered)


class RemoteScripted(ScriptedRater):
  """The scripted rater flagged remote: goes through the worker path."""

  remote = True


@pytest.fixture(scope="module")
def compiled():
  # A scene with poses: a rater that needs frames is shown rendered ones.
  c = learned_config(
    400, 1, task="CartpoleSwingup", queries=QUERIES, warmup_updates=2
  )
  trainer = trainer_lib.Trainer.create(c)
  chunk = jax.jit(jax.vmap(trainer.train_chunk, in_axes=(0, None)))
  return c, trainer, chunk


class Driver:
  """run()'s loop by hand: one chunk, then the loop's boundary work."""

  def __init__(self, compiled, raters):
    self.c, trainer, self.chunk = compiled
    layout = sharding.Layout.create(1, num_seeds=1, num_envs=self.c.num_envs)
    self.loop = sessions.FeedbackLoop(trainer, [0], layout, raters)
    self.state = jax.jit(jax.vmap(trainer.init))(
      jax.vmap(jax.random.PRNGKey)(jnp.arange(1))
    )
    self.steps = 0

  def advance(self):
    self.state, _ = self.chunk(
      self.state, jnp.asarray(self.loop.unsupervised(self.steps))
    )
    self.steps += self.c.log_every
    self.state, recs = self.loop.step(self.state, self.steps)
    return recs


def _leaves_equal(a, b):
  return all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def test_training_runs_on_while_ratings_are_out(compiled):
  rater = GatedRater(0.0, 1.0)  # CartpoleSwingup rewards lie in [0, 1]
  d = Driver(compiled, [rater])
  assert not d.loop.calls.inline
  initial = d.state.reward_params
  assert d.advance() == [] and d.advance() == []  # 40; 80: session 1 sent
  assert len(d.loop.pending) == 1 and d.loop.sent == QUERIES
  assert d.loop.unsupervised(d.steps)  # pre-training until a reward exists
  # 120: session 2 is due but waits for the one in flight; training goes on.
  assert d.advance() == []
  assert rater.calls == 1 and len(d.loop.pending) == 1
  assert _leaves_equal(d.state.reward_params, initial)
  np.testing.assert_array_equal(d.state.env_steps, [120])
  rater.gate.set()
  d.loop.pending[0].futures[0].result(timeout=60)
  # 160: session 1 completes, then the waiting session 2 is requested.
  recs = d.advance()
  assert len(recs) == 1
  rec = recs[0]
  assert (
    rec["session"],
    rec["due_at"],
    rec["requested_at"],
    rec["env_steps"],
  ) == (1, 80, 80, 160)
  # Odd queries were dropped: counted, never labelled.
  assert rec["answered"] == [QUERIES // 2] and rec["dropped"] == [QUERIES // 2]
  assert rec["ratings_stored"] == [QUERIES // 2] and rec["trained"]
  assert rec["label_accuracy"] == [1.0]
  assert not _leaves_equal(d.state.reward_params, initial)
  assert d.loop.installed == 1 and not d.loop.unsupervised(d.steps)
  assert len(d.loop.pending) == 1
  assert (d.loop.pending[0].due_at, d.loop.pending[0].requested_at) == (
    120,
    160,
  )
  d.loop.pending[0].futures[0].result(timeout=60)
  recs = d.advance()  # 200: session 2 completes, session 3 (due 160) sent
  assert [r["session"] for r in recs] == [2]
  assert recs[0]["ratings_stored"] == [QUERIES]
  assert d.loop.requested == 3 and d.loop.sent == 3 * QUERIES
  d.loop.close()


def test_finish_abandons_late_sessions_and_counts_them(compiled):
  c = compiled[0]
  rater = GatedRater(0.0, 1.0)
  d = Driver(compiled, [rater])
  d.advance()
  d.advance()  # session 1 sent at 80
  limit = d.loop.config.feedback.final_wait_s
  d.loop.config.feedback.final_wait_s = 0.0
  try:
    state, recs = d.loop.finish(d.state, d.steps)
  finally:
    d.loop.config.feedback.final_wait_s = limit
    rater.gate.set()
    d.loop.close()
  assert len(recs) == 1 and recs[0]["abandoned"]
  assert recs[0]["answered"] == [0] and recs[0]["dropped"] == [QUERIES]
  assert recs[0]["ratings_stored"] == [0]
  assert not d.loop.pending and d.loop.installed == 0
  assert _leaves_equal(state.reward_params, d.state.reward_params)
  del c


def test_finish_waits_and_completes_without_critic_reset(compiled):
  rater = GatedRater(0.0, 1.0)
  d = Driver(compiled, [rater])
  d.advance()
  d.advance()
  rater.gate.set()
  critic = d.state.sac.critic_params
  critic = jax.tree_util.tree_map(np.asarray, critic)
  state, recs = d.loop.finish(d.state, d.steps)
  d.loop.close()
  assert len(recs) == 1 and recs[0]["trained"]
  assert recs[0]["env_steps"] == 80 and d.loop.installed == 1
  # Training is over: the first reward is installed without resetting the
  # critic the agent was trained with.
  assert _leaves_equal(state.sac.critic_params, critic)


class OutageRater(GatedRater):
  """Answers the even-numbered queries once the gate is open; the odd ones
  are dropped as a service failure (outage), never answered."""

  def rate(self, queries):
    r = super().rate(queries)
    return Ratings(labels=r.labels, answered=r.answered, outage=~r.answered)


def test_dropped_queries_are_not_charged_to_the_budget(compiled):
  """Only queries the service answered spend feedback.budget: a session
  whose half got no reply leaves that half in the budget. (Before: all
  QUERIES were charged.)"""
  rater = OutageRater(0.0, 1.0)
  rater.gate.set()
  d = Driver(compiled, [rater])
  recs = []
  while not recs:
    recs = d.advance()
  d.loop.close()
  assert recs[0]["answered"] == [QUERIES // 2]
  assert recs[0]["not_charged"] == [QUERIES - QUERIES // 2]
  # What the budget has spent, sessions requested since left out.
  assert d.loop.state_dict()["sent"] == QUERIES // 2


def test_waits_for_answers_are_bounded_and_cut_short_by_stop(compiled):
  """drain() waits at most its limit, and not once stop() says so (a
  signal); sessions still out stay pending, and the state a checkpoint
  saves is the one before they were requested. finish() is cut short by
  stop() too. Rating calls run on daemon threads. (Before: drain waited
  forever, finish until final_wait_s = None, i.e. forever, and a hung call
  kept the process alive at exit.)"""
  rater = GatedRater(0.0, 1.0)
  d = Driver(compiled, [rater])
  try:
    while not d.loop.pending:
      d.advance()
    before = (d.loop.sent, d.loop.requested)
    p = d.loop.pending[0]
    t0 = time.monotonic()
    d.state, recs = d.loop.drain(d.state, d.steps, timeout=0.3)
    assert time.monotonic() - t0 < 2.0 and recs == []
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    d.state, recs = d.loop.drain(d.state, d.steps, timeout=60, stop=stop.is_set)
    assert time.monotonic() - t0 < 2.0 and recs == []
    saved = d.loop.state_dict()
    assert (saved["sent"], saved["requested"], saved["next_session"]) == (
      before[0] - QUERIES,
      before[1] - 1,
      p.due_at,
    )
    workers = [t for t in threading.enumerate() if t.name.startswith("rater0")]
    assert workers and all(t.daemon for t in workers)
    t0 = time.monotonic()
    d.state, recs = d.loop.finish(d.state, d.steps, stop=stop.is_set)
    assert time.monotonic() - t0 < 2.0
    assert [r.get("abandoned") for r in recs] == [True]
  finally:
    rater.gate.set()
    d.loop.close()


class StoppingRater(RemoteScripted):
  """Answers, then says its run must stop (as a VLM rater whose service
  stayed down, or whose run reached rater.max_requests, does)."""

  stop_reason = None

  def rate(self, queries):
    got = super().rate(queries)
    self.stop_reason = "the rating service is down (test)"
    return got


def test_a_rater_that_must_stop_ends_the_run_after_a_checkpoint(tmp_path):
  """The session's answers are stored, a checkpoint is saved, the log says
  why and how to go on, and run() raises RatingStopped (exit code 4 from
  erljax.train). (Before: raters had no way to stop a run.)"""
  c = learned_config(200, 2, queries=10, budget=25, warmup_updates=5)
  c.feedback.asynchronous = False
  c.workdir = str(tmp_path)
  raters = [StoppingRater(2, -1.5, 0.0, seed=s) for s in (7, 8)]
  lines = []
  with pytest.raises(sessions.RatingStopped, match=r"down \(test\)"):
    runner.run(c, log=lines.append, raters=raters)
  assert any(
    line.startswith("rating stopped at step 80: the rating service is down")
    and "checkpoint at step 80" in line
    and "--config.resume=True" in line
    for line in lines
  ), lines
  assert (tmp_path / "checkpoints" / "80").is_dir()
  assert "feedback   1 at step 80" in "\n".join(lines)


def test_synchronous_remote_rater_matches_the_inline_scripted_run():
  # test_trainer's learned-reward run, once through the worker-path rater
  # in blocking mode, once through the inline scripted rater.
  c = learned_config(200, 2, queries=10, budget=25, warmup_updates=5)
  c.feedback.asynchronous = False
  # The point task's 2 classes over its reward range (-1.5, 0).
  make = lambda cls: [cls(2, -1.5, 0.0, noise=0.2, seed=s) for s in (7, 8)]
  # One Trainer for both runs: its programs are compiled once.
  trainer = trainer_lib.Trainer.create(c)
  got = runner.run(
    c, log=lambda _: None, trainer=trainer, raters=make(RemoteScripted)
  )
  c.feedback.asynchronous = True
  ref = runner.run(
    c, log=lambda _: None, trainer=trainer, raters=make(ScriptedRater)
  )
  assert [r["env_steps"] for r in got.feedback] == [80, 120, 160]
  for a, b in zip(got.feedback, ref.feedback):
    assert a["requested_at"] == a["env_steps"]
    for key in (
      "answered",
      "ratings_stored",
      "epochs",
      "reward_accuracy",
      "label_histogram",
    ):
      assert a[key] == b[key], key
  assert _leaves_equal(got.state.reward_params, ref.state.reward_params)
  assert _leaves_equal(got.state.sac.actor_params, ref.state.sac.actor_params)


class FrameCheckingRater:
  """A remote rater that needs frames: records what it was shown and rates
  like the scripted rater."""

  needs_frames = True

  def __init__(self, task):
    low, high = task.reward_range
    self.num_classes = task.num_classes
    self.truth = ScriptedRater(task.num_classes, low, high)
    self.shown = []

  def rate(self, queries):
    self.shown.append(queries.frames)
    labels = self.truth.true_labels(queries.true_return)
    return Ratings(labels=labels, answered=np.ones(len(labels), bool))


def test_raters_that_need_frames_get_the_post_step_frames(compiled):
  c, trainer, _ = compiled
  rater = FrameCheckingRater(trainer.env.task)
  d = Driver(compiled, [rater])
  d.advance()
  # At step 40 (10 steps into 20-step episodes, no reset yet) the newest
  # transitions hold the pose of the state the last step reached.
  n, end = trainer.env.num_envs, int(d.state.buffer.insert_pos[0])
  assert end == 40
  np.testing.assert_array_equal(
    np.asarray(d.state.buffer.data.pose)[0, end - n : end],
    np.asarray(jax.vmap(trainer.env.pose)(d.state.env))[0],
  )
  d.advance()  # session 1 sent at 80
  p = d.loop.pending[0]
  p.futures[0].result(timeout=60)
  frames = rater.shown[0]
  assert frames.shape == (QUERIES, 224, 224, 3) and frames.dtype == np.uint8
  # The frames are those of the sampled queries' recorded poses (queries
  # [S, Q, P, H, ...]: the last step of each one-step segment).
  from erljax.vision import render  # pylint: disable=g-import-not-at-top

  with render.FrameRenderer(c.task) as r:
    np.testing.assert_array_equal(
      frames[:3], r.render(np.asarray(p.queries.pose[0, :3, 0, -1]))
    )
  recs = d.advance()
  assert recs[0]["answered"] == [QUERIES]
  d.loop.close()
