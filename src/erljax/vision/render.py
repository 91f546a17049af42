"""Headless RGB frames of batches of task states (what a VLM is shown).

`FrameRenderer(task)` owns one MuJoCo model copy and one off-screen
`mujoco.Renderer` and draws a frame per row of a pose batch
([B, nq] qpos, or [B, nq + 3 * nmocap] from `VecEnv.pose`). A still frame
needs positions only: velocities change no pixel.

Off-screen rendering goes through EGL (`MUJOCO_GL=egl`, the default this
package sets on Linux before MuJoCo is imported). Without a GPU, Mesa's
software EGL driver renders; a fresh Debian/Ubuntu machine needs the system
packages libegl1, libgl1 and libegl-mesa0 / libgl1-mesa-dri (see
docs/install.md, "Rendering").

Thread-safety: a FrameRenderer holds an OpenGL context; use one instance from
one thread only (make one per thread if several threads render).
"""

from __future__ import annotations

import copy
import os
import platform
import time
from typing import Optional

import numpy as np

if platform.system() == "Linux":
  # Also set in erljax.envs.vec_env; repeated here so that importing this module
  # first (before anything imports mujoco) is enough.
  os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # pylint: disable=g-import-not-at-top,wrong-import-position

from erljax.envs import vec_env as envs  # pylint: disable=g-import-not-at-top
from erljax.envs import tasks  # pylint: disable=g-import-not-at-top


def _use_egl_if_asked() -> str:
  """Honours MUJOCO_GL=egl even if mujoco was imported before it was set.

  MuJoCo binds its GL backend at import; a program that imported mujoco
  (directly or through Brax) before this module set the default got GLFW,
  which needs a display. Switch that binding to EGL when EGL is asked for.
  The binding lives in a private MuJoCo module (tested with mujoco 3.3 to
  4.0, the range setup.cfg allows): returns "" or, where that module is
  missing, a sentence saying so that render errors carry.
  """
  if os.environ.get("MUJOCO_GL", "").lower() != "egl":
    return ""
  try:
    # pylint: disable-next=g-import-not-at-top
    from mujoco.rendering.classic import gl_context
  except ImportError:
    return (
      f" mujoco {mujoco.__version__} has no "
      "mujoco.rendering.classic.gl_context, the private module erljax "
      "patches to switch to EGL when mujoco was imported before "
      "MUJOCO_GL=egl was set (tested with mujoco 3.3 to 4.0): set "
      "MUJOCO_GL=egl before anything imports mujoco."
    )
  bound = getattr(gl_context, "GLContext", None)
  if bound is not None and bound.__module__ != "mujoco.egl":
    from mujoco import egl  # pylint: disable=g-import-not-at-top

    gl_context.GLContext = egl.GLContext
  return ""


_EGL_NOTE = _use_egl_if_asked()


def task_model(task: str | tasks.TaskSpec) -> mujoco.MjModel:
  """A private copy of a task's MjModel with its render colour overrides."""
  spec = tasks.get_task(task) if isinstance(task, str) else task
  model = copy.deepcopy(envs.mj_model(spec, spec.make_env()))
  for geom, rgba in spec.geom_rgba:
    gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, geom)
    if gid < 0:
      raise ValueError(
        f"task {spec.name!r}: geom_rgba names geom {geom!r}, "
        "which its model does not have"
      )
    model.geom_rgba[gid] = rgba
  return model


def check_pose_shape(
  task: tasks.TaskSpec,
  nq: int,
  pose_size: int,
  shape: tuple,
  rows: bool = False,
) -> None:
  """Raises ValueError unless `shape` is [..., nq] or [..., pose_size] (a
  pose is qpos, then the mocap positions); [B, ...] only when `rows`."""
  widths = sorted({nq, pose_size})
  if (
    nq == 0
    or len(shape) < 1
    or shape[-1] not in widths
    or (rows and len(shape) != 2)
  ):
    raise ValueError(
      f"pose of shape {tuple(shape)}: task {task.name!r} needs "
      f"[{'B' if rows else '...'}, {' or '.join(map(str, widths))}] (qpos, "
      "then mocap positions)"
    )


def _camera(
  model: mujoco.MjModel, camera: str | tasks.FreeCamera
) -> str | mujoco.MjvCamera:
  """A camera argument for mujoco.Renderer.update_scene."""
  if isinstance(camera, tasks.FreeCamera):
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = camera.lookat
    cam.distance = camera.distance
    cam.azimuth = camera.azimuth
    cam.elevation = camera.elevation
    return cam
  if isinstance(camera, str):
    if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
      names = [model.camera(i).name for i in range(model.ncam)]
      raise ValueError(
        f"camera {camera!r} is not in the model; its cameras: "
        f"{names} (or pass an erljax.envs.tasks.FreeCamera)"
      )
    return camera
  raise ValueError(
    f"camera={camera!r}: give a camera name or an erljax.envs.tasks.FreeCamera"
  )


