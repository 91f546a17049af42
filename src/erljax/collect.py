"""Demonstrations of mixed quality from a trained policy, as an episode dataset.

  python -m erljax.collect --workdir=runs/sac_pusher --out=data/pusher \
      --episodes=50 --noise_stds=0,0.2,0.5,1.0 --random_fraction=0.2

Loads the actor of a run's latest checkpoint with erljax.policy (the run's
config.json says the task, network sizes and episode length), plays
--episodes episodes at once in the vectorized env (one compiled scan over the
episode, vmapped over the envs) and writes them with erljax.dataset. Real
demonstrations are of mixed quality, so each episode has its own action
noise: a --random_fraction share of the episodes acts uniformly at random
(deliberately failed episodes), the others add Gaussian noise of a std taken
in turn from --noise_stds to the policy's deterministic action (clipped to
[-1, 1]).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from erljax import dataset as dataset_lib
from erljax import envs
from erljax import rollout as rollout_lib


def noise_schedule(
  num_episodes: int, noise_stds: Sequence[float], random_fraction: float
) -> Tuple[np.ndarray, np.ndarray]:
  """Per-episode noise std [N] float32 and random flag [N] bool.

  The first round(random_fraction * N) episodes act at random (their std is
  recorded as NaN-free 0); the rest take noise_stds in turn.
  """
  if num_episodes < 1:
    raise ValueError(f"episodes={num_episodes}: must be >= 1")
  if not 0.0 <= random_fraction <= 1.0:
    raise ValueError(f"random_fraction={random_fraction}: must lie in [0, 1]")
  if not noise_stds or any(not (s >= 0 and np.isfinite(s)) for s in noise_stds):
    raise ValueError(
      f"noise_stds={list(noise_stds)}: need at least one finite std >= 0"
    )
  n_random = int(round(random_fraction * num_episodes))
  random = np.arange(num_episodes) < n_random
  stds = np.asarray(noise_stds, np.float32)
  std = np.where(
    random, 0.0, stds[(np.arange(num_episodes) - n_random) % stds.size]
  )
  return std.astype(np.float32), random


def collect(
  trainer: Any,
  actor_params: Any,
  key: jax.Array,
  noise_std: np.ndarray,
  random: np.ndarray,
  episode_length: Optional[int] = None,
) -> rollout_lib.Episodes:
  """One episode per entry of noise_std [N] / random [N] (N parallel envs).

  actor_params: one seed's actor (no seed axis). Returns numpy leaves
  [N, T, ...].
  """
  n = int(noise_std.shape[0])
  env = envs.make_vec_env(
    trainer.env.task, n, episode_length or trainer.env.episode_length
  )
  agent = trainer.agent

  @jax.jit
  def play(params, std, rand, key):
    def act(obs, key):
      k_noise, k_rand = jax.random.split(key)
      mean = agent.deterministic_action(params, obs)
      noisy = jnp.clip(
        mean + std[:, None] * jax.random.normal(k_noise, mean.shape), -1.0, 1.0
      )
      uniform = jax.random.uniform(k_rand, mean.shape, minval=-1.0, maxval=1.0)
      return jnp.where(rand[:, None], uniform, noisy)

    return rollout_lib.rollout(env, act, key)

  episodes = play(
    actor_params, jnp.asarray(noise_std), jnp.asarray(random), key
  )
  return jax.tree_util.tree_map(np.asarray, episodes)


def to_dataset(
  task: str,
  episodes: rollout_lib.Episodes,
  noise_std: np.ndarray,
  random: np.ndarray,
  metadata: Dict[str, Any],
) -> dataset_lib.EpisodeDataset:
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
    metadata=metadata,
  )


def summary(ds: dataset_lib.EpisodeDataset) -> List[Dict[str, Any]]:
  """Return and success rate per noise level (random episodes apart)."""
  rows = []
  ret, succ = ds.episode_return, ds.episode_success
  groups = [("random", ds.random)] + [
    (f"std={s:g}", (~ds.random) & (ds.noise_std == s))
    for s in sorted(set(ds.noise_std[~ds.random].tolist()))
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


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top

  f = flags.FLAGS
  try:
    noise_stds = [float(s) for s in f.noise_stds]
    std, random = noise_schedule(f.episodes, noise_stds, f.random_fraction)
  except ValueError as e:
    print(f"erljax.collect: {e}", file=sys.stderr)
    sys.exit(2)
  if os.path.exists(os.path.join(f.out, dataset_lib.HEADER_FILE)):
    print(
      f"erljax.collect: --out={f.out} already holds a dataset", file=sys.stderr
    )
    sys.exit(2)
  t0 = time.perf_counter()
  # pylint: disable-next=g-import-not-at-top (loads the whole training stack)
  from erljax import policy as policy_lib

  try:
    policy = policy_lib.load(f.workdir, seed=f.policy_seed)
  except (FileNotFoundError, ValueError) as e:
    print(f"erljax.collect: {e}", file=sys.stderr)
    sys.exit(2)
  trainer, params, step = policy.trainer, policy.seed_params, policy.step
  episodes = collect(
    trainer, params, jax.random.PRNGKey(f.seed), std, random, f.episode_length
  )
  meta = {
    "source_workdir": os.path.abspath(f.workdir),
    "checkpoint_step": int(step),
    "policy_seed": f.policy_seed,
    "seed": f.seed,
    "noise_stds": noise_stds,
    "random_fraction": f.random_fraction,
    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }
  ds = to_dataset(trainer.env.task.name, episodes, std, random, meta)
  path = dataset_lib.save(ds, f.out, f.episodes_per_shard)
  print(
    f"wrote {ds.num_episodes} episodes of {ds.episode_length} steps "
    f"({trainer.env.task.name}, checkpoint step {step}) to {path} in "
    f"{time.perf_counter() - t0:.1f}s"
  )
  for row in summary(ds):
    print(
      f"  {row['episodes']:>10s}  n={row['count']:3d}  return "
      f"{row['return']:9.2f}  success {row['success']:.2f}"
    )


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string(
    "workdir", None, "workdir of a training run", required=True
  )
  flags.DEFINE_string(
    "out", None, "directory to write the dataset into", required=True
  )
  flags.DEFINE_integer("episodes", 50, "episodes to collect")
  flags.DEFINE_list(
    "noise_stds",
    ["0", "0.2", "0.5", "1.0"],
    "Gaussian action noise stds, one per episode in turn",
  )
  flags.DEFINE_float(
    "random_fraction", 0.2, "share of episodes with uniform random actions"
  )
  flags.DEFINE_integer(
    "episode_length", None, "steps per episode (default: the run's)"
  )
  flags.DEFINE_integer("seed", 0, "PRNG seed of resets and noise")
  flags.DEFINE_integer("policy_seed", 0, "which seed of the run acts")
  flags.DEFINE_integer("episodes_per_shard", 100, "episodes per .npz shard")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top

  _define_flags()
  app.run(main)
