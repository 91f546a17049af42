"""Command-line entry point.

  python -m erljax.train --config=experiments/configs/sac.py:reacher \
      --config.seed=3 --config.total_steps=200000 --config.workdir=runs/x

Stop it with Ctrl-C or SIGTERM: it saves a checkpoint at the next chunk
boundary and exits; add --config.resume=True to the same command to continue.

Over several processes (hosts) every process runs the same command: under
srun / mpirun as is, elsewhere with --config.distributed.coordinator_address
=HOST:PORT --config.distributed.num_processes=N
--config.distributed.process_id=I (erljax.distributed).
"""

from __future__ import annotations

import sys

from absl import app
from absl import logging
from ml_collections import config_flags

from erljax import checkpoint
from erljax import compile_cache
from erljax import config as config_lib
from erljax import distributed
from erljax import runner

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Path to an experiment config file, e.g. experiments/configs/sac.py:reacher.",
  lock_config=True,
)


def main(argv):
  del argv
  logging.set_verbosity(
    logging.WARNING
  )  # JAX / Brax info lines drown the curve
  config = _CONFIG.value
  if config is None:
    raise app.UsageError(
      "--config is required, e.g. --config=experiments/configs/sac.py:reacher"
    )
  try:
    config_lib.validate(config)
  except config_lib.ConfigError as e:
    print(f"erljax: bad config: {e}", file=sys.stderr)
    sys.exit(2)
  compile_cache.enable(config)  # before anything compiles
  try:  # before anything touches a device
    distributed.initialize(config)
  except ValueError as e:
    print(f"erljax: bad config: {e}", file=sys.stderr)
    sys.exit(2)
  try:
    result = runner.run(config)
  except (config_lib.ConfigError, checkpoint.WorkdirError) as e:
    print(f"erljax: {e}", file=sys.stderr)
    sys.exit(2)
  except FloatingPointError as e:
    print(f"erljax: training diverged: {e}", file=sys.stderr)
    sys.exit(3)
  last = result.history[-1]
  if result.interrupted is not None:
    print(
      f"interrupted at {last['env_steps']} env steps; continue with "
      "--config.resume=True"
    )
    sys.exit(128 + result.interrupted)  # the shell's code for that signal
  if not distributed.is_primary():
    return
  print(
    f"done: {last['env_steps']} env steps, final eval_return "
    f"{last['eval_return']:.3f}, compile {result.compile_seconds:.1f}s, "
    f"train {result.train_seconds:.1f}s"
  )


if __name__ == "__main__":
  app.run(main)
