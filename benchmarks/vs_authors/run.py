"""erljax against the ERL-VLM authors' own PyTorch code, as a user waits.

  bash benchmarks/vs_authors/prepare.sh /path/to/erlvlm /tmp/erlvlm-venv
  PYTHONPATH=$PWD/src python -m benchmarks.vs_authors.run \
      --checkout=/path/to/erlvlm --their_python=/tmp/erlvlm-venv/bin/python \
      --out=benchmarks/results/vs_authors.json

Their side: `train_PEBBLE_VLM.py` of github.com/tunglm2203/erlvlm at PIN,
run by `their_loop.py` in their own venv on Drawer Open with their scripted
ground-truth teacher in place of Gemini (that file says what it changes at
run time, and nothing in their checkout is edited). erljax's side: its CLI,
`erljax:rating.py:drawer-open,erlvlm,paper` with the same settings: 1 env,
1 SAC update per env step, batch 512, 3x256 actor and critics, 3-member
reward ensemble, 3 rating classes, replay 200k. Two rows each: the image
CNN reward on 224x224 frames (`--rewards=cnn`) and the state-action MLP
(`mlp`). Both run the same shortened schedule (--seed_steps,
--unsup_steps, --interval, --steps), one seed per process, interleaved
(theirs then erljax for even seeds, erljax first for odd ones), then erljax
once more with all seeds vmapped in one process (--study_seeds).

Each run is timed from its report lines (`step N ...`) as they arrive, by
wall clock and by the child's CPU seconds (/proc/PID/stat), so a figure
can be read on a shared machine: steady = from the second report to the
last (their_loop reports every --report_every steps), or from the first
where there are two (erljax reports at its evaluations, here at step 0,
after compiling, and at the end). The 100k-step study is then estimated:
theirs from the per-phase costs their_loop measured, at the paper's
schedule (`estimate_theirs`); erljax's from its vmapped run's steady cost
per env step plus its compile (`summarize`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from benchmarks import common

PIN = "1f9aa3a2a1a89ffa552df9613a069db042ecd7fa"
REPO = "https://github.com/tunglm2203/erlvlm"
_ROOT = os.path.dirname(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
# A report: an evaluation or progress line ("step N"), or erljax's line
# after a feedback session ("feedback K at step N: sent Q", Q the queries
# sent so far).
_REPORT = re.compile(
  r"^(?:step\s+(\d+)|feedback\s+\d+ at step (\d+)(?:: sent (\d+))?)"
)
_COMPILE = re.compile(r"compile=([\d.]+)s")
_PROFILE = "vs_authors_profile "
# The paper's MetaWorld schedule (docs/method.md#the-loop) for the estimate.
PAPER = {
  "steps": 100_000,
  "seed_steps": 1_000,
  "unsup_steps": 9_000,
  "interval": 5_000,
  "queries": 50,
  "eval_every": 10_000,
  "eval_episodes": 10,
  "episode_length": 500,
  "replay_images": 200_000,
  # The study a user runs: 5 seeds x 3 methods.
  "study_seeds": 5,
  "study_methods": 3,
}


class CheckoutError(ValueError):
  pass


def check_checkout(path: str, pin: str = PIN) -> str:
  """The checkout's HEAD commit; raises unless it is `pin`."""
  if not os.path.isfile(os.path.join(path, "train_PEBBLE_VLM.py")):
    raise CheckoutError(
      f"--checkout={path!r} has no train_PEBBLE_VLM.py: clone {REPO} "
      f"and check out {pin}"
    )
  res = subprocess.run(
    ["git", "-C", path, "rev-parse", "HEAD"],
    capture_output=True,
    text=True,
    check=False,
  )
  head = res.stdout.strip()
  if res.returncode != 0 or head != pin:
    raise CheckoutError(
      f"--checkout={path!r} is at {head or 'no git commit'}, not the "
      f"pinned {pin}: git -C {path} checkout {pin}"
    )
  return head


