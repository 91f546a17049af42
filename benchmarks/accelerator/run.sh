#!/usr/bin/env bash
# Run ON a lent device machine (the device tool's `run`, with carry=[".whl"]
# from prepare.sh): the accelerator figures issues 15 and 18 ask for, in one
# call that ends inside BUDGET seconds (default 540, under the tool's 600).
#   bash benchmarks/accelerator/run.sh [SECTION ...]
# SECTIONs, in this order by default:
#   e2e    benchmarks.end_to_end at 8/32/256 envs (4/8/32 updates per
#          vectorized step): erljax's CLI against Brax's sac.train, back to
#          back; then erljax alone with 4/16/64 vmapped seeds at 8 envs (env
#          steps/s summed over seeds: what one GPU gives a sweep; its 1-seed
#          row is the 8-env case)
#   mjx    benchmarks.metaworld_envs, MJX backend at 1/64/1,024 envs and the
#          host backend at 64, Sweep Into, Drawer Open and Soccer
#   roofline  benchmarks.roofline: the device's FP32 and bf16 matmul peak
#          and bandwidth, and erljax's and Brax's SAC update as a share of
#          the peak, FP32 and with bf16 products (issue 33)
#   vs_authors  benchmarks.vs_authors.run, erljax's side: Drawer Open on the
#          host simulator and on MJX (drawer-open-mjx), state MLP and image
#          CNN reward (frames ray-cast on the device), 3 seeds one by one
#          and 5 vmapped, the steady span after the first two sessions
#          (their one-time compiles; issue 33), and erljax_profile's pieces
#          for the per-phase 100k-step estimate. The
#          authors' side too where ERLVLM_CHECKOUT and ERLVLM_PYTHON name
#          their checkout and venv on the device (benchmarks/README.md)
#   startup  benchmarks.startup: the README's main job to its first training
#          step, cold (an empty compilation cache) and warm (issue 33)
# Each section gets what is left of BUDGET; whatever finished is written as
# JSON under $OUT (the device tool brings it back) or benchmarks/results/gpu.
# SMOKE=1 shrinks every size (a check of this script on a CPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
SECTIONS=${*:-e2e mjx roofline vs_authors startup}
for name in $SECTIONS; do
  case $name in
    e2e|mjx|roofline|vs_authors|startup) ;;
    *) echo "unknown section '$name': choose from e2e, mjx, roofline," \
         "vs_authors, startup" >&2
       exit 2 ;;
  esac
done
BUDGET=${BUDGET:-540}
DEST=${OUT:-benchmarks/results/gpu}
mkdir -p "$DEST"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl}
{
  date -u +%FT%TZ
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  $PY -c "import jax, brax, mujoco; print('jax', jax.__version__, 'brax', brax.__version__, 'mujoco', mujoco.__version__); print(jax.devices())"
} 2>&1 | tee "$DEST/device.txt"
# Fail fast (seconds, not minutes) where an import breaks on this image.
$PY -c "import erljax.train, erljax.envs.metaworld, benchmarks.end_to_end, brax.training.agents.sac.train" || exit 1

if [[ "${SMOKE:-0}" == 1 ]]; then
  E2E=(--envs=4 --updates=2 --seed_counts=2 --target_updates=64)
  MJX=(--tasks=drawer-open --host_envs=2 --mjx_envs= --steps=5 --repeats=1)
  ROOF=(--peak_n=256 --stream_mb=4 --updates=2 --rounds=2 --settings=16,16:8)
  VS=(--rewards=mlp --seeds=0 --study_seeds=2 --tasks=drawer-open
      --steps=160 --seed_steps=40 --unsup_steps=40 --interval=40
      --report_every=40 --steady_from=120 --profile_length=4 --profile_repeats=1)
  START=(--warm=1 --steps=2000 --config.log_every=1000 --config.eval_every=1000)
else
  E2E=(--envs=8,32,256 --updates=4,8,32 --seed_counts=4,16,64)
  MJX=(--host_envs=64 --mjx_envs=1,64,1024)
  ROOF=(--peak_n=8192 --stream_mb=1024 --updates=64 --rounds=20)
  VS=(--rewards=mlp,cnn --seeds=0,1,2 --study_seeds=5
      --tasks=drawer-open,drawer-open-mjx --steps=2000 --seed_steps=250
      --unsup_steps=250 --interval=500 --report_every=250 --steady_from=1250
      --frames=raycast)
  START=(--warm=2)
fi
if [[ -n "${ERLVLM_CHECKOUT:-}" && -n "${ERLVLM_PYTHON:-}" ]]; then
  VS+=(--sides=theirs,erljax)
else
  VS+=(--sides=erljax)
fi
end=$((SECONDS + BUDGET))
section() {  # name command...: runs the command in what is left of BUDGET
  local name=$1 left=$((end - SECONDS)); shift
  if ((left < 30)); then echo "== $name: skipped, ${left}s left"; return; fi
  echo "== $name (${left}s left)"
  timeout --kill-after=10 "$left" "$@" 2>&1 | tee "$DEST/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]}"
}
for name in $SECTIONS; do
  case $name in
    e2e) section e2e $PY -m benchmarks.end_to_end "${E2E[@]}" \
           --out="$DEST/end_to_end.json" ;;
    mjx) section mjx $PY -m benchmarks.metaworld_envs "${MJX[@]}" \
           --out="$DEST/metaworld_envs.json" ;;
    roofline) section roofline $PY -m benchmarks.roofline "${ROOF[@]}" \
           --bf16 --out="$DEST/roofline.json" ;;
    vs_authors) section vs_authors $PY -m benchmarks.vs_authors.run \
           "${VS[@]}" --out="$DEST/vs_authors.json" ;;
    startup) section startup $PY -m benchmarks.startup "${START[@]}" \
           --out="$DEST/startup.json" ;;
  esac
done
