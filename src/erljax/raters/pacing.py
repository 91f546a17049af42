"""Requests-per-minute pacing shared by every client on a machine.

`RateLimiter(per_minute, path)` spaces requests at least 60 / per_minute
seconds apart, over all threads and all processes that use the same
`path`: the time the next request may go lives in that small file, read
and advanced under an exclusive `fcntl.flock`, and each caller then sleeps
until its reserved time (outside the lock). So no window of a minute ever
holds more than `per_minute` requests, however many seeds, clients and
runs share the service. `limiter_path(dir, base_url)` names one file per
service (scheme, host and port), so raters of different services do not
slow each other down.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import time
import urllib.parse
from typing import Callable

# A reservation further ahead than this many intervals is taken as a stale
# file (e.g. a clock set back) and restarted from now.
_MAX_AHEAD = 1000


def default_dir() -> str:
  """$XDG_CACHE_HOME/erljax/limits (default ~/.cache/erljax/limits)."""
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return os.path.join(cache, "erljax", "limits")


def limiter_path(directory: str, base_url: str) -> str:
  """The file of the service at base_url (by scheme, host and port)."""
  u = urllib.parse.urlsplit(base_url)
  service = f"{u.scheme}://{u.hostname}:{u.port or ''}"
  name = hashlib.sha256(service.encode("utf-8")).hexdigest()[:16]
  return os.path.join(directory or default_dir(), f"rpm-{name}.json")


class RateLimiter:
  """At most `per_minute` requests a minute through `path` (see module)."""

  def __init__(
    self,
    per_minute: float,
    path: str,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
  ):
    if not per_minute > 0:
      raise ValueError(f"per_minute={per_minute}: must be > 0")
    self.interval = 60.0 / float(per_minute)
    self.path = os.path.abspath(os.path.expanduser(path))
    self.clock = clock
    self.sleep = sleep
    os.makedirs(os.path.dirname(self.path), exist_ok=True)

  def reserve(self) -> float:
    """Reserves the next free time slot; returns it (clock seconds)."""
    with open(self.path, "a+", encoding="utf-8") as f:
      fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
      f.seek(0)
      try:
        slot = float(json.loads(f.read())["next"])
      except (ValueError, KeyError, TypeError):
        slot = 0.0
      now = self.clock()
      if not math.isfinite(slot) or slot > now + _MAX_AHEAD * self.interval:
        slot = now
      slot = max(now, slot)
      f.seek(0)
      f.truncate()
      f.write(json.dumps({"next": slot + self.interval}))
      f.flush()
    return slot

  def acquire(self) -> float:
    """Waits for this request's turn; returns the seconds waited."""
    wait = max(0.0, self.reserve() - self.clock())
    if wait > 0:
      self.sleep(wait)
    return wait
