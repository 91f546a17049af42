"""The offline path end to end at toy size: train, collect, rate, learn, IQL.

One tiny SAC run on the point task gives the policy; everything after it
shares one module-scoped dataset. Figures mean nothing at this size.
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import point_env  # pylint: disable=wrong-import-position

from erljax import collect  # pylint: disable=wrong-import-position
from erljax.config import defaults as config_lib  # pylint: disable=wrong-import-position
from erljax.offline import dataset  # pylint: disable=wrong-import-position
from erljax.offline import run as offline  # pylint: disable=wrong-import-position
from erljax.offline import config as offline_config  # pylint: disable=wrong-import-position
from erljax.offline import reward as offline_reward  # pylint: disable=wrong-import-position
from erljax.online import policy  # pylint: disable=wrong-import-position
from erljax.online import runner  # pylint: disable=wrong-import-position


def _tiny(method, data_dir, workdir=""):
  c = offline_config.default_config(point_env.register(), method)
  c.dataset = str(data_dir)
  c.workdir = str(workdir)
  c.num_seeds = 2
  c.iql.hidden_sizes = (16,)
  c.iql.batch_size = 32
  c.reward.hidden_sizes = (16,)
  c.reward.max_epochs = 2
  c.offline.steps = 20
  c.offline.log_every = 10
  c.offline.eval_every = 20
  c.offline.num_eval_envs = 3
  c.tensorboard = False
  c.progress = False
  return c


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
  """(dataset directory, the policies of its two checkpoints)."""
  run_dir = tmp_path_factory.mktemp("sac")
  c = config_lib.default()
  c.task = point_env.register()
  c.num_envs, c.total_steps, c.seed_steps = 2, 40, 20
  c.log_every = c.eval_every = 20
  c.batch_size, c.sac.hidden_sizes, c.num_eval_envs = 8, (8,), 1
  c.replay_capacity, c.workdir = 64, str(run_dir)
  c.checkpoint.every = 20  # checkpoints at 20 and 40: two demonstrators
  c.tensorboard = c.progress = False
  runner.run(c, log=lambda _: None)
  assert policy.checkpoint_steps(str(run_dir)) == [20, 40]
  loaded = [policy.load(str(run_dir), step=s) for s in (20, 40)]
  out = tmp_path_factory.mktemp("data")
  ds, _ = collect.collect_run(
    str(run_dir),
    str(out),
    episodes=10,
    steps=["all"],
    noise_stds=[0.0, 0.5],
    random_fraction=0.2,
    episodes_per_shard=5,
  )
  assert ds.metadata["checkpoint_steps"] == [20, 40]
  return out, loaded


@pytest.fixture(scope="module")
def data_dir(collected):
  return collected[0]


def test_collected_dataset(collected):
  data_dir, loaded = collected
  ds = dataset.load(str(data_dir))
  assert ds.num_episodes == 10 and ds.episode_length == 10
  np.testing.assert_array_equal(ds.random, [True] * 2 + [False] * 8)
  np.testing.assert_array_equal(ds.policy_step, [-1] * 2 + [20, 20, 40, 40] * 2)
  assert np.all(np.abs(ds.actions) <= 1.0)
  # Observations chain within an episode (no reset inside it).
  np.testing.assert_allclose(
    ds.observations[:, 1:], ds.next_observations[:, :-1]
  )
  # A noise-free episode holds its own checkpoint's deterministic actions,
  # and the two checkpoints act differently.
  for i, step in ((2, 20), (4, 40)):
    assert ds.noise_std[i] == 0.0 and ds.policy_step[i] == step
    p = loaded[0 if step == 20 else 1]
    own = p.trainer.agent.deterministic_action(
      p.seed_params, ds.observations[i]
    )
    np.testing.assert_allclose(ds.actions[i], own, atol=1e-5)
    other = loaded[1 if step == 20 else 0]
    theirs = other.trainer.agent.deterministic_action(
      other.seed_params, ds.observations[i]
    )
    assert np.abs(ds.actions[i] - theirs).max() > 1e-3
  # random + 2 checkpoints x 2 stds
  assert len(collect.summary(ds)) == 5


def test_collect_run_errors_name_the_value(collected, tmp_path):
  run_dir = collected[1][0].workdir
  with pytest.raises(ValueError, match=r"no checkpoint at step 30.*\[20, 40\]"):
    collect.collect_run(run_dir, str(tmp_path / "a"), steps=["30"])
  with pytest.raises(ValueError, match="random_fraction=2.0"):
    collect.collect_run(run_dir, str(tmp_path / "b"), random_fraction=2.0)
  with pytest.raises(FileExistsError, match="already holds a dataset"):
    collect.collect_run(run_dir, str(collected[0]))
  with pytest.raises(FileNotFoundError, match="no such directory"):
    collect.collect_run(str(tmp_path), str(tmp_path / "c"))


def test_rate_once_then_from_the_file(data_dir):
  c = _tiny("erlvlm_iql", data_dir)
  c.rating.queries = 50
  data = dataset.load(str(data_dir)).transitions()
  logs = []
  index, ratings, info = offline_reward.rate_dataset(
    c, str(data_dir), data, logs.append
  )
  assert not info["cached"] and index.shape == (50,)
  assert info["answered"] == 50 and info["dropped"] == 0
  index2, ratings2, info2 = offline_reward.rate_dataset(
    c, str(data_dir), data, logs.append
  )
  assert info2["cached"] and info2["path"] == info["path"]
  np.testing.assert_array_equal(index2, index)
  np.testing.assert_array_equal(ratings2.labels, ratings.labels)
  # Another rater (noise) gets its own file.
  c.rater.noise = 0.0
  _, _, info3 = offline_reward.rate_dataset(c, str(data_dir), data, logs.append)
  assert info3["path"] != info["path"]


def test_dropped_ratings_never_become_labels(data_dir):
  c = _tiny("erlvlm_iql", data_dir)
  data = dataset.load(str(data_dir)).transitions()
  m = data["rewards"].shape[0]
  index = np.arange(m)
  labels = (data["rewards"] > np.median(data["rewards"])).astype(np.int64)
  answered = np.arange(m) % 3 != 0
  ratings = offline_reward.raters_lib.Ratings(
    labels=np.where(answered, labels, -1), answered=answered
  )
  _, rewards, info = offline_reward.learn_reward(
    c, data, index, ratings, jax.random.split(jax.random.PRNGKey(0), 2)
  )
  assert rewards.shape == (2, m)
  assert sum(info["label_histogram"]) == int(answered.sum())


def test_erlvlm_iql_run_with_workdir(data_dir, tmp_path):
  summary = offline.run(
    _tiny("erlvlm_iql", data_dir, tmp_path), log=lambda _: None
  )
  assert summary["grad_steps"] == 20
  assert len(summary["eval_success_per_seed"]) == 2
  assert np.all(np.isfinite(summary["eval_return_per_seed"]))
  assert summary["ratings"]["answered"] > 0
  for name in ("final.json", "metrics.jsonl", "eval.csv", "config.json"):
    assert os.path.exists(tmp_path / name)
  with open(tmp_path / "final.json") as f:
    assert json.load(f)["method"] == "erlvlm_iql"
  assert os.listdir(tmp_path / "checkpoints")
  # A resumed run restores the last checkpoint and has nothing left to do.
  c = _tiny("erlvlm_iql", data_dir, tmp_path)
  c.resume = True
  again = offline.run(c, log=lambda _: None)
  assert again["eval_return_per_seed"] == summary["eval_return_per_seed"]
  assert again["ratings"]["cached"]
  with open(tmp_path / "run_info.json") as f:  # erljax.io.provenance
    assert [s["resumed"] for s in json.load(f)["starts"]] == [False, True]


@pytest.mark.parametrize("method", ["bc", "sparse_iql"])
def test_other_methods_map_seed_axis(data_dir, method):
  c = _tiny(method, data_dir)
  c.offline.seed_axis = "map"
  summary = offline.run(c, log=lambda _: None)
  assert len(summary["eval_return_per_seed"]) == 2


def test_config_errors_name_key_and_value(data_dir):
  with pytest.raises(config_lib.ConfigError, match="config.method='ppo'"):
    offline_config.default_config("pusher", "ppo")
  c = _tiny("true_iql", data_dir)
  c.iql.expectile = 1.5
  with pytest.raises(config_lib.ConfigError, match="config.iql.expectile=1.5"):
    offline_config.validate(c)
  c = _tiny("true_iql", data_dir)
  c.offline.steps = 25
  with pytest.raises(config_lib.ConfigError, match="config.offline.steps=25"):
    offline_config.validate(c)
  c = _tiny("true_iql", data_dir)
  c.reward.source = "learned"
  with pytest.raises(config_lib.ConfigError, match="config.reward.source"):
    offline_config.validate(c)


def test_normalize_rewards():
  r = np.array([[0.0, 2.0, 1.0], [5.0, 5.0, 5.0]])
  np.testing.assert_allclose(
    offline.normalize_rewards(r, "minmax"), [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]
  )
  np.testing.assert_allclose(offline.normalize_rewards(r, "none"), r)
  # Episodes [0, 0, 1]: seed 0 returns 2 and 1 -> x1000 / 1; seed 1 returns
  # 10 and 5 -> x1000 / 5.
  episode = np.array([0, 0, 1])
  np.testing.assert_allclose(
    offline.normalize_rewards(r, "returns", episode),
    [[0.0, 2000.0, 1000.0], [1000.0, 1000.0, 1000.0]],
  )
  # Equal returns: left unscaled.
  np.testing.assert_allclose(
    offline.normalize_rewards(
      np.ones((1, 4)), "returns", np.array([0, 0, 1, 1])
    ),
    np.ones((1, 4)),
  )


def _ratings_file(path, desc, index):
  q = len(index)
  np.savez(
    path,
    header=np.asarray(
      json.dumps(
        {
          "format": offline_reward.RATINGS_FORMAT,
          "version": offline_reward.RATINGS_VERSION,
          "rater": desc,
        }
      )
    ),
    index=np.asarray(index, np.int64),
    labels=np.zeros(q, np.int64),
    answered=np.ones(q, bool),
  )


@pytest.mark.parametrize(
  "index", [[-1, 2], [0, 10], [3, 3]], ids=["negative", "past_end", "twice"]
)
def test_ratings_file_indices_are_range_checked(tmp_path, index):
  desc = {"backend": "scripted", "transitions": 10}
  path = str(tmp_path / "r.npz")
  _ratings_file(path, desc, index)
  with pytest.raises(dataset.DatasetError, match=r"index .* 10 transitions"):
    offline_reward.load_ratings(path, desc, 10)
  _ratings_file(path, desc, [0, 9])
  got, _ = offline_reward.load_ratings(path, desc, 10)
  np.testing.assert_array_equal(got, [0, 9])


def test_dropped_queries_are_asked_again_on_the_next_run(data_dir, monkeypatch):
  """A service that drops a third of the queries: the file stores what was
  answered, the next run asks only the dropped ones and fills them in."""
  c = _tiny("erlvlm_iql", data_dir)
  c.rating.queries = 30
  c.rating.seed = 7  # a ratings file of its own
  data = dataset.load(str(data_dir)).transitions()
  ask_all = offline_reward._ask_all
  asked = []

  def flaky(config, data, index, log):
    got = ask_all(config, data, index, log)
    asked.append(index)
    if len(asked) > 1:
      return got
    answered = got.answered & (np.arange(index.size) % 3 != 0)
    return offline_reward.raters_lib.Ratings(
      labels=np.where(answered, got.labels, -1), answered=answered
    )

  monkeypatch.setattr(offline_reward, "_ask_all", flaky)
  logs = []
  index, ratings, info = offline_reward.rate_dataset(
    c, str(data_dir), data, logs.append
  )
  assert info["dropped"] == 10 and ratings.num_answered == 20
  assert any("10 dropped" in ln and "asked again" in ln for ln in logs), logs
  index2, ratings2, info2 = offline_reward.rate_dataset(
    c, str(data_dir), data, logs.append
  )
  np.testing.assert_array_equal(asked[1], index[~ratings.answered])
  np.testing.assert_array_equal(index2, index)
  assert info2["dropped"] == 0 and ratings2.answered.all()
  kept = ratings.answered
  np.testing.assert_array_equal(ratings2.labels[kept], ratings.labels[kept])
  # Now whole: the third run reads the file and asks nothing.
  _, ratings3, info3 = offline_reward.rate_dataset(
    c, str(data_dir), data, logs.append
  )
  assert len(asked) == 2 and info3["cached"]
  np.testing.assert_array_equal(ratings3.labels, ratings2.labels)
