"""Where a training step's time goes: device busy time vs wall time, and kernel launches per step.

    python bench/profile_step.py --model cgan -b 256 -d cuda --precision bf16 --channels-last
    python bench/profile_step.py --model cgan -b 256 -d cuda --cuda-graph

Runs `anime-gan train` three times under torch.profiler (a warm-up run, then SHORT and LONG steps), and reports the
difference divided by LONG - SHORT, so setup costs cancel out.  On a GPU, if the device is busy for
much less than the wall time of a step, the step is bound by launch/host overhead (CUDA graphs
help); if it is busy for nearly all of it, the kernels themselves are the cost (bf16, fusion and
channels_last help).  On a CPU it counts leaf aten ops per step instead of kernels, and times
each aten op by its own time (without the ops it calls).
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from _common import require, run_cli
from anime_gan.distributed import pick_device
from anime_gan.errors import UserError
from anime_gan.models import PRESETS


def profiled_run(args, data: Path, out: Path, steps: int, name: str):
    cmd = ["train", "-t", str(data), "-s", str(out / "s"), "-c", str(out / "c"), "--name", name,
           "--model", args.model, "-b", str(args.batch_size), "-d", args.device, "--nf", str(args.nf),
           "-i", str(steps), "--log-every", str(steps), "--sample", str(10**9), "--check", str(10**9),
           "--precision", args.precision, "--no-ema", "-q"]
    cmd += ["--channels-last"] if args.channels_last else []
    cmd += ["--cuda-graph"] if args.cuda_graph else []
    cuda = args.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        run_cli(cmd)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernels = collections.Counter()  # calls per kernel (GPU) or aten op (CPU) name
    busy = collections.Counter()  # microseconds per name
    leaves = 0  # on the CPU: aten ops that call no other op (the CPU's "kernels")
    for e in prof.events():
        if cuda and e.device_type != torch.autograd.DeviceType.CPU:
            kernels[e.name] += 1
            busy[e.name] += e.device_time
        elif not cuda and e.name.startswith("aten::"):
            # Self time: an op's own work without the ops it calls. A convolution calls aten::empty
            # for its output, so counting leaf ops only would leave the convolutions out.
            kernels[e.name] += 1
            busy[e.name] += e.self_cpu_time_total
            leaves += not e.cpu_children
    return wall, kernels, busy, leaves if not cuda else sum(kernels.values())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cgan", choices=list(PRESETS))
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("-d", "--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--nf", type=int, default=64)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--short", type=int, default=10, help="steps of the first run")
    p.add_argument("--long", type=int, default=60, help="steps of the second run")
    p.add_argument("--images", type=int, default=2000)
    args = p.parse_args()
    require(p, 1 <= args.short < args.long, "--long must be more steps than --short (at least 1)")
    require(p, args.images >= 1 and args.batch_size >= 1 and args.nf >= 1, "--images, -b and --nf must be at least 1")
    try:  # before the slow prepare, not after it in train's name
        pick_device(args.device)
    except UserError as e:
        p.error(str(e))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        run_cli(["prepare", "--synthetic", str(args.images), "-o", str(data), "-q"])
        profiled_run(args, data, Path(tmp), args.short, "warm")  # warm caches (cuDNN, allocator, imports)
        w1, k1, b1, n1 = profiled_run(args, data, Path(tmp), args.short, "short")
        w2, k2, b2, n2 = profiled_run(args, data, Path(tmp), args.long, "long")
    n = args.long - args.short
    wall_ms = (w2 - w1) / n * 1e3
    per_step = {k: (k2[k] - k1.get(k, 0)) / n for k in k2}
    busy_ms = {k: (b2[k] - b1.get(k, 0)) / n / 1e3 for k in b2}
    unit = "kernels" if args.device.startswith("cuda") else "leaf aten ops"
    print(f"{args.model} b={args.batch_size} {args.device} {args.precision}"
          f"{' channels_last' if args.channels_last else ''}{' cuda_graph' if args.cuda_graph else ''}")
    if wall_ms <= 0:  # the two runs' noise exceeded LONG - SHORT steps of work
        print(f"wall per step: not measurable ({wall_ms:.2f} ms); the machine is too noisy for "
              f"--long {args.long}: use more steps")
    else:
        print(f"wall per step (profiled, so slower than unprofiled): {wall_ms:.2f} ms "
              f"= {args.batch_size / wall_ms * 1e3:,.0f} img/s")
    share = f" ({100 * sum(busy_ms.values()) / wall_ms:.0f}% of wall)" if wall_ms > 0 else ""
    print(f"{unit} per step: {(n2 - n1) / n:.0f}; busy per step: {sum(busy_ms.values()):.2f} ms{share}")
    print("top kernels by time per step:" if args.device.startswith("cuda") else
          "top aten ops by own time per step (without the ops they call):")
    for name, ms in sorted(busy_ms.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {ms:8.3f} ms  {per_step[name]:6.1f}x  {name[:100]}")


if __name__ == "__main__":
    sys.exit(main())
