"""erljax's reward fit against the authors' train_reward on the same stored
labels (the follow-up check of experiments/prereg/paper_conditions.md).

  python experiments/reward_fit/compare.py RUN_DIR \
      --authors_git=/work/.mirror/tunglm2203+erlvlm/repo \
      --torch_python=/tmp/venv_torch/bin/python --fit_seeds=5

RUN_DIR is a finished erljax rating run (ERL-VLM or RbRL, state-action
inputs stored; see store.py for where its labels live). Its labelled rows
are split per seed into train and a fixed held-out share (--holdout). Two
fits are trained on the same train rows and labels, --fit_seeds times each:

  A: erljax's reward learner (erljax_fit.py), the run's reward settings;
  B: the authors' RewardModel.train_reward (authors_launcher.py, run by
     --torch_python; arrays go through .npz files), the same settings.

--schedule=sessions (default) replays the run's sessions: the training set
grows as it did in the run, and each session trains up to reward.max_epochs
epochs with the early stop, on the model the last session left (as both
implementations do in a run); "final" is one such session on all train rows.

Both read the stored obs and action (the state-action MLP, 3x256, tanh
output), whatever model the run trained: the authors' scripts rate images,
erljax's study runs states, and the comparison needs identical inputs.

Scores, per fit and (run seed, fit seed):
  acc_noisy / acc_clean: held-out accuracy of the predicted class against
    the stored (noisy) labels and against the noise-free labels recomputed
    from the stored true values. The class is the rating loss's rule (both
    implementations'): r_hat min-max normalised over the held-out rows, class
    boundaries at the sorted values' cumulative counts of the labels it is
    compared with, argmax of the quadratic logits (erljax.rewards.loss
    .rating_logits);
  corr_held: Pearson corr(r_hat, r_true) over the held-out rows;
  corr_buffer: corr(r_hat, env reward) over the seed's replay buffer (the
    session log's reward_corr; the pre-registered score);
  train_acc: each trainer's own training accuracy, last epoch of the last
    session (against the noisy labels it fits; high is not better here).

Reading rule (fixed before any use; READING below is written into the
JSON): for acc_clean, corr_held and corr_buffer, erljax fits worse when the
95% bootstrap CI of mean(A) - mean(B) lies wholly below 0, better when
wholly above, otherwise no difference beyond fit-seed noise. CIs resample
fit seeds within each run seed (the run seeds' labels are fixed data).
Whether the two fits' own CIs overlap is reported beside it.

Writes OUT.json and OUT.md (OUT defaults to RUN_DIR/reward_fit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# pylint: disable=g-import-not-at-top,wrong-import-position
import erljax_fit  # noqa: E402
import store  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from erljax.rewards import loss as reward_lib  # noqa: E402
from erljax.io import stats  # noqa: E402

AUTHORS_COMMIT = "1f9aa3a"
AUTHORS_FILES = ("reward_model_vlm_rating.py", "conv_net.py")
PRIMARY = ("acc_clean", "corr_held", "corr_buffer")
METRICS = ("acc_noisy", "acc_clean", "corr_held", "corr_buffer", "train_acc")
READING = (
  "For acc_clean, corr_held and corr_buffer: erljax (A) fits worse than "
  "the authors' train_reward (B) when the 95% bootstrap CI of "
  "mean(A) - mean(B) lies wholly below 0, better when wholly above 0, "
  "otherwise no difference beyond fit-seed noise. CIs resample fit seeds "
  "within each run seed."
)


def export_authors(git_dir: str, commit: str, dest: str) -> str:
  """Writes the authors' reward files at `commit` of the bare repository
  git_dir into dest (`git show`); returns dest."""
  os.makedirs(dest, exist_ok=True)
  for f in AUTHORS_FILES:
    text = subprocess.run(
      ["git", f"--git-dir={git_dir}", "show", f"{commit}:{f}"],
      check=True,
      capture_output=True,
    ).stdout
    with open(os.path.join(dest, f), "wb") as fh:
      fh.write(text)
  return dest


def predicted_class(
  r_hat: np.ndarray, labels: np.ndarray, num_classes: int, k: float
) -> np.ndarray:
  """The rating loss's class of each row [M] (module docstring)."""
  logits = reward_lib.rating_logits(
    jnp.asarray(r_hat, jnp.float32), jnp.asarray(labels), num_classes, k
  )
  return np.asarray(jnp.argmax(logits, -1))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
  if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
    return float("nan")
  return float(np.corrcoef(a, b)[0, 1])


