"""A grid of frames of the MetaWorld tasks, as the reward model and a VLM
see them: each task's scripted-policy reference episode (tests/data/
metaworld) at steps 0, 100, 250 and 500, drawn by the host renderer
(erljax.vision.render.FrameRenderer, 224x224) and, with --raycast, in a second
row per task by the in-JAX ray caster (erljax.vision.raycast.RayCaster, flat
colours; compiled with the options MJX needs for the Sawyer on a CPU).

  PYTHONPATH=$PWD/src python experiments/metaworld/frames.py \
      --out experiments/results/metaworld_frames.png
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from erljax.envs import vec_env as envs
from erljax.envs import metaworld
from erljax.vision import raycast
from erljax.vision import render

STEPS = (0, 100, 250, 500)
DATA = os.path.join(
  os.path.dirname(__file__), "..", "..", "tests", "data", "metaworld"
)


def poses(name: str) -> np.ndarray:
  """[len(STEPS), pose_size] poses of the reference's first episode."""
  ref = np.load(os.path.join(DATA, f"{name}.npz"))
  env = metaworld.make_env(name)
  ids = env.physics.ids
  vec = jnp.asarray(env.task.fixed, jnp.float32)
  _, placement = env.task.episode(vec, env._base_readout)  # pylint: disable=protected-access
  out = []
  for t in STEPS:
    mocap = np.zeros((env.mj_model.nmocap, 3))
    mocap[ids.hand_mocap] = ref["mocap_pos"][0, t, 0]
    for i, p in zip(ids.mocap, np.asarray(placement)[:-1]):
      mocap[i] = p
    out.append(np.concatenate([ref["qpos"][0, t], mocap.reshape(-1)]))
  return np.stack(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--out", default="experiments/results/metaworld_frames.png"
  )
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--raycast", action="store_true")
  parser.add_argument("--tasks", default="sweep-into,drawer-open,soccer")
  args = parser.parse_args()
  rows = []
  for name in args.tasks.split(","):
    pose = poses(name)
    assert pose.shape[1] == envs.make_vec_env(name, 1).pose_size
    with render.FrameRenderer(name, args.size, args.size) as renderer:
      rows.append(renderer.render(pose))
    if args.raycast:
      # One frame at a time: a 224x224 Soccer frame holds 50k rays x 5.5k
      # ball triangles of ray-triangle tests.
      caster = raycast.RayCaster(name, args.size, args.size, batch_size=1)
      draw = jax.jit(caster, compiler_options=envs.compiler_options(caster))
      rows.append(np.asarray(draw(jnp.asarray(pose, jnp.float32))))
  gap = 4
  h = w = args.size
  grid = np.full(
    (len(rows) * (h + gap), len(STEPS) * (w + gap), 3), 255, np.uint8
  )
  for r, row in enumerate(rows):
    for c, frame in enumerate(row):
      grid[
        r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w
      ] = frame
  Image.fromarray(grid).save(args.out)
  print(f"{grid.shape[1]}x{grid.shape[0]} -> {args.out}")


if __name__ == "__main__":
  main()
