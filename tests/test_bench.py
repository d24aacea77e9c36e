"""The bench/ scripts run (tiny sizes, CPU) and print what docs/benchmarks.md quotes. GPU time is
scarce: a script broken by a renamed flag must fail here, not on a lent GPU. Nothing is timed."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(script, *args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_train_throughput_prints_both_loops_and_the_ratio():
    r = _bench("train_throughput.py", "--model", "cgan", "-b", "4", "--nf", "4", "--window", "2",
               "--warmup", "1", "--windows", "1", "--images", "40", "--workers", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "anime-gan fast path: cgan b=4 cpu fp32:" in r.stdout and "img/s, peak memory" in r.stdout
    assert "seed-001 loop:" in r.stdout and "speed-up:" in r.stdout


def test_profile_step_prints_per_step_figures():
    r = _bench("profile_step.py", "--model", "cgan", "-b", "2", "--nf", "2", "--short", "2", "--long", "4",
               "--images", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wall per step" in r.stdout and "leaf aten ops per step:" in r.stdout


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


def test_gpu_session_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_session.sh")]).returncode == 0


def test_flags_that_would_hang_or_compare_other_algorithms_are_refused_in_one_line():
    for script, args, needle in [
        ("train_throughput.py", ["--images", "20", "-b", "32"], "fewer than one batch"),
        ("train_throughput.py", ["--model", "wgan-gp"], "invalid choice: 'wgan-gp'"),
        ("train_throughput.py", ["--windows", "0"], "--windows must be at least 1"),
        ("train_throughput.py", ["-d", "tpu"], "unknown --device 'tpu'"),
        ("prepare_throughput.py", ["--n", "10", "--batch-size", "16"], "fewer than one batch"),
        ("profile_step.py", ["--short", "2", "--long", "2"], "--long must be more steps than --short"),
    ]:
        r = _bench(script, *args, timeout=120)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (script, args, r.stderr)
