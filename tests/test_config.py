import os
import subprocess
import sys

import pytest

from erljax.config import defaults as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_config_is_valid():
  config_lib.validate(config_lib.default())


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("task", "nope", "config.task='nope': unknown task"),
    ("num_envs", 0, "config.num_envs=0: must be an integer >= 1"),
    ("num_seeds", 0, "config.num_seeds=0"),
    ("batch_size", -4, "config.batch_size=-4"),
    (
      "seed_steps",
      1001,
      "config.seed_steps=1001: must be a multiple of num_envs=8",
    ),
    (
      "eval_every",
      7000,
      "config.eval_every=7000: must be a multiple of log_every=5000",
    ),
    (
      "total_steps",
      12000,
      "config.total_steps=12000: must be a multiple of log_every",
    ),
    ("replay_capacity", 4, "config.replay_capacity=4"),
    ("episode_length", 0, "config.episode_length=0"),
    ("sac.discount", 1.0, r"config.sac.discount=1.0: must lie in \[0, 1\)"),
    ("sac.tau", 0.0, "config.sac.tau=0.0"),
    ("sac.actor_lr", float("nan"), "config.sac.actor_lr=nan"),
    ("sac.critic_lr", -1e-3, "config.sac.critic_lr=-0.001"),
    ("sac.hidden_sizes", (256, 0), r"config.sac.hidden_sizes=\(256, 0\)"),
    ("sac.hidden_sizes", (), r"config.sac.hidden_sizes=\(\)"),
    ("sac.log_std_min", 3.0, "config.sac.log_std_min=3.0: must be below"),
    ("reward.source", "vlm?", "config.reward.source='vlm\\?'"),
    ("reward.model", "vit", "config.reward.model='vit': must be one of"),
    (
      "feedback.sampling",
      "entropy",
      "config.feedback.sampling='entropy': must be one of",
    ),
    ("feedback.candidates", 0, "config.feedback.candidates=0"),
    (
      "reward.stop_metric",
      "f1",
      "config.reward.stop_metric='f1': must be 'accuracy' or",
    ),
    (
      "feedback.segment_length",
      0,
      "config.feedback.segment_length=0: must be an integer >= 1",
    ),
    (
      "feedback.segment_length",
      1001,
      "config.feedback.segment_length=1001: must not exceed "
      "episode_length=1000",
    ),
    ("render.video_every", -1, "config.render.video_every=-1: must be an"),
    ("method", "my method", "config.method='my method': must be a non-"),
    ("method", "", "config.method='': must be a non-empty name"),
    ("workdir", "None", "config.workdir='None': must be a folder, or ''"),
    (
      "matmul_precision",
      "fp16",
      "config.matmul_precision='fp16': must be one of",
    ),
  ],
)
def test_bad_value_error_names_key_and_value(key, value, message):
  c = config_lib.default()
  node = c
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(c)


def test_experiment_config_file_loads_every_task():
  sys.path.insert(0, os.path.join(ROOT, "experiments", "configs"))
  try:
    import sac as sac_config  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  from erljax.envs import tasks

  for name in tasks.task_names():
    c = sac_config.get_config(name)
    config_lib.validate(c)
    assert c.task == name
  # FingerSpin's budget is the one shown to learn (results/sac_tasks.md).
  c = sac_config.get_config("FingerSpin")
  assert (c.total_steps, c.updates_per_step, tuple(c.sac.hidden_sizes)) == (
    300_000,
    4,
    (128, 128),
  )


def test_cli_reports_bad_value_and_exits_2():
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "erljax.train",
      "--config=experiments/configs/sac.py:reacher",
      "--config.num_envs=0",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "config.num_envs=0" in proc.stderr


def test_cnn_frame_size_must_fit_the_network():
  c = config_lib.default()
  c.reward.model = "cnn"
  c.reward.frame_size = 47
  config_lib.validate(c)
  c.reward.frame_size = 32
  with pytest.raises(
    config_lib.ConfigError,
    match=r"config.reward.frame_size=32: must be an integer "
    r">= 47",
  ):
    config_lib.validate(c)


def test_segments_need_a_scripted_rater_and_enough_stored_steps():
  c = config_lib.default()
  c.feedback.segment_length = 50
  config_lib.validate(c)  # RbRL's H = 50 with the scripted rater
  c.rater.kind, c.rater.model = "openai", "m"
  with pytest.raises(
    config_lib.ConfigError,
    match="config.rater.kind='openai': must be 'scripted' "
    "with feedback.segment_length=50",
  ):
    config_lib.validate(c)
  c = config_lib.default()
  c.reward.source = "learned"
  c.num_envs, c.feedback.segment_length = 8, 50
  c.seed_steps = c.feedback.first_session = 0
  with pytest.raises(
    config_lib.ConfigError,
    match=r"config.feedback.first_session=0: gives 0 "
    r"transitions; segment_length=50 with num_envs=8 needs "
    r">= \(2H - 1\) x num_envs = 792",
  ):
    config_lib.validate(c)


