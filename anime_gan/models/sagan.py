"""SAGAN (Zhang et al. 2019) as seed 003 used it: the wgan-gp networks with spectral norm on every
conv and linear layer of G and D, plus self-attention on two mid-size feature maps.

Conditioning: G concatenates the embedded c to z; D sees c as a fourth image plane (seed 003's
critic). Both accept one-hot, pair, rgb or multi-hot c. Trained with the hinge loss.
G keeps its BatchNorm (as SAGAN does); D has none.
"""

from . import dcgan, wgan
from .blocks import init_pair


def attention_resolutions(image_size):
    """Feature maps that get self-attention: 16x16 and 32x32 for 64 and 128 px, 8 and 16 for 32 px.
    Capped at 32x32 because the attention matrix grows with (H*W)^2."""
    hi = min(image_size // 2, 32)
    return (hi // 2, hi)


def build(cfg):
    res = attention_resolutions(cfg.image_size)
    G = dcgan.Generator(cfg, conditional=True, embed_dim=wgan.EMBED, spectral=True, attn_res=res)
    D = wgan.Critic(cfg, spectral=True, attn_res=res)
    return init_pair(G, D)  # init touches only G's BatchNorm; SN layers keep PyTorch's init
