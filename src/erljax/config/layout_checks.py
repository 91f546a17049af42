"""Start-up checks of how a run lays out over devices and processes.

`data_devices` and `replay_shards` derive the (seeds, envs) mesh and the
replay blocks per seed (erljax.runtime.sharding.Layout) from the config;
`check_layout` checks that they divide the run's counts, and
`check_distributed` the config.distributed keys (erljax.runtime.distributed).
Both raise ConfigError naming the key and value (erljax.config.validation runs
them).
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from erljax.config.checks import check, integer_at_least


def data_devices(c: ml_collections.ConfigDict) -> int:
  """Devices on the env (data) axis: num_devices over the gcd(num_seeds,
  num_devices) the seed axis takes (erljax.runtime.sharding.Layout)."""
  return c.num_devices // math.gcd(c.num_seeds, c.num_devices)


def replay_shards(c: ml_collections.ConfigDict) -> int:
  """Replay blocks per seed: replay_shards, or (0) one per data device."""
  return c.replay_shards or data_devices(c)


def check_layout(c: ml_collections.ConfigDict) -> None:
  """How seeds, envs and replay blocks split over the devices
  (erljax.runtime.sharding.Layout), and what the replay buffer must hold."""
  n = c.num_envs
  seed_devices = math.gcd(c.num_seeds, c.num_devices)
  check(
    c,
    "num_devices",
    lambda v: n % (v // seed_devices) == 0,
    f"the seed axis (num_seeds={c.num_seeds}) takes {seed_devices} of "
    f"the devices, the rest split num_envs={n} evenly and must divide it",
  )
  data = data_devices(c)
  shards = replay_shards(c)
  check(
    c,
    "replay_shards",
    lambda v: (
      all(x % shards == 0 for x in (n, c.batch_size, c.replay_capacity))
      and shards % data == 0
    ),
    f"the replay blocks per seed ({shards}; 0 means one per data device) "
    f"must divide num_envs={n}, batch_size={c.batch_size} and "
    f"replay_capacity={c.replay_capacity}, and be a multiple of the "
    f"{data} devices on the env (data) axis",
  )
  check(
    c,
    "replay_capacity",
    lambda v: v >= n,
    f"must hold at least one vectorized step (num_envs={n})",
  )
  check(
    c,
    "seed_steps",
    lambda v: v <= c.total_steps,
    f"must not exceed total_steps={c.total_steps}",
  )


def check_distributed(c: ml_collections.ConfigDict) -> None:
  """config.distributed (erljax.runtime.distributed): the values' types and
  ranges; unset ones are resolved from the cluster at start-up."""
  d = c.distributed
  check(
    c,
    "distributed.enabled",
    lambda v: v is None or isinstance(v, bool),
    "must be True, False or None (start when keys are set or a "
    "multi-process launch is detected)",
  )
  if d.coordinator_address is not None:
    check(
      c,
      "distributed.coordinator_address",
      host_port,
      "must be 'host:port' with a port in [1, 65535]",
    )
  if d.num_processes is not None:
    check(c, "distributed.num_processes", integer_at_least(1), "must be >= 1")
  if d.process_id is not None:
    check(c, "distributed.process_id", integer_at_least(0), "must be >= 0")
    if d.num_processes is not None:
      check(
        c,
        "distributed.process_id",
        lambda v: v < d.num_processes,
        f"must be below num_processes={d.num_processes}",
      )
  check(
    c,
    "distributed.initialization_timeout",
    integer_at_least(1),
    "must be an integer >= 1 (seconds)",
  )
  if d.enabled is False:
    for key in ("coordinator_address", "num_processes", "process_id"):
      check(
        c,
        f"distributed.{key}",
        lambda v: v is None,
        "is set but distributed.enabled=False",
      )


def host_port(v: Any) -> bool:
  if not isinstance(v, str):
    return False
  host, sep, port = v.rpartition(":")
  return bool(host and sep and port.isdigit() and 1 <= int(port) <= 65535)
