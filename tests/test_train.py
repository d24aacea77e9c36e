"""`anime-gan train` end to end on a tiny built-in data set: outputs, every preset, exact resume, errors."""
import errno
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from anime_gan import checkpoint
from anime_gan.cli import main
from anime_gan.models import PRESETS
from conftest import one_line_error, snapshot

TINY = ["--nf", "8", "-b", "8", "--log-every", "1", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "data"
    assert main(["prepare", "--synthetic", "64", "-o", str(root), "-q"]) == 0
    assert main(["prepare", str(root), "--image-size", "32", "-q"]) == 0
    return root


def _train(tmp, data, *extra):
    args = ["train", "-t", str(data), "-s", str(tmp / "samples"), "-c", str(tmp / "ckpt"), *TINY, *extra]
    return main(args)


def _states_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict):
            if not _states_equal(x, y):
                return False
        elif isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, (list, tuple)) and x and isinstance(x[0], dict):
            if not all(_states_equal(p, q) for p, q in zip(x, y)):
                return False
        elif x != y:
            return False
    return True


def test_outputs_follow_seed_001_layout(tmp_path, data):
    assert _train(tmp_path, data, "--model", "acgan-dcgan", "-i", "4", "--sample", "2", "--check", "2",
                  "--name", "r") == 0
    samples, ckpt = tmp_path / "samples" / "r", tmp_path / "ckpt" / "r"
    assert {p.name for p in samples.iterdir()} == {"real.png", "fake_step_2.png", "fake_step_4.png"}
    names = {p.name for p in ckpt.iterdir()}
    assert {"G_2.ckpt", "D_2.ckpt", "G_4.ckpt", "D_4.ckpt", "loss.png", "classifier_loss.png",
            "config.json", "stats.jsonl"} <= names
    stats = [json.loads(l) for l in (ckpt / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [1, 2, 3, 4]
    assert {"d_loss", "g_loss", "d_cls", "g_cls", "img_per_s"} <= stats[0].keys()
    config = json.loads((ckpt / "config.json").read_text())
    assert config["train"]["model"] == "acgan-dcgan" and config["schema"]["groups"][0]["name"] == "hair"
    # The G checkpoint alone rebuilds the generator, with the schema it was trained on.
    G, cfg, schema, step = checkpoint.load_generator(ckpt, ema=True)
    assert step == 4 and cfg.model == "acgan-dcgan" and schema.dim == 22
    assert G(torch.randn(2, 100), torch.zeros(2, 22)).shape == (2, 3, 64, 64)


@pytest.mark.parametrize("model", list(PRESETS))
def test_every_preset_trains_a_few_steps(tmp_path, data, model):
    assert _train(tmp_path, data, "--model", model, "--image-size", "32", "-i", "2", "--check", "2",
                  "--sample", "2", "--name", "r", "--no-ema") == 0
    ckpt = tmp_path / "ckpt" / "r"
    G, cfg, _, _ = checkpoint.load_generator(ckpt, ema=False)
    torch.manual_seed(cfg.seed)  # the trainer builds its initial weights from this seed
    from anime_gan.models import ModelConfig, build
    m = torch.load(ckpt / "G_2.ckpt", weights_only=True)["model"]
    G0, _ = build(model, ModelConfig(**{**m, "class_sizes": tuple(m["class_sizes"])}))
    changed = any(not torch.equal(a, b) for a, b in zip(G.state_dict().values(), G0.state_dict().values()))
    assert changed, f"{model}: two training steps left G's weights unchanged"
    stats = [json.loads(l) for l in (ckpt / "stats.jsonl").read_text().splitlines()]
    assert all(abs(v) < 1e6 for r in stats for k, v in r.items() if k.endswith("loss"))
    assert (tmp_path / "samples" / "r" / "fake_step_2.png").exists()


def test_resume_continues_the_same_trajectory(tmp_path, data):
    common = ["--model", "cgan", "--image-size", "32", "--check", "3", "--sample", "3", "--seed", "7"]
    assert _train(tmp_path / "a", data, *common, "-i", "6", "--name", "r") == 0
    assert _train(tmp_path / "b", data, *common, "-i", "3", "--name", "r") == 0
    assert _train(tmp_path / "b", data, *common, "-i", "6", "--name", "r", "--resume") == 0
    a, b = tmp_path / "a" / "ckpt" / "r", tmp_path / "b" / "ckpt" / "r"
    for name in ("G_6.ckpt", "D_6.ckpt"):
        sa, sb = (torch.load(p / name, weights_only=True) for p in (a, b))
        for key in ("G", "G_ema", "D", "opt_G", "opt_D", "rng"):
            if key in sa:
                assert _states_equal(sa[key], sb[key]), f"{name}:{key} differs after resume"
    def losses(run):  # everything but the timing column
        return [{k: v for k, v in json.loads(l).items() if k != "img_per_s"}
                for l in (run / "stats.jsonl").read_text().splitlines()]
    assert losses(a) == losses(b) and len(losses(a)) == 6


def test_a_run_stopped_between_log_steps_resumes_to_the_same_log_and_grids(tmp_path, data):
    """-i 6 with --log-every 4 shows step 6's losses, but a resume to 8 logs what a straight run to 8
    does (step 8 averages 5-8); a --seed typed on the resume changes no grid either."""
    common = ["--model", "cgan", "--image-size", "32", "--check", "4", "--sample", "4", "--log-every", "4"]
    assert _train(tmp_path / "a", data, *common, "-i", "8", "--name", "r") == 0
    assert _train(tmp_path / "b", data, *common, "-i", "6", "--name", "r") == 0
    stats = [json.loads(l) for l in (tmp_path / "b" / "ckpt" / "r" / "stats.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("partial")) for r in stats] == [(4, None), (6, True)]
    assert _train(tmp_path / "b", data, *common, "-i", "8", "--name", "r", "--resume", "--seed", "99") == 0

    def losses(run):  # everything but the timing column
        return [{k: v for k, v in json.loads(l).items() if k != "img_per_s"}
                for l in (run / "stats.jsonl").read_text().splitlines()]
    a, b = tmp_path / "a" / "ckpt" / "r", tmp_path / "b" / "ckpt" / "r"
    assert losses(a) == losses(b) and [r["step"] for r in losses(a)] == [4, 8]
    assert _states_equal(*(torch.load(p / "G_8.ckpt", weights_only=True)["G"] for p in (a, b)))
    grids = [(tmp_path / x / "samples" / "r" / "fake_step_8.png").read_bytes() for x in "ab"]
    assert grids[0] == grids[1]
    # the --seed that changed nothing is not saved either: the next resume draws the same grid
    assert torch.load(b / "G_8.ckpt", weights_only=True)["config"]["seed"] == 0
    for x in "ab":
        assert _train(tmp_path / x, data, *common, "-i", "12", "--name", "r", "--resume") == 0
    grids = [(tmp_path / x / "samples" / "r" / "fake_step_12.png").read_bytes() for x in "ab"]
    assert grids[0] == grids[1]


def test_a_new_run_never_writes_among_an_earlier_runs_grids(tmp_path, data, capsys):
    common = ["--image-size", "32", "-i", "2", "--check", "2", "--sample", "2", "--name", "r"]
    assert _train(tmp_path, data, "--model", "cgan", *common) == 0
    before = snapshot(tmp_path / "samples")
    capsys.readouterr()
    args = ["train", "-t", str(data), "-s", str(tmp_path / "samples"), "-c", str(tmp_path / "other"), *TINY,
            "--model", "projection", *common]
    assert main(args) == 2  # another -c, the same run name: the same sample folder
    err = capsys.readouterr().err
    assert f"{tmp_path / 'samples' / 'r'}: holds 1 fake_step_<N>.png of an earlier run" in err, err
    assert snapshot(tmp_path / "samples") == before and not (tmp_path / "other").exists()
    assert main([*args, "--dry-run"]) == 2
    assert main([*args, "--name", "r2"]) == 0


def test_a_run_that_failed_before_its_first_checkpoint_can_be_run_again(tmp_path, data, monkeypatch):
    from anime_gan.step import GanStep
    args = ["--model", "cgan", "--image-size", "32", "-i", "4", "--check", "100", "--sample", "1", "--name", "r"]
    real_call, calls = GanStep.__call__, []

    def fail_at_step_3(self, draws):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("a crash in step 3")
        return real_call(self, draws)
    with monkeypatch.context() as m:
        m.setattr(GanStep, "__call__", fail_at_step_3)
        with pytest.raises(RuntimeError):
            _train(tmp_path, data, *args)
    assert (tmp_path / "samples" / "r" / "fake_step_2.png").exists() and not list((tmp_path / "ckpt" / "r").glob("G_*"))
    assert _train(tmp_path, data, *args) == 0  # its own grids, not another run's: the retry starts afresh


def test_a_data_file_given_as_t_is_said_before_the_run_folder_it_would_collide_with(tmp_path, data, capsys):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "1", "--name", "r") == 0
    image = next((data / "images").iterdir())
    for dry_run in ([], ["--dry-run"]):
        capsys.readouterr()
        assert _train(tmp_path, image, "--model", "cgan", "--image-size", "32", "-i", "1", "--name", "r", *dry_run) == 2
        assert f"{image}: is a file; -t takes the data folder that holds it" in capsys.readouterr().err


def test_a_run_with_tensorboard_resumes_without_it_where_it_is_not_installed(tmp_path, data, capsys, monkeypatch):
    import sys
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2", "--name", "r") == 0
    g_path = tmp_path / "ckpt" / "r" / "G_2.ckpt"
    g = torch.load(g_path, weights_only=True)
    g["config"]["tensorboard"] = True  # trained where tensorboard was installed
    torch.save(g, g_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed here
    capsys.readouterr()
    assert _train(tmp_path, data, "-i", "3", "--name", "r", "--resume") == 2
    assert ("pip install tensorboard (or pip install -e \".[tensorboard]\" in a clone), or train without it "
            "with --no-tensorboard") in capsys.readouterr().err
    assert _train(tmp_path, data, "-i", "3", "--name", "r", "--resume", "--no-tensorboard") == 0
    assert torch.load(tmp_path / "ckpt" / "r" / "G_3.ckpt", weights_only=True)["config"]["tensorboard"] is False


def test_resume_skips_log_lines_that_are_not_utf8(tmp_path, data):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2", "--name", "r") == 0
    with open(tmp_path / "ckpt" / "r" / "stats.jsonl", "ab") as f:
        f.write(b"\xff\xfe garbage\n")
    assert _train(tmp_path, data, "-i", "3", "--name", "r", "--resume") == 0
    assert [json.loads(l)["step"] for l in (tmp_path / "ckpt" / "r" / "stats.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_resume_dry_run_checks_the_d_file_as_the_run_would(tmp_path, data, capsys):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2", "--name", "r") == 0
    run = tmp_path / "ckpt" / "r"
    (run / "D_2.ckpt").write_bytes((run / "G_2.ckpt").read_bytes())
    capsys.readouterr()
    assert _train(tmp_path, data, "-i", "3", "--name", "r", "--resume", "--dry-run") == 2
    assert f"{run / 'D_2.ckpt'}" in capsys.readouterr().err


def test_mode_seeking_trains_and_logs_its_term(tmp_path, data):
    assert _train(tmp_path, data, "--model", "projection", "--image-size", "32", "-i", "2", "--check", "2",
                  "--name", "r", "--mode-seeking", "1") == 0
    stats = [json.loads(l) for l in (tmp_path / "ckpt" / "r" / "stats.jsonl").read_text().splitlines()]
    assert len(stats) == 2 and all(r["g_ms"] > 0 for r in stats)


def test_seed_002_acgan_with_a_gradient_penalty_of_5(tmp_path, data):
    assert _train(tmp_path, data, "--model", "acgan-sn", "--loss", "wgan-gp", "--gp", "5", "--image-size", "32",
                  "-i", "2", "--check", "2", "--name", "r") == 0
    config = json.loads((tmp_path / "ckpt" / "r" / "config.json").read_text())
    assert config["train"]["gp"] == 5 and config["hyper"]["loss"] == "wgan-gp"
    assert _train(tmp_path, data, "--model", "acgan-sn", "--loss", "wgan-gp", "--gp", "7", "--image-size", "32",
                  "-i", "3", "--check", "3", "--name", "r", "--resume", "latest") == 0
    config = json.loads((tmp_path / "ckpt" / "r" / "config.json").read_text())
    assert config["train"]["gp"] == 7  # config.json holds what the latest session trained with


def test_weights_of_loss_terms_the_model_lacks_are_noted(tmp_path, data, capsys):
    assert main(["train", "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), *TINY[:-1],
                 "--model", "cgan", "--gp", "5", "--aux", "2", "--image-size", "32", "-i", "1", "--no-ema",
                 "--ema-decay", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "note: --gp weights the wgan-gp and dragan penalties; --loss bce has none: ignored" in err
    assert "note: --ema-decay sets the decay of G's moving-average copy; --no-ema keeps none: ignored" in err
    assert "note: --aux weights the ACGAN class loss; --model cgan has no class head: ignored" in err
    for model, flags, notes in (("cvae", ["--dlr", "0.01", "--n-critic", "2"],
                                 ["--dlr sets D's side; --model cvae has no D", "--n-critic sets D's side"]),
                                ("wgan", ["--beta", "0.3"], ["--beta sets Adam's beta1; --model wgan trains with RMSprop"]),
                                ("dcgan", ["--embed", "rgb"], ["--embed sets how labels condition the nets; "
                                                               "--model dcgan draws without labels: ignored"])):
        assert main(["train", "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), *TINY[:-1],
                     "--model", model, *flags, "--image-size", "32", "-i", "1"]) == 0
        err = capsys.readouterr().err
        assert all(note in err for note in notes), err
    # the dry run says them too, and -q silences them
    argv = ["train", "-t", str(data), "-c", str(tmp_path / "c2"), "--model", "wgan", "--beta", "0.3", "--dry-run"]
    assert main(argv) == 0
    assert "note: --beta sets Adam's beta1; --model wgan trains with RMSprop: ignored" in capsys.readouterr().err
    assert main([*argv, "-q"]) == 0 and capsys.readouterr().err == ""
    # overridden or not for this device or folder (the dry run suffices)
    argv = ["train", "-t", str(data), "-c", str(tmp_path / "c2"), "--lr", "1e-3", "--glr", "1e-4", "--dlr", "1e-4",
            "--deterministic", "-d", "cpu", "--synthetic-size", "50", "--loss", "wgan", "--model", "cgan", "--dry-run"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    for note in ("note: --lr sets both nets' learning rate; --glr sets G's and --dlr D's: --lr ignored",
                 "note: --deterministic asks for deterministic GPU kernels; CPU runs repeat at a fixed thread "
                 "count already: ignored",
                 f"note: --synthetic-size sets how many built-in faces an empty data folder gets; {data} is not "
                 f"empty: ignored",
                 "note: --loss wgan clips D's weights, which WGAN pairs with RMSprop and 5 critic steps (--model "
                 "wgan); --model cgan trains with Adam and --n-critic 1, often unstable with clipping"):
        assert note in err, err
    assert main([*argv[:5], "--dlr", "1e-4", "--dry-run"]) == 0 and "--lr ignored" not in capsys.readouterr().err


def test_d_nf_gives_d_its_own_width_and_must_match_on_resume(tmp_path, data, capsys):
    common = ["--model", "sagan", "--image-size", "32", "--check", "2"]
    assert _train(tmp_path, data, *common, "--g-conv-dim", "8", "--d-conv-dim", "4", "-i", "2") == 0
    run = tmp_path / "ckpt" / "sagan_onehot_nf8_dnf4_32px_seed0"
    assert json.loads((run / "config.json").read_text())["model"]["d_nf"] == 4
    assert _train(tmp_path, data, *common, "--nf", "8", "--d-nf", "6", "-i", "4", "--name", run.name,
                  "--resume", "latest") == 2
    assert "was trained with --d-nf 4, not 6" in capsys.readouterr().err
    assert _train(tmp_path, data, "--d-nf", "-1", "-i", "1") == 2


def test_resume_past_the_last_iteration_says_so_and_writes_nothing(tmp_path, data, capsys):
    common = ["--model", "cgan", "--image-size", "32", "--check", "3", "--sample", "3", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "3") == 0
    before = snapshot(tmp_path / "ckpt" / "r")
    capsys.readouterr()
    args = ["train", "-t", str(data), "-s", str(tmp_path / "samples"), "-c", str(tmp_path / "ckpt"),
            "--nf", "8", "-b", "8", *common, "-i", "2", "--resume"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "step 3 already reaches -i 2: nothing to train; raise -i to continue" in err
    assert "training cgan" not in err  # no header for a run that does not train
    after = snapshot(tmp_path / "ckpt" / "r")
    assert after.keys() == before.keys()
    assert after["config.json"] == before["config.json"]  # "-i 2" must not replace the recorded -i 3


def test_same_seed_same_run(tmp_path, data):
    for name in ("x", "y"):
        assert _train(tmp_path / name, data, "--model", "cgan", "--image-size", "32", "-i", "2",
                      "--check", "2", "--name", "r") == 0
    gx, gy = (torch.load(tmp_path / n / "ckpt" / "r" / "G_2.ckpt", weights_only=True)["G"] for n in "xy")
    assert _states_equal(gx, gy)


def test_dry_run_prints_resolved_config(tmp_path, data, capsys, monkeypatch):
    assert main(["train", "--model", "sagan", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resolved"]["glr"] == 1e-4 and out["resolved"]["dlr"] == 4e-4 and out["resolved"]["loss"] == "hinge"
    assert out["run"] == "sagan_onehot_nf64_64px_seed0" and out["train"]["typed"] == ["model"]
    # with --resume: what the resume will train with, read from the snapshot (nothing written)
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--name", "r") == 0
    before = snapshot(tmp_path / "ckpt" / "r")
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "ckpt" / "r"), "-i", "5", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["train"]["model"], out["train"]["nf"], out["train"]["iterations"], out["run"]) == ("cgan", 8, 5, "r")
    assert out["resolved"]["loss"] == "bce" and out["resumes"] == str(tmp_path / "ckpt" / "r" / "G_2.ckpt")
    assert snapshot(tmp_path / "ckpt" / "r") == before
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "sagan", "--resume", "--dry-run"]) == 2  # nothing there to resume
    # a fresh start into a folder holding a run: refused, as the real run would
    assert main(["train", "-t", str(data), "-c", str(tmp_path / "ckpt"), "--name", "r", "--dry-run"]) == 2
    assert "ckpt/r: already holds a run (step 2)" in capsys.readouterr().err
    assert snapshot(tmp_path / "ckpt" / "r") == before


@pytest.mark.parametrize("args, message", [
    (["--model", "nosuch"], "invalid choice"),
    (["-d", "cuda"], "no CUDA GPU"),
    (["--lr", "5"], "--lr must be between 0 and 1"),
    (["--model", "cgan", "--resume"], "nothing to resume"),
    (["--cuda-graph", "-d", "cpu"], "--cuda-graph records the training step on a CUDA GPU"),
    (["--mode-seeking", "1", "-b", "7"], "use an even -b, got 7"),
    (["--mode-seeking", "-1"], "--mode-seeking must be a finite number, 0 or more"),
    (["--mode-seeking", "nan"], "--mode-seeking must be a finite number, 0 or more, got nan"),
    (["--gp", "-5"], "--gp must be a finite number, 0 or more, got -5"),
    (["--gp", "inf"], "--gp must be a finite number, 0 or more, got inf"),
    (["--aux", "inf"], "--aux must be a finite number, 0 or more, got inf"),
    (["--seed", str(2**31)], "--seed must be between 0 and 2147483647"),
    (["--synthetic-size", "2000000"], "--synthetic-size (built-in faces drawn into an empty -t folder) must be"),
    (["--mode-seeking", "1", "--model", "cvae"], "has no adversarial step"),
    (["--cuda-graph", "--precision", "fp16"], "--cuda-graph cannot record fp16"),
    (["--beta", "2"], "--beta (Adam's beta1) must be in [0, 1), got 2.0"),
    (["--keep-d", "-1"], "--keep-d must be 0 or more"),
    (["--aux", "-1"], "--aux must be a finite number, 0 or more"),
    (["--seed", "-1"], "--seed must be between 0 and"),
    (["--synthetic-size", "0"], "--synthetic-size (built-in faces drawn into an empty -t folder) must be"),
    (["--name", "../escape"], "must be a plain folder name"),
    (["--resume", "no/such/G_5.ckpt"], "no/such/G_5.ckpt: no such run folder or checkpoint"),
    (["-d", "tpu"], "unknown --device 'tpu'"),
    (["--aux", "1e308"], "--aux 1e+308 is more than 10000"),
    (["--gp", "-inf"], "--gp must be a finite number, 0 or more, got -inf"),  # a value, not the option -i
    (["--lr", "-1e-4"], "--lr must be between 0 and 1, got -0.0001"),
    (["--name", "a\nb"], "--name must be at most 255 bytes of printable characters"),
    (["--name", "a" * 256], "--name must be at most 255 bytes"),
])
def test_bad_input_is_one_line_and_touches_nothing(tmp_path, data, capsys, args, message):
    if args == ["-d", "cuda"] and torch.cuda.is_available():
        return  # a GPU machine accepts -d cuda; CI (no GPU) checks the refusal
    try:
        code = _train(tmp_path, data, "-i", "1", *args)
    except SystemExit as e:  # argparse refuses unknown choices itself, also with status 2
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "samples").exists() and not (tmp_path / "ckpt").exists()
    assert not (tmp_path.parent / "escape").exists()


def test_existing_run_is_not_overwritten_without_resume(tmp_path, data, capsys):
    common = ["--model", "cgan", "--image-size", "32", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "2", "--check", "2") == 0
    run = tmp_path / "ckpt" / "r"
    before = snapshot(run)
    capsys.readouterr()
    assert _train(tmp_path, data, *common, "-i", "1", "--check", "1") == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a run (step 2)" in err and "--resume latest" in err and len(err.splitlines()) == 1
    assert snapshot(run) == before


def test_resume_from_another_run_starts_its_own_folder_but_never_writes_over_one(tmp_path, data, capsys):
    common = ["--model", "cgan", "--image-size", "32", "--check", "2"]
    assert _train(tmp_path, data, *common, "-i", "2", "--name", "a") == 0
    source = tmp_path / "ckpt" / "a"
    assert _train(tmp_path, data, *common, "-i", "4", "--name", "b", "--resume", str(source)) == 0
    branch = tmp_path / "ckpt" / "b"
    assert (branch / "config.json").exists() and (tmp_path / "samples" / "b" / "real.png").exists()
    assert [json.loads(l)["step"] for l in (branch / "stats.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    before = snapshot(branch)
    capsys.readouterr()
    assert _train(tmp_path, data, *common, "-i", "4", "--name", "b", "--resume", str(source / "G_2.ckpt")) == 2
    assert "already holds a run (step 4)" in capsys.readouterr().err
    assert snapshot(branch) == before


def test_resume_into_another_sample_folder_writes_the_real_grid_there(tmp_path, data):
    common = ["--model", "cgan", "--image-size", "32", "--check", "2", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "2") == 0
    real = (tmp_path / "samples" / "r" / "real.png").read_bytes()
    assert main(["train", "-t", str(data), "-s", str(tmp_path / "other"), "-c", str(tmp_path / "ckpt"), "--nf", "8",
                 "-b", "8", *common, "-i", "4", "--resume", "-q"]) == 0
    assert (tmp_path / "other" / "r" / "real.png").read_bytes() == real
    assert (tmp_path / "other" / "r" / "fake_step_4.png").exists()


def test_a_branch_under_another_checkpoint_folder_never_samples_among_the_original(tmp_path, data, capsys):
    common = ["--model", "cgan", "--image-size", "32", "--check", "2", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "2") == 0
    original = tmp_path / "ckpt" / "r"
    before = snapshot(tmp_path / "samples")
    capsys.readouterr()
    branch = ["train", "-t", str(data), "-c", str(tmp_path / "other"), *TINY, "-i", "4", "--resume", str(original)]
    assert main([*branch, "-s", str(tmp_path / "samples")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'other' / 'r'}: a branch of {original} would write its images into " \
           f"{tmp_path / 'samples' / 'r'}, among the original's" in err
    assert main(branch) == 2  # the snapshot's -s, taken as it is on a resume: the same folder
    assert snapshot(tmp_path / "samples") == before and not (tmp_path / "other").exists()
    assert main([*branch, "-s", str(tmp_path / "mine")]) == 0 and (tmp_path / "mine" / "r" / "fake_step_4.png").exists()


def test_a_log_file_gets_a_stats_line_every_log_every_steps(tmp_path, data, capsys):
    args = ["train", "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "--nf", "8", "-b", "8",
            "--model", "cgan", "--image-size", "32", "-i", "5", "--log-every", "2", "--sample", "100"]
    capsys.readouterr()
    assert main(args) == 0  # stderr is not a terminal here: no bar, lines
    steps = [line.split()[1] for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert steps == ["2", "4", "5"]  # and the last, partial one


def test_resume_with_changed_settings_says_which(tmp_path, data, capsys):
    common = ["train", "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "--nf", "8",
              "-b", "8", "--model", "cgan", "--image-size", "32", "--name", "r"]
    assert main([*common, "-i", "2", "--check", "2", "-q"]) == 0
    capsys.readouterr()
    assert main([*common, "-i", "3", "--resume", "--loss", "hinge", "--seed", "5"]) == 0
    err = capsys.readouterr().err
    assert "note: continuing with changed settings: --loss bce -> hinge, --seed 0 -> 5; --seed has no effect" in err


def test_resume_on_data_with_other_labels_says_so(tmp_path, data, capsys):
    from conftest import write_json_layout
    clevr = write_json_layout(tmp_path / "clevr")
    common = ["--model", "cgan", "--image-size", "32", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "2", "--check", "2") == 0
    capsys.readouterr()
    assert _train(tmp_path, clevr, *common, "-i", "3", "--resume") == 2
    err = capsys.readouterr().err
    assert "was trained on labels hair (12) + eye (10), but -t" in err and "objects (24)" in err, err
    assert err.count("\n") == 1 and not (clevr / "cache").exists()  # refused before packing that set


def test_unwritable_checkpoint_folder_leaves_no_sample_folder(tmp_path, data, capsys):
    (tmp_path / "afile").write_text("")
    code = main(["train", "-t", str(data), "--model", "cgan", "--image-size", "32", "-i", "1", "-q",
                 "-s", str(tmp_path / "samples"), "-c", str(tmp_path / "afile"), "--name", "r"])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'afile'} is a file, not a folder" in err
    assert not (tmp_path / "samples").exists()


def test_resume_with_a_d_file_of_another_model_names_that_file(tmp_path, data, capsys):
    assert _train(tmp_path / "a", data, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2",
                  "--name", "r") == 0
    assert _train(tmp_path / "b", data, "--model", "acgan-dcgan", "--image-size", "32", "-i", "2",
                  "--check", "2", "--name", "r") == 0
    run = tmp_path / "a" / "ckpt" / "r"
    (run / "D_2.ckpt").write_bytes((tmp_path / "b" / "ckpt" / "r" / "D_2.ckpt").read_bytes())
    capsys.readouterr()
    assert _train(tmp_path / "a", data, "--model", "cgan", "--image-size", "32", "-i", "3", "--name", "r",
                  "--resume") == 2
    err = capsys.readouterr().err  # (the files' run_path says first that they are of two runs)
    assert f"{run / 'D_2.ckpt'}: holds step 2 of {tmp_path / 'b' / 'ckpt' / 'r'}, not the step 2 of G_2.ckpt" in err
    d = torch.load(run / "D_2.ckpt", weights_only=True)
    del d["run_path"]  # a snapshot written before run_path was: the weights still do not fit
    torch.save(d, run / "D_2.ckpt")
    assert _train(tmp_path / "a", data, "--model", "cgan", "--image-size", "32", "-i", "3", "--name", "r",
                  "--resume") == 2
    assert f"{run / 'D_2.ckpt'}: does not match this model" in capsys.readouterr().err


def _unlabelled_folder(folder: Path) -> Path:
    from PIL import Image
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 40), (i * 50, 0, 0)).save(folder / f"{i}.png")
    return folder


def test_conditional_model_on_unlabelled_folder(tmp_path, data, capsys):
    folder = _unlabelled_folder(tmp_path / "faces")
    assert _train(tmp_path, folder, "--model", "cgan", "-i", "1") == 2
    assert "has no labels" in capsys.readouterr().err
    assert not (tmp_path / "samples").exists() and not (tmp_path / "ckpt").exists()
    assert _train(tmp_path, folder, "--model", "dcgan", "-i", "1", "--image-size", "32", "--check", "1") == 0


def test_unconditional_wgan_gp_follows_the_messages_to_dcgan_gp(tmp_path, data, capsys):
    """Seed 004's WGAN-GP on an unlabelled folder: each refusal names a command that works."""
    folder = _unlabelled_folder(tmp_path / "faces")
    assert _train(tmp_path, folder, "--model", "wgan-gp", "-i", "1") == 2
    assert "use --model dcgan (or dcgan-gp, a WGAN-GP)" in capsys.readouterr().err
    assert _train(tmp_path, folder, "--model", "dcgan", "--loss", "wgan-gp", "-i", "1", "--image-size", "32") == 2
    assert "BatchNorm in dcgan's D mixes across the batch; use --model dcgan-gp" in capsys.readouterr().err
    assert main(["train", "--model", "dcgan", "--loss", "wgan-gp", "--dry-run"]) == 2  # --dry-run checks it too
    assert "use --model dcgan-gp" in capsys.readouterr().err
    assert _train(tmp_path, folder, "--model", "dcgan-gp", "-i", "2", "--image-size", "32", "--check", "2",
                  "--name", "gp") == 0
    config = json.loads((tmp_path / "ckpt" / "gp" / "config.json").read_text())
    assert config["hyper"]["loss"] == "wgan-gp" and config["hyper"]["n_critic"] == 5
    from anime_gan.models import ModelConfig, build
    _, D = build("dcgan-gp", ModelConfig(cond_dim=0, nf=8, image_size=32))
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in D.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())


def test_empty_data_folder_gets_the_built_in_set(tmp_path):
    # a fresh clone's data/ holds only .gitignore: that is still an empty data folder
    empty = tmp_path / "clone_data"
    empty.mkdir()
    (empty / ".gitignore").write_text("*\n!.gitignore\n")
    assert _train(tmp_path, empty, "--model", "cgan", "--image-size", "32", "-i", "1", "--check", "1",
                  "--synthetic-size", "24") == 0
    assert (empty / "tags.pickle").exists() and (empty / "cache" / "images_32.npy").exists()
    assert (empty / ".gitignore").read_text() == "*\n!.gitignore\n"


def test_default_data_folder_is_drawn_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _train(tmp_path, "data", "--model", "cgan", "--image-size", "32", "-i", "1", "--check", "1",
                  "--synthetic-size", "24") == 0
    assert (tmp_path / "data" / "cache" / "images_32.npy").exists()


def test_a_mistyped_data_folder_is_an_error_not_procedural_faces(tmp_path, cli):
    err = one_line_error(cli("train", "-t", tmp_path / "dtaa", "-c", tmp_path / "ckpt", "-s", tmp_path / "s",
                             "-d", "cpu", "-i", "1", *TINY), "dtaa", "no such data folder")
    assert not (tmp_path / "dtaa").exists() and not (tmp_path / "ckpt").exists(), err
    labels = tmp_path / "tags.pickle"  # a file of the data set, not its folder: read-side advice
    labels.write_bytes(b"x")
    one_line_error(cli("train", "-t", labels, "-c", tmp_path / "ckpt", "-s", tmp_path / "s", "-d", "cpu", *TINY),
                   labels, "is a file; -t takes the data folder that holds it")
    assert labels.read_bytes() == b"x"


def test_eval_every_logs_metrics_without_changing_the_run(tmp_path, data):
    assert main(["train-judge", "-t", str(data), "--image-size", "32", "--width", "8", "--epochs", "1", "--batch-size", "16"]) == 0
    common = ["--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2"]
    assert _train(tmp_path / "plain", data, *common, "--name", "r") == 0
    assert _train(tmp_path / "eval", data, *common, "--name", "r", "--eval-every", "1") == 0
    run = tmp_path / "eval" / "ckpt" / "r"
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2]
    assert {"hair", "eye", "joint"} <= lines[0]["metrics"]["accuracy"].keys()
    assert lines[0]["metrics"]["diversity"]["ratio"] >= 0
    flat = [json.loads(l) for l in (run / "metrics_flat.jsonl").read_text().splitlines()]
    assert [set(f) >= {"step", "judge_fid", "diversity", "acc_joint"} for f in flat] == [True, True]
    assert (run / "metrics.png").exists()
    g_plain, g_eval = (torch.load(tmp_path / n / "ckpt" / "r" / "G_2.ckpt", weights_only=True)["G"]
                       for n in ("plain", "eval"))
    assert _states_equal(g_plain, g_eval), "evaluating during training changed the trajectory"
    # a crash after step 4's evaluation, before its checkpoint: the resume from step 2 evaluates
    # steps 3 and 4 again, and each step is logged once
    assert main(["train", "--resume", str(run), "-i", "4", "-q"]) == 0
    for name in ("G_4.ckpt", "D_4.ckpt"):
        (run / name).unlink()
    assert main(["train", "--resume", str(run), "-i", "4", "-q"]) == 0
    for name in ("metrics.jsonl", "metrics_flat.jsonl"):
        assert [json.loads(l)["step"] for l in (run / name).read_text().splitlines()] == [1, 2, 3, 4]


def test_device_resident_and_streaming_data_paths_give_the_same_run(tmp_path, data):
    """The fast path (whole cache in device memory) against streaming from the memory map."""
    common = ["--model", "acgan-dcgan", "--image-size", "32", "-i", "3", "--check", "3", "--seed", "3"]
    for mode in ("on", "off"):
        assert _train(tmp_path / mode, data, *common, "--name", "r", "--data-on-device", mode) == 0

    def losses(mode):
        return [{k: v for k, v in json.loads(l).items() if k != "img_per_s"}
                for l in (tmp_path / mode / "ckpt" / "r" / "stats.jsonl").read_text().splitlines()]
    assert losses("on") == losses("off") and len(losses("on")) == 3
    g_on, g_off = (torch.load(tmp_path / m / "ckpt" / "r" / "G_3.ckpt", weights_only=True)["G"] for m in ("on", "off"))
    assert _states_equal(g_on, g_off)


@pytest.mark.parametrize("flag", [[], ["--deterministic"]])
def test_deterministic_flag_reaches_the_cuda_settings(cli, monkeypatch, builtin_set, tmp_path, flag):
    """`train -d cuda [--deterministic]` hands the flag to _configure_cuda (stopped right there)."""
    import anime_gan.train as train_module

    class Reached(Exception):
        pass

    seen = []

    def configure(deterministic):
        seen.append(deterministic)
        raise Reached

    monkeypatch.setattr(train_module.distributed, "pick_device", lambda name, local_rank=None: torch.device("cuda"))
    monkeypatch.setattr(train_module, "_configure_cuda", configure)
    with pytest.raises(Reached):
        cli("train", "-t", builtin_set, "-c", tmp_path / "c", "-s", tmp_path / "s", "-d", "cuda", "-i", 1, *flag)
    assert seen == [bool(flag)]


def test_cuda_settings_for_speed_or_determinism(monkeypatch):
    """What train sets on a GPU (the settings are global flags, so the CPU can check them)."""
    from anime_gan.train import _configure_cuda
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        _configure_cuda(deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        _configure_cuda(deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


# ---- refusals before the first step ------------------------------------------------------------

def test_a_batch_too_big_for_memory_is_refused_before_anything_is_written(tmp_path, data, capsys, monkeypatch):
    """On the CPU, Linux's OOM killer would end such a run with no message (exit 137)."""
    assert _train(tmp_path, data, "--model", "cgan", "-b", "1000000", "-i", "1", "--name", "r") == 2
    err = capsys.readouterr().err
    assert err.startswith("anime-gan train: error: -b 1000000: one step of cgan at 64px needs about")
    assert "or less" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "samples").exists()
    from anime_gan import distributed
    monkeypatch.setattr(distributed, "free_memory", lambda device: 1000)
    assert _train(tmp_path, data, "--model", "cgan", "-i", "1", "--name", "r") == 2
    assert "use a smaller --nf or --image-size" in capsys.readouterr().err


def test_the_memory_probe_changes_no_state(data):
    from anime_gan.models import ModelConfig, build
    from anime_gan.step import saved_bytes_per_image
    sizes = {}
    for nf in (8, 16):
        torch.manual_seed(0)
        G, D = build("acgan-dcgan", ModelConfig(nf=nf, image_size=32))
        before, rng = [{k: v.clone() for k, v in m.state_dict().items()} for m in (G, D)], torch.get_rng_state()
        sizes[nf] = saved_bytes_per_image(G, D, 100, 22, 32)
        assert G.training and D.training and torch.equal(rng, torch.get_rng_state())
        assert all(_states_equal(b, m.state_dict()) for b, m in zip(before, (G, D)))  # BatchNorm stats too
    assert 0 < sizes[8] < sizes[16]  # activations grow with width


def test_sync_bn_does_not_slip_batchnorm_past_the_gradient_penalty_check(tmp_path, data, capsys, monkeypatch):
    from anime_gan import distributed
    monkeypatch.setattr(distributed, "setup", lambda: distributed.Dist(0, 0, 2))  # as if under torchrun
    monkeypatch.setattr(distributed.Dist, "barrier", lambda self: None)
    assert _train(tmp_path, data, "--model", "cgan", "--loss", "wgan-gp", "--sync-bn", "-i", "1") == 2
    assert "BatchNorm in cgan's D mixes across the batch" in capsys.readouterr().err


def test_acgan_on_labels_mixing_one_of_and_multi_label_groups(tmp_path, capsys):
    """A schema.json may mix both kinds; ACGAN's class head cannot, and says so. cgan trains on it."""
    from anime_gan.labels import Schema
    from conftest import draw
    src = tmp_path / "src"
    schema = Schema.from_dict({"groups": [{"name": "hair", "classes": ["red", "blue"]},
                                          {"name": "objects", "classes": ["cube", "ball", "cone"], "multi": True}]})
    src.mkdir()
    schema.save(src)
    tags = {}
    for i in range(8):
        draw(src / "images" / f"{i}.png", (40 * i, 0, 0))
        tags[i] = torch.tensor([float(i % 2 == 0), float(i % 2), 1.0, float(i % 3 == 0), 0.0])
    (src / "tags.pickle").write_bytes(__import__("pickle").dumps(tags))
    data = tmp_path / "data"
    assert main(["prepare", str(src), "-o", str(data), "--image-size", "32", "-q"]) == 0
    for model in ("acgan", "acgan-dcgan"):
        assert _train(tmp_path, data, "--model", model, "--image-size", "32", "-i", "1", "--name", model) == 2
        err = capsys.readouterr().err
        assert "mixes both (hair, objects)" in err and len(err.splitlines()) == 1
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--name", "c") == 0
    assert checkpoint.steps(tmp_path / "ckpt" / "c") == [2]


def _trainer_state(run: Path, scaler):
    """A TrainState shaped like `run`'s cgan, for restore_snapshot, with the given GradScaler."""
    from anime_gan.config import TrainConfig
    from anime_gan.models import ModelConfig, build
    from anime_gan.distributed import Dist
    from anime_gan.train import _Accumulator
    g = torch.load(run / "G_2.ckpt", weights_only=True)
    m = dict(g["model"], class_sizes=tuple(g["model"]["class_sizes"]))
    G, D = build("cgan", ModelConfig(**m))
    opts = [torch.optim.Adam(n.parameters(), lr=2e-4, betas=(0.5, 0.999)) for n in (G, D)]
    state = checkpoint.TrainState(G, D, None, *opts, scaler, torch.Generator().manual_seed(0), _Accumulator("cpu", Dist()))
    return state, TrainConfig.from_dict(g["config"]), g["schema"]


def test_resume_in_fp16_from_another_precision_starts_a_fresh_loss_scale(tmp_path, data):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2", "--name", "r") == 0
    run, notes = tmp_path / "ckpt" / "r", []
    state, cfg, schema = _trainer_state(run, torch.amp.GradScaler("cpu", enabled=True))  # fp16's scaler
    step, _, _, reseeded = checkpoint.restore_snapshot(run / "G_2.ckpt", state, cfg, schema, notes.append)
    assert step == 2 and not reseeded and notes == ["note: G_2.ckpt was trained in fp32, so fp16 starts with a fresh loss scale"]
    assert state.scaler.get_scale() == torch.amp.GradScaler("cpu").get_scale()


def test_resume_on_another_kind_of_device_reseeds_the_batch_stream(tmp_path, data, capsys):
    """A CUDA generator's state (16 bytes) cannot be loaded into a CPU one (5056): say so, reseed the same way."""
    common = ["--model", "cgan", "--image-size", "32", "--check", "2", "--name", "r"]
    for copy in ("a", "b", "c"):
        assert _train(tmp_path / copy, data, *common, "-i", "2") == 0
        d_path = tmp_path / copy / "ckpt" / "r" / "D_2.ckpt"
        d = torch.load(d_path, weights_only=True)
        d["rng"].update(gen=torch.zeros(16, dtype=torch.uint8), gen_device="cuda")  # as a GPU run saves it
        torch.save(d, d_path)
        capsys.readouterr()
        assert main(["train", "-t", str(data), "-s", str(tmp_path / copy / "samples"), "-c", str(tmp_path / copy / "ckpt"),
                     "--nf", "8", "-b", "8", *common, "-i", "3", "--resume", *(["--seed", "5"] if copy == "c" else [])
                     ]) == 0  # not -q: notes show
        err = capsys.readouterr().err
        assert "note: G_2.ckpt drew its batches on cuda; on cpu the batch stream is reseeded" in err
    # here --seed does choose the new stream, and the note says so rather than "no effect"
    assert "--seed 0 -> 5; --seed seeds the random streams drawn anew" in err and "no effect" not in err
    ga, gb, gc = (torch.load(tmp_path / c / "ckpt" / "r" / "G_3.ckpt", weights_only=True)["G"] for c in "abc")
    assert _states_equal(ga, gb) and not _states_equal(ga, gc)


def test_snapshots_keep_only_the_training_devices_cuda_stream(tmp_path, data):
    """A GPU run resumed on a machine with fewer GPUs must not index a stream that is not there."""
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2", "--name", "r") == 0
    rng = torch.load(tmp_path / "ckpt" / "r" / "D_2.ckpt", weights_only=True)["rng"]
    assert rng["gen_device"] == "cpu" and len(rng["cuda"]) == 0


def test_resume_path_alone_continues_that_run_in_its_own_folder(tmp_path, data, cli):
    common = ["--model", "cgan", "--image-size", "32", "--check", "2"]
    assert _train(tmp_path, data, *common, "-i", "2", "--name", "mine") == 0
    run = tmp_path / "ckpt" / "mine"
    # no --name and no -c: the run folder given to --resume is the one continued
    assert main(["train", "-t", str(data), "-s", str(tmp_path / "samples"), *TINY,
                 *common, "-i", "4", "--resume", str(run)]) == 0
    assert checkpoint.resumable_steps(run) == [2, 4]
    assert [json.loads(l)["step"] for l in (run / "stats.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    one_line_error(cli("train", "-t", data, "-c", tmp_path / "ckpt", *common, "-i", "6", "--resume",
                       tmp_path / "ckpt" / "nope"), "nope: no such run folder or checkpoint")


def test_resume_with_a_new_lr_and_beta_trains_with_them(tmp_path, data, capsys):
    """An optimizer's state_dict carries its lr and betas; loading it must not undo the flags given now."""
    common = ["--model", "acgan-dcgan", "--image-size", "32", "--check", "2", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "2") == 0
    assert _train(tmp_path, data, *common, "-i", "4", "--resume", "--glr", "1e-5", "--beta", "0.9") == 0
    saved = torch.load(tmp_path / "ckpt" / "r" / "D_4.ckpt", weights_only=True)
    g_group, d_group = saved["opt_G"]["param_groups"][0], saved["opt_D"]["param_groups"][0]
    assert g_group["lr"] == 1e-5 and tuple(g_group["betas"]) == (0.9, 0.999)
    assert d_group["lr"] == 2e-4 and tuple(d_group["betas"]) == (0.9, 0.999)


def test_a_bare_resume_continues_with_the_settings_the_run_was_started_with(tmp_path, data, capsys):
    """Flags left out on resume come from the snapshot: -i, --lr, --ema-decay, --check ... do not revert."""
    first = ["--model", "cgan", "--image-size", "32", "--name", "r"]
    assert _train(tmp_path, data, *first, "-i", "4", "--check", "2", "--lr", "1e-4", "--ema-decay", "0.9") == 0
    (tmp_path / "ckpt" / "r" / "G_4.ckpt").unlink()  # as if stopped at step 2
    (tmp_path / "ckpt" / "r" / "D_4.ckpt").unlink()
    capsys.readouterr()
    assert main(["train", "-t", str(data), "-s", str(tmp_path / "samples"), "-c", str(tmp_path / "ckpt"),
                 "--nf", "8", "-b", "8", "--model", "cgan", "--image-size", "32", "--name", "r", "--resume"]) == 0
    assert "changed settings" not in capsys.readouterr().err
    run = tmp_path / "ckpt" / "r"
    assert checkpoint.resumable_steps(run) == [2, 4]  # -i 4 and --check 2, not the defaults 50000 and 2000
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["lr"], train["ema_decay"], train["iterations"]) == (1e-4, 0.9, 4)
    assert torch.load(run / "D_4.ckpt", weights_only=True)["opt_G"]["param_groups"][0]["lr"] == 1e-4


def test_resume_of_a_run_folder_needs_none_of_its_flags(tmp_path, data):
    assert _train(tmp_path, data, "--model", "wgan-gp", "--image-size", "32", "--nf", "4", "-i", "2",
                  "--check", "2", "--name", "w") == 0
    run = tmp_path / "ckpt" / "w"
    assert main(["train", "--resume", str(run), "-i", "3", "-q"]) == 0  # model, nf, data, -s: all its own
    assert checkpoint.resumable_steps(run) == [2, 3]
    assert (tmp_path / "samples" / "w" / "fake_step_3.png").exists()


def test_a_typed_lr_on_resume_overrides_the_runs_glr_and_dlr(tmp_path, data):
    common = ["--model", "cgan", "--image-size", "32", "--check", "2", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "2", "--glr", "1e-4", "--dlr", "4e-4") == 0
    assert _train(tmp_path, data, *common, "-i", "3", "--resume", "--lr", "5e-5", "--check", "3") == 0
    saved = torch.load(tmp_path / "ckpt" / "r" / "D_3.ckpt", weights_only=True)
    assert [saved[o]["param_groups"][0]["lr"] for o in ("opt_G", "opt_D")] == [5e-5, 5e-5]


def test_resume_dot_from_inside_the_run_folder(tmp_path, data, monkeypatch):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2",
                  "--name", "r") == 0
    monkeypatch.chdir(tmp_path / "ckpt" / "r")
    assert main(["train", "--resume", ".", "-i", "3", "-q"]) == 0
    assert checkpoint.resumable_steps(tmp_path / "ckpt" / "r") == [2, 3]


def test_a_no_op_resume_elsewhere_makes_no_folder_and_keeps_the_log(tmp_path, data, capsys):
    common = ["--model", "cgan", "--image-size", "32", "--check", "2", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "4") == 0
    run = tmp_path / "ckpt" / "r"
    before = snapshot(run)
    assert main(["train", "--resume", str(run / "G_2.ckpt"), "-i", "2"]) == 0  # in place, older step
    assert main(["train", "--resume", str(run / "G_2.ckpt"), "-i", "2", "--name", "branch",
                 "-c", str(tmp_path / "ckpt"), "-s", str(tmp_path / "samples")]) == 0
    assert "step 2 already reaches -i 2: nothing to train" in capsys.readouterr().err
    assert snapshot(run) == before  # stats.jsonl still holds steps 3 and 4
    assert not (tmp_path / "ckpt" / "branch").exists() and not (tmp_path / "samples" / "branch").exists()


def test_resume_from_another_folder_does_not_report_a_changed_data_folder(tmp_path, data, monkeypatch, capsys):
    import shutil
    (tmp_path / "a").mkdir()
    shutil.copytree(data, tmp_path / "a" / "data")
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "-t", "data", "--nf", "8", "-b", "8", "--model", "cgan", "--image-size", "32",
                 "-i", "2", "--check", "2", "--name", "r", "-q"]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["train", "--resume", "a/checkpoints/r", "-i", "3"]) == 0  # the last step draws a snapshot
    err = capsys.readouterr().err
    assert "resumed r from step 2" in err and "changed settings" not in err, err
    # without -s the snapshots go on where the run put them (a/samples/r), not into ./samples/r
    assert (tmp_path / "a" / "samples" / "r" / "fake_step_3.png").is_file() and not (tmp_path / "samples").exists()


def test_resuming_an_older_step_in_place_never_writes_over_later_ones(tmp_path, data, cli):
    common = ["--model", "cgan", "--image-size", "32", "--check", "2", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "4") == 0
    run = tmp_path / "ckpt" / "r"
    before = snapshot(run)
    one_line_error(cli("train", "--resume", run / "G_2.ckpt", "-i", "6", "--lr", "1e-3"),
                   "holds steps after G_2.ckpt (up to 4)", "branch with --name NEW")
    assert snapshot(run) == before
    assert main(["train", "--resume", str(run / "G_2.ckpt"), "-i", "3", "--name", "branch", "-q"]) == 0
    assert checkpoint.resumable_steps(tmp_path / "ckpt" / "branch") == [3]


def test_resume_checks_the_architecture_before_packing_data(tmp_path, data, cli):
    import shutil
    own = shutil.copytree(data, tmp_path / "data")
    assert _train(tmp_path, own, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2", "--name", "r") == 0
    (own / "cache" / "images_64.npy").unlink()
    one_line_error(cli("train", "--resume", tmp_path / "ckpt" / "r", "-i", "3", "--image-size", "64"),
                   "was trained with --image-size 32, not 64")
    assert not (own / "cache" / "images_64.npy").exists()


def test_resume_where_the_data_moved_asks_for_its_new_place(tmp_path, data, cli):
    import shutil
    own = shutil.copytree(data, tmp_path / "data")
    assert _train(tmp_path, own, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2", "--name", "r") == 0
    own.rename(tmp_path / "moved")
    one_line_error(cli("train", "--resume", tmp_path / "ckpt" / "r", "-i", "3"),
                   "the data folder this run was trained on is not here; pass its new place with -t")
    assert not own.exists()
    assert main(["train", "--resume", str(tmp_path / "ckpt" / "r"), "-i", "3", "-t", str(tmp_path / "moved"), "-q"]) == 0


def test_resume_with_a_typed_c_continues_the_run_there(tmp_path, data):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--check", "2", "--name", "r") == 0
    assert main(["train", "--resume", str(tmp_path / "ckpt" / "r"), "-i", "3", "-c", str(tmp_path / "c2"),
                 "-s", str(tmp_path / "s2"), "-q"]) == 0  # (its own -s: see the test of branches above)
    assert checkpoint.resumable_steps(tmp_path / "c2" / "r") == [3]
    assert checkpoint.resumable_steps(tmp_path / "ckpt" / "r") == [2]


def test_changed_settings_show_resolved_rates_and_every_training_flag(tmp_path, data, capsys):
    common = ["--model", "cgan", "--image-size", "32", "--check", "2", "--name", "r"]
    assert _train(tmp_path, data, *common, "-i", "2", "--lr", "3e-4") == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "ckpt" / "r"), "-i", "3", "--glr", "5e-4", "--ema-decay", "0.9",
                 "--check", "1"]) == 0
    assert ("note: continuing with changed settings: --glr 0.0003 -> 0.0005, --check 2 -> 1, --ema-decay 0.999 -> 0.9"
            in capsys.readouterr().err)


def test_a_resume_that_drops_sync_bn_says_so():
    """--sync-bn is this session's to choose (CPU ranks cannot have it), but BatchNorm's statistics
    change with it: a resume without it is told."""
    from anime_gan.config import TrainConfig
    from anime_gan.train import _changed_settings
    assert _changed_settings(TrainConfig(sync_bn=True), TrainConfig(), penalty=False) == "--sync-bn True -> False"
    assert _changed_settings(TrainConfig(device="cuda"), TrainConfig(), penalty=False) == ""


def test_sync_bn_in_a_single_process_is_noted_not_silently_accepted(tmp_path, data, capsys):
    assert main(["train", "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "--nf", "8",
                 "-b", "8", "--model", "cgan", "--image-size", "32", "-i", "1", "--sync-bn"]) == 0
    assert "note: --sync-bn shares BatchNorm statistics between torchrun's processes; one process: ignored" \
        in capsys.readouterr().err


def test_dry_run_refuses_a_data_folder_the_real_run_would_refuse(tmp_path, cli):
    one_line_error(cli("train", "-t", tmp_path / "typo", "--dry-run"), f"{tmp_path / 'typo'}: no such data folder")
    (tmp_path / "a_file").write_text("")
    one_line_error(cli("train", "-t", tmp_path / "a_file", "--dry-run"), "is a file; -t takes the data folder")
    # a folder holding only that file has no labelled images, as the real run finds too
    one_line_error(cli("train", "-t", tmp_path, "--dry-run"), "is conditional but this folder has no labels")
    (tmp_path / "a_file").unlink()
    assert cli("train", "-t", tmp_path, "--dry-run")[0] == 0  # empty: the built-in faces would be drawn


def test_tensorboard_hides_the_steps_a_resume_trains_again(tmp_path, data, monkeypatch):
    """TensorBoard itself is optional (not a test dependency): a stand-in SummaryWriter records how
    each session opens the log. A resume from step 2 purges the old events from step 3 on."""
    import sys
    import types
    opened = []

    class Writer:
        def __init__(self, log_dir, purge_step=None):
            opened.append(purge_step)

        def __getattr__(self, name):  # add_scalar, add_images, close, ...
            return lambda *args, **kwargs: None

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    common = ["--model", "cgan", "--image-size", "32", "--check", "2", "--name", "r", "--tensorboard"]
    assert _train(tmp_path, data, *common, "-i", "4") == 0
    for later in ("G_4.ckpt", "D_4.ckpt"):
        (tmp_path / "ckpt" / "r" / later).unlink()
    assert _train(tmp_path, data, *common, "-i", "4", "--resume") == 0
    assert opened == [None, 3]


def test_a_g_file_away_from_its_run_folder_samples_as_its_run(tmp_path, data, cli, monkeypatch, capsys):
    """downloads/G_2.ckpt of two runs: each writes into its own run's sample folder, not both into
    samples/downloads, where the second would replace the first's grids."""
    import shutil
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--name", name) == 0
        (tmp_path / "downloads").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "ckpt" / name / "G_2.ckpt", tmp_path / "downloads" / f"{name}_G_2.ckpt")
        # the run is still there: its sample folder is its own, so the copy asks for -s
        one_line_error(cli("test", "-d", tmp_path / "downloads" / f"{name}_G_2.ckpt", "--dry-run"),
                       f"{tmp_path / 'downloads' / f'{name}_G_2.ckpt'}: a copy of a G file of the run", "pass -s FOLDER")
        shutil.rmtree(tmp_path / "ckpt" / name)
    outs = []
    for name in ("a", "b"):  # the runs gone: each file's grids go beside its own run's snapshots
        rc, out, err = cli("test", "-d", tmp_path / "downloads" / f"{name}_G_2.ckpt", "-t", "fix_noise")
        assert rc == 0, err
        outs.append(out.strip())
    assert outs == [str(tmp_path / "samples" / n / "fix_noise.png") for n in ("a", "b")]
    # a G file inside a run folder is that folder's, renamed or copied, as the folder itself is
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--name", "c") == 0
    shutil.copytree(tmp_path / "ckpt" / "c", tmp_path / "ckpt" / "c_copy")
    (tmp_path / "ckpt" / "c").rename(tmp_path / "ckpt" / "c_renamed")
    capsys.readouterr()  # (train printed its run folder)
    for folder in ("c_copy", "c_renamed"):
        for model in (tmp_path / "ckpt" / folder, tmp_path / "ckpt" / folder / "G_2.ckpt"):
            rc, out, err = cli("test", "-d", model, "-t", "fix_noise", "--dry-run")
            assert rc == 0, err
            assert json.loads(out)["sample_dir"] == str(tmp_path / "samples" / folder)
    # but a G file of another run dropped into a run folder would draw into that run's samples
    assert _train(tmp_path, data, "--model", "dcgan", "--image-size", "32", "-i", "2", "--name", "d") == 0
    shutil.copy(tmp_path / "ckpt" / "d" / "G_2.ckpt", tmp_path / "ckpt" / "c_renamed" / "G_3.ckpt")
    torch.save(dict(torch.load(tmp_path / "ckpt" / "c_renamed" / "G_3.ckpt", weights_only=True), step=3),
               tmp_path / "ckpt" / "c_renamed" / "G_3.ckpt")
    capsys.readouterr()
    one_line_error(cli("test", "-d", tmp_path / "ckpt" / "c_renamed", "-t", "samples", "--dry-run"),
                   f"{tmp_path / 'ckpt' / 'c_renamed' / 'G_3.ckpt'}: saved by another run", "pass -s FOLDER")
    assert cli("test", "-d", tmp_path / "ckpt" / "c_renamed", "-t", "samples", "-s", tmp_path / "own")[0] == 0
    # (progress reads the folder's own snapshots, whichever G file is the latest)
    assert cli("test", "-d", tmp_path / "ckpt" / "c_renamed", "-t", "progress", "--dry-run")[0] == 0


