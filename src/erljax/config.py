"""Default configuration and start-up validation.

Every experiment config in `experiments/configs/` starts from `default()` and
overrides what it needs. `validate()` runs before anything is built and raises
`ConfigError` naming the offending key and value.

Step counts are env transitions summed over the parallel envs, as in the
paper (one vectorized step of N envs is N steps).
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Callable

import ml_collections
from ml_collections import config_dict

from erljax import tasks
from erljax import reward_model as reward_model_lib
from erljax.raters import base as raters_base
from erljax.raters import prompts as prompts_lib
from erljax.raters import scripted as scripted_lib


class ConfigError(ValueError):
  """A configuration value is invalid; the message names key and value."""


def default() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "reacher"
  c.seed = 0
  c.num_seeds = 1  # seeds run at once, vmapped: seed, seed+1, ...
  c.num_envs = 8  # parallel training envs
  c.num_devices = 1  # devices the seed / env axes are split over
  c.episode_length = config_dict.placeholder(int)  # None: the task's default
  c.total_steps = 100_000
  c.seed_steps = 1_000  # uniform random actions before learning
  c.log_every = 5_000  # one compiled chunk; host work between chunks
  c.eval_every = 10_000
  c.num_eval_envs = 10  # deterministic evaluation episodes
  c.batch_size = 512
  c.updates_per_step = 1  # SAC updates per vectorized env step
  c.replay_capacity = 1_000_000
  c.workdir = ""  # if set: logs, config.json and checkpoints
  c.resume = False  # continue from workdir's latest checkpoint
  c.progress = True  # console progress bar (only on a terminal)
  c.tensorboard = True  # TensorBoard event files in workdir/tb

  # Checkpoints (erljax.checkpoint), written when workdir is set: at the first
  # chunk boundary at or after every multiple of `every` env steps (0: only at
  # the end), at the end, and on SIGINT/SIGTERM.
  # Frames: size of what raters see; pictures of the run in the workdir.
  c.render = ml_collections.ConfigDict()
  c.render.height = 224
  c.render.width = 224
  c.render.rated_frames = False  # workdir/rated_frames/session_NNNN.png
  c.render.rollout_video = False  # workdir/rollout.gif of the final policy
  c.render.fps = 25.0

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 50_000
  c.checkpoint.keep = 2  # most recent checkpoints kept (>= 2)

  c.sac = ml_collections.ConfigDict()
  c.sac.hidden_sizes = (256, 256, 256)
  c.sac.actor_lr = 3e-4
  c.sac.critic_lr = 3e-4
  c.sac.alpha_lr = 1e-4
  c.sac.init_temperature = 0.1
  c.sac.discount = 0.99
  c.sac.tau = 0.005
  c.sac.target_update_period = 2
  c.sac.log_std_min = -5.0
  c.sac.log_std_max = 2.0
  c.sac.target_entropy = config_dict.placeholder(float)  # None: -|A|

  c.reward = ml_collections.ConfigDict()
  c.reward.source = "env"  # "env" or "learned" (from ratings)
  c.reward.scale = 1.0  # multiplies the env reward
  # Learned reward model and its rating loss (method notes §3-5). Defaults:
  # ERL-VLM = MAE + class weights + stratified batches.
  c.reward.feedback_type = "rating"  # or "preference" (RL-VLM-F baseline)
  # "mlp": RbRL's state-action MLP; "cnn": ERL-VLM's image network on the
  # post-step frame, ray-cast in JAX (erljax.raycast) at frame_size^2 pixels
  # (the paper's 224; on a CPU, 64 keeps every step and relabel cheap:
  # experiments/results/image_reward.md).
  c.reward.model = "mlp"
  c.reward.frame_size = 224
  c.reward.ensemble_size = 3
  c.reward.hidden_sizes = (256, 256, 256)
  c.reward.loss = "mae"  # "mae" (ERL-VLM) or "ce" (vanilla RbRL)
  c.reward.class_weighted = True
  c.reward.stratified = True
  c.reward.batch_size = 128  # 128 for state MLPs, 512 for images
  c.reward.max_epochs = 10
  c.reward.min_epochs = 2  # before an early stop (the reference's 2)
  c.reward.stop_accuracy = 0.97
  # Compared with stop_accuracy: "accuracy" (reference) or
  # "balanced_accuracy" (mean per-class recall; a 96%-"Bad" rating set
  # cannot pass it by predicting "Bad" everywhere).
  c.reward.stop_metric = "accuracy"
  c.reward.k = 30.0
  c.reward.label_smoothing = 0.0
  c.reward.lr = 3e-4

  # PEBBLE schedule (method notes §1), used when reward.source == "learned".
  c.feedback = ml_collections.ConfigDict()
  c.feedback.unsupervised = True  # k-NN state-entropy reward before feedback
  c.feedback.knn_k = 5
  c.feedback.unsupervised_steps = 9_000  # of pre-training after seed_steps
  # None: right after seed_steps + unsupervised_steps (pre-training on) or
  # right after seed_steps (off), as the reference's first session.
  c.feedback.first_session = config_dict.placeholder(int)
  c.feedback.interval = 5_000
  c.feedback.queries = 50  # per session
  c.feedback.budget = 10_000  # total queries sent
  # Queries come from the most recent query_window_steps transitions. None:
  # the reference's share of its run, 5% of total_steps (its last 100
  # episodes of 500 steps in a 1M-step run).
  c.feedback.query_window_steps = config_dict.placeholder(int)
  # Transitions per rated segment (H): 1 is ERL-VLM's one post-step frame;
  # RbRL rates H = 50 state segments (scripted rater only: a VLM rates one
  # frame). A segment's return sums its H rewards, rated over H x the range.
  c.feedback.segment_length = 1
  # "uniform" (ERL-VLM) or "disagreement" (RbRL's option: draw candidates x
  # queries, keep those the reward ensemble disagrees on most).
  c.feedback.sampling = "uniform"
  c.feedback.candidates = 10
  c.feedback.reset_critic = True  # after the first session
  c.feedback.warmup_updates = 100
  # Rating calls to a remote rater (a VLM service) run in worker threads while
  # training goes on; the reward is trained when the answers arrive (checked
  # between chunks). False: every session blocks until rated (the reference).
  # Local raters (scripted) always answer inline, so their runs are exact.
  c.feedback.asynchronous = True
  c.feedback.max_pending = 1  # sessions in flight; a due one waits
  c.feedback.final_wait_s = config_dict.placeholder(float)  # None: no limit

  c.rater = ml_collections.ConfigDict()
  c.rater.kind = "scripted"  # or a VLM: "openai", "gemini", "ollama"
  c.rater.noise = 0.0  # probability of a wrong label (scripted)
  # "uniform", "neighbour" or "boundary" (VLM-like perception noise: errors
  # near class boundaries; erljax.raters.scripted).
  c.rater.noise_kind = "uniform"
  # Scripted preferences: pairs whose true returns differ by at most this
  # fraction of the rated range are ties, not answered (RL-VLM-F's "-1").
  c.rater.tie_tolerance = 0.0
  c.rater.num_classes = config_dict.placeholder(int)  # None: the task's
  # What the scripted rater bins: "signal" = what a frame shows (the task's
  # rating_signal, e.g. reacher's tip-target distance without the control
  # cost), "reward" = the per-step env reward (RbRL's synthetic ratings).
  c.rater.rated = "signal"
  c.rater.range = config_dict.placeholder(tuple)  # (low, high); None: task's
  # VLM raters over HTTP (method notes §7; erljax.raters.vlm). API keys only
  # ever come from the environment variable named here, never the config.
  c.rater.base_url = ""  # "" = the backend's default
  c.rater.model = ""  # required for VLMs (stage 1 / only stage)
  c.rater.rating_model = ""  # stage-2 model; "" = model
  c.rater.api_key_env = config_dict.placeholder(str)  # None: backend's
  c.rater.two_stage = True  # analysis, then text-only answer
  c.rater.constrained = True  # answer constrained to the class names
  c.rater.openai_constraint = "json_schema"  # or "structured_outputs" (vLLM)
  c.rater.temperature = 0.0
  c.rater.max_tokens = 0  # 0: the service's default
  c.rater.timeout = 60.0  # seconds per request (connect / read)
  c.rater.max_retries = 5
  c.rater.backoff_base = 1.0  # seconds; doubles per retry, with jitter
  c.rater.backoff_max = 60.0
  c.rater.max_wait = 300.0  # longest server-requested wait honoured
  c.rater.concurrency = 8  # queries in flight
  c.rater.cache_dir = ""  # "" = no reply cache
  c.rater.replay_only = False  # answer from the cache only, no service
  c.rater.prompt = ml_collections.ConfigDict(
    {name: "" for name in prompts_lib.TEMPLATE_NAMES}
  )  # "" = default
  return c


REWARD_SOURCES = ("env", "learned")
REWARD_MODELS = ("mlp", "cnn")
SAMPLINGS = ("uniform", "disagreement")
RATER_KINDS = ("scripted", "openai", "gemini", "ollama")
RATED = tasks.RATED
OPENAI_CONSTRAINTS = ("json_schema", "structured_outputs")


# The reference draws queries from its last 100 episodes of 500 steps in a
# 1M-step run: this share of the run.
REFERENCE_WINDOW_SHARE = 0.05


def first_session(c: ml_collections.ConfigDict) -> int:
  """Env step of the first feedback session: feedback.first_session, or
  (None) right after the seed phase and, with feedback.unsupervised, the
  k-NN pre-training (PEBBLE's num_seed_steps + num_unsup_steps)."""
  f = c.feedback
  if f.first_session is not None:
    return f.first_session
  return c.seed_steps + (f.unsupervised_steps if f.unsupervised else 0)


def query_window(c: ml_collections.ConfigDict) -> int:
  """Transitions the queries are drawn from (the most recent ones):
  feedback.query_window_steps, or (None) REFERENCE_WINDOW_SHARE of
  total_steps, at least the (2H - 1) x num_envs a segment may reach back."""
  if c.feedback.query_window_steps is not None:
    return c.feedback.query_window_steps
  need = (2 * c.feedback.segment_length - 1) * c.num_envs
  return max(math.ceil(REFERENCE_WINDOW_SHARE * c.total_steps), need)


def _fail(key: str, value: Any, why: str):
  raise ConfigError(f"config.{key}={value!r}: {why}")


def _check(
  c: ml_collections.ConfigDict, key: str, ok: Callable[[Any], bool], why: str
):
  node = c
  for part in key.split("."):
    node = node[part]
  try:
    good = ok(node)
  except TypeError:
    good = False
  if not good:
    _fail(key, node, why)


def _int(lo: int):
  return lambda v: (
    isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo
  )


def _pos_float(v) -> bool:
  return (
    isinstance(v, numbers.Real)
    and not isinstance(v, bool)
    and v > 0
    and (v == v and v != float("inf"))
  )


def _validate_vlm_rater(c: ml_collections.ConfigDict, classes: int):
  """The rater.* keys that only VLM raters read."""
  _check(
    c,
    "rater.model",
    lambda v: isinstance(v, str) and v.strip(),
    f"rater.kind={c.rater.kind!r} needs a model name",
  )
  _check(
    c,
    "rater.rating_model",
    lambda v: isinstance(v, str),
    "must be a string ('' = rater.model)",
  )
  _check(
    c,
    "rater.noise",
    lambda v: v == 0.0,
    "label noise is simulated by the scripted rater only; a VLM's own "
    "mistakes are its noise",
  )
  _check(
    c,
    "rater.tie_tolerance",
    lambda v: v == 0.0,
    "preference ties are simulated by the scripted rater only; a VLM "
    "answers -1 itself",
  )
  _check(
    c,
    "rater.num_classes",
    lambda _: classes in raters_base.CLASS_NAMES,
    f"VLM raters have class names for "
    f"{sorted(raters_base.CLASS_NAMES)} classes, not {classes}",
  )
  _check(
    c,
    "rater.base_url",
    lambda v: (
      isinstance(v, str) and (v == "" or v.startswith(("http://", "https://")))
    ),
    "must be '' (the backend's default) or an http(s):// URL",
  )
  key_env = c.rater.api_key_env
  if key_env is not None and not (
    isinstance(key_env, str)
    and re.fullmatch(r"(?:[A-Za-z_][A-Za-z0-9_]*)?", key_env)
  ):
    # The value is not echoed: it may be a key pasted by mistake.
    raise ConfigError(
      "config.rater.api_key_env: must name an environment "
      "variable (letters, digits, _) or be ''/None; put the "
      "API key itself in that variable, never in a config"
    )
  for key in ("rater.two_stage", "rater.constrained", "rater.replay_only"):
    _check(c, key, lambda v: isinstance(v, bool), "must be True or False")
  _check(
    c,
    "rater.openai_constraint",
    lambda v: v in OPENAI_CONSTRAINTS,
    f"must be one of {OPENAI_CONSTRAINTS}",
  )
  for key in (
    "rater.timeout",
    "rater.backoff_base",
    "rater.backoff_max",
    "rater.max_wait",
  ):
    _check(c, key, _pos_float, "must be a finite number > 0")
  _check(
    c,
    "rater.backoff_base",
    lambda v: v <= c.rater.backoff_max,
    f"must not exceed rater.backoff_max={c.rater.backoff_max}",
  )
  _check(
    c,
    "rater.temperature",
    lambda v: isinstance(v, numbers.Real) and 0.0 <= v < float("inf"),
    "must be a finite number >= 0",
  )
  for key, lo in (
    ("rater.max_tokens", 0),
    ("rater.max_retries", 0),
    ("rater.concurrency", 1),
  ):
    _check(c, key, _int(lo), f"must be an integer >= {lo}")
  _check(
    c,
    "rater.cache_dir",
    lambda v: isinstance(v, str),
    "must be a path or '' (no cache)",
  )
  if c.rater.replay_only:
    _check(
      c,
      "rater.cache_dir",
      lambda v: v != "",
      "replay_only answers from the cache, so it needs a cache_dir",
    )
  for name in prompts_lib.TEMPLATE_NAMES:
    template = c.rater.prompt[name]
    if template:
      try:
        prompts_lib.check_template(name, template)
      except ValueError as e:
        _fail(f"rater.prompt.{name}", template, str(e))
  unknown = sorted(set(c.rater.prompt.keys()) - set(prompts_lib.TEMPLATE_NAMES))
  if unknown:
    _fail(
      "rater.prompt",
      unknown,
      f"unknown templates; choose from {prompts_lib.TEMPLATE_NAMES}",
    )


def validate(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every value; returns the config unchanged or raises ConfigError."""
  if c.task not in tasks.task_names():
    _fail("task", c.task, f"unknown task; choose one of {tasks.task_names()}")
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
    ("sac.target_update_period", 1),
  ):
    _check(c, key, _int(lo), f"must be an integer >= {lo}")
  if c.episode_length is not None:
    _check(c, "episode_length", _int(1), "must be an integer >= 1 or None")
  n = c.num_envs
  for key in ("log_every", "eval_every", "total_steps", "seed_steps"):
    _check(
      c,
      key,
      lambda v: v % n == 0,
      f"must be a multiple of num_envs={n} (steps count transitions "
      "over all envs)",
    )
  for key in ("eval_every", "total_steps"):
    _check(
      c,
      key,
      lambda v: v % c.log_every == 0,
      f"must be a multiple of log_every={c.log_every}",
    )
  seed_devices = math.gcd(c.num_seeds, c.num_devices)
  _check(
    c,
    "num_devices",
    lambda v: n % (v // seed_devices) == 0,
    f"the seed axis (num_seeds={c.num_seeds}) takes {seed_devices} of "
    f"the devices, the rest split num_envs={n} evenly and must divide it",
  )
  _check(
    c,
    "replay_capacity",
    lambda v: v >= n,
    f"must hold at least one vectorized step (num_envs={n})",
  )
  _check(
    c,
    "seed_steps",
    lambda v: v <= c.total_steps,
    f"must not exceed total_steps={c.total_steps}",
  )
  for key in ("resume", "progress", "tensorboard"):
    _check(c, key, lambda v: isinstance(v, bool), "must be True or False")
  for key in ("render.height", "render.width"):
    _check(c, key, _int(1), "must be an integer >= 1")
  for key in ("render.rated_frames", "render.rollout_video"):
    _check(c, key, lambda v: isinstance(v, bool), "must be True or False")
  _check(c, "render.fps", _pos_float, "must be a finite number > 0")
  _check(c, "checkpoint.every", _int(0), "must be an integer >= 0")
  _check(
    c,
    "checkpoint.keep",
    _int(2),
    "must be an integer >= 2 (a corrupted latest checkpoint falls back "
    "to the one before)",
  )
  if c.resume:
    _check(
      c,
      "workdir",
      lambda v: isinstance(v, str) and v,
      "resume=True needs the workdir that holds the checkpoints",
    )
  _check(
    c,
    "sac.hidden_sizes",
    lambda v: len(v) >= 1 and all(_int(1)(h) for h in v),
    "must be a non-empty sequence of positive integers",
  )
  for key in (
    "sac.actor_lr",
    "sac.critic_lr",
    "sac.alpha_lr",
    "sac.init_temperature",
    "reward.scale",
  ):
    _check(c, key, _pos_float, "must be a finite number > 0")
  _check(c, "sac.discount", lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)")
  _check(c, "sac.tau", lambda v: 0.0 < v <= 1.0, "must lie in (0, 1]")
  _check(
    c,
    "sac.log_std_min",
    lambda v: v < c.sac.log_std_max,
    f"must be below sac.log_std_max={c.sac.log_std_max}",
  )
  if c.sac.target_entropy is not None:
    _check(
      c,
      "sac.target_entropy",
      lambda v: isinstance(v, numbers.Real) and v == v,
      "must be a number or None",
    )
  _check(
    c,
    "reward.source",
    lambda v: v in REWARD_SOURCES,
    f"must be one of {REWARD_SOURCES}",
  )
  _check(
    c,
    "reward.model",
    lambda v: v in REWARD_MODELS,
    f"must be one of {REWARD_MODELS}",
  )
  if c.reward.model == "cnn":
    smallest = reward_model_lib.ImageCNN().min_frame_size
    _check(
      c,
      "reward.frame_size",
      _int(smallest),
      f"must be an integer >= {smallest}, the smallest frame the CNN's "
      "valid convolutions accept",
    )
  for key, lo in (
    ("reward.ensemble_size", 1),
    ("reward.batch_size", 2),
    ("reward.max_epochs", 1),
    ("reward.min_epochs", 1),
    ("feedback.knn_k", 1),
    ("feedback.unsupervised_steps", 0),
    ("feedback.interval", 1),
    ("feedback.queries", 1),
    ("feedback.budget", 1),
    ("feedback.candidates", 1),
    ("feedback.segment_length", 1),
    ("feedback.warmup_updates", 0),
    ("feedback.max_pending", 1),
  ):
    _check(c, key, _int(lo), f"must be an integer >= {lo}")
  for key, lo in (
    ("feedback.first_session", 0),
    ("feedback.query_window_steps", 1),
  ):
    _check(
      c,
      key,
      lambda v, lo=lo: v is None or _int(lo)(v),
      f"must be an integer >= {lo} or None (derived)",
    )
  _check(
    c,
    "reward.min_epochs",
    lambda v: v <= c.reward.max_epochs,
    f"must not exceed reward.max_epochs={c.reward.max_epochs}",
  )
  _check(
    c,
    "feedback.unsupervised",
    lambda v: isinstance(v, bool),
    "must be True or False",
  )
  _check(
    c,
    "feedback.sampling",
    lambda v: v in SAMPLINGS,
    f"must be one of {SAMPLINGS}",
  )
  _check(
    c,
    "feedback.asynchronous",
    lambda v: isinstance(v, bool),
    "must be True or False",
  )
  if c.feedback.final_wait_s is not None:
    _check(
      c,
      "feedback.final_wait_s",
      lambda v: _pos_float(v) or (isinstance(v, numbers.Real) and v == 0),
      "must be a finite number of seconds >= 0 or None (wait for all)",
    )
  _check(
    c,
    "reward.hidden_sizes",
    lambda v: len(v) >= 1 and all(_int(1)(h) for h in v),
    "must be a non-empty sequence of positive integers",
  )
  _check(
    c, "reward.loss", lambda v: v in ("mae", "ce"), "must be 'mae' or 'ce'"
  )
  _check(
    c,
    "reward.feedback_type",
    lambda v: v in ("rating", "preference"),
    "must be 'rating' or 'preference'",
  )
  if c.reward.feedback_type == "preference":
    for key in ("reward.class_weighted", "reward.stratified"):
      _check(
        c,
        key,
        lambda v: not v,
        "must be False with preference feedback (Bradley-Terry has no "
        "classes to weight or stratify)",
      )
  for key in ("reward.lr", "reward.k"):
    _check(c, key, _pos_float, "must be a finite number > 0")
  _check(
    c, "reward.stop_accuracy", lambda v: 0.0 < v <= 1.0, "must lie in (0, 1]"
  )
  _check(
    c,
    "reward.stop_metric",
    lambda v: v in ("accuracy", "balanced_accuracy"),
    "must be 'accuracy' or 'balanced_accuracy'",
  )
  if c.rater.num_classes is not None:
    _check(c, "rater.num_classes", _int(2), "must be an integer >= 2 or None")
  classes = c.rater.num_classes or tasks.get_task(c.task).num_classes
  _check(
    c,
    "reward.label_smoothing",
    lambda v: 0.0 <= v < 1.0 / classes,
    f"must lie in [0, 1/{classes})",
  )
  _check(
    c, "rater.kind", lambda v: v in RATER_KINDS, f"must be one of {RATER_KINDS}"
  )
  _check(c, "rater.noise", lambda v: 0.0 <= v <= 1.0, "must lie in [0, 1]")
  _check(
    c,
    "rater.noise_kind",
    lambda v: v in scripted_lib.NOISE_KINDS,
    f"must be one of {scripted_lib.NOISE_KINDS}",
  )
  if c.rater.noise_kind == "boundary":
    _check(
      c,
      "rater.noise",
      lambda v: v < 1.0 - 1.0 / classes,
      f"rater.noise_kind='boundary' with {classes} classes reaches "
      f"wrong-rating rates below 1 - 1/{classes} only",
    )
  _check(
    c,
    "rater.tie_tolerance",
    lambda v: 0.0 <= v < 1.0,
    "must lie in [0, 1) (a fraction of the rated range)",
  )
  _check(c, "rater.rated", lambda v: v in RATED, f"must be one of {RATED}")
  if c.rater.range is not None:
    _check(
      c,
      "rater.range",
      lambda v: (
        len(v) == 2
        and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
        and v[0] < v[1]
      ),
      "must be (low, high) finite numbers, low < high",
    )
  if c.rater.kind != "scripted":
    _validate_vlm_rater(c, classes)
  seg_len = c.feedback.segment_length
  episode_length = c.episode_length or tasks.get_task(c.task).episode_length
  _check(
    c,
    "feedback.segment_length",
    lambda v: v <= episode_length,
    f"must not exceed episode_length={episode_length} (a segment lies "
    "inside one episode)",
  )
  if seg_len > 1:
    _check(
      c,
      "rater.kind",
      lambda v: v == "scripted",
      f"must be 'scripted' with feedback.segment_length={seg_len} (a "
      "VLM rater rates one frame)",
    )
  if c.reward.source == "learned":
    _validate_schedule(c)
  return c


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
    _fail(
      first_key,
      first,
      f"with feedback.unsupervised=False the first "
      f"session must follow the seed phase (seed_steps={c.seed_steps}), "
      "or the agent trains on an untrained reward model's output; "
      "leave it None",
    )
  if first < c.seed_steps:
    _fail(first_key, first, f"must be >= seed_steps={c.seed_steps}")
  for key, value in ((first_key, first), ("feedback.interval", f.interval)):
    if value % c.log_every:
      _fail(
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
    ("feedback.query_window_steps", query_window(c)),
  ):
    if transitions < need:
      _fail(
        key,
        transitions,
        f"gives {transitions} transitions; "
        f"segment_length={h} with num_envs={c.num_envs} needs >= "
        f"(2H - 1) x num_envs = {need}",
      )
