"""`evaluate`: every metric of one generator against one data set, as a plain dict.

`run_eval` is `anime-gan eval`: it loads the files, adds Inception FID, and appends the result to
the run's metrics.jsonl.  `train --eval-every` uses `load_training_judge` and
`evaluate_during_training` (offline metrics only, into metrics.jsonl and metrics.png).

    accuracy   judge's per-group / joint accuracy on K fakes per label combination
    judge-fid  FID in the judge's penultimate feature space (offline)
    intra-fid  judge-feature FID per one-of class (fakes asked for that class vs reals of it)
    fid        Inception-v3 FID (needs the weights file, see inception.py)
    diversity  how far apart two fakes with one label and two noise vectors are, against two real
               faces with one label (1 = as varied as the data, 0 = G ignores z)
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint, distributed, render
from ..config import TrainConfig
from ..data.dataset import Packed, open_packed
from ..data.prepare import cache_changes
from ..errors import Diverged, UserError, shell
from ..files import append_line, writable_file, writing
from ..labels import Schema, encode, read_conditions
from ..models import PRESETS
from .accuracy import attribute_accuracy, default_conditions
from .config import JUDGED_METRICS, OFFLINE_METRICS, EvalConfig, validate_eval
from .fid import (BadFeatures, StatsAccumulator, check_image_count, check_real_images, frechet_distance,
                  progress_bar, real_stats, stats_of)
from .inception import (INCEPTION_DIM, INCEPTION_SHA256_PREFIX, WEIGHTS_FILE, WEIGHTS_URL, default_weights_path,
                        find_weights, load_inception)
from .judge import MIN_HELDOUT, WEAK_JUDGE, data_key, heldout_images, load_judge


def judge_key(judge) -> str:
    """Hash of the judge's weights: cached real statistics are only reused for the same judge."""
    h = hashlib.sha256()
    for name, t in judge.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def generate(G, cfg_train, schema: Schema | None, labels: torch.Tensor, device,
             generator: torch.Generator, batch: int = 100, desc: str | None = None):
    """Yield fakes in [-1, 1] for `labels` (N, dim), `batch` at a time, in order, on `device`;
    `desc`: show a progress bar so named (on a terminal)."""
    conditional = schema is not None and PRESETS[cfg_train.model].conditional
    # All noise in one draw: randn in chunks gives other numbers, and -b must not change a score.
    z_all = torch.randn(len(labels), G.z_dim, generator=generator, device=generator.device)
    for i in progress_bar(range(0, len(labels), batch), desc, len(labels), batch):
        y = labels[i:i + batch].to(device)
        z = z_all[i:i + batch].to(device)
        c = encode(schema, y, cfg_train.embed) if conditional else y[:, :0]
        x = G(z, c).float()
        if not torch.isfinite(x).all():  # argmax and eigh over NaN give believable nonsense or a crash
            raise NonFiniteFakes("the generator draws NaN or infinite pixels (its training diverged)")
        # On the 8-bit grid of the real images and of the PNGs a user sees: FID would otherwise
        # also measure the difference between continuous and quantised pixels.
        yield ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


class NonFiniteFakes(UserError):
    pass


