"""One report from the workdirs of many runs: curves, IQM, tables, CSVs.

  python experiments/aggregate.py --out experiments/results/study runs/*
  python experiments/aggregate.py --out OUT \
      ERL-VLM=runs/a ERL-VLM=runs/b SAC=runs/c

Each argument is a run directory written by erljax.train (config.json and
metrics.jsonl), optionally prefixed with a method label (LABEL=DIR); without
one the method is named from the config (see `method_name`). Runs of the same
task and method are pooled: every seed of every run is one sample.

Writes
  OUT.md          per task and method: final eval return (mean, 95% bootstrap
                  CI, IQM), success, the last feedback session's diagnostics
                  and, with --reference, the share of that method's gain;
                  and the aggregate over tasks per method: IQM of the
                  min-max normalised final return and of the success rate,
                  with 95% stratified bootstrap CIs (rliable); with
                  --reference, per task the IQM over seeds of each seed's
                  share of the reference's gain (95% bootstrap CI), and with
                  --compare, P(X > Y) per task beside the aggregate; per
                  feedback session the labels it added (class shares, their
                  accuracy) and corr(r_hat, r) (`session_rows`)
  OUT.png         learning curves per task: mean over seeds with a 95%
                  bootstrap band (needs matplotlib, the `report` extra)
  OUT_seeds.csv   every seed's curve: task, method, run, seed, env_steps,
                  eval_return, eval_success
  OUT_sessions.csv  the per-session rows of OUT.md
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
)
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from erljax.io import stats

RATING_METHODS = {  # (loss, class_weighted, stratified) -> name
  ("mae", True, True): "erlvlm",
  ("ce", False, False): "rbrl",
  ("mae", False, False): "rbrl_mae",
  ("ce", True, False): "rbrl_weights",
  ("ce", False, True): "rbrl_stratified",
}


def method_name(config: Dict) -> str:
  """The experiments/configs/rating.py method a config runs (or "sac")."""
  r = config["reward"]
  if r["source"] == "env":
    return "sac"
  if r["feedback_type"] == "preference":
    return "preference"
  return RATING_METHODS.get(
    (r["loss"], r["class_weighted"], r["stratified"]), f"rating_{r['loss']}"
  )


def load_run(run_dir: str) -> Dict:
  """config, steps [T], returns [T, S], success [T, S], seeds of one run."""
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  evals, feedback = [], []
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    for line in f:
      rec = json.loads(line)
      if rec.get("kind", "eval") == "eval":
        evals.append(rec)
      elif rec.get("kind") == "feedback" and not rec.get("abandoned"):
        feedback.append(rec)
  if not evals:
    raise ValueError(f"{run_dir}/metrics.jsonl holds no evaluation records")
  return {
    "dir": run_dir,
    "config": config,
    "steps": np.array([r["env_steps"] for r in evals]),
    "returns": np.array([r["eval_return_per_seed"] for r in evals]),
    "success": np.array([r["eval_success_per_seed"] for r in evals]),
    "feedback": feedback[-1] if feedback else None,
    "sessions": feedback,
    "seeds": list(range(config["seed"], config["seed"] + config["num_seeds"])),
  }


def group_runs(args: List[str]) -> Dict[Tuple[str, str], List[Dict]]:
  groups: Dict[Tuple[str, str], List[Dict]] = collections.defaultdict(list)
  for item in args:
    # LABEL=PATH, split at the last "=": labels may hold one ("n=2").
    label, sep, path = item.rpartition("=")
    if not sep:
      label, path = "", item
    run = load_run(path)
    groups[(run["config"]["task"], label or method_name(run["config"]))].append(
      run
    )
  return dict(groups)


def pooled(runs: List[Dict], key: str) -> Tuple[np.ndarray, np.ndarray]:
  """steps [T] common to all runs and the seeds' curves [S, T]."""
  steps = runs[0]["steps"]
  for r in runs[1:]:
    steps = np.intersect1d(steps, r["steps"])
  curves = [r[key][np.searchsorted(r["steps"], steps)].T for r in runs]
  return steps, np.concatenate(curves, 0)


