"""A shared HTTP client for VLM services: bounded concurrency, retries.

Every request has a timeout. Connection errors, timeouts and HTTP 408, 429
and 5xx are retried up to `max_retries` times after a capped exponential
backoff with jitter, or after the delay the server asks for (a Retry-After
header in seconds or as an HTTP date, or Gemini's RetryInfo `retryDelay` in
the error details). Other 4xx are not retried, nor is an exhausted daily
quota (Gemini RESOURCE_EXHAUSTED naming a per-day quota): that one, and
401/403 (a bad key), also stop the rest of the current batch from being
sent. A query that still fails raises `QueryFailed(reason)`; the rater
drops and counts it and never turns it into a label.

Redirects are not followed (requests would carry custom key headers such as
Gemini's `x-goog-api-key` to the new host): a 3xx reply drops the query as
"redirect", names where it pointed, and stops the rest of the batch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime
import email.utils
import random
import re
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import requests

from erljax.raters.endpoint import redacted

RETRY_STATUS = frozenset({408, 429})
HALT_STATUS = frozenset({401, 403})


class QueryFailed(Exception):
  """A query got no usable reply; `reason` is a short drop-reason key."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


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


class HttpClient:
  """POSTs JSON with retries; runs batches on a bounded thread pool.

  Args:
    timeout: seconds allowed for connecting and for each read.
    max_retries: further attempts after the first (0: no retries).
    backoff_base, backoff_max: the n-th retry waits
      min(backoff_max, backoff_base * 2**n) times a jitter in [0.5, 1].
    max_wait: longest server-requested delay honoured; a longer one drops
      the query instead of blocking the run.
    concurrency: queries in flight at once.
    sleep: the function that waits (tests pass a recorder).
    seed: seeds the jitter.
  """

  def __init__(
    self,
    timeout: float = 60.0,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    backoff_max: float = 60.0,
    max_wait: float = 300.0,
    concurrency: int = 8,
    sleep: Callable[[float], None] = time.sleep,
    counters: Optional[Counters] = None,
    seed: int = 0,
  ):
    if not timeout > 0:
      raise ValueError(f"timeout={timeout}: must be > 0")
    if max_retries < 0:
      raise ValueError(f"max_retries={max_retries}: must be >= 0")
    if concurrency < 1:
      raise ValueError(f"concurrency={concurrency}: must be >= 1")
    if not 0 < backoff_base <= backoff_max:
      raise ValueError(
        f"backoff_base={backoff_base} backoff_max="
        f"{backoff_max}: need 0 < base <= max"
      )
    self.timeout = float(timeout)
    self.max_retries = int(max_retries)
    self.backoff_base = float(backoff_base)
    self.backoff_max = float(backoff_max)
    self.max_wait = float(max_wait)
    self.concurrency = int(concurrency)
    self.sleep = sleep
    self.counters = counters or Counters()
    self._rng = random.Random(seed)
    self._lock = threading.Lock()
    self._local = threading.local()
    self._halt: Optional[str] = None

  def _session(self) -> requests.Session:
    session = getattr(self._local, "session", None)
    if session is None:
      session = self._local.session = requests.Session()
    return session

  def backoff(self, attempt: int) -> float:
    with self._lock:
      jitter = 0.5 + 0.5 * self._rng.random()
    return min(self.backoff_max, self.backoff_base * 2.0**attempt) * jitter

  def post(
    self,
    url: str,
    body: Mapping[str, Any],
    headers: Optional[Mapping[str, str]] = None,
  ) -> Any:
    """The decoded JSON reply, or raises QueryFailed after the retries."""
    for attempt in range(self.max_retries + 1):
      if self._halt:
        raise QueryFailed(
          self._halt,
          "not sent: an earlier request showed "
          "that none can succeed in this batch",
        )
      self.counters.add("requests")
      wait = None
      try:
        resp = self._session().post(
          url,
          json=body,
          headers=dict(headers or {}),
          timeout=self.timeout,
          allow_redirects=False,
        )
      except requests.Timeout as e:
        reason, detail = "timeout", str(e)
      except (
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
      ) as e:
        reason, detail = "connection", str(e)
      except requests.RequestException as e:
        raise QueryFailed("request_error", str(e)) from None
      else:
        if 200 <= resp.status_code < 300:
          try:
            return resp.json()
          except ValueError:
            raise QueryFailed("bad_json", resp.text[:200]) from None
        try:
          err = resp.json()
        except ValueError:
          err = None
        status = resp.status_code
        if 300 <= status < 400:
          self._halt = "redirect"
          raise QueryFailed(
            "redirect",
            f"HTTP {status} to "
            f"{redacted(resp.headers.get('Location', '?'))}: redirects are "
            "not followed, so that no key goes to another host; set "
            "rater.base_url to where the service is",
          )
        reason, detail = f"http_{status}", resp.text[:300]
        if status == 429 and daily_quota_exhausted(err):
          self._halt = "quota_daily"
          raise QueryFailed("quota_daily", detail)
        if status in HALT_STATUS:
          self._halt = reason
          raise QueryFailed(reason, detail)
        if status not in RETRY_STATUS and status < 500:
          raise QueryFailed(reason, detail)
        wait = parse_retry_after(resp.headers.get("Retry-After"))
        if wait is None:
          wait = retry_delay(err)
      if attempt == self.max_retries:
        raise QueryFailed(reason, detail)
      if wait is not None and wait > self.max_wait:
        raise QueryFailed(
          reason,
          f"server asks to wait {wait:.0f} s > max_wait {self.max_wait:.0f} s",
        )
      self.counters.add("retries")
      self.sleep(self.backoff(attempt) if wait is None else wait)
    raise AssertionError("unreachable")

  def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> List[Any]:
    """[fn(x) for x in items] on up to `concurrency` threads, in order.

    Starts a new batch: a halt (daily quota, bad key) from an earlier batch
    is forgotten, so a later session tries once more.
    """
    self._halt = None
    items = list(items)
    if self.concurrency == 1 or len(items) <= 1:
      return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(
      min(self.concurrency, len(items))
    ) as pool:
      return list(pool.map(fn, items))
