"""erljax's MetaWorld tasks against MetaWorld's own env, as a table.

  PYTHONPATH=$PWD/src python experiments/metaworld/parity.py

Replays each reference episode (tests/data/metaworld, recorded with
metaworld 3.1.1 on MuJoCo 3.3.0) open loop in erljax's host backend from
erljax's own reset, and steps once from every recorded state (what
tests/test_metaworld.py checks), then prints per task the largest per-step
differences in reward and observation (the object's quaternion aside),
the success flags that disagree and the episode returns. Run it with
MuJoCo 3.3.0 (MetaWorld's engine; jax, flax and chex installed beside
metaworld) and with erljax's MuJoCo to see what the engine changes.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from erljax.envs import metaworld
from erljax.envs import sawyer_physics

DATA = os.path.join(
  os.path.dirname(__file__), "..", "..", "tests", "data", "metaworld"
)
QUATS = np.r_[7:11, 25:29]


def upstream(name: str) -> metaworld.MetaWorldEnv:
  """erljax's env with MetaWorld's own success radius (the recorded one)."""
  task = metaworld.TASKS[name]
  if name == "sweep-into":  # MetaWorld's radius, as recorded
    task = dataclasses.replace(task, radius=0.05)
  return metaworld.MetaWorldEnv(task)


def replay(env, ref):
  """Open-loop replay of every episode from erljax's reset."""

  def body(state, action):
    state = env.step(state, action)
    return state, (state.obs, state.reward, state.metrics["success"])

  def episode(actions):
    return jax.lax.scan(body, env.reset(jax.random.PRNGKey(0)), actions)[1]

  return jax.jit(jax.vmap(episode))(jnp.asarray(ref["action"]))


def load_state(env, data, ref, e: int, t: int) -> None:
  """Writes the recorded state after step t of episode e into `data` (a
  mujoco.MjData of env's model). MetaWorld's model has one mocap body, the
  hand; erljax's also moves the drawer / the goal, which stay where the
  episode put them."""
  ids = env.physics.ids
  for f in ("qpos", "qvel", "qacc_warmstart", "ctrl"):
    getattr(data, f)[:] = ref[f][e, t]
  data.mocap_pos[ids.hand_mocap] = ref["mocap_pos"][e, t, 0]
  data.mocap_quat[ids.hand_mocap] = ref["mocap_quat"][e, t, 0]
  vec = jnp.asarray(env.task.fixed, jnp.float32)
  _, placement = env.task.episode(vec, env._base_readout)  # pylint: disable=protected-access
  for i, p in zip(ids.mocap, np.asarray(placement)[:-1]):
    data.mocap_pos[i] = p


def reference_episode(ref) -> metaworld.Episode:
  """The recorded episodes' reward constants (the same for all)."""
  return metaworld.Episode(
    obj_init=jnp.asarray(ref["obj_init"][0], jnp.float32),
    target=jnp.asarray(ref["target"][0], jnp.float32),
  )


def one_step(env, ref):
  """One step from every recorded state under the recorded action, with
  MetaWorld's init_tcp: (obs [E, T, 39], reward [E, T], success [E, T])."""
  env.constants = metaworld.Constants(
    init_tcp=ref["init_tcp"][0].astype(np.float32)
  )
  data = mujoco.MjData(env.mj_model)
  num_eps, length = ref["action"].shape[:2]
  bits = []
  for e in range(num_eps):
    for t in range(length):
      load_state(env, data, ref, e, t)
      bits.append(env.physics.bits(data))
  n = len(bits)
  state = metaworld.State(
    data=sawyer_physics.Physics(
      qpos=jnp.zeros((n, env.mj_model.nq)),
      mocap_pos=jnp.zeros((n, env.mj_model.nmocap, 3)),
      state=jnp.asarray(np.stack(bits)),
    ),
    obs=jnp.zeros((n, 39)),
    reward=jnp.zeros((n,)),
    done=jnp.zeros((n,)),
    metrics={"success": jnp.zeros((n,))},
    info={
      "prev": jnp.asarray(ref["obs"][:, :-1, :18].reshape(n, 18)),
      "episode": jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (n,) + x.shape), reference_episode(ref)
      ),
    },
  )
  out = jax.jit(jax.vmap(env.step))(
    state, jnp.asarray(ref["action"].reshape(n, 4))
  )
  shape = (num_eps, length)
  return (
    np.asarray(out.obs).reshape(shape + (39,)),
    np.asarray(out.reward).reshape(shape),
    np.asarray(out.metrics["success"]).reshape(shape),
  )


def row(kind, name, got, ref):
  obs, reward, success = (np.asarray(x) for x in got)
  d_obs = np.abs(obs - ref["obs"][:, 1:])
  d_obs[..., QUATS] = 0.0
  d_rew = np.abs(reward - ref["reward"])
  wrong = int(np.sum((success > 0) != (ref["success"] > 0)))
  returns = " / ".join(
    f"{a:.1f} vs {b:.1f}" for a, b in zip(reward.sum(1), ref["reward"].sum(1))
  )
  return (
    f"| {name} | {kind} | {d_rew.max():.1e} | {d_obs.max():.1e} | "
    f"{wrong} | {returns} |"
  )


def main():
  print(f"MuJoCo {mujoco.__version__}\n")
  print(
    "| task | check | reward, max abs diff | observation, max abs diff | "
    "success flags that differ (of 1,500) | returns, erljax vs MetaWorld |"
  )
  print("| --- | --- | --- | --- | --- | --- |")
  for name in ("sweep-into", "drawer-open", "soccer"):
    ref = dict(np.load(os.path.join(DATA, f"{name}.npz")))
    env = upstream(name)
    print(row("open-loop replay", name, replay(env, ref), ref))
    print(row("one step from each state", name, one_step(env, ref), ref))


if __name__ == "__main__":
  main()
