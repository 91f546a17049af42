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
  obs: jax.Array, reference: jax.Array, valid: jax.Array, k: int = 5
) -> jax.Array:
  """Distance of each obs [B, O] to its k-th nearest valid reference [M, O].

  valid [M] bool marks filled reference rows. The nearest (0-th) neighbour of
  a state stored in the reference is itself, as in PEBBLE.
  """
  d2 = (
    jnp.sum(obs**2, -1)[:, None]
    + jnp.sum(reference**2, -1)[None, :]
    - 2.0 * obs @ reference.T
  )
  d2 = jnp.where(valid[None, :], jnp.maximum(d2, 0.0), jnp.inf)
  kk = min(k + 1, reference.shape[0])
  neg_smallest, _ = jax.lax.top_k(-d2, kk)
  # Without the barrier XLA fuses "top_k then take the last column" into a
  # full sort: 530 ms instead of 9 ms for 256 x 10,000 on 2 CPU cores.
  neg_smallest = jax.lax.optimization_barrier(neg_smallest)
  dist = jnp.sqrt(-neg_smallest[:, -1])
  return jnp.where(jnp.isfinite(dist), dist, 0.0)
