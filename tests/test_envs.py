import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from erljax.envs import vec_env as envs
from erljax.envs import tasks


def test_registry_lists_brax_playground_and_metaworld_tasks():
  names = tasks.task_names()
  for name in (
    "reacher",
    "pusher",
    "CartpoleSwingup",
    "FingerSpin",
    "ReacherEasy",
    "WalkerWalk",
    "sweep-into",
    "drawer-open",
    "soccer",
  ):
    assert name in names
  for name in ("sweep-into", "drawer-open", "soccer"):
    assert f"{name}-mjx" in names and f"{name}-random" in names
  sources = {tasks.get_task(n).source for n in names}
  assert sources == {"brax", "playground", "metaworld"}


def test_unknown_task_error_names_it():
  with pytest.raises(ValueError, match="unknown task 'cheetah-fly'"):
    tasks.get_task("cheetah-fly")


@pytest.mark.parametrize(
  "name",
  [
    "reacher",
    "pusher",
    "CartpoleSwingup",
    "FingerSpin",
    "ReacherEasy",
    "WalkerWalk",
  ],
)
def test_every_task_has_what_rating_needs(name):
  spec = tasks.get_task(name)
  assert spec.instruction and isinstance(spec.instruction, str)
  assert spec.num_classes in (2, 3)
  lo, hi = spec.reward_range
  assert lo < hi
  assert spec.episode_length > 0
  env = envs.make_vec_env(name, num_envs=1)
  assert isinstance(env.observation_size, int) and env.observation_size > 0
  assert isinstance(env.action_size, int) and env.action_size > 0


def test_register_rejects_bad_specs():
  spec = tasks.get_task("reacher")
  import dataclasses

  with pytest.raises(ValueError, match="already registered"):
    tasks.register(spec)
  with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
    tasks.register(dataclasses.replace(spec, name="x1", num_classes=1))
  with pytest.raises(ValueError, match=r"reward_range \(1.0, 0.0\)"):
    tasks.register(
      dataclasses.replace(spec, name="x2", reward_range=(1.0, 0.0))
    )
  with pytest.raises(ValueError, match=r"rating_range \(0.0, 0.0\)"):
    tasks.register(
      dataclasses.replace(spec, name="x3", rating_range=(0.0, 0.0))
    )


def test_reacher_rating_signal_is_the_visible_distance():
  """The rater judges the tip-target distance (what a frame shows), not the
  control cost; it equals Brax's reward_dist metric after the step."""
  env = envs.make_vec_env("reacher", num_envs=4, episode_length=10)
  spec = env.task
  state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  action = jnp.full((4, env.action_size), 0.9)
  next_state, out = jax.jit(env.step)(state, action)
  signal = spec.signal(state.obs, action, out.next_obs, out.reward)
  assert signal.shape == (4,)
  np.testing.assert_allclose(
    signal, next_state.inner.metrics["reward_dist"], rtol=1e-5, atol=1e-6
  )
  # Control cost is in the reward, not in the signal.
  assert np.all(np.asarray(out.reward) < np.asarray(signal) - 1.0)
  assert spec.rated_range == (-0.3, 0.0)


def test_default_rating_signal_is_the_reward():
  spec = tasks.get_task("CartpoleSwingup")
  reward = jnp.array([[0.1, 0.7]])
  obs = jnp.zeros((1, 2, 5))
  out = spec.signal(obs, jnp.zeros((1, 2, 1)), obs, reward)
  np.testing.assert_array_equal(out, reward)
  assert spec.rated_range == spec.reward_range


def test_rated_task_rates_the_reward_or_a_given_range():
  spec = tasks.get_task("reacher")
  reward = jnp.array([-0.9, -0.1])
  obs = jnp.ones((2, envs.make_vec_env(spec, 1).observation_size))
  on_reward = tasks.rated_task(spec, "reward")
  np.testing.assert_array_equal(
    on_reward.signal(obs, jnp.zeros((2, 2)), obs, reward), reward
  )
  assert on_reward.rated_range == spec.reward_range
  widened = tasks.rated_task(spec, "reward", (-1, 0))
  assert widened.rated_range == (-1.0, 0.0)
  # The signal is kept when only the range changes.
  assert tasks.rated_task(spec, "signal", (-0.2, 0.0)).rating_signal is (
    spec.rating_signal
  )
  assert tasks.rated_task(spec) is spec
  with pytest.raises(ValueError, match="rated='pixels'"):
    tasks.rated_task(spec, "pixels")
  with pytest.raises(ValueError, match=r"rating range \(0, -1\)"):
    tasks.rated_task(spec, "reward", (0, -1))


