"""The SAC training program: compiled chunks of env steps and updates.

The host only runs between chunks (logging, evaluation, later feedback
sessions). Every function here is pure in a `TrainState` and vmaps over a
leading seed axis: `run()` trains `num_seeds` seeds at once.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import math
import os
import sys
import time
import weakref
from typing import Any, Callable, Dict, List, Optional

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from erljax import checkpoint as checkpoint_lib
from erljax import config as config_lib
from erljax import envs
from erljax import feedback as feedback_lib
from erljax import intrinsic
from erljax import media
from erljax import metrics_writer
from erljax import raters as raters_lib
from erljax import render as render_lib
from erljax import replay
from erljax import reward_source
from erljax import sac as sac_lib
from erljax import sharding
from erljax.replay import Transition


@struct.dataclass
class TrainState:
  sac: sac_lib.SACState
  buffer: replay.ReplayBuffer
  env: envs.VecEnvState
  reward_params: Any
  ent_stats: intrinsic.RunningStats  # scale of the k-NN state-entropy reward
  key: jax.Array
  env_steps: jax.Array  # int32 scalar: transitions collected so far


def sac_hyper(config: ml_collections.ConfigDict) -> sac_lib.SACHyper:
  s = config.sac
  return sac_lib.SACHyper(
      hidden_sizes=tuple(s.hidden_sizes), actor_lr=s.actor_lr,
      critic_lr=s.critic_lr, alpha_lr=s.alpha_lr,
      init_temperature=s.init_temperature, discount=s.discount, tau=s.tau,
      target_update_period=s.target_update_period, log_std_min=s.log_std_min,
      log_std_max=s.log_std_max, target_entropy=s.target_entropy)


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Pure training functions for one validated config (one seed each)."""

  config: ml_collections.ConfigDict
  env: envs.VecEnv
  eval_env: envs.VecEnv
  agent: sac_lib.SAC
  reward: reward_source.RewardSource

  @classmethod
  def create(cls, config: ml_collections.ConfigDict,
             reward: Optional[reward_source.RewardSource] = None
             ) -> "Trainer":
    config_lib.validate(config)
    env = envs.make_vec_env(config.task, config.num_envs, config.episode_length)
    eval_env = envs.make_vec_env(config.task, config.num_eval_envs,
                                 config.episode_length)
    agent = sac_lib.SAC(env.observation_size, env.action_size,
                        sac_hyper(config))
    return cls(config=config, env=env, eval_env=eval_env, agent=agent,
               reward=reward or reward_source.make(
                   config, env.observation_size, env.action_size))

  @property
  def rated(self) -> envs.TaskSpec:
    """The task as its raters judge it (config rater.rated / rater.range)."""
    return envs.rated_task(self.env.task, self.config.rater.rated,
                           self.config.rater.range)

  @property
  def chunk_len(self) -> int:
    """Vectorized steps per compiled chunk."""
    return self.config.log_every // self.config.num_envs

  # -- state --------------------------------------------------------------

  def init(self, key: jax.Array) -> TrainState:
    k_sac, k_env, k_rew, key = jax.random.split(key, 4)
    obs_size, act_size = self.env.observation_size, self.env.action_size
    example = Transition(
        obs=jnp.zeros((obs_size,)), action=jnp.zeros((act_size,)),
        reward=jnp.zeros(()), true_reward=jnp.zeros(()),
        discount=jnp.zeros(()), next_obs=jnp.zeros((obs_size,)),
        pose=jnp.zeros((self.env.pose_size,)))
    return TrainState(
        sac=self.agent.init(k_sac),
        buffer=replay.init(self.config.replay_capacity, example),
        env=self.env.reset(k_env), reward_params=self.reward.init(k_rew),
        ent_stats=intrinsic.RunningStats.create(), key=key,
        env_steps=jnp.zeros((), jnp.int32))

  # -- one vectorized step ------------------------------------------------

  def _collect(self, state: TrainState, action: jax.Array
               ) -> tuple[TrainState, Dict[str, jax.Array]]:
    env_state, out = self.env.step(state.env, action)
    transition = Transition(
        obs=state.env.obs, action=action, reward=out.reward,
        true_reward=out.reward,
        discount=1.0 - out.terminal.astype(jnp.float32),
        next_obs=out.next_obs, pose=self.env.pose(out.inner))
    reward = self.reward(state.reward_params, transition)
    chex.assert_shape(reward, (self.env.num_envs,))
    transition = transition.replace(reward=reward)
    done = out.terminal | out.truncated
    state = state.replace(
        env=env_state, buffer=replay.add(state.buffer, transition),
        env_steps=state.env_steps + self.env.num_envs)
    stats = {"episodes": jnp.sum(done),
             "episode_return_sum": jnp.sum(out.episode_return),
             "reward": jnp.mean(reward), "true_reward": jnp.mean(out.reward)}
    return state, stats

  @property
  def learned_reward(self) -> bool:
    return self.config.reward.source == "learned"

  def sac_updates(self, state: TrainState, key: jax.Array, num: int,
                  unsupervised: jax.Array | bool = False
                  ) -> tuple[TrainState, Dict[str, jax.Array]]:
    """`num` SAC updates on replay batches.

    With `unsupervised` (an unbatched bool; a traced one selects at run time
    without vmap turning the branch into a select) the batch rewards are
    PEBBLE's k-NN state entropy over the states collected so far, divided by
    its running std.
    """
    c = self.config
    ref_size = min(c.replay_capacity, config_lib.first_session(c))
    def one(carry, key):
      sac_state, stats = carry
      k_sample, k_update = jax.random.split(key)
      batch = replay.sample(state.buffer, k_sample, c.batch_size)
      if unsupervised is not False:
        def entropy_reward(args):
          batch, stats = args
          ref = state.buffer.data.obs[:ref_size]
          valid = jnp.arange(ref_size) < state.buffer.size
          r = intrinsic.knn_distance(batch.obs, ref, valid, c.feedback.knn_k)
          stats = stats.update(r)
          return batch.replace(reward=r / stats.std), stats
        batch, stats = jax.lax.cond(unsupervised, entropy_reward,
                                    lambda args: args, (batch, stats))
      sac_state, metrics = self.agent.update(sac_state, batch, k_update)
      return (sac_state, stats), metrics
    (sac_state, stats), metrics = jax.lax.scan(
        one, (state.sac, state.ent_stats), jax.random.split(key, num))
    return (state.replace(sac=sac_state, ent_stats=stats),
            jax.tree_util.tree_map(jnp.mean, metrics))

  # -- compiled programs ----------------------------------------------------

  def train_chunk(self, state: TrainState,
                  unsupervised: jax.Array | bool = False
                  ) -> tuple[TrainState, Dict[str, jax.Array]]:
    """`chunk_len` vectorized steps, each followed by SAC updates.

    While env_steps < config.seed_steps actions are uniform random and the
    agent is left unchanged (the updates are computed and discarded, so one
    compiled program serves the whole run).
    """
    c = self.config
    def step(state, _):
      key, k_act, k_rand, k_upd = jax.random.split(state.key, 4)
      seeding = state.env_steps < c.seed_steps
      policy_action, _ = self.agent.sample_action(state.sac.actor_params,
                                                  state.env.obs, k_act)
      random_action = jax.random.uniform(k_rand, policy_action.shape,
                                         minval=-1.0, maxval=1.0)
      action = jnp.where(seeding, random_action, policy_action)
      state, stats = self._collect(state.replace(key=key), action)
      if c.updates_per_step > 0:
        new, metrics = self.sac_updates(state, k_upd, c.updates_per_step,
                                        unsupervised)
        keep_old = lambda old, new: jax.tree_util.tree_map(
            lambda a, b: jnp.where(seeding, a, b), old, new)
        state = state.replace(sac=keep_old(state.sac, new.sac),
                              ent_stats=keep_old(state.ent_stats,
                                                 new.ent_stats))
      else:
        metrics = {}
      return state, {**stats, **metrics}
    state, m = jax.lax.scan(step, state, None, length=self.chunk_len)
    episodes = jnp.sum(m.pop("episodes"))
    ret_sum = jnp.sum(m.pop("episode_return_sum"))
    metrics = jax.tree_util.tree_map(jnp.mean, m)
    metrics["train_episodes"] = episodes
    metrics["train_return"] = jnp.where(episodes > 0,
                                        ret_sum / jnp.maximum(episodes, 1),
                                        jnp.nan)
    return state, metrics

  def after_feedback(self, state: TrainState, reward_params: Any,
                     reset_critic: bool, key: jax.Array
                     ) -> tuple[TrainState, Dict[str, jax.Array]]:
    """Installs new reward parameters, relabels the WHOLE replay buffer and,
    after the first session, resets the critic and runs warm-up updates."""
    c = self.config
    state = state.replace(reward_params=reward_params)
    buffer = replay.relabel(state.buffer,
                            lambda t: self.reward(reward_params, t))
    state = state.replace(buffer=buffer)
    filled = jnp.arange(buffer.capacity) < buffer.size
    d = buffer.data
    # r_hat against the env reward, and against what the rater judges (the
    # same unless the task's rating signal leaves part of the reward out).
    rated = self.rated.signal(d.obs, d.action, d.next_obs, d.true_reward)
    metrics = {"reward_corr": _masked_corr(d.reward, d.true_reward, filled),
               "signal_corr": _masked_corr(d.reward, rated, filled)}
    if reset_critic:
      k_reset, k_upd = jax.random.split(key)
      state = state.replace(sac=self.agent.reset_critic(state.sac, k_reset))
      if c.feedback.warmup_updates:
        state, _ = self.sac_updates(state, k_upd, c.feedback.warmup_updates)
    return state, metrics

  def evaluate(self, state: TrainState, key: jax.Array) -> Dict[str, jax.Array]:
    """One deterministic episode in each of num_eval_envs fresh envs.

    Returns mean env return and success rate (success: max over the episode
    of the task's success signal). Steps after a true termination don't count.
    """
    env = self.eval_env
    def step(carry, _):
      env_state, alive, ret, succ = carry
      action = self.agent.deterministic_action(state.sac.actor_params,
                                               env_state.obs)
      env_state, out = env.step(env_state, action)
      ret = ret + alive * out.reward
      succ = succ | (alive.astype(bool) & out.success)
      alive = alive * (1.0 - out.terminal.astype(jnp.float32))
      return (env_state, alive, ret, succ), None
    n = env.num_envs
    init = (env.reset(key), jnp.ones((n,)), jnp.zeros((n,)),
            jnp.zeros((n,), bool))
    (_, _, ret, succ), _ = jax.lax.scan(step, init, None,
                                        length=env.episode_length)
    return {"eval_return": jnp.mean(ret),
            "eval_success": jnp.mean(succ.astype(jnp.float32))}


