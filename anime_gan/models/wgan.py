"""Wasserstein critics.

'wgan' (seed 000 section 5) is the CGAN pair with the sigmoid removed, trained with RMSprop and
weight clipping (losses.clip_weights), so it needs no networks of its own: see cgan.py.

'wgan-gp' (seed 003) pairs the conditional DCGAN generator (c embedded to 100 features and
concatenated to z) with the Critic below, which sees c as a fourth image plane and has no
BatchNorm: the gradient penalty is defined per sample, and BatchNorm would couple the samples.
"""

import torch
from torch import nn

from . import dcgan
from .blocks import SelfAttention, cond_embed, down, init_pair, lrelu, require_cond, sn, widths

EMBED = 100  # seed 003's c_size


class Critic(nn.Module):
    """Also SAGAN's discriminator, with spectral=True and attention at attn_res."""

    def __init__(self, cfg, spectral=False, attn_res=()):
        super().__init__()
        require_cond(cfg, "the conditional critic")
        self.size = S = cfg.image_size
        self.embed = cond_embed(cfg.cond_dim, S * S, nn.ReLU, spectral)  # c -> one S x S plane
        ch = widths(cfg.disc_nf, S)[::-1]  # 64 px, nf 64: [64, 128, 256, 512]
        layers, res = [], S
        for a, b in zip([4, *ch], ch):  # 3 image channels + the condition plane
            layers += down(a, b, None, lrelu(0.1), spectral)
            res //= 2
            if res in attn_res:
                layers.append(SelfAttention(b, spectral))
        self.main = nn.Sequential(*layers)
        self.last = sn(nn.Conv2d(ch[-1], 1, 4), spectral)  # 4x4 -> 1x1, a raw score

    def forward(self, x, c):
        plane = self.embed(c).view(-1, 1, self.size, self.size)  # (B, 1, S, S)
        h = self.main(torch.cat([x, plane], 1))  # (B, 4, S, S) -> (B, 512, 4, 4)
        return self.last(h).flatten(), None  # (B,)


def build_gp(cfg):
    G = dcgan.Generator(cfg, conditional=True, embed_dim=EMBED)
    return init_pair(G, Critic(cfg))
