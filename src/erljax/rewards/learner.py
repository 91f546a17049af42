"""The reward learner: trains a reward ensemble on stored ratings.

`RewardLearner` holds the loss (ERL-VLM's MAE or cross-entropy on rating
logits, or Bradley-Terry on preference pairs), the minibatch schedule
(uniform or the reference's stratified batches) and one jitted epoch;
`train_reward` runs epochs for all S seeds until each seed's training
accuracy passes the stop threshold. Shapes: S seeds, E ensemble members,
T minibatch steps, B batch, P segments a query, H steps a segment, C
classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from erljax.runtime import distributed
from erljax.agents import gradients
from erljax.rewards import loss as reward_lib
from erljax.rewards import model as reward_model_lib
from erljax.rewards.queries import RatingSet


@dataclasses.dataclass(frozen=True)
class RewardLearner:
  """Trains a reward ensemble on a RatingSet with the rating loss."""

  model: reward_model_lib.RewardModel
  num_classes: int
  loss: str = "mae"  # "ce" or "mae"
  class_weighted: bool = True
  stratified: bool = True
  batch_size: int = 128
  max_epochs: int = 10
  # Epochs a session runs before it may stop early: the reference stops
  # only once `epoch > least_reward_update` (0), i.e. after two epochs.
  min_epochs: int = 2
  stop_accuracy: float = 0.97
  # What stop_accuracy is compared with: "accuracy" (the reference's) or
  # "balanced_accuracy" (the mean of the per-class recalls over the classes
  # present), which a majority class cannot inflate.
  stop_metric: str = "accuracy"
  k: float = 30.0
  label_smoothing: float = 0.0
  lr: float = 3e-4
  # Minibatch steps per compiled call. Epochs are run in blocks of this many
  # steps, the last one shortened to a power of two (`block_lengths`), so a
  # few compiled programs serve every session as the rating set grows.
  block_steps: int = 8
  preference: bool = False  # Bradley-Terry on pairs instead of ratings

  @property
  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.lr)

  def _member_returns(self, params, *inputs):
    """Each member's segment returns on its own batch: [E, B, P].

    inputs: obs [E, B, P, H, O] and action [E, B, P, H, A] for the MLP, or
    frames [E, B, P, H, height, width, 3] for the CNN; a segment's return is
    the sum of its H predicted rewards.
    """
    e, b, p, h = inputs[0].shape[:4]
    flat = [x.reshape((e, b * p * h) + x.shape[4:]) for x in inputs]
    r = self.model.per_member(params["params"]["member"], *flat)
    return jnp.sum(r.reshape(e, b, p, h), -1)

  def _loss(self, params, inputs, labels, mask, weights):
    r = self._member_returns(params, *inputs)

    def one(r_e, y_e, m_e):
      if self.preference:
        loss = reward_lib.preference_loss(
          r_e[:, 0], r_e[:, 1], y_e, m_e, self.loss
        )
        predicted = (r_e[:, 1] > r_e[:, 0]).astype(y_e.dtype)
      else:
        logits = reward_lib.rating_logits(
          r_e[:, 0], y_e, self.num_classes, self.k, m_e
        )
        loss = reward_lib.rating_loss(
          logits, y_e, weights, self.loss, self.label_smoothing, m_e
        )
        predicted = jnp.argmax(logits, -1)
      one_hot = jax.nn.one_hot(y_e, self.num_classes) * m_e[:, None]
      return loss, (
        jnp.sum(one_hot * (predicted == y_e)[:, None], 0),
        jnp.sum(one_hot, 0),
      )

    losses, (correct, count) = jax.vmap(one)(r, labels, mask)
    # One optimiser over the summed member losses, as in the reference.
    return jnp.sum(losses), (jnp.mean(correct, 0), jnp.mean(count, 0))

  def epoch(
    self,
    params,
    opt_state,
    rs: RatingSet,
    idx: jax.Array,
    mask: jax.Array,
    weights: jax.Array,
    active: jax.Array,
  ):
    """One pass over the schedule idx/mask [T, E, B]; no-op if not active.

    A step whose mask is all False (padding) leaves params and optimiser
    state unchanged. Returns params, opt_state, correct [C] and count [C]
    (per true class, the members' mean number of correctly classified and of
    all masked items over the pass), mean loss.
    """
    update = gradients.gradient_update_fn(
      self._loss, self.optimizer, has_aux=True
    )

    def step(carry, batch):
      params, opt_state = carry
      b_idx, b_mask = batch
      (loss, hits), new_params, new_opt = update(
        params, opt_state, rs.inputs(b_idx), rs.label[b_idx], b_mask, weights
      )
      apply = active & jnp.any(b_mask)
      keep = lambda new, old: jax.tree_util.tree_map(
        lambda a, b: jnp.where(apply, a, b), new, old
      )
      return (keep(new_params, params), keep(new_opt, opt_state)), (loss, hits)

    (params, opt_state), (losses, (correct, count)) = jax.lax.scan(
      step, (params, opt_state), (idx, mask)
    )
    return (
      params,
      opt_state,
      jnp.sum(correct, 0),
      jnp.sum(count, 0),
      jnp.mean(losses),
    )

  def schedule(
    self, labels: np.ndarray, rng: np.random.Generator, ensemble_size: int
  ) -> Tuple[np.ndarray, np.ndarray]:
    """Padded minibatch schedule for every member: idx, mask [T, E, B]."""
    n = labels.shape[0]
    per_member: List[List[np.ndarray]] = []
    for _ in range(ensemble_size):
      if self.stratified:
        batches = reward_lib.stratified_batches(labels, self.batch_size, rng)
      else:
        perm = rng.permutation(n)
        batches = [
          perm[i : i + self.batch_size] for i in range(0, n, self.batch_size)
        ]
      per_member.append(batches)
    t = max(len(b) for b in per_member)
    bsz = min(self.batch_size, n)
    idx = np.zeros((t, ensemble_size, bsz), np.int32)
    mask = np.zeros((t, ensemble_size, bsz), bool)
    for e, batches in enumerate(per_member):
      for i, b in enumerate(batches):
        idx[i, e, : len(b)] = b
        mask[i, e, : len(b)] = True
    return idx, mask


def make_learner(
  config: ml_collections.ConfigDict,
  num_classes: int,
  model: reward_model_lib.RewardModel,
) -> RewardLearner:
  r = config.reward
  preference = r.feedback_type == "preference"
  return RewardLearner(
    model=model,
    num_classes=2 if preference else num_classes,
    loss=r.loss,
    class_weighted=r.class_weighted,
    stratified=r.stratified,
    batch_size=r.batch_size,
    max_epochs=r.max_epochs,
    min_epochs=r.min_epochs,
    stop_accuracy=r.stop_accuracy,
    stop_metric=r.stop_metric,
    k=r.k,
    label_smoothing=r.label_smoothing,
    lr=r.lr,
    preference=preference,
  )


def accuracies(
  correct: np.ndarray, count: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
  """Accuracy and balanced accuracy [S] from per-class counts [S, C].

  Balanced accuracy is the mean recall over the classes with items (a class
  absent from the rating set does not count); both are 0 without items.
  """
  correct = np.asarray(correct, np.float64)
  count = np.asarray(count, np.float64)
  accuracy = correct.sum(-1) / np.maximum(count.sum(-1), 1.0)
  present = count > 0
  recall = np.where(present, correct / np.maximum(count, 1e-12), 0.0)
  balanced = recall.sum(-1) / np.maximum(present.sum(-1), 1)
  return accuracy, balanced


def _seed_class_weights(
  learner: RewardLearner, labels: np.ndarray, sizes: np.ndarray
) -> jax.Array:
  """[S, n] class weights of each seed's stored labels (labels [S, budget],
  sizes [S]); all ones without learner.class_weighted or for
  preferences."""
  weights = []
  for s in range(sizes.shape[0]):
    lab = labels[s, : sizes[s]]
    weights.append(
      np.asarray(reward_lib.class_weights(lab, learner.num_classes))
      if learner.class_weighted and not learner.preference
      else np.ones((learner.num_classes,), np.float32)
    )
  return jnp.asarray(np.stack(weights))


def block_lengths(steps: int, block: int) -> List[int]:
  """Lengths of the compiled calls that run `steps` minibatch steps: blocks
  of `block`, then the rest rounded up to a power of two (at most block).

  Padded steps are computed and then discarded, so the rest is not padded
  to a whole block: an epoch of one real step (every session while fewer
  ratings than batch_size are stored) would pay for block of them. Rounding
  to a power of two keeps the programs to a few shapes (1, 2, 4, ... block).
  """
  lengths = [block] * (steps // block)
  rest = steps % block
  if rest:
    lengths.append(min(block, 1 << (rest - 1).bit_length()))
  return lengths


def _stacked_schedules(
  scheds: List[Tuple[np.ndarray, np.ndarray]], t: int, batch_multiple: int
) -> Tuple[np.ndarray, np.ndarray]:
  """Each seed's (idx, mask) [T_s, E, B_s] stacked into idx, mask
  [S, t, E, B] (zero-padded, masked out; t >= every T_s), B a multiple of
  batch_multiple."""
  bsz = max(x[0].shape[2] for x in scheds)
  bsz = -(-bsz // batch_multiple) * batch_multiple
  e = scheds[0][0].shape[1]
  idx = np.zeros((len(scheds), t, e, bsz), np.int32)
  mask = np.zeros((len(scheds), t, e, bsz), bool)
  for s, (i, m) in enumerate(scheds):
    idx[s, : i.shape[0], :, : i.shape[2]] = i
    mask[s, : m.shape[0], :, : m.shape[2]] = m
  return idx, mask


def train_reward(
  learner: RewardLearner,
  epoch_fn,
  params,
  opt_state,
  rating_sets: RatingSet,
  rng: np.random.Generator,
  put_minibatches: Callable[[np.ndarray], jax.Array] = jnp.asarray,
  batch_multiple: int = 1,
) -> Tuple[Any, Any, List[int], List[float], List[float]]:
  """Up to max_epochs epochs per seed, each seed stopping on its own once its
  training accuracy (or balanced accuracy, per learner.stop_metric) exceeds
  stop_accuracy after at least learner.min_epochs epochs. `epoch_fn` is
  the jitted, seed-vmapped `learner.epoch`; it is called on blocks of
  learner.block_steps steps (the last one shorter: `block_lengths`), so its
  shapes repeat from session to session (the batch dim changes only while
  fewer ratings than batch_size are stored). The schedule idx / mask
  [S, T, E, B] goes to epoch_fn through put_minibatches
  (erljax.runtime.sharding.Layout.put_minibatches splits B over the data
  axis, so each device computes the losses of its part and jit all-reduces
  the gradients), B padded with masked-out items to a multiple
  of batch_multiple (the data devices).

  Returns params, opt_state, epochs [S], and the accuracy [S] and balanced
  accuracy [S] of each seed's last epoch.
  """
  sizes, labels_all = distributed.to_host((rating_sets.size, rating_sets.label))
  num_seeds = sizes.shape[0]
  e = learner.model.ensemble_size
  weights = _seed_class_weights(learner, labels_all, sizes)
  active = np.ones((num_seeds,), bool)
  epochs = [0] * num_seeds
  accuracy = [0.0] * num_seeds
  balanced = [0.0] * num_seeds
  for _ in range(learner.max_epochs):
    scheds = [
      learner.schedule(labels_all[s, : sizes[s]], rng, e)
      for s in range(num_seeds)
    ]
    lengths = block_lengths(
      max(i.shape[0] for i, _ in scheds), learner.block_steps
    )
    idx, mask = _stacked_schedules(scheds, sum(lengths), batch_multiple)
    correct = np.zeros((num_seeds, learner.num_classes))
    count = np.zeros((num_seeds, learner.num_classes))
    start = 0
    for length in lengths:
      blk = slice(start, start + length)
      start += length
      params, opt_state, c_blk, n_blk, _ = epoch_fn(
        params,
        opt_state,
        rating_sets,
        put_minibatches(idx[:, blk]),
        put_minibatches(mask[:, blk]),
        weights,
        jnp.asarray(active),
      )
      c_blk, n_blk = distributed.to_host((c_blk, n_blk))
      correct += np.asarray(c_blk, np.float64)
      count += np.asarray(n_blk, np.float64)
    acc, bal = accuracies(correct, count)
    stop_on = bal if learner.stop_metric == "balanced_accuracy" else acc
    for s in range(num_seeds):
      if active[s]:
        epochs[s] += 1
        accuracy[s] = float(acc[s])
        balanced[s] = float(bal[s])
        if (
          epochs[s] >= learner.min_epochs and stop_on[s] > learner.stop_accuracy
        ):
          active[s] = False
    if not active.any():
      break
  return params, opt_state, epochs, accuracy, balanced
