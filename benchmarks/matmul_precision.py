"""config.matmul_precision on this machine: bf16 against FP32, in one process.

  PYTHONPATH=$PWD/src python -m benchmarks.matmul_precision \
      --out=benchmarks/results/matmul_precision.json

1. What XLA does with each way of asking for bf16 products: one
   [--probe_n]^2 FP32 product, plain, under `jax.default_matmul_precision(
   "bfloat16")`, with `precision="BF16_BF16_F32"`, and with its inputs cast
   to bf16 (FP32 result, `preferred_element_type`; and bf16 result): the
   input types of the compiled program's dot, its largest error against a
   float64 product (relative to the largest entry), its best seconds.
2. Two training programs, each compiled under `erljax.runtime.precision.scope`
   "float32" and "bfloat16" (what `config.matmul_precision` sets), --seeds
   seeds vmapped as a run trains them:
   * sac: a compiled scan of --updates SAC updates (`benchmarks.
     update_profile`'s erljax program: reacher's sizes, --hidden, --batch);
   * reward: one epoch of the rating reward model (`RewardLearner.epoch`:
     the reacher rating config's ensemble of 3 state-action MLPs, 3x256,
     batch 128, on --ratings ratings).
   The two precisions run in alternation (random order each round),
   --rounds rounds; per round the ratio FP32 time / bf16 time; reported:
   each precision's median, the ratio's median and interquartile range,
   the load average before and after (the machine may be shared), and the
   compiled program's dot FLOPs by input types (`precision.dot_flops`).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import roofline
from benchmarks import update_profile
from erljax.envs import vec_env as envs
from erljax.rewards import queries as feedback
from erljax.runtime import precision
from erljax.rewards import learner as reward_learner
from erljax.rewards import model as reward_model

PRECISIONS = ("float32", "bfloat16")


def probe(n: int, repeats: int) -> Dict[str, Dict[str, Any]]:
  """What XLA compiles for each way of asking for a bf16 product."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(k1, (n, n))
  b = jax.random.normal(k2, (n, n))
  exact = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
  bf = jnp.bfloat16
  ways = {
    "fp32": (None, lambda a, b: a @ b),
    "default_matmul_precision('bfloat16')": ("bfloat16", lambda a, b: a @ b),
    "precision='BF16_BF16_F32'": (
      None,
      lambda a, b: jnp.dot(a, b, precision="BF16_BF16_F32"),
    ),
    "bf16 casts, FP32 result": (
      None,
      lambda a, b: jnp.dot(
        a.astype(bf), b.astype(bf), preferred_element_type=jnp.float32
      ),
    ),
    "bf16 casts, bf16 result": (
      None,
      lambda a, b: jnp.dot(a.astype(bf), b.astype(bf)).astype(jnp.float32),
    ),
  }
  out = {}
  for name, (ambient, f) in ways.items():
    with jax.default_matmul_precision(ambient):
      compiled = jax.jit(f).lower(a, b).compile()
    err = np.abs(np.asarray(compiled(a, b)) - exact).max()
    out[name] = {
      "dot_inputs": sorted(precision.dot_flops(compiled.as_text())),
      "max_error": float(err / np.abs(exact).max()),
      "seconds": roofline._best_seconds(lambda c=compiled: c(a, b), repeats),  # pylint: disable=protected-access
    }
  return out


def _stack(tree: Any, seeds: int) -> Any:
  return jax.tree_util.tree_map(lambda x: jnp.stack([x] * seeds), tree)


def sac_program(hidden: Sequence[int], batch: int, updates: int, seeds: int):
  """(fn, args, updates per call): --seeds vmapped scans of SAC updates."""
  keys = jax.random.split(jax.random.PRNGKey(1), seeds)
  data = jax.vmap(lambda k: update_profile._batches(updates, batch, k))(keys)  # pylint: disable=protected-access
  # Leaves [S, updates, batch, ...]: each seed its own batches.
  fn, state, batches = update_profile.erljax_program(hidden, data)
  args = (_stack(state, seeds), batches, jax.random.split(keys[0], seeds))
  return jax.vmap(fn), args, updates


