import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.config import defaults as config_lib
from erljax.agents import networks
from erljax.runtime import precision
from erljax.rewards import model as reward_model
from erljax.online import runner


@functools.lru_cache(maxsize=None)
def _critic_grad(name: str):
  critic = networks.Critic((64, 64))
  obs, act = jnp.ones((128, 9)), jnp.ones((128, 2))
  params = critic.init(jax.random.PRNGKey(0), obs, act)

  def loss(p, obs):
    return jnp.sum(critic.apply(p, obs, act) ** 2)

  grad = jax.grad(loss, argnums=(0, 1))
  with precision.scope(name):
    compiled = jax.jit(grad).lower(params, obs).compile()
  return compiled.as_text(), compiled(params, obs)


def test_bfloat16_runs_most_of_the_updates_products_in_bf16():
  """Forward and input-gradient products run in bf16. XLA:CPU computes a
  product of the FP32 cotangent and a bf16 input in FP32, so without the
  custom VJP only the forward third would; it keeps some weight gradients
  in FP32 whatever their form."""
  hlo, _ = _critic_grad("bfloat16")
  flops = precision.dot_flops(hlo)
  assert flops["bf16 x bf16"] / sum(flops.values()) > 0.6, flops
  hlo, _ = _critic_grad("float32")
  assert set(precision.dot_flops(hlo)) == {"f32 x f32"}


def test_bfloat16_gradients_match_fp32_to_bf16_rounding():
  _, (g32, x32) = _critic_grad("float32")
  _, (g16, x16) = _critic_grad("bfloat16")
  for a, b in zip(jax.tree.leaves((g32, x32)), jax.tree.leaves((g16, x16))):
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, rtol=0.05, atol=0.05 * np.abs(a).max())
  assert not all(
    np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(g32), jax.tree.leaves(g16))
  )


def test_matmul_rounds_inputs_and_input_gradients_to_bf16():
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 6))
  w = jax.random.normal(jax.random.PRNGKey(2), (6, 5))
  g = jax.random.normal(jax.random.PRNGKey(3), (3, 4, 5))
  with precision.scope("bfloat16"):
    y, vjp = jax.vjp(precision.matmul, x, w)
  dx, dw = vjp(g)
  bf = lambda a: np.asarray(a.astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(y, bf(x) @ bf(w), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, bf(g) @ bf(w).T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(  # weight gradient: FP32
    dw, np.einsum("abk,abn->kn", x, g), rtol=1e-5, atol=1e-5
  )


def test_image_reward_model_products_follow_the_scope():
  """The convolutions' products run in bf16; XLA:CPU keeps the last layer's
  matrix-vector product in FP32."""
  cnn = reward_model.ImageCNN(channels=(4, 4, 4, 4))
  frames = jnp.zeros((2, 48, 48, 3), jnp.uint8)
  params = cnn.init(jax.random.PRNGKey(0), frames)
  with precision.scope("bfloat16"):
    hlo = jax.jit(cnn.apply).lower(params, frames).compile().as_text()
  flops = precision.dot_flops(hlo)
  assert flops["bf16 x bf16"] / sum(flops.values()) > 0.99, flops


def test_xla_options_keep_a_bf16_product_from_its_reduction():
  """The twin critics' input gradient with seeds vmapped: a bf16 product
  [S, Q, B, N] x [S, Q, K, N] summed over Q. XLA:CPU fuses the two into one
  YNNPACK subgraph that aborts the process (checked with jax 0.9.2);
  precision.xla_options(), part of every run's programs, prevent it."""

  def summed(g, w):
    y = jax.lax.dot_general(
      g.astype(jnp.bfloat16),
      w.astype(jnp.bfloat16),
      (((3,), (3,)), ((0, 1), (0, 1))),
      preferred_element_type=jnp.float32,
    )
    return y.sum(1)

  g, w = jnp.ones((5, 2, 256, 128)), jnp.ones((5, 2, 13, 128))
  assert precision.xla_options() == {}
  with precision.scope("bfloat16"):
    options = precision.xla_options()
  compiled = jax.jit(summed, compiler_options=options).lower(g, w).compile()
  assert "__ynn_fusion" not in compiled.as_text()
  np.testing.assert_array_equal(compiled(g, w), 256.0)


def test_scope_rejects_an_unknown_precision():
  with pytest.raises(ValueError, match="'fp16'"):
    with precision.scope("fp16"):
      pass


def test_run_traces_its_programs_in_the_configs_precision(monkeypatch):
  seen = []

  class Run:
    def __init__(self, *args):
      pass

    def train(self):
      seen.append(jax.default_matmul_precision.value)

  monkeypatch.setattr(runner, "_Run", Run)
  c = config_lib.default()
  c.matmul_precision = "bfloat16"
  trainer = types.SimpleNamespace(config=c)  # the run uses its config
  runner.run(config_lib.default(), trainer=trainer)
  assert seen == ["bfloat16"]
