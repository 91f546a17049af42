"""ScriptedRater and the rater data types (raters/base.py, raters/scripted.py).

Labels are checked against bins worked out by hand; noise against its
defining properties and an empirical rate.
"""
import re

import numpy as np
import pytest

from erljax.raters import Queries, Ratings, ScriptedRater
from erljax.raters.base import CLASS_NAMES


def _rate(rater, returns):
  return rater.rate(Queries(true_return=np.asarray(returns, np.float64)))


# --- equal-width binning -----------------------------------------------------

def test_two_classes_bins_by_hand():
  # [0, 10], n=2: width 5, single threshold at 5 (belongs to the upper bin).
  rater = ScriptedRater(num_classes=2, low=0.0, high=10.0)
  returns = [-3.0, 0.0, 2.5, 4.999, 5.0, 7.0, 10.0, 12.0]
  expected = [0, 0, 0, 0, 1, 1, 1, 1]
  np.testing.assert_array_equal(rater.true_labels(returns), expected)
  got = _rate(rater, returns)
  np.testing.assert_array_equal(got.labels, expected)
  assert got.labels.dtype.kind == "i"


def test_three_classes_bins_by_hand():
  # [0, 30], n=3: width 10, thresholds 10 and 20.
  rater = ScriptedRater(num_classes=3, low=0.0, high=30.0)
  returns = [-1.0, 0.0, 9.99, 10.0, 19.99, 20.0, 29.99, 30.0, 100.0]
  expected = [0, 0, 0, 1, 1, 2, 2, 2, 2]
  np.testing.assert_array_equal(_rate(rater, returns).labels, expected)


def test_three_classes_reference_drawer_open_range():
  # The reference's drawer-open range [30, 252], n=3: width 74, thresholds
  # 104 and 178; values below 30 / above 252 are clipped into the end bins.
  rater = ScriptedRater(num_classes=3, low=30.0, high=252.0)
  returns = [-50.0, 30.0, 103.9, 104.0, 177.9, 178.0, 252.0, 400.0]
  expected = [0, 0, 0, 1, 1, 2, 2, 2]
  np.testing.assert_array_equal(rater.true_labels(returns), expected)


def test_three_classes_rbrl_walker_thresholds():
  # RbRL's DMC walker example: [0, 50], n=3, thresholds 16.67 and 33.33.
  rater = ScriptedRater(num_classes=3, low=0.0, high=50.0)
  np.testing.assert_array_equal(
      rater.true_labels([16.66, 16.67, 33.33, 33.34]), [0, 1, 1, 2])


def test_negative_range_and_extreme_clipping():
  rater = ScriptedRater(num_classes=2, low=-1.0, high=1.0)
  np.testing.assert_array_equal(
      rater.true_labels([-1e9, -1.0, -0.001, 0.0, 0.999, 1.0, 1e9]),
      [0, 0, 0, 1, 1, 1, 1])


def test_noise_zero_gives_exact_labels_on_repeated_calls():
  rater = ScriptedRater(num_classes=5, low=0.0, high=5.0, noise=0.0, seed=3)
  returns = np.random.default_rng(0).uniform(-1.0, 6.0, size=2000)
  expected = np.clip(np.floor(returns), 0, 4).astype(int)
  for _ in range(3):
    got = _rate(rater, returns)
    np.testing.assert_array_equal(got.labels, expected)
    assert got.answered.all() and got.answered.shape == (2000,)
    assert got.num_answered == 2000 and got.num_dropped == 0


# --- noise -------------------------------------------------------------------

def _uniform_returns(n_classes, per_class):
  # per_class samples at the centre of each of the n bins of [0, n].
  return np.repeat(np.arange(n_classes) + 0.5, per_class)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_uniform_noise_one_never_true_label_and_covers_others(n):
  rater = ScriptedRater(num_classes=n, low=0.0, high=float(n), noise=1.0,
                        noise_kind="uniform", seed=1)
  returns = _uniform_returns(n, 3000)
  true = rater.true_labels(returns)
  got = _rate(rater, returns).labels
  assert np.all(got != true)
  assert np.all((got >= 0) & (got < n))
  for c in range(n):
    seen = got[true == c]
    others = sorted(set(range(n)) - {c})
    assert sorted(np.unique(seen).tolist()) == others
    # Uniform over the n-1 other classes: each share near 1/(n-1).
    shares = np.array([np.mean(seen == o) for o in others])
    np.testing.assert_allclose(shares, 1.0 / (n - 1), atol=0.05)


