"""Feedback sessions (feedback.py): the rating store, query sampling, the
reward learner's minibatch schedule and its training loop.

A RatingSet row holds one query of P segments of H steps (P = 1 for ratings),
so obs rows are [P, H, O] = [1, 1, O] here unless a test says otherwise.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.rewards import queries as feedback
from erljax.rewards import learner as reward_learner
from erljax.agents import replay
from erljax.raters.api import Ratings, ScriptedRater
from erljax.agents.replay import Transition
from erljax.rewards.model import RewardModel

OBS, A = 2, 1


# --- add_ratings --------------------------------------------------------------


def _rows(values):
  """A batch of B one-segment queries whose every field encodes `values`."""
  v = jnp.asarray(values, jnp.float32)
  obs = jnp.stack([v, v + 100.0], -1)[:, None, None, :]  # [B, 1, 1, O]
  action = -v[:, None, None, None]  # [B, 1, 1, A]
  label = (jnp.asarray(values) % 3).astype(jnp.int32)  # [B]
  true_reward = 0.5 * v[:, None]  # [B, 1]
  return obs, action, label, true_reward


def _add(rs, values, answered):
  return feedback.add_ratings(rs, *_rows(values), jnp.asarray(answered, bool))


def _stored(rs):
  """Slot -> the value that was written there (0 for empty slots)."""
  return np.asarray(rs.obs[:, 0, 0, 0])


def _assert_consistent(rs):
  """Every field of a filled slot came from the same input row; empty slots
  (value 0) are still all zero."""
  v = np.asarray(rs.obs[:, 0, 0, 0])
  full = v != 0
  np.testing.assert_array_equal(
    np.asarray(rs.obs[:, 0, 0, 1])[full], v[full] + 100.0
  )
  np.testing.assert_array_equal(np.asarray(rs.obs[:, 0, 0, 1])[~full], 0.0)
  np.testing.assert_array_equal(rs.action[:, 0, 0, 0], -v)
  np.testing.assert_array_equal(rs.true_reward[:, 0], 0.5 * v)
  np.testing.assert_array_equal(rs.label, np.where(full, v.astype(int) % 3, 0))


def test_empty_rating_set_shapes():
  rs = feedback.empty_rating_set(7, OBS, A)
  assert rs.obs.shape == (7, 1, 1, OBS)
  assert rs.action.shape == (7, 1, 1, A)
  assert rs.true_reward.shape == (7, 1)
  pairs = feedback.empty_rating_set(
    7, OBS, A, segments=2, segment_length=5, frame_shape=(4, 6)
  )
  assert pairs.obs.shape == (7, 2, 5, OBS) and pairs.action.shape == (
    7,
    2,
    5,
    A,
  )
  assert pairs.true_reward.shape == (7, 2)
  assert pairs.frames.shape == (7, 2, 5, 4, 6, 3)
  assert rs.label.shape == (7,) and rs.label.dtype == jnp.int32
  assert int(rs.size) == 0 and int(rs.insert_pos) == 0


def test_add_ratings_stores_only_answered_rows_in_order():
  rs = feedback.empty_rating_set(5, OBS, A)
  rs = _add(rs, [1, 2, 3, 4], [True, False, True, True])
  np.testing.assert_array_equal(_stored(rs), [1, 3, 4, 0, 0])
  np.testing.assert_array_equal(rs.label[:3], [1, 0, 1])
  np.testing.assert_array_equal(rs.obs[:3, 0, 0, 1], [101, 103, 104])
  np.testing.assert_array_equal(rs.action[:3, 0, 0, 0], [-1, -3, -4])
  np.testing.assert_array_equal(rs.true_reward[:3, 0], [0.5, 1.5, 2.0])
  assert int(rs.size) == 3 and int(rs.insert_pos) == 3
  _assert_consistent(rs)


def test_add_ratings_wraps_around_and_caps_size():
  rs = feedback.empty_rating_set(5, OBS, A)
  rs = _add(rs, [1, 2, 3, 4], [True, False, True, True])  # slots 0..2
  rs = _add(rs, [10, 11, 12, 13], [True, True, False, True])  # slots 3, 4, 0
  np.testing.assert_array_equal(_stored(rs), [13, 3, 4, 10, 11])
  assert int(rs.size) == 5 and int(rs.insert_pos) == 1
  rs = _add(rs, [20, 21, 22], [True, True, True])  # slots 1, 2, 3
  np.testing.assert_array_equal(_stored(rs), [13, 20, 21, 22, 11])
  np.testing.assert_array_equal(rs.label, [1, 2, 0, 1, 2])
  assert int(rs.size) == 5 and int(rs.insert_pos) == 4
  _assert_consistent(rs)


def test_add_ratings_all_unanswered_changes_nothing():
  rs = _add(feedback.empty_rating_set(4, OBS, A), [5, 6], [True, True])
  after = _add(rs, [7, 8, 9], [False, False, False])
  for a, b in zip(
    jax.tree_util.tree_leaves(rs), jax.tree_util.tree_leaves(after)
  ):
    np.testing.assert_array_equal(a, b)
  assert int(after.size) == 2 and int(after.insert_pos) == 2


def test_add_ratings_jit_vmap_over_seeds_matches_per_seed():
  rs = jax.vmap(lambda _: feedback.empty_rating_set(4, OBS, A))(jnp.arange(2))
  rows = [_rows([1, 2, 3]), _rows([4, 5, 6])]
  stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *rows)
  answered = jnp.array([[True, False, True], [False, True, True]])
  out = jax.jit(jax.vmap(feedback.add_ratings))(rs, *stacked, answered)
  np.testing.assert_array_equal(
    out.obs[:, :, 0, 0, 0], [[1, 3, 0, 0], [5, 6, 0, 0]]
  )
  np.testing.assert_array_equal(out.size, [2, 2])
  for s in range(2):
    single = feedback.add_ratings(
      feedback.empty_rating_set(4, OBS, A), *rows[s], answered[s]
    )
    for a, b in zip(
      jax.tree_util.tree_leaves(single),
      jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda x, s=s: x[s], out)
      ),
    ):
      np.testing.assert_array_equal(a, b)


def test_ask_and_store_ratings_label_answered_queries():
  # Two seeds, three one-segment queries each of H = 2 steps; segment
  # returns binned over [0, 3].
  true_r = jnp.array([[0.5, 2.5, 1.5], [2.9, 0.1, 1.0]])[:, :, None]
  steps = jnp.stack([0.25 * true_r, 0.75 * true_r], -1)  # [S, Q, P, H]
  queries = Transition(
    obs=jnp.tile(steps[..., None], (1, 1, 1, 1, OBS)),
    action=jnp.zeros((2, 3, 1, 2, A)),
    reward=jnp.zeros((2, 3, 1, 2)),
    true_reward=steps,
    discount=jnp.ones((2, 3, 1, 2)),
    next_obs=jnp.zeros((2, 3, 1, 2, OBS)),
  )
  rs = jax.vmap(
    lambda _: feedback.empty_rating_set(8, OBS, A, segment_length=2)
  )(jnp.arange(2))
  raters = [ScriptedRater(3, 0.0, 3.0, seed=s) for s in range(2)]
  ratings = [feedback.ask(r, true_r[s]) for s, r in enumerate(raters)]
  rs, counts = feedback.store_ratings(rs, queries, ratings)
  np.testing.assert_array_equal(rs.label[:, :3], [[0, 2, 1], [2, 0, 1]])
  np.testing.assert_array_equal(rs.size, [3, 3])
  # Stored as segment returns, with the segments' steps.
  np.testing.assert_allclose(rs.true_reward[:, :3, 0], true_r[..., 0])
  np.testing.assert_allclose(rs.obs[:, :3, 0, :, 0], steps[:, :, 0])
  assert counts == {"answered": [3, 3], "dropped": [0, 0]}


def test_ask_passes_a_raters_call_counts_through():
  counts = {"requests": 2, "prompt_tokens": 9, "drop_reasons": {"refused": 1}}

  class Counting:
    num_classes = 3

    def rate(self, queries):
      return Ratings(
        labels=np.array([1, -1]),
        answered=np.array([True, False]),
        counts=counts,
      )

  got = feedback.ask(Counting(), np.zeros((2, 1)))
  assert got.counts == counts
  scripted = feedback.ask(ScriptedRater(3, 0.0, 3.0), np.zeros((2, 1)))
  assert scripted.counts is None


# --- sample_queries -----------------------------------------------------------


def _transitions(start, n):
  v = jnp.arange(start, start + n, dtype=jnp.float32)
  return Transition(
    obs=jnp.stack([v, -v], -1),
    action=v[:, None] * 2.0,
    reward=v,
    true_reward=v + 0.25,
    discount=jnp.ones((n,)),
    next_obs=jnp.stack([v + 1.0, -v - 1.0], -1),
  )


def _buffer(cap, total, batch=10):
  one = jax.tree_util.tree_map(lambda x: x[0], _transitions(0, 1))
  buf = replay.init(cap, one)
  for start in range(0, total, batch):
    buf = replay.add(buf, _transitions(start, min(batch, total - start)))
  return buf


def test_sample_queries_draws_only_the_recent_window():
  buf = _buffer(20, 30)  # holds items 10..29, wrapped; next write at slot 10
  assert int(buf.insert_pos) == 10 and int(buf.size) == 20
  q = feedback.sample_queries(buf, jax.random.PRNGKey(0), 2000, window=5)
  assert q.reward.shape == (2000, 1, 1) and q.obs.shape == (2000, 1, 1, OBS)
  assert set(np.asarray(q.reward).ravel().tolist()) == {
    25.0,
    26.0,
    27.0,
    28.0,
    29.0,
  }
  # The fields of one sampled transition stay together.
  np.testing.assert_array_equal(q.obs[..., 0], q.reward)
  np.testing.assert_array_equal(q.obs[..., 1], -q.reward)
  np.testing.assert_array_equal(q.action[..., 0], 2.0 * q.reward)
  np.testing.assert_array_equal(q.true_reward, q.reward + 0.25)


def test_sample_queries_window_larger_than_size_or_capacity():
  partial = _buffer(20, 7)
  q = feedback.sample_queries(partial, jax.random.PRNGKey(1), 2000, window=100)
  assert set(np.asarray(q.reward).ravel().tolist()) == set(map(float, range(7)))
  full = _buffer(20, 30)
  q = feedback.sample_queries(full, jax.random.PRNGKey(2), 4000, window=50)
  assert set(np.asarray(q.reward).ravel().tolist()) == set(
    map(float, range(10, 30))
  )


def test_sample_queries_window_one_is_the_newest_item():
  q = feedback.sample_queries(
    _buffer(20, 33), jax.random.PRNGKey(3), 50, window=1
  )
  np.testing.assert_array_equal(q.reward, np.full((50, 1, 1), 32.0))


def test_sample_queries_pairs_of_segments_stay_in_window():
  q = feedback.sample_queries(
    _buffer(20, 30), jax.random.PRNGKey(4), 500, window=4, segments=2
  )
  assert q.reward.shape == (500, 2, 1) and q.obs.shape == (500, 2, 1, OBS)
  assert set(np.asarray(q.reward).ravel().tolist()) == {26.0, 27.0, 28.0, 29.0}


# --- segments (H > 1) ---------------------------------------------------------


def _vec_buffer(cap, num_envs, steps, episode_length, shards=1):
  """`steps` vectorized steps of num_envs envs whose episodes all last
  episode_length steps (no early termination). obs = (env, global step t),
  reward = t's position in its episode, true_reward = its episode's index,
  next_obs = (env, t + 1). Returns the buffer and each env's VecEnvState.t."""
  e = jnp.arange(num_envs, dtype=jnp.float32)

  def step(t):
    full = jnp.full((num_envs,), float(t))
    return Transition(
      obs=jnp.stack([e, full], -1),
      action=e[:, None],
      reward=full % episode_length,
      true_reward=full // episode_length,
      discount=jnp.ones((num_envs,)),
      next_obs=jnp.stack([e, full + 1.0], -1),
    )

  one = jax.tree_util.tree_map(lambda x: x[0], step(0))
  buf = replay.init(cap, one, shards)
  for t in range(steps):
    buf = replay.add(buf, step(t))
  return buf, jnp.full((num_envs,), steps % episode_length, jnp.int32)


