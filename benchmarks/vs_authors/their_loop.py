"""Runs the ERL-VLM authors' `train_PEBBLE_VLM` loop, timed piece by piece.

Run by `benchmarks.vs_authors.run` in the authors' own environment (the venv
`prepare.sh` makes: torch, their pinned MuJoCo and Gymnasium), never in
erljax's; it imports nothing of erljax. Their files are read from
--checkout and never changed. What it does to run them, all at run time:

* Modules only their Gemini and dm_control paths use are stubbed:
  `google.generativeai` (the VLM client), `cv2` (its image encoding),
  `wandb` (off here: `log_save_wandb=false`), `dmc2gym` and
  `moviepy.editor` (DeepMind Control and GIF writing). A stub raises if
  anything of it is called, so a run that reached one would fail loudly.
* `reward_model_vlm_rating.device` is "cuda" in their file; it is set to
  "cpu" where torch has no GPU (their agent takes `device=` from the config).
* Their image replay buffer (200,000 frames, 28 GiB) is made as large as
  the run (`cap_replay`).
* Their state-MLP branch does not run as released: its first session stops
  on a variable only the image branch sets, then on the segment axis only
  the image branch drops (`state_queries` says how each is passed).
* The teacher: `vlm_feedback=false`, so their own `RewardModel.get_label`
  rates each queried frame from the task's ground-truth reward with their
  Drawer Open thresholds (3 classes), in place of the Gemini call. Every
  other setting is their `config/train_PEBBLE_VLM.yaml` and their
  `scripts/open_drawer/run_ERLVLM.sh` (MAE loss, class weights, stratified
  batches), with the schedule shortened by the flags below.

Timing: the pieces of their loop (env step, render, reward inference, SAC
update, unsupervised update, action sampling, storing, feedback sessions,
relabelling, evaluation) are wrapped where they are called; time inside a
piece that another wrapped piece calls is counted once, for the outer one.
Each is split by phase (seed, unsup, rl), in wall and in this process's
CPU seconds (what a shared machine does not inflate much). It prints
`step N` every --report_every env steps, and at the end one line
`vs_authors_profile JSON`.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
import types

# What their loop's `step` is in each phase; set by main().
_PHASES = {"seed": 0, "unsup": 0}
_STUBBED = (
  "google.generativeai",
  "google.generativeai.types",
  "google.generativeai.types.generation_types",
  "cv2",
  "wandb",
  "dmc2gym",
  "moviepy",
  "moviepy.editor",
)


class _Unused:
  """Stands in for any name of a stubbed module; calling it is an error."""

  def __init__(self, name):
    self._name = name

  def __getattr__(self, attr):
    return _Unused(f"{self._name}.{attr}")

  def __call__(self, *args, **kwargs):
    raise RuntimeError(f"{self._name} is stubbed by their_loop.py")


class _StubModule(types.ModuleType):
  def __getattr__(self, attr):
    if attr.startswith("__"):
      raise AttributeError(attr)
    return _Unused(f"{self.__name__}.{attr}")


def install_stubs():
  """Puts _STUBBED into sys.modules (those not importable here)."""
  for name in _STUBBED:
    try:
      found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent is a stub or missing
      found = False
    if not found:
      sys.modules[name] = _StubModule(name)
      sys.modules[name].__path__ = []


class Timers:
  """Wall and CPU seconds and calls per (phase, piece); nested pieces
  count once; `events` keeps (size, CPU s) of the pieces given a size."""

  def __init__(self, workspace_step):
    self.seconds = collections.defaultdict(float)
    self.cpu_seconds = collections.defaultdict(float)
    self.calls = collections.defaultdict(int)
    self.events = collections.defaultdict(list)  # piece -> [(size, s)]
    self._depth = 0
    self._step = workspace_step

  def phase(self) -> str:
    step = self._step()
    if step < _PHASES["seed"]:
      return "seed"
    if step < _PHASES["seed"] + _PHASES["unsup"]:
      return "unsup"
    return "rl"

  def wrap(self, owner, attr, piece, size=None):
    """Replaces owner.attr by a timed call of it."""
    fn = getattr(owner, attr)

    def timed(*args, **kwargs):
      if self._depth:
        return fn(*args, **kwargs)
      key = f"{self.phase()}/{piece}"
      n = size() if size else None
      self._depth += 1
      t0, c0 = time.perf_counter(), time.process_time()
      try:
        return fn(*args, **kwargs)
      finally:
        dc = time.process_time() - c0
        self._depth -= 1
        self.seconds[key] += time.perf_counter() - t0
        self.cpu_seconds[key] += dc
        self.calls[key] += 1
        if size:
          self.events[piece].append((n, dc))

    setattr(owner, attr, timed)


def _overrides(a) -> list:
  image = a.reward == "cnn"
  return [
    "env=metaworld_drawer-open-v2",
    f"seed={a.seed}",
    "device=cpu" if not a.cuda else "device=cuda",
    # Their scripts/open_drawer/run_ERLVLM.sh.
    "num_ratings=3",
    f"image_reward={image}",
    "reward_loss=mae",
    "weighting_loss=True",
    "batch_stratify=True",
    # The scripted teacher (their get_label) instead of Gemini.
    "vlm_feedback=False",
    "log_save_wandb=false",
    # The shortened schedule.
    f"num_train_steps={a.steps}",
    f"num_seed_steps={a.seed_steps}",
    f"num_unsup_steps={a.unsup_steps}",
    f"num_interact={a.interval}",
    f"eval_frequency={a.eval_every}",
    f"num_eval_episodes={a.eval_episodes}",
  ]


def run(a) -> dict:
  install_stubs()
  sys.path.insert(0, a.checkout)
  os.environ.setdefault("MUJOCO_GL", "egl")
  import torch  # pylint: disable=g-import-not-at-top
  from hydra import compose  # pylint: disable=g-import-not-at-top
  from hydra import initialize_config_dir  # pylint: disable=g-import-not-at-top

  import replay_buffer  # pylint: disable=g-import-not-at-top
  import reward_model_vlm_rating as rm  # pylint: disable=g-import-not-at-top
  import train_PEBBLE_VLM as their  # pylint: disable=g-import-not-at-top

  cap_replay(replay_buffer.ReplayBuffer, a.steps)
  state_queries(rm.RewardModel)

  a.cuda = torch.cuda.is_available()
  if not a.cuda:
    rm.device = "cpu"
  torch.set_num_threads(a.threads or torch.get_num_threads())
  _PHASES.update(seed=a.seed_steps, unsup=a.unsup_steps)
  conf = os.path.join(os.path.abspath(a.checkout), "config")
  with initialize_config_dir(config_dir=conf, version_base=None):
    cfg = compose("train_PEBBLE_VLM.yaml", overrides=_overrides(a))
  work = tempfile.mkdtemp(prefix="their_loop_")
  os.chdir(work)  # their Logger writes under the working directory
  t_init = time.perf_counter()
  ws = their.Workspace(cfg)
  init_s = time.perf_counter() - t_init
  timers = Timers(lambda: ws.step)
  rb = ws.replay_buffer
  timers.wrap(ws, "evaluate", "evaluation")
  timers.wrap(ws, "learn_reward", "session", size=lambda: rm_labels(ws))
  timers.wrap(rb, "relabel_with_predictor", "relabel", size=lambda: len(rb))
  timers.wrap(ws.env, "step", "physics")
  timers.wrap(ws.env, "render", "render")
  timers.wrap(ws.reward_model, "r_hat", "reward")
  timers.wrap(ws.reward_model, "add_data", "store")
  timers.wrap(ws.agent, "act", "act")
  timers.wrap(ws.agent, "update", "update")
  timers.wrap(ws.agent, "update_after_reset", "reset_update")
  timers.wrap(
    ws.agent, "update_state_ent", "unsup_update", size=lambda: len(rb)
  )
  timers.wrap(rb, "add", "store")
  timed_add = rb.add
  t0 = time.perf_counter()

  def add_and_report(*args, **kwargs):
    out = timed_add(*args, **kwargs)
    n = ws.step + 1  # their loop counts the step after storing it
    if n % a.report_every == 0:
      print(f"step {n} t={time.perf_counter() - t0:.2f}", flush=True)
    return out

  rb.add = add_and_report
  cpu0 = time.process_time()
  ws.run()
  wall = time.perf_counter() - t0
  cpu = time.process_time() - cpu0
  timers.events["knn_probe"] = knn_probe(ws.cfg.agent.batch_size)
  return {
    "overrides": _overrides(a),
    "init_s": init_s,
    "wall_s": wall,
    "cpu_s": cpu,
    "torch_threads": torch.get_num_threads(),
    "device": "cuda" if a.cuda else "cpu",
    "seconds": dict(timers.seconds),
    "cpu_seconds": dict(timers.cpu_seconds),
    "calls": dict(timers.calls),
    "events": {k: list(v) for k, v in timers.events.items()},
    "phase_steps": {
      "seed": a.seed_steps,
      "unsup": a.unsup_steps,
      "rl": a.steps - a.seed_steps - a.unsup_steps,
    },
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def cap_replay(cls, steps: int):
  """Their image buffer is 200,000 frames (28 GiB, train_PEBBLE_VLM.py:60),
  more than this machine's memory; a run of `steps` fills `steps` rows of
  it, so it is made that large (nothing else changes)."""
  init = cls.__init__

  def capped(self, obs_shape, action_shape, capacity, *args, **kwargs):
    init(self, obs_shape, action_shape, min(capacity, steps), *args, **kwargs)

  cls.__init__ = capped


def state_queries(cls):
  """Their `RewardModel.get_queries` ends by returning `extra_t_1`, which
  only its image branch assigns (reward_model_vlm_rating.py:328-370), so
  the state-MLP branch stops with UnboundLocalError at its first session.
  This returns what the function computed up to that line (its locals at
  the error: the queried segments and their true rewards) with no images,
  which is all the state branch reads. The image branch is untouched."""
  get = cls.get_queries

  def get_queries(self, *args, **kwargs):
    try:
      return get(self, *args, **kwargs)
    except UnboundLocalError as e:
      tb = e.__traceback__
      while tb.tb_next is not None:
        tb = tb.tb_next
      names = tb.tb_frame.f_locals
      if self.image_reward or "extra_t_1" not in str(e):
        raise
      return names["sa_t_1"], names["r_t_1"], None, None

  cls.get_queries = get_queries
  # train_reward feeds the state MLP [n, segment, obs + act] rows; its
  # image branch takes the segment's last frame (`sa_t_1[:, -1]`), the state
  # branch does not, and its loss then fails on [n, 1, 3] logits. The state
  # rows get the same last-step slice here.
  member = cls.r_hat_member

  def r_hat_member(self, x, member_index=-1):
    if not self.image_reward and x.ndim == 3:
      x = x[:, -1]
    return member(self, x, member=member_index)

  cls.r_hat_member = lambda self, x, member=-1: r_hat_member(self, x, member)


def knn_probe(batch: int, sizes=(1_000, 5_000, 10_000), obs_dim=39):
  """(buffer rows, CPU s) of their k-NN state entropy (agent/sac.py,
  `compute_state_entropy`, k = 5) on random states: the pre-training
  update's cost at the buffer sizes of the paper's 9k pre-training steps,
  which a short run never reaches."""
  import torch  # pylint: disable=g-import-not-at-top
  from agent import sac  # pylint: disable=g-import-not-at-top

  out = []
  for size in sizes:
    obs, full = torch.randn(batch, obs_dim), torch.randn(size, obs_dim)
    c0 = time.process_time()
    sac.compute_state_entropy(obs, full, k=5)
    out.append((size, time.process_time() - c0))
  return out


def rm_labels(ws) -> int:
  """Ratings the reward model will hold after the coming session."""
  r = ws.reward_model
  held = r.capacity if r.buffer_full else r.buffer_index
  return held + r.mb_size


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--checkout", required=True, help="tunglm2203/erlvlm")
  p.add_argument("--reward", choices=("cnn", "mlp"), default="cnn")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--seed_steps", type=int, default=250)
  p.add_argument("--unsup_steps", type=int, default=250)
  p.add_argument("--interval", type=int, default=250)
  p.add_argument("--eval_every", type=int, default=1000)
  p.add_argument("--eval_episodes", type=int, default=1)
  p.add_argument("--report_every", type=int, default=250)
  p.add_argument("--threads", type=int, default=0, help="torch threads")
  a = p.parse_args(argv)
  a.checkout = os.path.abspath(a.checkout)
  out = run(a)
  print("vs_authors_profile " + json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
