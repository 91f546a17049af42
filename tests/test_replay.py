import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.agents import replay
from erljax.agents.replay import Transition


def _batch(start, n, obs=3, act=2):
  v = jnp.arange(start, start + n, dtype=jnp.float32)
  return Transition(
    obs=jnp.tile(v[:, None], (1, obs)),
    action=jnp.tile(v[:, None], (1, act)),
    reward=v,
    true_reward=-v,
    discount=jnp.ones((n,)),
    next_obs=jnp.tile(v[:, None] + 0.5, (1, obs)),
  )


def _empty(cap, shards=1):
  one = jax.tree_util.tree_map(lambda x: x[0], _batch(0, 1))
  return replay.init(cap, one, shards)


def test_init_shapes_and_empty():
  buf = _empty(10)
  assert buf.capacity == 10
  assert buf.data.obs.shape == (10, 3)
  assert buf.data.action.shape == (10, 2)
  assert int(buf.size) == 0 and int(buf.insert_pos) == 0


def test_add_wraps_around_and_caps_size():
  buf = _empty(5)
  buf = replay.add(buf, _batch(0, 3))
  assert int(buf.size) == 3 and int(buf.insert_pos) == 3
  buf = replay.add(buf, _batch(3, 3))  # items 3, 4 then 5 overwrites slot 0
  assert int(buf.size) == 5 and int(buf.insert_pos) == 1
  np.testing.assert_array_equal(buf.data.reward, [5, 1, 2, 3, 4])
  np.testing.assert_array_equal(buf.data.true_reward, [-5, -1, -2, -3, -4])


def test_add_rejects_batch_larger_than_capacity():
  with pytest.raises(ValueError, match="does not fit"):
    replay.add(_empty(2), _batch(0, 3))


def test_init_rejects_bad_capacity():
  with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
    replay.init(0, jnp.zeros(()))


def test_sample_draws_only_filled_items():
  buf = replay.add(_empty(100), _batch(10, 4))
  batch = replay.sample(buf, jax.random.PRNGKey(0), 256)
  assert batch.obs.shape == (256, 3)
  assert set(np.asarray(batch.reward).tolist()) == {10.0, 11.0, 12.0, 13.0}
  # obs and next_obs of one sample stay aligned.
  np.testing.assert_allclose(batch.next_obs[:, 0], batch.obs[:, 0] + 0.5)


def test_relabel_rewrites_filled_items_in_chunks():
  buf = replay.add(_empty(7), _batch(0, 5))
  calls = []

  def reward_fn(chunk):
    calls.append(chunk.obs.shape)
    return 2.0 * chunk.obs[:, 0] + 1.0

  new = replay.relabel(buf, reward_fn, chunk_size=3)
  np.testing.assert_allclose(new.data.reward[:5], 2.0 * np.arange(5) + 1.0)
  np.testing.assert_allclose(new.data.reward[5:], 0.0)  # empty slots untouched
  np.testing.assert_array_equal(new.data.true_reward, buf.data.true_reward)
  assert calls == [(3, 3)]  # traced once, chunk shape [3, obs]


def _counting_relabel(buf, chunk_size):
  """relabel with a reward that counts its calls: (new buffer, calls)."""

  def fn(b):
    def reward_fn(chunk):
      return 2.0 * chunk.obs[:, 0] + 1.0

    calls = []

    def counted(chunk):
      r = reward_fn(chunk)
      jax.debug.callback(lambda: calls.append(1))
      return r

    return replay.relabel(b, counted, chunk_size), calls

  new, calls = fn(buf)
  jax.effects_barrier()
  return new, len(calls)


@pytest.mark.parametrize(
  "cap,size,chunk,expected_calls",
  [
    (100, 5, 10, 1),  # 5 of 100 filled: one chunk, not ten
    (100, 21, 10, 3),
    (25, 25, 10, 3),  # last chunk moved back to end at 25
    (7, 6, 3, 2),
    (4, 4, 10, 1),  # chunk larger than the buffer
  ],
)
def test_relabel_visits_only_the_filled_part(cap, size, chunk, expected_calls):
  buf = replay.add(_empty(cap), _batch(0, size))
  new, calls = _counting_relabel(buf, chunk)
  assert calls == expected_calls
  np.testing.assert_allclose(
    new.data.reward[:size], 2.0 * np.arange(size) + 1.0
  )
  np.testing.assert_allclose(new.data.reward[size:], 0.0)


