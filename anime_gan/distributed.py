"""Data-parallel training under torchrun, kept explicit.

Instead of wrapping G and D in DistributedDataParallel we average gradients by hand after each
backward: a GAN step runs D several times per backward (real, fake, gradient-penalty interpolates)
and takes double-backward through it, which DDP's hooks handle poorly.  One flat all-reduce per
network per step is exactly what DDP would send, and the same code path runs on one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist

from .config import check_device
from .errors import UserError


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            tdist.barrier()

    def average_gradients(self, module: torch.nn.Module) -> None:
        if self.world_size == 1:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        tdist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def average(self, t: torch.Tensor) -> torch.Tensor:
        """`t` averaged over every process (itself on one)."""
        if self.world_size == 1:
            return t
        t = t.clone()
        tdist.all_reduce(t)
        return t / self.world_size

    def gather(self, obj) -> list:
        """`obj` of every process, in rank order ([obj] on one); `obj` holds CPU tensors only."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool, device) -> bool:
        """True on every process when `flag` is True on any. A Ctrl-C reaches the ranks at
        different steps; a rank that stopped alone would leave the others waiting in an all-reduce."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def in_sync(self, *modules: torch.nn.Module) -> bool:
        """True when every process holds bit-identical parameters (checked at checkpoints)."""
        params = torch.cat([p.detach().reshape(-1).double() for m in modules for p in m.parameters()])
        fingerprint = torch.stack([params.sum(), (params * torch.arange(len(params), device=params.device,
                                                                        dtype=torch.float64)).sum()])
        gathered = [torch.zeros_like(fingerprint) for _ in range(self.world_size)]
        tdist.all_gather(gathered, fingerprint)
        return all(torch.equal(g, gathered[0]) for g in gathered)


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (no-op without it), over NCCL
    when --device `device` means this rank's GPU and over gloo when it means the CPU."""
    env = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    try:
        world = int(env["WORLD_SIZE"] or "1")
        if world == 1:
            return Dist()
        rank, local = int(env["RANK"]), int(env["LOCAL_RANK"] or "0")
        if not (0 <= rank < world and env["MASTER_ADDR"] and env["MASTER_PORT"]):
            raise ValueError
    except (TypeError, ValueError):  # a WORLD_SIZE left in the shell, not torchrun's full set
        shown = " ".join(f"{k}={v}" for k, v in env.items() if v is not None)
        raise UserError(f"the environment says {shown}, which is not a torchrun launch (it sets WORLD_SIZE, "
                        f"RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT); unset WORLD_SIZE, or start "
                        f"with torchrun --nproc_per_node N -m anime_gan train ...") from None
    check_device(device)
    if device.startswith("cuda:"):
        raise UserError(f"--device {device}: under torchrun each process trains on its own GPU (LOCAL_RANK); "
                        f"pass -d cuda, and choose the GPUs with CUDA_VISIBLE_DEVICES")
    if not tdist.is_initialized():
        backend = process_group_backend(device)
        if backend == "nccl":
            pick_device(device, local)  # a GPU for this rank, or one clear line; it becomes the current one
        tdist.init_process_group(backend)
    return Dist(rank, local, world)


def process_group_backend(device: str) -> str:
    """NCCL for GPUs; gloo for the CPU, even on a machine with GPUs (-d cpu there is a choice)."""
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if on_gpu else "gloo"


def cleanup() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def cpu_has_bf16() -> bool | None:
    """Whether this x86 CPU has bf16 instructions (AVX512_BF16 or AMX); None where /proc/cpuinfo
    does not say (another OS, or an ARM CPU, whose cpuinfo names its features otherwise)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """--device (auto, cpu, cuda, cuda:N) as a torch.device; under torchrun, cuda is this rank's GPU."""
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is visible to PyTorch on this machine; "
                            f"use --device cpu (or auto)")
        if local_rank is not None and name == "cuda":
            if local_rank >= torch.cuda.device_count():  # the user typed cuda, not cuda:N: name torchrun's part
                raise UserError(f"torchrun started more processes on this machine (LOCAL_RANK {local_rank}) than "
                                f"the {torch.cuda.device_count()} GPU(s) it shows; use --nproc_per_node "
                                f"{torch.cuda.device_count()} or fewer")
            name = f"cuda:{local_rank}"
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine shows {torch.cuda.device_count()} GPU(s), "
                            f"numbered from 0; choose one of them")
        # The chosen GPU becomes the current one: cudnn workspaces, graphs and compiled kernels
        # otherwise land on GPU 0 even when -d cuda:1 puts the tensors elsewhere.
        if device.index is not None:
            torch.cuda.set_device(device)
        return device
    return torch.device(name)


def free_memory(device: torch.device) -> int | None:
    """Bytes a new allocation can use on `device`: the GPU's free memory, or on the CPU what
    Linux reports as available, capped by the container's (cgroup v2) limit. None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return free
