"""What the benchmark scripts share: one SAC setup for erljax and Brax.

`SACSetup` holds the settings both implementations get (task, parallel envs,
episode length, batch size, network sizes, updates per vectorized step,
replay size, random prefill, learning rate). `erljax_config` turns it into an
erljax config; `brax_sac_train` runs `brax.training.agents.sac.train` with the
same settings. Used by `benchmarks.compare_brax_sac` (learning quality) and
`benchmarks.run` (throughput).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from importlib import metadata
from typing import Any, Callable, Dict, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import ml_collections

from erljax.config import defaults as config_lib
from erljax.envs import tasks


@dataclasses.dataclass(frozen=True)
class SACSetup:
  """Settings given identically to erljax SAC and Brax SAC."""

  task: str = "reacher"
  num_envs: int = 8
  episode_length: int = 200
  batch_size: int = 256
  updates_per_step: int = 4  # gradient updates per vectorized env step
  hidden: Sequence[int] = (256, 256, 256)
  seed_steps: int = 1_000  # uniform random prefill (Brax: min replay)
  lr: float = 3e-4
  replay_capacity: int = 100_000
  num_eval_envs: int = 16

  def as_dict(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d["hidden"] = list(self.hidden)
    return d


def erljax_config(
  s: SACSetup, total_steps: int, log_every: int, num_seeds: int = 1
) -> ml_collections.ConfigDict:
  """An erljax SAC config (environment reward) with the setup's settings."""
  c = config_lib.default()
  c.task = s.task
  c.num_seeds = num_seeds
  c.num_envs = s.num_envs
  c.episode_length = s.episode_length
  c.total_steps = total_steps
  c.seed_steps = s.seed_steps
  c.log_every = log_every
  c.eval_every = log_every
  c.num_eval_envs = s.num_eval_envs
  c.batch_size = s.batch_size
  c.updates_per_step = s.updates_per_step
  c.replay_capacity = s.replay_capacity
  c.sac.hidden_sizes = tuple(s.hidden)
  c.sac.actor_lr = c.sac.critic_lr = s.lr
  return c


def step_bodies(tr, state, n: int) -> tuple:
  """Scan bodies (carry, key) -> (carry, None) of two pieces of a training
  step of Trainer `tr`, for timing each alone: `env_step` steps the n envs
  with uniform random actions [n, A]; `act_step` samples the actor's actions
  for observations [n, O] (the carry, nudged by the actions so that XLA
  keeps the work)."""

  def env_step(st, k):
    a = jax.random.uniform(k, (n, tr.env.action_size), minval=-1.0, maxval=1.0)
    return tr.env.step(st, a)[0], None

  def act_step(o, k):
    a, _ = tr.agent.sample_action(state.sac.actor_params, o, k)
    return o + 1e-6 * jnp.sum(a), None

  return env_step, act_step


def brax_sac_train(
  s: SACSetup,
  seed: int,
  num_timesteps: int,
  num_evals: int,
  progress_fn: Callable[[int, Dict[str, Any]], None],
):
  """Runs Brax's own SAC on the task's Brax env with the setup's settings.

  progress_fn(step, metrics) is Brax's: called after every evaluation; from
  the second call on, metrics['training/sps'] is the env steps per second of
  the training epoch just run (Brax times the epoch alone, excluding
  evaluation, and blocks on its result).
  """
  from brax.training.agents.sac import networks as sac_networks  # pylint: disable=g-import-not-at-top
  from brax.training.agents.sac import train as sac_train  # pylint: disable=g-import-not-at-top

  spec = tasks.get_task(s.task)
  env = spec.make_env()
  # MuJoCo Playground's envs are trained through Playground's own wrapper
  # (Brax's training wrappers expect a Brax env's state); it resets a finished
  # episode to the env's cached first state, erljax's VecEnv to a fresh one.
  wrap_env_fn = None
  if spec.source == "playground":
    from mujoco_playground import wrapper as playground_wrapper  # pylint: disable=g-import-not-at-top

    wrap_env_fn = playground_wrapper.wrap_for_brax_training
  factory = functools.partial(
    sac_networks.make_sac_networks, hidden_layer_sizes=tuple(s.hidden)
  )
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return sac_train.train(
      environment=env,
      wrap_env_fn=wrap_env_fn,
      num_timesteps=num_timesteps,
      episode_length=s.episode_length,
      num_envs=s.num_envs,
      num_eval_envs=s.num_eval_envs,
      learning_rate=s.lr,
      discounting=0.99,
      seed=seed,
      batch_size=s.batch_size,
      num_evals=num_evals,
      tau=0.005,
      min_replay_size=s.seed_steps,
      max_replay_size=s.replay_capacity,
      grad_updates_per_step=s.updates_per_step,
      deterministic_eval=True,
      network_factory=factory,
      progress_fn=progress_fn,
    )