def test_resume_of_a_run_name_suggests_its_folder(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "r1").mkdir(parents=True)
    one_line_error(cli("train", "--resume", "r1"), "r1: no such run folder or checkpoint; did you mean checkpoints/r1?")


def test_a_batch_larger_than_the_data_set_is_noted(tmp_path, builtin_set, capsys):
    assert main(["train", "-t", str(builtin_set), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), "--nf", "8",
                 "-b", "128", "--model", "cgan", "-i", "1", "--check", "1", "-d", "cpu"]) == 0
    assert "note: -b 128 is more than the 120 images in" in capsys.readouterr().err


def test_a_copied_run_does_not_write_into_the_originals_sample_folder(tmp_path, data, cli):
    import shutil
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "2", "--name", "r") == 0
    shutil.copytree(tmp_path / "ckpt" / "r", tmp_path / "exp" / "r")
    before = snapshot(tmp_path / "samples" / "r")
    copy = tmp_path / "exp" / "r"
    one_line_error(cli("test", "-d", copy, "-t", "fix_noise"), f"{copy}: a copy of the run",
                   f"{tmp_path / 'samples' / 'r'}; pass -s FOLDER")
    one_line_error(cli("train", "--resume", copy, "-i", "4"), f"{copy}: a copy of the run")
    assert snapshot(tmp_path / "samples" / "r") == before
    # with -s, or under another name, the copy's images go elsewhere
    assert cli("test", "-d", copy, "-t", "fix_noise", "-s", tmp_path / "own")[0] == 0
    assert cli("train", "--resume", copy, "-i", "4", "-s", tmp_path / "own_root")[0] == 0
    assert (tmp_path / "own_root" / "r" / "fake_step_4.png").exists()
    # a run moved away (the original gone) still writes beside its snapshots (G_4, written by the
    # resume above, has its own)
    shutil.rmtree(tmp_path / "ckpt" / "r")
    assert cli("test", "-d", copy / "G_2.ckpt", "-t", "fix_noise")[0] == 0
    assert (tmp_path / "samples" / "r" / "fix_noise.png").exists()
    assert cli("test", "-d", copy, "-t", "fix_noise")[0] == 0
    assert (tmp_path / "own_root" / "r" / "fix_noise.png").exists()


