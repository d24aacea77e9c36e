"""GAN, classification and VAE losses as plain functions.

Discriminators return raw logits. Where the seeds print Sigmoid + BCELoss or LogSoftmax + NLLLoss
we use binary_cross_entropy_with_logits / cross_entropy: mathematically the same losses, but
numerically stable (no log(0)) and safe under autocast.

Randomness (penalty interpolation, DRAGAN perturbation) comes from torch's global RNG, or from an
explicit `generator` on the tensors' device, so a seeded run is repeatable.
"""

import torch
import torch.nn.functional as F
from torch import autograd

WGAN_CLIP = 0.01  # seed 000 / WGAN paper: clamp every critic parameter to [-c, c] after each D step

_BCE = ("bce", "dragan")
_WASSERSTEIN = ("wgan", "wgan-gp")


def d_loss(kind, real_adv, fake_adv):
    """Discriminator / critic loss on raw outputs of shape (B,)."""
    if kind in _BCE:
        real = F.binary_cross_entropy_with_logits(real_adv, torch.ones_like(real_adv))
        fake = F.binary_cross_entropy_with_logits(fake_adv, torch.zeros_like(fake_adv))
        # bce: averaged, as seed 001 does, so it reads on the same scale as g_loss. dragan: summed, as
        # its reference does, so that --gp weighs the penalty against the same term
        return (real + fake) / 2 if kind == "bce" else real + fake
    if kind in _WASSERSTEIN:
        return fake_adv.mean() - real_adv.mean()
    if kind == "hinge":
        return F.relu(1 - real_adv).mean() + F.relu(1 + fake_adv).mean()
    raise ValueError(f"no adversarial loss for {kind!r}")


def g_loss(kind, fake_adv):
    """Generator loss; for BCE the non-saturating form -log D(G(z))."""
    if kind in _BCE:
        return F.binary_cross_entropy_with_logits(fake_adv, torch.ones_like(fake_adv))
    if kind in _WASSERSTEIN or kind == "hinge":
        return -fake_adv.mean()
    raise ValueError(f"no adversarial loss for {kind!r}")


def class_loss(aux, logits, target_multi_hot, class_sizes):
    """ACGAN auxiliary loss. 'groups': one cross-entropy per one-of-N group (hair, eyes), summed;
    'multilabel': sigmoid BCE over every class. target is (B, n_cls) with 1 for each true class."""
    target = target_multi_hot.to(logits.dtype)
    if aux == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, target)
    if aux == "groups":
        if sum(class_sizes) != logits.shape[1]:
            raise ValueError(f"class_sizes {class_sizes} do not add up to {logits.shape[1]} logits "
                             "(multi-label schemas need aux 'multilabel': see models.aux_kind)")
        loss, start = 0.0, 0
        for n in class_sizes:
            group = slice(start, start + n)
            loss = loss + F.cross_entropy(logits[:, group], target[:, group].argmax(1))
            start += n
        return loss
    raise ValueError(f"unknown auxiliary loss {aux!r}")


def mode_seeking(fake, z):
    """MSGAN (Mao et al. 2019) against conditional mode collapse. The batch holds pairs that share
    their labels, rows i and i + B/2; returns 1 / (mean |x_i - x_j| / mean |z_i - z_j| + eps), which
    G minimises: two noise vectors must not give one image."""
    half = fake.shape[0] // 2
    image_gap = (fake[:half] - fake[half:2 * half]).abs().mean()
    noise_gap = (z[:half] - z[half:2 * half]).abs().mean()
    return 1 / (image_gap / noise_gap + 1e-5)


def _uniform(shape, like, generator):
    return torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)


def _penalty(D, x, c, weight):
    """weight * E[(||grad_x D(x, c)|| - 1)^2], kept in the graph so D can be trained on it."""
    x = x.detach().requires_grad_(True)
    adv, _ = D(x, c)
    (grad,) = autograd.grad(adv.sum(), x, create_graph=True)  # samples are independent: sum is fine
    norm = grad.flatten(1).pow(2).sum(1).add(1e-12).sqrt()  # epsilon keeps sqrt differentiable at 0
    return weight * (norm - 1).pow(2).mean()


def gradient_penalty(D, real, fake, c, weight=10.0, generator=None):
    """WGAN-GP (Gulrajani et al. 2017) on random points between real and fake images.
    D must not contain BatchNorm: it would mix the samples whose gradients are penalised."""
    alpha = _uniform((real.shape[0], 1, 1, 1), real, generator)  # one mixing weight per sample
    x = alpha * real.detach() + (1 - alpha) * fake.detach()
    return _penalty(D, x, c, weight)


def dragan_penalty(D, real, c, weight=10.0, generator=None):
    """DRAGAN (Kodali et al. 2017): the same penalty around the real data, on points between x and
    x + 0.5 * std(x) * U[0, 1] noise."""
    real = real.detach()
    noise = _uniform(real.shape, real, generator)
    perturbed = real + 0.5 * real.std() * noise
    alpha = _uniform((real.shape[0], 1, 1, 1), real, generator)  # one mixing weight per sample
    return _penalty(D, real + alpha * (perturbed - real), c, weight)


@torch.no_grad()
def clip_weights(module, value=WGAN_CLIP):
    """WGAN weight clipping: call on the critic after every optimiser step."""
    for p in module.parameters():
        p.clamp_(-value, value)


def vae_loss(recon, x, mu, logvar):
    """(total, mse, kl), each summed over a sample's pixels / latent dims and averaged over the
    batch, so the two terms keep their ELBO balance whatever the image size."""
    mse = (recon - x).pow(2).flatten(1).sum(1).mean()
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()
    return mse + kl, mse, kl
