#!/usr/bin/env bash
# What k-NN state-entropy pre-training costs, end to end, in CPU seconds
# (experiments/results/pretraining_cost.md): the rating study's settings
# (experiments/run_study.sh), ERL-VLM on reacher, 5 seeds, 10k env steps
# (the 1k-step seed phase and the 9k steps of pre-training; the first
# feedback session would come at 10k), once with pre-training on and once
# off, for each checkout given. CPU seconds (user + sys, /usr/bin/time)
# move less with the machine's load than wall time does.
#
#   bash experiments/pretraining_cost.sh OUT WORKTREE:VENV [WORKTREE:VENV ...]
#
# Each WORKTREE is a checkout at a fixed commit installed in its own VENV
# (python -m venv VENV && VENV/bin/pip install -e WORKTREE), so that each
# imports its own code. Appends "<name> user U sys S wall W" lines to
# OUT/times.txt.
set -uo pipefail
OUT=$1; shift
mkdir -p "$OUT"
COMMON=(--config.num_seeds=5 --config.total_steps=10000
  --config.num_envs=8 --config.sac.hidden_sizes="(128,128)"
  --config.batch_size=256 --config.updates_per_step=4
  --config.log_every=1000 --config.eval_every=10000
  --config.num_eval_envs=10 --config.replay_capacity=100000
  --config.progress=False --config.tensorboard=False
  --config.rater.noise=0.2 --config.rater.rated=reward
  "--config.rater.range=(-1.0,0.0)")
for pair in "$@"; do
  tree=${pair%%:*} venv=${pair##*:}
  for pretrain in True False; do
    name=$(basename "$tree")_pretrain$pretrain
    (cd "$tree" && /usr/bin/time -f "$name user %U sys %S wall %e" \
      -a -o "$OUT/times.txt" "$venv/bin/python" -m erljax.train \
      --config=experiments/configs/rating.py:reacher,erlvlm \
      --config.workdir="$OUT/$name" \
      --config.feedback.unsupervised=$pretrain "${COMMON[@]}" \
      > "$OUT/$name.log" 2>&1)
    echo "$name rc=$? load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/times.txt"
  done
done
