"""Snapshots: written atomically, read with `torch.load(weights_only=True)`.

G_<step>.ckpt holds everything needed to sample (config, schema, model config, G and its EMA);
D_<step>.ckpt holds the rest of the training state (D, both optimizers, RNG states, counters).
A step is resumable when both files exist.  Nothing here unpickles arbitrary objects: a checkpoint
that tries to import code is refused by torch's weights-only loader and reported as a user error.

The trainer's side: `save_snapshot` / `restore_snapshot` move a `TrainState` to and from the pair,
`resume_path` resolves --resume, `read_jsonl` reads the stats.jsonl kept beside the files.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig, fields_of
from .errors import UserError, detail
from .files import FileLock, LockHeld, lock_holder, replace_atomically, take_lock

FORMAT = "anime-gan/1"
_STEP = re.compile(r"^G_(\d+)\.ckpt$")


def save(obj: dict, path: Path) -> None:
    """torch.save, atomically: a crash at any moment leaves the old file or the new one."""
    replace_atomically(path, lambda f: torch.save(obj, f))


def lock_run(run_dir: Path) -> FileLock | None:
    """Claim `run_dir` for this process, so that a second `train --name` of the same run, started
    before the first wrote a checkpoint, stops instead of interleaving its files with the first's.
    None where the platform has no flock (the run is then not guarded)."""
    try:
        return take_lock(Path(run_dir) / ".train.lock")
    except LockHeld as e:
        raise UserError(f"{run_dir}: another `anime-gan train` (pid {e.pid or 'unknown'}) is writing this "
                        f"run; wait for it to finish, or pick another --name") from None


def remove_partial(run_dir: Path) -> None:
    """Delete the temp files of saves a killed run left half-written (see `save`)."""
    for stale in Path(run_dir).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def load(path, kind: str) -> dict:
    """Load a checkpoint of `kind` ('generator', 'trainer' or 'judge') on the CPU, safely."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # a plain pickle given by mistake: the one line below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights-only refusals, truncation and zip errors all land here
        raise UserError(f"{path}: {load_failure(str(e))}; {_damaged_fix(path)}") from None
    expected = {"generator": "G_<step>.ckpt", "trainer": "D_<step>.ckpt", "judge": "judge_<size>.pt"}
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if isinstance(found, str) and found.startswith("anime-gan/") and found != FORMAT:
        raise UserError(f"{path}: written by another version of anime-gan (format {found[:40]!r}; this one reads "
                        f"{FORMAT!r}); use the anime-gan version that wrote it")
    if found == FORMAT and isinstance(ckpt.get("kind"), str) and ckpt["kind"] in expected and ckpt["kind"] != kind:
        raise UserError(f"{path}: is a {ckpt['kind']} checkpoint ({expected[ckpt['kind']]}), not a {kind} one; "
                        f"pass the {expected.get(kind, kind)} file" + (" (or its run folder)" if kind == "generator" else ""))
    if not isinstance(ckpt, dict) or found != FORMAT or ckpt.get("kind") != kind:
        raise UserError(f"{path}: not an anime-gan {kind} checkpoint "
                        f"({expected.get(kind, kind)} expected)")
    if kind == "generator":
        _check_generator_body(path, ckpt)
    return ckpt


