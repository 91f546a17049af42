"""Feedback sessions: query, rate, train the reward model, relabel.

The pieces run between compiled training chunks. Everything that touches
arrays is jitted and vmapped over the seed axis; the host only schedules
minibatches (the reference's stratified schedule is host-side bookkeeping)
and talks to the rater.

A segment is H consecutive transitions of one env (`feedback.segment_length`;
H = 1 is ERL-VLM's MetaWorld setting, one post-step frame per query, and RbRL
rates H = 50 state segments); its return is the sum of their rewards. A
rating query holds one segment, a preference query (the RL-VLM-F baseline)
two. Queries are drawn uniformly from recent transitions (ERL-VLM), or by
ensemble disagreement (RbRL's option, `feedback.sampling`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from erljax import gradients
from erljax import replay
from erljax import reward as reward_lib
from erljax import reward_model as reward_model_lib
from erljax.raters import Queries, Rater, Ratings


@struct.dataclass
class RatingSet:
  """Answered queries of one seed, circular.

  obs [capacity, P, H, O] and action [capacity, P, H, A] hold the P
  segments of H transitions of a query (P = 1 for ratings, 2 for
  preferences); label [capacity] is the class (ratings) or the preferred
  segment (preferences); true_reward [capacity, P] is each segment's
  ground-truth return of the rated quantity (the task's rating signal, by
  default the reward), kept for diagnostics only. frames
  [capacity, P, H, height, width, 3] uint8 are what an image reward model
  reads (the ray-cast post-step frames, drawn once when the ratings are
  stored); None for the state-action model.
  """

  obs: jax.Array
  action: jax.Array
  label: jax.Array  # int32
  true_reward: jax.Array
  size: jax.Array  # int32 scalar
  insert_pos: jax.Array  # int32 scalar
  frames: Optional[jax.Array] = None

  def inputs(self, idx: jax.Array) -> Tuple[jax.Array, ...]:
    """The reward model's inputs for rows idx [...]: (frames,) or
    (obs, action), each [..., P, H, ...]."""
    if self.frames is not None:
      return (self.frames[idx],)
    return self.obs[idx], self.action[idx]


def empty_rating_set(
  capacity: int,
  obs_size: int,
  action_size: int,
  segments: int = 1,
  segment_length: int = 1,
  frame_shape: Optional[Tuple[int, int]] = None,
) -> RatingSet:
  """An empty set of queries of `segments` segments of `segment_length`
  transitions; with frame_shape (height, width) it also holds frames."""
  rows = (capacity, segments, segment_length)
  return RatingSet(
    obs=jnp.zeros(rows + (obs_size,)),
    action=jnp.zeros(rows + (action_size,)),
    label=jnp.zeros((capacity,), jnp.int32),
    true_reward=jnp.zeros((capacity, segments)),
    size=jnp.zeros((), jnp.int32),
    insert_pos=jnp.zeros((), jnp.int32),
    frames=None
    if frame_shape is None
    else jnp.zeros(rows + tuple(frame_shape) + (3,), jnp.uint8),
  )


def add_ratings(
  rs: RatingSet, obs, action, label, true_reward, answered, frames=None
) -> RatingSet:
  """Appends the answered rows of a batch (unanswered rows are skipped).

  obs [Q, P, H, O], action [Q, P, H, A], label [Q], true_reward [Q, P]
  (segment returns), answered [Q] bool; frames [Q, P, H, height, width, 3]
  are required exactly when the set holds frames.
  """
  if (frames is None) != (rs.frames is None):
    holds = "holds" if rs.frames is not None else "holds no"
    raise ValueError(
      "add_ratings: frames must be given exactly when the "
      f"rating set holds frames (this one {holds} frames)"
    )
  cap = rs.label.shape[0]
  if answered.shape[0] > cap:
    raise ValueError(
      f"a batch of {answered.shape[0]} queries does not fit a "
      f"rating set of capacity {cap}"
    )
  order = jnp.argsort(~answered)  # answered rows first, stable
  n_new = jnp.sum(answered).astype(jnp.int32)
  slots = (rs.insert_pos + jnp.arange(answered.shape[0])) % cap
  # Rows past n_new write to a dummy slot index `cap` that .at[] drops.
  slots = jnp.where(jnp.arange(answered.shape[0]) < n_new, slots, cap)
  put = lambda d, v: d.at[slots].set(v[order].astype(d.dtype), mode="drop")
  return RatingSet(
    obs=put(rs.obs, obs),
    action=put(rs.action, action),
    label=put(rs.label, label),
    true_reward=put(rs.true_reward, true_reward),
    size=jnp.minimum(rs.size + n_new, cap),
    insert_pos=(rs.insert_pos + n_new) % cap,
    frames=None if frames is None else put(rs.frames, frames),
  )


def disagreement(member_returns: jax.Array) -> jax.Array:
  """How much an ensemble disagrees on each query: [E, Q, P] -> [Q].

  member_returns holds each member's predicted return of the P segments of Q
  queries. P = 1 (ratings): the std over members of the return. P = 2
  (preferences): the std over members of P[segment 1 preferred] =
  sigmoid(R1 - R0), PEBBLE's and RbRL's disagreement score.
  """
  if member_returns.ndim != 3 or member_returns.shape[-1] not in (1, 2):
    raise ValueError(
      f"member_returns of shape {member_returns.shape}: "
      "expected [E, Q, P] with P = 1 or 2"
    )
  if member_returns.shape[-1] == 1:
    return jnp.std(member_returns[..., 0], axis=0)
  prefer = jax.nn.sigmoid(member_returns[..., 1] - member_returns[..., 0])
  return jnp.std(prefer, axis=0)


def segment_indices(
  insert_pos: jax.Array,
  capacity: int,
  back: jax.Array,
  segment_length: int = 1,
  num_envs: int = 1,
  episode_step: Optional[jax.Array] = None,
  episode_length: int = 1,
) -> jax.Array:
  """Buffer slots of segments of H = segment_length consecutive steps.

  The buffer holds vectorized steps of num_envs = N envs: step k back (0 =
  newest) of env e is slot insert_pos - N (k + 1) + e. back [...] counts
  transitions back from the newest one (back = N k + N - 1 - e) and picks
  the segment's last step. A segment never spans an episode boundary: if
  fewer than H - 1 steps of its episode precede that last step, the segment
  moves to start at the episode's first step or, when that episode has not
  yet run H steps, to end at the previous episode's last step. Episode
  positions come from episode_step [N] (each env's VecEnvState.t, steps
  taken in its current episode) and episode_length, so they are exact for
  tasks without early termination (every registered task: episodes end at
  the time limit only).

  Returns int32 slots [..., H], oldest first. With H = 1 they are
  insert_pos - 1 - back and episode_step is not needed. The caller keeps
  back + N (H - 1) inside the filled part and leaves N (2H - 1) filled
  transitions (the earlier shift reaches at most 2H - 2 steps back).
  """
  h = segment_length
  k, e = back // num_envs, num_envs - 1 - back % num_envs
  if h > 1:
    if episode_step is None:
      raise ValueError(
        f"segment_length={h} needs episode_step (the envs' "
        "steps into their current episodes)"
      )
    pos = (episode_step[e] - 1 - k) % episode_length  # of the last step
    later = k - (h - 1 - pos)
    k = jnp.where(pos >= h - 1, k, jnp.where(later >= 0, later, k + pos + 1))
  last = insert_pos - 1 - (num_envs * k + num_envs - 1 - e)
  steps = jnp.arange(h - 1, -1, -1) * num_envs  # oldest first
  return ((last[..., None] - steps) % capacity).astype(jnp.int32)


def sample_queries(
  buffer: replay.ReplayBuffer,
  key: jax.Array,
  num_queries: int,
  *,
  window: int,
  segments: int = 1,
  candidates: int = 1,
  member_rewards: Optional[Callable[[replay.Transition], jax.Array]] = None,
  segment_length: int = 1,
  num_envs: int = 1,
  episode_step: Optional[jax.Array] = None,
  episode_length: int = 1,
) -> replay.Transition:
  """Queries from the `window` most recent transitions.

  Every argument after num_queries is keyword-only.
  Returns leaves [Q, segments, H, ...]: Q queries of `segments` segments of
  H = segment_length consecutive steps of one env, laid out as
  `segment_indices` says (num_envs, episode_step [N], episode_length). With
  candidates = 1 they are a uniform sample (ERL-VLM). With candidates = C >
  1 (RbRL's disagreement sampling), C * Q queries are drawn uniformly and
  the Q on which the reward ensemble disagrees most (over segment returns)
  are kept; member_rewards maps transitions (leaves [M, ...]) to each
  member's reward [E, M].
  """
  if candidates < 1 or (candidates > 1 and member_rewards is None):
    raise ValueError(
      f"candidates={candidates}: must be >= 1, and > 1 needs member_rewards"
    )
  span = num_envs * (segment_length - 1)
  recent = jnp.maximum(jnp.minimum(buffer.size, window) - span, 1)
  back = jax.random.randint(
    key, (candidates * num_queries, segments), 0, recent
  )
  idx = segment_indices(
    buffer.insert_pos,
    buffer.capacity,
    back,
    segment_length,
    num_envs,
    episode_step,
    episode_length,
  )
  if candidates > 1:
    flat = jax.tree_util.tree_map(lambda d: d[idx.reshape(-1)], buffer.data)
    r = member_rewards(flat)
    returns = jnp.sum(r.reshape((r.shape[0],) + idx.shape), -1)
    score = disagreement(returns)
    idx = idx[jax.lax.top_k(score, num_queries)[1]]
  return jax.tree_util.tree_map(lambda d: d[idx], buffer.data)


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
  # steps (the last padded with empty, no-op steps), so one compiled program
  # serves every session as the rating set grows.
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


def ask(
  rater: Rater, true_reward: np.ndarray, frames: Optional[np.ndarray] = None
) -> Ratings:
  """One seed's rating call: queries [Q, P] -> Ratings with labels [Q].

  true_reward [Q, P] holds the P segments' ground-truth returns (P = 1:
  rate each segment, P = 2: prefer one of two); frames
  [Q, P, height, width, 3] uint8 are what a VLM sees (None for raters that
  do not need them). Safe to call from a worker thread: touches numpy only.
  Answered labels must be classes of the rater (0..num_classes-1, 0..1 for
  preferences).
  """
  true_reward = np.asarray(true_reward)
  q, p = true_reward.shape
  frame = lambda i: None if frames is None else frames[:, i]
  if p == 2:
    got = rater.prefer(
      Queries(true_return=true_reward[:, 0], frames=frame(0)),
      Queries(true_return=true_reward[:, 1], frames=frame(1)),
    )
    classes = 2
  else:
    got = rater.rate(Queries(true_return=true_reward[:, 0], frames=frame(0)))
    classes = rater.num_classes
  labels = np.asarray(got.labels).reshape(-1)
  answered = np.asarray(got.answered, bool).reshape(-1)
  if labels.shape != (q,) or answered.shape != (q,):
    raise ValueError(
      f"rater {type(rater).__name__} answered labels "
      f"{labels.shape} / answered {answered.shape} for {q} "
      "queries"
    )
  bad = answered & ((labels < 0) | (labels >= classes))
  if bad.any():
    raise ValueError(
      f"rater {type(rater).__name__} gave label "
      f"{labels[bad][0]} outside 0..{classes - 1}"
    )
  return Ratings(labels=np.where(answered, labels, -1), answered=answered)


def store_ratings(
  rating_sets: RatingSet,
  queries: replay.Transition,
  ratings: List[Ratings],
  frames: Optional[jax.Array] = None,
) -> Tuple[RatingSet, Dict[str, Any]]:
  """Stores each seed's answered queries; unanswered ones are never labelled.

  rating_sets and queries carry a leading seed axis S (queries' leaves
  [S, Q, P, H, ...], true_reward the per-step rated quantity [S, Q, P, H],
  stored as segment returns [S, Q, P]); ratings[s] answers seed s's Q
  queries. frames [S, Q, P, H, height, width, 3]: the queries' frames, for a
  set that holds frames.
  """
  labels = jnp.asarray(
    np.stack([np.where(r.answered, r.labels, 0) for r in ratings]), jnp.int32
  )
  answered = np.stack([np.asarray(r.answered, bool) for r in ratings])
  chex.assert_shape(labels, queries.true_reward.shape[:2])
  rating_sets = _add_ratings_seeds(
    rating_sets,
    queries.obs,
    queries.action,
    labels,
    jnp.sum(queries.true_reward, -1),
    jnp.asarray(answered),
    frames,
  )
  return rating_sets, {
    "answered": answered.sum(1).tolist(),
    "dropped": (~answered).sum(1).tolist(),
  }


_add_ratings_seeds = jax.jit(jax.vmap(add_ratings))


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


def train_reward(
  learner: RewardLearner,
  epoch_fn,
  params,
  opt_state,
  rating_sets: RatingSet,
  rng: np.random.Generator,
) -> Tuple[Any, Any, List[int], List[float], List[float]]:
  """Up to max_epochs epochs per seed, each seed stopping on its own once its
  training accuracy (or balanced accuracy, per learner.stop_metric) exceeds
  stop_accuracy after at least learner.min_epochs epochs. `epoch_fn` is
  the jitted, seed-vmapped `learner.epoch`; it is called on blocks of
  learner.block_steps steps, so its shapes stay the same from session to
  session (the batch dim changes only while fewer ratings than batch_size
  are stored).

  Returns params, opt_state, epochs [S], and the accuracy [S] and balanced
  accuracy [S] of each seed's last epoch.
  """
  sizes = np.asarray(rating_sets.size)
  labels_all = np.asarray(rating_sets.label)
  num_seeds = sizes.shape[0]
  e = learner.model.ensemble_size
  weights = []
  for s in range(num_seeds):
    lab = labels_all[s, : sizes[s]]
    weights.append(
      np.asarray(reward_lib.class_weights(lab, learner.num_classes))
      if learner.class_weighted and not learner.preference
      else np.ones((learner.num_classes,), np.float32)
    )
  weights = jnp.asarray(np.stack(weights))
  active = np.ones((num_seeds,), bool)
  epochs = [0] * num_seeds
  accuracy = [0.0] * num_seeds
  balanced = [0.0] * num_seeds
  for _ in range(learner.max_epochs):
    scheds = [
      learner.schedule(labels_all[s, : sizes[s]], rng, e)
      for s in range(num_seeds)
    ]
    block = learner.block_steps
    t = max(x[0].shape[0] for x in scheds)
    t = -(-t // block) * block
    bsz = max(x[0].shape[2] for x in scheds)
    idx = np.zeros((num_seeds, t, e, bsz), np.int32)
    mask = np.zeros((num_seeds, t, e, bsz), bool)
    for s, (i, m) in enumerate(scheds):
      idx[s, : i.shape[0], :, : i.shape[2]] = i
      mask[s, : m.shape[0], :, : m.shape[2]] = m
    correct = np.zeros((num_seeds, learner.num_classes))
    count = np.zeros((num_seeds, learner.num_classes))
    for start in range(0, t, block):
      blk = slice(start, start + block)
      params, opt_state, c_blk, n_blk, _ = epoch_fn(
        params,
        opt_state,
        rating_sets,
        jnp.asarray(idx[:, blk]),
        jnp.asarray(mask[:, blk]),
        weights,
        jnp.asarray(active),
      )
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
