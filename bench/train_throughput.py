"""Training throughput: anime-gan's fast path vs a faithful re-implementation of seed 001's loop.

    python bench/train_throughput.py --model acgan-dcgan -b 64 -d cpu --precision bf16
    python bench/train_throughput.py --model cgan -b 256 -d cuda --precision bf16 --channels-last

The fast path is `anime-gan train` itself (packed cache on the device, device-side batches, no
per-step host syncs); its images/s come from stats.jsonl windows after warm-up.  The seed-001 loop
follows seed 001's train.py step by step: a batch drawn with replacement and decoded file by file
in the main process (with PIL, where seed 001 used cv2), fake labels drawn with numpy on the host,
G run twice (new noise and labels for the G step), D's loss backpropagated through G too (no
detach), .item() on the class loss before D's backward and on both losses after, fp32, cuDNN
autotuning off.  Where it is kinder to the seed it says so (vectorised one-hots; no per-step progress
print).  Both use the same networks and losses from anime_gan.models.  Prints images/s (median of
windows), the ratio, and peak memory (allocated on GPU, RSS on CPU), each loop measured in a
process of its own so that neither figure holds the other's (or the data preparation's) memory.
Last, the arithmetic per image of each (FLOPs counted by torch.utils.flop_counter): where the
convolutions set the pace, as in fp32 on a CPU, their ratio is about the most the fast path can gain.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from _common import require, run_cli
from anime_gan import losses
from anime_gan.data.formats import scan
from anime_gan.distributed import pick_device
from anime_gan.errors import UserError
from anime_gan.labels import anime_schema
from anime_gan.models import PRESETS, ModelConfig, aux_kind, build

# The seed-001 loop below is one Adam D step and one G step of a conditional GAN with a plain
# (BCE or hinge) loss: comparing it with WGAN critics, gradient penalties or a VAE would compare
# different algorithms, not two implementations of one.
COMPARABLE = [name for name, p in PRESETS.items()
              if p.conditional and p.optimizer == "adam" and p.n_critic == 1 and p.loss in ("bce", "hinge")]


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_own_process(loop, *args) -> tuple[list[float], float]:
    """(rates, peak memory in MiB) of `loop(*args)` run in a fresh process: RSS is a process's peak
    so far, so two loops measured in one process would share theirs."""
    ctx = multiprocessing.get_context("spawn")  # a fork would inherit this process's memory and CUDA state
    results = ctx.Queue()
    child = ctx.Process(target=_measure, args=(results, loop, *args))
    child.start()
    try:
        child.join()
    except KeyboardInterrupt:  # the child had the Ctrl-C too; it must not outlive us in our temp folder
        child.terminate()
        child.join()
        raise
    if child.exitcode != 0:  # its own error line is already on stderr
        sys.exit(child.exitcode if child.exitcode > 0 else 1)
    return results.get()


def _measure(results, loop, *args) -> None:
    try:
        rates = loop(*args)
    except KeyboardInterrupt:  # the parent says "interrupted"; a second traceback from here says nothing
        sys.exit(130)
    results.put((rates, peak_memory_mb(torch.device(args[0].device))))


def fast_path(args, data: Path, out: Path) -> list[float]:
    window = args.window
    iters = window * (args.warmup + args.windows)
    cmd = ["train", "-t", str(data), "-s", str(out / "s"), "-c", str(out / "c"), "--name", "bench",
           "--model", args.model, "-b", str(args.batch_size), "-d", args.device, "--nf", str(args.nf),
           "-i", str(iters), "--log-every", str(window), "--sample", str(10**9), "--check", str(10**9),
           "--precision", args.precision, "--no-ema", "-q"]
    cmd += ["--channels-last"] if args.channels_last else []
    cmd += ["--compile"] if args.compile else []
    cmd += ["--cuda-graph"] if args.cuda_graph else []
    run_cli(cmd)  # (a Ctrl-C or SIGTERM makes train save and return early, with status 0)
    stats = [json.loads(l) for l in (out / "c" / "bench" / "stats.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in stats[args.warmup:args.warmup + args.windows] if not r.get("partial")]
    if len(rates) < args.windows:
        sys.exit(f"train_throughput.py: the fast path stopped after {len(rates)} of {args.windows} measured "
                 f"windows (interrupted?); no figures")
    return rates


class SeedDataset(torch.utils.data.Dataset):
    """Seed 001's data path: open, resize and normalise one file per sample on every access."""

    def __init__(self, files, labels, size):
        self.files, self.labels, self.size = files, labels, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(self.files[i]).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1).permute(2, 0, 1)
        return x, torch.from_numpy(self.labels[i])


def seed_batches(dataset: SeedDataset, batch: int, steps: int, workers: int):
    """Seed 001's Shuffler: each batch `batch` indices drawn with replacement, decoded one by one in
    this process.  --workers N decodes in N DataLoader processes instead: not seed 001, and faster."""
    if workers == 0:
        for _ in range(steps):
            items = [dataset[i] for i in np.random.choice(len(dataset), batch)]
            yield torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
        return
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batch * steps)
    yield from torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers)