def test_a_cut_short_checkpoint_names_the_step_to_use_instead(tmp_path, data, cli):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "4", "--check", "2",
                  "--name", "r") == 0
    run = tmp_path / "ckpt" / "r"
    for name in ("G_4.ckpt", "D_4.ckpt"):
        shutil_copy = run / f"{name}.bak"
        shutil_copy.write_bytes((run / name).read_bytes())
        (run / name).write_bytes((run / name).read_bytes()[:3000])
        one_line_error(cli("train", "--resume", run, "-i", "6"), f"{run / name}: corrupt or cut short",
                       f"delete G_4.ckpt and D_4.ckpt and use step 2 ({run / 'G_2.ckpt'})")
        (run / name).write_bytes(shutil_copy.read_bytes())
        shutil_copy.unlink()


def test_resume_checks_the_d_file_before_suggesting_a_branch_and_blames_a_typed_t(tmp_path, data, cli):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "4", "--check", "2",
                  "--name", "r") == 0
    run = tmp_path / "ckpt" / "r"
    (run / "D_2.ckpt").unlink()
    one_line_error(cli("train", "--resume", run / "G_2.ckpt", "-i", "6"), "D_2.ckpt: missing")
    one_line_error(cli("train", "--resume", run, "-i", "6", "-t", tmp_path / "typo", "--name", "b"),
                   f"{tmp_path / 'typo'}: no such data folder; check -t")


