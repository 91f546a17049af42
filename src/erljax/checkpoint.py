"""Checkpoints of a whole run, the work-directory checks, and stop signals.

A checkpoint holds everything `erljax.runner.run` needs to continue exactly
where it stopped: the TrainState of every seed (agent, reward parameters,
optimiser states, replay buffer, env state, PRNG keys, step counter), the
evaluation keys, the feedback loop (rating sets, reward optimiser, query
counters, host RNG states) and the host progress (env steps, the metric
records written so far). With the same config a resumed run computes the same
numbers as an uninterrupted one.

Saving is asynchronous (orbax's CheckpointManager): the arrays are copied to
host memory at the call, the files are written in a background thread while
training goes on. Orbax writes a step into a temporary directory and renames
it when complete, so a run killed mid-save leaves the previous checkpoints
intact.

Restoring tells a damaged checkpoint from one this run cannot use:
- damaged (not finalized, its metadata, JSON or array files unreadable or
  missing): moved to `checkpoints_corrupt/<step>` (`<step>.1`, ... if taken;
  nothing there is ever overwritten) once an older one restores, and that
  one is used;
- written for another state (a leaf added, dropped, or of another shape or
  dtype, e.g. after a code upgrade), or none of them readable: `RestoreError`
  naming the difference, with nothing on disk changed;
- an error of the machine (OSError other than a missing file, MemoryError,
  a storage service unavailable): raised as it is, nothing moved.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from erljax import config as config_lib
from erljax import distributed
from erljax import metrics_writer
from erljax.memory import tree_bytes

# Config keys a resumed run may change: they steer how long and how the run
# is logged, not what it computes.
RESUMABLE_CHANGES = (
  "total_steps",
  "resume",
  "progress",
  "tensorboard",
  "wandb.project",
  "wandb.entity",
  "wandb.mode",
  "compile_cache",
  "workdir",
  "checkpoint.every",
  "checkpoint.keep",
  # How the processes find each other, not what they compute.
  "distributed.enabled",
  "distributed.coordinator_address",
  "distributed.num_processes",
  "distributed.process_id",
  "distributed.cluster_detection",
  "distributed.initialization_timeout",
  # How the rating service is reached, not what it is asked or which model
  # answers (rater.model, the prompts and the decoding settings stay fixed).
  "rater.base_url",
  "rater.api_key_env",
  "rater.timeout",
  "rater.max_retries",
  "rater.backoff_base",
  "rater.backoff_max",
  "rater.max_wait",
  "rater.concurrency",
  # How long and how much the run may wait for and ask the rating service;
  # a run stopped at rater.max_requests continues with a larger one.
  "feedback.final_wait_s",
  "feedback.drain_wait_s",
  "rater.breaker_failures",
  "rater.breaker_drop_rate",
  "rater.breaker_pause",
  "rater.breaker_probes",
  "rater.requests_per_minute",
  "rater.limiter_dir",
  "rater.max_requests",
  "rater.cache_dir",
)
MARGIN_BYTES = 64 << 20


def _like(restored: Any, template: Any) -> Any:
  """restored, uncommitted if the template array is (via the host)."""
  if isinstance(template, jax.Array) and not template.committed:
    return jnp.asarray(np.asarray(restored))
  return restored


class WorkdirError(RuntimeError):
  """The work directory cannot hold the run's logs and checkpoints."""


class RestoreError(RuntimeError):
  """The checkpoints cannot continue this run: written for a state of
  another structure, shape or dtype, or none of them readable. Raised
  before anything on disk is changed."""


class _Damaged(Exception):
  """A checkpoint that fails its own integrity check (the reason)."""


# tensorstore status codes of a storage that is busy or unreachable, not of
# damaged files (its errors are ValueErrors whose message starts with one).
_TRANSIENT_STATUS = (
  "UNAVAILABLE",
  "DEADLINE_EXCEEDED",
  "RESOURCE_EXHAUSTED",
  "ABORTED",
  "CANCELLED",
  "PERMISSION_DENIED",
)


def _transient(e: BaseException) -> bool:
  """True for an error of the machine rather than of the checkpoint."""
  if isinstance(e, MemoryError):
    return True
  if isinstance(e, OSError):
    return not isinstance(e, (FileNotFoundError, NotADirectoryError))
  return isinstance(e, ValueError) and str(e).startswith(_TRANSIENT_STATUS)


def _describe(shape: Tuple[int, ...], dtype: Any) -> str:
  return f"{tuple(shape)} {np.dtype(dtype).name}"


