"""Snapshots: written atomically, read with `torch.load(weights_only=True)`.

G_<step>.ckpt holds everything needed to sample (config, schema, model config, G and its EMA);
D_<step>.ckpt holds the rest of the training state (D, both optimizers, RNG states, counters).
A step is resumable when both files exist.  Nothing here unpickles arbitrary objects: a checkpoint
that tries to import code is refused by torch's weights-only loader and reported as a user error.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

from .errors import UserError

FORMAT = "anime-gan/1"
_STEP = re.compile(r"^G_(\d+)\.ckpt$")


def save(obj: dict, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path, kind: str) -> dict:
    """Load a checkpoint of `kind` ('generator', 'trainer' or 'judge') on the CPU, safely."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights-only refusals, truncation and zip errors all land here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a loadable anime-gan checkpoint ({first[:160]}); "
                        f"it may be corrupt or unsafe, use another one") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or ckpt.get("kind") != kind:
        expected = {"generator": "G_<step>.ckpt", "trainer": "D_<step>.ckpt", "judge": "judge_<size>.pt"}
        raise UserError(f"{path}: not an anime-gan {kind} checkpoint "
                        f"({expected.get(kind, kind)} expected)")
    return ckpt


def steps(run_dir) -> list[int]:
    """Steps that have a G checkpoint, ascending."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in run_dir.iterdir() if (m := _STEP.match(p.name)))


def resumable_steps(run_dir) -> list[int]:
    return [s for s in steps(run_dir) if (Path(run_dir) / f"D_{s}.ckpt").exists()]


def generator_path(model_dir) -> Path:
    """A run folder (-> its latest G checkpoint) or a checkpoint file."""
    p = Path(model_dir)
    if p.is_file():
        return p
    if not p.is_dir():
        raise UserError(f"{p}: no such run folder or checkpoint; pass a run folder such as "
                        f"checkpoints/<run> or a G_<step>.ckpt file")
    found = steps(p)
    if not found:
        subruns = sorted(d.name for d in p.iterdir() if d.is_dir() and steps(d))
        hint = f" (runs inside: {', '.join(subruns[:5])})" if subruns else ""
        raise UserError(f"{p}: no G_<step>.ckpt in this folder{hint}; train first or pass a run folder")
    return p / f"G_{found[-1]}.ckpt"


def load_generator(model_dir, device="cpu", ema: bool = True):
    """Rebuild G from a G checkpoint alone: returns (G in eval mode, TrainConfig, Schema|None, step).

    `model_dir` is a run folder (its latest G_<N>.ckpt) or a checkpoint file."""
    from .config import TrainConfig
    from .labels import Schema
    from .models import PRESETS, ModelConfig, build
    path = generator_path(model_dir)
    ckpt = load(path, "generator")
    cfg = TrainConfig.from_dict(ckpt["config"])
    if cfg.model not in PRESETS:
        raise UserError(f"{path}: made with model '{cfg.model}', which this version does not know")
    m = dict(ckpt["model"])
    m["class_sizes"] = tuple(m.get("class_sizes", ()))
    G, _ = build(cfg.model, ModelConfig(**m))
    state = ckpt["G_ema"] if ema and ckpt.get("G_ema") is not None else ckpt["G"]
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit model '{cfg.model}' "
                        f"({str(e).splitlines()[0][:160]})") from None
    schema = Schema.from_dict(ckpt["schema"], str(path)) if ckpt.get("schema") else None
    return G.to(device).eval(), cfg, schema, int(ckpt["step"])
