"""Trained policies, loaded from the work directory of a training run.

  policy = erljax.online.policy.load("runs/sac_reacher")  # latest, seed 0
  action = policy.act(obs)        # obs [O] -> [A] (or [B, O] -> [B, A])
  action = policy.act(obs, key)   # a sample of the stochastic policy
  act = jax.jit(policy.act)       # jittable (the parameters are constants)

The run's config.json (written by `python -m erljax.train` with
--config.workdir) gives the task, the episode length and the network sizes;
the checkpoint gives the actor's parameters. `act(obs)` without a key is the
deterministic action tanh(mean), what evaluation uses; with a key it samples
the tanh-squashed Gaussian as training does.

Seeds: a run vmaps over config.num_seeds seeds, so a checkpoint holds S
actors and `Policy.params` has a leading seed axis [S, ...]. `act` uses the
seed index `Policy.seed` (`load(..., seed=k)`, default 0; index k is the
run's PRNG seed config.seed + k). Another seed: `policy.with_seed(k)`; all
of them at once: `jax.vmap(policy.apply, in_axes=(0, None))(policy.params,
obs)` -> [S, ...] actions.

Loading is read-only: it lists the finalized checkpoints and reads only the
actor's arrays (not the replay buffer), never going through
`erljax.io.checkpoint.Checkpointer`, which moves damaged checkpoints aside.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from erljax.config import defaults as config_lib
from erljax.online import trainer as trainer_lib

# Where erljax.online.runner.run's checkpoints keep the actor: its snapshot is
# {"train": TrainState, ...}, flattened by key path (erljax.io.checkpoint).
_ACTOR = "['train'].sac.actor_params"
# Keys only an erljax.offline run's config has.
_OFFLINE_KEYS = ("iql", "offline")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a training run wrote into workdir/config.json.

  Merged onto today's defaults: a run written before a key was added gets
  the key's default (what that run computed with). config.workdir is set to
  `workdir`.

  Raises:
    FileNotFoundError: workdir or its config.json does not exist.
    ValueError: config.json is not the config of an erljax.train run.
  """
  if not os.path.isdir(workdir):
    raise FileNotFoundError(
      f"{workdir}: no such directory; need the workdir "
      "of a python -m erljax.train run"
    )
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"{path}: no such file; {workdir} is not the "
      "workdir of a python -m erljax.train run"
    )
  try:
    with open(path) as f:
      saved = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not JSON ({e})") from e
  if not isinstance(saved, dict) or not {"task", "sac"} <= saved.keys():
    raise ValueError(
      f"{path}: not the config of a python -m erljax.train "
      "run (it needs the keys 'task' and 'sac')"
    )
  if any(k in saved for k in _OFFLINE_KEYS):
    raise ValueError(
      f"{path}: the config of an erljax.offline run "
      f"(method={saved.get('method')!r}); erljax.online.policy loads "
      "python -m erljax.train runs"
    )
  config = config_lib.default()
  _merge(config, saved)
  config.workdir = workdir
  # Loading logs nowhere: a W&B run's config loads without wandb installed.
  config.wandb.project = ""
  return config


def _merge(config: ml_collections.ConfigDict, values: Dict[str, Any]) -> None:
  for key, value in values.items():
    if isinstance(value, dict) and isinstance(
      config.get(key), ml_collections.ConfigDict
    ):
      _merge(config[key], value)
    else:
      with config.ignore_type():
        config[key] = value


