"""The shared flag vocabulary (erljax.cli_flags): deprecated aliases."""

import argparse

from absl import flags
import pytest

from erljax import cli_flags
from erljax import rate as rate_cli


def test_argparse_alias_warns_and_sets_the_new_flag():
  p = argparse.ArgumentParser()
  p.add_argument("--host_envs", default="1")
  cli_flags.add_alias(p, "--host-envs", "--host_envs")
  assert p.parse_args([]).host_envs == "1"
  assert p.parse_args(["--host_envs=4"]).host_envs == "4"
  with pytest.warns(FutureWarning, match="--host-envs is deprecated; use "):
    assert p.parse_args(["--host-envs=8"]).host_envs == "8"


def test_rate_seed_is_the_rng_seed():
  args = ["--backend=openai", "x.png"]
  assert rate_cli.parser().parse_args(args + ["--rng_seed=3"]).rng_seed == 3
  with pytest.warns(FutureWarning, match="--seed is deprecated; use --rng_"):
    got = rate_cli.parser().parse_args(args + ["--seed=4"])
  assert got.rng_seed == 4 and not hasattr(got, "seed")


def _absl(*argv):
  fv = flags.FlagValues()
  flags.DEFINE_integer("rng_seed", 0, "", flag_values=fv)
  flags.DEFINE_integer("seed", None, "", flag_values=fv)
  fv(["prog", *argv])
  return fv


def test_absl_alias_warns_copies_and_rejects_both():
  fv = _absl("--rng_seed=2")
  cli_flags.absl_aliases(fv, {"seed": "rng_seed"})
  assert fv.rng_seed == 2
  fv = _absl("--seed=5")
  with pytest.warns(FutureWarning, match="--seed is deprecated; use --rng"):
    cli_flags.absl_aliases(fv, {"seed": "rng_seed"})
  assert fv.rng_seed == 5
  with pytest.raises(ValueError, match="--seed=5 and --rng_seed=1: give only"):
    cli_flags.absl_aliases(
      _absl("--seed=5", "--rng_seed=1"), {"seed": "rng_seed"}
    )
