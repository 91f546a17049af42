"""The scripted rater: ratings from the ground truth, with optional noise.

A segment's true return is binned into `num_classes` equal-width bins over
[low, high] (RbRL's synthetic ratings; values outside are clipped into the
end bins). With probability `noise` a label is replaced: "uniform" picks one
of the other classes at random, "neighbour" moves one class up or down.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from typing import Tuple

from erljax.raters.base import Queries, Ratings

NOISE_KINDS = ("uniform", "neighbour")


@dataclasses.dataclass
class ScriptedRater:
  num_classes: int
  low: float
  high: float
  noise: float = 0.0
  noise_kind: str = "uniform"
  seed: int = 0
  # Answers from memory at once: the feedback loop calls it inline.
  remote = False

  needs_frames = False  # reads Queries.true_return only (not a field)

  def __post_init__(self):
    if self.num_classes < 2:
      raise ValueError(f"num_classes={self.num_classes}: must be >= 2")
    if not self.low < self.high:
      raise ValueError(f"rating range low={self.low} high={self.high}: "
                       "needs low < high")
    if not 0.0 <= self.noise <= 1.0:
      raise ValueError(f"noise={self.noise}: must lie in [0, 1]")
    if self.noise_kind not in NOISE_KINDS:
      raise ValueError(f"noise_kind={self.noise_kind!r}: choose one of "
                       f"{NOISE_KINDS}")
    self._rng = np.random.default_rng(self.seed)

  @classmethod
  def for_segments(cls, num_classes: int, step_range: Tuple[float, float],
                   segment_length: int = 1, **kwargs) -> "ScriptedRater":
    """A rater of segment returns: the bins span segment_length times the
    per-step range step_range = (low, high) (RbRL's thirds of 0..50 for
    50-step segments of a 0..1 reward). kwargs: noise, noise_kind, seed."""
    low, high = step_range
    return cls(num_classes, segment_length * low, segment_length * high,
               **kwargs)

  def true_labels(self, returns: np.ndarray) -> np.ndarray:
    """Noise-free labels [B] of returns [B]."""
    returns = np.asarray(returns, np.float64)
    if not np.all(np.isfinite(returns)):
      bad = returns[~np.isfinite(returns)][0]
      raise ValueError(f"segment return {bad} is not finite")
    width = (self.high - self.low) / self.num_classes
    labels = np.floor((returns - self.low) / width).astype(np.int64)
    return np.clip(labels, 0, self.num_classes - 1)

  def rate(self, queries: Queries) -> Ratings:
    labels = self.true_labels(queries.true_return)
    b, n = labels.shape[0], self.num_classes
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

    labels [B]: 1 if segment 1 has the higher true return, else 0; equal
    returns are ties, answered False (the VLM's "-1", dropped). With
    probability `noise` an answered preference is flipped.
    """
    r0 = np.asarray(queries_0.true_return, np.float64)
    r1 = np.asarray(queries_1.true_return, np.float64)
    for r in (r0, r1):
      if not np.all(np.isfinite(r)):
        raise ValueError(f"segment return {r[~np.isfinite(r)][0]} is not "
                         "finite")
    labels = (r1 > r0).astype(np.int64)
    flip = self._rng.random(labels.shape[0]) < self.noise
    labels = np.where(flip, 1 - labels, labels)
    answered = r0 != r1
    return Ratings(labels=np.where(answered, labels, -1), answered=answered)

  def state_dict(self) -> dict:
    """The RNG state (JSON-able), for checkpoints."""
    return {"rng": self._rng.bit_generator.state}

  def load_state_dict(self, d: dict) -> None:
    self._rng.bit_generator.state = d["rng"]
