"""A circular replay buffer held in device memory.

Written here rather than taken from a library (e.g. flashbax): erljax needs
the buffer's arrays directly to relabel every stored transition with a new
learned reward after each feedback session, and the whole buffer is ~60 lines
of pure functions that vmap over seeds without adaptation.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import chex
import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Transition:
  """One transition; in a batch every leaf has a leading dim.

  reward is the reward SAC learns from (env or learned); true_reward is the
  environment's ground truth, kept for relabelling studies and diagnostics.
  discount is 0 at true terminations, 1 otherwise (time limits bootstrap).
  pose [P] is the physical pose reached by the step (VecEnv.pose: qpos, then
  mocap body positions), what erljax.render draws the post-step frame a VLM
  rates from; None where not recorded. The training loop records it: P
  floats per item, e.g. 16 MB for 1M reacher transitions (P = 4).
  """

  obs: jax.Array
  action: jax.Array
  reward: jax.Array
  true_reward: jax.Array
  discount: jax.Array
  next_obs: jax.Array
  pose: Optional[jax.Array] = None


@struct.dataclass
class ReplayBuffer:
  """data leaves are [capacity, ...]; insert_pos and size are int32 scalars."""

  data: Any
  insert_pos: jax.Array
  size: jax.Array

  @property
  def capacity(self) -> int:
    return jax.tree_util.tree_leaves(self.data)[0].shape[0]


def init(capacity: int, example: Any) -> ReplayBuffer:
  """An empty buffer for items shaped like `example` (a single item)."""
  if capacity < 1:
    raise ValueError(f"replay capacity must be >= 1, got {capacity}")
  data = jax.tree_util.tree_map(
      lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype),
      example)
  return ReplayBuffer(data=data, insert_pos=jnp.zeros((), jnp.int32),
                      size=jnp.zeros((), jnp.int32))


def add(buffer: ReplayBuffer, batch: Any) -> ReplayBuffer:
  """Appends a batch (leaves [N, ...]), overwriting the oldest items."""
  n = jax.tree_util.tree_leaves(batch)[0].shape[0]
  cap = buffer.capacity
  if n > cap:
    raise ValueError(f"batch of {n} items does not fit a buffer of {cap}")
  chex.assert_trees_all_equal_structs(batch, buffer.data)
  idx = (buffer.insert_pos + jnp.arange(n)) % cap
  data = jax.tree_util.tree_map(lambda d, b: d.at[idx].set(b.astype(d.dtype)),
                                buffer.data, batch)
  return ReplayBuffer(data=data, insert_pos=(buffer.insert_pos + n) % cap,
                      size=jnp.minimum(buffer.size + n, cap))


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Any:
  """Uniform sample with replacement from the filled part: leaves [B, ...]."""
  idx = jax.random.randint(key, (batch_size,), 0,
                           jnp.maximum(buffer.size, 1))
  return jax.tree_util.tree_map(lambda d: d[idx], buffer.data)


def relabel(buffer: ReplayBuffer, reward_fn: Callable[[Any], jax.Array],
            chunk_size: int = 500) -> ReplayBuffer:
  """Recomputes `reward` of every stored item, `chunk_size` items at a time.

  Args:
    buffer: a buffer of `Transition`s.
    reward_fn: maps a Transition batch [C, ...] to rewards [C].
    chunk_size: items per reward_fn call (bounds peak memory).
  Returns:
    The buffer with data.reward replaced for the filled part.
  """
  cap = buffer.capacity
  num_chunks = -(-cap // chunk_size)
  pad = num_chunks * chunk_size - cap
  padded = jax.tree_util.tree_map(
      lambda d: jnp.pad(d, [(0, pad)] + [(0, 0)] * (d.ndim - 1)), buffer.data)
  chunks = jax.tree_util.tree_map(
      lambda d: d.reshape((num_chunks, chunk_size) + d.shape[1:]), padded)
  rewards = jax.lax.map(reward_fn, chunks).reshape(-1)[:cap]
  filled = jnp.arange(cap) < buffer.size
  new_reward = jnp.where(filled, rewards.astype(buffer.data.reward.dtype),
                         buffer.data.reward)
  return buffer.replace(data=buffer.data.replace(reward=new_reward))
