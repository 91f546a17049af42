"""The rating-based reward loss (RbRL) and ERL-VLM's enhancements.

See docs/method.md#the-rating-loss and #erl-vlms-enhancements (reference:
reward_model_vlm_rating.py, train_reward). For a minibatch of B rated
segments with labels in 0..n-1, predicted segment returns are min-max
normalised over the batch, class boundaries are read off the sorted
normalised returns at the batch's cumulative label counts, and class i gets
the logit Q(i) = -k (x - b_i)(x - b_{i+1}), which is positive exactly inside
[b_i, b_{i+1}]. A softmax over Q gives class probabilities; the loss is
cross-entropy (vanilla RbRL) or MAE (ERL-VLM), optionally class-weighted.

Public API: `rating_logits`, `rating_probabilities`, `class_weights`,
`rating_loss` (on logits), `stratified_batches`, and `preference_loss`
(Bradley-Terry, for the RL-VLM-F baseline, with cross-entropy or MAE).
"""

from __future__ import annotations

from typing import List, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

LOSS_KINDS = ("ce", "mae")


def rating_logits(
  returns: jax.Array,
  labels: jax.Array,
  num_classes: int,
  k: float = 30.0,
  mask: Optional[jax.Array] = None,
) -> jax.Array:
  """Class logits Q(i) of rated segments.

  Args:
    returns: [B] predicted segment returns (gradients flow through them, and
      through the batch min and max used to normalise them).
    labels: [B] int ratings in 0..num_classes-1 (they only set boundaries).
    num_classes: n.
    k: sharpness of the quadratic logits (30 in the reference).
    mask: optional [B] bool; False entries (padding) take no part in the
      normalisation or the boundaries. Their output rows are still defined.

  Returns:
    [B, n] logits Q(i) = -k (x - b_i)(x - b_{i+1}); `rating_probabilities`
    is their softmax.

  Absent classes: a class with no sample in the batch gets zero width (its
  two boundaries coincide). When every class below boundary i is absent the
  reference indexes sorted[-1] and puts b_i at the *top* of the range, which
  makes the absent lowest classes swallow the whole range; here b_i is the
  bottom of the range (0) instead, so the present classes keep the ordering
  they have in the batch.
  """
  chex.assert_rank([returns, labels], 1)
  chex.assert_equal_shape([returns, labels])
  b = returns.shape[0]
  if mask is None:
    mask = jnp.ones((b,), bool)
  big = jnp.finfo(returns.dtype).max
  lo = jnp.min(jnp.where(mask, returns, big))
  hi = jnp.max(jnp.where(mask, returns, -big))
  x = (returns - lo) / (hi - lo + 1e-6)

  counts = jnp.sum(
    jax.nn.one_hot(labels, num_classes, dtype=jnp.int32) * mask[:, None], axis=0
  )
  cum = jnp.cumsum(counts)[:-1]  # C_1 .. C_{n-1}
  # Padding sorts to the end (x of a masked entry is replaced by +inf).
  sorted_x = jnp.sort(jnp.where(mask, jax.lax.stop_gradient(x), jnp.inf))
  inner = jnp.where(cum > 0, sorted_x[jnp.maximum(cum - 1, 0)], 0.0)
  bounds = jnp.concatenate([jnp.zeros((1,)), inner, jnp.ones((1,))])
  bounds = jax.lax.stop_gradient(bounds)
  return -k * (x[:, None] - bounds[None, :-1]) * (x[:, None] - bounds[None, 1:])


def rating_probabilities(
  returns: jax.Array,
  labels: jax.Array,
  num_classes: int,
  k: float = 30.0,
  mask: Optional[jax.Array] = None,
) -> jax.Array:
  """[B, n] class probabilities, softmax of `rating_logits` (same args);
  each row sums to 1."""
  return jax.nn.softmax(
    rating_logits(returns, labels, num_classes, k, mask), axis=-1
  )


def class_weights(labels, num_classes: int, mask=None) -> jax.Array:
  """Class-frequency weights over a rating set.

  w_c = (N - n_c) / N divided by min_c w_c, so the majority class weighs 1
  and rarer classes more. All ones when some class has no sample.

  Args:
    labels: [N] int labels.
    num_classes: n.
    mask: optional [N] bool of valid entries.
  Returns:
    [n] float32 weights.
  """
  labels = jnp.asarray(labels)
  valid = jnp.ones(labels.shape, bool) if mask is None else jnp.asarray(mask)
  counts = jnp.sum(jax.nn.one_hot(labels, num_classes) * valid[:, None], axis=0)
  n = jnp.sum(counts)
  w = (n - counts) / jnp.maximum(n, 1.0)
  w = w / jnp.maximum(jnp.min(w), 1e-12)
  return jnp.where(jnp.all(counts > 0), w, jnp.ones_like(w)).astype(jnp.float32)