def _check_generator_body(path: Path, ckpt: dict) -> None:
    """A G file whose header is right but whose body was damaged or edited: one line now, rather than
    a KeyError or a shape mismatch deep in sampling or resuming."""
    from .labels import EMBEDS, Schema, cond_dim
    from .models import ModelConfig
    try:
        if not isinstance(ckpt.get("G"), dict) or not isinstance(ckpt.get("step"), int):
            raise ValueError("its weights or step are missing")
        named = _STEP.match(Path(path).name)  # resume goes by the step inside, run listings by the name
        if ckpt["step"] < 0 or (named and int(named.group(1)) != ckpt["step"]):
            raise ValueError(f"it holds step {ckpt['step']}" + (f", its name says {named.group(1)}" if named else ""))
        if not isinstance(ckpt.get("G_ema"), (dict, type(None))):
            raise ValueError("its averaged weights (G_ema) are not weights")
        for key in ("data_path", "sample_path", "run_path"):
            if not isinstance(ckpt.get(key), (str, type(None))):
                raise ValueError(f"its {key} is not a path")
        cfg = TrainConfig.from_dict(ckpt["config"])
        model = ModelConfig(**fields_of(ModelConfig, ckpt["model"]))
        unknown = set(ckpt["model"]) - set(asdict(model))
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}: from a newer anime-gan?")
        if (cfg.z_dim, cfg.image_size, cfg.nf, cfg.d_nf) != (model.z_dim, model.image_size, model.nf, model.d_nf):
            raise ValueError("its training and model settings disagree")
        if cfg.embed not in EMBEDS:  # (cond_dim below would blame a --embed flag, not this file)
            raise ValueError(f"unknown embed {cfg.embed!r}")
        fix = "use one written by anime-gan"
        schema = Schema.from_dict(ckpt["schema"], str(path), fix) if ckpt.get("schema") else None
        if model.cond_dim and (schema is None or cond_dim(schema, cfg.embed) != model.cond_dim):
            raise ValueError(f"its label schema does not give the {model.cond_dim} condition inputs G takes")
    except (KeyError, TypeError, ValueError) as e:
        what = f"no {e}" if isinstance(e, KeyError) else str(e)[:160]
        raise UserError(f"{path}: damaged generator checkpoint ({what}); {_damaged_fix(path)}") from None


def _damaged_fix(path: Path) -> str:
    """What to do about a step's file that cannot be used: its run's last good step, where there is one."""
    m = re.fullmatch(r"[GD]_(\d+)\.ckpt", path.name)
    if m is None:
        return "use a checkpoint written by anime-gan"
    step, folder = int(m.group(1)), path.parent
    earlier = [s for s in (resumable_steps(folder) if path.name[0] == "D" else steps(folder)) if s < step]
    if not earlier:
        return "use a checkpoint written by anime-gan"
    return (f"if it was cut short, delete G_{step}.ckpt and D_{step}.ckpt and use step {earlier[-1]} "
            f"({folder / f'G_{earlier[-1]}.ckpt'}), the latest before it")


def load_failure(text: str) -> str:
    """What went wrong, in one phrase (torch's own message is many lines about weights_only)."""
    unsafe = re.search(r"GLOBAL (\S+)", text)
    if unsafe:
        return f"refused as unsafe: it asks to import {unsafe.group(1)}, which no checkpoint needs"
    if "Weights only load failed" in text:
        return "not a checkpoint (its contents are not plain weights)"
    return "corrupt or cut short (cannot be read as a checkpoint)"


