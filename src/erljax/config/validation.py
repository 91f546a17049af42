"""Start-up validation of a run's config (`validate`) and the values derived
from it (`first_session`; `data_devices` and `replay_shards` are
erljax.config.layout_checks').

`validate()` runs before anything is built and raises `ConfigError` naming
the offending key and value; it runs one named check per config section,
and erljax.config.rater_checks checks the rater.* keys. The check primitives
live in erljax.config.checks (re-exported here, as erljax.config.defaults
re-exports everything public here).
"""

from __future__ import annotations

import importlib.util
import numbers
import re

import ml_collections

from erljax.config import rater_checks
from erljax.rewards import model as reward_model_lib
from erljax.envs import tasks
from erljax.config.layout_checks import (  # noqa: F401 (re-exported)
  check_distributed,
  check_layout,
  data_devices,
  replay_shards,
)
from erljax.runtime import precision
from erljax.config.checks import (  # noqa: F401 (re-exported)
  ConfigError,
  check,
  fail,
  integer_at_least,
  is_bool,
  positive_float,
)
from erljax.config.rater_checks import (  # noqa: F401 (re-exported)
  OPENAI_CONSTRAINTS,
  RATER_KINDS,
  reply_cache_dir,
)


REWARD_SOURCES = ("env", "learned")
REWARD_MODELS = ("mlp", "cnn")
REWARD_FRAMES = ("raycast", "opengl")
SAMPLINGS = ("uniform", "disagreement")
RATED = tasks.RATED


def first_session(c: ml_collections.ConfigDict) -> int:
  """Env step of the first feedback session: feedback.first_session, or
  (None) right after the seed phase and, with feedback.unsupervised, the
  k-NN pre-training (PEBBLE's num_seed_steps + num_unsup_steps)."""
  f = c.feedback
  if f.first_session is not None:
    return f.first_session
  return c.seed_steps + (f.unsupervised_steps if f.unsupervised else 0)


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every value; returns the config unchanged or raises ConfigError
  naming the first bad key, section by section."""
  _check_counts(c)
  check_layout(c)
  _check_run_files(c)
  _check_sac(c)
  _check_reward(c)
  _check_feedback(c)
  classes = _check_rating(c)
  rater_checks.validate_rater(c, classes)
  _check_segments(c)
  if c.reward.source == "learned":
    _validate_schedule(c)
  check_distributed(c)
  return c


def _check_counts(c: ml_collections.ConfigDict) -> None:
  """The task, and the run's counts of seeds, envs, steps and batches
  (steps count transitions over all envs)."""
  if c.task not in tasks.task_names():
    fail("task", c.task, f"unknown task; choose one of {tasks.task_names()}")
  for key, lo in (
    ("seed", 0),
    ("num_seeds", 1),
    ("num_envs", 1),
    ("num_devices", 1),
    ("total_steps", 1),
    ("seed_steps", 0),
    ("log_every", 1),
    ("eval_every", 1),
    ("num_eval_envs", 1),
    ("batch_size", 1),
    ("updates_per_step", 0),
    ("replay_capacity", 1),
    ("replay_shards", 0),
    ("sac.target_update_period", 1),
  ):
    check(c, key, integer_at_least(lo), f"must be an integer >= {lo}")
  if c.episode_length is not None:
    check(
      c,
      "episode_length",
      integer_at_least(1),
      "must be an integer >= 1 or None",
    )
  n = c.num_envs
  for key in ("log_every", "eval_every", "total_steps", "seed_steps"):
    check(
      c,
      key,
      lambda v: v % n == 0,
      f"must be a multiple of num_envs={n} (steps count transitions "
      "over all envs)",
    )
  for key in ("eval_every", "total_steps"):
    check(
      c,
      key,
      lambda v: v % c.log_every == 0,
      f"must be a multiple of log_every={c.log_every}",
    )


def _check_run_files(c: ml_collections.ConfigDict) -> None:
  """What a run writes and resumes from: logs, pictures, checkpoints."""
  for key in ("resume", "progress", "tensorboard", "compile_cache"):
    check(c, key, is_bool, "must be True or False")
  check(
    c,
    "matmul_precision",
    lambda v: v in precision.PRECISIONS,
    f"must be one of {precision.PRECISIONS}",
  )
  for key in ("wandb.project", "wandb.entity"):
    check(c, key, lambda v: isinstance(v, str), "must be a string")
  check(
    c,
    "wandb.mode",
    lambda v: v in ("online", "offline"),
    "must be 'online' or 'offline'",
  )
  if c.wandb.project:
    check(
      c,
      "wandb.project",
      lambda _: importlib.util.find_spec("wandb") is not None,
      "needs the wandb package, which is not installed (pip install wandb)",
    )
    check(
      c,
      "wandb.project",
      lambda _: bool(c.workdir),
      "needs a workdir (W&B logs what the workdir's metrics hold)",
    )
  for key in ("render.height", "render.width"):
    check(c, key, integer_at_least(1), "must be an integer >= 1")
  for key in ("render.rated_frames", "render.rollout_video"):
    check(c, key, is_bool, "must be True or False")
  check(c, "render.video_every", integer_at_least(0), "must be an integer >= 0")
  check(
    c,
    "method",
    lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", v),
    "must be a non-empty name of letters, digits, '_', '-' and '.' "
    "(it names the run's folder)",
  )
  check(
    c,
    "workdir",
    lambda v: isinstance(v, str) and v.lower() != "none",
    "must be a folder, or '' for no files ('none' is the command line's "
    "spelling of that)",
  )
  check(c, "render.fps", positive_float, "must be a finite number > 0")
  check(c, "checkpoint.every", integer_at_least(0), "must be an integer >= 0")
  check(
    c,
    "checkpoint.keep",
    integer_at_least(2),
    "must be an integer >= 2 (a corrupted latest checkpoint falls back "
    "to the one before)",
  )
  if c.resume:
    check(
      c,
      "workdir",
      lambda v: isinstance(v, str) and v,
      "resume=True needs the workdir that holds the checkpoints",
    )


def _check_sac(c: ml_collections.ConfigDict) -> None:
  """The agent's sac.* hyper-parameters."""
  check(
    c,
    "sac.hidden_sizes",
    lambda v: len(v) >= 1 and all(integer_at_least(1)(h) for h in v),
    "must be a non-empty sequence of positive integers",
  )
  for key in ("sac.actor_lr", "sac.critic_lr", "sac.alpha_lr"):
    check(c, key, positive_float, "must be a finite number > 0")
  check(
    c, "sac.init_temperature", positive_float, "must be a finite number > 0"
  )
  check(c, "sac.discount", lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)")
  check(c, "sac.tau", lambda v: 0.0 < v <= 1.0, "must lie in (0, 1]")
  check(
    c,
    "sac.log_std_min",
    lambda v: v < c.sac.log_std_max,
    f"must be below sac.log_std_max={c.sac.log_std_max}",
  )
  if c.sac.target_entropy is not None:
    check(
      c,
      "sac.target_entropy",
      lambda v: isinstance(v, numbers.Real) and v == v,
      "must be a number or None",
    )


