import sys

import jax
import numpy as np
import pytest

from erljax.envs import vec_env as envs
from erljax.vision import render

TASKS = (
  "reacher",
  "pusher",
  "CartpoleSwingup",
  "FingerSpin",
  "ReacherEasy",
  "WalkerWalk",
)


@pytest.mark.parametrize("name", TASKS)
def test_every_task_renders_distinct_non_blank_frames(name):
  with render.FrameRenderer(name, height=64, width=48) as r:
    poses = render.random_poses(r.model, 2, np.random.default_rng(0))
    frames = r.render(poses)
    assert frames.shape == (2, 64, 48, 3) and frames.dtype == np.uint8
    for f in frames:
      # Not blank: many distinct colours, not one flat fill.
      assert f.std() > 5.0 and len(np.unique(f.reshape(-1, 3), axis=0)) > 20
    assert np.abs(frames[0].astype(int) - frames[1]).mean() > 0.5
    # Same pose, same frame (the renderer keeps no state between frames).
    np.testing.assert_array_equal(r.render(poses[:1])[0], frames[0])


def test_vec_env_pose_places_the_mocap_target():
  env = envs.make_vec_env("ReacherEasy", num_envs=2)
  state = jax.jit(env.reset)(jax.random.PRNGKey(0))
  qpos, pose = np.asarray(env.qpos(state)), np.asarray(env.pose(state))
  assert qpos.shape == (2, env.nq) and pose.shape == (2, env.pose_size)
  assert env.pose_size == env.nq + 3
  np.testing.assert_array_equal(pose[:, : env.nq], qpos)
  with render.FrameRenderer("ReacherEasy", 64, 64) as r:
    with_target, without = r.render(pose), r.render(qpos)
  # The target (random per episode) moves away from the model's default.
  assert np.abs(with_target.astype(int) - without).mean() > 0.5


def test_vec_env_qpos_of_brax_states():
  env = envs.make_vec_env("reacher", num_envs=3)
  state = jax.jit(env.reset)(jax.random.PRNGKey(1))
  assert env.qpos(state).shape == (3, 4) == env.pose(state).shape
  # Brax reacher draws a random target per episode: it is part of qpos.
  assert len(np.unique(np.asarray(env.qpos(state))[:, 2])) == 3


def test_render_rejects_bad_input():
  with render.FrameRenderer("reacher", 32, 32) as r:
    with pytest.raises(ValueError, match=r"pose of shape \(2, 5\).*\[B, 4\]"):
      r.render(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="non-finite"):
      r.render(np.full((1, 4), np.nan))
  with pytest.raises(RuntimeError, match="after close"):
    r.render(np.zeros((1, 4)))
  with pytest.raises(ValueError, match="camera 'nope' is not in the model"):
    render.FrameRenderer("CartpoleSwingup", 32, 32, camera="nope")
  with pytest.raises(ValueError, match="height=0"):
    render.FrameRenderer("reacher", 0, 32)


def test_benchmark_reports_frames_per_second():
  fps = render.benchmark("reacher", n=3, height=32, width=32)
  assert np.isfinite(fps) and fps > 0


def test_missing_private_gl_module_is_named_in_render_errors(monkeypatch):
  """A MuJoCo without the private GL binding erljax patches: the switch to
  EGL says so, and a failing renderer's error carries that sentence."""
  monkeypatch.setenv("MUJOCO_GL", "egl")
  monkeypatch.setitem(sys.modules, "mujoco.rendering.classic", None)
  note = render._use_egl_if_asked()  # pylint: disable=protected-access
  assert "has no mujoco.rendering.classic.gl_context" in note
  assert "set MUJOCO_GL=egl before anything imports mujoco" in note
  monkeypatch.setenv("MUJOCO_GL", "glfw")
  assert render._use_egl_if_asked() == ""  # pylint: disable=protected-access

  def no_context(*_):
    raise OSError("no display")

  monkeypatch.setattr(render, "_EGL_NOTE", note)
  monkeypatch.setattr(render.mujoco, "Renderer", no_context)
  with pytest.raises(RuntimeError, match="no display.*has no mujoco.render"):
    render.FrameRenderer("reacher", 32, 32)