def _masked_corr(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """Pearson correlation of a and b over the entries where mask is True."""
  w = mask.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w), 1.0)
  am = a - jnp.sum(a * w) / n
  bm = b - jnp.sum(b * w) / n
  cov = jnp.sum(am * bm * w)
  return cov / jnp.sqrt(jnp.sum(am**2 * w) * jnp.sum(bm**2 * w) + 1e-12)


# ----------------------------------------------------------------------------
# Host loop.


def _to_host(tree) -> Dict[str, Any]:
  return {k: np.asarray(v).tolist() for k, v in jax.device_get(tree).items()}


def _summary(name: str, per_seed: List[float]) -> Dict[str, float]:
  arr = np.asarray(per_seed, dtype=np.float64)
  finite = arr[np.isfinite(arr)]
  return {name: float(finite.mean()) if finite.size else math.nan,
          f"{name}_std": float(finite.std()) if finite.size > 1 else 0.0}


@dataclasses.dataclass
class RunResult:
  history: List[Dict[str, Any]]
  state: TrainState
  compile_seconds: float
  train_seconds: float
  feedback: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  interrupted: Optional[int] = None  # the signal that stopped the run early


@dataclasses.dataclass
class _Pending:
  """A session whose rating calls are out (one future per seed)."""

  session: int                 # 1-based request number
  due_at: int                  # env step the schedule asked for it
  requested_at: int            # env step its queries were sampled at
  queries_sent: int            # cumulative, this session included
  queries: Transition          # device leaves [S, Q, P, H, ...]
  keys: jax.Array              # [S] keys it sampled with (reused to relabel)
  futures: List[concurrent.futures.Future]  # -> raters_lib.Ratings
  requested_time: float        # perf_counter() at the request
  host_seconds: float          # main-thread time spent on it so far
  answered_times: List[float] = dataclasses.field(default_factory=list)
  frames: Optional[np.ndarray] = None  # seed 0's [Q, P, h, w, 3], if drawn


