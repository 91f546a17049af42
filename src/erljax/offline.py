"""Offline runs: rate a demonstration dataset, learn its reward, train IQL.

  python -m erljax.offline \
      --config=experiments/configs/offline.py:pusher,erlvlm_iql \
      --config.dataset=data/pusher --config.workdir=runs/off_pusher_erlvlm

A run (all `num_seeds` seeds at once, over one seed axis of one compiled
program):
  1. loads the dataset (erljax.dataset) and flattens its valid steps;
  2. sets the reward by method: the env reward (true_iql), the success signal
     (sparse_iql), or, for erlvlm_iql / rbrl_iql, rates the dataset (from
     its stored ratings file when this rater rated it before) and trains one
     reward ensemble per seed with the online loop's learner, then relabels
     every transition with the ensemble mean (erljax.offline_reward); bc
     needs no reward;
  3. rescales each seed's rewards to [0, 1] over the dataset (iql.reward_norm,
     an affine map that keeps the optimal policy of these time-limited
     tasks; it puts every reward source on one scale for beta = 3);
  4. trains IQL (erljax.iql) in compiled chunks of offline.log_every
     gradient steps, evaluating the deterministic policy every
     offline.eval_every steps on offline.num_eval_envs fresh episodes.
With a workdir it writes config.json, metrics.jsonl / eval.csv /
seed_<S>.csv (erljax.metrics_writer; their `env_steps` column counts
gradient steps), orbax checkpoints (erljax.checkpoint; --config.resume=True
continues) and final.json (per-seed success and return, reward
diagnostics, timings).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_dict

from erljax import checkpoint as checkpoint_lib
from erljax import config as config_lib
from erljax import dataset as dataset_lib
from erljax import envs
from erljax import iql as iql_lib
from erljax import metrics_writer
from erljax import offline_reward
from erljax import rollout as rollout_lib

METHODS = ("erlvlm_iql", "rbrl_iql", "sparse_iql", "true_iql", "bc")
REWARD_NORMS = ("minmax", "none")
SEED_AXES = ("vmap", "map")


def default_config(
  task: str = "pusher", method: str = "erlvlm_iql"
) -> ml_collections.ConfigDict:
  """The offline defaults for TASK and METHOD (see experiments/configs/
  offline.py). Starts from erljax.config.default() so that reward.* and
  rater.* mean what they mean online."""
  if method not in METHODS:
    raise config_lib.ConfigError(
      f"config.method={method!r}: choose one of {METHODS}"
    )
  c = config_lib.default()
  c.task = task
  c.method = method
  c.dataset = ""  # directory written by erljax.collect
  c.num_seeds = 5
  c.iql = ml_collections.ConfigDict()
  c.iql.hidden_sizes = (256, 256)
  c.iql.actor_lr = 3e-4
  c.iql.critic_lr = 3e-4
  c.iql.value_lr = 3e-4
  c.iql.discount = 0.99
  c.iql.target_tau = 0.005
  c.iql.expectile = 0.7
  c.iql.beta = 3.0
  c.iql.max_weight = 100.0
  c.iql.batch_size = 256
  c.iql.normalize_obs = True  # by the dataset's mean and std
  c.iql.reward_norm = "minmax"  # rewards rescaled to [0, 1] per seed
  c.offline = ml_collections.ConfigDict()
  # Sized for a 2-core CPU: 6k steps of batch 256 are ~150 passes over a
  # 50-episode dataset of 200-step episodes.
  c.offline.steps = 6_000  # gradient steps
  c.offline.log_every = 1_000  # gradient steps per compiled chunk
  c.offline.eval_every = 3_000
  c.offline.num_eval_envs = 10  # deterministic episodes per seed
  # "vmap": seeds batched in every op (the project's default; fast on
  # accelerators); "map": one compiled jax.lax.map over the seed axis, which
  # ran 2.1x vmap's speed on the 2-core CPU for 2x256 networks in one
  # measurement and the same in another (experiments/results/offline.md).
  # Same numbers either way up to float rounding.
  c.offline.seed_axis = "vmap"
  c.offline.episode_length = config_dict.placeholder(int)  # None: dataset's
  # Rating the dataset (erlvlm_iql, rbrl_iql): how many transitions (0: all)
  # and the seed that picks them and seeds the rater.
  c.rating = ml_collections.ConfigDict()
  c.rating.queries = 0
  c.rating.seed = 0
  # One reward-training session on all ratings (online: one per feedback
  # session), so more epochs than a session's 10; early stop as online.
  c.reward.max_epochs = 30
  c.rater.noise = 0.2
  if method in ("erlvlm_iql", "rbrl_iql"):
    c.reward.source = "learned"
  if method == "rbrl_iql":
    c.reward.loss = "ce"
    c.reward.class_weighted = False
    c.reward.stratified = False
  c.checkpoint.every = 0  # gradient steps; 0: only at the end
  return c


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The online checks (reward.*, rater.*, ...) plus the offline keys;
  raises ConfigError naming key and value."""
  config_lib.validate(c)
  check = config_lib._check  # pylint: disable=protected-access
  pos_int = config_lib._int(1)  # pylint: disable=protected-access
  pos = config_lib._pos_float  # pylint: disable=protected-access
  check(c, "method", lambda v: v in METHODS, f"must be one of {METHODS}")
  check(
    c,
    "dataset",
    lambda v: isinstance(v, str) and v,
    "must name a dataset directory (python -m erljax.collect --out=DIR)",
  )
  learned = c.method in ("erlvlm_iql", "rbrl_iql")
  check(
    c,
    "reward.source",
    lambda v: v == ("learned" if learned else "env"),
    f"method {c.method!r} needs {'learned' if learned else 'env'}",
  )
  if learned:
    check(
      c,
      "reward.model",
      lambda v: v == "mlp",
      "offline reward learning uses the state-action MLP",
    )
    check(
      c,
      "reward.feedback_type",
      lambda v: v == "rating",
      "offline reward learning learns from ratings",
    )
  check(
    c,
    "iql.hidden_sizes",
    lambda v: len(v) >= 1 and all(pos_int(h) for h in v),
    "must be a non-empty sequence of positive integers",
  )
  for key in (
    "iql.actor_lr",
    "iql.critic_lr",
    "iql.value_lr",
    "iql.beta",
    "iql.max_weight",
  ):
    check(c, key, pos, "must be a finite number > 0")
  check(c, "iql.discount", lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)")
  check(c, "iql.target_tau", lambda v: 0.0 < v <= 1.0, "must lie in (0, 1]")
  check(c, "iql.expectile", lambda v: 0.0 < v < 1.0, "must lie in (0, 1)")
  check(c, "iql.batch_size", pos_int, "must be an integer >= 1")
  check(
    c,
    "iql.normalize_obs",
    lambda v: isinstance(v, bool),
    "must be True or False",
  )
  check(
    c,
    "iql.reward_norm",
    lambda v: v in REWARD_NORMS,
    f"must be one of {REWARD_NORMS}",
  )
  for key in (
    "offline.steps",
    "offline.log_every",
    "offline.eval_every",
    "offline.num_eval_envs",
  ):
    check(c, key, pos_int, "must be an integer >= 1")
  for key in ("offline.steps", "offline.eval_every"):
    check(
      c,
      key,
      lambda v: v % c.offline.log_every == 0,
      f"must be a multiple of offline.log_every={c.offline.log_every}",
    )
  check(
    c,
    "offline.seed_axis",
    lambda v: v in SEED_AXES,
    f"must be one of {SEED_AXES}",
  )
  if c.offline.episode_length is not None:
    check(c, "offline.episode_length", pos_int, "must be an integer >= 1")
  non_neg = config_lib._int(0)  # pylint: disable=protected-access
  check(
    c,
    "rating.queries",
    non_neg,
    "must be an integer >= 0 (0: rate every transition)",
  )
  check(c, "rating.seed", non_neg, "must be an integer >= 0")
  return c


