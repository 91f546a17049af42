#!/usr/bin/env bash
# The rating study (experiments/results/fidelity.md): per task, SAC on the
# true reward, then ERL-VLM, vanilla RbRL and preferences (same number of
# queries) from the scripted rater at each label-noise level, SEEDS seeds
# vmapped per run, then one report over every run. The rater is the rating
# configs' (experiments/configs/rating.py): class-independent "uniform"
# noise (a wrong label is any other class, like a VLM hallucination;
# docs/rating_noise.md), preference ties within 5% of the range unanswered.
#
#   bash experiments/run_study.sh             # 3 tasks x 3 noises
#   METHODS="rbrl_mae rbrl_weights rbrl_stratified erlvlm_n2 erlvlm_n4 \
#     erlvlm_smooth preference_mae" TASKS=CartpoleSwingup NOISES=0.2 \
#     WITH_SAC=0 bash experiments/run_study.sh   # the component ablation
#   TASKS=reacher NOISES=0.2 SEEDS=3 bash experiments/run_study.sh
#   TASKS=reacher NOISES=0.2 METHODS="erlvlm rbrl" WITH_SAC=0 bash ...
#   TASKS=reacher METHODS=none bash ...   # SAC on the true reward only
#   EXTRA="--config.reward.model=cnn" ...   # flags appended to rating runs
#   PRETRAIN=0 EXTRA="--config.rater.noise_kind=boundary \
#     --config.feedback.query_window_steps=3000" ...
#     # the conditions of the studies before issue 29 (60k steps)
#   RATED=signal ...   # every task rated on what its frames show (below)
#
# CPU-sized: 8 envs, 2x128 SAC networks, batch 256, 4 updates per
# vectorized step (0.5 per env step), chunks of 1k steps; replay as large
# as the run. The paper's schedule otherwise: k-NN state-entropy pre-training from the
# end of the 1k-step seed phase for 9k steps (PRETRAIN=0: none, the first
# session right after the seed phase), then 100 queries per session from
# step 10k every 5k and none at the end, drawn from the 100 most recent
# completed episodes of the 8 envs (the reference's FIFO). Reacher's
# scripted rater bins the per-step env reward, control cost included
# (RbRL's synthetic ratings), over (-1, 0); CartpoleSwingup's bins its
# reward over (0, 1), ReacherEasy's (0/1 on touching the target) over
# (0, 1) with 2 classes, MetaWorld's over the authors' RbRL ranges.
# The runs use the code of the checkout this script lies in: run it from a
# git worktree at a fixed commit (git worktree add /tmp/study <commit>), so
# that edits made while it runs cannot reach it, with that worktree installed
# in its own venv (python -m venv V && V/bin/pip install -e /tmp/study): a
# PYTHONPATH does not win over another checkout's editable install of the
# package. It refuses to start when python imports erljax from elsewhere, or
# with uncommitted changes to the code (ALLOW_DIRTY=1 overrides), and appends
# the commit to $OUT/commits.txt.
# A run whose workdir already holds a finished metrics.jsonl is kept.
set -euo pipefail
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
TASKS=${TASKS:-"CartpoleSwingup reacher ReacherEasy"}
NOISES=${NOISES:-"0.2 0.1 0.0"}
SEEDS=${SEEDS:-5}
STEPS=${STEPS:-60000}
OUT=${OUT:-runs/fidelity}
REPORT=${REPORT:-experiments/results/fidelity}
METHODS=${METHODS:-"erlvlm rbrl preference"}
[[ "$METHODS" == none ]] && METHODS=""  # SAC only
WITH_SAC=${WITH_SAC:-1}
EXTRA=${EXTRA:-}
RATED=${RATED:-}
PRETRAIN=${PRETRAIN:-1}
# The code the runs use (reports written to experiments/results/ are not).
CODE=(src experiments/configs experiments/run_study.sh experiments/aggregate.py)
if [[ -n "$(git status --porcelain -- "${CODE[@]}")" \
      && "${ALLOW_DIRTY:-0}" != 1 ]]; then
  echo "uncommitted changes to the code (ALLOW_DIRTY=1 runs anyway); run" \
    "the study from a worktree at a fixed commit" >&2
  git status --short -- "${CODE[@]}" >&2
  exit 1