def scores(
  fit: Dict[str, np.ndarray],
  splits: Sequence[Dict[str, np.ndarray]],
  buffer_reward: np.ndarray,
  num_classes: int,
  k: float,
) -> Dict[str, np.ndarray]:
  """{metric: [S, F]} of one fit's outputs (erljax_fit.fit's layout)."""
  s_count, f_count = fit["r_hat_held"].shape
  out = {m: np.full((s_count, f_count), np.nan) for m in METRICS}
  for s in range(s_count):
    sp = splits[s]
    for f in range(f_count):
      r = np.asarray(fit["r_hat_held"][s, f], np.float64)
      for m, lab in (("acc_noisy", "label"), ("acc_clean", "clean")):
        y = sp[f"held_{lab}"]
        out[m][s, f] = np.mean(predicted_class(r, y, num_classes, k) == y)
      out["corr_held"][s, f] = _corr(r, sp["held_true"])
      if "r_hat_buffer" in fit:
        out["corr_buffer"][s, f] = _corr(
          np.asarray(fit["r_hat_buffer"][s, f], np.float64), buffer_reward[s]
        )
      n_sessions = len(sp["session_ends"])
      out["train_acc"][s, f] = fit["train_accuracy"][s, f, n_sessions - 1]
  return out


def difference_ci(
  a: np.ndarray, b: np.ndarray, reps: int = 2000, seed: int = 0
) -> List[float]:
  """[mean(a) - mean(b), lower, upper]: a 95% percentile bootstrap over
  fit seeds (axis 1), resampled within each run seed (axis 0), a and b
  independently."""
  rng = np.random.default_rng(seed)
  point = float(np.nanmean(a) - np.nanmean(b))
  if a.shape[1] < 2 or b.shape[1] < 2:
    return [point, point, point]
  diffs = np.empty(reps)
  for i in range(reps):
    ia = rng.integers(0, a.shape[1], a.shape)
    ib = rng.integers(0, b.shape[1], b.shape)
    diffs[i] = np.nanmean(np.take_along_axis(a, ia, 1)) - np.nanmean(
      np.take_along_axis(b, ib, 1)
    )
  lo, hi = np.percentile(diffs, [2.5, 97.5])
  return [point, float(lo), float(hi)]


def summarize(per_fit: Dict[str, Dict[str, np.ndarray]]) -> Dict:
  """Means with CIs per fit and metric, the A - B differences and the
  reading of each primary metric."""
  out: Dict = {"fits": {}, "difference": {}, "reading": {}}
  for name, sc in per_fit.items():
    out["fits"][name] = {
      m: list(stats.stratified_bootstrap(sc[m].T, stats.mean)) for m in METRICS
    }
  a, b = per_fit["erljax"], per_fit["authors"]
  for m in METRICS:
    d = difference_ci(a[m], b[m])
    out["difference"][m] = d
    if m in PRIMARY and np.isfinite(d[0]):
      verdict = (
        "erljax worse"
        if d[2] < 0
        else "erljax better"
        if d[1] > 0
        else "no difference beyond fit-seed noise"
      )
      ca, cb = out["fits"]["erljax"][m], out["fits"]["authors"][m]
      out["reading"][m] = {
        "verdict": verdict,
        "cis_overlap": bool(ca[1] <= cb[2] and cb[1] <= ca[2]),
      }
  return out


