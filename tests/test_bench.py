"""The bench/ scripts run (tiny sizes, CPU) and print what docs/benchmarks.md quotes. GPU time is
scarce: a script broken by a renamed flag must fail here, not on a lent GPU. Nothing is timed."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench(script, *args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_throughput_prints_both_loops_and_the_ratio():
    r = _bench("train_throughput.py", "--model", "cgan", "-b", "4", "--nf", "4", "--window", "2",
               "--warmup", "1", "--windows", "1", "--images", "40", "--workers", "0", "--rounds", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "anime-gan fast path: cgan b=4 cpu fp32:" in r.stdout and "img/s, peak RSS" in r.stdout
    assert "seed-001 loop:" in r.stdout and "speed-up:" in r.stdout
    # two rounds, each timing both loops in turn, and the median of their ratios
    ratios = [line for line in r.stdout.splitlines() if line.startswith("speed-up")]
    assert len(ratios) == 3 and ratios[0].endswith("(round 1 of 2)") and ratios[1].endswith("(round 2 of 2)")
    assert ratios[2].startswith("speed-up, median of 2 rounds:"), r.stdout
    # each loop in a process of its own: two figures of their own, not one process's peak twice
    fast_mb, seed_mb = (float(line.split("peak RSS ")[1].split(" MiB")[0].replace(",", ""))
                        for line in r.stdout.splitlines() if "peak RSS" in line and "(round 1 " in line)
    assert fast_mb > 0 and seed_mb > 0 and "process peak so far" not in r.stdout
    # the seed loop runs G twice and backpropagates D's loss through G: more arithmetic per image
    arithmetic = next(line for line in r.stdout.splitlines() if line.startswith("arithmetic per image"))
    assert float(arithmetic.split("(")[1].split("x:")[0]) > 1.2, arithmetic


def test_profile_step_prints_per_step_figures():
    r = _bench("profile_step.py", "--model", "cgan", "-b", "2", "--nf", "2", "--short", "2", "--long", "4",
               "--images", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wall per step" in r.stdout and "leaf aten ops per step:" in r.stdout
    # on the CPU the convolutions are timed too (they call other ops, so they are no leaves)
    top = r.stdout.split("top aten ops by own time per step")[1]
    assert "convolution" in top, r.stdout


def test_tags_pickle_load_prints_both_times():
    r = _bench("tags_pickle_load.py", "--n", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("20 entries (") and "opcode pass" in r.stdout and "whole load" in r.stdout
    r = _bench("tags_pickle_load.py", "--n", "0")
    assert r.returncode == 2 and "--n must be 1 or more" in r.stderr


def test_compare_runs_needs_a_gpu_and_says_so():
    import torch
    r = _bench("compare_runs.py", "-i", "4", "-b", "8", timeout=600)
    if torch.cuda.is_available():  # on a GPU machine it runs for real
        assert r.returncode == 0 and "largest |G weight difference|" in r.stdout, r.stderr[-2000:]
    else:
        assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr


def test_gpu_session_script_parses_and_refuses_an_unknown_part(tmp_path):
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_session.sh")]).returncode == 0
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_session.sh"), "a"], capture_output=True, text=True,
                       env={**os.environ, "OUT": str(tmp_path)})  # (part B used to run for anything but A)
    assert r.returncode == 2 and "part must be A or B, got 'a'" in r.stderr and list(tmp_path.iterdir()) == []


def test_flags_that_would_hang_or_compare_other_algorithms_are_refused_in_one_line():
    for script, args, needle in [
        ("train_throughput.py", ["--images", "20", "-b", "32"], "fewer than one batch"),
        ("train_throughput.py", ["--model", "wgan-gp"], "invalid choice: 'wgan-gp'"),
        ("train_throughput.py", ["--windows", "0"], "--windows must be at least 1"),
        ("train_throughput.py", ["-d", "tpu"], "unknown --device 'tpu'"),
        ("train_throughput.py", ["--workers", "-1"], "--workers must be at least 0"),
        ("train_throughput.py", ["--rounds", "0"], "--rounds must be at least 1"),
        ("prepare_throughput.py", ["--n", "10", "--batch-size", "16"], "fewer than one batch"),
        ("profile_step.py", ["--short", "2", "--long", "2"], "--long must be more steps than --short"),
        ("profile_step.py", ["--model", "bogus"], "invalid choice: 'bogus'"),
        ("profile_step.py", ["-d", "tpu"], "unknown --device 'tpu'"),
        ("profile_step.py", ["--nf", "0"], "--nf must be at least 1"),
        ("prepare_throughput.py", ["--workers", "-1"], "--workers must be at least 0"),
    ]:
        r = _bench(script, *args, timeout=120)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (script, args, r.stderr)


def _train_throughput_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import train_throughput
    return train_throughput


def test_the_seed_loop_steps_as_seed_001_does(monkeypatch, tmp_path):
    """Seed 001 runs G again for the G step (new z and labels) and lets D's loss backpropagate into
    G (no detach); a baseline that skips either would be faster than seed 001 was."""
    import argparse
    from anime_gan.cli import main
    tt = _train_throughput_module(monkeypatch)
    assert main(["prepare", "--synthetic", "12", "-o", str(tmp_path / "data"), "-q"]) == 0
    calls, real_build = [], tt.build

    def counting_build(name, mcfg):
        G, D = real_build(name, mcfg)
        G.register_forward_hook(lambda m, args, out: calls.append("G"))
        D.register_forward_pre_hook(lambda m, args: calls.append(f"D grad={args[0].requires_grad}"))
        return G, D
    monkeypatch.setattr(tt, "build", counting_build)
    args = argparse.Namespace(model="acgan-dcgan", batch_size=4, nf=2, window=1, warmup=0, windows=2, workers=0,
                              device="cpu")
    rates = tt.seed001_loop(args, tmp_path / "data")
    assert len(rates) == 2 and all(r > 0 for r in rates)
    step = ["G", "D grad=False", "D grad=True", "G", "D grad=True"]  # D(real), D(fake) undetached, D(G(z'))
    assert calls == step * 2


def test_an_interrupted_fast_path_gives_no_figures(monkeypatch, tmp_path):
    """train saves and returns 0 on Ctrl-C/SIGTERM: a median of the windows it did write would pass for
    a result."""
    import argparse
    import json
    tt = _train_throughput_module(monkeypatch)

    def stopped_early(cmd):
        run = tmp_path / "c" / "bench"
        run.mkdir(parents=True)
        (run / "stats.jsonl").write_text(json.dumps({"step": 5, "img_per_s": 100.0}) + "\n")
    monkeypatch.setattr(tt, "run_cli", stopped_early)
    args = argparse.Namespace(model="cgan", batch_size=4, device="cpu", nf=4, window=5, warmup=1, windows=3,
                              precision="fp32", channels_last=False, compile=False, cuda_graph=False)
    with pytest.raises(SystemExit, match="stopped after 0 of 3 measured windows"):
        tt.fast_path(args, tmp_path / "data", tmp_path)


def test_gpu_session_logs_each_command_and_exits_with_the_first_failure(tmp_path):
    """Stand-ins for nvidia-smi and python3: the log says what ran and how it ended, and a failed
    step is the script's exit status (it was always tee's 0)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'a GPU, 1 MiB'\n")
    (bin_dir / "python3").write_text('#!/bin/sh\ncase "$*" in *--deterministic*) exit 3;; esac\necho ran\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_session.sh"), "A"], capture_output=True, text=True,
                       env=env, cwd=ROOT)
    log = (tmp_path / "out" / "gpu_log_A.txt").read_text()
    assert r.returncode == 3, log
    assert "$ python3 bench/compare_runs.py --model cgan -b 64 -i 30 --second=--cuda-graph\n" in log
    assert log.count("-> exit 0") == 5 and log.rstrip().endswith("-> exit 3")