def _learned(**feedback):
  c = config_lib.default()
  c.reward.source = "learned"
  c.log_every = 1_000
  for k, v in feedback.items():
    c.feedback[k] = v
  return c


def test_first_session_follows_seed_and_pretraining_phases():
  c = _learned()  # seed_steps 1,000 + 9,000 k-NN pre-training steps
  assert config_lib.first_session(config_lib.validate(c)) == 10_000
  c = _learned(unsupervised=False)  # no pre-training: right after seeding
  assert config_lib.first_session(config_lib.validate(c)) == 1_000
  c = _learned(unsupervised_steps=4_000)
  assert config_lib.first_session(config_lib.validate(c)) == 5_000
  c = _learned(first_session=20_000)  # set: pre-training runs until then
  assert config_lib.first_session(config_lib.validate(c)) == 20_000


def test_first_session_without_pretraining_must_follow_the_seed_phase():
  c = _learned(unsupervised=False, first_session=10_000)
  with pytest.raises(
    config_lib.ConfigError,
    match=r"config.feedback.first_session=10000: with "
    r"feedback.unsupervised=False the first session must "
    r"follow the seed phase \(seed_steps=1000\)",
  ):
    config_lib.validate(c)
  c = _learned(unsupervised=False)
  c.log_every = 5_000  # the derived first session (1,000) is mid-chunk
  with pytest.raises(
    config_lib.ConfigError,
    match=r"config.feedback.first_session \(None: "
    r"seed_steps=1000\)=1000: must be a multiple of "
    r"log_every=5000",
  ):
    config_lib.validate(c)


def test_query_window_is_the_last_100_episodes_unless_steps_are_set():
  # The reference's FIFO of 100 complete episodes, whatever the run's
  # length; query_window_steps is an explicit override, else None.
  c = config_lib.validate(_learned())
  assert c.feedback.query_window_episodes == 100
  assert c.feedback.query_window_steps is None
  c.feedback.query_window_steps = 8_000
  assert config_lib.validate(c).feedback.query_window_steps == 8_000


@pytest.mark.parametrize(
  "key,value,message",
  [
    (
      "feedback.query_window_steps",
      0,
      "config.feedback.query_window_steps=0: must be an integer >= 1 or None",
    ),
    (
      "feedback.query_window_steps",
      100,
      r"config.feedback.query_window_steps=100: gives 100 transitions; "
      r"segment_length=50",
    ),
    (
      "feedback.query_window_episodes",
      0,
      "config.feedback.query_window_episodes=0: must be an integer >= 1",
    ),
    (
      "feedback.query_window_episodes",
      -3,
      "config.feedback.query_window_episodes=-3: must be an integer >= 1",
    ),
    (
      "feedback.first_session",
      -5,
      "config.feedback.first_session=-5: must be an integer >= 0 or None",
    ),
    (
      "feedback.unsupervised_steps",
      -1,
      "config.feedback.unsupervised_steps=-1: must be an integer >= 0",
    ),
    (
      "reward.min_epochs",
      0,
      "config.reward.min_epochs=0: must be an integer >= 1",
    ),
    (
      "reward.min_epochs",
      11,
      "config.reward.min_epochs=11: must not exceed reward.max_epochs=10",
    ),
  ],
)
def test_schedule_errors_name_key_and_value(key, value, message):
  c = _learned(segment_length=50)
  section, leaf = key.split(".")
  c[section][leaf] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(c)


def test_erljax_config_names_expand_to_the_packaged_files():
  from erljax import configs  # pylint: disable=g-import-not-at-top

  sac_py = os.path.join(configs.DIRECTORY, "sac.py")
  argv = ["erljax-train", "--config=erljax:sac.py:reacher", "--config.seed=1"]
  assert configs.expand_argv(argv) == [
    "erljax-train",
    f"--config={sac_py}:reacher",
    "--config.seed=1",
  ]
  spaced = configs.expand_argv(["x", "--config", "erljax:sac.py"])
  assert spaced == ["x", "--config", sac_py]
  assert configs.path("runs/my_config.py:a") == "runs/my_config.py:a"
  with pytest.raises(ValueError, match=r"no config 'x.py'; choose one of \["):
    configs.path("erljax:x.py:reacher")
  # The checkout's old path names the same file.
  old = os.path.join(ROOT, "experiments", "configs", "sac.py")
  assert os.path.samefile(old, sac_py)


def test_cnn_frames_name_who_draws_them():
  c = config_lib.default()
  c.reward.model = "cnn"
  c.reward.frames = "opengl"
  config_lib.validate(c)
  c.reward.frames = "vulkan"
  with pytest.raises(
    config_lib.ConfigError,
    match=r"config.reward.frames='vulkan': must be one of \('raycast', "
    r"'opengl'\)",
  ):
    config_lib.validate(c)
