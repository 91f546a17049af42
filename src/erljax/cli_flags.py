"""The flag names every erljax command and benchmark shares.

* `--seed_index=K`: which of a run's vmapped seeds acts (0 <= K <
  config.num_seeds); index K is the run's PRNG seed config.seed + K.
* `--rng_seed=R`: the seed of the command's own randomness (episode
  resets, action noise, simulated failures, a VLM request's seed).
* `--seeds=N`: a count of seeds, never a list (a sweep over counts is
  `--seed_counts=1,4`).
* underscores, never hyphens, in flag names.
* `--out`: what it names (a file, a folder or a path stem) is in each
  command's help and in docs/commands.md.

Old names stay as deprecated aliases: they still work and warn
(FutureWarning) with the new name. Training configs keep `--config.seed`
(the run's first PRNG seed) and `--config.num_seeds` (a count).
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any, Mapping


def warn_deprecated(old: str, new: str, note: str = "") -> None:
  """FutureWarning that flag `old` is the deprecated name of `new`."""
  warnings.warn(
    f"{old} is deprecated; use {new}{note}", FutureWarning, stacklevel=3
  )


class _DeprecatedAlias(argparse.Action):
  """argparse action: stores into the new flag's dest and warns."""

  def __init__(self, option_strings, dest, new: str = "", **kwargs):
    super().__init__(option_strings, dest, **kwargs)
    self.new = new

  def __call__(self, parser, namespace, values, option_string=None):
    warn_deprecated(option_string, self.new)
    setattr(namespace, self.dest, values)


def add_alias(
  parser: argparse.ArgumentParser, old: str, new: str, **kwargs: Any
) -> None:
  """Adds `old` (e.g. "--host-envs") as a deprecated alias of the already
  added flag `new` ("--host_envs"); kwargs: its type etc."""
  parser.add_argument(
    old,
    dest=new.lstrip("-"),
    action=_DeprecatedAlias,
    new=new,
    default=argparse.SUPPRESS,
    help=f"deprecated alias of {new}",
    **kwargs,
  )


def absl_aliases(flag_values: Any, aliases: Mapping[str, str]) -> None:
  """For parsed absl flags: copies each deprecated flag given (old name ->
  new name) into the new flag, with a warning; ValueError if both are
  given."""
  for old, new in aliases.items():
    if not flag_values[old].present:
      continue
    if flag_values[new].present:
      raise ValueError(
        f"--{old}={flag_values[old].value} and --{new}="
        f"{flag_values[new].value}: give only --{new} (--{old} is its "
        "deprecated name)"
      )
    warn_deprecated(f"--{old}", f"--{new}")
    flag_values[new].value = flag_values[old].value
