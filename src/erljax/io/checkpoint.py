"""Checkpoints of a whole run, the work-directory checks, and stop signals.

A checkpoint holds everything `erljax.online.runner.run` needs to continue
exactly where it stopped: the TrainState of every seed (agent, reward
parameters, optimiser states, replay buffer, env state, PRNG keys, step
counter), the evaluation keys, the feedback loop (rating sets, reward optimiser,
query counters, host RNG states) and the host progress (env steps, the metric
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

from erljax.config import defaults as config_lib
from erljax.runtime import distributed
from erljax.io import metrics as metrics_writer
from erljax.io import snapshot
from erljax.runtime.memory import tree_bytes

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


def _host_copy(flat: Dict[str, Any]) -> Dict[str, np.ndarray]:
  # A real copy: on CPU np.asarray can alias a device buffer that the next
  # (donating) training chunk overwrites while the save is still writing.
  # Arrays split over processes are gathered: every process then holds the
  # whole checkpoint and orbax writes numpy arrays from process 0 only.
  host = distributed.to_host(flat)
  return {k: np.array(x, copy=True) for k, x in host.items()}


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
    arrays, host = snapshot.split(tree)
    host = {
      "json": json.dumps(host),
      "config": snapshot.flat_config(self.config),
    }
    self.manager.wait_until_finished()  # one save in flight at a time
    self.manager.save(
      env_steps,
      force=True,
      args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(_host_copy(snapshot.flat_leaves(arrays))),
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
    arrays_t, _ = snapshot.split(template)
    target = {
      k: jax.ShapeDtypeStruct(
        np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)
      )
      for k, x in snapshot.flat_leaves(arrays_t).items()
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
      arrays = snapshot.unflat_leaves(got["arrays"], arrays_t)
      host = json.loads(got["host"]["json"])
      return step, snapshot.merge(
        jax.tree_util.tree_map(_like, arrays, arrays_t), host
      )
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
    diff = snapshot.state_differences(target, saved)
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
    now = snapshot.flat_config(self.config)
    key = snapshot.changed_key(saved, now)
    if key is not None:
      raise config_lib.ConfigError(
        f"config.{key}={now.get(key)!r}: the "
        f"checkpoint at step {step} in {self.directory} was written with "
        f"{saved.get(key)!r}; resume with the same config (only "
        f"{snapshot.RESUMABLE_CHANGES} may change) or use a new workdir"
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