def state_differences(
  template: Dict[str, Any], saved: Dict[str, Any]
) -> List[str]:
  """One line per leaf path where `saved` ({path: array or array metadata})
  differs from `template` ({path: array or ShapeDtypeStruct}) in presence,
  shape or dtype; empty if they agree."""
  out = []
  for k in sorted(set(template) | set(saved)):
    if k not in saved:
      t = template[k]
      out.append(
        f"{k}: in the template {_describe(t.shape, t.dtype)}, "
        "not in the checkpoint"
      )
    elif k not in template:
      x = saved[k]
      out.append(
        f"{k}: in the checkpoint {_describe(x.shape, x.dtype)}, "
        "not in the template"
      )
    else:
      t, x = template[k], saved[k]
      if tuple(t.shape) != tuple(x.shape) or np.dtype(t.dtype) != np.dtype(
        x.dtype
      ):
        out.append(
          f"{k}: template {_describe(t.shape, t.dtype)}, "
          f"saved {_describe(x.shape, x.dtype)}"
        )
  return out


def check_workdir(workdir: str, needed_bytes: int) -> None:
  """Raises WorkdirError unless workdir is writable with needed_bytes free.

  Runs before anything is compiled, so a bad path fails in seconds.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    # One probe per process: every process writes its part of a checkpoint.
    probe = os.path.join(workdir, f".erljax_write_probe_{jax.process_index()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(
      f"config.workdir={workdir!r}: not writable ({type(e).__name__}: {e})"
    ) from e
  free = shutil.disk_usage(workdir).free
  if free < needed_bytes:
    raise WorkdirError(
      f"config.workdir={workdir!r}: {free / 2**20:.0f} MiB free on its "
      f"disk, the checkpoints need about {needed_bytes / 2**20:.0f} MiB "
      "(lower checkpoint.keep or replay_capacity, or free space)"
    )


def needed_bytes(state_shapes: Any, keep: int) -> int:
  """Disk needed by `keep` checkpoints plus one being written."""
  return (keep + 1) * tree_bytes(state_shapes) + MARGIN_BYTES


def _is_array(x: Any) -> bool:
  return isinstance(x, (np.ndarray, np.generic, jax.Array))


def split(tree: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Splits a nested dict into (array subtrees, JSON-able rest).

  A value holding any array goes to the first part whole; plain Python
  values (ints, lists, RNG state dicts, None) to the second.
  """
  arrays, host = {}, {}
  for k, v in tree.items():
    if isinstance(v, dict):
      a, h = split(v)
      if a:
        arrays[k] = a
      host[k] = h
    elif any(_is_array(x) for x in jax.tree_util.tree_leaves(v)):
      arrays[k] = v
    else:
      host[k] = v
  return arrays, host


def merge(arrays: Dict[str, Any], host: Dict[str, Any]) -> Dict[str, Any]:
  """Inverse of `split`."""
  out = dict(host)
  for k, v in arrays.items():
    out[k] = merge(v, host.get(k, {})) if k in host else v
  return out


def _flat(tree: Any) -> Dict[str, Any]:
  """{path: leaf} of the non-empty array leaves (orbax cannot store
  zero-size arrays; those come back from the restore template)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): x for p, x in leaves if np.size(x) > 0}


def _unflat(flat: Dict[str, Any], template: Any) -> Any:
  paths, treedef = jax.tree_util.tree_flatten_with_path(template)
  return jax.tree_util.tree_unflatten(
    treedef, [flat.get(jax.tree_util.keystr(p), x) for p, x in paths]
  )


def _host_copy(flat: Dict[str, Any]) -> Dict[str, np.ndarray]:
  # A real copy: on CPU np.asarray can alias a device buffer that the next
  # (donating) training chunk overwrites while the save is still writing.
  # Arrays split over processes are gathered: every process then holds the
  # whole checkpoint and orbax writes numpy arrays from process 0 only.
  host = distributed.to_host(flat)
  return {k: np.array(x, copy=True) for k, x in host.items()}


def changed_key(saved: Dict[str, Any], now: Dict[str, Any]) -> Optional[str]:
  """The first flat config key (sorted) whose value a resume may not change,
  or None. A key the checkpoint lacks is no change while it holds its
  default: a key added to erljax after the checkpoint was written, whose
  default computes what erljax did before (e.g. replay_shards=0, one block
  on one device)."""
  defaults = _flat_config(config_lib.default())
  for key in sorted(set(saved) | set(now)):
    if key in RESUMABLE_CHANGES:
      continue
    if key not in saved and key in defaults and now.get(key) == defaults[key]:
      continue
    if saved.get(key) != now.get(key):
      return key
  return None


def _flat_config(c: ml_collections.ConfigDict) -> Dict[str, Any]:
  out = {}

  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(v, prefix + k + ".")
      else:
        out[prefix + k] = list(v) if isinstance(v, (list, tuple)) else v

  walk(json.loads(c.to_json_best_effort()), "")
  return out


def read_arrays(
  workdir: str, step: Optional[int] = None
) -> Tuple[int, Dict[str, np.ndarray]]:
  """(step, arrays) of a run's checkpoint, read without a template.

  arrays maps each leaf's tree path, as `jax.tree_util.keystr` writes it
  (e.g. "['loop']['rating_sets'].label"), to a numpy array; any state
  structure is read, so tools can read checkpoints that older code wrote.
  step None: the latest. Raises FileNotFoundError naming the directory when
  it holds no checkpoint (or not that step).
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory}: no checkpoints directory")
  manager = ocp.CheckpointManager(
    directory,
    item_handlers={
      "arrays": ocp.StandardCheckpointHandler(),
      "host": ocp.JsonCheckpointHandler(),
    },
  )
  try:
    steps = manager.all_steps()
    step = manager.latest_step() if step is None else step
    if step is None or step not in steps:
      raise FileNotFoundError(
        f"{directory}: no checkpoint {'' if step is None else step} "
        f"(steps there: {sorted(steps)})"
      )
    got = manager.restore(
      step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore())
    )["arrays"]
  finally:
    manager.close()
  return step, {k: np.asarray(v) for k, v in got.items()}


