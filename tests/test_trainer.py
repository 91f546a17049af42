"""A short run of the whole training loop (tiny nets, few steps)."""

import jax
import numpy as np
import pytest

from erljax.config import defaults as config_lib
from erljax.rewards import queries as feedback_lib
from erljax.runtime import memory
from erljax.online import runner
from erljax.online import trainer as trainer_lib

import point_env


def tiny_config(**overrides):
  """A run of a few chunks with tiny networks on the point task, which
  compiles in seconds: the loop's mechanics do not depend on the scene.
  Tests that need frames or poses pass task="CartpoleSwingup"."""
  c = config_lib.default()
  c.task = point_env.register()
  c.num_envs = 4
  c.num_seeds = 2
  c.episode_length = 20
  c.total_steps = 120
  c.seed_steps = 40
  c.log_every = 40
  c.eval_every = 40
  c.num_eval_envs = 2
  c.batch_size = 8
  c.updates_per_step = 2
  c.replay_capacity = 100
  c.sac.hidden_sizes = (16, 16)
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  # The one tiny run on a real scene (the loop with Brax's pipeline in it).
  c = tiny_config(
    task="CartpoleSwingup", workdir=str(tmp_path_factory.mktemp("run"))
  )
  lines = []
  res = runner.run(c, log=lines.append)
  return c, res, lines


def test_run_history_and_logs(result):
  c, res, lines = result
  steps = [r["env_steps"] for r in res.history]
  assert steps == [0, 40, 80, 120]
  for rec in res.history:
    assert len(rec["eval_return_per_seed"]) == 2
    assert np.isfinite(rec["eval_return"])
    assert 0.0 <= rec["eval_success"] <= 1.0
  assert any(ln.startswith("step") for ln in lines)
  with open(f"{c.workdir}/metrics.jsonl") as f:
    assert len(f.readlines()) == 4
  # The start-up memory line sizes the replay the run then holds.
  (mem,) = [ln for ln in lines if ln.startswith("memory: ")]
  replay = memory.human(memory.tree_bytes(res.state.buffer))
  assert mem.startswith(f"memory: replay {replay} + state ")


def test_run_state_counters(result):
  c, res, _ = result
  st = res.state
  np.testing.assert_array_equal(st.env_steps, [120, 120])
  # Replay is circular: 120 transitions into a buffer of 100.
  np.testing.assert_array_equal(st.buffer.size, [100, 100])
  # Updates only after the 40 seed steps: 80 / 4 envs * 2 updates each.
  np.testing.assert_array_equal(st.sac.steps, [40, 40])
  # The two seeds learned different parameters.
  leaf = jax.tree_util.tree_leaves(st.sac.actor_params)[0]
  assert not np.allclose(leaf[0], leaf[1])
  # Training metrics are finite and the stored discount marks no terminals
  # (cartpole only truncates).
  last = res.history[-1]
  for key in ("critic_loss", "actor_loss", "alpha", "q"):
    assert np.all(np.isfinite(last[f"{key}_per_seed"])), key
  np.testing.assert_array_equal(st.buffer.data.discount, 1.0)


def test_seed_phase_leaves_agent_untouched():
  c = tiny_config(total_steps=40, num_seeds=1)
  trainer = trainer_lib.Trainer.create(c)
  state = jax.jit(trainer.init)(jax.random.PRNGKey(0))
  new, _ = jax.jit(trainer.train_chunk)(state)
  assert int(new.sac.steps) == 0
  assert int(new.buffer.size) == 40
  for a, b in zip(
    jax.tree_util.tree_leaves(new.sac.actor_params),
    jax.tree_util.tree_leaves(state.sac.actor_params),
  ):
    np.testing.assert_array_equal(a, b)
  # Stored rewards are the env rewards (reward source "env", scale 1).
  np.testing.assert_array_equal(
    new.buffer.data.reward, new.buffer.data.true_reward
  )


def learned_config(total_steps, num_seeds, task=None, **feedback):
  """tiny_config with a learned reward: sessions at 80, 120, 160, ...;
  task: tiny_config's unless given."""
  c = tiny_config(total_steps=total_steps, num_seeds=num_seeds)
  if task is not None:
    c.task = task
  c.reward.source = "learned"
  c.reward.hidden_sizes = (16, 16)
  c.reward.batch_size = 8
  c.feedback.first_session = 80
  c.feedback.interval = 40
  for k, v in feedback.items():
    c.feedback[k] = v
  return c


def test_learned_reward_run_with_feedback_sessions():
  """ERL-VLM loop end to end: pre-training, 3 sessions, budget respected."""
  c = learned_config(200, 2, queries=10, budget=25, warmup_updates=5)
  c.rater.noise = 0.2
  res = runner.run(c, log=lambda _: None)
  fb = res.feedback
  assert [f["env_steps"] for f in fb] == [80, 120, 160]
  # The last session is shrunk to fit the budget of 25 queries.
  assert [f["queries_sent"] for f in fb] == [10, 20, 25]
  assert fb[-1]["ratings_stored"] == [25, 25]
  assert fb[-1]["dropped"] == [0, 0]
  for f in fb:
    assert all(1 <= e <= c.reward.max_epochs for e in f["epochs"])
    assert all(np.isfinite(f["reward_corr"]))
    # The point task is rated on its reward: the two correlations agree.
    np.testing.assert_allclose(f["signal_corr"], f["reward_corr"], atol=1e-5)
    assert sum(f["label_histogram"][0]) == f["ratings_stored"][0]
  st = res.state
  # Buffer rewards are the learned reward (relabelled), not the env reward.
  filled = int(st.buffer.size[0])
  assert not np.allclose(
    st.buffer.data.reward[0, :filled], st.buffer.data.true_reward[0, :filled]
  )
  # Reward parameters stay finite through training.
  for leaf in jax.tree_util.tree_leaves(st.reward_params):
    assert np.all(np.isfinite(leaf))
  for rec in res.history:
    assert np.isfinite(rec["eval_return"])