@dataclass
class SeedParts:
    """What seed 001's train.py builds before its loop: the networks, their optimizers, the loss."""
    G: torch.nn.Module
    D: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    loss: str
    aux: str | None
    class_sizes: tuple
    fake_labels: object  # batch size -> one-hot labels drawn from the data's priors, on the device


def seed001_parts(model: str, nf: int, data: Path, device: torch.device) -> SeedParts:
    schema = anime_schema()
    hair_prob, eye_prob = (np.load(data / f"{g}_prob.npy") for g in ("hair", "eye"))

    def fake_labels(b):  # numpy on the host, as seed 001 (which filled the one-hots in a Python loop)
        hair = np.random.choice(len(hair_prob), b, p=hair_prob / hair_prob.sum())
        eye = np.random.choice(len(eye_prob), b, p=eye_prob / eye_prob.sum())
        return torch.cat([F.one_hot(torch.from_numpy(hair), 12), F.one_hot(torch.from_numpy(eye), 10)],
                         1).float().to(device)
    mcfg = ModelConfig(cond_dim=schema.dim, class_sizes=schema.class_sizes, nf=nf, image_size=64)
    torch.manual_seed(0)
    G, D = (m.to(device) for m in build(model, mcfg))
    preset = PRESETS[model]
    return SeedParts(G, D, torch.optim.Adam(G.parameters(), lr=preset.glr, betas=preset.betas),
                     torch.optim.Adam(D.parameters(), lr=preset.dlr, betas=preset.betas), preset.loss,
                     aux_kind(model, mcfg), mcfg.class_sizes, fake_labels)


def seed001_step(parts: SeedParts, real: torch.Tensor, labels: torch.Tensor):
    """One iteration of seed 001's train.py; returns (d_loss, g_loss), still on the device."""
    G, D, opt_G, opt_D, loss, aux, class_sizes, fake_labels = (
        parts.G, parts.D, parts.opt_G, parts.opt_D, parts.loss, parts.aux, parts.class_sizes, parts.fake_labels)
    b, device = real.shape[0], real.device
    # D step: G's output is not detached, so D's loss backpropagates through G as well (its
    # gradients are then zeroed by the G step), as in seed 001
    y_fake = fake_labels(b)
    fake = G(torch.randn(b, 100).to(device), y_fake)
    real_adv, real_cls = D(real, labels)
    fake_adv, _ = D(fake, y_fake)
    d_loss = losses.d_loss(loss, real_adv, fake_adv)
    if aux:
        class_loss = losses.class_loss(aux, real_cls, labels, class_sizes)
        class_loss.item()  # seed 001 logs it here, before the backward: a host sync
        d_loss = d_loss + class_loss
    opt_D.zero_grad()
    d_loss.backward()
    opt_D.step()
    # G step: new noise and labels, G run again
    y_fake = fake_labels(b)
    fake_adv, fake_cls = D(G(torch.randn(b, 100).to(device), y_fake), y_fake)
    g_loss = losses.g_loss(loss, fake_adv)
    if aux:
        g_loss = g_loss + losses.class_loss(aux, fake_cls, y_fake, class_sizes)
    opt_G.zero_grad()
    g_loss.backward()
    opt_G.step()
    return d_loss, g_loss


def seed001_loop(args, data: Path) -> list[float]:
    device = torch.device(args.device)
    total = args.window * (args.warmup + args.windows)
    src = scan(data)
    batches = seed_batches(SeedDataset(src.files, src.labels, 64), args.batch_size, total, args.workers)
    parts = seed001_parts(args.model, args.nf, data, device)
    history, rates, seen, t0 = [], [], 0, time.perf_counter()
    for step, (real, labels) in enumerate(batches, 1):
        real, labels = real.to(device), labels.to(device)
        b = real.shape[0]
        d_loss, g_loss = seed001_step(parts, real, labels)
        history.append((d_loss.item(), g_loss.item()))  # a host sync every step
        seen += b
        if step % args.window == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            rates.append(seen / (now - t0))
            seen, t0 = 0, now
    return rates[args.warmup:]


