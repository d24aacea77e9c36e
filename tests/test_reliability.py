"""What survives what: Ctrl-C, SIGTERM, kill -9 mid-checkpoint, divergence, malicious checkpoints."""
import json
import os
import random
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from anime_gan import checkpoint, files, losses
from anime_gan.cli import main
from conftest import one_line_error

TRAIN = ["train", "--model", "cgan", "--nf", "8", "-b", "8", "--image-size", "32", "--log-every", "1",
         "--sample", "1000", "-q", "--name", "r"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel") / "data"
    assert main(["prepare", "--synthetic", "48", "-o", str(root), "--image-size", "32", "-q"]) == 0
    return root


def _spawn(tmp: Path, data: Path, *extra, quiet=True, **popen) -> subprocess.Popen:
    train = TRAIN if quiet else [a for a in TRAIN if a != "-q"]
    args = [sys.executable, "-m", "anime_gan", *train, "-t", str(data), "-s", str(tmp / "s"),
            "-c", str(tmp / "c"), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, **popen)


def _logged_steps(run: Path) -> int:
    stats = run / "stats.jsonl"
    lines = stats.read_text().splitlines() if stats.exists() else []
    return sum(1 for l in lines if l.endswith("}"))


def _wait_for_steps(proc, run: Path, n: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while _logged_steps(run) < n:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "training did not progress"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupt_writes_a_final_checkpoint_and_exits_0(tmp_path, data, sig):
    proc = _spawn(tmp_path, data, "-i", "100000", "--check", "100000")
    run = tmp_path / "c" / "r"
    _wait_for_steps(proc, run, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    step = checkpoint.resumable_steps(run)[-1]
    assert step >= 3 and (run / "loss.png").is_file()  # the curves so far, though no --sample step came
    checkpoint.load(run / f"G_{step}.ckpt", "generator")
    assert main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"),
                 "-i", str(step + 2), "--check", "100000", "--resume"]) == 0
    assert checkpoint.resumable_steps(run)[-1] == step + 2



def test_a_closed_log_pipe_stops_with_a_checkpoint_instead_of_losing_the_steps(tmp_path, data):
    """`anime-gan train 2>&1 | head -3`: once the reader is gone, the next log line cannot be written;
    the run stops after that step and saves it, as for SIGTERM."""
    proc = _spawn(tmp_path, data, "-i", "100000", "--check", "100000", "--sample", "4", "--log-every", "4",
                  quiet=False)
    run = tmp_path / "c" / "r"
    _wait_for_steps(proc, run, 3)
    proc.stderr.close()  # the reader leaves; the log line at the next multiple of 4 meets EPIPE
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 0 and out.strip() == str(run)
    step = checkpoint.resumable_steps(run)[-1]
    assert step >= 4 and step % 4 == 0  # the step whose line failed, saved whole
    checkpoint.load(run / f"D_{step}.ckpt", "trainer")


def test_sighup_ignored_by_nohup_stays_ignored(tmp_path, data):
    proc = _spawn(tmp_path, data, "-i", "100000", "--check", "100000",
                  preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    run = tmp_path / "c" / "r"
    _wait_for_steps(proc, run, 3)
    proc.send_signal(signal.SIGHUP)
    _wait_for_steps(proc, run, _logged_steps(run) + 3)  # it trains on
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_more_ctrl_c_during_the_final_save_still_exit_0(tmp_path, data, monkeypatch, capsys):
    """Ctrl-C stops the loop; two more while the final snapshot is written change nothing."""
    from anime_gan import train as train_module
    real_save, real_samples, calls = checkpoint.save_snapshot, train_module._write_samples, []

    def samples_then_stop(*args):  # step 2's sample grid: the Ctrl-C that stops the loop
        real_samples(*args)
        os.kill(os.getpid(), signal.SIGINT)

    def save_under_fire(ckpt_dir, step, *args):
        calls.append(step)
        for _ in range(2):  # the final save: two more
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(ckpt_dir, step, *args)

    monkeypatch.setattr(train_module, "_write_samples", samples_then_stop)
    monkeypatch.setattr(checkpoint, "save_snapshot", save_under_fire)
    code = main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"),
                 "-i", "100", "--check", "3", "--sample", "2"])
    assert code == 0, capsys.readouterr().err
    assert calls == [2] and checkpoint.resumable_steps(tmp_path / "c" / "r") == [2]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_inside_a_step_saves_nothing_from_it(tmp_path, data, monkeypatch, capsys):
    """Stop now: a snapshot of a half-done step would resume off the uninterrupted run."""
    from anime_gan import train as train_module
    real_step, calls = train_module.GanStep, []

    class StepHitTwice(real_step):
        def __call__(self, draws):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGINT)  # stop after this step...
                os.kill(os.getpid(), signal.SIGINT)  # ...no, now: raised inside the step
            return super().__call__(draws)

    monkeypatch.setattr(train_module, "GanStep", StepHitTwice)
    args = [*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "100",
            "--check", "2"]
    args.remove("-q")
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "stopped in the middle of step 3: not saved" in err and "continue from step 2 with --resume" in err
    run = tmp_path / "c" / "r"
    assert checkpoint.resumable_steps(run) == [2] and not (run / ".train.lock").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("when", ["while setting up", "before the first step"])
