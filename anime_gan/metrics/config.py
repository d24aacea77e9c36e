"""Typed configs of `anime-gan train-judge` and `anime-gan eval`: argparse fills them, `--dry-run`
prints them, and the library functions take them unchanged."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import IMAGE_SIZES, check_device, check_seed, check_synthetic_size
from ..errors import UserError

METRICS = ("accuracy", "fid", "judge-fid", "intra-fid", "diversity")
OFFLINE_METRICS = ("accuracy", "judge-fid", "intra-fid", "diversity")  # need no downloaded weights
JUDGED_METRICS = {"accuracy", "judge-fid", "intra-fid"}  # need a judge (train-judge)


@dataclass
class JudgeConfig:
    train_dir: str = "data"
    out: str | None = None          # default: <train_dir>/judge_<image_size>.pt
    image_size: int = 64
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32                 # channels of the first conv; doubles twice
    features: int = 128             # penultimate width: the judge-FID feature space
    heldout: float = 0.1            # fraction of images kept out of training, fixed by `seed`
    seed: int = 0
    device: str = "auto"
    synthetic_size: int = 2000      # built-in faces drawn when the data folder is empty
    quiet: bool = False


@dataclass
class EvalConfig:
    model_dir: str = "checkpoints"  # run folder (latest G) or a G_<step>.ckpt
    train_dir: str | None = None    # default: the checkpoint's TrainConfig.train_dir
    judge: str | None = None        # default: <data>/judge_<size>.pt
    metrics: list = field(default_factory=lambda: list(METRICS))
    k: int = 10                     # images per label combination / condition
    conditions: str | None = None   # JSON list of label lists (seed 003's test.json)
    fid_samples: int = 10000        # generated images for FID, labels drawn from the real set
    min_class: int = 50             # intra-class FID skips classes with fewer samples
    inception_weights: str | None = None
    batch_size: int = 100
    device: str = "auto"
    seed: int = 0
    ema: bool = True
    json: bool = False
    quiet: bool = False


MAX_K, MAX_FID_SAMPLES = 10_000, 200_000
MAX_JUDGE_WIDTH, MAX_JUDGE_FEATURES = 512, 8192  # a judge 16x the default width is already slow


def validate_judge(cfg: JudgeConfig) -> None:
    check_device(cfg.device)
    check_seed(cfg.seed)
    check_synthetic_size(cfg.synthetic_size)
    if cfg.image_size not in IMAGE_SIZES:
        raise UserError(f"--image-size {cfg.image_size} is not supported; use 32, 64 or 128")
    for name in ("epochs", "batch_size", "width", "features"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    for name, most in (("width", MAX_JUDGE_WIDTH), ("features", MAX_JUDGE_FEATURES)):
        if getattr(cfg, name) > most:
            raise UserError(f"--{name} must be at most {most}, got {getattr(cfg, name)}")
    if not 0 < cfg.heldout < 0.5:
        raise UserError(f"--heldout must be between 0 and 0.5, got {cfg.heldout}")
    if not 0 < cfg.lr < 1:
        raise UserError(f"--lr must be between 0 and 1, got {cfg.lr}")


def validate_eval(cfg: EvalConfig) -> None:
    check_device(cfg.device)
    check_seed(cfg.seed)
    unknown = [m for m in cfg.metrics if m not in METRICS]
    if unknown or not cfg.metrics:
        raise UserError(f"--metrics: unknown {', '.join(unknown) or '(none given)'}; "
                        f"choose from {', '.join(METRICS)}")
    for flag, value in (("-k", cfg.k), ("--batch-size", cfg.batch_size)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    for name in ("fid_samples", "min_class"):  # a covariance needs two samples
        if getattr(cfg, name) < 2:
            raise UserError(f"--{name.replace('_', '-')} must be at least 2, got {getattr(cfg, name)}")
    # Beyond these the fakes no longer fit in memory on a workstation, and FID has long converged.
    for flag, value, most in (("-k", cfg.k, MAX_K), ("--fid-samples", cfg.fid_samples, MAX_FID_SAMPLES)):
        if value > most:
            raise UserError(f"{flag} {value} is more than {most:,}; ask for fewer")
