"""Where one SAC update's time goes: erljax's update against Brax's, profiled.

  PYTHONPATH=$PWD/src python -m benchmarks.update_profile \
      --out=benchmarks/results/update_profile.json

On a CPU the SAC update is ~98% of a training chunk at every vectorization
(`benchmarks.end_to_end`, `benchmarks.run`'s breakdown), so erljax's speed
against Brax's SAC is decided by the update alone. This times a compiled
scan of --updates SAC updates on fixed random batches (reacher's sizes: 11-D
observations, 2-D actions; 3x256 networks, batch 256 by default) for:

* erljax: `erljax.agents.sac.SAC.update` (critic step, then the actor and
  temperature steps on the just-updated critic, the reference's order);
* brax: the same update assembled from Brax's own SAC pieces
  (`brax.training.agents.sac` losses and networks,
  `brax.training.gradients.gradient_update_fn`, optax Adam) in the order its
  `train.py` runs them: temperature, critic, then the actor on the critic
  from before the step, and a Polyak target update every step.

The programs run interleaved in random order, --rounds times; the figure is
the median milliseconds per update. Then each is traced once with
`jax.profiler` and the trace summed per update over XLA's CPU worker
threads: `busy` (time inside any executed op), `dots` (inside matrix
products), and `concurrency` = busy / wall, how much of the work XLA's
runtime overlapped across threads (1 = none; at most the thread count).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from erljax.agents import sac as sac_lib
from erljax.agents.replay import Transition

_OBS, _ACT = 11, 2  # reacher's sizes
# Trace events of XLA's CPU runtime that are not ops.
_BOOKKEEPING = ("ThunkExecutor", "SlinkyThreadPool", "end: ")


def _batches(updates: int, batch: int, key: jax.Array) -> Dict[str, jax.Array]:
  """Random transitions, leaves [updates, batch, ...]."""
  ko, ka, kr, kn = jax.random.split(key, 4)
  return {
    "obs": jax.random.normal(ko, (updates, batch, _OBS)),
    "action": jnp.tanh(jax.random.normal(ka, (updates, batch, _ACT))),
    "reward": jax.random.normal(kr, (updates, batch)),
    "discount": jnp.ones((updates, batch)),
    "next_obs": jax.random.normal(kn, (updates, batch, _OBS)),
  }


def erljax_program(hidden: Sequence[int], data: Dict[str, jax.Array]):
  """(fn, state, batches): fn(state, batches, key) scans erljax's update."""
  agent = sac_lib.SAC(_OBS, _ACT, sac_lib.SACHyper(hidden_sizes=tuple(hidden)))
  batches = Transition(
    obs=data["obs"],
    action=data["action"],
    reward=data["reward"],
    true_reward=data["reward"],
    discount=data["discount"],
    next_obs=data["next_obs"],
  )

  def fn(state, batches, key):
    def one(state, x):
      batch, k = x
      state, metrics = agent.update(state, batch, k)
      return state, metrics["critic_loss"]

    n = batches.reward.shape[0]
    return jax.lax.scan(one, state, (batches, jax.random.split(key, n)))

  return fn, agent.init(jax.random.PRNGKey(0)), batches


def brax_program(hidden: Sequence[int], data: Dict[str, jax.Array]):
  """(fn, state, batches): the same update from Brax's SAC pieces."""
  from brax.training import gradients  # pylint: disable=g-import-not-at-top
  from brax.training import types  # pylint: disable=g-import-not-at-top
  from brax.training.acme import running_statistics  # pylint: disable=g-import-not-at-top
  from brax.training.acme import specs  # pylint: disable=g-import-not-at-top
  from brax.training.agents.sac import losses  # pylint: disable=g-import-not-at-top
  from brax.training.agents.sac import networks  # pylint: disable=g-import-not-at-top

  nets = networks.make_sac_networks(
    _OBS, _ACT, hidden_layer_sizes=tuple(hidden)
  )
  alpha_loss, critic_loss, actor_loss = losses.make_losses(
    nets, reward_scaling=1.0, discounting=0.99, action_size=_ACT
  )
  opt = optax.adam(3e-4)
  alpha_step = gradients.gradient_update_fn(
    alpha_loss, opt, pmap_axis_name=None
  )
  critic_step = gradients.gradient_update_fn(
    critic_loss, opt, pmap_axis_name=None
  )
  actor_step = gradients.gradient_update_fn(
    actor_loss, opt, pmap_axis_name=None
  )
  norm = running_statistics.init_state(specs.Array((_OBS,), jnp.float32))
  kp, kq = jax.random.split(jax.random.PRNGKey(0))
  policy, q = nets.policy_network.init(kp), nets.q_network.init(kq)
  log_alpha = jnp.asarray(0.0)
  state = {
    "policy": policy,
    "q": q,
    "target_q": q,
    "log_alpha": log_alpha,
    "policy_opt": opt.init(policy),
    "q_opt": opt.init(q),
    "alpha_opt": opt.init(log_alpha),
  }
  n, b = data["reward"].shape
  batches = types.Transition(
    observation=data["obs"],
    action=data["action"],
    reward=data["reward"],
    discount=data["discount"],
    next_observation=data["next_obs"],
    extras={
      "state_extras": {"truncation": jnp.zeros((n, b))},
      "policy_extras": {},
    },
  )

  def fn(state, batches, key):
    def one(s, x):
      t, k = x
      k_alpha, k_critic, k_actor = jax.random.split(k, 3)
      _, log_alpha, alpha_opt = alpha_step(
        s["log_alpha"], s["policy"], norm, t, k_alpha,
        optimizer_state=s["alpha_opt"],
      )  # fmt: skip
      alpha = jnp.exp(s["log_alpha"])
      c_loss, q, q_opt = critic_step(
        s["q"], s["policy"], norm, s["target_q"], alpha, t, k_critic,
        optimizer_state=s["q_opt"],
      )  # fmt: skip
      _, policy, policy_opt = actor_step(
        s["policy"], norm, s["q"], alpha, t, k_actor,
        optimizer_state=s["policy_opt"],
      )  # fmt: skip
      target_q = optax.incremental_update(q, s["target_q"], 0.005)
      new = {
        "policy": policy,
        "q": q,
        "target_q": target_q,
        "log_alpha": log_alpha,
        "policy_opt": policy_opt,
        "q_opt": q_opt,
        "alpha_opt": alpha_opt,
      }
      return new, c_loss

    return jax.lax.scan(one, state, (batches, jax.random.split(key, n)))

  return fn, state, batches