def timed_run(
  cmd: Sequence[str],
  timeout: float,
  env: Optional[Dict[str, str]] = None,
  steady_from: int = 0,
) -> Dict[str, Any]:
  """Runs cmd; each report line's (wall s, CPU s, env steps), steady rates
  from the first report at or after env step `steady_from` (0: the second
  report) to the last, and their_loop's profile."""
  code, usage, stderr, stamped = common.stamped_run(
    cmd, timeout, cwd=_ROOT, env=env
  )
  lines = [text for _, _, text in stamped]
  reports: List[List[float]] = []
  sessions: List[List[float]] = []
  found: Dict[str, Any] = {"profile": None, "compile_s": None}
  for now, cpu, line in stamped:
    m = _REPORT.match(line)
    if m:
      reports.append([now, cpu, int(m.group(1) or m.group(2))])
      if m.group(3):
        sessions.append([now, cpu, int(m.group(2)), int(m.group(3))])
    c = _COMPILE.search(line)
    if c and found["compile_s"] is None:
      found["compile_s"] = float(c.group(1))
    if line.startswith(_PROFILE):
      found["profile"] = json.loads(line[len(_PROFILE) :])
  if code != 0 or len(reports) < 2:
    raise RuntimeError(
      f"{' '.join(cmd)} exited with {code} after {len(reports)} reports:\n"
      + "\n".join(lines[-10:])
      + stderr[-3000:]
    )
  # erljax's step-0 report (after compiling and the first evaluation)
  # starts the steady span when there are only two.
  first = min(1, len(reports) - 2)
  if steady_from:
    later = [i for i, r in enumerate(reports) if r[2] >= steady_from]
    if not later or later[0] == len(reports) - 1:
      raise RuntimeError(
        f"--steady_from={steady_from}: no report span from it in {cmd}"
      )
    first = later[0]
  (w1, c1, s1), (w2, c2, s2) = reports[first], reports[-1]
  return {
    "command": " ".join(cmd),
    "load_average_after": list(os.getloadavg()),
    "reports": reports,
    "sessions": sessions,
    "steady_env_steps": s2 - s1,
    "steady_env_steps_per_s": (s2 - s1) / (w2 - w1),
    "steady_cpu_s_per_env_step": (c2 - c1) / (s2 - s1),
    "wall_s": reports[-1][0],
    "cpu_s": usage.ru_utime + usage.ru_stime,
    "cpu_s_at_first_report": reports[0][1],
    "compile_s": found["compile_s"],
    "peak_rss_mb": usage.ru_maxrss / 1024.0,
    "profile": found["profile"],
  }


def schedule_args(a) -> Dict[str, int]:
  return {
    "steps": a.steps,
    "seed_steps": a.seed_steps,
    "unsup_steps": a.unsup_steps,
    "interval": a.interval,
  }


def their_command(a, reward: str, seed: int) -> List[str]:
  here = os.path.join(os.path.dirname(os.path.abspath(__file__)))
  s = schedule_args(a)
  return [
    a.their_python,
    os.path.join(here, "their_loop.py"),
    f"--checkout={a.checkout}",
    f"--reward={reward}",
    f"--seed={seed}",
    f"--report_every={a.report_every}",
    f"--threads={a.threads}",
    # No evaluation in the short run: estimate_theirs prices it.
    f"--eval_every={a.steps + 1}",
  ] + [f"--{k}={v}" for k, v in s.items()]


