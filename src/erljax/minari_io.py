"""Offline episode datasets to and from Minari (Farama's offline-RL format).

  python -m erljax.minari_io export --dataset=data/pusher \\
      --minari_id=erljax/pusher/mixed-v0
  python -m erljax.minari_io import --minari_id=mujoco/pusher/expert-v0 \\
      --task=pusher --out=data/pusher_minari

erljax keeps its own format (erljax.offline.dataset): it stores each step's
pose, which erljax.vision.render draws the frames a VLM rates from. An export
writes every episode's valid steps as one Minari episode: observations [T + 1]
(the T observations and the last next observation; each step's next
observation must be the next step's observation), actions, rewards,
terminations (true terminations) and truncations (the time limit), and in
`infos` (T + 1 entries, the first for the reset) the erljax fields:
"success", "pose" (NaN at the reset), and the episode's "noise_std",
"random" and "policy_step". An import reads them back where present, so an
export imports to the same dataset; a Minari dataset from elsewhere
imports without poses (pose size 0: fine for env-reward IQL / BC, but its
frames cannot be drawn for rating). Needs `pip install "minari[hdf5]"`
(the `minari` extra); datasets live where Minari keeps them
(MINARI_DATASETS_PATH, default ~/.minari/datasets).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from erljax.offline import dataset as dataset_lib


def _minari() -> Any:
  try:
    # pylint: disable-next=g-import-not-at-top (optional dependency)
    import minari
  except ImportError:
    raise ImportError(
      "Minari export / import needs minari: pip install 'minari[hdf5]' "
      "(or erljax's `minari` extra)"
    ) from None
  return minari


def to_minari(
  ds: dataset_lib.EpisodeDataset, minari_id: str, description: str = ""
) -> Any:
  """Writes `ds` as the Minari dataset `minari_id` (see the module
  docstring); returns the MinariDataset."""
  minari = _minari()
  # pylint: disable-next=g-import-not-at-top
  import gymnasium as gym
  from minari.data_collector import EpisodeBuffer  # pylint: disable=g-import-not-at-top

  buffers = []
  p = ds.poses.shape[-1]
  for i in range(ds.num_episodes):
    t = int(ds.valid[i].sum())
    if t == 0:
      continue
    if not np.array_equal(
      ds.observations[i, 1:t], ds.next_observations[i, : t - 1]
    ):
      raise ValueError(
        f"episode {i}: a step's next observation is not the next step's "
        "observation; Minari stores one observation sequence per episode"
      )
    term = ds.terminals[i, :t].copy()
    trunc = np.zeros(t, bool)
    trunc[-1] = not term[-1]
    first = lambda x, fill: np.concatenate(
      [np.full((1,) + x.shape[1:], fill), x]
    )
    buffers.append(
      EpisodeBuffer(
        id=len(buffers),
        observations=np.concatenate(
          [ds.observations[i, :t], ds.next_observations[i, t - 1 : t]]
        ),
        actions=ds.actions[i, :t],
        rewards=ds.rewards[i, :t],
        terminations=term,
        truncations=trunc,
        infos={
          "success": first(ds.success[i, :t], False),
          "pose": first(ds.poses[i, :t].reshape(t, p), np.nan),
          "noise_std": np.full(t + 1, ds.noise_std[i], np.float32),
          "random": np.full(t + 1, ds.random[i]),
          "policy_step": np.full(t + 1, ds.policy_step[i], np.int32),
        },
      )
    )
  o, a = ds.observations.shape[-1], ds.actions.shape[-1]
  return minari.create_dataset_from_buffers(
    minari_id,
    buffers,
    observation_space=gym.spaces.Box(-np.inf, np.inf, (o,), np.float32),
    action_space=gym.spaces.Box(-1.0, 1.0, (a,), np.float32),
    algorithm_name="erljax.collect",
    description=description or f"erljax episodes of task {ds.task}",
  )


def from_minari(
  minari_id: str, task: str, metadata: Optional[Dict[str, Any]] = None
) -> dataset_lib.EpisodeDataset:
  """The Minari dataset `minari_id` as an EpisodeDataset of `task`: its
  episodes padded to the longest (valid marks the steps), the erljax fields
  from `infos` where present (see the module docstring)."""
  minari = _minari()
  episodes = list(minari.load_dataset(minari_id).iterate_episodes())
  if not episodes:
    raise ValueError(f"Minari dataset {minari_id!r} holds no episodes")
  n, t = len(episodes), max(len(e.rewards) for e in episodes)
  o = np.asarray(episodes[0].observations).shape[-1]
  a = np.asarray(episodes[0].actions).shape[-1]
  infos = episodes[0].infos or {}
  p = np.asarray(infos["pose"]).shape[-1] if "pose" in infos else 0
  out = {
    name: np.zeros((n, t) + extra, dtype)
    for name, dtype, extra in (
      ("observations", np.float32, (o,)),
      ("actions", np.float32, (a,)),
      ("rewards", np.float32, ()),
      ("next_observations", np.float32, (o,)),
      ("terminals", bool, ()),
      ("success", bool, ()),
      ("valid", bool, ()),
      ("poses", np.float32, (p,)),
    )
  }
  per_episode: Dict[str, List[Any]] = {
    "noise_std": [],
    "random": [],
    "policy_step": [],
  }
  defaults = {"noise_std": 0.0, "random": False, "policy_step": 0}
  for i, e in enumerate(episodes):
    k = len(e.rewards)
    obs = np.asarray(e.observations, np.float32)
    out["observations"][i, :k] = obs[:k]
    out["next_observations"][i, :k] = obs[1 : k + 1]
    out["actions"][i, :k] = np.asarray(e.actions)
    out["rewards"][i, :k] = np.asarray(e.rewards)
    out["terminals"][i, :k] = np.asarray(e.terminations)
    out["valid"][i, :k] = True
    info = e.infos or {}
    if "success" in info:
      out["success"][i, :k] = np.asarray(info["success"])[1:]
    if p:
      out["poses"][i, :k] = np.asarray(info["pose"])[1:]
    for key, default in defaults.items():
      per_episode[key].append(
        np.asarray(info[key])[0] if key in info else default
      )
  return dataset_lib.EpisodeDataset(
    task=task,
    **out,
    noise_std=np.asarray(per_episode["noise_std"], np.float32),
    random=np.asarray(per_episode["random"], bool),
    policy_step=np.asarray(per_episode["policy_step"], np.int32),
    metadata={"minari_id": minari_id, **(metadata or {})},
  )


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(
    prog="python -m erljax.minari_io", description=__doc__.split("\n")[0]
  )
  sub = p.add_subparsers(dest="command", required=True)
  ex = sub.add_parser("export", help="an erljax dataset to Minari")
  ex.add_argument("--dataset", required=True, help="erljax dataset folder")
  ex.add_argument("--minari_id", required=True, help="e.g. ns/task/name-v0")
  im = sub.add_parser("import", help="a Minari dataset to erljax")
  im.add_argument("--minari_id", required=True)
  im.add_argument("--task", required=True, help="the erljax task it is of")
  im.add_argument(
    "--out", required=True, help="folder to write the dataset into"
  )
  args = p.parse_args(argv)
  try:
    if args.command == "export":
      ds = dataset_lib.load(args.dataset)
      to_minari(ds, args.minari_id)
      print(f"wrote {ds.num_episodes} episodes as Minari {args.minari_id}")
    else:
      ds = from_minari(args.minari_id, args.task)
      path = dataset_lib.save(ds, args.out)
      print(f"wrote {ds.num_episodes} episodes to {path}")
  except (ImportError, ValueError, OSError) as e:
    print(f"erljax.minari_io: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
