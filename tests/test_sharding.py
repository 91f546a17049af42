"""Data-parallel layout: errors in-process, a 4-device run in a subprocess."""

import json
import os
import subprocess
import sys

import jax
import pytest

from erljax.config import defaults as config_lib
from erljax.runtime import sharding

_PROBE = os.path.join(os.path.dirname(__file__), "sharding_probe.py")


def test_one_device_layout_is_inactive():
  layout = sharding.Layout.create(1, num_seeds=3, num_envs=5)
  assert not layout.active
  tree = {"a": jax.numpy.zeros((3, 5))}
  assert layout.put_state(tree) is tree
  assert layout.put_seeded(tree) is tree
  assert layout.describe() == {"devices": 1}


def test_too_many_devices_names_the_value():
  n = jax.device_count() + 1
  with pytest.raises(ValueError, match=f"num_devices={n}"):
    sharding.Layout.create(n, num_seeds=1, num_envs=8)


def test_config_rejects_env_axis_that_does_not_split():
  c = config_lib.default()
  c.num_devices = 3
  c.num_seeds = 2  # gcd 1: all 3 devices split the 8 envs, which fails
  with pytest.raises(config_lib.ConfigError, match="config.num_devices=3"):
    config_lib.validate(c)
  c.num_devices = 4  # seeds take 2 devices, envs split over the other 2
  config_lib.validate(c)
  c.num_devices = 0
  with pytest.raises(config_lib.ConfigError, match="config.num_devices=0"):
    config_lib.validate(c)


@pytest.mark.parametrize(
  "overrides,shards,message",
  [
    ({"replay_shards": 3}, 3, "must divide num_envs=8"),  # 8 envs
    ({"replay_shards": 4, "batch_size": 6}, 4, "batch_size=6"),
    ({"replay_shards": 4, "replay_capacity": 1002}, 4, "replay_capacity"),
    ({"replay_shards": -1}, -1, "must be an integer >= 0"),
    # 4 devices, 1 seed: all 4 on the data axis, so 2 blocks are too few.
    ({"num_devices": 4, "replay_shards": 2}, 2, "multiple of the 4 devices"),
  ],
)
def test_config_rejects_replay_shards_that_do_not_split(
  overrides, shards, message
):
  c = config_lib.default()
  c.update(overrides)
  with pytest.raises(
    config_lib.ConfigError, match=f"config.replay_shards={shards}: .*{message}"
  ):
    config_lib.validate(c)


def test_replay_shards_default_to_one_per_data_device():
  c = config_lib.default()
  assert config_lib.replay_shards(c) == 1
  c.num_devices, c.num_seeds = 4, 2  # (seeds 2, envs 2)
  assert config_lib.data_devices(c) == 2
  assert config_lib.replay_shards(c) == 2
  c.replay_shards = 8  # explicit: a multiple of the 2 data devices
  config_lib.validate(c)
  assert config_lib.replay_shards(c) == 8


@pytest.fixture(scope="module")
def probe():
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
    [sys.executable, _PROBE, "4"],
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")][-1]
  return json.loads(line[len("PROBE ") :])


@pytest.mark.parametrize("source", ["env", "learned"])
def test_four_devices_match_one(probe, source):
  assert probe["device_count"] == 4
  got = probe[source]
  assert got["shapes_equal"]
  # 2 seeds x 4 envs on a (seeds 2, envs 2) mesh: obs split both ways.
  assert got["obs_devices"] == 4
  assert "seeds" in got["obs_sharding"] and "envs" in got["obs_sharding"]
  assert got["env_steps"] == [96, 96]
  # Same computation partitioned differently: equal up to float reordering.
  assert got["max_param_diff"] < 1e-4
  assert got["eval_return"] == pytest.approx(
    got["eval_return_sharded"], abs=1e-3
  )
  # 2 replay blocks a seed (one per data device): a device holds one block
  # of one seed, a quarter of the replay.
  assert got["replay_shards"] == 2
  assert got["replay_shard_bytes"] == [got["replay_bytes"] // 4] * 4
  if source == "learned":
    assert got["max_reward_param_diff"] < 1e-4
    assert got["after_all_gather"] == 0  # relabelling reads only local rows
    assert got["epoch_all_reduce"] > 0  # reward gradients: a data-axis mean


def test_data_parallel_matches_one_device_with_the_same_blocks(probe):
  """One seed, all 4 devices on the data axis, 4 replay blocks: each device
  holds, fills and samples its own block; gradients are all-reduced."""
  got = probe["data"]
  assert got["shapes_equal"] and got["env_steps"] == [96]
  assert got["obs_devices"] == 4 and "envs" in got["obs_sharding"]
  assert got["max_param_diff"] < 1e-4
  assert got["eval_return"] == pytest.approx(
    got["eval_return_sharded"], abs=1e-3
  )
  assert got["replay_shards"] == 4
  assert got["replay_shard_bytes"] == [got["replay_bytes"] // 4] * 4
  assert got["chunk_all_reduce"] > 0  # the gradients' mean over devices
  assert got["chunk_all_gather"] == 0  # no device reads another's replay
