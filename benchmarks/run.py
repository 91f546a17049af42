"""Throughput benchmark suite: erljax's pieces, timed apart.

  python -m benchmarks.run --suite=quick --out=benchmarks/results/quick.json

Sections (each reports compile time apart from steady-state throughput, and
the process's peak RSS after it; device memory stats where the device has
them):
  env       steps/s of each task vs number of parallel envs.
  sac       erljax's compiled training chunk alone (no evaluation, no host
            work): env steps/s, gradient updates/s. A component figure;
            erljax against Brax's SAC is `benchmarks.end_to_end`, which
            times both from their public interfaces as a user waits.
  erl_loop  the full ERL-VLM loop (SAC + reward learning + relabelling +
            scripted rating, 50 queries every 5,000 steps) via runner.run
            with reward.source=learned, as a fraction of the same run with
            reward.source=env.
  reward    rating-loss training steps/s (MLP and CNN ensembles) and the
            time to relabel a replay buffer with the MLP ensemble.
  breakdown where a training chunk's time goes: env step, action sampling,
            replay insert, replay sample, SAC updates, each timed alone.
  devices   the SAC chunk with its state sharded over 1, 2, ... devices
            (erljax.runtime.sharding): seeds split over them, and one seed on
            the data axis; only with more than one JAX device.

erljax's chunk is compiled ahead of time (timed apart), run once to warm up,
then timed chunk by chunk with block_until_ready; the median is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import common  # sets TF_CPP_MIN_LOG_LEVEL before jax loads
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from erljax.envs import vec_env as envs
from erljax.envs import tasks
from erljax.rewards import queries as feedback_lib
from erljax.rewards import learner as reward_learner
from erljax.agents import replay
from erljax.rewards import model as reward_model_lib
from erljax.rewards import source as reward_source
from erljax.runtime import sharding
from erljax.online import runner
from erljax.online import trainer as trainer_lib

SCHEMA_VERSION = 1
SECTIONS = ("env", "sac", "erl_loop", "reward", "breakdown", "devices")


@dataclasses.dataclass(frozen=True)
class Suite:
  """Sizes of one suite run."""

  env_tasks: Tuple[str, ...]
  env_sizes: Tuple[int, ...]
  env_steps: int  # vectorized steps per timed env rollout
  sac: common.SACSetup
  sac_chunk_steps: int  # env steps per timed chunk
  sac_chunks: int  # timed chunks (after one warm-up)
  erl_total_steps: int
  erl_first_session: int
  erl_interval: int
  erl_queries: int
  reward_ratings: int  # stored ratings the MLP trains on
  reward_batch: int
  cnn_batch: int
  cnn_steps: int
  cnn_frame: int  # frame side (224 in the paper)
  relabel_size: int
  relabel_chunk_sizes: Tuple[int, ...]
  repeats: int = 3  # timed repetitions of the small pieces

  def as_dict(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d["sac"] = self.sac.as_dict()
    return d


SUITES: Dict[str, Suite] = {
  "quick": Suite(
    env_tasks=("reacher", "CartpoleSwingup"),
    env_sizes=(1, 64, 1024),
    env_steps=100,
    sac=common.SACSetup(
      num_envs=8,
      batch_size=256,
      updates_per_step=4,
      seed_steps=1_000,
      replay_capacity=100_000,
      num_eval_envs=1,
    ),
    sac_chunk_steps=2_000,
    sac_chunks=3,
    erl_total_steps=25_000,
    erl_first_session=10_000,
    erl_interval=5_000,
    erl_queries=50,
    reward_ratings=2_000,
    reward_batch=128,
    cnn_batch=32,
    cnn_steps=4,
    cnn_frame=224,
    relabel_size=1_000_000,
    relabel_chunk_sizes=(500, 10_000),
  ),
  "full": Suite(
    # MetaWorld's MJX variants take minutes per compile and step at a few
    # env steps/s on a CPU: timed there by benchmarks.metaworld_envs only.
    env_tasks=tuple(
      t
      for t in tasks.task_names()
      if not t.endswith("-mjx") or jax.default_backend() != "cpu"
    ),
    env_sizes=(1, 4, 16, 64, 256, 1024, 4096),
    env_steps=200,
    sac=common.SACSetup(
      num_envs=8,
      batch_size=256,
      updates_per_step=4,
      seed_steps=1_000,
      replay_capacity=100_000,
      num_eval_envs=1,
    ),
    sac_chunk_steps=5_000,
    sac_chunks=5,
    erl_total_steps=60_000,
    erl_first_session=10_000,
    erl_interval=5_000,
    erl_queries=50,
    reward_ratings=10_000,
    reward_batch=128,
    cnn_batch=512,
    cnn_steps=4,
    cnn_frame=224,
    relabel_size=1_000_000,
    relabel_chunk_sizes=(500, 2_000, 10_000, 50_000),
  ),
}


def _block(tree):
  return jax.tree_util.tree_map(lambda x: x.block_until_ready(), tree)


def _timed(fn: Callable[[], Any], repeats: int) -> List[float]:
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    _block(fn())
    out.append(time.perf_counter() - t)
  return out


def _memory() -> Dict[str, Any]:
  return {
    "peak_rss_mb": round(common.peak_rss_mb(), 1),
    "device_memory": common.device_memory(),
  }


def _log(msg: str):
  print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------
# 1. Environment throughput.


def env_throughput(
  task: str, num_envs: int, steps: int, repeats: int
) -> Dict[str, Any]:
  """steps vectorized steps of num_envs envs with uniform random actions."""
  venv = envs.make_vec_env(task, num_envs, episode_length=1000)

  def rollout(state, key):
    def body(state, k):
      a = jax.random.uniform(
        k, (num_envs, venv.action_size), minval=-1.0, maxval=1.0
      )
      state, out = venv.step(state, a)
      return state, jnp.sum(out.reward)

    return jax.lax.scan(body, state, jax.random.split(key, steps))

  t = time.perf_counter()
  # What the env asks for on a CPU (MetaWorld's MJX Sawyer), as erljax's
  # own programs compile it.
  jit = functools.partial(jax.jit, compiler_options=envs.compiler_options(venv))
  state = jit(venv.reset)(jax.random.PRNGKey(0))
  fn = jit(rollout).lower(state, jax.random.PRNGKey(1)).compile()
  compile_s = time.perf_counter() - t
  _block(fn(state, jax.random.PRNGKey(2)))
  times = _timed(lambda: fn(state, jax.random.PRNGKey(3)), repeats)
  sec = statistics.median(times)
  return {
    "task": task,
    "num_envs": num_envs,
    "compile_s": compile_s,
    "steps_per_s": steps * num_envs / sec,
    "seconds": times,
  }


# ----------------------------------------------------------------------------
# 2. SAC: erljax's training chunk alone.


def erljax_sac(
  s: common.SACSetup,
  chunk_steps: int,
  chunks: int,
  num_seeds: int = 1,
  num_devices: int = 1,
  replay_shards: int = 0,
) -> Dict[str, Any]:
  """Steady-state throughput of erljax's compiled training chunk; with
  devices, how much of a seed's replay buffer each holds."""
  c = common.erljax_config(
    s, chunk_steps * (chunks + 1), chunk_steps, num_seeds
  )
  c.num_devices = num_devices
  c.replay_shards = replay_shards
  trainer = trainer_lib.Trainer.create(c)
  layout = sharding.Layout.create(num_devices, num_seeds, s.num_envs)
  keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(num_seeds))
  t = time.perf_counter()
  state = layout.put_state(jax.jit(jax.vmap(trainer.init))(keys))
  chunk = jax.jit(jax.vmap(trainer.train_chunk), donate_argnums=0)
  chunk = chunk.lower(state).compile()
  compile_s = time.perf_counter() - t
  state, _ = _block(chunk(state))  # warm-up
  times = []
  for _ in range(chunks):
    state = layout.put_state(state)
    t = time.perf_counter()
    state, _ = _block(chunk(state))
    times.append(time.perf_counter() - t)
  sec = statistics.median(times)
  sps = chunk_steps * num_seeds / sec
  obs = state.buffer.data.obs
  return {
    "replay_obs_bytes": int(obs.nbytes),
    "replay_obs_bytes_per_device": int(obs.addressable_shards[0].data.nbytes),
    "compile_s": compile_s,
    "chunk_seconds": times,
    "env_steps_per_s": sps,
    "updates_per_s": sps / s.num_envs * s.updates_per_step,
    "num_seeds": num_seeds,
    "layout": layout.describe(),
  }