def evaluate(G, cfg_train, schema: Schema, judge, data: Packed, k: int, device,
             generator: torch.Generator, *, metrics=OFFLINE_METRICS, conditions: torch.Tensor | None = None,
             fid_samples: int = 10000, min_class: int = 50, inception=None, batch: int = 100,
             progress: bool = False) -> dict:
    """Metrics of generator `G`, a plain module called as G(z, c) with c = encode(labels, embed).

    Pass the unwrapped (EMA) module, on `device`; `cfg_train` gives its model and embed.  `judge`
    (from judge.load_judge, on `device`) must share `schema`; it may be None when metrics
    holds only 'fid' and 'diversity'.  `data` is the packed real set (open_packed).  `generator` draws z and the FID labels:
    the same seed gives the same numbers.  `inception` is (extractor, cache key) from
    inception.load_inception, needed when 'fid' is in `metrics`.  Returns
    {"accuracy": {hair, eye, joint, worst, conditions, k}, "judge_fid": float,
     "intra_fid": {mean, classes, min_class, skipped}, "fid": float} for the metrics asked;
    G's and the judge's train/eval modes are restored afterwards. `progress`: a bar per stage."""
    was_training, judge_was = G.training, judge is not None and judge.training
    G.eval()
    if judge is not None:
        judge.eval()
    try:
        with torch.no_grad():
            out = {}
            if "accuracy" in metrics:
                if conditions is None:
                    conditions = default_conditions(schema, data.labels, generator)
                out["accuracy"] = _accuracy(G, cfg_train, schema, judge, conditions.float(), k, device,
                                            generator, batch, progress)
            if {"judge-fid", "intra-fid", "fid"} & set(metrics):
                # its own stream, like diversity's: FID stays the same number whether accuracy ran first
                fid_generator = torch.Generator(generator.device).manual_seed(generator.initial_seed() + 2)
                out.update(_fids(G, cfg_train, schema, judge, data, device, fid_generator, metrics,
                                 fid_samples, min_class, inception, batch, progress))
            if "diversity" in metrics:  # last, so adding it leaves the other numbers as they were
                # (and it draws from its own streams, so the others do not change it either)
                out["diversity"] = _diversity(G, cfg_train, schema, data, device, generator, batch,
                                              progress=progress)
            return out
    finally:
        G.train(was_training)
        if judge is not None:
            judge.train(judge_was)


def _accuracy(G, cfg_train, schema, judge, conditions, k, device, generator, batch, progress=False) -> dict:
    labels = conditions.repeat_interleave(k, 0)
    fakes = generate(G, cfg_train, schema, labels, device, generator, batch,
                     desc="accuracy: fakes judged" if progress else None)
    logits = torch.cat([judge(x).cpu() for x in fakes])
    return attribute_accuracy(schema, logits, conditions, k)


def _fid_labels(data: Packed, n: int, generator: torch.Generator) -> torch.Tensor:
    """Labels of the FID fakes, drawn from the real labels: fakes follow the data's class mix,
    so FID measures image quality, not a different label distribution."""
    if data.labels is None:  # unlabelled data, unconditional G: Inception FID only
        return torch.zeros(n, 0)
    size, dev = len(data.labels), generator.device
    rows = (torch.randperm(size, generator=generator, device=dev)[:n] if n <= size
            else torch.randint(size, (n,), generator=generator, device=dev))
    return torch.from_numpy(data.labels[rows.cpu().numpy()])


def _fids(G, cfg_train, schema, judge, data, device, generator, metrics, fid_samples, min_class,
          inception, batch, progress=False) -> dict:
    """One pass over `fid_samples` fakes feeds both the judge and (if asked) Inception."""
    use_judge = bool({"judge-fid", "intra-fid"} & set(metrics))
    check_real_images(data)  # before the fakes: they are the slow part
    labels = _fid_labels(data, fid_samples, generator)
    judge_feats, incep = [], StatsAccumulator()
    for x in generate(G, cfg_train, schema, labels, device, generator, batch,
                      desc="FID: fakes" if progress else None):
        if use_judge:
            judge_feats.append(judge.features(x).cpu())
        if "fid" in metrics:
            incep.add(inception[0](x))
    out = {}
    with _blamed("judge"):
        if use_judge:
            feats = torch.cat(judge_feats)
            real = real_stats(data, judge.features, "judge", judge_key(judge), per_class=True,
                              batch=batch, device=device, desc="FID: real images (judge)" if progress else None)
            if "judge-fid" in metrics:
                out["judge_fid"] = round(frechet_distance(stats_of(feats), real["all"]), 4)
            if "intra-fid" in metrics:
                out["intra_fid"] = _intra_fid(schema, feats, labels, real, min_class)
    with _blamed("inception"):
        if "fid" in metrics:
            extractor, key = inception
            real = real_stats(data, extractor, "inception", key, batch=batch, device=device,
                              desc="FID: real images (Inception)" if progress else None)
            out["fid"] = round(frechet_distance(incep.stats(), real["all"]), 4)
    return out