def gflop_per_image(args, data: Path, out: Path) -> tuple[float, float]:
    """GFLOP per image and iteration (convolutions and matmuls, as torch.utils.flop_counter counts
    them) of the fast path and of the seed-001 loop, on batches of 2 in fp32 on the CPU: the counts
    are the same on any device.  The fast path's is `train` for 2 iterations minus 1, so that the
    set-up and the last step's sample grid cancel out."""
    b, totals = 2, []
    for iters in (1, 2):
        cmd = ["train", "-t", data, "-s", out / "s", "-c", out / "c", "--name", f"flops{iters}", "--model",
               args.model, "-b", b, "-d", "cpu", "--nf", args.nf, "-i", iters, "--no-ema", "-q"]
        with FlopCounterMode(display=False) as counter:
            run_cli(cmd)
        totals.append(counter.get_total_flops())
    parts = seed001_parts(args.model, args.nf, data, torch.device("cpu"))
    src = scan(data)
    real, labels = next(seed_batches(SeedDataset(src.files, src.labels, 64), b, 1, 0))
    with FlopCounterMode(display=False) as counter:
        seed001_step(parts, real, labels)
    return (totals[1] - totals[0]) / b / 1e9, counter.get_total_flops() / b / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="acgan-dcgan", choices=COMPARABLE, help="(default acgan-dcgan)")
    p.add_argument("-b", "--batch-size", type=int, default=64, help="(default 64)")
    p.add_argument("-d", "--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="the fast path's; the seed loop is always fp32 (default fp32)")
    p.add_argument("--nf", type=int, default=64, help="network width (default 64)")
    p.add_argument("--channels-last", action="store_true", help="the fast path in channels_last memory format")
    p.add_argument("--compile", action="store_true", help="the fast path with torch.compile")
    p.add_argument("--cuda-graph", action="store_true", help="record the step as a CUDA graph (GPU only)")
    p.add_argument("--window", type=int, default=10, help="steps per timing window (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="windows discarded as warm-up (default 1)")
    p.add_argument("--windows", type=int, default=3, help="windows measured; the median is reported (default 3)")
    p.add_argument("--images", type=int, default=2000, help="built-in faces to train on (default 2000)")
    p.add_argument("--workers", type=int, default=0,
                   help="decode the seed-001 loop's batches in N worker processes (default 0: in the main "
                        "process, as seed 001 does; more is kinder to the seed than seed 001 was)")
    p.add_argument("--skip-seed", action="store_true", help="only measure the fast path")
    p.add_argument("--rounds", type=int, default=1,
                   help="time the two loops N times, alternating, and print each round's ratio and their "
                        "median: on a shared machine the load changes between two loops timed once (default 1)")
    args = p.parse_args()
    require(p, args.batch_size >= 1 and args.nf >= 1, "-b and --nf must be at least 1")
    require(p, args.window >= 1 and args.windows >= 1 and args.warmup >= 0,
            "--window and --windows must be at least 1, --warmup at least 0")
    require(p, args.workers >= 0, f"--workers must be at least 0, got {args.workers}")
    require(p, args.rounds >= 1, f"--rounds must be at least 1, got {args.rounds}")
    require(p, args.images >= args.batch_size, f"--images {args.images} is fewer than one batch of "
            f"{args.batch_size}: the built-in set must hold a batch")
    try:
        device = pick_device(args.device)
    except UserError as e:
        p.error(str(e))
    args.device = str(device)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        run_cli(["prepare", "--synthetic", str(args.images), "-o", str(data), "-q"])
        memory = "peak GPU memory allocated" if device.type == "cuda" else "peak RSS"
        ratios = []
        for r in range(1, args.rounds + 1):
            # Rounds alternate the loops, so that a change in the machine's load meets both of them.
            round_ = f" (round {r} of {args.rounds})" if args.rounds > 1 else ""
            rates, fast_mem = in_own_process(fast_path, args, data, Path(tmp) / f"round{r}")
            fast = statistics.median(rates)
            print(f"anime-gan fast path: {args.model} b={args.batch_size} {args.device} {args.precision}"
                  f"{' channels_last' if args.channels_last else ''}{' compile' if args.compile else ''}"
                  f"{' cuda_graph' if args.cuda_graph else ''}: "
                  f"{fast:,.0f} img/s, {memory} {fast_mem:,.0f} MiB{round_}", flush=True)
            if args.skip_seed:
                continue
            # (a fresh process: cuDNN autotuning is off, as seed 001 left it; the fast path turns it on)
            rates, seed_mem = in_own_process(seed001_loop, args, data)
            seed = statistics.median(rates)
            print(f"seed-001 loop:       {args.model} b={args.batch_size} {args.device} fp32: {seed:,.0f} img/s, "
                  f"{memory} {seed_mem:,.0f} MiB{round_}")
            ratios.append(fast / seed)
            print(f"speed-up: {ratios[-1]:.2f}x{round_}", flush=True)
        if args.skip_seed:
            return
        if args.rounds > 1:
            print(f"speed-up, median of {args.rounds} rounds: {statistics.median(ratios):.2f}x")
        fast_gflop, seed_gflop = gflop_per_image(args, data, Path(tmp))
        print(f"arithmetic per image and iteration: fast path {fast_gflop:.2f} GFLOP, seed-001 loop "
              f"{seed_gflop:.2f} GFLOP ({seed_gflop / fast_gflop:.2f}x: what the fast path saves where "
              f"the convolutions set the pace, as in fp32 on a CPU)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # (in the seed loop: the fast path's stop is train's own, see fast_path)
        print("train_throughput.py: interrupted; no figures", file=sys.stderr)
        sys.exit(130)
