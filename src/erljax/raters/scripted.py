"""The scripted rater: ratings from the ground truth, with optional noise.

A segment's true return is binned into `num_classes` equal-width bins over
[low, high] (RbRL's synthetic ratings; values outside are clipped into the
end bins). Three noise models, all set by one number, `noise`, the rate of
wrong ratings:

- "uniform": with probability `noise` a label is replaced by one of the
  other classes at random, wherever the return lies;
- "neighbour": with probability `noise` a label moves one class up or down;
- "boundary" (VLM-like, a Thurstonian perception-noise model): the rater
  perceives a return r as r + eps, eps ~ N(0, sigma^2), and bins the
  perceived value. Mistakes concentrate near the class boundaries and
  mostly go to the neighbouring class; "Bad" <-> "Good" (3 classes) is rare.
  sigma is fixed by `noise` independently of the data: it is the sigma at
  which returns spread uniformly over [low, high] get a wrong rating with
  probability `noise`. With w = (high - low) / n the bin width, s = sigma /
  w, Phi and phi the standard normal CDF and density, that rate is

      flip(s) = 2 (n - 1) / n * (1 - Phi(1 / s) + s (phi(0) - phi(1 / s)))

  (a return at distance d from one of the n - 1 inner boundaries crosses it
  with probability 1 - Phi(d / sigma), and each boundary has a bin of
  returns on either side: flip is 2 (n - 1) / n times the mean of
  1 - Phi(d / sigma) over d in [0, w], integrated in closed form). It
  rises from 0 to 1 - 1/n as sigma grows (for small noise, sigma ~=
  noise * sqrt(2 pi) * w * n / (2 (n - 1))), so `noise` must lie below
  1 - 1/n.

Preferences (`prefer`): label 1 if segment 1 has the higher true return.
Under "uniform" and "neighbour" an answered preference is flipped with
probability `noise`; under "boundary" each segment's return is perceived
with the same noise, so label 1 iff r1 + eps1 > r0 + eps0, i.e.
P(label = 1) = Phi((r1 - r0) / (sigma sqrt(2))). Pairs whose true returns
differ by at most `tie_tolerance` * (high - low) are ties: not answered
(label -1, like RL-VLM-F's "-1" for frames that look the same); with the
default 0 only equal returns are.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple

import numpy as np

from erljax.raters.base import Queries, Ratings

NOISE_KINDS = ("uniform", "neighbour", "boundary")


def _phi(x: float) -> float:
  """Standard normal density."""
  return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def boundary_flip_rate(sigma_over_width: float, num_classes: int) -> float:
  """Wrong-rating rate of the "boundary" model for returns spread uniformly
  over the bins, at noise sigma = sigma_over_width bin widths (module
  docstring)."""
  s, n = sigma_over_width, num_classes
  if s <= 0.0:
    return 0.0
  tail = 0.5 * math.erfc(1.0 / (s * math.sqrt(2.0)))  # 1 - Phi(1/s)
  return 2.0 * (n - 1) / n * (tail + s * (_phi(0.0) - _phi(1.0 / s)))


def boundary_sigma_over_width(noise: float, num_classes: int) -> float:
  """The sigma (in bin widths) at which boundary_flip_rate equals `noise`,
  by bisection; raises ValueError naming `noise` if it is out of reach."""
  limit = 1.0 - 1.0 / num_classes
  if not 0.0 <= noise < limit:
    raise ValueError(
      f"noise={noise}: the 'boundary' model's wrong-rating "
      f"rate with {num_classes} classes lies in [0, "
      f"{limit:.4g}) (1 - 1/num_classes, reached only as "
      "sigma -> infinity)"
    )
  if noise == 0.0:
    return 0.0
  lo, hi = 0.0, 1.0
  # Doubling stops within 2^200 bin widths: a noise within rounding of the
  # limit would otherwise never be reached.
  for _ in range(200):
    if boundary_flip_rate(hi, num_classes) >= noise:
      break
    lo, hi = hi, 2.0 * hi
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if mid in (lo, hi):
      break
    if boundary_flip_rate(mid, num_classes) < noise:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)


@dataclasses.dataclass
class ScriptedRater:
  """Ground-truth ratings and preferences with simulated noise.

  Args:
    num_classes: rating classes n (>= 2).
    low, high: the range binned into n equal-width bins.
    noise: rate of wrong answers, in [0, 1] ("boundary": below 1 - 1/n).
    noise_kind: one of NOISE_KINDS (module docstring).
    seed: the noise RNG's seed.
    tie_tolerance: preference pairs whose true returns differ by at most
      this fraction of high - low are not answered; in [0, 1).
  """

  num_classes: int
  low: float
  high: float
  noise: float = 0.0
  noise_kind: str = "uniform"
  seed: int = 0
  tie_tolerance: float = 0.0
  # Answers from memory at once: the feedback loop calls it inline.
  remote = False

  needs_frames = False  # reads Queries.true_return only (not a field)

  def __post_init__(self):
    if self.num_classes < 2:
      raise ValueError(f"num_classes={self.num_classes}: must be >= 2")
    if not self.low < self.high:
      raise ValueError(
        f"rating range low={self.low} high={self.high}: needs low < high"
      )
    if not 0.0 <= self.noise <= 1.0:
      raise ValueError(f"noise={self.noise}: must lie in [0, 1]")
    if self.noise_kind not in NOISE_KINDS:
      raise ValueError(
        f"noise_kind={self.noise_kind!r}: choose one of {NOISE_KINDS}"
      )
    if not 0.0 <= self.tie_tolerance < 1.0:
      raise ValueError(
        f"tie_tolerance={self.tie_tolerance}: must lie in [0, 1)"
      )
    self._sigma = None
    if self.noise_kind == "boundary":
      width = (self.high - self.low) / self.num_classes
      self._sigma = width * boundary_sigma_over_width(
        self.noise, self.num_classes
      )
    self._rng = np.random.default_rng(self.seed)

  @property
  def sigma(self) -> Optional[float]:
    """The "boundary" model's perception noise (return units); None for
    the other noise kinds."""
    return self._sigma

  @classmethod
  def for_segments(
    cls,
    num_classes: int,
    step_range: Tuple[float, float],
    segment_length: int = 1,
    **kwargs,
  ) -> "ScriptedRater":
    """A rater of segment returns: the bins span segment_length times the
    per-step range step_range = (low, high) (RbRL's thirds of 0..50 for
    50-step segments of a 0..1 reward). kwargs: noise, noise_kind, seed,
    tie_tolerance."""
    low, high = step_range
    return cls(
      num_classes, segment_length * low, segment_length * high, **kwargs
    )

  def true_labels(self, returns: np.ndarray) -> np.ndarray:
    """Noise-free labels [B] of returns [B]."""
    returns = _finite(returns)
    width = (self.high - self.low) / self.num_classes
    labels = np.floor((returns - self.low) / width).astype(np.int64)
    return np.clip(labels, 0, self.num_classes - 1)

  def rate(self, queries: Queries) -> Ratings:
    """Labels [B] of queries.true_return [B], all answered."""
    returns = _finite(queries.true_return)
    b, n = returns.shape[0], self.num_classes
    if self.noise_kind == "boundary":
      perceived = returns + self._sigma * self._rng.standard_normal(b)
      return Ratings(
        labels=self.true_labels(perceived), answered=np.ones((b,), bool)
      )
    labels = self.true_labels(returns)
    flip = self._rng.random(b) < self.noise
    if self.noise_kind == "uniform":
      # Shift by 1..n-1 (mod n): uniform over the other classes.
      shift = self._rng.integers(1, n, size=b)
      noisy = (labels + shift) % n
    else:
      step = np.where(self._rng.random(b) < 0.5, -1, 1)
      step = np.where(labels == 0, 1, np.where(labels == n - 1, -1, step))
      noisy = labels + step
    labels = np.where(flip, noisy, labels)
    return Ratings(labels=labels, answered=np.ones((b,), bool))

  def prefer(self, queries_0: Queries, queries_1: Queries) -> Ratings:
    """Pairwise preferences (the RL-VLM-F baseline's query).

    labels [B]: 1 if segment 1 is judged better, else 0 (noise as in the
    module docstring); pairs whose true returns differ by at most
    tie_tolerance * (high - low) are ties, answered False with label -1
    (the VLM's "-1", dropped).
    """
    r0 = _finite(queries_0.true_return)
    r1 = _finite(queries_1.true_return)
    if r0.shape != r1.shape:
      raise ValueError(f"prefer: returns of shapes {r0.shape} and {r1.shape}")
    b = r0.shape[0]
    if self.noise_kind == "boundary":
      eps = self._sigma * self._rng.standard_normal((2, b))
      labels = (r1 + eps[1] > r0 + eps[0]).astype(np.int64)
    else:
      labels = (r1 > r0).astype(np.int64)
      flip = self._rng.random(b) < self.noise
      labels = np.where(flip, 1 - labels, labels)
    tie = self.tie_tolerance * (self.high - self.low)
    answered = np.abs(r1 - r0) > tie
    return Ratings(labels=np.where(answered, labels, -1), answered=answered)

  def state_dict(self) -> dict:
    """The RNG state (JSON-able), for checkpoints."""
    return {"rng": self._rng.bit_generator.state}

  def load_state_dict(self, d: dict) -> None:
    self._rng.bit_generator.state = d["rng"]


def _finite(returns: np.ndarray) -> np.ndarray:
  """returns as float64 [B]; ValueError naming a non-finite value."""
  returns = np.asarray(returns, np.float64)
  if not np.all(np.isfinite(returns)):
    bad = returns[~np.isfinite(returns)][0]
    raise ValueError(f"segment return {bad} is not finite")
  return returns