def checkpoint_steps(workdir: str) -> List[int]:
  """The steps of the finalized checkpoints in workdir/checkpoints, sorted.

  Raises:
    FileNotFoundError: no checkpoints directory or no finalized checkpoint.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(
      f"{directory}: no such directory; the run wrote "
      "no checkpoint (train with --config.workdir set)"
    )
  steps = sorted(ocp.path.step.checkpoint_steps(directory))
  if not steps:
    raise FileNotFoundError(f"{directory}: no finished checkpoint yet")
  return steps


# eq=False: equal and hashed by identity (arrays have no single ==).
@dataclasses.dataclass(frozen=True, eq=False)
class Policy:
  """The actors of one checkpoint of a training run.

  Attributes:
    params: actor parameters of every seed, each leaf [S, ...].
    seed: index into the seed axis that `act` uses (0 <= seed < S).
    step: env steps of the checkpoint.
    config: the run's config (config.json merged onto today's defaults).
    trainer: the run's erljax.online.trainer.Trainer (its agent, its env: task
      and episode length), for erljax.collect.collect and erljax.vision.media.
    workdir: the run's work directory.
  """

  params: Any
  seed: int
  step: int
  config: ml_collections.ConfigDict
  trainer: trainer_lib.Trainer
  workdir: str

  def __post_init__(self):
    if not 0 <= self.seed < self.num_seeds:
      raise ValueError(
        f"seed={self.seed}: the run in {self.workdir} has "
        f"{self.num_seeds} seeds (indices 0.."
        f"{self.num_seeds - 1})"
      )

  @property
  def task(self) -> str:
    return self.trainer.env.task.name

  @property
  def num_seeds(self) -> int:
    return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

  @property
  def seed_params(self) -> Any:
    """The actor parameters of seed index `seed` (no seed axis)."""
    return jax.tree_util.tree_map(lambda x: x[self.seed], self.params)

  def with_seed(self, seed: int) -> "Policy":
    """The same checkpoint acting with seed index `seed`."""
    return dataclasses.replace(self, seed=seed)

  def at_step(self, step: int) -> "Policy":
    """The same run's actors at checkpoint `step`, sharing this policy's
    config and trainer (no second Trainer.create); ValueError as `load`'s
    for a step without a checkpoint."""
    step = _existing_step(self.workdir, step)
    return dataclasses.replace(
      self,
      params=_restore_actor(self.trainer, _arrays_path(self.workdir, step)),
      step=step,
    )

  def apply(
    self, params: Any, obs: jax.Array, key: Optional[jax.Array] = None
  ) -> jax.Array:
    """Action [A] in [-1, 1] of one seed's actor for obs [O] ([B, A] for
    [B, O]).

    key None: the deterministic action tanh(mean); a PRNG key: a sample.
    Pure and jittable; vmap it over the seed axis of `params` for all seeds.
    """
    agent = self.trainer.agent
    chex.assert_rank(obs, {1, 2})
    if obs.shape[-1] != agent.obs_size:
      raise ValueError(
        f"obs of shape {obs.shape}: task {self.task!r} has "
        f"observations of size {agent.obs_size}"
      )
    if key is None:
      return agent.deterministic_action(params, obs)
    return agent.sample_action(params, obs, key)[0]

  def act(self, obs: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
    """`apply` with the parameters of seed index `seed`: obs [O] -> [A] or
    [B, O] -> [B, A]."""
    return self.apply(self.seed_params, obs, key)


def load(workdir: str, step: Optional[int] = None, seed: int = 0) -> Policy:
  """The policy of a training run's checkpoint.

  Args:
    workdir: the run's work directory (--config.workdir).
    step: env steps of the checkpoint; None: the latest.
    seed: the seed index `act` uses (see the module docstring).

  Raises:
    FileNotFoundError: no workdir, config.json or checkpoint (names the path).
    ValueError: a foreign config.json, no checkpoint at `step` (lists the
      available steps), a seed index out of range, or a checkpoint whose
      actor does not match the run's config.
  """
  workdir = os.path.abspath(workdir)
  config = load_run_config(workdir)
  step = _existing_step(workdir, step)
  trainer = trainer_lib.Trainer.create(config)
  return Policy(
    params=_restore_actor(trainer, _arrays_path(workdir, step)),
    seed=seed,
    step=step,
    config=config,
    trainer=trainer,
    workdir=workdir,
  )


def _existing_step(workdir: str, step: Optional[int]) -> int:
  """`step` if workdir has a finalized checkpoint there (None: the latest);
  else ValueError listing the available steps."""
  steps = checkpoint_steps(workdir)
  if step is None:
    return int(steps[-1])
  if step not in steps:
    raise ValueError(
      f"step={step}: no checkpoint at that step in "
      f"{workdir}/checkpoints; available steps: {steps}"
    )
  return int(step)


def _arrays_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, "checkpoints", str(step), "arrays")


def _restore_actor(trainer: trainer_lib.Trainer, path: str) -> Any:
  """The actor's arrays, each [S, ...], of one checkpoint's `arrays` item."""
  template = jax.eval_shape(trainer.agent.init, jax.random.PRNGKey(0))
  paths, treedef = jax.tree_util.tree_flatten_with_path(template.actor_params)
  names = [_ACTOR + jax.tree_util.keystr(p) for p, _ in paths]
  handler = ocp.PyTreeCheckpointHandler()
  try:
    saved = handler.metadata(epath.Path(path)).tree
    missing = [n for n in names if n not in saved]
    got = (
      None
      if missing
      else handler.restore(
        epath.Path(path),
        args=ocp.args.PyTreeRestore(
          item={n: 0 for n in names},
          partial_restore=True,
          restore_args={
            n: ocp.RestoreArgs(restore_type=np.ndarray) for n in names
          },
        ),
      )
    )
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
      f"{path}: unreadable checkpoint ({type(e).__name__}: {str(e)[:200]})"
    ) from e
  finally:
    handler.close()
  if missing:
    raise ValueError(
      f"{path}: no {missing[0]}; not a checkpoint of a "
      "python -m erljax.train run"
    )
  leaves = []
  for name, (_, leaf) in zip(names, paths):
    arr = got[name]
    if arr.ndim != leaf.ndim + 1 or tuple(arr.shape[1:]) != tuple(leaf.shape):
      raise ValueError(
        f"{path}: {name} is {arr.shape}; the run's "
        f"config.json says {leaf.shape} per seed"
      )
    leaves.append(jnp.asarray(arr, leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)
