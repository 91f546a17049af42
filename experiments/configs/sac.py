"""SAC on the environment reward.

  python -m erljax.train --config=experiments/configs/sac.py:reacher
  python -m erljax.train --config=experiments/configs/sac.py:CartpoleSwingup

The argument after ':' is a registered task name (see erljax.envs.task_names()).
"""

from erljax import config as config_lib


def get_config(task: str = "reacher"):
  c = config_lib.default()
  c.task = task
  return c
