"""The compiled training program: chunks of env steps and SAC updates.

Every function here is pure in a `TrainState` (one seed) and vmaps over a
leading seed axis S; `compiled()` builds the seed-vmapped programs a run
executes (init, train chunk, evaluate). The host only runs between chunks:
feedback sessions live in `erljax.online.sessions`, the run loop (logging,
evaluation cadence, checkpoints) in `erljax.loop.run_loop`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import ml_collections
from flax import struct

from erljax.config import defaults as config_lib
from erljax.envs import vec_env as envs
from erljax.envs import tasks
from erljax.agents import intrinsic
from erljax.online import program_cache
from erljax.agents import replay
from erljax.rewards import source as reward_source
from erljax.envs import rollout
from erljax.agents import sac as sac_lib
from erljax.runtime import sharding
from erljax.agents.replay import Transition
from erljax.runtime import precision


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
    hidden_sizes=tuple(s.hidden_sizes),
    actor_lr=s.actor_lr,
    critic_lr=s.critic_lr,
    alpha_lr=s.alpha_lr,
    init_temperature=s.init_temperature,
    discount=s.discount,
    tau=s.tau,
    target_update_period=s.target_update_period,
    log_std_min=s.log_std_min,
    log_std_max=s.log_std_max,
    target_entropy=s.target_entropy,
  )


@dataclasses.dataclass(frozen=True)
class Trainer:
  """Pure training functions for one validated config (one seed each)."""

  config: ml_collections.ConfigDict
  env: envs.VecEnv
  eval_env: envs.VecEnv
  agent: sac_lib.SAC
  reward: reward_source.RewardSource
  # Programs compiled for this trainer (erljax.online.program_cache), shared by
  # the runs given it.
  compiled_cache: Dict[str, Any] = dataclasses.field(
    default_factory=dict, compare=False, repr=False
  )

  @classmethod
  def create(
    cls,
    config: ml_collections.ConfigDict,
    reward: Optional[reward_source.RewardSource] = None,
  ) -> "Trainer":
    config_lib.validate(config)
    env = envs.make_vec_env(config.task, config.num_envs, config.episode_length)
    eval_env = envs.make_vec_env(
      config.task, config.num_eval_envs, config.episode_length, like=env
    )
    agent = sac_lib.SAC(
      env.observation_size, env.action_size, sac_hyper(config)
    )
    return cls(
      config=config,
      env=env,
      eval_env=eval_env,
      agent=agent,
      reward=reward
      or reward_source.make(config, env.observation_size, env.action_size),
    )

  @property
  def rated(self) -> tasks.TaskSpec:
    """The task as its raters judge it (config rater.rated / rater.range)."""
    return tasks.rated_task(
      self.env.task, self.config.rater.rated, self.config.rater.range
    )

  @property
  def compiler_options(self) -> Optional[Dict[str, Any]]:
    """XLA options of every program that steps its env or draws its reward
    model's frames, and config.matmul_precision's (erljax.envs.
    vec_env.compiler_options)."""
    return envs.compiler_options(
      self.env, getattr(self.reward, "drawer", None), precision.xla_options()
    )

  @property
  def chunk_len(self) -> int:
    """Vectorized steps per compiled chunk."""
    return self.config.log_every // self.config.num_envs

  # -- state ------------------------------------------------------------------

  def init(self, key: jax.Array) -> TrainState:
    k_sac, k_env, k_rew, key = jax.random.split(key, 4)
    obs_size, act_size = self.env.observation_size, self.env.action_size
    example = Transition.zeros(obs_size, act_size, self.env.pose_size)
    return TrainState(
      sac=self.agent.init(k_sac),
      buffer=replay.init(
        self.config.replay_capacity,
        example,
        config_lib.replay_shards(self.config),
      ),
      env=self.env.reset(k_env),
      reward_params=self.reward.init(k_rew),
      ent_stats=intrinsic.RunningStats.create(),
      key=key,
      env_steps=jnp.zeros((), jnp.int32),
    )

  # -- one vectorized step ----------------------------------------------------

  def _collect(
    self, state: TrainState, action: jax.Array
  ) -> tuple[TrainState, Dict[str, jax.Array]]:
    env_state, out = self.env.step(state.env, action)
    transition = Transition(
      obs=state.env.obs,
      action=action,
      reward=out.reward,
      true_reward=out.reward,
      discount=1.0 - out.terminal.astype(jnp.float32),
      next_obs=out.next_obs,
      pose=self.env.pose(out.inner),
    )
    reward = self.reward(state.reward_params, transition)
    chex.assert_shape(reward, (self.env.num_envs,))
    transition = transition.replace(reward=reward)
    done = out.terminal | out.truncated
    state = state.replace(
      env=env_state,
      buffer=replay.add(state.buffer, transition),
      env_steps=state.env_steps + self.env.num_envs,
    )
    stats = {
      "episodes": jnp.sum(done),
      "episode_return_sum": jnp.sum(out.episode_return),
      "reward": jnp.mean(reward),
      "true_reward": jnp.mean(out.reward),
    }
    return state, stats

  @property
  def learned_reward(self) -> bool:
    return self.config.reward.source == "learned"

  def sac_updates(
    self,
    state: TrainState,
    key: jax.Array,
    num: int,
    unsupervised: jax.Array | bool = False,
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
          ref, valid = replay.oldest(state.buffer, ref_size)
          r = intrinsic.knn_distance(
            batch.obs, ref.obs, valid, c.feedback.knn_k
          )
          stats = stats.update(r)
          return batch.replace(reward=r / stats.std), stats

        batch, stats = jax.lax.cond(
          unsupervised, entropy_reward, lambda args: args, (batch, stats)
        )
      sac_state, metrics = self.agent.update(sac_state, batch, k_update)
      return (sac_state, stats), metrics

    (sac_state, stats), metrics = jax.lax.scan(
      one, (state.sac, state.ent_stats), jax.random.split(key, num)
    )
    return (
      state.replace(sac=sac_state, ent_stats=stats),
      jax.tree_util.tree_map(jnp.mean, metrics),
    )

  # -- compiled programs ------------------------------------------------------

  def train_chunk(
    self, state: TrainState, unsupervised: jax.Array | bool = False
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
      policy_action, _ = self.agent.sample_action(
        state.sac.actor_params, state.env.obs, k_act
      )
      random_action = jax.random.uniform(
        k_rand, policy_action.shape, minval=-1.0, maxval=1.0
      )
      action = jnp.where(seeding, random_action, policy_action)
      state, stats = self._collect(state.replace(key=key), action)
      if c.updates_per_step > 0:
        new, metrics = self.sac_updates(
          state, k_upd, c.updates_per_step, unsupervised
        )
        keep_old = lambda old, new: jax.tree_util.tree_map(
          lambda a, b: jnp.where(seeding, a, b), old, new
        )
        state = state.replace(
          sac=keep_old(state.sac, new.sac),
          ent_stats=keep_old(state.ent_stats, new.ent_stats),
        )
      else:
        metrics = {}
      return state, {**stats, **metrics}

    state, m = jax.lax.scan(step, state, None, length=self.chunk_len)
    episodes = jnp.sum(m.pop("episodes"))
    ret_sum = jnp.sum(m.pop("episode_return_sum"))
    metrics = jax.tree_util.tree_map(jnp.mean, m)
    metrics["train_episodes"] = episodes
    metrics["train_return"] = jnp.where(
      episodes > 0, ret_sum / jnp.maximum(episodes, 1), jnp.nan
    )
    return state, metrics

  def after_feedback(
    self,
    state: TrainState,
    reward_params: Any,
    reset_critic: bool,
    key: jax.Array,
  ) -> tuple[TrainState, Dict[str, jax.Array]]:
    """Installs new reward parameters, relabels the WHOLE replay buffer and,
    after the first session, resets the critic and runs warm-up updates."""
    c = self.config
    state = state.replace(reward_params=reward_params)
    buffer = replay.relabel(
      state.buffer, lambda t: self.reward(reward_params, t)
    )
    state = state.replace(buffer=buffer)
    filled = buffer.filled()
    d = buffer.data
    # r_hat against the env reward, and against what the rater judges (the
    # same unless the task's rating signal leaves part of the reward out).
    rated = self.rated.signal(d.obs, d.action, d.next_obs, d.true_reward)
    metrics = {
      "reward_corr": _masked_corr(d.reward, d.true_reward, filled),
      "signal_corr": _masked_corr(d.reward, rated, filled),
    }
    if reset_critic:
      k_reset, k_upd = jax.random.split(key)
      state = state.replace(sac=self.agent.reset_critic(state.sac, k_reset))
      if c.feedback.warmup_updates:
        state, _ = self.sac_updates(state, k_upd, c.feedback.warmup_updates)
    return state, metrics

  def evaluate(self, state: TrainState, key: jax.Array) -> Dict[str, jax.Array]:
    """erljax.envs.rollout.evaluate of the deterministic actor: one episode in
    each of num_eval_envs fresh envs reset with `key`; the mean return and
    success rate [] and each episode's values [num_eval_envs]."""
    return rollout.evaluate(
      self.eval_env,
      functools.partial(
        self.agent.deterministic_action, state.sac.actor_params
      ),
      key,
    )


