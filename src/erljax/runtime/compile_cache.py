"""JAX's persistent compilation cache: on by default for the CLI, guarded.

A rerun of a config loads its compiled programs from disk instead of
compiling them again. `enable(config)` turns the cache on in the user's
cache directory, $XDG_CACHE_HOME/erljax/jax or ~/.cache/erljax/jax, unless

* `config.compile_cache` is False, or
* the environment sets ERLJAX_COMPILE_CACHE=0, or
* the environment sets JAX_COMPILATION_CACHE_DIR: the user's own choice of
  directory wins (an empty value keeps the cache off).

The guard. jaxlib before 0.10 can kill the process (SIGSEGV) while loading
a cached XLA:CPU program: LLVM's JIT links a program's kernels recursively
on one fixed-size thread stack. Measured here with jax 0.9.2 on Linux: an
unrolled MLP of 200 layers (600 kernels in one computation) reloads; one of
250 layers (750) or more dies on every load. erljax's programs reload
(the rating study's train_chunk holds ~960 kernels spread over its loops),
so a kernel count alone does not predict the crash. The guard is therefore
a recovery: each process using the cache leaves a marker in the cache
directory and removes it when it exits; a process that finds the marker of
a process of this host that is gone without exiting clears the cache
before it loads anything, so a crashing entry costs one crash and one cold
compile, never a crash loop.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import warnings
from typing import Any, Optional

import jax
import jaxlib

ENV_SWITCH = "ERLJAX_COMPILE_CACHE"  # "0" / "false" / "off" / "no": no cache
SAFE_JAXLIB = (0, 10)  # its loader does not crash on large programs
# Programs compiling faster than this are not written (a cache read costs
# tens of milliseconds; most eager ops compile faster than that).
MIN_COMPILE_SECS = 0.5
_MARKER = ".running-{host}-{pid}"


def default_dir() -> str:
  """$XDG_CACHE_HOME/erljax/jax, else ~/.cache/erljax/jax."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
    os.path.expanduser("~"), ".cache"
  )
  return os.path.join(root, "erljax", "jax")


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def _jaxlib_version() -> tuple:
  return tuple(int(p) for p in re.findall(r"\d+", jaxlib.__version__)[:2])


def recover(path: str) -> bool:
  """Clears the cache at `path` if a process of this host that used it
  died without exiting (its marker is left, its pid gone); True if so."""
  host = socket.gethostname()
  dead = []
  for marker in glob.glob(
    os.path.join(path, _MARKER.format(host=host, pid="*"))
  ):
    pid = marker.rsplit("-", 1)[1]
    if pid.isdigit() and not _alive(int(pid)):
      dead.append(pid)
  if not dead:
    return False
  shutil.rmtree(path, ignore_errors=True)
  warnings.warn(
    f"erljax process {', '.join(dead)} died while using the compilation "
    f"cache {path}; the cache is cleared in case a cached program crashed "
    f"it (jaxlib {jaxlib.__version__} can crash loading large programs). "
    f"Set {ENV_SWITCH}=0 or --config.compile_cache=False to run without it.",
    stacklevel=2,
  )
  return True


def _mark(path: str) -> None:
  """Leaves this process's marker in `path`, removed when it exits."""
  marker = os.path.join(
    path, _MARKER.format(host=socket.gethostname(), pid=os.getpid())
  )
  with open(marker, "w"):
    pass

  def remove():
    try:
      os.remove(marker)
    except OSError:
      pass

  atexit.register(remove)


def enable(config: Any) -> Optional[str]:
  """Turns JAX's persistent cache on for this process (call it before
  anything compiles); returns its directory, or None where it stays off."""
  switch = os.environ.get(ENV_SWITCH, "1").strip().lower()
  if not config.compile_cache or switch in ("0", "false", "off", "no"):
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if path is None:
    path = default_dir()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update(
      "jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS
    )
  if not path:
    return None
  if _jaxlib_version() < SAFE_JAXLIB:
    recover(path)
    os.makedirs(path, exist_ok=True)
    _mark(path)
  return path
