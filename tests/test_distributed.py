"""Two CPU processes with gloo under torchrun: same weights on both ranks, one writer."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anime_gan import checkpoint
from anime_gan.cli import main
from conftest import one_line_error


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_cpu_ranks(tmp_path, model: str, steps: int, check: int | None = None) -> tuple[list[str], dict, Path]:
    """torchrun's command for 2 gloo ranks training `model` on 32 tiny faces into <tmp>/c/r, its env, its data."""
    data = tmp_path / "data"
    assert main(["prepare", "--synthetic", "32", "-o", str(data), "--image-size", "32", "-q"]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), "-m", "anime_gan", "train", "-t", str(data),
           "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "--name", "r", "--model", model,
           "--nf", "8", "-b", "4", "--image-size", "32", "-i", str(steps), "--check", str(check or steps),
           "--sample", str(steps), "--log-every", "1", "-d", "cpu"]
    return cmd, {**os.environ, "OMP_NUM_THREADS": "1"}, data


def test_torchrun_two_cpu_ranks(tmp_path, capsys):
    cmd, env, data = _two_cpu_ranks(tmp_path, "wgan-gp", 4, check=2)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "c" / "r"
    # Rank 0 alone wrote: one G/D pair per snapshot and one stats line per step (not two).
    assert checkpoint.resumable_steps(run) == [2, 4]
    assert len((run / "stats.jsonl").read_text().splitlines()) == 4
    trainer = checkpoint.load(run / "D_4.ckpt", "trainer")
    assert trainer["world_size"] == 2  # the in-sync check ran across both ranks before saving
    assert "batch 4 x 2 = 8 global" in done.stderr
    assert done.stdout.split() == [str(run)]  # the run's folder, named once, not once per rank
    # Both ranks resume step 2 into a branch in a new folder (only the main rank writes there, after
    # making it). Each rank continues its own saved draws (batches, noise, the penalty's points), so
    # the branch's step 4 is the uninterrupted run's, bit for bit.
    new = {"r": "branch", str(tmp_path / "c"): str(tmp_path / "c2")}
    branch_cmd = [new.get(a, a) for a in cmd] + ["--resume", str(run / "G_2.ckpt")]
    done = subprocess.run(branch_cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    branch = tmp_path / "c2" / "branch"
    assert checkpoint.resumable_steps(branch) == [4]
    for name, key, kind in (("G_4.ckpt", "G", "generator"), ("D_4.ckpt", "D", "trainer")):
        resumed, straight = (checkpoint.load(folder / name, kind)[key] for folder in (branch, run))
        assert all(torch.equal(resumed[k], straight[k]) for k in straight), name

    def losses(folder):  # (the mean over both ranks; img_per_s is a timing)
        return [{k: v for k, v in json.loads(l).items() if k != "img_per_s"}
                for l in (folder / "stats.jsonl").read_text().splitlines()]
    assert losses(branch) == losses(run)
    # Unwrapped state_dicts: the checkpoint loads and resumes in a single process.
    G, *_ = checkpoint.load_generator(run)
    assert G(torch.randn(1, 100), torch.zeros(1, 22)).shape == (1, 3, 32, 32)
    capsys.readouterr()
    assert main(["train", "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "--name", "r",
                 "--model", "wgan-gp", "--nf", "8", "-b", "4", "--image-size", "32", "-i", "5", "--check", "5",
                 "--resume"]) == 0
    assert checkpoint.resumable_steps(run) == [4, 5]
    assert ("note: G_4.ckpt was trained by 2 processes (batch 4 x 2 = 8 global); this run has 1 (batch 4 x 1 "
            "= 4 global), so it continues rank 0's random streams") in capsys.readouterr().err


def _sync_worker(rank, world, store, same, results):
    import torch.distributed as tdist

    from anime_gan.distributed import Dist
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0 if same else rank)
    net = torch.nn.Linear(4, 3)
    results[rank] = Dist(rank, rank, world).in_sync(net)
    tdist.destroy_process_group()


