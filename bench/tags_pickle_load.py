"""How long the restricted unpickler takes over a seed-001 style tags.pickle ({i: 22-dim tensor}).

    python bench/tags_pickle_load.py              # 33,000 entries, the size of seed 001's data set
    python bench/tags_pickle_load.py --n 5000

Prints the file size, the time of the opcode pass alone (nesting and memo checks) and of the whole
load (opcode pass + unpickling, where each tensor's storage is a torch.load of its own).
"""
from __future__ import annotations

import argparse
import pickle
import tempfile
import time
import warnings
from pathlib import Path

import torch

from _common import require
from anime_gan import safe_pickle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=33_000, help="entries (default 33000)")
    args = parser.parse_args()
    require(parser, args.n >= 1, "--n must be 1 or more")
    hair, eye = torch.eye(12), torch.eye(10)
    tags = {i: torch.cat([hair[i % 12], eye[i % 10]]) for i in range(args.n)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tags.pickle"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path.write_bytes(pickle.dumps(tags, protocol=4))
        size_mb = path.stat().st_size / 1e6
        start = time.perf_counter()
        with open(path, "rb") as f:
            safe_pickle.check_opcodes(f)
        opcodes = time.perf_counter() - start
        start = time.perf_counter()
        loaded = safe_pickle.load(path)
        whole = time.perf_counter() - start
    assert len(loaded) == args.n
    print(f"{args.n} entries ({size_mb:.1f} MB): opcode pass {opcodes:.1f} s, whole load {whole:.1f} s "
          f"({whole / args.n * 1e3:.2f} ms per entry)")


if __name__ == "__main__":
    main()