def sac_section(suite: Suite) -> Dict[str, Any]:
  s = suite.sac
  out: Dict[str, Any] = {
    "setup": s.as_dict(),
    "chunk_steps": suite.sac_chunk_steps,
  }
  _log(
    f"sac: erljax {s.task} envs={s.num_envs} batch={s.batch_size} "
    f"upd/step={s.updates_per_step}"
  )
  out["erljax"] = erljax_sac(s, suite.sac_chunk_steps, suite.sac_chunks)
  out["erljax"]["memory"] = _memory()
  return out


# ----------------------------------------------------------------------------
# 3. Full ERL-VLM loop vs plain SAC.


def _erl_config(suite: Suite, learned: bool):
  s = suite.sac
  c = common.erljax_config(s, suite.erl_total_steps, suite.erl_interval)
  c.eval_every = suite.erl_interval
  if learned:
    c.reward.source = "learned"
    c.feedback.first_session = suite.erl_first_session
    c.feedback.interval = suite.erl_interval
    c.feedback.queries = suite.erl_queries
    c.feedback.budget = 10_000
    c.reward.hidden_sizes = tuple(s.hidden)
  return c


def _loop_rates(
  res: runner.RunResult, first_session: int, total: int
) -> Dict[str, Any]:
  times = {r["env_steps"]: r["time"] for r in res.history}
  # Records at env step X are stamped after chunk X and the session at X.
  start = times.get(first_session, 0.0)
  steady_steps = total - first_session
  return {
    "compile_s": res.compile_seconds,
    "train_s": res.train_seconds,
    "env_steps_per_s": total / res.train_seconds,
    "steady_env_steps_per_s": (
      steady_steps / (times[total] - start) if steady_steps > 0 else math.nan
    ),
    "feedback_seconds": [round(f["seconds"], 3) for f in res.feedback],
  }


