#!/usr/bin/env bash
# One device session for the performance issue (6): about 7 minutes on an H100/H200.
# Run from the repo root on a CUDA machine whose python3 has torch/torchvision; writes $OUT/gpu_log.txt.
# Order: cheapest evidence first, so a session cut short still answers the main question.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
log="$OUT/gpu_log.txt"
B="--window 50 --warmup 2 --windows 3"
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
echo "== 1. does --cuda-graph train the same model as plain steps? does --deterministic repeat exactly?"
timeout 90 python3 bench/compare_runs.py --model cgan -b 64 -i 30 --second=--cuda-graph
timeout 90 python3 bench/compare_runs.py --model cgan -b 64 -i 30 --first=--deterministic --second=--deterministic
echo "== 2. where the plain step's time goes (device busy vs wall)"
timeout 90 python3 bench/profile_step.py --model cgan -b 256 --precision bf16 --channels-last
echo "== 3. cgan b256 bf16 channels_last --cuda-graph vs seed-001 loop (the issue's target)"
timeout 150 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last \
    --cuda-graph $B --workers 8
echo "== 4. the same without --cuda-graph, and fp32 with it"
timeout 60 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last $B --skip-seed
timeout 60 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision fp32 --cuda-graph $B --skip-seed
echo "== 5. acgan-dcgan b64 bf16 --cuda-graph vs seed-001 loop"
timeout 120 python3 bench/train_throughput.py --model acgan-dcgan -b 64 -d cuda --precision bf16 --channels-last \
    --cuda-graph $B --workers 8
echo "== 6. where the graphed step's time goes"
timeout 90 python3 bench/profile_step.py --model cgan -b 256 --precision bf16 --channels-last --cuda-graph
echo "== 7. compiled (fused) kernels inside the graph"
timeout 150 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last \
    --cuda-graph --compile $B --skip-seed
} 2>&1 | tee "$log"
