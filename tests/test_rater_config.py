"""rater.* config keys, their validation and the raters.make factory."""

import os

import numpy as np
import pytest

from erljax.config import defaults as config_lib
from erljax.envs import tasks
from erljax.raters import api as raters
from erljax.raters.api import Queries


def _vlm(kind="openai", **overrides):
  c = config_lib.default()
  c.rater.kind = kind
  c.rater.model = "some-vlm"
  for k, v in overrides.items():
    c.rater[k] = v
  return c


def test_scripted_factory_bins_the_tasks_rating_signal():
  c = config_lib.default()
  c.rater.noise, c.rater.noise_kind = 0.3, "neighbour"
  config_lib.validate(c)
  seed = 1_000_003 * 2 + 7
  made = raters.make(c.rater, "reacher", 3, seed)
  low, high = tasks.get_task("reacher").rated_range
  ref = raters.ScriptedRater(
    3, low, high, noise=0.3, noise_kind="neighbour", seed=seed
  )
  assert made == ref and made.needs_frames is False
  returns = np.linspace(-0.6, 0.1, 64)
  q = Queries(true_return=returns)
  np.testing.assert_array_equal(made.rate(q).labels, ref.rate(q).labels)


def test_scripted_factory_passes_boundary_noise_and_tie_tolerance():
  c = config_lib.default()
  c.rater.noise, c.rater.noise_kind = 0.2, "boundary"
  c.rater.tie_tolerance = 0.05
  config_lib.validate(c)
  made = raters.make(c.rater, "CartpoleSwingup", 3, seed=4, segment_length=2)
  assert made == raters.ScriptedRater(
    3, 0.0, 2.0, noise=0.2, noise_kind="boundary", seed=4, tie_tolerance=0.05
  )
  # 3 bins of width 2/3; sigma = 0.3772 bin widths (tests/test_raters.py).
  assert made.sigma == pytest.approx(0.3772 * 2 / 3, abs=1e-4)
  # Ties within 0.05 * 2 = 0.1 of the segment-return range.
  got = made.prefer(
    Queries(true_return=np.array([1.0, 1.0])),
    Queries(true_return=np.array([1.09, 1.5])),
  )
  np.testing.assert_array_equal(got.answered, [False, True])


def test_rating_study_config_has_the_papers_conditions(monkeypatch):
  # Class-independent noise (issue 29), k-NN pre-training with the first
  # session at 10k, queries from the last 100 completed episodes.
  monkeypatch.syspath_prepend(
    os.path.join(os.path.dirname(__file__), "..", "experiments", "configs")
  )
  import rating  # pylint: disable=g-import-not-at-top

  for method in rating.METHODS:
    c = config_lib.validate(rating.get_config(f"reacher,{method}"))
    assert (c.rater.noise_kind, c.rater.tie_tolerance) == ("uniform", 0.05)
    assert c.feedback.unsupervised and config_lib.first_session(c) == 10_000
    assert c.feedback.query_window_steps is None
    assert c.feedback.query_window_episodes == 100
  d = config_lib.default()
  assert (d.rater.noise_kind, d.rater.tie_tolerance) == ("uniform", 0.0)


@pytest.mark.parametrize(
  "key,value,match",
  [
    (
      "noise_kind",
      "bogus",
      r"config.rater.noise_kind='bogus': must be one "
      r"of \('uniform', 'neighbour', 'boundary'\)",
    ),
    (
      "tie_tolerance",
      1.5,
      r"config.rater.tie_tolerance=1.5: must lie in "
      r"\[0, 1\)",
    ),
    ("tie_tolerance", -0.1, r"config.rater.tie_tolerance=-0.1"),
  ],
)
def test_scripted_noise_keys_are_validated(key, value, match):
  c = config_lib.default()
  c.rater[key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(c)


def test_boundary_noise_must_lie_below_one_minus_one_over_n():
  c = config_lib.default()
  c.rater.noise_kind, c.rater.num_classes = "boundary", 2
  c.rater.noise = 0.5
  with pytest.raises(
    config_lib.ConfigError,
    match=r"config.rater.noise=0.5: rater.noise_kind="
    r"'boundary' with 2 classes",
  ):
    config_lib.validate(c)
  c.rater.noise = 0.49
  config_lib.validate(c)


def test_scripted_factory_rates_the_reward_over_a_given_range():
  c = config_lib.default()
  c.rater.rated, c.rater.range = "reward", (-1.0, 0.0)
  config_lib.validate(c)
  made = raters.make(c.rater, "reacher", 2, seed=3)
  assert (made.low, made.high) == (-1.0, 0.0)
  labels = made.rate(Queries(true_return=np.array([-0.9, -0.2]))).labels
  np.testing.assert_array_equal(labels, [0, 1])


def test_scripted_factory_bins_segment_returns_over_h_times_the_range():
  c = config_lib.default()
  made = raters.make(c.rater, "CartpoleSwingup", 3, seed=0, segment_length=50)
  assert (made.low, made.high) == (0.0, 50.0)
  # RbRL's bins: thirds of the segment-return range.
  labels = made.rate(Queries(true_return=np.array([16.0, 17.0, 34.0]))).labels
  np.testing.assert_array_equal(labels, [0, 1, 2])


def test_vlm_factory_refuses_segments():
  c = _vlm("openai")
  with pytest.raises(ValueError, match="segment_length=5: a VLM rater"):
    raters.make(c.rater, "reacher", 3, seed=0, segment_length=5)


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("rated", "frames", "rater.rated='frames': must be one of"),
    ("range", (0.0, -1.0), r"rater.range=\(0.0, -1.0\): must be"),
    ("range", (0.0, float("nan")), "rater.range="),
  ],
)
def test_rated_and_range_are_validated(key, value, match):
  c = config_lib.default()
  c.rater[key] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate(c)