def _check_reward(c: ml_collections.ConfigDict) -> None:
  """The reward source, model, its loss and its training (reward.*)."""
  check(c, "reward.scale", positive_float, "must be a finite number > 0")
  check(
    c,
    "reward.source",
    lambda v: v in REWARD_SOURCES,
    f"must be one of {REWARD_SOURCES}",
  )
  check(
    c,
    "reward.model",
    lambda v: v in REWARD_MODELS,
    f"must be one of {REWARD_MODELS}",
  )
  if c.reward.model == "cnn":
    check(
      c,
      "reward.frames",
      lambda v: v in REWARD_FRAMES,
      f"must be one of {REWARD_FRAMES}",
    )
    smallest = reward_model_lib.ImageCNN().min_frame_size
    check(
      c,
      "reward.frame_size",
      integer_at_least(smallest),
      f"must be an integer >= {smallest}, the smallest frame the CNN's "
      "valid convolutions accept",
    )
  for key, lo in (
    ("reward.ensemble_size", 1),
    ("reward.batch_size", 2),
    ("reward.max_epochs", 1),
    ("reward.min_epochs", 1),
  ):
    check(c, key, integer_at_least(lo), f"must be an integer >= {lo}")
  check(
    c,
    "reward.min_epochs",
    lambda v: v <= c.reward.max_epochs,
    f"must not exceed reward.max_epochs={c.reward.max_epochs}",
  )
  check(
    c,
    "reward.hidden_sizes",
    lambda v: len(v) >= 1 and all(integer_at_least(1)(h) for h in v),
    "must be a non-empty sequence of positive integers",
  )
  check(c, "reward.loss", lambda v: v in ("mae", "ce"), "must be 'mae' or 'ce'")
  check(
    c,
    "reward.feedback_type",
    lambda v: v in ("rating", "preference"),
    "must be 'rating' or 'preference'",
  )
  if c.reward.feedback_type == "preference":
    for key in ("reward.class_weighted", "reward.stratified"):
      check(
        c,
        key,
        lambda v: not v,
        "must be False with preference feedback (Bradley-Terry has no "
        "classes to weight or stratify)",
      )
  for key in ("reward.lr", "reward.k"):
    check(c, key, positive_float, "must be a finite number > 0")
  check(
    c, "reward.stop_accuracy", lambda v: 0.0 < v <= 1.0, "must lie in (0, 1]"
  )
  check(
    c,
    "reward.stop_metric",
    lambda v: v in ("accuracy", "balanced_accuracy"),
    "must be 'accuracy' or 'balanced_accuracy'",
  )


