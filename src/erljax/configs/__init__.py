"""The experiment configs, shipped with the package.

  python -m erljax.train --config=erljax:rating.py:CartpoleSwingup,erlvlm
  erljax-train --config=erljax:sac.py:reacher

`--config=erljax:FILE:ARG` names FILE in this folder from any directory
(`expand_argv` rewrites it to the file's path before the flags are parsed);
from a checkout `--config=experiments/configs/FILE:ARG` names the same file
(experiments/configs links here). Files:

  sac.py      SAC on the environment reward, per-task budgets (ARG: task)
  rating.py   reward learned from ratings (ARG: TASK[,METHOD[,SCHEDULE]])
  offline.py  offline RL from rated data (ARG: TASK[,METHOD])
"""

from __future__ import annotations

import os
import sys
from typing import List, Sequence

PREFIX = "erljax:"
DIRECTORY = os.path.dirname(os.path.abspath(__file__))


def path(spec: str) -> str:
  """The config flag value `spec` with an `erljax:FILE[:ARG]` prefix made a
  path into this folder; other values are returned unchanged.

  Raises ValueError naming the file when FILE is not one of the configs.
  """
  if not spec.startswith(PREFIX):
    return spec
  name, sep, arg = spec[len(PREFIX) :].partition(":")
  if not os.path.isfile(os.path.join(DIRECTORY, name)) or not name.endswith(
    ".py"
  ):
    names = sorted(
      f for f in os.listdir(DIRECTORY) if f.endswith(".py") and f[0] != "_"
    )
    raise ValueError(
      f"--config={spec}: erljax has no config {name!r}; choose one of {names}"
    )
  return os.path.join(DIRECTORY, name) + sep + arg


def expand_argv(argv: Sequence[str], flag: str = "config") -> List[str]:
  """argv with `--FLAG=erljax:...` / `--FLAG erljax:...` made paths (path)."""
  out = list(argv)
  for i, a in enumerate(out):
    for dash in ("--", "-"):
      if a.startswith(f"{dash}{flag}="):
        out[i] = f"{dash}{flag}=" + path(a.split("=", 1)[1])
      elif a == f"{dash}{flag}" and i + 1 < len(out):
        out[i + 1] = path(out[i + 1])
  return out


def main_argv() -> List[str]:
  """sys.argv expanded (expand_argv) for absl's app.run; a config name that
  does not exist exits with status 2 and a message naming it."""
  try:
    return expand_argv(sys.argv)
  except ValueError as e:
    print(f"erljax: {e}", file=sys.stderr)
    sys.exit(2)
