"""IQL's losses against hand-computed values, BC as weight 1, one chunk."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.agents import iql


def test_expectile_loss_by_hand():
  # diff = q - v: positive residuals weigh tau, negative ones 1 - tau.
  diff = jnp.array([2.0, -1.0, 0.5, -3.0])
  tau = 0.7
  want = (0.7 * 4.0 + 0.3 * 1.0 + 0.7 * 0.25 + 0.3 * 9.0) / 4
  np.testing.assert_allclose(iql.expectile_loss(diff, tau), want, rtol=1e-6)
  # tau = 0.5 is half the mean squared error.
  np.testing.assert_allclose(
    iql.expectile_loss(diff, 0.5), 0.5 * np.mean(np.square(diff)), rtol=1e-6
  )


def test_expectile_minimiser_is_above_the_mean_for_tau_above_half():
  # The tau-expectile of {0, 1} solves tau (1 - v) = (1 - tau) v: v = tau.
  x = jnp.array([0.0, 1.0])
  grid = jnp.linspace(0.0, 1.0, 1001)
  losses = jax.vmap(lambda v: iql.expectile_loss(x - v, 0.7))(grid)
  assert abs(float(grid[jnp.argmin(losses)]) - 0.7) < 1e-3


def test_awr_weights_clip_at_max_weight():
  adv = jnp.array([-1.0, 0.0, 1.0, 2.0])
  w = iql.awr_weights(adv, beta=3.0, max_weight=100.0)
  np.testing.assert_allclose(
    w, [math.exp(-3.0), 1.0, math.exp(3.0), 100.0], rtol=1e-6
  )
  # No gradient flows into the advantage through the weights.
  g = jax.grad(lambda a: jnp.sum(iql.awr_weights(a, 3.0, 100.0)))(adv)
  np.testing.assert_array_equal(g, 0.0)


def test_gaussian_log_prob_by_hand():
  mean = jnp.array([[0.0, 0.5]])
  log_std = jnp.array([[0.0, math.log(2.0)]])
  a = jnp.array([[1.0, 0.5]])
  want = (-0.5 - 0.5 * math.log(2 * math.pi)) + (
    -math.log(2.0) - 0.5 * math.log(2 * math.pi)
  )
  np.testing.assert_allclose(
    iql.gaussian_log_prob(mean, log_std, a), [want], rtol=1e-6
  )


def _agent(bc=False):
  return iql.IQL(3, 2, iql.IQLHyper(hidden_sizes=(8,), batch_size=4, bc=bc))


def _batch(n=4):
  k = jax.random.PRNGKey(1)
  k1, k2, k3 = jax.random.split(k, 3)
  return iql.Batch(
    obs=jax.random.normal(k1, (n, 3)),
    action=jnp.tanh(jax.random.normal(k2, (n, 2))),
    reward=jax.random.normal(k3, (n,)),
    discount=jnp.array([1.0, 1.0, 0.0, 1.0])[:n],
    next_obs=jax.random.normal(k3, (n, 3)),
  )


def test_losses_match_their_definitions():
  agent = _agent()
  state = agent.init(jax.random.PRNGKey(0))
  b = _batch()
  q = agent.critic.apply(state.target_critic_params, b.obs, b.action)
  v = agent.value.apply(state.value_params, b.obs)[:, 0]
  u = np.asarray(jnp.min(q, 0) - v)
  want_v = np.mean(np.where(u < 0, 0.3, 0.7) * u**2)
  got_v, _ = agent.value_loss(state.value_params, state.target_critic_params, b)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-5)

  next_v = agent.value.apply(state.value_params, b.next_obs)[:, 0]
  target = b.reward + 0.99 * b.discount * next_v
  q_online = agent.critic.apply(state.critic_params, b.obs, b.action)
  want_q = np.mean(np.sum(np.square(q_online - target[None]), 0))
  got_q, _ = agent.critic_loss(state.critic_params, state.value_params, b)
  np.testing.assert_allclose(got_q, want_q, rtol=1e-5)

  mean, log_std = agent.actor.apply(state.actor_params, b.obs)
  logp = iql.gaussian_log_prob(jnp.tanh(mean), log_std, b.action)
  w = np.minimum(np.exp(3.0 * u), 100.0)
  want_pi = -np.mean(w * np.asarray(logp))
  got_pi, aux = agent.actor_loss(
    state.actor_params, state.value_params, state.target_critic_params, b
  )
  np.testing.assert_allclose(got_pi, want_pi, rtol=1e-5)
  assert float(aux["weight_max"]) <= 100.0


def test_bc_is_the_actor_loss_with_weight_one():
  bc, agent = _agent(bc=True), _agent()
  state = agent.init(jax.random.PRNGKey(0))
  b = _batch()
  got, aux = bc.actor_loss(
    state.actor_params, state.value_params, state.target_critic_params, b
  )
  mean, log_std = agent.actor.apply(state.actor_params, b.obs)
  want = -jnp.mean(iql.gaussian_log_prob(jnp.tanh(mean), log_std, b.action))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(aux["weight"]) == 1.0
  # BC updates the actor only.
  new, _ = bc.update(state, b)
  same = jax.tree_util.tree_map(
    lambda x, y: bool(jnp.all(x == y)),
    (new.critic_params, new.value_params),
    (state.critic_params, state.value_params),
  )
  assert all(jax.tree_util.tree_leaves(same))
  assert not all(
    jax.tree_util.tree_leaves(
      jax.tree_util.tree_map(
        lambda x, y: bool(jnp.all(x == y)), new.actor_params, state.actor_params
      )
    )
  )


def test_target_critic_moves_by_polyak_rate():
  agent = _agent()
  state = agent.init(jax.random.PRNGKey(0))
  new, _ = agent.update(state, _batch())
  jax.tree_util.tree_map(
    lambda t, c, t0: np.testing.assert_allclose(
      t, 0.005 * c + 0.995 * t0, rtol=1e-5, atol=1e-7
    ),
    new.target_critic_params,
    new.critic_params,
    state.target_critic_params,
  )
  assert int(new.steps) == 1


def test_train_steps_vmapped_over_seeds_learns_a_constant_value():
  # Reward 1 everywhere, no termination: V and Q approach 1 / (1 - gamma);
  # with gamma = 0.5 that is 2. One compiled program over 2 seeds.
  agent = iql.IQL(
    3,
    2,
    iql.IQLHyper(
      hidden_sizes=(16,),
      batch_size=32,
      discount=0.5,
      critic_lr=1e-2,
      value_lr=1e-2,
      target_tau=0.1,
    ),
  )
  n = 64
  data = _batch(4).replace(
    obs=jax.random.normal(jax.random.PRNGKey(2), (n, 3)),
    action=jnp.zeros((n, 2)),
    reward=jnp.ones((n,)),
    discount=jnp.ones((n,)),
    next_obs=jax.random.normal(jax.random.PRNGKey(3), (n, 3)),
  )
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  state = jax.vmap(agent.init)(keys)
  train = jax.jit(jax.vmap(lambda s, k: agent.train_steps(s, data, k, 400)))
  state, metrics = train(state, keys)
  assert metrics["v"].shape == (2,)
  np.testing.assert_allclose(metrics["q"], 2.0, atol=0.3)
  v = jax.vmap(lambda s: agent.value.apply(s.value_params, data.obs))(state)
  np.testing.assert_allclose(np.mean(v), 2.0, atol=0.3)


def test_act_is_tanh_of_the_normalised_mean():
  agent = _agent()
  state = agent.init(jax.random.PRNGKey(0), jnp.ones((3,)), 2 * jnp.ones((3,)))
  obs = jnp.array([[1.0, 3.0, 5.0]])
  mean, _ = agent.actor.apply(state.actor_params, (obs - 1.0) / 2.0)
  np.testing.assert_allclose(agent.act(state, obs), jnp.tanh(mean), rtol=1e-6)
  assert np.all(np.abs(agent.act(state, 100 * obs)) <= 1.0)


if __name__ == "__main__":
  pytest.main([__file__])
