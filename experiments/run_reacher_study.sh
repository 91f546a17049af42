#!/usr/bin/env bash
# The reacher study behind experiments/results/reacher_noise20.md: SAC on the
# true reward, ERL-VLM, vanilla RbRL and preferences (same number of queries)
# with 20% scripted label noise, 3 seeds each (vmapped), then the report.
# About 45 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-3}
NOISE=${NOISE:-0.2}
OUT=${OUT:-runs/reacher_study}
run() {  # name config-arg [overrides...]
  local name=$1 arg=$2; shift 2
  rm -rf "$OUT/$name"
  python -m erljax.train --config="experiments/configs/$arg" \
      --config.num_seeds="$SEEDS" --config.workdir="$OUT/$name" "$@"
}
run sac sac.py:reacher
run erlvlm rating.py:reacher,erlvlm --config.rater.noise="$NOISE"
run rbrl rating.py:reacher,rbrl --config.rater.noise="$NOISE"
run preference rating.py:reacher,preference --config.rater.noise="$NOISE"
python experiments/report.py --out experiments/results/reacher_noise${NOISE/./} \
    --title "reacher, ${NOISE} label noise, ${SEEDS} seeds" \
    "SAC (true reward)=$OUT/sac" "ERL-VLM=$OUT/erlvlm" "RbRL=$OUT/rbrl" \
    "Preferences=$OUT/preference"