@pytest.mark.parametrize("flags, needle", [(["--n-critic", "20000"], "--n-critic 20000 is more than 100"),
                                           (["--nf", "100000"], "--nf 100000 is more than 1024"),
                                           (["--d-nf", "5000"], "--d-nf 5000 is more than 1024"),
                                           (["--z-dim", "100000000"], "--z-dim 100000000 is more than 4096")])
def test_sizes_that_cannot_fit_are_refused_before_anything_is_built(tmp_path, data, cli, flags, needle):
    """(--n-critic 20000 drew 63 GB of D batches before the first update; the error blamed -b.)"""
    for dry_run in ([], ["--dry-run"]):
        one_line_error(cli("train", "-t", data, "-c", tmp_path / "c", "-s", tmp_path / "s", *flags, *dry_run), needle)
    assert not (tmp_path / "c").exists()


def test_eval_every_with_a_judge_that_sees_no_difference_stops_naming_it(tmp_path, data, cli):
    """A judge whose features are the same for every image would log a judge-FID of 0 at every step."""
    shutil.copytree(data, tmp_path / "d", ignore=shutil.ignore_patterns("judge_*"))
    assert main(["train-judge", "-t", str(tmp_path / "d"), "--image-size", "32", "--width", "8", "--epochs", "1",
                 "--batch-size", "16", "-q"]) == 0
    judge = torch.load(tmp_path / "d" / "judge_32.pt", weights_only=True)
    judge["state_dict"] = {k: torch.zeros_like(v) for k, v in judge["state_dict"].items()}
    torch.save(judge, tmp_path / "d" / "judge_32.pt")
    for dry in (["--dry-run"], []):
        one_line_error(cli("train", "-t", tmp_path / "d", "-s", tmp_path / "s", "-c", tmp_path / "c", *TINY,
                           "--model", "cgan", "--image-size", "32", "-i", "1", "--eval-every", "1", *dry),
                       f"{tmp_path / 'd' / 'judge_32.pt'}: the judge gives two different images the same features",
                       "retrain it with `anime-gan train-judge")
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()  # before training: nothing lost