@pytest.mark.parametrize(
  "kind,cls,url,key_env",
  [
    (
      "openai",
      raters.OpenAIRater,
      "http://127.0.0.1:8000/v1",
      "OPENAI_API_KEY",
    ),
    (
      "gemini",
      raters.GeminiRater,
      "https://generativelanguage.googleapis.com",
      "GEMINI_API_KEY",
    ),
    ("ollama", raters.OllamaRater, "http://127.0.0.1:11434", ""),
  ],
)
def test_vlm_factory_defaults(kind, cls, url, key_env):
  c = config_lib.validate(_vlm(kind))
  r = raters.make(c.rater, "pusher", 2, seed=5)
  assert type(r) is cls and r.needs_frames
  assert (r.base_url, r.api_key_env) == (url, key_env)
  assert r.instruction == tasks.get_task("pusher").instruction
  assert r.subject == tasks.get_task("pusher").subject == "a robot arm"
  assert r.class_names == ("Bad", "Good")
  assert (r.model, r.rating_model, r.seed) == ("some-vlm", "some-vlm", 5)
  assert r.two_stage and r.constrained and r.cache is None
  assert (r.client.timeout, r.client.max_retries, r.client.concurrency) == (
    60.0,
    5,
    8,
  )


def test_vlm_factory_passes_settings_through(tmp_path):
  c = _vlm(
    "openai",
    base_url="https://h:1/v1/",
    api_key_env="MY_KEY",
    rating_model="small",
    two_stage=False,
    openai_constraint="structured_outputs",
    timeout=3.0,
    max_retries=1,
    concurrency=2,
    cache_dir=str(tmp_path),
    replay_only=True,
  )
  c.rater.prompt.single = "Rate {image} for [{instruction}]: {classes}"
  config_lib.validate(c)
  r = raters.make(
    c.rater, "reacher", 3, seed=0, instruction="do it", subject="a toy"
  )
  assert (r.base_url, r.api_key_env, r.rating_model) == (
    "https://h:1/v1",
    "MY_KEY",
    "small",
  )
  assert not r.two_stage and r.constraint == "structured_outputs"
  assert r.replay_only and r.cache.root == str(tmp_path)
  assert r.prompts.single == "Rate {image} for [{instruction}]: {classes}"
  assert r.prompts.analysis == raters.Prompts().analysis
  assert (r.instruction, r.subject) == ("do it", "a toy")
  assert (r.client.timeout, r.client.max_retries, r.client.concurrency) == (
    3.0,
    1,
    2,
  )


@pytest.mark.parametrize(
  "overrides,message",
  [
    ({"kind": "claude"}, "config.rater.kind='claude': must be one of"),
    ({"model": ""}, "config.rater.model='': rater.kind='openai' needs a model"),
    (
      {"noise": 0.1},
      "config.rater.noise=0.1: label noise is simulated by "
      "the scripted rater only",
    ),
    (
      {"tie_tolerance": 0.1},
      "config.rater.tie_tolerance=0.1: preference "
      "ties are simulated by the scripted rater only",
    ),
    ({"num_classes": 6}, r"VLM raters have class names for \[2, 3, 4, 5\]"),
    ({"base_url": "localhost:8000"}, "config.rater.base_url='localhost:8000'"),
    ({"replay_only": True}, "config.rater.cache_dir=None: replay_only"),
    (
      {"replay_only": True, "cache_dir": ""},
      "config.rater.cache_dir='': replay_only",
    ),
    ({"breaker_failures": 0}, "config.rater.breaker_failures=0: must be an"),
    ({"breaker_probes": 0}, "config.rater.breaker_probes=0: must be an"),
    ({"breaker_drop_rate": 0.0}, "config.rater.breaker_drop_rate=0.0: must"),
    ({"breaker_drop_rate": 1.5}, "config.rater.breaker_drop_rate=1.5: must"),
    ({"breaker_pause": -1.0}, "config.rater.breaker_pause=-1.0: must be"),
    (
      {"requests_per_minute": -5.0},
      "config.rater.requests_per_minute=-5.0: must be a finite number > 0",
    ),
    ({"max_requests": -1}, "config.rater.max_requests=-1: must be an"),
    ({"timeout": 0.0}, "config.rater.timeout=0.0: must be a finite number"),
    ({"concurrency": 0}, "config.rater.concurrency=0: must be an integer >= 1"),
    ({"max_retries": -1}, "config.rater.max_retries=-1"),
    (
      {"backoff_base": 100.0},
      "config.rater.backoff_base=100.0: must not exceed rater.backoff_max=60.0",
    ),
    ({"temperature": -0.5}, "config.rater.temperature=-0.5"),
    ({"openai_constraint": "both"}, "config.rater.openai_constraint='both'"),
    (
      {"prompt.rating": "no analysis here"},
      r"config.rater.prompt.rating='no analysis here': .*needs field "
      r"\{analysis\}",
    ),
    ({"prompt.analysis": "{image} {oops}"}, r"unknown fields \['oops'\]"),
  ],
)
def test_bad_vlm_values_name_key_and_value(overrides, message):
  c = _vlm()
  for k, v in overrides.items():
    if k == "num_classes":
      c.rater.num_classes = v
    elif k.startswith("prompt."):
      c.rater.prompt[k.split(".")[1]] = v
    else:
      c.rater[k] = v
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(c)


