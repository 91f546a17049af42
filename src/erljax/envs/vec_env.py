"""A batched, auto-resetting environment wrapper around a task.

`make_vec_env(task, num_envs, episode_length)` vmaps a task (erljax.envs.tasks)
over ``num_envs`` instances, counts episode steps, separates time-limit
truncation from true termination, and resets finished episodes inside the
compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
from flax import struct

from erljax.envs.tasks import Env, EnvStateT, TaskSpec, get_task


@struct.dataclass
class VecEnvState:
  """State of N parallel episodes.

  Attributes:
    inner: the wrapped envs' batched state (leaves [N, ...]).
    obs: [N, obs_dim] current observation (first one of a new episode after a
      reset).
    t: [N] int32, steps taken in the current episode.
    episode_return: [N] float32, sum of env rewards in the current episode.
    key: PRNG key used to reset finished episodes.
  """

  inner: Any
  obs: jax.Array
  t: jax.Array
  episode_return: jax.Array
  key: jax.Array


@struct.dataclass
class StepOutput:
  """What one batched step returns besides the new state (all leading dim N).

  next_obs is the observation reached by the step, before any auto-reset, so
  transitions stored in a replay buffer are never broken by a reset.
  """

  next_obs: jax.Array
  reward: jax.Array
  terminal: jax.Array  # true termination (bootstrapping stops)
  truncated: jax.Array  # time limit reached (bootstrapping continues)
  success: jax.Array
  episode_return: jax.Array  # return of the episode that just ended (else 0)
  inner: Any  # env state reached by the step (for rendering)


@dataclasses.dataclass(frozen=True)
class VecEnv:
  """Pure functions over N parallel instances of one task.

  `env_reset` (key [2] -> state) and `env_step` (state, action
  [action_size] -> state) are the env's own, for one env, as `jax.jit`
  functions that every VecEnv made `like` this one shares (make_vec_env).
  JAX traces a jitted function once per argument shapes and reuses that
  trace in every program that calls it, so the programs of a run (its init,
  the training chunk with its auto-reset, the evaluation, the rollout
  video) trace an MJX task's reset and step (each a forward pass: seconds
  of Python) once, not once per call site. XLA inlines them: the compiled
  programs compute the same.
  """

  task: TaskSpec
  env: Env
  num_envs: int
  episode_length: int
  env_reset: Callable[[jax.Array], EnvStateT]
  env_step: Callable[[EnvStateT, jax.Array], EnvStateT]

  @functools.cached_property
  def observation_size(self) -> int:
    """Length of the flat observation, from an abstract trace of reset.

    Brax's `env.observation_size` runs a reset eagerly, op by op: about
    2 s on a CPU per access (more on first use), and the trainer and every
    feedback session ask for it. Raises ValueError for a task whose
    observation is not a flat vector.
    """
    obs = jax.eval_shape(self.env_reset, jax.random.PRNGKey(0)).obs
    if not isinstance(obs, jax.ShapeDtypeStruct) or len(obs.shape) != 1:
      shapes = jax.tree_util.tree_map(lambda x: x.shape, obs)
      raise ValueError(
        f"task {self.task.name!r} has a structured observation ({shapes});"
        " erljax needs a flat vector"
      )
    return int(obs.shape[0])

  @property
  def action_size(self) -> int:
    return int(self.env.action_size)

  @property
  def mj_model(self) -> Any:
    """The task's mujoco.MjModel (what erljax.vision.render draws)."""
    return mj_model(self.task, self.env)

  @property
  def compiler_options(self) -> Dict[str, Any]:
    """XLA options a program stepping these envs needs on a CPU (see
    `compiler_options`): the env's own, e.g. MetaWorld's MJX backend's."""
    return dict(getattr(self.env, "compiler_options", {}))

  @property
  def nq(self) -> int:
    """Number of generalized positions (MuJoCo qpos) of one env; 0 without
    a MuJoCo model."""
    model = self.mj_model
    return 0 if model is None else int(model.nq)

  @property
  def pose_size(self) -> int:
    """Width of `pose`: nq plus 3 per mocap body."""
    model = self.mj_model
    return 0 if model is None else self.nq + 3 * int(model.nmocap)

  def qpos(self, state: VecEnvState | EnvStateT) -> jax.Array:
    """[N, nq] generalized positions of a VecEnvState or a batched env state.

    Enough to draw a still frame of every task except those that place a
    target with a mocap body (ReacherEasy); `pose` covers those too.
    """
    return _positions(self.task, state)[0]

  def pose(self, state: VecEnvState | EnvStateT) -> jax.Array:
    """[N, pose_size]: qpos then the flattened mocap body positions.

    Everything erljax.vision.render.FrameRenderer needs to draw a still frame of
    every task (velocities do not change a picture).
    """
    q, mocap = _positions(self.task, state)
    flat = mocap.reshape(mocap.shape[:-2] + (-1,)).astype(q.dtype)
    return jnp.concatenate([q, flat], axis=-1)

  def reset(self, key: jax.Array) -> VecEnvState:
    key, reset_key = jax.random.split(key)
    inner = jax.vmap(self.env_reset)(jax.random.split(reset_key, self.num_envs))
    n = self.num_envs
    return VecEnvState(
      inner=inner,
      obs=inner.obs,
      t=jnp.zeros((n,), jnp.int32),
      episode_return=jnp.zeros((n,), jnp.float32),
      key=key,
    )

  def step(
    self, state: VecEnvState, action: jax.Array
  ) -> Tuple[VecEnvState, StepOutput]:
    """Steps all envs with action [N, action_size]; resets finished episodes."""
    chex.assert_shape(action, (self.num_envs, self.action_size))
    inner = jax.vmap(self.env_step)(state.inner, action)
    t = state.t + 1
    reward = inner.reward.astype(jnp.float32)
    terminal = inner.done.astype(bool)
    truncated = jnp.logical_and(t >= self.episode_length, ~terminal)
    done = terminal | truncated
    ep_return = state.episode_return + reward
    out = StepOutput(
      next_obs=inner.obs,
      reward=reward,
      terminal=terminal,
      truncated=truncated,
      success=(
        jax.vmap(self.task.success_fn)(inner)
        if self.task.has_success
        else jnp.zeros_like(terminal)
      ),
      episode_return=jnp.where(done, ep_return, 0.0),
      inner=inner,
    )

    key, reset_key = jax.random.split(state.key)

    def reset_done(inner):
      fresh = jax.vmap(self.env_reset)(
        jax.random.split(reset_key, self.num_envs)
      )
      where = lambda a, b: jnp.where(  # pylint: disable=g-long-lambda
        done.reshape(done.shape + (1,) * (a.ndim - 1)), a, b
      )
      # Brax and Playground envs may add metric/info entries after reset;
      # keep the stepped structure and take the fresh values where present.
      return jax.tree_util.tree_map(
        where, _match_structure(fresh, inner), inner
      )

    # Episodes of equal length end together, so the reset usually runs once
    # per episode rather than once per step.
    inner = jax.lax.cond(jnp.any(done), reset_done, lambda x: x, inner)
    new_state = VecEnvState(
      inner=inner,
      obs=inner.obs,
      t=jnp.where(done, 0, t),
      episode_return=jnp.where(done, 0.0, ep_return),
      key=key,
    )
    return new_state, out