def test_in_sync_detects_ranks_that_drifted_apart(tmp_path):
    import torch.multiprocessing as mp
    for same in (True, False):
        results = mp.Manager().dict()
        mp.spawn(_sync_worker, args=(2, tmp_path / f"store_{same}", same, results), nprocs=2)
        assert dict(results) == {0: same, 1: same}


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2"}, {"WORLD_SIZE": "abc"},
                                 {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}])
def test_a_stray_world_size_is_one_line(cli, tmp_path, monkeypatch, env):
    """WORLD_SIZE left in a shell (no torchrun) names the variables and the fix, instead of a traceback."""
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    one_line_error(cli("train", "-t", tmp_path / "data", "-s", tmp_path / "s", "-c", tmp_path / "c", "-i", "1"),
                   f"WORLD_SIZE={env['WORLD_SIZE']}", "unset WORLD_SIZE, or start with torchrun")
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


def _torchrun_env(monkeypatch, rank="0"):
    for key, value in {"WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)


def test_cuda_n_under_torchrun_is_refused_before_joining(cli, tmp_path, monkeypatch):
    """Each rank takes its LOCAL_RANK's GPU; a fixed cuda:1 would put every rank on one GPU."""
    _torchrun_env(monkeypatch)
    one_line_error(cli("train", "-t", tmp_path / "data", "-c", tmp_path / "c", "-d", "cuda:1", "-i", "1"),
                   "--device cuda:1", "pass -d cuda", "CUDA_VISIBLE_DEVICES")
    assert not (tmp_path / "c").exists()


def test_the_process_group_backend_follows_the_device_not_the_machine(monkeypatch):
    from anime_gan.distributed import process_group_backend
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    assert [process_group_backend(d) for d in ("cpu", "auto", "cuda")] == ["gloo", "nccl", "nccl"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert process_group_backend("auto") == "gloo"


def test_a_gpu_number_the_machine_lacks_is_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    one_line_error(cli("train", "-t", tmp_path / "data", "-c", tmp_path / "c", "-d", "cuda:2", "-i", "1"),
                   "--device cuda:2", "shows 2 GPU(s)")
    assert not (tmp_path / "c").exists()


def test_sync_bn_on_cpu_ranks_is_one_line(cli, tmp_path, monkeypatch, builtin_set):
    from anime_gan import distributed
    from anime_gan.distributed import Dist
    monkeypatch.setattr(distributed, "setup", lambda device="auto": Dist(0, 0, 2))  # as rank 0 of two
    one_line_error(cli("train", "-t", builtin_set, "-c", tmp_path / "c", "-s", tmp_path / "s", "-d", "cpu",
                       "--sync-bn", "-i", "1"), "--sync-bn needs CUDA GPUs", "drop it with -d cpu")
    assert not (tmp_path / "c").exists()


def test_ctrl_c_reaching_one_rank_stops_both_at_the_same_step(tmp_path):
    """A signal reaches the ranks at different steps (here: only rank 1); they agree, and rank 0 saves."""
    import signal
    import time
    cmd, env, _ = _two_cpu_ranks(tmp_path, "cgan", 100000)  # runs until stopped
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    stats, deadline = tmp_path / "c" / "r" / "stats.jsonl", time.time() + 120
    try:
        while not (stats.exists() and len(stats.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        ranks = {}
        for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
            env = dict(kv.split("=", 1) for kv in open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv)
            ranks[env.get("RANK")] = int(pid)
        os.kill(ranks["1"], signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers, whatever happened
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, err[-3000:]
    saved = checkpoint.resumable_steps(tmp_path / "c" / "r")
    assert len(saved) == 1 and saved[0] % 10 == 0 and f"stopped at step {saved[0]}" in err
    assert checkpoint.load(tmp_path / "c" / "r" / f"D_{saved[0]}.ckpt", "trainer")["world_size"] == 2


def _diverge_worker(rank, world, store, results):
    import torch.distributed as tdist

    from anime_gan.distributed import Dist
    from anime_gan.train import Diverged, _check_finite
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        _check_finite({"step": 7, "d_loss": float("nan") if rank == 1 else 0.5}, 7, store.parent / "no_run",
                      Dist(rank, rank, world), "cpu")
        results[rank] = "went on"
    except Diverged as e:
        results[rank] = str(e)
    tdist.destroy_process_group()


def test_a_divergence_on_one_rank_stops_every_rank(tmp_path):
    """Only rank 1's loss is NaN; rank 0 must stop too, or it would wait in the next all-reduce forever."""
    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    mp.spawn(_diverge_worker, args=(2, tmp_path / "store", results), nprocs=2)
    assert "diverged by step 7 (on another process)" in results[0]
    assert "diverged by step 7 (d_loss = nan)" in results[1]


def test_a_rank_whose_peer_died_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """A peer that stopped (bad input, a Ctrl-C before training) breaks this rank's next collective."""
    import torch.distributed as tdist

    from anime_gan import train as train_module

    def peer_gone(cfg):
        raise tdist.DistBackendError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:19865")
    monkeypatch.setattr(train_module, "train", peer_gone)
    assert main(["train", "-t", str(tmp_path / "data"), "-i", "1"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "lost contact with the other training processes" in err


def test_torchrun_on_cuda_without_a_gpu_is_one_line(cli, tmp_path, monkeypatch):
    _torchrun_env(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    one_line_error(cli("train", "-t", tmp_path / "data", "-c", tmp_path / "c", "-d", "cuda", "-i", "1"),
                   "--device cuda: no CUDA GPU is visible")
    assert not (tmp_path / "c").exists()


def test_gloo_losing_a_peer_is_one_line_too(tmp_path, monkeypatch, capsys):
    """gloo reports a dead peer as a plain RuntimeError."""
    from anime_gan import train as train_module

    def peer_gone(cfg):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [::1]:5")
    monkeypatch.setattr(train_module, "train", peer_gone)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError):  # outside torchrun the words mean nothing special: a bug, shown
        main(["train", "-t", str(tmp_path / "data"), "-i", "1"])
    monkeypatch.setenv("WORLD_SIZE", "2")  # train (stubbed here) would have joined the group
    assert main(["train", "-t", str(tmp_path / "data"), "-i", "1"]) == 1
    assert "lost contact with the other training processes" in capsys.readouterr().err


def _full_disk_worker(rank, world, store, ckpt_dir, results):
    import datetime
    import errno

    import torch.distributed as tdist

    from anime_gan.config import TrainConfig
    from anime_gan.distributed import Dist
    from anime_gan.errors import UserError
    from anime_gan.models import ModelConfig
    from anime_gan.train import _Accumulator
    # a short timeout: without the fix, rank 1 would wait at a barrier for rank 0 (the default is 30 min)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                             timeout=datetime.timedelta(seconds=30))

    def disk_full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")
    checkpoint.save = disk_full
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    state = checkpoint.TrainState(net, net, None, opt, opt, torch.amp.GradScaler("cuda", enabled=False),
                                  torch.Generator(), _Accumulator("cpu", Dist(rank, rank, world)))
    try:
        checkpoint.save_snapshot(ckpt_dir, 5, state, TrainConfig(), ModelConfig(cond_dim=0), None,
                                 Dist(rank, rank, world))
        results[rank] = "returned"
    except UserError as e:
        results[rank] = str(e)
    except RuntimeError as e:  # the collective timed out
        results[rank] = f"hung: {e}"[:200]
    tdist.destroy_process_group()


def test_a_checkpoint_the_main_rank_cannot_write_stops_every_rank(tmp_path):
    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    mp.spawn(_full_disk_worker, args=(2, tmp_path / "store", tmp_path, results), nprocs=2)
    assert "could not write the step-5 checkpoint (No space left on device)" in results[0]
    assert "the main process could not write the checkpoint" in results[1]


def test_a_numbered_gpu_becomes_the_current_one(monkeypatch):
    """cuDNN workspaces, CUDA graphs and compiled kernels follow the current GPU, not the tensors."""
    from anime_gan.distributed import pick_device
    from anime_gan.errors import UserError
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(str(d)))
    assert pick_device("cuda:1") == torch.device("cuda", 1) and current == ["cuda:1"]
    assert pick_device("cuda", local_rank=0) == torch.device("cuda", 0) and current == ["cuda:1", "cuda:0"]
    assert pick_device("cuda") == torch.device("cuda") and len(current) == 2  # the default GPU: left as it is
    # more torchrun processes than GPUs: the fix is torchrun's flag, not a cuda:N the user never typed
    with pytest.raises(UserError, match=r"more processes on this machine \(LOCAL_RANK 3\) than the 2 GPU\(s\) it "
                                        r"shows; use --nproc_per_node 2 or fewer"):
        pick_device("cuda", local_rank=3)


def _accumulator_worker(rank, world, store, results):
    import torch.distributed as tdist

    from anime_gan.distributed import Dist
    from anime_gan.train import _Accumulator
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    acc = _Accumulator("cpu", Dist(rank, rank, world))
    for value in (rank + 1.0, rank + 3.0):  # rank 0 saw losses 1 and 3, rank 1 saw 2 and 4
        acc.add("d_loss", torch.tensor(value))
    acc.add("g_loss", torch.tensor(10.0 * rank))
    results[rank] = acc.flush(7)
    tdist.destroy_process_group()


def test_logged_losses_are_the_mean_over_every_rank(tmp_path):
    """stats.jsonl and loss.png speak for the global batch, not for rank 0's share of it."""
    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    mp.spawn(_accumulator_worker, args=(2, tmp_path / "store", results), nprocs=2)
    assert results[0] == results[1] == {"step": 7, "d_loss": 2.5, "g_loss": 5.0}


def test_every_rank_draws_its_own_penalty_noise_deterministically():
    """torch's global stream (gradient penalties, the VAE's noise) is seeded per rank with several
    processes, like the batch stream; one process keeps the stream --seed gave it."""
    from anime_gan.checkpoint import seed_rank_streams
    from anime_gan.distributed import Dist

    def draws(rank, world, step=0):
        torch.manual_seed(5)  # what every rank did before building G and D
        gen = torch.Generator()
        seed_rank_streams(gen, 5, Dist(rank, rank, world), step)
        return torch.rand(4), torch.rand(4, generator=gen)

    (g0, b0), (g1, b1) = draws(0, 2), draws(1, 2)
    assert not torch.equal(g0, g1) and not torch.equal(b0, b1) and not torch.equal(g0, b0)
    assert all(torch.equal(a, b) for a, b in zip(draws(1, 2), (g1, b1)))  # the same for the same seed
    assert not torch.equal(draws(1, 2, step=10)[0], g1)  # a resume at step 10 does not replay step 0's draws
    torch.manual_seed(5)
    untouched = torch.rand(4)
    assert torch.equal(draws(0, 1)[0], untouched)  # one process: the stream --seed gave it


def _second_ctrl_c_worker(rank, world, port, args, results):
    import contextlib
    import io

    from anime_gan import train as train_module
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    if rank == 0:  # a second Ctrl-C on rank 0 alone, after step 3 landed, while rank 1 goes on to step 4
        append = train_module._append_stats

        def interrupted(ckpt_dir, rec, tb):
            append(ckpt_dir, rec, tb)
            if rec["step"] == 3:
                raise KeyboardInterrupt
        train_module._append_stats = interrupted
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    results[rank] = (code, err.getvalue())


def test_a_second_ctrl_c_on_one_rank_between_steps_saves_nothing_and_crashes_nothing(tmp_path):
    """Rank 0 must not start a snapshot's collectives alone: rank 1 is in step 4's all-reduce, and gloo
    aborted the process when the two were matched (2 of 7 tries by hand)."""
    import torch.multiprocessing as mp
    assert main(["prepare", "--synthetic", "32", "-o", str(tmp_path / "data"), "--image-size", "32", "-q"]) == 0
    args = ["train", "-t", str(tmp_path / "data"), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"),
            "--name", "r", "--nf", "8", "-b", "4", "--image-size", "32", "-i", "50", "--check", "50",
            "--log-every", "1", "-d", "cpu"]
    results = mp.Manager().dict()
    mp.spawn(_second_ctrl_c_worker, args=(2, _free_port(), args, results), nprocs=2, join=True)
    code, err = results[0]
    assert code == 130 and "stopped at once at step 3 on this process alone: not saved" in err, err
    code, err = results[1]  # rank 1 learns of it from its next collective
    assert code == 1 and "lost contact with the other training processes" in err and len(err.strip().splitlines()) == 1
    assert checkpoint.steps(tmp_path / "c" / "r") == []
