"""A rating service that is down, slow or trickling is noticed: each request
has a total time limit, a circuit breaker stops a run whose service stays
down, dropped queries are not charged to the budget, waits for answers are
bounded and cut short by a signal, and rating threads never keep the
process alive. Local HTTP servers on 127.0.0.1; each test a few seconds."""

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from erljax import config as config_lib
from erljax import raters
from erljax import sessions
from erljax.raters import Ratings
from erljax.raters.http import HttpClient, QueryFailed, RunGuard
from test_async_feedback import QUERIES, Driver, GatedRater, compiled  # noqa: F401
from test_http_raters import (
  CLOSE,
  _no_sleep,
  _openai_reply,
  _queries,
  serve,  # noqa: F401
)


def _rater(kind, url, sleeps=None, guard=None, **overrides):
  """test_http_raters' rater, sharing `guard` (a RunGuard)."""
  c = config_lib.default()
  c.rater.kind = kind
  c.rater.model = "test-model"
  c.rater.base_url = url
  for k, v in overrides.items():
    c.rater[k] = v
  config_lib.validate(c)
  sleep = sleeps.append if sleeps is not None else _no_sleep
  return raters.make(c.rater, "reacher", 3, seed=3, sleep=sleep, guard=guard)


def _closed_port() -> int:
  """A local port nothing listens on (connections are refused)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_a_trickling_reply_is_cut_at_the_total_time_limit():
  """One byte every 50 ms never trips a per-read timeout of 0.5 s; the
  request's total limit ends it. (Before: the client waited for the whole
  trickle, here 3 s, and then read a label from it.)"""
  body = b'{"choices": [{"message": {"content": "Good"}}]}'
  body = body + b" " * 60  # 108 bytes: 5.4 s at one byte per 50 ms
  srv = socket.socket()
  srv.bind(("127.0.0.1", 0))
  srv.listen(4)
  srv.settimeout(5)
  done = threading.Event()

  def trickle():
    try:
      conn, _ = srv.accept()
    except OSError:
      return
    with conn:
      conn.recv(65536)
      conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
      )
      t_end = time.monotonic() + 3.0  # the server gives up after 3 s
      for b in body:
        if done.is_set() or time.monotonic() > t_end:
          return
        try:
          conn.sendall(bytes([b]))
        except OSError:
          return
        time.sleep(0.05)

  t = threading.Thread(target=trickle, daemon=True)
  t.start()
  client = HttpClient(timeout=0.5, max_retries=0)
  t0 = time.monotonic()
  try:
    with pytest.raises(QueryFailed) as e:
      client.post(f"http://127.0.0.1:{srv.getsockname()[1]}/x", {})
    elapsed = time.monotonic() - t0
  finally:
    done.set()
    srv.close()
    t.join(5)
  assert e.value.reason == "timeout" and e.value.outage
  assert elapsed < 1.2, elapsed


def test_breaker_probes_then_stops_all_clients_with_a_clear_message():
  """K consecutive failed queries trip the breaker: the rest of the batch
  is not sent, it pauses and probes, and a service still down stops every
  client that shares the run's guard, naming the URL without credentials.
  (Before: every query was tried with all its retries, and nothing
  stopped.)"""
  port = _closed_port()
  guard = RunGuard()
  sleeps = []
  rater = _rater(
    "openai",
    f"http://user:pw@127.0.0.1:{port}/v1?k=v",
    sleeps,
    two_stage=False,
    max_retries=1,
    concurrency=1,
    breaker_failures=3,
    breaker_pause=7.0,
    breaker_probes=2,
    guard=guard,
  )
  got = rater.rate(_queries(list(range(8))))
  assert not got.answered.any()
  s = rater.stats()
  # 3 queries x 2 attempts, then 2 probes of one attempt (each a query
  # asked again, dropped again); 5 never sent.
  assert s["requests"] == 8 and s["queries"] == 10
  assert s["drop_reasons"] == {"connection": 5, "service_down": 5}
  assert sleeps.count(7.0) == 2
  msg = guard.stop_reason
  assert msg and f"http://127.0.0.1:{port}/v1" in msg
  assert "user" not in msg and "pw" not in msg and "k=v" not in msg
  assert "3 queries in a row" in msg and "connection" in msg
  other = _rater(
    "openai", f"http://127.0.0.1:{port}/v1", guard=guard, two_stage=False
  )
  assert other.rate(_queries([1])).labels.tolist() == [-1]
  assert other.stats()["requests"] == 0  # stopped: nothing is sent


def test_breaker_recovers_when_a_probe_is_answered(serve):  # noqa: F811
  """A probe that gets an answer closes the breaker, and its answer is the
  probed query's label; the run goes on."""
  state = {"down": True}

  def handle(server, req):
    return CLOSE if state["down"] else _openai_reply("Good")

  server = serve(handle)
  guard = RunGuard()

  def sleep(seconds):
    state["down"] = False  # the service is back after the pause

  rater = _rater(
    "openai",
    server.url,
    two_stage=False,
    max_retries=0,
    concurrency=1,
    breaker_failures=2,
    guard=guard,
  )
  rater.client.sleep = sleep
  got = rater.rate(_queries([1, 2, 3, 4]))
  assert got.labels.tolist() == [2, -1, -1, -1]
  assert guard.stop_reason is None
  assert rater.rate(_queries([5])).labels.tolist() == [2]


