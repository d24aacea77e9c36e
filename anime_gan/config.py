"""One typed config per command: the single source of defaults.

argparse (cli.py) fills these, `validate` checks them before anything is written, the trainer
consumes TrainConfig unchanged, and every checkpoint carries it (as a plain dict) so `test` and
`--resume` rebuild exactly what was trained.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from .errors import UserError

IMAGE_SIZES = (32, 64, 128)
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class PrepareConfig:
    source: str | None = None   # folder in any accepted layout (None with synthetic > 0)
    out: str = "data"           # where the tag-pickle layout and cache are written
    image_size: int = 64
    synthetic: int = 0          # > 0: draw this many built-in faces instead of reading `source`
    seed: int = 0
    strict: bool = False
    workers: int = 0            # decoding threads; 0 = one per CPU core
    quiet: bool = False


MAX_N, MAX_STEPS = 64, 256  # `test`: a grid of 64 rows or a 256-frame GIF is already more than a screen
MAX_SEED = 2**31 - 1  # seeds are scaled and offset (seed * 1000 + rank, ...) inside 64-bit generators
MAX_SYNTHETIC = 1_000_000  # built-in faces (~12 GB of PNGs); more is a typo, not a data set
# Beyond these a run is a typo: the nets (--nf 1024 is ~1.5G parameters at 64 px), the noise or one
# step's D batches (all drawn up front) would not fit in memory, and the error would blame -b.
MAX_WIDTH, MAX_Z_DIM, MAX_N_CRITIC = 1024, 4096, 100


def check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")


def check_device(name: str) -> None:
    """The devices this tool trains and samples on (torch parses more, e.g. meta or mps, that fail later)."""
    if name not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", name):
        raise UserError(f"unknown --device '{name}'; choose auto, cpu, cuda or cuda:N")


def check_synthetic_size(n: int) -> None:
    if not 1 <= n <= MAX_SYNTHETIC:
        raise UserError(f"--synthetic-size (built-in faces drawn into an empty -t folder) must be between 1 "
                        f"and {MAX_SYNTHETIC:,}, got {n}")


MAX_LOSS_WEIGHT = 1e4  # a loss term weighted past this swamps the rest and overflows fp32 at once


def check_finite_weight(flag: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{flag} must be a finite number, 0 or more, got {value}")
    if value > MAX_LOSS_WEIGHT:
        raise UserError(f"{flag} {value} is more than {MAX_LOSS_WEIGHT:g}; loss weights are of order 1 to 10")


@dataclass
class TrainConfig:
    # what to train
    model: str = "acgan-dcgan"
    loss: str | None = None          # None = the preset's loss
    embed: str = "onehot"            # onehot | pair | rgb
    nf: int = 64                     # G's width multiplier, and D's unless d_nf
    d_nf: int = 0                    # D's width multiplier; 0 = nf
    z_dim: int = 100
    image_size: int = 64
    # seed-001 flags
    device: str = "auto"
    iterations: int = 50000
    batch_size: int = 128
    train_dir: str = "data"
    sample_dir: str = "samples"
    checkpoint_dir: str = "checkpoints"
    sample: int = 500
    check: int = 2000
    lr: float | None = None          # sets both nets; None = the preset's (2e-4 for most)
    beta: float | None = None        # Adam beta1; None = the preset's (0.5 for most)
    aux: float = 1.0                 # classification loss weight (ACGAN family)
    mode_seeking: float = 0.0        # MSGAN diversity term in G's loss; 0 = off
    gp: float = 10.0                 # gradient-penalty weight (wgan-gp, dragan losses); seed 002 used 5
    # seed-000 flags and ours
    glr: float | None = None
    dlr: float | None = None
    n_critic: int | None = None
    seed: int = 0
    ema: bool = True
    ema_decay: float = 0.999
    flip: bool = True
    name: str | None = None          # run folder name; None = derived from the config
    resume: str | None = None        # 'latest' or a checkpoint path
    log_every: int = 50
    eval_every: int = 0
    tensorboard: bool = False
    synthetic_size: int = 2000       # built-in faces drawn when the data folder is empty
    keep_d: int = 2                  # D checkpoints (with optimizer state) kept on disk
    # speed
    precision: str = "fp32"
    compile: bool = False
    cuda_graph: bool = False         # record the whole step once, replay it (one CUDA process)
    deterministic: bool = False      # GPU: deterministic kernels, no cuDNN autotuning (slower)
    channels_last: bool = False
    data_on_device: str = "auto"     # auto | on | off
    sync_bn: bool = False
    quiet: bool = False
    # The settings typed on the command line: a resume takes the others from its snapshot.
    # None (a config built in code): all of them count as given.
    typed: tuple | None = None

    def run_name(self) -> str:
        d_nf = f"_dnf{self.d_nf}" if self.d_nf else ""
        return self.name or f"{self.model}_{self.embed}_nf{self.nf}{d_nf}_{self.image_size}px_seed{self.seed}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From a checkpoint or config.json (files a person can edit): ValueError names a wrong value."""
        return cls(**fields_of(cls, d))