def compiler_options(*parts: Any) -> Optional[Dict[str, Any]]:
  """`jax.jit`'s compiler_options for a program that traces each of `parts`
  (objects with a `compiler_options` mapping, e.g. a VecEnv or an
  erljax.vision.raycast.RayCaster, or such mappings themselves, e.g.
  erljax.runtime.precision.xla_options(); None entries skipped): their
  options merged on a CPU backend, None on other backends or when no part
  needs any.

  Options are set per program rather than in XLA_FLAGS, so what one task
  needs (MetaWorld's Sawyer in MJX) leaves every other program as it was.
  Raises ValueError when two parts ask for different values of an option.
  """
  merged: Dict[str, Any] = {}
  for part in parts:
    own: Mapping[str, Any] = (
      part
      if isinstance(part, Mapping)
      else getattr(part, "compiler_options", None) or {}
    )
    for key, value in own.items():
      if key in merged and merged[key] != value:
        raise ValueError(
          f"XLA option {key}: {merged[key]!r} and {value!r} asked for by "
          "two parts of one program"
        )
      merged[key] = value
  if not merged or jax.default_backend() != "cpu":
    return None
  return merged


def mj_model(spec: TaskSpec, env: Env) -> Any:
  """The mujoco.MjModel behind a task's environment; None for a pure-JAX
  environment without one (nothing to render, an empty pose)."""
  if spec.source == "brax":
    system = getattr(env, "sys", None)
    return None if system is None else system.mj_model
  return getattr(env, "mj_model", None)


