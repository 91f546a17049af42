"""Where a run's metric records go: JSON lines, CSV, TensorBoard, W&B,
console.

Records are the dicts `erljax.online.runner.run` produces: "eval" records (env
steps, per-seed lists `X_per_seed` with their mean `X` and std `X_std`) and
"feedback" records (one per feedback session, per-seed lists). In workdir:

  metrics.jsonl        every record, one JSON object a line
  eval.csv             one row per evaluation: the seed means and stds
  feedback.csv         one row per feedback session: seed means; with a
                       VLM rater also the session's HTTP requests and
                       tokens over all seeds (requests, prompt_tokens,
                       completion_tokens), their running totals over the
                       run (<name>_total) and the dropped queries per
                       reason (dropped_<reason>, seed means)
  seed_<S>.csv         one row per evaluation with seed S's own values
  tb/                  TensorBoard event files (tensorboardX)
  wandb_run_id         the Weights & Biases run's id (with config.wandb
                       .project: the same scalars as TensorBoard go to that
                       W&B project; `pip install wandb`, the API key from
                       WANDB_API_KEY or `wandb login`, never from the config)

On resume the writer starts from the records stored in the checkpoint: the
files are rewritten from them, so records logged after the checkpoint by the
interrupted process do not appear twice. A run that did not resume keeps the
metrics.jsonl it finds (of an earlier run stopped before its first
checkpoint) as metrics.jsonl.1 (.2, ... if taken) and starts a new one.
A resumed W&B run continues the same run id; its past steps are not sent
again.
"""

from __future__ import annotations

import csv
import json
import math
import os
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional

import numpy as np

# Feedback fields that are per-seed lists of numbers, logged as sums over
# seeds (what the session cost) with running totals over the run.
COST_FIELDS = ("requests", "prompt_tokens", "completion_tokens")
# Feedback fields that are per-seed lists of numbers, logged as seed means.
FEEDBACK_FIELDS = (
  "answered",
  "dropped",
  "not_charged",  # dropped for want of a reply: not charged to the budget
  "ratings_stored",
  "epochs",
  "reward_accuracy",
  "reward_balanced_accuracy",
  "reward_corr",
  "signal_corr",
  "label_accuracy",
)


def _mean(v: Any) -> float:
  arr = np.asarray(v, np.float64)
  finite = arr[np.isfinite(arr)]
  return float(finite.mean()) if finite.size else math.nan


def eval_row(rec: Dict[str, Any]) -> Dict[str, Any]:
  """Scalar columns of an eval record (seed means and stds)."""
  return {
    k: v
    for k, v in rec.items()
    if k != "kind" and not isinstance(v, (list, dict))
  }


def feedback_row(rec: Dict[str, Any]) -> Dict[str, Any]:
  """Scalar columns of a feedback record: counters and seed means."""
  row = {
    "env_steps": rec["env_steps"],
    "session": rec["session"],
    "queries_sent": rec["queries_sent"],
    "seconds": rec["seconds"],
  }
  for k in FEEDBACK_FIELDS:
    if k in rec:
      row[k] = _mean(rec[k])
  for k in COST_FIELDS:
    if k in rec:
      row[k] = int(np.sum(rec[k]))
  per_seed = rec.get("drop_reasons", [])
  for reason in sorted({r for d in per_seed for r in d}):
    row[f"dropped_{reason}"] = _mean([d.get(reason, 0) for d in per_seed])
  hist = np.asarray(rec.get("label_histogram", []), np.float64)
  if hist.size:
    frac = hist.sum(0) / max(hist.sum(), 1.0)
    row.update({f"label_frac_{i}": float(f) for i, f in enumerate(frac)})
  return row


def seed_rows(
  records: Iterable[Dict[str, Any]], seed_index: int
) -> List[Dict[str, Any]]:
  """One seed's values of every eval record."""
  rows = []
  for rec in records:
    if rec.get("kind") != "eval":
      continue
    row = {"env_steps": rec["env_steps"]}
    for k, v in rec.items():
      if k.endswith("_per_seed"):
        row[k[: -len("_per_seed")]] = v[seed_index]
    rows.append(row)
  return rows


def write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
  """Writes rows atomically; columns in order of first appearance."""
  columns: List[str] = []
  for row in rows:
    columns.extend(k for k in row if k not in columns)
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=columns, restval="")
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, path)


def unused_path(path: str) -> str:
  """path, or the first of path.1, path.2, ... that does not exist: a name
  to keep something under without overwriting anything."""
  out, n = path, 0
  while os.path.lexists(out):
    n += 1
    out = f"{path}.{n}"
  return out


def scalars(rec: Dict[str, Any]) -> Dict[str, float]:
  """The finite scalars of a record as TensorBoard and W&B show them:
  "eval/X" and "train/X" of an eval record (seed means, no stds),
  "feedback/X" of a feedback record."""
  out = {}
  if rec.get("kind") == "eval":
    for k, v in eval_row(rec).items():
      if k == "env_steps" or k.endswith("_std") or not np.isfinite(v):
        continue
      group = (
        "eval"
        if k.startswith("eval_") or k in ("time", "env_steps_per_s")
        else "train"
      )
      out[f"{group}/{k}"] = float(v)
  else:
    for k, v in feedback_row(rec).items():
      if k != "env_steps" and np.isfinite(v):
        out[f"feedback/{k}"] = float(v)
  return out


