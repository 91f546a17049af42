"""Compiled programs kept on the Trainer they were built for.

The run loop's programs (trainer.compiled) and a feedback session's
(session_programs.session_programs) are built once per Trainer object and
kept in its `compiled_cache`, so the runs given the same trainer (a resumed
run in the same process, tests) compile them once, and they are freed with
the trainer. (erljax.runtime.compile_cache is a different thing: XLA's cache of
compiled programs on disk, shared by processes.)
"""

from __future__ import annotations

from typing import Any, Callable


def cached(trainer: Any, name: str, build: Callable[[], Any]) -> Any:
  """build()'s result, built once per `trainer` object and name and kept in
  its `compiled_cache` dict (erljax.online.trainer.Trainer)."""
  if name not in trainer.compiled_cache:
    trainer.compiled_cache[name] = build()
  return trainer.compiled_cache[name]