def _positions(
  spec: TaskSpec, state: VecEnvState | EnvStateT
) -> Tuple[jax.Array, jax.Array]:
  """qpos [N, nq] and mocap_pos [N, nmocap, 3] of a VecEnvState or a batched
  Brax / Playground env state."""
  inner = state.inner if isinstance(state, VecEnvState) else state
  if not hasattr(inner, "pipeline_state") and not hasattr(inner, "data"):
    # A pure-JAX environment without MuJoCo physics: an empty pose.
    q = jnp.zeros(inner.obs.shape[:-1] + (0,), inner.obs.dtype)
    return q, jnp.zeros(q.shape[:-1] + (0, 3), q.dtype)
  if spec.source == "brax":
    # MJX's pipeline state is an mjx.Data (qpos, mocap_pos); the generalized
    # pipeline's has q only and no mocap bodies.
    ps = inner.pipeline_state
    q = ps.q
    mocap = getattr(ps, "mocap_pos", None)
  else:
    q = inner.data.qpos
    mocap = inner.data.mocap_pos
  if mocap is None:
    mocap = jnp.zeros(q.shape[:-1] + (0, 3), q.dtype)
  return q, mocap


def _match_structure(fresh, stepped):
  """Returns `fresh` with the tree structure of `stepped` (leaves missing
  from fresh, or of another shape, come from stepped)."""
  fresh_leaves = {
    jax.tree_util.keystr(p): v
    for p, v in jax.tree_util.tree_leaves_with_path(fresh)
  }

  def pick(path, leaf):
    got = fresh_leaves.get(jax.tree_util.keystr(path))
    if got is None or got.shape != leaf.shape:
      return leaf
    return got.astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(pick, stepped)


def make_vec_env(
  task: str | TaskSpec,
  num_envs: int,
  episode_length: Optional[int] = None,
  like: Optional[VecEnv] = None,
) -> VecEnv:
  """Builds `num_envs` batched instances of a registered task; with `like`
  (a VecEnv of the same task), on its env and its jitted reset and step, so
  that programs stepping either share their traces."""
  spec = get_task(task) if isinstance(task, str) else task
  if num_envs < 1:
    raise ValueError(f"num_envs must be >= 1, got {num_envs}")
  length = spec.episode_length if episode_length is None else episode_length
  if length < 1:
    raise ValueError(f"episode_length must be >= 1, got {length}")
  if like is not None and like.task.name != spec.name:
    raise ValueError(
      f"like= a VecEnv of task {like.task.name!r}; it must be one of "
      f"{spec.name!r}, the task asked for"
    )
  if like is None:
    env = spec.make_env()
    reset, step = jax.jit(env.reset), jax.jit(env.step)
  else:
    env, reset, step = like.env, like.env_reset, like.env_step
  vec = VecEnv(
    task=spec,
    env=env,
    num_envs=num_envs,
    episode_length=length,
    env_reset=reset,
    env_step=step,
  )
  _ = vec.observation_size  # computed and checked once, here
  return vec