def test_eval_every_records_which_judge_scored_and_notes_a_weak_one(tmp_path, data, cli):
    from anime_gan.metrics.evaluate import judge_key
    from anime_gan.metrics.judge import load_judge
    shutil.copytree(data, tmp_path / "d", ignore=shutil.ignore_patterns("judge_*"))
    assert main(["train-judge", "-t", str(tmp_path / "d"), "--image-size", "32", "--width", "8", "--epochs", "1",
                 "--batch-size", "16", "-q"]) == 0
    path = tmp_path / "d" / "judge_32.pt"
    judge = torch.load(path, weights_only=True)
    judge["heldout_accuracy"] = {"hair": 0.25, "eye": 0.9}
    torch.save(judge, path)
    rc, _, err = cli("train", "-t", tmp_path / "d", "-s", tmp_path / "s", "-c", tmp_path / "c", *TINY[:-1],
                     "--model", "cgan", "--image-size", "32", "-i", "1", "--eval-every", "1", "--name", "r")
    assert rc == 0 and f"note: {path} is a weak judge (held-out accuracy on real images: hair 0.25)" in err, err
    (line,) = [json.loads(l) for l in (tmp_path / "c" / "r" / "metrics.jsonl").read_text().splitlines()]
    assert line["judge"] == str(path) and line["judge_heldout_accuracy"] == {"hair": 0.25, "eye": 0.9}
    assert line["judge_key"] == judge_key(load_judge(path, "cpu")[0])
    # scored with fewer fakes than `eval`: said in the line, since FIDs compare only at equal numbers
    assert line["settings"] == {"k": 5, "fid_samples": 500, "seed": 99991, "ema": True}
    # a G that draws without labels: accuracy would be chance, not a score (`eval` refuses it)
    rc, _, err = cli("train", "-t", tmp_path / "d", "-s", tmp_path / "s", "-c", tmp_path / "c", *TINY[:-1],
                     "--model", "dcgan", "--image-size", "32", "-i", "1", "--eval-every", "1", "--name", "u")
    assert rc == 0 and ("note: --model dcgan draws without labels, so --eval-every scores judge-FID and "
                        "diversity, not accuracy") in err, err
    (line,) = [json.loads(l) for l in (tmp_path / "c" / "u" / "metrics.jsonl").read_text().splitlines()]
    assert "accuracy" not in line["metrics"] and line["metrics"]["judge_fid"] >= 0
    (flat,) = [json.loads(l) for l in (tmp_path / "c" / "u" / "metrics_flat.jsonl").read_text().splitlines()]
    assert not [k for k in flat if k.startswith("acc_")] and (tmp_path / "c" / "u" / "metrics.png").exists()


