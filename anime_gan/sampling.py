"""`anime-gan test`: grids and GIFs drawn from a trained generator (seed 001's test.py, and more).

One small function per type (TYPES at the bottom) on shared helpers: pick colours, build labels,
encode them the way the model was trained, draw on `cfg.device`, save the grid with captions (and
every image on its own with --individual).  Noise comes from a CPU torch.Generator seeded with
--seed, so the same command gives the same pictures; random colour choices use the same seed and
are announced on stderr.
"""
from __future__ import annotations

import colorsys
import json
import random
import re
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import render
from .checkpoint import check_sample_folder, from_another_run, generator_path, load, load_generator, only_run, steps
from .config import MAX_N, MAX_STEPS, TestConfig, TrainConfig, check_device, check_seed
from .distributed import pick_device
from .errors import UserError
from .files import (Landing, linked_output, no_file_in_the_way, outermost_missing, removed_on_failure, writable_file,
                    writable_folder, writing)
from .labels import Schema, encode, parse_rgb, read_conditions

DEFAULT_PAIRS = ("pink hair black eyes", "black hair purple eyes", "red hair red eyes",
                 "aqua hair green eyes", "blonde hair orange eyes")  # seed 000 §4.1
# The optional flags each type reads; any other one given is reported as ignored.
USES = {"fix_hair_eye": {"hair", "eye", "hair_rgb", "eye_rgb"}, "change_hair": {"eye", "eye_rgb", "n"},
        "change_eye": {"hair", "hair_rgb", "n"},
        "interpolate": {"hair", "eye", "to_hair", "to_eye", "hair_rgb", "eye_rgb", "steps"},
        "pairs": {"pairs", "n"}, "conditions": {"conditions"}, "samples": {"n"}}
COLOUR_FLAGS = ("hair", "eye", "to_hair", "to_eye", "hair_rgb", "eye_rgb")
# Every type but progress (which reads snapshots, not a model) also reads these; noted when progress is given them.
DRAWING = {"seed", "ema", "device", "captions", "individual"}
# The types that draw from any model: unconditional, or labelled with other groups than hair and eye.
ANY_MODEL = ("samples", "interpolate", "conditions", "progress")
MAX_FRAMES = MAX_STEPS  # progress.gif: a snapshot is ~10 MB in memory, and a long run keeps thousands
GRID_NAMES = {"change_hair": "change_hair_color", "change_eye": "change_eye_color"}  # as seed 001; else the type
MAX_CONDITIONS = 1024  # captioned, one row each: a 1024-row PNG is already about 70k pixels tall
FRAME_MS = 250
_STEP_FILE = re.compile(r"^fake_step_(\d+)\.png$")
# What --individual writes ("007 blue hair red eyes.png") is listed in this file beside it, so that the
# next run replaces those and keeps the user's own, whatever their names; a folder without the list
# (written before it existed) falls back to the pattern and the images' size.
_INDIVIDUAL_LIST = ".anime-gan-individual.json"
_INDIVIDUAL_FILE = re.compile(r"^\d{3,}( .*)?\.png$")


@dataclass
class Model:
    G: torch.nn.Module
    train: TrainConfig
    schema: Schema | None
    device: torch.device
    path: Path  # the G_<N>.ckpt it was loaded from


@dataclass
class Colour:
    """One fixed colour of a group: a class of the schema, or any RGB for --embed rgb models."""
    group: str
    name: str | None = None
    rgb: tuple[float, float, float] | None = None

    @property
    def text(self) -> str:
        return self.name or "#" + "".join(f"{round(v * 255):02x}" for v in self.rgb)