class FrameRenderer:
  """Renders [B, H, W, 3] uint8 frames of B poses of one task.

  Args:
    task: registered task name (or TaskSpec).
    height, width: frame size in pixels.
    camera: None for the task's camera (TaskSpec.camera), else a camera name
      of the task's model or an erljax.envs.tasks.FreeCamera.
    shadows: draw shadows and reflections (slow without a GPU).
  """

  def __init__(
    self,
    task: str | tasks.TaskSpec,
    height: int = 224,
    width: int = 224,
    camera: Optional[str | tasks.FreeCamera] = None,
    shadows: bool = False,
  ):
    spec = tasks.get_task(task) if isinstance(task, str) else task
    for key, value in (("height", height), ("width", width)):
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{key}={value!r}: must be a positive integer")
    self.task = spec
    self.height, self.width = int(height), int(width)
    model = task_model(spec)
    # The off-screen framebuffer must hold the frame.
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
    self.model = model
    self.nq = int(model.nq)
    self.nmocap = int(model.nmocap)
    self._data = mujoco.MjData(model)
    self._camera = _camera(model, spec.camera if camera is None else camera)
    self._renderer: Optional[mujoco.Renderer] = None
    try:
      self._renderer = mujoco.Renderer(model, self.height, self.width)
    except Exception as e:  # pylint: disable=broad-except
      raise RuntimeError(
        f"no off-screen OpenGL context (MUJOCO_GL="
        f"{os.environ.get('MUJOCO_GL')!r}): {e}. On a headless Linux "
        "machine set MUJOCO_GL=egl before anything imports mujoco and "
        "install libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri "
        f"(docs/install.md, Rendering).{_EGL_NOTE}"
      ) from e
    if not shadows:
      # Shadows and reflections cost ~10x the render time under Mesa's
      # software rasterizer (91 ms vs 9 ms a 224x224 reacher frame on this
      # project's CPU machine) and tell a rater nothing about the task.
      flags = self._renderer.scene.flags
      flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
      flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

  @property
  def pose_size(self) -> int:
    return self.nq + 3 * self.nmocap

  def render(self, pose: np.ndarray) -> np.ndarray:
    """Frames [B, H, W, 3] uint8 of poses [B, nq] or [B, nq + 3 * nmocap].

    A pose is qpos, optionally followed by the flattened mocap body positions
    (VecEnv.pose); with qpos only, mocap bodies stay where the model puts
    them.
    """
    if self._renderer is None:
      raise RuntimeError("FrameRenderer.render after close()")
    pose = np.asarray(pose, np.float64)
    check_pose_shape(self.task, self.nq, self.pose_size, pose.shape, rows=True)
    if not np.all(np.isfinite(pose)):
      raise ValueError(
        f"pose has non-finite values, e.g. row "
        f"{np.argwhere(~np.isfinite(pose))[0, 0]}"
      )
    frames = np.empty((pose.shape[0], self.height, self.width, 3), np.uint8)
    data = self._data
    for i, row in enumerate(pose):
      data.qpos[:] = row[: self.nq]
      if pose.shape[1] > self.nq:
        data.mocap_pos[:] = row[self.nq :].reshape(self.nmocap, 3)
      mujoco.mj_forward(self.model, data)
      self._renderer.update_scene(data, camera=self._camera)
      self._renderer.render(out=frames[i])
    return frames[:, ::-1].copy() if self.task.flip_frames else frames

  def close(self) -> None:
    """Frees the OpenGL context (idempotent)."""
    if self._renderer is not None:
      self._renderer.close()
      self._renderer = None

  def __enter__(self) -> "FrameRenderer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def random_poses(
  model: mujoco.MjModel, n: int, rng: np.random.Generator
) -> np.ndarray:
  """[n, nq] qpos: each joint uniform over its range (+-pi if unlimited)."""
  qpos = np.tile(model.qpos0, (n, 1))
  hinge, slide = (
    int(mujoco.mjtJoint.mjJNT_HINGE),
    int(mujoco.mjtJoint.mjJNT_SLIDE),
  )
  for j in range(model.njnt):
    kind = int(model.jnt_type[j])
    if kind not in (hinge, slide):
      continue  # free / ball joints keep their reference pose
    if model.jnt_limited[j]:
      lo, hi = model.jnt_range[j]
    else:
      lo, hi = (-np.pi, np.pi) if kind == hinge else (-0.5, 0.5)
    qpos[:, model.jnt_qposadr[j]] = rng.uniform(lo, hi, size=n)
  return qpos


def benchmark(
  task: str, n: int = 100, height: int = 224, width: int = 224, seed: int = 0
) -> float:
  """Frames per second rendering n random poses of `task` (one renderer)."""
  if n < 1:
    raise ValueError(f"n={n}: must be >= 1")
  with FrameRenderer(task, height, width) as renderer:
    poses = random_poses(renderer.model, n, np.random.default_rng(seed))
    renderer.render(poses[:1])  # warm-up: first-frame GL set-up
    start = time.perf_counter()
    renderer.render(poses)
    return n / (time.perf_counter() - start)