def test_segment_indices_by_hand():
  # 2 envs, episodes of 4 steps, steps t = 0..9 fill 20 slots exactly:
  # slot of (t, env) = 2 t + env, next write at slot 0; the envs are 2 steps
  # into episode 2 (t = 8, 9). H = 3.
  buf, t = _vec_buffer(20, 2, 10, 4)
  assert int(buf.insert_pos) == 0 and t.tolist() == [2, 2]
  got = feedback.segment_indices(
    buf.insert_pos,
    20,
    jnp.array([0, 3, 4, 9]),
    3,
    num_envs=2,
    episode_step=t,
    episode_length=4,
  )
  np.testing.assert_array_equal(
    got,
    [
      [11, 13, 15],  # back 0 = (t 9, env 1): episode 2 is too young, so
      # the segment ends at episode 1's last step, t 5..7
      [10, 12, 14],  # back 3 = (t 8, env 0): the same, env 0
      [11, 13, 15],  # back 4 = (t 7, env 1): fits, t 5..7
      [8, 10, 12],  # back 9 = (t 5, env 0): would start in episode 0, so
    ],
  )  # it starts at episode 1's first step, t 4..6
  # H = 1 is the newest-first slot back from insert_pos.
  back = jnp.arange(20)
  np.testing.assert_array_equal(
    feedback.segment_indices(buf.insert_pos, 20, back, 1, num_envs=2),
    ((-1 - back) % 20)[:, None],
  )
  with pytest.raises(ValueError, match="segment_length=3 needs episode_step"):
    feedback.segment_indices(buf.insert_pos, 20, back, 3, num_envs=2)


