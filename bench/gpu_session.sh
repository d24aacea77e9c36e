#!/usr/bin/env bash
# One device session: throughput benchmarks (issue 6) and two short quality runs (docs/results.md).
# Run from the repo root on a CUDA machine whose python3 has torch/torchvision; writes to $OUT.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
log="$OUT/gpu_log.txt"
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
echo "== cgan b256 bf16 channels_last vs seed-001 loop"
timeout 150 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last \
    --window 50 --warmup 2 --windows 3 --workers 8
echo "== cgan b256 fp32 (fast path only)"
timeout 60 python3 bench/train_throughput.py --model cgan -b 256 -d cuda --precision fp32 \
    --window 50 --warmup 2 --windows 3 --skip-seed
echo "== acgan-dcgan b64 bf16 vs seed-001 loop"
timeout 120 python3 bench/train_throughput.py --model acgan-dcgan -b 64 -d cuda --precision bf16 \
    --channels-last --window 50 --warmup 2 --windows 3 --workers 8
mkdir -p /tmp/q && cd /tmp/q
python3 -m anime_gan prepare --synthetic 2000 -o data -q
for m in cgan projection; do
  echo "== quality run $m"
  timeout -s INT 75 python3 -m anime_gan train --model $m -d cuda -b 64 -i 8000 --sample 1000 \
      --check 4000 --precision bf16 --channels-last -q
  run=$(ls checkpoints | grep "^$m")
  tail -2 checkpoints/$run/stats.jsonl
  last=$(ls samples/$run | grep fake_step | sort -t_ -k3 -n | tail -1)
  cp samples/$run/$last "$OUT/${m}_$last"
  cp checkpoints/$run/loss.png "$OUT/${m}_loss.png"
  python3 -m anime_gan test -t fix_noise -d checkpoints/$run -s "$OUT/$m" --device cuda && cp "$OUT/$m/fix_noise.png" "$OUT/${m}_fix_noise.png"
  rm -rf "$OUT/$m"
done
} 2>&1 | tee "$log"
