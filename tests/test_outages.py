"""A rating service that is down, slow or trickling is noticed: each request
has a total time limit, a circuit breaker stops the raters of a run whose
service stays down, waits have finite defaults, and rating threads never
keep the process alive (the session side: test_async_feedback.py). Local
HTTP servers on 127.0.0.1; each test a few seconds."""

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from erljax.config import defaults as config_lib
from erljax.raters.http import HttpClient
from erljax.raters.failures import QueryFailed, RunGuard
from test_http_raters import (
  CLOSE,
  _openai_reply,
  _queries,
  _rater,
  serve,  # noqa: F401
)


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
  client that shares the run's guard, naming the service's URL.
  (Before: every query was tried with all its retries, and nothing
  stopped.)"""
  port = _closed_port()
  guard = RunGuard()
  sleeps = []
  rater = _rater(
    "openai",
    f"http://127.0.0.1:{port}/v1",
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
  assert msg and f"service at http://127.0.0.1:{port}/v1 is down" in msg
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
    from erljax.runtime import daemon
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
