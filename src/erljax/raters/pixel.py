"""A rater that sees only pixels: the "fake VLM" for tests and local serving.

For each supported task it estimates the task's rating signal (what the
scripted rater judges, TaskSpec.rating_signal) from the colours of a
rendered frame (erljax.vision.render, the task's own camera), then bins the
estimate exactly as the scripted rater does (equal-width classes over the
task's rated_range). No simulator state is read.

reacher (Brax): the camera looks straight down, the target is red and the
fingertip green (TaskSpec.geom_rgba). The estimate is minus the distance
between the two colour blobs' centroids, converted to metres with the
camera's geometry (all bodies move in the plane z = 0.01). The control cost
is invisible, so still frames are rated as if the arm were at rest. A frame
without a visible tip is left unanswered rather than guessed; a hidden
target counts as under the tip.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Dict, Optional

import numpy as np

from erljax.envs import tasks
from erljax.raters.base import Queries, Ratings
from erljax.raters.scripted import ScriptedRater

# A colour blob must cover at least this many pixels to count as seen.
_MIN_PIXELS = 2
# Height of reacher's moving bodies above the ground (its model XML).
_REACHER_PLANE_Z = 0.01
# MuJoCo's default vertical field of view (degrees) of the free camera.
_FREE_CAMERA_FOVY = 45.0


def _centroid(mask: np.ndarray) -> Optional[np.ndarray]:
  """(row, col) mean of a [H, W] bool mask, None if too few pixels."""
  idx = np.argwhere(mask)
  if idx.shape[0] < _MIN_PIXELS:
    return None
  return idx.mean(axis=0)


@functools.lru_cache(maxsize=None)
def _top_down_metres_per_pixel(task: str, height: int) -> float:
  """Metres per pixel in the plane z = _REACHER_PLANE_Z of a top-down view."""
  cam = tasks.get_task(task).camera
  if not isinstance(cam, tasks.FreeCamera) or cam.elevation != -90.0:
    raise ValueError(
      f"task {task!r}: the pixel rater needs a top-down "
      f"FreeCamera (elevation -90), got {cam!r}"
    )
  depth = cam.distance - (_REACHER_PLANE_Z - cam.lookat[2])
  visible = 2.0 * depth * math.tan(math.radians(_FREE_CAMERA_FOVY) / 2.0)
  return visible / height


def _reacher_reward(frame: np.ndarray) -> Optional[float]:
  """Estimated per-step reward (-tip-target distance, m) of a reacher frame."""
  rgb = frame.astype(np.int16)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  target = _centroid((r > 140) & (g < 90) & (b < 90))
  tip = _centroid((g > 110) & (r < 110) & (b < 110) & (g > r + 40))
  if tip is None:
    return None
  if target is None:
    # The target (radius 9 mm) is hidden under the tip (10 mm) or under an
    # arm link (10 mm), each only within 1 mm of its centre line. A policy
    # that reaches the target causes the first; call it reached.
    return 0.0
  pixels = float(np.linalg.norm(target - tip))
  return -pixels * _top_down_metres_per_pixel("reacher", frame.shape[0])


# Task name -> frame [H, W, 3] uint8 -> estimated per-step reward or None.
_ESTIMATORS: Dict[str, Callable[[np.ndarray], Optional[float]]] = {
  "reacher": _reacher_reward,
}


def supported_tasks() -> tuple:
  return tuple(sorted(_ESTIMATORS))


def _check_frame(frame: np.ndarray) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
    raise ValueError(
      f"frame of shape {frame.shape} and dtype {frame.dtype}: "
      "need [H, W, 3] uint8 RGB"
    )
  return frame


def _estimator(task: str) -> Callable[[np.ndarray], Optional[float]]:
  if task not in _ESTIMATORS:
    raise ValueError(
      f"the pixel rater cannot rate task {task!r}; it knows {supported_tasks()}"
    )
  return _ESTIMATORS[task]


def frame_reward(task: str, frame: np.ndarray) -> Optional[float]:
  """Per-step reward estimated from one frame [H, W, 3] uint8 (None: unsure)."""
  return _estimator(task)(_check_frame(frame))


@functools.lru_cache(maxsize=None)
def _binner(task: str) -> ScriptedRater:
  spec = tasks.get_task(task)
  low, high = spec.rated_range
  return ScriptedRater(num_classes=spec.num_classes, low=low, high=high)


def classify_frame(task: str, frame: np.ndarray) -> Optional[int]:
  """Class index in 0..num_classes-1 of one frame, None if it cannot tell."""
  reward = frame_reward(task, frame)
  if reward is None:
    return None
  return int(_binner(task).true_labels(np.array([reward]))[0])


@dataclasses.dataclass
class PixelRater:
  """Rates Queries.frames [B, H, W, 3] of one task from pixels only."""

  task: str

  def __post_init__(self):
    _estimator(self.task)
    self.num_classes = tasks.get_task(self.task).num_classes

  def _rewards(self, queries: Queries) -> np.ndarray:
    """[B] estimated rewards, NaN where the frame shows too little."""
    if queries.frames is None:
      raise ValueError(
        "PixelRater needs Queries.frames (rendered frames); got frames=None"
      )
    frames = np.asarray(queries.frames)
    if frames.ndim != 4:
      raise ValueError(f"frames of shape {frames.shape}: need [B, H, W, 3]")
    out = [frame_reward(self.task, f) for f in frames]
    return np.array([np.nan if r is None else r for r in out], np.float64)

  def rate(self, queries: Queries) -> Ratings:
    rewards = self._rewards(queries)
    answered = np.isfinite(rewards)
    labels = np.full(rewards.shape, -1, np.int64)
    if np.any(answered):
      labels[answered] = _binner(self.task).true_labels(rewards[answered])
    return Ratings(labels=labels, answered=answered)

  def prefer(self, queries_0: Queries, queries_1: Queries) -> Ratings:
    """labels [B]: 1 if frame 1 looks better, 0 if frame 0; ties and unsure
    frames are unanswered (-1)."""
    r0, r1 = self._rewards(queries_0), self._rewards(queries_1)
    if r0.shape != r1.shape:
      raise ValueError(
        f"prefer needs equal batches, got {r0.shape[0]} and "
        f"{r1.shape[0]} frames"
      )
    answered = np.isfinite(r0) & np.isfinite(r1) & (r0 != r1)
    labels = np.where(answered, (r1 > r0).astype(np.int64), -1)
    return Ratings(labels=labels, answered=answered)
