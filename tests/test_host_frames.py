"""erljax.vision.host_frames: OpenGL frames called from a compiled program."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from erljax.vision import host_frames
from erljax.vision import render


@pytest.fixture(scope="module")
def frames():
  drawer = host_frames.HostFrames("reacher", 40, 48)
  yield drawer
  drawer.close()


def _poses(n: int, seed: int = 0) -> np.ndarray:
  model = render.task_model("reacher")
  return render.random_poses(model, n, np.random.default_rng(seed)).astype(
    np.float32
  )


def test_same_pixels_as_the_renderer_any_leading_shape_jit_and_vmap(frames):
  poses = _poses(6)
  with render.FrameRenderer("reacher", 40, 48) as renderer:
    want = renderer.render(poses).reshape(2, 3, 40, 48, 3)
  leading = jax.jit(frames)(jnp.asarray(poses).reshape(2, 3, -1))
  mapped = jax.jit(jax.vmap(frames))(jnp.asarray(poses).reshape(2, 3, -1))
  assert leading.shape == (2, 3, 40, 48, 3) and leading.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(leading), want)
  np.testing.assert_array_equal(np.asarray(mapped), want)
  # A pose is different pixels: the frames are not all one picture.
  assert len({f.tobytes() for f in want.reshape(6, -1)}) == 6


def test_one_worker_thread_draws_for_every_caller(frames):
  """OpenGL contexts are per thread: calls from several Python threads and
  from inside a scan all reach the renderer's own thread."""
  poses = jnp.asarray(_poses(4, seed=1))
  draw = jax.jit(lambda p: jax.lax.scan(lambda c, x: (c, frames(x)), 0, p)[1])
  want = np.asarray(draw(poses))
  threads_seen, results = set(), []

  def spy(pose):
    threads_seen.add(threading.current_thread().name)
    return original(pose)

  original = frames._renderer.render  # pylint: disable=protected-access
  frames._renderer.render = spy  # pylint: disable=protected-access
  try:
    callers = [
      threading.Thread(target=lambda: results.append(np.asarray(draw(poses))))
      for _ in range(3)
    ]
    for t in callers:
      t.start()
    for t in callers:
      t.join()
  finally:
    frames._renderer.render = original  # pylint: disable=protected-access
  assert len(results) == 3
  for r in results:
    np.testing.assert_array_equal(r, want)
  assert len(threads_seen) == 1 and threads_seen.pop().startswith(
    "erljax-frames"
  )


def test_bad_pose_is_named(frames):
  with pytest.raises(ValueError, match=r"pose of shape \(3, 5\).*reacher"):
    frames(jnp.zeros((3, 5)))


def test_close_is_idempotent():
  drawer = host_frames.HostFrames("reacher", 32, 32)
  drawer.close()
  drawer.close()