class FeedbackLoop:
  """Host side of the PEBBLE schedule for all seeds of a run.

  A session is two halves run between compiled chunks:
  request: sample queries from the recent replay (jitted), bring them to the
    host, render their post-step frames if the raters need them, and hand
    each seed's rating call to a worker thread (one per seed, so one rater is
    never called twice at once and answers come back in order);
  completion: once every seed has answered (polled without blocking at each
    chunk boundary), store the answered queries, train the reward ensemble
    until accuracy > stop_accuracy or max_epochs, relabel the whole buffer,
    and after the first completed session reset the critic and warm up.
  Training chunks keep running in between. Unanswered queries are counted
  (answered / dropped per seed) and never labelled; a rater reports service
  failures that way, so an exception out of a rater is a bug and stops the
  run when its session completes.

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

  def __init__(self, trainer: Trainer, seeds: List[int],
               raters: Optional[List[Any]] = None):
    c = trainer.config
    self.trainer = trainer
    self.config = c
    task = trainer.rated
    num_classes = c.rater.num_classes or task.num_classes
    self.learner = feedback_lib.make_learner(c, num_classes,
                                             trainer.reward.model)
    seg_len = c.feedback.segment_length
    # The noise-free scripted answer: what stored labels are scored against.
    self.reference = raters_lib.ScriptedRater.for_segments(
        num_classes, task.rated_range, seg_len)
    self.raters = raters if raters is not None else [
        raters_lib.make(c.rater, task.name, num_classes, 1_000_003 * s + 7,
                        segment_length=seg_len)
        for s in seeds]
    if len(self.raters) != len(seeds):
      raise ValueError(f"{len(self.raters)} raters for {len(seeds)} seeds")
    self.inline = not (c.feedback.asynchronous and any(
        getattr(r, "remote", True) for r in self.raters))
    self.needs_frames = any(getattr(r, "needs_frames", False)
                            for r in self.raters)
    # Grids of rated frames (seed 0, rating feedback) for looking at labels.
    self.frames_dir = (os.path.join(c.workdir, "rated_frames")
                       if c.workdir and c.render.rated_frames
                       and c.reward.feedback_type == "rating" else None)
    self._renderer = None
    self._workers: List[concurrent.futures.ThreadPoolExecutor] = []
    self.rng = np.random.default_rng(seeds[0])
    obs, act = trainer.env.observation_size, trainer.env.action_size
    n = len(seeds)
    segments = 2 if self.learner.preference else 1
    # An image reward model trains on the ray-cast frames of the rated
    # queries, drawn once when their ratings are stored.
    caster = getattr(trainer.reward, "caster", None)
    frame_shape = None if caster is None else (caster.height, caster.width)
    self._query_frames = (None if caster is None else
                          jax.jit(jax.vmap(lambda q: caster(q.pose))))
    self.rating_sets = jax.jit(jax.vmap(
        lambda _: feedback_lib.empty_rating_set(
            c.feedback.budget, obs, act, segments, seg_len, frame_shape)))(
                jnp.arange(n))
    self.opt_state = None
    self.sent = 0
    self.requested = 0       # sessions requested
    self.installed = 0       # sessions whose ratings trained the reward
    self.pending: collections.deque[_Pending] = collections.deque()
    self.next_session = config_lib.first_session(c)
    window = config_lib.query_window(c)
    candidates = (c.feedback.candidates
                  if c.feedback.sampling == "disagreement" else 1)
    reward = trainer.reward
    env = trainer.env
    self._sample = jax.jit(jax.vmap(
        lambda b, t, k, prm, q: feedback_lib.sample_queries(
            b, k, q, window, segments, candidates,
            lambda tr: reward.members(prm, tr), seg_len, env.num_envs, t,
            env.episode_length),
        in_axes=(0, 0, 0, 0, None)), static_argnums=4)
    self._epoch = jax.jit(jax.vmap(self.learner.epoch))
    self._signal = jax.jit(task.signal)
    self._after = {
        flag: jax.jit(jax.vmap(
            lambda s, p, k, flag=flag: trainer.after_feedback(s, p, flag, k)),
                      donate_argnums=0)
        for flag in (False, True)}

  def unsupervised(self, env_steps: int) -> bool:
    """k-NN pre-training before the first session and, while its ratings
    are out, until the first reward model is installed."""
    c = self.config
    return bool(c.feedback.unsupervised and (
        env_steps < config_lib.first_session(c)
        or (self.requested > 0 and self.installed == 0)))

  def due(self, env_steps: int) -> bool:
    """A session is due from its scheduled step on while budget is left,
    but never at the end of training: its labels would reach no policy."""
    c = self.config
    return (self.next_session <= env_steps < c.total_steps
            and self.sent < c.feedback.budget)

  # -- the two halves ---------------------------------------------------------

  def step(self, state: TrainState, env_steps: int
           ) -> tuple[TrainState, List[Dict[str, Any]]]:
    """The chunk-boundary work: completes the sessions whose answers are all
    in (oldest first), then requests a due session if there is room.
    Returns the state and the records of the sessions completed."""
    recs: List[Dict[str, Any]] = []
    state = self._complete_ready(state, env_steps, recs)
    if (self.due(env_steps)
        and len(self.pending) < self.config.feedback.max_pending):
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
    queries = self._sample(state.buffer, state.env.t, keys,
                           state.reward_params, num)
    # The rater judges the task's rating signal (by default the reward);
    # from here on the queries carry it as their ground truth, per step
    # [S, Q, P, H]; the rater sees segment returns [S, Q, P].
    queries = queries.replace(true_reward=self._signal(
        queries.obs, queries.action, queries.next_obs, queries.true_reward))
    true_r = np.asarray(queries.true_reward).sum(-1)
    frames = self._frames(queries)
    self.sent += num
    self.requested += 1
    p = _Pending(session=self.requested, due_at=self.next_session,
                 requested_at=env_steps, queries_sent=self.sent,
                 queries=queries, keys=keys, futures=[],
                 requested_time=t0, host_seconds=0.0,
                 frames=None if frames is None else frames[0])
    for s, rater in enumerate(self.raters):
      args = (rater, true_r[s], None if frames is None else frames[s])
      if self.inline:
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.set_result(feedback_lib.ask(*args))
      else:
        future = self._worker(s).submit(feedback_lib.ask, *args)
      future.add_done_callback(
          lambda _, t=p.answered_times: t.append(time.perf_counter()))
      p.futures.append(future)
    self.next_session += c.feedback.interval
    p.host_seconds = time.perf_counter() - t0
    self.pending.append(p)

  def _complete_ready(self, state: TrainState, env_steps: int,
                      recs: List[Dict[str, Any]], final: bool = False
                      ) -> TrainState:
    while self.pending and all(f.done() for f in self.pending[0].futures):
      state, rec = self._complete(state, env_steps, self.pending.popleft(),
                                  final)
      recs.append(rec)
    return state

  def _complete(self, state: TrainState, env_steps: int, p: _Pending,
                final: bool) -> tuple[TrainState, Dict[str, Any]]:
    """Stores the answers, trains the reward and relabels the buffer. With
    `final` (training is over) the critic is not reset."""
    c = self.config
    t0 = time.perf_counter()
    ratings = [f.result() for f in p.futures]
    if self.frames_dir and p.frames is not None:
      media.save_png(media.rated_grid(
          p.frames[:, 0], ratings[0].labels,
          raters_lib.CLASS_NAMES[self.learner.num_classes]),
          os.path.join(self.frames_dir, f"session_{p.session:04d}.png"))
    self.rating_sets, counts = feedback_lib.store_ratings(
        self.rating_sets, p.queries, ratings,
        None if self._query_frames is None else self._query_frames(p.queries))
    num_seeds = len(ratings)
    trained = bool(np.asarray(self.rating_sets.size).sum() > 0)
    if trained:
      params = state.reward_params
      if self.opt_state is None:
        self.opt_state = jax.jit(jax.vmap(self.learner.optimizer.init))(
            params)
      params, self.opt_state, epochs, acc, bal = feedback_lib.train_reward(
          self.learner, self._epoch, params, self.opt_state,
          self.rating_sets, self.rng)
      first = self.installed == 0 and c.feedback.reset_critic and not final
      state, m = self._after[first](state, params, p.keys)
      corr = np.asarray(m["reward_corr"]).tolist()
      signal_corr = np.asarray(m["signal_corr"]).tolist()
      self.installed += 1
    else:  # nothing answered yet: keep the reward as it is
      epochs = [0] * num_seeds
      acc = bal = corr = signal_corr = [math.nan] * num_seeds
    rec = {"env_steps": env_steps, "session": p.session,
           "due_at": p.due_at, "requested_at": p.requested_at,
           "queries": len(ratings[0].answered),
           "queries_sent": p.queries_sent, **counts,
           "ratings_stored": np.asarray(self.rating_sets.size).tolist(),
           "trained": trained, "epochs": epochs, "reward_accuracy": acc,
           "reward_balanced_accuracy": bal,
           "reward_corr": corr, "signal_corr": signal_corr,
           "label_histogram": self._histogram(),
           "label_accuracy": self._label_accuracy(),
           "latency_seconds": max(p.answered_times) - p.requested_time,
           "seconds": p.host_seconds + time.perf_counter() - t0}
    stats = [r.stats() for r in self.raters if hasattr(r, "stats")]
    if stats:  # a VLM's own counts: requests, retries, drop reasons, ...
      rec["rater_stats"] = stats
    return state, rec

  def finish(self, state: TrainState, env_steps: int
             ) -> tuple[TrainState, List[Dict[str, Any]]]:
    """End of training: waits for the sessions still out (at most
    `feedback.final_wait_s` seconds in all, None: no limit) and completes
    them without a critic reset; those not answered in time are abandoned,
    their queries counted as dropped (record `abandoned: True`)."""
    limit = self.config.feedback.final_wait_s
    deadline = None if limit is None else time.perf_counter() + limit
    recs: List[Dict[str, Any]] = []
    while self.pending:
      timeout = (None if deadline is None
                 else max(0.0, deadline - time.perf_counter()))
      _, late = concurrent.futures.wait(self.pending[0].futures,
                                        timeout=timeout)
      if late:
        break
      state = self._complete_ready(state, env_steps, recs, final=True)
    while self.pending:
      p = self.pending.popleft()
      for f in p.futures:
        f.cancel()
      q = len(np.asarray(p.queries.true_reward)[0])
      recs.append({
          "env_steps": env_steps, "session": p.session, "due_at": p.due_at,
          "requested_at": p.requested_at, "queries": q,
          "queries_sent": p.queries_sent, "abandoned": True,
          "answered": [0] * len(p.futures), "dropped": [q] * len(p.futures),
          "ratings_stored": np.asarray(self.rating_sets.size).tolist(),
          "latency_seconds": time.perf_counter() - p.requested_time})
    return state, recs

  def drain(self, state: TrainState, env_steps: int
            ) -> tuple[TrainState, List[Dict[str, Any]]]:
    """Waits for every session in flight and completes it (before a
    checkpoint, so that ratings already paid for are never asked again)."""
    for p in self.pending:
      concurrent.futures.wait(p.futures)
    recs: List[Dict[str, Any]] = []
    state = self._complete_ready(state, env_steps, recs)
    return state, recs

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

  def _worker(self, seed_index: int) -> concurrent.futures.ThreadPoolExecutor:
    while len(self._workers) <= seed_index:
      self._workers.append(concurrent.futures.ThreadPoolExecutor(
          max_workers=1, thread_name_prefix=f"rater{len(self._workers)}"))
    return self._workers[seed_index]

  def _frames(self, queries: Transition) -> Optional[np.ndarray]:
    """Post-step frames [S, Q, P, height, width, 3] uint8 of the last step
    of each query segment, rendered from its pose on the host (None if no
    rater needs frames)."""
    if not (self.needs_frames or self.frames_dir):
      return None
    if queries.pose is None:
      raise ValueError("the raters need frames but the replay buffer holds "
                       "no poses to render them from")
    if self._renderer is None:
      size = self.config.render
      self._renderer = render_lib.FrameRenderer(
          self.trainer.env.task.name, height=size.height, width=size.width)
    pose = np.asarray(queries.pose)[:, :, :, -1]
    frames = self._renderer.render(pose.reshape(-1, pose.shape[-1]))
    return frames.reshape(pose.shape[:-1] + frames.shape[1:])

  def _histogram(self) -> List[List[int]]:
    sizes = np.asarray(self.rating_sets.size)
    labels = np.asarray(self.rating_sets.label)
    n = self.learner.num_classes
    return [np.bincount(labels[s, :sizes[s]], minlength=n).tolist()
            for s in range(len(sizes))]

  def _label_accuracy(self) -> List[float]:
    """Stored labels that match the noise-free scripted answer."""
    sizes = np.asarray(self.rating_sets.size)
    labels = np.asarray(self.rating_sets.label)
    true_r = np.asarray(self.rating_sets.true_reward)
    out = []
    for s in range(len(sizes)):
      r = true_r[s, :sizes[s]]
      truth = ((r[:, 1] > r[:, 0]).astype(np.int64) if self.learner.preference
               else self.reference.true_labels(r[:, 0]))
      out.append(float(np.mean(labels[s, :sizes[s]] == truth))
                 if sizes[s] else math.nan)
    return out

  # -- checkpointing (erljax.checkpoint) ------------------------------------

  def state_dict(self) -> Dict[str, Any]:
    """Everything a resumed run needs: arrays (rating sets, reward optimiser)
    and host values (counters, the numpy and rater RNG states)."""
    opt_state = self.opt_state
    if opt_state is None:
      # A stand-in of the right structure (not used on load): Adam's state
      # before the first session.
      n = np.asarray(self.rating_sets.size).shape[0]
      opt_state = jax.tree_util.tree_map(
          lambda x: jnp.zeros(x.shape, x.dtype),
          jax.eval_shape(jax.vmap(lambda k: self.learner.optimizer.init(
              self.trainer.reward.init(k))), jax.random.split(
                  jax.random.PRNGKey(0), n)))
    return {"rating_sets": self.rating_sets, "opt_state": opt_state,
            "has_opt_state": self.opt_state is not None, "sent": self.sent,
            "next_session": self.next_session,
            "requested": self.requested, "installed": self.installed,
            "rng": self.rng.bit_generator.state,
            # A rater without state (e.g. a cached VLM client, whose cache
            # is on disk) contributes {}; never API keys.
            "raters": [r.state_dict() if hasattr(r, "state_dict") else {}
                       for r in self.raters]}

  def load_state_dict(self, d: Dict[str, Any]) -> None:
    """Inverse of `state_dict`."""
    if len(d["raters"]) != len(self.raters):
      raise ValueError(f"checkpoint has {len(d['raters'])} raters, this run "
                       f"{len(self.raters)}")
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


def _rollout_video(trainer: Trainer, state: TrainState,
                   keys: jax.Array) -> str:
  """workdir/rollout.gif: one deterministic episode of seed 0's policy."""
  params = jax.tree_util.tree_map(lambda x: x[0], state.sac.actor_params)
  return media.rollout_gif(trainer, params, keys[0], os.path.join(
      trainer.config.workdir, "rollout.gif"))