def _wandb_run(
  workdir: str,
  settings: Mapping[str, Any],
  config: Optional[Mapping[str, Any]],
  resume_step: Optional[int],
) -> Any:
  """A started W&B run for workdir (config.wandb `settings`); its id is
  kept in workdir/wandb_run_id so that a resumed run continues it."""
  # pylint: disable-next=g-import-not-at-top (optional: only when asked)
  import wandb

  id_path = os.path.join(workdir, "wandb_run_id")
  run_id = None
  if resume_step is not None and os.path.exists(id_path):
    with open(id_path, encoding="utf-8") as f:
      run_id = f.read().strip() or None
  if run_id is None:
    run_id = uuid.uuid4().hex[:12]
    with open(id_path, "w", encoding="utf-8") as f:
      f.write(run_id + "\n")
  return wandb.init(
    project=settings["project"],
    entity=settings.get("entity") or None,
    mode=settings.get("mode") or "online",
    name=os.path.basename(os.path.normpath(workdir)),
    dir=workdir,
    id=run_id,
    resume="allow",
    config=dict(config) if config is not None else None,
  )


class MetricsWriter:
  """Writes a run's records to workdir (see the module docstring).

  `records` (the records of a resumed run) is the list `write` appends to.
  Without `resume_step` a non-empty metrics.jsonl already in workdir is
  renamed (its new path in `kept`) rather than overwritten.
  `wandb`: config.wandb (a W&B run when its project is set); `config`:
  the run's config as a dict, shown in W&B.
  """

  def __init__(
    self,
    workdir: str,
    seeds: List[int],
    tensorboard: bool = True,
    records: Optional[List[Dict[str, Any]]] = None,
    resume_step: Optional[int] = None,
    wandb: Optional[Mapping[str, Any]] = None,
    config: Optional[Mapping[str, Any]] = None,
  ):
    self.workdir = workdir
    self.seeds = list(seeds)
    # The caller's list (shared, so a checkpoint sees every record written).
    self.records: List[Dict[str, Any]] = records if records is not None else []
    path = os.path.join(workdir, "metrics.jsonl")
    self.kept: Optional[str] = None
    if resume_step is None and os.path.isfile(path) and os.path.getsize(path):
      self.kept = unused_path(path)
      os.rename(path, self.kept)
    with open(path, "w") as f:
      for rec in self.records:
        f.write(json.dumps(rec) + "\n")
    self._jsonl = open(path, "a")
    self._write_csvs()
    self._tb = None
    if tensorboard:
      # tensorboardX: TensorBoard event files without TensorFlow or torch.
      # pylint: disable-next=g-import-not-at-top
      from tensorboardX import SummaryWriter

      # purge_step drops events a killed process logged after the checkpoint.
      self._tb = SummaryWriter(
        os.path.join(workdir, "tb"),
        purge_step=None if resume_step is None else resume_step + 1,
      )
    self._wandb = None
    if wandb is not None and wandb.get("project"):
      self._wandb = _wandb_run(workdir, wandb, config, resume_step)

  def write(self, rec: Dict[str, Any]) -> None:
    self.records.append(rec)
    self._jsonl.write(json.dumps(rec) + "\n")
    self._jsonl.flush()
    self._write_csvs(rec.get("kind"))
    if self._tb is not None:
      self._to_tensorboard(rec)
    if self._wandb is not None:
      self._wandb.log(scalars(rec), step=int(rec["env_steps"]))

  def _write_csvs(self, kind: Optional[str] = None) -> None:
    if kind in (None, "eval"):
      evals = [r for r in self.records if r.get("kind") == "eval"]
      write_csv(
        os.path.join(self.workdir, "eval.csv"), [eval_row(r) for r in evals]
      )
      for i, s in enumerate(self.seeds):
        write_csv(
          os.path.join(self.workdir, f"seed_{s}.csv"), seed_rows(evals, i)
        )
    if kind in (None, "feedback"):
      fb = [
        feedback_row(r) for r in self.records if r.get("kind") == "feedback"
      ]
      totals = dict.fromkeys(COST_FIELDS, 0)
      for row in fb:
        for k in COST_FIELDS:
          if k in row:
            totals[k] += row[k]
            row[f"{k}_total"] = totals[k]
      if fb:
        write_csv(os.path.join(self.workdir, "feedback.csv"), fb)

  def _to_tensorboard(self, rec: Dict[str, Any]) -> None:
    step = rec["env_steps"]
    for k, v in scalars(rec).items():
      self._tb.add_scalar(k, v, step)
    if rec.get("kind") != "eval":
      hist = np.asarray(rec.get("label_histogram", []), np.int64)
      if hist.size and hist.sum():
        counts = hist.sum(0)
        labels = np.repeat(np.arange(counts.size), counts)
        self._tb.add_histogram(
          "feedback/labels", labels, step, bins=np.arange(counts.size + 1) - 0.5
        )
    self._tb.flush()

  def close(self) -> None:
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()


class ProgressBar:
  """tqdm bar over env steps with ETA; a no-op when disabled."""

  def __init__(self, total: int, initial: int, enabled: bool):
    self._bar = None
    if enabled:
      import tqdm  # pylint: disable=g-import-not-at-top

      self._bar = tqdm.tqdm(
        total=total,
        initial=initial,
        unit="step",
        unit_scale=True,
        dynamic_ncols=True,
      )

  def update(
    self, env_steps: int, postfix: Optional[Dict[str, Any]] = None
  ) -> None:
    if self._bar is None:
      return
    self._bar.update(env_steps - self._bar.n)
    if postfix:
      self._bar.set_postfix(postfix, refresh=False)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
