"""Runs over several processes (hosts) with jax.distributed.

Every process runs the same command and the same compiled programs over
the global devices (`jax.devices()`, `config.num_devices` of them); the
arrays they produce are then split over processes. This module starts the
distributed system and gives host code the two reads it needs:

  to_host(tree)        every leaf as a numpy array holding its global value
                       (a collective: every process must call it);
  from_primary(tree)   process 0's values of a host pytree on every process
                       (raters answer on process 0 only);
  max_over_processes   one host integer agreed by all (a stop signal that
                       reached some processes stops all at the same chunk).

Start-up (`initialize`), from the config's `distributed` keys:
  enabled              None: start when any key below is set or JAX detects
                       a launch of more than one process; True: always (JAX
                       fills unset keys from the cluster); False: never.
  coordinator_address  "host:port" of process 0;
  num_processes, process_id;
  cluster_detection    JAX's cluster_detection_method (e.g. "mpi4py");
  initialization_timeout  seconds to wait for every process.
Unset keys come from JAX's cluster auto-detection
(`jax.distributed.initialize()`): SLURM (srun: SLURM_NTASKS, SLURM_PROCID,
the first host of SLURM_STEP_NODELIST), Open MPI (mpirun:
OMPI_COMM_WORLD_SIZE / _RANK, the HNP's address), Kubernetes (JobSet /
indexed Jobs, with the `kubernetes` package) and Cloud TPU VMs; the port is
JAX_COORDINATOR_PORT or one derived from the job id. erljax itself reads
only the environment of SLURM and Open MPI (to start on its own when they
launched several processes); under Kubernetes, Cloud TPU or mpi4py set
enabled=True or name the cluster_detection method.

With one process nothing here touches a device and every read is the
single-process one (np.asarray).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, List, Optional, Tuple

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils


@dataclasses.dataclass(frozen=True)
class Spec:
  """What jax.distributed.initialize is given (None: JAX detects it) and
  where the rest comes from (`source`: "config", the detected launcher,
  e.g. "slurm", or the cluster_detection method JAX is to detect)."""

  coordinator_address: Optional[str]
  num_processes: Optional[int]
  process_id: Optional[int]
  cluster_detection: Optional[str]
  timeout: int
  source: str


@dataclasses.dataclass(frozen=True)
class Launcher:
  """A launcher that says in the environment how many processes it
  started and which one this is (the variables JAX's own detection in
  `jax.distributed.initialize()` reads as well).

  name: JAX's cluster_detection_method for it; present: the variables
  that say it launched this process; count, rank: the variables holding
  the process count and this process's id.
  """

  name: str
  present: Tuple[str, ...]
  count: str
  rank: str

  def is_present(self) -> bool:
    return all(v in os.environ for v in self.present)

  def get_process_count(self) -> int:
    return int(os.environ[self.count])

  def get_process_id(self) -> int:
    return int(os.environ[self.rank])


LAUNCHERS = (
  Launcher(
    "slurm",
    (
      "SLURM_JOB_ID",
      "SLURM_STEP_NODELIST",
      "SLURM_NTASKS",
      "SLURM_PROCID",
      "SLURM_LOCALID",
    ),
    "SLURM_NTASKS",
    "SLURM_PROCID",
  ),
  Launcher(
    "ompi",
    ("OMPI_MCA_orte_hnp_uri",),
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
  ),
)


def detected_cluster(method: Optional[str] = None) -> Optional[Launcher]:
  """The launcher (of LAUNCHERS) that started this process, or None.

  `method` names one (JAX's cluster_detection_method). Launchers found
  only through an API (Kubernetes, Cloud TPU, mpi4py) are JAX's to detect,
  once a run asks to start (see `resolve`).
  """
  for launcher in LAUNCHERS:
    if method is not None and launcher.name != method:
      continue
    if launcher.is_present():
      return launcher
  return None


def resolve(d: ml_collections.ConfigDict) -> Optional[Spec]:
  """The run's distributed set-up from config.distributed `d` and the
  cluster's environment; None for a single-process run.

  Raises ValueError naming the value when a key is unset and no cluster is
  detected to fill it in, or the process id does not lie in
  [0, num_processes).
  """
  keys = (d.coordinator_address, d.num_processes, d.process_id)
  if d.enabled is False:
    return None
  # Naming a method erljax cannot read from the environment asks JAX to
  # detect it at initialize.
  by_api = d.cluster_detection is not None and d.cluster_detection not in {
    launcher.name for launcher in LAUNCHERS
  }
  asked = d.enabled is True or by_api or any(k is not None for k in keys)
  try:
    cluster = detected_cluster(d.cluster_detection)
    num, pid = d.num_processes, d.process_id
    if cluster is not None:
      num = cluster.get_process_count() if num is None else num
      pid = cluster.get_process_id() if pid is None else pid
  except Exception:  # pylint: disable=broad-except
    if asked:
      raise
    return None  # e.g. a Kubernetes pod outside a Job: one process
  if not asked and (cluster is None or num is None or num < 2):
    return None
  if cluster is None and not by_api:
    for key, v in zip(
      ("coordinator_address", "num_processes", "process_id"), keys
    ):
      if v is None:
        raise ValueError(
          f"config.distributed.{key}=None: no cluster launcher detected "
          "(SLURM, Open MPI, Kubernetes, Cloud TPU) to fill it in; set "
          "coordinator_address, num_processes and process_id"
        )
  if num is not None and pid is not None and not 0 <= pid < num:
    raise ValueError(
      f"config.distributed.process_id={pid}: must lie in [0, {num}) "
      f"(num_processes={num}"
      + (f", from {cluster.name})" if cluster is not None else ")")
    )
  return Spec(
    coordinator_address=d.coordinator_address,
    num_processes=d.num_processes,
    process_id=d.process_id,
    cluster_detection=d.cluster_detection,
    timeout=d.initialization_timeout,
    source=(
      cluster.name
      if cluster is not None
      else (d.cluster_detection if by_api else "config")
    ),
  )


def initialize(config: ml_collections.ConfigDict) -> Optional[Spec]:
  """Starts jax.distributed if config.distributed or the cluster asks for
  it (see the module docstring); returns the Spec, None for one process.

  Call before anything touches a device. Calling it again is a no-op. On
  CPU the cross-process collectives use gloo.
  """
  spec = resolve(config.distributed)
  if spec is None or jax.distributed.is_initialized():
    return spec
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(
      coordinator_address=spec.coordinator_address,
      num_processes=spec.num_processes,
      process_id=spec.process_id,
      cluster_detection_method=spec.cluster_detection,
      initialization_timeout=spec.timeout,
    )
  except RuntimeError as e:
    raise RuntimeError(
      f"jax.distributed.initialize failed ({e}); erljax.runtime.distributed."
      "initialize(config) must run before anything touches a device "
      "(erljax.train and erljax.online.runner.run call it first)"
    ) from e
  return spec


def is_primary() -> bool:
  """True on process 0, the one that asks raters and writes files."""
  return jax.process_index() == 0


def to_host(tree: Any) -> Any:
  """Every leaf of `tree` as a numpy array of its global value.

  Arrays split over processes are gathered (one process_allgather for all
  of them: every process must call this with the same tree structure);
  the rest is np.asarray, as in a single-process run.
  """
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  split = [
    i
    for i, x in enumerate(leaves)
    if isinstance(x, jax.Array) and not x.is_fully_addressable
  ]
  if split:
    got = multihost_utils.process_allgather(
      [leaves[i] for i in split], tiled=True
    )
    for i, x in zip(split, got):
      leaves[i] = x
  return jax.tree_util.tree_unflatten(treedef, [np.asarray(x) for x in leaves])


def max_over_processes(value: int) -> int:
  """The largest of every process's `value` (a collective); with one
  process `value` itself."""
  if jax.process_count() == 1:
    return value
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def from_primary(tree: Any) -> Any:
  """Process 0's values of a pytree of numpy arrays / scalars, on every
  process (the others pass a tree of the same structure, shapes and
  dtypes). With one process the tree itself."""
  if jax.process_count() == 1:
    return tree
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  arrays: List[np.ndarray] = [np.asarray(x) for x in leaves]
  # Sent as int32 / float32 (bools included): what the collective carries.
  sent = [
    x.astype(np.float32 if np.issubdtype(x.dtype, np.floating) else np.int32)
    for x in arrays
  ]
  got = multihost_utils.broadcast_one_to_all(sent, is_source=is_primary())
  return jax.tree_util.tree_unflatten(
    treedef,
    [np.asarray(g).astype(x.dtype) for g, x in zip(got, arrays)],
  )
