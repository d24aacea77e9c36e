"""Model zoo and losses: shapes for every preset and size, the seed 000 layout, one training step
per preset, and loss values worked out by hand. Tiny widths (nf=8) keep it fast on CPU."""

import copy
import math

import pytest
import torch
from torch import nn

from anime_gan import losses
from anime_gan.models import PRESETS, ModelConfig, aux_kind, build, count_parameters
from anime_gan.models.blocks import SelfAttention, weights_init
from anime_gan.models.cvae import reparameterize

B = 4


def anime_cond(batch=B, sizes=(12, 10)):
    """Random one-of-N per group, concatenated: the 22-dim hair/eye condition."""
    parts = [nn.functional.one_hot(torch.randint(n, (batch,)), n) for n in sizes]
    return torch.cat(parts, 1).float()


def clevr_cond(batch=B, n=24):
    c = (torch.rand(batch, n) < 0.15).float()
    c[:, 0] = 1  # at least one object
    return c


def cls_width(cfg):
    return cfg.multi_label or sum(cfg.class_sizes)


def check_pair(name, cfg, c):
    G, D = build(name, cfg)
    S = cfg.image_size
    z = torch.randn(len(c), cfg.z_dim)
    x = G(z, c)
    assert x.shape == (len(c), 3, S, S)
    assert x.min() >= -1 and x.max() <= 1
    assert G.z_dim == cfg.z_dim
    if name == "cvae":
        mu, logvar = D(x, c)
        assert mu.shape == logvar.shape == (len(c), cfg.z_dim)
        return
    adv, cls = D(x, c)
    assert adv.shape == (len(c),)
    if aux_kind(name, cfg) is None:
        assert cls is None
    else:
        assert cls.shape == (len(c), cls_width(cfg))


# -- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", list(PRESETS))
def test_shapes(name, size):
    check_pair(name, ModelConfig(nf=8, image_size=size), anime_cond())


@pytest.mark.parametrize("name", ["cgan", "sagan", "acgan-dcgan", "cvae"])
def test_shapes_128(name):
    check_pair(name, ModelConfig(nf=4, z_dim=16, image_size=128), anime_cond(batch=2))


@pytest.mark.parametrize(
    "name", ["cgan", "wgan-gp", "sagan", "projection", "acgan", "acgan-dcgan", "dragan"]
)
def test_multi_label_conditions(name):
    cfg = ModelConfig(nf=8, image_size=32, cond_dim=24, class_sizes=(), multi_label=24)
    check_pair(name, cfg, clevr_cond())


def test_unconditional_g_ignores_c():
    G, D = build("dcgan", ModelConfig(nf=8, image_size=32))
    assert G.cond_dim == 0
    z = torch.randn(B, 100)
    G.eval()
    assert torch.equal(G(z, torch.zeros(B, 0)), G(z, anime_cond()))
    assert D(G(z, None), None)[0].shape == (B,)


# -- seed 000 layout -----------------------------------------------------------------------------


def test_cgan_matches_seed_000():
    G, D = build("cgan", ModelConfig())  # cond_dim 22, nf 64, 64 px
    assert count_parameters(G) == 5_688_387  # printed by the seed
    assert count_parameters(D) == 7_354_305  # the seed's layout without its parameter-free Sigmoid
    assert G.cat_dense.in_features == 356 and G.cat_dense.out_features == 8192
    assert [type(m).__name__ for m in G.conv][:3] == ["BatchNorm2d", "LeakyReLU", "ConvTranspose2d"]
    assert G.conv[0].momentum == 0.9 and isinstance(G.conv[12], nn.Tanh)
    assert D.text_dense[0].in_features == 22 and D.text_dense[0].out_features == 256
    assert D.conv1[8].out_channels == 512
    assert D.conv2[0].in_channels == 768 and D.conv2[0].kernel_size == (1, 1)
    assert D.out_dense[0].in_features == 8192 and D.out_dense[-1].out_features == 1
    # raw logits: no Sigmoid / LogSoftmax anywhere, the losses apply them
    for name in PRESETS:
        _, D = build(name, ModelConfig(nf=8, image_size=32))
        assert not any(isinstance(m, (nn.Sigmoid, nn.LogSoftmax)) for m in D.modules())


def test_acgan_heads():
    _, D = build("acgan", ModelConfig(nf=8))
    assert [h[-1].out_features for h in D.class_heads] == [12, 10]
    assert D.real_dense[0].in_features == 64 * 4 * 4
    _, D = build("acgan-sn", ModelConfig(nf=8))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