def test_unknown_prompt_template_key():
  c = _vlm()
  c.rater.prompt.ratings = "{analysis}"
  with pytest.raises(config_lib.ConfigError, match="unknown templates"):
    config_lib.validate(c)


def test_a_key_pasted_into_api_key_env_is_not_echoed():
  c = _vlm(api_key_env="sk-proj-ABCdef123-secret")
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert "api_key_env" in str(e.value)
  assert "secret" not in str(e.value) and "sk-proj" not in str(e.value)


# --- keys stay home ---------------------------------------------------------


def _config_error(c):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  return str(e.value)


@pytest.mark.parametrize(
  "url,secret",
  [
    ("https://alice:hunter2-SECRET@proxy.example.com/v1", "hunter2-SECRET"),
    ("https://sk-SECRET-token@proxy.example.com/v1", "sk-SECRET-token"),
    ("https://proxy.example.com/v1?key=AIza-SECRET", "AIza-SECRET"),
    ("ftp://bob:pw-SECRET@example.com", "pw-SECRET"),
    ("https://[SECRET-not-an-address/v1", "SECRET"),
  ],
)
def test_base_url_with_credentials_is_rejected_without_echoing_them(
  url, secret
):
  message = _config_error(_vlm(base_url=url, api_key_env="K"))
  assert "config.rater.base_url" in message
  assert secret not in message and "SECRET" not in message
  with pytest.raises(ValueError) as e:
    raters.OpenAIRater(
      model="m",
      instruction="i",
      subject="s",
      num_classes=3,
      base_url=url,
      api_key_env="K",
    )
  assert "SECRET" not in str(e.value)


@pytest.mark.parametrize(
  "kind,url",
  [
    ("openai", "https://my-proxy.example.com/v1"),
    ("openai", "http://127.0.0.1:9000/v1"),
    ("gemini", "https://gemini-proxy.example.com"),
    ("gemini", "http://localhost:8080"),
  ],
)
def test_a_typed_base_url_needs_its_key_variable_named(kind, url):
  message = _config_error(_vlm(kind, base_url=url))
  assert "config.rater.api_key_env" in message and url in message
  for key_env in ("", "MY_PROXY_KEY"):  # named: none, or that one
    config_lib.validate(_vlm(kind, base_url=url, api_key_env=key_env))


@pytest.mark.parametrize(
  "kind,url",
  [
    ("openai", ""),
    ("openai", "http://127.0.0.1:8000/v1/"),
    ("openai", "https://api.openai.com/v1"),
    ("gemini", ""),
    ("gemini", "https://generativelanguage.googleapis.com/"),
    ("ollama", "http://192.168.1.20:11434"),  # no default key variable
  ],
)
def test_default_key_variables_go_to_their_own_service(kind, url):
  config_lib.validate(_vlm(kind, base_url=url))


@pytest.mark.parametrize(
  "url,ok",
  [
    ("http://10.0.0.5:8000/v1", False),
    ("http://gpu-box.lan:8000/v1", False),
    ("http://[fe80::1]:8000/v1", False),
    ("http://localhost.evil.com:8000/v1", False),
    ("https://10.0.0.5:8000/v1", True),
    ("http://localhost:8000/v1", True),
    ("http://127.3.4.5:8000/v1", True),
    ("http://[::1]:8000/v1", True),
  ],
)
def test_a_key_goes_over_plain_http_only_to_loopback(url, ok):
  c = _vlm(base_url=url, api_key_env="OPENAI_API_KEY")
  if ok:
    config_lib.validate(c)
  else:
    message = _config_error(c)
    assert "plain http" in message and url in message
  # Without a key any host will do.
  config_lib.validate(_vlm(base_url=url, api_key_env=""))
  config_lib.validate(_vlm("ollama", base_url=url))


def test_scripted_rater_ignores_vlm_keys():
  c = config_lib.default()
  c.rater.timeout = -1.0  # not read by the scripted rater
  config_lib.validate(c)