def steps(run_dir) -> list[int]:
    """Steps that have a G checkpoint, ascending."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := _STEP.match(p.name)))


def resumable_steps(run_dir) -> list[int]:
    return [s for s in steps(run_dir) if (Path(run_dir) / f"D_{s}.ckpt").exists()]


def _did_you_mean(p: Path, otherwise: str) -> str:
    guess = Path(TrainConfig.checkpoint_dir) / p  # a run's name given without its folder
    return f"did you mean {guess}?" if not p.is_absolute() and guess.is_dir() else otherwise


def only_run(model_dir, notes: list) -> str:
    """`model_dir`, or the one run inside it when it is a folder of runs holding exactly one (so
    `anime-gan test` after a single `anime-gan train` needs no -d); the note that says so goes to
    `notes`, for the caller to print once its checks passed (a refusal is one line)."""
    p = Path(model_dir)
    if not p.is_dir() or steps(p):
        return str(model_dir)
    runs = [d for d in p.iterdir() if d.is_dir() and steps(d)]
    if len(runs) != 1:
        return str(model_dir)  # none or several: generator_path says which there are
    notes.append(f"note: using {runs[0]}, the only run in {p} (-d picks another)")
    return str(runs[0])


def generator_path(model_dir) -> Path:
    """A run folder (-> its latest G checkpoint) or a checkpoint file."""
    p = Path(model_dir)
    if p.is_file():
        return p
    if not p.is_dir():
        raise UserError(f"{shlex.quote(str(p))}: no such run folder or checkpoint; " + _did_you_mean(p, "pass a run folder such as "
                                                                          "checkpoints/<run> or a G_<step>.ckpt file"))
    found = steps(p)
    if not found:
        subruns = sorted(d.name for d in p.iterdir() if d.is_dir() and steps(d))
        more = f", and {len(subruns) - 5} more" if len(subruns) > 5 else ""
        hint = f" (runs inside: {', '.join(subruns[:5])}{more})" if subruns else ""
        raise UserError(f"{p}: no G_<step>.ckpt in this folder{hint}; train first or pass a run folder")
    return p / f"G_{found[-1]}.ckpt"


def load_generator(model_dir, device="cpu", ema: bool = True, ckpt: dict | None = None):
    """Rebuild G from a G checkpoint alone: returns (G in eval mode, TrainConfig, Schema|None, step).

    `model_dir` is a run folder (its latest G_<N>.ckpt) or a checkpoint file; `ckpt` is that file
    as `load` already returned it, when the caller has read it."""
    from .labels import Schema
    from .models import PRESETS, ModelConfig, build
    path = generator_path(model_dir)
    ckpt = load(path, "generator") if ckpt is None else ckpt
    cfg = TrainConfig.from_dict(ckpt["config"])
    if Path(ckpt.get("data_path") or "/nonexistent").is_dir():
        cfg.train_dir = ckpt["data_path"]  # where it was trained, whichever folder we are run from now
    if cfg.model not in PRESETS:
        raise UserError(f"{path}: made with model {cfg.model!r}, which this version does not know; use the "
                        f"anime-gan version that wrote it")
    m = dict(ckpt["model"])
    m["class_sizes"] = tuple(m.get("class_sizes", ()))
    state = ckpt["G_ema"] if ema and ckpt.get("G_ema") is not None else ckpt["G"]
    try:
        G, _ = build(cfg.model, ModelConfig(**m))
        G.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"{path}: weights do not fit model '{cfg.model}' ({detail(e)}); the file is "
                        f"damaged or edited: use another G_<step>.ckpt of the run") from None
    if not _finite(G.state_dict()):  # it would draw black images, or score believable nonsense
        if state is not ckpt["G"] and isinstance(ckpt["G"], dict) and _finite(ckpt["G"]):
            raise UserError(f"{path}: its averaged (EMA) weights hold NaN or infinite values, its raw weights "
                            f"do not; use them with --no-ema, or an earlier G_<step>.ckpt of the run")
        raise UserError(f"{path}: its weights hold NaN or infinite values (the run diverged); "
                        f"use an earlier G_<step>.ckpt of the run")
    schema = Schema.from_dict(ckpt["schema"], str(path)) if ckpt.get("schema") else None
    return G.to(device).eval(), cfg, schema, int(ckpt["step"])


def _finite(state: dict) -> bool:
    return all(torch.isfinite(t).all() for t in state.values() if torch.is_tensor(t) and t.is_floating_point())


# ---- the trainer's snapshots ---------------------------------------------------------------------

@dataclass
class TrainState:
    """The live training objects: a snapshot saves them, a resume loads back into them in place."""
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module | None
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer  # the same object as opt_G for the VAE
    scaler: torch.amp.GradScaler
    gen: torch.Generator          # the stream that draws batches, noise and fake labels
    acc: Any                      # losses summed since the last log line: .state() / .load(state)
    run_id: str = ""              # see run_id() below


def save_snapshot(ckpt_dir: Path, step: int, state: TrainState, cfg: TrainConfig, mcfg, schema, dist) -> None:
    """Write D_<step>.ckpt then G_<step>.ckpt and prune D files beyond --keep-d.

    Every process calls this (the weights are compared across them); only the main one writes."""
    if dist.world_size > 1 and not dist.in_sync(state.G, state.D):
        raise UserError(f"step {step}: the {dist.world_size} processes no longer hold the same weights; "
                        f"this is a bug, please report it with the command you ran")
    device = state.gen.device  # the collective below runs there (NCCL needs a GPU tensor)
    # Every rank's draws (rank 0's at the top level, as a single process saves them): a resume on
    # as many processes then continues each rank's streams exactly.
    ranks = dist.gather({"rng": _streams(state), "acc": state.acc.state()})
    if not dist.is_main:
        # Instead of a barrier: a main process that failed to write says so, and every rank stops
        # (a barrier would leave the others waiting for it until the backend's timeout).
        if dist.any(False, device):
            raise UserError(f"step {step}: the main process could not write the checkpoint (its own "
                            f"message says why); the previous checkpoint is intact")
        return
    # data_path, sample_path: -t and -s are often relative ("data", "samples"); eval, or a resume run
    # from another folder, must still find them
    common = {"format": FORMAT, "step": step, "config": cfg.to_dict(), "model": plain(asdict(mcfg)),
              "schema": schema.to_dict() if schema else None, "data_path": str(Path(cfg.train_dir).resolve()),
              "sample_path": str(Path(cfg.sample_dir).resolve()), "run_path": str(ckpt_dir.resolve()),
              "run_id": state.run_id}
    trainer = {**common, "kind": "trainer", "D": state.D.state_dict(), "opt_G": state.opt_G.state_dict(),
               "opt_D": state.opt_D.state_dict(), "scaler": state.scaler.state_dict(),
               **ranks[0], "world_size": dist.world_size, "other_ranks": ranks[1:]}
    generator = {**common, "kind": "generator", "G": state.G.state_dict(),
                 "G_ema": state.G_ema.state_dict() if state.G_ema is not None else None}
    d_path, g_path = ckpt_dir / f"D_{step}.ckpt", ckpt_dir / f"G_{step}.ckpt"
    had_d, failed = d_path.exists(), None
    try:
        # D first: a G_<N> file therefore always has its D_<N> beside it once both renames ran.
        save(trainer, d_path)
        save(generator, g_path)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as a RuntimeError
        if not had_d and not g_path.exists():
            d_path.unlink(missing_ok=True)  # a D without its G would only count against --keep-d
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "the disk may be full"
        failed = UserError(f"{ckpt_dir}: could not write the step-{step} checkpoint ({reason}); "
                           f"free space or choose another -c; the previous checkpoint is intact")
    if failed is None and cfg.keep_d > 0:  # G files stay: each one can still be sampled from
        for old in resumable_steps(ckpt_dir)[:-cfg.keep_d]:
            (ckpt_dir / f"D_{old}.ckpt").unlink(missing_ok=True)
    if dist.any(failed is not None, device):  # the other ranks wait for this answer
        raise failed


def _streams(state: TrainState) -> dict:
    # only the training device's CUDA stream: a resume may see fewer or other GPUs
    return {"torch": torch.get_rng_state(), "gen": state.gen.get_state(), "gen_device": state.gen.device.type,
            "cuda": torch.cuda.get_rng_state(state.gen.device) if state.gen.device.type == "cuda" else []}


def seed_rank_streams(gen: torch.Generator, seed: int, dist, step: int = 0) -> None:
    """Seed `gen` (batches, noise, fake labels) and, with several processes, torch's global stream
    (the penalties' and the VAE's noise): each rank draws its own, the same for the same seed."""
    gen.manual_seed(batch_stream_seed(seed, dist.rank, step))
    if dist.world_size > 1:  # (one process keeps the stream --seed gave it, as a resume restores it)
        torch.manual_seed(global_stream_seed(seed, dist.rank, step))


ARCHITECTURE = ("model", "embed", "nf", "d_nf", "z_dim", "image_size")  # what a resume cannot change


def batch_stream_seed(seed: int, rank: int = 0, step: int = 0) -> int:
    """The seed of the generator that draws batches, noise and fake labels: its own per rank, and
    a fresh one (the same on every such resume) where a resume cannot restore the saved stream."""
    return seed * 1000 + rank + 7919 * step


def global_stream_seed(seed: int, rank: int, step: int = 0) -> int:
    """torch's global stream on rank `rank` of a multi-process run (gradient penalties, the VAE's
    noise): a seed no rank's batch stream uses (ranks stay below 500)."""
    return batch_stream_seed(seed, rank, step) + 500


