"""Learning-curve report from run directories.

  python experiments/report.py --out experiments/results/reacher_noise \
      SAC=runs/sac ERL-VLM=runs/erlvlm RbRL=runs/rbrl

Each argument LABEL=DIR names a run directory written by erljax.train
(`--config.workdir=DIR`) holding metrics.jsonl; a run with num_seeds > 1
contributes every seed. Writes OUT.png (mean eval return with a 95%
confidence band over seeds) and OUT.md (final returns with 95% bootstrap
intervals, and feedback statistics).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List

import numpy as np


def load(run_dir: str) -> Dict[str, object]:
  evals, sessions = [], []
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      (sessions if rec.get("kind") == "feedback" else evals).append(rec)
  if not evals:
    raise ValueError(f"{run_dir}/metrics.jsonl holds no evaluation records")
  steps = np.array([r["env_steps"] for r in evals])
  returns = np.array([r["eval_return_per_seed"] for r in evals])  # [T, S]
  success = np.array([r["eval_success_per_seed"] for r in evals])
  return {"steps": steps, "returns": returns, "success": success,
          "sessions": sessions}


def bootstrap_ci(x: np.ndarray, n: int = 10_000, seed: int = 0):
  x = np.asarray(x, np.float64)
  if x.size < 2:
    return float(x.mean()), float(x.mean())
  rng = np.random.default_rng(seed)
  means = rng.choice(x, size=(n, x.size), replace=True).mean(1)
  return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="output path without suffix")
  p.add_argument("--title", default="")
  p.add_argument("runs", nargs="+", help="LABEL=DIR")
  a = p.parse_args()
  runs: Dict[str, Dict[str, object]] = {}
  for item in a.runs:
    label, _, path = item.partition("=")
    if not path:
      raise SystemExit(f"run argument {item!r}: expected LABEL=DIR")
    runs[label] = load(path)

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  rows: List[str] = []
  for label, r in runs.items():
    ret = r["returns"]
    mean = ret.mean(1)
    half = (1.96 * ret.std(1, ddof=1) / np.sqrt(ret.shape[1])
            if ret.shape[1] > 1 else np.zeros_like(mean))
    ax.plot(r["steps"], mean, label=f"{label} (n={ret.shape[1]})")
    ax.fill_between(r["steps"], mean - half, mean + half, alpha=0.2)
    final = ret[-1]
    lo, hi = bootstrap_ci(final)
    fb = r["sessions"]
    acc = (np.mean(fb[-1]["label_accuracy"]) if fb else float("nan"))
    corr = (np.mean(fb[-1]["reward_corr"]) if fb else float("nan"))
    sent = fb[-1]["queries_sent"] if fb else "-"
    rows.append(f"| {label} | {ret.shape[1]} | {final.mean():.2f} | "
                f"[{lo:.2f}, {hi:.2f}] | {r['success'][-1].mean():.2f} | "
                f"{sent} | {acc:.2f} | {corr:.2f} |")
  ax.set_xlabel("env steps")
  ax.set_ylabel("eval return")
  ax.set_title(a.title)
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
  fig.savefig(a.out + ".png", dpi=120)
  with open(a.out + ".md", "w") as f:
    f.write(f"# {a.title or os.path.basename(a.out)}\n\n")
    f.write(f"![curves]({os.path.basename(a.out)}.png)\n\n")
    f.write("| method | seeds | final eval return | 95% CI (bootstrap) | "
            "success | queries | label acc. | corr(r_hat, r) |\n")
    f.write("|---|---|---|---|---|---|---|---|\n")
    f.write("\n".join(rows) + "\n")
  print(open(a.out + ".md").read())


if __name__ == "__main__":
  main()
