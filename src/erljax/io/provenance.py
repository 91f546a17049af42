"""Which erljax code a run ran: workdir/run_info.json.

A run that imported another checkout's erljax (a stale editable install, a
PYTHONPATH left over) looks like any other in its metrics. run_info.json
names the code of each process start of the run (a resume appends one):

  erljax_dir  the directory the erljax package was imported from
  version     the installed distribution's version (None if not installed)
  git_commit  HEAD of the git work tree holding erljax_dir (None outside
              one, or without git)
  git_dirty   whether that tree has uncommitted changes (None likewise)
  resumed     whether this start continued from a checkpoint
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from typing import Any, Dict, List, Optional

import erljax

FILE = "run_info.json"


def _git(directory: str, *args: str) -> Optional[str]:
  """git's stdout in `directory`, or None (no git, not a work tree)."""
  try:
    out = subprocess.run(
      ["git", "-C", directory, *args],
      capture_output=True,
      text=True,
      timeout=10,
      check=True,
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout


def code_info(directory: Optional[str] = None) -> Dict[str, Any]:
  """Where erljax was imported from (or `directory`), its version and git
  state (see the module docstring)."""
  directory = directory or os.path.dirname(os.path.abspath(erljax.__file__))
  try:
    version = importlib.metadata.version("erljax")
  except importlib.metadata.PackageNotFoundError:
    version = None
  head = _git(directory, "rev-parse", "HEAD")
  status = _git(directory, "status", "--porcelain") if head else None
  return {
    "erljax_dir": directory,
    "version": version,
    "git_commit": head.strip() if head else None,
    "git_dirty": bool(status.strip()) if status is not None else None,
  }


def write(workdir: str, resumed: bool) -> List[Dict[str, Any]]:
  """Adds this start's code_info to workdir/run_info.json (a fresh run
  starts the list again); returns the list written."""
  path = os.path.join(workdir, FILE)
  starts: List[Dict[str, Any]] = []
  if resumed and os.path.isfile(path):
    try:
      with open(path) as f:
        starts = list(json.load(f)["starts"])
    except (OSError, ValueError, KeyError, TypeError):
      starts = []  # unreadable: this start's record is still worth writing
  starts.append({**code_info(), "resumed": resumed})
  with open(path, "w") as f:
    json.dump({"starts": starts}, f, indent=2)
  return starts
