"""How fast `prepare` packs images, and how much faster the packed cache feeds training than
decoding files per sample.

    python bench/prepare_throughput.py            # 2000 built-in faces at 64px, batch 128
    python bench/prepare_throughput.py --n 500 --batches 20

Prints, for N built-in faces:
  * prepare --synthetic N        (draw the faces + pack them)           images/s
  * prepare SOURCE -o OUT        (scan, decode, resize, pack, copy)     images/s
  * loader batches/s and images/s at the batch size for
      - Batches over the packed cache on cpu: on_device='on' (what 'auto' picks on cpu: one tensor over
        the mapped file, index_select per batch) and 'off' (sorted fancy-index reads of the memmap)
      - FileImages + torch DataLoader (decode one file per sample), num_workers 0 and 2
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from _common import require
from anime_gan.config import PrepareConfig
from anime_gan.data.dataset import Batches, FileImages, open_packed
from anime_gan.data.formats import scan
from anime_gan.data.prepare import prepare


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def time_batches(next_batch, batches: int, warmup: int = 2) -> float:
    """Seconds per batch, after `warmup` batches (worker start-up, page cache) are drawn."""
    for _ in range(warmup):
        next_batch()
    _, seconds = timed(lambda: [next_batch() for _ in range(batches)])
    return seconds / batches


def epochs(loader):
    while True:
        yield from loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="built-in faces to draw (default 2000)")
    parser.add_argument("--size", type=int, default=64, choices=(32, 64, 128), help="cache resolution (default 64)")
    parser.add_argument("--batch-size", type=int, default=128, help="loader batch size (default 128)")
    parser.add_argument("--batches", type=int, default=200, help="batches timed per packed loader (default 200)")
    parser.add_argument("--file-batches", type=int, default=10, help="batches timed per file loader (default 10)")
    parser.add_argument("--workers", type=int, default=0, help="prepare decoding threads (default: one per core)")
    args = parser.parse_args()
    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size), ("--batches", args.batches),
                        ("--file-batches", args.file_batches)):
        require(parser, value >= 1, f"{flag} must be at least 1")
    require(parser, args.workers >= 0, f"--workers must be at least 0, got {args.workers}")
    require(parser, args.n >= args.batch_size, f"--n {args.n} is fewer than one batch of {args.batch_size}: "
            f"the file loader (drop_last) would yield nothing")

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), N={args.n}, {args.size}px, batch {args.batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        built, copied = Path(tmp) / "builtin", Path(tmp) / "copy"
        _, t_synth = timed(lambda: prepare(PrepareConfig(out=str(built), synthetic=args.n, image_size=args.size,
                                                         workers=args.workers, quiet=True)))
        _, t_prep = timed(lambda: prepare(PrepareConfig(source=str(built), out=str(copied), image_size=args.size,
                                                        workers=args.workers, quiet=True)))
        print(f"prepare --synthetic {args.n:<6}   {t_synth:7.2f} s  {args.n / t_synth:9.0f} images/s  (draw + pack)")
        print(f"prepare SOURCE -o OUT       {t_prep:7.2f} s  {args.n / t_prep:9.0f} images/s  "
              f"(scan, decode, resize, pack, copy)")

        print(f"\nloader on cpu, batch {args.batch_size:<22}  batches/s   images/s")
        packed = open_packed(copied, args.size)
        for mode in ("on", "off"):
            batches = Batches(packed, args.batch_size, "cpu", torch.Generator().manual_seed(0), on_device=mode)
            per = time_batches(lambda: next(batches), args.batches)
            where = "index_select" if mode == "on" else "sorted memmap reads"
            print(f"  Batches, on_device={mode:<3} ({where:<19}) {1 / per:9.1f} {args.batch_size / per:10.0f}")

        files = FileImages(scan(copied), args.size)
        for workers in (0, 2):
            loader = torch.utils.data.DataLoader(files, batch_size=args.batch_size, shuffle=True,
                                                 num_workers=workers, drop_last=True, persistent_workers=workers > 0)
            it = epochs(loader)
            per = time_batches(lambda: next(it), args.file_batches)
            print(f"  FileImages + DataLoader, num_workers {workers}  {1 / per:9.1f} {args.batch_size / per:10.0f}")


if __name__ == "__main__":
    main()