fi
imported=$(python -c 'import os, erljax.train as t
print(os.path.realpath(os.path.dirname(t.__file__)))')
if [[ "$imported" != "$(realpath src/erljax)" ]]; then
  echo "run_study.sh: python imports erljax from $imported, not from this" \
    "checkout's $(realpath src/erljax); install the checkout in its own" \
    "venv (python -m venv V && V/bin/pip install -e $PWD)" >&2
  exit 1
fi
mkdir -p "$OUT"
echo "$(date -u +%FT%TZ) $(git rev-parse HEAD) $*" >> "$OUT/commits.txt"
declare -A LABEL=([erlvlm]=ERL-VLM [rbrl]=RbRL [preference]=Preferences
                  [rbrl_mae]="RbRL+MAE" [rbrl_weights]="RbRL+weights"
                  [rbrl_stratified]="RbRL+stratified" [erlvlm_n2]="ERL-VLM 2 classes"
                  [erlvlm_n4]="ERL-VLM 4 classes"
                  [erlvlm_smooth]="ERL-VLM smoothing"
                  [preference_mae]="Preferences+MAE")
COMMON=(--config.num_seeds="$SEEDS" --config.total_steps="$STEPS"
        --config.num_envs=8 --config.sac.hidden_sizes="(128,128)"
        --config.batch_size=256 --config.updates_per_step=4
        --config.log_every=1000 --config.eval_every=10000
        --config.num_eval_envs=10 --config.replay_capacity="$STEPS"
        --config.progress=False
        --config.tensorboard=False)
declare -A RATER=(
  [reacher]="--config.rater.rated=reward --config.rater.range=(-1.0,0.0)"
  [CartpoleSwingup]="")

finished() {  # workdir: true if its last record reached STEPS
  [[ -f "$1/metrics.jsonl" ]] && python - "$1/metrics.jsonl" "$STEPS" <<'PY'
import json, sys
last = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][-1]
sys.exit(0 if last.get("env_steps", 0) >= int(sys.argv[2]) else 1)
PY
}

run() {  # workdir config-arg [overrides...]
  local dir=$1 arg=$2; shift 2
  if finished "$dir"; then echo "kept $dir"; return; fi
  rm -rf "$dir"
  echo "== $dir"
  python -m erljax.train --config="experiments/configs/$arg" \
      --config.workdir="$dir" "${COMMON[@]}" "$@"
}

labels=()
reference=()
if [[ "$WITH_SAC" == 1 ]]; then
  reference=(--reference "SAC (true reward)")
fi
for task in $TASKS; do
  if [[ "$WITH_SAC" == 1 ]]; then
    run "$OUT/$task/sac" "sac.py:$task"
    labels+=("SAC (true reward)=$OUT/$task/sac")
  fi
  for noise in $NOISES; do
    pct=$(python -c "print(round(100 * $noise))")
    for method in $METHODS; do
      # shellcheck disable=SC2086
      run "$OUT/$task/${method}_noise$pct" "rating.py:$task,$method" \
          --config.rater.noise="$noise" \
          $([[ "$PRETRAIN" == 1 ]] || echo --config.feedback.unsupervised=False) \
          $([[ "$RATED" == signal ]] || echo "${RATER[$task]:-}") $EXTRA
      labels+=("${LABEL[$method]:-$method} ${pct}%=$OUT/$task/${method}_noise$pct")
    done
  done
done
compare=()
if [[ " $METHODS " == *" erlvlm "* ]]; then
  for noise in $NOISES; do
    compare+=(--compare "ERL-VLM $(python -c "print(round(100 * $noise))")%")
  done
fi
python experiments/aggregate.py --out "$REPORT" "${reference[@]}" \
    "${compare[@]}" \
    --title "Rating study: ${SEEDS} seeds, ${STEPS} env steps, noise ${NOISES}" \
    "${labels[@]}"