def iql_hyper(c: ml_collections.ConfigDict) -> iql_lib.IQLHyper:
  q = c.iql
  return iql_lib.IQLHyper(
    hidden_sizes=tuple(q.hidden_sizes),
    actor_lr=q.actor_lr,
    critic_lr=q.critic_lr,
    value_lr=q.value_lr,
    discount=q.discount,
    target_tau=q.target_tau,
    expectile=q.expectile,
    beta=q.beta,
    max_weight=q.max_weight,
    batch_size=q.batch_size,
    bc=c.method == "bc",
  )


def normalize_rewards(rewards: np.ndarray, how: str) -> np.ndarray:
  """rewards [S, M] -> [S, M]: "minmax" maps each seed's rewards onto [0, 1]
  (constant rewards map to 0); "none" leaves them."""
  r = np.asarray(rewards, np.float32)
  if how == "none":
    return r
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
  return normalize_rewards(r, c.iql.reward_norm), info


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


def run(
  c: ml_collections.ConfigDict,
  log: Callable[[str], None] = functools.partial(print, flush=True),
) -> Dict[str, Any]:
  """One offline run of `c.num_seeds` seeds; returns the final summary
  (what final.json holds)."""
  validate(c)
  t_start = time.perf_counter()
  ds = dataset_lib.load(c.dataset)
  if ds.task != c.task:
    raise config_lib.ConfigError(
      f"config.task={c.task!r}: the dataset in {c.dataset} holds "
      f"{ds.task!r} episodes"
    )
  data = ds.transitions()
  m = data["rewards"].shape[0]
  seeds = list(range(c.seed, c.seed + c.num_seeds))
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
  rewards, reward_info = dataset_rewards(c, data, keys, log)

  obs_size, act_size = data["observations"].shape[1], data["actions"].shape[1]
  agent = iql_lib.IQL(obs_size, act_size, iql_hyper(c))
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
  eval_env = envs.make_vec_env(
    c.task,
    c.offline.num_eval_envs,
    c.offline.episode_length or ds.episode_length,
  )
  axis = c.offline.seed_axis

  def init(key):
    return agent.init(
      key, jnp.asarray(obs_mean, jnp.float32), jnp.asarray(obs_std, jnp.float32)
    )

  def chunk(state, reward, key):
    return agent.train_steps(
      state, shared.replace(reward=reward), key, c.offline.log_every
    )

  def evaluate(state, key):
    return rollout_lib.evaluate(eval_env, lambda o: agent.act(state, o), key)

  t0 = time.perf_counter()
  init_fn = jax.jit(jax.vmap(init))
  state = init_fn(keys)
  chunk_fn = jax.jit(_seed_axis(chunk, axis, (0, 0, 0)), donate_argnums=0)
  eval_fn = jax.jit(_seed_axis(evaluate, axis, (0, 0)))
  rewards_d = jnp.asarray(rewards)
  chunk_keys = lambda step: jax.vmap(lambda k: jax.random.fold_in(k, step))(
    keys
  )
  eval_keys = lambda step: jax.vmap(
    lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), step)
  )(keys)
  chunk_fn = chunk_fn.lower(state, rewards_d, chunk_keys(0)).compile()
  eval_fn = eval_fn.lower(state, eval_keys(0)).compile()
  compile_s = time.perf_counter() - t0
  log(
    f"erljax.offline: task={c.task} method={c.method} seeds={c.num_seeds} "
    f"transitions={m} episodes={ds.num_episodes} compile={compile_s:.1f}s"
  )

  step, train_s, eval_s = 0, 0.0, 0.0
  records: List[Dict[str, Any]] = []
  ckpt = writer = None
  if c.workdir:
    ckpt = checkpoint_lib.Checkpointer.open(
      c, jax.eval_shape(init_fn, keys), log
    )
    template = {"iql": state, "progress": {}}
    restored = ckpt.restore(template) if c.resume else None
    if restored is not None:
      step, tree = restored
      state = tree["iql"]
      records = tree["progress"]["records"]
      log(f"resumed from the checkpoint at step {step}")
    with open(os.path.join(c.workdir, "config.json"), "w") as f:
      f.write(c.to_json_best_effort(indent=2))
    writer = metrics_writer.MetricsWriter(
      c.workdir,
      seeds,
      c.tensorboard,
      records,
      resume_step=step if restored is not None else None,
    )

  start = step

  def throughput() -> float:
    """Gradient steps per second of training in this process (0 if none:
    a resumed run that had nothing left to do)."""
    return (step - start) / train_s if train_s > 0 else 0.0

  def write(rec):
    if writer is not None:
      writer.write(rec)
    else:
      records.append(rec)

  def do_eval(train: Dict[str, Any]) -> Dict[str, Any]:
    nonlocal eval_s
    t = time.perf_counter()
    ev = {
      k: np.asarray(v).tolist()
      for k, v in jax.device_get(eval_fn(state, eval_keys(step))).items()
    }
    eval_s += time.perf_counter() - t
    rec: Dict[str, Any] = {
      "kind": "eval",
      "env_steps": step,
      "grad_steps": step,
      "time": train_s,
      "grad_steps_per_s": throughput(),
    }
    for k, v in {**ev, **train}.items():
      arr = np.asarray(v, np.float64)
      rec[f"{k}_per_seed"] = v
      rec[k] = float(arr.mean())
      rec[f"{k}_std"] = float(arr.std())
    write(rec)
    log(
      f"step {step:>7d}  eval_return {rec['eval_return']:9.3f} ± "
      f"{rec['eval_return_std']:.3f}  success {rec['eval_success']:.2f}  "
      f"steps/s {rec['grad_steps_per_s']:6.1f}"
    )
    return rec

  try:
    with checkpoint_lib.StopOnSignal() as stop:
      if step == 0:
        do_eval({})
      while step < c.offline.steps and not stop.requested:
        t = time.perf_counter()
        state, metrics = chunk_fn(state, rewards_d, chunk_keys(step))
        metrics = {
          k: np.asarray(v).tolist() for k, v in jax.device_get(metrics).items()
        }
        train_s += time.perf_counter() - t
        step += c.offline.log_every
        bad = [k for k, v in metrics.items() if not np.all(np.isfinite(v))]
        if bad:
          raise FloatingPointError(
            f"non-finite IQL metric {bad[0]}={metrics[bad[0]]} at step {step}"
          )
        if step % c.offline.eval_every == 0 or step >= c.offline.steps:
          do_eval(metrics)
        if ckpt and (
          (c.checkpoint.every and ckpt.due(step))
          or stop.requested
          or step >= c.offline.steps
        ):
          ckpt.save(step, {"iql": state, "progress": {"records": records}})
  finally:
    if ckpt is not None:
      ckpt.close()
    if writer is not None:
      writer.close()
  last = [r for r in records if r["kind"] == "eval"][-1]
  summary = {
    "task": c.task,
    "method": c.method,
    "dataset": os.path.abspath(c.dataset),
    "seeds": seeds,
    "grad_steps": step,
    "transitions": m,
    "episodes": ds.num_episodes,
    "eval_success_per_seed": last["eval_success_per_seed"],
    "eval_return_per_seed": last["eval_return_per_seed"],
    "eval_success": last["eval_success"],
    "eval_return": last["eval_return"],
    "dataset_success": float(ds.episode_success.mean()),
    "dataset_return": float(ds.episode_return.mean()),
    "compile_seconds": compile_s,
    "train_seconds": train_s,
    "eval_seconds": eval_s,
    "grad_steps_per_s": throughput(),
    "seed_axis": axis,
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


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  if config is None:
    print(
      "erljax.offline: --config is required, e.g. "
      "--config=experiments/configs/offline.py:pusher,erlvlm_iql",
      file=sys.stderr,
    )
    sys.exit(2)
  try:
    run(config)
  except config_lib.ConfigError as e:
    print(f"erljax: bad config: {e}", file=sys.stderr)
    sys.exit(2)
  except (dataset_lib.DatasetError, checkpoint_lib.WorkdirError) as e:
    print(f"erljax: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:
    print(f"erljax: training diverged: {e}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file(
    "config",
    None,
    "an experiments/configs/offline.py:TASK,METHOD config",
    lock_config=True,
  )
  app.run(main)
