#!/usr/bin/env bash
# The one prepared GPU check (issue: the GPU path), for a machine lent with a CUDA GPU for a few minutes:
#   bash bench/gpu_check.sh OUT_DIR
# Runs, in about 8 minutes on one H100: the CUDA tests, one torchrun/NCCL epoch, the training-throughput benchmark
# (Polar vs the paper-style loop, ResNet-20/56 at batch 128/512) and a full-CIFAR-10 ResNet-56 duel; every figure
# lands as JSON under OUT_DIR. It installs what the machine lacks from wheels/ (carried with the repository) and
# extracts the CIFAR-10 JPEG archive when it is carried as cifar10-jpeg.tar.gz.
set -uo pipefail
out="${1:?usage: bash bench/gpu_check.sh OUT_DIR}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$out/log.txt"; }

for module in thop pandas pytest; do
    python3 -c "import $module" 2>/dev/null || python3 -m pip install -q --no-index --find-links wheels "$module" \
        || log "could not install $module"
done
python3 -m pip install -q --no-deps -e . || log "could not install polar"
if [ -f cifar10-jpeg.tar.gz ] && [ ! -d data/cifar10/train ]; then
    mkdir -p data/cifar10 && tar xzf cifar10-jpeg.tar.gz -C data/cifar10
fi
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"

log "pytest -m cuda"
timeout 120 python3 -m pytest -q -m cuda -p no:cacheprovider --junitxml "$out/cuda_tests.xml" tests/test_cuda.py \
    > "$out/cuda_tests.txt" 2>&1; log "pytest exit $?"

log "torchrun, NCCL, one tiny epoch"
timeout 90 torchrun --nproc_per_node 1 -m polar train --model resnet20 --dataset cifar10 --subset 100 --epochs 1 \
    --preset demo --device cuda --out "$out/torchrun_run" --quiet > "$out/torchrun.txt" 2>&1; log "torchrun exit $?"

for model in resnet20 resnet56; do
    for batch in 128 512; do
        log "throughput $model batch $batch"
        timeout 100 python3 bench/train_throughput.py --device cuda --model "$model" --batch-size "$batch" \
            --repeats 3 --out "$out/throughput_${model}_b${batch}" > "$out/throughput_${model}_b${batch}.txt" 2>&1
    done
done

log "ResNet-56 duel from scratch on full CIFAR-10"
timeout 240 python3 bench/duel.py --device cuda --model resnet56 --epochs 8 --out "$out" > "$out/duel.txt" 2>&1
log "duel exit $?"
log "done"
