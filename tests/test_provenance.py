"""run_info.json names the code a run imported (erljax.io.provenance)."""

import json
import os
import subprocess

import erljax
from erljax.io import provenance


def _git(cwd, *args):
  subprocess.run(
    ["git", "-C", str(cwd), *args],
    check=True,
    capture_output=True,
    env={
      **os.environ,
      "GIT_AUTHOR_NAME": "t",
      "GIT_AUTHOR_EMAIL": "t@t",
      "GIT_COMMITTER_NAME": "t",
      "GIT_COMMITTER_EMAIL": "t@t",
    },
  )


def test_names_the_imported_directory_by_default():
  info = provenance.code_info()
  assert info["erljax_dir"] == os.path.dirname(os.path.abspath(erljax.__file__))


def test_commit_and_dirty_flag_of_a_git_tree(tmp_path):
  pkg = tmp_path / "src" / "erljax"
  pkg.mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  _git(tmp_path, "init", "-q")
  _git(tmp_path, "add", ".")
  _git(tmp_path, "commit", "-q", "-m", "x")
  head = subprocess.run(
    ["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  clean = provenance.code_info(str(pkg))
  assert clean["git_commit"] == head and clean["git_dirty"] is False
  (pkg / "new.py").write_text("x = 1\n")
  assert provenance.code_info(str(pkg))["git_dirty"] is True


def test_outside_a_git_tree_or_without_git(tmp_path, monkeypatch):
  info = provenance.code_info(str(tmp_path))
  assert info["git_commit"] is None and info["git_dirty"] is None
  monkeypatch.setenv("PATH", str(tmp_path))  # no git executable
  info = provenance.code_info(os.path.dirname(erljax.__file__))
  assert info["git_commit"] is None and info["git_dirty"] is None
  assert info["erljax_dir"] == os.path.dirname(erljax.__file__)


def test_a_resume_appends_a_fresh_run_starts_again(tmp_path):
  provenance.write(str(tmp_path), resumed=False)
  provenance.write(str(tmp_path), resumed=True)
  with open(tmp_path / provenance.FILE) as f:
    assert [s["resumed"] for s in json.load(f)["starts"]] == [False, True]
  provenance.write(str(tmp_path), resumed=False)
  with open(tmp_path / provenance.FILE) as f:
    assert [s["resumed"] for s in json.load(f)["starts"]] == [False]
