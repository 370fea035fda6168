#!/usr/bin/env bash
# Install MONAI Label 0.8.5 into a virtual environment of its own (default .venv-monailabel),
# beside, never into, the project's pinned stack, with cohortseg installed there without its
# dependencies so that MONAI Label's `monaibundle` app can run cohortseg's exported bundles.
#
#   scripts/install_monailabel.sh [VENV]
#
# Why its own environment, and why these pins (all found by installing it here, 2026-11-30):
#   - monailabel 0.8.5 brings monai 1.6.1, numpy 1.26, ITK, mlflow, sam2 and some 150 packages;
#   - it imports torchvision at start; PyPI's torchvision 0.28 does not load beside the CPU
#     build of torch 2.13.0 the project pins ('operator torchvision::nms does not exist'), so
#     this environment takes torch 2.14.1 with torchvision 0.29.1 (a CUDA build, ~5.5 GB, that
#     runs on the CPU);
#   - its DICOM module imports pydicom-seg, which needs pydicom < 3, and so dicomweb-client and
#     pynetdicom releases of the pydicom 2 era.
# The first install downloads several GB and takes about 20 minutes here.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-monailabel}
python=${PYTHON:-python3}
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q monailabel==0.8.5 torch==2.14.1 torchvision==0.29.1
"$venv/bin/python" -m pip install -q pydicom==2.4.4 dicomweb-client==0.59.1 pynetdicom==2.0.2 \
  isal==1.9.1 h5py==3.16.0
"$venv/bin/python" -m pip install -q --no-deps .
"$venv/bin/monailabel" --help >/dev/null
touch "$venv/.installed"
