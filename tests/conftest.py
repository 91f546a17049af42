"""Shared test setup: quiet logs, CPU only, one compilation cache per session.

The persistent XLA cache lets tests that build the same tiny programs (and
the subprocesses some of them start) load a compiled program instead of
compiling it again; a cached program computes exactly what a fresh compile
does.
"""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_created_cache = None


def pytest_configure(config):
  # Runs in the xdist controller before the workers start, so they (and
  # their subprocesses) inherit the same directory.
  global _created_cache
  if _CACHE_ENV not in os.environ:
    _created_cache = tempfile.mkdtemp(prefix="erljax-xla-cache-")
    os.environ[_CACHE_ENV] = _created_cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  # Source locations are part of a program's cache key; with the full
  # traceback they name the calling test, so no two tests would share one.
  os.environ.setdefault("JAX_INCLUDE_FULL_TRACEBACKS_IN_LOCATIONS", "false")


def pytest_unconfigure(config):
  if _created_cache is not None:
    shutil.rmtree(_created_cache, ignore_errors=True)
