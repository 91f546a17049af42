"""Reward learned from ratings (ERL-VLM, vanilla RbRL and single enhancements).

  python -m erljax.train --config=experiments/configs/rating.py:reacher,erlvlm
  python -m erljax.train --config=experiments/configs/rating.py:reacher,rbrl \
      --config.rater.noise=0.2 --config.num_seeds=5

Argument: "TASK[,METHOD]", METHOD one of
  erlvlm          MAE + class weights + stratified batches (released scripts)
  rbrl            vanilla RbRL: cross-entropy, uniform batches, no weights
  rbrl_mae        RbRL + MAE only
  rbrl_weights    RbRL + class weights only
  rbrl_stratified RbRL + stratified batches only
  preference      RL-VLM-F style pairwise preferences, Bradley-Terry loss
                  (same number of queries; ties are dropped)
Ratings come from the scripted rater (ground truth binned into the task's
classes), set up as the VLM-like one: `rater.noise_kind="boundary"`
(perception noise on the rated value, so wrong ratings lie near class
boundaries and mostly in the neighbouring class, at the rate `rater.noise`)
and `rater.tie_tolerance=0.05` (preference pairs whose true returns differ
by at most 5% of the rated range are not answered, RL-VLM-F's "-1").
config.default() keeps "uniform" noise and exact ties only. A VLM rater
makes its own mistakes and ties: with `--config.rater.kind=openai` etc.
also set `--config.rater.tie_tolerance=0`. Every method rates one-step
segments (ERL-VLM's one frame); `--config.feedback.segment_length=50` gives
RbRL's 50-step segments. SAC on the true reward is
experiments/configs/sac.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sac  # pylint: disable=g-import-not-at-top,wrong-import-position

METHODS = {
    "erlvlm": dict(loss="mae", class_weighted=True, stratified=True),
    "rbrl": dict(loss="ce", class_weighted=False, stratified=False),
    "rbrl_mae": dict(loss="mae", class_weighted=False, stratified=False),
    "rbrl_weights": dict(loss="ce", class_weighted=True, stratified=False),
    "rbrl_stratified": dict(loss="ce", class_weighted=False, stratified=True),
    "preference": dict(feedback_type="preference", class_weighted=False,
                       stratified=False),
}

# CPU-sized schedule for every task: the paper's first session at 10k, then
# every 5k steps up to a 10k budget, but 100 queries a session instead of 50,
# since a CPU run lasts 60k steps, not 1M (1,100 queries in all).
_FEEDBACK = dict(first_session=10_000, interval=5_000, queries=100,
                 budget=10_000)


def get_config(arg: str = "reacher,erlvlm"):
  task, _, method = arg.partition(",")
  method = method or "erlvlm"
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; choose one of "
                     f"{sorted(METHODS)}")
  c = sac.get_config(task)
  c.reward.source = "learned"
  for key, value in METHODS[method].items():
    c.reward[key] = value
  for key, value in _FEEDBACK.items():
    c.feedback[key] = value
  c.rater.noise_kind = "boundary"
  c.rater.tie_tolerance = 0.05
  return c
