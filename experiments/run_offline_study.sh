#!/usr/bin/env bash
# The offline study of issue 17: IQL from 50 rated demonstrations per task.
#
#   bash experiments/run_offline_study.sh
#
# 1. a SAC demonstrator per task on the true reward
#    (experiments/configs/sac.py: pusher 200k env steps, reacher 60k),
#    checkpointed at every quarter of its run;
# 2. 50 demonstrations per task (erljax.collect): 10 with uniform random
#    actions, 5 from each pair of the 4 checkpoints (a quarter, half,
#    three quarters and all of the training) x Gaussian action noise std
#    0 and 0.3;
# 3. per task and method (bc, sparse_iql, true_iql, rbrl_iql, erlvlm_iql),
#    5 seeds over one seed axis (erljax.offline, experiments/configs/
#    offline.py); the rated methods share one set of ratings per task from
#    the scripted rater with 20% noise of kind $NOISE_KIND, stored beside the
#    dataset;
# 4. the report: experiments/results/offline_table.{md,csv,json}.
# Finished steps are skipped (a dataset.json, a final.json), so a rerun
# continues. About 60 minutes on a 2-core CPU after the demonstrators
# (reacher 6 min, pusher 22 min of SAC training).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RUNS=${RUNS:-runs}
NOISE_KIND=${NOISE_KIND:-boundary}
TASKS=${TASKS:-"pusher reacher"}
METHODS=${METHODS:-"bc sparse_iql true_iql rbrl_iql erlvlm_iql"}
# The IQL programs of a task are the same for every method but BC: compile
# them once. jax 0.9.2 logs an E-level cpu_aot_loader line ("+prefer-no-
# gather is not supported on the host machine") on every cache load
# (openxla/xla#44565: LLVM tuning flags taken for CPU features); the IQL
# programs load and run correctly despite it. Very large programs can crash
# on load on this jax (a 300-matmul unrolled test program segfaulted
# here): if a run dies at start, set JAX_COMPILATION_CACHE_DIR= (empty).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR-$RUNS/xla_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0

for task in $TASKS; do
  if [ ! -d "$RUNS/sac_$task/checkpoints" ]; then
    steps=$($PY -c "import sys; sys.path.insert(0, 'experiments/configs'); \
import sac; print(sac.get_config('$task').total_steps)")
    $PY -m erljax.train --config=experiments/configs/sac.py:$task \
      --config.workdir="$RUNS/sac_$task" --config.progress=False \
      --config.checkpoint.every=$((steps / 4)) --config.checkpoint.keep=4
  fi
  if [ ! -f "$RUNS/data_$task/dataset.json" ]; then
    $PY -m erljax.collect --workdir="$RUNS/sac_$task" \
      --out="$RUNS/data_$task" --episodes=50 --steps=all \
      --noise_stds=0,0.3 --random_fraction=0.2 --rng_seed=0
  fi
done

for task in $TASKS; do
  for method in $METHODS; do
    dir="$RUNS/offline/$task/$method"
    if [ ! -f "$dir/final.json" ]; then
      rm -rf "$dir"
      $PY -m erljax.offline \
        --config=experiments/configs/offline.py:$task,$method \
        --config.dataset="$RUNS/data_$task" --config.workdir="$dir" \
        --config.rater.noise_kind=$NOISE_KIND --config.offline.seed_axis=map \
        --config.progress=False
    fi
  done
done

$PY experiments/offline_report.py --out experiments/results/offline_table \
  "$RUNS"/offline/*/*/final.json
