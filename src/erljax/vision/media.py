"""Results you can look at: rollout videos and grids of rated frames.

`rollout_poses` plays one deterministic episode of a trained policy in a
fresh environment (compiled, like evaluation) and returns the poses;
`draw_frames` draws them with erljax.vision.render (OpenGL), or with the
pure-JAX ray caster erljax.vision.raycast where no OpenGL context can be made (a
machine without the EGL libraries); `rollout_gif` does both and saves the frames
with `save_gif`, which writes frames as an animated GIF (Pillow, which erljax
needs already). `rated_grid` lays frames out with the rating each was given,
so a run's labels can be checked by eye.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from PIL import Image
from PIL import ImageDraw

from erljax.envs import vec_env as envs
from erljax.vision import render as render_lib

# Caption colours per class, worst to best, and for unanswered queries.
_BAD, _MID, _GOOD, _NONE = (
  (200, 40, 40),
  (200, 150, 20),
  (30, 150, 50),
  (110, 110, 110),
)


def rollout_poses(
  trainer: Any,
  actor_params: Any,
  key: jax.Array,
  num_steps: Optional[int] = None,
) -> np.ndarray:
  """Poses [T, pose_size] of one deterministic episode of the policy.

  trainer: an erljax.online.trainer.Trainer (its agent and task); actor_params:
  one seed's actor parameters (no seed axis); T = num_steps or the episode
  length. The episode is not cut at a termination: the frames show what
  the policy does for T steps.
  """
  env = envs.make_vec_env(
    trainer.env.task, 1, trainer.env.episode_length, like=trainer.env
  )
  steps = num_steps or env.episode_length
  if steps < 1:
    raise ValueError(f"num_steps={num_steps}: must be >= 1")

  @functools.partial(jax.jit, compiler_options=envs.compiler_options(env))
  def play(params, key):
    def step(state, _):
      action = trainer.agent.deterministic_action(params, state.obs)
      state, out = env.step(state, action)
      return state, env.pose(out.inner)[0]

    _, poses = jax.lax.scan(step, env.reset(key), None, length=steps)
    return poses

  return np.asarray(play(actor_params, key))


def draw_frames(
  task: Any, poses: np.ndarray, height: int, width: int, log=None
) -> np.ndarray:
  """Frames [T, height, width, 3] uint8 of poses [T, P] of task (a name or
  TaskSpec): OpenGL (erljax.vision.render) where an off-screen context can be
  made, else erljax.vision.raycast's flat-shaded frames, saying so through
  `log`."""
  try:
    renderer = render_lib.FrameRenderer(task, height, width)
  except RuntimeError as e:  # no OpenGL context (EGL libraries missing)
    if log is not None:
      log(
        "note: no OpenGL, so the video is ray-cast in JAX (flat-shaded): "
        + str(e).splitlines()[0][:200]
      )
    # pylint: disable-next=g-import-not-at-top (MJX ray tracing is heavy)
    from erljax.vision import raycast

    caster = raycast.RayCaster(task, height, width)
    draw = jax.jit(caster, compiler_options=envs.compiler_options(caster))
    return np.asarray(draw(np.asarray(poses, np.float32)))
  with renderer:
    return renderer.render(poses)


def rollout_gif(
  trainer: Any, actor_params: Any, key: jax.Array, path: str, log=None
) -> str:
  """Writes one deterministic episode of the policy (rollout_poses) as a
  GIF at the run's config.render size and fps (drawn by draw_frames, whose
  notes go to `log`); returns the path."""
  r = trainer.config.render
  poses = rollout_poses(trainer, actor_params, key)
  frames = draw_frames(trainer.env.task, poses, r.height, r.width, log)
  return save_gif(frames, path, r.fps)


def save_gif(frames: np.ndarray, path: str, fps: float = 25.0) -> str:
  """Writes frames [T, H, W, 3] uint8 as a looping GIF; returns the path."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(
      f"frames of shape {frames.shape} and dtype "
      f"{frames.dtype}: need [T, H, W, 3] uint8"
    )
  if not fps > 0:
    raise ValueError(f"fps={fps}: must be > 0")
  images = [Image.fromarray(f) for f in frames]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  images[0].save(
    path,
    save_all=True,
    append_images=images[1:],
    duration=max(int(round(1000 / fps)), 20),
    loop=0,
  )
  return path


def _caption_colour(label: int, num_classes: int) -> tuple:
  if label < 0:
    return _NONE
  if num_classes == 2:
    return _GOOD if label == 1 else _BAD
  return _BAD if label == 0 else _GOOD if label == num_classes - 1 else _MID


def rated_grid(
  frames: np.ndarray,
  labels: np.ndarray,
  class_names: Sequence[str],
  columns: int = 8,
) -> np.ndarray:
  """One image [rows * (H + 16), columns * W, 3] uint8 of frames [B, H, W, 3]
  with each frame's rating (labels [B]; -1: unanswered) written under it."""
  frames, labels = np.asarray(frames), np.asarray(labels)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames of shape {frames.shape}: need [B, H, W, 3]")
  if labels.shape != frames.shape[:1]:
    raise ValueError(
      f"labels of shape {labels.shape} for {frames.shape[0]} frames"
    )
  n = len(class_names)
  bad = labels[(labels < -1) | (labels >= n)]
  if bad.size:
    raise ValueError(f"label {bad[0]} outside -1..{n - 1}")
  if columns < 1:
    raise ValueError(f"columns={columns}: must be >= 1")
  b, h, w = frames.shape[:3]
  cols = min(columns, b)
  rows = -(-b // cols)
  cap = 16
  grid = Image.new("RGB", (cols * w, rows * (h + cap)), (255, 255, 255))
  draw = ImageDraw.Draw(grid)
  for i in range(b):
    x, y = (i % cols) * w, (i // cols) * (h + cap)
    grid.paste(Image.fromarray(frames[i].astype(np.uint8)), (x, y))
    text = class_names[labels[i]] if labels[i] >= 0 else "no answer"
    draw.rectangle(
      (x, y + h, x + w - 1, y + h + cap - 1),
      fill=_caption_colour(int(labels[i]), n),
    )
    draw.text((x + 3, y + h + 2), text, fill=(255, 255, 255))
  return np.asarray(grid)


def save_png(image: np.ndarray, path: str) -> str:
  """Writes an [H, W, 3] uint8 image as PNG; returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
  return path
