"""Data-parallel training across devices with jax.sharding.

A run's state carries a leading seed axis S (runs are vmapped over seeds) and
its environment state a parallel-env axis N after it. `Layout` lays a
(seeds, envs) mesh over `num_devices` devices: the seed axis is split over as
many devices as divide S, the env axis of the environment state over the
rest; everything else of a seed (networks, optimiser state, replay buffer) is
replicated along the env axis. jit then partitions the compiled training
chunk to match (XLA inserts the gathers the replay insert and the SAC update
need). With one device the layout is inactive and nothing changes.

Test on a CPU with XLA_FLAGS=--xla_force_host_platform_device_count=4 set
before jax is imported; speed-ups need real accelerators.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

SEEDS = "seeds"
ENVS = "envs"


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a run's state is spread over devices (mesh None: one device)."""

  mesh: Optional[Mesh]

  @classmethod
  def create(cls, num_devices: int, num_seeds: int, num_envs: int) -> "Layout":
    """Seed axis over gcd(num_seeds, num_devices) devices, envs over the rest.

    Raises ValueError naming the value when the devices don't exist or the
    env axis does not split evenly.
    """
    available = jax.device_count()
    if not 1 <= num_devices <= available:
      raise ValueError(
        f"num_devices={num_devices}: must lie in [1, {available}] (the "
        "devices JAX sees; on CPU set XLA_FLAGS="
        "--xla_force_host_platform_device_count=N before importing jax)"
      )
    if num_devices == 1:
      return cls(mesh=None)
    seed_devices = math.gcd(num_seeds, num_devices)
    env_devices = num_devices // seed_devices
    if num_envs % env_devices:
      raise ValueError(
        f"num_envs={num_envs}: with num_seeds={num_seeds} on "
        f"num_devices={num_devices} the env axis is split over "
        f"{env_devices} devices and must be a multiple of it"
      )
    devices = np.asarray(jax.devices()[:num_devices]).reshape(
      seed_devices, env_devices
    )
    return cls(mesh=Mesh(devices, (SEEDS, ENVS)))

  @property
  def active(self) -> bool:
    return self.mesh is not None

  def _named(self, *spec) -> NamedSharding:
    return NamedSharding(self.mesh, P(*spec))

  def seed_sharding(self, tree: Any) -> Any:
    """Every leaf split on its leading (seed) axis, replicated over envs."""
    return jax.tree_util.tree_map(lambda _: self._named(SEEDS), tree)

  def state_sharding(self, state: Any) -> Any:
    """Shardings for a seed-batched TrainState (arrays or ShapeDtypeStructs).

    The environment state's per-env leaves ([S, N, ...]) are also split on
    the env axis; its reset key ([S, 2]) is not.
    """
    sh = self.seed_sharding(state)
    env = state.env
    per_env = lambda t: jax.tree_util.tree_map(
      lambda _: self._named(SEEDS, ENVS), t
    )
    env_sh = sh.env.replace(
      inner=per_env(env.inner),
      obs=per_env(env.obs),
      t=per_env(env.t),
      episode_return=per_env(env.episode_return),
    )
    return sh.replace(env=env_sh)

  def put_state(self, state: Any) -> Any:
    """The state laid out on the mesh (no-op without one or when in place)."""
    if not self.active:
      return state
    return jax.device_put(state, self.state_sharding(state))

  def put_seeded(self, tree: Any) -> Any:
    """Any seed-batched tree (e.g. PRNG keys [S, 2]) split over seeds."""
    if not self.active:
      return tree
    return jax.device_put(tree, self.seed_sharding(tree))

  def describe(self) -> Dict[str, Any]:
    if not self.active:
      return {"devices": 1}
    return {
      "devices": int(self.mesh.devices.size),
      "mesh": dict(
        zip(self.mesh.axis_names, map(int, self.mesh.devices.shape))
      ),
    }