def erl_loop_section(suite: Suite) -> Dict[str, Any]:
  out: Dict[str, Any] = {
    "total_steps": suite.erl_total_steps,
    "first_session": suite.erl_first_session,
    "interval": suite.erl_interval,
    "queries": suite.erl_queries,
  }
  quiet = lambda msg: None
  for name, learned in (("sac", False), ("erl_vlm", True)):
    _log(f"erl_loop: {name}")
    res = runner.run(_erl_config(suite, learned), log=quiet)
    out[name] = _loop_rates(res, suite.erl_first_session, suite.erl_total_steps)
    out[name]["memory"] = _memory()
  out["fraction_of_sac"] = (
    out["erl_vlm"]["env_steps_per_s"] / out["sac"]["env_steps_per_s"]
  )
  out["steady_fraction_of_sac"] = (
    out["erl_vlm"]["steady_env_steps_per_s"]
    / out["sac"]["steady_env_steps_per_s"]
  )
  return out


# ----------------------------------------------------------------------------
# 4. Reward-model pieces.


def _rating_epoch_rate(
  learner: reward_learner.RewardLearner,
  obs: np.ndarray,
  action: np.ndarray,
  num_classes: int,
  repeats: int,
) -> Dict[str, Any]:
  """Rating-loss training steps/s of learner.epoch on a stored rating set."""
  n = obs.shape[0]
  rng = np.random.default_rng(0)
  labels = rng.integers(0, num_classes, n)
  rs = feedback_lib.RatingSet(
    obs=jnp.asarray(obs),
    action=jnp.asarray(action),
    label=jnp.asarray(labels, jnp.int32),
    true_reward=jnp.zeros((n, 1)),
    size=jnp.asarray(n, jnp.int32),
    insert_pos=jnp.zeros((), jnp.int32),
  )
  e = learner.model.ensemble_size
  example = (obs[:1, 0, 0], action[:1, 0, 0])
  params = learner.model.init(jax.random.PRNGKey(0), example)
  opt = learner.optimizer.init(params)
  idx, mask = learner.schedule(labels, rng, e)
  weights = jnp.ones((num_classes,))
  t = time.perf_counter()
  epoch = (
    jax.jit(learner.epoch)
    .lower(params, opt, rs, idx, mask, weights, jnp.asarray(True))
    .compile()
  )
  compile_s = time.perf_counter() - t
  run = lambda: epoch(params, opt, rs, idx, mask, weights, jnp.asarray(True))
  _block(run())
  times = _timed(run, repeats)
  steps = idx.shape[0]
  return {
    "compile_s": compile_s,
    "steps": steps,
    "batch": idx.shape[2],
    "ensemble": e,
    "steps_per_s": steps / statistics.median(times),
    "seconds": times,
  }


