"""The one loader: a prepared data folder -> batches of (images in [-1, 1], multi-hot labels).

`open_packed` memory-maps the cache written by `prepare`.  `Batches` draws random batches with
index tensors; when the whole cache fits on the training device it is copied there once and every
batch is gathered, converted and flipped on the device (no per-sample Python, no per-step copies).
`FileImages` is the slow, plain path (decode a file per sample) kept for comparison and for tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..distributed import free_memory
from ..errors import UserError, shell
from ..labels import Schema
from .formats import Source, read_image, read_json
from .prepare import cache_paths, stopped_copy_check


@dataclass
class Packed:
    root: Path
    images: np.ndarray            # [N, 3, S, S] uint8, memory-mapped
    labels: np.ndarray | None     # [N, dim] float32, or None for an unlabelled folder
    schema: Schema | None
    priors: dict                  # group name -> class probabilities (one-of groups)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = torch.from_numpy(np.array(self.images[i])).float().div(127.5).sub(1.0)
        y = torch.from_numpy(self.labels[i]) if self.labels is not None else torch.zeros(0)
        return x, y


def open_packed(root, size: int) -> Packed:
    root = Path(root)
    stopped_copy_check(root)
    images_path, labels_path, meta_path = cache_paths(root, size)
    command = f"`{shell('anime-gan', 'prepare', root, '-o', root, '--image-size', size)}`"
    if not images_path.exists():
        raise UserError(f"{images_path}: no {size}px cache; run {command}")
    # The cache is derived data: packing the folder again replaces every file of it.
    repack = f"re-run {command} to rebuild the cache"
    images = _load_npy(images_path, repack, mmap_mode="c")
    if images.ndim != 4 or images.shape[1:] != (3, size, size) or images.dtype != np.uint8 or not len(images):
        raise UserError(f"{images_path}: expected uint8 [N, 3, {size}, {size}] with N > 0, got {images.dtype} "
                        f"{list(images.shape)}; {repack}")
    if labels_path.exists() and not meta_path.exists():  # else a labelled set would pass for an unlabelled one
        raise UserError(f"{meta_path}: missing, so the labels in {labels_path.name} cannot be read; {repack}")
    meta = read_json(meta_path, dict, repack) if meta_path.exists() else {}
    schema = Schema.from_dict(meta["schema"], str(meta_path), repack) if meta.get("schema") else None
    labels = None
    if schema is not None:
        labels = _load_npy(labels_path, repack, dtype=np.float32)
        if labels.shape != (len(images), schema.dim):
            raise UserError(f"{labels_path}: labels of shape {list(labels.shape)}, expected [{len(images)}, "
                            f"{schema.dim}] ({images_path.name} holds {len(images)} images, {meta_path.name} "
                            f"names {schema.dim} classes); {repack}")
        if not np.isin(labels, (0.0, 1.0)).all():  # prepare writes multi-hot rows; NaN or 0.7 is damage
            raise UserError(f"{labels_path}: holds values other than 0 and 1 (multi-hot labels); {repack}")
    priors = class_priors(root, schema, labels)
    return Packed(root, images, labels, schema, priors)


def _load_npy(path: Path, fix: str, dtype=None, mmap_mode=None) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        if isinstance(array, np.ndarray) and dtype is not None:
            array = array.astype(dtype, casting="same_kind")  # complex or text: an error, not a warning
    except Exception as e:  # numpy's header parser also raises SyntaxError and tokenize.TokenError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e  # without the path again
        raise UserError(f"{path}: unreadable ({reason}); {fix}") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise UserError(f"{path}: an .npz archive, not an .npy array; {fix}")
    return array


def class_priors(root: Path, schema: Schema | None, labels) -> dict:
    """Class priors for sampling fake labels: <group>_prob.npy when valid, else frequencies."""
    priors = {}
    for g in schema.one_of_groups if schema else ():
        path = root / f"{g.name}_prob.npy"
        p = None
        if path.exists():
            fix = "delete it and re-run `anime-gan prepare`"
            p = _load_npy(path, fix, dtype=np.float64)
            problem = _prior_problem(p, len(g.classes))
            if problem:
                raise UserError(f"{path}: expected {len(g.classes)} finite, non-negative probabilities, "
                                f"got {problem}; {fix}")
        if p is None:
            p = labels[:, schema.span(g.name)].sum(0).astype(np.float64) + 1e-12
        priors[g.name] = (p / p.sum()).astype(np.float32)
    return priors


def _prior_problem(p: np.ndarray, k: int) -> str | None:
    if p.shape != (k,):  # a table of 12 numbers is not a list of 12 priors: some other file
        return f"{p.size} values" if p.ndim == 1 else f"an array of shape {p.shape}"
    with np.errstate(over="ignore", invalid="ignore"):  # a warning would be a second line on stderr
        total = p.sum()
    if not np.isfinite(total):  # NaN (or a sum too big) would make every fake label the last class
        return "NaN or infinite values"
    if (p < 0).any():
        return "negative values"
    return "only zeros" if total <= 0 else None


class LabelSampler:
    """Draws fake labels like seed 001: one-of groups from the class priors, multi-label groups
    as the object sets of random real images (so 1-3 objects per scene, like the data)."""

    def __init__(self, packed: Packed, device):
        self.schema = packed.schema
        self.device = torch.device(device)
        # Inverse-CDF sampling (searchsorted on uniforms): no host sync, unlike some multinomial paths.
        self.cdfs = {k: torch.tensor(np.cumsum(v, dtype=np.float64), dtype=torch.float32, device=self.device)
                     for k, v in packed.priors.items()}
        self.real = (torch.from_numpy(packed.labels).to(self.device)
                     if self.schema is not None and self.schema.multi_label else None)

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.schema is None:
            return torch.zeros(n, 0, device=self.device)
        out = torch.zeros(n, self.schema.dim, device=self.device)
        for g in self.schema.groups:
            s = self.schema.span(g.name)
            if g.multi:
                rows = torch.randint(len(self.real), (n,), generator=generator, device=self.device)
                out[:, s] = self.real[rows, s]
            else:
                cdf, k = self.cdfs[g.name], s.stop - s.start
                u = torch.rand(n, generator=generator, device=self.device) * cdf[-1]
                idx = torch.searchsorted(cdf, u, right=True).clamp_(max=k - 1)
                out[:, s] = torch.nn.functional.one_hot(idx, k).float()
        return out


class Batches:
    """Random batches (with replacement) from a packed set, drawn by a seeded torch.Generator."""

    def __init__(self, packed: Packed, batch_size: int, device, generator: torch.Generator,
                 on_device: str = "auto", flip: bool = True):
        self.batch_size, self.flip, self.generator = batch_size, flip, generator
        self.device = torch.device(device)
        self.index_device = generator.device
        self.on_device = self._decide(packed, on_device)
        if self.on_device:
            # One copy, then every batch is an index_select on the device.
            self.images = torch.from_numpy(np.ascontiguousarray(packed.images)).to(self.device)
        else:
            self.images = packed.images  # stays memory-mapped: pages are read as batches touch them
        labels = packed.labels if packed.labels is not None else np.zeros((len(packed), 0), np.float32)
        self.labels = torch.from_numpy(labels).to(self.device)
        self.n = len(packed)

    def _decide(self, packed: Packed, mode: str) -> bool:
        if mode in ("on", "off"):
            return mode == "on"
        # On the CPU "device memory" is host memory: reading the memmap into it once is cheapest,
        # when it fits (a 128px set of 100k images is 4.9 GB).
        free = free_memory(self.device)
        return free is None or packed.images.nbytes < 0.5 * free

    def __iter__(self):
        return self

    def __next__(self):
        idx = torch.randint(self.n, (self.batch_size,), generator=self.generator, device=self.index_device)
        flips = (torch.rand(self.batch_size, generator=self.generator, device=self.index_device) < 0.5
                 if self.flip else None)
        idx_dev = idx.to(self.device, non_blocking=True)
        if self.on_device:
            x = self.images.index_select(0, idx_dev)
        else:
            # Sorted reads are friendlier to the page cache; the order is restored after.
            order = idx.cpu().numpy()
            rows = torch.from_numpy(self.images[np.sort(order)])
            x = rows[torch.from_numpy(np.argsort(np.argsort(order)))]
            x = (x.pin_memory() if self.device.type == "cuda" else x).to(self.device, non_blocking=True)
        if flips is not None:  # on uint8, before conversion: a quarter of the memory traffic
            f = flips.to(self.device, non_blocking=True)
            x = torch.where(f[:, None, None, None], x.flip(3), x)
        return x.float().div_(127.5).sub_(1.0), self.labels.index_select(0, idx_dev)


class FileImages(torch.utils.data.Dataset):
    """Decode one file per sample (what seed 001 does); the plain path the cache is compared to."""

    def __init__(self, source: Source, size: int):
        self.source, self.size = source, size

    def __len__(self) -> int:
        return len(self.source.files)

    def __getitem__(self, i):
        try:
            pixels = read_image(self.source.files[i], self.size)
        except ValueError as e:
            raise UserError(f"{self.source.files[i]}: {e}; run `anime-gan prepare` to skip bad files") from None
        x = torch.from_numpy(pixels).float().div(127.5).sub(1.0)
        y = torch.from_numpy(self.source.labels[i]) if self.source.labels is not None else torch.zeros(0)
        return x, y

