"""The compiled pieces of a feedback session, built once per Trainer.

Query sampling (erljax.rewards.queries), one reward-training epoch
(erljax.rewards.learner) and installing a new reward (Trainer.after_feedback:
relabel the replay, reset the critic), each jitted and vmapped over the S
seeds. They are kept on the Trainer (erljax.online.program_cache), so the runs
given the same Trainer (a resumed run in the same process, tests) compile
them once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax

from erljax.rewards import queries as feedback_lib
from erljax.online import program_cache
from erljax.rewards import learner as reward_learner
from erljax.agents.replay import Transition
from erljax.online.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class SessionPrograms:
  """A trainer's jitted, seed-vmapped session functions (one copy per
  Trainer object, so a resumed run in the same process compiles nothing).

  sample(buffer, episode_step [S, N], keys [S], reward_params, num) ->
    queries, leaves [S, Q, P, H, ...];
  epoch(params, opt_state, rating_sets, idx, ...) -> one reward epoch
    (feedback.RewardLearner.epoch);
  signal(obs, action, next_obs, reward) -> the rated signal, same shape;
  install_reward(state, reward_params, keys [S]) -> (state, metrics
    {reward_corr, signal_corr} [S]): Trainer.after_feedback, the new reward
    installed and the replay [S, C] relabelled, the state donated;
  install_first_reward(state, reward_params, keys [S]): the same, then the
    critic reset and feedback.warmup_updates SAC updates (after the first
    session);
  opt_init(reward_params) -> the reward optimiser's state;
  empty_sets(seed_index [S]) -> empty RatingSets [S, budget, ...];
  query_frames(queries) -> ray-cast frames, or None without an image model.
  """

  learner: reward_learner.RewardLearner
  sample: Callable[..., Transition]
  epoch: Callable[..., Any]
  signal: Callable[..., jax.Array]
  install_reward: Callable[..., Any]
  install_first_reward: Callable[..., Any]
  opt_init: Callable[[Any], Any]
  empty_sets: Callable[[jax.Array], feedback_lib.RatingSet]
  query_frames: Optional[Callable[[Transition], jax.Array]]


def session_programs(trainer: Trainer) -> SessionPrograms:
  """`trainer`'s SessionPrograms, built once per Trainer object."""
  return program_cache.cached(
    trainer, "sessions", lambda: _build_programs(trainer)
  )


def _build_programs(trainer: Trainer) -> SessionPrograms:
  c = trainer.config
  task = trainer.rated
  learner = reward_learner.make_learner(
    c, c.rater.num_classes or task.num_classes, trainer.reward.model
  )
  seg_len = c.feedback.segment_length
  segments = 2 if learner.preference else 1
  # The most recent query_window_steps transitions when set, else the most
  # recent query_window_episodes completed episodes.
  window = c.feedback.query_window_steps
  window_episodes = None if window else c.feedback.query_window_episodes
  candidates = (
    c.feedback.candidates if c.feedback.sampling == "disagreement" else 1
  )
  reward, env = trainer.reward, trainer.env
  obs, act = env.observation_size, env.action_size

  def sample_queries(buffer, episode_step, key, reward_params, num):
    return feedback_lib.sample_queries(
      buffer,
      key,
      num,
      window=window,
      window_episodes=window_episodes,
      segments=segments,
      candidates=candidates,
      member_rewards=lambda tr: reward.members(reward_params, tr),
      segment_length=seg_len,
      num_envs=env.num_envs,
      episode_step=episode_step,
      episode_length=env.episode_length,
    )

  # An image reward model trains on the frames of the rated queries, drawn
  # once when their ratings are stored.
  drawer = getattr(reward, "drawer", None)
  frame_shape = None if drawer is None else (drawer.height, drawer.width)

  def query_frames(queries):
    return drawer(queries.pose)

  def empty_rating_sets(_):
    return feedback_lib.empty_rating_set(
      c.feedback.budget, obs, act, segments, seg_len, frame_shape
    )

  # Programs that draw frames (relabel, disagreement sampling, the queries'
  # frames) compile with what the frame drawer needs on a CPU.
  jit = functools.partial(jax.jit, compiler_options=trainer.compiler_options)

  def install(reset_critic):
    def after_feedback(state, params, key):
      return trainer.after_feedback(state, params, reset_critic, key)

    # Named for the retrace guard (tests/test_checkpoint.py).
    after_feedback.__name__ = (
      "after_feedback_reset" if reset_critic else "after_feedback"
    )
    return jit(jax.vmap(after_feedback), donate_argnums=0)

  return SessionPrograms(
    learner=learner,
    sample=jit(
      jax.vmap(sample_queries, in_axes=(0, 0, 0, 0, None)), static_argnums=4
    ),
    epoch=jit(jax.vmap(learner.epoch)),
    signal=jax.jit(task.signal),
    install_reward=install(False),
    install_first_reward=install(True),
    opt_init=jax.jit(jax.vmap(learner.optimizer.init)),
    empty_sets=jax.jit(jax.vmap(empty_rating_sets)),
    query_frames=(None if drawer is None else jit(jax.vmap(query_frames))),
  )
