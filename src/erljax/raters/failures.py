"""How a VLM request fails, and how a run counts and limits its requests.

`QueryFailed(reason)`: a query that got no usable reply (the rater drops
and counts it, never a label). `RunGuard`: what every client of a run
shares: the stop reason once the service is down, the request cap and the
rate limiter. `Counters`: requests, retries, drops by reason. The retry
hints of an error reply: Retry-After (seconds or an HTTP date), Gemini's
RetryInfo `retryDelay`, and its exhausted daily quota.
"""

from __future__ import annotations

import collections
import datetime
import email.utils
import re
import threading
import time
from typing import Any, Dict, List, Mapping, Optional

from erljax.raters.pacing import RateLimiter

RETRY_STATUS = frozenset({408, 429})


NOT_SENT = "not sent: "  # detail of a failure without a request


HALT_STATUS = frozenset({401, 403})


class QueryFailed(Exception):
  """A query got no usable reply; `reason` is a short drop-reason key.

  outage: the service gave no reply (connection, timeout, HTTP error, the
  breaker or the run's request cap), as opposed to a reply that was no
  answer. Outage drops are not charged to feedback.budget.
  """

  def __init__(self, reason: str, detail: str = "", outage: bool = False):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail
    self.outage = outage


class RunGuard:
  """What all of a run's HTTP clients share: the cap on HTTP requests
  (`max_requests`, 0: none), the requests-per-minute pacing (a
  pacing.RateLimiter or None) and the reason the run must stop (the first
  one recorded: a service that stayed down, the cap reached)."""

  def __init__(
    self, max_requests: int = 0, limiter: Optional[RateLimiter] = None
  ):
    if max_requests < 0:
      raise ValueError(f"max_requests={max_requests}: must be >= 0")
    self.max_requests = int(max_requests)
    self.limiter = limiter
    self.requests = 0
    self._lock = threading.Lock()
    self._stop: Optional[str] = None

  @property
  def stop_reason(self) -> Optional[str]:
    return self._stop

  def stop(self, reason: str) -> None:
    with self._lock:
      if self._stop is None:
        self._stop = reason

  def admit(self) -> None:
    """Counts one HTTP request about to be sent and waits for its turn;
    raises QueryFailed("stopped") once the run must stop or the cap is
    reached (which then becomes the stop reason)."""
    with self._lock:
      if self._stop is None and 0 < self.max_requests <= self.requests:
        self._stop = (
          f"rater.max_requests={self.max_requests} reached: the run sent "
          f"{self.requests} HTTP requests to the rating service"
        )
      if self._stop is not None:
        raise QueryFailed("stopped", NOT_SENT + self._stop, outage=True)
      self.requests += 1
    if self.limiter is not None:
      self.limiter.acquire()


class Counters:
  """Thread-safe counts of what a rater did.

  queries: queries asked (rate: one per segment; prefer: one per pair).
  sent: queries that went to the service (not answered from the cache,
    not skipped as identical pairs or replay misses).
  requests: HTTP requests sent (retries and both stages included).
  retries: requests repeated after a retryable failure.
  answered / dropped: queries that got a label / did not.
  cache_hits: queries answered from the cache.
  prompt_tokens / completion_tokens: tokens the service reported using
    (its usage fields) over every reply it sent, dropped ones included.
  drop_reasons: reason -> count of dropped queries.
  """

  FIELDS = (
    "queries",
    "sent",
    "requests",
    "retries",
    "answered",
    "dropped",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
  )

  def __init__(self):
    self._lock = threading.Lock()
    self._counts = dict.fromkeys(self.FIELDS, 0)
    self._reasons: collections.Counter = collections.Counter()

  def add(self, field: str, n: int = 1) -> None:
    if field not in self._counts:
      raise KeyError(f"unknown counter {field!r}")
    with self._lock:
      self._counts[field] += n

  def drop(self, reason: str) -> None:
    with self._lock:
      self._counts["dropped"] += 1
      self._reasons[reason] += 1

  def snapshot(self) -> Dict[str, Any]:
    with self._lock:
      return {**self._counts, "drop_reasons": dict(self._reasons)}

  def __getitem__(self, field: str) -> int:
    with self._lock:
      return self._counts[field]

  @staticmethod
  def since(before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Any]:
    """What the counts moved by between two snapshots."""
    reasons = collections.Counter(after["drop_reasons"])
    reasons.subtract(before["drop_reasons"])
    return {
      **{k: after[k] - before[k] for k in Counters.FIELDS},
      "drop_reasons": {k: n for k, n in sorted(reasons.items()) if n},
    }


def parse_retry_after(
  value: Optional[str], now: Optional[float] = None
) -> Optional[float]:
  """Seconds to wait from a Retry-After header (seconds or HTTP date)."""
  if value is None:
    return None
  value = value.strip()
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return None
  if when is None:
    return None
  if when.tzinfo is None:
    when = when.replace(tzinfo=datetime.timezone.utc)
  now = time.time() if now is None else now
  return max(0.0, when.timestamp() - now)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _error_details(body: Any) -> List[Mapping[str, Any]]:
  """The google.rpc details of an error body ({"error": {...}} or a list)."""
  if isinstance(body, list) and body:
    body = body[0]
  if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
    return []
  details = body["error"].get("details")
  return (
    [d for d in details if isinstance(d, dict)]
    if isinstance(details, list)
    else []
  )


def retry_delay(body: Any) -> Optional[float]:
  """Gemini's RetryInfo retryDelay ("36s", "1.5s") in seconds, if any."""
  for d in _error_details(body):
    m = _DURATION.match(str(d.get("retryDelay", "")))
    if m:
      return float(m.group(1))
  return None


def daily_quota_exhausted(body: Any) -> bool:
  """True for a RESOURCE_EXHAUSTED error that names a per-day quota."""
  if isinstance(body, list) and body:
    body = body[0]
  if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
    return False
  if body["error"].get("status") != "RESOURCE_EXHAUSTED":
    return False
  for d in _error_details(body):
    texts = []
    for v in d.get("violations") or []:
      if isinstance(v, dict):
        texts += [
          str(v.get(k, "")) for k in ("quotaId", "quotaMetric", "description")
        ]
    meta = d.get("metadata")
    if isinstance(meta, dict):
      texts += [str(v) for v in meta.values()]
    if any(re.search(r"per\s*day", t, re.I) for t in texts):
      return True
  return False
