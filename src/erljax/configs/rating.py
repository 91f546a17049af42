"""Reward learned from ratings (ERL-VLM, vanilla RbRL and single enhancements).

  python -m erljax.train --config=erljax:rating.py:reacher,erlvlm
  python -m erljax.train --config=erljax:rating.py:reacher,rbrl \
      --config.rater.noise=0.2 --config.num_seeds=5

Argument: "TASK[,METHOD[,SCHEDULE]]", SCHEDULE "cpu" (default, below) or
"paper" (MetaWorld as the paper runs it, for accelerators: see _PAPER),
METHOD one of
  erlvlm          MAE + class weights + stratified batches (released scripts)
  rbrl            vanilla RbRL: cross-entropy, uniform batches, no weights
  rbrl_mae        RbRL + MAE only
  rbrl_weights    RbRL + class weights only
  rbrl_stratified RbRL + stratified batches only
  erlvlm_n2/_n4   ERL-VLM with 2 / 4 rating classes
  erlvlm_smooth   ERL-VLM with label smoothing (0.1) instead of MAE
  preference      RL-VLM-F style pairwise preferences, Bradley-Terry loss
                  (same number of queries; ties are dropped)
  preference_mae  preferences with ERL-VLM's MAE loss (RL-VLM-F + MAE)
Ratings come from the scripted rater (ground truth binned into the task's
classes) with class-independent noise, `rater.noise_kind="uniform"`: at
the rate `rater.noise` a label is any other class, wherever the true
value lies, as a VLM's confident hallucination is (the kind of noise the
paper's MAE loss is for; docs/rating_noise.md). `rater.noise_kind=
"boundary"` (perception error near a class line) is what the rating studies
before issue 29 used. `rater.tie_tolerance=0.05`: preference pairs whose
true returns differ by at most 5% of the rated range are not answered
(RL-VLM-F's "-1"). config.default() has the same noise kind, but exact ties
only. A VLM rater makes its own mistakes and ties: with
`--config.rater.kind=openai` etc. also set `--config.rater.tie_tolerance=0`.
Every method rates one-step
segments (ERL-VLM's one frame); `--config.feedback.segment_length=50` gives
RbRL's 50-step segments. SAC on the true reward is
erljax:sac.py.
"""

from erljax.configs import sac

# Each method: config overrides ("section.key": value) on top of the task's
# SAC config with a learned reward.
_RBRL = {
  "reward.loss": "ce",
  "reward.class_weighted": False,
  "reward.stratified": False,
}
_ERLVLM = {
  "reward.loss": "mae",
  "reward.class_weighted": True,
  "reward.stratified": True,
}
_PREFERENCE = {
  "reward.feedback_type": "preference",
  "reward.class_weighted": False,
  "reward.stratified": False,
}
METHODS = {
  "erlvlm": _ERLVLM,
  "rbrl": _RBRL,
  # The paper's component ablation: one enhancement on top of RbRL.
  "rbrl_mae": {**_RBRL, "reward.loss": "mae"},
  "rbrl_weights": {**_RBRL, "reward.class_weighted": True},
  "rbrl_stratified": {**_RBRL, "reward.stratified": True},
  # Number of rating classes (the task's default is the paper's choice).
  "erlvlm_n2": {**_ERLVLM, "rater.num_classes": 2},
  "erlvlm_n4": {**_ERLVLM, "rater.num_classes": 4},
  # Label smoothing (margin 0.1) in place of MAE.
  "erlvlm_smooth": {
    **_ERLVLM,
    "reward.loss": "ce",
    "reward.label_smoothing": 0.1,
  },
  "preference": {**_PREFERENCE, "reward.loss": "ce"},
  # RL-VLM-F + MAE: ERL-VLM's robust loss on Bradley-Terry probabilities.
  "preference_mae": {**_PREFERENCE, "reward.loss": "mae"},
}

# CPU-sized schedule for every task: the first session right after the seed
# phase and k-NN pre-training (the paper's 10k) or, with
# --config.feedback.unsupervised=False, right after the seed phase (1k);
# then every 5k steps up to a 10k budget, but 100 queries a session instead
# of 50, since a CPU run lasts 60k steps, not 1M. No session at the end of
# training: 1,000 queries in a 60k-step run (1,200 without pre-training).
_FEEDBACK = dict(interval=5_000, queries=100, budget=10_000)


# The paper's MetaWorld schedule (docs/method.md: #the-loop,
# #erl-vlms-enhancements, #sac): 1M env steps at one SAC update per env step,
# 3x256 networks, batch 512; k-NN pre-training then the first session at 10k, 50
# queries every 5k up to 10,000 ratings of single 224x224 frames, a CNN reward
# ensemble on the frames; replay 200k (frames). Pair it with a "-mjx" task on an
# accelerator, e.g.
#   --config=erljax:rating.py:soccer-mjx,erlvlm,paper
_PAPER = {
  "total_steps": 1_000_000,
  "num_envs": 8,
  "updates_per_step": 8,
  "batch_size": 512,
  "replay_capacity": 200_000,
  "eval_every": 10_000,
  "sac.hidden_sizes": (256, 256, 256),
  "reward.model": "cnn",
  "reward.frame_size": 224,
  "reward.batch_size": 512,
  "feedback.unsupervised": True,
  "feedback.interval": 5_000,
  "feedback.queries": 50,
  "feedback.budget": 10_000,
}
SCHEDULES = ("cpu", "paper")


def _set(c, key: str, value) -> None:
  node = c
  *path, leaf = key.split(".")
  for part in path:
    node = node[part]
  node[leaf] = value


def apply_method(c, method: str) -> None:
  """Sets METHODS[method]'s overrides on config c (in place)."""
  for key, value in METHODS[method].items():
    _set(c, key, value)


def get_config(arg: str = "reacher,erlvlm"):
  task, method, schedule = (arg.split(",") + ["", ""])[:3]
  method = method or "erlvlm"
  schedule = schedule or "cpu"
  if method not in METHODS:
    raise ValueError(
      f"unknown method {method!r}; choose one of {sorted(METHODS)}"
    )
  if schedule not in SCHEDULES:
    raise ValueError(
      f"unknown schedule {schedule!r}; choose one of {SCHEDULES}"
    )
  c = sac.get_config(task)
  c.reward.source = "learned"
  apply_method(c, method)
  for key, value in _FEEDBACK.items():
    c.feedback[key] = value
  if schedule == "paper":
    for key, value in _PAPER.items():
      _set(c, key, value)
  c.rater.noise_kind = "uniform"
  c.rater.tie_tolerance = 0.05
  c.method = method if schedule == "cpu" else f"{method}-{schedule}"
  return c
