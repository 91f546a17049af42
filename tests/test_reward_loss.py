"""Rating loss pieces against numbers computed by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax import reward


def _softmax(q):
  e = np.exp(q - q.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _expected(x, bounds, k=30.0):
  x = np.asarray(x)[:, None]
  b = np.asarray(bounds)
  return _softmax(-k * (x - b[None, :-1]) * (x - b[None, 1:]))


def test_two_classes_by_hand():
  probs = reward.rating_probabilities(jnp.array([0.0, 1.0, 2.0, 3.0]),
                                      jnp.array([0, 0, 1, 1]), 2)
  s = 3.0 + 1e-6
  x = np.array([0.0, 1.0, 2.0, 3.0]) / s
  # counts (2, 2): b_1 = sorted(x)[2 - 1] = 1/3.
  np.testing.assert_allclose(probs, _expected(x, [0.0, 1 / s, 1.0]), rtol=1e-5)
  # The numbers, written out: Q(0) = 0, Q(1) = -10 at x = 0, etc.
  np.testing.assert_allclose(probs[0, 0], 1 / (1 + np.exp(-10)), rtol=1e-4)
  np.testing.assert_allclose(probs[1], [0.5, 0.5], atol=1e-4)
  np.testing.assert_allclose(probs[2, 1], 1 / (1 + np.exp(-10)), rtol=1e-4)
  np.testing.assert_allclose(probs[3, 1], 1 / (1 + np.exp(-20)), rtol=1e-4)


def test_three_classes_by_hand():
  r = np.arange(6.0)
  probs = reward.rating_probabilities(jnp.asarray(r),
                                      jnp.array([0, 0, 1, 1, 2, 2]), 3)
  s = 5.0 + 1e-6
  x = r / s
  np.testing.assert_allclose(probs, _expected(x, [0.0, 1 / s, 3 / s, 1.0]),
                             rtol=1e-5, atol=1e-7)
  # Interior points are classified as labelled.
  assert np.argmax(probs[2]) == 1 and np.argmax(probs[5]) == 2


def test_boundaries_follow_label_counts_not_values():
  # Same returns, 3 samples of class 0: b_1 = sorted(x)[2].
  r = np.array([0.0, 1.0, 2.0, 3.0])
  probs = reward.rating_probabilities(jnp.asarray(r), jnp.array([0, 0, 0, 1]),
                                      2)
  s = 3.0 + 1e-6
  np.testing.assert_allclose(probs, _expected(r / s, [0.0, 2 / s, 1.0]),
                             rtol=1e-5)


def test_absent_lowest_class_gets_zero_width_at_the_bottom():
  r = np.array([0.0, 1.0, 2.0, 3.0])
  probs = reward.rating_probabilities(jnp.asarray(r), jnp.array([1, 1, 2, 2]),
                                      3)
  s = 3.0 + 1e-6
  # counts (0, 2, 2): C_1 = 0 -> b_1 = 0 (the reference would wrap to 1).
  expect = _expected(r / s, [0.0, 0.0, 1 / s, 1.0])
  np.testing.assert_allclose(probs, expect, rtol=1e-5, atol=1e-7)
  # The absent class never wins away from the bottom edge.
  assert np.all(np.argmax(probs[2:], -1) == 2)
  assert np.all(probs[1:, 0] < 0.02)


def test_absent_middle_class_collapses_between_neighbours():
  r = np.array([0.0, 1.0, 2.0, 3.0])
  probs = reward.rating_probabilities(jnp.asarray(r), jnp.array([0, 0, 2, 2]),
                                      3)
  s = 3.0 + 1e-6
  np.testing.assert_allclose(
      probs, _expected(r / s, [0.0, 1 / s, 1 / s, 1.0]), rtol=1e-5, atol=1e-7)


def test_ties_give_uniform_probabilities_and_finite_gradients():
  labels = jnp.array([0, 0, 1, 1])
  probs = reward.rating_probabilities(jnp.ones(4), labels, 2)
  np.testing.assert_allclose(probs, 0.5, atol=1e-6)

  def loss(r, kind):
    p = reward.rating_probabilities(r, labels, 2)
    return reward.rating_loss(p, labels, None, kind)
  for kind in ("ce", "mae"):
    for r in (jnp.ones(4), jnp.array([0.1, -0.3, 0.2, 0.5])):
      g = jax.grad(loss)(r, kind)
      assert np.all(np.isfinite(g)), (kind, r)


def test_gradient_flows_through_min_and_max():
  labels = jnp.array([0, 1, 1])
  def f(r):
    p = reward.rating_probabilities(r, labels, 2)
    return p[1, 1]
  g = jax.grad(f)(jnp.array([0.0, 0.5, 1.0]))
  assert np.all(np.isfinite(g)) and abs(g[0]) > 0 and abs(g[2]) > 0


def test_mask_excludes_padding():
  r = jnp.array([0.0, 1.0, 2.0, 3.0, 100.0, -50.0])
  labels = jnp.array([0, 0, 1, 1, 0, 1])
  mask = jnp.array([True] * 4 + [False] * 2)
  masked = reward.rating_probabilities(r, labels, 2, mask=mask)
  plain = reward.rating_probabilities(r[:4], labels[:4], 2)
  np.testing.assert_allclose(masked[:4], plain, rtol=1e-6)
  loss_m = reward.rating_loss(masked, labels, None, "mae", mask=mask)
  loss_p = reward.rating_loss(plain, labels[:4], None, "mae")
  np.testing.assert_allclose(loss_m, loss_p, rtol=1e-6)


def test_class_weights_by_hand():
  np.testing.assert_allclose(reward.class_weights(jnp.array([0, 0, 0, 1]), 2),
                             [1.0, 3.0], rtol=1e-6)
  # counts (4, 2, 1), N = 7: (3/7, 5/7, 6/7) / (3/7).
  np.testing.assert_allclose(
      reward.class_weights(jnp.array([0, 0, 0, 0, 1, 1, 2]), 3),
      [1.0, 5 / 3, 2.0], rtol=1e-6)
  # balanced -> ones; an absent class -> ones.
  np.testing.assert_allclose(reward.class_weights(jnp.array([0, 1, 2]), 3), 1.0)
  np.testing.assert_allclose(reward.class_weights(jnp.array([0, 0, 2]), 3), 1.0)


def test_rating_loss_by_hand():
  probs = jnp.array([[0.7, 0.3], [0.4, 0.6]])
  # MAE, uniform: |0.7-1|+|0.3-0| = 0.6 ; |0.4-0|+|0.6-1| = 0.8.
  np.testing.assert_allclose(
      reward.rating_loss(probs, jnp.array([0, 1]), None, "mae"), 0.7,
      rtol=1e-6)
  # Weighted (1, 3): (1 * 0.6 + 3 * 0.8) / 4.
  np.testing.assert_allclose(
      reward.rating_loss(probs, jnp.array([0, 1]), jnp.array([1.0, 3.0]),
                         "mae"), 0.75, rtol=1e-6)
  np.testing.assert_allclose(
      reward.rating_loss(probs, jnp.array([0, 1]), jnp.array([1.0, 3.0]),
                         "ce"), (-np.log(0.7) - 3 * np.log(0.6)) / 4,
      rtol=1e-6)
  # Smoothing m = 0.1 with 2 classes: targets (0.9, 0.1) / (0.1, 0.9).
  np.testing.assert_allclose(
      reward.rating_loss(probs, jnp.array([0, 1]), None, "mae", 0.1),
      ((0.2 + 0.2) + (0.3 + 0.3)) / 2, rtol=1e-6)
  np.testing.assert_allclose(
      reward.rating_loss(probs, jnp.array([0, 1]), None, "ce", 0.1),
      (-(0.9 * np.log(0.7) + 0.1 * np.log(0.3))
       - (0.1 * np.log(0.4) + 0.9 * np.log(0.6))) / 2, rtol=1e-6)


def test_mae_equals_two_times_one_minus_p_true():
  p = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (16, 3)))
  y = jax.random.randint(jax.random.PRNGKey(1), (16,), 0, 3)
  np.testing.assert_allclose(
      reward.rating_loss(p, y, None, "mae"),
      np.mean(2 * (1 - np.asarray(p)[np.arange(16), np.asarray(y)])),
      rtol=1e-5)


def test_rating_loss_rejects_bad_arguments():
  p = jnp.full((2, 2), 0.5)
  with pytest.raises(ValueError, match="kind='mse'"):
    reward.rating_loss(p, jnp.array([0, 1]), None, "mse")
  with pytest.raises(ValueError, match="label_smoothing=0.6"):
    reward.rating_loss(p, jnp.array([0, 1]), None, "mae", 0.6)


def _check_schedule(labels, batch_size, seed=0):
  batches = reward.stratified_batches(labels, batch_size,
                                      np.random.default_rng(seed))
  n = len(labels)
  t = -(-n // batch_size)
  assert len(batches) == t
  allidx = np.concatenate(batches)
  np.testing.assert_array_equal(np.sort(allidx), np.arange(n))
  for b in batches[:-1]:
    assert len(b) == batch_size
  return batches


def test_stratified_batches_cover_every_class():
  rng = np.random.default_rng(0)
  # Imbalanced: 900 / 80 / 20 with batches of 128 -> T = 8.
  labels = np.array([0] * 900 + [1] * 80 + [2] * 20)
  labels = labels[rng.permutation(len(labels))]
  batches = _check_schedule(labels, 128)
  for b in batches[:-1]:
    assert set(labels[b]) == {0, 1, 2}
    # floor(20 / 8) = 2 of the rarest class, plus one leftover on top.
    assert np.sum(labels[b] == 2) >= 2


def test_stratified_batches_small_set_is_one_batch():
  labels = np.array([0, 1, 1, 2])
  batches = _check_schedule(labels, 512)
  assert len(batches) == 1


def test_stratified_batches_rare_class_with_fewer_items_than_batches():
  labels = np.array([0] * 60 + [1] * 3)
  batches = _check_schedule(labels, 10)  # T = 7, 3 items of class 1
  with_rare = sum(1 for b in batches[:-1] if 1 in labels[b])
  assert with_rare == 3  # each rare item tops up a different batch


def test_stratified_batches_differ_by_rng():
  labels = np.array([0] * 50 + [1] * 50)
  a = reward.stratified_batches(labels, 16, np.random.default_rng(0))
  b = reward.stratified_batches(labels, 16, np.random.default_rng(1))
  assert not all(np.array_equal(x, y) for x, y in zip(a, b))


def test_stratified_batches_any_label_mix_is_a_partition():
  rng = np.random.default_rng(5)
  for trial in range(200):
    n = int(rng.integers(1, 300))
    k = int(rng.integers(2, 5))
    probs = rng.dirichlet(np.ones(k) * 0.5)
    labels = rng.choice(k, size=n, p=probs)
    bs = int(rng.integers(2, 64))
    _check_schedule(labels, bs, seed=trial)
