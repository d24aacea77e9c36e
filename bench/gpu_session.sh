#!/usr/bin/env bash
# Device session for the performance issue (6), in two calls that each fit one 10-minute command:
#   bash bench/gpu_session.sh A   # correctness of --cuda-graph / --deterministic, profile, cgan target
#   bash bench/gpu_session.sh B   # acgan-dcgan, the graphed profile, --compile inside the graph
# Run from the repo root on a CUDA machine whose python3 has torch/torchvision; writes $OUT/gpu_log_<part>.txt.
# Cheapest and most important evidence first, so a session cut short still answers the main question.
part=${1:-A}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B="--window 50 --warmup 2 --windows 3"
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
if [ "$part" = A ]; then
  echo "== A1. does --cuda-graph train the same model as plain steps?"
  timeout 75 python3 bench/compare_runs.py --model cgan -b 64 -i 30 --second=--cuda-graph
  echo "== A2. where the plain step's time goes (device busy vs wall)"
  timeout 75 python3 bench/profile_step.py --model cgan -b 256 --precision bf16 --channels-last
  echo "== A3. cgan b256 bf16 channels_last --cuda-graph vs seed-001 loop (the issue's target)"
  timeout 120 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last \
      --cuda-graph $B --workers 8
  echo "== A4. the same without --cuda-graph, and fp32 with it"
  timeout 45 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last $B --skip-seed
  timeout 45 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision fp32 --cuda-graph $B --skip-seed
  echo "== A5. does --deterministic repeat exactly?"
  timeout 60 python3 bench/compare_runs.py --model cgan -b 64 -i 30 --first=--deterministic --second=--deterministic
else
  echo "== B1. acgan-dcgan b64 bf16 --cuda-graph vs seed-001 loop"
  timeout 100 python3 bench/train_throughput.py --model acgan-dcgan -b 64 -d cuda --precision bf16 \
      --channels-last --cuda-graph $B --workers 8
  echo "== B2. where the graphed step's time goes"
  timeout 75 python3 bench/profile_step.py --model cgan -b 256 --precision bf16 --channels-last --cuda-graph
  echo "== B3. compiled (fused) kernels inside the graph"
  timeout 180 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last \
      --cuda-graph --compile $B --skip-seed
fi
} 2>&1 | tee "$OUT/gpu_log_$part.txt"