def relabel_rate(
  size: int, chunk_size: int, obs_size: int, act_size: int, repeats: int
) -> Dict[str, Any]:
  """Seconds to relabel a full buffer of `size` with the MLP ensemble."""
  model = reward_model_lib.RewardModel("mlp", 3, (256, 256, 256))
  src = reward_source.LearnedReward(model, obs_size, act_size)
  params = src.init(jax.random.PRNGKey(0))
  example = replay.Transition.zeros(obs_size, act_size)
  buf = replay.init(size, example)
  buf = buf.replace(size=jnp.asarray(size, jnp.int32))

  def fn(buf, params):
    return replay.relabel(
      buf, lambda t: src(params, t), chunk_size=chunk_size
    ).data.reward

  t = time.perf_counter()
  compiled = jax.jit(fn).lower(buf, params).compile()
  compile_s = time.perf_counter() - t
  _block(compiled(buf, params))
  times = _timed(lambda: compiled(buf, params), repeats)
  return {
    "size": size,
    "chunk_size": chunk_size,
    "compile_s": compile_s,
    "seconds": statistics.median(times),
    "transitions_per_s": size / statistics.median(times),
  }


def reward_section(suite: Suite) -> Dict[str, Any]:
  task = tasks.get_task(suite.sac.task)
  venv = envs.make_vec_env(task, 1)
  o, a = venv.observation_size, venv.action_size
  k = task.num_classes
  rng = np.random.default_rng(0)
  out: Dict[str, Any] = {}
  _log("reward: mlp rating loss")
  mlp = reward_learner.RewardLearner(
    reward_model_lib.RewardModel("mlp", 3, (256, 256, 256)),
    k,
    batch_size=suite.reward_batch,
  )
  n = suite.reward_ratings
  out["mlp_rating_loss"] = _rating_epoch_rate(
    mlp,
    rng.normal(size=(n, 1, 1, o)).astype(np.float32),
    rng.uniform(-1, 1, (n, 1, 1, a)).astype(np.float32),
    k,
    suite.repeats,
  )
  out["mlp_rating_loss"]["memory"] = _memory()
  _log("reward: cnn rating loss")
  cnn = reward_learner.RewardLearner(
    reward_model_lib.RewardModel("cnn", 3),
    k,
    batch_size=suite.cnn_batch,
    stratified=False,
  )
  n = suite.cnn_batch * suite.cnn_steps
  f = suite.cnn_frame
  out["cnn_rating_loss"] = _rating_epoch_rate(
    cnn,
    rng.integers(0, 256, (n, 1, 1, f, f, 3), dtype=np.uint8),
    np.zeros((n, 1, 1, a), np.float32),
    k,
    suite.repeats,
  )
  out["cnn_rating_loss"]["frame"] = [f, f, 3]
  out["cnn_rating_loss"]["memory"] = _memory()
  out["relabel"] = []
  for cs in suite.relabel_chunk_sizes:
    _log(f"reward: relabel {suite.relabel_size} (chunks of {cs})")
    rec = relabel_rate(suite.relabel_size, cs, o, a, suite.repeats)
    rec["memory"] = _memory()
    out["relabel"].append(rec)
  return out


