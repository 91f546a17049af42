"""The RL-VLM-F baseline pieces: Bradley-Terry loss and scripted preferences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.rewards import loss as reward
from erljax.raters.api import Queries, ScriptedRater


def _sig(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_bradley_terry_by_hand():
  r0 = jnp.array([0.0, 1.0, 0.5])
  r1 = jnp.array([1.0, 0.0, 0.5])
  prefs = jnp.array([1, 1, 0])
  expect = -(np.log(_sig(1.0)) + np.log(_sig(-1.0)) + np.log(_sig(0.0))) / 3
  np.testing.assert_allclose(
    reward.preference_loss(r0, r1, prefs), expect, rtol=1e-6
  )
  masked = reward.preference_loss(
    r0, r1, prefs, jnp.array([True, False, False])
  )
  np.testing.assert_allclose(masked, -np.log(_sig(1.0)), rtol=1e-6)


def test_bradley_terry_gradient_prefers_the_chosen_segment():
  g0, g1 = jax.grad(reward.preference_loss, argnums=(0, 1))(
    jnp.array([0.0]), jnp.array([0.0]), jnp.array([1])
  )
  assert g1[0] < 0 < g0[0]  # descent raises R1, lowers R0


def test_scripted_preferences_drop_ties_and_flip_with_noise():
  rater = ScriptedRater(3, 0.0, 1.0)
  got = rater.prefer(
    Queries(np.array([0.1, 0.9, 0.5])), Queries(np.array([0.2, 0.3, 0.5]))
  )
  np.testing.assert_array_equal(got.labels, [1, 0, -1])
  np.testing.assert_array_equal(got.answered, [True, True, False])
  assert got.num_dropped == 1
  noisy = ScriptedRater(3, 0.0, 1.0, noise=1.0)
  got = noisy.prefer(
    Queries(np.array([0.1, 0.9])), Queries(np.array([0.2, 0.3]))
  )
  np.testing.assert_array_equal(got.labels, [0, 1])


def test_scripted_preferences_reject_nan():
  with pytest.raises(ValueError, match="nan"):
    ScriptedRater(2, 0.0, 1.0).prefer(
      Queries(np.array([np.nan])), Queries(np.array([0.0]))
    )
