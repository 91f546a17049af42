"""Multi-process runs: config resolution in-process, a two-process run on
127.0.0.1 in subprocesses checked against one process with four devices."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from erljax.config import defaults as config_lib
from erljax.runtime import distributed
from erljax.io import snapshot

_PROBE = os.path.join(os.path.dirname(__file__), "distributed_probe.py")


@pytest.fixture
def no_cluster(monkeypatch):
  """An environment without any launcher JAX would detect."""
  for k in list(os.environ):
    if k.startswith(("SLURM_", "OMPI_", "PMIX_")) or k in (
      "KUBERNETES_SERVICE_HOST",
      "JAX_COORDINATOR_PORT",
    ):
      monkeypatch.delenv(k)
  return monkeypatch


def _slurm(monkeypatch, ntasks: int, procid: int) -> None:
  """What srun sets for task `procid` of `ntasks`."""
  for k, v in {
    "SLURM_JOB_ID": "1234",
    "SLURM_STEP_NODELIST": "node[01-02]",
    "SLURM_NTASKS": str(ntasks),
    "SLURM_PROCID": str(procid),
    "SLURM_LOCALID": "0",
  }.items():
    monkeypatch.setenv(k, v)


def _dist(**kw):
  c = config_lib.default()
  for k, v in kw.items():
    c.distributed[k] = v
  return c


# -- resolution and validation, in-process -----------------------------------


def test_single_process_by_default(no_cluster):
  assert distributed.resolve(_dist().distributed) is None
  # Nothing to start: no distributed system, the same process as before.
  assert distributed.initialize(_dist()) is None
  assert not jax.distributed.is_initialized()


def test_config_keys_give_the_spec(no_cluster):
  d = _dist(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)
  spec = distributed.resolve(d.distributed)
  assert spec.source == "config"
  assert (spec.coordinator_address, spec.num_processes, spec.process_id) == (
    "10.0.0.1:1234",
    2,
    1,
  )
  d.distributed.enabled = False
  assert distributed.resolve(d.distributed) is None


def test_unset_key_without_a_cluster_names_it(no_cluster):
  d = _dist(coordinator_address="10.0.0.1:1234", num_processes=2)
  with pytest.raises(ValueError, match="distributed.process_id=None"):
    distributed.resolve(d.distributed)
  with pytest.raises(ValueError, match="distributed.coordinator_address"):
    distributed.resolve(_dist(enabled=True).distributed)


def test_slurm_launch_is_detected(no_cluster):
  _slurm(no_cluster, ntasks=2, procid=1)
  spec = distributed.resolve(_dist().distributed)
  assert spec.source == "slurm"
  # JAX fills these in at initialize; the config leaves them unset.
  assert spec.coordinator_address is None and spec.process_id is None
  # A single task (an sbatch script without srun -n) stays one process.
  _slurm(no_cluster, ntasks=1, procid=0)
  assert distributed.resolve(_dist().distributed) is None
  # The config overrides the launcher's values; they are checked together.
  _slurm(no_cluster, ntasks=2, procid=0)
  with pytest.raises(ValueError, match="process_id=2: must lie in \\[0, 2\\)"):
    distributed.resolve(_dist(process_id=2).distributed)


def test_open_mpi_launch_is_detected(no_cluster):
  no_cluster.setenv("OMPI_MCA_orte_hnp_uri", "1531576320.0;tcp://10.0.0.1:3")
  no_cluster.setenv("OMPI_COMM_WORLD_SIZE", "4")
  no_cluster.setenv("OMPI_COMM_WORLD_RANK", "3")
  assert distributed.resolve(_dist().distributed).source == "ompi"


def test_api_launchers_are_left_to_jax_when_named(no_cluster):
  """Kubernetes / Cloud TPU / mpi4py: nothing in the environment erljax
  reads; naming the method asks to start, and JAX detects the rest."""
  no_cluster.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
  assert distributed.resolve(_dist().distributed) is None
  spec = distributed.resolve(_dist(cluster_detection="k8s").distributed)
  assert spec.source == "k8s" and spec.cluster_detection == "k8s"
  assert spec.num_processes is None and spec.coordinator_address is None
  # Naming SLURM outside a SLURM job stays one process.
  assert (
    distributed.resolve(_dist(cluster_detection="slurm").distributed) is None
  )


def test_failed_detection_is_one_process_unless_asked(no_cluster):
  class Broken:  # a launcher whose values cannot be read
    name = "broken"

    @staticmethod
    def get_process_count():
      raise RuntimeError("no pod info")

  no_cluster.setattr(distributed, "detected_cluster", lambda _: Broken)
  assert distributed.resolve(_dist().distributed) is None
  with pytest.raises(RuntimeError, match="no pod info"):
    distributed.resolve(_dist(enabled=True).distributed)


@pytest.mark.parametrize(
  "key, value",
  [
    ("coordinator_address", "localhost"),
    ("coordinator_address", "localhost:0"),
    ("coordinator_address", "localhost:70000"),
    ("coordinator_address", 1234),
    ("num_processes", 0),
    ("process_id", -1),
    ("enabled", "yes"),
    ("initialization_timeout", 0),
  ],
)
def test_bad_values_are_named(key, value):
  c = config_lib.default()
  with c.distributed.ignore_type():
    c.distributed[key] = value
  with pytest.raises(
    config_lib.ConfigError, match=f"config.distributed.{key}={value!r}"
  ):
    config_lib.validate(c)


def test_process_id_beyond_num_processes_and_keys_while_off():
  c = _dist(num_processes=2, process_id=2)
  with pytest.raises(config_lib.ConfigError, match="below num_processes=2"):
    config_lib.validate(c)
  c = _dist(enabled=False, num_processes=2)
  with pytest.raises(config_lib.ConfigError, match="enabled=False"):
    config_lib.validate(c)
  config_lib.validate(_dist(coordinator_address="h:1", process_id=0))


def test_launch_keys_may_change_on_resume():
  # A resumed run may use other hosts, ports or process counts.
  keys = [
    k
    for k in snapshot.flat_config(config_lib.default())
    if k.startswith("distributed.")
  ]
  assert keys and set(keys) <= set(snapshot.RESUMABLE_CHANGES)


def test_host_reads_with_one_process():
  tree = {"a": jax.numpy.arange(3), "b": np.ones(2)}
  got = distributed.to_host(tree)
  assert isinstance(got["a"], np.ndarray)
  np.testing.assert_array_equal(got["a"], [0, 1, 2])
  assert distributed.from_primary(tree) is tree
  assert distributed.max_over_processes(15) == 15
  assert distributed.is_primary()


# -- two processes against one ------------------------------------------------


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{"single": report, "multi": [report of process 0, of process 1]},
  each report with "params" (the final SAC and reward leaves) and the
  processes' stdout ("stdout") added; "workdir": the shared workdir."""
  out = tmp_path_factory.mktemp("distributed")
  single, multi = out / "single", out / "multi"
  single.mkdir()
  multi.mkdir()
  address = f"127.0.0.1:{_free_port()}"

  def start(dest, devices, *args):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
      env.get("XLA_FLAGS", "")
      + f" --xla_force_host_platform_device_count={devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen(
      [sys.executable, _PROBE, str(dest), str(dest / "workdir"), *args],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )

  procs = [start(single, 4)] + [
    start(multi, 2, address, "2", str(i)) for i in range(2)
  ]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=600))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (stdout, stderr) in zip(procs, outputs):
    assert p.returncode == 0, f"{p.args}:\n{stdout[-2000:]}\n{stderr[-5000:]}"

  def report(dest, pid, stdout):
    with open(dest / f"result_{pid}.json") as f:
      r = json.load(f)
    with np.load(dest / f"result_{pid}.npz") as z:
      r["params"] = {k: z[k] for k in z.files}
    r["stdout"] = stdout
    return r

  return {
    "single": report(single, 0, outputs[0][0]),
    "multi": [report(multi, i, outputs[i + 1][0]) for i in range(2)],
    "workdir": multi / "workdir",
  }


