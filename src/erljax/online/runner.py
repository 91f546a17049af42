"""Online runs: SAC on the true or a learned reward, as a run-loop mode.

`run(config)` trains `config.num_seeds` seeds at once. This module gives
erljax.loop.run_loop its step: a compiled chunk (erljax.online.trainer), the
evaluation of every seed and, with a learned reward, the rating sessions between
chunks (erljax.online.sessions). The loop evaluates every `eval_every` env
steps, writes metrics (erljax.io.metrics) and checkpoints
(erljax.io.checkpoint), and stops cleanly on SIGINT / SIGTERM.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from erljax.runtime import distributed
from erljax.vision import media
from erljax.runtime import memory
from erljax.io import curves as plots
from erljax.loop import run_loop
from erljax.online import sessions
from erljax.runtime import sharding
from erljax.online import trainer as trainer_lib
from erljax.runtime import precision

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
  (erljax.io.metrics) and checkpoints (erljax.io.checkpoint); SIGINT/SIGTERM
  save a checkpoint at the next chunk boundary and return early
  (RunResult.interrupted), `config.resume` continues from the latest one.

  Over several processes (config.distributed, erljax.runtime.distributed) every
  process calls this with the same config and gets the same result; only
  process 0 logs, asks the raters and writes workdir's files.
  """
  distributed.initialize(config)
  trainer = trainer or trainer_lib.Trainer.create(config)
  # Every program the run traces computes its products at this precision.
  with precision.scope(trainer.config.matmul_precision):
    return _Run(trainer, log, raters).train()


def _to_host(tree) -> Dict[str, Any]:
  return {k: v.tolist() for k, v in distributed.to_host(tree).items()}


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


