"""ScriptedRater and the rater data types (raters/base.py, raters/scripted.py).

Labels are checked against bins worked out by hand; noise against its
defining properties and an empirical rate.
"""

import math
import re

import numpy as np
import pytest

from erljax.raters.api import Queries, Ratings, ScriptedRater
from erljax.raters import scripted
from erljax.raters.base import CLASS_NAMES


def _rate(rater, returns):
  return rater.rate(Queries(true_return=np.asarray(returns, np.float64)))


def _prefer(rater, r0, r1):
  return rater.prefer(
    Queries(true_return=np.asarray(r0, np.float64)),
    Queries(true_return=np.asarray(r1, np.float64)),
  )


def _spread(low, high, size):
  """size returns spread evenly over [low, high] (bin midpoints)."""
  return low + (high - low) * (np.arange(size) + 0.5) / size


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
    rater.true_labels([16.66, 16.67, 33.33, 33.34]), [0, 1, 1, 2]
  )


def test_negative_range_and_extreme_clipping():
  rater = ScriptedRater(num_classes=2, low=-1.0, high=1.0)
  np.testing.assert_array_equal(
    rater.true_labels([-1e9, -1.0, -0.001, 0.0, 0.999, 1.0, 1e9]),
    [0, 0, 0, 1, 1, 1, 1],
  )


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
  rater = ScriptedRater(
    num_classes=n,
    low=0.0,
    high=float(n),
    noise=1.0,
    noise_kind="uniform",
    seed=1,
  )
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
  rater = ScriptedRater(
    num_classes=n,
    low=0.0,
    high=float(n),
    noise=1.0,
    noise_kind="neighbour",
    seed=2,
  )
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
  rater = ScriptedRater(
    num_classes=2, low=0.0, high=2.0, noise=1.0, noise_kind="neighbour", seed=0
  )
  np.testing.assert_array_equal(
    _rate(rater, [0.5, 1.5, 0.1, 1.9]).labels, [1, 0, 1, 0]
  )


@pytest.mark.parametrize("kind", ["uniform", "neighbour"])
def test_flip_rate_matches_noise(kind):
  n = 3
  rater = ScriptedRater(
    num_classes=n, low=0.0, high=3.0, noise=0.2, noise_kind=kind, seed=7
  )
  returns = np.random.default_rng(1).uniform(0.0, 3.0, size=20_000)
  true = rater.true_labels(returns)
  got = _rate(rater, returns).labels
  rate = np.mean(got != true)
  assert abs(rate - 0.2) <= 0.02, rate


def test_same_seed_same_labels_different_seed_differs():
  returns = np.random.default_rng(0).uniform(0.0, 3.0, size=500)
  make = lambda seed: ScriptedRater(
    num_classes=3, low=0.0, high=3.0, noise=0.5, seed=seed
  )
  a, b, c = make(11), make(11), make(12)
  for _ in range(2):  # also the second call of each stream matches
    la, lb, lc = (_rate(r, returns).labels for r in (a, b, c))
    np.testing.assert_array_equal(la, lb)
    assert np.any(la != lc)


# --- boundary (perception) noise -------------------------------------------


def test_boundary_sigma_hand_check_two_classes():
  # n = 2 over [0, 1]: one boundary at 0.5; a return at distance d from it
  # flips with prob 1 - Phi(d / sigma), so for small sigma the rate over
  # uniform returns is 2 * integral_0^inf (1 - Phi(d / sigma)) dd = sigma *
  # sqrt(2 / pi): p = 0.1 -> sigma = 0.1 * sqrt(2 pi) / 2 = 0.12533.
  rater = ScriptedRater(2, 0.0, 1.0, noise=0.1, noise_kind="boundary")
  assert abs(rater.sigma - 0.1253) < 1e-3
  assert abs(rater.sigma - 0.1 * math.sqrt(2 * math.pi) / 2) < 1e-4
  # sigma scales with the range; the other kinds have none.
  wide = ScriptedRater(2, -5.0, 5.0, noise=0.1, noise_kind="boundary")
  assert wide.sigma == pytest.approx(10 * rater.sigma, rel=1e-9)
  assert ScriptedRater(2, 0.0, 1.0, noise=0.1).sigma is None
  assert ScriptedRater(3, 0.0, 1.0, noise_kind="boundary").sigma == 0.0


