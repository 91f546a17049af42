"""Command-line entry point.

  python -m erljax.train --config=erljax:sac.py:reacher \
      --config.seed=3 --config.total_steps=200000 --config.workdir=runs/x

Every run writes its results to a folder: --config.workdir, or by default
runs/<task>-<method>-<UTC time> (--config.workdir=none: no files). It ends
with a block naming the folder and the commands that plot, show in
TensorBoard and evaluate the run.

Stop it with Ctrl-C or SIGTERM: it saves a checkpoint at the next chunk
boundary and exits; add --config.resume=True to the same command to continue.

Exit codes: 0 done, 2 bad config or workdir, 3 training diverged, 4 the
rating service stopped the run (down, or rater.max_requests reached; a
checkpoint is saved first), 128 + N stopped by signal N.

Over several processes (hosts) every process runs the same command: under
srun / mpirun as is, elsewhere with --config.distributed.coordinator_address
=HOST:PORT --config.distributed.num_processes=N
--config.distributed.process_id=I (erljax.runtime.distributed).
"""

from __future__ import annotations

import datetime
import os
import shlex
import sys

from absl import app
from absl import logging
from ml_collections import config_flags

from erljax import cli_errors
from erljax.io import checkpoint
from erljax.runtime import compile_cache
from erljax.config import defaults as config_lib
from erljax import configs
from erljax.runtime import distributed
from erljax.online import runner
from erljax.online import sessions

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "An experiment config: erljax:FILE:ARG, a config shipped with erljax "
  "(e.g. erljax:sac.py:reacher), or PATH.py:ARG.",
  lock_config=True,
)


def default_workdir(
  config, now: datetime.datetime | None = None, root: str = "runs"
) -> str:
  """root/<task>-<method>-<UTC time, to the second> (a new name each run)."""
  now = now or datetime.datetime.now(datetime.timezone.utc)
  task = config.task.replace(os.sep, "_")
  return os.path.join(
    root, f"{task}-{config.method}-{now.strftime('%Y%m%dT%H%M%SZ')}"
  )


def resolve_workdir(config) -> None:
  """The command line's workdir (in place): "" becomes default_workdir
  unless the run resumes (which needs the folder of the run it continues),
  "none" (any case) becomes "" (no files)."""
  if config.workdir.lower() == "none":
    config.workdir = ""
  elif not config.workdir and not config.resume:
    config.workdir = default_workdir(config)


def results_block(config, command: str = "python -m erljax") -> str:
  """The closing lines: the run's folder, its files, and the commands that
  plot it, show it in TensorBoard and evaluate / record its policy."""
  w = config.workdir
  q = shlex.quote(w)
  lines = [f"results in {w}/"]
  for name, what in (
    ("metrics.jsonl", "every record (also eval.csv, seed_<S>.csv)"),
    ("curve.png", "learning curve"),
    ("rollout.gif", "the final policy"),
    ("config.json", "the config"),
    ("checkpoints", "checkpoints"),
  ):
    if os.path.exists(os.path.join(w, name)):
      lines.append(f"  {name:<14s} {what}")
  lines += [
    "next:",
    f"  plot         {command}.plots {q}",
  ]
  if config.tensorboard:
    lines.append(
      f"  tensorboard  pip install tensorboard && tensorboard --logdir "
      f"{shlex.quote(os.path.join(w, 'tb'))}"
    )
  lines.append(
    f"  evaluate     {command}.evaluate --workdir={q} --episodes=20 "
    f"--video={shlex.quote(os.path.join(w, 'eval.gif'))}"
  )
  return "\n".join(lines)


def main(argv):
  del argv
  logging.set_verbosity(
    logging.WARNING
  )  # JAX / Brax info lines drown the curve
  config = _CONFIG.value
  if config is None:
    raise app.UsageError(
      "--config is required, e.g. --config=erljax:sac.py:reacher"
    )
  resolve_workdir(config)
  with cli_errors.exit_status("erljax", bad_config=(config_lib.ConfigError,)):
    config_lib.validate(config)
  compile_cache.enable(config)  # before anything compiles
  # Before anything touches a device; its ValueErrors name config values.
  with cli_errors.exit_status("erljax", bad_config=(ValueError,)):
    distributed.initialize(config)
  with cli_errors.exit_status(
    "erljax",
    bad_config=(config_lib.ConfigError,),
    bad_input=(checkpoint.WorkdirError,),
    stopped=(sessions.RatingStopped,),
  ):
    result = runner.run(config)
  last = result.history[-1]
  if result.interrupted is not None:
    print(
      f"interrupted at {last['env_steps']} env steps; continue with "
      "--config.resume=True"
      + (
        f" --config.workdir={shlex.quote(config.workdir)}"
        if config.workdir
        else ""
      )
    )
    sys.exit(128 + result.interrupted)  # the shell's code for that signal
  if not distributed.is_primary():
    return
  print(
    f"done: {last['env_steps']} env steps, final eval_return "
    f"{last['eval_return']:.3f}, compile {result.compile_seconds:.1f}s, "
    f"train {result.train_seconds:.1f}s"
  )
  if config.workdir:
    print(results_block(config))


if __name__ == "__main__":
  app.run(main, argv=configs.main_argv())