def validate_test(cfg: TestConfig) -> str:
    """The checks that need no checkpoint (also run by --dry-run); returns the test type."""
    kind = cfg.type or ("conditions" if cfg.conditions else "fix_noise")
    if cfg.sample_dir == "":
        raise UserError("-s is empty; give a folder (it would write into the current one)")
    if kind not in TYPES:
        raise UserError(f"unknown test type '{kind}'; choose one of: {', '.join(TYPES)}")
    used = _used(kind)  # a flag the type ignores is noted, not checked
    if kind != "progress":  # which draws nothing: its --device and --seed are noted too
        check_device(cfg.device)
        check_seed(cfg.seed)
    for flag in COLOUR_FLAGS:
        if getattr(cfg, flag) == "" and flag in used:  # "" would read as "not given" and pick at random
            raise UserError(f"--{flag.replace('_', '-')} is empty; give a colour, or leave the flag out")
    if "n" in used and not 1 <= cfg.n <= MAX_N:
        raise UserError(f"-n must be 1 to {MAX_N}, got {cfg.n}")
    if "steps" in used and not 2 <= cfg.steps <= MAX_STEPS:
        raise UserError(f"--steps must be 2 to {MAX_STEPS}, got {cfg.steps}")
    return kind


def with_sample_dir(cfg: TestConfig) -> tuple[TestConfig, tuple[Path, dict] | None]:
    """No -s: write into the run's own sample folder, <training's -s>/<run>, where its snapshots
    are (samples/<run> when the checkpoint does not say); two runs' grids never overwrite each other.
    <run> is the run folder's name, or for a G file outside any run folder the name of the run
    that saved it.  Also returns (G file, its checkpoint) when it was read for this (None
    otherwise), so that it is read once."""
    if cfg.sample_dir is not None:
        return cfg, None
    model = Path(cfg.model_dir).resolve()  # `-d .` inside a run folder names it too
    run = model.parent.name if model.is_file() else model.name
    root = Path(TrainConfig.sample_dir)
    try:
        g_path = generator_path(cfg.model_dir)  # as given: errors and the Model name it so
        g = load(g_path, "generator")
    except UserError:  # no checkpoint there (yet): said when it is loaded, or checked by --dry-run
        return replace(cfg, sample_dir=str(root / run)), None
    saved = g.get("sample_path")  # absolute, since 2026-11-29
    root = Path(saved) if saved and Path(saved).is_dir() else root
    origin = g.get("run_path")
    away = model.is_file() and not (model.parent / "config.json").is_file()  # every run folder has one
    if away and isinstance(origin, str) and Path(origin).name not in ("", ".", ".."):
        # a G file away from its run folder (downloads/G_30.ckpt) is still that run's, not "downloads"
        run = Path(origin).name
    elif cfg.type != "progress" and from_another_run(g, g_path.parent):  # (progress only reads the run's snapshots)
        raise UserError(f"{g_path}: saved by another run ({origin if isinstance(origin, str) else 'unknown'}) "
                        f"than the one {g_path.parent} holds, so its images would mix with that run's in "
                        f"{root / run}; pass -s FOLDER, or move the file out of {g_path.parent}")
    check_sample_folder(g, g_path if away else g_path.parent, root / run)
    return replace(cfg, sample_dir=str(root / run)), (g_path, g)


def check_test(cfg: TestConfig) -> tuple[TestConfig, str, Model | None]:
    """Every check of `cfg` against its checkpoint (also run by --dry-run): (cfg with its sample
    folder, the test type, the loaded model; None for -t progress, which reads snapshots)."""
    notes = []
    cfg, loaded = with_sample_dir(replace(cfg, model_dir=only_run(cfg.model_dir, notes)))
    no_file_in_the_way(cfg.sample_dir, "choose another folder with -s")
    kind = validate_test(cfg)
    model = None
    if kind == "progress":
        _snapshots(cfg)  # none found is said here, so by --dry-run too
    else:
        model = _load(cfg, loaded)
        _check_inputs(cfg, kind, model)
    _check_outputs(cfg, kind, model, make=False)
    for note in notes:
        print(note, file=sys.stderr)
    return cfg, kind, model


def outputs(cfg: TestConfig, kind: str, model: Model | None) -> tuple[list[Path], Path | None]:
    """The files `kind` writes into -s, and the folder --individual fills (None without it)."""
    out = Path(cfg.sample_dir)
    if kind == "progress":
        return [out / "progress.gif"], None
    if kind == "fix_hair_eye":  # named by its colours; random ones as the seeded draw will pick them
        name = _fix_hair_eye_name(model, _hair_eye_colours(cfg, model, random.Random(cfg.seed), quiet=True))
    else:
        name = GRID_NAMES.get(kind, kind)
    name = _filename(name)
    files = [out / f"{name}.png"] + ([out / "interpolate.gif"] if kind == "interpolate" else [])
    return files, out / name if cfg.individual else None