def final_scores(
  groups, key: str, tasks: List[str], methods: List[str]
) -> Dict[str, np.ndarray]:
  """Per method, final scores [max seeds, tasks] (NaN-padded)."""
  out = {}
  for m in methods:
    cols = [
      pooled(groups[(t, m)], key)[1][:, -1] if (t, m) in groups else np.zeros(0)
      for t in tasks
    ]
    n = max(c.size for c in cols)
    arr = np.full((n, len(tasks)), np.nan)
    for i, c in enumerate(cols):
      arr[: c.size, i] = c
    out[m] = arr
  return out


def feedback_cells(runs: List[Dict]) -> str:
  """Queries sent, label accuracy against the noise-free scripted labels and
  the learned reward's correlation with the env reward over the replay
  buffer, from each run's last feedback session (mean over seeds), or
  dashes for runs on the env reward."""
  last = [r["feedback"] for r in runs if r["feedback"] is not None]
  if not last:
    return "- | - | -"

  def mean(key):
    vals = np.concatenate(
      [np.asarray(f.get(key, [np.nan]), np.float64) for f in last]
    )
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan

  queries = int(np.mean([f["queries_sent"] for f in last]))
  return f"{queries} | {mean('label_accuracy'):.2f} | {mean('reward_corr'):.2f}"


def session_rows(runs: List[Dict]) -> List[Dict]:
  """Per feedback session of the runs (pooled by session number): the labels
  that session added and what it installed.

  A record holds the rating set's cumulative label histogram [S][C] and
  label accuracy [S]; the session's own labels are the difference to the
  previous record's, exact while the set has not wrapped (every answer
  stored), NaN for a seed where it has. Returns dicts of session, env_steps,
  added (labels added, summed over seeds), shares [C] (their class shares),
  accuracy (of the added labels, mean over seeds) and corr (corr(r_hat, r)
  over the replay buffer, mean over seeds).
  """
  by_session = collections.defaultdict(list)
  for run in runs:
    before_n, before_hist, before_acc = 0, None, 0.0
    for rec in run["sessions"]:
      hist = np.asarray(rec.get("label_histogram", []), np.float64)
      if hist.size == 0:
        continue
      n = hist.sum(-1)
      acc = np.asarray(rec["label_accuracy"], np.float64)
      added = hist - (0 if before_hist is None else before_hist)
      grew = n - before_n
      whole = grew == np.asarray(rec.get("answered", grew))
      with np.errstate(invalid="ignore", divide="ignore"):
        new_acc = (np.nan_to_num(acc) * n - before_acc * before_n) / grew
      by_session[rec["session"]].append(
        (
          rec["env_steps"],
          np.where(whole[:, None], added, 0),
          np.where(whole & (grew > 0), new_acc, np.nan),
          np.asarray(rec.get("reward_corr", [np.nan]), np.float64),
        )
      )
      before_n, before_hist, before_acc = n, hist, np.nan_to_num(acc)
  rows = []
  for session in sorted(by_session):
    parts = by_session[session]
    added = sum(p[1].sum(0) for p in parts)
    rows.append(
      {
        "session": session,
        "env_steps": int(np.median([p[0] for p in parts])),
        "added": int(added.sum()),
        "shares": added / max(added.sum(), 1),
        "accuracy": stats.mean(np.concatenate([p[2] for p in parts])),
        "corr": stats.mean(np.concatenate([p[3] for p in parts])),
      }
    )
  return rows