def test_ctrl_c_before_any_step_leaves_no_run_folders(tmp_path, data, monkeypatch, when):
    from anime_gan import train as train_module
    if when == "while setting up":  # the default handler: a KeyboardInterrupt while real.png is written
        def save_grid(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(train_module.render, "save_grid", save_grid)
    else:  # training's own handler is in place: the loop sees the request before its first step
        real_tqdm = train_module.tqdm

        def tqdm(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return real_tqdm(*args, **kwargs)
        monkeypatch.setattr(train_module, "tqdm", tqdm)
    args = [*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "5"]
    assert main(args) == 130
    assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_while_torch_imports_is_one_line(monkeypatch, capsys):
    import anime_gan.cli as cli_module

    def interrupted_import():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "build_parser", interrupted_import)
    assert main(["train"]) == 130
    assert capsys.readouterr().err == "anime-gan: interrupted\n"


def test_ctrl_c_during_imports_is_held_until_they_finish(monkeypatch, capsys):
    """Python may swallow a KeyboardInterrupt raised inside an import; so imports run to the end and
    the command stops right after them, instead of running on."""
    import anime_gan.cli as cli_module
    real_build_parser, finished = cli_module.build_parser, []

    def build_parser_hit_by_ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)
        parser = real_build_parser()  # a KeyboardInterrupt here would be the bug
        finished.append(True)
        return parser

    monkeypatch.setattr(cli_module, "build_parser", build_parser_hit_by_ctrl_c)
    assert main(["prepare", "--synthetic", "4", "-o", "never"]) == 130
    assert finished == [True] and capsys.readouterr().err == "anime-gan prepare: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not os.path.exists("never")

def test_kill_9_at_random_moments_never_loses_more_than_one_interval(tmp_path, data):
    rng = random.Random(0)
    run = tmp_path / "c" / "r"
    check = 2  # a checkpoint every 2 steps: kills land inside checkpoint writes too
    for attempt in range(4):
        resume = ["--resume"] if checkpoint.resumable_steps(run) else []
        proc = _spawn(tmp_path, data, "-i", "100000", "--check", str(check), *resume)
        _wait_for_steps(proc, run, _logged_steps(run) + 2)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()
        proc.communicate()
        logged = max(json.loads(l)["step"] for l in (run / "stats.jsonl").read_text().splitlines()
                     if l.endswith("}"))
        latest = checkpoint.resumable_steps(run)[-1]
        checkpoint.load(run / f"G_{latest}.ckpt", "generator")   # always loadable
        checkpoint.load(run / f"D_{latest}.ckpt", "trainer")
        assert latest >= logged - check, f"attempt {attempt}: lost more than one checkpoint interval"
    assert main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"),
                 "-i", str(latest + 1), "--check", "1", "--resume"]) == 0
    assert not list(run.glob(".*.tmp")), "stale temporary files left behind"


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch, capsys):
    real_g_loss, calls = losses.g_loss, {"n": 0}

    def exploding(kind, fake_adv):
        calls["n"] += 1
        loss = real_g_loss(kind, fake_adv)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(losses, "g_loss", exploding)
    code = main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"),
                 "-i", "20", "--check", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "diverged by step 5" in err and "G_4.ckpt" in err and "--lr" in err
    run = tmp_path / "c" / "r"
    assert checkpoint.resumable_steps(run) == [2, 4]
    G = checkpoint.load(run / "G_4.ckpt", "generator")["G"]
    assert all(torch.isfinite(v).all() for v in G.values() if v.is_floating_point())


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_malicious_checkpoint_is_refused_everywhere(tmp_path, data, capsys):
    pwned = tmp_path / "pwned"
    run = tmp_path / "c" / "r"
    run.mkdir(parents=True)
    for name in ("G_5.ckpt", "D_5.ckpt"):
        torch.save({"format": checkpoint.FORMAT, "kind": "x", "evil": _Payload(pwned)}, run / name)
    codes = [
        main(["test", "-t", "fix_noise", "-d", str(run), "-s", str(tmp_path / "out")]),
        main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "9",
              "--resume"]),
        main(["eval", "-d", str(run), "-t", str(data), "--metrics", "accuracy"]),
    ]
    err = capsys.readouterr().err
    assert codes == [2, 2, 2], err
    assert err.count("refused as unsafe") == 3, err
    assert not pwned.exists(), "loading a checkpoint executed code from it"


