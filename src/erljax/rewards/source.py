"""Where SAC's reward comes from: a pluggable, pure function of the transition.

A reward source owns parameters that live in the training state (so a learned
reward model can be swapped in and updated between compiled chunks without
recompiling) and maps a batch of transitions to rewards inside the hot loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Protocol, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from erljax.agents.replay import Transition
from erljax.rewards.model import RewardModel
from erljax.vision import host_frames
from erljax.vision import raycast


class FrameDrawer(Protocol):
  """Draws the image reward model's frames (erljax.vision.raycast.RayCaster
  or erljax.vision.host_frames.HostFrames)."""

  height: int
  width: int
  compiler_options: Any

  def __call__(self, pose: jax.Array) -> jax.Array:
    """Poses [..., P] -> frames [..., H, W, 3] uint8; jittable, vmappable."""


class RewardSource(Protocol):
  def init(self, key: jax.Array) -> Any:
    """Initial parameters (any pytree; may be empty)."""

  def __call__(self, params: Any, transitions: Transition) -> jax.Array:
    """A batch of transitions (leaves [N, ...]) -> rewards [N]."""


@dataclasses.dataclass(frozen=True)
class EnvReward:
  """The environment's own reward, times `scale`."""

  scale: float = 1.0

  def init(self, key: jax.Array) -> Any:
    del key
    return ()

  def __call__(self, params, transitions):
    del params
    return self.scale * transitions.true_reward.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class LearnedReward:
  """The ensemble mean of a learned reward model.

  The "mlp" model reads (obs [N, O], action [N, A]); the "cnn" model reads
  the post-step frame [N, H, W, 3] that `drawer` draws from the transition's
  pose (what a VLM rated is the post-step frame too).
  """

  model: RewardModel
  obs_size: int
  action_size: int
  drawer: Optional[FrameDrawer] = None

  def __post_init__(self):
    if (self.model.kind == "cnn") != (self.drawer is not None):
      raise ValueError(
        f"reward model kind={self.model.kind!r}: the 'cnn' "
        "needs a FrameDrawer for its frames, the 'mlp' none"
      )

  def inputs(self, transitions: Transition) -> Tuple[jax.Array, ...]:
    """What the model reads from a batch of transitions."""
    if self.drawer is not None:
      return (self.drawer(transitions.pose),)
    return transitions.obs, transitions.action

  def example_inputs(self) -> Tuple[jax.Array, ...]:
    """One item's inputs with a batch dim of 1 (for init)."""
    if self.drawer is not None:
      return (
        jnp.zeros((1, self.drawer.height, self.drawer.width, 3), jnp.uint8),
      )
    return jnp.zeros((1, self.obs_size)), jnp.zeros((1, self.action_size))

  def init(self, key: jax.Array) -> Any:
    return self.model.init(key, self.example_inputs())

  def __call__(self, params, transitions):
    return self.model.reward(params, *self.inputs(transitions))

  def members(self, params, transitions: Transition) -> jax.Array:
    """Each ensemble member's reward [E, N] of transitions [N, ...]."""
    return self.model.members(params, *self.inputs(transitions))


def make(
  config: ml_collections.ConfigDict, obs_size: int, action_size: int
) -> RewardSource:
  """Builds the reward source named by config.reward.source."""
  r = config.reward
  if r.source == "env":
    return EnvReward(scale=float(r.scale))
  if r.source == "learned":
    model = RewardModel(r.model, r.ensemble_size, tuple(r.hidden_sizes))
    drawer = None
    if r.model == "cnn":
      kind = {"raycast": raycast.RayCaster, "opengl": host_frames.HostFrames}
      drawer = kind[r.frames](config.task, r.frame_size, r.frame_size)
    return LearnedReward(model, obs_size, action_size, drawer)
  raise ValueError(f"config.reward.source={r.source!r}: unknown")