@contextmanager
def _blamed(network: str):
    """Marks a BadFeatures raised inside as `network`'s, for the caller to name its file."""
    try:
        yield
    except BadFeatures as e:
        e.network = e.network or network
        raise


def _intra_fid(schema: Schema, feats: torch.Tensor, labels: torch.Tensor, real: dict,
               min_class: int) -> dict:
    """Judge-feature FID per one-of class; classes with fewer than `min_class` fakes or reals are
    skipped (a covariance from a handful of samples would dominate the mean)."""
    per, total = {}, 0
    for g in schema.one_of_groups:
        idx = labels[:, schema.span(g.name)].argmax(1)
        for ci, c in enumerate(g.classes):
            name, rows = f"{g.name}/{c}", torch.nonzero(idx == ci).squeeze(1)
            total += 1
            if len(rows) >= min_class and name in real and real[name].n >= min_class:
                per[name] = round(frechet_distance(stats_of(feats[rows]), real[name]), 4)
    mean = round(float(np.mean(list(per.values()))), 4) if per else None
    return {"mean": mean, "classes": per, "min_class": min_class, "skipped": total - len(per)}


def _diversity(G, cfg_train, schema, data: Packed, device, generator, batch, pairs: int = 500,
               progress: bool = False) -> dict:
    """Mean absolute pixel difference of fake pairs that share a label but not z, over the same
    for real pairs that share their whole label. Pixels are cruder than LPIPS, but need no weights
    and show conditional mode collapse plainly: a G that ignores z scores 0."""
    # Its own streams from the seed `generator` started with: the same number whichever other
    # metrics ran before it.
    seed = generator.initial_seed()
    rng = np.random.default_rng(seed)
    generator = torch.Generator(generator.device).manual_seed(seed + 1)
    # a G without labels is compared with any two real faces, not two that share a label
    conditional = data.labels is not None and PRESETS[cfg_train.model].conditional
    labels = data.labels if conditional else np.zeros((len(data), 0), np.float32)
    label_id = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
    members = [m for m in np.split(np.argsort(label_id, kind="stable"), np.cumsum(np.bincount(label_id))[:-1])
               if len(m) >= 2]
    if not members:
        return {"fake": None, "real": None, "ratio": None, "pairs": 0}
    sizes = np.array([len(m) for m in members], np.float64)
    picks = rng.choice(len(members), pairs, p=sizes / sizes.sum())  # a label as often as the data has it
    i, j = np.array([rng.choice(members[k], 2, replace=False) for k in picks]).T
    images = lambda rows: torch.from_numpy(np.asarray(data.images[rows])).float() / 127.5 - 1
    real_gap = (images(i) - images(j)).abs().mean().item()
    if real_gap == 0:  # every label's faces are copies of one image: no spread to compare with
        return {"fake": None, "real": 0.0, "ratio": None, "pairs": pairs}
    asked = torch.from_numpy(labels[i]).repeat(2, 1)  # fakes k and k + pairs: one label, two z
    fakes = torch.cat([x.cpu() for x in generate(G, cfg_train, schema, asked, device, generator, batch,
                                                 desc="diversity: fakes" if progress else None)])
    fake_gap = (fakes[:pairs] - fakes[pairs:]).abs().mean().item()
    return {"fake": round(fake_gap, 4), "real": round(real_gap, 4), "ratio": round(fake_gap / real_gap, 4),
            "pairs": pairs}


def training_judge_path(cfg: TrainConfig) -> Path:
    """The judge --eval-every scores with (also checked by `train --dry-run`)."""
    path = Path(cfg.train_dir) / f"judge_{cfg.image_size}.pt"
    if not path.is_file():
        raise UserError(f"{path}: --eval-every needs a judge; run `{_judge_command(cfg.train_dir, cfg.image_size)}` "
                        f"first")
    return path