def check_architecture(path: Path, saved: TrainConfig, cfg: TrainConfig) -> None:
    for key in ARCHITECTURE:
        if getattr(saved, key) != getattr(cfg, key):
            raise UserError(f"{path}: was trained with --{key.replace('_', '-')} {getattr(saved, key)}, "
                            f"not {getattr(cfg, key)}; pass the same value to resume")


def check_labels(path: Path, g: dict, schema_dict: dict | None, data: str) -> None:
    """The label layout fixes the networks' condition inputs: a resume needs the data's to match."""
    if g.get("schema") != schema_dict:
        def groups(d):
            return " + ".join(f"{x['name']} ({len(x['classes'])})" for x in d["groups"]) if d else "no labels"
        raise UserError(f"{path}: was trained on labels {groups(g.get('schema'))}, but -t {data} has "
                        f"{groups(schema_dict)}; resume on the data set it was trained on")


def check_sample_folder(g: dict, run_dir: Path, sample_folder: Path) -> None:
    """Refuse to write a copied run's images into the sample folder of the run it was copied from
    (the snapshot names both), where they would mix with the original's. `run_dir` may be a G file
    away from any run folder (downloads/G_30.ckpt), a copy of one of the run's files."""
    origin, samples = g.get("run_path"), g.get("sample_path")
    if not (isinstance(origin, str) and isinstance(samples, str)) or "\0" in samples:  # (older snapshots)
        return
    origin = Path(origin)
    if not origin.is_dir() or origin.resolve() == Path(run_dir).resolve():
        return
    theirs = Path(samples) / origin.name
    if sample_folder.resolve() == theirs.resolve():
        what = "a copy of a G file of" if Path(run_dir).is_file() else "a copy of"
        raise UserError(f"{run_dir}: {what} the run {origin}, whose images are in {theirs}; pass -s FOLDER "
                        f"for this copy's, so that the two do not mix")


