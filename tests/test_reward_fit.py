"""experiments/reward_fit: the label reader on a tiny rated run's checkpoint,
the authors' launcher's .npz contract (with a numpy stand-in for their
module, so no torch), and the comparison end to end on the tiny run."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

from erljax.config import defaults as config_lib
from erljax.online import runner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(
  0,
  os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "experiments",
    "reward_fit",
  ),
)
# pylint: disable=wrong-import-position
import authors_launcher  # noqa: E402
import compare  # noqa: E402
import erljax_fit  # noqa: E402
import store  # noqa: E402
from test_trainer import learned_config  # noqa: E402

# A numpy stand-in for the authors' reward_model_vlm_rating module: the
# interface the launcher drives, recording what it was given.
FAKE_AUTHORS = '''
import numpy as np
device = "cuda"
made = []

class RewardModel:
  def __init__(self, ds, da, **kw):
    self.kw, self.ds, self.da = kw, ds, da
    self.device_at_init = device
    self.w = np.random.normal(size=(ds + da,))
    self.buffer_seg1 = np.empty((int(kw["capacity"]), 1, ds + da), np.float32)
    self.buffer_label = np.empty((int(kw["capacity"]), 1), np.float32)
    self.buffer_index = 0
    self.train_batch_size = 128
    self.puts, self.calls, self.shapes = [], 0, []
    made.append(self)

  def train(self):
    pass

  def eval(self):
    pass

  def put_queries(self, sa_t_1, labels):
    n = sa_t_1.shape[0]
    self.buffer_seg1[self.buffer_index : self.buffer_index + n] = sa_t_1
    self.buffer_label[self.buffer_index : self.buffer_index + n] = labels
    self.buffer_index += n
    self.puts.append(n)

  def train_reward(self):
    self.calls += 1
    self.shapes.append(self.buffer_seg1.shape)
    return np.full((self.kw["ensemble_size"],), 0.99), None

  def r_hat_batch(self, x):
    return (x @ self.w)[:, None]
'''

SETTINGS = {
  "ensemble_size": 3,
  "lr": 1e-3,
  "hidden_layers": 2,
  "hidden_size": 16,
  "loss": "mae",
  "class_weighted": True,
  "stratified": True,
  "batch_size": 8,
  "max_epochs": 5,
  "min_epochs": 2,
  "stop_accuracy": 0.97,
  "k": 30.0,
  "num_classes": 2,
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  # test_refit_ratings' run (same compiled programs); the rater's noise is
  # host-side, so it changes no program.
  c = learned_config(200, 2, queries=20, budget=60, warmup_updates=2)
  c.rater.noise = 0.3
  c.workdir = str(tmp_path_factory.mktemp("rated"))
  runner.run(c, log=lambda _: None)
  return c.workdir


@pytest.fixture
def fake_authors(tmp_path):
  d = tmp_path / "authors"
  d.mkdir()
  (d / "reward_model_vlm_rating.py").write_text(FAKE_AUTHORS)
  yield str(d)
  sys.modules.pop(authors_launcher.MODULE, None)
  if str(d) in sys.path:
    sys.path.remove(str(d))


def test_reader_gives_rows_sessions_and_noise_free_labels(run_dir):
  st = store.read(run_dir)
  assert st.step == 200 and st.size.tolist() == [60, 60]
  assert st.sessions == [[20, 40, 60], [20, 40, 60]]
  assert st.obs.shape[:2] == (2, 60) and st.action.shape[:2] == (2, 60)
  assert st.buffer_obs.shape[:2] == (2, 100) and st.buffer_reward.shape == (
    2,
    100,
  )
  # Stored labels carry the run's 30% noise; the recomputed ones are the
  # noise-free bins of the stored true values: monotone in them.
  wrong = np.mean(st.label != st.clean)
  assert 0.1 < wrong < 0.5
  for s in range(2):
    order = np.argsort(st.true[s], kind="stable")
    assert np.all(np.diff(st.clean[s][order]) >= 0)
  assert "seed 1: 60 labelled rows in 3 session(s)" in store.describe(st)


def test_class_precision_by_hand(run_dir):
  st = dataclasses.replace(
    store.read(run_dir),
    label=np.array([[0, 0, 1, 1, 2, 9], [1, 1, 1, 0, 0, 0]]),
    clean=np.array([[0, 1, 1, 0, 1, 9], [1, 0, 1, 0, 0, 0]]),
    size=np.array([5, 6]),
    num_classes=3,
  )
  count, prec = store.class_precision(st)
  # Seed 0 (5 rows, the 6th is padding): class 0 answered twice, right once;
  # class 1 twice, right once; class 2 once, wrong. Seed 1: class 2 never.
  np.testing.assert_array_equal(count, [[2, 2, 1], [3, 3, 0]])
  np.testing.assert_allclose(prec, [[0.5, 0.5, 0.0], [1.0, 2 / 3, np.nan]])
  assert "answered class 0: 2 (0.50 right)" in store.describe(st)


def test_ring_rows_come_oldest_first():
  ring = np.arange(4)
  np.testing.assert_array_equal(store._chronological(ring, 4, 2), [2, 3, 0, 1])
  np.testing.assert_array_equal(store._chronological(ring, 3, 3), [0, 1, 2])


def test_split_holds_out_rows_and_counts_sessions_in_train_rows(run_dir):
  st = store.read(run_dir)
  for schedule, n_sessions in (("sessions", 3), ("final", 1)):
    sp = store.split(st, 0.25, 0, schedule)[1]
    assert sp["train_label"].shape == (45,) and sp["held_label"].shape == (15,)
    assert len(sp["session_ends"]) == n_sessions
    assert sp["session_ends"][-1] == 45
  hold = store.held_out(60, 0.25, 1)
  ends = store.split(st, 0.25, 0, "sessions")[1]["session_ends"]
  assert ends.tolist() == [int(np.sum(~hold[:e])) for e in (20, 40, 60)]


def test_settings_refuse_layers_of_unequal_width():
  c = config_lib.default()
  c.reward.hidden_sizes = (256, 128)
  with pytest.raises(ValueError, match=r"hidden_sizes=\(256, 128\)"):
    erljax_fit.settings(c, 3)


def test_launcher_npz_contract(fake_authors, tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(6, 4)).astype(np.float32)
  ev = rng.normal(size=(5, 4)).astype(np.float32)
  job = str(tmp_path / "job.npz")
  np.savez(
    job,
    train_x=x,
    train_y=np.asarray([0, 1, 0, 1, 1, 0]),
    session_ends=np.asarray([2, 5, 6]),
    eval_held=ev,
    fit_seeds=np.asarray([3, 4]),
    settings=json.dumps(SETTINGS),
  )
  (out_path,) = authors_launcher.main([f"--authors_dir={fake_authors}", job])
  assert out_path == str(tmp_path / "job.out.npz")
  mod = sys.modules[authors_launcher.MODULE]
  assert mod.device == "cpu" and len(mod.made) == 2
  m = mod.made[0]
  assert m.device_at_init == "cpu"
  # Settings reach their constructor under their names.
  assert m.kw["softmax_temp"] == 30.0 and m.kw["reward_loss"] == "mae"
  assert m.kw["weighting_loss"] is True and m.kw["batch_stratify"] is True
  assert m.kw["reward_model_H"] == 16 and m.kw["reward_model_layers"] == 2
  assert m.kw["teacher_num_ratings"] == 2 and m.kw["ensemble_size"] == 3
  assert m.kw["image_reward"] is False and m.kw["lr"] == 1e-3
  assert m.train_batch_size == 8
  # Sessions add their rows; each stops after min_epochs (accuracy 0.99).
  assert m.puts == [2, 3, 1] and m.calls == 6
  assert m.shapes[0] == (7, 4)  # rows stored flat: [capacity, ds + da]
  with np.load(out_path) as z:
    np.testing.assert_allclose(z["r_hat_held"][1], ev @ mod.made[1].w)
    assert z["r_hat_held"].shape == (2, 5)
    np.testing.assert_allclose(z["train_accuracy"], 0.99)
    assert z["epochs"].tolist() == [[2, 2, 2], [2, 2, 2]]
    assert json.loads(str(z["settings_used"]))["least_reward_update"] == 0
  # Each fit seed gives its own fit.
  assert not np.allclose(mod.made[0].w, mod.made[1].w)


def test_launcher_refuses_session_ends_short_of_the_rows(
  fake_authors, tmp_path
):
  job = str(tmp_path / "bad.npz")
  np.savez(
    job,
    train_x=np.zeros((4, 2), np.float32),
    train_y=np.zeros((4,), np.int64),
    session_ends=np.asarray([2, 3]),
    fit_seeds=np.asarray([0]),
    settings=json.dumps(SETTINGS),
  )
  with pytest.raises(ValueError, match=r"session_ends=\[2, 3\]"):
    authors_launcher.main([f"--authors_dir={fake_authors}", job])


def test_compare_end_to_end_with_a_stand_in(run_dir, fake_authors, tmp_path):
  out = str(tmp_path / "fit")
  res = compare.main(
    [
      run_dir,
      f"--authors_dir={fake_authors}",
      f"--torch_python={sys.executable}",
      "--fit_seeds=2",
      f"--out={out}",
    ]
  )
  for fit in ("erljax", "authors"):
    for m in compare.METRICS:
      v = np.asarray(res["per_seed"][fit][m])
      assert v.shape == (2, 2) and np.all(np.isfinite(v)), (fit, m)
  assert set(res["summary"]["reading"]) == set(compare.PRIMARY)
  assert res["sessions_per_seed"] == [3, 3]
  assert 0.1 < np.mean(res["label_noise_measured"]) < 0.5
  saved = json.loads(open(out + ".json").read())
  assert saved["reading_rule"] == compare.READING
  assert "| corr_buffer |" in open(out + ".md").read()
