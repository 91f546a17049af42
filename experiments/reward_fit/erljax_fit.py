"""Fit A: erljax's reward learner on stored labels, through its public
functions (reward_source.make, reward_learner.make_learner / train_reward),
with the run's reward settings (loss, class weights, stratified batches,
ensemble, epochs and early stop, learning rate, k).

Every (run seed, fit seed) pair is one vmapped "seed" of the learner, so all
fits train in one compiled program; each stops early on its own.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from erljax.rewards import queries as feedback_lib
from erljax.rewards import learner as reward_learner
from erljax.rewards import source as reward_source

CHUNK = 8192  # rows per r_hat call


def settings(config: ml_collections.ConfigDict, num_classes: int) -> Dict:
  """The run's reward settings, as the authors' launcher takes them."""
  r = config.reward
  widths = set(r.hidden_sizes)
  if len(widths) != 1:
    raise ValueError(
      f"reward.hidden_sizes={tuple(r.hidden_sizes)}: the authors' gen_net "
      "has layers of one width"
    )
  if r.label_smoothing:
    raise ValueError(
      f"reward.label_smoothing={r.label_smoothing}: the comparison is "
      "without it (the authors' label_margin is another rule)"
    )
  return {
    "ensemble_size": int(r.ensemble_size),
    "lr": float(r.lr),
    "hidden_layers": len(r.hidden_sizes),
    "hidden_size": int(widths.pop()),
    "loss": str(r.loss),
    "class_weighted": bool(r.class_weighted),
    "stratified": bool(r.stratified),
    "batch_size": int(r.batch_size),
    "max_epochs": int(r.max_epochs),
    "min_epochs": int(r.min_epochs),
    "stop_accuracy": float(r.stop_accuracy),
    "stop_metric": str(r.get("stop_metric", "accuracy")),
    "k": float(r.k),
    "num_classes": int(num_classes),
  }


def _rating_sets(
  obs: List[np.ndarray],
  action: List[np.ndarray],
  label: List[np.ndarray],
  cap: int,
) -> feedback_lib.RatingSet:
  """RatingSet of U fits [U, cap, 1, 1, ...] from each fit's rows (a fixed
  cap, so the epoch compiles once for all sessions)."""
  u = len(obs)
  o = np.zeros((u, cap, 1, 1, obs[0].shape[-1]), np.float32)
  a = np.zeros((u, cap, 1, 1, action[0].shape[-1]), np.float32)
  y = np.zeros((u, cap), np.int32)
  for i in range(u):
    n = obs[i].shape[0]
    o[i, :n, 0, 0], a[i, :n, 0, 0], y[i, :n] = obs[i], action[i], label[i]
  sizes = np.asarray([x.shape[0] for x in obs], np.int32)
  return feedback_lib.RatingSet(
    obs=jnp.asarray(o),
    action=jnp.asarray(a),
    label=jnp.asarray(y),
    true_reward=jnp.zeros((u, cap, 1)),
    size=jnp.asarray(sizes),
    insert_pos=jnp.asarray(sizes % cap),
  )


def fit(
  config: ml_collections.ConfigDict,
  num_classes: int,
  splits: Sequence[Dict[str, np.ndarray]],
  fit_seeds: Sequence[int],
  evals: Sequence[Dict[str, tuple]],
) -> Dict[str, np.ndarray]:
  """Trains one fresh ensemble per (run seed s, fit seed f), session by
  session (splits[s]["session_ends"]), and predicts r_hat on evals[s]
  ({name: (obs [M, O], action [M, A])}).

  Returns {"r_hat_<name>": [S, F] object array of [M] arrays,
  "train_accuracy" [S, F, K], "epochs" [S, F, K]} (K sessions).
  """
  c = config.copy_and_resolve_references()
  c.reward.model = "mlp"  # both fits read the stored obs and action
  units = [(s, f) for s in range(len(splits)) for f in fit_seeds]
  o_size = splits[0]["train_obs"].shape[-1]
  a_size = splits[0]["train_action"].shape[-1]
  src = reward_source.make(c, o_size, a_size)
  learner = reward_learner.make_learner(c, num_classes, src.model)
  keys = jnp.stack([jax.random.PRNGKey(1_000_003 * f + s) for s, f in units])
  params = jax.vmap(src.init)(keys)
  opt_state = jax.vmap(learner.optimizer.init)(params)
  epoch_fn = jax.jit(jax.vmap(learner.epoch))
  rng = np.random.default_rng(list(fit_seeds))
  k_max = len(splits[0]["session_ends"])  # the same for every seed
  cap = max(int(sp["session_ends"][-1]) for sp in splits)
  acc = np.zeros((len(units), k_max))
  epochs = np.zeros((len(units), k_max), np.int64)
  for k in range(k_max):
    ends = [int(splits[s]["session_ends"][k]) for s, _ in units]
    rs = _rating_sets(
      *(
        [splits[s][f"train_{x}"][:e] for (s, _), e in zip(units, ends)]
        for x in ("obs", "action", "label")
      ),
      cap,
    )
    params, opt_state, ep, a, _ = reward_learner.train_reward(
      learner, epoch_fn, params, opt_state, rs, rng
    )
    acc[:, k], epochs[:, k] = a, ep
  reward = jax.jit(src.model.reward)
  out: Dict[str, np.ndarray] = {}
  for name in evals[0]:
    pred = np.empty((len(splits), len(fit_seeds)), object)
    for i, (s, f) in enumerate(units):
      p = jax.tree_util.tree_map(lambda x, i=i: x[i], params)
      obs, action = evals[s][name]
      pred[s, list(fit_seeds).index(f)] = np.concatenate(
        [
          np.asarray(reward(p, obs[j : j + CHUNK], action[j : j + CHUNK]))
          for j in range(0, obs.shape[0], CHUNK)
        ]
        or [np.zeros((0,), np.float32)]
      )
    out[f"r_hat_{name}"] = pred
  shape = (len(splits), len(fit_seeds), k_max)
  out["train_accuracy"] = acc.reshape(shape)
  out["epochs"] = epochs.reshape(shape)
  return out
