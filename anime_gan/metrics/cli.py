"""`anime-gan train-judge` and `anime-gan eval`: parse into a config, call one library function,
print the result (a table, or one JSON object with --json)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..config import IMAGE_SIZES
from .config import METRICS, EvalConfig, JudgeConfig


def add_eval_parsers(sub, make, dry_run) -> None:
    p = make(sub, "train-judge", "train the attribute classifier that `eval` scores generators with",
             "Train a small CNN on the data folder's real images, one head per label group, with a "
             "seeded held-out split, and save it as <data>/judge_<size>.pt (with its schema and "
             "held-out accuracy). `eval` trusts a judge only as far as that accuracy goes: "
             "aim for >= 0.98 per group. An empty data folder gets the built-in faces first.",
             ["anime-gan train-judge                             # ./data -> data/judge_64.pt",
              "anime-gan train-judge -t data/clevr --epochs 20 -d cuda",
              "anime-gan train-judge -t data -o data/judge_wide.pt --width 64"])
    j = JudgeConfig()
    p.add_argument("-t", "--train_dir", "--train-dir", default=j.train_dir,
                   help=f"data folder (default {j.train_dir})")
    p.add_argument("-o", "--out", default=None, help="judge file to write (default <data>/judge_<size>.pt)")
    p.add_argument("--image-size", type=int, default=j.image_size, choices=IMAGE_SIZES,
                   help=f"resolution it judges; must match the generator's (default {j.image_size})")
    p.add_argument("--epochs", type=int, default=j.epochs,
                   help=f"passes over the training split (default {j.epochs})")
    p.add_argument("-b", "--batch-size", type=int, default=j.batch_size,
                   help=f"batch size (default {j.batch_size})")
    p.add_argument("--lr", type=float, default=j.lr,
                   help=f"peak Adam learning rate, one-cycle schedule (default {j.lr:g})")
    p.add_argument("--width", type=int, default=j.width, help=f"first conv's channels (default {j.width})")
    p.add_argument("--features", type=int, default=j.features,
                   help=f"penultimate width, the judge-FID feature size (default {j.features})")
    p.add_argument("--heldout", type=float, default=j.heldout,
                   help=f"held-out fraction (default {j.heldout:g})")
    p.add_argument("--seed", type=int, default=j.seed,
                   help=f"seed of the split and the weights (default {j.seed})")
    p.add_argument("-d", "--device", default=j.device, help="cuda, cpu or auto (default auto)")
    p.add_argument("--synthetic-size", type=int, default=j.synthetic_size,
                   help=f"built-in faces to draw when the data folder is empty (default {j.synthetic_size})")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result (with its notes)")
    dry_run(p)

    p = make(sub, "eval", "score a generator: attribute accuracy, FID, judge-feature FID",
             "Evaluate a run folder's latest G_<N>.ckpt (or a checkpoint file) against its data "
             "folder. Metrics:\n"
             "  accuracy   the judge's per-group and joint accuracy on -k fakes per label combination\n"
             "             (or per --conditions entry), and the worst combinations\n"
             "  fid        Inception-v3 FID; needs torchvision's inception_v3_google-0cc3c7bd.pth\n"
             "             in $TORCH_HOME/hub/checkpoints or --inception-weights (nothing downloads)\n"
             "  judge-fid  FID on the judge's penultimate features (offline)\n"
             "  intra-fid  judge-feature FID per class (fakes asked for it vs reals of it)\n"
             "  diversity  pixel gap of fakes with one label and two z over that of real images with\n"
             "             one label: 1 = as varied as the data, 0 = collapse in z (needs no judge)\n"
             "Real-image statistics are cached in <data>/cache/. Every evaluation appends one line to "
             "<run>/metrics.jsonl.",
             ["anime-gan eval -d checkpoints/acgan-dcgan_onehot_nf64_64px_seed0",
              "anime-gan eval -d RUN --metrics accuracy judge-fid intra-fid diversity   # fully offline",
              "anime-gan eval -d RUN --inception-weights ~/inception_v3_google-0cc3c7bd.pth --json",
              "anime-gan eval -d checkpoints/clevr --conditions new_test.json -k 4"])
    e = EvalConfig()
    p.add_argument("-d", "--model_dir", "--model-dir", default=e.model_dir, metavar="RUN_OR_CKPT",
                   help="run folder (latest G_<N>.ckpt) or a checkpoint file (default: the only run in "
                        "checkpoints/)")
    p.add_argument("-t", "--train_dir", "--train-dir", default=None,
                   help="data folder (default: the one the checkpoint was trained on)")
    p.add_argument("--judge", default=None, help="judge file (default <data>/judge_<size>.pt)")
    p.add_argument("--metrics", nargs="+", default=e.metrics, choices=METRICS, metavar="NAME",
                   help=f"which metrics (default all: {' '.join(METRICS)})")
    p.add_argument("-k", type=int, default=e.k, help=f"fakes per label combination (default {e.k})")
    p.add_argument("--conditions", metavar="FILE.json",
                   help="score these label lists (seed 003's test.json) instead of every combination")
    p.add_argument("--fid-samples", type=int, default=e.fid_samples,
                   help=f"fakes for the FIDs, labels drawn from the real set; FIDs compare only at equal "
                        f"numbers (default {e.fid_samples})")
    p.add_argument("--min-class", type=int, default=e.min_class,
                   help=f"intra-class FID skips classes with fewer samples (default {e.min_class})")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="torchvision's Inception-v3 weights file for FID (default: torch.hub's cache)")
    p.add_argument("-b", "--batch-size", type=int, default=e.batch_size,
                   help=f"batch size (default {e.batch_size})")
    p.add_argument("--device", default=e.device, help="cuda, cpu or auto (default auto)")
    p.add_argument("--seed", type=int, default=e.seed, help=f"noise and label seed (default {e.seed})")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=e.ema,
                   help="evaluate the EMA weights when the checkpoint has them (default on)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    dry_run(p)


def _config(cls, args):
    values = vars(args)
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def run_eval_command(args) -> int:
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if args.command == "train-judge":
        from .judge import check_judge, format_report, judge_file, train_judge
        cfg = _config(JudgeConfig, args)
        if args.dry_run:
            check_judge(cfg)
            return _print({**dataclasses.asdict(cfg), "resolved": {"out": str(judge_file(cfg))}})
        _, report = train_judge(cfg, log)
        print(format_report(report))
        return 0
    if args.command == "eval":
        from .evaluate import check_eval, note_unused_flags, run_eval
        cfg = _config(EvalConfig, args)
        if args.dry_run:  # the checkpoint is loaded on the CPU, as `test --dry-run` does
            import torch

            from .inception import find_weights
            checked = check_eval(cfg, torch.device("cpu"))
            note_unused_flags(cfg, log)
            weights = find_weights(cfg.inception_weights) if "fid" in cfg.metrics else None
            return _print({**dataclasses.asdict(cfg), "resolved": {  # the files the real run reads
                "checkpoint": str(checked.path), "step": checked.step, "data": str(checked.root),
                "judge": str(checked.judge_path) if checked.judge_path else None,
                "inception_weights": str(weights) if weights else None}})
        record = run_eval(cfg, log, warn=lambda msg: print(msg, file=sys.stderr))
        print(json.dumps(record) if cfg.json else format_table(record))
        return 0
    raise SystemExit(f"unknown command {args.command}")


def _print(d: dict) -> int:
    print(json.dumps(d, indent=2))
    return 0


def format_table(record: dict) -> str:
    m = record["metrics"]
    lines = [f"{record['checkpoint']} (step {record['step']}) on {record['data']}"]
    if "accuracy" in m:
        a = m["accuracy"]
        lines.append(f"attribute accuracy ({a['conditions']} conditions x {a['k']} images, "
                     f"judge {record['judge']})")
        for name, v in a.items():
            if isinstance(v, float):
                lines.append(f"  {name:<20} {v:.3f}")
        ties = a.get("worst_ties", 0)
        lines.append(f"  worst: ({ties} conditions tie at joint {a['worst'][0]['joint']:.2f}; "
                     f"{len(a['worst'])} shown)" if ties > len(a["worst"]) else "  worst:")
        for w in a["worst"]:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in w.items() if k != "label")
            lines.append(f"    {w['label']:<30} {parts}")
    for key, title in (("fid", "FID (Inception-v3)"), ("judge_fid", "FID (judge features)")):
        if key in m:
            lines.append(f"{title:<22} {m[key]:.3f}")
    if "intra_fid" in m:
        i = m["intra_fid"]
        if not i["classes"] and not i["skipped"]:
            lines.append(f"{'intra-class FID':<22} n/a (needs one-of-N labels)")
        else:
            mean = "n/a" if i["mean"] is None else f"{i['mean']:.3f}"
            lines.append(f"{'intra-class FID mean':<22} {mean}  ({len(i['classes'])} classes; "
                         f"{i['skipped']} skipped with < {i['min_class']} samples)")
        groups: dict[str, list[str]] = {}
        for name, v in i["classes"].items():
            g, c = name.split("/", 1)
            groups.setdefault(g, []).append(f"{c} {v:.1f}")
        lines += [f"  {g}: " + ", ".join(v) for g, v in groups.items()]
    if "diversity" in m:
        d = m["diversity"]
        if d["ratio"] is None:
            lines.append(f"{'diversity in z':<22} n/a (no two real images share a label)")
        else:
            lines.append(f"{'diversity in z':<22} {d['ratio']:.3f}  (fakes with one label differ by "
                         f"{d['fake']:.3f} per pixel, real images with one label by {d['real']:.3f}; "
                         f"{d['pairs']} pairs)")
    lines.append(f"({record['seconds']} s; appended to metrics.jsonl)")
    return "\n".join(lines)
