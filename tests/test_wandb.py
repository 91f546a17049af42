"""The optional Weights & Biases writer (erljax.io.metrics), against a
stand-in `wandb` module: what is logged, at which step, under which id."""

import importlib.machinery
import os
import sys
import types

import pytest

from erljax.config import defaults as config_lib
from erljax.io import metrics as metrics_writer

EVAL = {
  "kind": "eval",
  "env_steps": 100,
  "eval_return": 5.0,
  "eval_return_per_seed": [4.0, 6.0],
  "eval_return_std": 1.0,
  "critic_loss": 0.5,
}
FEEDBACK = {
  "kind": "feedback",
  "env_steps": 150,
  "session": 1,
  "queries_sent": 50,
  "seconds": 2.0,
  "label_accuracy": [0.5, 1.0],
}


class _Run:
  def __init__(self, **kwargs):
    self.init = kwargs
    self.logged = []
    self.finished = False

  def log(self, data, step):
    self.logged.append((step, dict(data)))

  def finish(self):
    self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
  runs = []

  def init(**kwargs):
    runs.append(_Run(**kwargs))
    return runs[-1]

  monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
  return runs


def _writer(workdir, resume_step=None, **wandb):
  return metrics_writer.MetricsWriter(
    str(workdir),
    [0, 1],
    tensorboard=False,
    resume_step=resume_step,
    wandb={"project": "p", "entity": "", "mode": "offline", **wandb},
    config={"task": "reacher"},
  )


def test_scalars_go_to_wandb_at_their_env_step(fake_wandb, tmp_path):
  w = _writer(tmp_path)
  w.write(EVAL)
  w.write(FEEDBACK)
  w.close()
  (run,) = fake_wandb
  assert run.init["project"] == "p" and run.init["mode"] == "offline"
  assert run.init["entity"] is None and run.init["dir"] == str(tmp_path)
  assert run.init["config"] == {"task": "reacher"}
  assert run.logged == [
    (100, {"eval/eval_return": 5.0, "train/critic_loss": 0.5}),
    (
      150,
      {
        "feedback/session": 1.0,
        "feedback/queries_sent": 50.0,
        "feedback/seconds": 2.0,
        "feedback/label_accuracy": 0.75,
      },
    ),
  ]
  assert run.logged[0][1] == metrics_writer.scalars(EVAL)
  assert run.finished


def test_a_resumed_run_continues_the_wandb_run(fake_wandb, tmp_path):
  _writer(tmp_path).close()
  with open(os.path.join(tmp_path, "wandb_run_id")) as f:
    first = f.read().strip()
  _writer(tmp_path, resume_step=100).close()
  _writer(tmp_path).close()  # a fresh run in the folder: a new W&B run
  ids = [r.init["id"] for r in fake_wandb]
  assert ids[0] == first and ids[1] == first and ids[2] != first
  assert all(r.init["resume"] == "allow" for r in fake_wandb)


def test_no_project_no_wandb(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "wandb", None)  # importing it would fail
  w = metrics_writer.MetricsWriter(
    str(tmp_path), [0], tensorboard=False, wandb={"project": ""}
  )
  w.write(EVAL)
  w.close()
  assert not os.path.exists(os.path.join(tmp_path, "wandb_run_id"))


def _validate(**wandb):
  c = config_lib.default()
  c.workdir = "runs/x"
  with c.wandb.ignore_type():
    for k, v in wandb.items():
      c.wandb[k] = v
  config_lib.validate(c)


def test_wandb_config_is_validated(monkeypatch):
  with pytest.raises(config_lib.ConfigError, match="config.wandb.mode='cloud'"):
    _validate(mode="cloud")
  with pytest.raises(config_lib.ConfigError, match="config.wandb.entity=3"):
    _validate(entity=3)
  # Asked for, not installed: named before anything is built.
  monkeypatch.setitem(sys.modules, "wandb", None)
  with pytest.raises(config_lib.ConfigError, match="pip install wandb"):
    _validate(project="p")
  fake = types.ModuleType("wandb")
  fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
  monkeypatch.setitem(sys.modules, "wandb", fake)
  _validate(project="p")
  c = config_lib.default()
  c.wandb.project = "p"
  with pytest.raises(config_lib.ConfigError, match="needs a workdir"):
    config_lib.validate(c)
