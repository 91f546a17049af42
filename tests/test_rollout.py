"""erljax.envs.rollout: the one evaluator's episode rules, checked against the
recorded episodes on a task whose episodes end early."""

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import point_env  # pylint: disable=wrong-import-position

from erljax.envs import vec_env as envs  # pylint: disable=wrong-import-position
from erljax.envs import rollout  # pylint: disable=wrong-import-position
from erljax.envs import tasks  # pylint: disable=wrong-import-position

_NAME = "test_point_terminating"


class _TerminatingPoint(point_env.PointEnv):
  """The point task, ending (a true termination) within 0.35 of the
  origin; the vectorized env then auto-resets it to a random position."""

  def step(self, state, action):
    state = super().step(state, action)
    return state.replace(done=(-state.reward < 0.35).astype(jnp.float32))


def _env(n):
  """n envs of the terminating point task (success: within 0.4), 10 steps."""
  if _NAME not in tasks.task_names():
    tasks.register(
      dataclasses.replace(
        tasks.get_task(point_env.register()),
        name=_NAME,
        make_env=_TerminatingPoint,
        success_fn=lambda s: -s.metrics["dist"] < 0.4,
      )
    )
  return envs.make_vec_env(_NAME, n, 10)


def test_evaluate_counts_each_episode_up_to_its_termination():
  env = _env(16)
  policy = lambda obs: -0.5 * obs  # 5% closer to the origin a step
  key = jax.random.PRNGKey(0)
  # rollout() resets with the first half of its key's split.
  ev = jax.jit(lambda k: rollout.evaluate(env, policy, k))(
    jax.random.split(key)[0]
  )
  rec = jax.jit(lambda k: rollout.rollout(env, lambda o, _: policy(o), k))(key)
  valid = np.asarray(rec.valid)
  reward, success = np.asarray(rec.reward), np.asarray(rec.success)
  # The case the rules are for: some episodes end early and their envs go
  # on from a reset, whose rewards and successes must not count.
  assert 0 < np.sum(~valid[:, -1]) < 16
  assert not np.allclose(np.sum(reward, 1), np.sum(reward * valid, 1))
  np.testing.assert_allclose(
    ev["eval_return_episodes"],
    np.sum(np.where(valid, reward, 0.0), 1),
    rtol=1e-6,
  )
  np.testing.assert_array_equal(
    ev["eval_success_episodes"], np.any(valid & success, 1).astype(float)
  )
  assert 0.0 < float(ev["eval_success"]) < 1.0
  np.testing.assert_allclose(
    ev["eval_return"], np.mean(ev["eval_return_episodes"]), rtol=1e-6
  )
  assert ev["eval_return_episodes"].shape == (16,)
