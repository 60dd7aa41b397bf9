#!/usr/bin/env bash
# Issue #34 on the lent GPU, in one or two calls of the device tool (a second call on the still-warm
# machine resumes the first: every phase keeps its state under runs/gpu/).
#
#   bash experiments/gpu_checks/tables_and_verdict.sh BUDGET_S [RESERVE_S]   # this call's seconds
#
# Phases, in order (the per-phase plan is in experiments/search_quality/README.md):
#   1. the CUDA tests (queued op timing, kind factors fitted on a GPU table, every mixing mode);
#   2. experiments/cuda_tables --measure: ops timed alone (before) and queued (after), two families'
#      random networks end to end, on a quiet GPU (nothing else runs);
#   3. the equal-latency study at 96 px (experiments/search_quality/run.py): L1's seeds train while
#      the supernet does, then S and O, S's seeds, the randoms; no training starts later than
#      RESERVE_S (170) before this call's budget ends, so the report is written inside it.
# What comes back under $OUT: log.txt, gpu_util.csv, cuda_raw.json, cuda_result.md, study.tar.gz
# (the study's result, configs, trajectories, logs and times; no weights).
set -u -o pipefail
BUDGET=${1:-560}
RESERVE=${2:-170}   # no training starts in the call's last RESERVE seconds (a 2-epoch training's length)
START=$SECONDS
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT" runs/gpu
LOG=$OUT/log.txt
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || echo "wheel install failed (see log)" | tee -a "$LOG"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
FMNIST=$PWD/.fmnist
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 >>"$OUT/gpu_util.csv" 2>/dev/null &
SMI=$!

left() { echo $((BUDGET - (SECONDS - START))); }
step() {   # step NAME LIMIT_S CMD...
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s, $(left) s left) $(date +%T)" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" >>"$LOG" 2>&1
    echo "=== $name: exit $? in $((SECONDS - t0)) s" | tee -a "$LOG"
}

step env 30 bash -c 'nvidia-smi -L; python3 -c "import torch, timm, numpy, optuna; print(torch.__version__, timm.__version__, numpy.__version__, optuna.__version__, torch.cuda.get_device_name())"'
if [ ! -f runs/gpu/cuda_tests.ok ]; then
    step cuda-tests 120 python3 -m pytest -q -p no:cacheprovider -o addopts="" \
        tests/lut/test_backends.py::test_cuda_runner_times_with_events \
        tests/lut/test_backends.py::test_a_cuda_table_fits_its_kind_factors \
        tests/supernets/test_supernet.py::test_every_mixing_trains_on_a_gpu \
        tests/nas/test_train_model.py::test_training_on_cuda_with_bf16 && touch runs/gpu/cuda_tests.ok
fi
if [ ! -f runs/gpu/cuda_tables/raw.json ]; then
    step cuda-tables 200 python3 experiments/cuda_tables/run.py --measure --samples 25 --rounds 4 --out runs/gpu/cuda_tables
fi
cp runs/gpu/cuda_tables/raw.json "$OUT/cuda_raw.json" 2>/dev/null
cp runs/gpu/cuda_tables/result.md "$OUT/cuda_result.md" 2>/dev/null

STUDY_LIMIT=$(( $(left) - 20 ))
HOURS=$(python3 -c "print(max(1e-4, ($STUDY_LIMIT - $RESERVE) / 3600))")   # --hours 0 would mean no limit
if [ "$STUDY_LIMIT" -gt 60 ]; then
    step study-96px "$STUDY_LIMIT" python3 experiments/search_quality/run.py --data "fashion-mnist:$FMNIST" \
        --img-size 96 --supernet-epochs 2 --epochs 2 --randoms 12 --seeds 8 --step-candidates 0 \
        --inherited-seeds 0 --variants S --batch-size 256 --jobs 8 --eval-threads 4 --hours "$HOURS" \
        --work runs/gpu/sq96 --results runs/gpu/sq96/results
fi
tar czf "$OUT/study.tar.gz" --exclude='*.pt' --exclude='*.partial' runs/gpu/sq96 2>/dev/null
kill $SMI 2>/dev/null
echo "=== done in $((SECONDS - START)) s $(date +%T)" | tee -a "$LOG"
