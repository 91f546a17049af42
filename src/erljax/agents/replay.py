"""A circular replay buffer held in device memory.

Written here rather than taken from a library (e.g. flashbax): erljax needs
the buffer's arrays directly to relabel every stored transition with a new
learned reward after each feedback session, and the whole buffer is a few
pure functions that vmap over seeds without adaptation. A buffer may be split
into blocks (`shards`) that each take their own envs' items and sample their
own part of a batch, so that devices holding different blocks never read
each other's (erljax.runtime.sharding's data axis).
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
  mocap body positions), what erljax.vision.render draws the post-step frame a
  VLM rates from; None where not recorded. The training loop records it: P
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
  """data leaves are [capacity, ...]; insert_pos and size are int32 scalars.

  With shards = K > 1 the buffer is K blocks of capacity / K rows, block k
  being rows [k capacity / K, (k + 1) capacity / K): a batch of N items
  (N envs) is split into K contiguous groups of N / K, group k written into
  block k, and each block samples batch_size / K items from itself, so a
  block (and the devices holding it) never needs another's rows. size counts
  the filled items of all blocks, insert_pos the items written modulo
  capacity (both K times a block's own count; with K = 1 they are the plain
  ring buffer's).
  """

  data: Any
  insert_pos: jax.Array
  size: jax.Array
  shards: int = struct.field(pytree_node=False, default=1)

  @property
  def capacity(self) -> int:
    return jax.tree_util.tree_leaves(self.data)[0].shape[0]

  @property
  def block_capacity(self) -> int:
    return self.capacity // self.shards

  def blocks(self, tree: Any) -> Any:
    """Leaves [capacity, ...] (e.g. `data`) as [K, capacity / K, ...]."""
    return jax.tree_util.tree_map(
      lambda d: d.reshape((self.shards, self.block_capacity) + d.shape[1:]),
      tree,
    )

  def filled(self) -> jax.Array:
    """bool [capacity]: which rows hold an item."""
    k = self.shards
    return jnp.arange(self.capacity) % self.block_capacity < self.size // k


def init(capacity: int, example: Any, shards: int = 1) -> ReplayBuffer:
  """An empty buffer for items shaped like `example` (a single item), of
  `shards` blocks (see ReplayBuffer)."""
  if capacity < 1:
    raise ValueError(f"replay capacity must be >= 1, got {capacity}")
  if shards < 1 or capacity % shards:
    raise ValueError(
      f"replay shards={shards}: must be >= 1 and divide capacity={capacity}"
    )
  data = jax.tree_util.tree_map(
    lambda x: jnp.zeros((capacity,) + jnp.shape(x), jnp.asarray(x).dtype),
    example,
  )
  return ReplayBuffer(
    data=data,
    insert_pos=jnp.zeros((), jnp.int32),
    size=jnp.zeros((), jnp.int32),
    shards=shards,
  )


def add(buffer: ReplayBuffer, batch: Any) -> ReplayBuffer:
  """Appends a batch (leaves [N, ...]), overwriting the oldest items; with
  K shards item i goes to block i // (N / K)."""
  n = jax.tree_util.tree_leaves(batch)[0].shape[0]
  cap, k = buffer.capacity, buffer.shards
  if n > cap:
    raise ValueError(f"batch of {n} items does not fit a buffer of {cap}")
  if n % k:
    raise ValueError(f"batch of {n} items does not split into {k} shards")
  chex.assert_trees_all_equal_structs(batch, buffer.data)
  block_cap = buffer.block_capacity
  idx = (buffer.insert_pos // k + jnp.arange(n // k)) % block_cap

  def put(d, b):
    blocks = (
      buffer.blocks(d)
      .at[:, idx]
      .set(b.astype(d.dtype).reshape((k, n // k) + b.shape[1:]))
    )
    return blocks.reshape(d.shape)

  return buffer.replace(
    data=jax.tree_util.tree_map(put, buffer.data, batch),
    insert_pos=(buffer.insert_pos + n) % cap,
    size=jnp.minimum(buffer.size + n, cap),
  )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Any:
  """Uniform sample with replacement from the filled part: leaves [B, ...],
  items [j B / K, (j + 1) B / K) drawn from block j (K shards; B a multiple
  of K). One draw of [K, B / K] indices: with K = 1 the same as [B]."""
  k = buffer.shards
  if batch_size % k:
    raise ValueError(f"batch_size={batch_size} does not split into {k} shards")
  high = jnp.maximum(buffer.size // k, 1)
  idx = jax.random.randint(key, (k, batch_size // k), 0, high)
  take = jax.vmap(lambda d, i: d[i])
  return jax.tree_util.tree_map(
    lambda d: take(d, idx).reshape((batch_size,) + d.shape[2:]),
    buffer.blocks(buffer.data),
  )


def oldest(buffer: ReplayBuffer, num: int) -> tuple[Any, jax.Array]:
  """The first m = ceil(num / K) rows of every block (with K = 1 the first
  num rows: the oldest items until the buffer wraps) in the order they were
  written, row 0 of each block, then row 1, ...: leaves [M, ...] with M =
  K m, and bool [M]: which of them are filled."""
  k, block_cap = buffer.shards, buffer.block_capacity
  m = min(-(-num // k), block_cap)
  head = jax.tree_util.tree_map(
    lambda d: d[:, :m].swapaxes(0, 1).reshape((m * k,) + d.shape[2:]),
    buffer.blocks(buffer.data),
  )
  valid = jnp.repeat(jnp.arange(m) < buffer.size // k, k)
  return head, valid


# Items per block per reward call when relabelling (bounds peak memory).
RELABEL_CHUNK = 500


def relabel(
  buffer: ReplayBuffer,
  reward_fn: Callable[[Any], jax.Array],
  chunk_size: int = RELABEL_CHUNK,
) -> ReplayBuffer:
  """Recomputes `reward` of every stored item, `chunk_size` items of each
  block at a time.

  Only the filled part is visited: ceil(size / (K chunk_size)) calls of
  reward_fn, a loop whose trip count is a traced value, so relabelling 20k
  transitions in a 1M buffer costs 20k rewards, not 1M. Each call reads the
  same rows of every block, so no block needs another's rows.

  Args:
    buffer: a buffer of `Transition`s, K shards.
    reward_fn: maps a Transition batch [K C, ...] to rewards [K C].
    chunk_size: items per block per reward_fn call (bounds peak memory).
  Returns:
    The buffer with data.reward replaced for the filled part.
  """
  k, block_cap = buffer.shards, buffer.block_capacity
  chunk = min(chunk_size, block_cap)
  dtype = buffer.data.reward.dtype
  blocks = buffer.blocks(buffer.data)

  def body(i, rewards):
    # The last chunk is moved back to end at the block's end; items it
    # shares with the one before are computed twice, with the same result.
    start = jnp.minimum(i * chunk, block_cap - chunk)
    batch = jax.tree_util.tree_map(
      lambda d: jax.lax.dynamic_slice_in_dim(d, start, chunk, 1).reshape(
        (k * chunk,) + d.shape[2:]
      ),
      blocks,
    )
    new = reward_fn(batch).astype(dtype).reshape(k, chunk)
    return jax.lax.dynamic_update_slice_in_dim(rewards, new, start, 1)

  per_block = buffer.size // k
  num_chunks = (per_block + chunk - 1) // chunk
  rewards = jax.lax.fori_loop(0, num_chunks, body, blocks.reward)
  new_reward = jnp.where(
    buffer.filled(), rewards.reshape(-1), buffer.data.reward
  )
  return buffer.replace(data=buffer.data.replace(reward=new_reward))