def test_segment_indices_of_a_blocked_buffer_find_the_same_steps():
  # 4 envs, 2 blocks (envs 0, 1 | 2, 3), 6-step episodes, wrapped; the same
  # (env, t) and segments as in the one-block buffer, in other slots.
  n, length, steps, h = 4, 6, 13, 3
  one, t = _vec_buffer(24, n, steps, length)
  two, _ = _vec_buffer(24, n, steps, length, shards=2)
  back = jnp.arange(int(one.size) - n * (h - 1))
  at = lambda buf: feedback.segment_indices(
    buf.insert_pos, 24, back, h, n, t, length, buf.shards
  )
  np.testing.assert_array_equal(two.data.obs[at(two)], one.data.obs[at(one)])
  assert not np.array_equal(at(two), at(one))


def test_sampled_segments_are_consecutive_steps_of_one_env_and_episode():
  # 3 envs, 7-step episodes, a 50-slot buffer (not a multiple of 3) that
  # has wrapped; H = 4 from the 30 most recent transitions (10 steps).
  n, length, steps, h = 3, 7, 40, 4
  buf, t = _vec_buffer(50, n, steps, length)
  q = feedback.sample_queries(
    buf,
    jax.random.PRNGKey(0),
    3000,
    window=30,
    segments=2,
    segment_length=h,
    num_envs=n,
    episode_step=t,
    episode_length=length,
  )
  assert q.obs.shape == (3000, 2, h, 2) and q.reward.shape == (3000, 2, h)
  env, step = np.asarray(q.obs[..., 0]), np.asarray(q.obs[..., 1])
  assert (env == env[..., :1]).all()  # one env
  np.testing.assert_array_equal(np.diff(step, axis=-1), 1.0)  # consecutive
  np.testing.assert_array_equal(q.obs[..., 1:, :], q.next_obs[..., :-1, :])
  episode = np.asarray(q.true_reward)
  assert (episode == episode[..., :1]).all()  # one episode
  # Recent: the last step lies in the window's 10 steps or, moved back to
  # the previous episode's end, at most 2H - 2 steps before them.
  assert step[..., -1].min() >= steps - 10 - (2 * h - 2)
  assert step.max() == steps - 1
  # Every env is drawn, and segments moved to an episode's start occur.
  assert set(env.ravel().tolist()) == {0.0, 1.0, 2.0}
  assert (np.asarray(q.reward)[..., 0] == 0).any()


