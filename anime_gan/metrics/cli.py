"""`anime-gan eval` and `anime-gan train-judge` subcommands (placeholder until metrics land)."""


def add_eval_parsers(sub, make, dry_run) -> None:
    return None


def run_eval_command(args) -> int:
    raise SystemExit(f"unknown command {args.command}")
