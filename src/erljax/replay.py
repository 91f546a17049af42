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

  @classmethod
  def zeros(
    cls, obs_size: int, action_size: int, pose_size: Optional[int] = None
  ) -> "Transition":
    """One all-zero float32 item: obs / next_obs [O], action [A], scalars,
    pose [P] (None without a pose size): `init`'s example."""
    return cls(
      obs=jnp.zeros((obs_size,)),
      action=jnp.zeros((action_size,)),
      reward=jnp.zeros(()),
      true_reward=jnp.zeros(()),
      discount=jnp.zeros(()),
      next_obs=jnp.zeros((obs_size,)),
      pose=None if pose_size is None else jnp.zeros((pose_size,)),
    )


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
    example,
  )
  return ReplayBuffer(
    data=data,
    insert_pos=jnp.zeros((), jnp.int32),
    size=jnp.zeros((), jnp.int32),
  )


def add(buffer: ReplayBuffer, batch: Any) -> ReplayBuffer:
  """Appends a batch (leaves [N, ...]), overwriting the oldest items."""
  n = jax.tree_util.tree_leaves(batch)[0].shape[0]
  cap = buffer.capacity
  if n > cap:
    raise ValueError(f"batch of {n} items does not fit a buffer of {cap}")
  chex.assert_trees_all_equal_structs(batch, buffer.data)
  idx = (buffer.insert_pos + jnp.arange(n)) % cap
  data = jax.tree_util.tree_map(
    lambda d, b: d.at[idx].set(b.astype(d.dtype)), buffer.data, batch
  )
  return ReplayBuffer(
    data=data,
    insert_pos=(buffer.insert_pos + n) % cap,
    size=jnp.minimum(buffer.size + n, cap),
  )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Any:
  """Uniform sample with replacement from the filled part: leaves [B, ...]."""
  idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
  return jax.tree_util.tree_map(lambda d: d[idx], buffer.data)


def relabel(
  buffer: ReplayBuffer,
  reward_fn: Callable[[Any], jax.Array],
  chunk_size: int = 500,
) -> ReplayBuffer:
  """Recomputes `reward` of every stored item, `chunk_size` items at a time.

  Only the filled part is visited: ceil(size / chunk_size) calls of
  reward_fn, a loop whose trip count is a traced value, so relabelling 20k
  transitions in a 1M buffer costs 20k rewards, not 1M.

  Args:
    buffer: a buffer of `Transition`s.
    reward_fn: maps a Transition batch [C, ...] to rewards [C].
    chunk_size: items per reward_fn call (bounds peak memory).
  Returns:
    The buffer with data.reward replaced for the filled part.
  """
  cap = buffer.capacity
  chunk = min(chunk_size, cap)
  dtype = buffer.data.reward.dtype

  def body(i, rewards):
    # The last chunk is moved back to end at `cap`; items it shares with the
    # one before are computed twice, with the same result.
    start = jnp.minimum(i * chunk, cap - chunk)
    batch = jax.tree_util.tree_map(
      lambda d: jax.lax.dynamic_slice_in_dim(d, start, chunk), buffer.data
    )
    return jax.lax.dynamic_update_slice_in_dim(
      rewards, reward_fn(batch).astype(dtype), start, 0
    )

  num_chunks = (buffer.size + chunk - 1) // chunk
  rewards = jax.lax.fori_loop(0, num_chunks, body, buffer.data.reward)
  filled = jnp.arange(cap) < buffer.size
  new_reward = jnp.where(filled, rewards, buffer.data.reward)
  return buffer.replace(data=buffer.data.replace(reward=new_reward))