def load_training_judge(cfg: TrainConfig, schema: Schema | None, device):
    """--eval-every needs a judge trained on this data (checked before anything is written):
    (the judge, what its file records besides the weights, and "path": the file, which is not
    looked up again: moving it away mid-run must not stop the run)."""
    if schema is None:
        raise UserError("--eval-every scores with a judge of the data's labels, but this data set has none")
    path = training_judge_path(cfg)
    judge, info = load_judge(path, device)
    if judge.schema != schema:
        raise UserError(f"{path}: judge trained on other labels; retrain it with "
                        f"`{_judge_command(cfg.train_dir, cfg.image_size, '-o', path)}`")
    if info["image_size"] != cfg.image_size:
        raise UserError(f"{path} judges {info['image_size']}px images but this run draws {cfg.image_size}px; "
                        f"retrain it with `{_judge_command(cfg.train_dir, cfg.image_size, '-o', path)}`")
    return judge, {**info, "path": path}


def weak_judge_note(path: Path, info: dict) -> str | None:
    """Its accuracy on fakes is bounded by what it manages on real images: below WEAK_JUDGE, say so;
    and an accuracy measured on a handful of images says little either way."""
    weak = {g: a for g, a in info["heldout_accuracy"].items() if a < WEAK_JUDGE}
    if weak:
        return (f"note: {path} is a weak judge (held-out accuracy on real images: "
                + ", ".join(f"{g} {a:.2f}" for g, a in weak.items())
                + "); its scores say little; retrain it with more --epochs or a larger --width")
    held = heldout_images(info)
    if held is not None and held < MIN_HELDOUT:
        return (f"note: {path} was checked on {held} held-out image{'s' * (held != 1)} only, so its held-out "
                f"accuracy is a rough figure; retrain it on more images or with a larger --heldout")
    return None


# Smaller than `eval`'s defaults, so that scoring costs a fraction of the training between two
# evaluations; recorded in every line, since FIDs compare only at equal numbers of fakes.
TRAINING_EVAL = {"k": 5, "fid_samples": 500}


def training_metrics(cfg: TrainConfig) -> tuple:
    """What --eval-every scores: accuracy only for a G that draws the labels it is asked for."""
    return (("accuracy",) if PRESETS[cfg.model].conditional else ()) + ("judge-fid", "diversity")


def evaluate_during_training(G, cfg: TrainConfig, schema: Schema, judge, data: Packed, device, step: int,
                             ckpt_dir: Path, tb, judge_info: dict) -> None:
    """Offline metrics (judge accuracy, judge-feature FID, diversity in z) into metrics.jsonl and
    metrics.png; each line says which judge scored it, as `eval`'s do."""
    # Its own generator: evaluating must not change the training trajectory.
    seed = cfg.seed + 99991
    gen = torch.Generator(device).manual_seed(seed)
    try:
        m = evaluate(G, cfg, schema, judge, data, TRAINING_EVAL["k"], device, gen, metrics=training_metrics(cfg),
                     fid_samples=TRAINING_EVAL["fid_samples"])
    except NonFiniteFakes as e:
        raise Diverged(f"training diverged by step {step}: {e}; try a lower --lr, or --precision fp32") from None
    except BadFeatures as e:
        path = judge_info["path"]
        raise UserError(f"{path}: the judge is unusable: {e}; retrain it with "
                        f"`{_judge_command(cfg.train_dir, cfg.image_size)}`") from None
    flat = {"step": step, "judge_fid": m["judge_fid"],
            **{f"acc_{k}": v for k, v in m.get("accuracy", {}).items() if isinstance(v, float)}}
    if m["diversity"]["ratio"] is not None:  # None: no two real images share a label
        flat["diversity"] = m["diversity"]["ratio"]
    append_line(ckpt_dir / "metrics.jsonl",
                json.dumps({"step": step, "checkpoint": None, "metrics": m, "during_training": True,
                            "judge": str(judge_info["path"]), "judge_key": judge_key(judge),
                            "judge_heldout_accuracy": judge_info["heldout_accuracy"],
                            "settings": {**TRAINING_EVAL, "seed": seed, "ema": cfg.ema}}))
    history = checkpoint.read_jsonl(ckpt_dir / "metrics_flat.jsonl") + [flat]
    append_line(ckpt_dir / "metrics_flat.jsonl", json.dumps(flat))
    render.plot_curves(history, [k for k in flat if k.startswith("acc_") or k == "diversity"],
                       ckpt_dir / "metrics.png",
                       title=("label accuracy (judge) and " if "accuracy" in m else "")
                       + "diversity in z (1 = as varied as the data)")
    if tb is not None:
        for k, v in flat.items():
            if k != "step":
                tb.add_scalar(f"metrics/{k}", v, step)