class _Run:
  """The online mode of the run loop (erljax.loop.run_loop): SAC chunks, the
  evaluation of every seed and, with a learned reward, the rating sessions
  between chunks.

  state: the TrainState of all seeds (leaves [S, ...]); eval_keys [S];
  feedback: the rating sessions (None with the true reward); run: the loop.
  """

  def __init__(
    self, trainer: trainer_lib.Trainer, log: Log, raters: Optional[List[Any]]
  ):
    self.trainer = trainer
    c = self.config = trainer.config
    self.seeds = list(range(c.seed, c.seed + c.num_seeds))
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(self.seeds))
    self.eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    # The trace `compiled` lowers below: init is traced once.
    shapes = trainer_lib.traced_init(trainer, keys).out_info
    # Fails on a bad workdir before anything is compiled.
    self.run = run_loop.Loop.open(c, self.seeds, shapes, log)
    log = self.log = self.run.log
    log(
      memory.startup_line(
        memory.estimate(c, shapes), *memory.available(), c.num_devices
      )
    )
    # The run's device layout, built once: the state, the eval keys and
    # the reward minibatches of the feedback sessions are laid out by it.
    self.layout = sharding.Layout.create(c.num_devices, c.num_seeds, c.num_envs)
    self.feedback = (
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

  def mode(self) -> run_loop.Mode:
    c = self.config
    return run_loop.Mode(
      total_steps=c.total_steps,
      chunk_steps=c.log_every,
      eval_every=c.eval_every,
      train=self._train,
      evaluate=self._evaluate,
      eval_fields=lambda step, t: {
        "time": t,
        "env_steps_per_s": step / t if t > 0 else 0.0,
      },
      eval_line=lambda rec: eval_line(rec, self.trainer.env.task.has_success),
      state=self._snapshot,
      load=self._load,
      unchecked=("train_return",),
      extras=run_loop.Extras(
        after_chunk=self._after_chunk,
        before_save=self._before_save,
        finish=self._finish,
        stop=self._stop_rating,
        after_eval=self._after_eval,
        close=self.feedback.close if self.feedback else lambda: None,
      ),
    )

  def train(self) -> RunResult:
    """Runs the loop, then the final video and workdir/curve.png."""
    c = self.config
    done = self.run.run(self.mode())
    if c.workdir and c.render.rollout_video and done.interrupted is None:
      video = os.path.join(c.workdir, "rollout.gif")
      if _rollout_video(
        self.trainer, self.state, self.eval_keys, video, self.log
      ):
        self.log(f"video: {video}")
    if c.workdir and self.run.primary:
      self._plot(done.evals())
    return RunResult(
      history=done.evals(),
      state=self.state,
      compile_seconds=self.compile_seconds,
      train_seconds=done.train_seconds,
      feedback=[
        {k: v for k, v in r.items() if k != "kind"}
        for r in done.records
        if r["kind"] == "feedback"
      ],
      interrupted=done.interrupted,
    )

  # -- the mode's step --------------------------------------------------------

  def _snapshot(self) -> Dict[str, Any]:
    return {
      "train": self.state,
      "eval_keys": self.eval_keys,
      "loop": self.feedback.state_dict() if self.feedback else {},
    }

  def _load(self, tree: Dict[str, Any]) -> None:
    self.state = self.layout.put_state(tree["train"])
    self.eval_keys = self.layout.put_seeded(tree["eval_keys"])
    if self.feedback is not None:
      self.feedback.load_state_dict(tree["loop"])

  def _train(self, step: int) -> Dict[str, Any]:
    # In place after feedback sessions.
    state = self.layout.put_state(self.state)
    if self.feedback is not None:
      unsupervised = jnp.asarray(self.feedback.unsupervised(step))
      state, m = self.programs.chunk(state, unsupervised)
    else:
      state, m = self.programs.chunk(state)
    self.state = state
    return _to_host(m)

  def _evaluate(self, step: int) -> Dict[str, Any]:
    self.eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(
      self.eval_keys
    )
    return _to_host(self.programs.evaluate(self.state, self.eval_keys))

  def _after_eval(self, rec: Dict[str, Any]) -> None:
    """A video every render.video_every evaluations (with a workdir)."""
    c = self.config
    every = c.render.video_every if c.workdir else 0
    evals = sum(r["kind"] == "eval" for r in self.run.records)
    if every and evals % every == 0:
      step = rec["env_steps"]
      video = os.path.join(c.workdir, "videos", f"step_{step:09d}.gif")
      if _rollout_video(
        self.trainer, self.state, self.eval_keys, video, self.log
      ):
        self.log(f"video: {video}")

  # -- rating sessions between chunks -----------------------------------------

  def _after_chunk(self, step: int) -> Optional[str]:
    if self.feedback is None:
      return None
    self.state, recs = self.feedback.step(self.state, step)
    self._report_feedback(recs)
    return self.feedback.stop_reason()

  def _before_save(self, step: int, signalled: bool) -> None:
    """Ratings in flight are paid for: a checkpoint waits for them (at most
    feedback.drain_wait_s, not after a signal) so that a resumed run never
    asks for them again."""
    if self.feedback is None:
      return
    self.state, recs = self.feedback.drain(
      self.state,
      step,
      timeout=0.0 if signalled else -1.0,
      stop=self.run.stop_requested,
    )
    self._report_feedback(recs)

  def _finish(self, step: int) -> Optional[str]:
    if self.feedback is None:
      return None
    self.state, recs = self.feedback.finish(
      self.state, step, stop=self.run.stop_requested
    )
    self._report_feedback(recs)
    return self.feedback.stop_reason()

  def _report_feedback(self, recs: List[Dict[str, Any]]) -> None:
    for rec in recs:
      self.run.write({"kind": "feedback", **rec})
      if rec.get("trained"):
        self.run.check_finite(
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
      self.run.line(feedback_line(rec))

  def _stop_rating(self, reason: str) -> None:
    """Logs why the raters stopped the run and raises RatingStopped."""
    message = (
      f"rating stopped at step {self.run.step}: {reason}"
      f"{self.run.resume_hint()}"
    )
    self.log(message)
    raise sessions.RatingStopped(message)

  def _plot(self, evals: List[Dict[str, Any]]) -> None:
    """workdir/curve.png (erljax.plots); a failure is a warning line."""
    c = self.config
    title = f"{c.task}, {c.method}, {c.num_seeds} seed(s)"
    try:
      plots.learning_curve(evals, os.path.join(c.workdir, "curve.png"), title)
    except Exception as e:  # pylint: disable=broad-except
      self.log(f"warning: no curve.png: {type(e).__name__}: {e}")


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
