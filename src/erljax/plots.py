"""Command line: redraw a run's learning curve.

  python -m erljax.plots WORKDIR

writes WORKDIR/curve.png from WORKDIR/metrics.jsonl (erljax.io.curves draws it).
"""

from __future__ import annotations

import sys
from typing import Sequence

from erljax.io.curves import plot_workdir


def main(argv: Sequence[str]) -> int:
  if len(argv) != 1:
    print("usage: python -m erljax.plots WORKDIR", file=sys.stderr)
    return 2
  try:
    print(plot_workdir(argv[0]))
  except (OSError, ValueError) as e:
    print(f"erljax.plots: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