def test_checkpoint_of_another_architecture_is_refused(tmp_path, data, capsys):
    base = [*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2",
            "--check", "2"]
    assert main(base) == 0
    code = main([base[0], "--model", "sagan", *base[3:], "-i", "4", "--resume",
                 str(tmp_path / "c" / "r" / "G_2.ckpt")])
    assert code == 2 and "was trained with --model cgan" in capsys.readouterr().err


@pytest.mark.parametrize("damage, needle", [
    (lambda g: g.pop("model"), "no 'model'"),
    (lambda g: g["model"].update(foo=1), "unknown model settings ['foo']"),
    (lambda g: g["model"].update(image_size=48), "training and model settings disagree"),
    (lambda g: (g["model"].update(image_size=48), g["config"].update(image_size=48)), "image_size must be one of"),
    (lambda g: g.update(schema={"groups": [{"name": "hair", "classes": ["red"]}]}), "the 22 condition inputs"),
    (lambda g: g.pop("schema"), "the 22 condition inputs"),
    (lambda g: g["config"].update(z_dim="abc"), "z_dim is 'abc', not a whole number"),
    (lambda g: g.update(config=[]), "settings are a list"),
    (lambda g: g.update(G_ema=[1]), "(G_ema) are not weights"),
    (lambda g: g["config"].update(lr="fast"), "lr is 'fast', not a number"),
    (lambda g: g["config"].update(n_critic=[5]), "n_critic is [5], not a whole number"),
    (lambda g: g.update(data_path=123), "its data_path is not a path"),
    (lambda g: g.update(step=-5), "it holds step -5, its name says 2"),
    (lambda g: g.update(step=15), "it holds step 15, its name says 2"),
    (lambda g: g.update(sample_path=["x"]), "its sample_path is not a path"),
])
def test_a_damaged_generator_checkpoint_is_one_line_everywhere(tmp_path, data, capsys, damage, needle):
    """The header is right, the body was edited or damaged: test, eval and resume each say so in one
    line (exit 2) instead of a KeyError or a shape mismatch deep inside."""
    base = [*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2", "--check", "2"]
    assert main(base) == 0
    g_path = tmp_path / "c" / "r" / "G_2.ckpt"
    g = torch.load(g_path, weights_only=True)
    damage(g)
    torch.save(g, g_path)
    capsys.readouterr()
    codes = [main(["test", "-t", "samples", "-d", str(g_path), "-s", str(tmp_path / "out")]),
             main(["eval", "-d", str(g_path), "-t", str(data), "--metrics", "diversity", "-q"]),
             main([*base[:-4], "-i", "4", "--resume", str(g_path), "--name", "branch"])]
    err = capsys.readouterr().err
    # (resume may find the fault first in its own words)
    assert codes == [2, 2, 2] and err.count("\n") == 3 and err.count(needle) >= 2, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "c" / "branch").exists()