_PROGRAMS: Dict[int, Any] = {}


def _programs(trainer: Trainer, init_keys: jax.Array, eval_keys: jax.Array,
              layout: sharding.Layout) -> tuple[Any, Any, Any]:
  """The compiled (init, train chunk, evaluate) of `trainer`, seed-vmapped,
  for state laid out by `layout`.

  Compiled once per Trainer object: runs given the same trainer (a resumed
  run in the same process, tests) reuse them.
  """
  key = id(trainer)
  if key in _PROGRAMS and _PROGRAMS[key][0]() is trainer:
    return _PROGRAMS[key][1]
  init_fn = jax.jit(jax.vmap(trainer.init)).lower(init_keys).compile()
  state = jax.eval_shape(jax.vmap(trainer.init), init_keys)
  if layout.active:
    state = jax.tree_util.tree_map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
        state, layout.state_sharding(state))
  if trainer.learned_reward:
    chunk_fn = jax.jit(jax.vmap(trainer.train_chunk, in_axes=(0, None)),
                       donate_argnums=0)
    chunk_fn = chunk_fn.lower(state, jnp.asarray(True)).compile()
  else:
    chunk_fn = jax.jit(jax.vmap(trainer.train_chunk), donate_argnums=0)
    chunk_fn = chunk_fn.lower(state).compile()
  eval_fn = jax.jit(jax.vmap(trainer.evaluate))
  eval_fn = eval_fn.lower(state, eval_keys).compile()
  programs = (init_fn, chunk_fn, eval_fn)
  _PROGRAMS[key] = (weakref.ref(trainer, lambda _: _PROGRAMS.pop(key, None)),
                    programs)
  return programs