# --- the query window in episodes ---------------------------------------------


def _phased_buffer(cap, offsets, steps, episode_length):
  """Like _vec_buffer, but env e starts offsets[e] steps into an episode, so
  the envs end their episodes on different steps (the first, partly
  stored). obs = (env, global step t). Returns the buffer and each env's
  VecEnvState.t."""
  off = jnp.asarray(offsets, jnp.int32)
  e = jnp.arange(len(offsets), dtype=jnp.float32)

  def step(t):
    full = jnp.full((len(offsets),), float(t))
    return Transition(
      obs=jnp.stack([e, full], -1),
      action=e[:, None],
      reward=((t + off) % episode_length).astype(jnp.float32),
      true_reward=((t + off) // episode_length).astype(jnp.float32),
      discount=jnp.ones((len(offsets),)),
      next_obs=jnp.stack([e, full + 1.0], -1),
    )

  buf = replay.init(cap, jax.tree_util.tree_map(lambda x: x[0], step(0)))
  for t in range(steps):
    buf = replay.add(buf, step(t))
  return buf, (steps + off) % episode_length


def _from_episodes(buf, t, episodes, num=4000, key=0, **kw):
  """num queries from the `episodes` most recent completed 4-step episodes
  of a `_phased_buffer`."""
  return feedback.sample_queries(
    buf,
    jax.random.PRNGKey(key),
    num,
    window_episodes=episodes,
    num_envs=t.shape[0],
    episode_step=t,
    episode_length=4,
    **kw,
  )


def _drawn(buf, t, episodes):
  """The (env, step) pairs drawn from `_from_episodes`."""
  pairs = np.asarray(_from_episodes(buf, t, episodes).obs).reshape(-1, 2)
  return {(int(e), int(s)) for e, s in pairs.astype(int)}


def _steps(env, first, last):
  return {(env, s) for s in range(first, last + 1)}


# 4 envs, 4-step episodes, steps t = 0..10. Env e starts (0, 1, 3, 0)[e]
# steps into an episode, so by hand its episodes span t =
#   env 0: 0-3, 4-7, 8-10 (running, t_e = 3)
#   env 1: 0-2 (only 3 of its 4 steps stored), 3-6, 7-10 (ended at t 10)
#   env 2: 0 (1 of 4 stored), 1-4, 5-8, 9-10 (running, t_e = 2)
#   env 3: as env 0.
# The completed, wholly stored episodes, newest first (an env later in the
# buffer first where two end on the same step): env 1 at t 10, env 2 at 8,
# env 3 at 7, env 0 at 7, env 1 at 6, env 2 at 4, env 3 at 3, env 0 at 3.
_PHASED = dict(offsets=(0, 1, 3, 0), steps=11, episode_length=4)
_NEWEST_FIRST = [
  _steps(1, 7, 10),
  _steps(2, 5, 8),
  _steps(3, 4, 7),
  _steps(0, 4, 7),
  _steps(1, 3, 6),
  _steps(2, 1, 4),
  _steps(3, 0, 3),
  _steps(0, 0, 3),
]


@pytest.mark.parametrize("episodes", [1, 3, 100])
def test_queries_come_from_the_most_recent_completed_episodes(episodes):
  buf, t = _phased_buffer(64, **_PHASED)
  assert t.tolist() == [3, 0, 2, 3]
  expect = set().union(*_NEWEST_FIRST[:episodes])
  assert _drawn(buf, t, episodes) == expect


def test_recent_episodes_by_hand():
  _, t = _phased_buffer(64, **_PHASED)
  newest, chosen = feedback.recent_episodes(jnp.int32(11), t, 4, 5)
  # J = ceil(5 / 4) = 2 candidates per env: the last step of each, k back.
  np.testing.assert_array_equal(newest, [[3, 7], [0, 4], [2, 6], [3, 7]])
  np.testing.assert_array_equal(
    chosen, [[True, False], [True, True], [True, False], [True, False]]
  )


def test_episode_window_draws_uniformly_over_its_transitions():
  buf, t = _phased_buffer(64, **_PHASED)
  q = _from_episodes(buf, t, 5, num=16_000, key=7)
  _, counts = np.unique(
    np.asarray(q.obs).reshape(-1, 2), axis=0, return_counts=True
  )
  assert counts.size == 20  # 5 episodes of 4 steps
  np.testing.assert_allclose(counts / 16_000, 1 / 20, atol=0.01)


def test_episode_window_before_any_episode_completed_is_everything():
  # 3 steps: only env 1's partly stored first episode has ended.
  buf, t = _phased_buffer(64, (0, 1, 3, 0), 3, 4)
  assert _drawn(buf, t, 100) == set().union(
    *(_steps(e, 0, 2) for e in range(4))
  )


def test_episode_window_skips_episodes_the_buffer_overwrote():
  # 40 slots hold t = 1..10 of the 4 envs: env 0's and env 3's episode
  # t 0-3 has lost its first step, so the window stops before it.
  buf, t = _phased_buffer(40, **_PHASED)
  assert _drawn(buf, t, 100) == set().union(*_NEWEST_FIRST[:6])


def test_episode_window_segments_stay_inside_the_episodes():
  buf, t = _phased_buffer(64, **_PHASED)
  q = _from_episodes(buf, t, 3, num=2000, key=1, segment_length=3)
  env, step = np.asarray(q.obs[..., 0]), np.asarray(q.obs[..., 1])
  episode = np.asarray(q.true_reward)
  assert (env == env[..., :1]).all() and (episode == episode[..., :1]).all()
  np.testing.assert_array_equal(np.diff(step, axis=-1), 1.0)
  drawn = {(int(e), int(s)) for e, s in zip(env.ravel(), step.ravel())}
  assert drawn == set().union(*_NEWEST_FIRST[:3])


def test_sample_queries_takes_one_window():
  buf, t = _phased_buffer(64, **_PHASED)
  for kw in ({}, {"window": 5, "window_episodes": 2}):
    with pytest.raises(ValueError, match="give exactly one"):
      feedback.sample_queries(buf, jax.random.PRNGKey(0), 4, **kw)


def test_disagreement_of_ratings_and_preferences():
  # E = 2 members, Q = 2 queries.
  ratings = jnp.array([[[1.0], [0.5]], [[-1.0], [0.5]]])
  np.testing.assert_allclose(feedback.disagreement(ratings), [1.0, 0.0])
  # Preferences: std over members of sigmoid(R1 - R0).
  pairs = jnp.array([[[0.0, 0.0], [0.0, 2.0]], [[0.0, 0.0], [2.0, 0.0]]])
  s = 1 / (1 + np.exp(-2.0))
  np.testing.assert_allclose(
    feedback.disagreement(pairs), [0.0, abs(s - (1 - s)) / 2], rtol=1e-6
  )
  with pytest.raises(ValueError, match=r"\(2, 2\)"):
    feedback.disagreement(jnp.zeros((2, 2)))


def _spread_by_reward(t):
  """Two members that disagree by |reward|: [2, N]."""
  return jnp.stack([t.reward, -t.reward])


@pytest.mark.parametrize("segments,h", [(1, 1), (2, 1), (1, 3), (2, 3)])
def test_disagreement_sampling_keeps_the_most_disputed_candidates(segments, h):
  buf = _buffer(40, 40)
  key = jax.random.PRNGKey(5)
  layout = dict(
    segments=segments,
    segment_length=h,
    episode_step=jnp.zeros((1,), jnp.int32),
    episode_length=10,
  )
  # The candidate pool is the uniform draw of 4 x 6 queries with the same key.
  pool = feedback.sample_queries(buf, key, 24, window=40, **layout)
  q = feedback.sample_queries(
    buf,
    key,
    6,
    window=40,
    candidates=4,
    member_rewards=_spread_by_reward,
    **layout,
  )
  assert q.obs.shape == (6, segments, h, OBS)

  def scores(t):  # hand-computed disagreement of each query: [Q]
    r = np.asarray(t.reward).sum(-1)  # segment returns [Q, P]
    if segments == 1:
      return np.abs(r[:, 0])  # std of (v, -v)
    p = 1 / (1 + np.exp(-(r[:, 1] - r[:, 0])))
    return np.abs(p - (1 - p)) / 2  # std of (p, 1 - p)

  # The kept queries score what the pool's best six score (ties aside).
  np.testing.assert_allclose(
    np.sort(scores(q)), np.sort(scores(pool))[-6:], rtol=1e-6
  )
  # Fields of a kept query stay together.
  np.testing.assert_array_equal(q.obs[..., 0], q.reward)


def test_disagreement_sampling_needs_member_rewards():
  with pytest.raises(ValueError, match="candidates=3"):
    feedback.sample_queries(
      _buffer(20, 20), jax.random.PRNGKey(0), 4, window=10, candidates=3
    )


# --- RewardLearner.schedule ---------------------------------------------------


def _model():
  return RewardModel("mlp", ensemble_size=2, hidden_sizes=(16, 16))


def _learner(**kw):
  kw.setdefault("num_classes", 2)
  return reward_learner.RewardLearner(model=_model(), **kw)


def _check_covers_each_item_once(idx, mask, n):
  for e in range(idx.shape[1]):
    items = idx[:, e][mask[:, e]]
    np.testing.assert_array_equal(np.sort(items), np.arange(n))


@pytest.mark.parametrize("stratified", [True, False])
def test_schedule_shape_and_each_item_once_per_member(stratified):
  labels = np.array([0] * 40 + [1] * 10)
  np.random.default_rng(0).shuffle(labels)
  learner = _learner(batch_size=16, stratified=stratified)
  idx, mask = learner.schedule(labels, np.random.default_rng(1), 2)
  # ceil(50 / 16) = 4 batches of at most 16 for each of the 2 members.
  assert idx.shape == (4, 2, 16) and mask.shape == (4, 2, 16)
  assert idx.dtype == np.int32 and mask.dtype == bool
  _check_covers_each_item_once(idx, mask, 50)
  np.testing.assert_array_equal(
    mask.sum(-1), [[16, 16], [16, 16], [16, 16], [2, 2]]
  )
  # Padding is at the end of each batch.
  for t in range(4):
    for e in range(2):
      k = mask[t, e].sum()
      assert mask[t, e, :k].all() and not mask[t, e, k:].any()
  # Members get their own shuffles.
  assert not np.array_equal(idx[:, 0], idx[:, 1])


def test_stratified_schedule_class_counts_by_hand():
  # 40 zeros, 10 ones, batch 16, T=4: floors (10, 2), epoch budgets of
  # extras (0, 2). Batches 1 and 2: 10 + 2 + one extra "1", filled with
  # zeros to (13, 3); batch 3: the ones' budget is spent, (10, 2) filled to
  # (14, 2); the last batch takes the 2 ones left (and no zero).
  labels = np.array([0] * 40 + [1] * 10)
  np.random.default_rng(5).shuffle(labels)
  idx, mask = _learner(batch_size=16, stratified=True).schedule(
    labels, np.random.default_rng(2), 2
  )
  for e in range(2):
    ones = [int(labels[idx[t, e][mask[t, e]]].sum()) for t in range(4)]
    assert ones == [3, 3, 2, 2]


@pytest.mark.parametrize("stratified", [True, False])
def test_schedule_small_set_is_one_batch(stratified):
  labels = np.array([0, 1, 1, 0, 1, 0, 0])
  idx, mask = _learner(batch_size=16, stratified=stratified).schedule(
    labels, np.random.default_rng(0), 3
  )
  assert idx.shape == (1, 3, 7) and mask.all()
  _check_covers_each_item_once(idx, mask, 7)


# --- train_reward -------------------------------------------------------------


def test_member_returns_sum_each_segments_step_rewards():
  learner = _learner()
  params = learner.model.init(
    jax.random.PRNGKey(0), (jnp.zeros((1, OBS)), jnp.zeros((1, A)))
  )
  rng = np.random.default_rng(0)
  obs = jnp.asarray(rng.normal(size=(2, 3, 2, 4, OBS)), jnp.float32)
  act = jnp.asarray(rng.normal(size=(2, 3, 2, 4, A)), jnp.float32)
  got = learner._member_returns(params, obs, act)  # pylint: disable=protected-access
  assert got.shape == (2, 3, 2)
  member = params["params"]["member"]
  want = sum(
    learner.model.per_member(member, obs[:, :, p, s], act[:, :, p, s])
    for s in range(4)
    for p in [0]
  )
  np.testing.assert_allclose(got[:, :, 0], want, rtol=1e-5, atol=1e-5)


N_TOY, CAP_TOY = 200, 256


def _toy_rating_sets(num_classes=2, seed=0):
  """obs uniform in [-1, 1]^2; label thresholds obs[0]. Capacity > N."""
  rng = np.random.default_rng(seed)
  obs = rng.uniform(-1.0, 1.0, (N_TOY, OBS)).astype(np.float32)
  act = rng.uniform(-1.0, 1.0, (N_TOY, A)).astype(np.float32)
  if num_classes == 2:
    label = (obs[:, 0] > 0).astype(np.int32)
  else:  # imbalanced thirds: 0 below -0.6, 2 above 0.4
    label = np.digitize(obs[:, 0], [-0.6, 0.4]).astype(np.int32)
  rs = jax.vmap(lambda _: feedback.empty_rating_set(CAP_TOY, OBS, A))(
    jnp.arange(1)
  )
  rs = jax.vmap(feedback.add_ratings)(
    rs,
    obs[None, :, None, None, :],
    act[None, :, None, None, :],
    label[None],
    obs[None, :, :1],
    jnp.ones((1, N_TOY), bool),
  )
  return rs, obs, act, label


def _init(learner, seed=0):
  model = learner.model
  params = jax.vmap(
    lambda k: model.init(k, (jnp.zeros((1, OBS)), jnp.zeros((1, A))))
  )(jax.random.split(jax.random.PRNGKey(seed), 1))
  return params, jax.vmap(learner.optimizer.init)(params)


@functools.lru_cache(maxsize=None)
def _compiled(loss, num_classes, lr):
  """One jitted, seed-vmapped epoch per loss configuration (compiles once).

  The epoch depends only on the model, the loss settings and lr; schedule
  and stopping (stratified, max_epochs, stop_accuracy) live on the host, so
  learners differing only there can share it.
  """
  learner = _learner(loss=loss, num_classes=num_classes, lr=lr, batch_size=64)
  return learner, jax.jit(jax.vmap(learner.epoch))


def _tree_equal(a, b):
  return all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def _auc(score, label):
  pos, neg = score[label == 1], score[label == 0]
  return np.mean(pos[:, None] > neg[None, :])


def test_train_reward_learns_a_threshold_reward():
  rs, obs, act, label = _toy_rating_sets()
  base, epoch_fn = _compiled("mae", 2, 1e-2)
  learner = base  # max_epochs=10, stop_accuracy=0.97, stratified, weighted
  params, opt_state = _init(learner)
  rng = np.random.default_rng(0)
  for _ in range(3):
    params, opt_state, epochs, acc, _ = reward_learner.train_reward(
      learner, epoch_fn, params, opt_state, rs, rng
    )
    assert len(epochs) == 1 and 1 <= epochs[0] <= learner.max_epochs
    # Stopping happens exactly when accuracy first exceeds stop_accuracy.
    assert (acc[0] > learner.stop_accuracy) or epochs[0] == learner.max_epochs
  assert acc[0] > 0.9
  p = jax.tree_util.tree_map(lambda x: x[0], params)
  members = np.asarray(
    learner.model.members(p, jnp.asarray(obs), jnp.asarray(act))
  )
  r = members.mean(0)
  assert np.corrcoef(r, obs[:, 0])[0, 1] > 0.5
  for m in members:
    assert np.corrcoef(m, obs[:, 0])[0, 1] > 0.3
  # The learned reward ranks "good" (label 1) above "bad" almost always.
  assert _auc(r, label) > 0.95


@pytest.mark.parametrize("min_epochs", [1, 2, 3])
def test_train_reward_early_stop_after_min_epochs(min_epochs):
  """An accuracy above stop_accuracy from the first epoch on stops the
  session after min_epochs (2 by default, the reference's `epoch > 0`)."""
  rs, *_ = _toy_rating_sets()
  base, epoch_fn = _compiled("mae", 2, 1e-2)
  assert base.min_epochs == 2
  learner = dataclasses.replace(
    base, stop_accuracy=0.01, max_epochs=5, min_epochs=min_epochs
  )
  params0, opt0 = _init(learner)
  params, _, epochs, acc, _ = reward_learner.train_reward(
    learner, epoch_fn, params0, opt0, rs, np.random.default_rng(0)
  )
  assert epochs == [min_epochs]
  assert acc[0] > 0.01
  assert not _tree_equal(params, params0)  # the epochs did train


def test_train_reward_runs_max_epochs_when_target_unreachable():
  rs, *_ = _toy_rating_sets()
  base, epoch_fn = _compiled("mae", 2, 1e-2)
  # Accuracy can never exceed 1.0, so every epoch runs.
  learner = dataclasses.replace(base, stop_accuracy=1.0, max_epochs=3)
  params0, opt0 = _init(learner)
  _, _, epochs, acc, _ = reward_learner.train_reward(
    learner, epoch_fn, params0, opt0, rs, np.random.default_rng(0)
  )
  assert epochs == [3]
  assert 0.0 <= acc[0] <= 1.0


def test_accuracies_by_hand():
  # Seed 0: class 0 has 8 of 9 right, class 1 1 of 2, class 2 is absent.
  # Seed 1: no items at all.
  acc, bal = reward_learner.accuracies(
    np.array([[8.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
    np.array([[9.0, 2.0, 0.0], [0.0, 0.0, 0.0]]),
  )
  np.testing.assert_allclose(acc, [9 / 11, 0.0])
  np.testing.assert_allclose(bal, [(8 / 9 + 1 / 2) / 2, 0.0])


def test_epoch_counts_every_item_once_per_class():
  rs, _, _, label = _toy_rating_sets(num_classes=3, seed=1)
  learner, epoch_fn = _compiled("mae", 3, 3e-3)
  params, opt = _init(learner)
  idx, mask = learner.schedule(label, np.random.default_rng(0), 2)
  _, _, correct, count, _ = epoch_fn(
    params,
    opt,
    rs,
    jnp.asarray(idx)[None],
    jnp.asarray(mask)[None],
    jnp.ones((1, 3)),
    jnp.array([True]),
  )
  np.testing.assert_array_equal(np.asarray(count)[0], np.bincount(label))
  assert np.all(np.asarray(correct) <= np.asarray(count))
  assert np.all(np.asarray(correct) >= 0)


@pytest.mark.parametrize(
  "metric,epochs", [("accuracy", 2), ("balanced_accuracy", 4)]
)
def test_stop_metric_decides_early_stop(metric, epochs):
  """An epoch that gets the majority class right and the minority wrong:
  accuracy 0.9 passes stop_accuracy=0.8, balanced accuracy 0.5 does not."""
  rs, *_ = _toy_rating_sets()
  base, _ = _compiled("mae", 2, 1e-2)
  learner = dataclasses.replace(
    base, stop_accuracy=0.8, max_epochs=4, stop_metric=metric
  )

  def epoch_fn(params, opt_state, rating_sets, idx, mask, weights, active):
    return (
      params,
      opt_state,
      jnp.array([[9.0, 0.0]]),
      jnp.array([[9.0, 1.0]]),
      jnp.zeros((1,)),
    )

  _, _, got, acc, bal = reward_learner.train_reward(
    learner, epoch_fn, None, None, rs, np.random.default_rng(0)
  )
  assert got == [epochs]
  np.testing.assert_allclose(acc, [0.9])
  np.testing.assert_allclose(bal, [0.5])


def test_inactive_epoch_leaves_params_and_optimiser_unchanged():
  rs, _, _, label = _toy_rating_sets()
  learner, epoch_fn = _compiled("mae", 2, 1e-2)
  params, opt = _init(learner)
  idx, mask = learner.schedule(label, np.random.default_rng(0), 2)
  weights = jnp.ones((1, 2))
  new_p, new_o, _, _, loss = epoch_fn(
    params,
    opt,
    rs,
    jnp.asarray(idx)[None],
    jnp.asarray(mask)[None],
    weights,
    jnp.array([False]),
  )
  assert _tree_equal(new_p, params) and _tree_equal(new_o, opt)
  assert np.isfinite(np.asarray(loss)).all()
  act_p, _, _, _, _ = epoch_fn(
    params,
    opt,
    rs,
    jnp.asarray(idx)[None],
    jnp.asarray(mask)[None],
    weights,
    jnp.array([True]),
  )
  assert not _tree_equal(act_p, params)


@pytest.mark.parametrize("loss", ["ce", "mae"])
@pytest.mark.parametrize("stratified", [True, False])
def test_loss_kinds_and_batching_run_and_stay_finite(loss, stratified):
  rs, *_ = _toy_rating_sets(num_classes=3, seed=1)
  base, epoch_fn = _compiled(loss, 3, 3e-3)
  learner = dataclasses.replace(
    base, stratified=stratified, max_epochs=2, stop_accuracy=1.0
  )
  params0, opt0 = _init(learner, seed=1)
  params, opt, epochs, acc, _ = reward_learner.train_reward(
    learner, epoch_fn, params0, opt0, rs, np.random.default_rng(3)
  )
  assert epochs == [2]
  assert 0.0 <= acc[0] <= 1.0
  leaves = jax.tree_util.tree_leaves(params) + jax.tree_util.tree_leaves(opt)
  assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
  assert not _tree_equal(params, params0)


def test_block_lengths_cover_the_steps_with_few_shapes():
  assert reward_learner.block_lengths(1, 8) == [1]
  assert reward_learner.block_lengths(3, 8) == [4]
  assert reward_learner.block_lengths(8, 8) == [8]
  assert reward_learner.block_lengths(11, 8) == [8, 4]
  assert reward_learner.block_lengths(21, 8) == [8, 8, 8]
  assert reward_learner.block_lengths(5, 6) == [6]
  for steps in range(1, 40):
    lengths = reward_learner.block_lengths(steps, 8)
    assert steps <= sum(lengths) < steps + 8 and set(lengths) <= {1, 2, 4, 8}
    assert sum(lengths) - steps < max(steps % 8, 1)  # padding < the rest


def test_train_reward_computes_no_whole_padded_block():
  """An epoch of one real minibatch step runs one step, not a block of 8
  (7 computed and discarded), with the same parameters as without blocks."""
  rs, *_ = _toy_rating_sets()
  base, epoch_fn = _compiled("mae", 2, 1e-2)
  steps = []

  def counting(*args):
    steps.append(args[3].shape[1])  # idx [S, T, E, B]
    return epoch_fn(*args)

  learner = dataclasses.replace(base, batch_size=1024, max_epochs=2)
  params0, opt0 = _init(learner)
  got = reward_learner.train_reward(
    learner, counting, params0, opt0, rs, np.random.default_rng(0)
  )
  assert steps == [1, 1]
  unblocked = dataclasses.replace(learner, block_steps=1)
  want = reward_learner.train_reward(
    unblocked, epoch_fn, params0, opt0, rs, np.random.default_rng(0)
  )
  assert _tree_equal(got[0], want[0]) and got[2:] == want[2:]