def notes(sets: Dict, config) -> List[str]:
  """Where the authors' code cannot follow the run's settings."""
  n = []
  if not sets["stratified"]:
    n.append(
      "reward.stratified=False: the authors' train_reward stratifies its "
      "batches regardless (batch_stratify is stored, never read; "
      "generate_training_indices is always called), so fit B stratifies"
    )
  if sets["stop_metric"] != "accuracy":
    n.append(
      f"reward.stop_metric={sets['stop_metric']!r}: the authors' loop "
      "stops on accuracy, fit B does"
    )
  if config.reward.model != "mlp":
    n.append(
      f"the run trained reward.model={config.reward.model!r}; both fits "
      "use the state-action MLP on the stored obs and action"
    )
  return n


def run_authors(
  torch_python: str,
  authors_dir: str,
  splits: Sequence[Dict[str, np.ndarray]],
  evals: Sequence[Dict[str, tuple]],
  fit_seeds: Sequence[int],
  sets: Dict,
  workdir: str,
) -> Dict[str, np.ndarray]:
  """Fit B through authors_launcher.py in torch_python; erljax_fit.fit's
  output layout."""
  jobs = []
  for s, (sp, ev) in enumerate(zip(splits, evals)):
    path = os.path.join(workdir, f"seed{s}.npz")
    np.savez(
      path,
      train_x=np.concatenate([sp["train_obs"], sp["train_action"]], -1),
      train_y=sp["train_label"],
      session_ends=sp["session_ends"],
      fit_seeds=np.asarray(fit_seeds, np.int64),
      settings=json.dumps(sets),
      **{f"eval_{k}": np.concatenate(v, -1) for k, v in ev.items()},
    )
    jobs.append(path)
  subprocess.run(
    [
      torch_python,
      os.path.join(HERE, "authors_launcher.py"),
      f"--authors_dir={authors_dir}",
      *jobs,
    ],
    check=True,
  )
  k_max = max(len(sp["session_ends"]) for sp in splits)
  out: Dict[str, np.ndarray] = {}
  outs = [np.load(j[: -len(".npz")] + ".out.npz") for j in jobs]
  for name in evals[0]:
    pred = np.empty((len(splits), len(fit_seeds)), object)
    for s, z in enumerate(outs):
      for f in range(len(fit_seeds)):
        pred[s, f] = z[f"r_hat_{name}"][f]
    out[f"r_hat_{name}"] = pred
  acc = np.full((len(splits), len(fit_seeds), k_max), np.nan)
  epochs = np.zeros((len(splits), len(fit_seeds), k_max), np.int64)
  for s, z in enumerate(outs):
    k = z["train_accuracy"].shape[1]
    acc[s, :, :k], epochs[s, :, :k] = z["train_accuracy"], z["epochs"]
  out["train_accuracy"], out["epochs"] = acc, epochs
  out["settings_used"] = json.loads(str(outs[0]["settings_used"]))
  return out


def table(result: Dict) -> List[str]:
  lines = [
    "| metric | erljax (A) | authors (B) | A - B | reading |",
    "|---|---|---|---|---|",
  ]
  fmt = lambda v: f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
  for m in METRICS:
    a = result["summary"]["fits"]["erljax"][m]
    b = result["summary"]["fits"]["authors"][m]
    d = result["summary"]["difference"][m]
    r = result["summary"]["reading"].get(m)
    reading = (
      ""
      if r is None
      else r["verdict"] + ("" if r["cis_overlap"] else ", CIs apart")
    )
    lines.append(f"| {m} | {fmt(a)} | {fmt(b)} | {fmt(d)} | {reading} |")
  return lines


