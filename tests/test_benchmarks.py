"""The benchmark suite's machinery at a tiny size (figures mean nothing).

The comparison with Brax's SAC (`benchmarks.end_to_end`) is tested apart, in
tests/test_end_to_end.py, without running Brax.
"""

import json
import math
import os
import subprocess
import sys
from importlib import metadata

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import point_env  # pylint: disable=wrong-import-position

from benchmarks import common  # pylint: disable=wrong-import-position
from benchmarks import run as bench  # pylint: disable=wrong-import-position


def tiny_suite() -> bench.Suite:
  task = point_env.register()
  return bench.Suite(
    env_tasks=(task,),
    env_sizes=(1, 3),
    env_steps=5,
    sac=common.SACSetup(
      task=task,
      num_envs=2,
      episode_length=10,
      batch_size=8,
      updates_per_step=1,
      hidden=(8,),
      seed_steps=8,
      replay_capacity=64,
      num_eval_envs=1,
    ),
    sac_chunk_steps=8,
    sac_chunks=1,
    erl_total_steps=32,
    erl_first_session=16,
    erl_interval=8,
    erl_queries=4,
    reward_ratings=16,
    reward_batch=8,
    cnn_batch=2,
    cnn_steps=1,
    cnn_frame=48,
    relabel_size=64,
    relabel_chunk_sizes=(16, 64),
    repeats=1,
  )


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = bench.run_suite(tiny_suite(), "tiny")
  path = tmp_path_factory.mktemp("bench") / "tiny.json"
  path.write_text(json.dumps(out))
  return json.loads(path.read_text()), bench.table(out)


def _positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_top_level_schema(result):
  out, _ = result
  assert out["schema_version"] == bench.SCHEMA_VERSION
  assert out["suite"] == "tiny" and out["complete"]
  assert set(out["results"]) == set(bench.SECTIONS)
  m = out["machine"]
  assert m["cpu_count"] >= 1 and m["cpu_model"]
  assert m["device_count"] >= 1 and m["devices"]
  for pkg in ("jax", "jaxlib", "flax", "brax", "python"):
    assert out["versions"][pkg]
  assert out["config"]["sac"]["task"] == point_env.NAME
  assert _positive(out["memory"]["peak_rss_mb"])


def test_env_rows(result):
  rows = result[0]["results"]["env"]
  assert [(r["task"], r["num_envs"]) for r in rows] == [
    (point_env.NAME, 1),
    (point_env.NAME, 3),
  ]
  for r in rows:
    assert _positive(r["steps_per_s"]) and r["compile_s"] >= 0
    assert _positive(r["memory"]["peak_rss_mb"])


def test_sac_and_loop_rates(result):
  res = result[0]["results"]
  e = res["sac"]["erljax"]
  assert _positive(e["env_steps_per_s"])
  # 1 update per vectorized step of 2 envs.
  assert e["updates_per_s"] == pytest.approx(e["env_steps_per_s"] / 2)
  assert set(res["sac"]) == {"setup", "chunk_steps", "erljax"}
  loop = res["erl_loop"]
  for who in ("sac", "erl_vlm"):
    assert _positive(loop[who]["env_steps_per_s"])
    assert _positive(loop[who]["steady_env_steps_per_s"])
  # Sessions at 16 and 24 env steps (none at 32, the end of training).
  assert len(loop["erl_vlm"]["feedback_seconds"]) == 2
  assert loop["sac"]["feedback_seconds"] == []
  assert _positive(loop["fraction_of_sac"])


def test_reward_and_breakdown(result):
  res = result[0]["results"]
  w = res["reward"]
  assert w["mlp_rating_loss"]["steps"] == 2  # 16 ratings in batches of 8
  assert w["cnn_rating_loss"]["frame"] == [48, 48, 3]
  for k in ("mlp_rating_loss", "cnn_rating_loss"):
    assert _positive(w[k]["steps_per_s"])
  assert [r["chunk_size"] for r in w["relabel"]] == [16, 64]
  assert all(_positive(r["seconds"]) for r in w["relabel"])
  b = res["breakdown"]
  assert b["vectorized_steps"] == 4 and b["updates"] == 4
  for k in (
    "env_step",
    "sample_action",
    "replay_add",
    "replay_sample",
    "sac_update",
  ):
    assert _positive(b[k]["seconds"])


def test_devices_and_table(result):
  out, text = result
  d = out["results"]["devices"]
  assert "skipped" in d or len(d["rows"]) >= 2
  assert "benchmarks.end_to_end" in text  # where the Brax ratio lives
  assert "fraction of SAC" in text and point_env.NAME in text


def test_unknown_section_is_named():
  with pytest.raises(ValueError, match="nope"):
    bench.run_suite(tiny_suite(), "tiny", sections=("env", "nope"))