def gain_baselines(groups, reference: str) -> Dict[str, Tuple[float, float]]:
  """Per task with a reference run: (R0, R_ref), R0 the mean return at the
  first evaluation over every run of the task (before any learning; the
  same policies when seeds match) and R_ref the reference method's mean
  final return; tasks where they are equal are left out."""
  out = {}
  for task in sorted({t for t, _ in groups}):
    if (task, reference) not in groups:
      continue
    start = np.mean(
      np.concatenate(
        [
          pooled(runs, "returns")[1][:, 0]
          for (t, _), runs in groups.items()
          if t == task
        ]
      )
    )
    ref = pooled(groups[(task, reference)], "returns")[1][:, -1].mean()
    if ref != start:
      out[task] = (float(start), float(ref))
  return out


def gain_fractions(groups, reference: str) -> Dict[Tuple[str, str], float]:
  """Per (task, method): the share of the reference method's improvement
  that the method's mean final return reaches, (R - R0) / (R_ref - R0)
  (`gain_baselines`). Returns work for negative rewards, where ratios of
  returns do not."""
  base = gain_baselines(groups, reference)
  out = {}
  for (t, m), runs in groups.items():
    if t in base:
      start, ref = base[t]
      final = pooled(runs, "returns")[1][:, -1].mean()
      out[(t, m)] = float((final - start) / (ref - start))
  return out


def gain_scores(
  groups, reference: str, tasks: List[str], methods: List[str]
) -> Dict[str, np.ndarray]:
  """Per method, each run's share of the reference's gain [runs, tasks]
  (NaN-padded; NaN for tasks without a reference run)."""
  base = gain_baselines(groups, reference)
  returns = final_scores(groups, "returns", tasks, methods)
  out = {}
  for m, r in returns.items():
    g = np.full(r.shape, np.nan)
    for i, t in enumerate(tasks):
      if t in base:
        start, ref = base[t]
        g[:, i] = (r[:, i] - start) / (ref - start)
    out[m] = g
  return out


def _comparisons(
  methods: List[str], compare: List[str]
) -> List[Tuple[str, str]]:
  """(X, Y) pairs for P(X > Y): each X in `compare` against every other
  method that ends in the same last word as X (e.g. the noise level in
  "ERL-VLM 20%"), or every other method if X is one word."""
  pairs = []
  for x in compare:
    tail = x.split()[-1] if " " in x else None
    pairs += [
      (x, y)
      for y in methods
      if y != x and (tail is None or y.split()[-1] == tail)
    ]
  return pairs


