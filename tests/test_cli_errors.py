"""erljax.cli_errors: the expected errors' messages and exit statuses."""

import pytest

from erljax import cli_errors
from erljax.config.checks import ConfigError


class Stopped(RuntimeError):
  pass


@pytest.mark.parametrize(
  "error, status, message",
  [
    (ConfigError("num_envs=0: must be >= 1"), 2, "bad config: num_envs=0"),
    (FileNotFoundError("no run in /x"), 2, "cmd: no run in /x"),
    (FloatingPointError("loss=nan"), 3, "training diverged: loss=nan"),
    (Stopped("rating stopped"), 4, "cmd: rating stopped"),
  ],
)
def test_expected_errors_exit_with_their_status_and_message(
  capsys, error, status, message
):
  with pytest.raises(SystemExit) as e:
    with cli_errors.exit_status(
      "cmd",
      bad_config=(ConfigError,),
      bad_input=(FileNotFoundError,),
      stopped=(Stopped,),
    ):
      raise error
  assert e.value.code == status
  err = capsys.readouterr().err
  assert err.startswith("cmd: ") and message in err


def test_other_errors_keep_their_traceback():
  with pytest.raises(KeyError):
    with cli_errors.exit_status("cmd", bad_input=(ValueError,)):
      raise KeyError("a bug")


def test_a_clean_block_does_not_exit():
  with cli_errors.exit_status("cmd", bad_input=(ValueError,)):
    pass