def test_no_session_at_the_end_and_none_before_the_first_reward():
  """Sessions are due at 40 (right after the seed phase: no pre-training,
  so the agent never trains on an untrained reward) and 80; none at 120,
  the end of training, whose labels would reach no policy."""
  c = learned_config(
    120, 1, queries=6, warmup_updates=2, unsupervised=False, first_session=None
  )
  assert c.seed_steps == 40
  res = runner.run(c, log=lambda _: None)
  assert [f["env_steps"] for f in res.feedback] == [40, 80]
  assert res.feedback[-1]["ratings_stored"] == [12]
  assert res.history[-1]["env_steps"] == 120


@pytest.mark.parametrize("frames", ["raycast", "opengl"])
def test_image_reward_model_run(frames):
  """ERL-VLM's CNN in the loop: it reads frames of each transition's pose
  (ray-cast in JAX, or drawn by OpenGL on the host), trains on the rated
  queries' frames, and relabels the buffer."""
  c = learned_config(
    120, 1, task="CartpoleSwingup", queries=16, warmup_updates=2
  )
  c.reward.model = "cnn"
  c.reward.frames = frames
  c.reward.frame_size = 48
  c.reward.ensemble_size = 2
  c.reward.max_epochs = 2
  trainer = trainer_lib.Trainer.create(c)
  res = runner.run(c, log=lambda _: None, trainer=trainer)
  fb = res.feedback
  assert [f["ratings_stored"] for f in fb] == [[16]]  # none at the end
  seed = jax.tree_util.tree_map(lambda a: a[0], res.state)
  filled = int(seed.buffer.size)
  data = jax.tree_util.tree_map(lambda a: a[:filled], seed.buffer.data)
  # The buffer holds the installed CNN's reward of each pose's frame.
  want = trainer.reward.model.reward(
    seed.reward_params, trainer.reward.drawer(data.pose)
  )
  np.testing.assert_allclose(data.reward, want, rtol=1e-4, atol=1e-5)
  assert np.std(np.asarray(data.reward)) > 1e-4
  assert all(np.isfinite(f["reward_corr"]).all() for f in fb)


def test_preference_feedback_run():
  """The RL-VLM-F baseline path: pairs, Bradley-Terry, ties dropped; the
  pairs are picked by ensemble disagreement (RbRL's sampling)."""
  c = learned_config(160, 1, queries=12, warmup_updates=2)
  c.feedback.sampling = "disagreement"
  c.feedback.candidates = 4
  c.reward.feedback_type = "preference"
  c.reward.class_weighted = False
  c.reward.stratified = False
  res = runner.run(c, log=lambda _: None)
  fb = res.feedback
  assert [f["queries_sent"] for f in fb] == [12, 24]
  # Answered + dropped (ties) account for every query sent.
  assert sum(f["answered"][0] + f["dropped"][0] for f in fb) == 24
  assert fb[-1]["ratings_stored"][0] == sum(f["answered"][0] for f in fb)
  assert fb[-1]["label_accuracy"] == [1.0]  # noise-free preferences
  assert np.all(np.isfinite(res.history[-1]["eval_return_per_seed"]))


def test_segment_feedback_run():
  """RbRL's setting: rated segments of H = 5 steps. Noise-free segment
  returns binned over 5 x the range give exactly the stored labels, and the
  queries drawn from the real envs' buffer are 5 consecutive steps of one
  env, never across an auto-reset."""
  c = learned_config(160, 1, queries=12, warmup_updates=2, segment_length=5)
  trainer = trainer_lib.Trainer.create(c)
  res = runner.run(c, log=lambda _: None, trainer=trainer)
  fb = res.feedback
  assert [f["queries_sent"] for f in fb] == [12, 24]
  assert fb[-1]["ratings_stored"] == [24]
  assert all(f["label_accuracy"] == [1.0] for f in fb)
  assert all(np.isfinite(f["reward_corr"]).all() for f in fb)
  seed = jax.tree_util.tree_map(lambda a: a[0], res.state)
  env = trainer.env
  q = feedback_lib.sample_queries(
    seed.buffer,
    jax.random.PRNGKey(0),
    400,
    window=1000,
    segment_length=5,
    num_envs=env.num_envs,
    episode_step=seed.env.t,
    episode_length=env.episode_length,
  )
  assert q.obs.shape == (400, 1, 5, env.observation_size)
  # Each step starts where the one before ended: no reset inside a segment.
  np.testing.assert_array_equal(q.obs[:, :, 1:], q.next_obs[:, :, :-1])
