#!/usr/bin/env bash
# The GPU proof in one prepared run (issue: prove the GPU targets): cohort inference at
# 160x384x384 (default and wide network, cohortseg against the stock MONAI recipe, with the
# network-alone limit), the training loop at 128^3 batch 2 (full loop against the device-only
# step), whole-volume 160x384x384 training (bf16, batch 1, default and wide network: peak GPU
# memory and step time), one DDP step with NCCL (world size 1), a federated site's local round
# on the device (the ClientApp's round with training.device cuda; it says `skipped` where there
# is no CUDA device), and the host's core-seconds per volume. Every figure goes to OUT/figures.txt as `part.name: value unit`, each part's raw log
# to OUT/<part>.log.
#
#   benchmarks/gpu_suite.sh OUT                      # on a GPU machine: about 8 minutes at most
#   benchmarks/gpu_suite.sh OUT --device cpu --tiny  # the same parts at tiny sizes (CI runs it)
#
# It runs $PYTHON (default python3). A GPU machine without monai, nibabel or isal installs them
# from the folder .whl that `scripts/gpu_wheels.sh` fills beforehand (one line, on a machine
# that reaches PyPI).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu_suite.sh OUT [--device cpu|cuda] [--tiny]}
shift
device=cuda
tiny=0
while [ $# -gt 0 ]; do
  case $1 in
    --device) device=$2; shift 2 ;;
    --tiny) tiny=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
: >"$out/figures.txt"
py=${PYTHON:-python3}
if [ -d .whl ] && ! "$py" -c "import monai, nibabel, isal" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/cohortseg-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/cohortseg-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
failed=0

# run PART TIMEOUT_S ARGS...: one part, its log, its figures prefixed with the part's name
run() {
  local part=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$py" "$@" >"$out/$part.log" 2>&1
  local rc=$?
  grep -E '^[A-Za-z0-9_.]+: ' "$out/$part.log" | sed "s/^/$part./" >>"$out/figures.txt"
  echo "$part.exit_status: $rc" >>"$out/figures.txt"
  echo "$part.wall: $((SECONDS - start)) s" >>"$out/figures.txt"
  [ "$rc" -eq 0 ] || failed=1
}

if [ "$tiny" -eq 1 ]; then
  vol=(--shape 24 32 32) n=2 patch=(16 16 16) whole=(32 32 32) steps=2 site_patch=(16 16 16)
else
  vol=(--shape 160 384 384) n=12 patch=(128 128 128) whole=(160 384 384) steps=10
  site_patch=(64 64 64)
fi
run infer_default 150 benchmarks/infer_throughput.py --device "$device" --n "$n" "${vol[@]}"
run infer_wide 120 benchmarks/infer_throughput.py --device "$device" --n $((n / 2 > 2 ? n / 2 : 2)) \
  "${vol[@]}" --network wide
run train_patch 60 benchmarks/train_throughput.py --device "$device" \
  --patch-size "${patch[@]}" --batch 2 --steps "$steps" --warmup 2
run train_whole_default 60 benchmarks/train_throughput.py --device "$device" --patch-size full \
  --shape "${whole[@]}" --batch 1 --steps 2 --warmup 1 --activation-checkpointing
run train_whole_wide 60 benchmarks/train_throughput.py --device "$device" --patch-size full \
  --shape "${whole[@]}" --batch 1 --steps 2 --warmup 1 --activation-checkpointing --network wide
run ddp_step 30 benchmarks/ddp_step.py --device "$device" --patch-size "${patch[@]}"
run federated_round 60 benchmarks/federated_round.py --device "$device" \
  --patch-size "${site_patch[@]}" --steps "$steps"
run host_budget 60 benchmarks/host_budget.py "${vol[@]}" --repeats 2
echo "suite.exit_status: $failed" >>"$out/figures.txt"
cat "$out/figures.txt"
exit "$failed"