@pytest.mark.parametrize("n,s", [(2, 0.25), (3, 0.4), (4, 1.7)])
def test_boundary_flip_rate_formula_matches_a_grid(n, s):
  # Numerically: returns on a fine grid over [0, n] (unit bins), P(perceived
  # bin = true bin) from the normal CDF at the bin edges, end bins unbounded.
  cdf = np.vectorize(lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2))))
  r = _spread(0.0, float(n), 20_000)
  k = np.floor(r)
  upper = np.where(k == n - 1, 1.0, cdf((k + 1 - r) / s))
  lower = np.where(k == 0, 0.0, cdf((k - r) / s))
  grid = 1.0 - np.mean(upper - lower)
  assert scripted.boundary_flip_rate(s, n) == pytest.approx(grid, abs=1e-6)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("noise", [0.1, 0.2])
def test_boundary_empirical_flip_rate_is_noise(n, noise):
  rater = ScriptedRater(
    n, -1.0, 2.0, noise=noise, noise_kind="boundary", seed=n
  )
  returns = _spread(-1.0, 2.0, 200_000)
  got = _rate(rater, returns).labels
  rate = np.mean(got != rater.true_labels(returns))
  assert abs(rate - noise) <= 0.005, rate


def test_boundary_errors_lie_near_boundaries_and_in_neighbours():
  # n = 3 over [0, 3] at noise 0.2: sigma = 0.377 bin widths. Measured: 16%
  # of returns lie over 2 sigma from both boundaries; they flip 1.0% of the
  # time (0.9% of all flips); Bad <-> Good is 0.16% of flips (65 of 40,055).
  rater = ScriptedRater(3, 0.0, 3.0, noise=0.2, noise_kind="boundary", seed=0)
  assert rater.sigma == pytest.approx(0.377, abs=1e-3)
  returns = _spread(0.0, 3.0, 200_000)
  true = rater.true_labels(returns)
  got = _rate(rater, returns).labels
  flips = got != true
  far = np.min(np.abs(returns[:, None] - np.array([1.0, 2.0])), axis=1) > (
    2 * rater.sigma
  )
  assert 0.1 < np.mean(far) < 0.2
  assert np.mean(flips[far]) < 0.03
  assert np.mean(far[flips]) < 0.03
  bad_good = np.abs(got - true) == 2
  assert np.sum(bad_good) / np.sum(flips) < 0.01


@pytest.mark.parametrize("n,noise", [(2, 0.5), (2, 0.7), (3, 0.7), (4, 0.75)])
def test_boundary_noise_beyond_reach_names_the_value(n, noise):
  # As sigma -> infinity the rate tends to 1 - 1/n and is never reached.
  with pytest.raises(ValueError, match=re.escape(f"noise={noise}")):
    ScriptedRater(n, 0.0, 1.0, noise=noise, noise_kind="boundary")


def test_boundary_noise_close_to_the_limit_is_reachable():
  rater = ScriptedRater(3, 0.0, 3.0, noise=0.66, noise_kind="boundary")
  assert rater.sigma > 10.0
  assert scripted.boundary_flip_rate(rater.sigma, 3) == pytest.approx(0.66)


@pytest.mark.parametrize(
  "k,phi_k", [(-1.0, 0.1587), (0.5, 0.6915), (1.0, 0.8413), (2.0, 0.9772)]
)
def test_boundary_preferences_follow_phi_of_the_difference(k, phi_k):
  # P(label = 1) = Phi((r1 - r0) / (sigma sqrt 2)); r1 - r0 = k sigma sqrt 2.
  rater = ScriptedRater(2, 0.0, 1.0, noise=0.2, noise_kind="boundary", seed=5)
  d = k * rater.sigma * math.sqrt(2)
  r0 = np.full(100_000, 0.4)
  got = _prefer(rater, r0, r0 + d)
  assert got.answered.all()
  assert abs(np.mean(got.labels) - phi_k) <= 0.01


@pytest.mark.parametrize("kind", ["uniform", "neighbour"])
def test_other_kinds_flip_preferences_with_probability_noise(kind):
  rater = ScriptedRater(3, 0.0, 3.0, noise=0.2, noise_kind=kind, seed=4)
  r0 = np.zeros(50_000)
  got = _prefer(rater, r0, r0 + 0.01)  # segment 1 is truly better
  assert got.answered.all()
  assert abs(np.mean(got.labels == 0) - 0.2) <= 0.01


# --- preference ties --------------------------------------------------------


