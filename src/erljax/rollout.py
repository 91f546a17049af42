"""Whole episodes of a policy in the vectorized env, recorded step by step.

One `jax.lax.scan` over the episode's steps of N parallel envs, started
from fresh resets: what `erljax.collect` writes as demonstrations and what
offline runs are evaluated with (deterministic episodes, success as the max
over the episode of the task's success signal, return summed until a true
termination; the same rules as `erljax.trainer.Trainer.evaluate`).
"""

from __future__ import annotations

from typing import Callable, Dict

import chex
import jax
import jax.numpy as jnp
from flax import struct

from erljax import envs

# (obs [N, O], key) -> action [N, A] in [-1, 1]
ActFn = Callable[[jax.Array, jax.Array], jax.Array]


@struct.dataclass
class Episodes:
  """N episodes of T steps; every leaf [N, T, ...].

  obs / next_obs [N, T, O]: before / after each step (next_obs is the
  observation the step reached, before any auto-reset); action [N, T, A];
  reward [N, T]; terminal [N, T] true termination; success [N, T] the
  task's success signal after the step; pose [N, T, P] the pose after the
  step (VecEnv.pose); valid [N, T]: the step belongs to the episode (False
  after a termination ended it, when the env has already auto-reset).
  """

  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  next_obs: jax.Array
  terminal: jax.Array
  success: jax.Array
  pose: jax.Array
  valid: jax.Array


def rollout(env: envs.VecEnv, act: ActFn, key: jax.Array) -> Episodes:
  """One episode of env.episode_length steps in each of env.num_envs fresh
  envs; act picks the actions. Pure and jittable."""
  k_reset, k_act = jax.random.split(key)
  n = env.num_envs

  def step(carry, key):
    state, alive = carry
    action = act(state.obs, key)
    chex.assert_shape(action, (n, env.action_size))
    new_state, out = env.step(state, action)
    record = Episodes(
      obs=state.obs,
      action=action,
      reward=out.reward,
      next_obs=out.next_obs,
      terminal=out.terminal,
      success=out.success,
      pose=env.pose(out.inner),
      valid=alive,
    )
    return (new_state, alive & ~out.terminal), record

  init = (env.reset(k_reset), jnp.ones((n,), bool))
  _, rec = jax.lax.scan(step, init, jax.random.split(k_act, env.episode_length))
  return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), rec)


def episode_stats(episodes: Episodes) -> Dict[str, jax.Array]:
  """Per-episode return [N] (valid steps) and success [N] float (any valid
  step successful)."""
  ret = jnp.sum(jnp.where(episodes.valid, episodes.reward, 0.0), axis=1)
  succ = jnp.any(episodes.valid & episodes.success, axis=1)
  return {"return": ret, "success": succ.astype(jnp.float32)}


def evaluate(
  env: envs.VecEnv, policy: Callable[[jax.Array], jax.Array], key: jax.Array
) -> Dict[str, jax.Array]:
  """Mean return and success rate of a deterministic policy (obs [N, O] ->
  action [N, A]) over env.num_envs fresh episodes: {"eval_return": [],
  "eval_success": []}."""
  stats = episode_stats(rollout(env, lambda obs, _: policy(obs), key))
  return {
    "eval_return": jnp.mean(stats["return"]),
    "eval_success": jnp.mean(stats["success"]),
  }
