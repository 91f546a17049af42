"""A shared HTTP client for VLM services: bounded concurrency, retries,
a circuit breaker, and the pacing and request cap a run's clients share.

Every request has a total time limit (connecting, waiting and reading the
whole reply; a server that trickles bytes is cut off at it). Connection
errors, timeouts and HTTP 408, 429 and 5xx are retried up to
`max_retries` times after a capped exponential
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

Circuit breaker (one per client, i.e. per seed): after `breaker_failures`
queries in a row failed, or when more than `breaker_drop_rate` of a batch
of at least that many queries failed, the client stops sending the rest
of the batch, waits `breaker_pause` seconds and asks one failed query
again (a probe, one attempt) up to `breaker_probes` times; a probe counts
as a query asked again. An answered probe closes the breaker; if none is
answered the service counts as down: the client's `RunGuard` records why,
and from then on no client sharing that guard sends anything (their
queries fail as "stopped"). The run loop reads the reason and stops the
run (erljax.online.sessions).
"""

from __future__ import annotations

import collections
import json
import random
import re
import threading
import time
from typing import Any, Callable, Iterable, List, Mapping, Optional

import requests
import urllib3

from erljax.runtime import daemon
from erljax.raters.endpoint import redacted
from erljax.raters.failures import (
  HALT_STATUS,
  NOT_SENT,
  RETRY_STATUS,
  Counters,
  QueryFailed,
  RunGuard,
  daily_quota_exhausted,
  parse_retry_after,
  retry_delay,
)


