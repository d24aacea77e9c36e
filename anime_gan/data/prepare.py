"""`anime-gan prepare`: any accepted layout -> the tag-pickle layout plus a packed uint8 cache.

The cache is one array [N, 3, S, S] per image size S, written with numpy's .npy format so the
trainer can memory-map it: opening a 33k-image set costs nothing until pages are touched.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import IMAGE_SIZES, MAX_SYNTHETIC, PrepareConfig, check_seed
from ..errors import UserError, shell
from ..files import (LockHeld, new_staging, outermost_missing, removed_on_failure, replace_atomically, swap_in,
                     take_lock, visible_entries, writable_folder)
from ..labels import SCHEMA_FILE, Schema, anime_schema
from .formats import IMAGE_SUFFIXES, Source, check_source_folder, flatten_alpha, read_image_side, scan, upright

CACHE_DIR = "cache"


def cache_paths(root, size: int) -> tuple[Path, Path, Path]:
    """(images .npy, labels .npy, meta .json) of the packed cache at `size` px."""
    d = Path(root) / CACHE_DIR
    return d / f"images_{size}.npy", d / f"labels_{size}.npy", d / f"meta_{size}.json"

SHOWN_SKIPPED = 10  # the rest are in the cache's meta file: a bad folder must not flood a log


def validate_prepare(cfg: PrepareConfig) -> None:
    """The checks that need no data: run before anything is read or written, and by --dry-run."""
    if cfg.image_size not in IMAGE_SIZES:
        raise UserError(f"--image-size {cfg.image_size} is not supported; use 32, 64 or 128")
    check_seed(cfg.seed)
    for name in ("synthetic", "workers"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name} must be 0 or more, got {getattr(cfg, name)}")
    if cfg.synthetic > MAX_SYNTHETIC:
        raise UserError(f"--synthetic {cfg.synthetic} is more than the {MAX_SYNTHETIC:,} faces this "
                        f"tool draws; ask for fewer")
    if cfg.synthetic and cfg.source is not None:
        raise UserError(f"give a SOURCE folder ({cfg.source}) or --synthetic N, not both")
    if not cfg.synthetic and cfg.source is None:
        raise UserError("prepare needs a SOURCE folder, or --synthetic N (1 or more) for the built-in faces")


def check_folders(cfg: PrepareConfig) -> None:
    """SOURCE is a data folder and -o holds no other set (before anything is read, and by --dry-run)."""
    if cfg.synthetic:
        return check_empty_for_synthetic(Path(cfg.out))
    source, out = check_source_folder(cfg.source, read_only=True), Path(cfg.out)
    # a half-replaced copy, packed in place or copied on, would pair its images with wrong labels
    stopped_copy_check(source)
    if not _same(source, out):
        _check_no_other_files(out)
    if not _same(source, out) and _holds_data(out) and not _prepared_from(out, source):
        # Writing over another set would mix them: its images/{i} beyond the new count, or of
        # another extension, would stay and be read as the new set's.
        raise UserError(f"{out}: already holds a data set from elsewhere; choose an empty folder with "
                        f"-o, or delete it first (nothing was changed). To add a size to it: "
                        f"{shell('anime-gan', 'prepare', out)} --image-size N")


@contextmanager
def preparing(root: Path, log):
    """One process at a time draws or packs a data folder (`train` and `prepare` alike): runs started
    together on an empty one (a sweep from a shell script) would both draw into it, and one would
    read a half-made set, or remove the folder the other made. The
    lock file sits beside the folder, which a failed first run removes while others wait."""
    where = root.resolve()
    path = where.parent / f".{where.name}.prepare.lock"
    try:
        lock = _lock_quietly_or_say_so(path, root, log)
    except OSError:  # a parent folder we may not write: prepare unguarded, as before
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            with suppress(OSError):
                lock.release()


QUIET_WAIT_S = 1.0  # a peer that only reads the folder's labels (torchrun's other ranks) holds it for ms


def _lock_quietly_or_say_so(path: Path, root: Path, log):
    deadline = time.monotonic() + QUIET_WAIT_S
    while True:
        try:
            return take_lock(path)
        except LockHeld as e:
            if time.monotonic() >= deadline:
                log(f"waiting for another process (pid {e.pid or 'unknown'}) to finish preparing {root}")
                return take_lock(path, wait=True)
        time.sleep(0.05)


def check_has_images(src: Source) -> None:
    if not src.files:
        first = f", first {src.skipped[0][0]} ({src.skipped[0][1]})" if src.skipped else ""
        raise UserError(f"{src.root}: no usable images found ({len(src.skipped)} skipped{first}); "
                        f"see the formats in README.md")


def check_source(cfg: PrepareConfig) -> None:
    """--dry-run: SOURCE's labels read and its image files listed (none decoded), as the real run does first."""
    check_folders(cfg)
    if not cfg.synthetic:
        src = scan(cfg.source, skip=cfg.out)
        check_has_images(src)
        if cfg.strict and src.skipped:  # what the scan skipped (missing images, unlabelled files); the
            raise _strict_error(src.skipped)  # real run decodes every image first, to list all in one go


