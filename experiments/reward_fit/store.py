"""The labelled queries of a finished erljax rating run, read from its
checkpoint.

Where they live: the latest checkpoint under `<run>/checkpoints/<step>/`
holds the feedback loop's rating sets (erljax.rewards.queries.RatingSet, one per
seed, stacked on a leading seed axis) at the tree paths
"['loop']['rating_sets'].<field>": obs [S, cap, 1, H, O], action
[S, cap, 1, H, A], label [S, cap] (the class the rater answered, label noise
included), true_reward [S, cap, 1] (the true value of the rated quantity,
kept for diagnostics), size [S] and insert_pos [S] (a ring: once full, the
oldest row is at insert_pos). The replay buffer is at
"['train'].buffer.data.<field>". `metrics.jsonl` holds one "feedback" record
per session with "ratings_stored" [S], the rating set's size after it.

The noise-free label of a stored row is recomputed from its stored true
value by the run's scripted rater without noise (its bins; the same rule
the run's `label_accuracy` uses): erljax does not store it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Dict, List, Tuple

import ml_collections
import numpy as np

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
)
# pylint: disable=g-import-not-at-top,wrong-import-position
import refit_ratings  # noqa: E402
from erljax.envs import tasks  # noqa: E402


@dataclasses.dataclass
class StoredLabels:
  """One run's labelled queries, rows in the order they were stored.

  S seeds, N = the most rows any seed stored (rows past size[s] are
  padding), O / A obs / action size, M buffer transitions per seed.
  """

  config: ml_collections.ConfigDict
  step: int  # env steps of the checkpoint read
  num_classes: int
  obs: np.ndarray  # [S, N, O] float32
  action: np.ndarray  # [S, N, A] float32
  label: np.ndarray  # [S, N] int32, as the rater answered (noise included)
  clean: np.ndarray  # [S, N] int32, recomputed from true at noise 0
  true: np.ndarray  # [S, N] float32, the rated quantity's true value
  size: np.ndarray  # [S] int
  # Per seed, the rating set's size after each session (last == size[s]);
  # [size[s]] when the run's metrics.jsonl has no session records.
  sessions: List[List[int]]
  buffer_obs: np.ndarray  # [S, M, O]
  buffer_action: np.ndarray  # [S, M, A]
  buffer_reward: np.ndarray  # [S, M] the env reward (true_reward)


def _chronological(x: np.ndarray, size: int, insert_pos: int) -> np.ndarray:
  """Rows of one seed's ring oldest first: [size, ...]."""
  if size < x.shape[0]:
    return x[:size]
  return np.roll(x, -insert_pos, axis=0)


def session_sizes(
  run_dir: str, step: int, num_seeds: int
) -> Tuple[List[List[int]], List[int]]:
  """Per seed, the rating set's size after each session up to `step`, and
  the ratings answered in all (more than the set's capacity: the ring has
  overwritten rows), from the feedback records of run_dir/metrics.jsonl
  (the last record of a session counts: a resumed run may log one again);
  ([], []) without records."""
  path = os.path.join(run_dir, "metrics.jsonl")
  by_session: Dict[int, Tuple[List[int], List[int]]] = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        if (
          rec.get("kind") == "feedback"
          and rec.get("env_steps", 0) <= step
          and "ratings_stored" in rec
        ):
          by_session[rec["session"]] = (
            [int(x) for x in rec["ratings_stored"]],
            [int(x) for x in rec.get("answered", [0] * num_seeds)],
          )
  rows = [by_session[k] for k in sorted(by_session)]
  if not rows:
    return [], []
  sizes = [[r[0][s] for r in rows] for s in range(num_seeds)]
  answered = [sum(r[1][s] for r in rows) for s in range(num_seeds)]
  return sizes, answered


def read(run_dir: str) -> StoredLabels:
  """The stored labels of the ERL-VLM / RbRL run in run_dir (its latest
  checkpoint). Raises ValueError naming the setting this tool cannot
  compare: preferences, segments longer than one step."""
  config, step, rs, buf = refit_ratings.read(run_dir)
  seg = config.feedback.get("segment_length", 1)
  if seg != 1:
    raise ValueError(
      f"{run_dir}: feedback.segment_length={seg}; the comparison is of "
      "one-step ratings (the authors' train_reward rates single steps)"
    )
  task = tasks.get_task(config.task)
  num_classes = config.rater.num_classes or task.num_classes
  clean = refit_ratings.noisy_labels(config, rs, 0.0, seed=0)
  sizes = np.asarray(rs.size).astype(int)
  ins = np.asarray(rs.insert_pos).astype(int)
  n = int(sizes.max())
  s_count = sizes.shape[0]
  fields = {
    "obs": np.asarray(rs.obs)[:, :, 0, 0],
    "action": np.asarray(rs.action)[:, :, 0, 0],
    "label": np.asarray(rs.label),
    "clean": clean,
    "true": np.asarray(rs.true_reward)[:, :, 0],
  }
  out = {}
  for k, x in fields.items():
    rows = np.zeros((s_count, n) + x.shape[2:], x.dtype)
    for s in range(s_count):
      rows[s, : sizes[s]] = _chronological(x[s], sizes[s], ins[s])
    out[k] = rows
  sessions, answered = session_sizes(run_dir, step, s_count)
  if not sessions or max(answered) > fields["label"].shape[1]:
    # Without records, or once the ring overwrote rows, the stored rows no
    # longer split into the run's sessions.
    sessions = [[int(x)] for x in sizes]
  return StoredLabels(
    config=config,
    step=step,
    num_classes=int(num_classes),
    obs=out["obs"].astype(np.float32),
    action=out["action"].astype(np.float32),
    label=out["label"].astype(np.int32),
    clean=out["clean"].astype(np.int32),
    true=out["true"].astype(np.float32),
    size=sizes,
    sessions=sessions,
    buffer_obs=np.asarray(buf["obs"], np.float32),
    buffer_action=np.asarray(buf["action"], np.float32),
    buffer_reward=np.asarray(buf["true_reward"], np.float32),
  )


