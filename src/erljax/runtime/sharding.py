"""Data-parallel training across devices with jax.sharding.

A run's state carries a leading seed axis S (runs are vmapped over seeds) and
its environment state a parallel-env axis N after it. `Layout` lays a
(seeds, envs) mesh over `num_devices` devices: the seed axis is split over as
many devices as divide S, the env axis over the rest, E = num_devices /
gcd(S, num_devices) devices, which make it a data axis:

- each of the E devices steps N / E of a seed's envs and holds their
  transitions: the seed's replay buffer is config.replay_shards = K blocks
  (erljax.agents.replay, K a multiple of E; 0 picks K = E), env group k of N / K
  envs writing block k, and the buffer's rows are split over the E devices,
  K / E blocks each (replay memory per device: capacity / E a seed);
- config.batch_size is the GLOBAL batch: every block samples
  batch_size / K items from itself, so a device draws its part of the
  minibatch from its own rows, and the SAC update runs on the batch split
  over the E devices; its losses are means over the whole batch, so
  jit/GSPMD all-reduces the gradients (their mean over the data axis) and
  the networks and optimiser states stay replicated along it;
- relabelling after a feedback session reads the same rows of every block
  (replay.relabel), so each device relabels its own blocks;
- the reward model's minibatches (`put_minibatches`) are split over the
  data axis the same way, its gradients all-reduced; each seed's rating set
  is small and stays whole on every device, so there is nothing to block.

What a run computes depends on K, not on the devices: with the same K one
device and E devices give the same results up to float reordering, and K = 1
(the default on one device) is the plain ring buffer. Not split: query
sampling reads its few queries from wherever they lie, and PEBBLE's k-NN
pre-training reward gathers its reference rows (replay.oldest, a small
head of every block) and, before its top_k, the batch-by-reference
distances [B, M] (as compiled on 4 CPU devices). With one device the layout
is inactive and nothing changes.

Test on a CPU with XLA_FLAGS=--xla_force_host_platform_device_count=4 set
before jax is imported; speed-ups need real accelerators.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
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
        "devices JAX sees over all processes; on CPU set XLA_FLAGS="
        "--xla_force_host_platform_device_count=N before importing jax, "
        "across hosts start every process: config.distributed)"
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

    The environment state's per-env leaves ([S, N, ...]) and the replay
    buffer's rows ([S, capacity, ...], K blocks) are also split on the env
    axis; the env reset key ([S, 2]) and the buffer's counters are not.
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
    buffer_sh = sh.buffer.replace(data=per_env(state.buffer.data))
    return sh.replace(env=env_sh, buffer=buffer_sh)

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

  @property
  def data_devices(self) -> int:
    """Devices on the env (data) axis."""
    return int(self.mesh.shape[ENVS]) if self.active else 1

  def put_minibatches(self, x: Any) -> jax.Array:
    """A seed-batched array whose LAST axis is a minibatch (e.g. the reward
    learner's schedule [S, T, E, B]), split over seeds and that axis over the
    data axis (a plain device array without a mesh)."""
    if not self.active:
      return jnp.asarray(x)
    spec = (SEEDS,) + (None,) * (np.ndim(x) - 2) + (ENVS,)
    return jax.device_put(x, self._named(*spec))

  def describe(self) -> Dict[str, Any]:
    if not self.active:
      return {"devices": 1}
    return {
      "devices": int(self.mesh.devices.size),
      "mesh": dict(
        zip(self.mesh.axis_names, map(int, self.mesh.devices.shape))
      ),
    }
