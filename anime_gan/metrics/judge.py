"""The judge: a small attribute classifier trained on real images, used to score generators.

One head per one-of-N group (softmax) and one per multi-label group (sigmoid), on a shared conv
trunk whose pooled, penultimate features double as an offline FID feature space.  A judge is only
trusted when it is accurate on held-out real images, so training reports exactly that and saves it
in the judge file next to the weights and the schema it was trained on.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import checkpoint, distributed
from ..config import IMAGE_SIZES
from ..errors import UserError, detail
from ..files import writable_file, writing
from ..labels import Schema
from .config import MAX_JUDGE_FEATURES, MAX_JUDGE_WIDTH, JudgeConfig, validate_judge


@dataclass(frozen=True)
class JudgeArch:
    image_size: int = 64
    width: int = 32
    features: int = 128


def _conv(a: int, b: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(a, b, 3, stride, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]


class Judge(nn.Module):
    """x in [-1, 1] (B, 3, S, S) -> logits (B, schema.dim), groups in schema order."""

    def __init__(self, schema: Schema, arch: JudgeArch):
        super().__init__()
        self.schema, self.arch = schema, arch
        w = arch.width
        # Three stride-2 convs: overlapping 3x3 windows still see every pixel of a small iris; a
        # full-resolution first layer was 2-4x slower on a CPU and no more accurate in our runs.
        self.trunk = nn.Sequential(*_conv(3, w, 2), *_conv(w, 2 * w, 2), *_conv(2 * w, 4 * w, 2),
                                   *_conv(4 * w, 4 * w, 1))
        # Max pooling keeps "there is a small blue patch somewhere" (eyes); mean keeps area (hair).
        self.embed = nn.Sequential(nn.Linear(8 * w, arch.features), nn.ReLU(inplace=True))
        self.heads = nn.ModuleList(nn.Linear(arch.features, len(g.classes)) for g in schema.groups)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)  # (B, 4w, S/8, S/8)
        return self.embed(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))  # (B, features)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(f) for head in self.heads], 1)  # (B, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def judge_loss(schema: Schema, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per one-of group plus BCE per multi-label group, summed over groups."""
    loss = logits.new_zeros(())
    for g in schema.groups:
        s = schema.span(g.name)
        if g.multi:
            loss = loss + F.binary_cross_entropy_with_logits(logits[:, s], labels[:, s])
        else:
            loss = loss + F.cross_entropy(logits[:, s], labels[:, s].argmax(1))
    return loss


def group_hits(schema: Schema, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple]:
    """Per group, (hits, asked) per image, both (B,) tensors; accuracy = hits.sum() / asked.sum().

    One-of groups: asked = 1, hit when the argmax is the requested class.  Multi-label groups use
    seed 003's score: asked = k requested objects, hits = how many of them are among the judge's
    k most likely objects (so a scene is fully right when hits == asked)."""
    out = {}
    for g in schema.groups:
        s = schema.span(g.name)
        p, y = logits[:, s], labels[:, s]
        if g.multi:
            k = y.sum(1).round().long()
            ranks = p.argsort(1, descending=True).argsort(1)  # 0 = most likely
            out[g.name] = (((ranks < k[:, None]) & (y > 0.5)).sum(1), k)
        else:
            out[g.name] = ((p.argmax(1) == y.argmax(1)).long(), torch.ones(len(p), dtype=torch.long))
    return out


def accuracy(hits: dict[str, tuple]) -> dict[str, float]:
    # a group asked nothing (only empty scenes) missed nothing: 1.0, as the joint score counts it
    return {name: round(h.sum().item() / a.sum().item(), 4) if a.sum() else 1.0 for name, (h, a) in hits.items()}


@torch.no_grad()
def predict(judge: Judge, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, features) for images in [-1, 1], computed in batches on the judge's device."""
    device = next(judge.parameters()).device
    logits, feats = [], []
    for i in range(0, len(images), batch):
        x = images[i:i + batch].to(device)
        f = judge.features(x)
        feats.append(f.cpu())
        logits.append(judge.classify(f).cpu())
    return torch.cat(logits), torch.cat(feats)


