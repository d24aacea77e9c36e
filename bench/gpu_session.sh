#!/usr/bin/env bash
# Device session for the performance issue (6), in two calls that each fit one 10-minute command:
#   bash bench/gpu_session.sh A   # correctness of --cuda-graph / --deterministic, profile, cgan target
#   bash bench/gpu_session.sh B   # acgan-dcgan, the graphed profile, --compile inside the graph
# Run from the repo root on a CUDA machine whose python3 has torch/torchvision; writes $OUT/gpu_log_<part>.txt.
# Cheapest and most important evidence first, so a session cut short still answers the main question.
# Each step's command and exit status go in the log (124: its time ran out); the script's own exit
# status is the first failed step's.
set -o pipefail
part=${1:-A}
case "$part" in
  A|B) ;;
  *) echo "gpu_session.sh: part must be A or B, got '$part'" >&2; exit 2 ;;
esac
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
B="--window 50 --warmup 2 --windows 3"
failed=0
step() {  # step SECONDS COMMAND...: run it with a time limit (then a KILL 10 s later, as the
          # scripts stop cleanly on SIGTERM and may take a while), and log what ran and how it ended
  local limit=$1; shift
  echo "\$ $*"
  timeout -k 10 "$limit" "$@"
  local status=$?
  echo "-> exit $status"
  [ "$status" -eq 0 ] || [ "$failed" -ne 0 ] || failed=$status
}
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
if [ "$part" = A ]; then
  echo "== A1. does --cuda-graph train the same model as plain steps?"
  step 75 python3 bench/compare_runs.py --model cgan -b 64 -i 30 --second=--cuda-graph
  echo "== A2. where the plain step's time goes (device busy vs wall)"
  step 75 python3 bench/profile_step.py --model cgan -b 256 --precision bf16 --channels-last
  echo "== A3. cgan b256 bf16 channels_last --cuda-graph vs seed-001 loop (the issue's target)"
  step 150 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last \
      --cuda-graph $B
  echo "== A4. the same without --cuda-graph, and fp32 with it"
  step 45 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last $B --skip-seed
  step 45 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision fp32 --cuda-graph $B --skip-seed
  echo "== A5. does --deterministic repeat exactly?"
  step 60 python3 bench/compare_runs.py --model cgan -b 64 -i 30 --first=--deterministic --second=--deterministic
else
  echo "== B1. acgan-dcgan b64 bf16 --cuda-graph vs seed-001 loop"
  step 100 python3 bench/train_throughput.py --model acgan-dcgan -b 64 -d cuda --precision bf16 \
      --channels-last --cuda-graph $B
  echo "== B2. where the graphed step's time goes"
  step 75 python3 bench/profile_step.py --model cgan -b 256 --precision bf16 --channels-last --cuda-graph
  echo "== B3. compiled (fused) kernels inside the graph"
  step 180 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last \
      --cuda-graph --compile $B --skip-seed
fi
exit $failed
} 2>&1 | tee "$OUT/gpu_log_$part.txt"
