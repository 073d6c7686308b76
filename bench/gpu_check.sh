#!/usr/bin/env bash
# The one prepared GPU check (issue: the GPU path), for a machine lent with a CUDA GPU for a few minutes:
#   bash bench/gpu_check.sh WORK_DIR [SECONDS]
# Within SECONDS (default 540) on one H100 it runs, each step under its own time limit so the last always ends:
#   1. the training-throughput benchmark on an otherwise idle GPU (Polar vs the paper-style loop, ResNet-20 at batch
#      128/512, ResNet-56 at batch 128);
#   2. in the background from then on, the ResNet-20 baseline for polar.pretrained (the shipped recipe at 160 epochs;
#      checkpointed every epoch, so a run the deadline cuts short is finished with `polar train --resume`);
#   3. beside it: the CUDA tests (pytest -m cuda), one torchrun/NCCL epoch and a full-CIFAR-10 ResNet-56 duel.
# Every figure lands as JSON or text under WORK_DIR (pack it: the device tool returns at most 8 files). It installs
# what the machine lacks from wheels/ (carried with the repository) and extracts cifar10-jpeg.tar.gz when carried.
set -uo pipefail
work="${1:?usage: bash bench/gpu_check.sh WORK_DIR [SECONDS]}"
budget="${2:-540}"
start=$(date +%s)
mkdir -p "$work"
cd "$(dirname "$0")/.."
left() { echo $((budget - ($(date +%s) - start))); }
log() { echo "[gpu_check +$(($(date +%s) - start))s] $*" | tee -a "$work/log.txt"; }

export PYTHONPATH="$PWD:/tmp/polar-site" PYTHONUNBUFFERED=1
python3 -c "import thop" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --target /tmp/polar-site \
    wheels/thop-*.whl || log "could not install thop"
if [ -f cifar10-jpeg.tar.gz ] && [ ! -d data/cifar10/train ]; then
    mkdir -p data/cifar10 && tar xzf cifar10-jpeg.tar.gz -C data/cifar10
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc
  python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"; } > "$work/device.txt" 2>&1
python3 -c "import polar; print(polar.load_images('cifar10', data_dir='data', download=False).source)" \
    >> "$work/device.txt" 2>&1
log "device: $(tr '\n' ' ' < "$work/device.txt")"

for run in "resnet20 128" "resnet20 512" "resnet56 128"; do
    set -- $run
    log "throughput $1 batch $2"
    timeout 75 python3 bench/train_throughput.py --device cuda --model "$1" --batch-size "$2" --steps 150 \
        --warmup 20 --repeats 2 --out "$work/throughput_$1_b$2" > "$work/throughput_$1_b$2.txt" 2>&1
    log "throughput exit $?"
done

log "baseline ResNet-20 in the background until $((budget - 15))s"
timeout $(($(left) - 15)) python3 -m polar train --model resnet20 --dataset cifar10 --reg none --lam 0 \
    --preset demo --epochs 160 --batch-size 128 --lr 0.1 --lr-schedule cosine --weight-decay 5e-4 --no-bn-wd \
    --seed 0 --device cuda --out "$work/baseline-resnet20" --quiet > "$work/baseline.txt" 2>&1 &
baseline=$!

log "pytest -m cuda"
timeout 100 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py > "$work/cuda_tests.txt" 2>&1
log "pytest exit $?"
sed -i -E 's#[^ ]*/polar-site/#<site-packages>/#g' "$work/cuda_tests.txt"  # results/ names no machine's paths

log "torchrun, NCCL, one tiny epoch"
timeout 60 torchrun --nproc_per_node 1 -m polar train --model resnet20 --dataset cifar10 --subset 100 --epochs 1 \
    --preset demo --device cuda --out "$work/torchrun_run" --quiet > "$work/torchrun.txt" 2>&1
log "torchrun exit $?"

log "ResNet-56 duel from scratch on full CIFAR-10"
timeout $(($(left) - 20)) python3 bench/duel.py --device cuda --model resnet56 --epochs 8 --out "$work" \
    > "$work/duel.txt" 2>&1
log "duel exit $?"

wait "$baseline"
log "baseline exit $? after $(tail -n +2 "$work/baseline-resnet20/metrics.csv" 2>/dev/null | wc -l) epochs"
log "done"
