"""Model zoo: one file per family on shared blocks, and the presets the trainer picks by name.

Contract shared by every preset:
  G(z: (B, z_dim), c: (B, cond_dim)) -> (B, 3, S, S) in [-1, 1]; G.z_dim, G.cond_dim
      (cond_dim is 0 for unconditional G, which accepts and ignores c)
  D(x: (B, 3, S, S), c) -> (adv: (B,) raw logits or critic scores,
                           cls: (B, n_cls) raw logits, or None)
  cvae: G is the decoder, the D slot is the encoder E(x, c) -> (mu, logvar)
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from . import acgan, cgan, cvae, dcgan, projection, sagan, wgan


@dataclass(frozen=True)
class ModelConfig:
    z_dim: int = 100
    cond_dim: int = 22  # size of the condition vector c fed to G and D (0 = unconditional)
    class_sizes: tuple[int, ...] = (12, 10)  # one-of-N group sizes for ACGAN heads, in schema order
    multi_label: int = 0  # number of multi-label classes (CLEVR: 24); ACGAN heads then use sigmoid
    nf: int = 64  # width multiplier (seed 000 compared 16/64/128)
    image_size: int = 64  # 32, 64 or 128
    d_nf: int = 0  # D's own width multiplier, 0 = nf (seed 003: g-conv-dim 300, d-conv-dim 100)

    @property
    def disc_nf(self) -> int:
        """The width D (or the cvae's encoder, in D's slot) is built with."""
        return self.d_nf or self.nf


@dataclass(frozen=True)
class Preset:
    name: str
    build: Callable[[ModelConfig], tuple[nn.Module, nn.Module]]  # returns (G, D), initialised
    loss: str  # 'bce' | 'wgan' | 'wgan-gp' | 'hinge' | 'dragan' | 'vae'
    conditional: bool  # needs labels
    aux: str | None  # None | 'groups' | 'multilabel'; see aux_kind() for multi-label schemas
    optimizer: str  # 'adam' | 'rmsprop'
    glr: float
    dlr: float
    betas: tuple[float, float]  # Adam only; RMSprop ignores them
    n_critic: int  # D steps per G step
    supports_multi_label: bool
    description: str  # one line, for --help


ADAM = (0.5, 0.999)  # DCGAN's betas, used by seeds 000-002
SN_ADAM = (0.0, 0.9)  # WGAN-GP / SAGAN: no momentum on the first moment


def _preset(name, build, loss, aux=None, optimizer="adam", glr=2e-4, dlr=2e-4, betas=ADAM,
            n_critic=1, conditional=True, supports_multi_label=True, description=""):
    return Preset(name, build, loss, conditional, aux, optimizer, glr, dlr, betas, n_critic,
                  supports_multi_label, description)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _preset("cgan", cgan.build, "bce",
                description="seed 000 conditional GAN: embedded c joins z in G and D's features"),
        _preset("acgan", acgan.build, "bce", aux="groups",
                description="seed 000 ACGAN: unconditioned D, one class head per label group"),
        _preset("acgan-dcgan", dcgan.build_acgan, "bce", aux="multilabel",
                description="seed 001 ACGAN on DCGAN nets, one sigmoid classifier"),
        _preset("dcgan", dcgan.build, "bce", conditional=False,
                description="unconditional DCGAN (pytorch/examples); ignores labels"),
        _preset("dcgan-gp", dcgan.build_gp, "wgan-gp", glr=1e-4, dlr=1e-4, betas=SN_ADAM, n_critic=5,
                conditional=False, description="seed 004 unconditional WGAN-GP: DCGAN nets, InstanceNorm critic"),
        _preset("wgan", cgan.build, "wgan", optimizer="rmsprop", glr=5e-5, dlr=5e-5, n_critic=5,
                description="seed 000 CGAN as a WGAN: RMSprop, critic clipped to +-0.01"),
        _preset("wgan-gp", wgan.build_gp, "wgan-gp", glr=1e-4, dlr=1e-4, betas=SN_ADAM, n_critic=5,
                description="seed 003 conditional DCGAN, critic without BatchNorm, GP 10"),
        _preset("sagan", sagan.build, "hinge", glr=1e-4, dlr=4e-4, betas=SN_ADAM,
                description="self-attention GAN: spectral norm in G and D, attention, hinge loss"),
        _preset("acgan-sn", partial(acgan.build, spectral=True), "bce", aux="groups",
                description="seed 002 ACGAN with spectral norm instead of BatchNorm in D"),
        _preset("projection", projection.build, "hinge",
                description="projection discriminator (Miyato & Koyama) with spectral norm, hinge"),
        _preset("dragan", partial(cgan.build, norm="ln"), "dragan",
                description="CGAN nets with LayerNorm in D, BCE plus the DRAGAN gradient penalty"),
        _preset("cvae", cvae.build, "vae", glr=1e-4, dlr=1e-4, betas=(0.9, 0.999),
                description="seed 002 conditional VAE: conv encoder, deconv decoder"),
    ]
}


def build(name: str, cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(G, D) for a preset, weights initialised. ValueError names what is wrong."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].build(cfg)


def aux_kind(name: str, cfg: ModelConfig) -> str | None:
    """The classification loss the preset's D needs for this schema: ACGAN's per-group heads
    become a single sigmoid head when the schema is multi-label."""
    aux = PRESETS[name].aux
    return "multilabel" if aux and cfg.multi_label else aux


def d_mixes_samples(name: str) -> bool:
    """Whether the preset's D has BatchNorm, which mixes the samples of a batch: a penalty on
    per-sample input gradients (wgan-gp, dragan) is then wrong. Read off a small copy of D."""
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG be
        _, D = build(name, ModelConfig(nf=8, image_size=32))
    return any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters, the number the seeds print."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = ["ModelConfig", "Preset", "PRESETS", "build", "aux_kind", "d_mixes_samples", "count_parameters"]
