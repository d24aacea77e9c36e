"""Do two GPU runs of the same seed train the same model?  (GPU only; prints, does not time.)

    python bench/compare_runs.py --model cgan -b 64 -i 30 --second=--cuda-graph
    python bench/compare_runs.py --first=--deterministic --second=--deterministic

Trains the same seed twice, with the flags in --first and in --second, and prints both runs'
losses per step and the largest weight difference at the end.
- Plain steps against `--cuda-graph`: the graph replays the kernels the plain step launches, so
  the runs should agree to rounding (cuDNN may pick other algorithms per run). A difference that
  grows to the size of the losses means the replay is wrong.
- `--deterministic` twice: the difference should be exactly 0.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from _common import require, run_cli


def train(args, data: Path, out: Path, name: str, flags: list[str]):
    cmd = ["train", "-t", str(data), "-s", str(out / "s"), "-c", str(out / "c"), "--name", name,
           "--model", args.model, "-b", str(args.batch_size), "-d", "cuda", "-i", str(args.iterations),
           "--log-every", "1", "--check", str(args.iterations), "--sample", str(args.iterations),
           "--precision", args.precision, "--seed", "3", "--no-ema", "-q"]
    run_cli(cmd + flags)
    run = out / "c" / name
    stats = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    weights = torch.load(run / f"G_{args.iterations}.ckpt", weights_only=True)["G"]
    return stats, weights


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cgan")
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("-i", "--iterations", type=int, default=30)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--first", default="", help="train flags of the first run (default: none)")
    p.add_argument("--second", default="--cuda-graph", help="train flags of the second run")
    args = p.parse_args()
    require(p, args.iterations >= 1 and args.batch_size >= 1, "-i and -b must be at least 1")
    if not torch.cuda.is_available():
        print("compare_runs.py needs a CUDA GPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        run_cli(["prepare", "--synthetic", "500", "-o", str(data), "-q"])
        first, w_first = train(args, data, Path(tmp), "first", args.first.split())
        second, w_second = train(args, data, Path(tmp), "second", args.second.split())
    keys = [k for k in first[0] if k.endswith("loss")]
    print(f"{args.model} b={args.batch_size} {args.precision}, first [{args.first}] / second [{args.second}]: "
          f"step, " + ", ".join(f"{k} first/second" for k in keys))
    for a, b in zip(first, second):
        print(f"  {a['step']:3d}  " + "  ".join(f"{a[k]:.5f}/{b[k]:.5f}" for k in keys))
    worst = max((w_first[k].float() - w_second[k].float()).abs().max().item() for k in w_first)
    scale = max(w_first[k].float().abs().max().item() for k in w_first)
    print(f"largest |G weight difference| after {args.iterations} steps: {worst:.2e} (largest weight {scale:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
