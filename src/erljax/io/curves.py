"""A run's learning curve as a PNG.

  python -m erljax.plots runs/CartpoleSwingup-erlvlm-20261205T081500Z

`learning_curve` draws the evaluation return against env steps from a run's
eval records (erljax.online.runner: the mean over seeds, its 95% CI over seeds
and episodes as a band where the records have one, each seed as a thin line when
there are several). erljax.online.runner writes workdir/curve.png with it at the
end of every run that has a workdir; the command above redraws it from
workdir/metrics.jsonl (also while the run is still going).

matplotlib (an erljax dependency for this figure: axes, ticks and bands are
not worth drawing by hand) runs on its file-only Agg backend, so no display
is needed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence


def learning_curve(
  records: Sequence[Dict[str, Any]], path: str, title: str = ""
) -> str:
  """Writes the eval return of `records` (erljax.online.runner records; others
  than kind "eval" are skipped) against env steps as a PNG; returns path.

  Raises ValueError when there is no eval record to draw.
  """
  evals = [r for r in records if r.get("kind", "eval") == "eval"]
  if not evals:
    raise ValueError(f"no evaluation records to plot into {path}")
  # pylint: disable-next=g-import-not-at-top (matplotlib is slow to import)
  import matplotlib

  matplotlib.use("Agg")
  # pylint: disable-next=g-import-not-at-top
  from matplotlib import pyplot as plt

  steps = [r["env_steps"] for r in evals]
  fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
  try:
    per_seed = [r.get("eval_return_per_seed", []) for r in evals]
    if len(per_seed[0]) > 1:
      for i in range(len(per_seed[0])):
        ax.plot(steps, [v[i] for v in per_seed], lw=0.6, alpha=0.4, c="C0")
    if all("eval_return_lo" in r for r in evals):
      ax.fill_between(
        steps,
        [r["eval_return_lo"] for r in evals],
        [r["eval_return_hi"] for r in evals],
        alpha=0.25,
        color="C0",
        lw=0,
        label="95% CI",
      )
    ax.plot(
      steps,
      [r["eval_return"] for r in evals],
      c="C0",
      lw=2,
      marker="o",
      ms=3,
      label="eval return (mean over seeds)",
    )
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
  finally:
    plt.close(fig)
  return path


def read_records(workdir: str) -> List[Dict[str, Any]]:
  """The records of workdir/metrics.jsonl (erljax.io.metrics)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_workdir(workdir: str) -> str:
  """Redraws workdir/curve.png from workdir's metrics; returns its path."""
  title = os.path.basename(os.path.normpath(workdir))
  return learning_curve(
    read_records(workdir), os.path.join(workdir, "curve.png"), title
  )