def test_dry_run_with_eval_every_needs_the_judge_the_real_run_needs(tmp_path, data, cli):
    for dry_run in ([], ["--dry-run"]):
        one_line_error(cli("train", "-t", data, "-c", tmp_path / "c", "-s", tmp_path / "s", *TINY, "-i", "1",
                           "--eval-every", "1", *dry_run), f"{data / 'judge_64.pt'}: --eval-every needs a judge")


def test_the_snapshot_grid_gives_every_row_a_valid_label():
    """Also for a schema mixing one-of groups with a multi-label one: one class per one-of group."""
    from anime_gan.labels import Group, Schema, multi_label_schema
    from anime_gan.train import fixed_grid
    objects = [f"thing {i}" for i in range(7)]
    mixed = Schema((Group("hair", ("red", "blue", "green")), Group("objects", tuple(objects), multi=True)))
    for schema in (mixed, multi_label_schema(objects)):
        z, labels, rows = fixed_grid(schema, 16, 8, seed=0)
        assert labels.shape == (64, schema.dim) and len(rows) == 8 and torch.equal(z[:8], z[8:16])
        for v in labels[::8].numpy():
            schema.check(v, "grid row")
        assert {int(v.sum()) for v in labels[::8, schema.span("objects")]} == {1, 2}
    assert fixed_grid(multi_label_schema(objects), 16, 8, 0)[2][:5] == [
        "thing 0", "thing 5", "thing 3", "thing 1", "thing 2 thing 6"]  # as before for CLEVR-like sets


