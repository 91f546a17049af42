"""Reference traces from MetaWorld's own CPU environments (parity data).

Runs in a separate environment with the `metaworld` package (it pins
mujoco 3.3.0, which erljax's pins exclude):

  python -m venv /tmp/mwvenv && /tmp/mwvenv/bin/pip install metaworld==3.1.1
  /tmp/mwvenv/bin/python experiments/metaworld/make_reference.py \
      --out tests/data/metaworld

For each task it plays 3 episodes of 500 steps from the fixed initial
positions erljax uses by default (the authors'; MetaWorld's own Sweep Into
target radius, 0.05, where the authors use 0.06): MetaWorld's scripted
policy with Gaussian action noise of std 0.1 (the policy is shown the
goal), the same with std 0.5, and uniform random actions (seeded). It
stores per step the action, the 39-D observation, MetaWorld's dense reward
(v2) and success flag, the physics state after the step (qpos, qvel,
qacc_warmstart, mocap pose, ctrl), and the episode's reward constants
(init_tcp, obj_init, target), in one compressed .npz per task.
tests/test_metaworld.py checks erljax against them.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

TASKS = {
  # erljax name: (MetaWorld env module, env class, policy class, rand vec,
  # hand start): the authors' copy's fixed positions (erljax.envs.metaworld).
  "drawer-open": (
    "sawyer_drawer_open_v3",
    "SawyerDrawerOpenEnvV3",
    "SawyerDrawerOpenV3Policy",
    [0.0, 0.9, 0.0],
    [0.0, 0.75, 0.15],
  ),
  "sweep-into": (
    "sawyer_sweep_into_goal_v3",
    "SawyerSweepIntoGoalEnvV3",
    "SawyerSweepIntoV3Policy",
    [0.0, 0.65, 0.02, 0.0, 0.84, 0.02],
    [0.0, 0.53, 0.05],
  ),
  "soccer": (
    "sawyer_soccer_v3",
    "SawyerSoccerEnvV3",
    "SawyerSoccerV3Policy",
    [0.0, 0.65, 0.03, 0.0, 0.85, 0.0],
    [0.0, 0.56, 0.05],
  ),
}
EPISODES = (("policy", 0.1), ("policy", 0.5), ("uniform", 1.0))
LENGTH = 500


def make_env(task: str):
  import importlib  # pylint: disable=g-import-not-at-top

  module, env_cls, _, rand_vec, hand = TASKS[task]
  env = getattr(importlib.import_module(f"metaworld.envs.{module}"), env_cls)()
  # What set_task does, with the fixed positions instead of a sampled task.
  env._set_task_called = True  # pylint: disable=protected-access
  env._freeze_rand_vec = True  # pylint: disable=protected-access
  env._last_rand_vec = np.array(rand_vec)  # pylint: disable=protected-access
  env.hand_init_pos = np.array(hand)
  return env


def episode(env, policy, kind: str, scale: float, rng) -> dict:
  obs, _ = env.reset()
  fields = ("qpos", "qvel", "qacc_warmstart", "mocap_pos", "mocap_quat", "ctrl")
  out = {k: [] for k in ("action", "obs", "reward", "success") + fields}
  out["obs"].append(obs)

  def record():
    for f in fields:
      out[f].append(getattr(env.data, f).copy())

  record()
  for _ in range(LENGTH):
    if kind == "policy":
      # The scripted policies read the goal from the observation's last 3
      # entries, which a partially observable env zeroes.
      seen = np.concatenate([obs[:-3], env._target_pos])  # pylint: disable=protected-access
      action = policy.get_action(seen) + rng.normal(0.0, scale, size=4)
    else:
      action = rng.uniform(-scale, scale, size=4)
    action = np.clip(action, -1.0, 1.0).astype(np.float32)
    obs, reward, _, _, info = env.step(action)
    out["action"].append(action)
    out["obs"].append(obs)
    out["reward"].append(reward)
    out["success"].append(info["success"])
    record()
  out = {k: np.asarray(v) for k, v in out.items()}
  out["init_tcp"] = np.asarray(env.init_tcp)
  out["obj_init"] = np.asarray(env.obj_init_pos)
  out["target"] = np.asarray(env._target_pos)  # pylint: disable=protected-access
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--out", default="tests/data/metaworld", help="folder to write into"
  )
  parser.add_argument("--rng_seed", type=int, default=0, help="poses' seed")
  args = parser.parse_args()
  import importlib  # pylint: disable=g-import-not-at-top

  import metaworld  # pylint: disable=g-import-not-at-top
  import mujoco  # pylint: disable=g-import-not-at-top

  os.makedirs(args.out, exist_ok=True)
  for task, (_, _, policy_cls, rand_vec, hand) in TASKS.items():
    env = make_env(task)
    policy = getattr(
      importlib.import_module("metaworld.policies"), policy_cls
    )()
    rng = np.random.default_rng(args.rng_seed)
    eps = [episode(env, policy, kind, scale, rng) for kind, scale in EPISODES]
    data = {k: np.stack([e[k] for e in eps]) for k in eps[0]}
    path = os.path.join(args.out, f"{task}.npz")
    np.savez_compressed(
      path,
      **data,
      rand_vec=np.array(rand_vec),
      hand_init=np.array(hand),
      episodes=np.array([f"{k} {s}" for k, s in EPISODES]),
      versions=np.array(
        [
          f"metaworld {metaworld.__version__}"
          if hasattr(metaworld, "__version__")
          else "metaworld 3.1.1",
          f"mujoco {mujoco.__version__}",
        ]
      ),
    )
    print(
      f"{task}: return per episode "
      f"{np.round(data['reward'].sum(1), 1).tolist()}, "
      f"success at any step {data['success'].max(1).tolist()}, "
      f"{os.path.getsize(path) / 1e3:.0f} kB -> {path}"
    )


if __name__ == "__main__":
  main()