# ----------------------------------------------------------------------------
# 7. Where a chunk's time goes.


def breakdown_section(
  suite: Suite, chunk_seconds: Optional[float] = None
) -> Dict[str, Any]:
  """Each piece of one vectorized training step, timed alone in a scan.

  chunk_seconds: the whole chunk's time if already measured (sac section,
  same setup); otherwise it is measured here.
  """
  s = suite.sac
  length = suite.sac_chunk_steps // s.num_envs
  c = common.erljax_config(s, suite.sac_chunk_steps, suite.sac_chunk_steps)
  tr = trainer_lib.Trainer.create(c)
  state = jax.jit(tr.init)(jax.random.PRNGKey(0))
  # A buffer with something in it to sample from.
  full = state.buffer.replace(
    size=jnp.asarray(state.buffer.capacity, jnp.int32)
  )
  agent, n = tr.agent, s.num_envs
  obs = state.env.obs
  act = jnp.zeros((n, tr.env.action_size))
  trans = replay.Transition(
    obs=obs,
    action=act,
    reward=jnp.zeros((n,)),
    true_reward=jnp.zeros((n,)),
    discount=jnp.ones((n,)),
    next_obs=obs,
    pose=jnp.zeros((n, tr.env.pose_size)),
  )
  batch = replay.sample(full, jax.random.PRNGKey(1), s.batch_size)

  def scan(body, init, num):
    def f(init, key):
      return jax.lax.scan(body, init, jax.random.split(key, num))[0]

    return f, init

  env_step, act_step = common.step_bodies(tr, state, n)

  def add_step(buf, _):
    return replay.add(buf, trans), None

  def sample_step(acc, k):
    return acc + jnp.sum(replay.sample(full, k, s.batch_size).reward), None

  def update_step(sac, k):
    return agent.update(sac, batch, k)[0], None

  pieces = {
    "env_step": scan(env_step, state.env, length),
    "sample_action": scan(act_step, obs, length),
    "replay_add": scan(add_step, state.buffer, length),
    "replay_sample": scan(
      sample_step, jnp.zeros(()), length * s.updates_per_step
    ),
    "sac_update": scan(update_step, state.sac, length * s.updates_per_step),
  }
  out: Dict[str, Any] = {
    "vectorized_steps": length,
    "updates": length * s.updates_per_step,
  }
  key = jax.random.PRNGKey(2)
  for name, (fn, init) in pieces.items():
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(init, key).compile()
    compile_s = time.perf_counter() - t
    _block(compiled(init, key))
    sec = statistics.median(
      _timed(functools.partial(compiled, init, key), suite.repeats)
    )
    out[name] = {"seconds": sec, "compile_s": compile_s}
  if chunk_seconds is None:
    chunk = erljax_sac(s, suite.sac_chunk_steps, suite.repeats)
    chunk_seconds = statistics.median(chunk["chunk_seconds"])
  out["chunk_seconds"] = chunk_seconds
  total = sum(out[k]["seconds"] for k in pieces)
  out["sum_of_pieces_seconds"] = total
  for name in pieces:
    out[name]["share_of_chunk"] = out[name]["seconds"] / out["chunk_seconds"]
  return out