def main(argv=None) -> Dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("run", help="workdir of a finished rating run")
  p.add_argument("--authors_dir", default="", help="holds their files")
  p.add_argument(
    "--authors_git", default="", help="or: their bare git dir to export from"
  )
  p.add_argument("--authors_commit", default=AUTHORS_COMMIT)
  p.add_argument("--torch_python", default="/tmp/venv_torch/bin/python")
  p.add_argument("--fit_seeds", type=int, default=5)
  p.add_argument("--holdout", type=float, default=0.2)
  p.add_argument("--split_seed", type=int, default=0)
  p.add_argument(
    "--schedule", choices=("sessions", "final"), default="sessions"
  )
  p.add_argument(
    "--buffer", type=int, default=1, help="1: also corr over the buffer"
  )
  p.add_argument("--out", default="", help="path without suffix")
  a = p.parse_args(argv)
  if not 0.0 < a.holdout < 1.0:
    raise ValueError(f"--holdout={a.holdout}: must be in (0, 1)")
  if a.fit_seeds < 1:
    raise ValueError(f"--fit_seeds={a.fit_seeds}: must be >= 1")
  if bool(a.authors_dir) == bool(a.authors_git):
    raise ValueError("give one of --authors_dir and --authors_git")
  stored = store.read(a.run)
  print(store.describe(stored), flush=True)
  sets = erljax_fit.settings(stored.config, stored.num_classes)
  splits = store.split(stored, a.holdout, a.split_seed, a.schedule)
  evals = []
  for s, sp in enumerate(splits):
    ev = {"held": (sp["held_obs"], sp["held_action"])}
    if a.buffer:
      ev["buffer"] = (stored.buffer_obs[s], stored.buffer_action[s])
    evals.append(ev)
  fit_seeds = list(range(a.fit_seeds))
  fit_a = erljax_fit.fit(
    stored.config, stored.num_classes, splits, fit_seeds, evals
  )
  with tempfile.TemporaryDirectory(prefix="reward_fit_") as tmp:
    authors_dir = a.authors_dir or export_authors(
      a.authors_git, a.authors_commit, os.path.join(tmp, "authors")
    )
    fit_b = run_authors(
      a.torch_python, authors_dir, splits, evals, fit_seeds, sets, tmp
    )
  per_fit = {
    name: scores(f, splits, stored.buffer_reward, stored.num_classes, sets["k"])
    for name, f in (("erljax", fit_a), ("authors", fit_b))
  }
  result = {
    "run": os.path.abspath(a.run),
    "checkpoint_step": stored.step,
    "task": stored.config.task,
    "schedule": a.schedule,
    "holdout": a.holdout,
    "split_seed": a.split_seed,
    "fit_seeds": fit_seeds,
    "rows_per_seed": stored.size.tolist(),
    "sessions_per_seed": [len(x) for x in stored.sessions],
    "label_noise_measured": [
      float(np.mean(stored.label[s, :n] != stored.clean[s, :n]))
      for s, n in enumerate(stored.size)
    ],
    "settings": sets,
    "authors_settings_used": fit_b["settings_used"],
    "authors_commit": a.authors_commit if a.authors_git else a.authors_dir,
    "notes": notes(sets, stored.config),
    "reading_rule": READING,
    "per_seed": {
      name: {m: v.tolist() for m, v in sc.items()}
      for name, sc in per_fit.items()
    },
    "epochs_last_session": {
      name: [
        [
          int(f["epochs"][s, j, len(splits[s]["session_ends"]) - 1])
          for j in range(len(fit_seeds))
        ]
        for s in range(len(splits))
      ]
      for name, f in (("erljax", fit_a), ("authors", fit_b))
    },
    "summary": summarize(per_fit),
  }
  out = a.out or os.path.join(a.run, "reward_fit")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + ".json", "w") as f:
    json.dump(result, f, indent=2)
  args = argv if argv is not None else sys.argv[1:]
  lines = [
    "# Reward fit: erljax against the authors' train_reward "
    f"({stored.config.task})",
    "",
    f"`python experiments/reward_fit/compare.py {' '.join(args)}`",
    "",
    f"{len(splits)} run seeds x {len(fit_seeds)} fit seeds, schedule "
    f"{a.schedule}, {a.holdout:.0%} of each seed's "
    f"{stored.size.tolist()} labelled rows held out. Mean [95% CI].",
    "",
    *table(result),
    "",
    "Reading rule (fixed before use): " + READING,
    "",
    *[f"- {n}" for n in result["notes"]],
  ]
  with open(out + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(table(result)))
  print(f"wrote {out}.json and {out}.md")
  return result


if __name__ == "__main__":
  main()
