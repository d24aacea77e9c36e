"""Does `--cuda-graph` train the same model as plain steps?  (GPU only; prints, does not time.)

    python bench/check_cuda_graph.py --model cgan -b 64 -i 30

Trains the same seed twice, with and without --cuda-graph, and prints the per-step loss
difference and the largest weight difference at the end.  The graph replays the kernels the plain
step launches, so the two should agree to rounding (cuDNN may pick other algorithms per run);
a difference that grows to the size of the losses means the replay is wrong.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from anime_gan.cli import main as cli


def train(args, data: Path, out: Path, graph: bool):
    cmd = ["train", "-t", str(data), "-s", str(out / "s"), "-c", str(out / "c"), "--name", "g" if graph else "e",
           "--model", args.model, "-b", str(args.batch_size), "-d", "cuda", "-i", str(args.iterations),
           "--log-every", "1", "--check", str(args.iterations), "--sample", str(args.iterations),
           "--precision", args.precision, "--seed", "3", "--no-ema", "-q"]
    assert cli(cmd + (["--cuda-graph"] if graph else [])) == 0
    run = out / "c" / ("g" if graph else "e")
    stats = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    weights = torch.load(run / f"G_{args.iterations}.ckpt", weights_only=True)["G"]
    return stats, weights


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cgan")
    p.add_argument("-b", "--batch-size", type=int, default=64)
    p.add_argument("-i", "--iterations", type=int, default=30)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("check_cuda_graph.py needs a CUDA GPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        assert cli(["prepare", "--synthetic", "500", "-o", str(data), "-q"]) == 0
        eager, w_eager = train(args, data, Path(tmp), graph=False)
        graph, w_graph = train(args, data, Path(tmp), graph=True)
    keys = [k for k in eager[0] if k.endswith("loss")]
    print(f"{args.model} b={args.batch_size} {args.precision}: step, " + ", ".join(f"{k} eager/graph" for k in keys))
    for e, g in zip(eager, graph):
        print(f"  {e['step']:3d}  " + "  ".join(f"{e[k]:.5f}/{g[k]:.5f}" for k in keys))
    worst = max((w_eager[k].float() - w_graph[k].float()).abs().max().item() for k in w_eager)
    scale = max(w_eager[k].float().abs().max().item() for k in w_eager)
    print(f"largest |G weight difference| after {args.iterations} steps: {worst:.2e} (largest weight {scale:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
