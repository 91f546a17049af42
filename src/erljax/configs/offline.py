"""Offline RL from a fixed demonstration dataset (erljax.offline).

  python -m erljax.offline \
      --config=erljax:offline.py:pusher,erlvlm_iql \
      --config.dataset=data/pusher --config.workdir=runs/off_pusher_erlvlm

The argument after ':' is TASK,METHOD. METHOD is one of
  erlvlm_iql  IQL on the reward learned from the dataset's ratings with
              ERL-VLM's loss (MAE + class weights + stratified batches)
  rbrl_iql    the same with vanilla RbRL's loss (cross-entropy, uniform
              batches, no weights)
  sparse_iql  IQL on the success signal as the reward (1 on success steps)
  true_iql    IQL on the environment reward (the oracle)
  bc          behaviour cloning: the IQL actor with every weight 1
The settings below were fixed before any study run and are the same for
every method (see experiments/results/offline.md).
"""

from erljax.offline import config as offline_config


def get_config(arg: str = "pusher,erlvlm_iql"):
  task, _, method = arg.partition(",")
  return offline_config.default_config(task, method or "erlvlm_iql")
