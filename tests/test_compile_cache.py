"""The CLI's persistent compilation cache: on by default, off on request,
and cleared after a process that used it died."""

import os
import subprocess
import sys
import textwrap

import pytest

from erljax.runtime import compile_cache
from erljax.config import defaults as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = textwrap.dedent(
  f"""
  import sys
  sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
  import point_env
  from erljax.config import defaults as config_lib

  def get_config():
    c = config_lib.default()
    c.task = point_env.register()
    c.num_envs = 2
    c.episode_length = 10
    c.total_steps = 40
    c.seed_steps = 20
    c.log_every = 20
    c.eval_every = 20
    c.num_eval_envs = 2
    c.batch_size = 4
    c.replay_capacity = 40
    c.sac.hidden_sizes = (8,)
    return c
  """
)


def _train(config_file, cache_home, **env):
  env = {
    **{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},
    "XDG_CACHE_HOME": str(cache_home),
    "JAX_LOG_COMPILES": "1",  # logs each persistent cache hit
    "PYTHONPATH": os.path.join(ROOT, "src"),
    **env,
  }
  proc = subprocess.run(
    [sys.executable, "-m", "erljax.train", f"--config={config_file}"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr


@pytest.mark.slow  # three CLI runs: ~1 min idle, minutes under load
def test_second_run_loads_its_programs_from_the_user_cache(tmp_path):
  config_file = tmp_path / "tiny.py"
  config_file.write_text(_CONFIG)
  cache = tmp_path / "erljax" / "jax"
  first = _train(config_file, tmp_path)
  programs = ("init", "train_chunk", "evaluate")
  for name in programs:
    assert list(cache.glob(f"jit_{name}-*-cache")), sorted(os.listdir(cache))
    assert f"cache hit for 'jit_{name}'" not in first
  second = _train(config_file, tmp_path)
  for name in programs:
    assert f"cache hit for 'jit_{name}'" in second
  assert not list(cache.glob(".running-*"))  # each run removed its marker
  off = _train(config_file, tmp_path, ERLJAX_COMPILE_CACHE="0")
  assert "cache hit" not in off


def test_cache_left_by_a_dead_process_is_cleared(tmp_path):
  path = tmp_path / "jax"
  path.mkdir()
  (path / "jit_f-0-cache").write_bytes(b"x")
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)  # fmt: skip
  import socket  # pylint: disable=g-import-not-at-top

  marker = f".running-{socket.gethostname()}-{dead.stdout.strip()}"
  (path / f".running-{socket.gethostname()}-{os.getpid()}").touch()
  assert not compile_cache.recover(str(path))  # only live processes
  (path / marker).touch()
  with pytest.warns(UserWarning, match="died while using the compilation"):
    assert compile_cache.recover(str(path))
  assert not path.exists()


def test_default_dir_follows_xdg(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compile_cache.default_dir() == str(tmp_path / "erljax" / "jax")
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert compile_cache.default_dir() == os.path.expanduser(
    "~/.cache/erljax/jax"
  )


def test_compile_cache_key_is_a_bool():
  c = config_lib.default()
  assert c.compile_cache is True
  c.compile_cache = None
  with pytest.raises(
    config_lib.ConfigError,
    match="config.compile_cache=None: must be True or False",
  ):
    config_lib.validate(c)
