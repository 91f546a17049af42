"""The wheel installs and runs: erljax built as a wheel, installed into a new
virtual environment, trains a tiny shipped config (erljax:sac.py) through the
erljax-train console script from a directory outside the checkout.

Slow (it builds and installs the package, then compiles a run): run with
`python -m pytest -m slow tests/test_wheel.py`. The new environment sees the
current interpreter's installed packages (jax, brax, ...) through a .pth file,
so nothing is downloaded, but erljax itself comes from the wheel only.
"""

import glob
import os
import subprocess
import sys
import sysconfig

import pytest

from test_end_to_end import _TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, **kwargs):
  proc = subprocess.run(
    cmd, capture_output=True, text=True, check=False, **kwargs
  )
  assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
  return proc


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_trains_from_elsewhere(tmp_path):
  dist = tmp_path / "dist"
  # Built with the installed setuptools and wheel where present (offline),
  # else in pip's isolated build environment.
  _run(
    [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist)]
    + (["--no-build-isolation"] if _has("wheel") else [])
    + [ROOT],
    timeout=600,
  )
  (wheel,) = glob.glob(str(dist / "erljax-*.whl"))
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
  python = str(venv / "bin" / "python")
  site = _run(
    [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
  ).stdout.strip()
  with open(os.path.join(site, "outer_packages.pth"), "w") as f:
    f.write(sysconfig.get_paths()["purelib"] + "\n")
  _run(
    [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    + ["--ignore-installed", wheel],
    timeout=600,
  )
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  where = _run(
    [python, "-c", "import erljax.configs as c; print(c.__file__)"],
    cwd=elsewhere,
    env=env,
  ).stdout.strip()
  assert where.startswith(site), where  # the wheel's erljax, not a checkout
  proc = _run(
    [str(venv / "bin" / "erljax-train"), "--config=erljax:sac.py:reacher"]
    + _TINY,
    cwd=elsewhere,
    env=env,
    timeout=1800,
  )
  (folder,) = [
    ln[len("results in ") :].rstrip("/")
    for ln in proc.stdout.splitlines()
    if ln.startswith("results in ")
  ]
  for name in ("metrics.jsonl", "curve.png", "config.json"):
    assert (elsewhere / folder / name).is_file(), (name, proc.stdout)
  # Every console script is its module's command line: --help prints the
  # same flags (absl's --help exits 1, argparse's 0: the same code both).
  for name in ("evaluate", "rate", "serve", "collect", "offline"):
    script, module = [
      subprocess.run(
        cmd + ["--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=elsewhere,
        env=env,
        timeout=300,
      )
      for cmd in (
        [str(venv / "bin" / f"erljax-{name}")],
        [python, "-m", f"erljax.{name}"],
      )
    ]
    assert script.returncode == module.returncode, name
    assert "-help" in script.stdout + script.stderr, name
    assert sorted(_flags(script)) == sorted(_flags(module)), name


def _flags(proc) -> list:
  """The --flag names a --help output lists."""
  import re  # pylint: disable=g-import-not-at-top

  return set(re.findall(r"--\[?(?:no)?\]?([a-z_]+)", proc.stdout + proc.stderr))


def _has(module: str) -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top

  return importlib.util.find_spec(module) is not None
