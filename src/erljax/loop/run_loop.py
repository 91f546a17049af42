"""The one run loop of online and offline runs.

A mode (erljax.online.runner: SAC / ERL-VLM with rating sessions;
erljax.offline: IQL on a dataset) supplies its step as a `Mode`: train one
compiled chunk, evaluate, and the trees to checkpoint. `Loop` owns the rest, the
same for every mode:

  - checkpoints (erljax.io.checkpoint): opened before anything compiles, saved
    every checkpoint.every steps, at the end and on a signal; resume;
  - records (erljax.io.metrics): the eval records built from the mode's
    per-seed values, config.json, run_info.json (erljax.io.provenance), the
    progress bar or the progress / ETA at the end of each line;
  - signals: SIGINT / SIGTERM save a checkpoint at the next chunk boundary
    and end the run (Result.interrupted);
  - the evaluation cadence: at the start, every eval_every steps and at the
    end;
  - non-finite metrics stop the run without saving that state.

Like Brax's train functions, a mode is a set of named callables, not a
subclass. Work between chunks that only one mode has (rating sessions)
comes in as `Extras`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import ml_collections
import numpy as np

from erljax.io import checkpoint as checkpoint_lib
from erljax.runtime import distributed
from erljax.io import metrics as metrics_writer
from erljax.io import provenance
from erljax.io import stats

Log = Callable[[str], None]
Values = Dict[str, Any]  # metric name -> per-seed list [S] (host)


@dataclasses.dataclass(frozen=True)
class Extras:
  """Work between chunks that a mode adds to the loop (online: rating
  sessions). Each hook writes its own records through the Loop it holds.

  after_chunk(step) -> why the run must stop, or None;
  before_save(step, signalled): runs before each checkpoint;
  finish(step) -> like after_chunk, once after the last chunk (not after a
    signal);
  stop(reason): after the checkpoint, raises the mode's error for reason;
  after_eval(record): runs after each eval record is written;
  close(): releases what the mode holds (always runs).
  """

  after_chunk: Callable[[int], Optional[str]]
  before_save: Callable[[int, bool], None]
  finish: Callable[[int], Optional[str]]
  stop: Callable[[str], None]
  after_eval: Callable[[Values], None]
  close: Callable[[], None]


@dataclasses.dataclass(frozen=True)
class Mode:
  """One kind of run, as the loop drives it. Steps are env steps online and
  gradient steps offline.

  total_steps, chunk_steps, eval_every: the run's length, the steps of one
    train() call and the evaluation period;
  train(step) -> Values: one chunk starting at `step` (host lists [S]);
  evaluate(step) -> Values: per-seed evaluation values [S], and
    `<name>_episodes` [S][episodes] for which the record gets a 95% CI;
  eval_fields(step, elapsed) -> the record's leading fields (time,
    throughput);
  eval_line(record) -> the record's log line;
  state() -> the trees a checkpoint holds (arrays and JSON values);
  load(tree): sets them from a restored checkpoint;
  unchecked: train() values that may be non-finite (nan: nothing to show).
  """

  total_steps: int
  chunk_steps: int
  eval_every: int
  train: Callable[[int], Values]
  evaluate: Callable[[int], Values]
  eval_fields: Callable[[int, float], Dict[str, Any]]
  eval_line: Callable[[Values], str]
  state: Callable[[], Dict[str, Any]]
  load: Callable[[Dict[str, Any]], None]
  unchecked: Tuple[str, ...] = ()
  extras: Optional[Extras] = None


@dataclasses.dataclass
class Result:
  records: List[Dict[str, Any]]  # every record, oldest first
  step: int  # steps done
  train_seconds: float  # of this process, up to the end of training
  interrupted: Optional[int] = None  # the signal that stopped the run

  def evals(self) -> List[Dict[str, Any]]:
    return [r for r in self.records if r["kind"] == "eval"]


def summary(name: str, per_seed: List[float]) -> Dict[str, float]:
  """The mean and std over seeds of the finite per-seed values."""
  arr = np.asarray(per_seed, dtype=np.float64)
  finite = arr[np.isfinite(arr)]
  return {
    name: float(finite.mean()) if finite.size else math.nan,
    f"{name}_std": float(finite.std()) if finite.size > 1 else 0.0,
  }


def _eta(seconds: float) -> str:
  s = int(round(seconds))
  if s >= 3600:
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
  return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Loop:
  """The host side of one run. `open` it before compiling (a bad workdir
  fails early), build the mode, then `run` it.

  step: steps done; records: the records written so far; log: the run's
  log (silent on processes other than 0).
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    seeds: List[int],
    ckpt: Optional[checkpoint_lib.Checkpointer],
    log: Log,
  ):
    self.config = config
    self.seeds = seeds
    self.ckpt = ckpt
    self.primary = distributed.is_primary()
    self.log = log if self.primary else lambda _: None
    self.step = 0
    self.records: List[Dict[str, Any]] = []
    self.writer: Optional[metrics_writer.MetricsWriter] = None
    self.bar: Optional[metrics_writer.ProgressBar] = None
    self.elapsed0 = 0.0  # training seconds before a resume
    self.t_start = time.perf_counter()
    self._stop: Optional[checkpoint_lib.StopOnSignal] = None
    # Set by run():
    self.mode: Optional[Mode] = None
    self.total = self.step0 = 0  # the run's steps; those before this start
    self.progress_in_lines = False

  @classmethod
  def open(
    cls,
    config: ml_collections.ConfigDict,
    seeds: List[int],
    state_shapes: Any,
    log: Log,
  ) -> "Loop":
    """Opens the workdir's checkpoints (config.workdir set) for a state
    shaped like `state_shapes`; raises WorkdirError / ConfigError there."""
    log = log if distributed.is_primary() else lambda _: None
    ckpt = None
    if config.workdir:
      ckpt = checkpoint_lib.Checkpointer.open(config, state_shapes, log)
    return cls(config, seeds, ckpt, log)

  # -- what modes use ---------------------------------------------------------

  def elapsed(self) -> float:
    """Training seconds, a resumed run's included."""
    return time.perf_counter() - self.t_start

  def stop_requested(self) -> bool:
    return self._stop is not None and self._stop.requested

  def write(self, rec: Dict[str, Any]) -> None:
    if self.writer is not None:
      self.writer.write(rec)
    else:
      self.records.append(rec)

  def line(self, text: str) -> None:
    """Logs text, ended by the progress and ETA when there is no bar."""
    if self.progress_in_lines:
      total, done = self.total, self.step
      text += f"  [{100 * done / total:3.0f}%"
      ran = self.elapsed() - self.elapsed0
      if done > self.step0 and ran > 0:
        rate = (done - self.step0) / ran
        text += f", eta {_eta((total - done) / rate)}"
      text += "]"
    self.log(text)

  def check_finite(self, values: Values, where: str) -> None:
    """Raises FloatingPointError naming the first non-finite value."""
    for k, v in values.items():
      if not np.all(np.isfinite(v)):
        last = self.ckpt.latest_step() if self.ckpt else None
        raise FloatingPointError(
          f"non-finite {where} metric {k}={v} at env step {self.step}"
          "; stopped without saving this state. "
          + (
            f"Last good checkpoint: step {last} in {self.ckpt.directory}"
            if last is not None
            else "No checkpoint was saved."
          )
        )

  def resume_hint(self) -> str:
    """ "; checkpoint at step N in DIR, continue with ..." or "" if none."""
    last = self.ckpt.latest_step() if self.ckpt else None
    if last is None:
      return ""
    return (
      f"; checkpoint at step {last} in {self.ckpt.directory}, continue "
      "with --config.resume=True"
    )

  # -- the run ----------------------------------------------------------------

  def run(self, mode: Mode) -> Result:
    """Runs `mode` to its total_steps (or a signal); closes everything."""
    self.mode, self.total = mode, mode.total_steps
    try:
      restored = self._restore()
      self._open_records(restored)
      with checkpoint_lib.StopOnSignal() as stop:
        self._stop = stop
        interrupted = self._train(restored)
        trained = self.elapsed()
    finally:
      self._close()
    return Result(self.records, self.step, trained - self.elapsed0, interrupted)

  def _snapshot(self) -> Dict[str, Any]:
    return {
      **self.mode.state(),
      "progress": {
        "env_steps": self.step,
        "records": self.records,
        "elapsed": self.elapsed(),
      },
    }

  def _restore(self) -> bool:
    """Continues from the latest checkpoint if config.resume asks for it."""
    if not (self.ckpt and self.config.resume):
      return False
    restored = self.ckpt.restore(self._snapshot())
    if restored is None:
      return False
    step, tree = restored
    progress = tree.pop("progress")
    self.mode.load(tree)
    self.step = progress.get("env_steps", step)
    self.elapsed0 = progress.get("elapsed", 0.0)
    self.records = progress["records"]
    self.log(
      f"resumed from the checkpoint at step {step} in {self.ckpt.directory}"
    )
    return True

  def _open_records(self, restored: bool) -> None:
    """config.json, run_info.json and the metric files (process 0 with a
    workdir); the progress bar; the clock."""
    c = self.config
    if c.workdir and self.primary:
      with open(os.path.join(c.workdir, "config.json"), "w") as f:
        f.write(c.to_json_best_effort(indent=2))
      provenance.write(c.workdir, resumed=restored)
      self.writer = metrics_writer.MetricsWriter(
        c.workdir,
        self.seeds,
        c.tensorboard,
        self.records,
        resume_step=self.step if restored else None,
        wandb=c.wandb,
        config=c.to_dict(),
      )
      if self.writer.kept:
        self.log(f"metrics.jsonl of an earlier run kept as {self.writer.kept}")
    bar = c.progress and self.primary and sys.stderr.isatty()
    self.bar = metrics_writer.ProgressBar(self.total, self.step, bar)
    # Without a terminal (a log file, CI) every log line ends in the
    # progress and ETA instead of the bar.
    self.progress_in_lines = c.progress and not bar
    self.step0 = self.step  # steps before this process's start
    # Elapsed training time counts from here, on top of the restored run's.
    self.t_start = time.perf_counter() - self.elapsed0

  def _train(self, restored: bool) -> Optional[int]:
    """The chunks; returns the signal that stopped them, if one did."""
    mode, extras = self.mode, self.mode.extras
    if not restored:
      self._evaluate({}, 0.0)
    next_eval = (self.step // mode.eval_every + 1) * mode.eval_every
    while self.step < self.total:
      train = mode.train(self.step)
      self.step += mode.chunk_steps
      self.check_finite(
        {k: v for k, v in train.items() if k not in mode.unchecked},
        "training",
      )
      stopped = extras.after_chunk(self.step) if extras else None
      if self.step >= next_eval or self.step >= self.total:
        self._evaluate(train, self.elapsed())
        next_eval = (self.step // mode.eval_every + 1) * mode.eval_every
      self.bar.update(self.step)
      # Over several processes: the same on all, so all stop here.
      signum = distributed.max_over_processes(self._stop.signum or 0)
      if self.ckpt and (
        self.ckpt.due(self.step) or signum or stopped or self.step >= self.total
      ):
        if extras:
          extras.before_save(self.step, bool(signum))
        self.ckpt.save(self.step, self._snapshot())
      if stopped:
        extras.stop(stopped)
      if signum:
        self.log(
          f"stopped by signal {signum} at step {self.step}"
          + (
            f"; checkpoint saved in {self.ckpt.directory}, "
            "continue with --config.resume=True"
            if self.ckpt
            else ""
          )
        )
        return signum
    stopped = extras.finish(self.step) if extras else None
    if stopped:
      extras.stop(stopped)
    return None

  def _evaluate(self, train: Values, elapsed: float) -> None:
    """Writes and logs the eval record at this step: the mode's per-seed
    values with their mean / std over seeds and, for `<name>_episodes`
    [S][episodes], the 95% CI of the mean over seeds and episodes
    (stats.nested_bootstrap_mean)."""
    ev = self.mode.evaluate(self.step)
    episodes = {
      k[: -len("_episodes")]: ev.pop(k)
      for k in list(ev)
      if k.endswith("_episodes")
    }
    rec: Dict[str, Any] = {
      "kind": "eval",
      "env_steps": self.step,
      **self.mode.eval_fields(self.step, elapsed),
    }
    for k, v in {**ev, **train}.items():
      rec[f"{k}_per_seed"] = v
      rec.update(summary(k, v))
    for k, v in episodes.items():
      rec[f"{k}_episodes"] = v
      if np.all(np.isfinite(v)):
        _, rec[f"{k}_lo"], rec[f"{k}_hi"] = stats.nested_bootstrap_mean(v)
    self.write(rec)
    self.line(self.mode.eval_line(rec))
    if self.mode.extras:
      self.mode.extras.after_eval(rec)
    self.bar.update(self.step, {"return": f"{rec['eval_return']:.3f}"})

  def _close(self) -> None:
    if self.bar is not None:
      self.bar.close()
    if self.mode.extras:
      self.mode.extras.close()
    if self.ckpt is not None:
      self.ckpt.close()
    if self.writer is not None:
      self.writer.close()