class HttpClient:
  """POSTs JSON with retries; runs batches on a bounded thread pool.

  Args:
    timeout: seconds a request may take in all: connecting, waiting and
      reading the whole reply.
    max_retries: further attempts after the first (0: no retries).
    backoff_base, backoff_max: the n-th retry waits
      min(backoff_max, backoff_base * 2**n) times a jitter in [0.5, 1].
    max_wait: longest server-requested delay honoured; a longer one drops
      the query instead of blocking the run.
    concurrency: queries in flight at once.
    sleep: the function that waits (tests pass a recorder).
    seed: seeds the jitter.
    breaker_failures, breaker_drop_rate, breaker_pause, breaker_probes: the
      circuit breaker (module docstring).
    guard: the RunGuard shared with the run's other clients (None: its own,
      without cap or pacing).
    service: the service's base URL, for messages ("": the URL posted to);
      printed without user info or query.
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
    breaker_failures: int = 10,
    breaker_drop_rate: float = 0.5,
    breaker_pause: float = 30.0,
    breaker_probes: int = 3,
    guard: Optional[RunGuard] = None,
    service: str = "",
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
    if breaker_failures < 1 or breaker_probes < 1:
      raise ValueError(
        f"breaker_failures={breaker_failures} breaker_probes="
        f"{breaker_probes}: need both >= 1"
      )
    if not 0 < breaker_drop_rate <= 1 or breaker_pause < 0:
      raise ValueError(
        f"breaker_drop_rate={breaker_drop_rate} breaker_pause="
        f"{breaker_pause}: need a rate in (0, 1] and a pause >= 0"
      )
    self.timeout = float(timeout)
    self.max_retries = int(max_retries)
    self.backoff_base = float(backoff_base)
    self.backoff_max = float(backoff_max)
    self.max_wait = float(max_wait)
    self.concurrency = int(concurrency)
    self.sleep = sleep
    self.counters = counters or Counters()
    self.breaker_failures = int(breaker_failures)
    self.breaker_drop_rate = float(breaker_drop_rate)
    self.breaker_pause = float(breaker_pause)
    self.breaker_probes = int(breaker_probes)
    self.guard = guard or RunGuard()
    self.service = service
    self._rng = random.Random(seed)
    self._lock = threading.Lock()
    self._local = threading.local()
    self._halt: Optional[str] = None
    # The breaker: queries failed in a row (their reasons), whether it is
    # open (the rest of the batch is not sent), the last failure.
    self._in_a_row = 0
    self._reasons: collections.Counter = collections.Counter()
    self._open = False
    self._last: Optional[QueryFailed] = None
    self._last_url = ""

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
    try:
      reply = self._post(url, body, headers)
    except QueryFailed as e:
      self._failed(url, e)
      raise
    with self._lock:
      self._in_a_row = 0
      self._reasons.clear()
    return reply

  def _failed(self, url: str, e: QueryFailed) -> None:
    """Breaker bookkeeping of a failed request (after its retries); one
    not sent (breaker open, batch halted, run stopped) only fails its
    query."""
    self._local.failed = True
    if e.detail.startswith(NOT_SENT):
      return
    with self._lock:
      self._in_a_row += 1
      self._reasons[e.reason] += 1
      self._last, self._last_url = e, url
      if self._in_a_row >= self.breaker_failures:
        self._open = True

  def _check_may_send(self, probing: bool) -> None:
    """Raises QueryFailed (not sent) when the run stopped, the breaker is
    open or an earlier reply halted the batch; a probe passes the last
    two."""
    if self.guard.stop_reason:
      raise QueryFailed(
        "stopped", NOT_SENT + self.guard.stop_reason, outage=True
      )
    if self._open and not probing:
      raise QueryFailed(
        "service_down",
        f"{NOT_SENT}{self._in_a_row} queries in a row failed",
        outage=True,
      )
    if self._halt and not probing:
      raise QueryFailed(
        self._halt,
        f"{NOT_SENT}an earlier request showed "
        "that none can succeed in this batch",
        outage=True,
      )

  def _post(
    self,
    url: str,
    body: Mapping[str, Any],
    headers: Optional[Mapping[str, str]],
  ) -> Any:
    probing = getattr(self._local, "probing", False)
    attempts = 1 if probing else self.max_retries + 1
    for attempt in range(attempts):
      self._check_may_send(probing)
      self.guard.admit()
      self.counters.add("requests")
      wait = None
      try:
        status, resp_headers, data = self._send(url, body, headers)
      except requests.Timeout as e:
        reason, detail = "timeout", str(e)
      except (
        requests.ConnectionError,
        requests.exceptions.ChunkedEncodingError,
      ) as e:
        reason, detail = "connection", str(e)
      except requests.RequestException as e:
        raise QueryFailed("request_error", str(e), outage=True) from None
      else:
        text = data.decode("utf-8", "replace")
        if 200 <= status < 300:
          try:
            return json.loads(data)
          except ValueError:
            raise QueryFailed("bad_json", text[:200], outage=True) from None
        try:
          err = json.loads(data)
        except ValueError:
          err = None
        if 300 <= status < 400:
          self._halt = "redirect"
          raise QueryFailed(
            "redirect",
            f"HTTP {status} to "
            f"{redacted(resp_headers.get('Location', '?'))}: redirects are "
            "not followed, so that no key goes to another host; set "
            "rater.base_url to where the service is",
            outage=True,
          )
        reason, detail = f"http_{status}", text[:300]
        if status == 429 and daily_quota_exhausted(err):
          self._halt = "quota_daily"
          raise QueryFailed("quota_daily", detail, outage=True)
        if status in HALT_STATUS:
          self._halt = reason
          raise QueryFailed(reason, detail, outage=True)
        if status not in RETRY_STATUS and status < 500:
          raise QueryFailed(reason, detail, outage=True)
        wait = parse_retry_after(resp_headers.get("Retry-After"))
        if wait is None:
          wait = retry_delay(err)
      if attempt == attempts - 1:
        raise QueryFailed(reason, detail, outage=True)
      if wait is not None and wait > self.max_wait:
        raise QueryFailed(
          reason,
          f"server asks to wait {wait:.0f} s > max_wait {self.max_wait:.0f} s",
          outage=True,
        )
      self.counters.add("retries")
      self.sleep(self.backoff(attempt) if wait is None else wait)
    raise AssertionError("unreachable")

  def _send(
    self,
    url: str,
    body: Mapping[str, Any],
    headers: Optional[Mapping[str, str]],
  ) -> tuple:
    """(status, headers, body bytes) of one request, all within `timeout`
    seconds: the reply is streamed, and before each read the socket's
    timeout is cut to the time left, so a trickle cannot outlast it."""
    deadline = time.monotonic() + self.timeout
    resp = self._session().post(
      url,
      json=body,
      headers=dict(headers or {}),
      timeout=self.timeout,
      stream=True,
      allow_redirects=False,
    )
    try:
      chunks = []
      while True:
        left = deadline - time.monotonic()
        if left <= 0:
          raise requests.Timeout(
            f"no whole reply within the request's {self.timeout:g} s"
          )
        sock = getattr(resp.raw.connection, "sock", None)
        if sock is not None:
          sock.settimeout(left)
        try:
          chunk = resp.raw.read1(65536, decode_content=True)
        except urllib3.exceptions.ReadTimeoutError as e:
          raise requests.Timeout(str(e)) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
          raise requests.ConnectionError(str(e)) from None
        if not chunk:
          return resp.status_code, resp.headers, b"".join(chunks)
        chunks.append(chunk)
    finally:
      resp.close()

  def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> List[Any]:
    """[fn(x) for x in items] on up to `concurrency` threads, in order.

    Starts a new batch: a halt (daily quota, bad key) from an earlier batch
    is forgotten, so a later session tries once more. A batch that trips
    the breaker is probed before it returns (module docstring).
    """
    self._halt = None
    items = list(items)
    failed = [False] * len(items)

    def run(i: int) -> Any:
      self._local.failed = False
      out = fn(items[i])
      failed[i] = self._local.failed
      return out

    if self.concurrency == 1 or len(items) <= 1:
      results = [run(i) for i in range(len(items))]
    else:
      with daemon.DaemonExecutor(
        min(self.concurrency, len(items)), "http"
      ) as pool:
        results = list(pool.map(run, range(len(items))))
    many = len(items) >= self.breaker_failures
    if not any(failed):
      return results
    if self._open:
      with self._lock:
        why = f"{self._in_a_row} queries in a row failed"
      self._probe(run, results, failed, why)
    elif many and sum(failed) > self.breaker_drop_rate * len(items):
      why = f"{sum(failed)} of a batch's {len(items)} queries failed"
      self._probe(run, results, failed, why)
    return results

  def _probe(
    self,
    run: Callable[[int], Any],
    results: List[Any],
    failed: List[bool],
    why: str,
  ) -> None:
    """Asks a failed query of the batch again after each pause; an answer
    closes the breaker (and replaces the dropped one), none stops the run's
    clients (RunGuard.stop)."""
    i = failed.index(True)
    with self._lock:
      reasons = dict(self._reasons)
    for _ in range(self.breaker_probes):
      if self.guard.stop_reason:
        return
      self.sleep(self.breaker_pause)
      self._local.probing = True
      try:
        out = run(i)
      finally:
        self._local.probing = False
      if not failed[i]:
        results[i] = out
        with self._lock:
          self._open = False
        return
    last = self._last
    self.guard.stop(
      f"the rating service at {redacted(self.service or self._last_url)} "
      f"is down: "
      f"{why} ({_counts(reasons)}), and {self.breaker_probes} probe(s) "
      f"{self.breaker_pause:g} s apart failed; last error: {last.reason}: "
      f"{_scrub(last.detail)}"
    )


def _counts(counter: Mapping[str, int]) -> str:
  return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items()))


def _scrub(detail: str, keep: int = 200) -> str:
  """An error text fit to print: URLs' user info and query strings cut
  out, and only its last `keep` characters (where the cause is)."""
  detail = re.sub(r"//[^/\s@]*@", "//", detail)
  detail = re.sub(r"\?[^\s/)'\"]*", "", detail)
  return detail if len(detail) <= keep else "..." + detail[-keep:]
