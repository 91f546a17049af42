"""SAC pieces against values computed by hand (numpy formulas)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.agents import networks
from erljax.agents import sac as sac_lib
from erljax.agents.replay import Transition

OBS, ACT, B = 3, 2, 4


def _agent(**kw):
  return sac_lib.SAC(OBS, ACT, sac_lib.SACHyper(hidden_sizes=(8, 8), **kw))


def _const_critic(agent, q_values):
  """Critic params whose twin Qs output the constants q_values[i]."""
  params = agent.critic.init(
    jax.random.PRNGKey(0), jnp.zeros((1, OBS)), jnp.zeros((1, ACT))
  )
  params = jax.tree_util.tree_map(jnp.zeros_like, params)
  mlp = params["params"]["VmapMLP_0"]
  last = sorted(mlp, key=lambda k: int(k.split("_")[-1]))[-1]
  mlp[last]["bias"] = jnp.asarray(q_values, jnp.float32).reshape(2, 1)
  return params


def _const_actor(agent, mean, raw_log_std):
  params = agent.actor.init(jax.random.PRNGKey(0), jnp.zeros((1, OBS)))
  params = jax.tree_util.tree_map(jnp.zeros_like, params)
  mlp = params["params"]["MLP_0"]
  last = sorted(mlp, key=lambda k: int(k.split("_")[-1]))[-1]
  mlp[last]["bias"] = jnp.concatenate(
    [jnp.asarray(mean, jnp.float32), jnp.asarray(raw_log_std, jnp.float32)]
  )
  return params


def _np_log_std(raw, lo=-5.0, hi=2.0):
  return lo + 0.5 * (hi - lo) * (np.tanh(raw) + 1.0)


def _np_sample(mean, log_std, key, n):
  noise = np.asarray(jax.random.normal(key, (n, ACT)))
  u = mean + np.exp(log_std) * noise
  logp = np.sum(
    -0.5 * noise**2
    - log_std
    - 0.5 * np.log(2 * np.pi)
    - np.log(1.0 - np.tanh(u) ** 2),
    axis=-1,
  )
  return np.tanh(u), logp


def _batch(reward, discount):
  return Transition(
    obs=jnp.ones((B, OBS)),
    action=jnp.zeros((B, ACT)),
    reward=jnp.asarray(reward, jnp.float32),
    true_reward=jnp.zeros((B,)),
    discount=jnp.asarray(discount, jnp.float32),
    next_obs=jnp.ones((B, OBS)),
  )


def test_squashed_gaussian_matches_change_of_variables():
  mean = np.array([[0.3, -1.2], [2.0, 0.0]], np.float32)
  log_std = np.array([[-0.5, 0.1], [0.0, -2.0]], np.float32)
  key = jax.random.PRNGKey(3)
  a, logp = networks.squashed_gaussian_sample(
    jnp.asarray(mean), jnp.asarray(log_std), key
  )
  noise = np.asarray(jax.random.normal(key, mean.shape))
  u = mean + np.exp(log_std) * noise
  expect = np.sum(
    -0.5 * noise**2
    - log_std
    - 0.5 * math.log(2 * math.pi)
    - np.log(1 - np.tanh(u) ** 2),
    -1,
  )
  np.testing.assert_allclose(a, np.tanh(u), rtol=1e-6)
  np.testing.assert_allclose(logp, expect, rtol=1e-4, atol=1e-4)


def test_log_prob_stays_finite_when_action_saturates():
  a, logp = networks.squashed_gaussian_sample(
    jnp.full((1, 2), 30.0), jnp.full((1, 2), -5.0), jax.random.PRNGKey(0)
  )
  assert np.all(np.isfinite(logp)) and np.all(np.abs(a) <= 1.0)


def test_actor_log_std_is_bounded():
  agent = _agent()
  params = _const_actor(agent, [0.0, 0.0], [-100.0, 100.0])
  _, log_std = agent.actor.apply(params, jnp.ones((1, OBS)))
  np.testing.assert_allclose(log_std, [[-5.0, 2.0]], atol=1e-6)
  params = _const_actor(agent, [0.0, 0.0], [0.0, 0.5])
  _, log_std = agent.actor.apply(params, jnp.ones((1, OBS)))
  np.testing.assert_allclose(
    log_std[0], _np_log_std(np.array([0.0, 0.5])), rtol=1e-5
  )


def test_critic_loss_against_hand_computation():
  agent = _agent(discount=0.9, init_temperature=0.1)
  mean, raw = np.array([0.2, -0.4]), np.array([0.3, -0.1])
  actor = _const_actor(agent, mean, raw)
  critic = _const_critic(agent, [1.0, 2.0])
  target = _const_critic(agent, [0.5, 0.8])
  reward = np.array([1.0, -1.0, 0.5, 0.0], np.float32)
  discount = np.array([1.0, 1.0, 0.0, 1.0], np.float32)
  key = jax.random.PRNGKey(7)
  loss, aux = agent.critic_loss(
    critic, target, actor, jnp.log(0.1), _batch(reward, discount), key
  )
  _, next_logp = _np_sample(mean, _np_log_std(raw), key, B)
  y = reward + 0.9 * discount * (min(0.5, 0.8) - 0.1 * next_logp)
  expect = 0.5 * (np.mean((1.0 - y) ** 2) + np.mean((2.0 - y) ** 2))
  np.testing.assert_allclose(loss, expect, rtol=1e-5)
  np.testing.assert_allclose(aux["target_q"], np.mean(y), rtol=1e-5)


def test_actor_loss_against_hand_computation():
  agent = _agent()
  mean, raw = np.array([0.5, 0.1]), np.array([-0.2, 0.4])
  actor = _const_actor(agent, mean, raw)
  critic = _const_critic(agent, [3.0, -1.5])
  key = jax.random.PRNGKey(11)
  loss, aux = agent.actor_loss(
    actor, critic, jnp.log(0.2), jnp.ones((B, OBS)), key
  )
  _, logp = _np_sample(mean, _np_log_std(raw), key, B)
  np.testing.assert_allclose(loss, np.mean(0.2 * logp - (-1.5)), rtol=1e-5)
  np.testing.assert_allclose(aux["entropy"], -np.mean(logp), rtol=1e-5)


def test_alpha_loss_and_its_gradient_direction():
  agent = _agent()  # target entropy -|A| = -2
  logp = jnp.array([3.0, 5.0])  # entropy -4 is below target: alpha must grow
  loss = agent.alpha_loss(jnp.log(0.5), logp)
  np.testing.assert_allclose(
    loss, np.mean(0.5 * (-np.array([3.0, 5.0]) + 2.0)), rtol=1e-5
  )
  grad = jax.grad(agent.alpha_loss)(jnp.log(0.5), logp)
  assert grad < 0  # gradient descent increases log_alpha
  assert agent.target_entropy == -2.0
  assert _agent(target_entropy=-0.5).target_entropy == -0.5


def test_update_is_finite_and_target_follows_every_second_step():
  agent = _agent(tau=0.5, target_update_period=2)
  state = agent.init(jax.random.PRNGKey(0))
  batch = _batch(np.ones(B), np.ones(B))
  update = jax.jit(agent.update)
  s1, m = update(state, batch, jax.random.PRNGKey(1))
  assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(m))
  assert int(s1.steps) == 1
  # step 1: no target update
  for t, p in zip(
    jax.tree_util.tree_leaves(s1.target_critic_params),
    jax.tree_util.tree_leaves(state.target_critic_params),
  ):
    np.testing.assert_array_equal(t, p)
  s2, _ = update(s1, batch, jax.random.PRNGKey(2))
  for t, old, p in zip(
    jax.tree_util.tree_leaves(s2.target_critic_params),
    jax.tree_util.tree_leaves(s1.target_critic_params),
    jax.tree_util.tree_leaves(s2.critic_params),
  ):
    np.testing.assert_allclose(t, 0.5 * old + 0.5 * p, rtol=1e-6, atol=1e-7)
  # parameters moved
  moved = [
    not np.allclose(a, b)
    for a, b in zip(
      jax.tree_util.tree_leaves(s2.actor_params),
      jax.tree_util.tree_leaves(state.actor_params),
    )
  ]
  assert any(moved)


def test_critic_regresses_to_constant_reward():
  """With discount 0 the critic target is the reward: Q must approach it."""
  agent = _agent(discount=0.0, critic_lr=1e-2)
  state = agent.init(jax.random.PRNGKey(0))
  batch = _batch(np.full(B, 0.7), np.ones(B))
  update = jax.jit(agent.update)
  for i in range(200):
    state, m = update(state, batch, jax.random.PRNGKey(i))
  assert abs(float(m["q"]) - 0.7) < 0.05


def test_reset_critic_keeps_actor_and_alpha():
  agent = _agent()
  state = agent.init(jax.random.PRNGKey(0))
  state, _ = agent.update(
    state, _batch(np.ones(B), np.ones(B)), jax.random.PRNGKey(1)
  )
  reset = agent.reset_critic(state, jax.random.PRNGKey(9))
  for a, b in zip(
    jax.tree_util.tree_leaves(reset.actor_params),
    jax.tree_util.tree_leaves(state.actor_params),
  ):
    np.testing.assert_array_equal(a, b)
  assert float(reset.log_alpha) == float(state.log_alpha)
  for a, b in zip(
    jax.tree_util.tree_leaves(reset.critic_params),
    jax.tree_util.tree_leaves(reset.target_critic_params),
  ):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hidden", [(4,), (8, 8, 8)])
def test_critic_outputs_twin_values(hidden):
  critic = networks.Critic(hidden)
  params = critic.init(
    jax.random.PRNGKey(0), jnp.zeros((5, OBS)), jnp.zeros((5, ACT))
  )
  q = critic.apply(params, jnp.ones((5, OBS)), jnp.ones((5, ACT)))
  assert q.shape == (2, 5)
  assert not np.allclose(q[0], q[1])  # independently initialised twins
