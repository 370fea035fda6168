#!/usr/bin/env bash
# Fill .whl with the pinned wheels that a GPU machine without them needs for
# benchmarks/gpu_suite.sh (it has torch, h5py, scikit-image, psutil and pyyaml): monai,
# nibabel, isal and their own requirements, for CPython 3.12 on x86-64 Linux. Run it on a
# machine that reaches PyPI, in the repository root; .whl is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -oE "\"$1==[^\"]+\"" pyproject.toml | tr -d '"'; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  "$(pin monai)" "$(pin nibabel)" "$(pin isal)"
ls .whl
