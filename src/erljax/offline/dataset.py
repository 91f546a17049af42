"""Episode datasets on disk: documented `.npz` shards with a JSON header.

A dataset is a directory:

  dataset.json          the header: {"format": "erljax-episodes",
                        "version": 2, "task", "episode_length",
                        "observation_size", "action_size", "pose_size",
                        "num_episodes", "shards": [{"file", "episodes"}]
                        (file: a name inside this directory),
                        "metadata": {...}} (metadata: free-form provenance,
                        e.g. the run the policy came from and the flags)
  episodes_00000.npz    shards of whole episodes, each holding the arrays
  ...                   below for its E episodes of T = episode_length steps
  ratings_<tag>.npz     ratings of the dataset (erljax.offline), if rated

Arrays of a shard (N = E episodes, T steps, O / A / P sizes):

  observations       [N, T, O] float32  observation before each step
  actions            [N, T, A] float32  action taken, in [-1, 1]
  rewards            [N, T]    float32  environment reward of the step
  next_observations  [N, T, O] float32  observation the step reached
  terminals          [N, T]    bool     true termination (no bootstrap)
  success            [N, T]    bool     the task's success signal after it
  valid              [N, T]    bool     step belongs to the episode (False
                                        after a termination ends it early)
  poses              [N, T, P] float32  pose after the step (VecEnv.pose),
                                        what erljax.vision.render draws frames
                                        from
  noise_std          [N]       float32  std of the Gaussian action noise the
                                        episode was collected with
  random             [N]       bool     actions uniform at random (a
                                        deliberately failed episode)
  policy_step        [N]       int32    env steps of the checkpoint whose
                                        actor acted (-1: a random episode)
  header             []        str      the shard's own JSON header (format,
                                        version, task, sizes), so a shard
                                        read alone is still identified

Time-limit ends are not terminal: the last step of an episode has
terminals False and its next_observations, so it bootstraps. `load` checks
every file against the header and raises `DatasetError` naming the file and
the problem for a missing, truncated, corrupted or foreign file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

FORMAT = "erljax-episodes"
VERSION = 2  # 2: per-episode policy_step (episodes from several checkpoints)
HEADER_FILE = "dataset.json"

# name -> (dtype, shape with symbolic sizes N, T, O, A, P)
ARRAYS: Dict[str, Tuple[np.dtype, Tuple[str, ...]]] = {
  "observations": (np.dtype(np.float32), ("N", "T", "O")),
  "actions": (np.dtype(np.float32), ("N", "T", "A")),
  "rewards": (np.dtype(np.float32), ("N", "T")),
  "next_observations": (np.dtype(np.float32), ("N", "T", "O")),
  "terminals": (np.dtype(bool), ("N", "T")),
  "success": (np.dtype(bool), ("N", "T")),
  "valid": (np.dtype(bool), ("N", "T")),
  "poses": (np.dtype(np.float32), ("N", "T", "P")),
  "noise_std": (np.dtype(np.float32), ("N",)),
  "random": (np.dtype(bool), ("N",)),
  "policy_step": (np.dtype(np.int32), ("N",)),
}


class DatasetError(ValueError):
  """A dataset file is missing, truncated, corrupted or not ours; the
  message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class EpisodeDataset:
  """Whole episodes of one task; array fields as in the module docstring."""

  task: str
  observations: np.ndarray
  actions: np.ndarray
  rewards: np.ndarray
  next_observations: np.ndarray
  terminals: np.ndarray
  success: np.ndarray
  valid: np.ndarray
  poses: np.ndarray
  noise_std: np.ndarray
  random: np.ndarray
  policy_step: np.ndarray
  metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    sizes = {
      "N": self.observations.shape[0],
      "T": self.observations.shape[1],
      "O": self.observations.shape[2],
      "A": self.actions.shape[-1],
      "P": self.poses.shape[-1],
    }
    for name in ARRAYS:
      problem = _check_array(name, getattr(self, name), sizes)
      if problem:
        raise ValueError(f"EpisodeDataset: {problem}")

  @property
  def num_episodes(self) -> int:
    return int(self.observations.shape[0])

  @property
  def episode_length(self) -> int:
    return int(self.observations.shape[1])

  @property
  def episode_return(self) -> np.ndarray:
    """[N] sum of the env rewards of each episode's valid steps."""
    return np.sum(np.where(self.valid, self.rewards, 0.0), axis=1)

  @property
  def episode_success(self) -> np.ndarray:
    """[N] bool: success at any valid step (as erljax evaluates)."""
    return np.any(self.success & self.valid, axis=1)

  def header(self) -> Dict[str, Any]:
    return {
      "format": FORMAT,
      "version": VERSION,
      "task": self.task,
      "episode_length": self.episode_length,
      "observation_size": int(self.observations.shape[2]),
      "action_size": int(self.actions.shape[2]),
      "pose_size": int(self.poses.shape[2]),
    }

  def episodes(self, idx: np.ndarray | slice) -> "EpisodeDataset":
    """The episodes idx, as a dataset of their own."""
    return dataclasses.replace(
      self, **{name: getattr(self, name)[idx] for name in ARRAYS}
    )

  def transitions(self) -> Dict[str, np.ndarray]:
    """The valid steps, flattened in episode order: each array [M, ...],
    plus "discount" [M] float32 (0 at true terminations, else 1) and
    "episode" [M] int32 (the episode each step came from)."""
    v = self.valid.reshape(-1)
    flat = lambda x: x.reshape((v.size,) + x.shape[2:])[v]
    out = {
      name: flat(getattr(self, name))
      for name in (
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "terminals",
        "success",
        "poses",
      )
    }
    out["discount"] = 1.0 - out["terminals"].astype(np.float32)
    episode = np.broadcast_to(
      np.arange(self.num_episodes)[:, None], self.valid.shape
    )
    out["episode"] = flat(episode).astype(np.int32)
    return out