def test_rating_latency_runs_the_http_path(tmp_path):
  """rating_latency at a tiny size through the whole VLM path: rendered PNGs
  over HTTP to erljax.serve, asynchronous sessions (figures mean nothing)."""
  from benchmarks import rating_latency  # pylint: disable=g-import-not-at-top

  out_path = tmp_path / "latency.json"
  out = rating_latency.main(
    [
      "--total_steps=200",
      "--first_session=80",
      "--interval=40",
      "--queries=6",
      "--seed_steps=40",
      "--final_wait=-1",
      "--latency=0",
      "--concurrency=3",
      "--num_envs=4",
      "--episode_length=20",
      "--batch_size=8",
      "--hidden=8",
      "--render_frames=0",
      "--runs=http_async",
      f"--out={out_path}",
    ]
  )
  (run,) = json.loads(out_path.read_text())["runs"]
  assert run == json.loads(json.dumps(out["runs"][0]))
  assert run["run"] == "http_async" and run["steps_per_second"] > 0
  assert math.isnan(run["fraction_of_instant"])  # no instant run to divide by
  # Sessions fall due at 80, 120 and 160; one due while another is out
  # waits for room, and the end waits for every session requested.
  assert run["sessions_abandoned"] == 0
  assert 1 <= run["sessions_completed"] <= 3
  # The pixel rater may leave a frame unanswered; most are answered.
  assert run["queries_answered"] >= 0.6 * 6 * run["sessions_completed"]


def test_iql_throughput_rows_and_json(tmp_path):
  from benchmarks import iql_throughput  # pylint: disable=g-import-not-at-top

  path = tmp_path / "iql.json"
  out = iql_throughput.main(
    [
      "--seed_counts=1",
      "--hidden=8",
      "--steps=2",
      "--repeats=1",
      f"--out={path}",
    ]
  )
  assert json.loads(path.read_text()) == json.loads(json.dumps(out))
  got = [(r["method"], r["seeds"], r["axis"]) for r in out["rows"]]
  assert got == [("iql", 1, "vmap"), ("bc", 1, "vmap")]
  for r in out["rows"]:
    assert _positive(r["steps_per_s"]) and _positive(r["compile_s"])
    assert r["seed_steps_per_s"] == pytest.approx(r["steps_per_s"] * r["seeds"])
  assert out["erljax_over_reference"] is None
  with pytest.raises(ValueError, match="--methods: 'sac' is neither"):
    iql_throughput.main(["--methods=sac"])


# A stand-in for the IQL authors' checkout: 2022-era code that needs the
# shims (jax.tree_multimap, a static_argnames entry for an argument that is
# gone, FrozenDict init results).
_FAKE_REFERENCE = {
  "common.py": """
import collections
Batch = collections.namedtuple(
    'Batch', ['observations', 'actions', 'rewards', 'masks',
              'next_observations'])
""",
  "policy.py": """
import functools
import jax
@functools.partial(jax.jit, static_argnames=('distribution',))
def step(w, obs, act):
    return w + 1e-3 * obs.T @ act
""",
  "learner.py": """
import flax
import jax
import jax.numpy as jnp
import policy
class Actor:
    def __init__(self, params):
        self.params = params
class Learner:
    def __init__(self, seed, observations, actions, **kwargs):
        # Their MuJoCo settings, and init results as FrozenDicts.
        assert kwargs['expectile'] == 0.7 and kwargs['temperature'] == 3.0
        assert flax.config.flax_return_frozendict
        self.actor = Actor(
            jnp.zeros((observations.shape[-1], actions.shape[-1])))
        self.steps = 0
    def update(self, batch):
        assert batch.observations.shape[0] == batch.rewards.shape[0]
        self.actor = Actor(jax.tree_multimap(
            lambda w: policy.step(w, batch.observations, batch.actions),
            self.actor.params))
        self.steps += 1
        return {'w': jnp.sum(self.actor.params)}
""",
}


def test_iql_reference_is_timed_and_its_shims_undone(tmp_path):
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  from benchmarks import iql_throughput  # pylint: disable=g-import-not-at-top

  for name, text in _FAKE_REFERENCE.items():
    (tmp_path / name).write_text(text)
  jit, frozen = jax.jit, flax.config.flax_return_frozendict
  path = list(sys.path)
  row = iql_throughput.time_reference(str(tmp_path), [8], steps=3, repeats=2)
  assert row["method"] == "reference_iql" and row["seeds"] == 1
  assert _positive(row["steps_per_s"]) and _positive(row["compile_s"])
  assert jax.jit is jit and not hasattr(jax, "tree_multimap")
  assert flax.config.flax_return_frozendict == frozen
  assert sys.path == path
  assert not {"common", "learner", "policy"} & set(sys.modules)