def prepare(cfg: PrepareConfig) -> dict:
    validate_prepare(cfg)
    # -o new/sub: a refused or stopped run removes new/ too
    with removed_on_failure(outermost_missing(cfg.out)):
        return _prepare(cfg, Path(cfg.out))


def _prepare(cfg: PrepareConfig, out: Path) -> dict:
    check_folders(cfg)  # before touching `out`: a wrong SOURCE must not create folders
    if cfg.synthetic:
        writable_folder(out, "choose another folder with -o")
        write_synthetic(out, cfg.synthetic, cfg.seed, size=max(64, cfg.image_size), quiet=cfg.quiet)
        src = scan(out)
    else:
        src = scan(cfg.source, skip=out)
    if _same(src.root, out) and src.labels is not None:
        from .dataset import class_priors  # (dataset imports this module)
        class_priors(out, src.schema, src.labels)  # kept as they are below: a bad one would stop train instead
    priors = _source_priors(src) if not _same(src.root, out) else {}  # a copy keeps them too
    check_has_images(src)  # before -o is made: a refused SOURCE leaves no empty folder
    if not cfg.synthetic:
        writable_folder(out, "choose another folder with -o")
    _, _, meta = cache_paths(out, cfg.image_size)
    copy = not _same(src.root, out)
    origin = {} if copy or cfg.synthetic else _origin(meta, out)
    staged = None

    def before_replace(keep):
        # The slow copies first, while the earlier set stays whole; then only short steps. Until its
        # meta file is written again at the end, a labelled cache is refused (re-run prepare), never
        # read with the other set's labels or beside the other set's images.
        nonlocal staged
        if copy:
            staged = stage_images(out, [src.files[i] for i in keep], cfg.quiet)
            # Says, until the end, that `out` is between two sets: train, eval and `prepare OUT` refuse
            # it, and naming SOURCE lets this same command run again to finish the job.
            _atomic_write_bytes(_unfinished_path(out), json.dumps(
                {"source": str(src.root), "source_path": str(src.root.resolve()),
                 "image_size": cfg.image_size}).encode())
        meta.unlink(missing_ok=True)

    try:
        images, keep, skipped, small = pack(src, out, cfg.image_size, cfg.workers, cfg.quiet, strict=cfg.strict,
                                            before_replace=before_replace)
    except BaseException:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    skipped = src.skipped + skipped
    labels = src.labels[keep] if src.labels is not None else None
    if copy:  # a re-run from the same SOURCE replaces what it wrote
        commit_tag_pickle_layout(out, staged, [src.files[i] for i in keep], labels, src.schema, priors)
        _forget_other_sizes(out, cfg.image_size)
    elif src.kind == "tag-pickle":
        write_labels(out, None, labels, src.schema, overwrite_priors=False)
    # else: prepared in place; the cache (and its meta) carry the labels and schema
    report = _report(src, out, cfg.image_size, len(keep), skipped, labels)
    if small:
        report["enlarged"] = {"images": len(small), "smallest_side": small[0][0], "file": small[0][1]}
    folders = {f.parent for f in src.files} if _same(src.root, out) else {out / "images"}
    report["folder_state"] = folder_state(out, sorted(_relative(f, out) for f in folders))
    if src.kind == "folder" and _same(src.root, out):  # images are read from every folder below it
        report["folder_state"][ALL_IMAGES] = _fingerprint(_relative(f, out) for f in src.files)
    if cfg.synthetic:  # drawn into `out`, which is then read as a tag-pickle set: say which it is
        report.update(source="built-in faces", layout="built-in", seed=cfg.seed)
    if origin and origin.get("layout") != "built-in":  # packed again in place: say what was read, too
        report.update(read=str(src.root), read_layout=src.kind)
    report.update(origin)
    # its images are prepare's copies (or drawings), not the user's own: a plain folder that holds
    # this set does not read them again (formats._holds_copies)
    report["copies"] = bool(copy or cfg.synthetic or origin)
    _atomic_write_bytes(meta, json.dumps(report, indent=1).encode())
    _unfinished_path(out).unlink(missing_ok=True)
    return report