def run_id(snapshot: dict | None, resume_path: Path | None, ckpt_dir: Path) -> str:
    """The identity of the run a folder holds, in every snapshot and in config.json: drawn when a
    run starts, kept by a resume in its own folder (renamed or copied as it may be), new for a
    branch (--name). It tells a checkpoint copied in from another run apart (check_same_run). A
    snapshot from before run ids, resumed in place, takes the folder's (the folder's own earlier
    step, say, after a session that stopped before its first snapshot)."""
    if snapshot is not None and resume_path is not None and _same_folder(resume_path.parent, ckpt_dir):
        for known in (snapshot.get("run_id"), _folder_run_id(ckpt_dir)):
            if isinstance(known, str) and known:
                return known
    return uuid.uuid4().hex  # (os.urandom: no random stream of the run is touched)


def _folder_run_id(ckpt_dir: Path):
    try:
        return json.loads((ckpt_dir / "config.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None  # (no config.json, or one from before run ids)


def check_same_run(resume_path: Path, snapshot: dict, ckpt_dir: Path) -> None:
    """A resume in place continues the run the folder holds: a G_<N>.ckpt copied in from another
    run would mix two models' steps and logs in one folder."""
    if not _same_folder(resume_path.parent, ckpt_dir):
        return  # a branch into its own folder
    if from_another_run(snapshot, ckpt_dir):
        raise UserError(f"{resume_path}: saved by another run ({_origin(snapshot)}) than the one {ckpt_dir} "
                        f"holds (its config.json); move the file out of {ckpt_dir}, or resume it into a folder "
                        f"of its own with --name NEW")


def from_another_run(snapshot: dict, run_dir: Path) -> bool:
    """True when `snapshot` was saved by another run than the one `run_dir`'s config.json names
    (a file copied in); False when either predates run ids."""
    folder_id, theirs = _folder_run_id(run_dir), snapshot.get("run_id")
    return isinstance(folder_id, str) and bool(folder_id) and isinstance(theirs, str) and bool(theirs) \
        and theirs != folder_id


def _origin(snapshot: dict) -> str:
    return snapshot["run_path"] if isinstance(snapshot.get("run_path"), str) else "another run"


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return False


def trainer_path(path: Path) -> Path:
    """The D_<N>.ckpt that resuming from G_<N>.ckpt `path` needs."""
    d_path = path.with_name(path.name.replace("G_", "D_", 1))
    if not d_path.exists():
        raise UserError(f"{d_path}: missing, so {path.name} can be sampled from but not resumed; "
                        f"resume from a step that has both files")
    return d_path


def load_trainer(path: Path, g: dict) -> tuple[Path, dict]:
    """The D_<N>.ckpt beside G_<N>.ckpt `path` (whose contents are `g`), loaded and checked to be the
    same step of the same run: (its path, its contents). Also run by `train --resume --dry-run`."""
    d_path = trainer_path(path)
    d = load(d_path, "trainer")
    if d.get("step") != g["step"] or d.get("run_path", g.get("run_path")) != g.get("run_path", d.get("run_path")):
        raise UserError(f"{d_path}: holds step {d.get('step')!r} of {d.get('run_path', 'a run')}, not the "
                        f"step {g['step']} of {path.name}; the two files of a step must be saved together: "
                        f"resume from another step")
    _check_trainer_body(d_path, d)
    return d_path, d


def restore_snapshot(path: Path, state: TrainState, cfg: TrainConfig,
                     schema_dict: dict | None = None, log=lambda msg: None,
                     g: dict | None = None, dist=None) -> tuple[int, list[dict], TrainConfig, bool]:
    """Load G_<N>.ckpt at `path` and its D_<N>.ckpt into `state`; returns (N, the stats records up to N,
    the config the snapshot was trained with, whether random streams were drawn anew from this
    session's --seed rather than restored). What cannot carry over to this session (the fp16 loss
    scale of a run trained in another precision, a batch stream drawn on another kind of device) is
    started afresh, deterministically, with a note through `log`.

    `g`: the G file's contents, when the caller has loaded it already. `dist`: this process's place
    under torchrun (None: a single process)."""
    g = g if g is not None else load(path, "generator")
    d_path, d = load_trainer(path, g)
    saved = TrainConfig.from_dict(g["config"])
    if g.get("data_path"):  # absolute: a relative -t of the saving run may mean another folder here
        saved.train_dir = g["data_path"]
    check_architecture(path, saved, cfg)
    check_labels(path, g, schema_dict, cfg.train_dir)

    def restore(file: Path, *loads, problem="does not match this model"):
        try:
            for load_fn in loads:
                load_fn()
        except KeyError as e:  # a header that loads but a body that was cut or edited
            raise UserError(f"{file}: damaged checkpoint (no {e}); resume from another step") from None
        except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
            # named per file: G and D may come from different runs
            raise UserError(f"{file}: {problem} ({detail(e)})") from None

    restore(path, lambda: state.G.load_state_dict(g["G"]),
            lambda: state.G_ema is None or state.G_ema.load_state_dict(g.get("G_ema") or g["G"]))
    restore(d_path, lambda: state.D.load_state_dict(d["D"]), lambda: state.opt_G.load_state_dict(d["opt_G"]),
            lambda: state.opt_D.load_state_dict(d["opt_D"]))
    step = int(g["step"])
    reseeded = []
    restore(d_path, lambda: reseeded.append(_restore_streams(path, d, state, saved, cfg, step, log, dist)),
            problem="damaged checkpoint; resume from another step")
    _check_restored(path, d_path, state)
    # Logs continue where the snapshot was taken: lines written after it are dropped (the main
    # process rewrites stats.jsonl with these).
    # A "partial" line at the snapshot's own step shows how a run that stopped between log steps
    # ended; its window goes on after the resume (the snapshot kept its sums), as in a straight run.
    records = [r for r in read_jsonl(path.parent / "stats.jsonl")
               if r.get("step", 0) < step or (r.get("step") == step and not r.get("partial"))]
    return step, records, saved, reseeded[0]


def _check_trainer_body(d_path: Path, d: dict) -> None:
    """Loss sums and optimizer settings that load but would fail (or mislead) only at the next step."""
    def valid_acc(acc) -> bool:
        return (isinstance(acc, dict) and isinstance(acc.get("sums"), dict) and isinstance(acc.get("counts"), dict)
                and set(acc["sums"]) == set(acc["counts"])
                and all(torch.is_tensor(v) and v.dim() == 0 and v.is_floating_point() for v in acc["sums"].values())
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in acc["counts"].values()))

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def valid_optimizer(opt) -> bool:
        return (isinstance(opt, dict) and isinstance(opt.get("param_groups"), list) and all(
            isinstance(g, dict) and all(number(g[k]) for k in ("lr", "eps", "weight_decay", "alpha") if k in g)
            and all(number(b) for b in g.get("betas", ()))
            for g in opt["param_groups"])
            and isinstance(opt.get("state"), dict) and all(
                isinstance(st, dict) and all(torch.is_tensor(v) or number(v) for v in st.values())
                for st in opt["state"].values()))

    ranks = [d] + (d.get("other_ranks") or [])
    if not all(isinstance(r, dict) and valid_acc(r.get("acc")) for r in ranks):
        raise UserError(f"{d_path}: damaged checkpoint (its loss sums are not what training saves); "
                        f"resume from another step")
    if not all(valid_optimizer(d.get(k)) for k in ("opt_G", "opt_D")):
        raise UserError(f"{d_path}: damaged checkpoint (an optimizer setting is not a finite number); "
                        f"resume from another step")


def _check_restored(path: Path, d_path: Path, state: TrainState) -> None:
    """Weights and optimizer state as restored: of the right shapes, and finite (a run that diverged
    just before it saved would otherwise diverge again at once, blaming this very file)."""
    for file, nets in ((path, (state.G, state.G_ema)), (d_path, (state.D,))):
        if not all(torch.isfinite(t).all() for net in nets if net is not None
                   for t in net.state_dict().values() if t.is_floating_point()):
            m = _STEP.match(path.name)
            earlier = [s for s in resumable_steps(path.parent) if m and s < int(m.group(1))]
            raise UserError(f"{file}: holds NaN or infinite weights (the run diverged before this step was "
                            f"saved); resume from an earlier step" +
                            (f", e.g. {path.parent / f'G_{earlier[-1]}.ckpt'}" if earlier else ""))
    for opt in (state.opt_G, state.opt_D):
        for group in opt.param_groups:
            for p in group["params"]:
                for v in opt.state.get(p, {}).values():
                    if torch.is_tensor(v) and ((v.dim() > 0 and v.shape != p.shape)
                                               or (v.is_floating_point() and not torch.isfinite(v).all())):
                        raise UserError(f"{d_path}: damaged checkpoint (optimizer state of the wrong shape, "
                                        f"or NaN); resume from another step")


def _restore_streams(path: Path, d: dict, state: TrainState, saved: TrainConfig, cfg: TrainConfig, step: int,
                     log, dist) -> bool:
    """The D file's loss scale, random streams and loss sums, back into `state`; True when some
    stream could not carry over and was seeded from `cfg.seed` and the step instead."""
    if state.scaler.is_enabled():
        if d["scaler"]:
            state.scaler.load_state_dict(d["scaler"])
        else:
            log(f"note: {path.name} was trained in {saved.precision}, so fp16 starts with a fresh loss scale")
    before, now = d.get("world_size"), dist.world_size if dist is not None else 1
    # The global batch changes with the process count, and the random streams cannot all carry over
    # (snapshots from before world_size was saved: unknown, not said).
    if isinstance(before, int) and before != now:
        log(f"note: {path.name} was trained by {before} process{'es' * (before != 1)} (batch "
            f"{saved.batch_size} x {before} = {saved.batch_size * before} global); this run has {now} (batch "
            f"{cfg.batch_size} x {now} = {cfg.batch_size * now} global), so it "
            + ("continues rank 0's random streams" if now == 1 else "draws anew from --seed and the step"))
    if dist is not None and dist.world_size > 1:
        if d.get("world_size") != dist.world_size or "other_ranks" not in d:
            # other ranks' draws were not saved for this many processes: each draws anew, deterministically
            seed_rank_streams(state.gen, cfg.seed, dist, step)
            state.acc.load(d["acc"])
            return True
        if dist.rank > 0:
            d = d["other_ranks"][dist.rank - 1]
    rng = d["rng"]
    torch.set_rng_state(rng["torch"])
    reseeded = rng["gen"].numel() != state.gen.get_state().numel()
    if not reseeded:
        state.gen.set_state(rng["gen"])
    else:  # CPU and CUDA generators keep different states: reseed, the same way on every such resume
        state.gen.manual_seed(batch_stream_seed(cfg.seed, step=step))
        log(f"note: {path.name} drew its batches on {rng.get('gen_device', 'another device')}; "
            f"on {state.gen.device.type} the batch stream is reseeded from --seed and the step")
    cuda = rng["cuda"]
    if isinstance(cuda, list):  # snapshots before gen_device saved every visible GPU's stream
        index = state.gen.device.index or 0
        cuda = cuda[index] if state.gen.device.type == "cuda" and index < len(cuda) else None
    if cuda is not None and len(cuda) and state.gen.device.type == "cuda":
        torch.cuda.set_rng_state(cuda, state.gen.device)
    state.acc.load(d["acc"])
    return reseeded


def resume_path(resume: str | None, ckpt_dir: Path) -> Path | None:
    """The G_<N>.ckpt that --resume names: a file, a run folder's latest, or 'latest' in `ckpt_dir`."""
    if resume is None:
        return None
    folder = Path(resume) if resume != "latest" else ckpt_dir
    owner = lock_holder(folder / ".train.lock") if folder.is_dir() else None
    if owner is not None and owner != os.getpid() and not resumable_steps(folder):
        raise UserError(f"{folder}: another `anime-gan train` (pid {owner}) is starting this run and has "
                        f"written no checkpoint yet; wait for its first one, or for it to finish")
    if resume != "latest":
        p = Path(resume)
        if not p.exists():
            raise UserError(f"{shlex.quote(str(p))}: no such run folder or checkpoint; " + _did_you_mean(
                p, "--resume takes a run folder, 'latest' or a G_<step>.ckpt file"))
        p = generator_path(p) if p.is_dir() else p
        if not p.name.startswith("G_"):
            raise UserError(f"{p}: --resume takes a run folder, 'latest' or a G_<step>.ckpt file")
        return p
    found = resumable_steps(ckpt_dir)
    if not found:
        # 'latest' is this command's run (named by its flags): the run meant may be another one
        others = sorted((r for r in ckpt_dir.parent.glob("*") if r != ckpt_dir and r.is_dir() and resumable_steps(r)),
                        key=lambda r: r.stat().st_mtime)
        hint = (f"; the latest run there is {shlex.quote(str(others[-1]))}: continue it with --resume "
                f"{shlex.quote(str(others[-1]))}" if others else "")
        raise UserError(f"{ckpt_dir}: nothing to resume (no G_<step>.ckpt with its D_<step>.ckpt; --resume "
                        f"latest means the run these flags name); drop --resume to start this run{hint}")
    return ckpt_dir / f"G_{found[-1]}.ckpt"


def read_jsonl(path: Path) -> list[dict]:
    """The records of a .jsonl log; a line cut short by a crash (kill -9 mid-write), or damaged (bytes
    that are not UTF-8 among them), is dropped, not fatal."""
    records = []
    for line in path.read_bytes().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)  # (bytes: json.loads finds the encoding; bad ones are a ValueError)
        except (ValueError, RecursionError):
            continue
        step = record.get("step", 0) if isinstance(record, dict) else None
        # a stray `5` or `null` line is not a record, nor one whose step is not a whole number
        if isinstance(step, int) and not isinstance(step, bool):
            records.append(record)
    return records


def plain(d):
    """Tuples -> lists so the dict round-trips through JSON and weights-only loading unchanged."""
    if isinstance(d, dict):
        return {k: plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [plain(v) for v in d]
    return d