def _check_outputs(cfg: TestConfig, kind: str, model: Model | None, make: bool) -> None:
    """Every file and folder the type writes can be written, before anything is drawn or replaced
    (a refused run changes no file).  `make` (the real run) creates -s; --dry-run creates nothing."""
    fix = "choose another folder with -s"
    out = writable_folder(cfg.sample_dir, fix) if make else no_file_in_the_way(cfg.sample_dir, fix)
    files, folder = outputs(cfg, kind, model)
    for path in files if out.is_dir() else []:  # (a missing -s holds nothing in the way)
        writable_file(linked_output(path, fix), fix, probe=make)
    if folder is not None:
        folder = linked_output(folder, fix)
        no_file_in_the_way(folder, fix)
        if make and folder.is_dir():  # its earlier images are removed: they must be ours to remove
            writable_folder(folder, fix)


def _check_inputs(cfg: TestConfig, kind: str, model: Model) -> None:
    """Every colour, pair and --conditions entry against the model, before anything is drawn or said."""
    used = USES.get(kind, set())
    colours = [f for f in COLOUR_FLAGS if getattr(cfg, f) and f in used]
    if kind not in ANY_MODEL or colours:
        _require_anime(model, f"-t {kind}" if kind not in ANY_MODEL else "--" + colours[0].replace("_", "-"))
    for group in ("hair", "eye"):
        if getattr(cfg, f"{group}_rgb") and f"{group}_rgb" in used:
            if model.train.embed != "rgb":
                raise UserError(f"--{group}-rgb needs a model trained with --embed rgb; this one uses "
                                f"--embed {model.train.embed}, so give --{group} with one of its colours")
            if getattr(cfg, group):
                raise UserError(f"give --{group} or --{group}-rgb, not both")
            parse_rgb(getattr(cfg, f"{group}_rgb"), f"--{group}-rgb")
    for flag in ("hair", "eye", "to_hair", "to_eye"):
        if getattr(cfg, flag) and flag in used:
            try:
                model.schema.class_index(flag.removeprefix("to_"), getattr(cfg, flag))
            except UserError as e:  # (-t interpolate takes four colours: say which one)
                raise UserError(f"--{flag.replace('_', '-')}: {e}") from None
    if kind == "color_map" and model.train.embed != "rgb":
        raise UserError(f"-t color_map needs a model trained with --embed rgb; this one uses "
                        f"--embed {model.train.embed}")
    if kind == "pairs":
        for text in cfg.pairs:
            model.schema.parse(text)
    if kind == "conditions":
        _conditions(cfg, model)


def _conditions(cfg: TestConfig, model: Model) -> tuple[list[list[str]], np.ndarray]:
    if model.schema is None:
        raise UserError(f"{cfg.model_dir}: this checkpoint has no labels; -t conditions needs a conditional model")
    if not cfg.conditions:
        raise UserError("-t conditions needs --conditions FILE.json (a list of label lists)")
    entries, labels = read_conditions(cfg.conditions, model.schema)
    if len(entries) > MAX_CONDITIONS:
        raise UserError(f"{cfg.conditions}: {len(entries)} entries; `test` draws at most {MAX_CONDITIONS} "
                        f"(one captioned row each): split the file, or score them all with `eval --conditions`")
    return entries, labels


def run_test(cfg: TestConfig) -> list[Path]:
    """Draw `cfg.type` into `cfg.sample_dir`; returns the paths written (--conditions alone implies
    -t conditions).  Every problem with the input is a UserError."""
    cfg, kind, model = check_test(cfg)
    # -s is made only now, after every check passed; a run that fails from here on (a diverged G, a
    # full disk, Ctrl-C) removes the folders it made, -s new/sub's new/ included.
    with removed_on_failure(outermost_missing(cfg.sample_dir)):
        _check_outputs(cfg, kind, model, make=True)  # before the slow drawing
        if kind == "progress":
            snapshots = _snapshots(cfg)
            paths = progress(cfg, _evenly_spaced(snapshots, MAX_FRAMES))
        else:
            with torch.no_grad():
                paths = TYPES[kind](cfg, model, random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed))
    # Only after success: a refused command prints its one error line and nothing else.
    if kind == "progress" and len(snapshots) > MAX_FRAMES:
        _say(f"note: progress.gif shows {MAX_FRAMES} of {len(snapshots)} snapshots, evenly spaced "
             f"(the first and last included)")
    note_unused(cfg, kind)
    return paths


