"""MetaWorld's Sawyer arm as a jittable, vmappable environment.

MetaWorld (Farama, MIT licence; the scenes under erljax/assets/metaworld
are its files) moves a mocap body that is welded to the hand: an action
a in [-1, 1]^4 shifts the mocap by a[:3] / 100 (clipped to the hand's box)
and drives the two fingers' position actuators with (a[3], -a[3]); one env
step is 5 physics steps of 2.5 ms, followed by a forward pass. The policy
sees 39 numbers: hand position (3), finger opening (1), object position and
quaternion padded to 14, the same 18 from the previous step, and the goal
(zeros: MetaWorld's envs are partially observable by default).

Two physics backends (erljax.envs.sawyer_physics) sit behind one env:

* ``"host"``: MuJoCo's C simulator in float64, called from the compiled
  program through `jax.pure_callback` (batched: one call steps every env of
  a vmapped step). The full integration state travels inside the JAX state
  as the float64 words' bits (uint32 pairs), so runs stay pure functions
  of their state, checkpoint and resume exactly (tested on Soccer), and
  match MetaWorld's own env to rounding under MetaWorld's MuJoCo. The one
  to run on a CPU.
* ``"mjx"``: MJX's pure-JAX step (float32), which vmaps and shards on
  accelerators. On a CPU it compiles for minutes and steps slowly.

Both expose the same kinematic readout (`Readout`) to the task code in
erljax.envs.metaworld, which computes observation, reward and success in JAX.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Tuple

import chex
import jax
import numpy as np
from flax import struct

ASSETS = os.path.join(
  os.path.dirname(os.path.dirname(__file__)), "assets", "metaworld"
)

FRAME_SKIP = 5
ACTION_SCALE = 1.0 / 100
MOCAP_QUAT = (1.0, 0.0, 1.0, 0.0)  # MetaWorld's fixed hand orientation
HAND_RESET_STEPS = 50
# Bounds of the observation's hand position (MetaWorld's _HAND_SPACE).
HAND_SPACE = ((-0.525, 0.348, -0.0525), (0.525, 1.025, 0.7))
# MetaWorld's reset_mocap_welds: weld relative pose identity (quat -1, 0,
# 0, 0) and torque scale 5 (the first 11 of MuJoCo 4's 12 weld fields).
WELD_DATA = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)
BACKENDS = ("host", "mjx")
# XLA options for a CPU compile of any program that traces the Sawyer scene
# in MJX (the "mjx" backend's step, erljax.vision.raycast's frames). XLA's CPU
# fusion emitters blow up MJX kinematics on the arm's 13-level body chain:
# one env's kinematics 320-400 ms with them, 0.5-0.7 ms without (issue 15's
# planning); ray-cast frames of a scene compile in 7-10 s without them and
# had not finished after 15 min (32x32) with them (this 2-core CPU).
MJX_CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@dataclasses.dataclass(frozen=True)
class Camera:
  """A fixed camera added to the scene: pos (m), euler (rad, MuJoCo's
  default xyz sequence), vertical field of view (degrees)."""

  pos: Tuple[float, float, float]
  euler: Tuple[float, float, float]
  fovy: float


@dataclasses.dataclass(frozen=True)
class Scene:
  """What a task adds to the Sawyer model.

  Attributes:
    xml: the MetaWorld scene file under assets/metaworld/sawyer_xyz.
    object_body: body whose frame origin is the object's position.
    object_offset: added to that position (the drawer's handle).
    quat_from_matrix: MetaWorld reads the object's orientation from its
      rotation matrix through scipy (x, y, z, w order, scipy's sign);
      otherwise the body's MuJoCo quaternion (w, x, y, z).
    mocap_bodies: bodies a reset may move (the drawer, the soccer goal),
      turned into mocap bodies so that one model serves every episode.
    hand_init: where the hand is held during the reset.
    hand_low, hand_high: the mocap's box.
    camera: the task camera (named "task" in the model).
    mjx_zero_margins: under MJX, set every geom margin to 0 (MJX has no
      box-mesh collision with a margin: Soccer's goal). The host
      simulator keeps MetaWorld's margins.
    hide_robot: draw the arm, the gripper and every site (the goal
      markers, the fingertip markers) fully transparent, as the authors'
      copy does: frames show the objects only. Rendering only.
    recolor: ((geom name, rgba), ...) drawn without its material
      (the authors' green Sweep Into cube); rendering only.
  """

  xml: str
  object_body: str
  object_offset: Tuple[float, float, float] = (0.0, 0.0, 0.0)
  quat_from_matrix: bool = True
  mocap_bodies: Tuple[str, ...] = ()
  hand_init: Tuple[float, float, float] = (0.0, 0.6, 0.2)
  hand_low: Tuple[float, float, float] = (-0.5, 0.40, 0.05)
  hand_high: Tuple[float, float, float] = (0.5, 1.0, 0.5)
  camera: Optional[Camera] = None
  mjx_zero_margins: bool = False
  hide_robot: bool = True
  recolor: Tuple[Tuple[str, Tuple[float, float, float, float]], ...] = ()


def build_model(scene: Scene, backend: str = "host") -> Any:
  """The scene's mujoco.MjModel with MetaWorld's weld data, the movable
  bodies as mocap bodies and the task camera, for `backend`."""
  import mujoco  # pylint: disable=g-import-not-at-top

  spec = mujoco.MjSpec.from_file(os.path.join(ASSETS, "sawyer_xyz", scene.xml))
  for name in scene.mocap_bodies:
    spec.body(name).mocap = True
  if scene.camera is not None:
    cam = spec.worldbody.add_camera(
      name="task", pos=scene.camera.pos, fovy=scene.camera.fovy
    )
    cam.alt.type = mujoco.mjtOrientation.mjORIENTATION_EULER
    cam.alt.euler = scene.camera.euler
  model = spec.compile()
  for i in range(model.neq):
    if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
      model.eq_data[i, : len(WELD_DATA)] = WELD_DATA
  if backend == "mjx" and scene.mjx_zero_margins:
    model.geom_margin[:] = 0.0
  if scene.hide_robot:
    base = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "base")
    robot = _subtree(model, base)
    for g in range(model.ngeom):
      if int(model.geom_bodyid[g]) in robot:
        model.geom_rgba[g, 3] = 0.0
        model.geom_matid[g] = -1
    model.site_rgba[:, 3] = 0.0
  for name, rgba in scene.recolor:
    g = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
    model.geom_rgba[g] = rgba
    model.geom_matid[g] = -1
  return model


def _subtree(model: Any, root: int) -> set:
  """Ids of the bodies in the subtree rooted at body `root`."""
  out = {root}
  for b in range(root + 1, model.nbody):  # parents precede children
    if int(model.body_parentid[b]) in out:
      out.add(b)
  return out


@struct.dataclass
class Readout:
  """Kinematic quantities the task code needs (float32, any batch shape).

  hand [3]: the hand body's position; claws [2, 3]: right and left claw
  bodies; tcp [3]: mean of the two end-effector sites; pads [2, 3]: left
  and right pad bodies; obj_pos [3], obj_quat [4] as MetaWorld observes
  them.
  """

  hand: jax.Array
  claws: jax.Array
  tcp: jax.Array
  pads: jax.Array
  obj_pos: jax.Array
  obj_quat: jax.Array

  SIZE = 3 + 6 + 3 + 6 + 3 + 4

  @classmethod
  def unflat(cls, x: jax.Array) -> "Readout":
    """x [..., SIZE] -> Readout."""
    chex.assert_axis_dimension(x, -1, cls.SIZE)
    lead = x.shape[:-1]
    return cls(
      hand=x[..., 0:3],
      claws=x[..., 3:9].reshape(lead + (2, 3)),
      tcp=x[..., 9:12],
      pads=x[..., 12:18].reshape(lead + (2, 3)),
      obj_pos=x[..., 18:21],
      obj_quat=x[..., 21:25],
    )


def scipy_quat(wxyz, xnp=np):
  """MuJoCo quaternion (w, x, y, z) -> what scipy's
  Rotation.from_matrix(...).as_quat() returns for the same rotation:
  (x, y, z, w), with the sign that makes the component scipy solves for
  (the largest of the matrix's diagonal and trace) positive."""
  w, x, y, z = (wxyz[..., i] for i in range(4))
  xyzw = xnp.stack([x, y, z, w], axis=-1)
  # Diagonal of the rotation matrix and its trace, from the quaternion.
  d0 = 1 - 2 * (y * y + z * z)
  d1 = 1 - 2 * (x * x + z * z)
  d2 = 1 - 2 * (x * x + y * y)
  decision = xnp.stack([d0, d1, d2, d0 + d1 + d2], axis=-1)
  choice = xnp.argmax(decision, axis=-1)
  chosen = xnp.take_along_axis(xyzw, choice[..., None], axis=-1)
  return xyzw * xnp.where(chosen < 0, -1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class _Ids:
  hand: int
  claws: Tuple[int, int]
  ee_sites: Tuple[int, int]
  pads: Tuple[int, int]
  obj: int
  obj_free: Optional[Tuple[int, int]]  # (qpos, dof) address of its free joint
  hand_mocap: int
  mocap: Tuple[int, ...]  # mocap index of each of scene.mocap_bodies


def scene_ids(model: Any, scene: Scene) -> _Ids:
  import mujoco  # pylint: disable=g-import-not-at-top

  body = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n)
  site = lambda n: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, n)
  return _Ids(
    hand=body("hand"),
    claws=(body("rightclaw"), body("leftclaw")),
    ee_sites=(site("rightEndEffector"), site("leftEndEffector")),
    pads=(body("leftpad"), body("rightpad")),
    obj=body(scene.object_body),
    obj_free=_free_joint(model, body(scene.object_body)),
    hand_mocap=int(model.body_mocapid[body("mocap")]),
    mocap=tuple(int(model.body_mocapid[body(n)]) for n in scene.mocap_bodies),
  )


def _free_joint(model: Any, body: int) -> Optional[Tuple[int, int]]:
  """(qpos, dof) addresses of the body's free joint; None without one."""
  import mujoco  # pylint: disable=g-import-not-at-top

  j = int(model.body_jntadr[body])
  if j < 0 or model.jnt_type[j] != mujoco.mjtJoint.mjJNT_FREE:
    return None
  return int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])


def readout(ids: _Ids, scene: Scene, xpos, xquat, site_xpos, xnp=np):
  """[Readout.SIZE] from one env's body / site poses (numpy or jax)."""
  quat = xquat[ids.obj]
  quat = scipy_quat(quat, xnp) if scene.quat_from_matrix else quat
  return xnp.concatenate(
    [
      xpos[ids.hand],
      xpos[ids.claws[0]],
      xpos[ids.claws[1]],
      (site_xpos[ids.ee_sites[0]] + site_xpos[ids.ee_sites[1]]) / 2.0,
      xpos[ids.pads[0]],
      xpos[ids.pads[1]],
      xpos[ids.obj] + xnp.asarray(scene.object_offset),
      quat,
    ]
  )


def hand_reset(model: Any, scene: Scene) -> Any:
  """MetaWorld's hand reset from the model's initial state: the hand held
  at scene.hand_init, fingers open, for 50 env steps. Returns the
  mujoco.MjData reached. Movable bodies and the
  object are placed afterwards (`place`): the hand touches neither during
  this reset, so the order does not matter.

  Like MetaWorld, no forward pass follows the last step: the kinematics
  (xpos, site_xpos) are those the last step computed before integrating,
  which is where MetaWorld reads init_tcp and the object's height."""
  import mujoco  # pylint: disable=g-import-not-at-top

  ids = scene_ids(model, scene)
  d = mujoco.MjData(model)
  for _ in range(HAND_RESET_STEPS):
    d.mocap_pos[ids.hand_mocap] = scene.hand_init
    d.mocap_quat[ids.hand_mocap] = MOCAP_QUAT
    d.ctrl[:] = (-1.0, 1.0)
    mujoco.mj_step(model, d, nstep=FRAME_SKIP)
  return d
