"""Implicit Q-Learning (Kostrikov, Nair and Levine, 2021) as pure functions.

Offline RL from a fixed set of transitions, never querying a policy's own
actions while learning values:

  V:  expectile regression of the target critic on dataset actions,
      L_V = mean_b |tau - 1[u_b < 0]| u_b^2,  u = min_i Q'_i(s, a) - V(s)
  Q:  L_Q = mean_b sum_i (Q_i(s, a) - r - gamma d V(s'))^2  (twin Q, Polyak
      target Q' with rate `target_tau` every update)
  pi: advantage-weighted regression, L_pi = -mean_b w_b log pi(a_b | s_b),
      w = min(exp(beta (min_i Q'_i(s, a) - V(s))), max_weight)

updated in the reference order (V, then pi with the new V, then Q with the
new V, then the target). Defaults are the paper's MuJoCo settings: tau 0.7,
beta 3, weights clipped at 100, gamma 0.99, Polyak 0.005, Adam 3e-4, batch
256. The policy is a Gaussian whose mean is squashed by tanh (the IQL
reference's MuJoCo actor): log pi(a|s) = log N(a; tanh(mu(s)), sigma(s)^2),
and evaluation acts with tanh(mu(s)). It is `erljax.agents.networks.Actor`, the
SAC actor, whose log-std lies in [log_std_min, log_std_max].

Behaviour cloning is the same actor with every weight 1 (maximum
likelihood); with `bc` the value and critic steps are skipped.

Observations are normalised by a fixed mean and std carried in the state
(identity when normalisation is off). Everything is pure in `IQLState` and
vmaps over a leading seed axis; `train_steps` runs many updates as one
`jax.lax.scan`.
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

Params = Any


@dataclasses.dataclass(frozen=True)
class IQLHyper:
  """IQL hyper-parameters (defaults: the IQL paper's MuJoCo settings)."""

  hidden_sizes: Sequence[int] = (256, 256)
  actor_lr: float = 3e-4
  critic_lr: float = 3e-4
  value_lr: float = 3e-4
  discount: float = 0.99
  target_tau: float = 0.005  # Polyak rate of the target critic
  expectile: float = 0.7  # tau of the value loss
  beta: float = 3.0  # inverse temperature of the actor weights
  max_weight: float = 100.0  # exp-advantage weights clipped here
  batch_size: int = 256
  log_std_min: float = -5.0
  log_std_max: float = 2.0
  bc: bool = False  # behaviour cloning: weights 1, no critics


@struct.dataclass
class IQLState:
  actor_params: Params
  critic_params: Params
  target_critic_params: Params
  value_params: Params
  actor_opt: optax.OptState
  critic_opt: optax.OptState
  value_opt: optax.OptState
  obs_mean: jax.Array  # [O] subtracted from observations
  obs_std: jax.Array  # [O] observations divided by it after
  steps: jax.Array  # int32 scalar: updates done


@struct.dataclass
class Batch:
  """Transitions, each leaf with a leading batch dim B (or M in a dataset):
  obs [B, O], action [B, A], reward [B], discount [B] (0 at true
  terminations), next_obs [B, O]."""

  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  discount: jax.Array
  next_obs: jax.Array


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
  """mean |expectile - 1[diff < 0]| diff^2 over diff [B] -> []."""
  weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
  return jnp.mean(weight * diff**2)


def awr_weights(
  advantage: jax.Array, beta: float, max_weight: float
) -> jax.Array:
  """min(exp(beta * advantage), max_weight), elementwise; no gradient."""
  return jax.lax.stop_gradient(
    jnp.minimum(jnp.exp(beta * advantage), max_weight)
  )


def gaussian_log_prob(
  mean: jax.Array, log_std: jax.Array, action: jax.Array
) -> jax.Array:
  """log N(action; mean, exp(log_std)^2), summed over the last axis:
  [B, A] x3 -> [B]."""
  chex.assert_equal_shape([mean, log_std, action])
  z = (action - mean) * jnp.exp(-log_std)
  return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), -1)