def test_what_the_labels_decide_is_refused_before_any_slow_work_and_by_the_dry_run(tmp_path, data, cli):
    """Before: an empty folder got the built-in faces drawn (or a folder its cache packed), and only
    then was the run refused; --dry-run said 0 for all of these."""
    from conftest import write_folder, write_json_layout
    plain, clevr, empty = write_folder(tmp_path / "plain", 3), write_json_layout(tmp_path / "clevr"), tmp_path / "e"
    empty.mkdir()
    out = ["-c", tmp_path / "c", "-s", tmp_path / "s", *TINY, "-i", "1", "--image-size", "32"]
    before = {p: snapshot(p) for p in (plain, clevr, empty)}
    cases = [(["-t", plain, "--model", "cgan"], "--model cgan is conditional but this folder has no labels"),
             (["-t", clevr, "--model", "cgan", "--embed", "rgb"], "--embed rgb needs one-of-N attributes only"),
             (["-t", empty, "--eval-every", "1"], "--eval-every needs a judge"),
             (["-t", plain, "--model", "dcgan", "--eval-every", "1"], "but this data set has none"),
             (["-t", empty, "--tensorboard"], "needs the tensorboard package: pip install tensorboard")]
    for args, needle in cases:
        for dry_run in ([], ["--dry-run"]):
            rc, _, err = cli("train", *args, *out, *dry_run)
            assert rc == 2 and needle in err and err.count("\n") == 1, (args, dry_run, err)
    assert {p: snapshot(p) for p in (plain, clevr, empty)} == before  # nothing drawn, packed or cached
    assert not (tmp_path / "c").exists()
    # a resume onto data with other labels: refused by the dry run too
    assert cli("train", "-t", data, *out, "--model", "cgan", "--name", "r")[0] == 0
    for dry_run in ([], ["--dry-run"]):
        one_line_error(cli("train", "-t", clevr, *out, "-i", "2", "--resume", tmp_path / "c" / "r", *dry_run),
                       "was trained on labels hair (12) + eye (10)")


@pytest.mark.parametrize("flags, needle", [
    (["--precision", "fp16"], "--precision fp16 needs a CUDA GPU"),
    (["--cuda-graph"], "--cuda-graph records the training step on a CUDA GPU"),
])
def test_dry_run_refuses_what_the_cpu_cannot_run(tmp_path, cli, flags, needle):
    for dry_run in (["--dry-run"], []):
        one_line_error(cli("train", "-t", tmp_path, "-d", "cpu", *flags, "-c", tmp_path / "c", "-s", tmp_path / "s",
                           *dry_run), needle)
    assert list(tmp_path.iterdir()) == []


