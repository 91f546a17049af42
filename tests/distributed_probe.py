"""One process of a tiny multi-process run; writes what it computed.

Run by tests/test_distributed.py: two processes on 127.0.0.1 with two host
devices each (the number must be set before jax is imported), or one
process with four devices as the reference:

  XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_PLATFORMS=cpu \\
      python tests/distributed_probe.py OUT WORKDIR [HOST:PORT N ID]

Writes OUT/result_<process>.npz (the final SAC and reward parameters,
gathered) and OUT/result_<process>.json (eval returns, feedback records,
the files this process opened for writing under WORKDIR, its rater calls).
"""

from __future__ import annotations

import builtins
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sharding_probe  # pylint: disable=g-import-not-at-top,wrong-import-position

from erljax.runtime import distributed  # pylint: disable=g-import-not-at-top
from erljax.rewards import queries as feedback  # pylint: disable=g-import-not-at-top
from erljax.online import runner  # pylint: disable=g-import-not-at-top

# Feedback record fields that depend on wall-clock time.
_TIMING = ("latency_seconds", "seconds")


def _record_writes(workdir: str) -> list:
  """Paths under workdir this process opens for writing, checkpoints and
  the write probe aside (orbax writes those from every process)."""
  opened: list = []
  real_open = builtins.open
  root = os.path.abspath(workdir)

  def recording_open(file, mode="r", *args, **kwargs):
    path = os.path.abspath(str(file)) if isinstance(file, str) else ""
    rel = os.path.relpath(path, root) if path.startswith(root) else None
    if (
      rel is not None
      and any(m in mode for m in "wax+")
      and not rel.startswith(("checkpoints", ".erljax_write_probe"))
    ):
      opened.append(rel)
    return real_open(file, mode, *args, **kwargs)

  builtins.open = recording_open
  return opened


def main():
  out, workdir = sys.argv[1], sys.argv[2]
  c = sharding_probe.config(4, "learned")
  c.workdir = workdir
  if len(sys.argv) > 3:
    c.distributed.coordinator_address = sys.argv[3]
    c.distributed.num_processes = int(sys.argv[4])
    c.distributed.process_id = int(sys.argv[5])
    c.distributed.initialization_timeout = 60
  opened = _record_writes(workdir)
  asked = []  # one entry per rating call (a seed's queries)
  ask = feedback.ask
  feedback.ask = lambda *a: asked.append(1) or ask(*a)
  result = runner.run(c, log=lambda s: print(s, flush=True))
  params = distributed.to_host(
    {"sac": result.state.sac, "reward": result.state.reward_params}
  )
  flat = {
    jax.tree_util.keystr(p): x
    for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  pid = jax.process_index()
  np.savez(os.path.join(out, f"result_{pid}.npz"), **flat)
  report = {
    "process_count": jax.process_count(),
    "device_count": jax.device_count(),
    "eval_return": [r["eval_return_per_seed"] for r in result.history],
    "feedback": [
      {k: v for k, v in r.items() if k not in _TIMING} for r in result.feedback
    ],
    "opened": sorted(set(opened)),
    "rater_calls": len(asked),
  }
  with open(os.path.join(out, f"result_{pid}.json"), "w") as f:
    json.dump(report, f)


if __name__ == "__main__":
  main()