def _check_array(name: str, value: Any, sizes: Dict[str, int]) -> Optional[str]:
  """None if array `name` has its dtype and shape, else what is wrong."""
  dtype, dims = ARRAYS[name]
  if not isinstance(value, np.ndarray):
    return f"array {name!r} is a {type(value).__name__}, not an ndarray"
  if value.dtype != dtype:
    return f"array {name!r} has dtype {value.dtype}, expected {dtype}"
  want = tuple(sizes[d] for d in dims)
  if value.shape != want:
    shape = "[" + ", ".join(f"{d}={sizes[d]}" for d in dims) + "]"
    return f"array {name!r} has shape {value.shape}, expected {shape}"
  return None


def save(
  dataset: EpisodeDataset, directory: str, episodes_per_shard: int = 100
) -> str:
  """Writes `dataset` into `directory` (created; an existing dataset there
  is an error). Returns the header file's path."""
  if episodes_per_shard < 1:
    raise ValueError(f"episodes_per_shard={episodes_per_shard}: must be >= 1")
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, HEADER_FILE)
  if os.path.exists(path):
    raise FileExistsError(f"{path} exists: choose a new directory")
  header = dataset.header()
  shards: List[Dict[str, Any]] = []
  for i, start in enumerate(range(0, dataset.num_episodes, episodes_per_shard)):
    part = dataset.episodes(slice(start, start + episodes_per_shard))
    name = f"episodes_{i:05d}.npz"
    tmp = os.path.join(directory, name + ".tmp.npz")
    np.savez(
      tmp,
      header=np.asarray(json.dumps(header)),
      **{k: getattr(part, k) for k in ARRAYS},
    )
    os.replace(tmp, os.path.join(directory, name))
    shards.append({"file": name, "episodes": part.num_episodes})
  full = {
    **header,
    "num_episodes": dataset.num_episodes,
    "shards": shards,
    "metadata": dataset.metadata,
  }
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(full, f, indent=2)
  os.replace(tmp, path)
  return path


