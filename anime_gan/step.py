"""One training iteration as a function of its random inputs, and its CUDA-graph replay.

`draw` takes everything random an iteration needs (real batches, noise, fake labels) from the
run's seeded generator; `GanStep` / `VaeStep` then run a fixed sequence of kernels on those
fixed-shape tensors and return the losses, still on the device.  Keeping the two apart is what lets
`--cuda-graph` record the whole iteration (forward, backward and optimizer steps of D and G) once
and replay it, instead of launching several hundred small kernels one by one from Python.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from . import losses


@dataclass
class Draw:
    """The random inputs of one D update (x, y: a real batch; z, y_fake: what G draws, if any)."""
    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor | None = None
    y_fake: torch.Tensor | None = None

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.x, self.y, self.z, self.y_fake) if t is not None]


def draw(batches, fake_labels, gen: torch.Generator, z_dim: int, n: int, channels_last: bool,
         paired: bool = False) -> list[Draw]:
    """The inputs of one iteration: one Draw per critic step, each from the run's generator in a
    fixed order (batch, noise, fake labels). fake_labels=None: real batches only (the VAE).
    paired: the second half of the fake labels repeats the first (for losses.mode_seeking)."""
    out = []
    for _ in range(n):
        x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if fake_labels is None:
            out.append(Draw(x, y))
            continue
        b = x.shape[0]
        z = torch.randn(b, z_dim, device=x.device, generator=gen)
        y_fake = fake_labels(b // 2, gen).repeat(2, 1) if paired else fake_labels(b, gen)
        out.append(Draw(x, y, z, y_fake))
    return out


def backward_step(loss, opt, scaler, dist, *modules) -> None:
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    for m in modules:
        dist.average_gradients(m)  # one all-reduce per network per step (no-op on one process)
    scaler.step(opt)
    scaler.update()


def saved_bytes_per_image(G: torch.nn.Module, D: torch.nn.Module, z_dim: int, cond_dim: int,
                          image_size: int, d_passes: int = 2) -> int:
    """What autograd keeps per image for one G pass and `d_passes` D passes (real and fake): a lower
    bound on a training step's memory. Measured on batches of 2 and 4 so the weights cancel out;
    the networks run in eval mode on zeros, so no state changes (BatchNorm statistics, spectral-norm
    vectors, the random streams)."""
    device = next(G.parameters()).device

    def saved(fn) -> int:
        storages = {}

        def keep(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            fn()
        return sum(storages.values())

    def step_bytes(b: int) -> int:
        z, c = torch.zeros(b, z_dim, device=device), torch.zeros(b, cond_dim, device=device)
        x = torch.zeros(b, 3, image_size, image_size, device=device)
        return saved(lambda: G(z, c)) + d_passes * saved(lambda: D(x, c))

    modes = G.training, D.training
    G.eval(), D.eval()
    try:
        return max(0, (step_bytes(4) - step_bytes(2)) // 2)
    finally:
        G.train(modes[0]), D.train(modes[1])


@dataclass
class GanStep:
    """n_critic D updates, then one G update. Returns [(name, loss tensor)] for the accumulator."""
    G: torch.nn.Module
    D: torch.nn.Module
    g_fwd: Callable            # G or its compiled form
    d_fwd: Callable
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dist: object
    loss: str                  # bce | wgan | wgan-gp | hinge | dragan
    aux: str | None            # None | groups | multilabel (ACGAN family)
    aux_weight: float
    class_sizes: tuple
    cond: Callable             # multi-hot labels -> the G/D condition (--embed)
    autocast: object
    mode_seeking: float = 0.0  # weight of losses.mode_seeking (needs draw(..., paired=True))
    gp_weight: float = 10.0    # of the wgan-gp / dragan penalty

    def __call__(self, draws: list[Draw]) -> list[tuple[str, torch.Tensor]]:
        out = []
        # (1) Update D: maximise log D(x|c) + log(1 - D(G(z|c')|c')) (or the critic form)
        for i, d in enumerate(draws):
            last = i == len(draws) - 1
            # The last critic step's fakes keep their graph: the G step reuses them, as
            # pytorch/examples' DCGAN does, instead of running G twice as seed 001 does.
            with torch.set_grad_enabled(last), self.autocast:
                fake = self.g_fwd(d.z, self.cond(d.y_fake))
            with self.autocast:
                real_adv, real_cls = self.d_fwd(d.x, self.cond(d.y))
                fake_adv, _ = self.d_fwd(fake.detach(), self.cond(d.y_fake))
                d_loss = losses.d_loss(self.loss, real_adv.float(), fake_adv.float())
                if self.aux and real_cls is not None:
                    # Seed 001: D learns classes from real images only; fakes would confuse it.
                    cls_loss = losses.class_loss(self.aux, real_cls.float(), d.y, self.class_sizes)
                    d_loss = d_loss + self.aux_weight * cls_loss
                    out.append(("d_cls", cls_loss))
            if self.loss == "wgan-gp":
                d_loss = d_loss + losses.gradient_penalty(self.D, d.x, fake.detach().float(), self.cond(d.y),
                                                          self.gp_weight)
            elif self.loss == "dragan":
                d_loss = d_loss + losses.dragan_penalty(self.D, d.x, self.cond(d.y), self.gp_weight)
            backward_step(d_loss, self.opt_D, self.scaler, self.dist, self.D)
            if self.loss == "wgan":
                losses.clip_weights(self.D)
            out.append(("d_loss", d_loss))
        # (2) Update G: make D believe G(z|c) is real and of class c
        last = draws[-1]
        self.D.requires_grad_(False)  # G's loss needs no D gradients
        try:
            with self.autocast:
                fake_adv, fake_cls = self.d_fwd(fake, self.cond(last.y_fake))
                g_loss = losses.g_loss(self.loss, fake_adv.float())
                if self.aux and fake_cls is not None:
                    cls_loss = losses.class_loss(self.aux, fake_cls.float(), last.y_fake, self.class_sizes)
                    g_loss = g_loss + self.aux_weight * cls_loss
                    out.append(("g_cls", cls_loss))
            if self.mode_seeking:
                ms_loss = losses.mode_seeking(fake.float(), last.z)
                g_loss = g_loss + self.mode_seeking * ms_loss
                out.append(("g_ms", ms_loss))
            backward_step(g_loss, self.opt_G, self.scaler, self.dist, self.G)
        finally:
            self.D.requires_grad_(True)
        out.append(("g_loss", g_loss))
        return out


@dataclass
class VaeStep:
    """cvae: one reconstruction + KL update of decoder (G) and encoder (E) with one optimizer."""
    G: torch.nn.Module
    E: torch.nn.Module
    g_fwd: Callable  # G and E themselves, or their torch.compile'd forward (--compile)
    e_fwd: Callable
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dist: object
    cond: Callable
    autocast: object

    def __call__(self, draws: list[Draw]) -> list[tuple[str, torch.Tensor]]:
        x, y = draws[0].x, draws[0].y
        with self.autocast:
            mu, logvar = self.e_fwd(x, self.cond(y))
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            recon = self.g_fwd(z, self.cond(y))
            loss, mse, kl = losses.vae_loss(recon.float(), x, mu.float(), logvar.float())
        backward_step(loss, self.opt, self.scaler, self.dist, self.G, self.E)
        return [("g_loss", loss), ("mse", mse), ("kl", kl)]


class CudaGraphStep:
    """Records a step once and replays it (`--cuda-graph`).

    The first WARMUP calls run eagerly on a side stream, as PyTorch's CUDA-graph notes ask: cuDNN
    picks its algorithms and the optimizers create their state.  The next call records the step
    into a graph, with static copies of its inputs, and every call after that copies the new inputs
    in and replays.  Recording runs nothing, so the recorded call is replayed at once.  If
    recording fails, the run says so once and continues eagerly: same trajectory, just slower.
    Needs optimizers built with capturable=True, one process, fp32 or bf16 (train checks this).
    """

    WARMUP = 3

    def __init__(self, step: Callable, optimizers, log):
        self.step, self.optimizers, self.log = step, optimizers, log
        self.calls, self.graph, self.failed = 0, None, False
        self.static_in: list[Draw] = []
        self.static_out: list[tuple[str, torch.Tensor]] = []

    def __call__(self, draws: list[Draw]):
        self.calls += 1
        if self.failed:
            return self._eager(draws)
        if self.graph is None:
            if self.calls <= self.WARMUP:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    out = self._eager(draws)
                torch.cuda.current_stream().wait_stream(side)
                return out
            if not self._record(draws):
                return self._eager(draws)
        for static, new in zip(self.static_in, draws):
            for s, t in zip(static.tensors(), new.tensors()):
                s.copy_(t)
        self.graph.replay()
        return self.static_out

    def _eager(self, draws: list[Draw]):
        with warnings.catch_warnings():
            # capturable optimizers warn when they step outside a graph; here that is intended
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            return self.step(draws)

    def _record(self, draws: list[Draw]) -> bool:
        self.static_in = [Draw(*(None if t is None else t.clone() for t in (d.x, d.y, d.z, d.y_fake)))
                          for d in draws]
        for opt in self.optimizers:
            # Gradients allocated while recording come from the graph's own memory pool.
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.static_out = self.step(self.static_in)
        except Exception as e:  # an op in this model/torch build that cannot be recorded
            torch.cuda.synchronize()
            self.failed = True
            self.log(f"--cuda-graph: this step cannot be recorded here ({type(e).__name__}: "
                     f"{str(e).splitlines()[0][:120] if str(e) else ''}); continuing without it")
            return False
        self.graph = graph
        return True