def held_out(size: int, fraction: float, seed: int) -> np.ndarray:
  """[size] bool: the rows held out of training, a fixed random
  round(fraction * size) of them (at least one, at most size - 1)."""
  k = min(max(int(round(fraction * size)), 1), size - 1)
  mask = np.zeros((size,), bool)
  mask[np.random.default_rng(seed).permutation(size)[:k]] = True
  return mask


def split(
  stored: StoredLabels, fraction: float, seed: int, schedule: str
) -> List[Dict[str, np.ndarray]]:
  """Per seed: train rows (oldest first) with the session ends counted in
  train rows, and the held-out rows. schedule "sessions" replays the run's
  sessions (the training set grows as it did; a session that stored no
  train row still trains, as in the run), "final" is one fit on all train
  rows. Every seed gets the same number of sessions: leading sessions in
  which some seed has no train row yet are merged into the next one."""
  holds, ends = [], []
  for s in range(stored.size.shape[0]):
    n = int(stored.size[s])
    holds.append(held_out(n, fraction, seed + s))
    train_before = np.concatenate([[0], np.cumsum(~holds[-1])])
    rows = stored.sessions[s] if schedule == "sessions" else [n]
    ends.append([int(train_before[e]) for e in rows])
  ends = np.asarray(ends, np.int64)  # [S, K]
  first = int(np.argmax(np.all(ends > 0, axis=0)))
  out = []
  for s, hold in enumerate(holds):
    n = int(stored.size[s])
    row = {
      k: getattr(stored, k)[s, :n]
      for k in ("obs", "action", "label", "clean", "true")
    }
    out.append(
      {
        **{f"train_{k}": v[~hold] for k, v in row.items()},
        **{f"held_{k}": v[hold] for k, v in row.items()},
        "session_ends": ends[s, first:],
      }
    )
  return out


def class_precision(stored: StoredLabels) -> Tuple[np.ndarray, np.ndarray]:
  """Per seed and answered class: how many labels, and the share of them
  whose noise-free label is the same class.

  Returns (count [S, K] int, precision [S, K] float, NaN where a class was
  never answered). With class-independent noise at rate p on a class whose
  true share is q, about p (1 - q) / (K - 1) of all labels land in it
  wrongly, so a rare class is mostly wrong labels.
  """
  k = stored.num_classes
  count = np.zeros((stored.size.shape[0], k), np.int64)
  prec = np.full((stored.size.shape[0], k), np.nan)
  for s, n in enumerate(stored.size):
    lab, clean = stored.label[s, : int(n)], stored.clean[s, : int(n)]
    for j in range(k):
      mask = lab == j
      count[s, j] = int(mask.sum())
      if count[s, j]:
        prec[s, j] = float(np.mean(clean[mask] == j))
  return count, prec


def describe(stored: StoredLabels) -> str:
  """One line per seed: rows, sessions, share of stored labels that differ
  from the noise-free ones, and per answered class its count and the share
  of it that is right (`class_precision`)."""
  count, prec = class_precision(stored)
  lines = []
  for s in range(stored.size.shape[0]):
    n = int(stored.size[s])
    wrong = float(np.mean(stored.label[s, :n] != stored.clean[s, :n]))
    classes = ", ".join(
      f"{j}: {count[s, j]} ({prec[s, j]:.2f} right)"
      for j in range(stored.num_classes)
    )
    lines.append(
      f"seed {s}: {n} labelled rows in {len(stored.sessions[s])} "
      f"session(s), {wrong:.3f} of labels differ from the noise-free ones; "
      f"answered class {classes}"
    )
  return "\n".join(lines)


if __name__ == "__main__":
  for path in sys.argv[1:] or ["--help"]:
    if path.startswith("-"):
      sys.exit("usage: python experiments/reward_fit/store.py RUN_DIR...")
    print(path)
    print(describe(read(path)), flush=True)