def profile(
  call: Callable[[], Any], num_updates: int, trace_dir: str
) -> Dict[str, float]:
  """Per-update wall / busy / dot milliseconds of one traced call."""
  jax.profiler.start_trace(trace_dir)
  try:
    jax.block_until_ready(call())
  finally:
    jax.profiler.stop_trace()
  paths = glob.glob(
    os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True
  )
  data = jax.profiler.ProfileData.from_file(max(paths, key=os.path.getmtime))
  wall = busy = dots = 0.0
  for plane in data.planes:
    for line in plane.lines:
      for ev in line.events:
        if ev.name == "ThunkExecutor::Execute (wait for completion)":
          wall += ev.duration_ns
        elif line.name.startswith("tf_XLA") and not ev.name.startswith(
          _BOOKKEEPING
        ):  # an executed HLO op, on a worker or the calling thread
          busy += ev.duration_ns
          if ev.name.startswith("dot"):
            dots += ev.duration_ns
  ms = lambda ns: ns / 1e6 / num_updates
  out = {"wall_ms": ms(wall), "busy_ms": ms(busy), "dots_ms": ms(dots)}
  out["concurrency"] = out["busy_ms"] / out["wall_ms"] if wall else float("nan")
  return out


def run(
  hidden: Sequence[int], batch: int, updates: int, rounds: int, seed: int = 0
) -> Dict[str, Any]:
  data = _batches(updates, batch, jax.random.PRNGKey(1))
  key = jax.random.PRNGKey(2)
  programs = {"erljax": erljax_program(hidden, data)}
  programs["brax"] = brax_program(hidden, data)
  compiled, results = {}, {}
  for name, (fn, state, batches) in programs.items():
    t = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(state, batches, key).compile()
    results[name] = {"compile_s": time.perf_counter() - t}
    jax.block_until_ready(compiled[name](state, batches, key))
  times = {name: [] for name in programs}
  order = list(programs)
  rng = random.Random(seed)
  for _ in range(rounds):
    rng.shuffle(order)
    for name in order:
      _, state, batches = programs[name]
      t = time.perf_counter()
      jax.block_until_ready(compiled[name](state, batches, key))
      times[name].append((time.perf_counter() - t) * 1e3 / updates)
  for name, (_, state, batches) in programs.items():
    r = results[name]
    r["ms_per_update"] = float(np.median(times[name]))
    r["ms_per_update_rounds"] = times[name]
    if jax.default_backend() == "cpu":  # the thread summary reads CPU traces
      with tempfile.TemporaryDirectory() as d:
        r["profile"] = profile(
          lambda c=compiled[name], s=state, b=batches: c(s, b, key), updates, d
        )
  results["brax_over_erljax_time"] = (
    results["brax"]["ms_per_update"] / results["erljax"]["ms_per_update"]
  )
  return results


def table(out: Dict[str, Any]) -> str:
  keys = ("wall_ms", "busy_ms", "dots_ms", "concurrency")
  rows = [
    "| update | ms / update | wall (traced) | busy | dots | concurrency |",
    "|---|---|---|---|---|---|",
  ]
  for name in ("erljax", "brax"):
    r = out["results"][name]
    p = r.get("profile", {})
    cells = [f"{r['ms_per_update']:.2f}"]
    cells += [f"{p[k]:.2f}" if k in p else "-" for k in keys]
    rows.append(f"| {name} | " + " | ".join(cells) + " |")
  ratio = out["results"]["brax_over_erljax_time"]
  rows.append(f"erljax speed / Brax speed, per update: {ratio:.2f}")
  return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--hidden", default="256,256,256")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--updates", type=int, default=32)
  p.add_argument("--rounds", type=int, default=20)
  p.add_argument("--out", default="", help="JSON file to write (optional)")
  a = p.parse_args(argv)
  hidden = tuple(int(h) for h in a.hidden.split(","))
  for name in ("batch", "updates", "rounds"):
    if getattr(a, name) < 1:
      raise ValueError(f"--{name} must be >= 1, got {getattr(a, name)}")
  out = {
    "settings": {
      "hidden": list(hidden),
      "batch": a.batch,
      "updates": a.updates,
      "rounds": a.rounds,
      "obs": _OBS,
      "action": _ACT,
    },
    "versions": common.versions(),
    "machine": common.machine(),  # platform included
  }
  out["results"] = run(hidden, a.batch, a.updates, a.rounds)
  print(table(out), flush=True)
  if a.out:
    common.write_json(a.out, out)
  return out


if __name__ == "__main__":
  main()
