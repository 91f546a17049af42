"""examples/sac_minimal.py: its SAC update against erljax.agents.sac's, a whole
tiny run with two seeds vmapped, and its config checks."""

import dataclasses
import importlib.util
import os
import sys

import jax
import numpy as np
import pytest

from erljax.agents import replay
from erljax.agents import sac

sys.path.insert(0, os.path.dirname(__file__))
import point_env  # pylint: disable=wrong-import-position


_PATH = os.path.join(
  os.path.dirname(__file__), "..", "examples", "sac_minimal.py"
)


def _example():
  """The example file as a module (dataclasses need it in sys.modules)."""
  if "sac_minimal" not in sys.modules:
    spec = importlib.util.spec_from_file_location("sac_minimal", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sac_minimal"] = module
    spec.loader.exec_module(module)
  return sys.modules["sac_minimal"]


def test_example_update_is_sacs_bit_for_bit():
  # The algorithm the example holds computes what erljax.agents.sac.SAC.update
  # does: the same state and metrics, bit for bit, over three updates (the
  # second moves the target critic, target_update_period=2).
  agent = sac.SAC(3, 2, sac.SACHyper(hidden_sizes=(8, 8)))
  keys = jax.random.split(jax.random.PRNGKey(0), 9)
  batch = replay.Transition(
    obs=jax.random.normal(keys[0], (16, 3)),
    action=jax.random.uniform(keys[1], (16, 2), minval=-1.0, maxval=1.0),
    reward=jax.random.normal(keys[2], (16,)),
    true_reward=jax.random.normal(keys[3], (16,)),
    discount=(jax.random.uniform(keys[4], (16,)) > 0.2).astype(np.float32),
    next_obs=jax.random.normal(keys[5], (16, 3)),
  )
  ours = jax.jit(_example().make_update(agent))
  theirs = jax.jit(agent.update)
  mine = want = agent.init(keys[6])
  for key in (keys[7], keys[8], keys[7]):
    mine, m = ours(mine, batch, key)
    want, w = theirs(want, batch, key)
    assert set(m) <= set(w)
    for k in m:
      np.testing.assert_array_equal(m[k], w[k], err_msg=k)
    leaves = jax.tree_util.tree_leaves_with_path(mine)
    for (path, a), b in zip(leaves, jax.tree_util.tree_leaves(want)):
      np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  assert int(mine.steps) == 3
  # The target critic moved (at the second update).
  assert not np.array_equal(
    jax.tree_util.tree_leaves(mine.target_critic_params)[0],
    jax.tree_util.tree_leaves(agent.init(keys[6]).target_critic_params)[0],
  )


def test_two_seeds_train_in_one_program():
  ex = _example()
  config = dataclasses.replace(
    ex.Config(),
    task=point_env.register(),
    episode_length=10,
    num_envs=4,
    num_eval_envs=2,
    seed_steps=40,
    eval_every=80,
    num_chunks=4,
    batch_size=16,
    updates_per_step=1,
    hidden_sizes=(8, 8),
  )
  metrics = jax.jit(jax.vmap(ex.make_train(config)))(
    jax.random.split(jax.random.PRNGKey(0), 2)
  )
  assert set(metrics) == {
    "env_steps",
    "eval_return",
    "train_return",
    "critic_loss",
    "alpha",
  }
  for name, value in metrics.items():
    assert value.shape == (2, 4), name
    assert np.all(np.isfinite(value)), name
  np.testing.assert_array_equal(metrics["env_steps"][0], [120, 200, 280, 360])
  assert not np.array_equal(
    metrics["eval_return"][0], metrics["eval_return"][1]
  )
  assert not np.array_equal(
    metrics["critic_loss"][0], metrics["critic_loss"][1]
  )


@pytest.mark.parametrize(
  "bad",
  [
    dict(seed_steps=42),  # not a multiple of num_envs
    dict(eval_every=78),  # neither
    dict(num_chunks=0),  # nothing to learn
    dict(task="no_such_task"),  # not registered
  ],
)
def test_config_rejects_bad_step_counts(bad):
  ex = _example()
  config = dataclasses.replace(
    ex.Config(), num_envs=4, seed_steps=40, eval_every=80, num_chunks=4
  )
  config.validate()
  assert config.total_steps == 360
  with pytest.raises(ValueError):
    dataclasses.replace(config, **bad).validate()
