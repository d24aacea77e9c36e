"""Seed 000 ACGAN (and seed 002's variant with spectral norm instead of BatchNorm in D).

G is the CGAN generator. D never sees the condition: it says real/fake and, through one head per
one-of-N group (hair, eyes), which classes it thinks the image shows. A multi-label schema
(cfg.multi_label > 0) gets a single head over all classes, trained with sigmoid BCE.
"""

import torch
from torch import nn

from . import cgan
from .blocks import init_pair, sn, widths


class Discriminator(nn.Module):
    def __init__(self, cfg, spectral=False):
        super().__init__()
        base = widths(cfg.disc_nf, cfg.image_size)[0]
        # seed 002 replaces every BatchNorm with spectral norm on every layer
        self.conv = cgan.features(cfg, norm=None if spectral else "bn", spectral=spectral)

        def dense(n):  # 8192 -> 512 -> n, one per output as in the seed (real_dense, hair_dense)
            hidden = cfg.disc_nf * 8
            return nn.Sequential(
                sn(nn.Linear(base * 4 * 4, hidden), spectral),
                cgan.act(),
                sn(nn.Linear(hidden, n), spectral),
            )

        # the seed ends the heads in Sigmoid / LogSoftmax; we return raw logits and use the
        # identical BCE-with-logits / cross-entropy in losses.py (stable, autocast-safe)
        self.real_dense = dense(1)
        sizes = [cfg.multi_label] if cfg.multi_label else list(cfg.class_sizes)
        if not sizes or min(sizes) < 1:
            raise ValueError("ACGAN needs class_sizes (one-of-N groups) or multi_label > 0")
        self.class_heads = nn.ModuleList(dense(n) for n in sizes)

    def forward(self, x, c=None):
        h = self.conv(x).flatten(1)  # (B, 512*4*4); c is ignored: ACGAN's D is unconditioned
        cls = torch.cat([head(h) for head in self.class_heads], 1)  # (B, sum(class_sizes))
        return self.real_dense(h).squeeze(1), cls


def build(cfg, spectral=False):
    return init_pair(cgan.Generator(cfg), Discriminator(cfg, spectral))