def _used(kind: str) -> set[str]:
    return USES.get(kind, set()) | (DRAWING if kind != "progress" else set())


def note_unused(cfg: TestConfig, kind: str) -> None:
    used, defaults = _used(kind), TestConfig()
    for flag in ("hair", "eye", "to_hair", "to_eye", "hair_rgb", "eye_rgb", "pairs", "conditions", "n", "steps",
                 *sorted(DRAWING)):
        value = getattr(cfg, flag)
        if value != getattr(defaults, flag) and flag not in used:
            text = "-n" if flag == "n" else f"--{'no-' if value is False else ''}{flag.replace('_', '-')}"
            _say(f"note: -t {kind} does not use {text}; ignored")


# ---- shared helpers ----------------------------------------------------------------------------

def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _load(cfg: TestConfig, loaded: tuple[Path, dict] | None = None) -> Model:
    """G from -d; `loaded` is (G file, checkpoint) when with_sample_dir already read it."""
    device = pick_device(cfg.device)
    path, ckpt = loaded if loaded else (generator_path(cfg.model_dir), None)
    G, train, schema, _ = load_generator(path, device, ema=cfg.ema, ckpt=ckpt)
    # An unconditional G (dcgan) trained on labelled data ignores them: sample it as unlabelled.
    return Model(G, train, schema if G.cond_dim else None, device, path)


def _hair_and_eye(model: Model) -> bool:
    schema = model.schema
    names = [g.name for g in schema.groups] if schema else []
    return "hair" in names and "eye" in names and not schema.multi_label


def _require_anime(model: Model, what: str) -> None:
    """`what` (a type, or a colour flag) draws hair and eye colours: refuse other models."""
    if _hair_and_eye(model):
        return
    schema = model.schema
    has = ("labels " + ", ".join(f"'{g.name}' ({len(g.classes)} classes)" for g in schema.groups)
           if schema else "no labels")
    works = [k for k in ANY_MODEL if k != "conditions" or schema]
    fix = "drop it" if what.startswith("--") else f"types that work with it: {', '.join(works)}"
    raise UserError(f"{what} needs a model trained on hair and eye colours, but this checkpoint has {has}; {fix}")


def _random_labels(model: Model, rng: random.Random, n: int) -> tuple[torch.Tensor, list[str] | None]:
    """n labels the schema allows, drawn with the seeded rng: one class per one-of group and 1-3
    objects per multi-label group (as in seed 003's test.json), with their names.  No labels: [n, 0]."""
    schema = model.schema
    if schema is None:
        return torch.zeros(n, 0), None
    vecs = np.zeros((n, schema.dim), np.float32)
    for row in vecs:
        for g in schema.groups:
            k = rng.randint(1, min(3, len(g.classes))) if g.multi else 1
            for i in rng.sample(range(len(g.classes)), k):
                row[schema.span(g.name).start + i] = 1
    return torch.from_numpy(vecs), [schema.describe(v) for v in vecs]


def _colour(cfg: TestConfig, model: Model, rng: random.Random, group: str, flag: str = "",
            quiet: bool = False) -> Colour:
    """--hair/--eye (or --to-*, or --*-rgb), else a seeded random class that we announce (unless `quiet`)."""
    rgb = getattr(cfg, f"{group}_rgb") if not flag else None
    name = getattr(cfg, f"{flag}{group}")
    if rgb:  # checked by _check_inputs
        return Colour(group, rgb=parse_rgb(rgb, f"--{group}-rgb"))
    if name:
        index = model.schema.class_index(group, name)  # raises, listing the valid colours
        return Colour(group, model.schema.group(group).classes[index])  # "Blue" -> "blue", as in file names
    name = rng.choice(model.schema.group(group).classes)
    if not quiet:
        _say(f"--{flag.replace('_', '-')}{group} not given; picked {name} at random (seed {cfg.seed})")
    return Colour(group, name)


