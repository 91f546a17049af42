"""The console scripts (setup.cfg, [options.entry_points]).

`erljax-train ARGS` runs exactly what `python -m erljax.train ARGS` runs, and
likewise erljax-evaluate, -rate, -serve, -collect and -offline: each runs its
module as __main__, so the module's own command line stays the one source.
"""

from __future__ import annotations

import runpy


def _run(module: str) -> None:
  runpy.run_module(f"erljax.{module}", run_name="__main__", alter_sys=True)


def train() -> None:
  _run("train")


def evaluate() -> None:
  _run("evaluate")


def rate() -> None:
  _run("rate")


def serve() -> None:
  _run("serve")


def collect() -> None:
  _run("collect")


def offline() -> None:
  _run("offline")