def test_widths_scale_with_size():
    G, _ = build("cgan", ModelConfig(nf=64, image_size=32))
    assert G.cat_dense.out_features == 256 * 16  # one stage fewer: 256 channels at 4x4
    G, _ = build("cgan", ModelConfig(nf=16, image_size=128))
    assert G.cat_dense.out_features == 256 * 16  # one stage more: nf * 16 at 4x4


def test_bad_configs():
    with pytest.raises(ValueError, match="unknown model"):
        build("stylegan", ModelConfig())
    with pytest.raises(ValueError, match="image_size"):
        build("cgan", ModelConfig(image_size=48))
    with pytest.raises(ValueError, match="cond_dim"):
        build("cgan", ModelConfig(cond_dim=0))
    build("dcgan", ModelConfig(cond_dim=0, nf=8))  # unconditional is fine


def test_weights_init():
    G, D = build("dcgan", ModelConfig(nf=16))
    w = G.main[3].weight
    assert abs(w.std().item() - 0.02) < 0.002
    bn = G.main[1].weight
    assert abs(bn.mean().item() - 1) < 0.01
    _, D = build("sagan", ModelConfig(nf=8, image_size=32))
    assert any(isinstance(m, SelfAttention) for m in D.modules())
    conv = D.main[0]
    before = conv.parametrizations.weight.original.clone()
    conv.apply(weights_init)  # spectral-normed layers are left alone
    assert torch.equal(before, conv.parametrizations.weight.original)


def test_spectral_norm_models_deepcopy_and_reload():
    G, D = build("sagan", ModelConfig(nf=8, image_size=32))
    G2 = copy.deepcopy(G)  # the trainer's G_ema
    G2.load_state_dict(G.state_dict())
    G.eval(), G2.eval()
    z, c = torch.randn(2, 100), anime_cond(2)
    assert torch.allclose(G(z, c), G2(z, c))


# -- one step per preset -------------------------------------------------------------------------


def changed(before, module):
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


@pytest.mark.parametrize("name", list(PRESETS))
def test_one_step(name):
    torch.manual_seed(0)
    cfg = ModelConfig(nf=8, image_size=32, z_dim=16)
    p = PRESETS[name]
    G, D = build(name, cfg)
    opt = torch.optim.RMSprop if p.optimizer == "rmsprop" else torch.optim.Adam
    kw = {} if p.optimizer == "rmsprop" else {"betas": p.betas}
    opt_g, opt_d = opt(G.parameters(), lr=p.glr, **kw), opt(D.parameters(), lr=p.dlr, **kw)
    real, c = torch.rand(B, 3, 32, 32) * 2 - 1, anime_cond()
    g_before, d_before = [t.clone() for t in G.parameters()], [t.clone() for t in D.parameters()]

    if p.loss == "vae":
        mu, logvar = D(real, c)
        total, mse, kl = losses.vae_loss(G(reparameterize(mu, logvar), c), real, mu, logvar)
        opt_g.zero_grad(), opt_d.zero_grad()
        total.backward()
        opt_g.step(), opt_d.step()
        assert all(torch.isfinite(t) for t in (total, mse, kl))
        assert changed(g_before, G) and changed(d_before, D)
        return

    aux = aux_kind(name, cfg)
    # (1) D step
    fake = G(torch.randn(B, cfg.z_dim), c)
    real_adv, real_cls = D(real, c)
    fake_adv, _ = D(fake.detach(), c)
    loss_d = losses.d_loss(p.loss, real_adv, fake_adv)
    if p.loss == "wgan-gp":
        loss_d = loss_d + losses.gradient_penalty(D, real, fake, c)
    if p.loss == "dragan":
        loss_d = loss_d + losses.dragan_penalty(D, real, c)
    if aux:
        loss_d = loss_d + losses.class_loss(aux, real_cls, c, cfg.class_sizes)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    if p.loss == "wgan":
        losses.clip_weights(D)
        assert all(t.abs().max() <= losses.WGAN_CLIP for t in D.parameters())
    # (2) G step
    fake_adv, fake_cls = D(fake, c)
    loss_g = losses.g_loss(p.loss, fake_adv)
    if aux:
        loss_g = loss_g + losses.class_loss(aux, fake_cls, c, cfg.class_sizes)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()

    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    assert changed(d_before, D) and changed(g_before, G)


# -- losses --------------------------------------------------------------------------------------


