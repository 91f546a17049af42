"""The rating study's reacher claim, rerun (slow: about 10 min on 2 cores).

  python -m pytest -m slow tests/test_study.py

Runs experiments/run_study.sh for ERL-VLM and vanilla RbRL on reacher with
20% uniform label noise, 5 seeds, exactly the study's settings. On the
development machine it reproduced the study's final returns (ERL-VLM -31.7,
RbRL -48.3; SAC on the true reward -13.2, start -51.7).
"""
import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def final_returns(workdir):
  recs = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [r for r in recs if r.get("kind") == "eval"]
  return np.array(evals[0]["eval_return_per_seed"]), np.array(
      evals[-1]["eval_return_per_seed"])


@pytest.mark.slow
def test_erlvlm_beats_vanilla_rbrl_under_label_noise(tmp_path):
  env = dict(os.environ, TASKS="reacher", NOISES="0.2",
             METHODS="erlvlm rbrl", WITH_SAC="0", OUT=str(tmp_path / "runs"),
             REPORT=str(tmp_path / "report"))
  subprocess.run(["bash", os.path.join(ROOT, "experiments", "run_study.sh")],
                 env=env, check=True, capture_output=True)
  start, erlvlm = final_returns(tmp_path / "runs/reacher/erlvlm_noise20")
  _, rbrl = final_returns(tmp_path / "runs/reacher/rbrl_noise20")
  assert erlvlm.shape == rbrl.shape == (5,)
  assert erlvlm.mean() > rbrl.mean() + 5.0
  # ERL-VLM learns: well above the untrained policy's return.
  assert erlvlm.mean() > start.mean() + 10.0
  assert "| reacher | ERL-VLM 20% | 5 |" in (tmp_path / "report.md").read_text()
