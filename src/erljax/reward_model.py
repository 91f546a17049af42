"""Learned reward models with an ensemble axis (method notes §5).

Two members' architectures, chosen by config:
  * "mlp": state-action MLP of RbRL, 3x256 LeakyReLU, tanh output.
  * "cnn": ERL-VLM's image network on one 224x224x3 frame scaled to [0, 1]:
    conv channels (16, 32, 64, 128), kernels (5, 3, 3, 3), strides
    (3, 2, 2, 2), no padding, ReLU, flatten, Dense(1), tanh.
Members are independent (parameters stacked on a leading axis by nn.vmap);
the agent's reward is the ensemble mean.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from erljax import networks


class StateActionMLP(nn.Module):
  """(obs [B, O], action [B, A]) -> r [B] in (-1, 1)."""

  hidden_sizes: Sequence[int] = (256, 256, 256)

  @nn.compact
  def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
    x = jnp.concatenate([obs, action], axis=-1)
    out = networks.MLP(tuple(self.hidden_sizes), 1, "leaky_relu")(x)
    return jnp.tanh(out[..., 0])


class ImageCNN(nn.Module):
  """frames [B, H, W, 3] uint8 or float in [0, 255] -> r [B] in (-1, 1)."""

  channels: Sequence[int] = (16, 32, 64, 128)
  kernels: Sequence[int] = (5, 3, 3, 3)
  strides: Sequence[int] = (3, 2, 2, 2)

  @nn.compact
  def __call__(self, frames: jax.Array, action: jax.Array | None = None
               ) -> jax.Array:
    del action
    x = frames.astype(jnp.float32) / 255.0
    for c, k, s in zip(self.channels, self.kernels, self.strides):
      x = nn.relu(nn.Conv(c, (k, k), (s, s), padding="VALID")(x))
    x = x.reshape(x.shape[:-3] + (-1,))
    return jnp.tanh(nn.Dense(1)(x)[..., 0])


class Ensemble(nn.Module):
  """E independent copies of `member`: inputs [B, ...] -> rewards [E, B]."""

  member: nn.Module
  size: int = 3

  @nn.compact
  def __call__(self, *inputs):
    members = nn.vmap(
        lambda mdl, *xs: mdl(*xs), variable_axes={"params": 0},
        split_rngs={"params": True}, in_axes=None, out_axes=0,
        axis_size=self.size)
    return members(self.member, *inputs)


@dataclasses.dataclass(frozen=True)
class RewardModel:
  """A reward ensemble over (obs, action) or (frames,) inputs."""

  kind: str          # "mlp" or "cnn"
  ensemble_size: int = 3
  hidden_sizes: Sequence[int] = (256, 256, 256)

  def __post_init__(self):
    if self.kind not in ("mlp", "cnn"):
      raise ValueError(f"reward model kind={self.kind!r}: choose 'mlp' or "
                       "'cnn'")
    if self.ensemble_size < 1:
      raise ValueError(f"ensemble_size={self.ensemble_size}: must be >= 1")

  @property
  def module(self) -> Ensemble:
    member = (StateActionMLP(tuple(self.hidden_sizes)) if self.kind == "mlp"
              else ImageCNN())
    return Ensemble(member, self.ensemble_size)

  def init(self, key: jax.Array, example_inputs: Sequence[jax.Array]) -> Any:
    return self.module.init(key, *example_inputs)

  def members(self, params: Any, *inputs: jax.Array) -> jax.Array:
    """Per-member rewards [E, B]."""
    return self.module.apply(params, *inputs)

  def reward(self, params: Any, *inputs: jax.Array) -> jax.Array:
    """The agent's reward: the ensemble mean, [B]."""
    return jnp.mean(self.members(params, *inputs), axis=0)