def test_tie_tolerance_leaves_close_pairs_unanswered():
  # Range [0, 10], tolerance 0.1: pairs within 1.0 of each other are ties.
  rater = ScriptedRater(2, 0.0, 10.0, tie_tolerance=0.1)
  got = _prefer(
    rater, [0.0, 0.0, 5.0, 5.0, 2.0, 7.0], [1.0, 1.01, 4.5, 3.0, 2.0, 9.5]
  )
  np.testing.assert_array_equal(got.answered, [0, 1, 0, 1, 0, 1])
  np.testing.assert_array_equal(got.labels, [-1, 1, -1, 0, -1, 1])


def test_default_tie_tolerance_drops_exact_ties_only():
  rater = ScriptedRater(2, 0.0, 10.0)
  got = _prefer(rater, [3.0, 3.0, 3.0], [3.0, 3.0 + 1e-9, 2.0])
  np.testing.assert_array_equal(got.labels, [-1, 1, 0])
  np.testing.assert_array_equal(got.answered, [0, 1, 1])


def test_boundary_ties_are_judged_on_true_returns():
  rater = ScriptedRater(
    3, 0.0, 3.0, noise=0.2, noise_kind="boundary", tie_tolerance=0.05, seed=1
  )
  r0 = np.zeros(4000)
  r1 = np.tile([0.15, 0.16], 2000)  # tolerance: 0.05 * 3 = 0.15
  got = _prefer(rater, r0, r1)
  np.testing.assert_array_equal(got.answered, r1 > 0.15)
  assert np.all(got.labels[r1 == 0.15] == -1)
  assert set(np.unique(got.labels[r1 > 0.15])) == {0, 1}


def test_prefer_needs_matching_batches():
  rater = ScriptedRater(2, 0.0, 1.0)
  with pytest.raises(ValueError, match=r"shapes \(2,\) and \(3,\)"):
    _prefer(rater, [0.1, 0.2], [0.1, 0.2, 0.3])


# --- checkpoints -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uniform", "boundary"])
def test_state_dict_round_trips_the_rng(kind):
  rater = ScriptedRater(3, 0.0, 3.0, noise=0.3, noise_kind=kind, seed=9)
  returns = _spread(0.0, 3.0, 300)
  _rate(rater, returns)
  state = rater.state_dict()
  first = (
    _rate(rater, returns).labels,
    _prefer(rater, returns, returns[::-1]).labels,
  )
  other = ScriptedRater(3, 0.0, 3.0, noise=0.3, noise_kind=kind, seed=0)
  other.load_state_dict(state)
  second = (
    _rate(other, returns).labels,
    _prefer(other, returns, returns[::-1]).labels,
  )
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)


# --- bad arguments ------------------------------------------------------------


@pytest.mark.parametrize(
  "kwargs, fragment",
  [
    (dict(num_classes=1, low=0.0, high=1.0), "num_classes=1"),
    (dict(num_classes=0, low=0.0, high=1.0), "num_classes=0"),
    (dict(num_classes=2, low=2.0, high=2.0), "low=2.0 high=2.0"),
    (dict(num_classes=2, low=3.0, high=1.0), "low=3.0 high=1.0"),
    (dict(num_classes=2, low=0.0, high=1.0, noise=1.5), "noise=1.5"),
    (dict(num_classes=2, low=0.0, high=1.0, noise=-0.1), "noise=-0.1"),
    (dict(num_classes=2, low=0.0, high=1.0, noise_kind="x"), "noise_kind='x'"),
    (
      dict(num_classes=2, low=0.0, high=1.0, tie_tolerance=1.0),
      "tie_tolerance=1.0",
    ),
    (
      dict(num_classes=2, low=0.0, high=1.0, tie_tolerance=-0.1),
      "tie_tolerance=-0.1",
    ),
  ],
)
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


# --- base data types ----------------------------------------------------------


def test_queries_len_and_ratings_counts():
  q = Queries(true_return=np.zeros(7))
  assert len(q) == 7 and q.frames is None
  r = Ratings(
    labels=np.array([1, -1, 0, -1]),
    answered=np.array([True, False, True, False]),
  )
  assert r.num_answered == 2 and r.num_dropped == 2


def test_class_names_match_method_notes():
  assert CLASS_NAMES[2] == ("Bad", "Good")
  assert CLASS_NAMES[3] == ("Bad", "Average", "Good")
  assert CLASS_NAMES[4] == ("Very Bad", "Bad", "Good", "Very Good")
  assert CLASS_NAMES[5] == ("Very Bad", "Bad", "Average", "Good", "Very Good")
