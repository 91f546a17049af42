"""Rating a fixed dataset and learning its reward offline.

The paper's real-robot setting: every demonstration frame is rated once
(ERL-VLM rates the post-step frame of a transition, H = 1), a reward
ensemble is trained on the ratings with the online loop's own learner
(`erljax.rewards.queries`: RatingSet, `store_ratings`, `train_reward`; ERL-VLM's
MAE + class weights + stratified batches or vanilla RbRL's cross-entropy),
and the dataset is relabelled with the ensemble mean.

Ratings are stored beside the dataset's shards, in `ratings_<tag>.npz`
(tag: a hash of everything that decides the answers: rater kind, model,
noise, classes, rated quantity, which transitions), so a second run with the
same rater asks nothing. The file holds `index` [Q] int64 (the rated
transitions, in `EpisodeDataset.transitions()` order), `labels` [Q] int64
(-1 where the rater gave no answer), `answered` [Q] bool and a JSON
`header` (format, the rater description, counts). Unanswered queries are
dropped and counted, never labelled.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from erljax.config import defaults as config_lib
from erljax.offline import dataset as dataset_lib
from erljax.envs import tasks
from erljax.rewards import queries as feedback_lib
from erljax.rewards import learner as reward_learner
from erljax.raters import api as raters_lib
from erljax.rewards import source as reward_source
from erljax.agents.replay import Transition

RATINGS_FORMAT = "erljax-ratings"
RATINGS_VERSION = 1
# rater.* keys that change what a rater answers (the rest: timeouts, retries).
_RATER_KEYS = (
  "kind",
  "noise",
  "noise_kind",
  "rated",
  "range",
  "model",
  "rating_model",
  "base_url",
  "two_stage",
  "constrained",
  "openai_constraint",
  "temperature",
  "max_tokens",
)


def num_classes(config: ml_collections.ConfigDict) -> int:
  return config.rater.num_classes or tasks.get_task(config.task).num_classes


def rater_description(
  config: ml_collections.ConfigDict, num_transitions: int
) -> Dict[str, Any]:
  """Everything that decides the stored answers (JSON-able)."""
  r = config.rater
  desc = {
    k: (list(r[k]) if isinstance(r[k], (tuple, list)) else r[k])
    for k in _RATER_KEYS
    if k in r
  }
  desc["prompt"] = {k: v for k, v in dict(r.prompt).items() if v}
  desc.update(
    num_classes=num_classes(config),
    task=config.task,
    queries=int(config.rating.queries),
    seed=int(config.rating.seed),
    transitions=int(num_transitions),
    render=[int(config.render.height), int(config.render.width)],
  )
  return desc


def ratings_path(directory: str, description: Dict[str, Any]) -> str:
  tag = hashlib.sha256(
    json.dumps(description, sort_keys=True).encode()
  ).hexdigest()[:12]
  return os.path.join(directory, f"ratings_{tag}.npz")


def rated_signal(
  config: ml_collections.ConfigDict, data: Dict[str, np.ndarray]
) -> np.ndarray:
  """[M] what the scripted rater bins for each transition (the task's
  rating signal, or the reward, per config.rater.rated / range)."""
  task = tasks.rated_task(
    tasks.get_task(config.task), config.rater.rated, config.rater.range
  )
  return np.asarray(
    jax.jit(task.signal)(
      jnp.asarray(data["observations"]),
      jnp.asarray(data["actions"]),
      jnp.asarray(data["next_observations"]),
      jnp.asarray(data["rewards"]),
    )
  )


def _ask_all(
  config: ml_collections.ConfigDict,
  data: Dict[str, np.ndarray],
  index: np.ndarray,
  log: Callable[[str], None],
  chunk: int = 256,
) -> raters_lib.Ratings:
  """Asks the configured rater about the transitions `index` [Q]."""
  classes = num_classes(config)
  rater = raters_lib.make(
    config.rater,
    config.task,
    classes,
    int(config.rating.seed),
    cache_dir=config_lib.reply_cache_dir(config),
  )
  signal = rated_signal(config, data)[index]
  renderer = None
  if getattr(rater, "needs_frames", False):
    # pylint: disable-next=g-import-not-at-top (OpenGL only when needed)
    from erljax.vision import render as render_lib

    renderer = render_lib.FrameRenderer(
      config.task, config.render.height, config.render.width
    )
  labels, answered = [], []
  try:
    for start in range(0, index.size, chunk):
      rows = slice(start, start + chunk)
      frames = None
      if renderer is not None:
        frames = renderer.render(data["poses"][index[rows]])[:, None]
      got = feedback_lib.ask(rater, signal[rows, None], frames)
      labels.append(got.labels)
      answered.append(got.answered)
      if renderer is not None:
        log(f"rated {min(start + chunk, index.size)}/{index.size}")
  finally:
    if renderer is not None:
      renderer.close()
  return raters_lib.Ratings(
    labels=np.concatenate(labels).astype(np.int64),
    answered=np.concatenate(answered).astype(bool),
  )


def load_ratings(
  path: str, description: Dict[str, Any], num_transitions: int
) -> Tuple[np.ndarray, raters_lib.Ratings]:
  """(index [Q], Ratings) of a stored ratings file; DatasetError naming the
  file if it is unreadable, foreign, for another rater, or its index is not
  distinct transitions of the num_transitions the dataset holds."""
  try:
    with np.load(path, allow_pickle=False) as z:
      missing = sorted({"header", "index", "labels", "answered"} - set(z.files))
      if missing:
        raise dataset_lib.DatasetError(f"{path}: missing arrays {missing}")
      header = json.loads(str(z["header"]))
      index, labels, answered = z["index"], z["labels"], z["answered"]
  except dataset_lib.DatasetError:
    raise
  except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
    raise dataset_lib.DatasetError(
      f"{path}: truncated or corrupted ({type(e).__name__}: {e})"
    ) from e
  if (
    header.get("format") != RATINGS_FORMAT
    or header.get("version") != RATINGS_VERSION
  ):
    raise dataset_lib.DatasetError(
      f"{path}: not an erljax ratings file (format {header.get('format')!r})"
    )
  if header.get("rater") != json.loads(json.dumps(description)):
    raise dataset_lib.DatasetError(
      f"{path}: rated by {header.get('rater')}, not by {description}"
    )
  q = index.shape
  if (
    index.dtype != np.int64
    or labels.dtype != np.int64
    or answered.dtype != bool
    or labels.shape != q
    or answered.shape != q
    or index.ndim != 1
  ):
    raise dataset_lib.DatasetError(
      f"{path}: index/labels/answered must be [Q] int64/int64/bool, got "
      f"{index.shape} {index.dtype} / {labels.shape} {labels.dtype} / "
      f"{answered.shape} {answered.dtype}"
    )
  if index.size and (
    index.min() < 0
    or index.max() >= num_transitions
    or np.unique(index).size != index.size
  ):
    raise dataset_lib.DatasetError(
      f"{path}: index [{index.min()}, {index.max()}] of {index.size} must "
      f"be distinct transitions of the {num_transitions} transitions of the "
      "dataset"
    )
  return index, raters_lib.Ratings(labels=labels, answered=answered)


def _save_ratings(
  path: str,
  description: Dict[str, Any],
  index: np.ndarray,
  ratings: raters_lib.Ratings,
) -> None:
  """Writes a ratings file (whole or not at all)."""
  header = {
    "format": RATINGS_FORMAT,
    "version": RATINGS_VERSION,
    "rater": description,
    "answered": ratings.num_answered,
    "dropped": ratings.num_dropped,
  }
  tmp = path + ".tmp.npz"
  np.savez(
    tmp,
    header=np.asarray(json.dumps(header)),
    index=index,
    labels=ratings.labels,
    answered=ratings.answered,
  )
  os.replace(tmp, path)


def rate_dataset(
  config: ml_collections.ConfigDict,
  directory: str,
  data: Dict[str, np.ndarray],
  log: Callable[[str], None] = print,
) -> Tuple[np.ndarray, raters_lib.Ratings, Dict[str, Any]]:
  """Ratings of the dataset in `directory` (transitions `data`), from its
  ratings file if this rater rated it before, else asked and stored.

  config.rating.queries transitions are rated (0: all), drawn without
  replacement with config.rating.seed. Queries the rater dropped are
  stored as dropped and asked again on the next call (only they), so a file
  is reused as it is once every query has an answer. Returns index [Q],
  Ratings and {"path", "cached", "answered", "dropped", "seconds"}.
  """
  m = data["rewards"].shape[0]
  desc = rater_description(config, m)
  path = ratings_path(directory, desc)
  t0 = time.perf_counter()
  cached = os.path.exists(path)
  if cached:
    index, ratings = load_ratings(path, desc, m)
    if ratings.num_dropped:
      log(
        f"ratings: {ratings.num_dropped} of {index.size} queries in {path} "
        "were dropped; asking again for them"
      )
      again = ~ratings.answered
      got = _ask_all(config, data, index[again], log)
      labels, answered = ratings.labels.copy(), ratings.answered.copy()
      labels[again], answered[again] = got.labels, got.answered
      ratings = raters_lib.Ratings(labels=labels, answered=answered)
      _save_ratings(path, desc, index, ratings)
  else:
    q = config.rating.queries or m
    if q > m:
      raise ValueError(
        f"config.rating.queries={q}: the dataset has only {m} transitions"
      )
    rng = np.random.default_rng(config.rating.seed)
    index = (
      np.arange(m) if q == m else np.sort(rng.choice(m, q, replace=False))
    ).astype(np.int64)
    ratings = _ask_all(config, data, index, log)
    _save_ratings(path, desc, index, ratings)
  info = {
    "path": path,
    "cached": cached,
    "answered": ratings.num_answered,
    "dropped": ratings.num_dropped,
    "seconds": time.perf_counter() - t0,
  }
  log(
    f"ratings: {info['answered']} answered, {info['dropped']} dropped "
    f"({'from ' if cached else 'stored in '}{path})"
    + (
      "; the dropped ones are asked again next time" if info["dropped"] else ""
    )
  )
  return index, ratings, info


def _rated_queries(
  data: Dict[str, np.ndarray], signal: np.ndarray, rows: np.ndarray, s: int
) -> Transition:
  """The rated transitions `rows` [M] as one-step queries for each of s
  seeds: leaves [S, M, 1, 1, ...], the rated signal as true_reward."""
  seg = lambda x: jnp.broadcast_to(
    jnp.asarray(x[rows])[None, :, None, None],
    (s, rows.size, 1, 1) + x.shape[1:],
  )
  return Transition(
    obs=seg(data["observations"]),
    action=seg(data["actions"]),
    reward=seg(data["rewards"]),
    true_reward=seg(signal),
    discount=seg(data["discount"]),
    next_obs=seg(data["next_observations"]),
  )


def _all_transitions(data: Dict[str, np.ndarray]) -> Transition:
  """Every transition of the dataset, leaves [N, ...], to relabel."""
  return Transition(
    obs=jnp.asarray(data["observations"]),
    action=jnp.asarray(data["actions"]),
    reward=jnp.asarray(data["rewards"]),
    true_reward=jnp.asarray(data["rewards"]),
    discount=jnp.asarray(data["discount"]),
    next_obs=jnp.asarray(data["next_observations"]),
  )


def learn_reward(
  config: ml_collections.ConfigDict,
  data: Dict[str, np.ndarray],
  index: np.ndarray,
  ratings: raters_lib.Ratings,
  keys: jax.Array,
) -> Tuple[Any, jax.Array, Dict[str, Any]]:
  """Trains one reward ensemble per seed on the answered ratings.

  keys [S]: each seed's initialisation key. Returns the parameters (seed
  axis), the relabelled rewards [S, M] of every transition (ensemble mean)
  and diagnostics (epochs, accuracies, correlation of r_hat with the env
  reward and with the rated signal, per seed).
  """
  if config.reward.model != "mlp" or config.reward.feedback_type != "rating":
    raise ValueError(
      "offline reward learning supports reward.model='mlp' "
      "with feedback_type='rating'"
    )
  obs, act = data["observations"], data["actions"]
  o, a = obs.shape[-1], act.shape[-1]
  source = reward_source.make(config, o, a)
  learner = reward_learner.make_learner(
    config, num_classes(config), source.model
  )
  s = keys.shape[0]
  rows = index[ratings.answered]
  if rows.size == 0:
    raise ValueError(
      "no rated transition was answered: nothing to learn a reward from"
    )
  signal = rated_signal(config, data)
  queries = _rated_queries(data, signal, rows, s)
  answered = raters_lib.Ratings(
    labels=ratings.labels[ratings.answered],
    answered=np.ones((rows.size,), bool),
  )
  sets = jax.jit(
    jax.vmap(lambda _: feedback_lib.empty_rating_set(rows.size, o, a))
  )(jnp.arange(s))
  sets, _ = feedback_lib.store_ratings(sets, queries, [answered] * s)
  params = jax.jit(jax.vmap(source.init))(keys)
  opt_state = jax.jit(jax.vmap(learner.optimizer.init))(params)
  epoch_fn = jax.jit(jax.vmap(learner.epoch))
  params, _, epochs, acc, bal = reward_learner.train_reward(
    learner,
    epoch_fn,
    params,
    opt_state,
    sets,
    np.random.default_rng(int(config.rating.seed)),
  )
  everything = _all_transitions(data)
  rewards = jax.jit(jax.vmap(lambda p: source(p, everything)))(params)
  r = np.asarray(rewards, np.float64)
  corr = lambda x: [float(np.corrcoef(r[i], x)[0, 1]) for i in range(s)]
  reference = raters_lib.ScriptedRater.for_segments(
    learner.num_classes,
    tasks.rated_task(
      tasks.get_task(config.task), config.rater.rated, config.rater.range
    ).rated_range,
  )
  truth = reference.true_labels(signal[rows])
  hist = np.bincount(answered.labels, minlength=learner.num_classes)
  info = {
    "epochs": epochs,
    "reward_accuracy": acc,
    "reward_balanced_accuracy": bal,
    "reward_corr": corr(data["rewards"]),
    "signal_corr": corr(signal),
    "label_accuracy": float(np.mean(answered.labels == truth)),
    "label_histogram": hist.tolist(),
  }
  return params, rewards, info
