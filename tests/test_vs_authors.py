"""benchmarks.vs_authors on a tiny fake checkout of the authors' code.

The fake is a git repository with the names their_loop.py reaches (their
Workspace with its env, agent, reward model and replay buffer, and the
loop's three phases), and stand-ins for hydra and torch, so the whole
harness runs here in seconds with this interpreter as "their python"."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks.vs_authors import run as vs

_FAKE = {
  "hydra/__init__.py": """
import contextlib, types
@contextlib.contextmanager
def initialize_config_dir(config_dir, version_base=None):
    yield
def compose(name, overrides):
    assert name == 'train_PEBBLE_VLM.yaml'
    cfg = types.SimpleNamespace(agent=types.SimpleNamespace(batch_size=8))
    for o in overrides:
        k, v = o.split('=', 1)
        setattr(cfg, k, int(v) if v.isdigit() else v)
    return cfg
""",
  "torch/__init__.py": """
import types
cuda = types.SimpleNamespace(is_available=lambda: False)
_threads = [4]
def get_num_threads():
    return _threads[0]
def set_num_threads(n):
    _threads[0] = n
def randn(*shape):
    return shape
""",
  "agent/__init__.py": "",
  "agent/sac.py": """
def compute_state_entropy(obs, full_obs, k):
    assert k == 5 and obs[0] == 8
    return sum(range(100 * full_obs[0]))
""",
  "replay_buffer.py": """
class ReplayBuffer:
    def __init__(self, obs_shape, action_shape, capacity, device, **kw):
        self.capacity, self.idx = capacity, 0
    def __len__(self):
        return self.idx
    def add(self, *args, **kwargs):
        self.idx += 1
    def relabel_with_predictor(self, model):
        sum(range(3000 * self.idx))
""",
  "reward_model_vlm_rating.py": """
device = 'cuda'
class RewardModel:
    capacity, buffer_full, buffer_index, mb_size = 10000, False, 0, 50
    def r_hat(self, x):
        assert device == 'cpu'
        return sum(range(3000))
    def add_data(self, *args, **kwargs):
        pass
    def get_queries(self, mb_size=100):  # their bug: see state_queries
        sa_t_1, r_t_1 = 'sa', 'r'
        if self.image_reward:
            extra_t_1 = 'extra'
        return sa_t_1, r_t_1, 'img', extra_t_1
    def r_hat_member(self, x, member=-1):
        return x
class Rows:  # [n, segment, obs + act]
    ndim = 3
    def __getitem__(self, index):
        assert index == (slice(None), -1)
        return 'last step'
""",
  "train_PEBBLE_VLM.py": """
import google.generativeai as genai  # stubbed by their_loop
import replay_buffer, reward_model_vlm_rating
class Env:
    _max_episode_steps = 50
    def step(self, action):
        sum(range(2000))
        return 0, 1.0, False, {}
    def render(self):
        return sum(range(1000))
class Agent:
    def act(self, obs, sample=False):
        return 0
    def update(self, *args):
        sum(range(5000))
    def update_after_reset(self, *args, **kwargs):
        sum(range(100000))
    def update_state_ent(self, rb, *args, **kwargs):
        sum(range(5000 + 3000 * len(rb)))
class Workspace:
    def __init__(self, cfg):
        self.cfg, self.step = cfg, 0
        assert cfg.vlm_feedback == 'False'
        assert cfg.env.endswith('drawer-open-v2')
        self.env, self.agent = Env(), Agent()
        self.reward_model = reward_model_vlm_rating.RewardModel()
        self.reward_model.image_reward = cfg.image_reward == 'True'
        self.replay_buffer = replay_buffer.ReplayBuffer(
            (39,), (4,), 200000, 'cpu')
        assert self.replay_buffer.capacity == cfg.num_train_steps
    def evaluate(self):
        pass
    def learn_reward(self):
        m = self.reward_model
        image = m.image_reward
        assert m.get_queries()[:3] == ('sa', 'r', 'img' if image else None)
        rows = reward_model_vlm_rating.Rows()
        assert m.r_hat_member(rows, member=1) is rows if image else (
            m.r_hat_member(rows, member=1) == 'last step')
        self.reward_model.buffer_index += 50
        sum(range(100 * self.reward_model.buffer_index))
    def run(self):
        c = self.cfg
        start = c.num_seed_steps + c.num_unsup_steps
        while self.step < c.num_train_steps:
            action = self.agent.act(None)
            due = (self.step - start) % c.num_interact == 0
            if self.step >= start and due:
                self.learn_reward()
                self.replay_buffer.relabel_with_predictor(self.reward_model)
                if self.step == start:
                    self.agent.update_after_reset()
            if self.step >= start:
                self.agent.update(self.replay_buffer)
            elif self.step > c.num_seed_steps:
                self.agent.update_state_ent(self.replay_buffer)
            self.env.step(action)
            self.env.render()
            self.reward_model.r_hat(None)
            self.reward_model.add_data()
            self.replay_buffer.add()
            self.step += 1