def erljax_command(a, reward: str, seed: int, num_seeds: int, task: str):
  overrides = {
    "seed": seed,
    "num_seeds": num_seeds,
    "num_envs": 1,
    "updates_per_step": 1,
    "total_steps": a.steps,
    "seed_steps": a.seed_steps,
    "feedback.unsupervised_steps": a.unsup_steps,
    "feedback.interval": a.interval,
    "log_every": a.report_every,
    "eval_every": a.steps,
    "num_eval_envs": 1,
    "replay_capacity": a.steps,
    "reward.model": reward,
    "progress": False,
    "workdir": "none",
    "render.rollout_video": False,
  }
  if reward == "mlp":
    overrides["reward.batch_size"] = 128  # the reference's state batch
  else:
    overrides["reward.frames"] = a.frames
  return [
    sys.executable,
    "-m",
    "erljax.train",
    f"--config=erljax:rating.py:{task},erlvlm,paper",
  ] + [f"--config.{k}={v}" for k, v in overrides.items()]


def _fit_line(events) -> Dict[str, float]:
  """Least-squares seconds = a + b * size over [(size, seconds), ...]."""
  if not events:
    return {"a": 0.0, "b": 0.0}
  xs = [float(n) for n, _ in events]
  ys = [float(t) for _, t in events]
  mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
  sxx = sum((x - mx) ** 2 for x in xs)
  if sxx == 0:
    return {"a": 0.0, "b": my / mx if mx else 0.0}
  b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
  return {"a": my - b * mx, "b": b}


def _per_step(profile: Dict[str, Any], phase: str, skip=()) -> float:
  """CPU seconds per env step of `phase`, all pieces but `skip`."""
  steps = profile["phase_steps"][phase]
  total = sum(
    s
    for k, s in profile["cpu_seconds"].items()
    if k.startswith(phase + "/") and k.split("/")[1] not in skip
  )
  return total / steps if steps else 0.0


def estimate_theirs(profile: Dict[str, Any], p=PAPER) -> Dict[str, float]:
  """CPU seconds of one run of their loop at the paper's schedule, from the
  costs a short run measured (per-step pieces of each phase; the k-NN
  update's growth with the buffer from their k-NN probed at 1k-10k rows;
  relabelling fitted against the buffer size; a session against
  the ratings it trains on; the critic reset's updates once; evaluation at
  the rl phase's act + physics per step). Time their_loop did not wrap
  (Python between the pieces, logging) is left out."""
  seed = p["seed_steps"] * _per_step(profile, "seed")
  lo, hi = p["seed_steps"], p["seed_steps"] + p["unsup_steps"]
  mean_rows = (lo + hi - 1) / 2  # buffer rows of the mean pre-training step
  probe = profile["events"].get("knn_probe")
  if probe:
    # The short run's pre-training steps, plus the k-NN's growth from the
    # short run's buffer to the paper's (their k-NN probed at 1k-10k rows).
    knn = _fit_line(probe)
    ev = profile["events"].get("unsup_update", [])
    short_rows = sum(n for n, _ in ev) / len(ev) if ev else 0.0
    unsup = p["unsup_steps"] * (
      _per_step(profile, "unsup") + knn["b"] * (mean_rows - short_rows)
    )
  else:
    knn = _fit_line(profile["events"].get("unsup_update", []))
    unsup = p["unsup_steps"] * _per_step(profile, "unsup", ("unsup_update",))
    unsup += p["unsup_steps"] * (knn["a"] + knn["b"] * mean_rows)
  rl_steps = p["steps"] - hi
  once = ("session", "relabel", "evaluation", "reset_update")
  rl = rl_steps * _per_step(profile, "rl", once)
  rel = _fit_line(profile["events"].get("relabel", []))
  sessions, relabel = _feedback_costs(
    _fit_line(profile["events"].get("session", [])),
    lambda rows: rel["a"] + rel["b"] * rows,
    p,
  )
  s = profile["cpu_seconds"]
  rl_n = profile["phase_steps"]["rl"]
  eval_step = (s.get("rl/act", 0.0) + s.get("rl/physics", 0.0)) / rl_n
  n_eval = p["steps"] // p["eval_every"]
  evaluation = n_eval * p["eval_episodes"] * p["episode_length"] * eval_step
  # The critic reset's 100 updates run once, after the first session.
  reset = profile["cpu_seconds"].get("rl/reset_update", 0.0)
  parts = {
    "reset_update": reset,
    "seed": seed,
    "unsup": unsup,
    "rl": rl,
    "sessions": sessions,
    "relabel": relabel,
    "evaluation": evaluation,
  }
  parts["total"] = sum(parts.values())
  return parts