def test_make_vec_env_rejects_bad_sizes():
  with pytest.raises(ValueError, match="num_envs must be >= 1, got 0"):
    envs.make_vec_env("reacher", 0)
  with pytest.raises(ValueError, match="episode_length must be >= 1, got -3"):
    envs.make_vec_env("reacher", 2, episode_length=-3)


@struct.dataclass
class _DictObsState:
  obs: dict


class _DictObsEnv:
  """Observations as a dict: erljax wants a flat vector."""

  action_size = 1

  def reset(self, key):
    del key
    return _DictObsState(obs={"pos": jnp.zeros(2), "vel": jnp.zeros(3)})

  def step(self, state, action):
    del action
    return state


def test_make_vec_env_rejects_a_structured_observation():
  spec = tasks.TaskSpec(
    name="dict_obs",
    make_env=_DictObsEnv,
    instruction="move",
    subject="a point",
    num_classes=2,
    episode_length=5,
    reward_range=(0.0, 1.0),
  )
  with pytest.raises(
    ValueError,
    match=r"task 'dict_obs' has a structured observation "
    r"\(\{'pos': \(2,\), 'vel': \(3,\)\}\); erljax needs a flat vector",
  ):
    envs.make_vec_env(spec, 2)


class _CountingEnv:
  """A point env that counts how often Python runs (traces) its functions."""

  observation_size = action_size = 2
  traces = {"reset": 0, "step": 0}

  def reset(self, key):
    self.traces["reset"] += 1
    pos = jax.random.uniform(key, (2,))
    return _PointState(
      pos=pos, obs=pos, reward=jnp.zeros(()), done=jnp.zeros((), bool)
    )

  def step(self, state, action):
    self.traces["step"] += 1
    pos = state.pos + action
    return state.replace(pos=pos, obs=pos, reward=-jnp.sum(pos**2))


@struct.dataclass
class _PointState:
  pos: jax.Array
  obs: jax.Array
  reward: jax.Array
  done: jax.Array


def _counting_spec(name="counting") -> tasks.TaskSpec:
  return tasks.TaskSpec(
    name=name,
    make_env=_CountingEnv,
    instruction="move",
    subject="a point",
    num_classes=2,
    episode_length=3,
    reward_range=(-1.0, 0.0),
  )


def test_vec_envs_made_alike_share_one_trace_of_reset_and_step():
  """The training envs (4) and the evaluation envs (3, made `like` them)
  in two programs vmapped over 2 seeds: the env's Python runs once for
  step and at most twice for reset (once outside any vmap, for the
  observation size), and the results are those of the env's own
  functions."""
  spec = _counting_spec()
  _CountingEnv.traces.update(reset=0, step=0)
  train = envs.make_vec_env(spec, 4)
  evaluation = envs.make_vec_env(spec, 3, like=train)
  assert evaluation.env is train.env
  assert evaluation.env_step is train.env_step

  def episode(env, key):
    def body(state, _):
      state, out = env.step(state, jnp.ones((env.num_envs, 2)))
      return state, out.reward

    return jax.lax.scan(body, env.reset(key), None, length=5)[1]

  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  rewards = {
    env.num_envs: jax.jit(jax.vmap(lambda k, e=env: episode(e, k)))(keys)
    for env in (train, evaluation)
  }
  assert _CountingEnv.traces["step"] == 1
  assert _CountingEnv.traces["reset"] <= 2
  own = _CountingEnv()

  def expected(key, n):
    k_reset = jax.random.split(key)[1]
    pos = jax.vmap(lambda k: own.reset(k).pos)(jax.random.split(k_reset, n))
    return -jnp.stack([jnp.sum((pos + t + 1) ** 2, -1) for t in range(3)])

  for n, got in rewards.items():
    want = jax.vmap(lambda k, n=n: expected(k, n))(keys)
    np.testing.assert_allclose(got[:, :3], want, rtol=1e-6)


def test_make_vec_env_like_another_task_is_refused():
  other = envs.make_vec_env(_counting_spec("counting_a"), 2)
  with pytest.raises(ValueError, match="like= a VecEnv of task 'counting_a'"):
    envs.make_vec_env(_counting_spec("counting_b"), 2, like=other)


@pytest.fixture(scope="module")
def cartpole():
  return envs.make_vec_env("CartpoleSwingup", num_envs=3, episode_length=4)


@pytest.fixture(scope="module")
def cartpole_step(cartpole):
  """cartpole.step jitted once for the tests that step it."""
  return jax.jit(cartpole.step)


