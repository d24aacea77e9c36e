"""Shared fixtures and helpers: a tiny built-in data set, writers for each of the four layouts,
and a CLI runner that returns (exit status, stdout, stderr).

Every image a writer draws is a solid patch of a label's colour (the hair colour, or the colour of
a CLEVR scene's first object), so a test can check that images and labels stayed aligned through
`prepare` and the loaders by looking at pixels.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anime_gan.cli import main
from anime_gan.labels import COLOR_RGB, EYE_COLORS, HAIR_COLORS

CLEVR_OBJECTS = [f"{c} {s}" for s in ("cube", "sphere", "cylinder")
                 for c in ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")]

# (hair index, eye index) pairs used by the small hand-written sets: every hair colour at least once.
PAIRS = [(h, (3 * h + 1) % len(EYE_COLORS)) for h in range(len(HAIR_COLORS))]


def draw(path: Path, rgb, size=(48, 40)) -> Path:
    """A solid image of colour `rgb`, saved in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(rgb)).save(path)
    return path


def onehot(index: int, n: int) -> torch.Tensor:
    v = torch.zeros(n)
    v[index] = 1.0
    return v


def write_tag_pickle(root: Path, pairs=PAIRS, style: str = "tensor", protocol: int = 4,
                     ext: str = ".jpg") -> Path:
    """Seed 001's layout: images/{i}<ext> and tags.pickle {i: label}.

    style: 'tensor' (one 22-dim tensor, as its README shows), 'tuple' (hair and eye one-hot tensors,
    as its code stores), 'numpy' (a tuple of ndarrays) or 'list' (22 plain floats)."""
    tags = {}
    for i, (h, e) in enumerate(pairs):
        hair, eye = onehot(h, len(HAIR_COLORS)), onehot(e, len(EYE_COLORS))
        tags[i] = {"tensor": lambda: torch.cat([hair, eye]),
                   "tuple": lambda: (hair, eye),
                   "numpy": lambda: (hair.numpy(), eye.numpy()),
                   "list": lambda: torch.cat([hair, eye]).tolist()}[style]()
        draw(root / "images" / f"{i}{ext}", COLOR_RGB[HAIR_COLORS[h]])
    (root / "tags.pickle").write_bytes(pickle.dumps(tags, protocol=protocol))
    return root


def write_json_layout(root: Path, scenes=None, objects_name: str = "objects.json", base: int = 0,
                      image_dir: str = "images") -> Path:
    """Seed 003's layout: objects.json {name: index}, train.json {file: [names]}, the images."""
    import json
    scenes = scenes or {f"scene_{i}.png": [CLEVR_OBJECTS[i], CLEVR_OBJECTS[(i + 9) % 24]] for i in range(8)}
    root.mkdir(parents=True, exist_ok=True)
    (root / objects_name).write_text(json.dumps({n: i + base for i, n in enumerate(CLEVR_OBJECTS)}))
    (root / "train.json").write_text(json.dumps(scenes))
    for name, objs in scenes.items():
        draw(root / image_dir / name, COLOR_RGB[objs[0].split()[0]])
    return root


def write_tags_csv(root: Path, pairs=PAIRS, extra_rows=()) -> Path:
    """The MLDS layout: tags.csv lines 'id,<colour> hair <colour> eyes' and images/{id}.jpg."""
    lines = []
    for i, (h, e) in enumerate(pairs):
        lines.append(f"{i},{HAIR_COLORS[h]} hair {EYE_COLORS[e]} eyes")
        draw(root / "images" / f"{i}.jpg", COLOR_RGB[HAIR_COLORS[h]])
    (root / "tags.csv").write_text("\n".join(list(lines) + list(extra_rows)) + "\n")
    return root


def write_folder(root: Path, n: int = 5) -> Path:
    """A plain folder of unlabelled images (two of them in a subfolder)."""
    for i in range(n):
        sub = root / "more" if i >= n - 2 else root
        draw(sub / f"img_{i}.png", COLOR_RGB[HAIR_COLORS[i % len(HAIR_COLORS)]])
    return root


def one_line_error(result, *needles):
    """Exit 2 and a single 'anime-gan <cmd>: error: ...' line containing every needle."""
    rc, out, err = result
    assert rc == 2, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("anime-gan ") and ": error: " in err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


def snapshot(folder: Path) -> dict:
    """Every file under `folder` -> its bytes, to show that a failed command changed nothing."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def colour_of(pixels: np.ndarray) -> str:
    """The named colour (COLOR_RGB) nearest the mean colour of a [3, S, S] uint8 image."""
    mean = pixels.reshape(3, -1).mean(1)
    return min(COLOR_RGB, key=lambda n: np.abs(np.asarray(COLOR_RGB[n]) - mean).sum())


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder `prepare -o` cannot write to: chmod 0o500, or (as root, where permission bits do
    not stop writes) a path below a regular file."""
    import os
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if not os.access(locked, os.W_OK) and os.geteuid() != 0:
        return locked / "out"
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path / "afile" / "out"


@pytest.fixture
def cli(capsys):
    """Run `anime-gan ARGS...` in-process: returns (exit status, stdout, stderr)."""
    def run(*args):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse: --help, --version, usage errors
            rc = e.code
        captured = capsys.readouterr()
        return rc, captured.out, captured.err
    return run


@pytest.fixture(scope="session")
def builtin_set(tmp_path_factory) -> Path:
    """120 built-in faces prepared at 64px. Read-only: copy it before changing anything."""
    root = tmp_path_factory.mktemp("builtin") / "data"
    assert main(["prepare", "--synthetic", "120", "-o", str(root), "-q"]) == 0
    return root
