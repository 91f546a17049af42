"""The Sawyer scene's two physics backends behind one interface.

``"host"`` steps MuJoCo's C simulator (float64) from the compiled program
through `jax.pure_callback`, the integration state carried as bits in the
JAX state; ``"mjx"`` steps MJX (float32) in JAX. Both return a `Physics`
and the kinematic readout of erljax.envs.sawyer (`make_physics` picks one).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from erljax.envs.sawyer import (
  ACTION_SCALE,
  BACKENDS,
  FRAME_SKIP,
  MOCAP_QUAT,
  Readout,
  Scene,
  scene_ids,
  readout,
)


@struct.dataclass
class Physics:
  """One env's physics state.

  qpos [nq] and mocap_pos [nmocap, 3] (float32) are what a frame needs
  (erljax.envs.vec_env.VecEnv.pose reads them); `state` is the backend's own:
  for "host" the bits of MuJoCo's float64 integration state
  (mj_getState, mjSTATE_INTEGRATION) as uint32 [2 * size]; for "mjx" an
  mjx.Data.
  """

  qpos: jax.Array
  mocap_pos: jax.Array
  state: Any


class _Backend:
  """What both backends hold: the model, the scene, its ids, the mocap
  box (float64 on the host, float32 in JAX)."""

  def __init__(self, model: Any, scene: Scene, xnp):
    self.model = model
    self.scene = scene
    self.ids = scene_ids(model, scene)
    self._low = xnp.asarray(scene.hand_low)
    self._high = xnp.asarray(scene.hand_high)


class HostPhysics(_Backend):
  """MuJoCo's C simulator behind jax.pure_callback (float64)."""

  def __init__(self, model: Any, scene: Scene):
    import mujoco  # pylint: disable=g-import-not-at-top

    super().__init__(model, scene, np)
    self._mj = mujoco
    self._data = mujoco.MjData(model)
    self._lock = threading.Lock()
    self._spec = mujoco.mjtState.mjSTATE_INTEGRATION
    self.state_size = int(mujoco.mj_stateSize(model, self._spec))

  # -- host side (numpy, float64) ---------------------------------------------
  def _get(self) -> np.ndarray:
    return self.bits(self._data)

  def _set(self, bits: np.ndarray) -> None:
    state = np.array(bits, np.uint32).view(np.float64)  # a writeable copy
    self._mj.mj_setState(self.model, self._data, state, int(self._spec))

  def _outputs(self):
    d = self._data
    out = readout(self.ids, self.scene, d.xpos, d.xquat, d.site_xpos)
    return (
      self._get(),
      d.qpos.astype(np.float32),
      d.mocap_pos.astype(np.float32),
      out.astype(np.float32),
    )

  def bits(self, data: Any) -> np.ndarray:
    """The integration state of a mujoco.MjData as uint32 [2 * size]."""
    state = np.empty(self.state_size, np.float64)
    self._mj.mj_getState(self.model, data, state, int(self._spec))
    return state.view(np.uint32)

  def _place_one(self, bits, placement):
    self._set(bits)
    d = self._data
    for i, p in zip(self.ids.mocap, placement[:-1]):
      d.mocap_pos[i] = p
    if self.ids.obj_free is not None:
      # MetaWorld's _set_obj_xyz: position only, the free joint at rest.
      q, v = self.ids.obj_free
      d.qpos[q : q + 3] = placement[-1]
      d.qvel[v : v + 6] = 0.0
    self._mj.mj_forward(self.model, d)
    return self._outputs()

  def _step_one(self, bits, action):
    self._set(bits)
    d, h = self._data, self.ids.hand_mocap
    a = np.asarray(action, np.float64)
    shift = np.clip(a[:3], -1.0, 1.0) * ACTION_SCALE
    d.mocap_pos[h] = np.clip(d.mocap_pos[h] + shift, self._low, self._high)
    d.mocap_quat[h] = MOCAP_QUAT
    d.ctrl[:] = (a[3], -a[3])
    self._mj.mj_step(self.model, d, nstep=FRAME_SKIP)
    self._mj.mj_forward(self.model, d)
    return self._outputs()

  def _batched(self, fn, *args):
    lead = args[0].shape[:-1]
    flat = [a.reshape((-1,) + a.shape[len(lead) :]) for a in args]
    # One MjData serves every call: two programs stepping this env at once
    # (from two threads) take turns.
    with self._lock:
      outs = [fn(*row) for row in zip(*flat)]
    return tuple(
      np.stack([o[i] for o in outs]).reshape(lead + outs[0][i].shape)
      for i in range(4)
    )

  def _result_shapes(self, lead):
    m = self.model
    return (
      jax.ShapeDtypeStruct(lead + (2 * self.state_size,), jnp.uint32),
      jax.ShapeDtypeStruct(lead + (m.nq,), jnp.float32),
      jax.ShapeDtypeStruct(lead + (m.nmocap, 3), jnp.float32),
      jax.ShapeDtypeStruct(lead + (Readout.SIZE,), jnp.float32),
    )

  # -- JAX side ---------------------------------------------------------------
  def initial(self, data: Any) -> jax.Array:
    """The backend state of a mujoco.MjData (the hand reset's)."""
    return jnp.asarray(self.bits(data))

  def place(self, state: jax.Array, placement: jax.Array):
    """Backend state after the hand reset, placement [k + 1, 3] (the k
    movable bodies' positions, then the object's) -> (Physics, readout
    [Readout.SIZE])."""
    return self._call(self._place_one, state, placement)

  def step(self, physics: Physics, action: jax.Array):
    """One env step: (Physics, action [4]) -> (Physics, readout)."""
    return self._call(self._step_one, physics.state, action)

  def _call(self, fn, bits, arg):
    out = jax.pure_callback(
      functools.partial(self._batched, fn),
      self._result_shapes(()),
      bits,
      arg.astype(jnp.float32),
      vmap_method="broadcast_all",
    )
    bits, qpos, mocap, read = out
    return Physics(qpos=qpos, mocap_pos=mocap, state=bits), read


