"""The rating-based reward loss (RbRL) and ERL-VLM's enhancements.

Method notes §3-4. For a minibatch of B rated segments with labels in
0..n-1, predicted segment returns are min-max normalised over the batch,
class boundaries are read off the sorted normalised returns at the batch's
cumulative label counts, and class i gets the logit
Q(i) = -k (x - b_i)(x - b_{i+1}), which is positive exactly inside
[b_i, b_{i+1}]. A softmax over Q gives class probabilities; the loss is
cross-entropy (vanilla RbRL) or MAE (ERL-VLM), optionally class-weighted.

Public API: `rating_probabilities`, `class_weights`, `rating_loss`,
`stratified_batches`, and `preference_loss` (Bradley-Terry, for the
RL-VLM-F baseline).
"""

from __future__ import annotations

from typing import List, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

LOSS_KINDS = ("ce", "mae")


def rating_probabilities(returns: jax.Array, labels: jax.Array,
                         num_classes: int, k: float = 30.0,
                         mask: Optional[jax.Array] = None) -> jax.Array:
  """Class probabilities of rated segments.

  Args:
    returns: [B] predicted segment returns (gradients flow through them, and
      through the batch min and max used to normalise them).
    labels: [B] int ratings in 0..num_classes-1 (they only set boundaries).
    num_classes: n.
    k: sharpness of the quadratic logits (30 in the reference).
    mask: optional [B] bool; False entries (padding) take no part in the
      normalisation or the boundaries. Their output rows are still defined.

  Returns:
    [B, n] probabilities; each row sums to 1.

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
      jax.nn.one_hot(labels, num_classes, dtype=jnp.int32) * mask[:, None],
      axis=0)
  cum = jnp.cumsum(counts)[:-1]                      # C_1 .. C_{n-1}
  # Padding sorts to the end (x of a masked entry is replaced by +inf).
  sorted_x = jnp.sort(jnp.where(mask, jax.lax.stop_gradient(x), jnp.inf))
  inner = jnp.where(cum > 0, sorted_x[jnp.maximum(cum - 1, 0)], 0.0)
  bounds = jnp.concatenate([jnp.zeros((1,)), inner, jnp.ones((1,))])
  bounds = jax.lax.stop_gradient(bounds)
  logits = -k * (x[:, None] - bounds[None, :-1]) * (x[:, None] - bounds[None, 1:])
  return jax.nn.softmax(logits, axis=-1)


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
  counts = jnp.sum(jax.nn.one_hot(labels, num_classes) * valid[:, None],
                   axis=0)
  n = jnp.sum(counts)
  w = (n - counts) / jnp.maximum(n, 1.0)
  w = w / jnp.maximum(jnp.min(w), 1e-12)
  return jnp.where(jnp.all(counts > 0), w, jnp.ones_like(w)).astype(
      jnp.float32)


def rating_loss(probs: jax.Array, labels: jax.Array,
                weights: Optional[jax.Array] = None, kind: str = "mae",
                label_smoothing: float = 0.0,
                mask: Optional[jax.Array] = None) -> jax.Array:
  """Weighted rating loss.

  Args:
    probs: [B, n] class probabilities (from `rating_probabilities`).
    labels: [B] int labels.
    weights: [n] per-class weights (`class_weights`), None for uniform.
    kind: "ce" (cross-entropy, vanilla RbRL) or "mae" (mean absolute error,
      ERL-VLM; equals 2 (1 - P(y)) per sample without smoothing).
    label_smoothing: margin m; target = onehot (1 - n m) + m.
    mask: optional [B] bool of valid entries.

  Returns:
    scalar sum_b w_{y_b} l_b / sum_b w_{y_b} over valid entries.
  """
  if kind not in LOSS_KINDS:
    raise ValueError(f"rating loss kind={kind!r}: choose one of {LOSS_KINDS}")
  chex.assert_rank(probs, 2)
  n = probs.shape[-1]
  if not 0.0 <= label_smoothing < 1.0 / n:
    raise ValueError(f"label_smoothing={label_smoothing}: must lie in "
                     f"[0, 1/{n})")
  target = jax.nn.one_hot(labels, n) * (1.0 - n * label_smoothing) + (
      label_smoothing)
  if kind == "ce":
    per = -jnp.sum(target * jnp.log(jnp.clip(probs, 1e-12, 1.0)), axis=-1)
  else:
    per = jnp.sum(jnp.abs(probs - target), axis=-1)
  w = jnp.ones((n,)) if weights is None else weights
  wb = w[labels]
  if mask is not None:
    wb = wb * mask
  return jnp.sum(wb * per) / jnp.maximum(jnp.sum(wb), 1e-12)


def preference_loss(returns_0: jax.Array, returns_1: jax.Array,
                    prefs: jax.Array,
                    mask: Optional[jax.Array] = None) -> jax.Array:
  """Bradley-Terry cross-entropy with P[1 > 0] = exp(R1) / (exp(R0) + exp(R1)).

  Args:
    returns_0, returns_1: [B] predicted returns of the two segments.
    prefs: [B] int, 1 where segment 1 is preferred, 0 where segment 0 is.
      Ties and "unsure" answers are dropped before they get here.
    mask: optional [B] bool of valid entries.
  Returns:
    scalar mean negative log-likelihood over valid entries.
  """
  chex.assert_equal_shape([returns_0, returns_1, prefs])
  logit = returns_1 - returns_0
  y = prefs.astype(logit.dtype)
  nll = -(y * jax.nn.log_sigmoid(logit) + (1.0 - y) * jax.nn.log_sigmoid(-logit))
  m = jnp.ones_like(nll) if mask is None else mask.astype(nll.dtype)
  return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def stratified_batches(labels, batch_size: int,
                       rng: np.random.Generator) -> List[np.ndarray]:
  """The reference's stratified minibatch schedule for one epoch.

  With N items and T = ceil(N / batch_size) batches, every batch but the last
  takes floor(n_c / T) items of each class c, is topped up with one leftover
  item per class from the rarest class upward, then filled from the majority
  class; every item not placed goes into the last batch. Items within a class
  are shuffled by `rng`. With N <= batch_size the whole set is one batch.

  Args:
    labels: [N] int labels (host array).
    batch_size: nominal batch size.
    rng: numpy Generator (one per ensemble member for separate shuffles).
  Returns:
    T arrays of indices into labels; together a permutation of range(N).
  """
  labels = np.asarray(labels)
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: must be >= 1")
  n_items = labels.shape[0]
  if n_items <= batch_size:
    return [rng.permutation(n_items)]
  num_batches = -(-n_items // batch_size)
  classes = np.unique(labels)
  pools = {c: list(rng.permutation(np.flatnonzero(labels == c)))
           for c in classes}
  per_class = {c: len(pools[c]) // num_batches for c in classes}
  batches = []
  for _ in range(num_batches - 1):
    batch = []
    for c in classes:
      # Fills of earlier batches may have used up part of a class's share.
      batch += [pools[c].pop() for _ in range(min(per_class[c],
                                                  len(pools[c])))]
    # One leftover per class, rarest class first, while there is room.
    for c in sorted(classes, key=lambda c: len(pools[c])):
      if len(batch) < batch_size and pools[c]:
        batch.append(pools[c].pop())
    # Fill from the class with most items left.
    while len(batch) < batch_size:
      c = max(classes, key=lambda c: len(pools[c]))
      if not pools[c]:
        break
      batch.append(pools[c].pop())
    batches.append(np.asarray(rng.permutation(batch), np.int64))
  last = [i for c in classes for i in pools[c]]
  if last:
    batches.append(np.asarray(rng.permutation(last), np.int64))
  return batches