def rating_loss(
  logits: jax.Array,
  labels: jax.Array,
  weights: Optional[jax.Array] = None,
  kind: str = "mae",
  label_smoothing: float = 0.0,
  mask: Optional[jax.Array] = None,
) -> jax.Array:
  """Weighted rating loss.

  Args:
    logits: [B, n] class logits (from `rating_logits`).
    labels: [B] int labels.
    weights: [n] per-class weights (`class_weights`), None for uniform.
    kind: "ce" (cross-entropy, vanilla RbRL) or "mae" (mean absolute error,
      ERL-VLM; equals 2 (1 - P(y)) per sample without smoothing).
    label_smoothing: margin m; target = onehot (1 - n m) + m.
    mask: optional [B] bool of valid entries.

  Returns:
    scalar sum_b w_{y_b} l_b / sum_b w_{y_b} over valid entries.

  Cross-entropy is taken from log_softmax of the logits, as the reference's
  `F.cross_entropy`: a confidently wrong label keeps its full gradient
  (taking the log of clipped probabilities would zero it, a robustness
  vanilla RbRL does not have).
  """
  if kind not in LOSS_KINDS:
    raise ValueError(f"rating loss kind={kind!r}: choose one of {LOSS_KINDS}")
  chex.assert_rank(logits, 2)
  n = logits.shape[-1]
  if not 0.0 <= label_smoothing < 1.0 / n:
    raise ValueError(
      f"label_smoothing={label_smoothing}: must lie in [0, 1/{n})"
    )
  target = jax.nn.one_hot(labels, n) * (1.0 - n * label_smoothing) + (
    label_smoothing
  )
  if kind == "ce":
    per = -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  else:
    per = jnp.sum(jnp.abs(jax.nn.softmax(logits, axis=-1) - target), axis=-1)
  w = jnp.ones((n,)) if weights is None else weights
  wb = w[labels]
  if mask is not None:
    wb = wb * mask
  return jnp.sum(wb * per) / jnp.maximum(jnp.sum(wb), 1e-12)


def preference_loss(
  returns_0: jax.Array,
  returns_1: jax.Array,
  prefs: jax.Array,
  mask: Optional[jax.Array] = None,
  kind: str = "ce",
) -> jax.Array:
  """Bradley-Terry loss with P[1 > 0] = exp(R1) / (exp(R0) + exp(R1)).

  Args:
    returns_0, returns_1: [B] predicted returns of the two segments.
    prefs: [B] int, 1 where segment 1 is preferred, 0 where segment 0 is.
      Ties and "unsure" answers are dropped before they get here.
    mask: optional [B] bool of valid entries.
    kind: "ce" (negative log-likelihood, RL-VLM-F / PEBBLE) or "mae" (the
      MAE of the two-way probabilities against the one-hot preference,
      2 (1 - P(preferred)): ERL-VLM's robust loss on preferences, the
      paper's "RL-VLM-F + MAE" ablation).
  Returns:
    scalar mean loss over valid entries.
  """
  if kind not in LOSS_KINDS:
    raise ValueError(
      f"preference loss kind={kind!r}: choose one of {LOSS_KINDS}"
    )
  chex.assert_equal_shape([returns_0, returns_1, prefs])
  logit = returns_1 - returns_0
  y = prefs.astype(logit.dtype)
  if kind == "ce":
    per = -(
      y * jax.nn.log_sigmoid(logit) + (1.0 - y) * jax.nn.log_sigmoid(-logit)
    )
  else:
    p1 = jax.nn.sigmoid(logit)
    per = 2.0 * (1.0 - (y * p1 + (1.0 - y) * (1.0 - p1)))
  m = jnp.ones_like(per) if mask is None else mask.astype(per.dtype)
  return jnp.sum(per * m) / jnp.maximum(jnp.sum(m), 1.0)


def stratified_batches(
  labels, batch_size: int, rng: np.random.Generator
) -> List[np.ndarray]:
  """The reference's stratified minibatch schedule for one epoch.

  See docs/method.md#stratified-minibatches (reference:
  reward_model_vlm_rating.py, generate_training_indices). With N items in T =
  ceil(N / batch_size) batches, class c of n_c items gives floor(n_c / T)
  items to every batch but the last, and has a budget of n_c mod T extra items
  for the whole epoch: each batch, going from the rarest class upward, takes
  one extra item of every class whose budget is not spent, until the batch is
  full. The batch is then filled from the majority class (as far as it has
  items left), and every item not yet placed goes into the last batch. So rare
  classes last to the end of the epoch: with counts (1056, 33, 11) and batches
  of 128 the nine batches hold (122, 4, 2) twice, (123, 4, 1) four times,
  (124, 3, 1) twice and (72, 3, 1). With N <= batch_size the whole set is one
  batch. Items within a class are shuffled by `rng`; a batch that would be
  empty (every item placed already) is left out.

  Args:
    labels: [N] int labels (host array).
    batch_size: nominal batch size.
    rng: numpy Generator (one per ensemble member for separate shuffles).
  Returns:
    At most T arrays of indices into labels; together a permutation of
    range(N).
  """
  labels = np.asarray(labels)
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: must be >= 1")
  n_items = labels.shape[0]
  if n_items <= batch_size:
    return [rng.permutation(n_items)]
  num_batches = -(-n_items // batch_size)
  classes, counts = np.unique(labels, return_counts=True)
  rarest_first = [int(i) for i in np.argsort(counts, kind="stable")]
  majority = rarest_first[-1]
  pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
  per_batch = counts // num_batches
  budget = counts % num_batches
  batches = []
  for _ in range(num_batches - 1):
    batch: List[int] = []
    for i in rarest_first:
      # A majority class emptied by earlier fills gives what it has left.
      take = min(int(per_batch[i]), len(pools[i]))
      batch += [pools[i].pop() for _ in range(take)]
    for i in rarest_first:
      if len(batch) >= batch_size:
        break
      if budget[i] > 0 and pools[i]:
        batch.append(pools[i].pop())
        budget[i] -= 1
    fill = min(batch_size - len(batch), len(pools[majority]))
    batch += [pools[majority].pop() for _ in range(max(fill, 0))]
    if batch:
      batches.append(np.asarray(rng.permutation(batch), np.int64))
  last = [i for pool in pools for i in pool]
  if last:
    batches.append(np.asarray(rng.permutation(last), np.int64))
  return batches