@pytest.mark.parametrize("pid", [0, 1])
def test_two_processes_match_one(runs, pid):
  one, got = runs["single"], runs["multi"][pid]
  assert (got["process_count"], got["device_count"]) == (2, 4)
  assert (one["process_count"], one["device_count"]) == (1, 4)
  assert sorted(got["params"]) == sorted(one["params"])
  for k, x in one["params"].items():
    np.testing.assert_allclose(got["params"][k], x, atol=1e-5, err_msg=k)
  np.testing.assert_allclose(got["eval_return"], one["eval_return"], atol=1e-4)
  # The same labels reached every process: counts, histograms, accuracy.
  assert len(got["feedback"]) == len(one["feedback"]) == 2
  for a, b in zip(got["feedback"], one["feedback"]):
    for k in ("answered", "dropped", "ratings_stored", "label_histogram"):
      assert a[k] == b[k], k
    np.testing.assert_allclose(a["label_accuracy"], b["label_accuracy"])
    np.testing.assert_allclose(a["reward_accuracy"], b["reward_accuracy"])


def test_only_process_zero_asks_logs_and_writes(runs):
  first, second = runs["multi"]
  # 2 sessions x 2 seeds, asked on process 0 only.
  assert first["rater_calls"] == runs["single"]["rater_calls"] == 4
  assert second["rater_calls"] == 0
  assert "eval_return" in first["stdout"]
  assert "eval_return" not in second["stdout"]
  assert second["opened"] == []
  assert {"config.json", "metrics.jsonl", "eval.csv.tmp"} <= set(
    first["opened"]
  )
  wd = runs["workdir"]
  assert (wd / "metrics.jsonl").exists() and (wd / "eval.csv").exists()
  assert os.listdir(wd / "checkpoints") == ["96"]