# ----------------------------------------------------------------------------
# Machine description and memory.


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def versions(
  packages: Sequence[str] = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "brax",
    "mujoco",
    "mujoco-mjx",
    "playground",
    "numpy",
  ),
) -> Dict[str, Optional[str]]:
  out: Dict[str, Optional[str]] = {"python": sys.version.split()[0]}
  for p in packages:
    try:
      out[p] = metadata.version(p)
    except metadata.PackageNotFoundError:
      out[p] = None
  return out


def _git_commit() -> Optional[str]:
  try:
    return subprocess.run(
      ["git", "rev-parse", "HEAD"],
      capture_output=True,
      text=True,
      cwd=os.path.dirname(os.path.abspath(__file__)),
      check=True,
      timeout=10,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def machine() -> Dict[str, Any]:
  """CPU model, core counts, JAX devices and the OS."""
  devices = jax.devices()
  return {
    "cpu_model": _cpu_model(),
    "cpu_count": os.cpu_count(),
    "cpu_affinity": (
      len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    ),
    "load_average": list(os.getloadavg()),
    "platform": platform.platform(),
    "jax_backend": jax.default_backend(),
    "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
    "device_count": len(devices),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "git_commit": _git_commit(),
  }


def peak_rss_mb() -> float:
  """High-water mark of this process's resident memory, MiB (monotone)."""
  kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return kb / 1024.0


def device_memory() -> Optional[Dict[str, int]]:
  """memory_stats() of the first device (None on CPU, where JAX has none)."""
  try:
    stats = jax.devices()[0].memory_stats()
  except (AttributeError, RuntimeError):
    return None
  if not stats:
    return None
  keep = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
  return {k: int(v) for k, v in stats.items() if k in keep}


def cpu_seconds(pid: int) -> Optional[float]:
  """User + system CPU seconds of process `pid` so far, all its threads
  (/proc/PID/stat); None once it is gone."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
  except OSError:
    return None
  # After the command name: state is field 3, utime 14 and stime 15.
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stamped_run(
  cmd: Sequence[str],
  timeout: float,
  cwd: Optional[str] = None,
  env: Optional[Dict[str, str]] = None,
):
  """Runs cmd (stream_process); each stdout line as (wall s since launch,
  the child's CPU s then, text) as it arrives. Returns (exit code, resource
  usage, stderr, lines)."""
  lines = []
  t0 = time.perf_counter()

  def on_line(pid, line):
    now = time.perf_counter() - t0
    lines.append((now, cpu_seconds(pid), line.rstrip()))

  code, usage, stderr = stream_process(cmd, on_line, timeout, cwd, env)
  return code, usage, stderr, lines


def write_json(path: str, out: Dict[str, Any]) -> None:
  """Writes a benchmark's result to path (its folder made) and says so."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(out, f, indent=1)
  print("wrote", path)


def stream_process(
  cmd: Sequence[str],
  on_line: Callable[[int, str], None],
  timeout: float,
  cwd: Optional[str] = None,
  env: Optional[Dict[str, str]] = None,
):
  """Runs cmd, calling on_line(pid, line) for each stdout line as it comes;
  kills it after `timeout` s. Returns (exit code, resource usage, stderr)."""
  # stderr to a file: a full pipe would block the child while we read stdout.
  with tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen(
      list(cmd),
      cwd=cwd,
      env=env,
      stdout=subprocess.PIPE,
      stderr=err,
      text=True,
      bufsize=1,
    )
    # Kills a child that runs past the timeout, printing or not.
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
      on_line(proc.pid, line)
    # wait4, not wait: it also gives the child's resource usage.
    _, status, usage = os.wait4(proc.pid, 0)
    killer.cancel()
    err.seek(0)
    return os.waitstatus_to_exitcode(status), usage, err.read()