def test_dry_runs_refuse_output_folders_that_are_files(tmp_path, cli, data):
    (tmp_path / "a_file").write_text("")
    for dry_run in (["--dry-run"], []):
        one_line_error(cli("train", "-t", data, "-c", tmp_path / "a_file", "-s", tmp_path / "s", *TINY, "-i", "1",
                           *dry_run), "a_file is a file, not a folder); choose another folder with -s/-c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("has_bf16", [True, False])
def test_bf16_on_the_cpu_trains_and_says_when_the_cpu_emulates_it(tmp_path, data, capsys, monkeypatch, has_bf16):
    """bf16 is the CPU's fast path where the CPU has bf16 units; on one without, it is emulated and
    slower than fp32 (about 3x on such a Xeon), which the run says."""
    from anime_gan import distributed
    monkeypatch.setattr(distributed, "cpu_has_bf16", lambda: has_bf16)
    args = [a for a in TINY if a != "-q"]
    assert main(["train", "-t", str(data), "-s", str(tmp_path / "s"), "-c", str(tmp_path / "c"), *args,
                 "--model", "acgan-dcgan", "-i", "2", "--precision", "bf16", "--name", "r"]) == 0
    err = capsys.readouterr().err
    assert ("no bf16 instructions" in err) == (not has_bf16)
    records = [json.loads(line) for line in (tmp_path / "c" / "r" / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["d_loss"]) for r in records)
    G, cfg, _, _ = checkpoint.load_generator(tmp_path / "c" / "r")
    assert cfg.precision == "bf16" and all(t.dtype == torch.float32 for t in G.state_dict().values()
                                           if t.is_floating_point())  # autocast: the weights stay fp32


def test_a_snapshot_whose_config_disagrees_with_its_weights_is_refused_naming_it(tmp_path, data, capsys):
    assert _train(tmp_path, data, "--model", "cgan", "--image-size", "32", "-i", "1", "--name", "r") == 0
    g_path = tmp_path / "ckpt" / "r" / "G_1.ckpt"
    good = torch.load(g_path, weights_only=True)
    for key, value in (("nf", 16), ("embed", "nope")):
        g = torch.load(g_path, weights_only=True)
        g["config"][key] = value  # edited by hand
        torch.save(g, g_path)
        for args in (["train", "--resume", str(g_path), "-i", "2", "--dry-run"],
                     ["test", "-d", str(g_path), "-s", str(tmp_path / "t"), "--dry-run"]):
            capsys.readouterr()
            assert main(args) == 2
            assert f"{g_path}: damaged generator checkpoint" in capsys.readouterr().err
        torch.save(good, g_path)


def test_a_checkpoint_copied_in_from_another_run_is_not_resumed_in_place(tmp_path, data, cli):
    """Its steps and logs would mix two models in one folder (an acgan G_3 beside a cgan G_6)."""
    common = ["-t", data, "-c", tmp_path / "c", "-s", tmp_path / "s", "-d", "cpu", "--image-size", "32",
              "--check", "2", *TINY]
    assert cli("train", *common, "--model", "cgan", "-i", "2", "--name", "mine")[0] == 0
    assert cli("train", *common, "--model", "cgan", "--seed", "1", "-i", "4", "--name", "other")[0] == 0
    mine, other = tmp_path / "c" / "mine", tmp_path / "c" / "other"
    ids = {json.loads((r / "config.json").read_text())["run_id"] for r in (mine, other)}
    assert len(ids) == 2 and torch.load(mine / "G_2.ckpt", weights_only=True)["run_id"] in ids
    for name in ("G_4.ckpt", "D_4.ckpt"):
        shutil.copy(other / name, mine / name)
    before = snapshot(mine)
    for dry in (["--dry-run"], []):
        one_line_error(cli("train", "--resume", mine, "-i", "6", *dry),
                       f"{mine / 'G_4.ckpt'}: saved by another run ({other}) than the one {mine} holds")
    assert snapshot(mine) == before
    # into a folder of its own it is a branch, as from any other run
    assert cli("train", "--resume", mine / "G_4.ckpt", "--name", "branch", "-i", "6")[0] == 0
    # a copy or a renamed folder is still the same run: it resumes in place
    shutil.copytree(other, tmp_path / "c" / "renamed")
    assert cli("train", "--resume", tmp_path / "c" / "renamed", "-i", "6")[0] == 0
    # a snapshot from before run ids, resumed in place, keeps the folder's id (its later steps stay its own)
    folder_id = json.loads((other / "config.json").read_text())["run_id"]
    for name in ("G_4.ckpt", "D_4.ckpt"):
        old = torch.load(other / name, weights_only=True)
        del old["run_id"]
        torch.save(old, other / name)
    assert cli("train", "--resume", other, "-i", "6")[0] == 0
    assert torch.load(other / "G_6.ckpt", weights_only=True)["run_id"] == folder_id
    assert json.loads((other / "config.json").read_text())["run_id"] == folder_id


def test_a_resume_notes_only_the_unused_flags_typed_for_it(tmp_path, data, cli):
    """--ema-decay 0.9 came from the snapshot: `--resume RUN --no-ema` did not type it."""
    common = ["-t", data, "-c", tmp_path / "c", "-s", tmp_path / "s", "-d", "cpu", "--image-size", "32", *TINY[:-1]]
    rc, _, err = cli("train", *common, "--model", "cgan", "--gp", "5", "--ema-decay", "0.9", "-i", "1", "--name", "r")
    assert rc == 0 and "note: --gp weights the wgan-gp and dragan penalties" in err
    rc, _, err = cli("train", "--resume", tmp_path / "c" / "r", "-i", "2", "--no-ema")
    assert rc == 0 and "note: continuing with changed settings" in err, err
    assert "--ema-decay sets" not in err and "--gp weights" not in err
    rc, _, err = cli("train", "--resume", tmp_path / "c" / "r", "-i", "3", "--ema-decay", "0.5")
    assert rc == 0 and "note: --ema-decay sets the decay of G's moving-average copy; --no-ema keeps none" in err


def test_eval_every_checks_its_judge_and_data_before_a_step_and_keeps_the_judge_it_loaded(tmp_path, data, cli,
                                                                                           monkeypatch):
    import anime_gan.train as train_module
    d = tmp_path / "d"
    shutil.copytree(data, d, ignore=shutil.ignore_patterns("judge_*"))
    assert main(["train-judge", "-t", str(d), "--image-size", "32", "--width", "8", "--epochs", "1",
                 "--batch-size", "16", "-q"]) == 0
    path = d / "judge_32.pt"
    out = ["-c", tmp_path / "c", "-s", tmp_path / "s", *TINY, "--model", "cgan", "-i", "2", "--eval-every", "1"]
    # a 32px judge under the 64px name: `eval` refused it, train scored with it (judge-FID 0.001)
    shutil.copy(path, d / "judge_64.pt")
    one_line_error(cli("train", "-t", d, *out), f"{d / 'judge_64.pt'} judges 32px images but this run draws 64px",
                   f"-o {d / 'judge_64.pt'}")
    # one picture repeated: refused before a step is trained, not at the first evaluation
    same = tmp_path / "same"
    shutil.copytree(d, same)
    images = np.load(same / "cache" / "images_32.npy", mmap_mode="r+")
    images[:] = images[0]
    images.flush()
    del images
    rc, _, err = cli("train", "-t", same, *out, "--image-size", "32")
    assert rc == 2 and err.splitlines()[-1].endswith("all the same picture, so a FID has nothing to compare; add "
                                                     "varied images and run `anime-gan prepare` again, or drop "
                                                     "--eval-every"), err
    assert not list((tmp_path / "c").rglob("*.ckpt"))
    # a single image: said by the dry run too (it counts a packed set's images, reading none)
    assert main(["prepare", "--synthetic", "1", "-o", str(tmp_path / "one"), "--image-size", "32", "-q"]) == 0
    shutil.copy(path, tmp_path / "one" / "judge_32.pt")
    for dry in ([], ["--dry-run"]):
        one_line_error(cli("train", "-t", tmp_path / "one", *out, "--image-size", "32", *dry),
                       f"{tmp_path / 'one'}: FID needs at least 2 real images, this data set has 1", "--eval-every")
    # the judge file moved away once loaded: the run goes on with the judge it loaded (it stopped
    # at the next evaluation, losing every step since the last snapshot)
    load = train_module.load_training_judge

    def load_then_move(*args, **kwargs):
        loaded = load(*args, **kwargs)
        path.rename(tmp_path / "moved.pt")
        return loaded

    monkeypatch.setattr(train_module, "load_training_judge", load_then_move)
    assert cli("train", "-t", d, *out, "--image-size", "32", "--name", "m")[0] == 0
    lines = [json.loads(l) for l in (tmp_path / "c" / "m" / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2] and {l["judge"] for l in lines} == {str(path)}


def test_an_evaluation_that_fails_mid_run_keeps_the_steps_trained(tmp_path, data, cli, monkeypatch):
    """A failed --eval-every evaluation (a full disk, a judge problem) stopped the run and lost every
    step since the last snapshot; now that step is saved first. A divergence saves nothing."""
    import anime_gan.train as train_module
    from anime_gan.errors import Diverged, UserError

    def fails_at(step, error):
        def evaluate(G, cfg, schema, judge, data, device, at, *rest):
            if at == step:
                raise error
        return evaluate

    d = tmp_path / "d"
    shutil.copytree(data, d, ignore=shutil.ignore_patterns("judge_*"))
    assert main(["train-judge", "-t", str(d), "--image-size", "32", "--width", "8", "--epochs", "1",
                 "--batch-size", "16", "-q"]) == 0
    out = ["-t", d, "-c", tmp_path / "c", "-s", tmp_path / "s", *TINY, "--model", "cgan", "--image-size", "32",
           "-i", "5", "--check", "100", "--eval-every", "1"]
    monkeypatch.setattr(train_module, "evaluate_during_training", fails_at(3, UserError("metrics.jsonl: disk full")))
    one_line_error(cli("train", *out, "--name", "a"),
                   f"metrics.jsonl: disk full (step 3 was saved first; --resume {tmp_path / 'c' / 'a'} goes on "
                   f"from there)")
    assert checkpoint.resumable_steps(tmp_path / "c" / "a") == [3]
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "c" / "o" / "metrics.jsonl"))
    monkeypatch.setattr(train_module, "evaluate_during_training", fails_at(3, full))
    one_line_error(cli("train", *out, "--name", "o"), f"{tmp_path / 'c' / 'o' / 'metrics.jsonl'}: No space left on "
                   "device; free space on that disk or choose another folder (step 3 was saved first")
    assert checkpoint.resumable_steps(tmp_path / "c" / "o") == [3]
    monkeypatch.setattr(train_module, "evaluate_during_training", fails_at(3, Diverged("training diverged by step 3")))
    one_line_error(cli("train", *out, "--name", "b"), "training diverged by step 3")
    assert checkpoint.resumable_steps(tmp_path / "c" / "b") == []



def test_a_run_refused_for_its_data_says_nothing_of_unused_flags(tmp_path, builtin_set, cli):
    """Notes on unused flags come after every check: a refused run gives its reason, not advice on
    flags for a run that never started."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("a.png", "b.png"):
        (raw / name).write_bytes(b"not an image")
    rc, _, err = cli("train", "-t", raw, "-c", tmp_path / "c", "-s", tmp_path / "s", "-d", "cpu", "-i", "1",
                     "--model", "dcgan", "--embed", "rgb")
    assert rc == 2 and "none of the 2 image(s) could be read" in err.splitlines()[-1], err
    assert "note:" not in err, err
    # a run that goes ahead still says them
    rc, _, err = cli("train", "-t", builtin_set, "-c", tmp_path / "c", "-s", tmp_path / "s", "-d", "cpu", "-i", "1",
                     "--model", "dcgan", "--embed", "rgb", "--nf", "4", "-b", "4")
    assert rc == 0 and "note: --embed sets how labels condition the nets; --model dcgan draws without labels" in err


def test_a_bare_resume_that_finds_nothing_names_the_latest_run(tmp_path, data, cli):
    """`--resume` alone means the run these flags name; a run trained with other flags is named instead."""
    out = ["-t", data, "-c", tmp_path / "c", "-s", tmp_path / "s", "-d", "cpu", "--image-size", "32"]
    assert cli("train", *out, *TINY, "--model", "cgan", "--seed", "3", "-i", "1")[0] == 0
    run = tmp_path / "c" / "cgan_onehot_nf8_32px_seed3"
    assert checkpoint.resumable_steps(run) == [1]
    one_line_error(cli("train", *out, "--resume", "-i", "2"), "nothing to resume",
                   f"the latest run there is {run}: continue it with --resume {run}")
    assert cli("train", *out, "--resume", run, "-i", "2", "-q")[0] == 0 and checkpoint.resumable_steps(run) == [1, 2]


def test_a_log_file_reads_partial_lines_and_missing_folders_in_words(tmp_path, cli, monkeypatch):
    """Without a terminal each --log-every steps give a line; the last one, between them, says what it
    averages (not a JSON field), and the default data folder, missing, is not called empty."""
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli("train", "-c", "c", "-s", "s", "-d", "cpu", "--model", "cgan", "--nf", "4", "-b", "4",
                     "--image-size", "32", "--synthetic-size", "16", "-i", "3", "--log-every", "2")
    assert rc == 0, err
    assert "data does not exist: drawing the built-in data set" in err
    last = next(line for line in err.splitlines() if line.startswith("step 3 "))
    assert "partial" not in last and last.endswith("(over the steps since the last line; a full line comes every 2)")
