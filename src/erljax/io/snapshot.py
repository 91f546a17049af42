"""What a checkpoint holds, and what a resume compares (erljax.io.checkpoint).

A run's snapshot is a nested dict: `split` parts it into the array
subtrees orbax stores and the JSON-able rest (`merge` is the inverse);
`flat_leaves` / `unflat_leaves` key the arrays by their tree path.
On resume, `state_differences` names each leaf whose presence, shape or
dtype differs from this run's template, and `changed_key` the first config
key that differs, apart from RESUMABLE_CHANGES (how long and how the run is
logged, not what it computes). `read_arrays` reads a run's checkpoint
without a template, for tools that read what older code wrote.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from erljax.config import defaults as config_lib


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


def flat_leaves(tree: Any) -> Dict[str, Any]:
  """{path: leaf} of the non-empty array leaves (orbax cannot store
  zero-size arrays; those come back from the restore template)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): x for p, x in leaves if np.size(x) > 0}


def unflat_leaves(flat: Dict[str, Any], template: Any) -> Any:
  paths, treedef = jax.tree_util.tree_flatten_with_path(template)
  return jax.tree_util.tree_unflatten(
    treedef, [flat.get(jax.tree_util.keystr(p), x) for p, x in paths]
  )


def changed_key(saved: Dict[str, Any], now: Dict[str, Any]) -> Optional[str]:
  """The first flat config key (sorted) whose value a resume may not change,
  or None. A key the checkpoint lacks is no change while it holds its
  default: a key added to erljax after the checkpoint was written, whose
  default computes what erljax did before (e.g. replay_shards=0, one block
  on one device)."""
  defaults = flat_config(config_lib.default())
  for key in sorted(set(saved) | set(now)):
    if key in RESUMABLE_CHANGES:
      continue
    if key not in saved and key in defaults and now.get(key) == defaults[key]:
      continue
    if saved.get(key) != now.get(key):
      return key
  return None


def flat_config(c: ml_collections.ConfigDict) -> Dict[str, Any]:
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
