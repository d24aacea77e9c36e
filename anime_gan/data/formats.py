"""Recognise and read the four data layouts we accept.

1. tag-pickle (seed 001): images/{i}.jpg|png, tags.pickle {i: 22-dim tensor | (hair, eye)}, priors
2. JSON (seed 003): object(s).json {name: index}, train.json {file: [names]}, images beside them
3. MLDS tags.csv: lines "id,<colour> hair <colour> eyes", images/{id}.jpg
4. a plain folder of images (no labels)

`scan` returns a `Source`: the image files, their multi-hot labels and what had to be skipped.
Nothing here decodes images; `read_image` does, one file at a time.
"""
from __future__ import annotations

import csv
import json
import os
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .. import safe_pickle
from ..errors import UserError
from ..labels import SCHEMA_FILE, Schema, anime_schema, multi_label_schema

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# PIL modes that convert to RGB without losing meaning; anything else (16-bit, float) is skipped.
READABLE_MODES = {"RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1"}
# PIL warns on stderr about damaged metadata ("Corrupt EXIF data") of images whose pixels decode
# fine; we read only the pixels, and a file whose pixels fail is skipped and listed in the report.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
# Images past PIL's pixel limit are skipped by read_image (decoded, each would take gigabytes): its
# warning would be two more lines on stderr for each.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass
class Source:
    root: Path
    kind: str                              # 'tag-pickle' | 'json' | 'tags-csv' | 'folder'
    schema: Schema | None                  # None for an unlabelled folder
    files: list[Path] = field(default_factory=list)
    labels: np.ndarray | None = None       # [N, schema.dim] float32, aligned with files
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (file, reason)


def check_source_folder(root, read_only: bool = False) -> Path:
    """`root` is a folder to read a data set from (also run by `prepare --dry-run`). `read_only`:
    prepare's SOURCE, which is never made, so built-in faces are not offered to be drawn there."""
    root = Path(root)
    if root.is_file():
        raise UserError(f"{root}: is a file; give the data folder that holds it ({root.parent})")
    if not root.is_dir():  # (quoted as a shell needs it: a name of spaces would vanish from the line)
        make = "DIR" if read_only else shlex.quote(str(root))
        raise UserError(f"{shlex.quote(str(root))}: data folder not found; check the path, "
                        f"or draw the built-in faces with `anime-gan prepare --synthetic 2000 -o {make}`")
    return root


def scan(root, skip=None) -> Source:
    """`skip`: a folder inside `root` to leave out, such as `prepare`'s own output."""
    root = check_source_folder(root)
    if _present(root / "tags.pickle"):
        return _scan_tag_pickle(root)
    for name in ("objects.json", "object.json"):
        if _present(root / name):
            return _scan_json(root, root / name)
    if _present(root / "tags.csv"):
        return _scan_tags_csv(root)
    for name, why in UNREAD_LABEL_FILES.items():  # labels meant, not an unlabelled folder
        if _present(root / name):
            raise UserError(f"{root / name}: {why}, or move it out of {root} to use the images without labels")
    return _scan_folder(root, Path(skip) if skip is not None else None)


# Label files that are not a layout on their own: without these lines the folder would be read as
# unlabelled images, and a conditional model would then be refused with "no labels".
UNREAD_LABEL_FILES = {
    "train.json": "the JSON layout also needs objects.json ({\"<label>\": <index>, ...}, seed 003's "
                  "object.json) beside it; add it",
    "tags_clean.csv": "MLDS's raw tag counts, which are not read; write a tags.csv of `id,<colour> hair "
                      "<colour> eyes` lines from it (see the README's data formats)",
}


def _present(path: Path) -> bool:
    # a broken link to a label file is that file missing, said as such: not an unlabelled folder
    return path.exists() or path.is_symlink()


def _image_dir(root: Path) -> Path:
    return root / "images" if (root / "images").is_dir() else root