# ----------------------------------------------------------------------------
# 5. Devices.


def devices_section(suite: Suite) -> Dict[str, Any]:
  """The SAC chunk on 1, 2, 4, ... devices two ways: `count` seeds split
  over the devices, and one seed on a data axis (replay_shards = count, so
  every row computes the same thing)."""
  count = jax.device_count()
  if count < 2:
    return {"skipped": f"{count} JAX device (run with more to compare)"}
  rows = []
  for mode, seeds, shards in (("seeds", count, 0), ("data", 1, count)):
    d = 1
    while d <= count:
      _log(f"devices: {mode} axis, {d} of {count}")
      rec = erljax_sac(
        suite.sac,
        suite.sac_chunk_steps,
        suite.sac_chunks,
        num_seeds=seeds,
        num_devices=d,
        replay_shards=shards,
      )
      rec.update(num_devices=d, mode=mode)
      rows.append(rec)
      d *= 2
  return {"num_seeds": count, "rows": rows}


# ----------------------------------------------------------------------------


def _write(out: Dict[str, Any], path: str):
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(out, f, indent=1)


def run_suite(
  suite: Suite,
  name: str,
  sections: Sequence[str] = SECTIONS,
  out_path: str = "",
) -> Dict[str, Any]:
  """Runs the sections; returns the JSON-ready result.

  With out_path the partial result is written after every section (marked
  "complete": false until the end), so a long run that is cut short keeps
  what it measured.
  """
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    raise ValueError(
      f"unknown sections {sorted(unknown)}; choose from {SECTIONS}"
    )
  t0 = time.perf_counter()
  out: Dict[str, Any] = {
    "schema_version": SCHEMA_VERSION,
    "suite": name,
    "config": suite.as_dict(),
    "versions": common.versions(),
    "machine": common.machine(),
    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "complete": False,
    "results": {},
  }
  res = out["results"]

  def done_section():
    out["wall_s"] = time.perf_counter() - t0
    out["memory"] = _memory()
    if out_path:
      _write(out, out_path)

  if "env" in sections:
    rows = []
    for task in suite.env_tasks:
      for n in suite.env_sizes:
        _log(f"env: {task} x {n}")
        rec = env_throughput(task, n, suite.env_steps, suite.repeats)
        rec["memory"] = _memory()
        rows.append(rec)
    res["env"] = rows
    done_section()
  if "sac" in sections:
    res["sac"] = sac_section(suite)
    done_section()
  if "erl_loop" in sections:
    res["erl_loop"] = erl_loop_section(suite)
    done_section()
  if "reward" in sections:
    res["reward"] = reward_section(suite)
    done_section()
  if "breakdown" in sections:
    _log("breakdown")
    chunk_s = (
      statistics.median(res["sac"]["erljax"]["chunk_seconds"])
      if "sac" in res
      else None
    )
    res["breakdown"] = breakdown_section(suite, chunk_s)
    done_section()
  if "devices" in sections:
    res["devices"] = devices_section(suite)
    done_section()
  out["complete"] = True
  done_section()
  return out