def test_a_high_drop_rate_in_a_session_probes(serve):  # noqa: F811
  """More than breaker_drop_rate of a session's queries failing (never K
  in a row) pauses and probes too."""
  n = [0]

  def handle(server, req):
    n[0] += 1
    return _openai_reply("Bad") if n[0] % 3 == 0 else CLOSE

  server = serve(handle)
  sleeps = []
  guard = RunGuard()
  rater = _rater(
    "openai",
    server.url,
    sleeps,
    two_stage=False,
    max_retries=0,
    concurrency=1,
    breaker_failures=3,
    breaker_drop_rate=0.5,
    breaker_pause=1.0,
    breaker_probes=1,
    guard=guard,
  )
  got = rater.rate(_queries(list(range(6))))
  # q0, q1 fail, q2 answered, q3, q4 fail, q5 answered: 4/6 > 0.5; the
  # probe (q0 again, request 7) fails: the service counts as down.
  assert got.answered.tolist() == [False, False, True, False, False, True]
  assert sleeps == [1.0]
  assert guard.stop_reason is not None


class OutageRater(GatedRater):
  """Answers the even-numbered queries once the gate is open; the odd ones
  are dropped as a service failure (outage), never answered."""

  def rate(self, queries):
    r = super().rate(queries)
    return Ratings(labels=r.labels, answered=r.answered, outage=~r.answered)


def test_dropped_queries_are_not_charged_to_the_budget(compiled):  # noqa: F811
  """Only answered queries spend feedback.budget: a session whose half
  failed leaves that half of its queries in the budget. (Before: all
  QUERIES were charged.)"""
  c, trainer, _ = compiled
  rater = OutageRater(*trainer.rated.rated_range)
  rater.gate.set()
  d = Driver(compiled, [rater])
  recs = []
  while not recs:
    recs = d.advance()
  assert recs[0]["answered"] == [QUERIES // 2]
  assert recs[0]["not_charged"] == [QUERIES - QUERIES // 2]
  # What the budget has spent, sessions requested since left out.
  assert d.loop.state_dict()["sent"] == QUERIES // 2


def test_drain_is_bounded_and_a_checkpoint_forgets_what_is_out(compiled):  # noqa: F811
  """drain() waits at most its limit (or until stop() says so); the
  sessions still out stay pending, and the state a checkpoint saves is the
  one before they were requested. (Before: drain waited forever.)"""
  c, trainer, _ = compiled
  rater = GatedRater(*trainer.rated.rated_range)
  d = Driver(compiled, [rater])
  while not d.loop.pending:
    d.advance()
  before = (d.loop.sent, d.loop.requested, d.loop.next_session)
  p = d.loop.pending[0]
  t0 = time.monotonic()
  d.state, recs = d.loop.drain(d.state, d.steps, timeout=0.3)
  assert time.monotonic() - t0 < 2.0 and recs == []
  stop = threading.Event()
  threading.Timer(0.2, stop.set).start()
  t0 = time.monotonic()
  d.state, recs = d.loop.drain(d.state, d.steps, timeout=30, stop=stop.is_set)
  assert time.monotonic() - t0 < 2.0 and recs == []
  saved = d.loop.state_dict()
  assert (saved["sent"], saved["requested"], saved["next_session"]) == (
    before[0] - QUERIES,
    before[1] - 1,
    p.due_at,
  )
  rater.gate.set()
  d.state, recs = d.loop.drain(d.state, d.steps, timeout=30)
  assert [r["session"] for r in recs] == [p.session]
  d.loop.close()


def test_finish_is_cut_short_by_stop(compiled):  # noqa: F811
  c, trainer, _ = compiled
  rater = GatedRater(*trainer.rated.rated_range)
  d = Driver(compiled, [rater])
  while not d.loop.pending:
    d.advance()
  stop = threading.Event()
  threading.Timer(0.2, stop.set).start()
  t0 = time.monotonic()
  d.state, recs = d.loop.finish(d.state, d.steps, stop=stop.is_set)
  assert time.monotonic() - t0 < 2.0
  assert [r.get("abandoned") for r in recs] == [True]
  rater.gate.set()
  d.loop.close()


def test_final_wait_and_drain_have_finite_defaults():
  c = config_lib.default()
  assert 0 < c.feedback.final_wait_s < float("inf")
  assert 0 < c.feedback.drain_wait_s < float("inf")
  c.feedback.drain_wait_s = -1.0
  with pytest.raises(
    config_lib.ConfigError, match=r"config.feedback.drain_wait_s=-1.0: must"
  ):
    config_lib.validate(c)


def test_a_hung_rating_call_does_not_keep_the_process_alive(tmp_path):
  """A rating thread blocked forever: the interpreter still exits at once
  when the main thread is done. (Before: concurrent.futures joined its
  worker threads at exit, so the process hung.)"""
  script = textwrap.dedent(
    """
    import threading, time
    from erljax import daemon
    hang = threading.Event()
    daemon.DaemonExecutor(1, "rater0").submit(hang.wait)
    ex = daemon.DaemonExecutor(2, "map")
    ex.submit(hang.wait)
    print("main done", flush=True)
    """
  )
  t0 = time.monotonic()
  out = subprocess.run(
    [sys.executable, "-c", script],
    capture_output=True,
    text=True,
    timeout=20,
    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
  )
  assert out.returncode == 0, out.stderr
  assert "main done" in out.stdout
  assert time.monotonic() - t0 < 15


def test_sessions_use_daemon_workers(compiled):  # noqa: F811
  c, trainer, _ = compiled
  rater = GatedRater(*trainer.rated.rated_range)
  d = Driver(compiled, [rater])
  while not d.loop.pending:
    d.advance()
  workers = [t for t in threading.enumerate() if t.name.startswith("rater0")]
  assert workers and all(t.daemon for t in workers)
  rater.gate.set()
  d.loop.close()
  assert isinstance(d.loop, sessions.FeedbackLoop)
  np.testing.assert_equal(rater.calls, 1)
