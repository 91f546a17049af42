"""Learned reward models with an ensemble axis (docs/method.md#reward-model;
reference reward_model_vlm_rating.py: gen_net, gen_image_net).

Two members' architectures, chosen by config:
  * "mlp": state-action MLP of RbRL, 3x256 LeakyReLU, tanh output.
  * "cnn": ERL-VLM's image network on one 224x224x3 frame scaled to [0, 1]:
    conv channels (16, 32, 64, 128), kernels (5, 3, 3, 3), strides
    (3, 2, 2, 2), no padding, ReLU, flatten, Dense(1), tanh.
Members are independent (parameters stacked on a leading axis by nn.vmap);
the agent's reward is the ensemble mean. Every layer starts from PyTorch's
default init (networks.torch_uniform), as the reference's networks do:
gen_net and gen_image_net set none of their own.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from erljax.agents import networks
from erljax.runtime import precision


class StateActionMLP(nn.Module):
  """(obs [B, O], action [B, A]) -> r [B] in (-1, 1)."""

  hidden_sizes: Sequence[int] = (256, 256, 256)

  @nn.compact
  def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
    x = jnp.concatenate([obs, action], axis=-1)
    out = networks.MLP(
      tuple(self.hidden_sizes), 1, "leaky_relu", weight_init="torch"
    )(x)
    return jnp.tanh(out[..., 0])


_NHWC = ("NHWC", "HWIO", "NHWC")


def _patch_product(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """The VALID convolution as k x k patches [B, H', W', k k C] times the
  kernel as a matrix [k k C, F], in config.matmul_precision."""
  k, features = kernel.shape[0], kernel.shape[-1]
  patches = jax.lax.conv_general_dilated_patches(
    x, (k, k), (stride, stride), "VALID", dimension_numbers=_NHWC
  )
  # Patch features are ordered (channel, row, column).
  matrix = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(-1, features)
  return precision.matmul(patches, matrix)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """x [B, H, W, C] * kernel [k, k, C, F] -> [B, H', W', F]: XLA's own
  convolution where no gradient is taken, the patch product (its value and
  its gradient) where one is."""
  return jax.lax.conv_general_dilated(
    x, kernel, (stride, stride), "VALID", dimension_numbers=_NHWC
  )


def _conv_fwd(x, kernel, stride):
  # The backward pass needs the patches, so the forward pass of a step that
  # is differentiated computes the product from them, at no extra cost.
  return jax.vjp(lambda x, w: _patch_product(x, w, stride), x, kernel)


def _conv_bwd(stride, vjp, g):
  del stride
  return vjp(g)


_conv.defvjp(_conv_fwd, _conv_bwd)


class PatchConv(nn.Module):
  """A VALID 2-D convolution whose gradient is a patch product.

  x [B, H, W, C] -> [B, H', W', features], the same function and the same
  parameters (kernel [k, k, C, features], bias [features]) as flax's
  nn.Conv(features, (k, k), (s, s), padding="VALID"). XLA's CPU backend
  runs a convolution's gradient under vmap over parameters (ensemble
  members, seeds) ~35x slower than k x k patches times a matrix
  (jax-ml/jax#12868), so a differentiated step runs the patch product,
  forward and backward. Where no gradient is taken (the reward of each
  step, relabelling) it runs XLA's convolution, ~2.4x cheaper than the
  patch product (the patches are themselves a convolution with k k C
  outputs). A 3-member ensemble on 224x224 frames, CPU ms per frame:
  forward 3.5 against 8.0; gradient step 18 against 590 with vmapped
  convolutions (benchmarks/README.md, "Idle figures, image CNN"). Under
  matmul_precision "bfloat16" both are the patch product, whose bf16
  matmul XLA:CPU runs (erljax.runtime.precision).
  """

  features: int
  kernel: int
  stride: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, c = self.kernel, x.shape[-1]
    init = networks.torch_uniform(k * k * c)
    kernel = self.param("kernel", init, (k, k, c, self.features))
    bias = self.param("bias", init, (self.features,))
    if precision.low():
      return _patch_product(x, kernel, self.stride) + bias
    return _conv(x, kernel, self.stride) + bias


class ImageCNN(nn.Module):
  """frames [B, H, W, 3] uint8 or float in [0, 255] -> r [B] in (-1, 1)."""

  channels: Sequence[int] = (16, 32, 64, 128)
  kernels: Sequence[int] = (5, 3, 3, 3)
  strides: Sequence[int] = (3, 2, 2, 2)

  @property
  def min_frame_size(self) -> int:
    """Smallest side (pixels) the valid convolutions leave >= 1 pixel of."""
    size = 1
    for k, s in reversed(tuple(zip(self.kernels, self.strides))):
      size = (size - 1) * s + k
    return size

  @nn.compact
  def __call__(
    self, frames: jax.Array, action: jax.Array | None = None
  ) -> jax.Array:
    del action
    if min(frames.shape[-3:-1]) < self.min_frame_size:
      raise ValueError(
        f"frames of shape {frames.shape}: the CNN needs "
        f"frames of at least {self.min_frame_size}x"
        f"{self.min_frame_size} pixels"
      )
    x = frames.astype(jnp.float32) / 255.0
    for c, k, s in zip(self.channels, self.kernels, self.strides):
      x = nn.relu(PatchConv(c, k, s)(x))
    x = x.reshape(x.shape[:-3] + (-1,))
    init = networks.torch_uniform(x.shape[-1])
    out = nn.Dense(
      1, kernel_init=init, bias_init=init, dot_general=precision.dot_general
    )(x)
    return jnp.tanh(out[..., 0])


class Ensemble(nn.Module):
  """E independent copies of `member`: inputs [B, ...] -> rewards [E, B]."""

  member: nn.Module
  size: int = 3

  @nn.compact
  def __call__(self, *inputs):
    members = nn.vmap(
      lambda mdl, *xs: mdl(*xs),
      variable_axes={"params": 0},
      split_rngs={"params": True},
      in_axes=None,
      out_axes=0,
      axis_size=self.size,
    )
    return members(self.member, *inputs)


@dataclasses.dataclass(frozen=True)
class RewardModel:
  """A reward ensemble over (obs, action) or (frames,) inputs."""

  kind: str  # "mlp" or "cnn"
  ensemble_size: int = 3
  hidden_sizes: Sequence[int] = (256, 256, 256)

  def __post_init__(self):
    if self.kind not in ("mlp", "cnn"):
      raise ValueError(
        f"reward model kind={self.kind!r}: choose 'mlp' or 'cnn'"
      )
    if self.ensemble_size < 1:
      raise ValueError(f"ensemble_size={self.ensemble_size}: must be >= 1")

  @property
  def module(self) -> Ensemble:
    member = (
      StateActionMLP(tuple(self.hidden_sizes))
      if self.kind == "mlp"
      else ImageCNN()
    )
    return Ensemble(member, self.ensemble_size)

  def init(self, key: jax.Array, example_inputs: Sequence[jax.Array]) -> Any:
    return self.module.init(key, *example_inputs)

  def per_member(self, member_params: Any, *inputs: jax.Array) -> jax.Array:
    """Each member on its own batch: inputs [E, B, ...] -> rewards [E, B].

    member_params: params["params"]["member"] (leaves stacked on axis 0).
    """
    member = self.module.member
    return jax.vmap(lambda prm, *xs: member.apply({"params": prm}, *xs))(
      member_params, *inputs
    )

  def members(self, params: Any, *inputs: jax.Array) -> jax.Array:
    """Per-member rewards [E, B] of one shared batch inputs [B, ...]."""
    return self.module.apply(params, *inputs)

  def reward(self, params: Any, *inputs: jax.Array) -> jax.Array:
    """The agent's reward: the ensemble mean, [B]."""
    return jnp.mean(self.members(params, *inputs), axis=0)
