"""Host-side feedback sessions: asking raters, pending sessions, storing
ratings and training the reward, between the compiled training chunks.

`FeedbackLoop` runs the PEBBLE schedule for all S seeds of a run. Its
compiled pieces (query sampling, a reward-training epoch, installing the
reward) are built once per Trainer (erljax.online.session_programs); the raters
are called through erljax.online.rating_calls and the frames they see are drawn
by erljax.online.rated_frames. docs/architecture.md follows a rating through
them. Shapes: S seeds, Q queries a session, P segments a query (1 for ratings, 2
for preferences), H steps a segment, E reward-ensemble members.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any, Callable, Dict, List, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from erljax.config import defaults as config_lib
from erljax.runtime import distributed
from erljax.rewards import queries as feedback_lib
from erljax.online import rated_frames
from erljax.online import rating_calls
from erljax.rewards import learner as reward_learner
from erljax.raters import api as raters_lib
from erljax.runtime import sharding
from erljax.online.pending_session import PendingSession, rater_costs
from erljax.online.session_programs import session_programs
from erljax.online.trainer import TrainState, Trainer


class RatingStopped(RuntimeError):
  """The raters cannot go on (the service stayed down, or the run reached
  rater.max_requests); the message says why. The run saves a checkpoint
  and stops (erljax.online.runner; exit code 4 from erljax.train)."""


class FeedbackLoop:
  """Host side of the PEBBLE schedule for all seeds of a run.

  A session is two halves run between compiled chunks:
  request: sample queries from the recent replay (jitted), bring them to the
    host, render their post-step frames if the raters need them, and hand
    each seed's rating call to a worker thread (one per seed, so one rater is
    never called twice at once and answers come back in order; over several
    processes only process 0 asks, erljax.runtime.distributed);
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
    self,
    trainer: Trainer,
    seeds: List[int],
    layout: sharding.Layout,
    raters: Optional[List[Any]] = None,
  ):
    """layout: the run's device layout (erljax.online.runner builds it), over
    whose data axis the reward minibatches are split; raters: one per
    seed (None: made from config.rater)."""
    c = trainer.config
    self.trainer = trainer
    self.config = c
    self.programs = session_programs(trainer)
    self.layout = layout
    self.learner = self.programs.learner
    task = trainer.rated
    # The noise-free scripted answer: what stored labels are scored against.
    self.reference = raters_lib.ScriptedRater.for_segments(
      self.learner.num_classes, task.rated_range, c.feedback.segment_length
    )
    if raters is None:
      raters = rating_calls.make_raters(
        c, task.name, self.learner.num_classes, seeds
      )
    if len(raters) != len(seeds):
      raise ValueError(f"{len(raters)} raters for {len(seeds)} seeds")
    self.calls = rating_calls.RatingCalls(raters, c.feedback.asynchronous)
    self.frames = rated_frames.RatedFrames(
      c, trainer.env.task.name, self.calls.needs_frames
    )
    self.rng = np.random.default_rng(seeds[0])
    self.rating_sets = self.programs.empty_sets(jnp.arange(len(seeds)))
    self.opt_state = None
    self.sent = 0
    self.requested = 0  # sessions requested
    self.installed = 0  # sessions whose ratings trained the reward
    self.pending: collections.deque[PendingSession] = collections.deque()
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
      if self.calls.inline:
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
    frames = self.frames.draw(queries)
    # The boundary to the raters: S seeds, Q queries, P segments, H steps.
    seg = (
      len(self.calls.raters),
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
    p = PendingSession(
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
    p.futures = self.calls.send(true_r, frames, p.answered_times)
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
    while self.pending and self.calls.answered(self.pending[0].futures):
      state, rec = self._complete(
        state, env_steps, self.pending.popleft(), final
      )
      recs.append(rec)
    return state

  def _complete(
    self, state: TrainState, env_steps: int, p: PendingSession, final: bool
  ) -> tuple[TrainState, Dict[str, Any]]:
    """Stores the answers, trains the reward and installs it (the buffer
    relabelled). With `final` (training is over) the critic is not reset.
    Returns the state and the session's record."""
    t0 = time.perf_counter()
    ratings = self.calls.ratings(p.futures, p.num_queries)
    self.frames.save_grid(
      p.session, p.frames, ratings[0].labels, self.learner.num_classes
    )
    self.rating_sets, counts = feedback_lib.store_ratings(
      self.rating_sets,
      p.queries,
      ratings,
      None
      if self.programs.query_frames is None
      else self.programs.query_frames(p.queries),
    )
    # Queries the service never answered cost nothing: not charged.
    outages = distributed.from_primary(
      np.asarray([r.num_outages for r in ratings], np.int64)
    ).tolist()
    self.sent -= min(outages)
    stored = distributed.to_host(self.rating_sets.size)
    trained = bool(stored.sum() > 0)
    if trained:
      state, learned = self._train_and_install(state, p.keys, final)
    else:  # nothing answered yet: keep the reward as it is
      nan = [math.nan] * len(ratings)
      learned = dict(
        epochs=[0] * len(ratings),
        reward_accuracy=nan,
        reward_balanced_accuracy=nan,
        reward_corr=nan,
        signal_corr=nan,
      )
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
      **learned,
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
    return state, {**rec, **rater_costs(ratings, self.calls.stats())}

  def _train_and_install(
    self, state: TrainState, keys: jax.Array, final: bool
  ) -> tuple[TrainState, Dict[str, List[Any]]]:
    """Trains the reward ensemble on the stored ratings
    (reward_learner.train_reward) and installs it: the replay relabelled,
    and after the first session (not `final`) the critic reset and warmed
    up. keys [S]: the session's sampling keys. Returns the state and the
    per-seed [S] epochs, accuracies and correlations of the record."""
    c = self.config
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
    if self.installed == 0 and c.feedback.reset_critic and not final:
      state, m = self.programs.install_first_reward(state, params, keys)
    else:
      state, m = self.programs.install_reward(state, params, keys)
    m = distributed.to_host({k: m[k] for k in ("reward_corr", "signal_corr")})
    self.installed += 1
    return state, dict(
      epochs=epochs,
      reward_accuracy=acc,
      reward_balanced_accuracy=bal,
      reward_corr=m["reward_corr"].tolist(),
      signal_corr=m["signal_corr"].tolist(),
    )

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
      done = rating_calls.wait(self.pending[0].futures, timeout, stop)
      if distributed.from_primary(np.asarray(not done)):
        break
      state = self._complete_ready(state, env_steps, recs, final=True)
    while self.pending:
      p = self.pending.popleft()
      for f in p.futures:
        f.cancel()
      stored = distributed.to_host(self.rating_sets.size).tolist()
      recs.append(p.abandoned_record(env_steps, stored))
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
    rating_calls.wait(
      [f for p in self.pending for f in p.futures], timeout, stop
    )
    recs: List[Dict[str, Any]] = []
    state = self._complete_ready(state, env_steps, recs)
    return state, recs

  def stop_reason(self) -> Optional[str]:
    """Why the raters cannot go on (RatingStopped), or None; the same on
    every process (process 0's raters decide)."""
    return self.calls.stop_reason()

  def close(self) -> None:
    """Lets the worker threads go (calls still running finish on their own)
    and frees the renderer."""
    self.calls.close()
    self.frames.close()

  # -- checkpointing (erljax.io.checkpoint) -----------------------------------

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
      "raters": self.calls.state_dict(),
    }

  def load_state_dict(self, d: Dict[str, Any]) -> None:
    """Inverse of `state_dict`."""
    if len(d["raters"]) != len(self.calls.raters):
      raise ValueError(
        f"checkpoint has {len(d['raters'])} raters, "
        f"this run {len(self.calls.raters)}"
      )
    if self.pending:
      raise ValueError("cannot load a checkpoint while sessions are pending")
    self.rating_sets = d["rating_sets"]
    self.opt_state = d["opt_state"] if d["has_opt_state"] else None
    self.sent = int(d["sent"])
    self.requested, self.installed = int(d["requested"]), int(d["installed"])
    self.next_session = int(d["next_session"])
    self.rng.bit_generator.state = d["rng"]
    self.calls.load_state_dict(d["raters"])
