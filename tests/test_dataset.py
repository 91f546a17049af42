"""The episode dataset format: round trip and the loader's clear errors."""

import json
import os
import zipfile

import numpy as np
import pytest

from erljax import collect
from erljax.offline import dataset


def _dataset(n=3, t=4, o=2, a=2, p=3, task="test_point"):
  rng = np.random.default_rng(0)
  f = lambda *s: rng.normal(size=s).astype(np.float32)
  valid = np.ones((n, t), bool)
  valid[0, 3] = False  # episode 0 terminated at step 2
  terminals = np.zeros((n, t), bool)
  terminals[0, 2] = True
  return dataset.EpisodeDataset(
    task=task,
    observations=f(n, t, o),
    actions=f(n, t, a),
    rewards=f(n, t),
    next_observations=f(n, t, o),
    terminals=terminals,
    success=rng.random((n, t)) < 0.3,
    valid=valid,
    poses=f(n, t, p),
    noise_std=np.array([0.0, 0.5, 0.0], np.float32)[:n],
    random=np.array([False, False, True])[:n],
    policy_step=np.array([100, 200, -1], np.int32)[:n],
    metadata={"note": "test"},
  )


def test_round_trip_over_shards(tmp_path):
  ds = _dataset()
  dataset.save(ds, str(tmp_path), episodes_per_shard=2)
  assert sorted(os.listdir(tmp_path)) == [
    "dataset.json",
    "episodes_00000.npz",
    "episodes_00001.npz",
  ]
  got = dataset.load(str(tmp_path))
  for name in dataset.ARRAYS:
    np.testing.assert_array_equal(getattr(got, name), getattr(ds, name))
  assert got.task == "test_point" and got.metadata == {"note": "test"}
  tr = got.transitions()
  assert tr["observations"].shape == (11, 2)  # 12 steps, one invalid
  np.testing.assert_array_equal(tr["discount"][:3], [1.0, 1.0, 0.0])
  np.testing.assert_array_equal(tr["episode"][:4], [0, 0, 0, 1])
  with pytest.raises(FileExistsError):
    dataset.save(ds, str(tmp_path))


def test_in_memory_shape_errors_name_the_array():
  ds = _dataset()
  with pytest.raises(ValueError, match="'rewards' has shape"):
    dataset.EpisodeDataset(**{**ds.__dict__, "rewards": ds.rewards[:, :2]})


@pytest.fixture
def saved(tmp_path):
  dataset.save(_dataset(), str(tmp_path))
  return tmp_path, os.path.join(tmp_path, "episodes_00000.npz")


def _rewrite(shard, **changes):
  with np.load(shard) as z:
    arrays = {k: z[k] for k in z.files}
  arrays.update(changes)
  for k in [k for k, v in changes.items() if v is None]:
    del arrays[k]
  os.remove(shard)
  np.savez(shard, **arrays)


