"""DCGAN (Radford et al. 2016, as in pytorch/examples and seed 004) and its conditional form.

The Generator is the one "z as a 1x1 image" generator the other families share:
  dcgan        unconditional; dcgan-gp the same with an InstanceNorm critic (seed 004's WGAN-GP)
  acgan-dcgan  concat(z, c) with c raw, twice as wide (seed 001: 1024 channels at 4x4)
  wgan-gp      concat(z, embed(c)) (seed 003); sagan adds spectral norm and self-attention
  cvae         the decoder: concat(z, c), "5 deconv layers" at 64 px (seed 002)
"""

import torch
from torch import nn

from .blocks import (
    SelfAttention, cond_embed, down, init_pair, lrelu, require_cond, to_rgb, up, widths,
)


class Generator(nn.Module):
    def __init__(self, cfg, conditional=False, embed_dim=0, width=1, spectral=False, attn_res=(),
                 bias=True):
        super().__init__()
        if conditional:
            require_cond(cfg, "this generator")
        self.z_dim = cfg.z_dim
        self.cond_dim = cfg.cond_dim if conditional else 0  # 0: c is accepted and ignored
        self.embed = None  # seed 001 feeds c raw; seed 003 embeds it first (embed_dim > 0)
        if self.cond_dim and embed_dim:
            self.embed = cond_embed(self.cond_dim, embed_dim, nn.ReLU, spectral)
        cin = self.z_dim + (embed_dim if self.embed is not None else self.cond_dim)
        ch = widths(cfg.nf * width, cfg.image_size)  # 64 px, nf 64, width 1: [512, 256, 128, 64]
        layers = up(cin, ch[0], "bn", nn.ReLU, spectral, bias, first=True)  # 1x1 -> 4x4
        res = 4
        for a, b in zip(ch, ch[1:]):
            layers += up(a, b, "bn", nn.ReLU, spectral, bias)
            res *= 2
            if res in attn_res:
                layers.append(SelfAttention(b, spectral))
        self.main = nn.Sequential(*layers, *to_rgb(ch[-1], spectral, bias))

    def forward(self, z, c=None):
        h = z
        if self.cond_dim:
            h = torch.cat([z, self.embed(c) if self.embed is not None else c], 1)  # (B, z + c')
        return self.main(h[:, :, None, None])  # (B, z + c', 1, 1) -> (B, 3, S, S)


class Discriminator(nn.Module):
    """DCGAN D, unconditioned. n_cls > 0 adds seed 001's multi-label classifier beside the
    real/fake output; both read the same (B, base, 4, 4) features. norm="in" makes it a critic
    a gradient penalty can be used with (no BatchNorm mixing the samples)."""

    def __init__(self, cfg, n_cls=0, width=1, bias=True, norm="bn"):
        super().__init__()
        ch = widths(cfg.disc_nf * width, cfg.image_size)[::-1]  # [64, 128, 256, 512]
        layers = down(3, ch[0], None, lrelu(0.2), bias=bias)  # no BN on the input layer
        for a, b in zip(ch, ch[1:]):
            layers += down(a, b, norm, lrelu(0.2), bias=bias)
        self.main = nn.Sequential(*layers)
        # raw logits: pytorch/examples ends in Sigmoid + BCELoss, we use BCE-with-logits (stable)
        self.adv = nn.Conv2d(ch[-1], 1, 4, 1, 0, bias=bias)  # 4x4 -> 1x1
        self.cls = nn.Conv2d(ch[-1], n_cls, 4, 1, 0) if n_cls else None

    def forward(self, x, c=None):
        h = self.main(x)  # (B, 512, 4, 4); c is ignored
        cls = self.cls(h).flatten(1) if self.cls is not None else None  # (B, n_cls)
        return self.adv(h).flatten(), cls  # (B,)


def build(cfg):
    # pytorch/examples: no conv biases, BatchNorm follows every hidden conv
    return init_pair(Generator(cfg, bias=False), Discriminator(cfg, bias=False))


def build_gp(cfg):
    """Seed 004's WGAN-GP: "the same otherwise as the dcgan", with instance normalisation in the critic."""
    return init_pair(Generator(cfg, bias=False), Discriminator(cfg, bias=False, norm="in"))


def build_acgan(cfg):
    n_cls = cfg.multi_label or sum(cfg.class_sizes)
    return init_pair(Generator(cfg, conditional=True, width=2), Discriminator(cfg, n_cls, width=2))