def test_metaworld_envs_rows_peer_ratio_and_json(tmp_path):
  from benchmarks import metaworld_envs  # pylint: disable=g-import-not-at-top

  # A stand-in for an interpreter with metaworld installed: it prints the
  # peer's JSON line whatever it is asked.
  fake = tmp_path / "python"
  fake.write_text('#!/bin/sh\necho \'{"soccer": 200.0}\'\n')
  fake.chmod(0o755)
  path = tmp_path / "mw.json"
  out = metaworld_envs.main(
    [
      "--tasks=soccer",
      "--host_envs=2",
      "--mjx_envs=",
      "--steps=3",
      "--repeats=1",
      f"--metaworld_python={fake}",
      f"--out={path}",
    ]
  )
  assert json.loads(path.read_text()) == json.loads(json.dumps(out))
  assert out["peer"] == {"soccer": 200.0}
  (row,) = out["results"]
  assert (row["task"], row["backend"], row["num_envs"]) == ("soccer", "host", 2)
  assert _positive(row["steps_per_s"]) and _positive(row["compile_s"])
  assert row["vs_metaworld"] == pytest.approx(row["steps_per_s"] / 200.0)
  with pytest.raises(SystemExit):
    metaworld_envs.main(["--tasks=kick"])


def test_update_profile_times_and_profiles_both_updates(tmp_path):
  from benchmarks import update_profile  # pylint: disable=g-import-not-at-top

  path = tmp_path / "profile.json"
  out = update_profile.main(
    ["--hidden=8", "--batch=4", "--updates=3", "--rounds=2", f"--out={path}"]
  )
  assert json.loads(path.read_text()) == json.loads(json.dumps(out))
  res = out["results"]
  for name in ("erljax", "brax"):
    r = res[name]
    assert len(r["ms_per_update_rounds"]) == 2
    assert _positive(r["ms_per_update"]) and _positive(r["compile_s"])
    p = r["profile"]  # a CPU trace, summed per update
    assert _positive(p["wall_ms"]) and _positive(p["busy_ms"])
    assert 0 < p["dots_ms"] <= p["busy_ms"]
    assert p["concurrency"] == pytest.approx(p["busy_ms"] / p["wall_ms"])
  assert res["brax_over_erljax_time"] == pytest.approx(
    res["brax"]["ms_per_update"] / res["erljax"]["ms_per_update"]
  )
  assert "erljax speed / Brax speed" in update_profile.table(out)
  with pytest.raises(ValueError, match="--rounds must be >= 1, got 0"):
    update_profile.main(["--rounds=0"])


def test_roofline_counts_flops_and_shares_of_the_peak(tmp_path):
  from benchmarks import roofline  # pylint: disable=g-import-not-at-top

  path = tmp_path / "roofline.json"
  out = roofline.main(
    [
      "--peak_n=64",
      "--stream_mb=1",
      "--repeats=2",
      "--updates=2",
      "--rounds=2",
      "--settings=16,16:8",
      "--bf16",
      f"--out={path}",
    ]
  )
  assert json.loads(path.read_text()) == json.loads(json.dumps(out))
  res = out["results"]
  peak = res["peak_fp32"]["gflops"]
  assert _positive(peak) and _positive(res["peak_bf16"]["gflops"])
  assert _positive(res["bandwidth"]["gbs"])
  rows = res["updates"]
  assert [(r["impl"], r["bf16"]) for r in rows] == [
    ("erljax", False),
    ("erljax", True),
    ("brax", False),
    ("brax", True),
  ]
  for r in rows:
    # The shapes' count matches the compiled products within 1%, and XLA's
    # count (products and elementwise work) is at least that.
    assert r["flops_hlo_dots"] == pytest.approx(r["flops_counted"], rel=0.01)
    assert r["flops_xla"] >= 0.99 * r["flops_hlo_dots"]
    assert r["share_of_fp32_peak"] == pytest.approx(r["gflops"] / peak)
    assert r["gflops"] == pytest.approx(
      r["flops_counted"] / r["ms_per_update"] / 1e6
    )
    assert r["bound"] in ("compute", "memory", "overhead")
    if r["bf16"]:
      assert _positive(r["speedup_over_fp32"])
  assert "share of FP32 peak" in roofline.table(res)
  with pytest.raises(ValueError, match="--repeats must be >= 1, got 0"):
    roofline.main(["--repeats=0"])