@dataclasses.dataclass(frozen=True)
class IQL:
  """IQL (or BC) for fixed observation / action sizes. All methods pure."""

  obs_size: int
  action_size: int
  hyper: IQLHyper = IQLHyper()

  @property
  def actor(self) -> networks.Actor:
    h = self.hyper
    return networks.Actor(
      self.action_size, tuple(h.hidden_sizes), h.log_std_min, h.log_std_max
    )

  @property
  def critic(self) -> networks.Critic:
    return networks.Critic(tuple(self.hyper.hidden_sizes))

  @property
  def value(self) -> networks.MLP:
    return networks.MLP(tuple(self.hyper.hidden_sizes), 1)

  def init(
    self,
    key: jax.Array,
    obs_mean: jax.Array | None = None,
    obs_std: jax.Array | None = None,
  ) -> IQLState:
    """Fresh networks; obs_mean / obs_std [O] (None: no normalisation)."""
    ka, kc, kv = jax.random.split(key, 3)
    obs = jnp.zeros((1, self.obs_size))
    act = jnp.zeros((1, self.action_size))
    actor_params = self.actor.init(ka, obs)
    critic_params = self.critic.init(kc, obs, act)
    value_params = self.value.init(kv, obs)
    h = self.hyper
    mean = jnp.zeros((self.obs_size,)) if obs_mean is None else obs_mean
    std = jnp.ones((self.obs_size,)) if obs_std is None else obs_std
    chex.assert_shape([mean, std], (self.obs_size,))
    return IQLState(
      actor_params=actor_params,
      critic_params=critic_params,
      target_critic_params=critic_params,
      value_params=value_params,
      actor_opt=optax.adam(h.actor_lr).init(actor_params),
      critic_opt=optax.adam(h.critic_lr).init(critic_params),
      value_opt=optax.adam(h.value_lr).init(value_params),
      obs_mean=jnp.asarray(mean, jnp.float32),
      obs_std=jnp.asarray(std, jnp.float32),
      steps=jnp.zeros((), jnp.int32),
    )

  # -- acting -----------------------------------------------------------------

  def normalize(self, state: IQLState, obs: jax.Array) -> jax.Array:
    return (obs - state.obs_mean) / state.obs_std

  def act(self, state: IQLState, obs: jax.Array) -> jax.Array:
    """Deterministic action tanh(mu(s)): obs [B, O] -> [B, A] in (-1, 1)."""
    mean, _ = self.actor.apply(state.actor_params, self.normalize(state, obs))
    return networks.deterministic_action(mean)

  # -- losses (observations already normalised) -------------------------------

  def value_loss(
    self, value_params: Params, target_critic_params: Params, batch: Batch
  ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    q = jnp.min(
      self.critic.apply(target_critic_params, batch.obs, batch.action), 0
    )
    v = self.value.apply(value_params, batch.obs)[..., 0]
    loss = expectile_loss(jax.lax.stop_gradient(q) - v, self.hyper.expectile)
    return loss, {"value_loss": loss, "v": jnp.mean(v)}

  def actor_loss(
    self,
    actor_params: Params,
    value_params: Params,
    target_critic_params: Params,
    batch: Batch,
  ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    h = self.hyper
    if h.bc:
      weight = jnp.ones_like(batch.reward)
    else:
      q = jnp.min(
        self.critic.apply(target_critic_params, batch.obs, batch.action), 0
      )
      v = self.value.apply(value_params, batch.obs)[..., 0]
      weight = awr_weights(q - v, h.beta, h.max_weight)
    mean, log_std = self.actor.apply(actor_params, batch.obs)
    log_prob = gaussian_log_prob(jnp.tanh(mean), log_std, batch.action)
    loss = -jnp.mean(weight * log_prob)
    return loss, {
      "actor_loss": loss,
      "weight": jnp.mean(weight),
      "weight_max": jnp.max(weight),
      "log_prob": jnp.mean(log_prob),
    }

  def critic_loss(
    self, critic_params: Params, value_params: Params, batch: Batch
  ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    next_v = self.value.apply(value_params, batch.next_obs)[..., 0]
    target = jax.lax.stop_gradient(
      batch.reward + self.hyper.discount * batch.discount * next_v
    )
    q = self.critic.apply(critic_params, batch.obs, batch.action)  # [2, B]
    loss = jnp.mean(jnp.sum((q - target[None]) ** 2, 0))
    return loss, {"critic_loss": loss, "q": jnp.mean(q)}

  # -- one update -------------------------------------------------------------

  def update(
    self, state: IQLState, batch: Batch
  ) -> Tuple[IQLState, Dict[str, jax.Array]]:
    """One IQL (or BC) step on a batch of raw (unnormalised) transitions."""
    chex.assert_rank([batch.obs, batch.action, batch.next_obs], 2)
    chex.assert_rank([batch.reward, batch.discount], 1)
    h = self.hyper
    batch = batch.replace(
      obs=self.normalize(state, batch.obs),
      next_obs=self.normalize(state, batch.next_obs),
    )
    metrics: Dict[str, jax.Array] = {}
    value_params, value_opt = state.value_params, state.value_opt

    def step(loss_fn, lr):
      return gradients.gradient_update_fn(loss_fn, optax.adam(lr), has_aux=True)

    if not h.bc:
      (_, m), value_params, value_opt = step(self.value_loss, h.value_lr)(
        value_params, value_opt, state.target_critic_params, batch
      )
      metrics.update(m)
    (_, m), actor_params, actor_opt = step(self.actor_loss, h.actor_lr)(
      state.actor_params,
      state.actor_opt,
      value_params,
      state.target_critic_params,
      batch,
    )
    metrics.update(m)
    critic_params, critic_opt = state.critic_params, state.critic_opt
    target = state.target_critic_params
    if not h.bc:
      (_, m), critic_params, critic_opt = step(self.critic_loss, h.critic_lr)(
        critic_params, critic_opt, value_params, batch
      )
      target = optax.incremental_update(critic_params, target, h.target_tau)
      metrics.update(m)
    return state.replace(
      actor_params=actor_params,
      critic_params=critic_params,
      target_critic_params=target,
      value_params=value_params,
      actor_opt=actor_opt,
      critic_opt=critic_opt,
      value_opt=value_opt,
      steps=state.steps + 1,
    ), metrics

  def train_steps(
    self, state: IQLState, data: Batch, key: jax.Array, num_steps: int
  ) -> Tuple[IQLState, Dict[str, jax.Array]]:
    """`num_steps` updates on minibatches drawn uniformly (with replacement)
    from data (leaves [M, ...]); one jax.lax.scan. Returns the state and the
    metrics averaged over the steps."""
    m = data.reward.shape[0]

    def one(state, key):
      idx = jax.random.randint(key, (self.hyper.batch_size,), 0, m)
      return self.update(state, jax.tree_util.tree_map(lambda x: x[idx], data))

    state, metrics = jax.lax.scan(one, state, jax.random.split(key, num_steps))
    return state, jax.tree_util.tree_map(jnp.mean, metrics)
