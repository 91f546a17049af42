#!/usr/bin/env bash
# Makes the venv the ERL-VLM authors' code runs in for benchmarks.vs_authors:
#   git clone https://github.com/tunglm2203/erlvlm /path/to/erlvlm
#   git -C /path/to/erlvlm checkout 1f9aa3a2a1a89ffa552df9613a069db042ecd7fa
#   bash benchmarks/vs_authors/prepare.sh /path/to/erlvlm [VENV]
# VENV defaults to /tmp/erlvlm-venv; its bin/python is run.py's
# --their_python. Their requirements.txt pins Python 3.9 and CUDA torch
# 1.13; this installs, for the Python that runs it (PYTHON, default python3):
#   torch          TORCH (default 2.13.0: the CPU wheel; on a GPU machine
#                  TORCH="torch --index-url ..." picks a CUDA build)
#   mujoco 2.3.6, gymnasium 0.29.1, gym 0.26.2, imageio 2.36.1,
#   glfw 2.8.0     as their requirements.txt pins them (their vendored
#                  metaworld uses the `mujoco` bindings through Gymnasium's
#                  MujocoEnv; mujoco-py, also in their list, is imported
#                  by none of the files train_PEBBLE_VLM.py reaches)
#   hydra-core 1.3.2, omegaconf 2.3.0  their 1.1.1 / 2.1.2 do not import on
#                  Python 3.11 (a dataclass with a mutable default); 1.3
#                  reads their config unchanged
#   numpy<2, scipy, scikit-learn, tqdm, termcolor, tensorboard, pillow
#                  what their imports need, unpinned
# Nothing is written into the checkout.
set -euo pipefail
CHECKOUT=${1:?usage: prepare.sh CHECKOUT [VENV]}
VENV=${2:-/tmp/erlvlm-venv}
PIN=1f9aa3a2a1a89ffa552df9613a069db042ecd7fa
head=$(git -C "$CHECKOUT" rev-parse HEAD)
if [[ "$head" != "$PIN" ]]; then
  echo "$CHECKOUT is at $head, not $PIN: git -C $CHECKOUT checkout $PIN" >&2
  exit 2
fi
PY=${PYTHON:-python3}
$PY -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q ${TORCH:-torch==2.13.0} \
  mujoco==2.3.6 gymnasium==0.29.1 gym==0.26.2 imageio==2.36.1 glfw==2.8.0 \
  hydra-core==1.3.2 omegaconf==2.3.0 "numpy<2" scipy scikit-learn tqdm \
  termcolor tensorboard pillow
"$VENV/bin/python" -c "import torch, mujoco, gymnasium, hydra; print('torch', torch.__version__, 'mujoco', mujoco.__version__)"
echo "their python: $VENV/bin/python"
