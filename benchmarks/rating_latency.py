"""Training throughput while a slow rater answers: does rating hide behind
training?

Runs the same learned-reward training three times at the paper's feedback
schedule (`--queries` ratings every `--interval` env steps) and compares env
steps per second:
  instant       the scripted rater, answering inline (no latency);
  slow_async    a rater taking `--latency` s per request, asked from worker
                threads while training goes on (feedback.asynchronous=True);
  slow_sync     the same slow rater, every session blocking (the reference);
  http_async    the whole VLM path: frames rendered on the host, sent as PNGs
                by the openai backend to `python -m erljax.serve` (which rates
                from pixels, reacher only) sleeping `--latency` s per request,
                one request per query (two_stage=False), asynchronous.
The slow rater is the scripted rater behind a delay of `--latency` seconds
per request, with `--concurrency` requests in flight (as erljax's HTTP
client sends them): a session of Q queries waits
ceil(Q / concurrency) * latency seconds. Sessions still out when training
ends are abandoned (feedback.final_wait_s=0), so the figure is training
throughput, not the wait for the last answers.

  python -m benchmarks.rating_latency --total_steps=40000 \
      --out=benchmarks/results/rating_latency.json

Prints a table (and the render helper's frames/s at 224x224 where
erljax.vision.render is installed) and writes JSON: figures, versions, device,
config. Target: slow_async / instant >= 0.9.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

from erljax.config import defaults as config_lib
from erljax.envs import tasks
from erljax import serve
from erljax.online import runner
from erljax.raters.api import Queries, Ratings, ScriptedRater


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--task", default="reacher")
  p.add_argument("--seeds", type=int, default=1, help="seeds (a count)")
  p.add_argument("--total_steps", type=int, default=40_000)
  p.add_argument("--first_session", type=int, default=5_000)
  p.add_argument("--interval", type=int, default=5_000)
  p.add_argument("--queries", type=int, default=50)
  p.add_argument("--seed_steps", type=int, default=1_000)
  p.add_argument(
    "--final_wait",
    type=float,
    default=0.0,
    help="seconds to wait at the end for sessions still out "
    "(feedback.final_wait_s; < 0: wait for all)",
  )
  p.add_argument(
    "--latency",
    type=float,
    default=2.0,
    help="seconds per request of the slow rater",
  )
  p.add_argument(
    "--concurrency",
    type=int,
    default=8,
    help="requests the slow rater has in flight at once",
  )
  p.add_argument("--num_envs", type=int, default=10)
  p.add_argument("--episode_length", type=int, default=200)
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--hidden", default="256,256")
  p.add_argument(
    "--runs",
    default="instant,slow_async,slow_sync",
    help="comma-separated: instant, slow_async, slow_sync, http_async",
  )
  p.add_argument(
    "--render_frames",
    type=int,
    default=100,
    help="frames for the render benchmark (0: skip)",
  )
  p.add_argument(
    "--out",
    default="benchmarks/results/rating_latency.json",
    help="JSON file to write ('' for none)",
  )
  return p.parse_args(argv)


@dataclasses.dataclass
class SlowRater:
  """A rater behind a service that takes `latency` s per request."""

  inner: ScriptedRater
  latency: float
  concurrency: int
  needs_frames = False
  remote = True

  @property
  def num_classes(self) -> int:
    return self.inner.num_classes

  def _wait(self, n: int) -> None:
    time.sleep(self.latency * math.ceil(n / self.concurrency))

  def rate(self, queries: Queries) -> Ratings:
    self._wait(len(queries))
    return self.inner.rate(queries)

  def prefer(self, queries_0: Queries, queries_1: Queries) -> Ratings:
    self._wait(len(queries_0))
    return self.inner.prefer(queries_0, queries_1)


def make_config(a) -> "config_lib.ml_collections.ConfigDict":
  c = config_lib.default()
  c.task = a.task
  c.num_seeds = a.seeds
  c.num_envs = a.num_envs
  c.episode_length = a.episode_length
  c.total_steps = a.total_steps
  c.seed_steps = a.seed_steps
  c.log_every = math.gcd(a.first_session, a.interval)
  c.eval_every = a.total_steps
  c.num_eval_envs = 4
  c.batch_size = a.batch_size
  hidden = tuple(int(h) for h in a.hidden.split(","))
  c.sac.hidden_sizes = hidden
  c.replay_capacity = a.total_steps
  c.reward.source = "learned"
  c.reward.hidden_sizes = hidden
  c.feedback.first_session = a.first_session
  c.feedback.interval = a.interval
  c.feedback.queries = a.queries
  c.feedback.final_wait_s = None if a.final_wait < 0 else a.final_wait
  return config_lib.validate(c)


def _raters(c, kind: str, a):
  task = tasks.rated_task(tasks.get_task(c.task))
  low, high = task.rated_range
  seeds = range(c.seed, c.seed + c.num_seeds)
  scripted = [ScriptedRater(task.num_classes, low, high, seed=s) for s in seeds]
  if kind == "instant":
    return scripted
  return [SlowRater(r, a.latency, a.concurrency) for r in scripted]


def run_one(c, kind: str, a):
  c = c.copy_and_resolve_references()
  c.feedback.asynchronous = kind != "slow_sync"
  if kind == "http_async":
    srv = serve.start(task=c.task, latency=a.latency)
    try:
      c.rater.kind, c.rater.model = "openai", serve.DEFAULT_MODEL
      c.rater.base_url = f"http://127.0.0.1:{srv.port}/v1"
      c.rater.api_key_env, c.rater.two_stage = "", False
      c.rater.concurrency = a.concurrency
      res = runner.run(config_lib.validate(c), log=lambda _: None)
    finally:
      srv.shutdown()
      srv.server_close()
  else:
    res = runner.run(c, log=lambda _: None, raters=_raters(c, kind, a))
  done = [f for f in res.feedback if not f.get("abandoned")]
  return {
    "run": kind,
    "train_seconds": res.train_seconds,
    "compile_seconds": res.compile_seconds,
    "steps_per_second": c.total_steps / res.train_seconds,
    "sessions_completed": len(done),
    "sessions_abandoned": len(res.feedback) - len(done),
    "queries_answered": int(sum(sum(f["answered"]) for f in done)),
    "mean_latency_seconds": (
      float(np.mean([f["latency_seconds"] for f in done])) if done else math.nan
    ),
    "mean_host_seconds_per_session": (
      float(np.mean([f["seconds"] for f in done])) if done else math.nan
    ),
    "sessions": [
      {
        k: f.get(k)
        for k in (
          "session",
          "due_at",
          "requested_at",
          "env_steps",
          "latency_seconds",
          "seconds",
          "abandoned",
        )
      }
      for f in res.feedback
    ],
  }


def render_fps(a):
  if (
    a.render_frames <= 0
    or importlib.util.find_spec("erljax.vision.render") is None
  ):
    return None
  from erljax.vision import render  # pylint: disable=g-import-not-at-top

  return render.benchmark(a.task, n=a.render_frames, height=224, width=224)


def main(argv=None):
  a = _args(argv)
  c = make_config(a)
  rows = [run_one(c, kind, a) for kind in a.runs.split(",")]
  by = {r["run"]: r for r in rows}
  base = by.get("instant", {}).get("steps_per_second")
  for r in rows:
    r["fraction_of_instant"] = (
      r["steps_per_second"] / base if base else math.nan
    )
  fps = render_fps(a)
  dev = jax.devices()[0]
  print(
    f"task={c.task} seeds={c.num_seeds} envs={c.num_envs} "
    f"steps={c.total_steps} sessions: {c.feedback.queries} queries every "
    f"{c.feedback.interval} steps from {c.feedback.first_session}; slow "
    f"rater {a.latency}s/request x{a.concurrency} in flight; device "
    f"{dev.platform} ({dev.device_kind})"
  )
  print(
    f"{'run':<11} {'steps/s':>9} {'fraction':>9} {'done':>5} "
    f"{'dropped':>8} {'latency s':>10} {'host s/session':>15}"
  )
  for r in rows:
    print(
      f"{r['run']:<11} {r['steps_per_second']:9.0f} "
      f"{r['fraction_of_instant']:9.3f} {r['sessions_completed']:5d} "
      f"{r['sessions_abandoned']:8d} {r['mean_latency_seconds']:10.2f} "
      f"{r['mean_host_seconds_per_session']:15.3f}"
    )
  if fps is not None:
    print(f"render: {fps:.0f} frames/s at 224x224 ({c.task}, one renderer)")
  out = {
    "benchmark": "rating_latency",
    "runs": rows,
    "render_frames_per_second_224": fps,
    "device": {
      "platform": dev.platform,
      "kind": dev.device_kind,
      "count": jax.device_count(),
    },
    "versions": {
      "python": sys.version.split()[0],
      "jax": jax.__version__,
      "numpy": np.__version__,
      "machine": platform.machine(),
    },
    "args": vars(a),
    "config": json.loads(c.to_json_best_effort()),
  }
  if a.out:
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
      json.dump(out, f, indent=2)
    print(f"wrote {a.out}")
  return out


if __name__ == "__main__":
  main()