def read_header(directory: str) -> Dict[str, Any]:
  """The validated dataset.json of a dataset directory."""
  path = os.path.join(directory, HEADER_FILE)
  if not os.path.isfile(path):
    raise DatasetError(
      f"{path}: no such file (not an erljax dataset "
      "directory; write one with python -m erljax.collect)"
    )
  try:
    with open(path) as f:
      header = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DatasetError(f"{path}: unreadable header ({e})") from e
  _check_header(path, header)
  for key in ("num_episodes", "shards", "metadata"):
    if key not in header:
      raise DatasetError(f"{path}: header lacks {key!r}")
  shards = header["shards"]
  if (
    not isinstance(shards, list)
    or not shards
    or not all(
      isinstance(s, dict)
      and isinstance(s.get("file"), str)
      and isinstance(s.get("episodes"), int)
      for s in shards
    )
  ):
    raise DatasetError(
      f"{path}: 'shards' must be a non-empty list of "
      "{'file': name, 'episodes': count}"
    )
  for s in shards:
    name = s["file"]
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
      raise DatasetError(
        f"{path}: shard file {name!r} must be a relative path inside the "
        "dataset directory (no '..')"
      )
  total = sum(s["episodes"] for s in shards)
  if total != header["num_episodes"]:
    raise DatasetError(
      f"{path}: shards hold {total} episodes, the header "
      f"says num_episodes={header['num_episodes']}"
    )
  return header


_SIZE_KEYS = ("episode_length", "observation_size", "action_size", "pose_size")


def _check_header(path: str, header: Any) -> None:
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    got = header.get("format") if isinstance(header, dict) else header
    raise DatasetError(
      f"{path}: format {got!r} is not {FORMAT!r} (a foreign file)"
    )
  if header.get("version") != VERSION:
    raise DatasetError(
      f"{path}: format version {header.get('version')!r}; "
      f"this erljax reads version {VERSION}"
    )
  for key in ("task",) + _SIZE_KEYS:
    if key not in header:
      raise DatasetError(f"{path}: header lacks {key!r}")
  for key in _SIZE_KEYS:
    value = header[key]
    if not isinstance(value, int) or value < (1 if key != "pose_size" else 0):
      raise DatasetError(f"{path}: header {key}={value!r} is not a valid size")


def _load_shard(
  path: str, header: Dict[str, Any], episodes: int
) -> Dict[str, np.ndarray]:
  """The arrays of one shard, checked against the dataset header."""
  if not os.path.isfile(path):
    raise DatasetError(f"{path}: shard listed in {HEADER_FILE} is missing")
  try:
    with np.load(path, allow_pickle=False) as z:
      names = set(z.files)
      if "header" not in names:
        raise DatasetError(
          f"{path}: no 'header' array (a foreign .npz, not "
          "an erljax dataset shard)"
        )
      try:
        own = json.loads(str(z["header"]))
      except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: its 'header' is not JSON ({e})") from e
      _check_header(path, own)
      for key in ("task",) + _SIZE_KEYS:
        if own[key] != header[key]:
          raise DatasetError(
            f"{path}: shard {key}={own[key]!r} differs from "
            f"{HEADER_FILE}'s {header[key]!r}"
          )
      missing = sorted(set(ARRAYS) - names)
      if missing:
        raise DatasetError(f"{path}: missing arrays {missing}")
      arrays = {k: z[k] for k in ARRAYS}
  except DatasetError:
    raise
  except (
    OSError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    KeyError,
  ) as e:  # truncated or corrupted zip / npy data
    raise DatasetError(
      f"{path}: truncated or corrupted ({type(e).__name__}: {e})"
    ) from e
  sizes = {
    "N": episodes,
    "T": header["episode_length"],
    "O": header["observation_size"],
    "A": header["action_size"],
    "P": header["pose_size"],
  }
  for name, value in arrays.items():
    problem = _check_array(name, value, sizes)
    if problem:
      raise DatasetError(f"{path}: {problem}")
  for name in (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "poses",
    "noise_std",
  ):
    if not np.all(np.isfinite(arrays[name])):
      raise DatasetError(f"{path}: array {name!r} holds non-finite values")
  return arrays


def load(directory: str) -> EpisodeDataset:
  """Reads and validates a dataset directory written by `save`."""
  header = read_header(directory)
  parts = [
    _load_shard(os.path.join(directory, s["file"]), header, s["episodes"])
    for s in header["shards"]
  ]
  arrays = {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS}
  return EpisodeDataset(
    task=header["task"], metadata=header["metadata"], **arrays
  )