def _scan_tag_pickle(root: Path) -> Source:
    path = root / "tags.pickle"
    schema = Schema.load(root) if (root / SCHEMA_FILE).exists() else anime_schema()
    tags = safe_pickle.load(path)
    if not isinstance(tags, dict):
        raise UserError(f"{path}: expected a dict {{index: label}} (what `anime-gan prepare` writes), got "
                        f"{type(tags).__name__}; fix the file or replace it with a good copy")
    src = Source(root, "tag-pickle", schema)
    images = _image_dir(root)
    labels, seen = [], set()
    for key in tags:  # (str() of a frozenset key nested thousands deep recurses until it fails)
        if not isinstance(key, (int, str, np.integer)):
            src.skipped.append((f"{path} entry of type {type(key).__name__}", "not an image index"))
    keys = [k for k in tags if isinstance(k, (int, str, np.integer))]
    # Integer keys in numeric order (0, 1, 2, ..., 10), so images/{i} keep their order when copied.
    for key in sorted(keys, key=lambda k: (0, k, "") if isinstance(k, int) else (1, 0, str(k))):
        if isinstance(key, int) and not -MAX_INDEX < key < MAX_INDEX:  # (str() of 5000 digits raises)
            src.skipped.append((f"{path} entry of {key.bit_length()} bits", "not an image index"))
            continue
        if str(key) in seen:  # 0 and "0" both name images/0.jpg: one image, not two copies of it
            src.skipped.append((f"{path} entry {key!r}", "repeated index (the image has a label already)"))
            continue
        seen.add(str(key))
        vec = _tag_vector(tags[key], path, key, schema)
        try:
            schema.check(vec, f"{path} entry {key!r}")
        except UserError as e:
            raise UserError(f"{e}; re-export it with one class per group, or put a schema.json "
                            f"for these classes beside it") from None
        if _add_numbered(src, images, key):
            labels.append(vec)
    _skip_unlabelled(src, [images], seen, by_stem=True)
    src.labels = np.stack(labels) if labels else np.zeros((0, schema.dim), np.float32)
    return src


def _skip_unlabelled(src: Source, folders, named: set, by_stem: bool) -> None:
    """List the images no label names ("missing label"), so that the report shows them and --strict
    refuses them; a numbered layout names images by stem (3 -> 3.jpg), the JSON one by file name."""
    for folder in folders:
        # images/3.jpg and images/3.png: the label names one image, the first of _NUMBERED's order
        chosen = {f.stem: f.name for f in src.files if f.parent == folder} if by_stem else {}
        for f in sorted(folder.iterdir()) if folder.is_dir() else []:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if (f.stem if by_stem else f.name) not in named:
                src.skipped.append((str(f), "missing label"))
            elif chosen.get(f.stem, f.name) != f.name:
                src.skipped.append((str(f), f"same number as {chosen[f.stem]}, which is the one read"))


