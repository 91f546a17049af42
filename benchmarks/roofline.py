"""The SAC update against this machine's roofline: FP32 peak, bandwidth, share.

  PYTHONPATH=$PWD/src python -m benchmarks.roofline \
      --out=benchmarks/results/roofline.json

In one run it measures

* the peak: a large square `jnp.dot` (--peak_n, FP32, then bf16 inputs with
  FP32 results), --repeats times, the best GFLOP/s;
* the memory bandwidth: `x * 2 + 1` over a --stream_mb array (one read, one
  write), the best GB/s;
* each SAC update (`benchmarks.update_profile`'s erljax and Brax programs, a
  compiled scan of --updates updates) at the study's settings (3x256, batch
  256: the Brax comparison's) and the defaults (config.default(): 3x256,
  batch 512): median ms per update, the matrix-product FLOPs counted from
  the layer shapes (`update_flops`), checked against XLA's cost analysis of
  the compiled program (flops and bytes accessed), the achieved GFLOP/s and
  its share of the FP32 peak, and the arithmetic intensity (FLOPs per byte).

What bounds an update: its roofline is min(peak, intensity x bandwidth).
Where the achieved rate is far under it, neither compute nor memory is the
bound: it is overhead (small matrices, per-op dispatch and thread hand-off).
--bf16 adds each update with every network's matrix products taking bf16
inputs with FP32 results (the forward products; `jax.default_matmul_precision`
does not change an XLA:CPU product), to see what a `matmul_precision`
option could gain.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import update_profile
from erljax.runtime import precision

# name -> (hidden sizes, batch)
SETTINGS = {
  "study": ((256, 256, 256), 256),  # benchmarks.end_to_end's Brax comparison
  "default": ((256, 256, 256), 512),  # config.default()
}


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
  jax.block_until_ready(fn())  # warm
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
  return best


def matmul_peak(n: int, repeats: int, dtype=jnp.float32) -> Dict[str, float]:
  """Best GFLOP/s of an [n, n] @ [n, n] product with FP32 results."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(k1, (n, n)).astype(dtype)
  b = jax.random.normal(k2, (n, n)).astype(dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  s = _best_seconds(lambda: f(a, b), repeats)
  return {"n": n, "seconds": s, "gflops": 2 * n**3 / s / 1e9}


def bandwidth(megabytes: int, repeats: int) -> Dict[str, float]:
  """Best GB/s of an elementwise pass (one FP32 read and one write)."""
  x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
  f = jax.jit(lambda x: x * 2.0 + 1.0)
  s = _best_seconds(lambda: f(x), repeats)
  return {"megabytes": megabytes, "seconds": s, "gbs": 2 * x.nbytes / s / 1e9}


def _mlp(dims: Sequence[int]) -> Dict[str, int]:
  """Per-row multiply-adds of an MLP's products: all layers, and all but
  the first (an input gradient the loss does not need)."""
  macs = [a * b for a, b in zip(dims[:-1], dims[1:])]
  return {"all": sum(macs), "after_first": sum(macs[1:])}


def update_flops(obs: int, act: int, hidden: Sequence[int], batch: int) -> int:
  """Matrix-product FLOPs of one SAC update, from the layer shapes.

  actor obs -> hidden -> 2*act, twin critics (obs+act) -> hidden -> 1.
  A product's forward pass is 2*B*in*out FLOPs, its weight gradient as
  much, its input gradient as much again (not needed at a first layer
  whose input is data). Critic step: actor forward on next_obs, target
  critics forward, critics forward + weight gradients + inner input
  gradients. Actor step: actor forward + weight gradients + inner input
  gradients, critics forward + input gradients down to the action (their
  weights are not trained there). The same for Brax's update: its
  temperature loss runs the actor forward once more on the same batch, and
  XLA merges that with the actor loss's (the compiled programs' products
  agree, `hlo_dot_flops`).
  """
  a = _mlp([obs, *hidden, 2 * act])
  q = _mlp([obs + act, *hidden, 1])
  critic_step = a["all"] + 2 * q["all"] + 2 * (2 * q["all"] + q["after_first"])
  actor_step = 2 * a["all"] + a["after_first"] + 2 * (2 * q["all"])
  return 2 * batch * (critic_step + actor_step)


def hlo_dot_flops(hlo_text: str) -> int:
  """FLOPs of the dot ops of an optimized HLO module, each op counted once:
  a loop body's once."""
  return sum(precision.dot_flops(hlo_text).values())


@contextlib.contextmanager
def _bf16_products(on: bool):
  """Within: every `jax.lax.dot_general` call (flax's Dense, so erljax's and
  Brax's networks) takes bf16 inputs and gives FP32 results. Traced
  programs keep it; nothing changes when `on` is False."""
  if not on:
    yield
    return
  original = jax.lax.dot_general

  def low(lhs, rhs, *args, **kwargs):
    kwargs["preferred_element_type"] = jnp.float32
    return original(
      lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16), *args, **kwargs
    )

  jax.lax.dot_general = low
  try:
    yield
  finally:
    jax.lax.dot_general = original


