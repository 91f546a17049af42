"""Feedback sessions: query, rate, train the reward model, relabel.

The pieces run between compiled training chunks. Everything that touches
arrays is jitted and vmapped over the seed axis; the host only schedules
minibatches (the reference's stratified schedule is host-side bookkeeping)
and talks to the rater.

A segment is H consecutive transitions of one env (`feedback.segment_length`;
H = 1 is ERL-VLM's MetaWorld setting, one post-step frame per query, and RbRL
rates H = 50 state segments); its return is the sum of their rewards. A
rating query holds one segment, a preference query (the RL-VLM-F baseline)
two. Queries are drawn uniformly from the most recent completed episodes
(ERL-VLM; the reference keeps its last 100) or transitions, or by ensemble
disagreement (RbRL's option, `feedback.sampling`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from erljax.runtime import distributed
from erljax.agents import replay
from erljax.raters.api import Queries, Rater, Ratings


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
  shards: int = 1,
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
  With shards = K blocks (replay.ReplayBuffer) env e's items lie in block
  e // n, n = N / K, at its slots insert_pos / K - n (k + 1) + e % n.
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
  n, block_cap = num_envs // shards, capacity // shards
  block, e = e // n, e % n
  last = insert_pos // shards - 1 - (n * k + n - 1 - e)
  steps = jnp.arange(h - 1, -1, -1) * n  # oldest first
  slot = (last[..., None] - steps) % block_cap
  return (block[..., None] * block_cap + slot).astype(jnp.int32)


def recent_episodes(
  stored: jax.Array,
  episode_step: jax.Array,
  episode_length: int,
  episodes: int,
) -> Tuple[jax.Array, jax.Array]:
  """The most recent `episodes` completed episodes, counted across envs.

  stored (int32 scalar) is how many vectorized steps of every env the
  buffer holds, episode_step [N] each env's steps into its current episode
  (VecEnvState.t). Env e's j-th most recent completed episode holds its
  steps k = t_e + j L ... t_e + (j + 1) L - 1 back (k = 0 the newest, L =
  episode_length: episodes end at the time limit only, as in
  `segment_indices`); it counts once all L steps are stored. Episodes are
  ranked by their last step's place in the buffer (newest first; envs that
  end on the same vectorized step in the order the buffer holds them, the
  last env first). As every env ends one episode in every L steps, only the
  J = ceil(episodes / N) newest of each env can be among them.

  Returns newest [N, J] int32, the k of each candidate's last step, and
  chosen [N, J] bool, which of them are among the `episodes` most recent
  completed ones (fewer where fewer have completed; none before the first).
  """
  n = episode_step.shape[0]
  j = -(-episodes // n)
  newest = episode_step[:, None] + episode_length * jnp.arange(j)[None, :]
  complete = newest + episode_length <= stored
  last_back = n * newest + (n - 1 - jnp.arange(n))[:, None]
  key = jnp.where(complete, last_back, jnp.iinfo(jnp.int32).max).reshape(-1)
  rank = jnp.zeros(n * j, jnp.int32).at[jnp.argsort(key)].set(jnp.arange(n * j))
  chosen = complete & (rank.reshape(n, j) < episodes)
  return newest.astype(jnp.int32), chosen


def _episode_backs(
  key: jax.Array,
  shape: Tuple[int, ...],
  newest: jax.Array,
  chosen: jax.Array,
  episode_length: int,
) -> jax.Array:
  """Uniform draws [shape] of transitions of the chosen episodes
  (`recent_episodes`), as counts back from the newest transition."""
  n = chosen.shape[0]
  steps = jnp.where(chosen, episode_length, 0).reshape(-1)
  ends = jnp.cumsum(steps)
  u = jax.random.randint(key, shape, 0, jnp.maximum(ends[-1], 1))
  which = jnp.searchsorted(ends, u, side="right")
  k = newest.reshape(-1)[which] + u - (ends[which] - steps[which])
  return n * k + n - 1 - which // chosen.shape[1]


def sample_queries(
  buffer: replay.ReplayBuffer,
  key: jax.Array,
  num_queries: int,
  *,
  window: Optional[int] = None,
  window_episodes: Optional[int] = None,
  segments: int = 1,
  candidates: int = 1,
  member_rewards: Optional[Callable[[replay.Transition], jax.Array]] = None,
  segment_length: int = 1,
  num_envs: int = 1,
  episode_step: Optional[jax.Array] = None,
  episode_length: int = 1,
) -> replay.Transition:
  """Queries from the `window` most recent transitions or from the
  `window_episodes` most recent completed episodes (exactly one is given).

  Every argument after num_queries is keyword-only.
  Returns leaves [Q, segments, H, ...]: Q queries of `segments` segments of
  H = segment_length consecutive steps of one env, laid out as
  `segment_indices` says (num_envs, episode_step [N], episode_length). With
  window_episodes (the reference's store of its last 100 complete episodes)
  the episodes are `recent_episodes`'; before the first has completed, the
  queries come from everything stored (the reference then draws from its
  one, unfinished, episode). With candidates = 1 they are a uniform sample
  (ERL-VLM). With candidates = C > 1 (RbRL's disagreement sampling), C * Q
  queries are drawn uniformly and the Q on which the reward ensemble
  disagrees most (over segment returns) are kept; member_rewards maps
  transitions (leaves [M, ...]) to each member's reward [E, M].
  """
  if candidates < 1 or (candidates > 1 and member_rewards is None):
    raise ValueError(
      f"candidates={candidates}: must be >= 1, and > 1 needs member_rewards"
    )
  if (window is None) == (window_episodes is None):
    raise ValueError(
      f"window={window}, window_episodes={window_episodes}: give exactly one"
    )
  if window_episodes is not None and episode_step is None:
    raise ValueError("window_episodes needs episode_step")
  shape = (candidates * num_queries, segments)
  k_all, k_episodes = jax.random.split(key)
  span = num_envs * (segment_length - 1)
  recent = buffer.size if window is None else jnp.minimum(buffer.size, window)
  back = jax.random.randint(k_all, shape, 0, jnp.maximum(recent - span, 1))
  if window_episodes is not None:
    newest, chosen = recent_episodes(
      buffer.size // num_envs, episode_step, episode_length, window_episodes
    )
    back = jnp.where(
      jnp.any(chosen),
      _episode_backs(k_episodes, shape, newest, chosen, episode_length),
      back,
    )
  idx = segment_indices(
    buffer.insert_pos,
    buffer.capacity,
    back,
    segment_length,
    num_envs,
    episode_step,
    episode_length,
    buffer.shards,
  )
  if candidates > 1:
    flat = jax.tree_util.tree_map(lambda d: d[idx.reshape(-1)], buffer.data)
    r = member_rewards(flat)
    returns = jnp.sum(r.reshape((r.shape[0],) + idx.shape), -1)
    score = disagreement(returns)
    idx = idx[jax.lax.top_k(score, num_queries)[1]]
  return jax.tree_util.tree_map(lambda d: d[idx], buffer.data)


def ask(
  rater: Rater, true_reward: np.ndarray, frames: Optional[np.ndarray] = None
) -> Ratings:
  """One seed's rating call: queries [Q, P] -> Ratings with labels [Q].

  true_reward [Q, P] holds the P segments' ground-truth returns (P = 1:
  rate each segment, P = 2: prefer one of two); frames
  [Q, P, height, width, 3] uint8 are what a VLM sees (None for raters that
  do not need them). Safe to call from a worker thread: touches numpy only.
  Answered labels must be classes of the rater (0..num_classes-1, 0..1 for
  preferences). The rater's `counts` for the call (a VLM's requests, tokens
  and drop reasons) are passed on.
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
  outage = (
    None
    if got.outage is None
    else np.asarray(got.outage, bool).reshape(-1) & ~answered
  )
  return Ratings(
    labels=np.where(answered, labels, -1),
    answered=answered,
    counts=getattr(got, "counts", None),
    outage=outage,
  )


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


def label_histogram(
  rating_sets: RatingSet, num_classes: int
) -> List[List[int]]:
  """Stored labels per class [S][C] of seed-stacked rating sets."""
  sizes, labels = distributed.to_host((rating_sets.size, rating_sets.label))
  return [
    np.bincount(labels[s, : sizes[s]], minlength=num_classes).tolist()
    for s in range(len(sizes))
  ]


def label_accuracy(
  rating_sets: RatingSet,
  true_labels: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> List[float]:
  """Share of stored labels [S] that match the noise-free answer.

  true_labels maps segment returns [n] to the noise-free rating classes
  (the scripted rater's `true_labels`); None: preference pairs, whose true
  answer is 1 where the second segment's return is higher. NaN for a seed
  with nothing stored.
  """
  sizes, labels, true_r = distributed.to_host(
    (rating_sets.size, rating_sets.label, rating_sets.true_reward)
  )
  out = []
  for s in range(len(sizes)):
    r = true_r[s, : sizes[s]]
    truth = (
      (r[:, 1] > r[:, 0]).astype(np.int64)
      if true_labels is None
      else true_labels(r[:, 0])
    )
    out.append(
      float(np.mean(labels[s, : sizes[s]] == truth)) if sizes[s] else math.nan
    )
  return out