def _plain_name(name: str) -> bool:
    """Labels name files inside the data folder; '../x', '/etc/x' or 'a/b' would read elsewhere."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


# images/<id>.<ext>, seed 001's .jpg first; upper-case extensions come from cameras and Windows
_NUMBERED = (".jpg", ".png", ".jpeg", ".bmp", ".webp")
_NUMBERED_SUFFIXES = _NUMBERED + tuple(s.upper() for s in _NUMBERED)
_NUMBERED_SHOWN = "{" + ",".join(s[1:] for s in _NUMBERED) + "}"  # images/4.{jpg,png,...}: missing


def _add_numbered(src: Source, images: Path, stem) -> bool:
    """Append images/<stem>.jpg|png|jpeg to src.files, or record it as missing."""
    if not _plain_name(str(stem)):
        src.skipped.append((str(stem)[:80], "unsafe file name (a path, not a name)"))
        return False
    # os.path.isfile: a key that cannot be a file name (too long, NUL) is a missing image, not a
    # crash; a folder or a FIFO of that name is not an image (reading a FIFO would wait forever)
    file = next((images / f"{stem}{s}" for s in _NUMBERED_SUFFIXES if os.path.isfile(images / f"{stem}{s}")),
                None)
    if file is None:
        src.skipped.append((f"{images / str(stem)}.{_NUMBERED_SHOWN}", "missing image"))
        return False
    src.files.append(file)
    return True


MAX_INDEX = 10 ** 18  # past this an integer key names no image file
_NUMBER = (int, float, np.number, str)  # (bool is an int; digits as text are read as numbers, as before)


def _tag_vector(value, path: Path, key, schema: Schema) -> np.ndarray:
    """A 22-dim tensor, or the (hair_onehot, eye_onehot) tuple seed 001's own code stores."""
    parts = value if isinstance(value, (tuple, list)) and len(value) and not np.isscalar(value[0]) else [value]
    where = f"{path} entry {key!r}"
    not_numbers = UserError(f"{where}: label is not a vector of numbers; re-export it with a 0/1 tensor or array "
                            f"per image, or a (hair, eye) tuple of them")
    sizes = []
    for p in parts:  # checked before any copy: a view can claim 2**30 numbers over a few bytes of file
        if isinstance(p, torch.Tensor):
            if p.layout != torch.strided or p.device.type != "cpu":
                raise UserError(f"{where}: a {p.layout} tensor on {p.device}; labels are dense CPU tensors")
            n = p.numel()
        elif isinstance(p, np.ndarray):
            if p.dtype.kind not in "biuf" or p.dtype.hasobject:  # b: bool
                raise UserError(f"{where}: a numpy array of {p.dtype}; labels are arrays of numbers")
            n = p.size
        elif isinstance(p, _NUMBER):
            n = 1
        elif isinstance(p, (list, tuple)) and all(isinstance(x, _NUMBER) for x in p):  # flat: no nested copies
            n = len(p)
        else:
            raise not_numbers
        if n > schema.dim:
            raise UserError(f"{where}: label has {n} numbers but the schema has {schema.dim} classes; "
                            f"labels of other groups need a {SCHEMA_FILE} beside it (see the README's data formats)")
        sizes.append(n)
    if len(parts) > 1:  # one part per group, in order: (eye, hair) would concatenate to a wrong 22
        want = [len(g.classes) for g in schema.groups]
        if sizes != want:
            shown = str(sizes[:5])[:-1] + (", ...]" if len(sizes) > 5 else "]")
            raise UserError(f"{where}: a tuple of parts with {shown} numbers; expected one per group in order, "
                            f"{', '.join(f'{g.name} {len(g.classes)}' for g in schema.groups)}; re-export it so")
    try:
        # (bf16 and fp16 tensors have no numpy form of their own; they widen exactly to float32)
        flat = [(p.detach().float() if p.is_floating_point() else p.detach()).numpy() if isinstance(p, torch.Tensor)
                else np.asarray(p) for p in parts]
        if any(np.iscomplexobj(f) for f in flat):
            raise TypeError("complex numbers")
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values fail schema.check
            return np.concatenate([f.astype(np.float32).reshape(-1) for f in flat])
    except (TypeError, ValueError, OverflowError) as e:
        raise UserError(f"{path} entry {key!r}: label is not a vector of numbers ({e}); re-export it "
                        f"with a 0/1 tensor or array per image, or a (hair, eye) tuple of them") from None


def _scan_json(root: Path, objects_path: Path) -> Source:
    objects = read_json(objects_path, dict)
    # whole numbers, or their digits as text: 1.7 and 1.2 would both be read as 1, and true as 1
    indices = [int(i) if type(i) is int or isinstance(i, str) and i.isascii() and i.isdigit() else None
               for i in objects.values()]
    if None in indices or len(set(indices)) < len(indices):
        raise UserError(f"{objects_path}: expected {{name: index}} with distinct whole-number indices")
    names = [n for n, _ in sorted(zip(objects, indices), key=lambda kv: kv[1])]
    if not names:
        raise UserError(f"{objects_path}: lists no objects; expected {{name: index}} with at least one name")
    # checked as schema.json would be: two names that read alike, or an empty one, would pack into a
    # set that nothing can open afterwards
    schema = Schema.from_dict(multi_label_schema(names).to_dict(), str(objects_path),
                              "rename the objects so each has a distinct, non-empty name")
    train_path = root / "train.json"
    if not train_path.exists():
        raise UserError(f"{train_path}: missing; the JSON layout needs train.json "
                        f"({{file name: [object names]}}) beside {objects_path.name}")
    entries = read_json(train_path, dict)
    image_dirs = [d for d in (root / "images", root / "iclevr", root) if d.is_dir()]
    position = {n: i for i, n in enumerate(names)}  # indices need not start at 0 or be contiguous
    src = Source(root, "json", schema)
    labels = []
    for name, objs in entries.items():
        if not isinstance(objs, list) or not all(isinstance(o, str) for o in objs):
            raise UserError(f"{train_path}: entry {name!r} must be a list of object names")
        unknown = [o for o in objs if o not in objects]
        if unknown:
            raise UserError(f"{train_path}: entry {name!r} names unknown object(s) {unknown}; "
                            f"valid names are listed in {objects_path.name}")
        if not _plain_name(name):
            src.skipped.append((name[:80], "unsafe file name (a path, not a name)"))
            continue
        file = next((d / name for d in image_dirs if os.path.isfile(d / name)), None)
        if file is None:
            src.skipped.append((str(image_dirs[0] / name), "missing image"))
            continue
        vec = np.zeros(schema.dim, np.float32)
        vec[[position[o] for o in objs]] = 1.0
        src.files.append(file)
        labels.append(vec)
    # only in the folders the labelled images came from, of images/, iclevr/ and the root
    _skip_unlabelled(src, sorted({f.parent for f in src.files}), set(entries), by_stem=False)
    src.labels = np.stack(labels) if labels else np.zeros((0, schema.dim), np.float32)
    return src


