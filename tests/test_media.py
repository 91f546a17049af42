"""Pictures of a run: rated-frame grids and rollout GIFs
(erljax.vision.media)."""

import os

import numpy as np
import pytest
from PIL import Image

from erljax.vision import media
from erljax.online import runner
from test_trainer import learned_config
from test_trainer import tiny_config


def _frames(b, h=12, w=10):
  rng = np.random.default_rng(0)
  return rng.integers(0, 255, (b, h, w, 3), dtype=np.uint8)


def test_rated_grid_lays_out_frames_with_their_ratings():
  frames = _frames(5)
  grid = media.rated_grid(
    frames, np.array([0, 1, 2, -1, 2]), ("Bad", "Average", "Good"), columns=3
  )
  assert grid.shape == (2 * (12 + 16), 3 * 10, 3) and grid.dtype == np.uint8
  # Frames are pasted unchanged; captions are coloured by class.
  np.testing.assert_array_equal(grid[:12, :10], frames[0])
  np.testing.assert_array_equal(grid[28:40, 10:20], frames[4])
  assert tuple(grid[12 + 15, 0]) == (200, 40, 40)  # "Bad", red
  assert tuple(grid[12 + 15, 29]) == (30, 150, 50)  # "Good", green
  assert tuple(grid[40 + 15, 0]) == (110, 110, 110)  # unanswered, grey


def test_rated_grid_rejects_bad_input():
  with pytest.raises(ValueError, match="label 3 outside -1..2"):
    media.rated_grid(_frames(2), np.array([0, 3]), ("Bad", "Average", "Good"))
  with pytest.raises(ValueError, match=r"labels of shape \(3,\) for 2"):
    media.rated_grid(_frames(2), np.zeros(3, int), ("Bad", "Good"))
  with pytest.raises(ValueError, match="columns=0"):
    media.rated_grid(_frames(2), np.zeros(2, int), ("Bad", "Good"), columns=0)


def test_save_gif_writes_every_frame(tmp_path):
  path = media.save_gif(_frames(4), str(tmp_path / "a" / "x.gif"), fps=10)
  with Image.open(path) as im:
    assert im.n_frames == 4 and im.size == (10, 12)
  with pytest.raises(ValueError, match="need \\[T, H, W, 3\\] uint8"):
    media.save_gif(np.zeros((4, 12, 10)), str(tmp_path / "y.gif"))


def test_run_writes_rollout_video_and_rated_frames(tmp_path):
  c = learned_config(
    120, 1, task="CartpoleSwingup", queries=6, budget=6, warmup_updates=2
  )
  c.workdir = str(tmp_path / "run")
  c.render.height, c.render.width = 32, 40
  c.render.rollout_video = c.render.rated_frames = True
  res = runner.run(c, log=lambda _: None)
  assert [f["session"] for f in res.feedback] == [1]
  with Image.open(os.path.join(c.workdir, "rollout.gif")) as im:
    assert im.size == (40, 32) and im.n_frames > 1
  grid = np.asarray(
    Image.open(os.path.join(c.workdir, "rated_frames", "session_0001.png"))
  )
  assert grid.shape == (32 + 16, 6 * 40, 3)
  # The frames show the task, not a blank canvas.
  assert grid[:32].std() > 5


def test_frames_are_ray_cast_when_opengl_is_missing(monkeypatch):
  """A machine without EGL: FrameRenderer cannot make a context, so the
  frames come from erljax.vision.raycast, and the log says so once."""

  def no_gl(*args, **kwargs):
    raise RuntimeError("no off-screen OpenGL context (MUJOCO_GL='egl'): x")

  monkeypatch.setattr(media.render_lib, "FrameRenderer", no_gl)
  notes = []
  poses = np.zeros((3, 2), np.float32)  # CartpoleSwingup: qpos [2]
  poses[:, 0] = [-0.5, 0.0, 0.5]
  frames = media.draw_frames("CartpoleSwingup", poses, 16, 20, notes.append)
  assert frames.shape == (3, 16, 20, 3) and frames.dtype == np.uint8
  assert frames.std() > 5 and not np.array_equal(frames[0], frames[2])
  assert len(notes) == 1 and "ray-cast in JAX" in notes[0]


def test_a_failing_video_is_a_warning_and_videos_every_n_evals(
  tmp_path, monkeypatch
):
  c = tiny_config(num_seeds=1, total_steps=120)
  c.workdir = str(tmp_path / "run")
  c.render.height = c.render.width = 16
  c.render.rollout_video = True
  c.render.video_every = 2  # the evaluations at 40 and 120 (of 0, 40, 80, 120)
  made = []

  def gif(trainer, params, key, path, log):
    del trainer, params, key, log
    made.append(os.path.basename(path))
    if path.endswith("rollout.gif"):
      raise OSError("disk full\nsecond line")
    return path

  monkeypatch.setattr(media, "rollout_gif", gif)
  lines = []
  res = runner.run(c, log=lines.append)
  assert res.interrupted is None and res.history[-1]["env_steps"] == 120
  assert made == [
    "step_000000040.gif",
    "step_000000120.gif",
    "rollout.gif",
  ]
  warning = [ln for ln in lines if ln.startswith("warning: no video")]
  assert warning == [
    f"warning: no video {c.workdir}/rollout.gif: OSError: disk full"
  ]
  assert os.path.isfile(os.path.join(c.workdir, "curve.png"))