def _check_feedback(c: ml_collections.ConfigDict) -> None:
  """The feedback.* keys: pre-training, sessions, queries, waiting."""
  for key, lo in (
    ("feedback.knn_k", 1),
    ("feedback.unsupervised_steps", 0),
    ("feedback.interval", 1),
    ("feedback.queries", 1),
    ("feedback.budget", 1),
    ("feedback.candidates", 1),
    ("feedback.segment_length", 1),
    ("feedback.warmup_updates", 0),
    ("feedback.max_pending", 1),
    ("feedback.query_window_episodes", 1),
  ):
    check(c, key, integer_at_least(lo), f"must be an integer >= {lo}")
  for key, lo in (
    ("feedback.first_session", 0),
    ("feedback.query_window_steps", 1),
  ):
    check(
      c,
      key,
      lambda v, lo=lo: v is None or integer_at_least(lo)(v),
      f"must be an integer >= {lo} or None (derived)",
    )
  for key in ("feedback.unsupervised", "feedback.asynchronous"):
    check(c, key, is_bool, "must be True or False")
  check(
    c,
    "feedback.sampling",
    lambda v: v in SAMPLINGS,
    f"must be one of {SAMPLINGS}",
  )
  for key in ("feedback.final_wait_s", "feedback.drain_wait_s"):
    if c.feedback[key.split(".")[1]] is not None:
      check(
        c,
        key,
        lambda v: positive_float(v) or (isinstance(v, numbers.Real) and v == 0),
        "must be a finite number of seconds >= 0 or None (wait for all)",
      )


def _check_rating(c: ml_collections.ConfigDict) -> int:
  """The number of rating classes and what depends on it; returns it
  (rater.num_classes, or None: the task's)."""
  if c.rater.num_classes is not None:
    check(
      c,
      "rater.num_classes",
      integer_at_least(2),
      "must be an integer >= 2 or None",
    )
  classes = c.rater.num_classes or tasks.get_task(c.task).num_classes
  check(
    c,
    "reward.label_smoothing",
    lambda v: 0.0 <= v < 1.0 / classes,
    f"must lie in [0, 1/{classes})",
  )
  return classes


def _check_segments(c: ml_collections.ConfigDict) -> None:
  """A rated segment lies inside one episode, and only the scripted rater
  rates segments longer than one frame."""
  seg_len = c.feedback.segment_length
  episode_length = c.episode_length or tasks.get_task(c.task).episode_length
  check(
    c,
    "feedback.segment_length",
    lambda v: v <= episode_length,
    f"must not exceed episode_length={episode_length} (a segment lies "
    "inside one episode)",
  )
  if seg_len > 1:
    check(
      c,
      "rater.kind",
      lambda v: v == "scripted",
      f"must be 'scripted' with feedback.segment_length={seg_len} (a "
      "VLM rater rates one frame)",
    )


def _validate_schedule(c: ml_collections.ConfigDict) -> None:
  """The feedback schedule of a learned-reward run (first session, window)."""
  f = c.feedback
  first = first_session(c)
  # Named as set, or as derived when left None.
  first_key = "feedback.first_session" + (
    ""
    if f.first_session is not None
    else f" (None: seed_steps={c.seed_steps}"
    + (
      f" + unsupervised_steps={f.unsupervised_steps})"
      if f.unsupervised
      else ")"
    )
  )
  if not f.unsupervised and first != c.seed_steps:
    fail(
      first_key,
      first,
      f"with feedback.unsupervised=False the first "
      f"session must follow the seed phase (seed_steps={c.seed_steps}), "
      "or the agent trains on an untrained reward model's output; "
      "leave it None",
    )
  if first < c.seed_steps:
    fail(first_key, first, f"must be >= seed_steps={c.seed_steps}")
  for key, value in ((first_key, first), ("feedback.interval", f.interval)):
    if value % c.log_every:
      fail(
        key,
        value,
        f"must be a multiple of log_every={c.log_every} "
        "(feedback runs between compiled chunks)",
      )
  # A segment that would cross an episode start moves up to 2H - 2 steps
  # back (feedback.segment_indices): that many steps of every env must be
  # stored and inside the query window.
  h = f.segment_length
  need = (2 * h - 1) * c.num_envs
  for key, transitions in (
    (first_key, first),
    ("feedback.query_window_steps", f.query_window_steps),
  ):
    if transitions is not None and transitions < need:
      fail(
        key,
        transitions,
        f"gives {transitions} transitions; "
        f"segment_length={h} with num_envs={c.num_envs} needs >= "
        f"(2H - 1) x num_envs = {need}",
      )
