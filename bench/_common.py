"""What every bench script shares: running an anime-gan command in-process, and refusing flags that
would make a benchmark hang or divide by zero with the usual one-line argparse error."""
from __future__ import annotations

import sys

from anime_gan.cli import main as cli


def run_cli(args: list[str]) -> None:
    """`anime-gan ARGS` in this process; on failure its own one-line error stands, with its exit status."""
    status = cli([str(a) for a in args])
    if status:
        sys.exit(status)


def require(parser, ok: bool, message: str) -> None:
    if not ok:
        parser.error(message)  # usage and "error: message", exit status 2
