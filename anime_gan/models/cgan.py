"""Seed 000 CGAN: condition embedded by a dense layer, concatenated to z in G and to the 4x4
feature map in D. Attribute names follow the seed printout so its state_dicts line up.

The 'wgan' preset (seed 000 section 5) and 'dragan' reuse these networks unchanged except for
the normalisation in D; ACGAN reuses the Generator.
"""

import torch
from torch import nn

from .blocks import down, init_pair, lrelu, norm2d, require_cond, to_rgb, up, widths

EMBED = 256  # seed 000's condition embedding width, independent of nf
# as printed by the seed; in PyTorch's convention this makes running stats follow the latest batch
BN_MOMENTUM = 0.9
act = lrelu(0.01)


class Generator(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        require_cond(cfg, "the CGAN generator")
        self.z_dim, self.cond_dim = cfg.z_dim, cfg.cond_dim
        ch = widths(cfg.nf, cfg.image_size)  # 64 px, nf 64: [512, 256, 128, 64]
        self.base = ch[0]
        self.text_dense = nn.Sequential(nn.Linear(cfg.cond_dim, EMBED), act())
        self.cat_dense = nn.Linear(cfg.z_dim + EMBED, ch[0] * 4 * 4)
        layers = [nn.BatchNorm2d(ch[0], momentum=BN_MOMENTUM), act()]
        for a, b in zip(ch, ch[1:]):
            layers += up(a, b, "bn", act, momentum=BN_MOMENTUM)
        self.conv = nn.Sequential(*layers, *to_rgb(ch[-1]))

    def forward(self, z, c):
        h = torch.cat([z, self.text_dense(c)], 1)  # (B, z_dim + 256)
        h = self.cat_dense(h).view(-1, self.base, 4, 4)  # (B, 512, 4, 4)
        return self.conv(h)  # (B, 3, S, S)


def features(cfg, norm="bn", spectral=False):
    """Image -> (B, base, 4, 4): the seed's conv stack, first layer without normalisation."""
    ch = widths(cfg.disc_nf, cfg.image_size)[::-1]  # 64 px, nf 64: [64, 128, 256, 512]
    layers = down(3, ch[0], None, act, spectral)
    for a, b in zip(ch, ch[1:]):
        layers += down(a, b, norm, act, spectral, momentum=BN_MOMENTUM)
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """norm='bn' is the seed; 'ln' or None for penalties on per-sample gradients (DRAGAN)."""

    def __init__(self, cfg, norm="bn"):
        super().__init__()
        require_cond(cfg, "the CGAN discriminator")
        base = widths(cfg.disc_nf, cfg.image_size)[0]
        self.text_dense = nn.Sequential(nn.Linear(cfg.cond_dim, EMBED), act())
        self.conv1 = features(cfg, norm)
        self.conv2 = nn.Sequential(
            nn.Conv2d(base + EMBED, base, 1), *norm2d(norm, base, BN_MOMENTUM), act()
        )
        # the seed ends in Sigmoid; we return the raw logit and use BCE-with-logits in losses.py,
        # the same loss but numerically stable and autocast-safe
        hidden = cfg.disc_nf * 8
        self.out_dense = nn.Sequential(nn.Linear(base * 4 * 4, hidden), act(), nn.Linear(hidden, 1))

    def forward(self, x, c):
        h = self.conv1(x)  # (B, 512, 4, 4)
        e = self.text_dense(c)[:, :, None, None].expand(-1, -1, 4, 4)  # (B, 256, 4, 4)
        h = self.conv2(torch.cat([h, e], 1))  # (B, 768, 4, 4) -> (B, 512, 4, 4)
        return self.out_dense(h.flatten(1)).squeeze(1), None  # (B,)


def build(cfg, norm="bn"):
    return init_pair(Generator(cfg), Discriminator(cfg, norm))
