"""The frames the raters see: the post-step frame of each query segment's
last step, drawn on the host (MuJoCo, erljax.vision.render) from its pose, and
grids of seed 0's rated frames written for looking at the labels
(`render.rated_frames`). Shapes: S seeds, Q queries, P segments a query, H
steps a segment, h x w the render size.
"""

from __future__ import annotations

import os
from typing import Optional

import ml_collections
import numpy as np

from erljax.runtime import distributed
from erljax.vision import media
from erljax.raters import api as raters_lib
from erljax.vision import render as render_lib
from erljax.agents.replay import Transition


class RatedFrames:
  """Draws the queries' frames when a rater needs them or grids are
  written (`dir`: workdir/rated_frames, rating feedback only; None: no
  grids). The renderer is made on the first draw."""

  def __init__(
    self, c: ml_collections.ConfigDict, task_name: str, needed: bool
  ):
    self.dir = (
      os.path.join(c.workdir, "rated_frames")
      if c.workdir
      and c.render.rated_frames
      and c.reward.feedback_type == "rating"
      else None
    )
    self.wanted = needed or self.dir is not None
    self.task_name = task_name
    self.height, self.width = c.render.height, c.render.width
    self._renderer = None

  def draw(self, queries: Transition) -> Optional[np.ndarray]:
    """Post-step frames [S, Q, P, h, w, 3] uint8 of the last step of each
    query segment (queries' pose [S, Q, P, H, pose]), None if not wanted
    or off process 0 (only process 0's raters look at frames)."""
    if not self.wanted:
      return None
    if queries.pose is None:
      raise ValueError(
        "the raters need frames but the replay buffer holds "
        "no poses to render them from"
      )
    pose = distributed.to_host(queries.pose)[:, :, :, -1]
    if not distributed.is_primary():
      return None
    if self._renderer is None:
      self._renderer = render_lib.FrameRenderer(
        self.task_name, height=self.height, width=self.width
      )
    frames = self._renderer.render(pose.reshape(-1, pose.shape[-1]))
    return frames.reshape(pose.shape[:-1] + frames.shape[1:])

  def save_grid(
    self,
    session: int,
    frames: Optional[np.ndarray],
    labels: np.ndarray,
    num_classes: int,
  ) -> None:
    """Writes seed 0's frames [Q, P, h, w, 3] with their labels [Q] to
    dir/session_NNNN.png (nothing without a dir or frames)."""
    if self.dir is None or frames is None:
      return
    media.save_png(
      media.rated_grid(
        frames[:, 0], labels, raters_lib.CLASS_NAMES[num_classes]
      ),
      os.path.join(self.dir, f"session_{session:04d}.png"),
    )

  def close(self) -> None:
    """Frees the renderer."""
    if self._renderer is not None:
      self._renderer.close()
      self._renderer = None