def report(
  groups, title: str, reference: str = "", compare: Tuple[str, ...] = ()
) -> str:
  tasks = sorted({t for t, _ in groups})
  methods = sorted({m for _, m in groups})
  gains = gain_fractions(groups, reference) if reference else {}
  lines = [
    f"# {title}",
    "",
    "## Final evaluation per task",
    "",
    "| task | method | seeds | env steps | return (mean) | 95% CI | "
    "IQM | success | queries | label acc. | corr(r_hat, r) |"
    + (" of reference gain |" if reference else ""),
    "|---|---|---|---|---|---|---|---|---|---|---|"
    + ("---|" if reference else ""),
  ]
  for (task, method), runs in sorted(groups.items()):
    steps, ret = pooled(runs, "returns")
    _, succ = pooled(runs, "success")
    m, lo, hi = stats.stratified_bootstrap(ret[:, -1], stats.mean)
    lines.append(
      f"| {task} | {method} | {ret.shape[0]} | {steps[-1]} | "
      f"{m:.3f} | [{lo:.3f}, {hi:.3f}] | "
      f"{stats.iqm(ret[:, -1]):.3f} | {succ[:, -1].mean():.2f} | "
      f"{feedback_cells(runs)} |"
      + (
        f" {gains[(task, method)]:.2f} |"
        if (task, method) in gains
        else " - |"
        if reference
        else ""
      )
    )
  returns = final_scores(groups, "returns", tasks, methods)
  success = final_scores(groups, "success", tasks, methods)
  every = np.concatenate([r for r in returns.values()], 0)
  low, high = np.nanmin(every, 0), np.nanmax(every, 0)
  if reference:
    lines += [
      "",
      f"\"of reference gain\": (R - R0) / (R_ref - R0) with "
      f"R_ref the mean final return of `{reference}` and R0 the mean "
      "return at the first evaluation, before learning.",
    ]
  lines += [
    "",
    "## Aggregate over tasks (IQM, 95% stratified bootstrap CI)",
    "",
    "Returns are min-max normalised per task over all methods' "
    "final scores (0: the worst run, 1: the best).",
    "",
    "| method | normalised return IQM | 95% CI | success IQM | 95% CI |",
    "|---|---|---|---|---|",
  ]
  for m in methods:
    r = stats.stratified_bootstrap(
      stats.min_max_normalize(returns[m], low, high)
    )
    s = stats.stratified_bootstrap(success[m])
    lines.append(
      f"| {m} | {r[0]:.3f} | [{r[1]:.3f}, {r[2]:.3f}] | "
      f"{s[0]:.3f} | [{s[1]:.3f}, {s[2]:.3f}] |"
    )
  if reference:
    gains = gain_scores(groups, reference, tasks, methods)
    lines += [
      "",
      f"## Share of `{reference}`'s gain, per run (IQM over runs "
      "and tasks, 95% stratified bootstrap CI)",
      "",
      "Each run's (R - R0) / (R_ref - R0); 1 matches the reference.",
      "",
      "| method | runs | IQM | 95% CI | mean |",
      "|---|---|---|---|---|",
    ]
    for m in methods:
      g = gains[m]
      iq = stats.stratified_bootstrap(g)
      lines.append(
        f"| {m} | {int(np.isfinite(g).sum())} | {iq[0]:.2f} | "
        f"[{iq[1]:.2f}, {iq[2]:.2f}] | {stats.mean(g):.2f} |"
      )
    lines += [
      "",
      f"## Share of `{reference}`'s gain per task (IQM over seeds, 95% "
      "bootstrap CI)",
      "",
      "| task | method | seeds | IQM | 95% CI |",
      "|---|---|---|---|---|",
    ]
    for i, t in enumerate(tasks):
      for m in methods:
        g = gains[m][:, i]
        if (t, m) in groups and np.isfinite(g).any():
          iq = stats.stratified_bootstrap(g)
          lines.append(
            f"| {t} | {m} | {int(np.isfinite(g).sum())} | {iq[0]:.2f} | "
            f"[{iq[1]:.2f}, {iq[2]:.2f}] |"
          )
  pairs = _comparisons(methods, list(compare))
  if pairs:
    lines += [
      "",
      "## Probability of improvement (final return, tasks "
      "averaged, 95% stratified bootstrap CI)",
      "",
      "P(X > Y): the chance that a run of X ends above a run of Y on "
      "the same task (rliable).",
      "",
      "| X | Y | P(X > Y) | 95% CI |",
      "|---|---|---|---|",
    ]
    for x, y in pairs:
      p, lo, hi = stats.probability_of_improvement_ci(returns[x], returns[y])
      lines.append(f"| {x} | {y} | {p:.2f} | [{lo:.2f}, {hi:.2f}] |")
    lines += [
      "",
      "Per task:",
      "",
      "| task | X | Y | P(X > Y) | 95% CI |",
      "|---|---|---|---|---|",
    ]
    for i, t in enumerate(tasks):
      for x, y in pairs:
        if (t, x) in groups and (t, y) in groups:
          p, lo, hi = stats.probability_of_improvement_ci(
            returns[x][:, i], returns[y][:, i]
          )
          lines.append(f"| {t} | {x} | {y} | {p:.2f} | [{lo:.2f}, {hi:.2f}] |")
  sessions = [
    (t, m, row)
    for (t, m), runs in sorted(groups.items())
    for row in session_rows(runs)
  ]
  if sessions:
    lines += [
      "",
      "## Feedback sessions",
      "",
      "Per session, pooled over seeds: the labels it added (class shares, "
      "class 0 first; their accuracy against the noise-free answer) and the "
      "installed reward's corr(r_hat, r) over the replay buffer, means over "
      "seeds.",
      "",
      "| task | method | session | env steps | labels | class shares | "
      "label acc. | corr(r_hat, r) |",
      "|---|---|---|---|---|---|---|---|",
    ]
    for t, m, row in sessions:
      shares = " / ".join(f"{v:.2f}" for v in row["shares"])
      lines.append(
        f"| {t} | {m} | {row['session']} | {row['env_steps']} | "
        f"{row['added']} | {shares} | {row['accuracy']:.2f} | "
        f"{row['corr']:.2f} |"
      )
  return "\n".join(lines) + "\n"


