"""Data-parallel layout: errors in-process, a 4-device run in a subprocess."""

import json
import os
import subprocess
import sys

import jax
import pytest

from erljax import config as config_lib
from erljax import sharding

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
