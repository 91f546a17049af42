"""Soft Actor-Critic as pure functions: state, losses and one jitted update.

Follows the reference implementation the ERL-VLM authors build on
(pytorch_sac): twin Q with min, learned temperature with
loss alpha * (-log_prob - target_entropy), critic step then actor and
temperature step (the actor sees the just-updated critic), Polyak target
update every `target_update_period` updates.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct

from erljax.agents import gradients
from erljax.agents import networks
from erljax.agents.replay import Transition

Params = Any


@dataclasses.dataclass(frozen=True)
class SACHyper:
  """SAC hyper-parameters (defaults: the reference settings, listed with
  their source lines in docs/method.md#sac)."""

  hidden_sizes: Sequence[int] = (256, 256, 256)
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  alpha_lr: float = 1e-4
  init_temperature: float = 0.1
  discount: float = 0.99
  tau: float = 0.005
  target_update_period: int = 2
  log_std_min: float = -5.0
  log_std_max: float = 2.0
  target_entropy: float | None = None  # None: -action_size


@struct.dataclass
class SACState:
  actor_params: Params
  critic_params: Params
  target_critic_params: Params
  log_alpha: jax.Array
  actor_opt: optax.OptState
  critic_opt: optax.OptState
  alpha_opt: optax.OptState
  steps: jax.Array  # number of updates done, int32 scalar


@dataclasses.dataclass(frozen=True)
class SAC:
  """SAC for fixed observation / action sizes. All methods are pure."""

  obs_size: int
  action_size: int
  hyper: SACHyper = SACHyper()

  @property
  def actor(self) -> networks.Actor:
    return networks.Actor(
      self.action_size,
      tuple(self.hyper.hidden_sizes),
      self.hyper.log_std_min,
      self.hyper.log_std_max,
    )

  @property
  def critic(self) -> networks.Critic:
    return networks.Critic(tuple(self.hyper.hidden_sizes))

  @property
  def target_entropy(self) -> float:
    h = self.hyper.target_entropy
    return -float(self.action_size) if h is None else float(h)

  def _opt(self, lr: float) -> optax.GradientTransformation:
    return optax.adam(lr)

  def init(self, key: jax.Array) -> SACState:
    ka, kc = jax.random.split(key)
    obs = jnp.zeros((1, self.obs_size))
    act = jnp.zeros((1, self.action_size))
    actor_params = self.actor.init(ka, obs)
    critic_params = self.critic.init(kc, obs, act)
    log_alpha = jnp.asarray(math.log(self.hyper.init_temperature), jnp.float32)
    h = self.hyper
    return SACState(
      actor_params=actor_params,
      critic_params=critic_params,
      target_critic_params=critic_params,
      log_alpha=log_alpha,
      actor_opt=self._opt(h.actor_lr).init(actor_params),
      critic_opt=self._opt(h.critic_lr).init(critic_params),
      alpha_opt=self._opt(h.alpha_lr).init(log_alpha),
      steps=jnp.zeros((), jnp.int32),
    )

  # -- acting -----------------------------------------------------------------

  def sample_action(
    self, actor_params: Params, obs: jax.Array, key: jax.Array
  ) -> Tuple[jax.Array, jax.Array]:
    """obs [B, obs] -> (action [B, A] in (-1, 1), log_prob [B])."""
    mean, log_std = self.actor.apply(actor_params, obs)
    return networks.squashed_gaussian_sample(mean, log_std, key)

  def deterministic_action(
    self, actor_params: Params, obs: jax.Array
  ) -> jax.Array:
    mean, _ = self.actor.apply(actor_params, obs)
    return networks.deterministic_action(mean)

  # -- losses -----------------------------------------------------------------

  def critic_loss(
    self,
    critic_params: Params,
    target_critic_params: Params,
    actor_params: Params,
    log_alpha: jax.Array,
    batch: Transition,
    key: jax.Array,
  ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """0.5 * sum over the twin Qs of mean_b (Q_i(s, a) - y)^2 with
    y = r + gamma * d * (min_i Q'_i(s', a') - alpha log pi(a'|s'))."""
    next_action, next_logp = self.sample_action(
      actor_params, batch.next_obs, key
    )
    next_q = self.critic.apply(
      target_critic_params, batch.next_obs, next_action
    )
    next_v = jnp.min(next_q, axis=0) - jnp.exp(log_alpha) * next_logp
    target = batch.reward + self.hyper.discount * batch.discount * next_v
    target = jax.lax.stop_gradient(target)
    q = self.critic.apply(critic_params, batch.obs, batch.action)
    chex.assert_equal_shape([q[0], target])
    loss = 0.5 * jnp.sum(jnp.mean((q - target[None]) ** 2, axis=-1))
    return loss, {
      "critic_loss": loss,
      "q": jnp.mean(q),
      "target_q": jnp.mean(target),
    }

  def actor_loss(
    self,
    actor_params: Params,
    critic_params: Params,
    log_alpha: jax.Array,
    obs: jax.Array,
    key: jax.Array,
  ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """mean_b (alpha log pi(a|s) - min_i Q_i(s, a)), a ~ pi(.|s)."""
    action, logp = self.sample_action(actor_params, obs, key)
    q = jnp.min(self.critic.apply(critic_params, obs, action), axis=0)
    alpha = jax.lax.stop_gradient(jnp.exp(log_alpha))
    loss = jnp.mean(alpha * logp - q)
    return loss, {
      "actor_loss": loss,
      "entropy": -jnp.mean(logp),
      "log_prob": logp,
    }

  def alpha_loss(self, log_alpha: jax.Array, log_prob: jax.Array) -> jax.Array:
    """mean_b alpha * (-log pi - target_entropy), log pi held constant."""
    log_prob = jax.lax.stop_gradient(log_prob)
    return jnp.mean(jnp.exp(log_alpha) * (-log_prob - self.target_entropy))

  # -- update -----------------------------------------------------------------

  def update(
    self, state: SACState, batch: Transition, key: jax.Array
  ) -> Tuple[SACState, Dict[str, jax.Array]]:
    """One SAC update on a batch (leaves [B, ...])."""
    h = self.hyper
    kc, ka = jax.random.split(key)
    critic_step = gradients.gradient_update_fn(
      self.critic_loss, self._opt(h.critic_lr), has_aux=True
    )
    (_, cm), critic_params, critic_opt = critic_step(
      state.critic_params,
      state.critic_opt,
      state.target_critic_params,
      state.actor_params,
      state.log_alpha,
      batch,
      kc,
    )

    actor_step = gradients.gradient_update_fn(
      self.actor_loss, self._opt(h.actor_lr), has_aux=True
    )
    (_, am), actor_params, actor_opt = actor_step(
      state.actor_params,
      state.actor_opt,
      critic_params,
      state.log_alpha,
      batch.obs,
      ka,
    )

    alpha_step = gradients.gradient_update_fn(
      self.alpha_loss, self._opt(h.alpha_lr)
    )
    alpha_loss, log_alpha, alpha_opt = alpha_step(
      state.log_alpha, state.alpha_opt, am.pop("log_prob")
    )

    steps = state.steps + 1
    polyak = optax.incremental_update(
      critic_params, state.target_critic_params, h.tau
    )
    do_target = (steps % h.target_update_period) == 0
    target = jax.tree_util.tree_map(
      lambda p, t: jnp.where(do_target, p, t),
      polyak,
      state.target_critic_params,
    )
    new_state = SACState(
      actor_params=actor_params,
      critic_params=critic_params,
      target_critic_params=target,
      log_alpha=log_alpha,
      actor_opt=actor_opt,
      critic_opt=critic_opt,
      alpha_opt=alpha_opt,
      steps=steps,
    )
    metrics = {
      **cm,
      **am,
      "alpha_loss": alpha_loss,
      "alpha": jnp.exp(log_alpha),
    }
    return new_state, metrics

  def reset_critic(self, state: SACState, key: jax.Array) -> SACState:
    """Fresh Q nets, targets and critic optimiser; actor and alpha kept."""
    obs = jnp.zeros((1, self.obs_size))
    act = jnp.zeros((1, self.action_size))
    critic_params = self.critic.init(key, obs, act)
    return state.replace(
      critic_params=critic_params,
      target_critic_params=critic_params,
      critic_opt=self._opt(self.hyper.critic_lr).init(critic_params),
    )
