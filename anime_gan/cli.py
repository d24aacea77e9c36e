"""`anime-gan` command line: thin subcommands that parse, validate, and call one library function.

Bad input anywhere ends as one line on stderr and exit status 2 (UserError); nothing else is
caught, so real bugs still show their traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import re
import signal
import sys
from pathlib import Path

from . import __version__
from .config import IMAGE_SIZES, MAX_STEPS, PrepareConfig, TestConfig, TrainConfig
from .errors import UserError, os_error_line, out_of_memory

TEST_TYPES = ("fix_noise", "fix_hair_eye", "change_hair", "change_eye", "interpolate", "pairs", "grid",
              "color_map", "conditions", "samples", "progress")


def _one_line(text: str) -> str:
    """A value the user typed may hold a newline or other control character: show it escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # `--lr -1e-4` and `--gp -inf` are values (refused by their range checks), not unknown options
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$",
                                                   re.IGNORECASE)

    def error(self, message):  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")

    def _get_option_tuples(self, option_string):
        # `--batch` prefixes both --batch_size and --batch-size, which are one option spelled two ways
        # (seed 001's and ours): one match, not "ambiguous option"
        if self._negative_number_matcher.match(option_string):  # -inf is a number, not -i nf
            return []
        seen, unique = set(), []
        for match in super()._get_option_tuples(option_string):
            if id(match[0]) not in seen:
                seen.add(id(match[0]))
                unique.append(match)
        return unique

    def parse_args(self, args=None, namespace=None):
        # argparse reports a flag the subcommand does not know from the top parser: name the subcommand
        ns, extras = self.parse_known_args(args, namespace)
        command = getattr(ns, "command", None)
        prog = f"{self.prog} {command}" if command else self.prog
        if extras:
            self.exit(2, f"{prog}: error: {_one_line('unrecognized arguments: ' + ' '.join(extras))} "
                         f"(see {prog} --help)\n")
        # `-c ''` (an unset shell variable) would read as the current folder, `--hair ''` as no colour:
        # no option takes an empty value
        for action in self._command_parser(command)._actions if command else ():
            if getattr(ns, action.dest, None) == "":
                fix = "give one, or leave the flag out for its default" if action.option_strings else "name a folder"
                name = "/".join(action.option_strings) or action.dest.upper()
                self.exit(2, f"{prog}: error: argument {name}: empty value; {fix} (see {prog} --help)\n")
        return ns

    def _command_parser(self, command: str) -> argparse.ArgumentParser:
        return next(a for a in self._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def _fmt(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _sub(subparsers, name, help, description, examples):
    return subparsers.add_parser(name, help=help, description=description, formatter_class=_fmt,
                                 epilog="examples:\n" + "\n".join(f"  {e}" for e in examples))


def _dry_run(p):
    p.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")


def build_parser() -> argparse.ArgumentParser:
    from .models import PRESETS
    parser = _Parser(prog="anime-gan", formatter_class=_fmt,
                     description="Train conditional GANs that draw anime faces with the hair and eye "
                                 "colours you ask for, and render grids, GIFs and plots of them.",
                     epilog="run `anime-gan COMMAND --help` for each command's flags and examples")
    parser.add_argument("--version", action="version", version=f"anime-gan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    # ---- prepare ------------------------------------------------------------------------------
    p = _sub(sub, "prepare", "pack a data folder (or the built-in faces) for training",
             "Convert any accepted layout (tag-pickle, JSON object/train.json, MLDS tags.csv, plain "
             "image folder) into the tag-pickle layout plus a packed uint8 cache that training "
             "memory-maps. Lists the skipped files (the first 10; all of them in cache/meta_<S>.json) "
             "and the count of each class. A progress bar at a terminal; in a log, a line now and then.",
             ["anime-gan prepare --synthetic 2000 -o data      # the built-in procedural faces",
              "anime-gan prepare ~/mlds/extra_data -o data     # a tag-pickle or tags.csv folder",
              "anime-gan prepare data --image-size 128          # add a 128px cache in place",
              "anime-gan prepare ~/iclevr -o data/clevr --strict"])
    p.add_argument("source", nargs="?", help="folder to read (omit with --synthetic)")
    p.add_argument("-o", "--out", default=None,
                   help="folder to write (default: SOURCE itself, i.e. cache in place; 'data' with --synthetic)")
    p.add_argument("--image-size", type=int, default=64, choices=IMAGE_SIZES, help="cache resolution (default 64)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="draw N built-in procedural anime faces instead of reading SOURCE (default 0: read SOURCE)")
    p.add_argument("--seed", type=int, default=0, help="seed for --synthetic (default 0)")
    p.add_argument("--strict", action="store_true", help="fail if any file has to be skipped")
    p.add_argument("--workers", type=int, default=0, help="decoding threads (default: one per core)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _dry_run(p)

    # ---- train --------------------------------------------------------------------------------
    presets = "\n".join(f"  {k:<12} {v.description}" for k, v in PRESETS.items())
    p = _sub(sub, "train", "train a GAN (built-in faces if the data folder is empty)",
             "Train one of the model presets. Outputs: samples/<run>/real.png and fake_step_<N>.png, "
             "checkpoints/<run>/G_<N>.ckpt, D_<N>.ckpt, loss.png, classifier_loss.png, config.json, "
             "stats.jsonl. Ctrl-C saves a checkpoint; --resume continues the same trajectory.\n\n"
             "models:\n" + presets,
             ["anime-gan train                                   # acgan-dcgan on ./data (built-in faces if empty)",
              "anime-gan train -d cuda -i 50000 --model cgan",
              "anime-gan train --model projection --nf 32 -i 3000 -b 64 --seed 1",
              "anime-gan train --model cgan --embed rgb          # condition on colour RGB values",
              "anime-gan train --model cgan --resume latest      # continue the run with the same flags",
              "torchrun --nproc_per_node 4 -m anime_gan train -d cuda --model sagan"])
    d = TrainConfig()
    p.add_argument("--model", default=d.model, choices=list(PRESETS), metavar="NAME",
                   help=f"model preset (default {d.model}; listed above)")
    p.add_argument("--loss", default=None, choices=("bce", "wgan", "wgan-gp", "hinge", "dragan"),
                   help="adversarial loss (default: the preset's; --dry-run shows it under \"resolved\")")
    p.add_argument("--embed", default=d.embed, choices=("onehot", "pair", "rgb"),
                   help="condition encoding: onehot (22 for anime), pair (one-hot over hair x eye: 120), "
                        f"rgb (the two colours' RGB: 6, any colour at test time) (default {d.embed})")
    p.add_argument("--nf", "--g-conv-dim", type=int, default=d.nf,
                   help=f"network width multiplier: G's, and D's unless --d-nf (default {d.nf})")
    p.add_argument("--d-nf", "--d-conv-dim", type=int, default=d.d_nf, metavar="NF",
                   help="D's own width multiplier (default 0: the same as --nf); seed 003 trained "
                        "SAGAN with --nf 300 --d-nf 100")
    p.add_argument("--z-dim", type=int, default=d.z_dim, help=f"noise size (default {d.z_dim})")
    p.add_argument("--image-size", type=int, default=d.image_size, choices=IMAGE_SIZES,
                   help=f"resolution (default {d.image_size})")
    p.add_argument("-d", "--device", default=d.device, help="cuda, cuda:N, cpu or auto (default: cuda if available)")
    p.add_argument("-i", "--iterations", type=int, default=d.iterations,
                   help=f"generator steps to train to (default {d.iterations})")
    p.add_argument("-b", "--batch_size", "--batch-size", type=int, default=d.batch_size,
                   help=f"batch size per process (default {d.batch_size})")
    p.add_argument("-t", "--train_dir", "--train-dir", default=d.train_dir,
                   help=f"data folder (default {d.train_dir}); an empty folder (or the default, if missing) gets the built-in faces drawn there")
    p.add_argument("-s", "--sample_dir", "--sample-dir", default=d.sample_dir,
                   help=f"where sample grids go (default {d.sample_dir})")
    p.add_argument("-c", "--checkpoint_dir", "--checkpoint-dir", default=d.checkpoint_dir,
                   help=f"where checkpoints and logs go (default {d.checkpoint_dir})")
    p.add_argument("--sample", type=int, default=d.sample, help=f"write a sample grid every N steps (default {d.sample})")
    p.add_argument("--check", type=int, default=d.check, help=f"save a checkpoint every N steps (default {d.check})")
    p.add_argument("--lr", type=float, default=None, help="learning rate of both nets (default: the preset's, 2e-4 for most)")
    p.add_argument("--glr", type=float, default=None, help="generator learning rate (default: --lr)")
    p.add_argument("--dlr", type=float, default=None, help="discriminator learning rate (default: --lr)")
    p.add_argument("--beta", type=float, default=None, help="Adam beta1 (default: the preset's, 0.5 for most)")
    p.add_argument("--aux", "--classification_weight", type=float, default=d.aux,
                   help=f"classification loss weight, ACGAN family (default {d.aux:g})")
    p.add_argument("--mode-seeking", type=float, default=d.mode_seeking, metavar="WEIGHT",
                   help="weight of the MSGAN mode-seeking term: pairs of fakes with one label and "
                        "different z are pushed apart, against collapse in z (default 0 = off; try 1)")
    p.add_argument("--gp", type=float, default=d.gp, metavar="WEIGHT",
                   help=f"gradient-penalty weight of the wgan-gp and dragan losses (default {d.gp:g}; "
                        f"seed 002's ACGAN used 5)")
    p.add_argument("--n-critic", type=int, default=None, help="D steps per G step (default: the preset's)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed; same seed, same run (default {d.seed})")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=d.ema,
                   help="keep an exponential moving average of G for sampling (default on)")
    p.add_argument("--ema-decay", type=float, default=d.ema_decay, help=f"EMA decay (default {d.ema_decay})")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=d.flip,
                   help="random horizontal flips of real images (default on)")
    p.add_argument("--name", default=None,
                   help="run folder name (default: from model, embed, nf, size, seed); not --run, which "
                        "torchrun would take as its own --run-path")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue a run: 'latest' (default when given bare) of the run the flags name, or a run "
                        "folder / G_<N>.ckpt, continued in that folder (or in a new one with --name); "
                        "training flags left out are the snapshot's")
    p.add_argument("--log-every", type=int, default=d.log_every, help=f"stats line every N steps, and at every --check step (default {d.log_every})")
    p.add_argument("--eval-every", type=int, default=d.eval_every,
                   help=f"score the EMA G every N steps with the judge: accuracy (conditional models), "
                        f"judge-FID from 500 fakes, diversity; needs <data>/judge_<size>.pt "
                        f"(default {d.eval_every} = off)")
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=d.tensorboard,
                   help="also write TensorBoard scalars and images (default off; --no-tensorboard: not in this "
                        "session of a run that had it)")
    p.add_argument("--synthetic-size", type=int, default=d.synthetic_size,
                   help=f"built-in faces to draw when the data folder is empty (default {d.synthetic_size})")
    p.add_argument("--keep-d", type=int, default=d.keep_d,
                   help=f"D checkpoints (with optimizer state) to keep; 0 = all (default {d.keep_d})")
    p.add_argument("--precision", default=d.precision, choices=("fp32", "bf16", "fp16"),
                   help="autocast precision (default fp32; bf16 works on CPU and GPU, fp16 on GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (falls back if unsupported)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster on GPU)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="record the whole training step as a CUDA graph after 3 warm-up steps and replay it "
                        "(one GPU, fp32/bf16; with --compile, the compiled kernels are recorded; falls back "
                        "to plain steps if recording fails)")
    p.add_argument("--deterministic", action="store_true",
                   help="GPU: ask for deterministic cuDNN/cuBLAS kernels and skip cuDNN autotuning, so a seed "
                        "repeats bit for bit (slower; CPU runs repeat already at a fixed thread count)")
    p.add_argument("--data-on-device", default=d.data_on_device, choices=("auto", "on", "off"),
                   help=f"copy the packed data set to the training device (GPU memory, or RAM on the CPU) "
                        f"once, instead of reading batches from the memory-mapped cache (auto: if it takes "
                        f"under half the free memory; default {d.data_on_device})")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPU processes under torchrun (NCCL; not on the CPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages")
    _dry_run(p)

    # ---- test ---------------------------------------------------------------------------------
    p = _sub(sub, "test", "draw grids and GIFs from a trained generator",
             "Sample from a trained G (the latest checkpoint of a run folder, or a checkpoint file). "
             "The model and its colour names come from the checkpoint. Prints the paths written. The "
             "hair/eye types need a model trained on hair and eye colours; samples, interpolate "
             "and progress work with any, conditions with any conditional one.\n\n"
             "types:\n"
             "  fix_noise     one noise vector, every hair x eye combination -> fix_noise.png\n"
             "  fix_hair_eye  --hair/--eye fixed, 64 noise vectors -> <hair>_hair_<eye>_eyes.png\n"
             "  change_hair   fixed eye and noise, one column per hair colour -> change_hair_color.png\n"
             "  change_eye    fixed hair and noise, one column per eye colour -> change_eye_color.png\n"
             "  interpolate   between two (noise, label) endpoints -> interpolate.png and .gif\n"
             "                (other labels: two random ones; no labels: two noise vectors)\n"
             "  pairs         rows = hair/eye pairs (--pairs), columns = shared noise -> pairs.png\n"
             "  grid          rows hair x columns eye, per-cell noise -> grid.png\n"
             "  color_map     --embed rgb models: hue sweeps of hair vs eye -> color_map.png\n"
             "  conditions    one image per label list of --conditions FILE.json -> conditions.png\n"
             "  samples       any model: -n rows of 8 new images, a random label per row -> samples.png\n"
             "  progress      the run's fake_step_<N>.png snapshots as an animated GIF -> progress.gif\n"
             "                (each with the step title training gave it; at most 256, evenly spaced)",
             ["anime-gan test -t fix_noise -d checkpoints/acgan-dcgan_onehot_nf64_64px_seed0",
              "anime-gan test -t fix_hair_eye --hair blue --eye red -d checkpoints/RUN",
              "anime-gan test -t change_hair --eye blue -d checkpoints/RUN -n 4",
              "anime-gan test -t pairs --pairs 'blue hair red eyes' 'aqua hair green eyes' -d checkpoints/RUN",
              "anime-gan test -t fix_hair_eye --hair-rgb '#ff8800' --eye-rgb '#00ffaa' -d RGB_RUN",
              "anime-gan test -t samples -n 4 -d checkpoints/ANY_RUN      # also unconditional or CLEVR models",
              "anime-gan test -t progress -d checkpoints/RUN                # -> samples/RUN/progress.gif"])
    t = TestConfig()
    p.add_argument("-t", "--type", default=t.type, choices=TEST_TYPES, metavar="TYPE", help="what to draw (listed above; default fix_noise, or conditions with --conditions)")
    p.add_argument("-d", "--model_dir", "--model-dir", default=t.model_dir,
                   help="run folder (latest G_<N>.ckpt) or a checkpoint file (default: the only run in "
                        "checkpoints/)")
    p.add_argument("-s", "--sample_dir", "--sample-dir", default=t.sample_dir,
                   help="where to write (default: the run's own sample folder, beside its training "
                        "snapshots, e.g. samples/<run>; so runs do not overwrite each other's grids)")
    p.add_argument("--hair", help="hair colour (one of the checkpoint's; random when omitted)")
    p.add_argument("--eye", help="eye colour (one of the checkpoint's; random when omitted)")
    p.add_argument("--to-hair", help="interpolate: end hair colour (default: the start's, or random when no "
                                     "colour flag is given)")
    p.add_argument("--to-eye", help="interpolate: end eye colour (default: as --to-hair)")
    p.add_argument("--hair-rgb", help="any hair colour as '#rrggbb' or 'r,g,b' in 0-255 (--embed rgb models)")
    p.add_argument("--eye-rgb", help="any eye colour as '#rrggbb' or 'r,g,b' in 0-255 (--embed rgb models)")
    p.add_argument("--pairs", nargs="+", default=[], metavar="TAGS", help="pairs: rows such as 'blue hair red eyes' (default: seed 000's five pairs)")
    p.add_argument("--conditions", metavar="FILE.json", help="a JSON list of label lists (seed 003's test.json)")
    p.add_argument("-n", type=int, default=t.n, help=f"change_hair/change_eye/samples: rows; pairs: columns (default {t.n}, at most 64)")
    p.add_argument("--steps", type=int, default=t.steps, help=f"interpolate: number of steps, 2 to {MAX_STEPS} (default {t.steps})")
    p.add_argument("--seed", type=int, default=t.seed,
                   help="seed of the noise and of any colour picked at random, 0 to 2**31-1 (default 0)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=t.ema,
                   help="sample from the EMA weights when the checkpoint has them (default on)")
    p.add_argument("--captions", action=argparse.BooleanOptionalAction, default=t.captions,
                   help="write row/column names on a margin (default on; progress shows the snapshots' own)")
    p.add_argument("--individual", action="store_true", help="also write every image as its own PNG, into a subfolder named like the grid "
                        "(replaced whole: a stopped run leaves the earlier images)")
    p.add_argument("--device", default=t.device, help="cpu, cuda, cuda:N or auto: where to sample (default cpu)")
    _dry_run(p)

    from .metrics.cli import add_eval_parsers
    add_eval_parsers(sub, _sub, _dry_run)
    return parser


def _config(cls, args, renames=None):
    values = vars(args)
    renames = renames or {}
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{f: values[renames.get(f, f)] for f in fields if renames.get(f, f) in values})


def _typed(argv, command: str) -> tuple[str, ...]:
    """The training settings given on the command line, as TrainConfig field names: parsed once more with every
    default suppressed, so what is left was typed."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        action.default = argparse.SUPPRESS
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return tuple(sorted(k for k in vars(parser.parse_args(argv)) if k in fields))


def main(argv=None) -> int:
    prog = "anime-gan"
    try:
        with _interrupt_after_imports():
            args = build_parser().parse_args(argv)  # imports torch for the presets' help
            prog = f"anime-gan {args.command}"
            importlib.import_module(_COMMAND_MODULES[args.command], __package__)
        _expand_home(args)
        with _termination_unwinds():
            return _run(args, argv)
    except UserError as e:
        print(f"{prog}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except Terminated as e:
        print(f"{prog}: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # outside training's own handler (e.g. while preparing data)
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        under_torchrun = os.environ.get("WORLD_SIZE", "1") != "1"
        if type(e).__name__ in ("DistBackendError", "DistNetworkError") or (under_torchrun and "by peer" in str(e)):
            # another process ended (its own message is above), so this one cannot go on; gloo says
            # so with a plain RuntimeError
            print(f"{prog}: error: lost contact with the other training processes ({_one_line(str(e))[:120]}); "
                  f"see the first process's message above; checkpoints already written are intact", file=sys.stderr)
            return 1
        if not out_of_memory(e):
            raise
        print(f"{prog}: error: out of {'GPU ' if 'CUDA' in str(e) else ''}memory; use a smaller -b (or fewer "
              f"samples: -n, -k, --fid-samples), or --precision bf16; saved checkpoints are intact", file=sys.stderr)
        return 2
    except BrokenPipeError:  # our reader left (`| head -1`): what is written stays; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit's flush
        return 1
    except OSError as e:  # the machine, not the code: a full disk, a lost mount, a permission
        print(f"{prog}: error: {os_error_line(e)}", file=sys.stderr)
        return 2


# What each command imports (torch, matplotlib, ...): loaded while a Ctrl-C is held back, see below.
_COMMAND_MODULES = {"prepare": ".data.prepare", "train": ".train", "test": ".sampling",
                    "eval": ".metrics.evaluate", "train-judge": ".metrics.judge"}


@contextlib.contextmanager
def _interrupt_after_imports():
    """A Ctrl-C that lands inside an import can be swallowed by Python ("Exception ignored in ...")
    and the command then runs on; so while importing, only note it, and stop right after. A SIGINT
    the shell ignores (a background job of a script) stays ignored, here as in training."""
    pressed = []
    try:
        ours = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        if ours:
            previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    except ValueError:  # not the main thread: signals are not ours to handle
        ours = False
    if not ours:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP outside training's own handler: unwinds like a Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _termination_unwinds():
    """A job scheduler's SIGTERM or a closed terminal's SIGHUP would kill us on the spot, leaving
    a half-drawn data set or an empty run folder; raised instead, they unwind through the same
    cleanup as a Ctrl-C. (The training loop installs its own handler: it saves a checkpoint.)"""
    def handle(signum, frame):
        raise Terminated(signum)

    previous = {}
    try:
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's stays ignored
                previous[sig] = signal.signal(sig, handle)
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _expand_home(args) -> None:
    """`--train-dir=~/data` and quoted paths reach us with the `~` the shell did not expand; read as
    a folder named `~` it would train on a fresh built-in set instead of the user's data."""
    for key, value in vars(args).items():
        if isinstance(value, str) and (value == "~" or value.startswith("~/")):
            setattr(args, key, os.path.expanduser(value))


def console() -> None:
    """The `anime-gan` program: main(), then an exit that a late Ctrl-C cannot turn into a crash."""
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 (read off the disk as surrogates) must not crash a
        # report under a strict locale: it is shown with \x escapes instead.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    code = main()
    # Only interpreter teardown is left (torch's can take a while): a Ctrl-C that arrives now,
    # say the second of two after a saved stop, must not change the exit status.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def _run(args, argv=None) -> int:
    if args.command == "prepare":
        from .data.prepare import check_source, format_report, prepare, preparing, validate_prepare
        cfg = _config(PrepareConfig, args)
        cfg.out = args.out or (args.source if args.source and not args.synthetic else "data")
        if args.dry_run:
            validate_prepare(cfg)
            check_source(cfg)
            report = None
        else:
            validate_prepare(cfg)  # (a bad flag is said at once, not after waiting for the lock)
            with preparing(Path(cfg.out), lambda msg: print(msg, file=sys.stderr)):
                report = prepare(cfg)
        if cfg.source is not None and not cfg.synthetic and cfg.seed != PrepareConfig().seed:  # (once it passed)
            print("note: --seed picks the built-in faces --synthetic draws; a SOURCE is read as it is: ignored",
                  file=sys.stderr)
        if args.dry_run:
            return _print(cfg)
        print(format_report(report))
        return 0
    if args.command == "train":
        from .config import resolve_hyper, validate_train
        from .distributed import pick_device
        from .files import no_file_in_the_way
        from .train import (check_before_data, check_device_options, check_run_folder, note_unused_flags,
                            resolve_resume, train)
        cfg = dataclasses.replace(_config(TrainConfig, args), typed=_typed(argv, "train"))
        validate_train(cfg)
        if args.dry_run:  # with --resume: the snapshot's settings, as training would take them
            device = pick_device(cfg.device)
            check_device_options(cfg, device)
            cfg, run, resume_path, snapshot = resolve_resume(cfg)
            for folder in (cfg.checkpoint_dir, cfg.sample_dir):
                no_file_in_the_way(Path(folder) / run, "choose another folder with -s/-c")
            check_run_folder(cfg, Path(cfg.checkpoint_dir) / run, resume_path, snapshot)
            if resume_path is not None:  # its D file too, as the real run loads it
                from .checkpoint import load_trainer
                load_trainer(resume_path, snapshot)
            check_before_data(cfg, resume_path, snapshot)
            if not cfg.quiet:
                note_unused_flags(cfg, device, int(os.environ.get("WORLD_SIZE", "1")),
                                  lambda msg: print(msg, file=sys.stderr))
            return _print({"train": dataclasses.asdict(cfg), "resolved": dataclasses.asdict(resolve_hyper(cfg)),
                           "run": run, "resumes": str(resume_path) if resume_path else None})
        out = train(cfg)
        if out is not None:
            print(out)
        return 0
    if args.command == "test":
        from .sampling import check_test, note_unused, outputs, run_test
        cfg = _config(TestConfig, args)
        if args.dry_run:  # the checkpoint is loaded and the colours checked, as the real command does
            checked, kind, model = check_test(cfg)
            note_unused(checked, kind)
            files, folder = outputs(checked, kind, model)
            return _print({**dataclasses.asdict(dataclasses.replace(checked, type=kind)),
                           "writes": [str(p) for p in files + ([folder] if folder else [])]})
        for path in run_test(cfg):
            print(path)
        return 0
    from .metrics.cli import run_eval_command
    return run_eval_command(args)


def _print(cfg) -> int:
    print(json.dumps(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg, indent=2))
    return 0