def _labels(schema: Schema, colours: list[Colour]) -> torch.Tensor:
    """Named colours -> one multi-hot label [1, dim] (an RGB colour leaves its group empty)."""
    out = torch.zeros(1, schema.dim)
    for c in colours:
        if c.name:
            out[0, schema.span(c.group).start + schema.class_index(c.group, c.name)] = 1
    return out


def _cond(model: Model, labels: torch.Tensor, rgb: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Labels [B, dim] -> the model's condition [B, cond_dim]; `rgb` overrides a group's colour."""
    if model.G.cond_dim == 0:  # unconditional G ignores c
        return labels[:, :0]
    c = encode(model.schema, labels, model.train.embed)
    for group, value in (rgb or {}).items():
        gi = [g.name for g in model.schema.groups].index(group)
        c[:, 3 * gi:3 * gi + 3] = value
    return c


def _conds(model: Model, colour_lists: list[list[Colour]]) -> torch.Tensor:
    """One condition per list of colours (named or RGB): [len(colour_lists), cond_dim]."""
    return torch.cat([_cond(model, _labels(model.schema, cs), {c.group: torch.tensor(c.rgb) for c in cs if c.rgb})
                      for cs in colour_lists])


def _draw(model: Model, z: torch.Tensor, c: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """G(z, c) on the model's device, in chunks; images [B, 3, S, S] in [-1, 1] on the CPU."""
    x = torch.cat([model.G(z[i:i + chunk].to(model.device), c[i:i + chunk].to(model.device)).float().cpu()
                   for i in range(0, len(z), chunk)])
    if not torch.isfinite(x).all():  # finite weights can still overflow: a black grid would look like a result
        raise UserError(f"{model.path}: the generator draws NaN or infinite pixels (the run diverged); "
                        f"use an earlier G_<step>.ckpt of the run")
    return x


def _noise(model: Model, gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.randn(n, model.train.z_dim, generator=gen)


def _describe(model: Model, colours: list[Colour]) -> str:
    """"blue hair red eyes", "#ff8800 hair", "red eyes"."""
    # A schema.json may give a group no suffixes ("hair": blue, not "blue hair"): name the group then.
    suffixes = {c.group: (model.schema.group(c.group).suffixes or (c.group,))[0] for c in colours}
    return " ".join(f"{c.text} {suffixes[c.group]}" for c in colours)


def _save(cfg: TestConfig, images: torch.Tensor, name: str, nrow: int, rows=None, cols=None,
          title=None, names=None, gif_frames=None, gif_captions=None) -> list[Path]:
    """Write `<name>.png` (captioned unless --no-captions), `<name>.gif` if given its frames, and,
    with --individual, `<name>/` (_check_outputs has checked them all). They land together: a run
    stopped midway leaves the earlier ones, never a new grid beside an older GIF or folder."""
    out, name = Path(cfg.sample_dir), _filename(name)
    captions = {"row_labels": rows, "col_labels": cols, "title": title} if cfg.captions else {}
    paths = [out / f"{name}.png"]
    with Landing() as landing:
        render.save_grid(images, landing.file(paths[0]), nrow=nrow, **captions)
        if gif_frames is not None:
            paths.append(out / f"{name}.gif")
            render.save_gif(gif_frames, landing.file(paths[-1]), duration_ms=FRAME_MS, captions=gif_captions)
        if cfg.individual:
            paths.append(out / name)
            with writing(paths[-1], "choose another folder with -s"):
                _save_individual(paths[-1], landing.folder(paths[-1]), images, names)
    return paths


def _save_individual(folder: Path, staging: Path, images: torch.Tensor, names) -> None:
    """Every image as its own PNG in `staging`, which then replaces `folder` whole (files of the
    user's own in there stay)."""
    ours = _written_before(folder, images.shape[-1])
    for entry in folder.iterdir() if folder.is_dir() else []:
        if not ours(entry.name) and entry.name != _INDIVIDUAL_LIST:  # copied, not moved: the old folder stays whole
            _copy(entry, staging / entry.name)
    digits = max(3, len(str(len(images) - 1)))  # 0999 before 1000 in a file listing
    written = []
    for i, image in enumerate(images):
        label = f" {_filename(names[i])}" if names else ""
        written.append(f"{i:0{digits}d}{label}.png")
        render.save_grid(image[None], staging / written[-1], nrow=1, padding=0)
    (staging / _INDIVIDUAL_LIST).write_text(json.dumps(written))


def _written_before(folder: Path, size: int):
    """A test of a name in `folder`: True for the images an earlier --individual run wrote there."""
    try:
        listed = json.loads((folder / _INDIVIDUAL_LIST).read_text())
        if isinstance(listed, list) and all(isinstance(n, str) for n in listed):
            return set(listed).__contains__
    except (OSError, ValueError):  # no list (an older run's folder) or a damaged one
        pass

    def drawn_here(name: str) -> bool:  # "001.png" of the user's own is rarely exactly size x size
        if not _INDIVIDUAL_FILE.match(name):
            return False
        try:
            with Image.open(folder / name) as im:
                return im.size == (size, size)
        except Exception:  # not an image PIL reads: not ours
            return False
    return drawn_here


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def _filename(text: str) -> str:
    """Class names come from the data's labels: keep what every file system accepts, in 120 chars."""
    return re.sub(r'[\x00-\x1f\x7f\\/:*?"<>|#]+', "", text).strip()[:120] or "image"


def _rows(model: Model, gen, conds: torch.Tensor, ncol: int, shared_noise: bool) -> torch.Tensor:
    """One row of `ncol` images per condition: the same noise in every row, or new noise per cell."""
    z = _noise(model, gen, ncol if shared_noise else ncol * len(conds))
    z = z.repeat(len(conds), 1) if shared_noise else z
    return _draw(model, z, conds.repeat_interleave(ncol, 0))


def _sweep(model: Model, group: str) -> list[Colour]:
    return [Colour(group, name) for name in model.schema.group(group).classes]


# ---- types -------------------------------------------------------------------------------------

def _table(cfg, model, gen, rows: list[Colour], cols: list[Colour], name: str, shared_noise: bool,
           title: str | None = None) -> list[Path]:
    """One image per (row colour, column colour), captioned with both; hair first in file names."""
    cells = [[r, c] for r in rows for c in cols]
    images = _rows(model, gen, _conds(model, cells), 1, shared_noise)
    return _save(cfg, images, name, len(cols), rows=[_describe(model, [r]) for r in rows],
                 cols=[_describe(model, [c]) for c in cols], title=title,
                 names=[_describe(model, sorted(cs, key=lambda c: c.group != "hair")) for cs in cells])


def fix_noise(cfg, model, rng, gen) -> list[Path]:
    """Seed 001: one noise vector, rows eye x columns hair."""
    return _table(cfg, model, gen, _sweep(model, "eye"), _sweep(model, "hair"), "fix_noise",
                  shared_noise=True, title="one noise vector")


def fix_hair_eye(cfg, model, rng, gen) -> list[Path]:
    """Seed 001: the given (or random) hair and eye, 64 noise vectors in an 8 x 8 grid."""
    colours = _hair_eye_colours(cfg, model, rng)
    images = _draw(model, _noise(model, gen, 64), _conds(model, [colours]).repeat(64, 1))
    return _save(cfg, images, _fix_hair_eye_name(model, colours), 8, title=_describe(model, colours))


def _hair_eye_colours(cfg, model, rng, quiet: bool = False) -> list[Colour]:
    return [_colour(cfg, model, rng, "hair", quiet=quiet), _colour(cfg, model, rng, "eye", quiet=quiet)]


def _fix_hair_eye_name(model, colours: list[Colour]) -> str:
    return _describe(model, colours).replace(" ", "_")  # orange_hair_green_eyes.png, as seed 001


def _change(cfg, model, rng, gen, fixed: str, varied: str, name: str) -> list[Path]:
    """Seed 001: fixed `fixed` colour, one column per `varied` colour, -n rows of noise."""
    keep, sweep = _colour(cfg, model, rng, fixed), _sweep(model, varied)
    images = _rows(model, gen, _conds(model, [[keep, c] for c in sweep]), cfg.n, shared_noise=True)
    images = images.view(len(sweep), cfg.n, *images.shape[1:]).transpose(0, 1).reshape_as(images)
    cols = [_describe(model, [c]) for c in sweep]
    return _save(cfg, images, name, len(sweep), cols=cols, title=f"{_describe(model, [keep])}, {varied} changes",
                 names=cols * cfg.n)


def change_hair(cfg, model, rng, gen) -> list[Path]:
    return _change(cfg, model, rng, gen, "eye", "hair", GRID_NAMES["change_hair"])


def change_eye(cfg, model, rng, gen) -> list[Path]:
    return _change(cfg, model, rng, gen, "hair", "eye", GRID_NAMES["change_eye"])


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of noise vectors a, b [D] at t [T] -> [T, D]."""
    omega = torch.arccos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))
    if omega < 1e-4:
        return torch.lerp(a, b, t[:, None])
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


def interpolate(cfg, model, rng, gen) -> list[Path]:
    """From (z0, hair/eye) to (z1, to-hair/to-eye) in --steps steps: a strip and a GIF.  Models with
    other labels go between two random labels; unconditional ones between two noise vectors."""
    if _hair_and_eye(model):
        groups = ("hair", "eye")
        start = [_colour(cfg, model, rng, g) for g in groups]
        # A colour without its --to-* stays as it starts (`--hair red --to-hair blue` keeps the eyes);
        # with no colour flags at all, both ends are drawn at random.
        chosen = any(getattr(cfg, f) for g in groups for f in (g, f"{g}_rgb", f"to_{g}"))
        end = [_colour(cfg, model, rng, g, "to_") if getattr(cfg, f"to_{g}") or not chosen else first
               for g, first in zip(groups, start)]
        c0, c1 = _conds(model, [start, end])
        title = f"{_describe(model, start)} -> {_describe(model, end)}"
    else:
        labels, names = _random_labels(model, rng, 2)
        c0, c1 = _cond(model, labels)
        title = " -> ".join(names) if names else "between two noise vectors"
    t = torch.linspace(0, 1, cfg.steps)
    z0, z1 = _noise(model, gen, 2)
    images = _draw(model, _slerp(z0, z1, t), torch.lerp(c0, c1, t[:, None]))
    steps_text = [f"t={v:.2f}" for v in t.tolist()]
    frames = [render.grid_image(image[None], 1, padding=0) for image in images]
    return _save(cfg, images, "interpolate", cfg.steps, cols=steps_text, title=title, names=steps_text,
                 gif_frames=frames, gif_captions=steps_text if cfg.captions else None)


def samples(cfg, model, rng, gen) -> list[Path]:
    """-n rows of 8 new images from any model; a conditional one draws each row for a random label."""
    labels, names = _random_labels(model, rng, cfg.n)
    images = _rows(model, gen, _cond(model, labels), 8, shared_noise=False)
    return _save(cfg, images, "samples", 8, rows=names, title=None if names else "new noise in every cell",
                 names=[r for r in names for _ in range(8)] if names else None)


def pairs(cfg, model, rng, gen) -> list[Path]:
    """Seed 000 §4.1: one row per hair/eye pair, -n shared noise vectors as columns."""
    texts = cfg.pairs or DEFAULT_PAIRS
    vecs = [model.schema.parse(text) for text in texts]
    images = _rows(model, gen, _cond(model, torch.from_numpy(np.stack(vecs))), cfg.n, shared_noise=True)
    rows = [model.schema.describe(v) for v in vecs]
    return _save(cfg, images, "pairs", cfg.n, rows=rows, title="same noise down each column",
                 names=[r for r in rows for _ in range(cfg.n)])


def grid(cfg, model, rng, gen) -> list[Path]:
    """Seed 000 §4.4: rows hair x columns eye, new noise in every cell."""
    return _table(cfg, model, gen, _sweep(model, "hair"), _sweep(model, "eye"), "grid", shared_noise=False)


def color_map(cfg, model, rng, gen, hues: int = 12) -> list[Path]:
    """Seed 000's big colour map (--embed rgb): hair hue across, eye hue down, one noise vector."""
    rgb = [colorsys.hsv_to_rgb(i / hues, 0.85, 0.95) for i in range(hues)]
    return _table(cfg, model, gen, [Colour("eye", rgb=c) for c in rgb], [Colour("hair", rgb=c) for c in rgb],
                  "color_map", shared_noise=True, title="hair hue across, eye hue down, one noise vector")


def conditions(cfg, model, rng, gen) -> list[Path]:
    """Seed 003's test.json: one image per label list; captioned, one labelled row per entry."""
    entries, labels = _conditions(cfg, model)
    labels = torch.from_numpy(labels)
    images = _draw(model, _noise(model, gen, len(entries)), _cond(model, labels))
    texts = [", ".join(entry) for entry in entries]
    return _save(cfg, images, "conditions", 1 if cfg.captions else 8, rows=texts, names=texts)


# ---- progress: no model needed -----------------------------------------------------------------

def progress(cfg: TestConfig, snapshots: list[tuple[int, Path]]) -> list[Path]:
    """Seed 000: the run's fake_step_<N>.png snapshots, in step order, as one animated GIF.  Each
    snapshot already carries its "step N" title (train's _write_samples), so no caption is added:
    it would say the step twice, and --no-captions could not take the snapshot's own away."""
    frames = [_read_snapshot(p) for _, p in snapshots]
    return [render.save_gif(frames, Path(cfg.sample_dir) / "progress.gif", duration_ms=FRAME_MS)]


def _evenly_spaced(items: list, most: int) -> list:
    """At most `most` of `items`, evenly spaced, the first and last always among them."""
    if len(items) <= most:
        return items
    # the gap is over 1, so no two picks round to the same index
    return [items[round(i * (len(items) - 1) / (most - 1))] for i in range(most)]


def _snapshots(cfg: TestConfig) -> list[tuple[int, Path]]:
    """(step, path) of the fake_step_<N>.png snapshots in the first folder that has any, in step order."""
    searched = _snapshot_folders(cfg)
    for folder in searched:
        found = sorted((int(m.group(1)), p) for p in folder.glob("fake_step_*.png")
                       if (m := _STEP_FILE.match(p.name)))
        if found:
            break
    else:
        missing = "" if Path(cfg.model_dir).exists() else f" (-d {cfg.model_dir} does not exist)"
        raise UserError(f"no fake_step_<N>.png snapshots in {', '.join(map(str, searched))}{missing}; "
                        f"pass the run's sample folder with -s samples/<run> or its run folder with -d")
    return found


def _read_snapshot(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: unreadable snapshot ({type(e).__name__}); delete or replace it") from None


def _snapshot_folders(cfg: TestConfig) -> list[Path]:
    """-s itself, then -s/<run> and the run's own sample folder, named by the run's config."""
    out, folders = Path(cfg.sample_dir), [Path(cfg.sample_dir)]
    run_dir = Path(cfg.model_dir)
    run_dir = run_dir.parent if run_dir.is_file() else run_dir
    train = _run_config(run_dir)
    if train is not None:
        run = train.run_name()
        folders += [out / run, Path(train.sample_dir) / run, run_dir.parent.parent / train.sample_dir / run]
    elif run_dir.is_dir():
        folders.append(out / run_dir.name)
    return list(dict.fromkeys(folders))


def _run_config(run_dir: Path) -> TrainConfig | None:
    """The run's TrainConfig from config.json, else from its latest G checkpoint; None if neither."""
    try:
        return TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())["train"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        pass
    if steps(run_dir):
        return TrainConfig.from_dict(load(generator_path(run_dir), "generator")["config"])
    return None


TYPES = {f.__name__: f for f in (fix_noise, fix_hair_eye, change_hair, change_eye, interpolate, pairs,
                                 grid, color_map, conditions, samples)} | {"progress": None}