def _masked_corr(a: jax.Array, b: jax.Array, mask: jax.Array) -> jax.Array:
  """Pearson correlation of a and b over the entries where mask is True."""
  w = mask.astype(jnp.float32)
  n = jnp.maximum(jnp.sum(w), 1.0)
  am = a - jnp.sum(a * w) / n
  bm = b - jnp.sum(b * w) / n
  cov = jnp.sum(am * bm * w)
  return cov / jnp.sqrt(jnp.sum(am**2 * w) * jnp.sum(bm**2 * w) + 1e-12)


class Programs(NamedTuple):
  """A trainer's seed-vmapped compiled programs (jax.stages.Compiled).

  init(keys [S]) -> TrainState; chunk(state[, unsupervised]) -> (state,
  metrics), the state donated; evaluate(state, keys [S]) -> metrics [S].
  """

  init: Any
  chunk: Any
  evaluate: Any


def _jit(trainer: Trainer, fn, **kwargs: Any):
  """jax.jit(fn) with the trainer's XLA options."""
  return jax.jit(fn, compiler_options=trainer.compiler_options, **kwargs)


def traced_init(trainer: Trainer, keys: jax.Array) -> jax.stages.Traced:
  """`jax.vmap(trainer.init)` over keys [S, 2], traced once per Trainer:
  its `out_info` is the TrainState's shapes (leaves [S, ...]), which a run
  checks before it compiles anything, and `compiled` lowers this trace."""
  return program_cache.cached(
    trainer,
    "init_trace",
    lambda: _jit(trainer, jax.vmap(trainer.init)).trace(keys),
  )


