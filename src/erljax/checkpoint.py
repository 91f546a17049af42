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
intact; a finished checkpoint that cannot be read (corrupted files) is moved
to `checkpoints_corrupt/` and the one before it is used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from erljax import config as config_lib
from erljax import distributed

# Config keys a resumed run may change: they steer how long and how the run
# is logged, not what it computes.
RESUMABLE_CHANGES = (
  "total_steps",
  "resume",
  "progress",
  "tensorboard",
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
)
MARGIN_BYTES = 64 << 20


def _like(restored: Any, template: Any) -> Any:
  """restored, uncommitted if the template array is (via the host)."""
  if isinstance(template, jax.Array) and not template.committed:
    return jnp.asarray(np.asarray(restored))
  return restored


class WorkdirError(RuntimeError):
  """The work directory cannot hold the run's logs and checkpoints."""


def tree_bytes(tree: Any) -> int:
  """Bytes of the arrays (or ShapeDtypeStructs) of a pytree."""
  return sum(
    int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
    for x in jax.tree_util.tree_leaves(tree)
  )


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
      item_names=("arrays", "host"),
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
      except Exception:  # pylint: disable=broad-except
        saved = None  # unreadable: `restore` sets it aside later
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
    state); its arrays give the structure, shapes and dtypes to restore.
    Unreadable checkpoints are moved aside and the previous one is tried.
    Arrays come back placed as the template's are: an uncommitted template
    array (a fresh jit output) gives an uncommitted one, so that jitted
    functions see the same inputs as in an uninterrupted run and compile
    nothing again.
    """
    arrays_t, _ = split(template)
    target = {
      k: jax.ShapeDtypeStruct(
        np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)
      )
      for k, x in _flat(arrays_t).items()
    }
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        got = self.manager.restore(
          step,
          args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore(target), host=ocp.args.JsonRestore()
          ),
        )
        self._check_config(got["host"]["config"], step)
        host = json.loads(got["host"]["json"])
      except config_lib.ConfigError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      self.last_step = step
      arrays = _unflat(got["arrays"], arrays_t)
      return step, merge(jax.tree_util.tree_map(_like, arrays, arrays_t), host)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    bad = os.path.join(self.directory + "_corrupt", str(step))
    self.log(
      f"checkpoint: step {step} in {self.directory} is unreadable "
      f"({type(error).__name__}: {str(error)[:200]}); moved to {bad}, "
      "trying the previous one"
    )
    if distributed.is_primary():  # the directory is shared
      os.makedirs(os.path.dirname(bad), exist_ok=True)
      shutil.rmtree(bad, ignore_errors=True)
      shutil.move(os.path.join(self.directory, str(step)), bad)
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
