"""IQL (and BC) gradient steps per second on this machine.

  PYTHONPATH=$PWD/src python -m benchmarks.iql_throughput \
      --out=benchmarks/results/iql_throughput.json

Times `IQL.train_steps` (one compiled scan of --steps updates) on random
data shaped like the offline study's pusher dataset (10,000 transitions,
23-dim observations, 7-dim actions), for each seed count and seed axis
(vmap, or jax.lax.map) with the study's settings (2x256 networks, batch
256). Compilation is timed apart; the steady state is the median of
--repeats timed calls after one warm-up call. Figures are updates per
second of one seed ("seed steps/s" = steps/s x seeds is the work done).

With --reference=DIR (a checkout of the IQL authors' JAX code,
github.com/ikostrikov/implicit_q_learning, with tensorflow-probability's
JAX substrate importable: tfp-nightly for jax 0.9) the same run also times
their `Learner` as their `train_offline.py` drives it: a batch sampled
with numpy on the host, then one jitted update, per step; same data
shapes, 2x256 networks, batch 256, one seed, their MuJoCo settings
(expectile 0.7, temperature 3). Three shims let their 2022 code run on
today's jax / flax, applied only while it is imported and run: the
removed `jax.tree_multimap` (an alias of `jax.tree_util.tree_map`), flax's
FrozenDict `init` results (`flax_return_frozendict`), and their policy
module's `static_argnames` entry for an argument its function no longer
has (dropped). Nothing of theirs is copied here.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from erljax import cli_flags
from erljax.agents import iql
from erljax.offline import run as offline

_OBS, _ACT, _SIZE, _BATCH = 23, 7, 10_000, 256


def time_one(
  num_seeds: int, axis: str, bc: bool, hidden, steps: int, repeats: int
) -> Dict[str, Any]:
  o, a, m = _OBS, _ACT, _SIZE
  agent = iql.IQL(o, a, iql.IQLHyper(hidden_sizes=tuple(hidden), bc=bc))
  k = jax.random.PRNGKey(0)
  data = iql.Batch(
    obs=jax.random.normal(k, (m, o)),
    action=jnp.tanh(jax.random.normal(k, (m, a))),
    reward=jnp.zeros((m,)),
    discount=jnp.ones((m,)),
    next_obs=jax.random.normal(k, (m, o)),
  )
  rewards = jax.random.uniform(k, (num_seeds, m))
  keys = jax.random.split(k, num_seeds)
  fn = lambda s, r, key: agent.train_steps(
    s, data.replace(reward=r), key, steps
  )
  # pylint: disable-next=protected-access
  program = jax.jit(offline._seed_axis(fn, axis, (0, 0, 0)))
  state = jax.jit(jax.vmap(agent.init))(keys)
  t0 = time.perf_counter()
  compiled = program.lower(state, rewards, keys).compile()
  compile_s = time.perf_counter() - t0
  state, m_ = compiled(state, rewards, keys)
  jax.block_until_ready(m_)
  times: List[float] = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, m_ = compiled(state, rewards, keys)
    jax.block_until_ready(m_)
    times.append(time.perf_counter() - t0)
  per_s = steps / float(np.median(times))
  return {
    "seeds": num_seeds,
    "axis": axis,
    "method": "bc" if bc else "iql",
    "hidden": list(hidden),
    "batch": _BATCH,
    "compile_s": compile_s,
    "steps_per_s": per_s,
    "seed_steps_per_s": per_s * num_seeds,
  }


@contextlib.contextmanager
def _reference_shims(path: str):
  """Lets the IQL authors' code import on today's jax / flax (module doc)."""
  import flax  # pylint: disable=g-import-not-at-top

  jit = jax.jit
  frozen = flax.config.flax_return_frozendict

  def lenient_jit(fun=None, **kw):
    names = kw.get("static_argnames")
    if names and fun is not None:
      params = inspect.signature(fun).parameters
      kw["static_argnames"] = tuple(n for n in names if n in params)
    return jit(fun, **kw)

  before = set(sys.modules)
  sys.path.insert(0, path)
  jax.tree_multimap = jax.tree_util.tree_map
  flax.config.update("flax_return_frozendict", True)
  jax.jit = lenient_jit
  try:
    yield
  finally:
    jax.jit = jit
    flax.config.update("flax_return_frozendict", frozen)
    del jax.tree_multimap
    sys.path.remove(path)
    # Their top-level modules ("common", "learner", ...) leave with them.
    for name in set(sys.modules) - before:
      file = getattr(sys.modules[name], "__file__", None) or ""
      if os.path.abspath(file).startswith(os.path.abspath(path) + os.sep):
        del sys.modules[name]


def time_reference(path: str, hidden, steps: int, repeats: int):
  """steps/s of the authors' Learner.update with host-side sampling."""
  with _reference_shims(path):
    import common  # pylint: disable=g-import-not-at-top
    import learner  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(_SIZE, _OBS)).astype(np.float32)
    act = np.tanh(rng.normal(size=(_SIZE, _ACT))).astype(np.float32)
    rew = rng.uniform(size=_SIZE).astype(np.float32)
    agent = learner.Learner(
      0,
      obs[:1],
      act[:1],
      hidden_dims=tuple(hidden),
      expectile=0.7,
      temperature=3.0,
      max_steps=1_000_000,
    )

    def sample():
      i = rng.integers(0, _SIZE, _BATCH)
      return common.Batch(
        observations=obs[i],
        actions=act[i],
        rewards=rew[i],
        masks=np.ones(_BATCH, np.float32),
        next_observations=obs[(i + 1) % _SIZE],
      )

    t0 = time.perf_counter()
    jax.block_until_ready(agent.update(sample()))
    compile_s = time.perf_counter() - t0
    times: List[float] = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      for _ in range(steps):
        info = agent.update(sample())
      jax.block_until_ready((info, agent.actor.params))
      times.append(time.perf_counter() - t0)
  per_s = steps / float(np.median(times))
  return {
    "seeds": 1,
    "axis": "none",
    "method": "reference_iql",
    "hidden": list(hidden),
    "batch": _BATCH,
    "compile_s": compile_s,
    "steps_per_s": per_s,
    "seed_steps_per_s": per_s,
  }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="", help="JSON file to write (optional)")
  p.add_argument("--steps", type=int, default=200, help="updates per call")
  p.add_argument("--repeats", type=int, default=3, help="timed calls")
  p.add_argument("--seed_counts", default="1,5", help="seed counts")
  cli_flags.add_alias(p, "--seeds", "--seed_counts")
  p.add_argument("--hidden", default="256,256", help="hidden sizes")
  p.add_argument("--methods", default="iql,bc", help="iql, bc or both")
  p.add_argument(
    "--reference",
    default="",
    help="checkout of ikostrikov/implicit_q_learning (optional)",
  )
  a = p.parse_args(argv)
  hidden = [int(h) for h in a.hidden.split(",")]
  methods = a.methods.split(",")
  for method in methods:  # before anything is timed
    if method not in ("iql", "bc"):
      raise ValueError(f"--methods: {method!r} is neither iql nor bc")
  rows = []
  for method in methods:
    for s in (int(x) for x in a.seed_counts.split(",")):
      for axis in ("vmap",) if s == 1 else ("vmap", "map"):
        row = time_one(s, axis, method == "bc", hidden, a.steps, a.repeats)
        rows.append(row)
        print(
          f"{row['method']:>3s} seeds={s} axis={axis:>4s}: "
          f"{row['steps_per_s']:7.1f} steps/s "
          f"({row['seed_steps_per_s']:7.1f} seed steps/s), compile "
          f"{row['compile_s']:.1f}s",
          flush=True,
        )
  ratio = None
  if a.reference:
    ref = time_reference(a.reference, hidden, a.steps, a.repeats)
    rows.append(ref)
    ours = [r for r in rows if r["method"] == "iql" and r["seeds"] == 1]
    ratio = ours[0]["steps_per_s"] / ref["steps_per_s"] if ours else None
    print(
      f"reference IQL (authors' code, 1 seed): {ref['steps_per_s']:7.1f} "
      f"steps/s, compile {ref['compile_s']:.1f}s"
      + (f"; erljax / reference: {ratio:.2f}" if ratio else ""),
      flush=True,
    )
  out = {
    "rows": rows,
    "erljax_over_reference": ratio,
    "machine": {
      "cpu_count": os.cpu_count(),
      "platform": platform.platform(),
      "load_average": os.getloadavg(),
      "jax": jax.__version__,
      "devices": [str(d) for d in jax.devices()],
    },
  }
  if a.out:
    with open(a.out, "w") as f:
      json.dump(out, f, indent=2)
  return out


if __name__ == "__main__":
  main()
