"""Host-side feedback sessions: asking raters, pending sessions, storing
ratings and training the reward, between the compiled training chunks.

`FeedbackLoop` runs the PEBBLE schedule for all S seeds of a run. Its
compiled pieces (query sampling, a reward-training epoch, relabelling) are
built once per Trainer (erljax.session_programs). Shapes: S seeds, Q queries a
session, P segments a query (1 for ratings, 2 for preferences), H steps a
segment, E reward-ensemble members.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from erljax import config as config_lib
from erljax import daemon
from erljax import distributed
from erljax import feedback as feedback_lib
from erljax import reward_learner
from erljax import media
from erljax import raters as raters_lib
from erljax import render as render_lib
from erljax import sharding
from erljax.replay import Transition
from erljax.session_programs import session_programs
from erljax.trainer import TrainState, Trainer


class RatingStopped(RuntimeError):
  """The raters cannot go on (the service stayed down, or the run reached
  rater.max_requests); the message says why. The run saves a checkpoint
  and stops (erljax.runner; exit code 4 from erljax.train)."""


def _wait(
  futures: List[concurrent.futures.Future],
  timeout: Optional[float],
  stop: Callable[[], bool],
) -> bool:
  """Waits until all futures are done (True), `timeout` seconds passed
  (None: no limit) or stop() says so (False)."""
  deadline = None if timeout is None else time.perf_counter() + timeout
  while True:
    left = 0.1 if deadline is None else deadline - time.perf_counter()
    _, late = concurrent.futures.wait(futures, timeout=max(0.0, min(0.1, left)))
    if not late:
      return True
    if left <= 0 or stop():
      return False


@dataclasses.dataclass
class _Pending:
  """A session whose rating calls are out (one future per seed)."""

  session: int  # 1-based request number
  due_at: int  # env step the schedule asked for it
  requested_at: int  # env step its queries were sampled at
  queries_sent: int  # cumulative, this session included
  queries: Transition  # device leaves [S, Q, P, H, ...]
  keys: jax.Array  # [S] keys it sampled with (reused to relabel)
  futures: List[concurrent.futures.Future]  # -> raters_lib.Ratings
  requested_time: float  # perf_counter() at the request
  host_seconds: float  # main-thread time spent on it so far
  answered_times: List[float] = dataclasses.field(default_factory=list)
  frames: Optional[np.ndarray] = None  # seed 0's [Q, P, h, w, 3], if drawn

  @property
  def num_queries(self) -> int:
    return int(self.queries.true_reward.shape[1])


class FeedbackLoop:
  """Host side of the PEBBLE schedule for all seeds of a run.

  A session is two halves run between compiled chunks:
  request: sample queries from the recent replay (jitted), bring them to the
    host, render their post-step frames if the raters need them, and hand
    each seed's rating call to a worker thread (one per seed, so one rater is
    never called twice at once and answers come back in order; over several
    processes only process 0 asks, erljax.distributed);
  completion: once every seed has answered (polled without blocking at each
    chunk boundary; process 0's answers and its "all answered" reach every
    process, which then all train the same reward), store the answered
    queries, train the reward ensemble until accuracy > stop_accuracy or
    max_epochs, relabel the whole buffer, and after the first completed
    session reset the critic and warm up.
  Training chunks keep running in between. Unanswered queries are counted
  (answered / dropped per seed) and never labelled; a rater reports service
  failures that way, so an exception out of a rater is a bug and stops the
  run when its session completes. Queries the service gave no reply to
  (Ratings.outage) are not charged to feedback.budget (the fewest such
  drops over the seeds are given back), so an outage does not use up the
  budget; a service that stays down, or rater.max_requests reached, makes
  `stop_reason()` say why, and the run stops (RatingStopped).

  A session due while `feedback.max_pending` sessions are in flight waits:
  it is requested at the first chunk boundary with room (its record's
  due_at < requested_at), not skipped, so the budget is still spent; the
  schedule of later sessions is unchanged. k-NN pre-training goes on until
  the first reward model is installed.

  Inline mode, the reference's blocking schedule: with
  `feedback.asynchronous=False`, or when no rater is `remote` (the scripted
  rater answers from memory), each session is rated and completed at the
  boundary it is requested at; runs are then exactly reproducible.
  """

  def __init__(
    self, trainer: Trainer, seeds: List[int], raters: Optional[List[Any]] = None
  ):
    c = trainer.config
    self.trainer = trainer
    self.config = c
    self.programs = session_programs(trainer)
    # The run's device layout: reward minibatches split over its data axis.
    self.layout = sharding.Layout.create(c.num_devices, c.num_seeds, c.num_envs)
    self.learner = self.programs.learner
    task = trainer.rated
    seg_len = c.feedback.segment_length
    # The noise-free scripted answer: what stored labels are scored against.
    self.reference = raters_lib.ScriptedRater.for_segments(
      self.learner.num_classes, task.rated_range, seg_len
    )
    # One guard for all seeds' raters: a shared request cap and pacing.
    guard = raters_lib.run_guard(c.rater)
    self.raters = (
      raters
      if raters is not None
      else [
        raters_lib.make(
          c.rater,
          task.name,
          self.learner.num_classes,
          1_000_003 * s + 7,
          segment_length=seg_len,
          guard=guard,
          cache_dir=config_lib.reply_cache_dir(c),
        )
        for s in seeds
      ]
    )
    if len(self.raters) != len(seeds):
      raise ValueError(f"{len(self.raters)} raters for {len(seeds)} seeds")
    self.inline = not (
      c.feedback.asynchronous
      and any(getattr(r, "remote", True) for r in self.raters)
    )
    self.needs_frames = any(
      getattr(r, "needs_frames", False) for r in self.raters
    )
    # Grids of rated frames (seed 0, rating feedback) for looking at labels.
    self.frames_dir = (
      os.path.join(c.workdir, "rated_frames")
      if c.workdir
      and c.render.rated_frames
      and c.reward.feedback_type == "rating"
      else None
    )
    self._renderer = None
    self.primary = distributed.is_primary()
    self._workers: List[daemon.DaemonExecutor] = []
    self.rng = np.random.default_rng(seeds[0])
    self.rating_sets = self.programs.empty_sets(jnp.arange(len(seeds)))
    self.opt_state = None
    self.sent = 0
    self.requested = 0  # sessions requested
    self.installed = 0  # sessions whose ratings trained the reward
    self.pending: collections.deque[_Pending] = collections.deque()
    self.next_session = config_lib.first_session(c)

  def unsupervised(self, env_steps: int) -> bool:
    """k-NN pre-training before the first session and, while its ratings
    are out, until the first reward model is installed."""
    c = self.config
    return bool(
      c.feedback.unsupervised
      and (
        env_steps < config_lib.first_session(c)
        or (self.requested > 0 and self.installed == 0)
      )
    )

  def due(self, env_steps: int) -> bool:
    """A session is due from its scheduled step on while budget is left,
    but never at the end of training: its labels would reach no policy."""
    c = self.config
    return (
      self.next_session <= env_steps < c.total_steps
      and self.sent < c.feedback.budget
    )

  # -- the two halves ---------------------------------------------------------

  def step(
    self, state: TrainState, env_steps: int
  ) -> tuple[TrainState, List[Dict[str, Any]]]:
    """The chunk-boundary work: completes the sessions whose answers are all
    in (oldest first), then requests a due session if there is room.
    Returns the state and the records of the sessions completed."""
    recs: List[Dict[str, Any]] = []
    state = self._complete_ready(state, env_steps, recs)
    if (
      self.due(env_steps)
      and len(self.pending) < self.config.feedback.max_pending
    ):
      self.request(state, env_steps)
      if self.inline:
        state = self._complete_ready(state, env_steps, recs)
    return state, recs

  def request(self, state: TrainState, env_steps: int) -> None:
    """Samples the session's queries and sends them; returns once sent (in
    inline mode once answered)."""
    c = self.config
    t0 = time.perf_counter()
    num = min(c.feedback.queries, c.feedback.budget - self.sent)
    keys = jax.vmap(lambda k: jax.random.fold_in(k, env_steps))(state.key)
    queries = self.programs.sample(
      state.buffer, state.env.t, keys, state.reward_params, num
    )
    # The rater judges the task's rating signal (by default the reward);
    # from here on the queries carry it as their ground truth, per step
    # [S, Q, P, H]; the rater sees segment returns [S, Q, P].
    queries = queries.replace(
      true_reward=self.programs.signal(
        queries.obs, queries.action, queries.next_obs, queries.true_reward
      )
    )
    true_r = distributed.to_host(queries.true_reward).sum(-1)
    frames = self._frames(queries)
    # The boundary to the raters: S seeds, Q queries, P segments, H steps.
    seg = (
      len(self.raters),
      num,
      2 if self.learner.preference else 1,
      c.feedback.segment_length,
    )
    chex.assert_shape(queries.obs, seg + (self.trainer.env.observation_size,))
    chex.assert_shape(queries.true_reward, seg)
    if frames is not None:
      chex.assert_shape(frames, seg[:3] + (c.render.height, c.render.width, 3))
    self.sent += num
    self.requested += 1
    p = _Pending(
      session=self.requested,
      due_at=self.next_session,
      requested_at=env_steps,
      queries_sent=self.sent,
      queries=queries,
      keys=keys,
      futures=[],
      requested_time=t0,
      host_seconds=0.0,
      frames=None if frames is None else frames[0],
    )
    for s, rater in enumerate(self.raters):
      args = (rater, true_r[s], None if frames is None else frames[s])
      if not self.primary:  # process 0's answers arrive at completion
        future = concurrent.futures.Future()
        future.set_result(None)
      elif self.inline:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(feedback_lib.ask(*args))
      else:
        future = self._worker(s).submit(feedback_lib.ask, *args)
      future.add_done_callback(
        lambda _, t=p.answered_times: t.append(time.perf_counter())
      )
      p.futures.append(future)
    self.next_session += c.feedback.interval
    p.host_seconds = time.perf_counter() - t0
    self.pending.append(p)

  def _complete_ready(
    self,
    state: TrainState,
    env_steps: int,
    recs: List[Dict[str, Any]],
    final: bool = False,
  ) -> TrainState:
    while self.pending and self._answered(self.pending[0]):
      state, rec = self._complete(
        state, env_steps, self.pending.popleft(), final
      )
      recs.append(rec)
    return state

  def _complete(
    self, state: TrainState, env_steps: int, p: _Pending, final: bool
  ) -> tuple[TrainState, Dict[str, Any]]:
    """Stores the answers, trains the reward and relabels the buffer. With
    `final` (training is over) the critic is not reset."""
    c = self.config
    t0 = time.perf_counter()
    ratings = self._ratings(p)
    if self.frames_dir and p.frames is not None:
      media.save_png(
        media.rated_grid(
          p.frames[:, 0],
          ratings[0].labels,
          raters_lib.CLASS_NAMES[self.learner.num_classes],
        ),
        os.path.join(self.frames_dir, f"session_{p.session:04d}.png"),
      )
    self.rating_sets, counts = feedback_lib.store_ratings(
      self.rating_sets,
      p.queries,
      ratings,
      None
      if self.programs.query_frames is None
      else self.programs.query_frames(p.queries),
    )
    num_seeds = len(ratings)
    # Queries the service never answered cost nothing: not charged.
    outages = distributed.from_primary(
      np.asarray([r.num_outages for r in ratings], np.int64)
    ).tolist()
    self.sent -= min(outages)
    stored = distributed.to_host(self.rating_sets.size)
    trained = bool(stored.sum() > 0)
    if trained:
      params = state.reward_params
      if self.opt_state is None:
        self.opt_state = self.programs.opt_init(params)
      params, self.opt_state, epochs, acc, bal = reward_learner.train_reward(
        self.learner,
        self.programs.epoch,
        params,
        self.opt_state,
        self.rating_sets,
        self.rng,
        self.layout.put_minibatches,
        self.layout.data_devices,
      )
      first = self.installed == 0 and c.feedback.reset_critic and not final
      state, m = self.programs.after[first](state, params, p.keys)
      m = distributed.to_host({k: m[k] for k in ("reward_corr", "signal_corr")})
      corr = m["reward_corr"].tolist()
      signal_corr = m["signal_corr"].tolist()
      self.installed += 1
    else:  # nothing answered yet: keep the reward as it is
      epochs = [0] * num_seeds
      acc = bal = corr = signal_corr = [math.nan] * num_seeds
    rec = {
      "env_steps": env_steps,
      "session": p.session,
      "due_at": p.due_at,
      "requested_at": p.requested_at,
      "queries": len(ratings[0].answered),
      "queries_sent": p.queries_sent,
      **counts,
      "not_charged": outages,
      "ratings_stored": stored.tolist(),
      "trained": trained,
      "epochs": epochs,
      "reward_accuracy": acc,
      "reward_balanced_accuracy": bal,
      "reward_corr": corr,
      "signal_corr": signal_corr,
      "label_histogram": feedback_lib.label_histogram(
        self.rating_sets, self.learner.num_classes
      ),
      "label_accuracy": feedback_lib.label_accuracy(
        self.rating_sets,
        None if self.learner.preference else self.reference.true_labels,
      ),
      "latency_seconds": max(p.answered_times) - p.requested_time,
      "seconds": p.host_seconds + time.perf_counter() - t0,
    }
    counts = [r.counts for r in ratings if r.counts is not None]
    if len(counts) == num_seeds:  # what this session cost each seed's VLM
      for k in ("requests", "prompt_tokens", "completion_tokens"):
        rec[k] = [n[k] for n in counts]
      rec["drop_reasons"] = [n["drop_reasons"] for n in counts]
    stats = [r.stats() for r in self.raters if hasattr(r, "stats")]
    if stats:  # a VLM's counts so far: requests, retries, drop reasons, ...
      rec["rater_stats"] = stats
    return state, rec

  def finish(
    self,
    state: TrainState,
    env_steps: int,
    stop: Callable[[], bool] = lambda: False,
  ) -> tuple[TrainState, List[Dict[str, Any]]]:
    """End of training: waits for the sessions still out (at most
    `feedback.final_wait_s` seconds in all, None: no limit, or until
    stop() is true: a signal) and completes them without a critic reset;
    those not answered in time are abandoned, their queries counted as
    dropped (record `abandoned: True`)."""
    limit = self.config.feedback.final_wait_s
    deadline = None if limit is None else time.perf_counter() + limit
    recs: List[Dict[str, Any]] = []
    while self.pending:
      timeout = (
        None if deadline is None else max(0.0, deadline - time.perf_counter())
      )
      done = _wait(self.pending[0].futures, timeout, stop)
      if distributed.from_primary(np.asarray(not done)):
        break
      state = self._complete_ready(state, env_steps, recs, final=True)
    while self.pending:
      p = self.pending.popleft()
      for f in p.futures:
        f.cancel()
      q = p.num_queries
      recs.append(
        {
          "env_steps": env_steps,
          "session": p.session,
          "due_at": p.due_at,
          "requested_at": p.requested_at,
          "queries": q,
          "queries_sent": p.queries_sent,
          "abandoned": True,
          "answered": [0] * len(p.futures),
          "dropped": [q] * len(p.futures),
          "ratings_stored": distributed.to_host(self.rating_sets.size).tolist(),
          "latency_seconds": time.perf_counter() - p.requested_time,
        }
      )
    return state, recs

  def drain(
    self,
    state: TrainState,
    env_steps: int,
    timeout: Optional[float] = -1.0,
    stop: Callable[[], bool] = lambda: False,
  ) -> tuple[TrainState, List[Dict[str, Any]]]:
    """Waits for the sessions in flight and completes those answered
    (before a checkpoint, so that ratings already paid for are stored, not
    asked again). Waits at most `timeout` seconds (-1: feedback.drain_wait_s;
    None: no limit) and not once stop() is true (a signal). Sessions still
    out stay pending; `state_dict` leaves them out."""
    if timeout is not None and timeout < 0:
      timeout = self.config.feedback.drain_wait_s
    _wait([f for p in self.pending for f in p.futures], timeout, stop)
    recs: List[Dict[str, Any]] = []
    state = self._complete_ready(state, env_steps, recs)
    return state, recs

  def stop_reason(self) -> Optional[str]:
    """Why the raters cannot go on (RatingStopped), or None; the same on
    every process (process 0's raters decide)."""
    reasons = [getattr(r, "stop_reason", None) for r in self.raters]
    reason = next((r for r in reasons if r), None)
    if not distributed.from_primary(np.asarray(reason is not None)):
      return None
    return reason or "process 0's raters stopped (its log says why)"

  def close(self) -> None:
    """Lets the worker threads go (calls still running finish on their own)
    and frees the renderer."""
    for w in self._workers:
      w.shutdown(wait=False, cancel_futures=True)
    self._workers = []
    if self._renderer is not None:
      self._renderer.close()
      self._renderer = None

  # -- helpers ----------------------------------------------------------------

  def _answered(self, p: _Pending) -> bool:
    """Whether every seed of `p` has its answers (process 0's view)."""
    return bool(
      distributed.from_primary(np.asarray(all(f.done() for f in p.futures)))
    )

  def _ratings(self, p: _Pending) -> List[raters_lib.Ratings]:
    """Each seed's answers to `p`, process 0's on every process (the labels
    [Q] and answered [Q] from which the stored and dropped counts follow)."""
    got = [f.result() for f in p.futures]
    if jax.process_count() == 1:
      return got
    q = p.queries.true_reward.shape[1]
    shape = (len(got), q)
    labels, answered = distributed.from_primary(
      (
        np.stack([r.labels for r in got]).astype(np.int32)
        if self.primary
        else np.zeros(shape, np.int32),
        np.stack([r.answered for r in got])
        if self.primary
        else np.zeros(shape, bool),
      )
    )
    return [  # the counts stay on process 0, which writes the records
      raters_lib.Ratings(
        labels=lab, answered=ans, counts=getattr(g, "counts", None)
      )
      for lab, ans, g in zip(labels, answered, got)
    ]

  def _worker(self, seed_index: int) -> daemon.DaemonExecutor:
    while len(self._workers) <= seed_index:
      self._workers.append(
        daemon.DaemonExecutor(1, f"rater{len(self._workers)}")
      )
    return self._workers[seed_index]

  def _frames(self, queries: Transition) -> Optional[np.ndarray]:
    """Post-step frames [S, Q, P, height, width, 3] uint8 of the last step
    of each query segment, rendered from its pose on the host (None if no
    rater needs frames)."""
    if not (self.needs_frames or self.frames_dir):
      return None
    if queries.pose is None:
      raise ValueError(
        "the raters need frames but the replay buffer holds "
        "no poses to render them from"
      )
    pose = distributed.to_host(queries.pose)[:, :, :, -1]
    if not self.primary:  # only process 0's raters look at frames
      return None
    if self._renderer is None:
      size = self.config.render
      self._renderer = render_lib.FrameRenderer(
        self.trainer.env.task.name, height=size.height, width=size.width
      )
    frames = self._renderer.render(pose.reshape(-1, pose.shape[-1]))
    return frames.reshape(pose.shape[:-1] + frames.shape[1:])

  # -- checkpointing (erljax.checkpoint) ------------------------------------

  def state_dict(self) -> Dict[str, Any]:
    """Everything a resumed run needs: arrays (rating sets, reward optimiser)
    and host values (counters, the numpy and rater RNG states). Sessions
    still out are left out: the counters are those from before they were
    requested, so a resumed run requests them again."""
    opt_state = self.opt_state
    if opt_state is None:
      # A stand-in of the right structure (not used on load): Adam's state
      # before the first session.
      n = self.rating_sets.size.shape[0]
      opt_state = jax.tree_util.tree_map(
        lambda x: jnp.zeros(x.shape, x.dtype),
        jax.eval_shape(
          jax.vmap(
            lambda k: self.learner.optimizer.init(self.trainer.reward.init(k))
          ),
          jax.random.split(jax.random.PRNGKey(0), n),
        ),
      )
    return {
      "rating_sets": self.rating_sets,
      "opt_state": opt_state,
      "has_opt_state": self.opt_state is not None,
      "sent": self.sent - sum(p.num_queries for p in self.pending),
      "next_session": (
        self.pending[0].due_at if self.pending else self.next_session
      ),
      "requested": self.requested - len(self.pending),
      "installed": self.installed,
      "rng": self.rng.bit_generator.state,
      # A rater without state (e.g. a cached VLM client, whose cache
      # is on disk) contributes {}; never API keys.
      "raters": [
        r.state_dict() if hasattr(r, "state_dict") else {} for r in self.raters
      ],
    }

  def load_state_dict(self, d: Dict[str, Any]) -> None:
    """Inverse of `state_dict`."""
    if len(d["raters"]) != len(self.raters):
      raise ValueError(
        f"checkpoint has {len(d['raters'])} raters, this run {len(self.raters)}"
      )
    self.rating_sets = d["rating_sets"]
    self.opt_state = d["opt_state"] if d["has_opt_state"] else None
    if self.pending:
      raise ValueError("cannot load a checkpoint while sessions are pending")
    self.sent = int(d["sent"])
    self.requested, self.installed = int(d["requested"]), int(d["installed"])
    self.next_session = int(d["next_session"])
    self.rng.bit_generator.state = d["rng"]
    for rater, rd in zip(self.raters, d["raters"]):
      if hasattr(rater, "load_state_dict"):
        rater.load_state_dict(rd)