class MjxPhysics(_Backend):
  """MJX's pure-JAX step (float32)."""

  def __init__(self, model: Any, scene: Scene):
    from mujoco import mjx  # pylint: disable=g-import-not-at-top

    super().__init__(model, scene, jnp)
    self._mjx = mjx
    self.mx = mjx.put_model(model)

  def _outputs(self, d):
    out = readout(self.ids, self.scene, d.xpos, d.xquat, d.site_xpos, jnp)
    return Physics(qpos=d.qpos, mocap_pos=d.mocap_pos, state=d), out

  def initial(self, data: Any) -> Any:
    """An mjx.Data from a mujoco.MjData (the host-computed hand reset)."""
    return self._mjx.put_data(self.model, data)

  def place(self, d: Any, placement: jax.Array):
    """As HostPhysics.place, in JAX."""
    mocap_pos = d.mocap_pos
    for i, p in zip(self.ids.mocap, placement[:-1]):
      mocap_pos = mocap_pos.at[i].set(p)
    d = d.replace(mocap_pos=mocap_pos)
    obj_pos = placement[-1]
    if self.ids.obj_free is not None:
      q, v = self.ids.obj_free
      d = d.replace(
        qpos=d.qpos.at[q : q + 3].set(obj_pos),
        qvel=d.qvel.at[v : v + 6].set(0.0),
      )
    return self._outputs(self._mjx.forward(with_mocap_poses(self.mx, d), d))

  def step(self, physics: Physics, action: jax.Array):
    d, h = physics.state, self.ids.hand_mocap
    shift = jnp.clip(action[:3], -1.0, 1.0) * ACTION_SCALE
    mocap_pos = d.mocap_pos.at[h].set(
      jnp.clip(d.mocap_pos[h] + shift, self._low, self._high)
    )
    mocap_quat = d.mocap_quat.at[h].set(jnp.asarray(MOCAP_QUAT))
    d = d.replace(
      mocap_pos=mocap_pos,
      mocap_quat=mocap_quat,
      ctrl=jnp.stack([action[3], -action[3]]),
    )
    # The mocap poses stay put during the frame skip.
    mx = with_mocap_poses(self.mx, d)
    d = jax.lax.fori_loop(0, FRAME_SKIP, lambda _, x: self._mjx.step(mx, x), d)
    return self._outputs(self._mjx.forward(mx, d))


def with_mocap_poses(mx: Any, d: Any) -> Any:
  """mjx.Model `mx` with each mocap body's pose (body_pos, body_quat) set to
  mjx.Data `d`'s mocap_pos / mocap_quat.

  MJX's kinematics (mujoco 4.0.0, JAX implementation) writes the mocap poses
  after its pass down the body tree, so the bodies below a mocap body stay
  where the model's own body_pos / body_quat put it: Soccer's goal meshes
  sat 5 cm from the goal body it is placed at (the same bug, fixed in MuJoCo
  Warp: google-deepmind/mujoco_warp#858). Handing kinematics this model
  places them as MuJoCo's C kinematics does. Mocap bodies hang from the
  world, so their body pose is their world pose. Works under vmap (the
  model's two fields then carry the batch).
  """
  bodies = np.nonzero(np.asarray(mx.body_mocapid) >= 0)[0]
  if bodies.size == 0:
    return mx
  ids = np.asarray(mx.body_mocapid)[bodies]
  quat = d.mocap_quat[ids]
  quat = quat / jnp.linalg.norm(quat, axis=-1, keepdims=True)
  return mx.replace(
    body_pos=jnp.asarray(mx.body_pos).at[bodies].set(d.mocap_pos[ids]),
    body_quat=jnp.asarray(mx.body_quat).at[bodies].set(quat),
  )


def make_physics(model: Any, scene: Scene, backend: str):
  if backend == "host":
    return HostPhysics(model, scene)
  if backend == "mjx":
    return MjxPhysics(model, scene)
  raise ValueError(f"backend={backend!r}: choose one of {BACKENDS}")