def update_row(
  impl: str,
  hidden: Sequence[int],
  batch: int,
  updates: int,
  rounds: int,
  bf16: bool = False,
) -> Dict[str, Any]:
  """One update program: time, counted and XLA FLOPs, bytes."""
  data = update_profile._batches(updates, batch, jax.random.PRNGKey(1))  # pylint: disable=protected-access
  make = getattr(update_profile, f"{impl}_program")
  key = jax.random.PRNGKey(2)
  with _bf16_products(bf16):
    fn, state, batches = make(hidden, data)
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(state, batches, key).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  times = []
  jax.block_until_ready(compiled(state, batches, key))
  for _ in range(rounds):
    t = time.perf_counter()
    jax.block_until_ready(compiled(state, batches, key))
    times.append((time.perf_counter() - t) / updates)
  s = float(np.median(times))
  obs, act = update_profile._OBS, update_profile._ACT  # pylint: disable=protected-access
  counted = update_flops(obs, act, hidden, batch)
  # XLA counts a while loop's body once: its figures are per update.
  xla_flops = float(cost.get("flops", float("nan")))
  xla_bytes = float(cost.get("bytes accessed", float("nan")))
  return {
    "impl": impl,
    "hidden": list(hidden),
    "batch": batch,
    "bf16": bf16,
    "compile_s": compile_s,
    "ms_per_update": s * 1e3,
    "flops_counted": counted,
    "flops_hlo_dots": hlo_dot_flops(compiled.as_text()),
    "flops_xla": xla_flops,
    "bytes_xla": xla_bytes,
    "intensity": xla_flops / xla_bytes if xla_bytes else float("nan"),
    "gflops": counted / s / 1e9,
  }


def bound(row: Dict[str, Any], peak: float, gbs: float) -> str:
  """What limits an update: its roofline min(peak, I * bandwidth) names
  compute or memory; a rate under a third of it, overhead."""
  roof = min(peak, row["intensity"] * gbs)
  if row["gflops"] < roof / 3:
    return "overhead"
  return "compute" if peak <= row["intensity"] * gbs else "memory"


def run(
  settings: Dict[str, Any],
  peak_n: int,
  stream_mb: int,
  repeats: int,
  updates: int,
  rounds: int,
  bf16: bool,
) -> Dict[str, Any]:
  out: Dict[str, Any] = {
    "peak_fp32": matmul_peak(peak_n, repeats),
    "peak_bf16": matmul_peak(peak_n, repeats, jnp.bfloat16),
    "bandwidth": bandwidth(stream_mb, repeats),
    "updates": [],
  }
  peak = out["peak_fp32"]["gflops"]
  gbs = out["bandwidth"]["gbs"]
  for name, (hidden, batch) in settings.items():
    for impl in ("erljax", "brax"):
      for low in (False, True) if bf16 else (False,):
        row = update_row(impl, hidden, batch, updates, rounds, low)
        row["setting"] = name
        row["share_of_fp32_peak"] = row["gflops"] / peak
        row["roofline_gflops"] = min(peak, row["intensity"] * gbs)
        row["bound"] = bound(row, peak, gbs)
        out["updates"].append(row)
  for row in out["updates"]:
    if row["bf16"]:
      (ref,) = [
        r
        for r in out["updates"]
        if not r["bf16"]
        and (r["impl"], r["setting"]) == (row["impl"], row["setting"])
      ]
      row["speedup_over_fp32"] = ref["ms_per_update"] / row["ms_per_update"]
  return out


def table(res: Dict[str, Any]) -> str:
  p, pb, bw = res["peak_fp32"], res["peak_bf16"], res["bandwidth"]
  lines = [
    f"FP32 matmul peak {p['gflops']:.1f} GFLOP/s ({p['n']}^2), bf16 inputs "
    f"{pb['gflops']:.1f}; bandwidth {bw['gbs']:.1f} GB/s",
    "| setting | update | precision | ms / update | GFLOP (counted) | "
    "GFLOP (XLA) | GFLOP/s | share of FP32 peak | FLOP/byte | roofline "
    "GFLOP/s | bound |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in res["updates"]:
    prec = "bf16" if r["bf16"] else "fp32"
    if r["bf16"]:
      prec += f" ({r['speedup_over_fp32']:.2f}x)"
    lines.append(
      f"| {r['setting']} (batch {r['batch']}) | {r['impl']} | {prec} | "
      f"{r['ms_per_update']:.2f} | {r['flops_counted'] / 1e9:.3f} | "
      f"{r['flops_xla'] / 1e9:.3f} | {r['gflops']:.1f} | "
      f"{r['share_of_fp32_peak']:.0%} | {r['intensity']:.1f} | "
      f"{r['roofline_gflops']:.0f} | {r['bound']} |"
    )
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--peak_n", type=int, default=4096)
  p.add_argument("--stream_mb", type=int, default=256)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--updates", type=int, default=32)
  p.add_argument("--rounds", type=int, default=10)
  p.add_argument(
    "--settings",
    default="study,default",
    help="comma-separated names from SETTINGS, or HIDDEN:BATCH as 8,8:4",
  )
  p.add_argument("--bf16", action="store_true")
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  for name in ("peak_n", "stream_mb", "repeats", "updates", "rounds"):
    if getattr(a, name) < 1:
      raise ValueError(f"--{name} must be >= 1, got {getattr(a, name)}")
  settings = {}
  for s in a.settings.split(";" if ":" in a.settings else ","):
    if ":" in s:
      h, b = s.split(":")
      settings[s] = (tuple(int(x) for x in h.split(",")), int(b))
    elif s in SETTINGS:
      settings[s] = SETTINGS[s]
    else:
      raise ValueError(f"unknown setting {s!r}; choose from {list(SETTINGS)}")
  out = {
    "settings": {
      **{k: v for k, v in vars(a).items() if k != "out"},
      "obs": update_profile._OBS,  # pylint: disable=protected-access
      "action": update_profile._ACT,  # pylint: disable=protected-access
    },
    "versions": common.versions(),
    "machine": common.machine(),
  }
  out["results"] = run(
    settings, a.peak_n, a.stream_mb, a.repeats, a.updates, a.rounds, a.bf16
  )
  print(table(out["results"]), flush=True)
  if a.out:
    common.write_json(a.out, out)
  return out


if __name__ == "__main__":
  main()