def run(config: ml_collections.ConfigDict,
        log: Callable[[str], None] = functools.partial(print, flush=True),
        trainer: Optional[Trainer] = None,
        raters: Optional[List[Any]] = None) -> RunResult:
  """Trains `config.num_seeds` seeds at once; returns the evaluation history.

  Each history record holds env_steps, per-seed lists (eval_return, ...) and
  their mean / std over seeds. `raters` (one per seed) replace the ones the
  config names. With a workdir the run writes logs
  (erljax.metrics_writer) and checkpoints (erljax.checkpoint); SIGINT/SIGTERM
  save a checkpoint at the next chunk boundary and return early
  (RunResult.interrupted), `config.resume` continues from the latest one.
  """
  trainer = trainer or Trainer.create(config)
  c = trainer.config
  seeds = list(range(c.seed, c.seed + c.num_seeds))
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  init_keys, eval_keys = keys, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
  ckpt = None
  if c.workdir:  # fails before anything is compiled
    ckpt = checkpoint_lib.Checkpointer.open(
        c, jax.eval_shape(jax.vmap(trainer.init), init_keys), log)
  loop = (FeedbackLoop(trainer, seeds, raters) if trainer.learned_reward
          else None)

  t0 = time.perf_counter()
  layout = sharding.Layout.create(c.num_devices, c.num_seeds, c.num_envs)
  eval_keys = layout.put_seeded(eval_keys)
  init_fn, chunk_fn, eval_fn = _programs(trainer, init_keys, eval_keys,
                                         layout)
  state = layout.put_state(init_fn(init_keys))
  compile_s = time.perf_counter() - t0
  log(f"erljax: task={c.task} seeds={c.num_seeds} envs={c.num_envs} "
      f"reward={c.reward.source} devices={jax.devices()[0].platform} "
      f"compile={compile_s:.1f}s")

  env_steps, elapsed0 = 0, 0.0
  records: List[Dict[str, Any]] = []
  def snapshot() -> Dict[str, Any]:
    return {"train": state, "eval_keys": eval_keys,
            "loop": loop.state_dict() if loop is not None else {},
            "progress": {"env_steps": env_steps, "records": records,
                         "elapsed": time.perf_counter() - t1}}
  t1 = time.perf_counter()
  restored = ckpt.restore(snapshot()) if ckpt and c.resume else None
  if restored is not None:
    step, tree = restored
    state = layout.put_state(tree["train"])
    eval_keys = layout.put_seeded(tree["eval_keys"])
    if loop is not None:
      loop.load_state_dict(tree["loop"])
    env_steps = tree["progress"]["env_steps"]
    elapsed0 = tree["progress"]["elapsed"]
    records = tree["progress"]["records"]
    log(f"resumed from the checkpoint at step {step} in {ckpt.directory}")

  writer = None
  if c.workdir:
    with open(os.path.join(c.workdir, "config.json"), "w") as f:
      f.write(c.to_json_best_effort(indent=2))
    writer = metrics_writer.MetricsWriter(
        c.workdir, seeds, c.tensorboard, records,
        resume_step=env_steps if restored is not None else None)

  def write(rec):
    if writer is not None:
      writer.write(rec)
    else:
      records.append(rec)

  def evaluate(env_steps: int, train: Dict[str, Any], elapsed: float):
    nonlocal eval_keys
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, env_steps))(eval_keys)
    ev = _to_host(eval_fn(state, eval_keys))
    sps = env_steps / elapsed if elapsed > 0 else 0.0
    rec: Dict[str, Any] = {"kind": "eval", "env_steps": env_steps,
                           "time": elapsed, "env_steps_per_s": sps}
    for k, v in {**ev, **train}.items():
      rec[f"{k}_per_seed"] = v
      rec.update(_summary(k, v))
    write(rec)
    log(f"step {env_steps:>9d}  eval_return {rec['eval_return']:9.3f} "
        f"± {rec['eval_return_std']:.3f}  success {rec['eval_success']:.2f}  "
        f"train_return {rec.get('train_return', math.nan):9.3f}  "
        f"sps {sps:7.0f}  t {elapsed:6.1f}s")
    bar.update(env_steps, {"return": f"{rec['eval_return']:.3f}"})

  def check_finite(values: Dict[str, Any], where: str):
    for k, v in values.items():
      if not np.all(np.isfinite(v)):
        last = ckpt.latest_step() if ckpt else None
        raise FloatingPointError(
            f"non-finite {where} metric {k}={v} at env step {env_steps}; "
            "stopped without saving this state. " + (
                f"Last good checkpoint: step {last} in {ckpt.directory}"
                if last is not None else "No checkpoint was saved."))

  def report_feedback(recs: List[Dict[str, Any]]):
    for rec in recs:
      write({"kind": "feedback", **rec})
      if rec.get("abandoned"):
        log(f"feedback {rec['session']:>3d} abandoned at step "
            f"{rec['env_steps']}: {rec['queries']} queries unanswered after "
            f"{rec['latency_seconds']:.1f}s")
        continue
      if rec["trained"]:
        check_finite({k: rec[k] for k in (
            "reward_accuracy", "reward_balanced_accuracy", "reward_corr",
            "signal_corr")}, "feedback")
      late = (f" (requested at {rec['requested_at']}, answered in "
              f"{rec['latency_seconds']:.1f}s)"
              if rec["requested_at"] != rec["env_steps"] else "")
      log(f"feedback {rec['session']:>3d} at step {rec['env_steps']}{late}: "
          f"sent {rec['queries_sent']} (dropped {rec['dropped']}), epochs "
          f"{rec['epochs']}, acc {np.round(rec['reward_accuracy'], 3).tolist()}"
          f" (balanced "
          f"{np.round(rec['reward_balanced_accuracy'], 3).tolist()})"
          f", corr(r_hat, r) {np.round(rec['reward_corr'], 3).tolist()}"
          + ("" if rec["signal_corr"] == rec["reward_corr"] else
             f", corr(r_hat, rated) "
             f"{np.round(rec['signal_corr'], 3).tolist()}"))

  t1 = time.perf_counter() - elapsed0
  bar = metrics_writer.ProgressBar(c.total_steps, env_steps,
                                   c.progress and sys.stderr.isatty())
  interrupted = None
  try:
    with checkpoint_lib.StopOnSignal() as stop:
      if restored is None:
        evaluate(env_steps, {}, 0.0)
      next_eval = (env_steps // c.eval_every + 1) * c.eval_every
      while env_steps < c.total_steps:
        state = layout.put_state(state)  # in place after feedback sessions
        if loop is not None:
          state, m = chunk_fn(state, jnp.asarray(loop.unsupervised(env_steps)))
        else:
          state, m = chunk_fn(state)
        env_steps += c.log_every
        train_metrics = _to_host(m)
        check_finite({k: v for k, v in train_metrics.items()
                      if k != "train_return"}, "training")
        if loop is not None:
          state, recs = loop.step(state, env_steps)
          report_feedback(recs)
        if env_steps >= next_eval or env_steps >= c.total_steps:
          evaluate(env_steps, train_metrics, time.perf_counter() - t1)
          next_eval = (env_steps // c.eval_every + 1) * c.eval_every
        bar.update(env_steps)
        if ckpt and (ckpt.due(env_steps) or stop.requested
                     or env_steps >= c.total_steps):
          if loop is not None:
            # Ratings in flight are paid for: a checkpoint waits for them so
            # that a resumed run never asks for them again.
            state, recs = loop.drain(state, env_steps)
            report_feedback(recs)
          ckpt.save(env_steps, snapshot())
        if stop.requested:
          interrupted = stop.signum
          log(f"stopped by signal {stop.signum} at step {env_steps}" + (
              f"; checkpoint saved in {ckpt.directory}, continue with "
              "--config.resume=True" if ckpt else ""))
          break
      if loop is not None and interrupted is None:
        state, recs = loop.finish(state, env_steps)
        report_feedback(recs)
      if c.workdir and c.render.rollout_video and interrupted is None:
        log(f"rollout video: {_rollout_video(trainer, state, eval_keys)}")
  finally:
    bar.close()
    if loop is not None:
      loop.close()
    if ckpt is not None:
      ckpt.close()
    if writer is not None:
      writer.close()
  train_s = time.perf_counter() - t1 - elapsed0
  records = writer.records if writer is not None else records
  return RunResult(
      history=[r for r in records if r["kind"] == "eval"], state=state,
      compile_seconds=compile_s, train_seconds=train_s,
      feedback=[{k: v for k, v in r.items() if k != "kind"}
                for r in records if r["kind"] == "feedback"],
      interrupted=interrupted)
