"""Pacing and cost of VLM raters: one requests-per-minute limit shared by
all seeds' clients and all processes on the machine, a cap on a run's HTTP
requests, and the reply cache on by default in a run's workdir. Local
servers on 127.0.0.1; the pacing test takes about 10 s."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from erljax.config import defaults as config_lib
from erljax.raters import api as raters
from erljax.raters.pacing import RateLimiter, limiter_path
from test_http_raters import _openai_reply, _queries, serve  # noqa: F401

PER_MINUTE = 120.0  # one request every 0.5 s


def _config(url, **rater):
  c = config_lib.default()
  c.rater.kind = "openai"
  c.rater.model = "test-model"
  c.rater.base_url = url
  c.rater.api_key_env = ""
  c.rater.two_stage = False
  for k, v in rater.items():
    c.rater[k] = v
  return config_lib.validate(c)


def _seed_raters(c, num_seeds):
  """The raters a run of num_seeds seeds builds (erljax.online.sessions)."""
  guard = raters.run_guard(c.rater)
  return [
    raters.make(c.rater, "reacher", 3, seed=s, guard=guard)
    for s in range(num_seeds)
  ]


_OTHER_PROCESS = textwrap.dedent(
  """
  import sys
  from erljax.raters.http import HttpClient
  from erljax.raters.failures import RunGuard
  from erljax.raters.pacing import RateLimiter, limiter_path
  url, directory, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
  limiter = RateLimiter({per_minute}, limiter_path(directory, url))
  client = HttpClient(guard=RunGuard(limiter=limiter), max_retries=0)
  client.map(lambda i: client.post(url + "/chat/completions", {{}}), range(n))
  """
)


def test_requests_per_minute_hold_over_five_seeds_and_two_processes(
  serve,  # noqa: F811
  tmp_path,
):
  """5 seeds' raters (8 queries in flight each) and a second process share
  one limit of 120 requests a minute: the server never sees two requests
  closer than 0.5 s, so never more than 120 in a minute. (Before: no
  limiter; all 20 requests came at once.)"""
  arrivals = []
  server = serve(
    lambda *_: arrivals.append(time.monotonic()) or _openai_reply("Good")
  )
  c = _config(
    server.url + "/v1",
    requests_per_minute=PER_MINUTE,
    limiter_dir=str(tmp_path),
  )
  seeds = _seed_raters(c, 5)
  other = subprocess.Popen(
    [
      sys.executable,
      "-c",
      _OTHER_PROCESS.format(per_minute=PER_MINUTE),
      server.url + "/v1",
      str(tmp_path),
      "5",
    ],
    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
  )
  threads = [
    threading.Thread(target=r.rate, args=(_queries([1, 2, 3]),)) for r in seeds
  ]
  for t in threads:
    t.start()
  for t in threads:
    t.join(60)
  assert other.wait(60) == 0
  arrivals.sort()
  assert len(arrivals) == 5 * 3 + 5
  gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
  # Slots are 0.5 s apart; the server stamps arrivals a little later or
  # earlier than the slot, never a whole slot early.
  assert min(gaps) > 0.4, gaps
  per_minute = 60.0 * (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
  print(
    f"{len(arrivals)} requests, {per_minute:.1f} a minute over "
    f"{arrivals[-1] - arrivals[0]:.2f} s, gaps >= {min(gaps):.3f} s"
  )
  # The server's stamps jitter by a thread switch or two under load.
  assert per_minute <= PER_MINUTE * 1.05
  assert all(r.stats()["answered"] == 3 for r in seeds)


def test_limiter_spaces_reservations_and_survives_a_bad_file(tmp_path):
  now = [1000.0]
  path = str(tmp_path / "x" / "rpm.json")
  lim = RateLimiter(60.0, path, clock=lambda: now[0], sleep=lambda s: None)
  assert [lim.reserve() for _ in range(3)] == [1000.0, 1001.0, 1002.0]
  now[0] = 1010.0  # idle: the next one goes at once
  assert lim.acquire() == 0.0
  with open(path, "w") as f:
    f.write("{torn")
  assert lim.reserve() == 1010.0
  with open(path, "w") as f:
    f.write('{"next": 1e12}')  # a clock set back: start again from now
  assert lim.reserve() == 1010.0
  assert (
    limiter_path(str(tmp_path), "http://h:1/v1")
    == limiter_path(str(tmp_path), "http://h:1/other")
    != limiter_path(str(tmp_path), "http://h:2/v1")
  )


def test_max_requests_stops_every_seed_and_keeps_what_was_paid(
  serve,  # noqa: F811
  tmp_path,
):
  """rater.max_requests caps the HTTP requests of all seeds together; the
  queries past it are dropped as outages (not charged), the answers paid
  for are kept (cache), and the guard says why the run must stop.
  (Before: no cap.)"""
  server = serve(lambda *_: _openai_reply("Good"))
  c = _config(
    server.url + "/v1",
    max_requests=5,
    concurrency=1,
    cache_dir=str(tmp_path / "replies"),
  )
  a, b = _seed_raters(c, 2)
  ra = a.rate(_queries([1, 2, 3]))
  rb = b.rate(_queries([4, 5, 6]))
  assert ra.answered.tolist() == [True] * 3
  assert rb.answered.tolist() == [True, True, False]
  assert rb.outage.tolist() == [False, False, True]
  assert len(server.requests) == 5 and len(a.cache) == 5
  assert "rater.max_requests=5 reached" in b.stop_reason
  assert a.stop_reason == b.stop_reason
  assert b.stats()["drop_reasons"] == {"stopped": 1}


def test_the_reply_cache_is_on_by_default_in_the_workdir(tmp_path):
  c = config_lib.default()
  assert c.rater.cache_dir is None
  assert config_lib.reply_cache_dir(c) == ""  # no workdir: nowhere to keep
  c.workdir = str(tmp_path)
  assert config_lib.reply_cache_dir(c) == str(tmp_path / "rater_cache")
  c.rater.cache_dir = ""
  assert config_lib.reply_cache_dir(c) == ""
  c.rater.cache_dir = "/elsewhere"
  assert config_lib.reply_cache_dir(c) == "/elsewhere"


@pytest.fixture
def vlm_loop(tmp_path):
  """A FeedbackLoop of a 2-seed VLM run with a workdir (nothing compiled)."""
  from erljax.online import sessions
  from erljax.runtime import sharding
  from erljax.online import trainer as trainer_lib
  from test_vlm_loop import vlm_config

  c = vlm_config(1)
  c.num_seeds = 2
  c.workdir = str(tmp_path)
  c.rater.max_requests = 7
  config_lib.validate(c)
  layout = sharding.Layout.create(c.num_devices, c.num_seeds, c.num_envs)
  loop = sessions.FeedbackLoop(trainer_lib.Trainer.create(c), [0, 1], layout)
  yield c, loop
  loop.close()


def test_a_run_s_raters_cache_in_its_workdir_and_share_one_guard(vlm_loop):
  c, loop = vlm_loop
  a, b = loop.calls.raters
  assert a.cache.root == os.path.join(c.workdir, "rater_cache")
  assert a.client.guard is b.client.guard
  assert a.client.guard.max_requests == 7
  assert loop.stop_reason() is None
  a.client.guard.stop("test")
  assert loop.stop_reason() == "test"