def write_session_csv(groups, path: str) -> None:
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(
      [
        "task",
        "method",
        "session",
        "env_steps",
        "labels",
        "class_shares",
        "label_accuracy",
        "reward_corr",
      ]
    )
    for (t, m), runs in sorted(groups.items()):
      for row in session_rows(runs):
        w.writerow(
          [
            t,
            m,
            row["session"],
            row["env_steps"],
            row["added"],
            " ".join(f"{v:.4f}" for v in row["shares"]),
            row["accuracy"],
            row["corr"],
          ]
        )


def write_seed_csv(groups, path: str) -> None:
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(
      [
        "task",
        "method",
        "run",
        "seed",
        "env_steps",
        "eval_return",
        "eval_success",
      ]
    )
    for (task, method), runs in sorted(groups.items()):
      for run in runs:
        for i, seed in enumerate(run["seeds"]):
          for t, step in enumerate(run["steps"]):
            w.writerow(
              [
                task,
                method,
                run["dir"],
                seed,
                int(step),
                run["returns"][t, i],
                run["success"][t, i],
              ]
            )


def plot(groups, path: str) -> bool:
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  tasks = sorted({t for t, _ in groups})
  fig, axes = plt.subplots(
    1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False
  )
  for ax, task in zip(axes[0], tasks):
    for (t, method), runs in sorted(groups.items()):
      if t != task:
        continue
      steps, ret = pooled(runs, "returns")
      mean, lo, hi = stats.bootstrap_band(ret)
      ax.plot(steps, mean, label=f"{method} (n={ret.shape[0]})")
      ax.fill_between(steps, lo, hi, alpha=0.2)
    ax.set_title(task)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="output path without suffix")
  p.add_argument("--title", default="")
  p.add_argument(
    "--reference",
    default="",
    help="method whose gain the others are measured against "
    "(e.g. SAC on the true reward)",
  )
  p.add_argument(
    "--compare",
    action="append",
    default=[],
    help="method X for a table of P(X > Y) against every other "
    "method with the same last word (repeatable)",
  )
  p.add_argument("runs", nargs="+", help="DIR or METHOD=DIR")
  a = p.parse_args(argv)
  groups = group_runs(a.runs)
  os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
  if a.reference and not any(m == a.reference for _, m in groups):
    p.error(
      f"--reference={a.reference!r} names no method; methods: "
      f"{sorted({m for _, m in groups})}"
    )
  methods = {m for _, m in groups}
  for x in a.compare:
    if x not in methods:
      p.error(f"--compare={x!r} names no method; methods: {sorted(methods)}")
  text = report(
    groups, a.title or os.path.basename(a.out), a.reference, tuple(a.compare)
  )
  if plot(groups, a.out + ".png"):
    text = text.replace(
      "\n", f"\n\n![curves]({os.path.basename(a.out)}.png)\n", 1
    )
  with open(a.out + ".md", "w") as f:
    f.write(text)
  write_seed_csv(groups, a.out + "_seeds.csv")
  write_session_csv(groups, a.out + "_sessions.csv")
  print(text)


if __name__ == "__main__":
  main()