def compiled(
  trainer: Trainer,
  init_keys: jax.Array,
  eval_keys: jax.Array,
  layout: sharding.Layout,
) -> Programs:
  """The compiled programs of `trainer` for state laid out by `layout`,
  compiled once per Trainer object (program_cache.cached)."""

  def build() -> Programs:
    init_fn = traced_init(trainer, init_keys).lower().compile()
    # The state's shapes from the compiled init, not a second trace of it.
    state = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), init_fn.out_info
    )
    if layout.active:
      state = jax.tree_util.tree_map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
        state,
        layout.state_sharding(state),
      )
    if trainer.learned_reward:
      chunk_fn = _jit(
        trainer,
        jax.vmap(trainer.train_chunk, in_axes=(0, None)),
        donate_argnums=0,
      )
      chunk_fn = chunk_fn.lower(state, jnp.asarray(True)).compile()
    else:
      chunk_fn = _jit(trainer, jax.vmap(trainer.train_chunk), donate_argnums=0)
      chunk_fn = chunk_fn.lower(state).compile()
    eval_fn = _jit(trainer, jax.vmap(trainer.evaluate))
    eval_fn = eval_fn.lower(state, eval_keys).compile()
    return Programs(init_fn, chunk_fn, eval_fn)

  return program_cache.cached(trainer, "programs", build)