class Checkpointer:
  """Asynchronous checkpoints of one run in `workdir/checkpoints`."""

  def __init__(
    self, config: ml_collections.ConfigDict, log: Callable[[str], None]
  ):
    self.config = config
    self.log = log
    self.directory = os.path.abspath(
      os.path.join(config.workdir, "checkpoints")
    )
    self.manager = ocp.CheckpointManager(
      self.directory,
      # Handlers given up front, so that item_metadata reads a checkpoint's
      # array metadata before anything is restored.
      item_handlers={
        "arrays": ocp.StandardCheckpointHandler(),
        "host": ocp.JsonCheckpointHandler(),
      },
      options=ocp.CheckpointManagerOptions(
        max_to_keep=config.checkpoint.keep,
        create=True,
        enable_async_checkpointing=True,
      ),
    )
    self.every = config.checkpoint.every
    self.last_step = 0  # env steps of the last save (or of the start)

  @classmethod
  def open(
    cls,
    config: ml_collections.ConfigDict,
    state_shapes: Any,
    log: Callable[[str], None],
  ) -> "Checkpointer":
    """Checks the workdir (writable, free space for the checkpoints of a
    state shaped like `state_shapes`), then opens its checkpoints."""
    check_workdir(
      config.workdir, needed_bytes(state_shapes, config.checkpoint.keep)
    )
    ckpt = cls(config, log)
    step = ckpt.latest_step()
    if step is not None and not config.resume:
      ckpt.close()
      raise WorkdirError(
        f"config.workdir={config.workdir!r} holds checkpoints of an "
        f"earlier run (latest: step {step}); continue it with "
        "--config.resume=True or choose a new workdir"
      )
    if step is not None:  # a resume with another config fails here, early
      try:
        saved = ckpt.manager.restore(
          step, args=ocp.args.Composite(host=ocp.args.JsonRestore())
        )["host"]["config"]
      except Exception as e:  # pylint: disable=broad-except
        if _transient(e):
          ckpt.close()
          raise
        saved = None  # damaged: `restore` decides what to do with it
      if saved is not None:
        try:
          ckpt._check_config(saved, step)
        except config_lib.ConfigError:
          ckpt.close()
          raise
    return ckpt

  def due(self, env_steps: int) -> bool:
    """True at the first chunk boundary at or after each `every` steps."""
    return self.every > 0 and env_steps // self.every > (
      self.last_step // self.every
    )

  def save(self, env_steps: int, tree: Dict[str, Any]) -> None:
    """Starts writing `tree` (nested dict of arrays and JSON-able values).

    Returns once the arrays are copied to host memory; the files are written
    in the background.
    """
    arrays, host = split(tree)
    host = {"json": json.dumps(host), "config": _flat_config(self.config)}
    self.manager.wait_until_finished()  # one save in flight at a time
    self.manager.save(
      env_steps,
      force=True,
      args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(_host_copy(_flat(arrays))),
        host=ocp.args.JsonSave(host),
      ),
    )
    self.last_step = env_steps

  def latest_step(self) -> Optional[int]:
    self.manager.wait_until_finished()
    return self.manager.latest_step()

  def restore(
    self, template: Dict[str, Any]
  ) -> Optional[Tuple[int, Dict[str, Any]]]:
    """(step, tree) of the newest readable checkpoint, or None if none.

    `template` is a tree like the saved one (e.g. the freshly initialised
    state); its arrays give the structure, shapes and dtypes to restore, and
    a checkpoint whose arrays differ in any of them raises RestoreError (as
    does a set of checkpoints none of which is readable), with nothing on
    disk changed. Damaged checkpoints newer than the one restored are moved
    aside (see the module docstring). Arrays come back placed as the
    template's are: an uncommitted template array (a fresh jit output) gives
    an uncommitted one, so that jitted functions see the same inputs as in
    an uninterrupted run and compile nothing again.
    """
    arrays_t, _ = split(template)
    target = {
      k: jax.ShapeDtypeStruct(
        np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)
      )
      for k, x in _flat(arrays_t).items()
    }
    damaged: List[Tuple[int, str]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        got = self._read(step, target)
      except _Damaged as e:
        damaged.append((step, str(e)))
        continue
      for bad, reason in damaged:
        self._set_aside(bad, reason)
      self.last_step = step
      arrays = _unflat(got["arrays"], arrays_t)
      host = json.loads(got["host"]["json"])
      return step, merge(jax.tree_util.tree_map(_like, arrays, arrays_t), host)
    if damaged:
      raise RestoreError(
        f"{self.directory} holds checkpoints but none is readable ("
        + "; ".join(f"step {s}: {r}" for s, r in damaged)
        + "); nothing was moved. Move them away or use a new workdir to "
        "start again"
      )
    return None

  def _read(self, step: int, target: Dict[str, Any]) -> Dict[str, Any]:
    """Checkpoint `step` ({"arrays": {path: array}, "host": {...}}) read
    as `target` ({path: ShapeDtypeStruct}) after its integrity, config and
    state checks. Raises _Damaged if it fails its integrity check (not
    finalized, metadata, JSON or array files unreadable), ConfigError or
    RestoreError if it is whole but not this run's; errors of the machine
    propagate."""
    path = os.path.join(self.directory, str(step))
    if not ocp.path.step.is_path_finalized(path):
      raise _Damaged("not finalized (no commit marker)")
    host = self._integral(
      lambda: self.manager.restore(
        step, args=ocp.args.Composite(host=ocp.args.JsonRestore())
      )["host"],
    )
    saved = self._integral(lambda: self.manager.item_metadata(step))
    if saved["arrays"] is None or host is None:
      raise _Damaged("no array metadata or no JSON item")
    self._integral(lambda: json.loads(host["json"]))
    self._check_config(host["config"], step)
    self._check_state(step, target, dict(saved["arrays"].items()))
    arrays = self._integral(
      lambda: self.manager.restore(
        step,
        args=ocp.args.Composite(arrays=ocp.args.StandardRestore(target)),
      )["arrays"],
    )
    self._check_state(step, target, arrays)  # what orbax handed back
    return {"arrays": arrays, "host": host}

  @staticmethod
  def _integral(read: Callable[[], Any]) -> Any:
    """read(), with an error of the files (not of the machine) as
    _Damaged."""
    try:
      return read()
    except Exception as e:  # pylint: disable=broad-except
      if _transient(e):
        raise
      raise _Damaged(f"{type(e).__name__}: {str(e)[:200]}") from e

  def _check_state(
    self, step: int, target: Dict[str, Any], saved: Dict[str, Any]
  ) -> None:
    diff = state_differences(target, saved)
    if diff:
      raise RestoreError(
        f"the checkpoint at step {step} in {self.directory} holds another "
        f"state than this run's ({len(diff)} differences):\n  "
        + "\n  ".join(diff[:20])
        + ("\n  ..." if len(diff) > 20 else "")
        + "\nThe code or config that shapes the state changed since it was "
        "written; resume with the version that wrote it or use a new "
        "workdir (nothing was moved)"
      )

  def _set_aside(self, step: int, reason: str) -> None:
    corrupt = self.directory + "_corrupt"
    bad = metrics_writer.unused_path(os.path.join(corrupt, str(step)))
    self.log(
      f"checkpoint: step {step} in {self.directory} is damaged ({reason}); "
      f"moved to {bad}, an older one is used"
    )
    if distributed.is_primary():  # the directory is shared
      os.makedirs(corrupt, exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), bad)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"erljax_set_aside_{step}")
    self.manager.reload()

  def _check_config(self, saved: Dict[str, Any], step: int) -> None:
    now = _flat_config(self.config)
    key = changed_key(saved, now)
    if key is not None:
      raise config_lib.ConfigError(
        f"config.{key}={now.get(key)!r}: the "
        f"checkpoint at step {step} in {self.directory} was written with "
        f"{saved.get(key)!r}; resume with the same config (only "
        f"{RESUMABLE_CHANGES} may change) or use a new workdir"
      )

  def close(self) -> None:
    """Waits for the save in flight and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


class StopOnSignal:
  """Context manager turning SIGINT/SIGTERM into a stop request.

  The first signal sets `signum`; the training loop saves a checkpoint at
  the next chunk boundary and returns. A second signal acts as usual
  (KeyboardInterrupt / termination). Outside the main thread, where Python
  cannot install handlers, it does nothing.
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous: Dict[int, Any] = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.signum = signum

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def __enter__(self) -> "StopOnSignal":
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