@pytest.mark.slow  # ~1-2 min of compiling; tests/test_precision.py covers
# the precision scope itself in the default suite.
def test_matmul_precision_compares_fp32_and_bf16_programs(tmp_path):
  from benchmarks import matmul_precision  # pylint: disable=g-import-not-at-top

  path = tmp_path / "matmul_precision.json"
  out = matmul_precision.main(
    [
      "--probe_n=64",
      "--repeats=1",
      "--hidden=16",
      "--batch=8",
      "--updates=2",
      "--ratings=16",
      "--seeds=2",
      "--rounds=3",
      f"--out={path}",
    ]
  )
  assert json.loads(path.read_text()) == json.loads(json.dumps(out))
  res = out["results"]
  # XLA:CPU computes a product in bf16 only when its inputs are bf16 and
  # its result FP32; the precision settings leave FP32 products as they are.
  probe = res["probe"]
  assert probe["bf16 casts, FP32 result"]["dot_inputs"] == ["bf16 x bf16"]
  assert probe["bf16 casts, FP32 result"]["max_error"] > 1e-4
  for way in (
    "default_matmul_precision('bfloat16')",
    "bf16 casts, bf16 result",
  ):
    assert probe[way]["dot_inputs"] == ["f32 x f32"]
  for name in ("sac", "reward"):
    r = res[name]
    assert set(r["float32"]["dot_flops"]) == {"f32 x f32"}
    assert "bf16 x bf16" in r["bfloat16"]["dot_flops"]
    assert all(len(r[p]["seconds"]) == 3 for p in ("float32", "bfloat16"))
    lo, hi = r["speedup_iqr"]
    assert _positive(r["speedup_median"]) and lo <= r["speedup_median"] <= hi
    assert len(r["load_before"]) == 3
  assert "FP32 / bf16 median [IQR]" in matmul_precision.table(res)
  with pytest.raises(ValueError, match="--rounds must be >= 2, got 1"):
    matmul_precision.main(["--rounds=1"])


def test_roofline_flop_count_by_hand():
  from benchmarks import roofline  # pylint: disable=g-import-not-at-top

  # obs 1, act 1, one hidden layer of 2, batch 1: actor 1->2->2 (2 + 4
  # MACs), critics 2->2->1 (4 + 2 MACs). Critic step: 6 + 2*6 + 2*(2*6 +
  # 2) = 46; actor step: 2*6 + 4 + 2*(2*6) = 40; 2 FLOPs per MAC.
  assert roofline.update_flops(1, 1, (2,), 1) == 2 * (46 + 40)
  hlo = "\n".join(
    [
      "ENTRY %main {",
      "  %a = f32[8,3]{1,0} parameter(0)",
      "  %b = f32[3,5]{1,0} parameter(1)",
      "  ROOT %d = f32[8,5]{1,0} dot(%a, %b), lhs_contracting_dims={1},"
      " rhs_contracting_dims={0}",
      "}",
    ]
  )
  assert roofline.hlo_dot_flops(hlo) == 2 * 8 * 5 * 3


_ACCEL = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  "benchmarks",
  "accelerator",
)


def test_accelerator_wheels_are_packages_installed_here():
  """prepare.sh carries each listed package at the version installed here."""
  with open(os.path.join(_ACCEL, "wheels.txt")) as f:
    names = [n for n in (line.split("#")[0].strip() for line in f) if n]
  assert {"brax", "mujoco", "mujoco-mjx", "playground", "ml_collections"} <= (
    set(names)
  )
  for name in names:
    assert metadata.version(name)  # raises PackageNotFoundError if absent


def test_accelerator_script_names_an_unknown_section(tmp_path):
  res = subprocess.run(
    ["bash", os.path.join(_ACCEL, "run.sh"), "e2e", "bogus"],
    capture_output=True,
    text=True,
    env={**os.environ, "OUT": str(tmp_path)},
    check=False,
  )
  assert res.returncode == 2
  assert "unknown section 'bogus'" in res.stderr
  assert not list(tmp_path.iterdir())  # nothing ran, nothing installed


def test_startup_stamps_the_compiling_and_step_0_lines():
  """benchmarks.startup on a stand-in for the CLI: wall and CPU seconds to
  its "compiling" line and to its `step 0` evaluation line."""
  from benchmarks import startup

  code = (
    "import time\n"
    "print('memory: ...')\n"
    "print('compiling task (1 seed(s) x 8 envs, cpu) ...')\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.3: pass\n"
    "print('step         0  eval_return     4.349 (10 episodes)')\n"
    "print('step      5000  eval_return   122.457 (10 episodes)')\n"
  )
  rec = startup.timed_start([sys.executable, "-c", code], dict(os.environ), 60)
  assert rec["wall_to_compiling_s"] <= rec["wall_to_step0_s"]
  assert rec["cpu_to_step0_s"] - rec["cpu_to_compiling_s"] >= 0.25
  assert len(rec["lines"]) == 4
  with pytest.raises(RuntimeError, match="no line matches"):
    startup.timed_start([sys.executable, "-c", "print('compiling x')"], {}, 60)
  assert common.cpu_seconds(os.getpid()) > 0


def test_startup_passes_only_config_flags_on():
  from benchmarks import startup

  with pytest.raises(SystemExit):
    startup.main(["--warm=0", "--bogus=1"])