def _feedback_costs(
  session: Dict[str, float], relabel: Callable[[int], float], p=PAPER
) -> Tuple[float, float]:
  """CPU seconds of all sessions at the paper's schedule (`session`: a line
  in the ratings stored after it) and of their relabelling (`relabel`: CPU
  seconds for a buffer of that many rows)."""
  sessions = relabels = 0.0
  hi = p["seed_steps"] + p["unsup_steps"]
  for k, at in enumerate(range(hi, p["steps"], p["interval"])):
    # A fit's line may fall below zero for tiny sessions (state MLP): none
    # costs less than nothing.
    sessions += max(0.0, session["a"] + session["b"] * p["queries"] * (k + 1))
    relabels += relabel(min(at, p["replay_images"]))
  return sessions, relabels


def _relabelled(rows: int, chunk: int) -> int:
  """Items `erljax.agents.replay.relabel` computes for `rows` stored rows:
  whole chunks (the last one moved back over rows already done)."""
  return max(chunk, -(-rows // chunk) * chunk) if rows else 0


def erljax_sessions(
  sessions: Sequence[Sequence[float]],
  pieces: Dict[str, Dict[str, float]],
  relabel_chunk: int,
) -> List[List[float]]:
  """[(ratings stored, CPU s), ...] of each of erljax's sessions but the
  first, from its feedback lines [[wall, cpu, step, sent], ...]: the CPU
  between two lines less the chunk's env steps and the relabelling that
  erljax_profile priced (`pieces`, CPU s per env step and per item). The
  first line's span also holds the compile of the session programs and the
  critic reset, so it is left out (the reset is priced apart)."""
  out = []
  for (_, c0, s0, _), (_, c1, s1, sent) in zip(sessions, sessions[1:]):
    chunk = (s1 - s0) * pieces["chunk"]["cpu_s"]
    rel = _relabelled(s1, relabel_chunk) * pieces["relabel_per_item"]["cpu_s"]
    out.append([sent, c1 - c0 - chunk - rel])
  return out


def estimate_erljax(
  profile: Dict[str, Any],
  sessions: Sequence[Sequence[float]],
  capacity: int,
  p=PAPER,
) -> Dict[str, float]:
  """CPU seconds of one erljax run (one seed) at the paper's schedule, priced
  as estimate_theirs prices theirs: erljax_profile's per-step pieces
  (`profile`: one of its rows) for the steps of each phase, the relabelling
  per item for the buffer at each session, the sessions fitted against the
  ratings stored from a short run's feedback lines (`sessions`, less its
  chunks and relabelling; `capacity`: its replay capacity, which bounds
  the relabelling's chunk), the critic reset's warm-up updates once, and
  every evaluation at one env's step cost. The seed phase runs the whole
  chunk (its updates are computed and discarded); pre-training adds the
  k-NN. erljax also evaluates at step 0, so it is charged one evaluation
  more than theirs."""
  pieces = profile["per_env_step"]
  cpu = {k: v["cpu_s"] for k, v in pieces.items()}
  chunk = profile["relabel_chunk"]
  hi = p["seed_steps"] + p["unsup_steps"]
  sessions_s, relabel = _feedback_costs(
    _fit_line(erljax_sessions(sessions, pieces, min(chunk, capacity))),
    lambda rows: _relabelled(rows, chunk) * cpu["relabel_per_item"],
    p,
  )
  n_eval = p["steps"] // p["eval_every"] + 1
  parts = {
    "reset_update": profile["warmup_updates"] * cpu["update"],
    "seed": p["seed_steps"] * cpu["chunk"],
    "unsup": p["unsup_steps"] * (cpu["chunk"] + cpu["unsup_knn"]),
    "rl": (p["steps"] - hi) * cpu["chunk"],
    "sessions": sessions_s,
    "relabel": relabel,
    "evaluation": n_eval
    * p["eval_episodes"]
    * p["episode_length"]
    * cpu["evaluation_per_step"],
  }
  parts["total"] = sum(parts.values())
  return parts


def their_versions(python: str) -> Dict[str, Any]:
  code = (
    "import json, sys\nfrom importlib import metadata\nout = "
    "{'python': sys.version.split()[0]}\nfor p in ('torch', 'mujoco', "
    "'gymnasium', 'gym', 'hydra-core', 'omegaconf', 'numpy'):\n  try:\n"
    "    out[p] = metadata.version(p)\n  except Exception:\n"
    "    out[p] = None\nprint(json.dumps(out))"
  )
  res = subprocess.run(
    [python, "-c", code], capture_output=True, text=True, check=True
  )
  return json.loads(res.stdout)


def _profile_table(profile: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
  """CPU milliseconds per env step of each piece of their loop, by phase."""
  out: Dict[str, Dict[str, float]] = {}
  for key, v in sorted(profile["cpu_seconds"].items()):
    phase, piece = key.split("/")
    out.setdefault(phase, {})[piece] = 1e3 * v / profile["phase_steps"][phase]
  return out


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--checkout",
    default=os.environ.get("ERLVLM_CHECKOUT", ""),
    help=f"checkout of {REPO} at {PIN} (or $ERLVLM_CHECKOUT)",
  )
  p.add_argument(
    "--their_python",
    default=os.environ.get("ERLVLM_PYTHON", ""),
    help="python of the venv prepare.sh made (or $ERLVLM_PYTHON)",
  )
  p.add_argument("--pin", default=PIN, help="commit the checkout must be at")
  p.add_argument("--rewards", default="mlp,cnn", help="mlp, cnn or both")
  p.add_argument(
    "--seeds", default="0,1,2", help="one process per seed ('': none)"
  )
  p.add_argument("--study_seeds", type=int, default=5, help="0: skip")
  p.add_argument("--tasks", default="drawer-open", help="erljax's tasks")
  p.add_argument(
    "--frames",
    default="opengl",
    choices=("opengl", "raycast"),
    help="who draws erljax's CNN frames (reward.frames): MuJoCo's OpenGL "
    "renderer on the host, as theirs, or the ray caster in the program",
  )
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--seed_steps", type=int, default=100)
  p.add_argument("--unsup_steps", type=int, default=100)
  p.add_argument("--interval", type=int, default=100)
  p.add_argument("--report_every", type=int, default=50)
  p.add_argument(
    "--steady_from",
    type=int,
    default=0,
    help="env step where the steady span starts (0: the second report); "
    "after the first sessions, it leaves out erljax's first compile of "
    "the session programs",
  )
  p.add_argument(
    "--profile_length",
    type=int,
    default=50,
    help="steps per piece of erljax_profile, run once per reward model for "
    "erljax's per-phase estimate (0: no profile, no estimate)",
  )
  p.add_argument("--profile_repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=1, help="their torch")
  p.add_argument("--sides", default="theirs,erljax")
  p.add_argument("--timeout", type=float, default=3600)
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  rewards = a.rewards.split(",")
  sides = a.sides.split(",")
  for r in rewards:
    if r not in ("mlp", "cnn"):
      raise ValueError(f"--rewards: {r!r} is neither mlp nor cnn")
  for s in sides:
    if s not in ("theirs", "erljax"):
      raise ValueError(f"--sides: {s!r} is neither theirs nor erljax")
  if a.steps <= a.seed_steps + a.unsup_steps + a.interval:
    raise ValueError(
      f"--steps={a.steps} leaves no feedback session after "
      f"{a.seed_steps} + {a.unsup_steps} steps and one --interval"
    )
  commit = None
  if "theirs" in sides:
    if not a.their_python:
      raise ValueError("--their_python (or $ERLVLM_PYTHON) is not set")
    commit = check_checkout(a.checkout, a.pin)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
    [_ROOT, os.path.join(_ROOT, "src"), env.get("PYTHONPATH", "")]
  ).rstrip(os.pathsep)
  their_env = {**env, "OMP_NUM_THREADS": str(a.threads or "")}
  out: Dict[str, Any] = {
    "schedule": schedule_args(a),
    "paper_schedule": PAPER,
    "erljax_frames": a.frames,
    "their_commit": commit,
    "load_average_start": list(os.getloadavg()),
    "runs": [],
  }

  def record(side, reward, seed, num_seeds, task, cmd, run_env):
    print(f"== {side} {task} reward={reward} seed={seed} x{num_seeds}")
    rec = timed_run(cmd, a.timeout, run_env, a.steady_from)
    rec.update(
      side=side, reward=reward, seed=seed, num_seeds=num_seeds, task=task
    )
    if rec["profile"]:
      rec["estimate_100k_s"] = estimate_theirs(rec["profile"])
      rec["cpu_ms_per_step"] = _profile_table(rec["profile"])
    elif side == "erljax" and num_seeds == 1 and reward in profiles:
      rec["estimate_100k_s"] = estimate_erljax(
        profiles[reward],
        rec["sessions"],
        a.steps,  # its replay_capacity
      )
    print(
      f"   {rec['steady_env_steps_per_s'] * num_seeds:8.2f} env steps/s "
      f"(all seeds), {rec['steady_cpu_s_per_env_step'] * 1e3:8.1f} CPU ms "
      f"per step, wall {rec['wall_s']:.0f}s, load "
      f"{rec['load_average_after'][0]:.1f}",
      flush=True,
    )
    out["runs"].append(rec)
    if a.out:  # what finished survives a run cut short
      common.write_json(a.out, {**out, "complete": False})
    return rec

  tasks = a.tasks.split(",")
  profiles: Dict[str, Any] = {}
  if "erljax" in sides and a.profile_length:
    out["erljax_profile"] = profiles
    for reward in rewards:
      profiles[reward] = profile_erljax(a, reward, env)
  for reward in rewards:
    for seed in (int(s) for s in a.seeds.split(",") if s):  # "": none
      order = sides if seed % 2 == 0 else sides[::-1]
      for side in order:
        if side == "theirs":
          cmd = their_command(a, reward, seed)
          record(side, reward, seed, 1, "drawer-open", cmd, their_env)
        else:
          for task in tasks:
            cmd = erljax_command(a, reward, seed, 1, task)
            record(side, reward, seed, 1, task, cmd, env)
    if "erljax" in sides and a.study_seeds > 1:
      for task in tasks:
        cmd = erljax_command(a, reward, 0, a.study_seeds, task)
        record("erljax", reward, 0, a.study_seeds, task, cmd, env)
  out["summary"] = summarize(out, a.study_seeds)
  out["load_average_end"] = list(os.getloadavg())
  print(json.dumps(out["summary"], indent=1))
  if a.out:
    out["complete"] = True
    out["machine"] = common.machine()
    out["versions"] = {"erljax_side": common.versions()}
    if "theirs" in sides:
      out["versions"]["their_side"] = their_versions(a.their_python)
    common.write_json(a.out, out)
  return out


def profile_erljax(a, reward: str, env: Dict[str, str]) -> Dict[str, Any]:
  """erljax_profile's row for `reward`, in a process of its own."""
  print(f"== erljax_profile reward={reward}", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "profile.json")
    cmd = [
      sys.executable,
      "-m",
      "benchmarks.vs_authors.erljax_profile",
      f"--rewards={reward}",
      f"--frames={a.frames}",
      f"--length={a.profile_length}",
      f"--repeats={a.profile_repeats}",
      f"--out={path}",
    ]
    subprocess.run(cmd, cwd=_ROOT, env=env, check=True, timeout=a.timeout)
    with open(path) as f:
      res = json.load(f)
  return {**res["rows"][0], "load_average_after": list(os.getloadavg())}


def _mean(xs):
  xs = list(xs)
  return sum(xs) / len(xs) if xs else None


def summarize(out: Dict[str, Any], study_seeds: int) -> Dict[str, Any]:
  """Per reward row: per-seed rates, CPU ratios, the 5x3 study estimate."""
  summary: Dict[str, Any] = {}
  rows = {
    (r["side"], r["reward"], r["task"], r["num_seeds"]) for r in out["runs"]
  }
  for reward in sorted({r[1] for r in rows}):
    runs = [r for r in out["runs"] if r["reward"] == reward]
    theirs = [r for r in runs if r["side"] == "theirs"]
    row: Dict[str, Any] = {}
    if theirs:
      row["theirs"] = {
        "env_steps_per_s": [r["steady_env_steps_per_s"] for r in theirs],
        "cpu_ms_per_env_step": [
          1e3 * r["steady_cpu_s_per_env_step"] for r in theirs
        ],
        "estimate_100k_s": _mean(r["estimate_100k_s"]["total"] for r in theirs),
      }
    for task in sorted({r["task"] for r in runs if r["side"] == "erljax"}):
      one = [
        r
        for r in runs
        if r["side"] == "erljax" and r["task"] == task and r["num_seeds"] == 1
      ]
      many = [
        r
        for r in runs
        if r["side"] == "erljax" and r["task"] == task and r["num_seeds"] > 1
      ]
      e: Dict[str, Any] = {
        "env_steps_per_s": [r["steady_env_steps_per_s"] for r in one],
        "cpu_ms_per_env_step": [
          1e3 * r["steady_cpu_s_per_env_step"] for r in one
        ],
        "compile_s": [r["compile_s"] for r in one],
      }
      est = [
        r["estimate_100k_s"]["total"] for r in one if "estimate_100k_s" in r
      ]
      if est:
        # Per-phase, one seed per run, the study's runs one after another
        # as theirs: the same runs on both sides.
        e["estimate_100k_s"] = _mean(est)
        runs_5x3 = PAPER["study_seeds"] * PAPER["study_methods"]
        e["study_cpu_s_5x3_seeds_in_turn"] = runs_5x3 * e["estimate_100k_s"]
        if theirs:
          e["study_ratio_seeds_in_turn_theirs_over_erljax"] = (
            row["theirs"]["estimate_100k_s"] / e["estimate_100k_s"]
          )
      if theirs and one:
        e["cpu_ratio_theirs_over_erljax"] = _mean(
          e_t / e_o
          for e_t, e_o in zip(
            row["theirs"]["cpu_ms_per_env_step"], e["cpu_ms_per_env_step"]
          )
        )
      if many:
        m = many[-1]
        # CPU seconds of one vmapped run of study_seeds seeds at 100k steps.
        per_run = (
          m["cpu_s_at_first_report"]
          + PAPER["steps"] * m["steady_cpu_s_per_env_step"]
        )
        e["study_seeds"] = m["num_seeds"]
        e["vmapped_env_steps_per_s_all_seeds"] = (
          m["steady_env_steps_per_s"] * m["num_seeds"]
        )
        e["study_cpu_s_5x3"] = 3 * per_run
        if theirs:
          # Their runs one after another: seeds x 3 methods, CPU seconds.
          their_study = 3 * m["num_seeds"] * row["theirs"]["estimate_100k_s"]
          row["theirs"]["study_cpu_s_5x3"] = their_study
          e["study_ratio_theirs_over_erljax"] = their_study / (3 * per_run)
      row[f"erljax:{task}"] = e
    summary[reward] = row
  return summary


if __name__ == "__main__":
  main()
