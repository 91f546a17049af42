"""A tiny pure-JAX task for tests that need a whole run in seconds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from erljax.envs import tasks


@struct.dataclass
class PointState:
  pos: jax.Array
  obs: jax.Array
  reward: jax.Array
  done: jax.Array
  metrics: dict


class PointEnv:
  """A 2-D point pushed towards the origin: compiles in a blink."""

  observation_size = 2
  action_size = 2

  def reset(self, key):
    pos = jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0)
    return PointState(
      pos=pos,
      obs=pos,
      reward=jnp.zeros(()),
      done=jnp.zeros(()),
      metrics={"dist": jnp.zeros(())},
    )

  def step(self, state, action):
    pos = jnp.clip(state.pos + 0.1 * action, -1.0, 1.0)
    dist = jnp.linalg.norm(pos)
    return state.replace(
      pos=pos, obs=pos, reward=-dist, metrics={"dist": -dist}
    )


NAME = "test_point"


def register() -> str:
  """Registers the task once per process; returns its name."""
  if NAME not in tasks.task_names():
    tasks.register(
      tasks.TaskSpec(
        name=NAME,
        make_env=PointEnv,
        instruction="move the point to the origin",
        subject="a point mass",
        num_classes=2,
        episode_length=10,
        reward_range=(-1.5, 0.0),
        success_fn=lambda s: -s.metrics["dist"] < 0.1,
      )
    )
  return NAME