def _no_repeats(pairs):
    # json keeps the last of two equal keys: a train.json naming one image twice would lose a label
    keys = [k for k, _ in pairs]
    repeated = next((k for k in keys if keys.count(k) > 1), None) if len(set(keys)) < len(keys) else None
    if repeated is not None:
        raise ValueError(f"the key {repeated[:80]!r} appears twice")
    return dict(pairs)


def read_json(path: Path, kind: type, fix: str = "fix or re-export the file"):
    try:  # (utf-8-sig: a BOM, as Windows editors write)
        value = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_no_repeats)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested thousands deep
        raise UserError(f"{path}: not valid JSON ({e}); {fix}") from None
    if not isinstance(value, kind):
        raise UserError(f"{path}: expected a JSON {kind.__name__}, got {type(value).__name__}; {fix}")
    return value


def _scan_tags_csv(root: Path) -> Source:
    path = root / "tags.csv"
    schema = anime_schema()
    images = _image_dir(root)
    src = Source(root, "tags-csv", schema)
    labels, named, first_line = [], set(), {}
    try:
        # utf-8-sig: Excel and Notepad start a CSV with a byte-order mark, which is not part of id 0
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig", errors="replace").splitlines()))
    except csv.Error as e:
        raise UserError(f"{path}: not a CSV file ({e})") from None
    for lineno, row in enumerate(rows, 1):
        if not row or not "".join(row).strip():
            continue
        named.add(row[0].strip())  # a bad row is reported on its line, not again as a missing label
        if row[0].strip() in first_line:  # a repeated id would put the image in twice
            src.skipped.append((f"{path}:{lineno}", f"repeated id {row[0].strip()!r} (first on line "
                                                    f"{first_line[row[0].strip()]})"))
            continue
        first_line[row[0].strip()] = lineno
        if len(row) < 2:
            src.skipped.append((f"{path}:{lineno}", "no tags after the id"))
            continue
        ident, text = row[0].strip(), " ".join(row[1:])
        try:
            vec = schema.parse(text)
        except UserError as e:
            src.skipped.append((f"{path}:{lineno}", f"unreadable label: {e}"))
            continue
        if _add_numbered(src, images, ident):
            labels.append(vec)
    _skip_unlabelled(src, [images], named, by_stem=True)
    src.labels = np.stack(labels) if labels else np.zeros((0, schema.dim), np.float32)
    return src


def _scan_folder(root: Path, skip: Path | None) -> Source:
    # `prepare pics -o pics/out` must not read what it wrote there last time; () is pics itself
    below = _parts_below(skip, root) or None
    images = _image_dir(root)
    if below and images != root and _parts_below(skip, images) == ():
        images = root  # -o pics/images: that folder is the output, not the pictures
    src = Source(root, "folder", None)
    files, prepared = _image_files(root, skip)
    src.skipped += [(str(d), "a data set prepare made (its cache/meta_*.json says so): its copies are not "
                             "read again; train on it with -t") for d in prepared]
    for f in files:
        parts = f.relative_to(root).parts
        if below and parts[:len(below)] == below:
            continue
        if images != root and parts[0] != images.name:
            src.skipped.append((str(f), f"outside {images.name}/, the one folder read when there is one"))
        elif parts[0] == "cache":  # where prepare keeps its own files: said, not read
            src.skipped.append((str(f), "in cache/, the folder prepare writes its cache to"))
        else:
            src.files.append(f)
    return src


