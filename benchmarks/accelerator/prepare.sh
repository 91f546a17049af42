#!/usr/bin/env bash
# Run HERE, in erljax's environment, before asking for a device machine:
# downloads the wheels the lent H200 lacks (wheels.txt), at the versions
# installed here and for its Python 3.12, into .whl/ at the repository root
# and keeps .whl/ out of git, so a device call can carry it:
#   . .venv/bin/activate && bash benchmarks/accelerator/prepare.sh
# then, with the device tool (benchmarks/README.md, "On a lent accelerator"):
#   run(command="bash benchmarks/accelerator/run.sh", carry=[".whl"], timeout_s=590)
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PY=${PYTHON:-python3}
$PY - benchmarks/accelerator/wheels.txt > .whl/pins.txt <<'PY'
import sys
from importlib import metadata
for line in open(sys.argv[1]):
  name = line.split("#")[0].strip()
  if name:
    print(f"{name}=={metadata.version(name)}")
PY
xargs $PY -m pip download < .whl/pins.txt \
  --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d .whl
du -sh .whl
