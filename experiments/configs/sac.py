"""SAC on the environment reward.

  python -m erljax.train --config=experiments/configs/sac.py:reacher
  python -m erljax.train --config=experiments/configs/sac.py:CartpoleSwingup \
      --config.seed=3 --config.num_seeds=5

The argument after ':' is a registered task name (erljax.tasks.task_names()).
Package defaults are the reference SAC settings (method notes §6); the
per-task budgets below are sized so a run finishes on a 2-core CPU.
"""

from erljax import config as config_lib

# Per-task overrides of erljax.config.default().
_TASK_OVERRIDES = {
  # ~5 min of training on 2 CPU cores; the curve rises from about -22 to -9.
  "reacher": dict(
    episode_length=200,
    total_steps=60_000,
    batch_size=256,
    updates_per_step=4,
    log_every=5_000,
    eval_every=5_000,
    num_eval_envs=16,
  ),
  # The rating study's CPU size (experiments/run_study.sh): SAC reaches
  # about 400 in 60k steps (5 seeds, 2x128 networks).
  "CartpoleSwingup": dict(
    total_steps=60_000,
    batch_size=256,
    updates_per_step=4,
    log_every=5_000,
    eval_every=10_000,
    replay_capacity=60_000,
  ),
  # The demonstrator of the offline study (experiments/run_offline_study.sh):
  # 200-step episodes (10 s of pushing; Gym's Pusher uses 5 s), UTD 0.5.
  "pusher": dict(
    episode_length=200,
    total_steps=200_000,
    batch_size=256,
    updates_per_step=4,
    log_every=5_000,
    eval_every=10_000,
    replay_capacity=200_000,
  ),
}
_HIDDEN = {"CartpoleSwingup": (128, 128), "pusher": (256, 256)}


def get_config(task: str = "reacher"):
  c = config_lib.default()
  c.task = task
  for key, value in _TASK_OVERRIDES.get(task, {}).items():
    c[key] = value
  if task in _HIDDEN:
    c.sac.hidden_sizes = _HIDDEN[task]
  return c
