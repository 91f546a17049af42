"""Aggregate statistics over seeds and tasks, in the style of rliable.

Agarwal et al. (2021), "Deep RL at the edge of the statistical precipice":
report the interquartile mean (IQM) of the scores of all runs and tasks,
with a stratified bootstrap confidence interval (runs are resampled with
replacement within each task). Written here in numpy (~30 lines) rather than
depending on `rliable`, which pulls in arch, pandas and seaborn.

Scores are arrays [runs, tasks]; a task with fewer runs is padded with NaN.
"""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np


def iqm(scores: np.ndarray) -> float:
  """Mean of the middle 50% of all finite scores (25% trimmed from each end,
  rounding the trimmed count down, as scipy.stats.trim_mean(x, 0.25))."""
  x = np.sort(np.asarray(scores, np.float64).ravel())
  x = x[np.isfinite(x)]
  if x.size == 0:
    return float("nan")
  k = int(0.25 * x.size)
  return float(x[k : x.size - k].mean())


def mean(scores: np.ndarray) -> float:
  x = np.asarray(scores, np.float64)
  return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def stratified_bootstrap(
  scores: np.ndarray,
  statistic: Callable[[np.ndarray], float] = iqm,
  reps: int = 2000,
  alpha: float = 0.05,
  seed: int = 0,
) -> Tuple[float, float, float]:
  """(point estimate, lower, upper): a percentile (1 - alpha) interval.

  scores [runs, tasks] (or [runs]); each replicate resamples, for every
  task, its finite runs with replacement, and applies `statistic` to the
  resampled [runs, tasks] array.
  """
  x = np.asarray(scores, np.float64)
  x = x[:, None] if x.ndim == 1 else x
  point = statistic(x)
  columns = [x[np.isfinite(x[:, t]), t] for t in range(x.shape[1])]
  if all(c.size < 2 for c in columns):
    return point, point, point
  rng = np.random.default_rng(seed)
  stats = np.empty(reps)
  for i in range(reps):
    rows = [
      c[rng.integers(0, c.size, c.size)] if c.size else c for c in columns
    ]
    sample = np.full(x.shape, np.nan)
    for t, r in enumerate(rows):
      sample[: r.size, t] = r
    stats[i] = statistic(sample)
  lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
  return point, float(lo), float(hi)


def bootstrap_band(
  curves: np.ndarray, reps: int = 2000, alpha: float = 0.05, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean learning curve over seeds and its percentile bootstrap band.

  curves [seeds, T] -> mean, lower, upper, each [T] (resampling seeds, the
  same seeds at every step).
  """
  c = np.asarray(curves, np.float64)
  m = c.mean(0)
  if c.shape[0] < 2:
    return m, m.copy(), m.copy()
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, c.shape[0], (reps, c.shape[0]))
  means = c[idx].mean(1)  # [reps, T]
  lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)], 0)
  return m, lo, hi


def min_max_normalize(
  scores: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
  """(scores - low) / (high - low) per task (last axis); a task whose range
  is empty maps to 0."""
  low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
  span = np.where(high > low, high - low, 1.0)
  return (np.asarray(scores, np.float64) - low) / span


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
  """rliable's P(X > Y): for each task, the probability that a random run of
  X scores above a random run of Y (ties count half), averaged over tasks.

  x [runs_x, tasks], y [runs_y, tasks] (or 1-D for one task), NaN-padded;
  a task either method has no run of is skipped.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  x = x[:, None] if x.ndim == 1 else x
  y = y[:, None] if y.ndim == 1 else y
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"x has {x.shape[1]} tasks, y {y.shape[1]}")
  per_task = []
  for t in range(x.shape[1]):
    a = x[np.isfinite(x[:, t]), t]
    b = y[np.isfinite(y[:, t]), t]
    if a.size and b.size:
      d = a[:, None] - b[None, :]
      per_task.append(np.mean((d > 0) + 0.5 * (d == 0)))
  return float(np.mean(per_task)) if per_task else float("nan")


def probability_of_improvement_ci(
  x: np.ndarray,
  y: np.ndarray,
  reps: int = 2000,
  alpha: float = 0.05,
  seed: int = 0,
) -> Tuple[float, float, float]:
  """P(X > Y) with a stratified bootstrap interval: the runs of each method
  on each task are resampled independently (x and y as in
  probability_of_improvement, with the same number of tasks)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  x = x[:, None] if x.ndim == 1 else x
  y = y[:, None] if y.ndim == 1 else y
  tasks = x.shape[1]
  if y.shape[1] != tasks:
    raise ValueError(f"x has {tasks} tasks, y {y.shape[1]}")
  rows = max(x.shape[0], y.shape[0])
  both = np.full((rows, 2 * tasks), np.nan)
  both[: x.shape[0], :tasks] = x
  both[: y.shape[0], tasks:] = y
  return stratified_bootstrap(
    both,
    lambda s: probability_of_improvement(s[:, :tasks], s[:, tasks:]),
    reps,
    alpha,
    seed,
  )


def nested_bootstrap_mean(
  x: np.ndarray, reps: int = 2000, alpha: float = 0.05, seed: int = 0
) -> Tuple[float, float, float]:
  """(mean, lower, upper) of episode scores x [S seeds, E episodes]: a
  percentile (1 - alpha) interval that resamples seeds, then episodes
  within each resampled seed (with S = 1, a bootstrap over episodes).
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or not x.size or not np.isfinite(x).all():
    raise ValueError(
      f"need finite scores [seeds, episodes], got shape {x.shape}"
    )
  point = float(x.mean())
  if x.size < 2:
    return point, point, point
  s, e = x.shape
  rng = np.random.default_rng(seed)
  seeds = rng.integers(0, s, (reps, s, 1))
  episodes = rng.integers(0, e, (reps, s, e))
  means = x[seeds, episodes].mean(axis=(1, 2))
  lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
  return point, float(lo), float(hi)
