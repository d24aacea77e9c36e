"""Pieces every model family shares: conv stages, condition embedding, self-attention, spectral
norm and the DCGAN weight init.

The stage helpers return flat *lists* of layers rather than nested modules, so each model can
build one nn.Sequential whose indices (and state_dict keys) match the printed seed architectures.
"""

import math
from functools import partial

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ..config import IMAGE_SIZES


def n_stages(image_size):
    """Number of stride-2 stages between the 4x4 base and the image: 32 -> 3, 64 -> 4, 128 -> 5."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    return int(math.log2(image_size)) - 2


def widths(nf, image_size):
    """Channels at 4x4, 8x8, ..., S/2 x S/2, halving as resolution doubles.

    64 px, nf=64 gives [512, 256, 128, 64], the seed layout; each extra stage doubles the base.
    """
    n = n_stages(image_size)
    return [nf * 2 ** (n - 1 - i) for i in range(n)]


def require_cond(cfg, what):
    if cfg.cond_dim < 1:
        raise ValueError(f"{what} is conditional: cond_dim must be >= 1, got {cfg.cond_dim}")


def lrelu(slope):
    """Activation factory: one module per call site, so printed models read like the seeds."""
    return partial(nn.LeakyReLU, slope)


def sn(module, enabled=True):
    """Spectral norm (Miyato et al. 2018) when enabled. The parametrization API is used because it
    survives deepcopy (G_ema) and lets D be called twice before one backward (real and fake)."""
    return spectral_norm(module) if enabled else module


def norm2d(kind, channels, momentum=0.1):
    """'bn' BatchNorm, 'ln' per-sample LayerNorm over (C, H, W), 'in' InstanceNorm (per sample and
    channel), None nothing. Penalties on per-sample input gradients (WGAN-GP, DRAGAN) must not mix
    samples: their critics avoid 'bn'."""
    if kind is None:
        return []
    if kind == "bn":
        return [nn.BatchNorm2d(channels, momentum=momentum)]
    if kind == "ln":
        return [nn.GroupNorm(1, channels)]  # one group == LayerNorm over (C, H, W)
    if kind == "in":
        return [nn.InstanceNorm2d(channels, affine=True)]
    raise ValueError(f"unknown norm {kind!r}")


def up(cin, cout, norm="bn", act=nn.ReLU, spectral=False, bias=True, first=False, momentum=0.1):
    """ConvTranspose that doubles H, W (or 1x1 -> 4x4 when first), then norm and activation."""
    k, s, p = (4, 1, 0) if first else (4, 2, 1)
    conv = sn(nn.ConvTranspose2d(cin, cout, k, s, p, bias=bias), spectral)
    return [conv, *norm2d(norm, cout, momentum), act()]


def down(cin, cout, norm=None, act=lrelu(0.2), spectral=False, bias=True, momentum=0.1):
    """Conv 4/2/1 that halves H, W, then norm and activation."""
    conv = sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=bias), spectral)
    return [conv, *norm2d(norm, cout, momentum), act()]


def to_rgb(cin, spectral=False, bias=True):
    """Last generator stage: S/2 -> S, 3 channels squashed to [-1, 1] like the training images."""
    return [sn(nn.ConvTranspose2d(cin, 3, 4, 2, 1, bias=bias), spectral), nn.Tanh()]


def cond_embed(cond_dim, out_dim, act=nn.ReLU, spectral=False):
    """Linear + activation that turns the condition vector (one-hot, pair, rgb or multi-hot) into
    features; named `text_dense` in seed 000 and `embed_c` in seed 003."""
    return nn.Sequential(sn(nn.Linear(cond_dim, out_dim), spectral), act())


class SelfAttention(nn.Module):
    """SAGAN self-attention (seed 003's Self_Attn): every pixel attends to every other pixel.

    Written with explicit matmuls rather than scaled_dot_product_attention so that it stays twice
    differentiable (gradient penalties) on every backend; SAGAN uses no 1/sqrt(d) scaling.
    """

    def __init__(self, channels, spectral=True):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = sn(nn.Conv2d(channels, inner, 1), spectral)
        self.key = sn(nn.Conv2d(channels, inner, 1), spectral)
        self.value = sn(nn.Conv2d(channels, channels, 1), spectral)
        # gamma starts at 0: the block is the identity at first and the net learns how much
        # non-local evidence to mix in once local features are useful
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        B, C, H, W = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8), N = H*W
        k = self.key(x).flatten(2)  # (B, C/8, N)
        attn = torch.softmax(q @ k, dim=-1)  # (B, N, N): row i = where pixel i looks
        v = self.value(x).flatten(2)  # (B, C, N)
        out = (v @ attn.transpose(1, 2)).view(B, C, H, W)
        return x + self.gamma * out


def weights_init(m):
    """DCGAN init: conv weights N(0, 0.02), Batch/InstanceNorm scale N(1, 0.02), biases 0. Layers under
    spectral norm are skipped: SN rescales them itself and their weight is a computed tensor."""
    if parametrize.is_parametrized(m):
        return
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def init_pair(G, D):
    G.apply(weights_init)
    D.apply(weights_init)
    return G, D
