"""The console scripts (setup.cfg, [options.entry_points]).

`erljax-train ARGS` runs exactly what `python -m erljax.train ARGS` runs, and
likewise erljax-evaluate, -rate, -serve, -collect and -offline: each runs its
module as __main__, so the module's own command line stays the one source.
"""

from __future__ import annotations

import functools
import runpy


def _run(module: str) -> None:
  runpy.run_module(f"erljax.{module}", run_name="__main__", alter_sys=True)


train = functools.partial(_run, "train")
evaluate = functools.partial(_run, "evaluate")
rate = functools.partial(_run, "rate")
serve = functools.partial(_run, "serve")
collect = functools.partial(_run, "collect")
offline = functools.partial(_run, "offline")