def table(out: Dict[str, Any]) -> str:
  """A plain-text table of the headline figures."""
  lines = []
  add = lines.append
  m = out["machine"]
  add(
    f"suite={out['suite']}  {m['cpu_model']} x{m['cpu_count']}  "
    f"{m['jax_backend']} {m['devices']}  jax {out['versions']['jax']}  "
    f"brax {out['versions']['brax']}  wall {out['wall_s']:.0f}s  "
    f"peak RSS {out['memory']['peak_rss_mb']:.0f} MiB"
  )
  r = out["results"]
  if "env" in r:
    add("")
    add(f"{'env task':<18}{'envs':>6}{'steps/s':>12}{'compile s':>11}")
    for row in r["env"]:
      add(
        f"{row['task']:<18}{row['num_envs']:>6}{row['steps_per_s']:>12.0f}"
        f"{row['compile_s']:>11.1f}"
      )
  if "sac" in r:
    s = r["sac"]
    add("")
    add(
      f"SAC {s['setup']['task']}: envs {s['setup']['num_envs']}, batch "
      f"{s['setup']['batch_size']}, hidden {s['setup']['hidden']}, "
      f"{s['setup']['updates_per_step']} updates / vectorized step"
    )
    add(f"{'':<10}{'env steps/s':>13}{'updates/s':>11}{'compile s':>11}")
    x = s["erljax"]
    add(
      f"{'chunk':<10}{x['env_steps_per_s']:>13.0f}"
      f"{x['updates_per_s']:>11.0f}{x['compile_s']:>11.1f}"
    )
    add("(the chunk alone; against Brax: python -m benchmarks.end_to_end)")
  if "erl_loop" in r:
    e = r["erl_loop"]
    add("")
    add(
      f"ERL-VLM loop ({e['queries']} queries every {e['interval']} steps "
      f"from {e['first_session']}, {e['total_steps']} steps)"
    )
    add(f"{'':<10}{'env steps/s':>13}{'steady':>9}{'compile s':>11}")
    for who in ("sac", "erl_vlm"):
      x = e[who]
      add(
        f"{who:<10}{x['env_steps_per_s']:>13.0f}"
        f"{x['steady_env_steps_per_s']:>9.0f}{x['compile_s']:>11.1f}"
      )
    add(
      f"fraction of SAC: {e['fraction_of_sac']:.2f} overall, "
      f"{e['steady_fraction_of_sac']:.2f} after the first session"
    )
  if "reward" in r:
    w = r["reward"]
    add("")
    for name in ("mlp_rating_loss", "cnn_rating_loss"):
      x = w[name]
      add(
        f"{name:<16} {x['steps_per_s']:9.3g} steps/s (ensemble "
        f"{x['ensemble']}, batch {x['batch']}), compile "
        f"{x['compile_s']:.1f}s"
      )
    for x in w["relabel"]:
      add(
        f"relabel {x['size']} transitions, chunks of {x['chunk_size']}: "
        f"{x['seconds']:.2f}s ({x['transitions_per_s']:.0f}/s)"
      )
  if "breakdown" in r:
    b = r["breakdown"]
    add("")
    add(
      f"one chunk ({b['vectorized_steps']} vectorized steps, "
      f"{b['updates']} updates): {b['chunk_seconds']:.2f}s; pieces alone "
      f"sum to {b['sum_of_pieces_seconds']:.2f}s"
    )
    for name in (
      "env_step",
      "sample_action",
      "replay_add",
      "replay_sample",
      "sac_update",
    ):
      add(
        f"  {name:<14}{b[name]['seconds']:>8.3f}s "
        f"{100 * b[name]['share_of_chunk']:>5.1f}%"
      )
  if "devices" in r:
    d = r["devices"]
    add("")
    if "skipped" in d:
      add(f"devices: skipped ({d['skipped']})")
    else:
      for row in d["rows"]:
        add(
          f"devices {row['num_devices']} ({row['mode']} axis): "
          f"{row['env_steps_per_s']:.0f} env steps/s over "
          f"{row['num_seeds']} seeds, replay obs "
          f"{row['replay_obs_bytes_per_device']} of "
          f"{row['replay_obs_bytes']} bytes per device {row['layout']}"
        )
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--suite", default="quick", choices=sorted(SUITES))
  p.add_argument("--out", default="", help="JSON file to write (optional)")
  p.add_argument(
    "--sections",
    default=",".join(SECTIONS),
    help=f"comma-separated subset of {SECTIONS}",
  )
  a = p.parse_args(argv)
  sections = tuple(x for x in a.sections.split(",") if x)
  out = run_suite(SUITES[a.suite], a.suite, sections, a.out)
  print(table(out), flush=True)
  if a.out:
    print("wrote", a.out)
  return out


if __name__ == "__main__":
  main()
