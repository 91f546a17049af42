"""The start-up memory estimate (erljax.runtime.memory)."""

import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import point_env  # pylint: disable=wrong-import-position

from erljax.config import defaults as config_lib
from erljax.runtime import memory
from erljax.online import trainer as trainer_lib


def _config(**overrides):
  c = config_lib.default()
  c.task = point_env.register()
  c.num_seeds, c.num_envs, c.replay_capacity = 2, 4, 1000
  c.sac.hidden_sizes = (8,)
  for k, v in overrides.items():
    c[k] = v
  return c


def test_replay_estimate_is_the_buffer_by_hand():
  c = _config()
  trainer = trainer_lib.Trainer.create(c)
  keys = jax.vmap(jax.random.PRNGKey)(np.arange(2))
  shapes = jax.eval_shape(jax.vmap(trainer.init), keys)
  est = memory.estimate(c, shapes)
  o, a = trainer.env.observation_size, trainer.env.action_size
  p = shapes.buffer.data.pose.shape[-1]
  # float32 obs, next_obs, action, reward, true_reward, discount, pose per
  # item; two int32 counters per seed.
  assert est.replay == 2 * (1000 * 4 * (2 * o + a + 3 + p) + 2 * 4)
  assert est.state > 0 and est.device == est.replay + est.state
  assert est.frames == 0  # env reward: nothing is rendered


def test_frames_per_session():
  c = _config()
  c.reward.source = "learned"
  c.feedback.queries, c.feedback.segment_length = 10, 2
  c.render.height, c.render.width = 32, 48
  assert memory.frame_bytes(c) == 2 * 10 * 2 * 32 * 48 * 3


class _Device:
  platform = "gpu"

  def __init__(self, stats):
    self.stats = stats

  def memory_stats(self):
    if isinstance(self.stats, Exception):
      raise self.stats
    return self.stats


def test_available_prefers_the_device_then_host_ram():
  assert memory.available(_Device({"bytes_limit": 8 << 30})) == (
    8 << 30,
    "gpu memory",
  )
  ram = memory.host_ram()
  assert ram is None or ram > 0
  assert memory.available(_Device(None)) == (ram, "host RAM")
  assert memory.available(_Device(RuntimeError("no stats"))) == (
    ram,
    "host RAM",
  )


@pytest.mark.parametrize(
  "n, text",
  [(512, "512 B"), (3 << 20, "3 MiB"), (int(1.5 * 2**30), "1.5 GiB")],
)
def test_human(n, text):
  assert memory.human(n) == text


def test_startup_line_and_warning():
  est = memory.Estimate(replay=6 << 30, state=1 << 30, frames=3 << 20)
  line = memory.startup_line(est, 8 << 30, "gpu memory")
  assert line == (
    "memory: replay 6 GiB + state 1 GiB = 87.5% of 8 GiB gpu memory; "
    "frames 3 MiB per feedback session on the host"
  )
  assert "WARNING: will not fit" in memory.startup_line(
    est, 7 << 30, "gpu memory"
  )
  # Split over two devices, half each.
  assert "43.8% of 8 GiB" in memory.startup_line(est, 8 << 30, "gpu", 2)
  assert memory.startup_line(est, None, "host RAM").startswith(
    "memory: replay 6 GiB + state 1 GiB; frames"
  )
