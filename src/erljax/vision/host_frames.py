"""Frames of task poses drawn by MuJoCo's OpenGL renderer, called from JAX.

The image reward model reads a frame of every transition it rewards
(`erljax.vision.raycast` says where). `RayCaster` draws them inside the
compiled program, one MJX ray per pixel per geom: portable and vmappable, but
on a CPU a 224x224 frame of MetaWorld's Sawyer scene costs seconds.
`HostFrames` draws the same poses with `erljax.vision.render.FrameRenderer`
(MuJoCo's OpenGL renderer, the frames a VLM is shown, and what the authors'
image reward reads: `reward_model_vlm_rating.py` trains on rendered frames)
and hands them back to the program through `jax.pure_callback`: ~5 ms a
224x224 Sawyer frame under Mesa's software renderer on this project's CPU
machine. `reward.frames` picks one (docs/usage.md, Configs).

The program waits for the host while a batch is drawn, and on an accelerator
the poses and frames cross to the host and back. An OpenGL context may only be
current on one thread, and XLA calls back from its own threads, so one worker
thread owns the renderer and draws every batch.
"""

from __future__ import annotations

import concurrent.futures
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from erljax.envs import tasks
from erljax.vision import render


class HostFrames:
  """Renders [..., H, W, 3] uint8 frames of poses [..., P] of one task.

  Same interface as erljax.vision.raycast.RayCaster (height, width,
  pose_size, compiler_options, a jittable and vmappable call), drawn by
  OpenGL on the host.

  Args:
    task: registered task name (or TaskSpec) with a MuJoCo model.
    height, width: frame size in pixels.
    camera: None for the task's camera (TaskSpec.camera), else a camera name
      of the task's model or an erljax.envs.tasks.FreeCamera.

  Raises RuntimeError when no off-screen OpenGL context can be made (the
  FrameRenderer's message says what to install).
  """

  # Nothing to ask of XLA: the drawing happens outside the program.
  compiler_options: dict = {}

  def __init__(
    self,
    task: str | tasks.TaskSpec,
    height: int = 224,
    width: int = 224,
    camera: Optional[str | tasks.FreeCamera] = None,
  ):
    self._worker = concurrent.futures.ThreadPoolExecutor(
      max_workers=1, thread_name_prefix="erljax-frames"
    )
    try:
      self._renderer = self._worker.submit(
        render.FrameRenderer, task, height, width, camera
      ).result()
    except BaseException:
      self._worker.shutdown()
      raise
    self.task = self._renderer.task
    self.height, self.width = self._renderer.height, self._renderer.width
    self.nq = self._renderer.nq
    self.pose_size = self._renderer.pose_size

  def draw(self, pose: np.ndarray) -> np.ndarray:
    """Host side: frames [..., H, W, 3] uint8 of poses [..., P] (numpy)."""
    pose = np.asarray(pose)
    lead = pose.shape[:-1]
    flat = pose.reshape((-1, pose.shape[-1]))
    frames = self._worker.submit(self._renderer.render, flat).result()
    return frames.reshape(lead + (self.height, self.width, 3))

  def __call__(self, pose: jax.Array) -> jax.Array:
    """Frames [..., H, W, 3] uint8 of poses [..., P]; jittable, vmappable."""
    pose = jnp.asarray(pose)
    render.check_pose_shape(self.task, self.nq, self.pose_size, pose.shape)
    out = jax.ShapeDtypeStruct(
      pose.shape[:-1] + (self.height, self.width, 3), jnp.uint8
    )
    return jax.pure_callback(self.draw, out, pose, vmap_method="expand_dims")

  def close(self) -> None:
    """Frees the OpenGL context and the worker thread (idempotent)."""
    if self._worker is not None:
      self._worker.submit(self._renderer.close).result()
      self._worker.shutdown()
      self._worker = None
