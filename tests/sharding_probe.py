"""Trains a tiny run on 1 and on N host devices; prints a JSON comparison.

Run by tests/test_sharding.py in a subprocess, because the number of host
devices must be set (XLA_FLAGS) before jax is imported:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python \
      tests/sharding_probe.py 4
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Any, Dict

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import point_env  # pylint: disable=g-import-not-at-top,wrong-import-position

from erljax.config import defaults as config_lib  # pylint: disable=g-import-not-at-top
from erljax.online import runner  # pylint: disable=g-import-not-at-top
from erljax.online import session_programs  # pylint: disable=g-import-not-at-top
from erljax.runtime import sharding  # pylint: disable=g-import-not-at-top
from erljax.online import trainer as trainer_lib  # pylint: disable=g-import-not-at-top


def config(
  num_devices: int,
  reward_source: str = "env",
  num_seeds: int = 2,
  replay_shards: int = 0,
):
  c = config_lib.default()
  c.task = point_env.register()
  c.num_devices = num_devices
  c.num_seeds = num_seeds
  c.replay_shards = replay_shards
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


# Collectives in compiled HLO text: "%x = f32[..] all-reduce(...)" and the
# async "-start" forms.
_COLLECTIVE = r"= [^=]*\b{}(-start)?\("


def collectives(compiled: Any, op: str) -> int:
  """How many `op` (e.g. "all-gather") a compiled program runs."""
  return len(re.findall(_COLLECTIVE.format(op), compiled.as_text()))


def compare(n: int, source: str, num_seeds: int, shards: int):
  """A 1-device and an n-device run of one config (the 1-device run with
  `shards` blocks, the n-device one with `shards` or, 0, the default)."""
  runs, trainers = {}, {}
  for d, k in ((1, shards or n // math.gcd(num_seeds, n)), (n, shards)):
    c = config(d, source, num_seeds, k)
    trainers[d] = trainer_lib.Trainer.create(c)
    runs[d] = runner.run(c, log=lambda s: None, trainer=trainers[d])
  one, many = runs[1].state, runs[n].state
  replay_leaf = many.buffer.data.obs
  chunk = trainers[n].compiled_cache["programs"].chunk
  out = {
    "max_param_diff": _max_diff(one.sac, many.sac),
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
    "replay_shards": many.buffer.shards,
    "replay_bytes": int(replay_leaf.nbytes),
    "replay_shard_bytes": [
      int(s.data.nbytes) for s in replay_leaf.addressable_shards
    ],
    "chunk_all_reduce": collectives(chunk, "all-reduce"),
    "chunk_all_gather": collectives(chunk, "all-gather"),
  }
  if source == "learned":
    out.update(session_collectives(trainers[n], many))
    out["max_reward_param_diff"] = _max_diff(
      one.reward_params, many.reward_params
    )
  return out


def _max_diff(a: Any, b: Any) -> float:
  """The largest absolute difference between two trees' leaves."""
  return max(
    float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def session_collectives(trainer, state) -> Dict[str, int]:
  """Collectives of the feedback session's programs on `state`'s layout."""
  c = trainer.config
  programs = session_programs.session_programs(trainer)
  # Installing a new reward relabels each block where it lies.
  after = programs.install_first_reward.lower(
    state, state.reward_params, state.key
  )
  # A reward epoch on minibatches split over the data axis.
  layout = sharding.Layout.create(c.num_devices, c.num_seeds, c.num_envs)
  s, e = c.num_seeds, c.reward.ensemble_size
  schedule = np.zeros((s, 8, e, c.reward.batch_size), np.int32)
  epoch = programs.epoch.lower(
    state.reward_params,
    programs.opt_init(state.reward_params),
    programs.empty_sets(np.arange(s)),
    layout.put_minibatches(schedule),
    layout.put_minibatches(schedule.astype(bool)),
    np.ones((s, programs.learner.num_classes), np.float32),
    np.ones((s,), bool),
  )
  return {
    "after_all_gather": collectives(after.compile(), "all-gather"),
    "epoch_all_reduce": collectives(epoch.compile(), "all-reduce"),
  }


def main():
  n = int(sys.argv[1])
  out = {"device_count": jax.device_count()}
  # Seeds and envs both split (2 x 2 mesh), 2 replay blocks a seed.
  for source in ("env", "learned"):
    out[source] = compare(n, source, num_seeds=2, shards=0)
  # All n devices on the data axis: one seed, n replay blocks.
  out["data"] = compare(n, "env", num_seeds=1, shards=n)
  print("PROBE " + json.dumps(out))


if __name__ == "__main__":
  main()
