"""Task definitions and the task registry.

A *task* is a single-instance JAX environment (Brax or MuJoCo Playground) plus
what reward learning from ratings needs to know about it: the instruction a
VLM is given, the number of rating classes, the range of its ground-truth
per-step reward (the scripted rater bins segment returns over it), a success
signal and a camera to render from (see erljax.vision.render).
`erljax.envs.vec_env` vectorizes a task.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

# MuJoCo picks its OpenGL backend once, when `mujoco` is first imported (by
# Brax or Playground inside `make_env`). Headless machines (CI, servers) have
# no display for the default GLFW backend; EGL renders off-screen (with Mesa's
# software driver where there is no GPU). Set before anything imports mujoco.
if platform.system() == "Linux":
  os.environ.setdefault("MUJOCO_GL", "egl")

Env = (
  Any  # a brax.envs.Env or mujoco_playground MjxEnv: reset(key), step(state, a)
)
EnvStateT = Any


@dataclasses.dataclass(frozen=True)
class FreeCamera:
  """A MuJoCo free camera (mjCAMERA_FREE) for models without a fitting one.

  lookat: (x, y, z) point looked at; distance: from it (m); azimuth and
  elevation in degrees (elevation -90 looks straight down, with azimuth 90
  the model's +y axis points up in the image).
  """

  lookat: Tuple[float, float, float]
  distance: float
  azimuth: float = 90.0
  elevation: float = -90.0


RGBA = Tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Everything erljax needs to know about one task.

  Attributes:
    name: registry key.
    make_env: builds the single-instance environment.
    instruction: task description given to the VLM ("[{instruction}]").
    subject: what a rendered frame shows, a short noun phrase for the VLM's
      prompt ("an image of {subject} performing the task ...").
    num_classes: number of rating classes (2 for binary outcomes, 3 graded).
    episode_length: default time limit (steps) for training and evaluation.
    reward_range: (low, high) of the ground-truth per-step reward; a segment
      of H steps has return in [H*low, H*high]. The scripted rater bins over it.
    success_fn: maps one env state to a boolean success flag (scalar);
      None: the task defines no success (logs show no success column).
    rating_signal: what a rater judges in the post-step frame of one
      transition, (obs [O], action [A], next_obs [O], reward []) -> [];
      None: the per-step reward. A VLM sees the frame, not the action, so
      where the reward charges for control effort the signal leaves it out.
    rating_range: (low, high) of rating_signal, binned by the scripted rater;
      None: reward_range.
    camera: what frames are rendered from: the name of a camera in the
      task's MuJoCo model or a `FreeCamera`.
    geom_rgba: render-only colour overrides ((geom name, rgba), ...), e.g.
      to make the target red where the model colours every geom alike.
    source: "brax", "playground" or "metaworld".
    flip_frames: draw frames upside down (the authors' copy flips Sweep
      Into's and Soccer's: Soccer's camera is upside down).
  """

  name: str
  make_env: Callable[[], Env]
  instruction: str
  subject: str
  num_classes: int
  episode_length: int
  reward_range: Tuple[float, float]
  success_fn: Optional[Callable[[EnvStateT], jax.Array]] = None
  camera: str | FreeCamera = FreeCamera((0.0, 0.0, 0.0), 2.0, 90.0, -45.0)
  geom_rgba: Tuple[Tuple[str, RGBA], ...] = ()
  source: str = "brax"
  rating_signal: Optional[Callable[..., jax.Array]] = None
  rating_range: Optional[Tuple[float, float]] = None
  flip_frames: bool = False

  @property
  def has_success(self) -> bool:
    return self.success_fn is not None

  @property
  def rated_range(self) -> Tuple[float, float]:
    """(low, high) of the rated quantity: rating_range or reward_range."""
    return self.rating_range or self.reward_range

  def signal(
    self,
    obs: jax.Array,
    action: jax.Array,
    next_obs: jax.Array,
    reward: jax.Array,
  ) -> jax.Array:
    """The rated quantity of transitions with any leading batch shape [...]:
    obs/next_obs [..., O], action [..., A], reward [...] -> [...]."""
    if self.rating_signal is None:
      return reward
    fn = self.rating_signal
    for _ in range(reward.ndim):
      fn = jax.vmap(fn)
    return fn(obs, action, next_obs, reward)


# What a scripted rater can be asked to bin (config rater.rated).
RATED = ("signal", "reward")


def rated_task(
  spec: TaskSpec,
  rated: str = "signal",
  value_range: Optional[Tuple[float, float]] = None,
) -> TaskSpec:
  """`spec` with the rated quantity and range a run asks for.

  Args:
    spec: the registered task.
    rated: "signal" keeps the task's rating_signal (what a frame shows);
      "reward" rates the per-step env reward over reward_range (RbRL's
      synthetic ratings, which see the control cost a frame hides).
    value_range: (low, high) replacing the rated range; None keeps it.
  """
  if rated not in RATED:
    raise ValueError(f"rated={rated!r}: choose one of {RATED}")
  if rated == "reward":
    spec = dataclasses.replace(spec, rating_signal=None, rating_range=None)
  if value_range is not None:
    low, high = (float(v) for v in value_range)
    if not low < high:
      raise ValueError(f"rating range {value_range}: needs low < high")
    spec = dataclasses.replace(spec, rating_range=(low, high))
  return spec


_REGISTRY: Dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
  if spec.name in _REGISTRY:
    raise ValueError(f"task {spec.name!r} is already registered")
  if spec.num_classes < 2:
    raise ValueError(
      f"task {spec.name!r}: num_classes must be >= 2, got {spec.num_classes}"
    )
  for field in ("reward_range", "rating_range"):
    value = getattr(spec, field)
    if value is not None and not value[0] < value[1]:
      raise ValueError(
        f"task {spec.name!r}: {field} {value} must satisfy low < high"
      )
  _REGISTRY[spec.name] = spec
  return spec


def task_names() -> Tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def get_task(name: str) -> TaskSpec:
  if name not in _REGISTRY:
    raise ValueError(
      f"unknown task {name!r}; registered tasks: {', '.join(task_names())}"
    )
  return _REGISTRY[name]


# ----------------------------------------------------------------------------
# Built-in tasks.


def _brax_env(name: str, backend: str) -> Callable[[], Env]:

  def make():
    from brax import envs as brax_envs  # pylint: disable=g-import-not-at-top

    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # Brax's "not actively maintained" note.
      return brax_envs.get_environment(name, backend=backend)

  return make


def _playground_env(name: str) -> Callable[[], Env]:

  def make():
    from mujoco_playground import registry  # pylint: disable=g-import-not-at-top

    cfg = registry.get_default_config(name)
    # The Warp implementation runs (slowly) on CPU through a JIT of its own;
    # the pure-JAX MJX implementation is what vmaps and jits everywhere.
    cfg.impl = "jax"
    return registry.load(name, config=cfg)

  return make


def _metric_below(metric: str, threshold: float):
  """Success when -metrics[metric] (a negative distance) is below threshold."""
  return lambda state: -state.metrics[metric] < threshold


def _reward_above(threshold: float):
  return lambda state: state.reward > threshold


register(
  TaskSpec(
    name="reacher",
    make_env=_brax_env("reacher", backend="mjx"),
    instruction="move the tip of the robot arm onto the red target",
    subject="a robot arm",
    num_classes=3,
    episode_length=1000,
    # reward = -||tip - target|| - ||a||^2, distance <= ~0.42, ||a||^2 <= 2.
    reward_range=(-0.5, 0.0),
    # The tip within 2 cm of the target (the arm reaches 0.21 m).
    success_fn=_metric_below("reward_dist", 0.02),
    # Top-down over the 0.6 m arena. Brax's model colours every geom brown;
    # the instruction's red target and a green tip tell them apart.
    camera=FreeCamera(lookat=(0.0, 0.0, 0.0), distance=0.8),
    geom_rgba=(
      ("ground", (0.85, 0.85, 0.85, 1.0)),
      ("target", (0.9, 0.1, 0.1, 1.0)),
      ("fingertip", (0.1, 0.75, 0.1, 1.0)),
      ("link0", (0.2, 0.35, 0.8, 1.0)),
      ("link1", (0.2, 0.35, 0.8, 1.0)),
    ),
    # A frame shows how far the tip is from the target (the last three
    # observations are tip - target), not the control cost. Rated over
    # distances 0..0.3 (10 cm bins): with 0..0.2, 78% of random-policy frames
    # were "Bad" and 20% uniform noise left a fitted reward correlating 0.42
    # with the distance; with 0..0.3, 0.67 (1,000 ratings, ERL-VLM loss).
    rating_signal=lambda obs, action, next_obs, reward: (
      -jnp.linalg.norm(next_obs[-3:])
    ),
    rating_range=(-0.3, 0.0),
  )
)

register(
  TaskSpec(
    name="pusher",
    # MJX compilation of pusher's contacts takes minutes on CPU; Brax's
    # generalized pipeline compiles in ~15 s.
    make_env=_brax_env("pusher", backend="generalized"),
    instruction="push the white cylinder so that it lies on the red goal",
    subject="a robot arm",
    num_classes=2,
    episode_length=1000,
    reward_range=(-1.5, 0.0),
    success_fn=_metric_below("reward_dist", 0.05),
    # Top-down over the table (an oblique view hides the cylinder behind the
    # arm); the white cylinder needs a table that is not white to be seen.
    camera=FreeCamera(lookat=(0.25, -0.15, -0.3), distance=1.5),
    geom_rgba=(("table", (0.55, 0.65, 0.8, 1.0)),),
  )
)

# DM Control suite tasks from MuJoCo Playground: rewards lie in [0, 1].
# Cameras are the models' own: cartpole and walker from the side (walker's
# tracks its centre of mass), reacher from above, finger obliquely.
for _name, _instruction, _subject, _classes, _success, _camera in (
  (
    "CartpoleSwingup",
    "swing the pole up and balance it upright above the cart",
    "a cart-pole system",
    3,
    0.8,
    "fixed",
  ),
  (
    "FingerSpin",
    "spin the hinged body quickly with the finger",
    "a robotic finger",
    3,
    0.5,
    "cam0",
  ),
  (
    "ReacherEasy",
    "move the tip of the arm into the target",
    "a robot arm",
    2,
    0.5,
    "fixed",
  ),
  (
    "WalkerWalk",
    "make the biped walk forward while staying upright",
    "a two-legged robot",
    3,
    0.8,
    "side",
  ),
):
  register(
    TaskSpec(
      name=_name,
      make_env=_playground_env(_name),
      instruction=_instruction,
      subject=_subject,
      num_classes=_classes,
      episode_length=1000,
      reward_range=(0.0, 1.0),
      success_fn=_reward_above(_success),
      camera=_camera,
      source="playground",
    )
  )


# MetaWorld's Sawyer tasks as the paper runs them (erljax.envs.metaworld): the
# authors' instructions, classes and cameras; reward in [0, 10] per step.
# The scripted rater bins over the authors' RbRL ranges, segment returns
# [0, 500] for Sweep Into and Soccer and [30, 252] for Drawer Open (50-step
# segments), per step here. "<task>" simulates on the host with MuJoCo's C
# engine (what a CPU should run), "<task>-mjx" with MJX (accelerators),
# "<task>-random" draws object and goal from MetaWorld's ranges.
def _metaworld_env(name: str, backend: str, randomize: bool):

  def make():
    from erljax.envs import metaworld  # pylint: disable=g-import-not-at-top

    return metaworld.make_env(name, backend=backend, randomize=randomize)

  return make


def _success_metric(state) -> jax.Array:
  return state.metrics["success"] > 0.5


for _name, _instruction, _classes, _rating, _flip in (
  (
    "sweep-into",
    "place the green cube so that it lies on the square hole",
    2,
    (0.0, 10.0),
    True,
  ),
  ("drawer-open", "open the drawer", 3, (0.6, 5.04), False),
  (
    "soccer",
    "place the soccer ball so that it lies inside the goal",
    2,
    (0.0, 10.0),
    True,
  ),
):
  for _suffix, _backend, _random in (
    ("", "host", False),
    ("-mjx", "mjx", False),
    ("-random", "host", True),
  ):
    register(
      TaskSpec(
        name=_name + _suffix,
        make_env=_metaworld_env(_name, _backend, _random),
        instruction=_instruction,
        subject="a robot arm",
        num_classes=_classes,
        episode_length=500,
        reward_range=(0.0, 10.0),
        rating_range=_rating,
        success_fn=_success_metric,
        camera="task",
        source="metaworld",
        flip_frames=_flip,
      )
    )
