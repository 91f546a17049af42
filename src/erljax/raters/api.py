"""Raters: who labels segments. All share the `Rater` interface in base.py.

`make(config.rater, task_name, num_classes, seed)` builds the rater a
config asks for: the scripted rater (ground truth plus noise) or a VLM over
HTTP (OpenAI-compatible, Gemini, Ollama). `rater.needs_frames` tells the
caller whether Queries must carry rendered frames.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Union

from erljax.raters.base import CLASS_NAMES, Queries, Rater, Ratings
from erljax.raters.cache import ReplyCache
from erljax.raters.gemini import GeminiRater
from erljax.raters.http import HttpClient
from erljax.raters.failures import Counters, QueryFailed, RunGuard
from erljax.raters.ollama import OllamaRater
from erljax.raters.openai import OpenAIRater
from erljax.raters.pacing import RateLimiter, limiter_path
from erljax.raters.prompts import Prompts
from erljax.raters.scripted import ScriptedRater
from erljax.raters.replies import Answer
from erljax.raters.vlm import VLMRater

BACKENDS = {"openai": OpenAIRater, "gemini": GeminiRater, "ollama": OllamaRater}

__all__ = [
  "Answer",
  "BACKENDS",
  "CLASS_NAMES",
  "Counters",
  "GeminiRater",
  "HttpClient",
  "OllamaRater",
  "OpenAIRater",
  "Prompts",
  "Queries",
  "QueryFailed",
  "Rater",
  "RateLimiter",
  "Ratings",
  "ReplyCache",
  "RunGuard",
  "ScriptedRater",
  "VLMRater",
  "make",
  "run_guard",
]


def run_guard(cfg) -> RunGuard:
  """The RunGuard all of a run's VLM raters share: rater.max_requests and,
  with rater.requests_per_minute > 0, a RateLimiter whose file (under
  rater.limiter_dir) every process rating the same service shares."""
  limiter = None
  if cfg.get("requests_per_minute", 0) and cfg.kind in BACKENDS:
    base_url = cfg.base_url or BACKENDS[cfg.kind].default_base_url
    limiter = RateLimiter(
      cfg.requests_per_minute, limiter_path(cfg.limiter_dir, base_url)
    )
  return RunGuard(cfg.get("max_requests", 0), limiter)


def _http_client(
  cfg, seed: int, sleep: Callable[[float], None], guard: RunGuard
) -> HttpClient:
  """The HTTP client of a VLM rater: retries, backoff, concurrency and the
  circuit breaker as config.rater (`cfg`) sets them."""
  return HttpClient(
    timeout=cfg.timeout,
    max_retries=cfg.max_retries,
    backoff_base=cfg.backoff_base,
    backoff_max=cfg.backoff_max,
    max_wait=cfg.max_wait,
    concurrency=cfg.concurrency,
    sleep=sleep,
    seed=seed,
    breaker_failures=cfg.breaker_failures,
    breaker_drop_rate=cfg.breaker_drop_rate,
    breaker_pause=cfg.breaker_pause,
    breaker_probes=cfg.breaker_probes,
    guard=guard,
    service=cfg.base_url or BACKENDS[cfg.kind].default_base_url,
  )


def make(
  cfg,
  task_name: str,
  num_classes: int,
  seed: int,
  *,
  segment_length: int = 1,
  instruction: Optional[str] = None,
  subject: Optional[str] = None,
  sleep: Callable[[float], None] = time.sleep,
  guard: Optional[RunGuard] = None,
  cache_dir: Optional[str] = None,
) -> Union[ScriptedRater, VLMRater]:
  """The rater config.rater (`cfg`) asks for, for one task and seed.

  Args:
    cfg: the `rater` ConfigDict (see config.default()).
    task_name: registered task; gives the scripted rater's rating range
      and the VLM's instruction and subject.
    num_classes: rating classes.
    seed: the scripted rater's noise seed; a VLM's request seed.
    segment_length: transitions per rated segment; the scripted rater bins
      segment returns over segment_length times the per-step range. VLMs
      rate one frame, so only 1 is theirs.
    instruction: overrides the task's instruction (VLMs).
    subject: overrides the task's subject, what its frames show (VLMs).
    sleep: how the HTTP client waits between retries (tests inject one).
    guard: the RunGuard shared by the run's raters (None: `run_guard(cfg)`
      of this rater alone).
    cache_dir: the reply cache's directory, overriding cfg.cache_dir ("":
      none; None there too: none).
  """
  from erljax.envs import tasks  # pylint: disable=g-import-not-at-top (jax)

  task = tasks.rated_task(
    tasks.get_task(task_name), cfg.get("rated", "signal"), cfg.get("range")
  )
  if cfg.kind == "scripted":
    return ScriptedRater.for_segments(
      num_classes,
      task.rated_range,
      segment_length,
      noise=cfg.noise,
      noise_kind=cfg.noise_kind,
      tie_tolerance=cfg.tie_tolerance,
      seed=seed,
    )
  if cfg.kind not in BACKENDS:
    raise ValueError(
      f"rater.kind={cfg.kind!r}: choose 'scripted' or one of {sorted(BACKENDS)}"
    )
  if segment_length != 1:
    raise ValueError(
      f"segment_length={segment_length}: a VLM rater "
      f"({cfg.kind!r}) rates one frame; use 1"
    )
  client = _http_client(cfg, seed, sleep, guard or run_guard(cfg))
  cache_dir = cfg.cache_dir if cache_dir is None else cache_dir
  extra = {"constraint": cfg.openai_constraint} if cfg.kind == "openai" else {}
  return BACKENDS[cfg.kind](
    model=cfg.model,
    rating_model=cfg.rating_model,
    instruction=task.instruction if instruction is None else instruction,
    subject=task.subject if subject is None else subject,
    num_classes=num_classes,
    base_url=cfg.base_url,
    api_key_env=cfg.api_key_env,
    two_stage=cfg.two_stage,
    constrained=cfg.constrained,
    temperature=cfg.temperature,
    seed=seed,
    max_tokens=cfg.max_tokens,
    prompts=Prompts.from_overrides(dict(cfg.prompt)),
    client=client,
    cache=ReplyCache(cache_dir) if cache_dir else None,
    replay_only=cfg.replay_only,
    **extra,
  )
