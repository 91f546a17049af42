"""The matmul_precision learning check: bf16 curves against FP32's CIs.

  python experiments/precision_check.py --out docs/precision_check.md \
      "SAC=/tmp/runs/sac_float32,/tmp/runs/sac_bfloat16" \
      "ERL-VLM=/tmp/runs/rating_float32,/tmp/runs/rating_bfloat16"

Each argument names a method and two run directories of erljax.train
(metrics.jsonl): the FP32 run, then the bf16 run. At every evaluation both
runs reached: each run's mean return over seeds and episodes with its 95%
nested bootstrap CI (seeds, then episodes within them), and the IQM over
the seeds' mean returns with a 95% bootstrap CI over seeds. The bf16 run
passes a point when its mean lies inside the FP32 run's mean CI (the
issue's rule: keep bf16 only if its curves stay within the FP32 runs' CIs).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from erljax.io import stats


def evals(run_dir: str) -> Dict[int, np.ndarray]:
  """{env_steps: episode returns [seeds, episodes]} of a run's evaluations."""
  out = {}
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line) if line.strip() else {}
      if r.get("kind") == "eval":
        out[r["env_steps"]] = np.asarray(r["eval_return_episodes"], float)
  return out


def _cells(x: np.ndarray) -> Dict[str, float]:
  m, lo, hi = stats.nested_bootstrap_mean(x)
  q, qlo, qhi = stats.stratified_bootstrap(x.mean(1), stats.iqm)
  return {"mean": m, "lo": lo, "hi": hi, "iqm": q, "iqm_lo": qlo, "iqm_hi": qhi}


def compare(fp32_dir: str, bf16_dir: str) -> List[Dict[str, object]]:
  """Per evaluation both runs reached: both runs' cells and the verdict."""
  a, b = evals(fp32_dir), evals(bf16_dir)
  rows = []
  for step in sorted(set(a) & set(b)):
    fp32, bf16 = _cells(a[step]), _cells(b[step])
    inside = fp32["lo"] <= bf16["mean"] <= fp32["hi"]
    rows.append(
      {"env_steps": step, "fp32": fp32, "bf16": bf16, "inside": inside}
    )
  return rows


def table(results: Dict[str, List[Dict[str, object]]]) -> str:
  fmt = lambda c: (
    f"{c['mean']:.1f} [{c['lo']:.1f}, {c['hi']:.1f}] | "
    f"{c['iqm']:.1f} [{c['iqm_lo']:.1f}, {c['iqm_hi']:.1f}]"
  )
  lines = [
    "| method | env steps | FP32 mean [95% CI] | FP32 IQM [95% CI] | "
    "bf16 mean [95% CI] | bf16 IQM [95% CI] | bf16 mean in FP32 CI |",
    "|---|---|---|---|---|---|---|",
  ]
  for method, rows in results.items():
    for r in rows:
      lines.append(
        f"| {method} | {r['env_steps']} | {fmt(r['fp32'])} | "
        f"{fmt(r['bf16'])} | {'yes' if r['inside'] else '**no**'} |"
      )
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, List]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("pairs", nargs="+", help="METHOD=FP32_DIR,BF16_DIR")
  p.add_argument("--out", default="", help="markdown table, and OUT.json")
  a = p.parse_args(argv)
  results = {}
  for pair in a.pairs:
    method, dirs = pair.split("=", 1)
    fp32_dir, bf16_dir = dirs.split(",")
    results[method] = compare(fp32_dir, bf16_dir)
  text = table(results)
  print(text)
  if a.out:
    with open(a.out, "w") as f:
      f.write(text + "\n")
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