def test_relabel_under_vmap_with_different_sizes():
  bufs = [replay.add(_empty(12), _batch(0, n)) for n in (3, 12)]
  stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *bufs)
  new = jax.jit(
    jax.vmap(lambda b: replay.relabel(b, lambda t: 2.0 * t.obs[:, 0] + 1.0, 5))
  )(stacked)
  np.testing.assert_allclose(new.data.reward[0, :3], [1.0, 3.0, 5.0])
  np.testing.assert_allclose(new.data.reward[0, 3:], 0.0)
  np.testing.assert_allclose(new.data.reward[1], 2.0 * np.arange(12) + 1.0)


def test_relabel_is_jittable():
  buf = replay.add(_empty(8), _batch(0, 8))
  new = jax.jit(lambda b: replay.relabel(b, lambda t: t.reward * 0 + 7.0, 4))(
    buf
  )
  np.testing.assert_allclose(new.data.reward, 7.0)


# -- blocked buffers (shards = K > 1) -----------------------------------------


def test_blocked_add_writes_each_env_group_into_its_block():
  # 2 blocks of 4 rows; 4 envs a step: envs 0, 1 -> block 0, envs 2, 3 ->
  # block 1 (rows 4..7).
  buf = replay.add(_empty(8, shards=2), _batch(0, 4))
  assert buf.shards == 2 and buf.block_capacity == 4
  assert int(buf.size) == 4 and int(buf.insert_pos) == 4
  np.testing.assert_array_equal(buf.data.reward, [0, 1, 0, 0, 2, 3, 0, 0])
  np.testing.assert_array_equal(buf.filled(), [1, 1, 0, 0, 1, 1, 0, 0])
  buf = replay.add(replay.add(buf, _batch(4, 4)), _batch(8, 4))  # wraps
  assert int(buf.size) == 8 and int(buf.insert_pos) == 4
  np.testing.assert_array_equal(buf.data.reward, [8, 9, 4, 5, 10, 11, 6, 7])
  assert np.asarray(buf.filled()).all()
  np.testing.assert_array_equal(
    buf.blocks(buf.data.reward), [[8, 9, 4, 5], [10, 11, 6, 7]]
  )


def test_blocked_buffer_rejects_what_does_not_split():
  with pytest.raises(ValueError, match="replay shards=3: .* capacity=10"):
    _empty(10, shards=3)
  with pytest.raises(ValueError, match="3 items does not split into 2"):
    replay.add(_empty(8, shards=2), _batch(0, 3))
  with pytest.raises(ValueError, match="batch_size=5 does not split into 2"):
    replay.sample(_empty(8, shards=2), jax.random.PRNGKey(0), 5)


def test_blocked_sample_draws_each_part_from_its_own_block():
  buf = replay.add(_empty(40, shards=2), _batch(0, 4))  # {0, 1} | {2, 3}
  batch = replay.sample(buf, jax.random.PRNGKey(0), 200)
  r = np.asarray(batch.reward)
  assert set(r[:100].tolist()) == {0.0, 1.0}
  assert set(r[100:].tolist()) == {2.0, 3.0}
  np.testing.assert_allclose(batch.next_obs[:, 0], batch.obs[:, 0] + 0.5)


def test_one_block_samples_the_single_draw_of_the_plain_buffer():
  buf = replay.add(_empty(16), _batch(0, 11))
  key = jax.random.PRNGKey(3)
  idx = jax.random.randint(key, (32,), 0, 11)
  np.testing.assert_array_equal(
    replay.sample(buf, key, 32).reward, buf.data.reward[idx]
  )


def test_oldest_takes_the_head_of_every_block():
  buf = replay.add(_empty(8, shards=2), _batch(0, 4))
  head, valid = replay.oldest(buf, 5)  # ceil(5 / 2) = 3 rows of each block
  np.testing.assert_array_equal(head.reward, [0, 2, 1, 3, 0, 0])
  np.testing.assert_array_equal(valid, [1, 1, 1, 1, 0, 0])
  head, valid = replay.oldest(replay.add(_empty(8), _batch(0, 3)), 5)
  np.testing.assert_array_equal(head.reward, [0, 1, 2, 0, 0])
  np.testing.assert_array_equal(valid, [1, 1, 1, 0, 0])


def test_blocked_relabel_reads_the_same_rows_of_every_block():
  # 2 blocks of 5 rows, 3 filled in each: ceil(3 / 2) = 2 calls of 2 x 2.
  buf = replay.add(replay.add(_empty(10, shards=2), _batch(0, 4)), _batch(4, 2))
  new, calls = _counting_relabel(buf, 2)
  assert calls == 2
  filled = 2.0 * np.asarray(buf.data.obs[:, 0]) + 1.0
  np.testing.assert_allclose(new.data.reward, np.where(buf.filled(), filled, 0))
  np.testing.assert_array_equal(buf.data.reward, [0, 1, 4, 0, 0, 2, 3, 5, 0, 0])
