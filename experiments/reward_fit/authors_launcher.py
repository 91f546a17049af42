"""Runs the authors' reward training (tunglm2203/erlvlm,
reward_model_vlm_rating.py: RewardModel.train_reward) on labels from an .npz
file, in a Python that has torch; erljax is never imported here, and the
caller's Python never imports torch.

  /tmp/venv_torch/bin/python authors_launcher.py --authors_dir DIR JOB.npz ...

DIR holds the authors' reward_model_vlm_rating.py and conv_net.py (exported
from their repository by compare.py, never committed here). For each JOB.npz
it writes JOB.out.npz.

Input (JOB.npz):
  train_x [N, D] float32   one row per rated step: obs then action (their
                           add_data concatenates them in this order)
  train_y [N] int          the labels, 0..C-1
  session_ends [K] int     the training set after each session is the first
                           session_ends[k] rows (non-decreasing from >= 1,
                           last == N)
  eval_<name> [M, D]       rows to predict r_hat for (any number of names)
  fit_seeds [F] int        one fit per seed
  settings                 JSON string: ensemble_size, lr, hidden_layers,
                           hidden_size, loss, class_weighted, stratified,
                           batch_size, max_epochs, min_epochs,
                           stop_accuracy, k, num_classes
Output (JOB.out.npz):
  r_hat_<name> [F, M]      ensemble mean (their r_hat_batch) of each fit
  train_accuracy [F, K]    the members' mean training accuracy of the last
                           epoch of each session (what their loop stops on)
  epochs [F, K]            epochs run in each session
  settings_used            JSON: their constructor arguments and loop values

What this launcher does around their code (each a line of theirs it cannot
take as it is):
  * their module sets `device = 'cuda'` (line 16); set to "cpu" after import.
  * their module imports vlm_query_metaworld (Gemini client) and
    sklearn.metrics, used only to ask the VLM and score its labels; where
    they do not import, empty stand-ins are registered (train_reward never
    calls them).
  * the session loop of train_PEBBLE_VLM.py `learn_reward` (lines 196-202:
    up to `reward_update` calls of train_reward, stop once the members' mean
    accuracy > 0.97 and epoch > least_reward_update) is written out here,
    since learn_reward also draws and labels queries.
  * the label store: their __init__ allocates state queries as
    [capacity, size_segment, ds + da] (line 144); train_reward's state
    branch keeps that segment axis in r_hat and fails on it (MAE: a shape
    error in mae_loss; CE: "Expected target size [128, 3], got [128]"),
    as the image branch does not, which drops it (`sa_t_1[:, -1]`, lines
    795, 871). The rows are stored as [capacity, ds + da], the shape the
    image branch trains on, so train_reward runs as it does for images.
  * train_batch_size is set to settings.batch_size (their line 163 fixes
    128 for state inputs; the same unless a run changed reward.batch_size).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import io
import json
import os
import random
import sys
import types
from typing import Any, Dict, List

import numpy as np

MODULE = "reward_model_vlm_rating"
SETTINGS = (
  "ensemble_size",
  "lr",
  "hidden_layers",
  "hidden_size",
  "loss",
  "class_weighted",
  "stratified",
  "batch_size",
  "max_epochs",
  "min_epochs",
  "stop_accuracy",
  "k",
  "num_classes",
)
CHUNK = 8192  # rows per r_hat call


def _stand_ins() -> None:
  """Empty modules for the imports train_reward never uses, where absent."""
  os.environ.setdefault("TQDM_DISABLE", "1")
  for name, attrs in (
    ("vlm_query_metaworld", ("vlm_reasoning_rating_metaworld",)),
    ("sklearn.metrics", ("confusion_matrix",)),
  ):
    try:
      importlib.import_module(name)
    except ImportError:
      for part in (name.split(".")[0], name):
        if part not in sys.modules:
          mod = types.ModuleType(part)
          # torch looks modules up by spec (importlib.util.find_spec).
          mod.__spec__ = importlib.machinery.ModuleSpec(part, None)
          sys.modules[part] = mod
      for a in attrs:
        setattr(sys.modules[name], a, None)


def load_authors(authors_dir: str) -> types.ModuleType:
  """Their reward_model_vlm_rating module from authors_dir, on the CPU."""
  path = os.path.join(authors_dir, MODULE + ".py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--authors_dir={authors_dir!r}: no {MODULE}.py")
  sys.path.insert(0, os.path.abspath(authors_dir))
  _stand_ins()
  mod = importlib.import_module(MODULE)
  mod.device = "cpu"
  torch = sys.modules.get("torch")
  if torch is not None:
    # One thread: these MLPs gain nothing from more, and on a shared CPU
    # idle threads spinning cost several times the fit's own time.
    torch.set_num_threads(1)
  return mod


def check_settings(settings: Dict[str, Any]) -> None:
  missing = [k for k in SETTINGS if k not in settings]
  if missing:
    raise ValueError(f"settings: missing {missing}")


def _seed(seed: int) -> None:
  np.random.seed(seed)  # their generate_training_indices shuffles with it
  random.seed(seed)
  torch = sys.modules.get("torch")
  if torch is not None:
    torch.manual_seed(seed)


def _no_grad():
  torch = sys.modules.get("torch")
  return torch.no_grad() if torch is not None else contextlib.nullcontext()


def fit(mod, settings: Dict[str, Any], x, y, session_ends, seed: int):
  """One fit: their RewardModel trained session by session; returns the
  model, the accuracy and epochs of each session."""
  _seed(seed)
  n, d = x.shape
  model = mod.RewardModel(
    d,
    0,
    ensemble_size=settings["ensemble_size"],
    lr=settings["lr"],
    size_segment=1,
    activation="tanh",
    capacity=n + 1,
    teacher_num_ratings=settings["num_classes"],
    vlm_feedback=False,
    image_reward=False,
    reward_model_layers=settings["hidden_layers"],
    reward_model_H=settings["hidden_size"],
    softmax_temp=settings["k"],
    reward_loss=settings["loss"],
    weighting_loss=settings["class_weighted"],
    batch_stratify=settings["stratified"],
  )
  model.buffer_seg1 = np.zeros((n + 1, d), np.float32)
  model.train_batch_size = settings["batch_size"]
  least_reward_update = settings["min_epochs"] - 2
  accuracy: List[float] = []
  epochs: List[int] = []
  start = 0
  for end in session_ends:
    model.put_queries(x[start:end], y[start:end, None].astype(np.float32))
    start = end
    for epoch in range(settings["max_epochs"]):
      model.train()
      with contextlib.redirect_stdout(io.StringIO()):
        train_acc, _ = model.train_reward()
      total_acc = float(np.mean(train_acc))
      if total_acc > settings["stop_accuracy"] and epoch > least_reward_update:
        break
    accuracy.append(total_acc)
    epochs.append(epoch + 1)
  return model, accuracy, epochs


def r_hat(model, x: np.ndarray) -> np.ndarray:
  """Their ensemble mean r_hat_batch over rows x [M, D] -> [M]."""
  model.eval()
  with _no_grad():
    parts = [
      np.asarray(model.r_hat_batch(x[i : i + CHUNK])).reshape(-1)
      for i in range(0, x.shape[0], CHUNK)
    ]
  return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def run_job(mod, path: str) -> str:
  """Fits JOB.npz once per fit seed and writes JOB.out.npz; its path."""
  with np.load(path) as z:
    job = {k: z[k] for k in z.files}
  settings = json.loads(str(job["settings"]))
  check_settings(settings)
  x = job["train_x"].astype(np.float32)
  y = job["train_y"].astype(np.int64)
  ends = [int(e) for e in job["session_ends"]]
  if not ends or ends[0] < 1 or ends[-1] != x.shape[0] or sorted(ends) != ends:
    raise ValueError(
      f"{path}: session_ends={ends} must rise from >= 1 to {x.shape[0]}"
    )
  names = [k[len("eval_") :] for k in job if k.startswith("eval_")]
  out: Dict[str, List[Any]] = {f"r_hat_{k}": [] for k in names}
  out["train_accuracy"], out["epochs"] = [], []
  for seed in job["fit_seeds"]:
    model, acc, ep = fit(mod, settings, x, y, ends, int(seed))
    for k in names:
      out[f"r_hat_{k}"].append(r_hat(model, job[f"eval_{k}"]))
    out["train_accuracy"].append(acc)
    out["epochs"].append(ep)
  used = {
    "their_file": getattr(mod, "__file__", MODULE),
    "train_batch_size": settings["batch_size"],
    "least_reward_update": settings["min_epochs"] - 2,
    "reward_update": settings["max_epochs"],
    "stop_accuracy": settings["stop_accuracy"],
    **settings,
  }
  dest = path[: -len(".npz")] + ".out.npz"
  np.savez(
    dest,
    settings_used=json.dumps(used),
    **{k: np.asarray(v) for k, v in out.items()},
  )
  return dest


def main(argv=None) -> List[str]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--authors_dir", required=True)
  p.add_argument("jobs", nargs="+", help="JOB.npz files")
  a = p.parse_args(argv)
  mod = load_authors(a.authors_dir)
  done = [run_job(mod, j) for j in a.jobs]
  for d in done:
    print(d, flush=True)
  return done


if __name__ == "__main__":
  main()
