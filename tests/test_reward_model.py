"""Reward ensembles (reward_model.py): shapes, ranges, member independence,
the reference CNN's flatten size, and argument checks."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from erljax.rewards import model as reward_model
from erljax.rewards.model import RewardModel


def _mlp_inputs(b=16, o=4, a=2, seed=0):
  rng = np.random.default_rng(seed)
  return (
    jnp.asarray(rng.normal(size=(b, o)) * 3.0, jnp.float32),
    jnp.asarray(rng.uniform(-1, 1, size=(b, a)), jnp.float32),
  )


@pytest.fixture(scope="module")
def mlp3():
  model = RewardModel("mlp", ensemble_size=3, hidden_sizes=(16, 16))
  obs, act = _mlp_inputs()
  params = model.init(jax.random.PRNGKey(0), (obs[:1], act[:1]))
  return model, params, obs, act


def test_mlp_ensemble_shapes_range_and_distinct_members(mlp3):
  model, params, obs, act = mlp3
  kernels = params["params"]["member"]["MLP_0"]
  # Input O + A = 6, two hidden layers of 16, one output; leading axis E.
  assert kernels["Dense_0"]["kernel"].shape == (3, 6, 16)
  assert kernels["Dense_1"]["kernel"].shape == (3, 16, 16)
  assert kernels["Dense_2"]["kernel"].shape == (3, 16, 1)
  r = np.asarray(model.members(params, obs, act))
  assert r.shape == (3, 16)
  assert np.all(np.abs(r) < 1.0) and np.all(np.isfinite(r))
  assert r.std() > 1e-3  # not a constant output
  for i in range(3):
    for j in range(i + 1, 3):
      assert not np.allclose(r[i], r[j], atol=1e-4)
      assert not np.allclose(
        kernels["Dense_0"]["kernel"][i], kernels["Dense_0"]["kernel"][j]
      )


def test_reward_is_mean_of_members(mlp3):
  model, params, obs, act = mlp3
  members = model.members(params, obs, act)
  r = model.reward(params, obs, act)
  assert r.shape == (16,)
  np.testing.assert_allclose(
    r, np.mean(np.asarray(members), 0), rtol=1e-6, atol=1e-7
  )


def test_ensemble_of_one():
  model = RewardModel("mlp", ensemble_size=1, hidden_sizes=(8,))
  obs, act = _mlp_inputs(b=5)
  params = model.init(jax.random.PRNGKey(2), (obs[:1], act[:1]))
  m = model.members(params, obs, act)
  assert m.shape == (1, 5)
  np.testing.assert_allclose(model.reward(params, obs, act), m[0], rtol=1e-6)


def test_cnn_reference_flatten_size_and_output_shape():
  # 224 -(5, s3)-> 74 -(3, s2)-> 36 -> 17 -> 8; 8 * 8 * 128 = 8192.
  model = RewardModel("cnn", ensemble_size=2)
  rng = np.random.default_rng(0)
  frames = jnp.asarray(rng.integers(0, 256, size=(3, 224, 224, 3)), jnp.uint8)
  params = model.init(jax.random.PRNGKey(0), (frames[:1],))
  p = params["params"]["member"]
  assert p["Dense_0"]["kernel"].shape == (2, 8192, 1)
  assert [p[f"PatchConv_{i}"]["kernel"].shape for i in range(4)] == [
    (2, 5, 5, 3, 16),
    (2, 3, 3, 16, 32),
    (2, 3, 3, 32, 64),
    (2, 3, 3, 64, 128),
  ]
  members = model.members
  r = np.asarray(members(params, frames))
  assert r.shape == (2, 3)
  assert np.all(np.abs(r) < 1.0)
  assert not np.allclose(r[0], r[1], atol=1e-5)
  # uint8 frames and the same frames as float in [0, 255] agree (the network
  # scales by 1/255 itself).
  r_float = np.asarray(members(params, frames.astype(jnp.float32)))
  np.testing.assert_allclose(r, r_float, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    model.reward(params, frames), r.mean(0), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize("kind", ["transformer", "MLP", ""])
def test_bad_kind_raises_naming_it(kind):
  with pytest.raises(ValueError, match=re.escape(f"kind={kind!r}")):
    RewardModel(kind)


@pytest.mark.parametrize("size", [0, -2])
def test_bad_ensemble_size_raises_naming_it(size):
  with pytest.raises(ValueError, match=re.escape(f"ensemble_size={size}")):
    RewardModel("mlp", ensemble_size=size)


@pytest.mark.parametrize("kernel,stride", [(5, 3), (3, 2), (1, 1)])
def test_patch_conv_equals_flax_conv(kernel, stride):
  """Same parameters, same function as nn.Conv(..., padding="VALID")."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 17, 13, 4))
  conv = nn.Conv(6, (kernel, kernel), (stride, stride), padding="VALID")
  params = conv.init(jax.random.PRNGKey(1), x)
  params = jax.tree_util.tree_map(
    lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(2), a.shape),
    params,
  )  # a non-zero bias too
  want = conv.apply(params, x)
  patch = reward_model.PatchConv(6, kernel, stride)
  got = patch.apply(params, x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  # The gradient (the patch product's) is nn.Conv's too, for the
  # parameters and the input.
  def grads(module):
    loss = lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
    return jax.grad(loss, argnums=(0, 1))(params, x)

  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    grads(patch),
    grads(conv),
  )


