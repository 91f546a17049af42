"""Where SAC's reward comes from: a pluggable, pure function of the transition.

A reward source owns parameters that live in the training state (so a learned
reward model can be swapped in and updated between compiled chunks without
recompiling) and maps a batch of transitions to rewards inside the hot loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections

from erljax.reward_model import RewardModel


class RewardSource(Protocol):

  def init(self, key: jax.Array) -> Any:
    """Initial parameters (any pytree; may be empty)."""

  def __call__(self, params: Any, obs: jax.Array, action: jax.Array,
               next_obs: jax.Array, env_reward: jax.Array) -> jax.Array:
    """obs [N, O], action [N, A], next_obs [N, O], env_reward [N] -> [N]."""


@dataclasses.dataclass(frozen=True)
class EnvReward:
  """The environment's own reward, times `scale`."""

  scale: float = 1.0

  def init(self, key: jax.Array) -> Any:
    del key
    return ()

  def __call__(self, params, obs, action, next_obs, env_reward):
    del params, obs, action, next_obs
    return self.scale * env_reward.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class LearnedReward:
  """The ensemble mean of a learned reward model on (obs, action)."""

  model: RewardModel
  obs_size: int
  action_size: int

  def init(self, key: jax.Array) -> Any:
    return self.model.init(key, (jnp.zeros((1, self.obs_size)),
                                 jnp.zeros((1, self.action_size))))

  def __call__(self, params, obs, action, next_obs, env_reward):
    del next_obs, env_reward
    return self.model.reward(params, obs, action)


def make(config: ml_collections.ConfigDict, obs_size: int,
         action_size: int) -> RewardSource:
  """Builds the reward source named by config.reward.source."""
  r = config.reward
  if r.source == "env":
    return EnvReward(scale=float(r.scale))
  if r.source == "learned":
    model = RewardModel(r.model, r.ensemble_size, tuple(r.hidden_sizes))
    return LearnedReward(model, obs_size, action_size)
  raise ValueError(f"config.reward.source={r.source!r}: unknown")
