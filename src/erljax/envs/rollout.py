"""Whole episodes of a policy in N fresh vectorized envs: the evaluator, and
the recorder of demonstrations.

`evaluate` is erljax's one evaluator: every logged eval_return and
eval_success comes from it (`Trainer.evaluate` in online runs, offline runs,
`python -m erljax.evaluate`, examples/sac_minimal.py). Its episode rules,
held here once: one deterministic episode of env.episode_length steps in
each env, started from env.reset(key); the return sums the env reward of
every step up to and including the first true termination (the env
auto-resets after it, and those steps don't count); success is 1 if the
task's success signal held at any counted step (the max over the episode,
as the reference reads info['success']).

`rollout` records every step of the same kind of episode (what
`erljax.collect` writes as demonstrations); its `valid` mask marks the
steps the evaluator counts.
"""

from __future__ import annotations

from typing import Callable, Dict

import chex
import jax
import jax.numpy as jnp
from flax import struct

from erljax.envs import vec_env as envs

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


def evaluate(
  env: envs.VecEnv, policy: Callable[[jax.Array], jax.Array], key: jax.Array
) -> Dict[str, jax.Array]:
  """One deterministic episode of `policy` (obs [N, O] -> action [N, A]) in
  each of N = env.num_envs envs reset with `key`, under the module's episode
  rules. Pure and jittable; only the running sums are carried, no episode
  is stored.

  Returns {"eval_return", "eval_success"}: the means over the N episodes
  [], and {"eval_return_episodes", "eval_success_episodes"}: each episode's
  return and success (0 / 1 float) [N].
  """
  n = env.num_envs

  def step(carry, _):
    state, alive, ret, succ = carry
    action = policy(state.obs)
    chex.assert_shape(action, (n, env.action_size))
    state, out = env.step(state, action)
    ret = ret + jnp.where(alive, out.reward, 0.0)
    succ = succ | (alive & out.success)
    return (state, alive & ~out.terminal, ret, succ), None

  init = (
    env.reset(key),
    jnp.ones((n,), bool),
    jnp.zeros((n,)),
    jnp.zeros((n,), bool),
  )
  (_, _, ret, succ), _ = jax.lax.scan(
    step, init, None, length=env.episode_length
  )
  succ = succ.astype(jnp.float32)
  return {
    "eval_return": jnp.mean(ret),
    "eval_success": jnp.mean(succ),
    "eval_return_episodes": ret,
    "eval_success_episodes": succ,
  }
