"""Demonstrations of mixed quality from a trained run, as an episode dataset.

  python -m erljax.collect --workdir=runs/sac_pusher --out=data/pusher \
      --episodes=50 --steps=all --noise_stds=0,0.3 --random_fraction=0.2

Loads the actors of a run's checkpoints with erljax.online.policy (the run's
config.json says the task, network sizes and episode length), plays
--episodes episodes at once in the vectorized env (one compiled scan over the
episode, vmapped over the envs) and writes them with erljax.offline.dataset.
Real demonstrations are of mixed quality, so each episode has its own
demonstrator and action noise:

* a --random_fraction share of the episodes acts uniformly at random
  (deliberately failed episodes);
* the others take in turn every pair (checkpoint, std) of --steps x
  --noise_stds: the actor of that checkpoint (an earlier checkpoint is a
  less trained, systematically worse demonstrator) with Gaussian noise of
  that std added to its deterministic action (clipped to [-1, 1]).

Why several checkpoints: zero-mean noise around one policy leaves that
policy the mean action in every state, so behaviour cloning recovers it and
no offline RL method has anything to improve on; demonstrators of different
skill (as D4RL's medium-replay / medium-expert mixes are) do.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from erljax import cli_errors
from erljax import cli_flags
from erljax.offline import dataset as dataset_lib
from erljax.envs import vec_env as envs
from erljax.envs import rollout as rollout_lib


def episode_schedule(
  num_episodes: int,
  noise_stds: Sequence[float],
  random_fraction: float,
  num_policies: int = 1,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per-episode noise std [N] float32, random flag [N] bool and policy
  index [N] int32.

  The first round(random_fraction * N) episodes act at random (std 0,
  policy -1); non-random episode k takes the pair k mod (P * S) of the grid
  policies x stds, policy-major: policy (k // S) mod P, std k mod S.
  """
  if num_episodes < 1:
    raise ValueError(f"episodes={num_episodes}: must be >= 1")
  if not 0.0 <= random_fraction <= 1.0:
    raise ValueError(f"random_fraction={random_fraction}: must lie in [0, 1]")
  if not noise_stds or any(not (s >= 0 and np.isfinite(s)) for s in noise_stds):
    raise ValueError(
      f"noise_stds={list(noise_stds)}: need at least one finite std >= 0"
    )
  if num_policies < 1:
    raise ValueError(f"num_policies={num_policies}: must be >= 1")
  n_random = int(round(random_fraction * num_episodes))
  random = np.arange(num_episodes) < n_random
  stds = np.asarray(noise_stds, np.float32)
  k = np.arange(num_episodes) - n_random
  std = np.where(random, 0.0, stds[k % stds.size])
  policy = np.where(random, -1, (k // stds.size) % num_policies)
  return std.astype(np.float32), random, policy.astype(np.int32)


def collect(
  trainer: Any,
  actor_params: Any,
  key: jax.Array,
  noise_std: np.ndarray,
  random: np.ndarray,
  policy: np.ndarray,
  episode_length: Optional[int] = None,
) -> rollout_lib.Episodes:
  """One episode per entry of noise_std / random / policy [N] (N parallel
  envs).

  actor_params: the actors of P checkpoints of one seed, each leaf
  [P, ...]; episode i is played by actor policy[i] (any index for a random
  episode). Returns numpy leaves [N, T, ...].
  """
  n = int(noise_std.shape[0])
  chex.assert_shape([random, policy], (n,))
  env = envs.make_vec_env(
    trainer.env.task, n, episode_length or trainer.env.episode_length
  )
  agent = trainer.agent

  @functools.partial(jax.jit, compiler_options=envs.compiler_options(env))
  def play(params, std, rand, policy, key):
    per_env = jax.tree_util.tree_map(
      lambda x: x[jnp.maximum(policy, 0)], params
    )

    def act(obs, key):
      k_noise, k_rand = jax.random.split(key)
      mean = jax.vmap(agent.deterministic_action)(per_env, obs)
      noisy = jnp.clip(
        mean + std[:, None] * jax.random.normal(k_noise, mean.shape), -1.0, 1.0
      )
      uniform = jax.random.uniform(k_rand, mean.shape, minval=-1.0, maxval=1.0)
      return jnp.where(rand[:, None], uniform, noisy)

    return rollout_lib.rollout(env, act, key)

  episodes = play(
    actor_params,
    jnp.asarray(noise_std),
    jnp.asarray(random),
    jnp.asarray(policy),
    key,
  )
  return jax.tree_util.tree_map(np.asarray, episodes)


def to_dataset(
  task: str,
  episodes: rollout_lib.Episodes,
  noise_std: np.ndarray,
  random: np.ndarray,
  policy_step: np.ndarray,
  metadata: Dict[str, Any],
) -> dataset_lib.EpisodeDataset:
  """policy_step [N]: env steps of each episode's checkpoint (-1: random)."""
  f32 = lambda x: np.asarray(x, np.float32)
  return dataset_lib.EpisodeDataset(
    task=task,
    observations=f32(episodes.obs),
    actions=f32(episodes.action),
    rewards=f32(episodes.reward),
    next_observations=f32(episodes.next_obs),
    terminals=np.asarray(episodes.terminal, bool),
    success=np.asarray(episodes.success, bool),
    valid=np.asarray(episodes.valid, bool),
    poses=f32(episodes.pose),
    noise_std=f32(noise_std),
    random=np.asarray(random, bool),
    policy_step=np.asarray(policy_step, np.int32),
    metadata=metadata,
  )


def summary(ds: dataset_lib.EpisodeDataset) -> List[Dict[str, Any]]:
  """Return and success rate of the random episodes and of each pair
  (checkpoint, noise std)."""
  rows = []
  ret, succ = ds.episode_return, ds.episode_success
  pairs = sorted(
    set(
      zip(
        ds.policy_step[~ds.random].tolist(), ds.noise_std[~ds.random].tolist()
      )
    )
  )
  groups = [("random", ds.random)] + [
    (
      f"step={step} std={s:g}",
      (~ds.random) & (ds.policy_step == step) & (ds.noise_std == s),
    )
    for step, s in pairs
  ]
  for name, mask in groups:
    if mask.any():
      rows.append(
        {
          "episodes": name,
          "count": int(mask.sum()),
          "return": float(ret[mask].mean()),
          "success": float(succ[mask].mean()),
        }
      )
  return rows


def parse_steps(value: Sequence[str], available: Sequence[int]) -> List[int]:
  """--steps: [] or ["latest"] -> the last checkpoint, ["all"] -> every
  one, else the listed env steps (each must be a checkpoint).

  Raises:
    ValueError: names a step that is not an integer or not a checkpoint.
  """
  value = [v.strip() for v in value if v.strip()]
  if not value or value == ["latest"]:
    return [int(available[-1])]
  if value == ["all"]:
    return [int(s) for s in available]
  steps = []
  for v in value:
    try:
      step = int(v)
    except ValueError:
      raise ValueError(
        f"steps={','.join(value)}: {v!r} is not an integer "
        "(give env steps, 'all' or 'latest')"
      ) from None
    if step not in available:
      raise ValueError(
        f"steps={','.join(value)}: no checkpoint at step {step}; "
        f"available steps: {list(available)}"
      )
    steps.append(step)
  return steps


def collect_run(
  workdir: str,
  out: str,
  episodes: int = 50,
  steps: Sequence[str] = ("latest",),
  noise_stds: Sequence[float] = (0.0, 0.2, 0.5, 1.0),
  random_fraction: float = 0.2,
  seed: int = 0,
  policy_seed: int = 0,
  episode_length: Optional[int] = None,
  episodes_per_shard: int = 100,
) -> Tuple[dataset_lib.EpisodeDataset, str]:
  """Plays the episode schedule with the actors of a run's checkpoints
  `steps` (see parse_steps) and writes the dataset into `out`.

  Returns the dataset and its header file's path.

  Raises:
    FileExistsError: `out` already holds a dataset.
    FileNotFoundError: no run, config.json or checkpoint in `workdir`.
    ValueError: a bad step, std, fraction or episode count (names it).
  """
  # pylint: disable-next=g-import-not-at-top (loads the whole training stack)
  from erljax.online import policy as policy_lib

  if os.path.exists(os.path.join(out, dataset_lib.HEADER_FILE)):
    raise FileExistsError(f"--out={out} already holds a dataset")
  chosen = parse_steps(steps, policy_lib.checkpoint_steps(workdir))
  std, random, policy = episode_schedule(
    episodes, noise_stds, random_fraction, len(chosen)
  )
  first = policy_lib.load(workdir, step=chosen[0], seed=policy_seed)
  policies = [first] + [first.at_step(s) for s in chosen[1:]]
  trainer = policies[0].trainer
  params = jax.tree_util.tree_map(
    lambda *x: jnp.stack(x), *[p.seed_params for p in policies]
  )
  played = collect(
    trainer,
    params,
    jax.random.PRNGKey(seed),
    std,
    random,
    policy,
    episode_length,
  )
  meta = {
    "source_workdir": os.path.abspath(workdir),
    "checkpoint_steps": chosen,
    "policy_seed": policy_seed,
    "seed": seed,
    "noise_stds": [float(x) for x in noise_stds],
    "random_fraction": random_fraction,
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  policy_step = np.where(random, -1, np.asarray(chosen)[np.maximum(policy, 0)])
  ds = to_dataset(trainer.env.task.name, played, std, random, policy_step, meta)
  return ds, dataset_lib.save(ds, out, episodes_per_shard)


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  t0 = time.perf_counter()
  with cli_errors.exit_status(
    "erljax.collect",
    bad_input=(FileExistsError, FileNotFoundError, ValueError),
  ):
    cli_flags.absl_aliases(f, {"seed": "rng_seed", "policy_seed": "seed_index"})
    ds, path = collect_run(
      f.workdir,
      f.out,
      episodes=f.episodes,
      steps=f.steps,
      noise_stds=[float(s) for s in f.noise_stds],
      random_fraction=f.random_fraction,
      seed=f.rng_seed,
      policy_seed=f.seed_index,
      episode_length=f.episode_length,
      episodes_per_shard=f.episodes_per_shard,
    )
  print(
    f"wrote {ds.num_episodes} episodes of {ds.episode_length} steps "
    f"({ds.task}, checkpoint steps {ds.metadata['checkpoint_steps']}) to "
    f"{path} in {time.perf_counter() - t0:.1f}s"
  )
  for row in summary(ds):
    print(
      f"  {row['episodes']:>22s}  n={row['count']:3d}  return "
      f"{row['return']:9.2f}  success {row['success']:.2f}"
    )


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string(
    "workdir", None, "workdir of a training run", required=True
  )
  flags.DEFINE_string(
    "out",
    None,
    "folder to write the dataset into (created; must not hold one)",
    required=True,
  )
  flags.DEFINE_integer("episodes", 50, "episodes to collect")
  flags.DEFINE_list(
    "steps",
    ["latest"],
    "checkpoints (env steps) whose actors act, in turn; 'all' or 'latest'",
  )
  flags.DEFINE_list(
    "noise_stds",
    ["0", "0.2", "0.5", "1.0"],
    "Gaussian action noise stds, each paired with every checkpoint in turn",
  )
  flags.DEFINE_float(
    "random_fraction", 0.2, "share of episodes with uniform random actions"
  )
  flags.DEFINE_integer(
    "episode_length", None, "steps per episode (default: the run's)"
  )
  flags.DEFINE_integer("rng_seed", 0, "PRNG seed of resets and noise")
  flags.DEFINE_integer(
    "seed_index",
    0,
    "which of the run's seeds acts (index K is PRNG seed config.seed + K)",
  )
  flags.DEFINE_integer("seed", None, "deprecated alias of --rng_seed")
  flags.DEFINE_integer("policy_seed", None, "deprecated alias of --seed_index")
  flags.DEFINE_integer("episodes_per_shard", 100, "episodes per .npz shard")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top

  _define_flags()
  app.run(main)
