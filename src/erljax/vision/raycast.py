"""Frames of task poses drawn inside JAX, one MJX ray per pixel.

The image reward model (ERL-VLM's CNN, `reward.model = "cnn"`) reads a frame
of every transition it rewards: each new one in the hot loop, the whole replay
buffer at every relabel, every rated query while it trains.
`erljax.vision.render`'s OpenGL frames are drawn on the host one at a time and
cannot run in a compiled program, so the reward model gets its own view:
`RayCaster` casts a ray through each pixel with `mujoco.mjx.ray` (MuJoCo's own
ray-geom tests) from the task's camera and colours the pixel with the colour of
the geom it hits. It is pure JAX, so it jits, vmaps over seeds and runs on any
backend.

The picture is flat-shaded (no lights, shadows or textures) but shows the
same geometry, from the same camera and with the same colour overrides, as
the frames a VLM is shown (tests/test_raycast.py compares the two). The
reward model is trained and evaluated on ray-cast frames only, so what it
sees is always drawn the same way.

Cost: one ray-geom test per pixel per geom. On this project's 2-core CPU
machine a 64x64 frame of reacher (10 geoms) takes ~0.7 ms, of
CartpoleSwingup (5 geoms) ~0.3 ms; a 224x224 frame of reacher ~17 ms.
"""

from __future__ import annotations

from typing import Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from erljax.vision import render
from erljax.envs import sawyer
from erljax.envs import sawyer_physics
from erljax.envs import tasks

# Colour of pixels whose ray hits nothing (MuJoCo draws its skybox there).
BACKGROUND = (0.3, 0.35, 0.4)
# MuJoCo's default geom colour: a geom with a material and this colour is
# drawn in the material's colour.
_DEFAULT_RGBA = (0.5, 0.5, 0.5, 1.0)


def material_colours(model: mujoco.MjModel) -> np.ndarray:
  """[nmat, 4] RGBA of each material; a textured one is its colour times the
  mean colour of its RGB texture (a grid floor becomes its average shade)."""
  rgba = np.array(model.mat_rgba, np.float64).reshape(-1, 4)
  role = int(mujoco.mjtTextureRole.mjTEXROLE_RGB)
  texid = (
    np.asarray(model.mat_texid).reshape(model.nmat, -1)
    if model.nmat
    else np.zeros((0, 1), np.int32)
  )
  for i in range(model.nmat):
    t = int(texid[i, role]) if texid.shape[1] > role else -1
    if t < 0:
      continue
    ch = int(model.tex_nchannel[t])
    size = int(model.tex_height[t]) * int(model.tex_width[t]) * ch
    pixels = model.tex_data[model.tex_adr[t] : model.tex_adr[t] + size]
    mean = pixels.reshape(-1, ch)[:, :3].mean(0) / 255.0
    rgba[i, :3] *= mean if ch >= 3 else mean[:1]
  return rgba


def geom_colours(model: mujoco.MjModel) -> np.ndarray:
  """[ngeom, 3] RGB in [0, 1] that MuJoCo draws each geom in, lighting
  aside: the material's colour where the geom keeps the default colour."""
  mat = np.concatenate([material_colours(model), np.ones((1, 4))])[
    model.geom_matid
  ]
  use_mat = (model.geom_matid >= 0) & np.all(
    np.isclose(model.geom_rgba, _DEFAULT_RGBA), axis=-1
  )
  return np.where(use_mat[:, None], mat, model.geom_rgba)[:, :3].astype(
    np.float32
  )