def _image_files(root: Path, skip: Path | None) -> tuple[list[Path], list[Path]]:
    """Every image file below `root`, in name order, through linked folders too: each folder once
    (a link loop is not followed for ever), and never `root` again or a folder above it, nor the
    output folder `skip` (a link to them would read the set's own copies back in), nor a data set
    prepared inside it (`prepare pics -o pics/out`, then `prepare pics`). Also returns those sets."""
    found, seen, prepared = [], set(), []
    real_root = Path(os.path.realpath(root))
    out = Path(os.path.realpath(skip)) if skip is not None else None
    if out is not None and (out == real_root or out in real_root.parents):
        out = None  # prepared in place (or into a folder above): nothing below to leave out
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = Path(os.path.realpath(folder))
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen or (folder != str(root) and real in real_root.parents) or \
                (out is not None and (real == out or out in real.parents)):
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if folder != str(root) and _holds_copies(Path(folder)):
            prepared.append(Path(folder))
            dirs[:] = []
            continue
        found += [Path(folder, f) for f in files
                  if Path(f).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(os.path.join(folder, f))]
    return sorted(found), sorted(prepared)


def _holds_copies(folder: Path) -> bool:
    """`folder` is a data set `prepare` wrote (copies, or built-in faces), as its cache's meta file
    says; a folder packed in place holds the user's own images, which are read. (Meta files from
    before "copies" was recorded: a set from elsewhere, unless the folder was moved since.)"""
    for meta in folder.glob("cache/meta_*.json"):
        try:
            made = json.loads(meta.read_text())
            if "copies" in made:
                if made["copies"] is True:
                    return True
            elif made.get("layout") == "built-in" or \
                    os.path.realpath(made["source_path"]) != os.path.realpath(folder):
                return True
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            continue  # a damaged meta file says nothing
    return False


def _parts_below(path: Path | None, folder: Path) -> tuple | None:
    """`path` relative to `folder` as a tuple of names, or None when it is not inside it."""
    if path is None:
        return None
    try:
        return path.resolve().relative_to(folder.resolve()).parts
    except ValueError:
        return None


def read_image(path: Path, size: int) -> np.ndarray:
    """Decode, centre-crop to a square and resize with an antialiased filter: [3, size, size] uint8.

    Raises ValueError with a short reason for an unreadable file or an unsupported mode."""
    return read_image_side(path, size)[0]


def read_image_side(path: Path, size: int) -> tuple[np.ndarray, int]:
    """`read_image`, and the side of the square it cropped before resizing (prepare says which
    images were enlarged: they come out blurred)."""
    limit = Image.MAX_IMAGE_PIXELS or float("inf")
    try:
        with Image.open(path) as im:
            mode, too_large = im.mode, im.width * im.height > limit
            if mode in READABLE_MODES and not too_large:
                im.load()
                rgb = flatten_alpha(upright(im))
    except Image.DecompressionBombError:  # (past twice the limit PIL refuses to open it)
        too_large = True
    except Exception as e:  # a damaged file can make a decoder raise anything (a TypeError in TIFF's)
        # PIL's reason ("image file is truncated"), without the path the skip list names anyway
        detail = str(e).replace(f" {str(path)!r}", "").splitlines()[0][:100] if str(e).strip() else ""
        raise ValueError(f"unreadable image ({type(e).__name__}{': ' + detail if detail else ''})") from None
    if too_large:
        raise ValueError(f"too large (over {limit:,} pixels); scale it down first")
    if mode not in READABLE_MODES:
        raise ValueError(f"unsupported image mode {mode}")
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    rgb = rgb.crop((left, top, left + side, top + side))
    if side != size:
        rgb = rgb.resize((size, size), Image.LANCZOS, reducing_gap=3.0 if side >= 3 * size else None)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy(), side


def upright(im: Image.Image) -> Image.Image:
    """Turned the way its EXIF orientation says, as viewers show it (a phone photo saved sideways)."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # damaged EXIF over readable pixels: the pixels as stored
        return im


def flatten_alpha(im: Image.Image) -> Image.Image:
    # Transparent pixels go on white, the way a viewer shows them, not on black.
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        canvas = Image.new("RGB", im.size, (255, 255, 255))
        canvas.paste(im, mask=im.getchannel("A"))
        return canvas
    return im.convert("RGB")
