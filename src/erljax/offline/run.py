"""Offline runs: rate a demonstration dataset, learn its reward, train IQL.

  python -m erljax.offline \
      --config=erljax:offline.py:pusher,erlvlm_iql \
      --config.dataset=data/pusher --config.workdir=runs/off_pusher_erlvlm

A run (all `num_seeds` seeds at once, over one seed axis of one compiled
program):
  1. loads the dataset (erljax.offline.dataset) and flattens its valid steps;
  2. sets the reward by method: the env reward (true_iql), the success signal
     (sparse_iql), or, for erlvlm_iql / rbrl_iql, rates the dataset (from
     its stored ratings file when this rater rated it before) and trains one
     reward ensemble per seed with the online loop's learner, then relabels
     every transition with the ensemble mean (erljax.offline.reward); bc
     needs no reward;
  3. rescales each seed's rewards (iql.reward_norm) by the IQL paper's
     MuJoCo rule, 1000 / (max - min episode return over the dataset): a
     scale that keeps the optimal policy and puts every reward source on
     the one scale beta = 3 was chosen for;
  4. trains IQL (erljax.agents.iql) in compiled chunks of offline.log_every
     gradient steps, evaluating the deterministic policy every
     offline.eval_every steps on offline.num_eval_envs fresh episodes.
With a workdir it writes config.json, metrics.jsonl / eval.csv /
seed_<S>.csv (erljax.io.metrics; their `env_steps` column counts
gradient steps), orbax checkpoints (erljax.io.checkpoint; --config.resume=True
continues) and final.json (per-seed success and return, reward
diagnostics, timings).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from erljax.config import defaults as config_lib
from erljax.offline import dataset as dataset_lib
from erljax.envs import vec_env as envs
from erljax.agents import iql as iql_lib
from erljax.offline import config as offline_config
from erljax.offline import reward as offline_reward
from erljax.envs import rollout as rollout_lib
from erljax.loop import run_loop


def normalize_rewards(
  rewards: np.ndarray, how: str, episode: np.ndarray | None = None
) -> np.ndarray:
  """rewards [S, M] -> [S, M], per seed.

  "returns" (the IQL paper's MuJoCo rule): r * 1000 / (max - min) of the
  dataset's episode returns under that seed's reward, episode [M] int giving
  each transition's episode (returns all equal: unscaled); "minmax" maps the
  rewards onto [0, 1] (constant rewards map to 0); "none" leaves them.
  """
  r = np.asarray(rewards, np.float32)
  if how == "none":
    return r
  if how == "returns":
    if episode is None:
      raise ValueError("normalize_rewards: 'returns' needs episode ids")
    returns = np.stack(
      [np.bincount(episode, weights=row) for row in r.astype(np.float64)]
    )
    ids = np.unique(episode)
    span = returns[:, ids].max(1) - returns[:, ids].min(1)
    scale = np.where(span > 0, 1000.0 / np.where(span > 0, span, 1.0), 1.0)
    return (r * scale[:, None]).astype(np.float32)
  lo = r.min(axis=1, keepdims=True)
  span = r.max(axis=1, keepdims=True) - lo
  return np.where(
    span > 0, (r - lo) / np.where(span > 0, span, 1.0), 0.0
  ).astype(np.float32)


def dataset_rewards(
  c: ml_collections.ConfigDict,
  data: Dict[str, np.ndarray],
  keys: jax.Array,
  log: Callable[[str], None],
) -> tuple[np.ndarray, Dict[str, Any]]:
  """Each seed's reward of every transition [S, M] for the method, and
  diagnostics of how it was obtained."""
  s, m = keys.shape[0], data["rewards"].shape[0]
  info: Dict[str, Any] = {}
  if c.method == "true_iql":
    r = np.broadcast_to(data["rewards"], (s, m))
  elif c.method == "sparse_iql":
    r = np.broadcast_to(data["success"].astype(np.float32), (s, m))
  elif c.method == "bc":
    r = np.zeros((s, m), np.float32)
  else:
    index, ratings, rate_info = offline_reward.rate_dataset(
      c, c.dataset, data, log
    )
    t0 = time.perf_counter()
    _, r, learn_info = offline_reward.learn_reward(
      c,
      data,
      index,
      ratings,
      jax.vmap(lambda k: jax.random.fold_in(k, 7))(keys),
    )
    r = np.asarray(r)
    info = {
      "ratings": rate_info,
      "reward": learn_info,
      "reward_seconds": time.perf_counter() - t0,
    }
    log(
      f"reward: epochs {learn_info['epochs']}, accuracy "
      f"{np.round(learn_info['reward_accuracy'], 3).tolist()}, "
      f"corr(r_hat, r) {np.round(learn_info['reward_corr'], 3).tolist()}, "
      f"corr(r_hat, rated) "
      f"{np.round(learn_info['signal_corr'], 3).tolist()}, labels "
      f"{learn_info['label_histogram']} ({learn_info['label_accuracy']:.3f}"
      " match the noise-free rater)"
    )
  return normalize_rewards(r, c.iql.reward_norm, data["episode"]), info


def _seed_axis(fn: Callable[..., Any], how: str, in_axes) -> Callable:
  """fn over a leading seed axis: vmap, or a sequential jax.lax.map."""
  if how == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    seeded = [a for a, ax in zip(args, in_axes) if ax == 0]

    def one(xs):
      it = iter(xs)
      return fn(*[next(it) if ax == 0 else a for a, ax in zip(args, in_axes)])

    return jax.lax.map(one, tuple(seeded))

  return mapped


class _IQLRun:
  """The offline mode of the run loop (erljax.loop.run_loop): IQL chunks of
  offline.log_every gradient steps on the dataset relabelled with each
  seed's reward, and the deterministic policy's evaluation.

  state: the IQL state of all seeds (leaves [S, ...]); train_s / eval_s:
  seconds this process spent in chunks / evaluations.
  """

  def __init__(self, c, agent, data, rewards, keys, eval_env, loop):
    self.c, self.keys, self.loop = c, keys, loop
    m, obs_size = data["rewards"].shape[0], data["observations"].shape[1]
    if c.iql.normalize_obs:
      obs_mean = data["observations"].mean(0)
      obs_std = data["observations"].std(0) + 1e-3
    else:
      obs_mean, obs_std = np.zeros(obs_size), np.ones(obs_size)
    shared = iql_lib.Batch(
      obs=jnp.asarray(data["observations"]),
      action=jnp.asarray(np.clip(data["actions"], -1.0, 1.0)),
      reward=jnp.zeros((m,)),
      discount=jnp.asarray(data["discount"]),
      next_obs=jnp.asarray(data["next_observations"]),
    )

    def init(key):
      return agent.init(
        key,
        jnp.asarray(obs_mean, jnp.float32),
        jnp.asarray(obs_std, jnp.float32),
      )

    def chunk(state, reward, key):
      return agent.train_steps(
        state, shared.replace(reward=reward), key, c.offline.log_every
      )

    def evaluate(state, key):
      ev = rollout_lib.evaluate(eval_env, lambda o: agent.act(state, o), key)
      return {k: ev[k] for k in ("eval_return", "eval_success")}

    t0 = time.perf_counter()
    axis = c.offline.seed_axis
    self.state = jax.jit(jax.vmap(init))(keys)
    self.rewards = jnp.asarray(rewards)
    chunk_fn = jax.jit(_seed_axis(chunk, axis, (0, 0, 0)), donate_argnums=0)
    eval_fn = jax.jit(_seed_axis(evaluate, axis, (0, 0)))
    self.chunk_fn = chunk_fn.lower(
      self.state, self.rewards, self._chunk_keys(0)
    ).compile()
    self.eval_fn = eval_fn.lower(self.state, self._eval_keys(0)).compile()
    self.compile_s = time.perf_counter() - t0
    self.train_s = self.eval_s = 0.0

  def _chunk_keys(self, step: int) -> jax.Array:
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(self.keys)

  def _eval_keys(self, step: int) -> jax.Array:
    return jax.vmap(
      lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), step)
    )(self.keys)

  def throughput(self, step: int) -> float:
    """Gradient steps per second of training in this process (0 if none:
    a resumed run that had nothing left to do)."""
    done = step - self.loop.step0
    return done / self.train_s if self.train_s > 0 else 0.0

  def train(self, step: int) -> Dict[str, Any]:
    t = time.perf_counter()
    self.state, metrics = self.chunk_fn(
      self.state, self.rewards, self._chunk_keys(step)
    )
    metrics = {
      k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()
    }
    self.train_s += time.perf_counter() - t
    return metrics

  def evaluate(self, step: int) -> Dict[str, Any]:
    t = time.perf_counter()
    ev = jax.device_get(self.eval_fn(self.state, self._eval_keys(step)))
    self.eval_s += time.perf_counter() - t
    return {k: np.asarray(v).tolist() for k, v in ev.items()}

  def load(self, tree: Dict[str, Any]) -> None:
    self.state = tree["iql"]

  def mode(self) -> run_loop.Mode:
    c = self.c
    return run_loop.Mode(
      total_steps=c.offline.steps,
      chunk_steps=c.offline.log_every,
      eval_every=c.offline.eval_every,
      train=self.train,
      evaluate=self.evaluate,
      eval_fields=lambda step, _: {
        "grad_steps": step,
        "time": self.train_s,
        "grad_steps_per_s": self.throughput(step),
      },
      eval_line=lambda rec: (
        f"step {rec['env_steps']:>7d}  eval_return "
        f"{rec['eval_return']:9.3f} ± {rec['eval_return_std']:.3f}  "
        f"success {rec['eval_success']:.2f}  "
        f"steps/s {rec['grad_steps_per_s']:6.1f}"
      ),
      state=lambda: {"iql": self.state},
      load=self.load,
    )


def _load_dataset(c: ml_collections.ConfigDict) -> dataset_lib.EpisodeDataset:
  ds = dataset_lib.load(c.dataset)
  if ds.task != c.task:
    raise config_lib.ConfigError(
      f"config.task={c.task!r}: the dataset in {c.dataset} holds "
      f"{ds.task!r} episodes"
    )
  return ds


def _summary(c, ds, seeds, iql: _IQLRun, done: run_loop.Result):
  """final.json's fields from the run's last evaluation and clocks."""
  last = done.evals()[-1]
  return {
    "task": c.task,
    "method": c.method,
    "dataset": os.path.abspath(c.dataset),
    "seeds": seeds,
    "grad_steps": done.step,
    "transitions": int(iql.rewards.shape[1]),
    "episodes": ds.num_episodes,
    "eval_success_per_seed": last["eval_success_per_seed"],
    "eval_return_per_seed": last["eval_return_per_seed"],
    "eval_success": last["eval_success"],
    "eval_return": last["eval_return"],
    "dataset_success": float(ds.episode_success.mean()),
    "dataset_return": float(ds.episode_return.mean()),
    "compile_seconds": iql.compile_s,
    "train_seconds": iql.train_s,
    "eval_seconds": iql.eval_s,
    "grad_steps_per_s": iql.throughput(done.step),
    "seed_axis": c.offline.seed_axis,
  }


def run(
  c: ml_collections.ConfigDict,
  log: Callable[[str], None] = functools.partial(print, flush=True),
) -> Dict[str, Any]:
  """One offline run of `c.num_seeds` seeds; returns the final summary
  (what final.json holds)."""
  offline_config.validate(c)
  t_start = time.perf_counter()
  ds = _load_dataset(c)
  data = ds.transitions()
  m = data["rewards"].shape[0]
  seeds = list(range(c.seed, c.seed + c.num_seeds))
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  obs_size, act_size = data["observations"].shape[1], data["actions"].shape[1]
  agent = iql_lib.IQL(obs_size, act_size, offline_config.iql_hyper(c))
  # Fails on a bad workdir before the dataset is rated.
  loop = run_loop.Loop.open(
    c, seeds, jax.eval_shape(jax.vmap(agent.init), keys), log
  )
  rewards, reward_info = dataset_rewards(c, data, keys, log)
  eval_env = envs.make_vec_env(
    c.task,
    c.offline.num_eval_envs,
    c.offline.episode_length or ds.episode_length,
  )
  iql = _IQLRun(c, agent, data, rewards, keys, eval_env, loop)
  log(
    f"erljax.offline: task={c.task} method={c.method} seeds={c.num_seeds} "
    f"transitions={m} episodes={ds.num_episodes} compile={iql.compile_s:.1f}s"
  )
  done = loop.run(iql.mode())
  summary = {
    **_summary(c, ds, seeds, iql, done),
    "total_seconds": time.perf_counter() - t_start,
    **reward_info,
  }
  if c.workdir:
    with open(os.path.join(c.workdir, "final.json"), "w") as f:
      json.dump(summary, f, indent=2)
  log(
    f"done: success {summary['eval_success']:.2f} return "
    f"{summary['eval_return']:.2f} ({c.num_seeds} seeds), "
    f"{summary['grad_steps_per_s']:.1f} grad steps/s"
  )
  return summary
