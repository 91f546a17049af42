"""Start-up checks of a config's rater.* keys (erljax.config.validation runs
them).

The scripted rater's noise model and rated range, and the keys only VLM
raters read (model, endpoint, prompts, retries, cache); each failure raises
`ConfigError` naming the key and value.
"""

from __future__ import annotations

import math
import numbers
import os
import re

import ml_collections

from erljax.envs import tasks
from erljax.config.checks import (
  ConfigError,
  check,
  fail,
  integer_at_least,
  is_bool,
  positive_float,
)
from erljax.raters import api as raters
from erljax.raters import base as raters_base
from erljax.raters import endpoint
from erljax.raters import prompts as prompts_lib
from erljax.raters import scripted as scripted_lib

RATER_KINDS = ("scripted", "openai", "gemini", "ollama")
OPENAI_CONSTRAINTS = ("json_schema", "structured_outputs")


def reply_cache_dir(c: ml_collections.ConfigDict) -> str:
  """The reply cache's directory: rater.cache_dir, or (None) the workdir's
  rater_cache; "" when there is none."""
  if c.rater.cache_dir is not None:
    return c.rater.cache_dir
  return os.path.join(c.workdir, "rater_cache") if c.workdir else ""


def validate_rater(c: ml_collections.ConfigDict, classes: int) -> None:
  """The rater.* keys; `classes` is the run's number of rating classes."""
  check(
    c, "rater.kind", lambda v: v in RATER_KINDS, f"must be one of {RATER_KINDS}"
  )
  check(c, "rater.noise", lambda v: 0.0 <= v <= 1.0, "must lie in [0, 1]")
  check(
    c,
    "rater.noise_kind",
    lambda v: v in scripted_lib.NOISE_KINDS,
    f"must be one of {scripted_lib.NOISE_KINDS}",
  )
  if c.rater.noise_kind == "boundary":
    check(
      c,
      "rater.noise",
      lambda v: v < 1.0 - 1.0 / classes,
      f"rater.noise_kind='boundary' with {classes} classes reaches "
      f"wrong-rating rates below 1 - 1/{classes} only",
    )
  check(
    c,
    "rater.tie_tolerance",
    lambda v: 0.0 <= v < 1.0,
    "must lie in [0, 1) (a fraction of the rated range)",
  )
  check(
    c,
    "rater.rated",
    lambda v: v in tasks.RATED,
    f"must be one of {tasks.RATED}",
  )
  if c.rater.range is not None:
    check(
      c,
      "rater.range",
      lambda v: (
        len(v) == 2
        and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
        and v[0] < v[1]
      ),
      "must be (low, high) finite numbers, low < high",
    )
  if c.rater.kind != "scripted":
    _validate_vlm_answers(c, classes)
    _validate_vlm_service(c)
    _validate_vlm_prompts(c)


def _validate_vlm_answers(c: ml_collections.ConfigDict, classes: int):
  """What a VLM rater answers with: its models, and no simulated noise."""
  check(
    c,
    "rater.model",
    lambda v: isinstance(v, str) and v.strip(),
    f"rater.kind={c.rater.kind!r} needs a model name",
  )
  check(
    c,
    "rater.rating_model",
    lambda v: isinstance(v, str),
    "must be a string ('' = rater.model)",
  )
  check(
    c,
    "rater.noise",
    lambda v: v == 0.0,
    "label noise is simulated by the scripted rater only; a VLM's own "
    "mistakes are its noise",
  )
  check(
    c,
    "rater.tie_tolerance",
    lambda v: v == 0.0,
    "preference ties are simulated by the scripted rater only; a VLM "
    "answers -1 itself",
  )
  check(
    c,
    "rater.num_classes",
    lambda _: classes in raters_base.CLASS_NAMES,
    f"VLM raters have class names for "
    f"{sorted(raters_base.CLASS_NAMES)} classes, not {classes}",
  )


