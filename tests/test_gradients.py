"""erljax.agents.gradients.gradient_update_fn against steps computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from erljax.agents import gradients


def _quadratic(params, scale):
  """sum(scale * p^2) over a pytree: gradient 2 * scale * p."""
  return sum(jnp.sum(scale * p**2) for p in jax.tree_util.tree_leaves(params))


def test_sgd_step_on_a_quadratic():
  params = {"a": jnp.asarray([1.0, -2.0]), "b": jnp.asarray(3.0)}
  lr = 0.1
  opt = optax.sgd(lr)
  update = gradients.gradient_update_fn(_quadratic, opt)
  loss, new, opt_state = update(params, opt.init(params), 1.0)
  # loss = 1 + 4 + 9 at the old params; p <- p - lr * 2p = 0.8 p.
  np.testing.assert_allclose(loss, 14.0)
  np.testing.assert_allclose(new["a"], [0.8, -1.6], rtol=1e-6)
  np.testing.assert_allclose(new["b"], 2.4, rtol=1e-6)
  structure = jax.tree_util.tree_structure
  assert structure(opt_state) == structure(opt.init(params))


def test_aux_passes_through_and_extra_args_are_not_differentiated():
  def loss_fn(p, scale, tag):
    loss = _quadratic(p, scale)
    return loss, {"loss": loss, "tag": tag}

  opt = optax.sgd(0.5)
  update = jax.jit(gradients.gradient_update_fn(loss_fn, opt, has_aux=True))
  p = jnp.asarray([2.0])
  (loss, aux), new, _ = update(p, opt.init(p), 3.0, jnp.asarray(7))
  # loss 3 * 4 = 12; gradient 2 * 3 * 2 = 12; p <- 2 - 0.5 * 12 = -4.
  np.testing.assert_allclose(loss, 12.0)
  np.testing.assert_allclose(aux["loss"], 12.0)
  assert int(aux["tag"]) == 7
  np.testing.assert_allclose(new, [-4.0])


def test_stateful_optimiser_state_is_carried():
  """Two momentum steps: the second sees the first's velocity."""
  opt = optax.sgd(0.1, momentum=0.9)
  update = gradients.gradient_update_fn(_quadratic, opt)
  p = jnp.asarray(1.0)
  state = opt.init(p)
  _, p1, state = update(p, state, 1.0)  # v = 2, p = 1 - 0.2 = 0.8
  _, p2, state = update(p1, state, 1.0)  # v = 1.6 + 1.8 = 3.4
  np.testing.assert_allclose(p1, 0.8, rtol=1e-6)
  np.testing.assert_allclose(p2, 0.8 - 0.34, rtol=1e-6)


def test_matches_the_hand_written_pattern_with_adam():
  """Bit for bit what value_and_grad + optax update + apply_updates give."""
  p = {"w": jnp.asarray([[0.3, -1.2], [2.0, 0.5]])}
  x = jnp.asarray([1.0, -3.0])

  def loss_fn(p, x):
    return jnp.sum(jnp.tanh(p["w"] @ x) ** 2)

  opt = optax.adam(1e-2)
  state = opt.init(p)
  loss, grads = jax.value_and_grad(loss_fn)(p, x)
  upd, want_state = opt.update(grads, state)
  want = optax.apply_updates(p, upd)
  got_loss, got, got_state = gradients.gradient_update_fn(loss_fn, opt)(
    p, state, x
  )
  assert np.array_equal(got_loss, loss)
  for g, w in zip(
    jax.tree_util.tree_leaves((got, got_state)),
    jax.tree_util.tree_leaves((want, want_state)),
  ):
    assert np.array_equal(g, w)