@dataclass
class Checked:
    """What `check_eval` loaded: everything `eval` needs but the images."""
    path: Path  # G_<N>.ckpt
    G: torch.nn.Module
    train: TrainConfig
    schema: Schema | None
    step: int
    root: Path  # the data folder
    data: Packed  # its packed cache (memory-mapped: no pixels read yet)
    judge_path: Path | None = None
    judge: torch.nn.Module | None = None
    judge_info: dict | None = None
    inception: tuple | None = None  # (extractor, cache key)


def note_unused_flags(cfg: EvalConfig, log) -> None:
    """Flags that none of the chosen --metrics read, said once (by --dry-run too)."""
    defaults = EvalConfig()
    for flag, users in (("--conditions", {"accuracy"}), ("-k", {"accuracy"}), ("--judge", JUDGED_METRICS),
                        ("--fid-samples", {"fid", "judge-fid", "intra-fid"}), ("--min-class", {"intra-fid"}),
                        ("--inception-weights", {"fid"})):
        name = flag.lstrip("-").replace("-", "_")
        if getattr(cfg, name) != getattr(defaults, name) and not users & set(cfg.metrics):
            log(f"note: {flag} is read only by --metrics {' '.join(sorted(users))}; without them, ignored")


def run_eval(cfg: EvalConfig, log=lambda msg: None, warn=None) -> dict:
    """`anime-gan eval`: load G, data and judge, evaluate, append to <run>/metrics.jsonl. `log` takes
    progress messages (silenced by -q); `warn` (default: `log`) the notes that say how far the
    scores can be trusted, which -q does not silence."""
    warn = warn or log
    device = distributed.pick_device(cfg.device)
    checked = check_eval(cfg, device)
    path, G, tcfg, schema, step, root = (checked.path, checked.G, checked.train, checked.schema, checked.step,
                                         checked.root)
    results = path.parent / "metrics.jsonl"
    note_unused_flags(cfg, log)
    data = checked.data
    changed = cache_changes(root, tcfg.image_size)
    if changed:  # eval only reads the data folder; `train` would pack it again
        warn(f"note: {root} changed since its {tcfg.image_size}px cache was packed ({changed}); scores use "
            f"the cache: run `{shell('anime-gan', 'prepare', root, *_size_flag(tcfg.image_size))}` to pack it again")
    judge, judge_path, inception = checked.judge, checked.judge_path, checked.inception
    standard_inception = inception is not None and inception[1].startswith(INCEPTION_SHA256_PREFIX)
    if inception is not None and not standard_inception:
        warn(f"note: {cfg.inception_weights or default_weights_path()} is not torchvision's {WEIGHTS_FILE} "
             f"(its sha256 does not start with {INCEPTION_SHA256_PREFIX}), so this FID compares only "
             f"with FIDs from the same file")
    if inception is not None and min(cfg.fid_samples, len(data)) < INCEPTION_DIM:
        # a covariance from fewer samples than features is singular: FID is biased upward, by a lot
        warn(f"note: Inception FID from {cfg.fid_samples} fakes and {len(data)} real images, fewer than its "
             f"{INCEPTION_DIM} features: it compares only with FIDs from the same numbers (10000 or more "
             f"of each is usual)")
    if judge is not None:
        weak = weak_judge_note(judge_path, checked.judge_info)
        if weak:
            warn(weak)
        report = checked.judge_info.get("report")
        report = report if isinstance(report, dict) else {}
        if report.get("data_key") not in (None, data_key(data)):  # (judges before 2026-11-30 have none)
            warn(f"note: {judge_path} was trained on another data set ({report.get('data')}: other labels or "
                 f"image count) than {root}; its scores compare only with scores by the same judge")
    conditions = torch.from_numpy(read_conditions(cfg.conditions, schema)[1]) if cfg.conditions else None
    generator = torch.Generator(device).manual_seed(cfg.seed)
    log(f"evaluating {path} (step {step}) on {root} ({len(data)} images): {', '.join(cfg.metrics)}")
    start = time.perf_counter()
    try:
        metrics = evaluate(G, tcfg, schema, judge, data, cfg.k, device, generator, metrics=cfg.metrics,
                           conditions=conditions, fid_samples=cfg.fid_samples, min_class=cfg.min_class,
                           inception=inception, batch=cfg.batch_size, progress=not cfg.quiet)
    except NonFiniteFakes as e:
        raise UserError(f"{path}: {e}; evaluate an earlier checkpoint of the run") from None
    except BadFeatures as e:
        raise UserError(_blame(cfg, root, judge_path, tcfg.image_size, e)) from None
    record = {"step": step, "checkpoint": str(path), "data": str(root),
              "judge": str(judge_path) if judge_path else None, "metrics": metrics,
              # what scored it: a judge retrained in place, or other Inception weights, give other numbers
              "judge_key": judge_key(judge) if judge is not None else None,  # as its cached real statistics
              "judge_heldout_accuracy": checked.judge_info["heldout_accuracy"] if judge is not None else None,
              "inception_sha256": inception[1] if inception else None,
              "inception_standard": standard_inception if inception else None,
              "settings": {"k": cfg.k, "fid_samples": cfg.fid_samples, "min_class": cfg.min_class,
                           "seed": cfg.seed, "ema": cfg.ema and tcfg.ema,  # a run without EMA has only G
                           "conditions": cfg.conditions},
              "seconds": round(time.perf_counter() - start, 1),
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with writing(results, _results_fix(path)):
        append_line(results, json.dumps(record))
    return record


def check_eval(cfg: EvalConfig, device) -> Checked:
    """The checks that read no images, run first by `eval` and alone by `eval --dry-run`: every
    file is loaded (G, judge, Inception weights) and checked against the others."""
    validate_eval(cfg)
    notes = []
    path = checkpoint.generator_path(checkpoint.only_run(cfg.model_dir, notes))
    writable_file(path.parent / "metrics.jsonl", _results_fix(path), append=True)
    if "fid" in cfg.metrics:  # a missing weights file should stop us before any slow work
        find_weights(cfg.inception_weights)
    G, tcfg, schema, step = checkpoint.load_generator(path, device, ema=cfg.ema)
    root = Path(cfg.train_dir or tcfg.train_dir)
    if root.is_file():
        raise UserError(f"{root}: is a file; -t takes the data folder that holds it ({root.parent})")
    if not root.is_dir():
        raise UserError(f"{root}: no such data folder; check -t" if cfg.train_dir else
                        f"{root}: the data folder {path} was trained on is not here; pass it with -t DATA")
    data = open_packed(root, tcfg.image_size)
    if data.schema != schema:
        raise UserError(f"{root} has other labels than {path} was trained on; pass the right folder with -t")
    fids = [m for m in ("judge-fid", "intra-fid", "fid") if m in cfg.metrics]
    if fids:  # (a set of one picture repeated is found once images are read)
        check_image_count(root, len(data), f"add images and run `anime-gan prepare` again, or choose --metrics "
                                           f"without {' '.join(fids)}")
    scored = [m for m in ("accuracy", "intra-fid") if m in cfg.metrics]
    if scored and schema is not None and not PRESETS[tcfg.model].conditional:
        raise UserError(f"{path}: --model {tcfg.model} draws without labels, so {' and '.join(scored)} "
                        f"has nothing to score; use --metrics judge-fid, fid or diversity")
    if cfg.conditions and schema is None:
        raise UserError(f"{path}: this model has no labels, so --conditions has nothing to choose; drop it")
    if cfg.conditions:
        entries, rows = read_conditions(cfg.conditions, schema)
        empty = next((i for i, row in enumerate(rows) if not row.any()), None)
        if empty is not None:  # nothing asked is nothing missed: it would count as right, raising joint
            raise UserError(f"{cfg.conditions} entry {empty + 1} []: names no label, so accuracy has nothing "
                            f"to check there; leave it out of --conditions")
    checked = Checked(path, G, tcfg, schema, step, root, data)
    if set(cfg.metrics) & JUDGED_METRICS:
        checked.judge_path, checked.judge, checked.judge_info = _load_checked_judge(
            cfg, root, path, schema, tcfg.image_size, device)
    if "fid" in cfg.metrics:  # last: hashing and building Inception take seconds
        checked.inception = load_inception(cfg.inception_weights, device)
    for note in notes if not cfg.quiet else []:  # (which run: not a note on how far to trust the scores)
        print(note, file=sys.stderr)
    return checked


def _blame(cfg: EvalConfig, root: Path, judge_path: Path | None, size: int, e: BadFeatures) -> str:
    """The one line for a feature network at fault: its file, what is wrong, the fix."""
    if e.network == "inception":
        return (f"{cfg.inception_weights or default_weights_path()}: these Inception weights are unusable: {e}; "
                f"replace the file with {WEIGHTS_URL}")
    extra = ["-o", judge_path] if cfg.judge else []  # (without it, the data folder's judge is written)
    return f"{judge_path}: the judge is unusable: {e}; retrain it with `{_judge_command(root, size, *extra)}`"


def _judge_command(root, size: int, *more) -> str:
    return shell("anime-gan", "train-judge", "-t", root, "--image-size", size, *more)


def _size_flag(size: int) -> list:
    return ["--image-size", size] if size != TrainConfig.image_size else []


def _results_fix(path: Path) -> str:
    return (f"eval appends its results there and has no option to write them elsewhere; copy {path.name} "
            f"into a writable folder and pass that copy with -d")


def _load_checked_judge(cfg: EvalConfig, root: Path, g_path: Path, schema, size: int, device):
    judge_path = _judge_path(cfg, root, g_path, schema, size)
    judge, info = load_judge(judge_path, device)
    if judge.schema != schema:
        raise UserError(f"{judge_path} was trained on other labels than {g_path} "
                        f"({_names(judge.schema)} vs {_names(schema)}); retrain it on the generator's data")
    if info["image_size"] != size:
        raise UserError(f"{judge_path} judges {info['image_size']}px images but {g_path} draws {size}px; "
                        f"train a judge with --image-size {size}")
    return judge_path, judge, info


def _judge_path(cfg: EvalConfig, root: Path, g_path: Path, schema, size: int) -> Path:
    if schema is None:
        raise UserError(f"{g_path}: trained without labels, so only --metrics fid and diversity apply")
    judge_path = Path(cfg.judge) if cfg.judge else root / f"judge_{size}.pt"
    if cfg.judge and judge_path.is_dir():
        raise UserError(f"--judge {judge_path}: a folder, not a judge file; pass the file "
                        f"`anime-gan train-judge` wrote (by default <data>/judge_{size}.pt)")
    if cfg.judge and not judge_path.is_file():
        raise UserError(f"--judge {judge_path}: no such file; check the path, or make it with "
                        f"`{_judge_command(root, size, '-o', judge_path)}`")
    if not judge_path.is_file():
        raise UserError(f"{judge_path}: no judge for this data set; train one with "
                        f"`{_judge_command(root, size)}` or pass --judge PATH")
    return judge_path


def _names(schema) -> str:
    return "; ".join(f"{g.name}: {len(g.classes)} classes" for g in schema.groups)