def test_neighbour_noise_moves_by_exactly_one_and_inward_at_edges():
  n = 5
  rater = ScriptedRater(num_classes=n, low=0.0, high=float(n), noise=1.0,
                        noise_kind="neighbour", seed=2)
  returns = _uniform_returns(n, 2000)
  true = rater.true_labels(returns)
  got = _rate(rater, returns).labels
  np.testing.assert_array_equal(np.abs(got - true), np.ones_like(true))
  # Edges can only move inward.
  assert np.all(got[true == 0] == 1)
  assert np.all(got[true == n - 1] == n - 2)
  # Inner classes move both ways, about half the time each.
  for c in range(1, n - 1):
    up = np.mean(got[true == c] == c + 1)
    assert 0.4 < up < 0.6, (c, up)


def test_neighbour_noise_two_classes_swaps():
  rater = ScriptedRater(num_classes=2, low=0.0, high=2.0, noise=1.0,
                        noise_kind="neighbour", seed=0)
  np.testing.assert_array_equal(_rate(rater, [0.5, 1.5, 0.1, 1.9]).labels,
                                [1, 0, 1, 0])


@pytest.mark.parametrize("kind", ["uniform", "neighbour"])
def test_flip_rate_matches_noise(kind):
  n = 3
  rater = ScriptedRater(num_classes=n, low=0.0, high=3.0, noise=0.2,
                        noise_kind=kind, seed=7)
  returns = np.random.default_rng(1).uniform(0.0, 3.0, size=20_000)
  true = rater.true_labels(returns)
  got = _rate(rater, returns).labels
  rate = np.mean(got != true)
  assert abs(rate - 0.2) <= 0.02, rate


def test_same_seed_same_labels_different_seed_differs():
  returns = np.random.default_rng(0).uniform(0.0, 3.0, size=500)
  make = lambda seed: ScriptedRater(num_classes=3, low=0.0, high=3.0,
                                    noise=0.5, seed=seed)
  a, b, c = make(11), make(11), make(12)
  for _ in range(2):  # also the second call of each stream matches
    la, lb, lc = (_rate(r, returns).labels for r in (a, b, c))
    np.testing.assert_array_equal(la, lb)
    assert np.any(la != lc)


# --- bad arguments -------------------------------------------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    (dict(num_classes=1, low=0.0, high=1.0), "num_classes=1"),
    (dict(num_classes=0, low=0.0, high=1.0), "num_classes=0"),
    (dict(num_classes=2, low=2.0, high=2.0), "low=2.0 high=2.0"),
    (dict(num_classes=2, low=3.0, high=1.0), "low=3.0 high=1.0"),
    (dict(num_classes=2, low=0.0, high=1.0, noise=1.5), "noise=1.5"),
    (dict(num_classes=2, low=0.0, high=1.0, noise=-0.1), "noise=-0.1"),
    (dict(num_classes=2, low=0.0, high=1.0, noise_kind="x"),
     "noise_kind='x'"),
])
def test_bad_arguments_raise_naming_the_value(kwargs, fragment):
  with pytest.raises(ValueError, match=re.escape(fragment)):
    ScriptedRater(**kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_return_raises_naming_the_value(bad):
  rater = ScriptedRater(num_classes=2, low=0.0, high=1.0)
  with pytest.raises(ValueError, match=re.escape(str(bad))):
    _rate(rater, [0.2, bad, 0.7])
  with pytest.raises(ValueError, match="not finite"):
    rater.true_labels([bad])


# --- base data types -------------------------------------------------------------

def test_queries_len_and_ratings_counts():
  q = Queries(true_return=np.zeros(7))
  assert len(q) == 7 and q.frames is None
  r = Ratings(labels=np.array([1, -1, 0, -1]),
              answered=np.array([True, False, True, False]))
  assert r.num_answered == 2 and r.num_dropped == 2


def test_class_names_match_method_notes():
  assert CLASS_NAMES[2] == ("Bad", "Good")
  assert CLASS_NAMES[3] == ("Bad", "Average", "Good")
  assert CLASS_NAMES[4] == ("Very Bad", "Bad", "Good", "Very Good")
  assert CLASS_NAMES[5] == ("Very Bad", "Bad", "Average", "Good", "Very Good")
