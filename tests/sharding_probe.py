"""Trains a tiny run on 1 and on N host devices; prints a JSON comparison.

Run by tests/test_sharding.py in a subprocess, because the number of host
devices must be set (XLA_FLAGS) before jax is imported:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python \
      tests/sharding_probe.py 4
"""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import point_env  # pylint: disable=g-import-not-at-top,wrong-import-position

from erljax import config as config_lib  # pylint: disable=g-import-not-at-top
from erljax import runner  # pylint: disable=g-import-not-at-top


def config(num_devices: int, reward_source: str = "env"):
  c = config_lib.default()
  c.task = point_env.register()
  c.num_devices = num_devices
  c.num_seeds = 2
  c.num_envs = 4
  c.episode_length = 10
  c.total_steps = 96
  c.seed_steps = 16
  c.log_every = 16
  c.eval_every = 32
  c.num_eval_envs = 2
  c.batch_size = 8
  c.updates_per_step = 2
  c.replay_capacity = 64
  c.sac.hidden_sizes = (16, 16)
  c.reward.source = reward_source
  c.reward.hidden_sizes = (16,)
  c.reward.batch_size = 8
  c.feedback.first_session = 32
  c.feedback.interval = 32
  c.feedback.queries = 8
  c.feedback.warmup_updates = 4
  return c


def main():
  n = int(sys.argv[1])
  out = {"device_count": jax.device_count()}
  for source in ("env", "learned"):
    runs = {
      d: runner.run(config(d, source), log=lambda s: None) for d in (1, n)
    }
    one, many = runs[1].state, runs[n].state
    diffs = [
      float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
      for a, b in zip(
        jax.tree_util.tree_leaves(one.sac), jax.tree_util.tree_leaves(many.sac)
      )
    ]
    out[source] = {
      "max_param_diff": max(diffs),
      "shapes_equal": all(
        np.shape(a) == np.shape(b)
        for a, b in zip(
          jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(many)
        )
      ),
      "obs_sharding": str(many.env.obs.sharding.spec),
      "obs_devices": len(many.env.obs.sharding.device_set),
      "eval_return": [r["eval_return"] for r in runs[1].history],
      "eval_return_sharded": [r["eval_return"] for r in runs[n].history],
      "env_steps": np.asarray(many.env_steps).tolist(),
    }
  print("PROBE " + json.dumps(out))


if __name__ == "__main__":
  main()
