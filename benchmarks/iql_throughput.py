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
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from erljax import iql
from erljax import offline

_OUT = flags.DEFINE_string("out", "", "JSON file to write (optional)")
_STEPS = flags.DEFINE_integer("steps", 200, "updates per timed call")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed calls")
_SEEDS = flags.DEFINE_list("seeds", ["1", "5"], "seed counts")
_HIDDEN = flags.DEFINE_list("hidden", ["256", "256"], "hidden sizes")


def time_one(
  num_seeds: int, axis: str, bc: bool, hidden, steps: int, repeats: int
) -> Dict[str, Any]:
  o, a, m = 23, 7, 10_000
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
    "batch": 256,
    "compile_s": compile_s,
    "steps_per_s": per_s,
    "seed_steps_per_s": per_s * num_seeds,
  }


def main(argv):
  del argv
  hidden = [int(h) for h in _HIDDEN.value]
  rows = []
  for bc in (False, True):
    for s in (int(x) for x in _SEEDS.value):
      for axis in ("vmap",) if s == 1 else ("vmap", "map"):
        row = time_one(s, axis, bc, hidden, _STEPS.value, _REPEATS.value)
        rows.append(row)
        print(
          f"{row['method']:>3s} seeds={s} axis={axis:>4s}: "
          f"{row['steps_per_s']:7.1f} steps/s "
          f"({row['seed_steps_per_s']:7.1f} seed steps/s), compile "
          f"{row['compile_s']:.1f}s",
          flush=True,
        )
  out = {
    "rows": rows,
    "machine": {
      "cpu_count": os.cpu_count(),
      "platform": platform.platform(),
      "load_average": os.getloadavg(),
      "jax": jax.__version__,
      "devices": [str(d) for d in jax.devices()],
    },
  }
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
