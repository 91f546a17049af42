"""experiments/refit_ratings.py on the checkpoint of a tiny rated run."""

import json
import os
import sys

import numpy as np
import pytest

from erljax.online import runner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(
  0,
  os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments"),
)
# pylint: disable=wrong-import-position
import refit_ratings  # noqa: E402
from test_trainer import learned_config  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  c = learned_config(200, 2, queries=20, budget=60, warmup_updates=2)
  c.workdir = str(tmp_path_factory.mktemp("rated"))
  runner.run(c, log=lambda _: None)
  return c.workdir


def test_noise_free_labels_are_the_stored_ones(run_dir):
  config, rs, buf = refit_ratings.load(run_dir)
  sizes = np.asarray(rs.size)
  assert sizes.tolist() == [60, 60]
  assert buf["obs"].shape[:2] == (2, 100)  # replay_capacity of the run
  clean = refit_ratings.noisy_labels(config, rs, 0.0, seed=0)
  np.testing.assert_array_equal(clean[:, :60], np.asarray(rs.label)[:, :60])
  noisy = refit_ratings.noisy_labels(config, rs, 0.5, seed=0)
  changed = np.mean(noisy[:, :60] != clean[:, :60])
  assert 0.3 < changed < 0.7


def test_refit_writes_one_row_per_noise_and_variant(run_dir, tmp_path):
  out = refit_ratings.main(
    [
      run_dir,
      "--noise=0,0.3",
      "--epochs=2",
      "--variants=erlvlm,rbrl",
      f"--out={tmp_path / 'refit'}",
    ]
  )
  rows = [(r["noise"], r["variant"]) for r in out["results"]]
  assert rows == [
    (0.0, "erlvlm"),
    (0.0, "rbrl"),
    (0.3, "erlvlm"),
    (0.3, "rbrl"),
  ]
  for r in out["results"]:
    assert len(r["corr"]) == 2 and np.all(np.isfinite(r["corr"]))
  saved = json.loads((tmp_path / "refit.json").read_text())
  assert saved["ratings_per_seed"] == [60, 60]
  assert (tmp_path / "refit.md").read_text().count("| 0.30 |") == 2


def test_refit_rejects_a_run_on_the_env_reward(tmp_path):
  d = tmp_path / "sac"
  d.mkdir()
  from erljax.config import defaults as config_lib  # pylint: disable=g-import-not-at-top

  (d / "config.json").write_text(config_lib.default().to_json_best_effort())
  with pytest.raises(ValueError, match="reward.source='env'"):
    refit_ratings.load(str(d))
