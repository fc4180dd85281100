#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one script sized for a short lease (about 6 minutes on an H100):
#   1. the PSB vs SAVi training-step benchmark on CUDA, the CPU table's config (float32) and a
#      GPU-sized config (bfloat16);
#   2. the whole test suite with CUDA present (the CUDA-only tests run; `--device auto` picks CUDA);
#   3. the default pretraining run on CUDA (bfloat16 autocast), timed, then evaluated;
#   4. a one-process torchrun on the NCCL backend.
#
#   bash benchmarks/cuda_checks.sh [OUT_DIR [all|speed|checks]]   # default: runs/cuda_checks all
#
# "speed" runs step 1 only, "checks" steps 2-4 (so that other GPU work can share the card after the
# timings). Results go to OUT_DIR (log.txt, the JSON files); each step runs even if an earlier one failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/cuda_checks}"
phase="${2:-all}"
mkdir -p "$out"
py="${PYTHON:-python3}"
log="$out/log.txt"
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, report the exit status and time
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "=== $name: $*" | tee -a "$log"
    timeout "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
}

{ nvidia-smi -L; "$py" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"; } \
    2>&1 | tee -a "$log"

if [[ $phase == all || $phase == speed ]]; then
step train_speed_small 120 "$py" benchmarks/train_speed.py --device cuda --ts 6 12 24 48 --batch-size 8 \
    --image-size 32 --window 4 --num-slots 8 --repeats 7 --out "$out/train_speed_cuda.json"
step train_speed_large 90 "$py" benchmarks/train_speed.py --device cuda --bf16 --ts 6 12 24 48 --batch-size 32 \
    --image-size 64 --window 8 --num-slots 8 --slot-dim 256 --num-blocks 4 --repeats 7 \
    --no-memory --out "$out/train_speed_cuda_large.json"
fi
if [[ $phase == all || $phase == checks ]]; then
step tests 240 "$py" -m pytest -q -p no:cacheprovider tests
step pretrain_default 240 "$py" pretrain/train_psb.py --device cuda --no-progress --out "$out/psb"
step torchrun_nccl 90 "$py" -m torch.distributed.run --standalone --nproc_per_node=1 pretrain/train_psb.py \
    --device cuda --steps 20 --eval-every 0 --out "$out/psb_torchrun"
cp "$out/psb/metrics.json" "$out/pretrain_metrics.json" 2>/dev/null
fi
grep -a -E "^\|| T=|passed|failed|error|fg_ari|wrote|===" "$log" | tail -n 60
