"""Command line: offline runs.

  python -m erljax.offline --config=erljax:offline.py:TASK,METHOD

The run itself is erljax.offline.run.run; this file reads the flags and turns a
bad config, dataset or work directory into a message and exit status 2.
"""

from __future__ import annotations

from erljax import cli_errors
from erljax.io import checkpoint as checkpoint_lib
from erljax.config import defaults as config_lib
from erljax.offline import dataset as dataset_lib
from erljax.offline.run import run


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  if config is None:
    cli_errors.fail(
      "erljax.offline",
      "--config is required, e.g. --config=erljax:offline.py:pusher,erlvlm_iql",
    )
  with cli_errors.exit_status(
    "erljax",
    bad_config=(config_lib.ConfigError,),
    bad_input=(dataset_lib.DatasetError, checkpoint_lib.WorkdirError),
  ):
    run(config)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  config_flags.DEFINE_config_file(
    "config",
    None,
    "an erljax:offline.py:TASK,METHOD config (or a path to one)",
    lock_config=True,
  )
  from erljax import configs  # pylint: disable=g-import-not-at-top

  app.run(main, argv=configs.main_argv())
