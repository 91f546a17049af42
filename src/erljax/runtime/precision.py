"""Matrix-product precision of the compiled programs (config.matmul_precision).

`runner.run` traces every program inside `scope(config.matmul_precision)`:

* "float32" (default): FP32 products on every backend. JAX's own default
  lets a recent NVIDIA GPU round FP32 inputs to TF32; this does not, so a
  GPU run computes what a CPU run does.
* "tensorfloat32": TF32 products on NVIDIA GPUs (Ampere and later); XLA:CPU
  computes them in FP32.
* "bfloat16": the networks' products (every Dense layer of
  `erljax.agents.networks` and the reward models, forward and input
  gradient) take bf16 inputs and accumulate and return FP32; weight
  gradients, parameters, optimizer state and everything else stay FP32.
  Other products get JAX's "bfloat16" precision, which XLA applies on
  accelerators.

Why the networks cast explicitly: XLA:CPU ignores a product's precision
(`jax.default_matmul_precision`, `precision=`, even the BF16_BF16_F32
algorithm: an FP32 product keeps FP32's error and speed), and it rewrites a
bf16 x bf16 -> bf16 product as an FP32 one. Only a product of bf16 inputs
with an FP32 result (`preferred_element_type`) runs in bf16 (AVX-512 BF16,
AMX). The input gradient of such a product would multiply the FP32
cotangent with a bf16 input, which XLA:CPU also computes in FP32, so
`matmul`'s backward pass casts the cotangent to bf16 for it.
Measurements and the learning check: docs/precision.md.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

# config.matmul_precision's values, JAX's names for the same levels.
PRECISIONS = ("float32", "tensorfloat32", "bfloat16")


@contextlib.contextmanager
def scope(name: str) -> Iterator[None]:
  """Within: programs traced compute their products at `name` (PRECISIONS).
  A program traced inside keeps it; JAX retraces one called under another."""
  if name not in PRECISIONS:
    raise ValueError(f"unknown matmul precision {name!r}; one of {PRECISIONS}")
  with jax.default_matmul_precision(name):
    yield


def low() -> bool:
  """True while tracing under scope("bfloat16")."""
  return jax.default_matmul_precision.value == "bfloat16"


def xla_options() -> Dict[str, str]:
  """What a program traced now needs from XLA:CPU, as a part of
  `erljax.envs.vec_env.compiler_options`: under scope("bfloat16"), no
  YNNPACK fusion of a product with what follows it (else none). XLA:CPU
  fuses a product and the reduction after it (the twin critics' summed
  input gradient, seeds vmapped) into one YNNPACK subgraph, whose emitter
  aborts the process on bf16 inputs with an FP32 result ("Check failed:
  lhs->shape().element_type() == instr->shape().element_type()"); products
  alone still go to YNNPACK."""
  if not low():
    return {}
  return {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
  }


@jax.custom_vjp
def _bf16_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  return _dot(x, w)


def _bf16_dot(x: jax.Array, w: jax.Array, dims) -> jax.Array:
  """dot_general of bf16 inputs with FP32 accumulation and result."""
  return jax.lax.dot_general(
    x.astype(jnp.bfloat16),
    w.astype(jnp.bfloat16),
    (dims, ((), ())),
    preferred_element_type=jnp.float32,
  )


def _dot(x: jax.Array, w: jax.Array) -> jax.Array:
  """[..., K] @ [K, N] -> [..., N]."""
  return _bf16_dot(x, w, ((x.ndim - 1,), (0,)))


def _bf16_fwd(x, w):
  return _dot(x, w), (x, w.astype(jnp.bfloat16))


def _bf16_bwd(res, g):
  x, w = res  # FP32, bf16
  # [..., N] x [K, N] -> [..., K], contracting w's last axis in place: with
  # a transposed w (w.T) XLA:CPU would compute the product in FP32.
  dx = _bf16_dot(g, w, ((g.ndim - 1,), (1,)))
  # [..., K] x [..., N] -> [K, N] over the leading axes, in FP32: XLA:CPU
  # computes most such products in FP32 anyway, and one it keeps in bf16
  # (the twin critics' first layers, merged) fails at run time with
  # "Unsupported element type for DotThunk::Execute: BF16 x BF16 = F32".
  dw = jax.lax.dot_general(
    x,
    g,
    ((tuple(range(x.ndim - 1)), tuple(range(g.ndim - 1))), ((), ())),
  )
  return dx, dw


_bf16_matmul.defvjp(_bf16_fwd, _bf16_bwd)


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., K] @ w [K, N] -> [..., N], in bf16 with FP32 accumulation
  under scope("bfloat16") (FP32 inputs), else `x @ w`."""
  if low() and x.dtype == w.dtype == jnp.float32:
    return _bf16_matmul(x, w)
  return x @ w


def dot_general(
  lhs: jax.Array,
  rhs: jax.Array,
  dimension_numbers: Tuple[Tuple[Sequence[int], Sequence[int]], Any],
  precision: Optional[Any] = None,
  preferred_element_type: Optional[Any] = None,
) -> jax.Array:
  """`jax.lax.dot_general` for flax's Dense (`nn.Dense(dot_general=...)`):
  its product, [..., K] x [K, N], goes through `matmul`."""
  dense = (((lhs.ndim - 1,), (0,)), ((), ()))
  if (
    low()
    and precision is None
    and preferred_element_type is None
    and rhs.ndim == 2
    and dimension_numbers == dense
  ):
    return matmul(lhs, rhs)
  return jax.lax.dot_general(
    lhs,
    rhs,
    dimension_numbers,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


_DECL = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\w+)\[([0-9,]*)\]")


def dot_flops(hlo_text: str) -> Dict[str, int]:
  """FLOPs of the dot ops of an optimized HLO module (2 * output elements *
  contracted size; a loop body's once) by input types, e.g. "bf16 x bf16".
  What a compiled program (`jax.jit(f).lower(...).compile().as_text()`)
  really computes in bf16."""
  shapes: Dict[str, Tuple[str, list]] = {}
  lines = hlo_text.splitlines()
  for line in lines:
    m = _DECL.match(line)
    if m:
      dims = [int(d) for d in m.group(3).split(",") if d]
      shapes[m.group(1)] = (m.group(2), dims)
  out: Dict[str, int] = {}
  for line in lines:
    m = _DECL.match(line)
    dot = re.search(r" dot\(%([^,)]+), %([^,)]+)\)", line)
    dims = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", line)
    if not (m and dot and dims) or dot.group(1) not in shapes:
      continue
    (lt, lhs), (rt, _) = shapes[dot.group(1)], shapes[dot.group(2)]
    k = int(np.prod([lhs[int(i)] for i in dims.group(1).split(",")]))
    key = f"{lt} x {rt}"
    n = int(np.prod(shapes[m.group(1)][1] or [1]))
    out[key] = out.get(key, 0) + 2 * n * k
  return out