def free_camera_frame(
  camera: tasks.FreeCamera,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(position, forward, up) [3] of a MuJoCo free camera."""
  az, el = np.deg2rad(camera.azimuth), np.deg2rad(camera.elevation)
  forward = np.array(
    [np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]
  )
  up = np.array(
    [-np.sin(el) * np.cos(az), -np.sin(el) * np.sin(az), np.cos(el)]
  )
  position = np.asarray(camera.lookat, np.float64) - camera.distance * forward
  return position, forward, up


# Geom groups a ray can hit (mjx.ray's inclusion mask): MuJoCo's default
# visible groups 0, 1 and 2.
VISIBLE_GROUPS = (1, 1, 1, 0, 0, 0)


class RayCaster:
  """Renders [..., H, W, 3] uint8 frames of poses [..., P] of one task.

  Args:
    task: registered task name (or TaskSpec) with a MuJoCo model.
    height, width: frame size in pixels.
    camera: None for the task's camera (TaskSpec.camera), else a camera name
      of the task's model or an erljax.envs.tasks.FreeCamera.
    batch_size: frames traced at once (bounds peak memory: a batch holds
      batch_size * H * W * ngeom ray-geom tests).

  A pose is qpos [nq], optionally followed by the mocap body positions
  [3 * nmocap] (VecEnv.pose, what the replay buffer stores).
  """

  def __init__(
    self,
    task: str | tasks.TaskSpec,
    height: int = 64,
    width: int = 64,
    camera: Optional[str | tasks.FreeCamera] = None,
    batch_size: int = 16,
  ):
    spec = tasks.get_task(task) if isinstance(task, str) else task
    for key, value in (
      ("height", height),
      ("width", width),
      ("batch_size", batch_size),
    ):
      if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{key}={value!r}: must be a positive integer")
    model = render.task_model(spec)
    self.task = spec
    self.height, self.width = int(height), int(width)
    self.batch_size = int(batch_size)
    self.nq, self.nmocap = int(model.nq), int(model.nmocap)
    # XLA options a program that draws these frames needs on a CPU
    # (erljax.envs.vec_env.compiler_options): MJX kinematics of the Sawyer arm.
    sawyer_scene = spec.source == "metaworld"
    self.compiler_options = (
      dict(sawyer.MJX_CPU_COMPILER_OPTIONS) if sawyer_scene else {}
    )
    self.camera = spec.camera if camera is None else camera
    if isinstance(self.camera, str):
      self._cam_id = mujoco.mj_name2id(
        model, mujoco.mjtObj.mjOBJ_CAMERA, self.camera
      )
      if self._cam_id < 0:
        names = [model.camera(i).name for i in range(model.ncam)]
        raise ValueError(
          f"camera {self.camera!r} is not in task "
          f"{spec.name!r}'s model; its cameras: {names}"
        )
      fovy = float(model.cam_fovy[self._cam_id])
    elif isinstance(self.camera, tasks.FreeCamera):
      self._cam_id = -1
      fovy = float(model.vis.global_.fovy)
    else:
      raise ValueError(
        f"camera={self.camera!r}: give a camera name or an "
        "erljax.envs.tasks.FreeCamera"
      )
    # Rays ignore contact margins, and MJX refuses some (a box against a
    # mesh with one: MetaWorld's Soccer goal).
    model.geom_margin[:] = 0.0
    # Cast rays at what the host renderer draws: geom groups 0-2 (MuJoCo's
    # default visible groups), without fully transparent geoms (moved to
    # group 5). Filtering them out before tracing spares their meshes'
    # triangles (MetaWorld's invisible arm: ~100 GB at 112x112 otherwise).
    clear = (model.geom_rgba[:, 3] == 0) & (model.geom_matid < 0)
    model.geom_group[clear] = 5
    mx = mjx.put_model(model)
    if model.nmat == 0:
      # mjx.ray looks up material colours even for geoms without one.
      mx = mx.replace(mat_rgba=jnp.ones((1, 4), jnp.float32))
    self._model = mx
    self._colours = geom_colours(model)
    # Ray directions in the camera frame: x right, y up, z forward.
    half_h = np.tan(np.deg2rad(fovy) / 2)
    half_w = half_h * self.width / self.height
    ys = (1 - 2 * (np.arange(self.height) + 0.5) / self.height) * half_h
    xs = (2 * (np.arange(self.width) + 0.5) / self.width - 1) * half_w
    self._pixels = (
      np.stack(
        np.broadcast_arrays(
          xs[None, :], ys[:, None], np.ones((self.height, 1))
        ),
        -1,
      )
      .reshape(-1, 3)
      .astype(np.float32)
    )

  @property
  def pose_size(self) -> int:
    return self.nq + 3 * self.nmocap

  def _camera_frame(
    self, data: mjx.Data
  ) -> Tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Camera position, right, up and forward axes [3]."""
    if self._cam_id >= 0:
      xmat = data.cam_xmat[self._cam_id]  # MuJoCo cameras look along -z
      return data.cam_xpos[self._cam_id], xmat[:, 0], xmat[:, 1], -xmat[:, 2]
    position, forward, up = free_camera_frame(self.camera)
    return (
      jnp.asarray(position, jnp.float32),
      jnp.asarray(np.cross(forward, up), jnp.float32),
      jnp.asarray(up, jnp.float32),
      jnp.asarray(forward, jnp.float32),
    )

  def _frame(self, pose: jax.Array) -> jax.Array:
    """pose [P] -> [H, W, 3] uint8."""
    m = self._model
    data = mjx.make_data(m).replace(qpos=pose[: self.nq].astype(jnp.float32))
    if pose.shape[0] > self.nq:
      data = data.replace(
        mocap_pos=pose[self.nq :].reshape(self.nmocap, 3).astype(jnp.float32)
      )
    m = sawyer_physics.with_mocap_poses(m, data)  # bodies below a mocap body
    data = mjx.kinematics(m, data)
    if self._cam_id >= 0:
      # Tracking cameras follow the subtree centre of mass.
      data = mjx.camlight(m, mjx.com_pos(m, data))
    origin, right, up, forward = self._camera_frame(data)
    px = jnp.asarray(self._pixels)
    dirs = px[:, :1] * right + px[:, 1:2] * up + px[:, 2:] * forward
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    _, geom = jax.vmap(
      lambda v: mjx.ray(m, data, origin, v, geomgroup=VISIBLE_GROUPS)
    )(dirs)
    rgb = jnp.where(
      (geom >= 0)[:, None],
      jnp.asarray(self._colours)[jnp.maximum(geom, 0)],
      jnp.asarray(BACKGROUND, jnp.float32),
    )
    rgb = jnp.round(rgb * 255.0).astype(jnp.uint8)
    rgb = rgb.reshape(self.height, self.width, 3)
    return rgb[::-1] if self.task.flip_frames else rgb

  def __call__(self, pose: jax.Array) -> jax.Array:
    """Frames [..., H, W, 3] uint8 of poses [..., P]; jittable, vmappable."""
    pose = jnp.asarray(pose)
    render.check_pose_shape(self.task, self.nq, self.pose_size, pose.shape)
    lead = pose.shape[:-1]
    flat = pose.reshape((-1, pose.shape[-1]))
    frames = jax.lax.map(
      self._frame, flat, batch_size=min(self.batch_size, max(flat.shape[0], 1))
    )
    chex.assert_shape(frames, (flat.shape[0], self.height, self.width, 3))
    return frames.reshape(lead + (self.height, self.width, 3))