def test_adversarial_losses_by_hand():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.5])
    # hinge: relu(1 - real) = [0.5, 0] -> 0.25; relu(1 + fake) = [0, 1.5] -> 0.75
    assert losses.d_loss("hinge", real, fake).item() == pytest.approx(1.0)
    assert losses.g_loss("hinge", fake).item() == pytest.approx(0.75)
    # wasserstein: mean(fake) - mean(real) = -0.75 - 1.25
    assert losses.d_loss("wgan", real, fake).item() == pytest.approx(-2.0)
    assert losses.d_loss("wgan-gp", real, fake).item() == pytest.approx(-2.0)
    assert losses.g_loss("wgan", fake).item() == pytest.approx(0.75)
    # bce at logit 0 is log 2 for either target; the D loss averages real and fake
    zero = torch.zeros(3)
    assert losses.d_loss("bce", zero, zero).item() == pytest.approx(math.log(2))
    assert losses.g_loss("bce", zero).item() == pytest.approx(math.log(2))
    # a confident, correct D: real logit 10, fake logit -10 -> softplus(-10) each, averaged for bce
    confident = torch.full((2,), 10.0), torch.full((2,), -10.0)
    assert losses.d_loss("bce", *confident).item() == pytest.approx(math.log1p(math.exp(-10)), rel=1e-2)
    # and summed for dragan, as its reference does, so the penalty weighs --gp (10) against the sum
    assert losses.d_loss("dragan", *confident).item() == pytest.approx(2 * math.log1p(math.exp(-10)), rel=1e-2)
    assert losses.d_loss("dragan", zero, zero).item() == pytest.approx(2 * math.log(2))
    with pytest.raises(ValueError):
        losses.d_loss("vae", zero, zero)


def test_class_losses_by_hand():
    target = anime_cond(batch=3)
    logits = torch.zeros(3, 22)
    # uniform logits: cross-entropy log(12) for hair plus log(10) for eyes
    groups = losses.class_loss("groups", logits, target, (12, 10))
    assert groups.item() == pytest.approx(math.log(12) + math.log(10))
    multi = losses.class_loss("multilabel", logits, target, (12, 10))
    assert multi.item() == pytest.approx(math.log(2))
    # a sure, correct classifier costs ~0
    sure = (target * 2 - 1) * 50
    assert losses.class_loss("groups", sure, target, (12, 10)).item() < 1e-6
    assert losses.class_loss("multilabel", sure, target, (12, 10)).item() < 1e-6


class LinearCritic(nn.Module):
    """D(x) = sum(a * x): its input gradient is a everywhere, so ||grad|| = ||a||."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, x, c=None):
        return (x * self.a).flatten(1).sum(1), None


@pytest.mark.parametrize("norm_a", [0.0, 0.5, 3.0])
def test_penalties_on_linear_critic(norm_a):
    a = torch.randn(3, 4, 4)
    a = a / a.norm() * norm_a
    D = LinearCritic(a)
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    expected = 10.0 * (norm_a - 1) ** 2
    gp = losses.gradient_penalty(D, real, fake, None)
    assert gp.item() == pytest.approx(expected, abs=1e-4)
    assert losses.dragan_penalty(D, real, None).item() == pytest.approx(expected, abs=1e-4)
    gp.backward()  # the penalty trains D: d/da of 10 (|a| - 1)^2 = 20 (|a| - 1) a / |a|
    if norm_a:
        assert torch.allclose(D.a.grad, 20 * (norm_a - 1) * a / norm_a, atol=1e-4)


def test_penalties_follow_the_global_seed():
    D = build("wgan-gp", ModelConfig(nf=8, image_size=32))[1]
    real, fake, c = torch.rand(B, 3, 32, 32), torch.rand(B, 3, 32, 32), anime_cond()
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append((losses.gradient_penalty(D, real, fake, c), losses.dragan_penalty(D, real, c)))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_vae_loss_by_hand():
    x = torch.rand(2, 3, 4, 4)
    mu, logvar = torch.zeros(2, 5), torch.zeros(2, 5)
    total, mse, kl = losses.vae_loss(x, x, mu, logvar)
    assert total.item() == mse.item() == kl.item() == 0
    # recon off by 0.5 everywhere: 48 pixels * 0.25 per sample; mu = 1 in 5 dims: KL 0.5 each
    total, mse, kl = losses.vae_loss(x + 0.5, x, torch.ones(2, 5), logvar)
    assert mse.item() == pytest.approx(12.0) and kl.item() == pytest.approx(2.5)
    assert total.item() == pytest.approx(14.5)


@pytest.mark.parametrize("name", list(PRESETS))
def test_d_nf_widens_d_alone(name):
    """--d-nf (seed 003's d-conv-dim): D as if built with that --nf, G as with --nf."""
    G, D = build(name, ModelConfig(nf=8, d_nf=16, image_size=32))
    G_narrow, _ = build(name, ModelConfig(nf=8, image_size=32))
    _, D_wide = build(name, ModelConfig(nf=16, image_size=32))
    assert count_parameters(G) == count_parameters(G_narrow)
    assert count_parameters(D) == count_parameters(D_wide)
