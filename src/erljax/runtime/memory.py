"""How much memory a run will take, against what the device has.

`estimate` sizes a run before anything is compiled, from the shapes of its
TrainState (`jax.eval_shape`, nothing allocated): the replay buffer (every
seed's, all transitions' observations, actions, rewards and poses), the
rest of the state (networks, optimiser moments, env states) and, for runs
that learn from ratings, the frames drawn on the host per feedback session
(seeds x queries x segment length x height x width x 3 bytes).
`available` is the device's memory where JAX reports it
(`Device.memory_stats()["bytes_limit"]`, GPUs and TPUs), else the host's
RAM (CPU). `startup_line` puts the two side by side; erljax.online.runner prints
it at the start of every run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Tuple

import jax
import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Bytes: replay (on device), rest of the state (on device), frames (per
  feedback session, on the host; 0 without rated frames)."""

  replay: int
  state: int
  frames: int

  @property
  def device(self) -> int:
    return self.replay + self.state


def tree_bytes(tree: Any) -> int:
  """Total bytes of a pytree's array leaves (arrays or ShapeDtypeStructs)."""
  return int(
    sum(
      int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
      for x in jax.tree_util.tree_leaves(tree)
      if hasattr(x, "shape") and hasattr(x, "dtype")
    )
  )


def frame_bytes(config: ml_collections.ConfigDict) -> int:
  """Bytes of one feedback session's rendered frames on the host (all
  seeds), 0 where the run learns from the env reward."""
  c = config
  if c.reward.source != "learned":
    return 0
  return (
    c.num_seeds
    * c.feedback.queries
    * c.feedback.segment_length
    * c.render.height
    * c.render.width
    * 3
  )


def estimate(config: ml_collections.ConfigDict, state_shapes: Any) -> Estimate:
  """The run's Estimate; state_shapes: its TrainState of all seeds, as
  arrays or as `jax.eval_shape` gives it (a `.buffer` field: the replay)."""
  replay = tree_bytes(state_shapes.buffer)
  return Estimate(
    replay=replay,
    state=tree_bytes(state_shapes) - replay,
    frames=frame_bytes(config),
  )


def host_ram() -> Optional[int]:
  """The host's physical memory in bytes, None where it cannot be read."""
  try:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
  except (ValueError, OSError, AttributeError):
    return None


def available(device: Optional[Any] = None) -> Tuple[Optional[int], str]:
  """(bytes, what they are) of the memory a run's arrays live in: the
  device's `bytes_limit` where JAX reports it, else the host's RAM."""
  device = device if device is not None else jax.devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except (backend-specific)
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{device.platform} memory"
  return host_ram(), "host RAM"


def human(n: float) -> str:
  """Bytes as B / KiB / MiB / GiB / TiB, 3 significant figures."""
  for unit in ("B", "KiB", "MiB", "GiB"):
    if abs(n) < 1024:
      return f"{n:.3g} {unit}"
    n /= 1024
  return f"{n:.3g} TiB"


def startup_line(
  est: Estimate, limit: Optional[int], limit_name: str, num_devices: int = 1
) -> str:
  """One line: the estimate against `limit` bytes (per device), with a
  warning where the device part would not fit."""
  per_device = est.device / max(num_devices, 1)
  line = f"memory: replay {human(est.replay)} + state {human(est.state)}" + (
    f" over {num_devices} devices" if num_devices > 1 else ""
  )
  if limit:
    line += f" = {100 * per_device / limit:.1f}% of {human(limit)} {limit_name}"
  if est.frames:
    line += f"; frames {human(est.frames)} per feedback session on the host"
  if limit and per_device > 0.9 * limit:
    line += (
      " -- WARNING: will not fit; lower replay_capacity, num_seeds or "
      "num_envs, or use more devices (num_devices)"
    )
  return line
