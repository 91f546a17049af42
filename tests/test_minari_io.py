"""Minari export and import of episode datasets (erljax.minari_io)."""

import numpy as np
import pytest

from erljax.offline import dataset as dataset_lib
from erljax import minari_io

minari = pytest.importorskip("minari")


def _dataset():
  """3 episodes of 5 steps; episode 1 terminates after 3 steps."""
  rng = np.random.default_rng(0)
  n, t, o, a, p = 3, 5, 4, 2, 3
  valid = np.ones((n, t), bool)
  valid[1, 3:] = False
  terminals = np.zeros((n, t), bool)
  terminals[1, 2] = True
  f = lambda *s: rng.normal(size=s).astype(np.float32)
  states = f(n, t + 1, o)  # one observation sequence per episode
  return dataset_lib.EpisodeDataset(
    task="reacher",
    observations=states[:, :-1].copy(),
    actions=np.clip(f(n, t, a), -1, 1),
    rewards=f(n, t),
    next_observations=states[:, 1:].copy(),
    terminals=terminals,
    success=rng.random((n, t)) < 0.5,
    valid=valid,
    poses=f(n, t, p),
    noise_std=np.array([0.0, 0.3, 0.0], np.float32),
    random=np.array([False, False, True]),
    policy_step=np.array([40, 20, -1], np.int32),
  )


def test_export_reads_in_minari_and_imports_back(tmp_path, monkeypatch):
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  ds = _dataset()
  minari_io.to_minari(ds, "erljax/reacher/test-v0")
  # What Minari itself reads: episodes of their valid length, T + 1
  # observations ending in the last next observation.
  loaded = list(
    minari.load_dataset("erljax/reacher/test-v0").iterate_episodes()
  )
  assert [len(e.rewards) for e in loaded] == [5, 3, 5]
  np.testing.assert_array_equal(
    loaded[1].observations[:3], ds.observations[1, :3]
  )
  np.testing.assert_array_equal(
    loaded[1].observations[3], ds.next_observations[1, 2]
  )
  assert loaded[1].terminations.tolist() == [False, False, True]
  assert loaded[0].truncations.tolist() == [False] * 4 + [True]
  # Back to erljax: the same valid steps, poses and per-episode fields.
  back = minari_io.from_minari("erljax/reacher/test-v0", "reacher")
  assert back.metadata["minari_id"] == "erljax/reacher/test-v0"
  want, got = ds.transitions(), back.transitions()
  assert set(want) == set(got)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  for k in ("noise_std", "random", "policy_step", "valid"):
    np.testing.assert_array_equal(getattr(back, k), getattr(ds, k), err_msg=k)
  # And the CLI writes it in erljax's format.
  out = tmp_path / "imported"
  assert (
    minari_io.main(
      [
        "import",
        "--minari_id=erljax/reacher/test-v0",
        "--task=reacher",
        f"--out={out}",
      ]
    )
    == 0
  )
  np.testing.assert_array_equal(dataset_lib.load(str(out)).poses, back.poses)


def test_export_rejects_broken_observation_sequences(tmp_path, monkeypatch):
  monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
  ds = _dataset()
  ds.next_observations[2, 1] += 1.0
  with pytest.raises(ValueError, match="episode 2: a step's next observ"):
    minari_io.to_minari(ds, "erljax/reacher/bad-v0")
