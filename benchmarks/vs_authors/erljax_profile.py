"""erljax's 1-env, 1-update-per-step loop on Drawer Open, piece by piece.

  PYTHONPATH=$PWD/src python -m benchmarks.vs_authors.erljax_profile \
      --rewards=mlp,cnn --out=/tmp/vs_authors_profile.json

The pieces of one env step of `Trainer.train_chunk` at the settings of
`benchmarks.vs_authors.run` (`erljax:rating.py:drawer-open,erlvlm,paper`,
1 env, 1 update per step), each compiled alone as a `lax.scan` of --length
steps, as `benchmarks.run`'s breakdown does: physics (`env.step`, MuJoCo on
the host through a callback), action sampling, the learned reward of the new
transition (the CNN's frame drawn as --frames says: by OpenGL on the host,
as theirs, or ray-cast in JAX), the replay insert, one SAC
update on a sampled batch of 512, and the k-NN entropy reward of the
pre-training phase; then per item: relabelling, and one evaluation step.
Then the whole chunk (`train_chunk`, the same number of steps). Each row
has wall and CPU seconds per env step (the median of --repeats), so it
reads on a shared machine; `their_loop.py`'s profile is its counterpart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
from erljax.agents import intrinsic
from erljax.agents import replay
from erljax.envs import rollout
from erljax.online import trainer as trainer_lib
from erljax.configs import rating

from benchmarks import common


def config(reward: str, length: int, frames: str = "opengl"):
  c = rating.get_config("drawer-open,erlvlm,paper")
  c.num_envs, c.updates_per_step, c.num_eval_envs = 1, 1, 1
  c.reward.model = reward
  c.reward.frames = frames
  c.log_every = length
  c.total_steps = 10 * length
  c.eval_every = 10 * length
  c.replay_capacity = 10 * length
  c.seed_steps = length
  c.feedback.unsupervised_steps = length
  c.progress = False
  return c


def _time(fn: Callable[[], Any], repeats: int) -> Dict[str, float]:
  jax.block_until_ready(fn())  # warm-up
  wall: List[float] = []
  cpu: List[float] = []
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn())
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def profile(
  reward: str, length: int, repeats: int, frames: str = "opengl"
) -> Dict[str, Any]:
  c = config(reward, length, frames)
  tr = trainer_lib.Trainer.create(c)
  opts = tr.compiler_options
  state = jax.jit(tr.init, compiler_options=opts)(jax.random.PRNGKey(0))
  full = state.buffer.replace(
    size=jnp.asarray(state.buffer.capacity, jnp.int32)
  )
  state = state.replace(buffer=full)
  agent, n = tr.agent, 1
  act = jnp.zeros((n, tr.env.action_size))
  env_state, out = tr.env.step(state.env, act)
  trans = replay.Transition(
    obs=state.env.obs,
    action=act,
    reward=out.reward,
    true_reward=out.reward,
    discount=jnp.ones((n,)),
    next_obs=out.next_obs,
    pose=tr.env.pose(out.inner),
  )
  ref, valid = replay.oldest(full, c.replay_capacity)

  env_step, act_step = common.step_bodies(tr, state, n)

  def reward_step(acc, k):
    t = trans.replace(action=trans.action + 1e-3 * jax.random.normal(k))
    return acc + jnp.sum(tr.reward(state.reward_params, t)), None

  def add_step(buf, _):
    return replay.add(buf, trans), None

  def update_step(sac, k):
    k1, k2 = jax.random.split(k)
    batch = replay.sample(full, k1, c.batch_size)
    return agent.update(sac, batch, k2)[0], None

  def knn_step(acc, k):
    batch = replay.sample(full, k, c.batch_size)
    r = intrinsic.knn_distance(batch.obs, ref.obs, valid, c.feedback.knn_k)
    return acc + jnp.sum(r), None

  def scan(body, init):
    def f(init, key):
      return jax.lax.scan(body, init, jax.random.split(key, length))[0]

    return f, init

  pieces = {
    "physics": scan(env_step, state.env),
    "act": scan(act_step, state.env.obs),
    "reward": scan(reward_step, jnp.zeros(())),
    "store": scan(add_step, state.buffer),
    "update": scan(update_step, state.sac),
    "unsup_knn": scan(knn_step, jnp.zeros(())),
  }
  rows: Dict[str, Any] = {}
  key = jax.random.PRNGKey(1)
  for name, (fn, init) in pieces.items():
    t = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=opts).lower(init, key).compile()
    rows[name] = _time(lambda f=compiled, i=init: f(i, key), repeats)
    rows[name]["compile_s"] = time.perf_counter() - t
    print(f"  {name}: {rows[name]} for {length} steps", flush=True)
  # Relabelling the whole (full) buffer: per item.
  relabel = jax.jit(
    lambda buf, p: replay.relabel(buf, lambda t: tr.reward(p, t)),
    compiler_options=opts,
  )
  r = _time(lambda: relabel(full, state.reward_params).data.reward, repeats)
  rows["relabel_per_item"] = {k: v / full.capacity for k, v in r.items()}
  # One deterministic evaluation episode (500 steps): per step.
  ev = jax.jit(
    lambda s, k: rollout.evaluate(
      tr.eval_env,
      lambda o: agent.deterministic_action(s.sac.actor_params, o),
      k,
    ),
    compiler_options=opts,
  )
  e = _time(lambda: ev(state, key), repeats)
  rows["evaluation_per_step"] = {
    k: v / tr.eval_env.episode_length for k, v in e.items()
  }
  for name in pieces:
    for k in ("wall_s", "cpu_s"):
      rows[name][k] /= length
  # The whole chunk of `length` steps (rl phase: no k-NN), per step.
  chunk = jax.jit(tr.train_chunk, compiler_options=opts)
  after = state.replace(env_steps=jnp.asarray(2 * length, jnp.int32))
  whole = _time(lambda: chunk(after, False)[1], repeats)
  rows["chunk"] = {k: v / length for k, v in whole.items()}
  return {
    "reward": reward,
    "frames": frames if reward == "cnn" else None,
    "length": length,
    # What run.estimate_erljax needs of the config beside the pieces.
    "warmup_updates": c.feedback.warmup_updates,
    "relabel_chunk": replay.RELABEL_CHUNK,
    "per_env_step": rows,
  }


def table(res: Dict[str, Any]) -> str:
  frames = f" ({res['frames']} frames)" if res["frames"] else ""
  lines = [
    f"erljax, reward={res['reward']}{frames}: ms per env step (wall / CPU)"
  ]
  for name, r in res["per_env_step"].items():
    lines.append(
      f"  {name:20s} {1e3 * r['wall_s']:9.2f} {1e3 * r['cpu_s']:9.2f}"
    )
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rewards", default="mlp,cnn")
  p.add_argument("--length", type=int, default=50, help="steps per scan")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument(
    "--frames",
    default="opengl",
    choices=("opengl", "raycast"),
    help="who draws the CNN's frames (reward.frames)",
  )
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  out: Dict[str, Any] = {"load_average_start": list(os.getloadavg())}
  out["rows"] = []
  for reward in a.rewards.split(","):
    res = profile(reward, a.length, a.repeats, a.frames)
    print(table(res), flush=True)
    out["rows"].append(res)
  out["machine"] = common.machine()
  out["versions"] = common.versions()
  if a.out:
    common.write_json(a.out, out)
  return out


if __name__ == "__main__":
  main()