_KIND_NAMES = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}
_OPTIONAL_KINDS = {"int | None": int, "float | None": float, "str | None": str}


def fields_of(cls, d) -> dict:
    """`d`'s entries that are fields of dataclass `cls`, each of its default's type (None allowed
    where the default is None); a ValueError names the first that is not."""
    if not isinstance(d, dict):
        raise ValueError(f"settings are a {type(d).__name__}, not a mapping")
    out = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value, default = d[f.name], f.default
        # a None default says nothing of the type: read it off the annotation ("float | None")
        base = _OPTIONAL_KINDS.get(str(f.type)) if default is None else type(default)
        if value is not None or default is not None:
            kind = (int, float) if base is float else base
            if base in _KIND_NAMES and (not isinstance(value, kind) or (isinstance(value, bool) and base is not bool)):
                raise ValueError(f"{f.name} is {value!r}, not {_KIND_NAMES[base]}")
        out[f.name] = value
    return out


def validate_train(cfg: TrainConfig) -> None:
    """Check every value up front: one clear message, before any folder is touched."""
    from .labels import EMBEDS
    from .models import PRESETS, d_mixes_samples
    if cfg.model not in PRESETS:
        raise UserError(f"unknown --model '{cfg.model}'; choose one of: {', '.join(PRESETS)}")
    if cfg.loss not in (None, "bce", "wgan", "wgan-gp", "hinge", "dragan"):
        raise UserError(f"unknown --loss '{cfg.loss}'; choose bce, wgan, wgan-gp, hinge or dragan")
    if cfg.loss is not None and PRESETS[cfg.model].loss == "vae":
        raise UserError("--loss does not apply to --model cvae (a VAE has no adversarial loss)")
    if cfg.embed not in EMBEDS:
        raise UserError(f"unknown --embed '{cfg.embed}'; choose one of {', '.join(EMBEDS)}")
    if cfg.image_size not in IMAGE_SIZES:
        raise UserError(f"--image-size {cfg.image_size} is not supported; use 32, 64 or 128")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"unknown --precision '{cfg.precision}'; choose fp32, bf16 or fp16")
    check_device(cfg.device)
    check_seed(cfg.seed)
    if cfg.data_on_device not in ("auto", "on", "off"):
        raise UserError("--data-on-device must be auto, on or off")
    for name in ("iterations", "batch_size", "sample", "check", "nf", "z_dim", "log_every"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    for name in ("lr", "glr", "dlr"):
        v = getattr(cfg, name)
        if v is not None and not 0 < v < 1:
            raise UserError(f"--{name} must be between 0 and 1, got {v}")
    if cfg.n_critic is not None and cfg.n_critic < 1:
        raise UserError(f"--n-critic must be at least 1, got {cfg.n_critic}")
    for flag, value, most in (("--nf", cfg.nf, MAX_WIDTH), ("--d-nf", cfg.d_nf, MAX_WIDTH),
                              ("--z-dim", cfg.z_dim, MAX_Z_DIM), ("--n-critic", cfg.n_critic or 0, MAX_N_CRITIC)):
        if value > most:
            raise UserError(f"{flag} {value} is more than {most}; ask for less")
    if cfg.cuda_graph and cfg.precision == "fp16":
        raise UserError("--cuda-graph cannot record fp16's loss scaling; use --precision bf16 or fp32")
    check_finite_weight("--mode-seeking", cfg.mode_seeking)
    check_finite_weight("--aux", cfg.aux)
    check_finite_weight("--gp", cfg.gp)
    if cfg.mode_seeking and (cfg.batch_size < 2 or cfg.batch_size % 2):
        raise UserError(f"--mode-seeking pairs the batch's fakes; use an even -b, got {cfg.batch_size}")
    if cfg.mode_seeking and PRESETS[cfg.model].loss == "vae":
        raise UserError("--mode-seeking is a GAN loss term; --model cvae has no adversarial step")
    if not 0 <= cfg.ema_decay < 1:
        raise UserError(f"--ema-decay must be in [0, 1), got {cfg.ema_decay}")
    if cfg.beta is not None and not 0 <= cfg.beta < 1:
        raise UserError(f"--beta (Adam's beta1) must be in [0, 1), got {cfg.beta}")
    for name in ("keep_d", "eval_every", "d_nf"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(cfg, name)}")
    check_synthetic_size(cfg.synthetic_size)
    loss = cfg.loss or PRESETS[cfg.model].loss
    if loss in ("wgan-gp", "dragan") and d_mixes_samples(cfg.model):
        fix = (f"--model {loss}" if PRESETS[cfg.model].conditional
               else "--model dcgan-gp" + ("" if loss == "wgan-gp" else f" --loss {loss}"))
        raise UserError(f"--loss {loss} penalises per-sample gradients, which BatchNorm in "
                        f"{cfg.model}'s D mixes across the batch; use {fix}")
    if cfg.name is not None and (len(cfg.name.encode(errors="surrogateescape")) > 255 or not cfg.name.isprintable()):
        raise UserError(f"--name must be at most 255 bytes of printable characters (a folder name), got "
                        f"{cfg.name[:40].encode('unicode_escape').decode()}{'...' if len(cfg.name) > 40 else ''}")
    if cfg.name is not None and (cfg.name in ("", ".", "..") or any(c in cfg.name for c in "/\\\0")):
        # The name becomes one folder under -s and -c; a path would write outside them.
        raise UserError(f"--name '{cfg.name}' must be a plain folder name (no '/', '\\' or '..'); "
                        f"choose where runs go with -s and -c")


@dataclass
class Hyper:
    """The optimisation values a run actually uses: the preset's, overridden by flags."""
    loss: str
    glr: float
    dlr: float
    betas: tuple
    n_critic: int


def resolve_hyper(cfg: TrainConfig) -> Hyper:
    from .models import PRESETS
    p = PRESETS[cfg.model]
    glr = cfg.glr or cfg.lr or p.glr
    dlr = cfg.dlr or cfg.lr or p.dlr
    betas = (cfg.beta if cfg.beta is not None else p.betas[0], p.betas[1])
    return Hyper(cfg.loss or p.loss, glr, dlr, betas, cfg.n_critic or p.n_critic)


@dataclass
class TestConfig:
    type: str | None = None  # None: fix_noise, or conditions when --conditions is given
    model_dir: str = "checkpoints"
    sample_dir: str | None = None  # None: the run's own sample folder (sampling.with_sample_dir)
    hair: str | None = None
    eye: str | None = None
    to_hair: str | None = None
    to_eye: str | None = None
    hair_rgb: str | None = None
    eye_rgb: str | None = None
    pairs: list = field(default_factory=list)
    conditions: str | None = None
    n: int = 8
    steps: int = 10
    seed: int = 0
    ema: bool = True
    captions: bool = True
    individual: bool = False
    device: str = "cpu"