""",
  "config/train_PEBBLE_VLM.yaml": "env: dog_stand\n",
}


def _git(path, *args):
  return subprocess.run(
    ["git", "-C", str(path), *args],
    capture_output=True,
    text=True,
    check=True,
    env={
      **os.environ,
      "GIT_AUTHOR_NAME": "t",
      "GIT_AUTHOR_EMAIL": "t@t",
      "GIT_COMMITTER_NAME": "t",
      "GIT_COMMITTER_EMAIL": "t@t",
    },
  ).stdout.strip()


@pytest.fixture(name="checkout")
def _checkout(tmp_path):
  root = tmp_path / "erlvlm"
  for name, text in _FAKE.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  _git(tmp_path, "init", "-q", str(root))
  _git(root, "add", ".")
  _git(root, "commit", "-q", "-m", "fake")
  return root, _git(root, "rev-parse", "HEAD")


def test_checkout_must_be_at_the_pinned_commit(checkout, tmp_path):
  root, commit = checkout
  assert vs.check_checkout(str(root), commit) == commit
  with pytest.raises(vs.CheckoutError, match=f"not the pinned {vs.PIN}"):
    vs.check_checkout(str(root))
  with pytest.raises(vs.CheckoutError, match="has no train_PEBBLE_VLM.py"):
    vs.check_checkout(str(tmp_path))


def test_their_loop_is_timed_by_phase_and_estimated(checkout, tmp_path):
  root, commit = checkout
  out = vs.main(
    [
      f"--checkout={root}",
      f"--their_python={sys.executable}",
      f"--pin={commit}",
      "--sides=theirs",
      "--rewards=cnn,mlp",
      "--seeds=0,1",
      "--steps=120",
      "--seed_steps=20",
      "--unsup_steps=20",
      "--interval=20",
      "--report_every=20",
      f"--out={tmp_path / 'vs.json'}",
    ]
  )
  assert out["their_commit"] == commit and (tmp_path / "vs.json").exists()
  assert [(r["reward"], r["seed"]) for r in out["runs"]] == [
    ("cnn", 0),
    ("cnn", 1),
    ("mlp", 0),
    ("mlp", 1),
  ]
  run = out["runs"][0]
  prof = run["profile"]
  assert prof["phase_steps"] == {"seed": 20, "unsup": 20, "rl": 80}
  assert prof["device"] == "cpu" and prof["torch_threads"] == 1
  # Each piece in its phase; nested calls (act inside evaluate) once.
  assert prof["calls"]["seed/physics"] == 20
  assert prof["calls"]["unsup/unsup_update"] == 19  # from step 21
  assert prof["calls"]["rl/update"] == 80
  assert prof["calls"]["rl/session"] == 4  # steps 40, 60, 80, 100
  assert prof["calls"]["rl/reset_update"] == 1  # once, apart from update
  assert prof["calls"]["rl/store"] == 160  # add_data and the buffer's add
  sizes = [n for n, _ in prof["events"]["relabel"]]
  assert sizes == [40, 60, 80, 100]
  assert [n for n, _ in prof["events"]["session"]] == [50, 100, 150, 200]
  assert run["reports"][-1][2] == 120 and len(run["reports"]) == 6
  assert run["steady_cpu_s_per_env_step"] >= 0  # /proc counts 10 ms ticks
  est = run["estimate_100k_s"]
  assert est["total"] == pytest.approx(
    sum(v for k, v in est.items() if k != "total")
  )
  assert est["unsup"] > 0 and est["relabel"] > 0 and est["evaluation"] > 0
  assert [n for n, _ in prof["events"]["knn_probe"]] == [1000, 5000, 10000]
  assert set(run["cpu_ms_per_step"]) == {"seed", "unsup", "rl"}
  s = out["summary"]["cnn"]["theirs"]
  assert len(s["env_steps_per_s"]) == 2 and s["estimate_100k_s"] > 0


def test_estimate_scales_with_the_buffer():
  prof = {
    "phase_steps": {"seed": 10, "unsup": 10, "rl": 10},
    "cpu_seconds": {"seed/physics": 1.0, "rl/physics": 2.0, "rl/act": 1.0},
    "events": {
      "unsup_update": [(100, 1.0), (200, 2.0)],  # 0.01 s per row
      "relabel": [(100, 0.5), (200, 1.0)],
    },
  }
  est = vs.estimate_theirs(prof)
  assert est["seed"] == pytest.approx(1000 * 0.1)
  # sum over buffer sizes 1000..9999 of 0.01 s per row
  assert est["unsup"] == pytest.approx(0.01 * sum(range(1000, 10000)))
  # With their k-NN probed at large buffers: the short run's unsup steps
  # (1.5 s each, at 150 rows) plus the probe's slope times the extra rows.
  prof["cpu_seconds"]["unsup/unsup_update"] = 15.0
  prof["events"]["knn_probe"] = [(1000, 0.1), (10000, 1.0)]  # 1e-4 s / row
  est = vs.estimate_theirs(prof)
  assert est["unsup"] == pytest.approx(9000 * (1.5 + 1e-4 * (5499.5 - 150)))
  assert est["rl"] == pytest.approx(90_000 * 0.3)
  at = range(10_000, 100_000, 5_000)  # 18 sessions
  assert est["relabel"] == pytest.approx(0.005 * sum(at))
  assert est["evaluation"] == pytest.approx(10 * 10 * 500 * 0.3)


def test_relabelling_is_priced_in_whole_chunks():
  assert vs._relabelled(0, 500) == 0
  assert vs._relabelled(200, 500) == 500  # one chunk, moved back
  assert vs._relabelled(1000, 500) == 1000
  assert vs._relabelled(1001, 500) == 1500


def test_erljax_estimate_prices_each_phase():
  """estimate_erljax: the profile's pieces per phase; each session's CPU
  is its span less 50 chunk steps and one relabelled chunk, here 1 s +
  0.01 s per stored rating, which the fit recovers."""
  per_step = {
    "chunk": 0.1,
    "unsup_knn": 0.05,
    "update": 0.02,
    "relabel_per_item": 0.001,
    "evaluation_per_step": 0.002,
  }
  profile = {
    "per_env_step": {k: {"cpu_s": v} for k, v in per_step.items()},
    "warmup_updates": 100,
    "relabel_chunk": 500,
  }
  lines, cpu = [[0.0, 10.0, 200, 50]], 10.0
  for step, sent in ((250, 100), (300, 150), (350, 200)):
    cpu += 50 * 0.1 + 500 * 0.001 + 1.0 + 0.01 * sent
    lines.append([0.0, cpu, step, sent])
  fit = vs.erljax_sessions(lines, profile["per_env_step"], 500)
  assert [n for n, _ in fit] == [100, 150, 200]
  assert [t for _, t in fit] == pytest.approx([2.0, 2.5, 3.0])
  # A replay smaller than a chunk is relabelled in one call of its size:
  # a 400-row buffer costs 400 items, not 500 (0.1 s more per session).
  small = vs.estimate_erljax(profile, lines, capacity=400)
  big = vs.estimate_erljax(profile, lines, capacity=600)
  assert small["sessions"] == pytest.approx(big["sessions"] + 18 * 0.1)
  est = vs.estimate_erljax(profile, lines, capacity=600)
  assert est["seed"] == pytest.approx(1000 * 0.1)
  assert est["unsup"] == pytest.approx(9000 * 0.15)
  assert est["rl"] == pytest.approx(90_000 * 0.1)
  assert est["reset_update"] == pytest.approx(100 * 0.02)
  # 18 sessions (steps 10k..95k), 50 more ratings each.
  assert est["sessions"] == pytest.approx(
    sum(1.0 + 0.01 * 50 * k for k in range(1, 19))
  )
  assert est["relabel"] == pytest.approx(
    0.001 * sum(range(10_000, 100_000, 5_000))
  )
  # Evaluations at 0, 10k, ..., 100k: 10 episodes of 500 steps each.
  assert est["evaluation"] == pytest.approx(11 * 10 * 500 * 0.002)
  assert est["total"] == pytest.approx(
    sum(v for k, v in est.items() if k != "total")
  )


def test_summary_prices_the_study_one_seed_per_run_on_both_sides():
  def run(side, seed, total):
    return {
      "side": side, "reward": "cnn", "task": "drawer-open", "seed": seed,
      "num_seeds": 1, "steady_env_steps_per_s": 1.0,
      "steady_cpu_s_per_env_step": 0.5, "compile_s": None,
      "estimate_100k_s": {"total": total},
    }  # fmt: skip

  runs = [run("theirs", 0, 300.0), run("theirs", 1, 500.0)]
  runs += [run("erljax", 0, 100.0), run("erljax", 1, 300.0)]
  row = vs.summarize({"runs": runs}, study_seeds=0)["cnn"]
  e = row["erljax:drawer-open"]
  assert row["theirs"]["estimate_100k_s"] == 400.0
  assert e["estimate_100k_s"] == 200.0
  assert e["study_cpu_s_5x3_seeds_in_turn"] == 15 * 200.0
  assert e["study_ratio_seeds_in_turn_theirs_over_erljax"] == 2.0


def test_erljax_command_names_keys_of_its_config():
  from erljax.configs import rating  # pylint: disable=g-import-not-at-top

  cfg = rating.get_config("drawer-open,erlvlm,paper")
  ns = type("A", (), {})()
  ns.steps, ns.seed_steps, ns.unsup_steps = 400, 100, 100
  ns.interval, ns.report_every, ns.frames = 100, 50, "opengl"
  assert "--config.reward.frames=opengl" in vs.erljax_command(
    ns, "cnn", 3, 5, "drawer-open"
  )
  cmd = vs.erljax_command(ns, "mlp", 3, 5, "drawer-open-mjx")
  assert "--config=erljax:rating.py:drawer-open-mjx,erlvlm,paper" in cmd
  for flag in cmd[4:]:
    key = flag[len("--config.") :].split("=")[0]
    node = cfg
    for part in key.split("."):
      assert part in node, key
      node = node[part]
  assert "--config.num_seeds=5" in cmd and "--config.updates_per_step=1" in cmd
  # The paper schedule's sizes are theirs: batch 512, 3x256, replay 200k.
  assert cfg.batch_size == 512 and tuple(cfg.sac.hidden_sizes) == (256,) * 3


def test_bad_flags_are_named(tmp_path):
  with pytest.raises(ValueError, match="--rewards: 'resnet'"):
    vs.main(["--rewards=resnet", "--sides=erljax"])
  with pytest.raises(ValueError, match="--steps=150 leaves no feedback"):
    vs.main(["--steps=150", "--sides=erljax"])
  with pytest.raises(ValueError, match="--their_python"):
    vs.main([f"--checkout={tmp_path}", "--their_python="])


def test_two_reports_time_from_the_first():
  """erljax reports at its evaluations: step 0 (after compiling) and the
  end; the steady span then starts at the first."""
  code = "import time; print('step 0 eval'); time.sleep(0.2); print('step 40')"
  rec = vs.timed_run([sys.executable, "-c", code], timeout=60)
  assert rec["steady_env_steps"] == 40 and len(rec["reports"]) == 2
  assert 40 / rec["steady_env_steps_per_s"] >= 0.2
  with pytest.raises(RuntimeError, match="after 1 reports"):
    vs.timed_run([sys.executable, "-c", "print('step 0')"], timeout=60)


@pytest.mark.slow  # ~30 s: compiles nine programs at the paper's sizes
def test_erljax_profile_times_every_piece_of_the_step(tmp_path):
  """benchmarks.vs_authors.erljax_profile at a few steps: every piece of
  the 1-env step and the whole chunk get a wall and a CPU time per step."""
  from benchmarks.vs_authors import erljax_profile

  out = tmp_path / "profile.json"
  res = erljax_profile.main(
    ["--rewards=mlp", "--length=4", "--repeats=1", f"--out={out}"]
  )
  rows = res["rows"][0]["per_env_step"]
  assert set(rows) == {
    "physics", "act", "reward", "store", "update", "unsup_knn",
    "relabel_per_item", "evaluation_per_step", "chunk",
  }  # fmt: skip
  for name, row in rows.items():
    assert row["wall_s"] > 0 and row["cpu_s"] >= 0, name
  assert res["rows"][0]["warmup_updates"] == 100
  assert res["rows"][0]["relabel_chunk"] == 500
  assert json.loads(out.read_text())["rows"][0]["reward"] == "mlp"


def test_steady_span_can_start_after_the_first_sessions():
  """Feedback lines are reports too; --steady_from=250 starts the span at
  the first report at or after step 250, past the first session's
  compile."""
  code = (
    "import time\n"
    "print('step 0 eval')\n"
    "print('feedback   1 at step 200: sent 50')\n"
    "time.sleep(0.3)\n"
    "print('feedback   2 at step 250: sent 50')\n"
    "time.sleep(0.1)\n"
    "print('step 300 eval')\n"
  )
  cmd = [sys.executable, "-c", code]
  rec = vs.timed_run(cmd, timeout=60, steady_from=250)
  assert [r[2] for r in rec["reports"]] == [0, 200, 250, 300]
  # Feedback lines are also kept as sessions: env step and queries sent.
  assert [r[2:] for r in rec["sessions"]] == [[200, 50], [250, 50]]
  assert rec["steady_env_steps"] == 50
  assert 50 / rec["steady_env_steps_per_s"] < 0.3  # the 0.3 s left out
  with pytest.raises(RuntimeError, match="--steady_from=300: no report span"):
    vs.timed_run(cmd, timeout=60, steady_from=300)
