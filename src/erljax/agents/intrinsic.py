"""PEBBLE's unsupervised pre-training reward: k-NN state entropy.

r_int(s) = ||s - s_(k)||_2, the distance from s to its k-th nearest neighbour
among the states in the replay buffer (s itself counts as the 0-th), divided
by a running standard deviation of r_int (the mean is not subtracted).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RunningStats:
  """Running mean / variance over batches (parallel Welford)."""

  count: jax.Array
  mean: jax.Array
  var: jax.Array

  @classmethod
  def create(cls) -> "RunningStats":
    return cls(
      count=jnp.asarray(1e-4, jnp.float32),
      mean=jnp.zeros((), jnp.float32),
      var=jnp.ones((), jnp.float32),
    )

  def update(self, x: jax.Array) -> "RunningStats":
    b_mean, b_var, b_count = jnp.mean(x), jnp.var(x), x.size
    delta = b_mean - self.mean
    total = self.count + b_count
    mean = self.mean + delta * b_count / total
    m2 = (
      self.var * self.count
      + b_var * b_count
      + delta**2 * (self.count * b_count / total)
    )
    return RunningStats(count=total, mean=mean, var=m2 / total)

  @property
  def std(self) -> jax.Array:
    return jnp.sqrt(self.var + 1e-8)


def knn_distance(
  obs: jax.Array,
  reference: jax.Array,
  valid: jax.Array,
  k: int = 5,
  tile: int = 1024,
) -> jax.Array:
  """Distance of each obs [B, O] to its k-th nearest valid reference [M, O].

  valid [M] bool marks filled reference rows. The nearest (0-th) neighbour of
  a state stored in the reference is itself, as in PEBBLE.

  The reference is read `tile` rows at a time, each tile's k + 1 smallest
  squared distances merged into a running k + 1, and only up to the last
  valid row: a loop whose trip count is a traced value, so a reference of
  10,000 rows of which 2,000 are filled costs 2,000 distances per obs. The
  result is the same as one top_k over the whole [B, M] matrix (the k + 1
  smallest of a union are the k + 1 smallest of its parts' k + 1 smallest,
  and every squared distance is the same sum of the same products), and one
  XLA CPU top_k over 10,000 columns costs several times the tiles' 10.
  """
  rows = reference.shape[0]
  kk = min(k + 1, rows)
  tile = max(min(tile, rows), kk)
  sq_ref = jnp.sum(reference**2, -1)
  sq_obs = jnp.sum(obs**2, -1)[:, None]
  index = jnp.arange(rows)
  end = jnp.max(jnp.where(valid, index + 1, 0))  # past the last valid row

  def body(i, smallest):
    # The last tile is moved back to end at row M; rows an earlier tile has
    # already visited are masked out of it.
    start = jnp.minimum(i * tile, rows - tile)
    take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, tile)
    d2 = sq_obs + take(sq_ref)[None, :] - 2.0 * obs @ take(reference).T
    fresh = take(valid) & (take(index) >= i * tile)
    d2 = jnp.where(fresh[None, :], jnp.maximum(d2, 0.0), jnp.inf)
    both = jnp.concatenate([smallest, -jax.lax.top_k(-d2, kk)[0]], 1)
    return -jax.lax.top_k(-both, kk)[0]

  smallest = jax.lax.fori_loop(
    0,
    (end + tile - 1) // tile,
    body,
    jnp.full((obs.shape[0], kk), jnp.inf, obs.dtype),
  )
  dist = jnp.sqrt(smallest[:, -1])
  return jnp.where(jnp.isfinite(dist), dist, 0.0)
