"""The SAC training program: compiled chunks of env steps and updates.

The host only runs between chunks (logging, evaluation, later feedback
sessions). Every function here is pure in a `TrainState` and vmaps over a
leading seed axis: `run()` trains `num_seeds` seeds at once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from erljax import config as config_lib
from erljax import envs
from erljax import replay
from erljax import reward_source
from erljax import sac as sac_lib
from erljax.replay import Transition


@struct.dataclass
class TrainState:
  sac: sac_lib.SACState
  buffer: replay.ReplayBuffer
  env: envs.VecEnvState
  reward_params: Any
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
               reward=reward or reward_source.make(config))

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
        discount=jnp.zeros(()), next_obs=jnp.zeros((obs_size,)))
    return TrainState(
        sac=self.agent.init(k_sac),
        buffer=replay.init(self.config.replay_capacity, example),
        env=self.env.reset(k_env), reward_params=self.reward.init(k_rew),
        key=key, env_steps=jnp.zeros((), jnp.int32))

  # -- one vectorized step ------------------------------------------------

  def _collect(self, state: TrainState, action: jax.Array
               ) -> tuple[TrainState, Dict[str, jax.Array]]:
    env_state, out = self.env.step(state.env, action)
    obs = state.env.obs
    reward = self.reward(state.reward_params, obs, action, out.next_obs,
                         out.reward)
    chex.assert_shape(reward, (self.env.num_envs,))
    transition = Transition(
        obs=obs, action=action, reward=reward, true_reward=out.reward,
        discount=1.0 - out.terminal.astype(jnp.float32),
        next_obs=out.next_obs)
    done = out.terminal | out.truncated
    state = state.replace(
        env=env_state, buffer=replay.add(state.buffer, transition),
        env_steps=state.env_steps + self.env.num_envs)
    stats = {"episodes": jnp.sum(done),
             "episode_return_sum": jnp.sum(out.episode_return),
             "reward": jnp.mean(reward), "true_reward": jnp.mean(out.reward)}
    return state, stats

  def _updates(self, sac_state: sac_lib.SACState, buffer: replay.ReplayBuffer,
               key: jax.Array):
    def one(sac_state, key):
      k_sample, k_update = jax.random.split(key)
      batch = replay.sample(buffer, k_sample, self.config.batch_size)
      return self.agent.update(sac_state, batch, k_update)
    keys = jax.random.split(key, self.config.updates_per_step)
    sac_state, metrics = jax.lax.scan(one, sac_state, keys)
    return sac_state, jax.tree_util.tree_map(jnp.mean, metrics)

  # -- compiled programs ----------------------------------------------------

  def train_chunk(self, state: TrainState
                  ) -> tuple[TrainState, Dict[str, jax.Array]]:
    """`chunk_len` vectorized steps, each followed by SAC updates.

    While env_steps < config.seed_steps actions are uniform random and the
    SAC state is left unchanged (the updates are computed and discarded, so
    one compiled program serves the whole run).
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
        sac_state, metrics = self._updates(state.sac, state.buffer, k_upd)
        sac_state = jax.tree_util.tree_map(
            lambda old, new: jnp.where(seeding, old, new), state.sac,
            sac_state)
        state = state.replace(sac=sac_state)
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


def run(config: ml_collections.ConfigDict,
        log: Callable[[str], None] = functools.partial(print, flush=True),
        trainer: Optional[Trainer] = None) -> RunResult:
  """Trains `config.num_seeds` seeds at once; returns the evaluation history.

  Each history record holds env_steps, per-seed lists (eval_return, ...) and
  their mean / std over seeds.
  """
  trainer = trainer or Trainer.create(config)
  c = trainer.config
  seeds = jnp.arange(c.seed, c.seed + c.num_seeds)
  keys = jax.vmap(jax.random.PRNGKey)(seeds)
  init_keys, eval_keys = keys, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)

  t0 = time.perf_counter()
  state = jax.jit(jax.vmap(trainer.init))(init_keys)
  chunk_fn = jax.jit(jax.vmap(trainer.train_chunk), donate_argnums=0)
  eval_fn = jax.jit(jax.vmap(trainer.evaluate))
  chunk_fn = chunk_fn.lower(state).compile()
  eval_fn = eval_fn.lower(state, eval_keys).compile()
  compile_s = time.perf_counter() - t0
  log(f"erljax: task={c.task} seeds={c.num_seeds} envs={c.num_envs} "
      f"devices={jax.devices()[0].platform} compile={compile_s:.1f}s")

  history: List[Dict[str, Any]] = []
  workdir = c.workdir
  metrics_file = None
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(c.to_json_best_effort(indent=2))
    metrics_file = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def evaluate(env_steps: int, train: Dict[str, Any], elapsed: float):
    nonlocal eval_keys
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, env_steps))(eval_keys)
    ev = _to_host(eval_fn(state, eval_keys))
    rec: Dict[str, Any] = {"env_steps": env_steps, "time": elapsed}
    for k, v in {**ev, **train}.items():
      rec[f"{k}_per_seed"] = v
      rec.update(_summary(k, v))
    history.append(rec)
    if metrics_file:
      metrics_file.write(json.dumps(rec) + "\n")
      metrics_file.flush()
    sps = env_steps / elapsed if elapsed > 0 else 0.0
    log(f"step {env_steps:>9d}  eval_return {rec['eval_return']:9.3f} "
        f"± {rec['eval_return_std']:.3f}  success {rec['eval_success']:.2f}  "
        f"train_return {rec.get('train_return', math.nan):9.3f}  "
        f"sps {sps:7.0f}  t {elapsed:6.1f}s")

  t1 = time.perf_counter()
  env_steps = 0
  evaluate(env_steps, {}, 0.0)
  next_eval = (env_steps // c.eval_every + 1) * c.eval_every
  train_metrics: Dict[str, Any] = {}
  while env_steps < c.total_steps:
    state, m = chunk_fn(state)
    env_steps += c.log_every
    train_metrics = _to_host(m)
    for k, v in train_metrics.items():
      if not np.all(np.isfinite(v)) and k != "train_return":
        raise FloatingPointError(
            f"non-finite training metric {k}={v} at env step {env_steps}")
    if env_steps >= next_eval or env_steps >= c.total_steps:
      evaluate(env_steps, train_metrics, time.perf_counter() - t1)
      next_eval = (env_steps // c.eval_every + 1) * c.eval_every
  train_s = time.perf_counter() - t1
  if metrics_file:
    metrics_file.close()
  return RunResult(history=history, state=state, compile_seconds=compile_s,
                   train_seconds=train_s)
