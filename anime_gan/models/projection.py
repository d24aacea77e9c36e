"""Projection discriminator (Miyato & Koyama 2018), hinge loss.

D(x, c) = w . phi(x) + <V c, phi(x)>: the condition enters as an inner product with the image
features instead of being concatenated. V is a bias-free linear map rather than an embedding
table, so it takes one-hot, hair/eye pair, rgb and multi-hot conditions alike.
G is kept simple: the conditional DCGAN generator of wgan-gp (embedded c concatenated to z).
"""

from torch import nn

from . import dcgan, wgan
from .blocks import down, init_pair, lrelu, require_cond, sn, widths


class Discriminator(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        require_cond(cfg, "the projection discriminator")
        ch = widths(cfg.disc_nf, cfg.image_size)[::-1]  # 64 px, nf 64: [64, 128, 256, 512]
        layers = []
        for a, b in zip([3, *ch], ch):
            layers += down(a, b, None, lrelu(0.1), spectral=True)
        self.main = nn.Sequential(*layers)
        self.linear = sn(nn.Linear(ch[-1], 1))
        self.embed = sn(nn.Linear(cfg.cond_dim, ch[-1], bias=False))

    def forward(self, x, c):
        h = self.main(x).sum(dim=(2, 3))  # (B, 512): global sum pooling as in the paper
        return self.linear(h).squeeze(1) + (self.embed(c) * h).sum(1), None  # (B,)


def build(cfg):
    G = dcgan.Generator(cfg, conditional=True, embed_dim=wgan.EMBED)
    return init_pair(G, Discriminator(cfg))