def test_truncated_shard(saved):
  directory, shard = saved
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.truncate(size // 2)
  with pytest.raises(
    dataset.DatasetError, match=r"episodes_00000\.npz: truncated or corrupted"
  ):
    dataset.load(str(directory))


def test_corrupted_bytes(saved):
  directory, shard = saved
  with open(shard, "r+b") as f:
    f.seek(200)
    f.write(b"\xff" * 64)
  with pytest.raises(dataset.DatasetError, match="episodes_00000.npz"):
    dataset.load(str(directory))


def test_wrong_dtype(saved):
  directory, shard = saved
  with np.load(shard) as z:
    rewards = z["rewards"].astype(np.float64)
  _rewrite(shard, rewards=rewards)
  with pytest.raises(
    dataset.DatasetError, match="'rewards' has dtype float64, expected float32"
  ):
    dataset.load(str(directory))


def test_missing_key(saved):
  directory, shard = saved
  _rewrite(shard, poses=None)
  with pytest.raises(dataset.DatasetError, match=r"missing arrays \['poses'\]"):
    dataset.load(str(directory))


def test_foreign_npz(saved):
  directory, shard = saved
  os.remove(shard)
  np.savez(shard, observations=np.zeros((3, 4, 2)))
  with pytest.raises(dataset.DatasetError, match="foreign"):
    dataset.load(str(directory))


def test_foreign_or_missing_header(tmp_path, saved):
  directory, shard = saved
  with pytest.raises(dataset.DatasetError, match="dataset.json: no such"):
    dataset.load(str(tmp_path / "elsewhere"))
  path = os.path.join(directory, "dataset.json")
  with open(path) as f:
    header = json.load(f)
  with open(path, "w") as f:
    json.dump({**header, "format": "d4rl"}, f)
  with pytest.raises(dataset.DatasetError, match="'d4rl' is not"):
    dataset.load(str(directory))
  with open(path, "w") as f:
    json.dump({**header, "observation_size": 5}, f)
  with pytest.raises(
    dataset.DatasetError, match="shard observation_size=2 differs"
  ):
    dataset.load(str(directory))
  with open(path, "w") as f:
    f.write("{not json")
  with pytest.raises(dataset.DatasetError, match="unreadable header"):
    dataset.load(str(directory))
  os.remove(path)
  assert zipfile.is_zipfile(shard)


def test_missing_shard(saved):
  directory, shard = saved
  os.remove(shard)
  with pytest.raises(dataset.DatasetError, match="shard listed .* is missing"):
    dataset.load(str(directory))


def test_episode_schedule():
  std, random, policy = collect.episode_schedule(10, [0.0, 0.5], 0.2)
  np.testing.assert_array_equal(random, [True] * 2 + [False] * 8)
  np.testing.assert_allclose(std, [0, 0] + [0.0, 0.5] * 4)
  np.testing.assert_array_equal(policy, [-1, -1] + [0] * 8)
  # 2 checkpoints x 2 stds, policy-major: (0, 0) (0, .5) (1, 0) (1, .5) ...
  std, random, policy = collect.episode_schedule(11, [0.0, 0.5], 0.3, 2)
  np.testing.assert_array_equal(random, [True] * 3 + [False] * 8)
  np.testing.assert_allclose(std, [0, 0, 0] + [0.0, 0.5] * 4)
  np.testing.assert_array_equal(policy, [-1] * 3 + [0, 0, 1, 1] * 2)
  assert policy.dtype == np.int32 and std.dtype == np.float32
  with pytest.raises(ValueError, match="random_fraction=1.5"):
    collect.episode_schedule(10, [0.0], 1.5)
  with pytest.raises(ValueError, match="noise_stds"):
    collect.episode_schedule(10, [-1.0], 0.0)
  with pytest.raises(ValueError, match="num_policies=0"):
    collect.episode_schedule(10, [0.0], 0.0, 0)


def test_parse_steps():
  available = [15, 30, 60]
  assert collect.parse_steps(["latest"], available) == [60]
  assert collect.parse_steps([], available) == [60]
  assert collect.parse_steps(["all"], available) == [15, 30, 60]
  assert collect.parse_steps(["30", " 15"], available) == [30, 15]
  with pytest.raises(ValueError, match="no checkpoint at step 45.*15, 30, 60"):
    collect.parse_steps(["15", "45"], available)
  with pytest.raises(ValueError, match="'half' is not an integer"):
    collect.parse_steps(["half"], available)


def test_other_version_is_named(tmp_path):
  dataset.save(_dataset(), str(tmp_path))
  path = os.path.join(tmp_path, dataset.HEADER_FILE)
  with open(path) as f:
    header = json.load(f)
  header["version"] = 1
  with open(path, "w") as f:
    json.dump(header, f)
  with pytest.raises(dataset.DatasetError, match="format version 1"):
    dataset.load(str(tmp_path))


@pytest.mark.parametrize("where", ["absolute", "parent", "nested_parent"])
def test_shard_paths_stay_inside_the_dataset(tmp_path, where):
  """A header cannot point the loader at a file outside its directory."""
  directory = tmp_path / "ds"
  dataset.save(_dataset(), str(directory))
  outside = tmp_path / "elsewhere.npz"
  os.replace(directory / "episodes_00000.npz", outside)
  name = {
    "absolute": str(outside),
    "parent": "../elsewhere.npz",
    "nested_parent": "sub/../../elsewhere.npz",
  }[where]
  path = directory / dataset.HEADER_FILE
  header = json.loads(path.read_text())
  header["shards"][0]["file"] = name
  path.write_text(json.dumps(header))
  with pytest.raises(dataset.DatasetError, match="inside the dataset"):
    dataset.load(str(directory))
