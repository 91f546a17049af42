"""Loading a trained policy (erljax.online.policy) and evaluating it
(erljax.evaluate).

One tiny 2-seed SAC run on the point task, checkpointed at 20 and 40 env
steps, is shared by every test.
"""

import json
import os
import sys
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import point_env  # pylint: disable=wrong-import-position

from erljax.config import defaults as config_lib  # pylint: disable=wrong-import-position
from erljax import evaluate  # pylint: disable=wrong-import-position
from erljax.agents import networks  # pylint: disable=wrong-import-position
from erljax.online import policy as policy_lib  # pylint: disable=wrong-import-position
from erljax.vision import render as render_lib  # pylint: disable=wrong-import-position
from erljax.online import runner  # pylint: disable=wrong-import-position

OBS = np.array([[0.5, -0.3], [-0.9, 0.2], [0.0, 0.7]], np.float32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, final actor params [S, ...]) of a 2-seed run of 40 steps."""
  workdir = tmp_path_factory.mktemp("sac")
  c = config_lib.default()
  c.task = point_env.register()
  c.num_seeds, c.seed = 2, 3
  c.num_envs, c.total_steps, c.seed_steps = 2, 40, 20
  c.log_every = c.eval_every = c.checkpoint.every = 20
  c.batch_size, c.sac.hidden_sizes, c.num_eval_envs = 8, (8,), 1
  c.replay_capacity, c.workdir = 64, str(workdir)
  c.tensorboard = c.progress = False
  result = runner.run(c, log=lambda _: None)
  return str(workdir), result.state.sac.actor_params


def _listing(directory):
  """{relative path: (size, mtime_ns)} of every file and directory."""
  out = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs + files:
      path = os.path.join(root, name)
      st = os.stat(path)
      out[os.path.relpath(path, directory)] = (st.st_size, st.st_mtime_ns)
  return out


def _evaluate(capsys, *args):
  """Runs the command in-process; returns (stdout, stderr)."""
  fv = flags.FlagValues()
  evaluate.define_flags(fv)
  fv(["evaluate", *args])
  evaluate.main(["evaluate"], fv)
  return capsys.readouterr()


def test_deterministic_action_is_the_actor_on_the_checkpoint(run):
  workdir, final = run
  policy = policy_lib.load(workdir, seed=1)
  assert (policy.step, policy.task, policy.num_seeds) == (40, point_env.NAME, 2)
  # The last checkpoint holds the run's final actors, every seed.
  for got, want in zip(
    jax.tree_util.tree_leaves(policy.params), jax.tree_util.tree_leaves(final)
  ):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # By hand: the config's actor network on seed 1's parameters.
  params = jax.tree_util.tree_map(lambda x: x[1], final)
  mean, _ = networks.Actor(2, (8,)).apply(params, OBS)
  np.testing.assert_allclose(policy.act(OBS), np.tanh(mean), atol=1e-6)
  assert policy.act(OBS[0]).shape == (2,)
  np.testing.assert_allclose(policy.act(OBS[0]), np.tanh(mean[0]), atol=1e-6)
  np.testing.assert_allclose(jax.jit(policy.act)(OBS), np.tanh(mean), atol=1e-6)


def test_sampled_actions_and_all_seeds(run):
  policy = policy_lib.load(run[0])
  key = jax.random.PRNGKey(0)
  sample = jax.jit(policy.act)(OBS, key)
  assert sample.shape == (3, 2) and np.all(np.abs(sample) < 1.0)
  np.testing.assert_array_equal(sample, jax.jit(policy.act)(OBS, key))
  assert not np.allclose(sample, policy.act(OBS))
  every = jax.vmap(policy.apply, in_axes=(0, None))(policy.params, OBS)
  assert every.shape == (2, 3, 2)
  for k in range(2):
    np.testing.assert_allclose(
      every[k], policy.with_seed(k).act(OBS), atol=1e-6
    )
  with pytest.raises(ValueError, match="obs of shape \\(3, 5\\)"):
    policy.act(jnp.zeros((3, 5)))


def test_steps_seeds_and_bad_workdirs(run, tmp_path):
  workdir, _ = run
  assert policy_lib.checkpoint_steps(workdir) == [20, 40]
  earlier = policy_lib.load(workdir, step=20)
  assert earlier.step == 20
  latest = policy_lib.load(workdir)
  assert not np.allclose(earlier.act(OBS), latest.act(OBS))
  # at_step: the other checkpoint's actors on the same trainer, equal to a
  # fresh load of that step.
  moved = latest.with_seed(1).at_step(20)
  assert (
    moved.step == 20 and moved.seed == 1 and moved.trainer is latest.trainer
  )
  np.testing.assert_array_equal(
    moved.act(OBS), policy_lib.load(workdir, step=20, seed=1).act(OBS)
  )
  with pytest.raises(
    ValueError, match=r"step=30: .*available steps: \[20, 40\]"
  ):
    latest.at_step(30)
  with pytest.raises(
    ValueError,
    match=r"step=30: .*available steps: "
    r"\[20, 40\]",
  ):
    policy_lib.load(workdir, step=30)
  with pytest.raises(ValueError, match="seed=2: .* has 2 seeds"):
    policy_lib.load(workdir, seed=2)
  missing = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match=f"{missing}: no such directory"):
    policy_lib.load(missing)
  with pytest.raises(FileNotFoundError, match="config.json: no such file"):
    policy_lib.load(str(tmp_path))
  (tmp_path / "config.json").write_text(
    json.dumps({"task": "reacher", "sac": {}, "iql": {}, "method": "bc"})
  )
  with pytest.raises(ValueError, match="erljax.offline run"):
    policy_lib.load(str(tmp_path))
  (tmp_path / "config.json").write_text(
    json.dumps({"task": "reacher", "sac": {}})
  )
  with pytest.raises(FileNotFoundError, match="checkpoints: no such dir"):
    policy_lib.load(str(tmp_path))


def test_evaluate_prints_and_writes_the_figures(
  run, tmp_path, capsys, monkeypatch
):
  workdir, _ = run
  before = _listing(workdir)

  class FakeRenderer:  # the point task has no MuJoCo model to draw
    def __init__(self, task, height, width):
      self.shape = (height, width, 3)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      pass

    def render(self, poses):  # distinct frames (a GIF merges equal ones)
      shade = np.arange(len(poses), dtype=np.uint8) * 20
      return np.broadcast_to(
        shade[:, None, None, None], (len(poses),) + self.shape
      ).copy()

  monkeypatch.setattr(render_lib, "FrameRenderer", FakeRenderer)
  out = tmp_path / "eval" / "figures.json"
  gif = tmp_path / "one.gif"
  stdout, _ = _evaluate(
    capsys,
    f"--workdir={workdir}",
    "--episodes=3",
    "--seed_index=1",
    "--step=20",
    f"--out={out}",
    f"--video={gif}",
  )
  assert "checkpoint step 20, seed index 1 of 2 (PRNG seed 4)" in stdout
  assert "3 deterministic episodes of 10 steps" in stdout
  assert "return" in stdout and "success" in stdout
  assert stdout.count("95% CI [") == 2
  figures = json.loads(out.read_text())
  assert (figures["episodes"], figures["step"], figures["seed_index"]) == (
    3,
    20,
    1,
  )
  assert len(figures["episode_returns"]) == 3
  assert figures["return"]["mean"] == pytest.approx(
    np.mean(figures["episode_returns"])
  )
  lo, hi = figures["return"]["ci95"]
  assert lo <= figures["return"]["mean"] <= hi
  assert 0.0 <= figures["success"]["rate"] <= 1.0
  with Image.open(gif) as im:
    assert im.n_frames == 10
  # Loading and evaluating changed nothing in the run's directory.
  assert _listing(workdir) == before


def test_evaluate_takes_the_run_seed_after_config_seed(run, capsys):
  """The run trained with config.seed=3 (PRNG seeds 3 and 4): the old
  --seed=3, out of range as a seed index, names the run's seed 3 (index
  0), with a deprecation warning; --seed=1 keeps its old meaning, index 1.
  """
  workdir = run[0]
  with pytest.warns(FutureWarning, match=r"--seed_index=0 \(PRNG seed 3\)"):
    stdout, _ = _evaluate(capsys, f"--workdir={workdir}", "--seed=3")
  assert "seed index 0 of 2 (PRNG seed 3)" in stdout
  with pytest.warns(FutureWarning, match="--seed is deprecated"):
    stdout, _ = _evaluate(capsys, f"--workdir={workdir}", "--seed=1")
  assert "seed index 1 of 2 (PRNG seed 4)" in stdout
  stdout, _ = _evaluate(capsys, f"--workdir={workdir}", "--seed_index=1")
  assert "seed index 1 of 2 (PRNG seed 4)" in stdout


@pytest.mark.parametrize(
  "value, first, count, want",
  [(3, 3, 1, 0), (4, 3, 2, 1), (1, 3, 2, 1), (2, 0, 4, 2)],
)
def test_legacy_seed_index(value, first, count, want):
  assert evaluate.legacy_seed_index(value, first, count) == want


def test_legacy_seed_index_errors_name_the_choices():
  with pytest.raises(ValueError, match="--seed=2 is ambiguous.*--seed_index=2"):
    evaluate.legacy_seed_index(2, 1, 3)
  with pytest.raises(ValueError, match=r"PRNG seeds 3\.\.4"):
    evaluate.legacy_seed_index(9, 3, 2)


def test_evaluate_plays_the_runs_own_evaluation(run):
  # The command and a run's eval records come from the same evaluator: with
  # the same key and actor they play the same episode.
  policy = policy_lib.load(run[0], seed=1)
  key = jax.random.PRNGKey(7)
  got = evaluate.play(policy, 1, key)
  state = types.SimpleNamespace(
    sac=types.SimpleNamespace(actor_params=policy.seed_params)
  )
  want = policy.trainer.evaluate(state, key)
  np.testing.assert_allclose(
    got["return"], want["eval_return_episodes"], rtol=1e-6
  )
  np.testing.assert_array_equal(got["success"], want["eval_success_episodes"])


@pytest.mark.parametrize(
  "args, message",
  [
    (["--episodes=0"], "--episodes=0: must be >= 1"),
    (["--step=30"], "available steps: [20, 40]"),
    (["--video=x.mp4"], "--video=x.mp4: must name a .gif file"),
    (["--seed_index=2"], "the run in"),
    (["--seed=1", "--seed_index=1"], "give only --seed_index"),
  ],
)
def test_evaluate_rejects_bad_flags(run, capsys, args, message):
  with pytest.raises(SystemExit) as e:
    _evaluate(capsys, f"--workdir={run[0]}", *args)
  assert e.value.code == 2
  assert message in capsys.readouterr().err