LOG_EVERY_S = 10.0  # in a log, at most a line this often: work done in seconds needs none


def progress(items, total: int, desc: str, quiet: bool):
    """`items`, shown as they go: a progress bar at a terminal; in a log (stderr a file or a pipe,
    as in a script) a line at a tenth of the way now and then, so that a long run does not look hung."""
    if quiet:
        yield from items
        return
    if sys.stderr.isatty():
        with tqdm(total=total, desc=desc, unit="img", file=sys.stderr) as bar:
            for item in items:
                yield item
                bar.update()
        return
    start = last = time.monotonic()
    tenth = max(total // 10, 1)
    for done, item in enumerate(items, 1):
        yield item
        if done % tenth == 0 and done < total and time.monotonic() - last >= LOG_EVERY_S:
            last = time.monotonic()
            print(f"{desc}: {done}/{total} images, {last - start:.0f} s", file=sys.stderr, flush=True)


def _unfinished_path(out: Path) -> Path:
    return Path(out) / CACHE_DIR / "unfinished.json"


def stopped_copy_check(root) -> None:
    """Refuse a folder whose `prepare SOURCE -o root` was stopped between replacing its images and
    writing their labels: read now, its images could be paired with the earlier set's labels."""
    path = _unfinished_path(root)
    if not path.exists():
        return
    try:  # absolute, and with its size: the command can be run again from anywhere
        marker = json.loads(path.read_text())
        command = f"anime-gan prepare {shlex.quote(str(marker['source_path']))} -o {shlex.quote(str(root))}"
        size = marker.get("image_size", PrepareConfig.image_size)
        command += f" --image-size {size}" if size != PrepareConfig.image_size else ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        command = f"anime-gan prepare SOURCE -o {shlex.quote(str(root))}"
    raise UserError(f"{root}: `{command}` was stopped before it finished, so its images and labels may not "
                    f"match; run that command again to finish it, or delete {root} and prepare it anew")


def _origin(meta: Path, out: Path) -> dict:
    """Where the set packed before at this size came from, when not from `out` itself: packing it
    again in place (train does, after the folder changed) keeps that, so `prepare SRC -o OUT` still
    recognises OUT as its own, and built-in faces stay described as such."""
    try:
        old = json.loads(meta.read_text())
        if old.get("layout") == "built-in" or not _same(old["source_path"], out):
            return {k: old[k] for k in ("source", "source_path", "layout", "seed") if k in old}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    return {}


# What scan() reads labels from; a change to any of them, or one appearing, changes the set.
LABEL_FILES = ("tags.pickle", "tags.csv", "objects.json", "object.json", "train.json", "schema.json")


def folder_state(root: Path, image_folders) -> dict:
    """A cheap fingerprint of a data folder, kept in the cache's meta file: the hash of each label
    file, and the image file names in each folder images were read from (a judge or other file saved
    beside them changes nothing). An image edited in place under the same name is not seen."""
    state = {}
    for name in LABEL_FILES:  # by content, not time: a copied or checked-out folder is the same set
        with suppress(OSError), open(root / name, "rb") as f:
            digest = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
            state[name] = digest.hexdigest()
    for rel in image_folders:
        try:
            names = sorted(e.name for e in os.scandir(root / rel) if Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
        except (OSError, ValueError):  # ValueError: a damaged meta file naming a folder with a NUL in it
            names = []
        state[f"{rel}/"] = _fingerprint(names)
    return state


# A plain folder is read from every folder below it, a new one included: its key holds them all.
ALL_IMAGES = "all folders/"


def _fingerprint(names) -> list:
    names = sorted(names)
    return [len(names), hashlib.sha256("\0".join(names).encode(errors="surrogateescape")).hexdigest()]


def cache_changes(root, size: int) -> str | None:
    """What changed in `root` since its cache at `size` was packed (None: nothing seen, or a cache too
    old to say, or unreadable meta, which open_packed reports)."""
    try:
        saved = json.loads(cache_paths(root, size)[2].read_text()).get("folder_state")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(saved, dict):
        return None
    now = folder_state(Path(root), [k[:-1] for k in saved if k.endswith("/") and k != ALL_IMAGES])
    if ALL_IMAGES in saved:
        with suppress(UserError, OSError):  # (a folder that became a labelled one: its label file is new)
            source = scan(root)
            if source.kind == "folder":
                now[ALL_IMAGES] = _fingerprint(_relative(f, Path(root)) for f in source.files)
    changed = []
    for k in sorted(set(saved) | set(now), key=lambda k: (k == ALL_IMAGES, k)):  # (the sum of them all last)
        before, after = saved.get(k), now.get(k)
        if before == after or (k == ALL_IMAGES and (after is None or changed)):
            continue  # said by its label file (no plain folder now), or by the folders that changed
        if not k.endswith("/"):
            changed.append(f"{k} {'added' if before is None else 'removed' if after is None else 'edited'}")
            continue
        where = "images below it" if k == ALL_IMAGES else k
        if isinstance(before, list) and before and before[0] != after[0]:
            changed.append(f"{where}: {before[0]} -> {after[0]} images")
        else:
            changed.append(f"{where}: images renamed")
    return ", ".join(changed) or None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return os.path.relpath(path, root)


def ensure_cache(root, size: int, quiet: bool = False) -> bool:
    """Pack `root` in place when it has no cache at `size` yet; True when it did."""
    if cache_paths(root, size)[0].exists():
        return False
    report = prepare(PrepareConfig(source=str(root), out=str(root), image_size=size, quiet=quiet))
    if not quiet:
        print(format_report(report), file=sys.stderr)
    return True


def _strict_error(skipped) -> UserError:
    return UserError(f"--strict: {len(skipped)} file(s) skipped, first {skipped[0][0]} "
                     f"({skipped[0][1]}); fix them or drop --strict (nothing was changed)")


def pack(src: Source, out: Path, size: int, workers: int = 0, quiet: bool = False, strict: bool = False,
         before_replace=lambda keep: None):
    """Decode every file once into cache/images_<size>.npy; return (path, kept indices, skipped,
    [(side, file)] of the images smaller than `size`, smallest first).

    An existing cache is only replaced once decoding succeeded (and, with strict, skipped nothing),
    and after `before_replace(kept indices)` returned."""
    images_path, labels_path, _ = cache_paths(out, size)
    made = not images_path.parent.exists()
    images_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = images_path.with_suffix(".tmp.npy")
    try:  # Ctrl-C, a full disk or a bad file: no half-written cache is left behind
        return _pack_into(tmp, src, images_path, labels_path, size, workers, quiet, strict, before_replace)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name("shrink." + tmp.name).unlink(missing_ok=True)
        if made and not any(images_path.parent.iterdir()):
            images_path.parent.rmdir()  # nor an empty cache/, which would mark -o as holding a data set


def _pack_into(tmp: Path, src: Source, images_path: Path, labels_path: Path, size: int, workers: int,
               quiet: bool, strict: bool, before_replace):
    arr = _reserved_memmap(tmp, np.uint8, (len(src.files), 3, size, size))
    keep, skipped, small = [], [], []

    def decode(i):
        try:
            pixels, side = read_image_side(src.files[i], size)
            if side < size:
                small.append((side, str(src.files[i])))
            return i, pixels, None
        except ValueError as e:
            return i, None, str(e)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        results = pool.map(decode, range(len(src.files)))
        for i, pixels, error in progress(results, len(src.files), f"packing {size}px", quiet):
            if error:
                skipped.append((str(src.files[i]), error))
                continue
            arr[len(keep)] = pixels  # compact in place: skipped files leave no hole
            keep.append(i)
    arr.flush()
    del arr
    if not keep or (strict and (src.skipped or skipped)):
        tmp.unlink()
        if not keep:
            raise UserError(f"{src.root}: none of the {len(skipped)} image(s) could be read, first "
                            f"{skipped[0][0]} ({skipped[0][1]}); check the files (nothing was changed)")
        raise _strict_error(src.skipped + skipped)
    _shrink_npy(tmp, len(keep))
    before_replace(keep)
    os.replace(tmp, images_path)
    if src.labels is not None:
        _atomic_save_npy(labels_path, src.labels[keep].astype(np.uint8))
    else:
        labels_path.unlink(missing_ok=True)
    return images_path, keep, skipped, sorted(small)


def _reserved_memmap(path: Path, dtype, shape) -> np.memmap:
    """A new .npy memory map whose disk blocks are allocated now: on a full disk that is an OSError
    here, instead of a SIGBUS (the process killed without a word) at some later write."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.path.getsize(path))
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a file system without it
                raise OSError(e.errno, e.strerror, str(path)) from None
        finally:
            os.close(fd)
    return arr


def _shrink_npy(path: Path, n: int) -> None:
    """Keep the first n rows of a .npy file (only needed when files were skipped)."""
    full = np.load(path, mmap_mode="r")
    if len(full) == n:
        return
    tmp = path.with_name("shrink." + path.name)
    part = _reserved_memmap(tmp, full.dtype, (n,) + full.shape[1:])
    for i in range(0, n, 4096):
        part[i:i + 4096] = full[i:min(i + 4096, n)]
    part.flush()
    del part, full
    os.replace(tmp, path)


_COPIED_AS = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png"}  # byte for byte; other formats become PNG


def stage_images(out: Path, files: list[Path], quiet: bool = False) -> Path:
    """Copy `files` to a hidden folder as {i}.<ext>, which commit_tag_pickle_layout then makes images/:
    a re-run stopped while copying (Ctrl-C, SIGTERM) leaves the earlier images/ whole."""
    staging = new_staging(out / "images")  # .images.partial
    try:
        for i, f in enumerate(progress(files, len(files), "copying to images/", quiet)):
            ext = _COPIED_AS.get(f.suffix.lower(), ".png")
            target = staging / f"{i}{ext}"
            if ext != ".png" or f.suffix.lower() == ".png":  # the file's own bytes (EXIF orientation kept)
                shutil.copyfile(f, target)
            else:
                from PIL import Image
                with Image.open(f) as im:
                    flatten_alpha(upright(im)).save(target)  # upright and on white, as the cache has it
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def commit_tag_pickle_layout(out: Path, staged: Path, files: list[Path], labels, schema: Schema | None,
                             priors: dict | None = None) -> None:
    """The staged copies become images/ (two renames), then tags.pickle, <group>_prob.npy (`priors`
    where given, else label frequencies), schema.json."""
    swap_in(staged, out / "images")
    if schema is not None:
        write_labels(out, files, labels, schema, overwrite_priors=True, priors=priors)
    else:  # SOURCE lost its labels since the last run: the earlier ones would label the new copies
        for stale in ("tags.pickle", SCHEMA_FILE, *(p.name for p in out.glob("*_prob.npy"))):
            (out / stale).unlink(missing_ok=True)


def _source_priors(src: Source) -> dict:
    """The <group>_prob.npy a tag-pickle SOURCE ships (seed 001's: the law its fake labels are drawn
    from), checked as train checks them: a copy keeps them rather than label frequencies."""
    if src.kind != "tag-pickle" or src.labels is None:
        return {}
    from .dataset import class_priors  # (dataset imports this module)
    priors = class_priors(src.root, src.schema, src.labels)  # a bad file is refused here, before -o is made
    return {g: p for g, p in priors.items() if (src.root / f"{g}_prob.npy").exists()}


def write_labels(out: Path, files, labels, schema: Schema, overwrite_priors: bool, priors: dict | None = None) -> None:
    if files is not None:
        tags = {i: torch.from_numpy(np.ascontiguousarray(labels[i], np.float32)) for i in range(len(labels))}
        _atomic_write_bytes(out / "tags.pickle", pickle.dumps(tags, protocol=4))
    for g in schema.groups:
        path = out / f"{g.name}_prob.npy"
        if priors and g.name in priors:
            _atomic_save_npy(path, priors[g.name])
        elif overwrite_priors or not path.exists():
            counts = labels[:, schema.span(g.name)].sum(0).astype(np.float64)
            _atomic_save_npy(path, (counts / max(counts.sum(), 1)).astype(np.float32))
    if overwrite_priors or not (out / "schema.json").exists():
        schema.save(out)


def check_empty_for_synthetic(out: Path) -> None:
    if _holds_data(out):
        raise UserError(f"{out}: already holds a data set; choose an empty folder with -o, or delete "
                        f"this one to draw the built-in faces again (nothing was changed)")
    _check_no_other_files(out)


def _check_no_other_files(out: Path) -> None:
    # -o naming a run folder, or a home directory, would scatter images/, cache/, tags.pickle there
    others = visible_entries(out) if not _holds_data(out) else []
    if others:
        names = ", ".join(sorted(p.name for p in others)[:3]) + (", ..." if len(others) > 3 else "")
        raise UserError(f"{out}: holds other files ({names}); choose an empty or new folder with -o "
                        f"(nothing was changed)")


def write_synthetic(out: Path, n: int, seed: int, size: int = 64, quiet: bool = False) -> None:
    """The built-in data set: n procedurally drawn faces in the tag-pickle layout."""
    from .synthetic import generate
    check_empty_for_synthetic(out)
    schema = anime_schema()
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    labels = np.zeros((n, schema.dim), np.float32)
    hair0, eye0 = schema.offsets[0], schema.offsets[1]
    items = generate(n, seed=seed, size=size)
    try:
        for i, (img, hair, eye) in enumerate(progress(items, n, "drawing built-in faces", quiet)):
            img.save(image_dir / f"{i}.png", optimize=False, compress_level=1)
            labels[i, hair0 + hair] = labels[i, eye0 + eye] = 1.0
        write_labels(out, list(range(n)), labels, schema, overwrite_priors=True)
    except BaseException:
        # Ctrl-C or a full disk half-way: leave no unlabelled image folder that looks like data.
        shutil.rmtree(image_dir, ignore_errors=True)
        for leftover in ("tags.pickle", "schema.json", *(f"{g.name}_prob.npy" for g in schema.groups)):
            (out / leftover).unlink(missing_ok=True)
        raise


def _holds_data(folder: Path) -> bool:
    """True when `folder` has anything of a data set in any layout (labels, images or a cache)."""
    markers = ("tags.pickle", "tags.csv", "object.json", "objects.json", "train.json", "images", CACHE_DIR)
    return (any((folder / m).exists() for m in markers)
            or (folder.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir())))


def _report(src: Source, out: Path, size: int, n: int, skipped, labels) -> dict:
    # source_path: absolute, so a re-run from another working directory is still recognised
    report = {"source": str(src.root), "source_path": str(src.root.resolve()), "layout": src.kind,
              "out": str(out), "image_size": size, "images": n,
              "skipped": [{"file": f, "reason": r} for f, r in skipped],
              "schema": src.schema.to_dict() if src.schema else None, "class_counts": {}}
    if src.schema is not None and labels is not None:
        for g in src.schema.groups:
            counts = labels[:, src.schema.span(g.name)].sum(0).astype(int)
            report["class_counts"][g.name] = dict(zip(g.classes, counts.tolist()))
    return report


def format_report(report: dict) -> str:
    origin = (f"built-in faces drawn with seed {report['seed']}" if report["layout"] == "built-in" else
              f"images from {report['read']} ({report['read_layout']} layout; a copy of {report['source']}, "
              f"{report['layout']} layout)" if "read" in report else
              f"images from {report['source']} ({report['layout']} layout)")
    lines = [f"{report['images']} {origin} -> {report['out']} at {report['image_size']}px"]
    for group, counts in report["class_counts"].items():
        lines.append(f"  {group}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if report.get("enlarged"):
        e = report["enlarged"]
        # (a size at which none of them is enlarged; below 32 px there is none)
        smaller = [s for s in IMAGE_SIZES if s <= e["smallest_side"]]
        lines.append(f"  enlarged {e['images']} image(s) smaller than {report['image_size']}px, which come out "
                     f"blurred (smallest {e['smallest_side']}px: {e['file']}); drop them"
                     + (f", or pack at --image-size {smaller[-1]}" if smaller else ""))
    if report["skipped"]:
        lines.append(f"  skipped {len(report['skipped'])} file(s):")
        lines += [f"    {s['file']}: {s['reason']}" for s in report["skipped"][:SHOWN_SKIPPED]]
        if len(report["skipped"]) > SHOWN_SKIPPED:
            lines.append(f"    ... and {len(report['skipped']) - SHOWN_SKIPPED} more, all listed in "
                         f"{report['out']}/{CACHE_DIR}/meta_{report['image_size']}.json")
    return "\n".join(lines)


def _prepared_from(out: Path, source: Path) -> bool:
    """True when an earlier `prepare SOURCE -o OUT` wrote `out` (its cache reports name SOURCE), or
    was stopped while writing it."""
    for meta in (*(out / CACHE_DIR).glob("meta_*.json"), _unfinished_path(out)):
        try:
            report = json.loads(meta.read_text())
            if _same(report.get("source_path", report["source"]), source):
                return True
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            continue
    return False


def _forget_other_sizes(out: Path, keep_size: int) -> None:
    """Remove the other-size caches of an earlier run, which may describe an older state of SOURCE;
    `keep_size`'s cache was just rewritten."""
    for path in (out / CACHE_DIR).glob("*_*.*"):
        if path.stem.rsplit("_", 1)[-1] != str(keep_size):
            path.unlink(missing_ok=True)


def _same(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    replace_atomically(path, lambda f: f.write(data))


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    replace_atomically(path, lambda f: np.save(f, array))
