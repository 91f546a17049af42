"""A thread-pool executor whose threads never keep the process alive.

concurrent.futures.ThreadPoolExecutor joins its threads when the
interpreter exits, so one rating call stuck on a dead service would hold a
finished (or interrupted) run forever. `DaemonExecutor` runs calls on
daemon threads, in submission order, and is otherwise used the same way
(submit, map, shutdown, a with-block).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable, List


class DaemonExecutor(concurrent.futures.Executor):
  """Up to `max_workers` daemon threads named `name_0`, `name_1`, ...
  (started with the first submit) take calls off one queue."""

  def __init__(self, max_workers: int, name: str = "worker"):
    if max_workers < 1:
      raise ValueError(f"max_workers={max_workers}: must be >= 1")
    self.max_workers = int(max_workers)
    self.name = name
    self._queue: queue.SimpleQueue = queue.SimpleQueue()
    self._threads: List[threading.Thread] = []
    self._lock = threading.Lock()
    self._shutdown = False

  def submit(
    self, fn: Callable[..., Any], /, *args, **kwargs
  ) -> concurrent.futures.Future:
    with self._lock:
      if self._shutdown:
        raise RuntimeError("cannot submit after shutdown")
      future: concurrent.futures.Future = concurrent.futures.Future()
      self._queue.put((future, fn, args, kwargs))
      while len(self._threads) < self.max_workers:
        t = threading.Thread(
          target=self._work,
          name=f"{self.name}_{len(self._threads)}",
          daemon=True,
        )
        t.start()
        self._threads.append(t)
      return future

  def _work(self) -> None:
    while True:
      item = self._queue.get()
      if item is None:
        return
      future, fn, args, kwargs = item
      if not future.set_running_or_notify_cancel():
        continue
      try:
        result = fn(*args, **kwargs)
      except BaseException as e:  # noqa: BLE001 (handed to the future)
        future.set_exception(e)
      else:
        future.set_result(result)

  def shutdown(self, wait: bool = True, *, cancel_futures: bool = False):
    with self._lock:
      self._shutdown = True
      if cancel_futures:
        while True:
          try:
            item = self._queue.get_nowait()
          except queue.Empty:
            break
          if item is not None:
            item[0].cancel()
      for _ in self._threads:
        self._queue.put(None)
    if wait:
      for t in self._threads:
        t.join()