def test_vec_env_shapes_truncation_and_reset(cartpole, cartpole_step):
  env, step = cartpole, cartpole_step
  state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  assert state.obs.shape == (3, env.observation_size)
  action = jnp.ones((3, env.action_size))
  returns = np.zeros(3)
  for t in range(1, 5):
    prev = state
    state, out = step(state, action)
    assert out.next_obs.shape == (3, env.observation_size)
    assert out.reward.shape == out.success.shape == (3,)
    returns += np.asarray(out.reward)
    if t < 4:
      assert not np.any(out.truncated)
      np.testing.assert_array_equal(state.t, t)
      np.testing.assert_array_equal(state.obs, out.next_obs)
  # step 4 hits the time limit: truncated (not terminal), episode reset.
  assert np.all(out.truncated) and not np.any(out.terminal)
  np.testing.assert_array_equal(state.t, 0)
  np.testing.assert_allclose(out.episode_return, returns, rtol=1e-5)
  np.testing.assert_array_equal(state.episode_return, 0.0)
  # next_obs is the pre-reset observation; obs is a fresh episode's first.
  assert not np.allclose(state.obs, out.next_obs)
  del prev


def test_vec_env_matches_playgrounds_own_training_wrapper(
  cartpole, cartpole_step
):
  """Same reset keys and actions: erljax's VecEnv and Playground's
  wrap_for_brax_training (what Playground trains Brax's agents through) give
  the same observations, rewards and time limit. They differ only in where
  the next episode starts: a fresh random state in erljax, the env's cached
  first state in Playground's wrapper."""
  from mujoco_playground import wrapper  # pylint: disable=g-import-not-at-top

  env = cartpole
  theirs = wrapper.wrap_for_brax_training(env.env, episode_length=4)
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  their_state = theirs.reset(keys)
  # Their reset splits each key and resets from `split[..., 1]` (with raw
  # uint32 keys that indexes the last axis, not the split axis).
  inner = jax.vmap(env.env.reset)(jax.vmap(jax.random.split)(keys)[..., 1])
  state = envs.VecEnvState(
    inner=inner,
    obs=inner.obs,
    t=jnp.zeros((3,), jnp.int32),
    episode_return=jnp.zeros((3,)),
    key=jax.random.PRNGKey(5),
  )
  np.testing.assert_array_equal(state.obs, their_state.obs)
  first_obs = np.asarray(their_state.obs)
  actions = jax.random.uniform(
    jax.random.PRNGKey(4), (4, 3, env.action_size), minval=-1.0, maxval=1.0
  )
  step, their_step = cartpole_step, jax.jit(theirs.step)
  for t, action in enumerate(actions, start=1):
    state, out = step(state, action)
    their_state = their_step(their_state, action)
    np.testing.assert_allclose(out.reward, their_state.reward, atol=1e-6)
    assert out.reward.std() > 0  # random actions: the envs' rewards differ
    np.testing.assert_array_equal(out.truncated, their_state.info["truncation"])
    np.testing.assert_array_equal(out.terminal, False)
    if t < 4:
      np.testing.assert_allclose(out.next_obs, their_state.obs, atol=1e-6)
  assert np.all(out.truncated)
  np.testing.assert_array_equal(their_state.obs, first_obs)
  assert not np.allclose(state.obs, first_obs)


def test_vec_env_rejects_wrong_action_shape(cartpole):
  state = jax.jit(cartpole.reset)(jax.random.PRNGKey(0))
  with pytest.raises(AssertionError):  # at trace time, before compiling
    jax.jit(cartpole.step)(state, jnp.ones((2, cartpole.action_size)))


def test_compiler_options_merge_what_the_traced_parts_need():
  """Per-program XLA options (jax.jit's compiler_options): merged over the
  parts a program traces, None entries and parts without any skipped,
  conflicts named; None when nothing needs any (or off a CPU)."""

  class Part:
    def __init__(self, **options):
      self.compiler_options = options

  assert envs.compiler_options() is None
  assert envs.compiler_options(None, Part()) is None
  merged = envs.compiler_options(Part(a=False), None, Part(a=False, b=1))
  if jax.default_backend() == "cpu":
    assert merged == {"a": False, "b": 1}
  else:
    assert merged is None
  with pytest.raises(ValueError, match=r"XLA option a: False and True"):
    envs.compiler_options(Part(a=False), Part(a=True))
  # Tasks simulated by Brax / Playground need none.
  assert envs.make_vec_env("reacher", 2).compiler_options == {}
