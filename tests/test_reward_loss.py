"""Rating loss pieces against numbers computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.rewards import loss as reward


def _softmax(q):
  e = np.exp(q - q.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _expected(x, bounds, k=30.0):
  x = np.asarray(x)[:, None]
  b = np.asarray(bounds)
  return _softmax(-k * (x - b[None, :-1]) * (x - b[None, 1:]))


def test_two_classes_by_hand():
  probs = reward.rating_probabilities(
    jnp.array([0.0, 1.0, 2.0, 3.0]), jnp.array([0, 0, 1, 1]), 2
  )
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
  probs = reward.rating_probabilities(
    jnp.asarray(r), jnp.array([0, 0, 1, 1, 2, 2]), 3
  )
  s = 5.0 + 1e-6
  x = r / s
  np.testing.assert_allclose(
    probs, _expected(x, [0.0, 1 / s, 3 / s, 1.0]), rtol=1e-5, atol=1e-7
  )
  # Interior points are classified as labelled.
  assert np.argmax(probs[2]) == 1 and np.argmax(probs[5]) == 2


def test_boundaries_follow_label_counts_not_values():
  # Same returns, 3 samples of class 0: b_1 = sorted(x)[2].
  r = np.array([0.0, 1.0, 2.0, 3.0])
  probs = reward.rating_probabilities(
    jnp.asarray(r), jnp.array([0, 0, 0, 1]), 2
  )
  s = 3.0 + 1e-6
  np.testing.assert_allclose(
    probs, _expected(r / s, [0.0, 2 / s, 1.0]), rtol=1e-5
  )


def test_absent_lowest_class_gets_zero_width_at_the_bottom():
  r = np.array([0.0, 1.0, 2.0, 3.0])
  probs = reward.rating_probabilities(
    jnp.asarray(r), jnp.array([1, 1, 2, 2]), 3
  )
  s = 3.0 + 1e-6
  # counts (0, 2, 2): C_1 = 0 -> b_1 = 0 (the reference would wrap to 1).
  expect = _expected(r / s, [0.0, 0.0, 1 / s, 1.0])
  np.testing.assert_allclose(probs, expect, rtol=1e-5, atol=1e-7)
  # The absent class never wins away from the bottom edge.
  assert np.all(np.argmax(probs[2:], -1) == 2)
  assert np.all(probs[1:, 0] < 0.02)


def test_absent_middle_class_collapses_between_neighbours():
  r = np.array([0.0, 1.0, 2.0, 3.0])
  probs = reward.rating_probabilities(
    jnp.asarray(r), jnp.array([0, 0, 2, 2]), 3
  )
  s = 3.0 + 1e-6
  np.testing.assert_allclose(
    probs, _expected(r / s, [0.0, 1 / s, 1 / s, 1.0]), rtol=1e-5, atol=1e-7
  )


def test_ties_give_uniform_probabilities_and_finite_gradients():
  labels = jnp.array([0, 0, 1, 1])
  probs = reward.rating_probabilities(jnp.ones(4), labels, 2)
  np.testing.assert_allclose(probs, 0.5, atol=1e-6)

  def loss(r, kind):
    logits = reward.rating_logits(r, labels, 2)
    return reward.rating_loss(logits, labels, None, kind)

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
  masked = reward.rating_logits(r, labels, 2, mask=mask)
  plain = reward.rating_logits(r[:4], labels[:4], 2)
  np.testing.assert_allclose(masked[:4], plain, rtol=1e-6)
  loss_m = reward.rating_loss(masked, labels, None, "mae", mask=mask)
  loss_p = reward.rating_loss(plain, labels[:4], None, "mae")
  np.testing.assert_allclose(loss_m, loss_p, rtol=1e-6)


def test_class_weights_by_hand():
  np.testing.assert_allclose(
    reward.class_weights(jnp.array([0, 0, 0, 1]), 2), [1.0, 3.0], rtol=1e-6
  )
  # counts (4, 2, 1), N = 7: (3/7, 5/7, 6/7) / (3/7).
  np.testing.assert_allclose(
    reward.class_weights(jnp.array([0, 0, 0, 0, 1, 1, 2]), 3),
    [1.0, 5 / 3, 2.0],
    rtol=1e-6,
  )
  # balanced -> ones; an absent class -> ones.
  np.testing.assert_allclose(reward.class_weights(jnp.array([0, 1, 2]), 3), 1.0)
  np.testing.assert_allclose(reward.class_weights(jnp.array([0, 0, 2]), 3), 1.0)


def test_rating_loss_by_hand():
  # Logits whose softmax is the table [[0.7, 0.3], [0.4, 0.6]].
  logits = jnp.log(jnp.array([[0.7, 0.3], [0.4, 0.6]]))
  # MAE, uniform: |0.7-1|+|0.3-0| = 0.6 ; |0.4-0|+|0.6-1| = 0.8.
  np.testing.assert_allclose(
    reward.rating_loss(logits, jnp.array([0, 1]), None, "mae"), 0.7, rtol=1e-6
  )
  # Weighted (1, 3): (1 * 0.6 + 3 * 0.8) / 4.
  np.testing.assert_allclose(
    reward.rating_loss(logits, jnp.array([0, 1]), jnp.array([1.0, 3.0]), "mae"),
    0.75,
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    reward.rating_loss(logits, jnp.array([0, 1]), jnp.array([1.0, 3.0]), "ce"),
    (-np.log(0.7) - 3 * np.log(0.6)) / 4,
    rtol=1e-6,
  )
  # Smoothing m = 0.1 with 2 classes: targets (0.9, 0.1) / (0.1, 0.9).
  np.testing.assert_allclose(
    reward.rating_loss(logits, jnp.array([0, 1]), None, "mae", 0.1),
    ((0.2 + 0.2) + (0.3 + 0.3)) / 2,
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    reward.rating_loss(logits, jnp.array([0, 1]), None, "ce", 0.1),
    (
      -(0.9 * np.log(0.7) + 0.1 * np.log(0.3))
      - (0.1 * np.log(0.4) + 0.9 * np.log(0.6))
    )
    / 2,
    rtol=1e-6,
  )


def test_cross_entropy_keeps_the_gradient_of_confidently_wrong_labels():
  # P(label) = sigmoid(-80) ~ 1.8e-35: log(clip(p, 1e-12)) would give a flat
  # 27.6 and no gradient; log_softmax gives 80 and d/dlogits = p - onehot.
  logits = jnp.array([[40.0, -40.0]])
  labels = jnp.array([1])
  loss = lambda q: reward.rating_loss(q, labels, None, "ce")
  np.testing.assert_allclose(loss(logits), 80.0, rtol=1e-6)
  np.testing.assert_allclose(jax.grad(loss)(logits), [[1.0, -1.0]], atol=1e-6)


def test_rating_probabilities_are_the_softmax_of_rating_logits():
  r = jnp.array([0.3, -1.0, 2.0, 0.5, 0.1])
  y = jnp.array([1, 0, 2, 1, 0])
  np.testing.assert_allclose(
    reward.rating_probabilities(r, y, 3),
    jax.nn.softmax(reward.rating_logits(r, y, 3), -1),
    rtol=1e-6,
  )


def test_mae_equals_two_times_one_minus_p_true():
  logits = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
  p = jax.nn.softmax(logits)
  y = jax.random.randint(jax.random.PRNGKey(1), (16,), 0, 3)
  np.testing.assert_allclose(
    reward.rating_loss(logits, y, None, "mae"),
    np.mean(2 * (1 - np.asarray(p)[np.arange(16), np.asarray(y)])),
    rtol=1e-5,
  )


def test_rating_loss_rejects_bad_arguments():
  p = jnp.full((2, 2), 0.5)
  with pytest.raises(ValueError, match="kind='mse'"):
    reward.rating_loss(p, jnp.array([0, 1]), None, "mse")
  with pytest.raises(ValueError, match="label_smoothing=0.6"):
    reward.rating_loss(p, jnp.array([0, 1]), None, "mae", 0.6)


def _check_schedule(labels, batch_size, seed=0):
  """A partition of the items into at most T = ceil(N / B) batches of at
  most B; every class but the majority gives each batch but the last
  floor(n_c / T) or floor(n_c / T) + 1 items."""
  batches = reward.stratified_batches(
    labels, batch_size, np.random.default_rng(seed)
  )
  n = len(labels)
  t = -(-n // batch_size)
  assert 1 <= len(batches) <= t
  allidx = np.concatenate(batches)
  np.testing.assert_array_equal(np.sort(allidx), np.arange(n))
  assert all(0 < len(b) <= batch_size for b in batches)
  classes, counts = np.unique(labels, return_counts=True)
  if len(batches) == t and t > 1:
    for c, n_c in zip(classes, counts):
      if n_c == counts.max():
        continue
      for b in batches[:-1]:
        assert n_c // t <= np.sum(labels[b] == c) <= n_c // t + 1
  return batches


def _class_counts(counts, batch_size, seed=0):
  labels = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
  labels = labels[np.random.default_rng(seed).permutation(len(labels))]
  batches = _check_schedule(labels, batch_size, seed)
  return [
    tuple(np.bincount(labels[b], minlength=len(counts)).tolist())
    for b in batches
  ]


def test_stratified_batches_follow_the_rule_by_hand():
  # The example in docs/method.md#stratified-minibatches: T = 9; floors
  # (117, 3, 1), epoch budgets (3, 6, 2) of extras taken rarest class first,
  # then filled from class 0.
  assert _class_counts((1056, 33, 11), 128) == (
    [(122, 4, 2)] * 2 + [(123, 4, 1)] * 4 + [(124, 3, 1)] * 2 + [(72, 3, 1)]
  )
  # T = 3; floors (100, 16, 2), budgets (0, 2, 1): (100+0, 16+1, 2+1) = 120
  # filled to 128, then (100, 17, 2) filled, the rest last.
  assert _class_counts((300, 50, 7), 128) == [
    (108, 17, 3),
    (109, 17, 2),
    (83, 16, 2),
  ]
  # Majority listed second: T = 4; floors (11, 50), budgets (1, 0).
  assert _class_counts((45, 200), 64) == [
    (12, 52),
    (11, 53),
    (11, 53),
    (11, 42),
  ]
  # The majority class runs dry: T = 2, floors (32, 32), budgets (1, 0);
  # the first batch takes all 33 + 32 class-0 items it can, 97 < 128.
  assert _class_counts((65, 64), 128) == [(65, 32), (0, 32)]


def test_stratified_rare_classes_last_to_the_end_of_the_epoch():
  # The old per-batch top-up emptied "Good" (11 items) before the end.
  counts = _class_counts((1056, 33, 11), 128, seed=3)
  assert all(c[2] >= 1 for c in counts)


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


def test_preference_mae_by_hand():
  """ERL-VLM's MAE on Bradley-Terry probabilities (RL-VLM-F + MAE)."""
  r0, r1 = jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0])
  prefs = jnp.array([1, 1])
  # 2 (1 - sigmoid(1)) and 2 (1 - sigmoid(-1)): their mean is exactly 1.
  np.testing.assert_allclose(
    reward.preference_loss(r0, r1, prefs, None, "mae"), 1.0, rtol=1e-6
  )
  # The same as the rating MAE of the two-way logits (0, R1 - R0).
  r0 = jnp.array([0.3, -1.2, 2.0])
  r1 = jnp.array([0.1, 0.4, 2.5])
  prefs = jnp.array([0, 1, 1])
  logits = jnp.stack([jnp.zeros(3), r1 - r0], -1)
  np.testing.assert_allclose(
    reward.preference_loss(r0, r1, prefs, None, "mae"),
    reward.rating_loss(logits, prefs, None, "mae"),
    rtol=1e-6,
  )
  with pytest.raises(ValueError, match="kind='l2'"):
    reward.preference_loss(r0, r1, prefs, None, "l2")
