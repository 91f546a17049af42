"""PEBBLE's k-NN state-entropy reward and its running normaliser
(intrinsic.py), against brute-force numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.agents import intrinsic


def _brute_knn(obs, reference, valid, k):
  """Distance to the k-th nearest valid reference row (0-th = nearest)."""
  ref = reference[valid]
  d = np.linalg.norm(obs[:, None, :] - ref[None, :, :], axis=-1)
  return np.sort(d, axis=1)[:, k]


def _integer_points(rng, shape):
  # Small integers: the squared-distance expansion is exact in float32.
  return rng.integers(-6, 7, size=shape).astype(np.float32)


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_knn_distance_matches_brute_force(k):
  rng = np.random.default_rng(k)
  reference = _integer_points(rng, (40, 3))
  valid = np.ones(40, bool)
  obs = _integer_points(rng, (9, 3))
  got = intrinsic.knn_distance(
    jnp.asarray(obs), jnp.asarray(reference), jnp.asarray(valid), k=k
  )
  assert got.shape == (9,)
  np.testing.assert_allclose(
    got, _brute_knn(obs, reference, valid, k), rtol=1e-6, atol=1e-6
  )


def test_knn_distance_ignores_invalid_reference_rows():
  rng = np.random.default_rng(0)
  obs = _integer_points(rng, (6, 4))
  reference = _integer_points(rng, (30, 4)) * 3.0  # valid rows: far away
  valid = np.zeros(30, bool)
  valid[[0, 2, 3, 5, 8, 9, 13, 17, 21, 22, 28]] = True
  # Invalid rows sit exactly on the queries: counted, they would give 0.
  for i, j in enumerate([1, 4, 6, 7, 10, 11]):
    reference[j] = obs[i]
  k = 3
  got = np.asarray(
    intrinsic.knn_distance(
      jnp.asarray(obs), jnp.asarray(reference), jnp.asarray(valid), k=k
    )
  )
  expect = _brute_knn(obs, reference, valid, k)
  np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)
  # ... and differs from what an all-valid reference would give.
  all_valid = _brute_knn(obs, reference, np.ones(30, bool), k)
  assert np.all(got > all_valid)


def test_knn_distance_stored_point_is_its_own_zeroth_neighbour():
  # Points on a line at 0, 1, 3, 6, 10: the query 3 is itself stored.
  reference = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]], np.float32)
  valid = np.ones(5, bool)
  q = jnp.array([[3.0]])
  dist = lambda k: float(
    intrinsic.knn_distance(q, jnp.asarray(reference), jnp.asarray(valid), k=k)[
      0
    ]
  )
  # Sorted distances from 3: 0 (itself), 2, 3, 3, 7.
  assert dist(0) == 0.0
  assert dist(1) == 2.0
  assert dist(2) == 3.0
  assert dist(4) == 7.0
  # Every stored point has k=0 distance 0; k=1 is the gap to its nearest other.
  all_d0 = intrinsic.knn_distance(
    jnp.asarray(reference), jnp.asarray(reference), jnp.asarray(valid), k=0
  )
  np.testing.assert_array_equal(all_d0, np.zeros(5))
  all_d1 = intrinsic.knn_distance(
    jnp.asarray(reference), jnp.asarray(reference), jnp.asarray(valid), k=1
  )
  np.testing.assert_array_equal(all_d1, [1.0, 1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("tile", [1, 4, 6, 7, 16, 64, 128])
def test_knn_distance_is_exact_for_every_tile(tile):
  # Tiles of every size, one that does not divide the 64 rows, and rows
  # past the last valid one (never read): the k-th distances are exactly
  # numpy's, duplicate points counted as often as they are stored.
  rng = np.random.default_rng(tile)
  reference = _integer_points(rng, (64, 3))
  reference[10:14] = reference[9]
  valid = rng.random(64) < 0.8
  valid[41:] = False
  obs = np.concatenate([reference[5:12], _integer_points(rng, (20, 3))])
  got = intrinsic.knn_distance(
    jnp.asarray(obs),
    jnp.asarray(reference),
    jnp.asarray(valid),
    k=5,
    tile=tile,
  )
  d2 = np.sum((obs[:, None, :] - reference[valid][None]) ** 2, -1)
  np.testing.assert_array_equal(got, np.sqrt(np.sort(d2, 1)[:, 5]))


def test_knn_distance_without_valid_rows_is_zero():
  got = intrinsic.knn_distance(
    jnp.ones((3, 2)), jnp.ones((8, 2)), jnp.zeros(8, bool), k=2, tile=4
  )
  np.testing.assert_array_equal(got, np.zeros(3))


def test_knn_distance_float_inputs_and_jit():
  rng = np.random.default_rng(3)
  reference = rng.normal(size=(64, 5)).astype(np.float32)
  valid = rng.random(64) < 0.7
  obs = np.concatenate(
    [reference[valid][:3], rng.normal(size=(5, 5)).astype(np.float32)]
  )
  fn = jax.jit(intrinsic.knn_distance, static_argnames="k")
  got = fn(jnp.asarray(obs), jnp.asarray(reference), jnp.asarray(valid), k=5)
  # The expansion |x|^2 + |y|^2 - 2xy loses a little precision in float32.
  np.testing.assert_allclose(
    got, _brute_knn(obs, reference, valid, 5), rtol=1e-3, atol=2e-3
  )


def test_running_stats_matches_numpy_over_concatenated_batches():
  rng = np.random.default_rng(0)
  batches = [
    rng.normal(2.0, 3.0, size=7),
    rng.normal(-1.0, 0.5, size=13),
    rng.uniform(0.0, 10.0, size=50),
    np.array([4.0]),
  ]
  stats = intrinsic.RunningStats.create()
  seen = []
  for b in batches:
    stats = stats.update(jnp.asarray(b, jnp.float32))
    seen.append(b)
    x = np.concatenate(seen)
    np.testing.assert_allclose(stats.mean, x.mean(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.var, x.var(), rtol=1e-4, atol=1e-4)
    # The count starts at 1e-4 (avoids dividing by zero), as in the reference.
    np.testing.assert_allclose(stats.count, x.size + 1e-4, rtol=0, atol=2e-5)
  np.testing.assert_allclose(stats.std, np.sqrt(x.var() + 1e-8), rtol=1e-4)


def test_running_stats_2d_batches_and_jit():
  rng = np.random.default_rng(1)
  a = rng.normal(5.0, 2.0, size=(4, 8))
  b = rng.normal(0.0, 1.0, size=(16,))
  update = jax.jit(lambda s, x: s.update(x))
  stats = update(intrinsic.RunningStats.create(), jnp.asarray(a, jnp.float32))
  stats = update(stats, jnp.asarray(b, jnp.float32))
  x = np.concatenate([a.ravel(), b])
  np.testing.assert_allclose(stats.mean, x.mean(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(stats.var, x.var(), rtol=1e-4, atol=1e-4)


def test_running_stats_initial_state():
  s = intrinsic.RunningStats.create()
  np.testing.assert_allclose(s.mean, 0.0)
  np.testing.assert_allclose(s.var, 1.0)
  np.testing.assert_allclose(s.std, np.sqrt(1.0 + 1e-8))
