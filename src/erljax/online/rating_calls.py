"""The rating calls of a run's feedback sessions: one rater per seed, the
worker threads that call them, and their answers shared over processes.

Each seed's rater gets its own worker thread, so one rater is never called
twice at once and its answers come back in order. Over several processes
only process 0 asks (erljax.runtime.distributed); its answers reach every
process at completion. Inline (the reference's blocking schedule), a call is
made on the main thread when it is sent. Shapes: S seeds, Q queries, P segments
a query.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import ml_collections
import numpy as np

from erljax.config import defaults as config_lib
from erljax.runtime import daemon
from erljax.runtime import distributed
from erljax.rewards import queries as feedback_lib
from erljax.raters import api as raters_lib


def wait(
  futures: List[concurrent.futures.Future],
  timeout: Optional[float],
  stop: Callable[[], bool],
) -> bool:
  """Waits until all futures are done (True), `timeout` seconds passed
  (None: no limit) or stop() says so (False)."""
  deadline = None if timeout is None else time.perf_counter() + timeout
  while True:
    left = 0.1 if deadline is None else deadline - time.perf_counter()
    _, late = concurrent.futures.wait(futures, timeout=max(0.0, min(0.1, left)))
    if not late:
      return True
    if left <= 0 or stop():
      return False


def make_raters(
  c: ml_collections.ConfigDict,
  task_name: str,
  num_classes: int,
  seeds: List[int],
) -> List[Any]:
  """One rater per seed (c.rater), sharing one guard: a request cap and
  pacing for the whole run."""
  guard = raters_lib.run_guard(c.rater)
  return [
    raters_lib.make(
      c.rater,
      task_name,
      num_classes,
      1_000_003 * s + 7,
      segment_length=c.feedback.segment_length,
      guard=guard,
      cache_dir=config_lib.reply_cache_dir(c),
    )
    for s in seeds
  ]


class RatingCalls:
  """The S seeds' raters and how they are called.

  inline: calls are made when sent (`asynchronous=False`, or no rater is
  `remote`: the scripted rater answers from memory); needs_frames: some
  rater looks at the queries' frames.
  """

  def __init__(self, raters: List[Any], asynchronous: bool):
    self.raters = raters
    self.inline = not (
      asynchronous and any(getattr(r, "remote", True) for r in raters)
    )
    self.needs_frames = any(getattr(r, "needs_frames", False) for r in raters)
    self.primary = distributed.is_primary()
    self._workers: List[daemon.DaemonExecutor] = []

  def send(
    self,
    true_return: np.ndarray,
    frames: Optional[np.ndarray],
    answered_times: List[float],
  ) -> List[concurrent.futures.Future]:
    """Each seed's call feedback.ask(rater, true_return [Q, P], frames
    [Q, P, h, w, 3] or None), one future per seed -> raters.Ratings;
    perf_counter() is appended to `answered_times` as each is answered."""
    futures = []
    for s, rater in enumerate(self.raters):
      args = (rater, true_return[s], None if frames is None else frames[s])
      if not self.primary:  # process 0's answers arrive at completion
        future = concurrent.futures.Future()
        future.set_result(None)
      elif self.inline:
        future = concurrent.futures.Future()
        future.set_result(feedback_lib.ask(*args))
      else:
        future = self._worker(s).submit(feedback_lib.ask, *args)
      future.add_done_callback(
        lambda _, t=answered_times: t.append(time.perf_counter())
      )
      futures.append(future)
    return futures

  def answered(self, futures: List[concurrent.futures.Future]) -> bool:
    """Whether every seed has its answers (process 0's view)."""
    return bool(
      distributed.from_primary(np.asarray(all(f.done() for f in futures)))
    )

  def ratings(
    self, futures: List[concurrent.futures.Future], num_queries: int
  ) -> List[raters_lib.Ratings]:
    """Each seed's answers, process 0's on every process (the labels [Q]
    and answered [Q] from which the stored and dropped counts follow)."""
    got = [f.result() for f in futures]
    if jax.process_count() == 1:
      return got
    shape = (len(got), num_queries)
    labels, answered = distributed.from_primary(
      (
        np.stack([r.labels for r in got]).astype(np.int32)
        if self.primary
        else np.zeros(shape, np.int32),
        np.stack([r.answered for r in got])
        if self.primary
        else np.zeros(shape, bool),
      )
    )
    return [  # the counts stay on process 0, which writes the records
      raters_lib.Ratings(
        labels=lab, answered=ans, counts=getattr(g, "counts", None)
      )
      for lab, ans, g in zip(labels, answered, got)
    ]

  def stats(self) -> List[Dict[str, Any]]:
    """A VLM's counts so far (requests, retries, drop reasons, ...) for
    each rater that keeps them."""
    return [r.stats() for r in self.raters if hasattr(r, "stats")]

  def stop_reason(self) -> Optional[str]:
    """Why the raters cannot go on, or None; the same on every process
    (process 0's raters decide)."""
    reasons = [getattr(r, "stop_reason", None) for r in self.raters]
    reason = next((r for r in reasons if r), None)
    if not distributed.from_primary(np.asarray(reason is not None)):
      return None
    return reason or "process 0's raters stopped (its log says why)"

  def state_dict(self) -> List[Dict[str, Any]]:
    """Each rater's state; a rater without state (e.g. a cached VLM client,
    whose cache is on disk) contributes {}; never API keys."""
    return [
      r.state_dict() if hasattr(r, "state_dict") else {} for r in self.raters
    ]

  def load_state_dict(self, states: List[Dict[str, Any]]) -> None:
    """Inverse of `state_dict`."""
    if len(states) != len(self.raters):
      raise ValueError(
        f"checkpoint has {len(states)} raters, this run {len(self.raters)}"
      )
    for rater, rd in zip(self.raters, states):
      if hasattr(rater, "load_state_dict"):
        rater.load_state_dict(rd)

  def close(self) -> None:
    """Lets the worker threads go (calls still running finish on their
    own)."""
    for w in self._workers:
      w.shutdown(wait=False, cancel_futures=True)
    self._workers = []

  def _worker(self, seed_index: int) -> daemon.DaemonExecutor:
    while len(self._workers) <= seed_index:
      self._workers.append(
        daemon.DaemonExecutor(1, f"rater{len(self._workers)}")
      )
    return self._workers[seed_index]
