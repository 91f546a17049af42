"""How a command ends on an error it expects: one line on stderr that names
the bad value, and an exit status a script can test. Anything else is a bug
and keeps its traceback.

  2  bad input: a config value, the work directory, a dataset, a file
  3  training diverged: a metric went non-finite
  4  the rating service stopped the run
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, NoReturn, Tuple, Type

BAD_INPUT = 2
DIVERGED = 3
RATING_STOPPED = 4

Errors = Tuple[Type[BaseException], ...]


def fail(command: str, message: str, status: int = BAD_INPUT) -> NoReturn:
  """Prints "command: message" to stderr and exits with `status`."""
  print(f"{command}: {message}", file=sys.stderr)
  sys.exit(status)


@contextlib.contextmanager
def exit_status(
  command: str,
  bad_config: Errors = (),
  bad_input: Errors = (),
  stopped: Errors = (),
) -> Iterator[None]:
  """Runs the block; a `bad_config` error exits with "bad config: ..." and
  status 2, a `bad_input` one with its message and 2, FloatingPointError
  (erljax's non-finite-metric stop) with "training diverged: ..." and 3, a
  `stopped` one with its message and 4."""
  try:
    yield
  except bad_config as e:
    fail(command, f"bad config: {e}")
  except bad_input as e:
    fail(command, str(e))
  except FloatingPointError as e:
    fail(command, f"training diverged: {e}", DIVERGED)
  except stopped as e:
    fail(command, str(e), RATING_STOPPED)
