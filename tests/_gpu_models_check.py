# temporary device check for the model zoo (deleted after the run)
import contextlib
import sys
import time

import torch

from anime_gan import losses
from anime_gan.models import PRESETS, ModelConfig, aux_kind, build, count_parameters
from anime_gan.models.cvae import reparameterize

dev = "cuda"
torch.backends.cudnn.benchmark = True
print(torch.__version__, torch.cuda.get_device_name(), flush=True)


def cond(B, sizes=(12, 10)):
    parts = [torch.nn.functional.one_hot(torch.randint(n, (B,), device=dev), n) for n in sizes]
    return torch.cat(parts, 1).float()


def step(name, cfg, G, D, og, od, real, c, amp):
    p = PRESETS[name]
    aux = aux_kind(name, cfg)
    ctx = torch.autocast("cuda", dtype=amp) if amp else contextlib.nullcontext()
    if p.loss == "vae":
        with ctx:
            mu, lv = D(real, c)
            rec = G(reparameterize(mu.float(), lv.float()), c)
        total, _, _ = losses.vae_loss(rec.float(), real, mu.float(), lv.float())
        og.zero_grad(), od.zero_grad()
        total.backward()
        og.step(), od.step()
        return total, total
    B = real.shape[0]
    with ctx:
        fake = G(torch.randn(B, cfg.z_dim, device=dev), c)
        ra, rc = D(real, c)
        fa, _ = D(fake.detach(), c)
        ld = losses.d_loss(p.loss, ra.float(), fa.float())
        if p.loss == "wgan-gp":
            ld = ld + losses.gradient_penalty(D, real, fake, c)
        if p.loss == "dragan":
            ld = ld + losses.dragan_penalty(D, real, c)
        if aux:
            ld = ld + losses.class_loss(aux, rc.float(), c, cfg.class_sizes)
    od.zero_grad()
    ld.backward()
    od.step()
    if p.loss == "wgan":
        losses.clip_weights(D)
    with ctx:
        fa, fc = D(fake, c)
        lg = losses.g_loss(p.loss, fa.float())
        if aux:
            lg = lg + losses.class_loss(aux, fc.float(), c, cfg.class_sizes)
    og.zero_grad()
    lg.backward()
    og.step()
    return ld, lg


def bench(name, cfg, B, amp, compile_=False, iters=10):
    torch.manual_seed(0)
    G, D = build(name, cfg)
    G, D = G.to(dev), D.to(dev)
    if compile_:
        G, D = torch.compile(G), torch.compile(D)
    p = PRESETS[name]
    og = torch.optim.Adam(G.parameters(), lr=p.glr, betas=p.betas)
    od = torch.optim.Adam(D.parameters(), lr=p.dlr, betas=p.betas)
    real = torch.rand(B, 3, cfg.image_size, cfg.image_size, device=dev) * 2 - 1
    c = cond(B)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(3):
        ld, lg = step(name, cfg, G, D, og, od, real, c, amp)
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(iters):
        ld, lg = step(name, cfg, G, D, og, od, real, c, amp)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / iters * 1000
    ok = bool(torch.isfinite(ld) and torch.isfinite(lg))
    mem = torch.cuda.max_memory_allocated() / 2**30
    tag = f"{name:12s} S={cfg.image_size:3d} B={B} amp={str(amp):15s} compile={compile_}"
    print(f"{tag} finite={ok} {ms:7.1f} ms/step warm={warm:5.1f}s peak={mem:5.2f}GiB "
          f"G={count_parameters(G)} D={count_parameters(D)}", flush=True)


cfg = ModelConfig()
for name in PRESETS:
    for amp in (None, torch.bfloat16):
        try:
            bench(name, cfg, 64, amp)
        except Exception as e:  # noqa: BLE001
            print(name, amp, "FAILED", type(e).__name__, str(e)[:300], flush=True)
for name in ("sagan", "cgan", "projection"):
    try:
        bench(name, ModelConfig(image_size=128), 64, torch.bfloat16, iters=5)
    except Exception as e:  # noqa: BLE001
        print(name, 128, "FAILED", type(e).__name__, str(e)[:300], flush=True)
# determinism of penalties on the GPU
D = build("wgan-gp", cfg)[1].to(dev)
r, f, c = torch.rand(8, 3, 64, 64, device=dev), torch.rand(8, 3, 64, 64, device=dev), cond(8)
vals = []
for _ in range(2):
    torch.manual_seed(3)
    vals.append((losses.gradient_penalty(D, r, f, c).item(), losses.dragan_penalty(D, r, c).item()))
print("penalty determinism", vals[0] == vals[1], vals[0], flush=True)
if "--compile" in sys.argv:
    for name in ("sagan", "cgan", "wgan-gp"):
        try:
            bench(name, cfg, 64, torch.bfloat16, compile_=True)
        except Exception as e:  # noqa: BLE001
            print(name, "compile FAILED", type(e).__name__, str(e)[:400], flush=True)