@pytest.mark.parametrize("damage, needle", [
    (lambda d: d.pop("rng"), "damaged checkpoint (no 'rng')"),
    (lambda d: d.pop("acc"), "its loss sums are not what training saves"),
    (lambda d: d["rng"].update(torch=torch.zeros(3)), "damaged checkpoint; resume from another step"),
    (lambda d: d.update(D=[1, 2]), "does not match this model"),
    (lambda d: d.update(step=1), "holds step 1 of"),
    (lambda d: d["acc"].update(counts={"d_loss": "x"}), "its loss sums are not what training saves"),
    (lambda d: d["acc"]["sums"].update(d_loss=torch.tensor([1.0, 2.0])), "its loss sums are not what"),
    (lambda d: d["opt_G"]["param_groups"][0].update(weight_decay="x"), "optimizer setting is not a finite"),
    (lambda d: d["opt_G"]["param_groups"][0].update(eps=float("nan")), "optimizer setting is not a finite"),
    (lambda d: d["opt_G"]["state"][0].update(exp_avg=torch.zeros(3)), "optimizer state of the wrong shape"),
    (lambda d: d["opt_G"]["state"][0].update(step="x"), "optimizer setting is not a finite number"),
    (lambda d: next(v for v in d["D"].values() if v.is_floating_point()).fill_(float("nan")),
     "holds NaN or infinite weights"),
])
def test_a_damaged_trainer_checkpoint_is_one_line_and_writes_nothing(tmp_path, data, capsys, damage, needle):
    """The D file's header is right but its body is not: the resume says which file, in one line."""
    base = [*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2", "--check", "2"]
    assert main(base) == 0
    # stray lines are not records
    (tmp_path / "c" / "r" / "stats.jsonl").open("a").write('5\nnull\n{"step": "x"}\n{"step": [2]}\n')
    d_path = tmp_path / "c" / "r" / "D_2.ckpt"
    d = torch.load(d_path, weights_only=True)
    damage(d)
    torch.save(d, d_path)
    capsys.readouterr()
    code = main([*base[:-4], "-i", "4", "--resume", str(tmp_path / "c" / "r"), "--name", "branch"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and str(d_path) in err and needle in err, err
    assert not (tmp_path / "c" / "branch").exists()


def test_full_disk_is_refused_before_training(tmp_path, data, monkeypatch, capsys):
    import shutil
    from collections import namedtuple
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    code = main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2"])
    assert code == 2 and "MiB free" in capsys.readouterr().err
    assert not list((tmp_path / "c").rglob("*.ckpt"))


def test_a_disk_turning_read_only_names_the_file_not_the_lock(tmp_path, data, monkeypatch, capsys):
    """The lock cannot be removed either then; that second error must not replace the first."""
    import errno
    real_open, real_unlink = open, Path.unlink

    def read_only_after_step_2(path, mode="r", *args, **kwargs):
        if str(path).endswith("stats.jsonl") and "a" in mode and _logged_steps(tmp_path / "c" / "r") >= 2:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, mode, *args, **kwargs)

    def unlink(self, missing_ok=False):
        if self.name == ".train.lock":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr("builtins.open", read_only_after_step_2)
    monkeypatch.setattr(Path, "unlink", unlink)
    code = main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "6",
                 "--check", "2", "--log-every", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "stats.jsonl" in err and "Read-only file system" in err and ".train.lock" not in err, err
    assert checkpoint.resumable_steps(tmp_path / "c" / "r") == [2]


def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(tmp_path, data, monkeypatch, capsys):
    """torch's zip writer reports a full disk as a RuntimeError; no D file is left without its G."""
    real_save = checkpoint.save

    def full_at_step_4(obj, path):
        if path.name == "G_4.ckpt":
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 18496 vs 18400")
        return real_save(obj, path)

    monkeypatch.setattr(checkpoint, "save", full_at_step_4)
    code = main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "6",
                 "--check", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "could not write the step-4 checkpoint (the disk may be full)" in err and "intact" in err
    run = tmp_path / "c" / "r"
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["D_2.ckpt", "G_2.ckpt"]


@pytest.mark.parametrize("when", ["reserving the cache", "Ctrl-C while packing"])
def test_prepare_that_fails_leaves_no_output_folder(tmp_path, monkeypatch, capsys, when):
    """A full disk is an error before any pixel is written (not a SIGBUS from a sparse memory map);
    a failure or Ctrl-C into a new folder takes the folder away again."""
    import errno
    from anime_gan.data import prepare as prepare_module
    src = tmp_path / "src"
    assert main(["prepare", "--synthetic", "12", "-o", str(src), "-q"]) == 0
    if when == "reserving the cache":
        def no_space(fd, offset, length):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(prepare_module.os, "posix_fallocate", no_space)
        expected_code, expected_err = 2, "images_64.tmp.npy: No space left on device; free space"
    else:
        def interrupted(path, size):
            raise KeyboardInterrupt
        monkeypatch.setattr(prepare_module, "read_image_side", interrupted)
        expected_code, expected_err = 130, "anime-gan prepare: interrupted"
    out = tmp_path / "new" / "out"
    assert main(["prepare", str(src), "-o", str(out), "-q"]) == expected_code
    err = capsys.readouterr().err
    assert expected_err in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    monkeypatch.undo()
    assert main(["prepare", str(src), "-o", str(out), "-q"]) == 0  # the same command then works


def test_out_of_memory_is_one_line(tmp_path, data, monkeypatch, capsys):
    """A batch that does not fit: what the CPU allocator raises, as one line with the fix."""
    from anime_gan import step

    def no_memory(self, draws):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(step.GanStep, "__call__", no_memory)
    code = main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("anime-gan train: error: out of memory; use a smaller -b"), err
    assert len(err.splitlines()) == 1


def test_quiet_compile_keeps_the_compilers_notes_off_stderr(monkeypatch):
    import logging
    from anime_gan import train as train_module
    logger = logging.getLogger("torch.utils.cpp_extension")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(torch, "compile", lambda module: module)  # no real compile needed to check this
    elsewhere = torch.nn.Linear(1, 1, device="meta")  # stands in for a GPU's net: its notes may matter there
    train_module._maybe_compile(elsewhere, elsewhere, True, print, quiet=False)
    assert logger.level == logging.NOTSET
    train_module._maybe_compile(elsewhere, elsewhere, True, print, quiet=True)
    assert logger.level == logging.ERROR
    logger.setLevel(logging.NOTSET)
    net = torch.nn.Linear(1, 1)  # on the CPU, "No CUDA runtime is found" says nothing: off without -q too
    train_module._maybe_compile(net, net, True, print, quiet=False)
    assert logger.level == logging.ERROR


def _hold_run_lock(run: Path) -> subprocess.Popen:
    """Another process that holds `run`'s lock until killed (it says so on stdout first)."""
    other = subprocess.Popen([sys.executable, "-c", "import sys, time; from anime_gan import checkpoint; "
                              "checkpoint.lock_run(sys.argv[1]); print('held', flush=True); time.sleep(120)",
                              str(run)], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "held"
    return other


def test_a_run_being_trained_by_another_process_is_refused(tmp_path, data, capsys):
    """Two `train --name r` at once: the second stops; a lock file left by a killed process is no lock."""
    run = tmp_path / "c" / "r"
    run.mkdir(parents=True)
    other = _hold_run_lock(run)
    try:
        assert files.lock_holder(run / ".train.lock") == other.pid
        args = [*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"another `anime-gan train` (pid {other.pid}) is writing this run" in err
        assert not list(run.glob("*.ckpt"))
        # --resume of it, before its first checkpoint: the other process is named, not "train first"
        assert main([*args, "--resume", str(run)]) == 2 and main([*args, "--resume", "latest"]) == 2
        err = capsys.readouterr().err
        assert err.count(f"(pid {other.pid}) is starting this run and has written no checkpoint yet") == 2, err
    finally:
        other.kill()
        other.wait()
    assert (run / ".train.lock").exists() and files.lock_holder(run / ".train.lock") is None
    assert main(args) == 0  # the killed process's file is taken over
    assert checkpoint.resumable_steps(run) == [2] and not (run / ".train.lock").exists()


def _race(folder: Path, loop_body: str, rounds: int = 3000) -> list[int]:
    """Run `loop_body` `rounds` times in each of two processes started together on `folder` (`run`
    in the body); each prints how many rounds counted `held += 1`. A body that raises fails the test."""
    script = ("import os, sys, time; from pathlib import Path; from anime_gan import checkpoint, files; "
              "from anime_gan.errors import UserError\nrun = Path(sys.argv[1]); held = 0\n"
              "(run / f'ready_{os.getpid()}').touch()\n"  # start together: imports take seconds
              "while len(list(run.glob('ready_*'))) < 2:\n    time.sleep(0.001)\n"
              f"for _ in range({rounds}):\n" + "".join(f"    {line}\n" for line in loop_body.splitlines())
              + "print(held)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in results]
    return [int(out) for out, _ in results]


def test_the_run_lock_has_one_holder_when_two_processes_race_for_it(tmp_path):
    """A marker made with O_EXCL while holding the lock would fail if both held it at once (the
    earlier pid-file lock let that happen hundreds of times in 3000 rounds)."""
    held = _race(tmp_path, "try:\n    lock = checkpoint.lock_run(run)\nexcept UserError:\n    continue\n"
                           "os.close(os.open(run / 'marker', os.O_CREAT | os.O_EXCL))\n"
                           "os.unlink(run / 'marker')\nlock.release()\nheld += 1")
    assert sum(held) > 0 and not (tmp_path / ".train.lock").exists()


def test_two_processes_checking_one_output_folder_both_pass(tmp_path):
    """`test` runs writing into one -s folder: their write probes must not delete each other's."""
    assert _race(tmp_path, "files.writable_folder(run / 'out', 'fix')\nheld += 1") == [3000, 3000]

def test_a_run_that_fails_after_taking_the_lock_releases_it(tmp_path, data, capsys):
    """A refused --resume (the lock is taken before the snapshot is read) leaves no lock behind."""
    args = [*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2"]
    assert main(args) == 0
    run = tmp_path / "c" / "r"
    (run / "D_2.ckpt").write_bytes(b"cut short")
    assert main([*args, "-i", "4", "--resume", "latest"]) == 2
    assert "D_2.ckpt" in capsys.readouterr().err
    assert not (run / ".train.lock").exists()
    assert checkpoint.steps(run) == [2]


def test_a_lock_file_nobody_holds_has_no_owner(tmp_path):
    """Junk, a dead pid or even our own pid in a file nobody holds: not a lock."""
    lock = tmp_path / ".train.lock"
    assert files.lock_holder(lock) is None  # no file
    for text in ("", "0", "junk", str(os.getpid()), "1"):
        lock.write_text(text)
        assert files.lock_holder(lock) is None
    held = checkpoint.lock_run(tmp_path)
    assert files.lock_holder(lock) == os.getpid()
    held.release()
    assert not lock.exists()


def test_compile_that_fails_falls_back_to_eager(tmp_path, data, monkeypatch, capsys):
    def broken_compile(module, *a, **k):
        def fail(*args):
            raise RuntimeError("no compiler on this machine")
        return fail
    monkeypatch.setattr(torch, "compile", broken_compile)
    code = main([*TRAIN[:-3], "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"),
                 "-i", "2", "--check", "2", "--compile", "--name", "r"])
    assert code == 0 and "continuing without it" in capsys.readouterr().err
    assert checkpoint.resumable_steps(tmp_path / "c" / "r") == [2]


def test_compile_reaches_the_vae_too(tmp_path, data, monkeypatch):
    calls = []

    def counting_compile(module, *a, **k):
        def forward(*args):
            calls.append(type(module).__name__)
            return module(*args)
        return forward
    monkeypatch.setattr(torch, "compile", counting_compile)
    args = [a if a != "cgan" else "cvae" for a in TRAIN]
    assert main([*args, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2",
                 "--check", "2", "--compile"]) == 0
    assert len(set(calls)) == 2 and len(calls) == 4  # decoder and encoder, compiled, in each of 2 steps


def test_out_of_memory_in_a_compiled_step_is_not_taken_for_a_compiler_failure(tmp_path, data, monkeypatch, capsys):
    def compiled_but_too_big(module, *a, **k):
        def fail(*args):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return fail
    monkeypatch.setattr(torch, "compile", compiled_but_too_big)
    code = main([*TRAIN[:-3], "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"),
                 "-i", "2", "--check", "2", "--compile", "--name", "r"])
    err = capsys.readouterr().err
    assert code == 2 and "out of GPU memory; use a smaller -b" in err and "continuing without it" not in err


def test_ctrl_c_while_drawing_the_built_in_set_leaves_no_half_data_set(tmp_path, monkeypatch, capsys):
    from anime_gan.data import synthetic
    real_generate = synthetic.generate

    def interrupted(n, seed=0, size=64):
        for i, item in enumerate(real_generate(n, seed, size)):
            if i == 5:
                raise KeyboardInterrupt
            yield item
    monkeypatch.setattr(synthetic, "generate", interrupted)
    out = tmp_path / "data"
    assert main(["prepare", "--synthetic", "20", "-o", str(out), "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (out / "images").exists() and not (out / "tags.pickle").exists()
    monkeypatch.setattr(synthetic, "generate", real_generate)
    assert main(["prepare", "--synthetic", "8", "-o", str(out), "-q"]) == 0  # the folder is reusable


@pytest.mark.parametrize("iterations", [100, 3])
def test_a_stop_right_after_a_checkpoint_is_not_saved_twice(tmp_path, data, monkeypatch, capsys, iterations):
    real_save, calls = checkpoint.save_snapshot, []

    def save_then_stop(ckpt_dir, step, *args):
        calls.append(step)
        real_save(ckpt_dir, step, *args)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # lands between step 3's checkpoint and step 4
    monkeypatch.setattr(checkpoint, "save_snapshot", save_then_stop)
    code = main([*(a for a in TRAIN if a != "-q"), "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"),
                 "-i", str(iterations), "--check", "3"])
    err = capsys.readouterr().err
    assert code == 0 and calls == [3] and "stopped at step 3: saved" in err, err
    # a stop during the last step's save: nothing is left to --resume, and the line says so
    assert ("the run is done" in err) == (iterations == 3) and ("--resume" in err) == (iterations == 100), err
    if iterations == 100:  # the hint names the run: a bare --resume means the run the default flags name
        assert f"continue with --resume {tmp_path / 'c' / 'r'}" in err, err


def test_files_written_atomically_get_the_usual_permissions(tmp_path, capsys):
    """Atomic writes go through mkstemp, which makes owner-only files: a data set or a run must stay
    readable by the group (umask), and a rewritten file keeps the mode it was given."""
    old = os.umask(0o022)
    try:
        data = tmp_path / "d"
        assert main(["prepare", "--synthetic", "16", "-o", str(data), "--image-size", "32", "-q"]) == 0
        args = [*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2"]
        assert main(args) == 0
        run = tmp_path / "c" / "r"
        files = [data / "schema.json", run / "config.json", run / "stats.jsonl", run / "G_2.ckpt", run / "D_2.ckpt"]
        assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o644" for f in files}
        (run / "config.json").chmod(0o640)
        assert main([*args[:-1], "3", "--resume"]) == 0
        assert oct((run / "config.json").stat().st_mode & 0o777) == "0o640"
    finally:
        os.umask(old)


def test_two_runs_started_together_on_an_empty_data_folder_both_train(tmp_path):
    """A sweep script starting two runs on a fresh clone: one draws the built-in faces, the other
    waits for it instead of reading a half-made set ("this folder has no labels")."""
    (tmp_path / "data").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "anime_gan", "train", "-t", str(tmp_path / "data"),
                               "--synthetic-size", "300", "--image-size", "32", "--nf", "8", "-b", "8", "-i", "2",
                               "-d", "cpu", "-c", str(tmp_path / f"c{i}"), "-s", str(tmp_path / f"s{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-800:] for _, err in results]
    assert [list((tmp_path / f"c{i}").iterdir())[0].name for i in range(2)] == ["acgan-dcgan_onehot_nf8_32px_seed0"] * 2
    assert sum("drawing the built-in data set" in out + err for out, err in results) == 1
    assert not list(tmp_path.glob(".*.lock"))


def test_the_umask_is_read_without_being_changed_and_renames_are_synced(tmp_path, monkeypatch):
    """Setting the umask to read it would let another thread create a world-writable file meanwhile;
    and a rename is only durable once its folder is synced too."""
    import stat as stat_module
    old = os.umask(0o027)
    try:
        def no_umask(mask):
            raise AssertionError("os.umask called")
        monkeypatch.setattr(files.os, "umask", no_umask)
        assert files._umask() == 0o027
        synced, real_fsync = [], os.fsync
        monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode), real_fsync(fd)))
        files.write_text_atomically(tmp_path / "a.txt", "x")
        assert [stat_module.S_ISDIR(m) for m in synced] == [False, True]
        assert oct((tmp_path / "a.txt").stat().st_mode & 0o777) == "0o640"
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_log_lines_whose_step_is_not_a_whole_number_are_not_records(tmp_path):
    """A hand-edited {"step": "x"} would crash the resume that sorts and cuts the log by step."""
    log = tmp_path / "stats.jsonl"
    log.write_text('{"step": 1, "d_loss": 0.5}\n{"step": "x"}\n{"step": true}\n{"step": 2.5}\n{"d_loss": 1}\n')
    assert checkpoint.read_jsonl(log) == [{"step": 1, "d_loss": 0.5}, {"d_loss": 1}]


def test_a_full_disk_while_logging_names_the_log(tmp_path, data, monkeypatch, capsys):
    """A full disk often surfaces when the file is closed, with no file name in the error."""
    import errno
    import io
    real_open = open

    class FullOnClose(io.StringIO):
        def close(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_(path, mode="r", *args, **kwargs):
        if str(path).endswith("stats.jsonl") and "a" in mode:
            return FullOnClose()
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr("builtins.open", open_)
    code = main([*TRAIN, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{tmp_path / 'c' / 'r' / 'stats.jsonl'}: No space left on device; free space on that disk" in err, err


def test_a_folder_swap_killed_between_its_renames_gets_the_earlier_folder_back(tmp_path):
    """kill -9 after `images` moved aside and before the new one moved in: the next run restores it,
    rather than clear the only copy away as a leftover."""
    from anime_gan.files import new_staging, swap_in
    (tmp_path / ".images.old").mkdir()
    (tmp_path / ".images.old" / "0.png").write_bytes(b"earlier")
    (tmp_path / ".images.partial").mkdir()
    staging = new_staging(tmp_path / "images")
    assert (tmp_path / "images" / "0.png").read_bytes() == b"earlier" and list(staging.iterdir()) == []
    (staging / "0.png").write_bytes(b"new")
    swap_in(staging, tmp_path / "images")
    assert (tmp_path / "images" / "0.png").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_a_log_line_after_a_cut_one_starts_its_own_line_even_in_a_write_only_log(tmp_path, monkeypatch):
    import builtins
    from anime_gan import checkpoint
    from anime_gan.files import append_line
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "d_lo')  # kill -9 mid-write
    append_line(log, '{"step": 3}')
    assert [r["step"] for r in checkpoint.read_jsonl(log)] == [1, 3]
    real_open = builtins.open

    def write_only(path, mode="r", *args, **kwargs):  # as chmod 222 would be for a user
        if Path(path) == log and ("r" in mode or "+" in mode):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", write_only)
    append_line(log, '{"step": 4}')  # appended, though the last byte cannot be checked
    monkeypatch.undo()
    assert [r["step"] for r in checkpoint.read_jsonl(log)] == [1, 3, 4]


def test_a_stop_between_log_steps_logs_its_last_step_as_partial(tmp_path, data, monkeypatch, capsys):
    from anime_gan.step import GanStep
    real_call, calls = GanStep.__call__, []

    def step_then_stop(self, draws):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # step 3 finishes, then the run stops and saves
        return real_call(self, draws)
    monkeypatch.setattr(GanStep, "__call__", step_then_stop)
    args = [a for a in TRAIN if a != "-q"]
    args[args.index("--log-every") + 1] = "2"
    assert main([*args, "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "-i", "100",
                 "--check", "10", "--name", "r"]) == 0
    stats = [json.loads(l) for l in (tmp_path / "c" / "r" / "stats.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("partial")) for r in stats] == [(2, None), (3, True)]
    assert "stopped at step 3: saved" in capsys.readouterr().err


def test_a_sigint_the_shell_ignores_stays_ignored_while_the_command_starts():
    """A background job of a plain `sh` script starts with SIGINT ignored: training keeps it so, and
    the start (imports) must not turn a Ctrl-C meant for the script into a stop of this job."""
    import signal
    from anime_gan.cli import _interrupt_after_imports
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _interrupt_after_imports():
            os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt, then or after
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    with pytest.raises(KeyboardInterrupt):  # (a Ctrl-C at a terminal still stops it, after the imports)
        with _interrupt_after_imports():
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous


def test_the_free_space_asked_for_is_about_what_one_snapshot_takes(tmp_path, data, monkeypatch, capsys):
    """Not twice it: a run that fits is not refused (a reviewer's tmpfs with 14 MiB was, for 9)."""
    import shutil
    from collections import namedtuple
    args = [*TRAIN, "-t", str(data), "-i", "2"]
    assert main([*args, "-c", str(tmp_path / "c"), "-s", str(tmp_path / "s")]) == 0
    pair = sum((tmp_path / "c" / "r" / f"{k}_2.ckpt").stat().st_size for k in "GD")
    usage, real = namedtuple("usage", "total used free"), shutil.disk_usage
    for free, code in ((int(pair * 1.25), 0), (int(pair * 0.75), 2)):
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free, free))
        capsys.readouterr()
        assert main([*args, "-c", str(tmp_path / f"c{code}"), "-s", str(tmp_path / f"s{code}")]) == code
        assert (code == 0) == ("MiB free" not in capsys.readouterr().err)
    monkeypatch.setattr(shutil, "disk_usage", real)


def test_a_checkpoint_of_another_kind_or_version_says_which(tmp_path, data, cli):
    """A D file (or one renamed G_99.ckpt) and a newer version's file were both "not an anime-gan
    generator checkpoint", which reads as false; an unknown model gave no fix."""
    base = [*TRAIN, "-t", data, "-s", tmp_path / "s", "-c", tmp_path / "c", "-i", "2", "--check", "2"]
    assert cli(*base)[0] == 0
    run = tmp_path / "c" / "r"
    shutil.copy(run / "D_2.ckpt", tmp_path / "G_99.ckpt")
    for d_file in (run / "D_2.ckpt", tmp_path / "G_99.ckpt"):
        one_line_error(cli("test", "-d", d_file, "-t", "samples", "-s", tmp_path / "out"),
                       f"{d_file}: is a trainer checkpoint (D_<step>.ckpt), not a generator one; pass the "
                       f"G_<step>.ckpt file (or its run folder)")
    g = torch.load(run / "G_2.ckpt", weights_only=True)
    newer = tmp_path / "newer" / "G_2.ckpt"
    newer.parent.mkdir()
    torch.save(dict(g, format="anime-gan/2"), newer)
    one_line_error(cli("test", "-d", newer, "-t", "samples", "-s", tmp_path / "out"),
                   f"{newer}: written by another version of anime-gan (format 'anime-gan/2'; this one reads "
                   f"'anime-gan/1'); use the anime-gan version that wrote it")
    torch.save(dict(g, kind=["generator"]), newer)  # (a list: unhashable, was a TypeError)
    one_line_error(cli("test", "-d", newer, "-t", "samples", "-s", tmp_path / "out"),
                   f"{newer}: not an anime-gan generator checkpoint")
    torch.save(dict(g, config=dict(g["config"], model="stylegan9")), newer)
    one_line_error(cli("test", "-d", newer, "-t", "samples", "-s", tmp_path / "out"),
                   "made with model 'stylegan9', which this version does not know; use the anime-gan version")
    assert not (tmp_path / "out").exists()
