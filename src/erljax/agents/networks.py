"""SAC networks: MLPs, a tanh-squashed Gaussian actor and a twin Q critic."""

from __future__ import annotations

import math
from typing import Callable, Sequence, Tuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from erljax.runtime import precision

_ACTIVATIONS = {
  "relu": nn.relu,
  "leaky_relu": nn.leaky_relu,
  "tanh": jnp.tanh,
  "silu": nn.silu,
  "elu": nn.elu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in _ACTIVATIONS:
    raise ValueError(
      f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}"
    )
  return _ACTIVATIONS[name]


def torch_uniform(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default init of nn.Linear and nn.Conv2d weights and biases.

  Both are U(-1/sqrt(fan_in), 1/sqrt(fan_in)): kaiming_uniform with
  a=sqrt(5) for the weight, the same bound for the bias. fan_in is the
  inputs per output (in features, or k * k * in channels).
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class MLP(nn.Module):
  """Fully connected network: maps [..., in] to [..., out_size].

  weight_init "orthogonal": orthogonal weights, zero biases (the SAC networks,
  pytorch_sac's weight_init); "torch": PyTorch's nn.Linear default
  (`torch_uniform`), what the reference's reward network gen_net gets.
  """

  hidden_sizes: Sequence[int]
  out_size: int
  activation: str = "relu"
  weight_init: str = "orthogonal"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.weight_init not in ("orthogonal", "torch"):
      raise ValueError(
        f"unknown weight_init {self.weight_init!r}; choose 'orthogonal' or"
        " 'torch'"
      )
    act = activation(self.activation)

    def dense(size, x):
      if self.weight_init == "torch":
        init = torch_uniform(x.shape[-1])
        inits = dict(kernel_init=init, bias_init=init)
      else:
        inits = dict(kernel_init=nn.initializers.orthogonal())
      # dot_general: config.matmul_precision
      return nn.Dense(size, dot_general=precision.dot_general, **inits)(x)

    for size in self.hidden_sizes:
      x = act(dense(size, x))
    return dense(self.out_size, x)


class Actor(nn.Module):
  """Gaussian policy head: obs [B, obs] -> (mean [B, A], log_std [B, A]).

  log_std is squashed into [log_std_min, log_std_max] with tanh, as in the
  reference (pytorch_sac) implementation.
  """

  action_size: int
  hidden_sizes: Sequence[int] = (256, 256, 256)
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @nn.compact
  def __call__(self, obs: jax.Array) -> Tuple[jax.Array, jax.Array]:
    out = MLP(self.hidden_sizes, 2 * self.action_size)(obs)
    mean, log_std = jnp.split(out, 2, axis=-1)
    log_std = jnp.tanh(log_std)
    log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (
      log_std + 1.0
    )
    return mean, log_std


class Critic(nn.Module):
  """Twin Q: (obs [B, obs], action [B, A]) -> q [2, B]."""

  hidden_sizes: Sequence[int] = (256, 256, 256)
  num_q: int = 2

  @nn.compact
  def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
    x = jnp.concatenate([obs, action], axis=-1)
    qs = nn.vmap(
      MLP,
      variable_axes={"params": 0},
      split_rngs={"params": True},
      in_axes=None,
      out_axes=0,
      axis_size=self.num_q,
    )(self.hidden_sizes, 1)(x)
    return qs[..., 0]


def squashed_gaussian_sample(
  mean: jax.Array, log_std: jax.Array, key: jax.Array
) -> Tuple[jax.Array, jax.Array]:
  """Samples a = tanh(u), u ~ N(mean, std); returns (a [B, A], log_prob [B])."""
  chex.assert_equal_shape([mean, log_std])
  std = jnp.exp(log_std)
  noise = jax.random.normal(key, mean.shape, mean.dtype)
  u = mean + std * noise
  log_prob_u = jnp.sum(
    -0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1
  )
  # log |d tanh(u) / du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)),
  # the numerically stable form.
  log_det = jnp.sum(
    2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1
  )
  return jnp.tanh(u), log_prob_u - log_det


def deterministic_action(mean: jax.Array) -> jax.Array:
  return jnp.tanh(mean)
