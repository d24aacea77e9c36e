"""Fréchet distance between feature distributions, and cached statistics of the real images.

A feature extractor is any callable images in [-1, 1] (B, 3, S, S) -> features (B, F): the
judge's penultimate layer (offline, `judge_features`), Inception-v3's pool layer (`inception.py`)
or a tiny random conv net in the tests.  Statistics are accumulated in float64 (sum and sum of
outer products) so no feature matrix of the whole data set is ever held in memory.
"""
from __future__ import annotations

import hashlib
import sys
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.dataset import Packed
from ..data.prepare import cache_paths
from ..errors import UserError
from ..files import replace_atomically


@dataclass
class Stats:
    mean: np.ndarray  # (F,) float64
    cov: np.ndarray   # (F, F) float64
    n: int


class BadFeatures(UserError):
    """The feature network, not G, is at fault (`network` says which: "judge" or "inception"); the
    caller names its file and the fix."""
    network: str | None = None


class NonFiniteFeatures(BadFeatures):
    pass


class StatsAccumulator:
    def __init__(self):
        self.n, self.sum, self.outer = 0, None, None

    def add(self, feats: torch.Tensor) -> None:
        # float64 on the features' own device: sums of 2048x2048 outer products stay on the GPU.
        f = feats.detach().to(torch.float64).flatten(1)
        if self.sum is None:
            self.sum, self.outer = f.new_zeros(f.shape[1]), f.new_zeros(f.shape[1], f.shape[1])
        self.n += len(f)
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def stats(self) -> Stats:
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.n}")
        if not torch.isfinite(self.sum).all() or not torch.isfinite(self.outer).all():
            # eigh would fail to converge, or give a believable number from NaN
            raise NonFiniteFeatures("the feature network gives NaN or infinite features")
        mean, outer = self.sum.cpu() / self.n, self.outer.cpu()
        cov = (outer - self.n * torch.outer(mean, mean)) / (self.n - 1)
        return Stats(mean.numpy(), cov.numpy(), self.n)


def stats_of(feats: torch.Tensor) -> Stats:
    acc = StatsAccumulator()
    acc.add(feats)
    return acc.stats()


def frechet_distance(a: Stats, b: Stats) -> float:
    """|mu_a - mu_b|^2 + tr(Sa) + tr(Sb) - 2 tr((Sa^1/2 Sb Sa^1/2)^1/2).

    Sa^1/2 Sb Sa^1/2 is symmetric PSD, so its square-root trace is the sum of the square roots of
    its eigenvalues (eigh, float64); it has the same trace as sqrtm(Sa Sb) without scipy."""
    mu = torch.from_numpy(a.mean - b.mean)
    sa, sb = torch.from_numpy(a.cov), torch.from_numpy(b.cov)
    w, v = torch.linalg.eigh((sa + sa.T) / 2)
    root_a = (v * w.clamp(min=0).sqrt()) @ v.T
    m = root_a @ sb @ root_a
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = mu @ mu + torch.trace(sa) + torch.trace(sb) - 2 * tr_sqrt
    return max(float(d), 0.0)  # round-off can leave -1e-12 for identical sets


def progress_bar(batches: range, desc: str | None, images: int, batch: int):
    """`batches` (start indices), counted in images on a bar named `desc` when it is not None. The
    bar shows only on a terminal, and goes when done: one per stage of `eval`."""
    if desc is None:
        yield from batches
        return
    with tqdm(total=images, desc=desc, unit="img", disable=None, leave=False, file=sys.stderr) as bar:
        for start in batches:
            yield start
            bar.update(min(batch, images - start))


def extract(extractor, images, batch: int = 100, device="cpu") -> torch.Tensor:
    """Features (N, F) on the CPU of `images`: a uint8 (N, 3, S, S) array or a float tensor in [-1, 1]."""
    return torch.cat(list(features_in_batches(extractor, images, batch, device)))


@torch.no_grad()
def features_in_batches(extractor, images, batch: int = 100, device="cpu", desc: str | None = None):
    """Yield features (B, F) on the CPU of `images`, `batch` at a time; batches are converted and
    moved to `device` one at a time (`desc`: with a progress bar so named)."""
    for i in progress_bar(range(0, len(images), batch), desc, len(images), batch):
        x = images[i:i + batch]
        if not torch.is_tensor(x) or x.dtype == torch.uint8:
            x = torch.as_tensor(np.asarray(x)).float().div_(127.5).sub_(1.0)
        yield extractor(x.to(device)).float().cpu()


