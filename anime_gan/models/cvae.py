"""Conditional VAE (seed 002). The decoder takes the generator's slot, G(z, c); the encoder takes
the discriminator's, E(x, c) -> (mu, logvar). Loss: losses.vae_loss (MSE + KL).

Encoder: one conv + BN + ReLU per stride-2 stage (4 layers at 64 px), then two linear heads.
Decoder: the conditional DCGAN generator, 5 deconv layers at 64 px, Tanh output.
"""

import torch
from torch import nn

from . import dcgan
from .blocks import down, init_pair, require_cond, widths


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        require_cond(cfg, "the CVAE encoder")
        self.z_dim, self.cond_dim, self.size = cfg.z_dim, cfg.cond_dim, cfg.image_size
        ch = widths(cfg.disc_nf, cfg.image_size)[::-1]  # 64 px, nf 64: [64, 128, 256, 512]
        layers = []
        for a, b in zip([3 + cfg.cond_dim, *ch], ch):  # c enters as constant planes
            layers += down(a, b, "bn", nn.ReLU)
        self.conv = nn.Sequential(*layers)
        self.mu = nn.Linear(ch[-1] * 4 * 4, cfg.z_dim)
        self.logvar = nn.Linear(ch[-1] * 4 * 4, cfg.z_dim)

    def forward(self, x, c):
        planes = c[:, :, None, None].expand(-1, -1, self.size, self.size)  # (B, cond, S, S)
        h = self.conv(torch.cat([x, planes], 1)).flatten(1)  # (B, 512*4*4)
        return self.mu(h), self.logvar(h)  # (B, z_dim) each


def reparameterize(mu, logvar, generator=None):
    """z = mu + sigma * eps, eps from torch's RNG: sampling stays differentiable in mu, logvar."""
    eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
    return mu + torch.exp(0.5 * logvar) * eps


def build(cfg):
    return init_pair(dcgan.Generator(cfg, conditional=True), Encoder(cfg))