def reward_program(ratings: int, seeds: int):
  """(fn, args, minibatch steps per call): one reward-model epoch of the
  reacher rating config's learner, --seeds vmapped."""
  model = reward_model.RewardModel("mlp", 3, (256, 256, 256))
  learner = reward_learner.RewardLearner(model=model, num_classes=3)
  obs, act = update_profile._OBS, update_profile._ACT  # pylint: disable=protected-access
  ko, ka, kp = jax.random.split(jax.random.PRNGKey(3), 3)
  rs = feedback.empty_rating_set(ratings, obs, act)
  labels = np.random.default_rng(0).integers(0, 3, ratings)
  rs = rs.replace(
    obs=jax.random.normal(ko, rs.obs.shape),
    action=jnp.tanh(jax.random.normal(ka, rs.action.shape)),
    label=jnp.asarray(labels, jnp.int32),
    size=jnp.asarray(ratings, jnp.int32),
  )
  params = model.init(kp, (rs.obs[:1, 0, 0], rs.action[:1, 0, 0]))
  idx, mask = learner.schedule(labels, np.random.default_rng(1), 3)
  args = (
    _stack(params, seeds),
    _stack(learner.optimizer.init(params), seeds),
    _stack(rs, seeds),
    _stack(jnp.asarray(idx), seeds),
    _stack(jnp.asarray(mask), seeds),
    _stack(jnp.ones((3,)), seeds),
    _stack(jnp.asarray(True), seeds),
  )
  return jax.vmap(learner.epoch), args, idx.shape[0]


def compare(make, rounds: int) -> Dict[str, Any]:
  """FP32 against bf16 for one program: interleaved, per-round ratios."""
  fn, args, steps = make()
  compiled, row = {}, {"steps_per_call": steps}
  for name in PRECISIONS:
    with precision.scope(name):
      t = time.perf_counter()
      options = envs.compiler_options(
        precision.xla_options()
      )  # as runs compile
      compiled[name] = jax.jit(fn, compiler_options=options)
      compiled[name] = compiled[name].lower(*args).compile()
    row[name] = {
      "compile_s": time.perf_counter() - t,
      "dot_flops": precision.dot_flops(compiled[name].as_text()),
    }
    jax.block_until_ready(compiled[name](*args))  # warm
  row["load_before"] = list(os.getloadavg())
  times = {name: [] for name in PRECISIONS}
  order = list(PRECISIONS)
  for _ in range(rounds):
    random.shuffle(order)
    for name in order:
      t = time.perf_counter()
      jax.block_until_ready(compiled[name](*args))
      times[name].append(time.perf_counter() - t)
  row["load_after"] = list(os.getloadavg())
  ratio = np.asarray(times["float32"]) / np.asarray(times["bfloat16"])
  for name in PRECISIONS:
    row[name]["ms_per_step"] = float(np.median(times[name])) / steps * 1e3
    row[name]["seconds"] = times[name]
  row["speedup_median"] = float(np.median(ratio))
  row["speedup_iqr"] = [float(q) for q in np.percentile(ratio, [25, 75])]
  return row


def table(res: Dict[str, Any]) -> str:
  lines = ["| way | dot inputs | max error | seconds |", "|---|---|---|---|"]
  for name, r in res["probe"].items():
    lines.append(
      f"| {name} | {', '.join(r['dot_inputs'])} | {r['max_error']:.1e} | "
      f"{r['seconds']:.3f} |"
    )
  lines += [
    "",
    "| program | FP32 ms/step | bf16 ms/step | FP32 / bf16 median [IQR] | "
    "bf16 share of dot FLOPs | load before / after |",
    "|---|---|---|---|---|---|",
  ]
  for name in ("sac", "reward"):
    r = res[name]
    flops = r["bfloat16"]["dot_flops"]
    share = flops.get("bf16 x bf16", 0) / sum(flops.values())
    lo, hi = r["speedup_iqr"]
    lines.append(
      f"| {name} | {r['float32']['ms_per_step']:.2f} | "
      f"{r['bfloat16']['ms_per_step']:.2f} | {r['speedup_median']:.2f} "
      f"[{lo:.2f}, {hi:.2f}] | {share:.0%} | {r['load_before'][0]:.1f} / "
      f"{r['load_after'][0]:.1f} |"
    )
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--probe_n", type=int, default=2048)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--hidden", default="128,128")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--updates", type=int, default=16)
  p.add_argument("--ratings", type=int, default=1024)
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--rounds", type=int, default=20)
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  for name in ("probe_n", "repeats", "batch", "updates", "ratings", "seeds"):
    if getattr(a, name) < 1:
      raise ValueError(f"--{name} must be >= 1, got {getattr(a, name)}")
  if a.rounds < 2:
    raise ValueError(f"--rounds must be >= 2, got {a.rounds}")
  hidden = tuple(int(h) for h in a.hidden.split(","))
  out = {
    "settings": {k: v for k, v in vars(a).items() if k != "out"},
    "versions": common.versions(),
    "machine": common.machine(),
  }
  res = {"probe": probe(a.probe_n, a.repeats)}
  res["sac"] = compare(
    lambda: sac_program(hidden, a.batch, a.updates, a.seeds), a.rounds
  )
  res["reward"] = compare(lambda: reward_program(a.ratings, a.seeds), a.rounds)
  out["results"] = res
  print(table(res), flush=True)
  if a.out:
    common.write_json(a.out, out)
  return out


if __name__ == "__main__":
  main()