def test_cnn_min_frame_size_is_the_smallest_that_fits():
  cnn = reward_model.ImageCNN()
  assert cnn.min_frame_size == 47

  def flat_features(size):
    params = cnn.init(
      jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3), jnp.uint8)
    )
    return params["params"]["Dense_0"]["kernel"].shape[0]

  assert flat_features(47) == 128  # 1 x 1 x 128 after the last conv
  assert flat_features(64) == 128
  with pytest.raises(ValueError, match=r"\(1, 46, 46, 3\).*at least 47x47"):
    flat_features(46)


def _assert_torch_default(w, fan_in):
  """w: one layer's weight or bias (any shape, leading ensemble axis) drawn
  from U(-b, b), b = 1/sqrt(fan_in), PyTorch's nn.Linear / nn.Conv2d
  default: inside the bound, spread over it, std b/sqrt(3)."""
  w = np.asarray(w).ravel()
  bound = 1.0 / np.sqrt(fan_in)
  assert np.all(np.abs(w) <= bound)
  assert np.any(w != 0)
  if w.size >= 48:
    assert np.abs(w).max() > 0.9 * bound
    np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.3)


def test_members_start_from_the_reference_torch_init(mlp3):
  # The reference's gen_net / gen_image_net keep PyTorch's default init
  # (nonzero biases included), not the SAC networks' orthogonal one.
  _, params, _, _ = mlp3
  layers = params["params"]["member"]["MLP_0"]
  for name, fan_in in (("Dense_0", 6), ("Dense_1", 16), ("Dense_2", 16)):
    _assert_torch_default(layers[name]["kernel"], fan_in)
    _assert_torch_default(layers[name]["bias"], fan_in)
  cnn = reward_model.ImageCNN(channels=(4, 8), kernels=(5, 3), strides=(3, 2))
  x = jnp.zeros((1, 20, 20, 3), jnp.float32)
  q = cnn.init(jax.random.PRNGKey(3), x)["params"]
  _assert_torch_default(q["PatchConv_0"]["kernel"], 5 * 5 * 3)
  _assert_torch_default(q["PatchConv_0"]["bias"], 5 * 5 * 3)
  _assert_torch_default(q["PatchConv_1"]["kernel"], 3 * 3 * 4)
  _assert_torch_default(q["PatchConv_1"]["bias"], 3 * 3 * 4)
  _assert_torch_default(q["Dense_0"]["kernel"], 2 * 2 * 8)
  _assert_torch_default(q["Dense_0"]["bias"], 2 * 2 * 8)


def test_mlp_init_names_a_bad_value():
  from erljax.agents import networks

  mlp = networks.MLP((4,), 1, weight_init="xavier")
  with pytest.raises(ValueError, match="'xavier'"):
    mlp.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