def real_stats(data: Packed, extractor, name: str, key: str, per_class: bool = False,
               batch: int = 100, device="cpu", desc: str | None = None) -> dict[str, Stats]:
    """Statistics of the real images, cached at <data>/cache/fid_<name>_<size>.npz.

    Returns {"all": Stats}, plus {"<group>/<class>": Stats} per one-of class with `per_class`
    (intra-class FID).  `key` names what the features depend on (the extractor's weights); with
    the packed cache's size and mtime it decides whether the file is stale. `desc`: a progress bar
    so named while they are computed (not when read from the cache)."""
    check_real_images(data)
    size = data.images.shape[-1]
    st = cache_paths(data.root, size)[0].stat()
    full_key = f"{key}|{st.st_size}|{st.st_mtime_ns}|{'classes' if per_class else 'all'}"
    path = Path(data.root) / "cache" / f"fid_{name}_{size}.npz"
    cached = _read(path, full_key)
    if cached is not None and len(cached["all"].mean) != _feature_count(extractor, data, device):
        cached = None  # edited, or from an extractor with the same key but other features: computed again
    if cached is not None:
        _check_spread(cached["all"], data)  # (statistics cached before this check was made too)
        return cached
    groups = data.schema.one_of_groups if per_class and data.schema is not None else ()
    # each image's class per group, so every batch's features go straight into its classes' sums
    classes = {g.name: data.labels[:, data.schema.span(g.name)].argmax(1) for g in groups}
    total, per = StatsAccumulator(), {}
    feats_in_order = features_in_batches(extractor, data.images, batch, device, desc)
    for start, feats in zip(range(0, len(data), batch), feats_in_order):
        total.add(feats)
        for g in groups:
            idx = torch.from_numpy(classes[g.name][start:start + len(feats)])
            for ci in idx.unique().tolist():
                per.setdefault(f"{g.name}/{g.classes[ci]}", StatsAccumulator()).add(feats[idx == ci])
    out = {"all": total.stats()}
    _check_spread(out["all"], data)
    for g in groups:  # in the schema's order, as before
        out.update({f"{g.name}/{c}": per[f"{g.name}/{c}"].stats() for c in g.classes
                    if f"{g.name}/{c}" in per and per[f"{g.name}/{c}"].n >= 2})
    with suppress(OSError):  # e.g. a read-only data folder: the cache only saves time next run
        _write(path, full_key, out)
    return out


def check_image_count(root, n: int, fix: str) -> None:
    """A FID needs 2 real images at least: said from a count alone, so also by dry runs."""
    if n < 2:
        raise UserError(f"{root}: FID needs at least 2 real images, this data set has {n}; {fix}")


def check_real_images(data: Packed, fix: str = "add varied images and run `anime-gan prepare` again") -> None:
    """A FID needs real images that differ; checked before any fake is drawn. Reads images only
    until two differ, which is at once for any real data set."""
    check_image_count(data.root, len(data), fix)
    first = np.asarray(data.images[0])
    if all(np.array_equal(first, data.images[i]) for i in range(1, len(data))):
        raise UserError(f"{data.root}: its {len(data)} images are all the same picture, so a FID has nothing "
                        f"to compare; {fix}")


def _check_spread(s: Stats, data: Packed) -> None:
    """Features of the real images without variance (the trace of their covariance is round-off
    beside their size) would make every G score a FID of 0, a believable perfect score. The images
    differ (check_real_images), so the network is at fault. Relative to the features' size: a
    network whose features are all small but differ is not refused."""
    trace = float(np.trace(s.cov))
    if trace > 0 and trace > 1e-12 * float(s.mean @ s.mean):
        return
    raise BadFeatures(f"every real image of {data.root} gets the same features, so a FID could not "
                      f"tell any two sets of images apart")


def file_key(path) -> str:
    """sha256 of a weights file (hex): other weights invalidate cached statistics, and a record can
    be checked against a published checksum."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read(path: Path, key: str) -> dict[str, Stats] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            names = [str(n) for n in z["names"]]
            stats = {n: Stats(z[f"mean{i}"], z[f"cov{i}"], int(z[f"n{i}"])) for i, n in enumerate(names)}
    except Exception:  # EOFError, BadZipFile, NotImplementedError...: a damaged cache is recomputed
        return None
    return (stats if "all" in stats and all(_well_formed(s) for s in stats.values())
            and len({len(s.mean) for s in stats.values()}) == 1 else None)


def _feature_count(extractor, data: Packed, device) -> int:
    """How many features `extractor` gives an image (one real image through it: milliseconds)."""
    return extract(extractor, data.images[:1], 1, device).shape[1]


def _well_formed(s: Stats) -> bool:
    """What `stats` computes: (F,) and (F, F) float arrays of finite numbers, from 2 or more images
    (a cache file edited or damaged in place is computed again, not trusted)."""
    return (s.mean.ndim == 1 and s.cov.shape == (len(s.mean), len(s.mean)) and s.n >= 2
            and s.mean.dtype.kind == "f" and s.cov.dtype.kind == "f"
            and bool(np.isfinite(s.mean).all() and np.isfinite(s.cov).all()))


def _write(path: Path, key: str, stats: dict[str, Stats]) -> None:
    """Atomic: a temp file in the same folder, then rename (two evaluations may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"key": np.array(key), "names": np.array(list(stats))}
    for i, s in enumerate(stats.values()):
        arrays.update({f"mean{i}": s.mean, f"cov{i}": s.cov, f"n{i}": np.array(s.n)})
    replace_atomically(path, lambda f: np.savez(f, **arrays))
