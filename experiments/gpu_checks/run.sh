#!/usr/bin/env bash
# Every GPU check of the project in one pass, for the few minutes a GPU machine is lent
# (ENVIRONMENT.md: "prepare one script"). Each step has its own time limit, so one hang or
# failure does not hide the others; everything goes to $OUT/log.txt (or ./gpu_checks.log).
#
#   bash experiments/gpu_checks/run.sh [FASHION_MNIST_DIR]
#
# Steps: the CUDA tests; `nas lut build --device cuda` + `validate` (EfficientFormer, small
# space); nas-vs-timm step time in fp32 and bf16 (the AMP speed ratio); supernet step-time
# overhead on the GPU; one epoch of the paper-scale EfficientFormer supernet on Fashion-MNIST
# (the throughput that sizes the equal-latency study), then `nas train` of an L1 on it.
set -u -o pipefail
OUT=${OUT:-$PWD/gpu_checks_out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
FMNIST=${1:-/usr/share/datasets/fashion-mnist}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nas() { python3 -c 'import sys; from nas.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }
export -f nas
step() {   # step NAME LIMIT_S CMD...
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s) $(date +%T)" | tee -a "$LOG"
    local t0=$SECONDS
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then echo "=== $name: skipped (ONLY)" | tee -a "$LOG"; return; fi
    timeout "$limit" bash -c '"$@"' _ "$@" >>"$LOG" 2>&1
    echo "=== $name: exit $? in $((SECONDS - t0)) s" | tee -a "$LOG"
}

step env 30 bash -c 'nvidia-smi -L; python3 -c "import torch, timm, numpy; print(torch.__version__, timm.__version__, numpy.__version__, torch.cuda.get_device_name())"'
step cuda-tests 120 python3 -m pytest -q -p no:cacheprovider \
    "tests/lut/test_backends.py::test_cuda_runner_times_with_events" \
    "tests/nas/test_train_model.py::test_training_on_cuda_with_bf16"
step train-speed-fp32 45 python3 experiments/train_speed/run.py --device cuda --rounds 3 --steps 20 --batch-size 128
step train-speed-bf16 45 python3 experiments/train_speed/run.py --device cuda --amp bf16 --channels-last \
    --rounds 3 --steps 20 --batch-size 128
step paper-supernet-fmnist-epoch 120 nas train-supernet --space paper --data "fashion-mnist:$FMNIST" --img-size 32 \
    --epochs 1 --batch-size 256 --device cuda --amp bf16 --channels-last --runs "$OUT/runs" --name paper-fmnist --no-progress
step l1-train-fmnist 60 nas train search_spaces/efficientformer/variants/l1.yaml --data "fashion-mnist:$FMNIST" \
    --img-size 32 --epochs 1 --batch-size 256 --device cuda --amp bf16 --channels-last --loader-workers 8 \
    --out "$OUT/runs/l1-fmnist" --no-progress
step supernet-overhead-cuda 60 python3 experiments/supernet_overhead/run.py --device cuda --amp bf16 \
    --batch-size 128 --rounds 3 --out result_cuda.md
cp experiments/supernet_overhead/result_cuda.md "$OUT"/ 2>/dev/null
step lut-build-cuda 90 nas lut build --device cuda --family efficientformer --space small --rounds 3 \
    --calibration-samples 8 --runs "$OUT/runs" --no-progress
step lut-validate-cuda 60 nas lut validate --device cuda --family efficientformer --samples 20 --rounds 3 \
    --runs "$OUT/runs" --no-progress
cp "$OUT"/runs/tables/*.yaml "$OUT"/ 2>/dev/null
for f in "$OUT"/runs/paper-fmnist/metrics.csv "$OUT"/runs/l1-fmnist/metrics.csv; do
    [ -f "$f" ] && { echo "--- $f"; cat "$f"; } | tee -a "$LOG"
done
rm -rf "$OUT/runs"
echo "=== done $(date +%T)" | tee -a "$LOG"
