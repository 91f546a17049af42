"""The host run loop: compile, train chunk by chunk, evaluate, log, save.

`run(config)` trains `config.num_seeds` seeds at once. Between compiled
chunks (erljax.trainer) it runs the feedback sessions (erljax.sessions),
evaluates every `eval_every` env steps, writes metrics
(erljax.metrics_writer) and checkpoints (erljax.checkpoint), and stops
cleanly on SIGINT / SIGTERM.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from erljax import checkpoint as checkpoint_lib
from erljax import distributed
from erljax import media
from erljax import memory
from erljax import metrics_writer
from erljax import plots
from erljax import sessions
from erljax import sharding
from erljax import stats
from erljax import trainer as trainer_lib

Log = Callable[[str], None]
_PRINT: Log = functools.partial(print, flush=True)


@dataclasses.dataclass
class RunResult:
  history: List[Dict[str, Any]]  # the evaluation records, oldest first
  state: trainer_lib.TrainState  # leaves [S, ...]
  compile_seconds: float
  train_seconds: float
  feedback: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  interrupted: Optional[int] = None  # the signal that stopped the run early


def run(
  config: ml_collections.ConfigDict,
  log: Log = _PRINT,
  trainer: Optional[trainer_lib.Trainer] = None,
  raters: Optional[List[Any]] = None,
) -> RunResult:
  """Trains `config.num_seeds` seeds at once; returns the evaluation history.

  Each history record holds env_steps, per-seed lists (eval_return, ...) and
  their mean / std over seeds, and the mean's 95% CI over seeds and
  evaluation episodes (eval_return_lo / _hi). `raters` (one per seed)
  replace the ones the config names. With a workdir the run writes logs
  (erljax.metrics_writer) and checkpoints (erljax.checkpoint); SIGINT/SIGTERM
  save a checkpoint at the next chunk boundary and return early
  (RunResult.interrupted), `config.resume` continues from the latest one.

  Over several processes (config.distributed, erljax.distributed) every
  process calls this with the same config and gets the same result; only
  process 0 logs, asks the raters and writes workdir's files.
  """
  distributed.initialize(config)
  return _Run(
    trainer or trainer_lib.Trainer.create(config), log, raters
  ).train()


def _to_host(tree) -> Dict[str, Any]:
  return {k: v.tolist() for k, v in distributed.to_host(tree).items()}


def _summary(name: str, per_seed: List[float]) -> Dict[str, float]:
  arr = np.asarray(per_seed, dtype=np.float64)
  finite = arr[np.isfinite(arr)]
  return {
    name: float(finite.mean()) if finite.size else math.nan,
    f"{name}_std": float(finite.std()) if finite.size > 1 else 0.0,
  }


def _rollout_video(
  trainer: trainer_lib.Trainer,
  state: trainer_lib.TrainState,
  keys: jax.Array,
  path: str,
  log: Log,
) -> Optional[str]:
  """path: one deterministic episode of seed 0's policy as a GIF, played
  and written by process 0 (the others return the path). A video is never
  worth a run: when it cannot be made, `log` says why in one line and None
  is returned."""
  params = jax.tree_util.tree_map(lambda x: x[0], state.sac.actor_params)
  key = keys[0]
  if jax.process_count() > 1:  # seed 0's values, local to every process
    params, key = distributed.to_host((params, key))
  if not distributed.is_primary():
    return path
  try:
    return media.rollout_gif(trainer, params, key, path, log)
  except Exception as e:  # pylint: disable=broad-except
    log(
      f"warning: no video {path}: {type(e).__name__}: "
      + (str(e).splitlines() or [""])[0][:200]
    )
    return None


def _eta(seconds: float) -> str:
  s = int(round(seconds))
  if s >= 3600:
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
  return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Run:
  """One run's host side: the values it carries from chunk to chunk.

  state: the TrainState of all seeds (leaves [S, ...]); env_steps: host
  count of transitions per seed; eval_keys [S]; records: the metric records
  written so far; loop: the feedback sessions (None with the true reward).
  """

  def __init__(
    self, trainer: trainer_lib.Trainer, log: Log, raters: Optional[List[Any]]
  ):
    self.trainer = trainer
    self.primary = distributed.is_primary()
    self.log = log if self.primary else lambda _: None
    log = self.log
    c = self.config = trainer.config
    self.seeds = list(range(c.seed, c.seed + c.num_seeds))
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(self.seeds))
    self.eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    self.ckpt = None
    shapes = jax.eval_shape(jax.vmap(trainer.init), keys)
    if c.workdir:  # fails before anything is compiled
      self.ckpt = checkpoint_lib.Checkpointer.open(c, shapes, log)
    log(
      memory.startup_line(
        memory.estimate(c, shapes), *memory.available(), c.num_devices
      )
    )
    # The run's device layout, built once: the state, the eval keys and
    # the reward minibatches of the feedback sessions are laid out by it.
    self.layout = sharding.Layout.create(c.num_devices, c.num_seeds, c.num_envs)
    self.loop = (
      sessions.FeedbackLoop(trainer, self.seeds, self.layout, raters)
      if trainer.learned_reward
      else None
    )

    log(
      f"compiling {c.task} ({c.num_seeds} seed(s) x {c.num_envs} envs, "
      f"{jax.devices()[0].platform}) ..."
    )
    t0 = time.perf_counter()
    self.eval_keys = self.layout.put_seeded(self.eval_keys)
    self.programs = trainer_lib.compiled(
      trainer, keys, self.eval_keys, self.layout
    )
    self.state = self.layout.put_state(self.programs.init(keys))
    self.compile_seconds = time.perf_counter() - t0
    log(
      f"erljax: task={c.task} seeds={c.num_seeds} envs={c.num_envs} "
      f"reward={c.reward.source} devices={jax.devices()[0].platform} "
      + (f"processes={jax.process_count()} " if jax.process_count() > 1 else "")
      + f"compile={self.compile_seconds:.1f}s"
    )

    self.env_steps = 0
    self.records: List[Dict[str, Any]] = []
    self.elapsed0 = 0.0  # training seconds before a resume
    self.t_start = time.perf_counter()
    self.restored = self._restore()
    self.writer = None
    if c.workdir and self.primary:
      with open(os.path.join(c.workdir, "config.json"), "w") as f:
        f.write(c.to_json_best_effort(indent=2))
      self.writer = metrics_writer.MetricsWriter(
        c.workdir,
        self.seeds,
        c.tensorboard,
        self.records,
        resume_step=self.env_steps if self.restored else None,
        wandb=c.wandb,
        config=c.to_dict(),
      )
      if self.writer.kept:
        log(f"metrics.jsonl of an earlier run kept as {self.writer.kept}")
    bar = c.progress and self.primary and sys.stderr.isatty()
    self.bar = metrics_writer.ProgressBar(c.total_steps, self.env_steps, bar)
    # Without a terminal (a log file, CI) every log line ends in the
    # progress and ETA instead of the bar.
    self.progress_in_lines = c.progress and not bar
    self.steps0 = self.env_steps  # env steps before this process's start
    # Elapsed training time counts from here, on top of the restored run's.
    self.t_start = time.perf_counter() - self.elapsed0

  # -- checkpoints --------------------------------------------------------

  def _snapshot(self) -> Dict[str, Any]:
    return {
      "train": self.state,
      "eval_keys": self.eval_keys,
      "loop": self.loop.state_dict() if self.loop is not None else {},
      "progress": {
        "env_steps": self.env_steps,
        "records": self.records,
        "elapsed": self._elapsed(),
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
    self.state = self.layout.put_state(tree["train"])
    self.eval_keys = self.layout.put_seeded(tree["eval_keys"])
    if self.loop is not None:
      self.loop.load_state_dict(tree["loop"])
    self.env_steps = tree["progress"]["env_steps"]
    self.elapsed0 = tree["progress"]["elapsed"]
    self.records = tree["progress"]["records"]
    self.log(
      f"resumed from the checkpoint at step {step} in {self.ckpt.directory}"
    )
    return True

  def _elapsed(self) -> float:
    return time.perf_counter() - self.t_start

  def _line(self, text: str) -> None:
    """Logs text, ended by the progress and ETA when there is no bar."""
    if self.progress_in_lines:
      c, done = self.config, self.env_steps
      text += f"  [{100 * done / c.total_steps:3.0f}%"
      ran = self._elapsed() - self.elapsed0
      if done > self.steps0 and ran > 0:
        rate = (done - self.steps0) / ran
        text += f", eta {_eta((c.total_steps - done) / rate)}"
      text += "]"
    self.log(text)

  # -- records ------------------------------------------------------------

  def _write(self, rec: Dict[str, Any]) -> None:
    if self.writer is not None:
      self.writer.write(rec)
    else:
      self.records.append(rec)

  def _evaluate(self, train: Dict[str, Any], elapsed: float) -> None:
    step = self.env_steps
    self.eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(
      self.eval_keys
    )
    ev = _to_host(self.programs.evaluate(self.state, self.eval_keys))
    episodes = {
      k: ev.pop(f"{k}_episodes") for k in ("eval_return", "eval_success")
    }
    sps = step / elapsed if elapsed > 0 else 0.0
    rec: Dict[str, Any] = {
      "kind": "eval",
      "env_steps": step,
      "time": elapsed,
      "env_steps_per_s": sps,
    }
    for k, v in {**ev, **train}.items():
      rec[f"{k}_per_seed"] = v
      rec.update(_summary(k, v))
    # [S][num_eval_envs] episode values; the 95% CI of their mean over
    # seeds and episodes (stats.nested_bootstrap_mean).
    for k, v in episodes.items():
      rec[f"{k}_episodes"] = v
      if np.all(np.isfinite(v)):
        _, rec[f"{k}_lo"], rec[f"{k}_hi"] = stats.nested_bootstrap_mean(v)
    self._write(rec)
    self._line(eval_line(rec, self.trainer.env.task.has_success))
    c = self.config
    every = c.render.video_every if c.workdir else 0
    if every and len(self._evals()) % every == 0:
      video = os.path.join(c.workdir, "videos", f"step_{step:09d}.gif")
      if _rollout_video(
        self.trainer, self.state, self.eval_keys, video, self.log
      ):
        self.log(f"video: {video}")
    self.bar.update(step, {"return": f"{rec['eval_return']:.3f}"})

  def _check_finite(self, values: Dict[str, Any], where: str) -> None:
    for k, v in values.items():
      if not np.all(np.isfinite(v)):
        last = self.ckpt.latest_step() if self.ckpt else None
        raise FloatingPointError(
          f"non-finite {where} metric {k}={v} at env step {self.env_steps}"
          "; stopped without saving this state. "
          + (
            f"Last good checkpoint: step {last} in {self.ckpt.directory}"
            if last is not None
            else "No checkpoint was saved."
          )
        )

  def _report_feedback(self, recs: List[Dict[str, Any]]) -> None:
    for rec in recs:
      self._write({"kind": "feedback", **rec})
      if rec.get("trained"):
        self._check_finite(
          {
            k: rec[k]
            for k in (
              "reward_accuracy",
              "reward_balanced_accuracy",
              "reward_corr",
              "signal_corr",
            )
          },
          "feedback",
        )
      self._line(feedback_line(rec))

  # -- the loop -------------------------------------------------------------

  def train(self) -> RunResult:
    c, loop = self.config, self.loop
    interrupted = None
    try:
      with checkpoint_lib.StopOnSignal() as stop:
        if not self.restored:
          self._evaluate({}, 0.0)
        next_eval = (self.env_steps // c.eval_every + 1) * c.eval_every
        while self.env_steps < c.total_steps:
          # In place after feedback sessions.
          state = self.layout.put_state(self.state)
          if loop is not None:
            state, m = self.programs.chunk(
              state, jnp.asarray(loop.unsupervised(self.env_steps))
            )
          else:
            state, m = self.programs.chunk(state)
          self.state = state
          self.env_steps += c.log_every
          train_metrics = _to_host(m)
          self._check_finite(
            {k: v for k, v in train_metrics.items() if k != "train_return"},
            "training",
          )
          stopped = None
          if loop is not None:
            self.state, recs = loop.step(self.state, self.env_steps)
            self._report_feedback(recs)
            stopped = loop.stop_reason()
          if self.env_steps >= next_eval or self.env_steps >= c.total_steps:
            self._evaluate(train_metrics, self._elapsed())
            next_eval = (self.env_steps // c.eval_every + 1) * c.eval_every
          self.bar.update(self.env_steps)
          # Over several processes: the same on all, so all stop here.
          signum = distributed.max_over_processes(stop.signum or 0)
          if self.ckpt and (
            self.ckpt.due(self.env_steps)
            or signum
            or stopped
            or self.env_steps >= c.total_steps
          ):
            if loop is not None:
              # Ratings in flight are paid for: a checkpoint waits for them
              # (at most feedback.drain_wait_s, not after a signal) so that
              # a resumed run never asks for them again.
              self.state, recs = loop.drain(
                self.state,
                self.env_steps,
                timeout=0.0 if signum else -1.0,
                stop=lambda: stop.requested,
              )
              self._report_feedback(recs)
            self.ckpt.save(self.env_steps, self._snapshot())
          if stopped:
            self._stop_rating(stopped)
          if signum:
            interrupted = signum
            self.log(
              f"stopped by signal {signum} at step "
              f"{self.env_steps}"
              + (
                f"; checkpoint saved in {self.ckpt.directory}, "
                "continue with --config.resume=True"
                if self.ckpt
                else ""
              )
            )
            break
        if loop is not None and interrupted is None:
          self.state, recs = loop.finish(
            self.state, self.env_steps, stop=lambda: stop.requested
          )
          self._report_feedback(recs)
          stopped = loop.stop_reason()
          if stopped:
            self._stop_rating(stopped)
        trained = self._elapsed()  # a video is not training time
        if c.workdir and c.render.rollout_video and interrupted is None:
          video = os.path.join(c.workdir, "rollout.gif")
          if _rollout_video(
            self.trainer, self.state, self.eval_keys, video, self.log
          ):
            self.log(f"video: {video}")
    finally:
      self._close()
    if self.writer is not None:
      self._plot()
    return RunResult(
      history=self._evals(),
      state=self.state,
      compile_seconds=self.compile_seconds,
      train_seconds=trained - self.elapsed0,
      feedback=[
        {k: v for k, v in r.items() if k != "kind"}
        for r in self.records
        if r["kind"] == "feedback"
      ],
      interrupted=interrupted,
    )

  def _evals(self) -> List[Dict[str, Any]]:
    return [r for r in self.records if r["kind"] == "eval"]

  def _plot(self) -> None:
    """workdir/curve.png (erljax.plots); a failure is a warning line."""
    c = self.config
    title = f"{c.task}, {c.method}, {c.num_seeds} seed(s)"
    try:
      plots.learning_curve(
        self._evals(), os.path.join(c.workdir, "curve.png"), title
      )
    except Exception as e:  # pylint: disable=broad-except
      self.log(f"warning: no curve.png: {type(e).__name__}: {e}")

  def _stop_rating(self, reason: str) -> None:
    """Logs why the raters stopped the run and raises RatingStopped."""
    where = (
      f"; checkpoint at step {self.ckpt.latest_step()} in "
      f"{self.ckpt.directory}, continue with --config.resume=True"
      if self.ckpt and self.ckpt.latest_step() is not None
      else ""
    )
    message = f"rating stopped at step {self.env_steps}: {reason}{where}"
    self.log(message)
    raise sessions.RatingStopped(message)

  def _close(self) -> None:
    self.bar.close()
    if self.loop is not None:
      self.loop.close()
    if self.ckpt is not None:
      self.ckpt.close()
    if self.writer is not None:
      self.writer.close()


# -- log lines ---------------------------------------------------------------


def _fmt(x: Optional[float], width: int = 9, decimals: int = 3) -> str:
  """x as a fixed-point number, or "-" at the same width when there is
  nothing to show (a chunk in which no training episode ended)."""
  if x is None or not np.isfinite(x):
    return "-".rjust(width)
  return f"{x:{width}.{decimals}f}"


def eval_line(rec: Dict[str, Any], with_success: bool = True) -> str:
  """The log line of an evaluation record: mean return with its 95% CI over
  seeds and episodes, success rate (tasks that define success), the mean
  return of the training episodes that ended in the last chunk ("-" when
  none did), env steps per second and elapsed time."""
  ci = (
    f" [{rec['eval_return_lo']:.3f}, {rec['eval_return_hi']:.3f}]"
    if "eval_return_lo" in rec
    else ""
  )
  episodes = np.asarray(rec.get("eval_return_episodes", [[]]))
  line = (
    f"step {rec['env_steps']:>9d}  eval_return "
    f"{rec['eval_return']:9.3f}{ci} ({episodes.size} episodes)"
  )
  if with_success:
    line += f"  success {rec['eval_success']:.2f}"
  return (
    line + f"  train_return {_fmt(rec.get('train_return'))}  "
    f"sps {rec['env_steps_per_s']:7.0f}  t {rec['time']:6.1f}s"
  )


def feedback_line(rec: Dict[str, Any]) -> str:
  """The log line of a feedback session's record."""
  if rec.get("abandoned"):
    return (
      f"feedback {rec['session']:>3d} abandoned at step "
      f"{rec['env_steps']}: {rec['queries']} queries unanswered after "
      f"{rec['latency_seconds']:.1f}s"
    )
  late = (
    f" (requested at {rec['requested_at']}, answered in "
    f"{rec['latency_seconds']:.1f}s)"
    if rec["requested_at"] != rec["env_steps"]
    else ""
  )
  reasons = collections.Counter()
  for per_seed in rec.get("drop_reasons", []):
    reasons.update(per_seed)
  why = ", ".join(f"{k} {n}" for k, n in sorted(reasons.items()))
  cost = (
    f", {sum(rec['requests'])} requests, tokens "
    f"{sum(rec['prompt_tokens'])} in / {sum(rec['completion_tokens'])} out"
    if "prompt_tokens" in rec
    else ""
  )
  not_charged = (
    f", not charged {_counts(rec['not_charged'])}"
    if any(rec.get("not_charged", []))
    else ""
  )
  return (
    f"feedback {rec['session']:>3d} at step {rec['env_steps']}{late}: "
    f"sent {rec['queries_sent']} (dropped {_counts(rec['dropped'])}"
    f"{': ' + why if why else ''}{not_charged}){cost}, epochs "
    f"{_counts(rec['epochs'])}, acc {_seeds(rec['reward_accuracy'])} "
    f"(balanced {_seeds(rec['reward_balanced_accuracy'])}), corr(r_hat, r) "
    f"{_seeds(rec['reward_corr'])}"
    + (
      ""
      if rec["signal_corr"] == rec["reward_corr"]
      else f", corr(r_hat, rated) {_seeds(rec['signal_corr'])}"
    )
  )


def _counts(values: Any) -> str:
  """Per-seed counts [S] as _seeds shows them: whole numbers for one seed,
  a mean±std to one decimal for several."""
  return _seeds(values, 0 if np.size(values) == 1 else 1)


def _seeds(values: Any, decimals: int = 3) -> str:
  """Per-seed values [S] (or a scalar) as one number, or as their mean and
  standard deviation over seeds ("0.867±0.012") when there are several."""
  arr = np.atleast_1d(np.asarray(values, np.float64))
  if arr.size == 1:
    return f"{arr[0]:.{decimals}f}"
  finite = arr[np.isfinite(arr)]
  if not finite.size:
    return "nan"
  return f"{finite.mean():.{decimals}f}±{finite.std():.{decimals}f}"