def split(n: int, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) index split; the same seed always holds out the same images."""
    order = np.random.default_rng(seed).permutation(n)
    n_out = max(1, int(round(n * heldout)))
    return np.sort(order[n_out:]), np.sort(order[:n_out])


_OUT_FIX = "pick another file with -o"


def _check_split(cfg: JudgeConfig, n: int) -> None:
    train = len(split(n, cfg.heldout, cfg.seed)[0])
    if not train:
        raise UserError(f"{cfg.train_dir}: {n} image{'s' * (n != 1)}, all held out to measure the judge; it "
                        f"needs at least 2 (more for a useful one): add images and run `anime-gan prepare` again")
    if train < cfg.batch_size:
        raise UserError(f"{cfg.train_dir}: only {train} training images for batch size "
                        f"{cfg.batch_size}; lower --batch-size or add images")


def check_judge(cfg: JudgeConfig) -> None:
    """What `train-judge --dry-run` can check without reading the data."""
    from ..config import TrainConfig
    from ..train import check_data_folder, known_image_count, labels_ahead
    validate_judge(cfg)
    train_cfg = TrainConfig(train_dir=cfg.train_dir, image_size=cfg.image_size)
    check_data_folder(train_cfg)
    if labels_ahead(train_cfg) is None:
        _no_labels(cfg)
    n = known_image_count(train_cfg)
    if n is not None:  # (so the dry run says it too)
        _check_split(cfg, n)
    out = judge_file(cfg)
    if cfg.out:  # (the default one's folder is the data folder, which may be drawn first)
        writable_file(out, _OUT_FIX)


def _no_labels(cfg: JudgeConfig):
    raise UserError(f"{cfg.train_dir}: has no labels, so a judge cannot be trained; "
                    f"label the data (tags.pickle, train.json or tags.csv) and re-run prepare")


def judge_file(cfg: JudgeConfig) -> Path:
    """Where the judge is written; refused if a file that is not a judge is there."""
    out = Path(cfg.out) if cfg.out else Path(cfg.train_dir) / f"judge_{cfg.image_size}.pt"
    if out.is_dir():
        raise UserError(f"{out}: is a folder; -o takes the judge's file name, such as {out / 'judge.pt'}")
    if out.is_file():  # only a judge is replaced: -o pointing at a checkpoint or tags file is a slip
        try:
            checkpoint.load(out, "judge")
        except UserError:
            raise UserError(f"{out}: exists and is not a judge, so it is not written over; {_OUT_FIX}") from None
    return out


def train_judge(cfg: JudgeConfig, log=print) -> tuple[Path, dict]:
    """Train a judge on cfg.train_dir's real images; returns (path written, report)."""
    from ..config import TrainConfig
    from ..train import load_training_data
    check_judge(cfg)  # before the data is drawn or packed, as the dry run checks it
    data = load_training_data(TrainConfig(train_dir=cfg.train_dir, image_size=cfg.image_size,
                                          synthetic_size=cfg.synthetic_size, quiet=cfg.quiet), log)
    if data.schema is None:
        _no_labels(cfg)
    out = judge_file(cfg)
    writable_file(out, _OUT_FIX)
    if out.exists():
        log(f"note: {out} holds a judge already; it will be replaced, and metrics scored with it "
            f"will not compare with the new one's")
    device = distributed.pick_device(cfg.device)
    schema = data.schema
    _check_split(cfg, len(data))
    train_idx, held_idx = split(len(data), cfg.heldout, cfg.seed)
    # The whole set as uint8 on the device (64 px: 12 KB per image); batches are index_selects.
    images = torch.from_numpy(np.ascontiguousarray(data.images)).to(device)
    labels = torch.from_numpy(data.labels).to(device)

    torch.manual_seed(cfg.seed)
    arch = JudgeArch(cfg.image_size, cfg.width, cfg.features)
    judge = Judge(schema, arch).to(device)
    opt = torch.optim.Adam(judge.parameters(), lr=cfg.lr)
    steps_per_epoch = len(train_idx) // cfg.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_t, held_t = torch.from_numpy(train_idx), torch.from_numpy(held_idx).to(device)
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        judge.train()
        order = train_t[torch.randperm(len(train_t), generator=gen)]
        total = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size].to(device)
            x = images.index_select(0, idx).float().div_(127.5).sub_(1.0)
            # Horizontal flips only: colour or crop augmentation could change the answer.
            flip = torch.rand(len(idx), generator=gen).to(device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = judge_loss(schema, judge(x), labels.index_select(0, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        held = heldout_accuracy(judge, images.index_select(0, held_t), labels.index_select(0, held_t))
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {total / steps_per_epoch:.4f}, held-out "
            + ", ".join(f"{k} {v:.3f}" for k, v in held.items()))
    seconds = time.perf_counter() - start
    report = {"judge": str(out), "data": str(cfg.train_dir), "data_key": data_key(data), "images": len(data),
              "train": len(train_idx), "heldout": len(held_idx), "heldout_accuracy": held, "epochs": cfg.epochs,
              "seconds": round(seconds, 1), "device": str(device)}
    with writing(out, _OUT_FIX):
        save_judge(judge.cpu(), out, report)
    return out, report


def data_key(data) -> str:
    """Which data set a judge learnt from, by its labels and image count (cheap, and the same for a
    copy of the folder): `eval` notes a judge that learnt from another set."""
    digest = hashlib.sha256(f"{data.images.shape}".encode())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def heldout_accuracy(judge: Judge, images_u8: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    judge.eval()
    logits, _ = predict(judge, images_u8.float().div(127.5).sub(1.0))
    return accuracy(group_hits(judge.schema, logits, labels.cpu()))


def save_judge(judge: Judge, path: Path, report: dict) -> None:
    checkpoint.save({"format": checkpoint.FORMAT, "kind": "judge", "schema": judge.schema.to_dict(),
                     "image_size": judge.arch.image_size, "arch": asdict(judge.arch),
                     "state_dict": judge.state_dict(), "heldout_accuracy": report["heldout_accuracy"],
                     "report": report}, path)


def load_judge(path, device="cpu") -> tuple[Judge, dict]:
    """(judge in eval mode on `device`, the saved dict without weights)."""
    ckpt = checkpoint.load(path, "judge")
    fix = "retrain it with `anime-gan train-judge`"
    try:
        schema = Schema.from_dict(ckpt["schema"], str(path), fix)
        accuracy = ckpt["heldout_accuracy"]
        if not isinstance(ckpt["image_size"], int) or not isinstance(accuracy, dict) or not accuracy or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in accuracy.values()):
            raise ValueError("its image size or held-out accuracy is not what a judge saves")
    except (KeyError, ValueError) as e:
        what = f"no {e}" if isinstance(e, KeyError) else e
        raise UserError(f"{path}: damaged judge ({what}); {fix}") from None
    arch = ckpt.get("arch")
    # Checked before the network is built from it: a width of 10**6 would take all the memory first.
    if not (isinstance(arch, dict) and set(arch) == {"image_size", "width", "features"}
            and all(isinstance(v, int) and not isinstance(v, bool) for v in arch.values())
            and arch["image_size"] in IMAGE_SIZES and 1 <= arch["width"] <= MAX_JUDGE_WIDTH
            and 1 <= arch["features"] <= MAX_JUDGE_FEATURES):
        raise UserError(f"{path}: damaged judge (its architecture is not one train-judge makes); {fix}")
    try:
        judge = Judge(schema, JudgeArch(**arch))
        judge.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, KeyError) as e:
        raise UserError(f"{path}: judge weights do not fit its architecture "
                        f"({detail(e)}); {fix}") from None
    if not all(torch.isfinite(t).all() for t in judge.state_dict().values() if t.is_floating_point()):
        raise UserError(f"{path}: the judge's weights hold NaN or infinite values; {fix}")
    with torch.no_grad():
        probe = _probe_features(judge.eval(), arch["image_size"])
        finite = bool(torch.isfinite(probe).all() and torch.isfinite(judge.classify(probe)).all())
    if not finite:  # e.g. a negative running variance
        raise UserError(f"{path}: the judge computes NaN or infinite features from finite weights "
                        f"(damaged batch-norm statistics); {fix}")
    if torch.equal(probe[0], probe[1]):  # e.g. zeroed weights: every G would score a judge-FID of 0
        raise UserError(f"{path}: the judge gives two different images the same features (zeroed or "
                        f"collapsed weights), so its FIDs would be 0 for any G; {fix}")
    info = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return judge.to(device).eval(), info


@torch.no_grad()
def _probe_features(judge: "Judge", size: int) -> torch.Tensor:
    """Two fixed ramp images (no random numbers drawn, so seeded runs stay as they were) through
    the judge: their (2, F) features."""
    probe = torch.linspace(-1, 1, 2 * 3 * size * size).view(2, 3, size, size)
    return judge.features(probe)


WEAK_JUDGE = 0.8  # held-out accuracy on real images below which the judge's verdicts are noise
MIN_HELDOUT = 50  # held-out images below which that accuracy is too rough to vouch for a judge


def heldout_images(info: dict) -> int | None:
    """How many images a judge file's held-out accuracy was measured on (None: not recorded)."""
    report = info.get("report")
    held = report.get("heldout") if isinstance(report, dict) else None
    return held if isinstance(held, int) and not isinstance(held, bool) and held >= 0 else None


def format_report(report: dict) -> str:
    acc = ", ".join(f"{k} {v:.3f}" for k, v in report["heldout_accuracy"].items())
    text = (f"{report['judge']}: held-out accuracy {acc} ({report['heldout']} of {report['images']} "
            f"real images, {report['epochs']} epoch{'s' * (report['epochs'] != 1)}, {report['seconds']} s on {report['device']})")
    if min(report["heldout_accuracy"].values()) < WEAK_JUDGE:
        text += (f"\nnote: below {WEAK_JUDGE} this judge's scores of fakes say little; train it longer "
                 f"(--epochs) or wider (--width)")
    elif report["heldout"] < MIN_HELDOUT:
        text += (f"\nnote: {report['heldout']} held-out image{'s' * (report['heldout'] != 1)} "
                 f"make{'s' * (report['heldout'] == 1)} its held-out accuracy a rough figure; use more images or "
                 f"a larger --heldout")
    return text
