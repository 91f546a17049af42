"""The primitives every start-up config check is built from.

`ConfigError` and the helpers that raise it naming the key and value
(`fail`, `check`) and the predicates they share. erljax.config.validation (the
run config) and erljax.config.rater_checks (its rater.* keys) both import them
from here, so the rater checks need nothing from erljax.config.validation, which
runs them; erljax.config.validation re-exports these names.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import ml_collections


class ConfigError(ValueError):
  """A configuration value is invalid; the message names key and value."""


def fail(key: str, value: Any, why: str):
  raise ConfigError(f"config.{key}={value!r}: {why}")


def check(
  c: ml_collections.ConfigDict, key: str, ok: Callable[[Any], bool], why: str
):
  """Raises ConfigError naming `key` (dotted) unless ok(its value) holds; a
  TypeError inside ok counts as not ok."""
  node = c
  for part in key.split("."):
    node = node[part]
  try:
    good = ok(node)
  except TypeError:
    good = False
  if not good:
    fail(key, node, why)


def integer_at_least(lo: int):
  return lambda v: (
    isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo
  )


def positive_float(v) -> bool:
  return (
    isinstance(v, numbers.Real)
    and not isinstance(v, bool)
    and v > 0
    and (v == v and v != float("inf"))
  )


def is_bool(v) -> bool:
  return isinstance(v, bool)