def _validate_vlm_service(c: ml_collections.ConfigDict):
  """How a VLM rater reaches its service: URL, key, retries, cache."""
  key_env = c.rater.api_key_env
  if key_env is not None and not (
    isinstance(key_env, str)
    and re.fullmatch(r"(?:[A-Za-z_][A-Za-z0-9_]*)?", key_env)
  ):
    # The value is not echoed: it may be a key pasted by mistake.
    raise ConfigError(
      "config.rater.api_key_env: must name an environment "
      "variable (letters, digits, _) or be ''/None; put the "
      "API key itself in that variable, never in a config"
    )
  check(
    c,
    "rater.base_url",
    lambda v: isinstance(v, str),
    "must be '' (the backend's default) or an http(s):// URL",
  )
  backend = raters.BACKENDS[c.rater.kind]
  try:  # its messages never repeat a credential written into the URL
    endpoint.check_endpoint(
      backend.backend,
      c.rater.base_url,
      key_env,
      backend.default_base_url,
      backend.default_api_key_env,
      backend.home_hosts,
    )
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None
  for key in ("rater.two_stage", "rater.constrained", "rater.replay_only"):
    check(c, key, is_bool, "must be True or False")
  check(
    c,
    "rater.openai_constraint",
    lambda v: v in OPENAI_CONSTRAINTS,
    f"must be one of {OPENAI_CONSTRAINTS}",
  )
  for key in (
    "rater.timeout",
    "rater.backoff_base",
    "rater.backoff_max",
    "rater.max_wait",
  ):
    check(c, key, positive_float, "must be a finite number > 0")
  check(
    c,
    "rater.backoff_base",
    lambda v: v <= c.rater.backoff_max,
    f"must not exceed rater.backoff_max={c.rater.backoff_max}",
  )
  check(
    c,
    "rater.temperature",
    lambda v: isinstance(v, numbers.Real) and 0.0 <= v < float("inf"),
    "must be a finite number >= 0",
  )
  for key, lo in (
    ("rater.max_tokens", 0),
    ("rater.max_retries", 0),
    ("rater.concurrency", 1),
  ):
    check(c, key, integer_at_least(lo), f"must be an integer >= {lo}")
  check(
    c,
    "rater.cache_dir",
    lambda v: v is None or isinstance(v, str),
    "must be a path, '' (no cache) or None (workdir/rater_cache)",
  )
  if c.rater.replay_only:
    check(
      c,
      "rater.cache_dir",
      lambda _: bool(reply_cache_dir(c)),
      "replay_only answers from the cache, so it needs a cache_dir "
      "(or a workdir)",
    )
  _validate_limits(c)


def _validate_vlm_prompts(c: ml_collections.ConfigDict):
  """rater.prompt.*: every template set is known and well formed."""
  for name in prompts_lib.TEMPLATE_NAMES:
    template = c.rater.prompt[name]
    if template:
      try:
        prompts_lib.check_template(name, template)
      except ValueError as e:
        fail(f"rater.prompt.{name}", template, str(e))
  unknown = sorted(set(c.rater.prompt.keys()) - set(prompts_lib.TEMPLATE_NAMES))
  if unknown:
    fail(
      "rater.prompt",
      unknown,
      f"unknown templates; choose from {prompts_lib.TEMPLATE_NAMES}",
    )


def _validate_limits(c: ml_collections.ConfigDict) -> None:
  """The circuit breaker, pacing and request cap (erljax.raters.http)."""
  for key, lo in (
    ("rater.breaker_failures", 1),
    ("rater.breaker_probes", 1),
    ("rater.max_requests", 0),
  ):
    check(c, key, integer_at_least(lo), f"must be an integer >= {lo}")
  check(
    c,
    "rater.breaker_drop_rate",
    lambda v: positive_float(v) and v <= 1,
    "must lie in (0, 1] (a fraction of a session's queries)",
  )
  check(
    c,
    "rater.breaker_pause",
    lambda v: positive_float(v) or (isinstance(v, numbers.Real) and v == 0),
    "must be a finite number of seconds >= 0",
  )
  check(
    c,
    "rater.requests_per_minute",
    lambda v: positive_float(v) or (isinstance(v, numbers.Real) and v == 0),
    "must be a finite number > 0, or 0 (no limit)",
  )
  check(
    c,
    "rater.limiter_dir",
    lambda v: isinstance(v, str),
    "must be a directory or '' (~/.cache/erljax/limits)",
  )
