"""`anime-gan test`: every type through the CLI on tiny trained models (grid sizes, captions, GIFs,
determinism, errors)."""

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from anime_gan import files, render, sampling
from anime_gan.cli import main
from anime_gan.errors import UserError
from conftest import one_line_error, snapshot

S, PAD = 64, 2  # image size and make_grid padding


def _grid_size(ncol: int, nrows: int) -> tuple[int, int]:
    return ncol * (S + PAD) + PAD, nrows * (S + PAD) + PAD


def _train(root, data, *extra):
    ckpts = root / "checkpoints"
    assert main(["train", "-t", str(data), "--model", "cgan", "--nf", "8", "-b", "8", "-d", "cpu", "-q",
                 "-s", str(root / "samples"), "-c", str(ckpts), *extra]) == 0
    (run,) = [d for d in ckpts.iterdir() if d.is_dir()]
    return run


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Four tiny runs: anime onehot (snapshots at 2..10), anime rgb, a CLEVR-like multi-label, and an
    unconditional dcgan."""
    root = tmp_path_factory.mktemp("models")
    assert main(["prepare", "--synthetic", "120", "-o", str(root / "data"), "-q"]) == 0
    onehot = _train(root / "onehot", root / "data", "-i", "10", "--sample", "2", "--check", "10")
    rgb = _train(root / "rgb", root / "data", "--embed", "rgb", "-i", "2", "--sample", "2", "--check", "2")
    clevr = root / "clevr"
    clevr.mkdir()
    objects = ["gray cube", "red cube", "blue sphere", "red sphere"]
    (clevr / "objects.json").write_text(json.dumps({o: i for i, o in enumerate(objects)}))
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (S, S, 3), dtype=np.uint8)).save(clevr / f"{i}.png")
    (clevr / "train.json").write_text(json.dumps({f"{i}.png": [objects[i % 4], objects[(i + 1) % 4]]
                                                  for i in range(16)}))
    assert main(["prepare", str(clevr), "-o", str(root / "clevr_data"), "-q"]) == 0
    multi = _train(root / "multi", root / "clevr_data", "-i", "2", "--sample", "2", "--check", "2")
    dcgan = _train(root / "dcgan", root / "data", "--model", "dcgan", "-i", "2", "--sample", "2", "--check", "2")
    return {"onehot": onehot, "rgb": rgb, "multi": multi, "dcgan": dcgan}


def _test(capsys, model, out, *args) -> tuple[int, list[str], str]:
    """Run `anime-gan test`; returns (exit code, printed paths, stderr)."""
    capsys.readouterr()
    try:
        rc = main(["test", "-d", str(model), "-s", str(out), *args])
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out.split("\n")[:-1], captured.err


@pytest.mark.parametrize("args, name, ncol, nrows", [
    (["-t", "fix_noise"], "fix_noise.png", 12, 10),
    (["-t", "fix_hair_eye", "--hair", "blue", "--eye", "red"], "blue_hair_red_eyes.png", 8, 8),
    (["-t", "change_hair", "--eye", "blue", "-n", "3"], "change_hair_color.png", 12, 3),
    (["-t", "change_eye", "--hair", "red", "-n", "2"], "change_eye_color.png", 10, 2),
    (["-t", "interpolate", "--steps", "5"], "interpolate.png", 5, 1),
    (["-t", "pairs", "-n", "4"], "pairs.png", 4, 5),
    (["-t", "grid"], "grid.png", 10, 12),
])
def test_types_grid_size_with_and_without_captions(models, tmp_path, capsys, args, name, ncol, nrows):
    rc, paths, _ = _test(capsys, models["onehot"], tmp_path / "raw", *args, "--no-captions")
    assert rc == 0 and paths[0] == str(tmp_path / "raw" / name)
    raw = Image.open(paths[0]).size
    assert raw == _grid_size(ncol, nrows)
    rc, paths, _ = _test(capsys, models["onehot"], tmp_path / "cap", *args)
    captioned = Image.open(paths[0]).size
    assert rc == 0 and captioned != raw and captioned[0] >= raw[0] and captioned[1] >= raw[1]


@pytest.mark.parametrize("model", ["onehot", "multi", "dcgan"])
def test_samples_and_interpolate_draw_from_any_model(models, tmp_path, capsys, model):
    """Seed 002's "random noise" and "two random noises", seed 004's samples of an unconditional G."""
    rc, a, _ = _test(capsys, models[model], tmp_path / "a", "-t", "samples", "-n", "3", "--no-captions")
    assert rc == 0 and a == [str(tmp_path / "a" / "samples.png")]
    assert Image.open(a[0]).size == _grid_size(8, 3)
    rc, b, _ = _test(capsys, models[model], tmp_path / "b", "-t", "samples", "-n", "3", "--no-captions")
    assert Image.open(a[0]).tobytes() == Image.open(b[0]).tobytes()  # seeded, labels included
    rc, paths, _ = _test(capsys, models[model], tmp_path / "i", "-t", "interpolate", "--steps", "3")
    assert rc == 0 and paths == [str(tmp_path / "i" / "interpolate.png"), str(tmp_path / "i" / "interpolate.gif")]
    assert Image.open(paths[1]).n_frames == 3


def test_samples_rows_are_random_labels_the_schema_allows(models):
    import random
    from anime_gan.sampling import _load, _random_labels
    from anime_gan.config import TestConfig
    for name, per_row in (("onehot", {2}), ("multi", {1, 2, 3})):
        model = _load(TestConfig(model_dir=str(models[name])))
        labels, names = _random_labels(model, random.Random(0), 200)
        assert set(labels.sum(1).tolist()) == per_row and len(names) == 200
        if name == "onehot":  # one hair and one eye colour in every row; every class comes up
            assert labels[:, :12].sum(1).eq(1).all() and labels.sum(0).gt(0).all()


def test_interpolate_writes_a_gif_of_each_step(models, tmp_path, capsys):
    rc, paths, err = _test(capsys, models["onehot"], tmp_path, "-t", "interpolate", "--steps", "4",
                           "--hair", "blue", "--eye", "red", "--no-captions")
    assert rc == 0 and paths == [str(tmp_path / "interpolate.png"), str(tmp_path / "interpolate.gif")]
    gif = Image.open(paths[1])
    assert gif.n_frames == 4 and gif.size == (S, S)
    assert "picked" not in err  # a colour without its --to-* stays as it starts


@pytest.mark.parametrize("seed", ["0", "1", "2"])
def test_interpolate_changes_only_the_colours_it_is_given_ends_for(models, tmp_path, capsys, seed):
    rc, _, err = _test(capsys, models["onehot"], tmp_path, "-t", "interpolate", "--steps", "2",
                       "--hair", "red", "--to-hair", "blue", "--seed", seed)
    picked = [line for line in err.splitlines() if "picked" in line]
    assert rc == 0 and len(picked) == 1 and picked[0].startswith("--eye not given; picked")
    rc, _, err = _test(capsys, models["onehot"], tmp_path, "-t", "interpolate", "--steps", "2", "--seed", seed)
    assert rc == 0 and all(f"--{flag} not given; picked" in err for flag in ("hair", "eye", "to-hair", "to-eye"))


def test_a_folder_holding_one_run_names_it_and_one_holding_two_lists_them(models, tmp_path, capsys, cli):
    import shutil
    runs = tmp_path / "checkpoints"
    shutil.copytree(models["onehot"], runs / "only")
    rc, paths, err = _test(capsys, runs, tmp_path / "out", "-t", "fix_noise")
    assert rc == 0 and paths == [str(tmp_path / "out" / "fix_noise.png")]
    assert f"note: using {runs / 'only'}, the only run in {runs} (-d picks another)" in err
    # a refusal is its one line, without the note (which came first)
    one_line_error(_test(capsys, runs, tmp_path / "out", "-t", "fix_hair_eye", "--hair", "bleu"), "bleu")
    one_line_error(cli("eval", "-d", runs, "-t", tmp_path / "nope", "--metrics", "diversity"),
                   f"{tmp_path / 'nope'}: no such data folder")
    rc, _, err = cli("eval", "-d", runs, "--metrics", "diversity", "--dry-run")
    assert rc == 0 and "note: using" in err, err
    rc, _, err = cli("eval", "-d", runs, "--metrics", "diversity", "--dry-run", "-q")  # -q: not said
    assert rc == 0 and "note: using" not in err, err
    shutil.copytree(models["onehot"], runs / "second")
    rc, _, err = _test(capsys, runs, tmp_path / "out", "-t", "fix_noise")
    assert rc == 2 and "no G_<step>.ckpt in this folder (runs inside: only, second)" in err


def test_a_sample_folder_that_is_a_file_is_refused_by_the_dry_run_too(models, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    for dry_run in (["--dry-run"], []):
        rc, _, err = _test(capsys, models["onehot"], tmp_path / "a_file", "-t", "fix_noise", *dry_run)
        assert rc == 2 and "a_file is a file, not a folder); choose another folder with -s" in err


def test_a_colour_in_capitals_names_its_file_in_lower_case(models, tmp_path, capsys):
    rc, paths, _ = _test(capsys, models["onehot"], tmp_path, "-t", "fix_hair_eye", "--hair", "Blue", "--eye", "RED")
    assert rc == 0 and [Path(p).name for p in paths] == ["blue_hair_red_eyes.png"]


def test_random_colours_are_seeded_and_announced(models, tmp_path, capsys):
    rc, a, err = _test(capsys, models["onehot"], tmp_path / "a", "-t", "fix_hair_eye", "--seed", "3")
    assert rc == 0 and "--hair not given; picked" in err and "--eye not given; picked" in err
    _, b, _ = _test(capsys, models["onehot"], tmp_path / "b", "-t", "fix_hair_eye", "--seed", "3")
    _, c, _ = _test(capsys, models["onehot"], tmp_path / "c", "-t", "fix_hair_eye", "--seed", "4")
    assert Image.open(a[0]).tobytes() == Image.open(b[0]).tobytes()
    assert Image.open(a[0]).tobytes() != Image.open(c[0]).tobytes()


def test_checkpoint_file_and_no_ema(models, tmp_path, capsys):
    _, a, _ = _test(capsys, models["onehot"], tmp_path / "a", "-t", "pairs", "-n", "2")
    rc, b, _ = _test(capsys, models["onehot"] / "G_10.ckpt", tmp_path / "b", "-t", "pairs", "-n", "2")
    assert rc == 0 and Image.open(a[0]).tobytes() == Image.open(b[0]).tobytes()
    rc, b, _ = _test(capsys, models["onehot"], tmp_path / "b", "-t", "pairs", "-n", "2", "--no-ema")
    assert rc == 0 and Image.open(a[0]).tobytes() != Image.open(b[0]).tobytes()


def test_individual_writes_every_image_in_a_subfolder(models, tmp_path, capsys):
    rc, paths, _ = _test(capsys, models["onehot"], tmp_path, "-t", "pairs", "-n", "3", "--individual",
                         "--pairs", "blue hair red eyes", "aqua hair, green eyes")
    files = sorted(p.name for p in (tmp_path / "pairs").iterdir() if not p.name.startswith("."))
    assert rc == 0 and paths == [str(tmp_path / "pairs.png"), str(tmp_path / "pairs")]
    assert len(files) == 6 and files[0] == "000 blue hair red eyes.png" and files[5].endswith("aqua hair green eyes.png")
    assert Image.open(tmp_path / "pairs" / files[0]).size == (S, S)
    (tmp_path / "pairs" / "notes.txt").write_text("mine")
    rc, _, _ = _test(capsys, models["onehot"], tmp_path, "-t", "pairs", "-n", "1", "--individual",
                     "--pairs", "red hair red eyes")  # a smaller draw replaces the earlier one's images
    assert rc == 0 and sorted(p.name for p in (tmp_path / "pairs").iterdir()) == [
        ".anime-gan-individual.json", "000 red hair red eyes.png", "notes.txt"]


def test_individual_keeps_files_of_the_users_own_whatever_their_names(models, tmp_path, capsys):
    """It deleted every PNG whose name began with three digits ("2024 holiday.png"); now only the
    images the earlier run listed as its own go. A folder written before the list: the pattern and
    the images' size (a photo of the user's is rarely exactly S x S)."""
    args = ["-t", "pairs", "-n", "2", "--individual", "--pairs", "blue hair red eyes"]
    assert _test(capsys, models["onehot"], tmp_path, *args)[0] == 0
    folder = tmp_path / "pairs"
    for mine in ("2024 holiday.png", "999.png"):
        shutil.copy(folder / "000 blue hair red eyes.png", folder / mine)
    assert _test(capsys, models["onehot"], tmp_path, "-t", "pairs", "-n", "1", "--individual", "--pairs",
                 "red hair red eyes")[0] == 0
    assert sorted(p.name for p in folder.iterdir()) == [".anime-gan-individual.json", "000 red hair red eyes.png",
                                                        "2024 holiday.png", "999.png"]
    (folder / ".anime-gan-individual.json").unlink()  # as an older version left it
    Image.new("RGB", (S + 1, S)).save(folder / "2024 holiday.png")
    shutil.copy(folder / "000 red hair red eyes.png", folder / "005 red hair red eyes.png")  # an older draw's
    assert _test(capsys, models["onehot"], tmp_path, *args)[0] == 0
    assert sorted(p.name for p in folder.iterdir()) == [".anime-gan-individual.json", "000 blue hair red eyes.png",
                                                        "001 blue hair red eyes.png", "2024 holiday.png"]


def test_outputs_that_are_links_land_where_they_point_and_keep_their_mode(models, tmp_path, capsys, monkeypatch):
    """A linked --individual folder left a `.pairs.old` link that rmtree would not remove, and every
    later run failed ("Not a directory") after replacing the grid. A chmod on a grid was lost."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    (elsewhere / "pairs").mkdir(parents=True)
    (elsewhere / "pairs" / "notes.txt").write_text("mine")
    (out / "pairs").symlink_to(elsewhere / "pairs")
    (out / "pairs.png").symlink_to(elsewhere / "grid.png")
    args = ["-t", "pairs", "-n", "2", "--individual", "--pairs", "blue hair red eyes"]
    for seed in ("0", "9"):
        assert _test(capsys, models["onehot"], out, *args, "--seed", seed)[0] == 0
        assert sorted(p.name for p in out.iterdir()) == ["pairs", "pairs.png"]
        assert (out / "pairs").is_symlink() and (out / "pairs.png").is_symlink()
        assert sorted(p.name for p in (elsewhere / "pairs").iterdir() if not p.name.startswith(".")) == [
            "000 blue hair red eyes.png", "001 blue hair red eyes.png", "notes.txt"]
        assert sorted(p.name for p in elsewhere.iterdir()) == ["grid.png", "pairs"]
    os.chmod(elsewhere / "grid.png", 0o640)
    assert _test(capsys, models["onehot"], out, *args, "--seed", "1")[0] == 0
    assert stat.S_IMODE((elsewhere / "grid.png").stat().st_mode) == 0o640
    # a folder's mode stays too
    os.chmod(elsewhere / "pairs", 0o700)
    assert _test(capsys, models["onehot"], out, *args)[0] == 0
    assert stat.S_IMODE((elsewhere / "pairs").stat().st_mode) == 0o700
    # links that lead nowhere writable are refused before anything is drawn, in one line
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "pairs.png").symlink_to("pairs.png")
    one_line_error(_test(capsys, models["onehot"], tmp_path / "loop", *args),
                   f"{tmp_path / 'loop' / 'pairs.png'}: a symbolic link that leads back to itself")
    (tmp_path / "loop" / "pairs.png").unlink()
    (tmp_path / "loop" / "pairs").symlink_to(tmp_path / "nowhere" / "pairs")
    one_line_error(_test(capsys, models["onehot"], tmp_path / "loop", *args),
                   f"{tmp_path / 'loop' / 'pairs'}: a symbolic link to {tmp_path / 'nowhere' / 'pairs'}, whose folder "
                   f"does not exist")
    assert not (tmp_path / "nowhere").exists() and sorted(p.name for p in (tmp_path / "loop").iterdir()) == ["pairs"]
    # a folder that cannot be swapped in: neither it nor the grid lands, and nothing staged stays
    before = snapshot(out)
    monkeypatch.setattr(files, "swap_in", lambda staging, final: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    assert _test(capsys, models["onehot"], out, *args, "--seed", "5")[0] == 2
    assert snapshot(out) == before and sorted(p.name for p in elsewhere.iterdir()) == ["grid.png", "pairs"]
    monkeypatch.undo()
    # a failed write names the file asked for, not the hidden one it was staged in
    def full_disk(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(render, "replace_atomically", full_disk)
    rc, _, err = _test(capsys, models["onehot"], tmp_path / "full", "-t", "pairs", "-n", "1")
    assert rc == 2 and err.strip().endswith(f"{tmp_path / 'full' / 'pairs.png'}: could not be written (No space "
                                            f"left on device); free space on that disk or choose another output "
                                            f"folder"), err


def test_rgb_model_color_map_and_any_colour(models, tmp_path, capsys):
    rc, paths, _ = _test(capsys, models["rgb"], tmp_path, "-t", "color_map", "--no-captions")
    assert rc == 0 and Image.open(paths[0]).size == _grid_size(12, 12)
    rc, paths, _ = _test(capsys, models["rgb"], tmp_path, "-t", "fix_hair_eye",
                         "--hair-rgb", "#ff8800", "--eye-rgb", "#00ffaa")
    assert rc == 0 and paths == [str(tmp_path / "ff8800_hair_00ffaa_eyes.png")]
    rc, paths, err = _test(capsys, models["rgb"], tmp_path, "-t", "interpolate", "--hair-rgb", "#ff0000",
                           "--eye-rgb", "#00ff00", "--steps", "2")
    assert rc == 0 and "ignored" not in err  # the start colours are the RGB ones


def test_conditions_multi_label_one_image_per_entry(models, tmp_path, capsys):
    spec = tmp_path / "test.json"
    spec.write_text(json.dumps([["gray cube", "red sphere", ""], ["blue sphere"], ["red cube"]]))  # "": no label
    rc, paths, _ = _test(capsys, models["multi"], tmp_path / "raw", "--conditions", str(spec), "--no-captions")
    assert rc == 0 and paths == [str(tmp_path / "raw" / "conditions.png")]
    assert Image.open(paths[0]).size == _grid_size(3, 1)
    rc, paths, _ = _test(capsys, models["multi"], tmp_path / "cap", "-t", "conditions", "--conditions", str(spec))
    width, height = Image.open(paths[0]).size
    assert rc == 0 and height == _grid_size(1, 3)[1] and width > _grid_size(1, 3)[0]


def test_progress_gif_has_every_snapshot_in_step_order(models, tmp_path, capsys):
    rc, paths, _ = _test(capsys, models["onehot"], tmp_path, "-t", "progress")
    assert rc == 0 and paths == [str(tmp_path / "progress.gif")]
    assert Image.open(paths[0]).n_frames == 5  # steps 2, 4, 6, 8, 10

    snaps = tmp_path / "snaps"  # solid colours by step, so frame order can be read back
    snaps.mkdir()
    colours = {100: (0, 200, 0), 2: (200, 0, 0), 10: (0, 0, 200)}
    for step, colour in colours.items():
        Image.new("RGB", _grid_size(2, 2), colour).save(snaps / f"fake_step_{step}.png")
    for other in ("real.png", "fake_step_x.png"):
        Image.new("RGB", _grid_size(2, 2)).save(snaps / other)
    for captions in ("--captions", "--no-captions"):  # a snapshot carries its own "step N" title: no second one
        rc, paths, err = _test(capsys, tmp_path / "nope", snaps, "-t", "progress", captions)
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(paths[0]))]
        assert rc == 0 and len(frames) == 3 and frames[0].shape[:2] == _grid_size(2, 2)[::-1]
        assert [tuple(f[-10, 10]) for f in frames] == [colours[2], colours[10], colours[100]]
        assert ("note: -t progress does not use --no-captions; ignored" in err) == (captions == "--no-captions")


def test_without_s_each_run_writes_into_its_own_sample_folder(models, tmp_path, monkeypatch, capsys):
    """Beside the run's snapshots (each fixture run was trained with -s <its root>/samples), from any
    folder; two runs' grids of the same name never overwrite each other."""
    monkeypatch.chdir(tmp_path)

    def own(kind, name):
        return models[kind].parent.parent / "samples" / models[kind].name / name

    written = {}
    for kind, model in (("onehot", models["onehot"]), ("rgb", sorted(models["rgb"].glob("G_*.ckpt"))[-1])):
        capsys.readouterr()
        assert main(["test", "-t", "fix_noise", "-d", str(model)]) == 0
        (written[kind],) = capsys.readouterr().out.split()
    assert written == {"onehot": str(own("onehot", "fix_noise.png")), "rgb": str(own("rgb", "fix_noise.png"))}
    assert all(Path(p).is_file() for p in written.values())
    assert main(["test", "-t", "progress", "-d", str(models["onehot"])]) == 0
    gif = Path(capsys.readouterr().out.strip())
    assert gif == own("onehot", "progress.gif") and (gif.parent / "fake_step_10.png").is_file()
    assert main(["test", "-t", "samples", "-d", str(models["dcgan"]), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["sample_dir"] == str(own("dcgan", "x").parent)
    # a checkpoint that does not say where its run's samples went: samples/<its run> here, and from
    # before snapshots named their run, samples/<the folder that holds it>
    older = tmp_path / "older" / "G_2.ckpt"
    older.parent.mkdir()
    g = torch.load(sorted(models["rgb"].glob("G_*.ckpt"))[-1], weights_only=True)
    del g["sample_path"]
    torch.save(g, older)
    assert main(["test", "-t", "fix_noise", "-d", str(older)]) == 0
    assert capsys.readouterr().out.split() == [str(Path("samples") / models["rgb"].name / "fix_noise.png")]
    del g["run_path"]
    torch.save(g, older)
    assert main(["test", "-t", "fix_noise", "-d", str(older)]) == 0
    assert capsys.readouterr().out.split() == [str(Path("samples") / "older" / "fix_noise.png")]


def test_without_s_the_g_file_is_read_once(models, tmp_path, monkeypatch, capsys):
    """The sample folder is found from the G file that is then drawn from: one read, not two."""
    from anime_gan import checkpoint
    reads = []
    real = checkpoint.load

    def counting(path, kind):
        reads.append((Path(path).name, kind))
        return real(path, kind)
    monkeypatch.setattr(checkpoint, "load", counting)
    monkeypatch.setattr(sampling, "load", counting)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["test", "-t", "samples", "-n", "1", "-d", str(models["dcgan"])]) == 0
    assert reads == [("G_2.ckpt", "generator")]
    assert Path(capsys.readouterr().out.strip()).parent.name == models["dcgan"].name


@pytest.mark.parametrize("model, args, message", [
    ("missing", ["-t", "fix_noise"], "no such run folder"),
    ("empty", ["-t", "fix_noise"], "no G_<step>.ckpt"),
    ("empty", ["-t", "progress"], "no fake_step_<N>.png"),
    ("multi", ["-t", "change_hair"], "needs a model trained on hair and eye colours"),
    ("multi", ["-t", "interpolate", "--hair", "red"], "--hair needs a model trained on hair and eye colours, but "
                                                      "this checkpoint has labels 'objects' (4 classes); drop it"),
    ("multi", ["-t", "fix_noise"], "types that work with it: samples, interpolate, conditions, progress"),
    ("dcgan", ["-t", "conditions"], "this checkpoint has no labels; -t conditions needs a conditional model"),
    ("dcgan", ["-t", "fix_noise"], "has no labels; types that work with it: samples, interpolate, progress"),
    ("onehot", ["-t", "fix_hair_eye", "--hair", "teal"], "unknown hair colour 'teal'; valid hair colours: orange, white"),
    ("onehot", ["-t", "pairs", "--pairs", "blue hair teal eyes"], "valid eye colours: black, orange"),
    ("onehot", ["-t", "fix_hair_eye", "--hair-rgb", "#ff0000"], "needs a model trained with --embed rgb"),
    ("onehot", ["-t", "color_map"], "needs a model trained with --embed rgb"),
    ("onehot", ["-t", "color_map", "--hair", "red"], "needs a model trained with --embed rgb"),  # no note first
    ("multi", ["-t", "conditions"], "needs --conditions FILE.json"),
    ("onehot", ["-t", "fix_noise", "--device", "meta"], "unknown --device 'meta'"),
    ("onehot", ["-t", "fix_noise", "--seed", str(10**20)], "--seed must be between 0 and"),
    # every colour is checked before a random one is announced: still one line
    ("onehot", ["-t", "interpolate", "--hair", "red", "--to-hair", "teal"], "--to-hair: unknown hair colour 'teal'"),
    # a near miss gets a suggestion, in a flag and in a --pairs text alike
    ("onehot", ["-t", "fix_hair_eye", "--hair", "blu"], "unknown hair colour 'blu' (did you mean 'blue'?); valid"),
    ("onehot", ["-t", "interpolate", "--to-eye", "gren"], "--to-eye: unknown eye colour 'gren' (did you mean 'green'?)"),
    ("onehot", ["-t", "pairs", "--pairs", "bleu hair red eyes"], "unknown hair colour 'bleu' in 'bleu hair red eyes' "
                                                                 "(did you mean 'blue'?)"),
])
def test_errors_exit_2_with_one_line(models, tmp_path, capsys, model, args, message):
    (tmp_path / "empty").mkdir()
    path = models.get(model, tmp_path / model)
    rc, _, err = _test(capsys, path, tmp_path / "out", *args)
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_output_folder_that_is_a_file_is_refused_before_drawing(models, tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    rc, _, err = _test(capsys, models["onehot"], tmp_path / "afile", "-t", "fix_noise")
    assert rc == 2 and f"cannot write here ({tmp_path / 'afile'} is a file, not a folder)" in err and err.count("\n") == 1
    assert (tmp_path / "afile").read_text() == "mine"


def test_progress_with_a_broken_snapshot_names_it_and_writes_nothing(tmp_path, capsys):
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    Image.new("RGB", _grid_size(2, 2)).save(snaps / "fake_step_1.png")
    (snaps / "fake_step_2.png").write_bytes((snaps / "fake_step_1.png").read_bytes()[:60])
    rc, _, err = _test(capsys, tmp_path / "nope", snaps, "-t", "progress")
    assert rc == 2 and f"{snaps / 'fake_step_2.png'}: unreadable snapshot" in err and err.count("\n") == 1
    assert sorted(p.name for p in snaps.iterdir()) == ["fake_step_1.png", "fake_step_2.png"]


def test_device_auto_works_like_in_train(models, tmp_path, capsys):
    rc, paths, err = _test(capsys, models["onehot"], tmp_path / "out", "-t", "fix_noise", "--device", "auto")
    assert rc == 0 and paths, err


def test_flags_a_type_does_not_use_are_noted(models, tmp_path, capsys):
    rc, paths, err = _test(capsys, models["onehot"], tmp_path / "out", "-t", "fix_noise", "-n", "3", "--steps", "5")
    assert rc == 0 and paths
    assert "note: -t fix_noise does not use -n; ignored" in err and "does not use --steps" in err
    rc, _, err = _test(capsys, models["onehot"], tmp_path / "out", "-t", "fix_noise", "-n", "3", "--dry-run")
    assert rc == 0 and "note: -t fix_noise does not use -n; ignored" in err  # a dry run says it too
    rc, _, err = _test(capsys, models["onehot"], tmp_path / "out", "-t", "change_hair", "-n", "2", "--individual")
    assert rc == 0 and "note" not in err


def test_dry_run_checks_values_then_the_checkpoint_and_colours(models, tmp_path, capsys):
    for args, message in ((["-t", "samples", "-n", "0"], "-n must be 1 to 64"),
                          (["-t", "interpolate", "--steps", "1"], "--steps must be 2 to 256"),
                          (["-t", "change_hair", "-n", "1000000"], "got 1000000"),
                          (["-t", "interpolate", "--device", "mps"], "unknown --device 'mps'")):
        rc, out, err = _test(capsys, tmp_path / "no-run", tmp_path / "out", *args, "--dry-run")
        assert rc == 2 and out == [] and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    # then what the real command would refuse: no checkpoint, an unknown colour
    rc, out, err = _test(capsys, tmp_path / "no-run", tmp_path / "out", "-t", "samples", "--dry-run")
    assert rc == 2 and out == [] and f"{tmp_path / 'no-run'}: no such" in err and err.count("\n") == 1
    rc, out, err = _test(capsys, models["onehot"], tmp_path / "out", "-t", "fix_hair_eye", "--hair", "blu", "--dry-run")
    assert rc == 2 and out == [] and "blu" in err and err.count("\n") == 1
    # a flag the type does not use is noted after it draws, not checked
    rc, out, err = _test(capsys, models["onehot"], tmp_path / "out", "-t", "samples", "--steps", "1", "--dry-run")
    assert rc == 0 and json.loads("\n".join(out))["sample_dir"] == str(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_a_dry_run_names_what_it_would_write_and_touches_nothing(models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    os.utime(out, ns=(0, 0))  # a probe file made and removed would change the folder's time stamp
    rc, printed, err = _test(capsys, models["onehot"], out, "-t", "interpolate", "--individual", "--dry-run")
    assert rc == 0, err
    assert json.loads("\n".join(printed))["writes"] == [str(out / n) for n in ("interpolate.png", "interpolate.gif",
                                                                              "interpolate")]
    assert out.stat().st_mtime_ns == 0 and list(out.iterdir()) == []


def test_a_read_only_grid_in_a_writable_folder_is_replaced(models, tmp_path, capsys, monkeypatch):
    """A rename replaces it, which asks only the folder: the checks ask the folder too (simulated:
    as root, permission bits stop nothing)."""
    from anime_gan import files
    out = tmp_path / "out"
    assert _test(capsys, models["onehot"], out, "-t", "fix_noise")[0] == 0
    real_access = files.os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: Path(p).is_dir() and real_access(p, mode))
    for dry in (["--dry-run"], []):
        rc, _, err = _test(capsys, models["onehot"], out, "-t", "fix_noise", "--seed", "1", *dry)
        assert rc == 0, err


def test_conditions_file_errors_name_the_file_and_entry(models, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[[")
    rc, _, err = _test(capsys, models["multi"], tmp_path, "--conditions", str(bad))
    assert rc == 2 and f"{bad}: not valid JSON" in err
    bad.write_text(json.dumps([["red cube"], ["gray cube", "pink cube"]]))
    rc, _, err = _test(capsys, models["multi"], tmp_path, "--conditions", str(bad))
    assert rc == 2 and 'entry 2 ["gray cube", "pink cube"]' in err and "gray cube, red cube" in err
    bad.write_text(json.dumps([["red cube"], 5]))
    rc, _, err = _test(capsys, models["multi"], tmp_path, "--conditions", str(bad))
    assert rc == 2 and "(entry 2 is 5)" in err
    # an empty entry is a scene of no objects, as in prepare's train.json; hair and eye need both said
    bad.write_text(json.dumps([["red cube"], []]))
    rc, paths, _ = _test(capsys, models["multi"], tmp_path / "empty", "--conditions", str(bad))
    assert rc == 0 and paths == [str(tmp_path / "empty" / "conditions.png")]
    bad.write_text(json.dumps([["blue hair", "red eyes"], []]))
    rc, _, err = _test(capsys, models["onehot"], tmp_path, "--conditions", str(bad))
    assert rc == 2 and "entry 2 []: '' does not say the hair or eye" in err


def test_file_names_from_label_text_are_safe_everywhere():
    from anime_gan.sampling import _filename
    assert _filename("blue hair red eyes") == "blue hair red eyes"
    assert _filename("#ff8800 hair") == "ff8800 hair"
    assert _filename("a\x00b\nc/d\\e:f") == "abcdef"      # NUL, newline and separators never reach open()
    assert len(_filename("y" * 300)) == 120 and _filename("///") == "image"


def test_a_run_name_without_its_folder_suggests_the_path(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "myrun").mkdir(parents=True)
    one_line_error(cli("test", "-t", "fix_noise", "-d", "myrun"),
                   "myrun: no such run folder or checkpoint; did you mean checkpoints/myrun?")


def test_a_damaged_generator_file_names_what_is_wrong_and_the_fix(models, tmp_path, capsys):
    g = torch.load(models["rgb"] / "G_2.ckpt", weights_only=True)
    assert g["G_ema"] is not None
    # only the moving average diverged: the raw weights still draw, with --no-ema
    g["G_ema"] = {k: v * float("inf") if v.is_floating_point() else v for k, v in g["G_ema"].items()}
    torch.save(g, tmp_path / "ema.ckpt")
    rc, _, err = _test(capsys, tmp_path / "ema.ckpt", tmp_path / "out", "-t", "samples")
    assert rc == 2 and "its averaged (EMA) weights hold NaN or infinite values" in err and "--no-ema" in err, err
    rc, paths, err = _test(capsys, tmp_path / "ema.ckpt", tmp_path / "out", "-t", "samples", "--no-ema")
    assert rc == 0 and paths, err
    # a weight missing: torch's first line names no weight, the next does
    missing = next(iter(g["G"]))
    del g["G"][missing]
    g["G_ema"] = None
    torch.save(g, tmp_path / "cut.ckpt")
    rc, _, err = _test(capsys, tmp_path / "cut.ckpt", tmp_path / "out", "-t", "samples")
    assert rc == 2 and err.count("\n") == 1 and f'Missing key(s) in state_dict: "{missing}"' in err
    assert "use another G_<step>.ckpt of the run" in err


@pytest.mark.parametrize("value, needle", [(float("nan"), "its weights hold NaN or infinite values"),
                                           (3e38, "the generator draws NaN or infinite pixels")])  # overflows
def test_a_diverged_generator_is_refused_not_drawn_black(models, tmp_path, capsys, value, needle):
    g = torch.load(models["rgb"] / "G_2.ckpt", weights_only=True)
    for weights in (g["G"], g["G_ema"] or {}):
        first = next(k for k, v in weights.items() if v.is_floating_point() and v.dim() > 1)
        weights[first].fill_(value)
    torch.save(g, tmp_path / "G_2.ckpt")
    for args in (["-t", "fix_noise"], ["-t", "samples", "--no-ema"]):
        rc, out, err = _test(capsys, tmp_path / "G_2.ckpt", tmp_path / "out", *args)
        assert rc == 2 and out == [] and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("model, args, message", [
    ("rgb", ["-t", "fix_hair_eye", "--eye-rgb", "zzz"], "--eye-rgb: cannot read colour 'zzz'"),
    ("rgb", ["-t", "fix_hair_eye", "--eye-rgb", "#+f+f+f"], "--eye-rgb: cannot read colour '#+f+f+f'"),
    ("rgb", ["-t", "fix_hair_eye", "--eye-rgb", "#ff0000", "--eye", "red"], "give --eye or --eye-rgb, not both"),
    ("onehot", ["-t", "interpolate", "--eye-rgb", "#ff0000"], "--eye-rgb needs a model trained with --embed rgb"),
    ("onehot", ["-t", "pairs", "--pairs", "teal hair red eyes"], "unknown hair colour 'teal'"),
    ("onehot", ["-t", "fix_hair_eye", "--hair", ""], "argument --hair: empty value"),
    ("multi", ["--conditions", "missing.json"], "--conditions missing.json: cannot read"),
    ("onehot", ["-t", "color_map"], "-t color_map needs a model trained with --embed rgb"),
    ("multi", ["--conditions", "many.json"], "1025 entries; `test` draws at most 1024"),
    ("multi", ["--conditions", "twice.json"], 'entry 1 ["red cube", "red cube"]: names a label twice'),
])
def test_the_dry_run_refuses_what_the_real_run_refuses(models, tmp_path, capsys, monkeypatch, model, args, message):
    # a bad --*-rgb, pair or conditions file is found before anything is drawn or announced
    monkeypatch.chdir(tmp_path)
    (tmp_path / "many.json").write_text(json.dumps([["red cube"]] * 1025))
    (tmp_path / "twice.json").write_text(json.dumps([["red cube", "red cube"]]))
    for dry in ([], ["--dry-run"]):
        rc, out, err = _test(capsys, models[model], tmp_path / "out", *args, *dry)
        assert rc == 2 and out == [] and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    rc, _, err = _test(capsys, models[model], "", *args)
    assert rc == 2 and "argument -s/--sample_dir/--sample-dir: empty value" in err


def test_an_empty_condition_is_a_scene_to_draw_but_not_one_to_score(models, tmp_path, cli):
    # `test` draws it (an empty scene); `eval` would count it as right and raise the joint score
    spec = tmp_path / "e.json"
    spec.write_text(json.dumps([["red cube"], []]))
    rc, _, err = cli("test", "-d", models["multi"], "-s", tmp_path / "out", "--conditions", spec)
    assert rc == 0, err
    one_line_error(cli("eval", "-d", models["multi"], "--metrics", "accuracy", "--conditions", spec, "--dry-run"),
                   f"{spec} entry 2 []: names no label, so accuracy has nothing to check there")


def test_an_explicit_type_is_drawn_even_with_conditions(models, tmp_path, capsys):
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps([["blue hair", "red eyes"]]))
    rc, paths, err = _test(capsys, models["onehot"], tmp_path / "out", "-t", "fix_noise", "--conditions", str(spec))
    assert rc == 0 and paths == [str(tmp_path / "out" / "fix_noise.png")]
    assert "note: -t fix_noise does not use --conditions; ignored" in err
    rc, paths, _ = _test(capsys, models["onehot"], tmp_path / "out", "--conditions", str(spec))  # no -t: conditions
    assert rc == 0 and paths == [str(tmp_path / "out" / "conditions.png")]


def test_a_schema_without_suffixes_names_colours_by_group(models, tmp_path, capsys):
    g = torch.load(models["onehot"] / "G_10.ckpt", weights_only=True)
    for group in g["schema"]["groups"]:
        group["suffixes"] = []  # as a hand-written schema.json may have it
    torch.save(g, tmp_path / "G_10.ckpt")
    rc, paths, err = _test(capsys, tmp_path / "G_10.ckpt", tmp_path / "out", "-t", "fix_hair_eye",
                           "--hair", "blue", "--eye", "red")
    assert rc == 0 and paths == [str(tmp_path / "out" / "blue_hair_red_eye.png")], err
    rc, paths, err = _test(capsys, tmp_path / "G_10.ckpt", tmp_path / "out", "-t", "fix_noise")
    assert rc == 0 and paths == [str(tmp_path / "out" / "fix_noise.png")], err


def test_individual_names_sort_past_999_and_a_refused_run_keeps_the_grid(models, tmp_path, capsys):
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps([["red cube"]] * 1001))
    rc, _, _ = _test(capsys, models["multi"], tmp_path / "out", "--conditions", str(spec), "--individual", "--no-captions")
    names = sorted(p.name for p in (tmp_path / "out" / "conditions").iterdir() if not p.name.startswith("."))
    assert rc == 0 and len(names) == 1001 and names[0] == "0000 red cube.png" and names[-1] == "1000 red cube.png"
    spec.write_text(json.dumps([["red cube"]] * 2))
    rc, _, _ = _test(capsys, models["multi"], tmp_path / "out", "--conditions", str(spec), "--individual")
    assert rc == 0 and sorted(p.name for p in (tmp_path / "out" / "conditions").iterdir()) == [
        ".anime-gan-individual.json", "000 red cube.png", "001 red cube.png"]  # every earlier image went
    # a subfolder that cannot be written is refused before the grid beside it is replaced
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "fix_noise").write_text("not a folder")
    (tmp_path / "w" / "fix_noise.png").write_bytes(b"earlier grid")
    rc, out, err = _test(capsys, models["onehot"], tmp_path / "w", "-t", "fix_noise", "--individual")
    assert rc == 2 and out == [] and "fix_noise" in err and err.count("\n") == 1
    assert (tmp_path / "w" / "fix_noise.png").read_bytes() == b"earlier grid"


def test_an_output_file_name_taken_by_a_folder_says_so(models, tmp_path, capsys):
    (tmp_path / "out" / "fix_noise.png").mkdir(parents=True)
    rc, _, err = _test(capsys, models["onehot"], tmp_path / "out", "-t", "fix_noise")
    assert rc == 2 and "fix_noise.png: is a folder, not a file; choose another folder with -s" in err
    assert err.count("\n") == 1


def test_every_output_is_checked_before_drawing_and_by_the_dry_run_too(models, tmp_path, capsys, monkeypatch):
    """A refused run changes no file (interpolate.png stays when interpolate.gif is a folder), draws
    nothing, and --dry-run refuses it with the same line."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "s" / "fix_noise.png").mkdir(parents=True)
    (tmp_path / "i").mkdir()
    (tmp_path / "i" / "pairs").write_text("mine")
    (tmp_path / "g" / "interpolate.gif").mkdir(parents=True)
    (tmp_path / "g" / "interpolate.png").write_bytes(b"earlier strip")
    cases = [(tmp_path / "empty", tmp_path / "out", ["-t", "progress"], "no fake_step_<N>.png snapshots in"),
             (models["onehot"], tmp_path / "s", ["-t", "fix_noise"], "fix_noise.png: is a folder, not a file"),
             (models["onehot"], tmp_path / "i", ["-t", "pairs", "--individual"],
              f"({tmp_path / 'i' / 'pairs'} is a file, not a folder); choose another folder with -s"),
             (models["onehot"], tmp_path / "g", ["-t", "interpolate"], "interpolate.gif: is a folder, not a file")]

    def no_drawing(*args):
        raise AssertionError("drew before every output was checked")
    monkeypatch.setattr(sampling, "_draw", no_drawing)
    for model, out, args, message in cases:
        for dry in ([], ["--dry-run"]):
            rc, printed, err = _test(capsys, model, out, *args, *dry)
            assert rc == 2 and printed == [] and message in err and err.count("\n") == 1, (args, dry, err)
    assert (tmp_path / "g" / "interpolate.png").read_bytes() == b"earlier strip"
    assert (tmp_path / "i" / "pairs").read_text() == "mine" and not (tmp_path / "out").exists()


def test_individual_replaces_the_earlier_images_whole_or_not_at_all(models, tmp_path, capsys, monkeypatch):
    args = ["-t", "pairs", "-n", "2", "--individual", "--pairs", "blue hair red eyes"]
    assert _test(capsys, models["onehot"], tmp_path, *args)[0] == 0
    folder = tmp_path / "pairs"
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    save_grid = render.save_grid

    def interrupted_at_the_second_image(images, path, **kwargs):
        if path.name.startswith("001"):
            raise KeyboardInterrupt
        return save_grid(images, path, **kwargs)
    monkeypatch.setattr(render, "save_grid", interrupted_at_the_second_image)
    rc, _, _ = _test(capsys, models["onehot"], tmp_path, *args, "--seed", "1")
    assert rc == 130 and {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no mix of old and new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs", "pairs.png"]  # no staging folder left
    monkeypatch.undo()
    # what a run killed with -9 left beside it goes with the next run
    (tmp_path / ".pairs.partial").mkdir()
    (tmp_path / ".pairs.partial" / "000 blue hair red eyes.png").write_bytes(b"half")
    (tmp_path / ".pairs.old").mkdir()
    assert _test(capsys, models["onehot"], tmp_path, *args, "--seed", "1")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs", "pairs.png"]
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after.keys() == before.keys() and after != before and after["notes.txt"] == b"mine"


def test_a_failed_test_removes_the_folders_it_made(models, tmp_path, capsys, monkeypatch):
    def full_disk(images, path, **kwargs):
        raise UserError(f"{path}: could not be written (No space left on device)")
    monkeypatch.setattr(render, "save_grid", full_disk)
    rc, out, err = _test(capsys, models["onehot"], tmp_path / "new" / "sub", "-t", "fix_noise", "--individual")
    assert rc == 2 and out == [] and "No space left" in err and not (tmp_path / "new").exists()
    # the grid was drawn, then its --individual subfolder failed: neither lands, nothing hidden stays
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    monkeypatch.undo()
    save_grid = render.save_grid
    monkeypatch.setattr(render, "save_grid", lambda images, path, **kw: (
        full_disk(images, path) if path.parent.name != "mine" else save_grid(images, path, **kw)))
    rc, _, _ = _test(capsys, models["onehot"], tmp_path / "mine", "-t", "fix_noise", "--individual")
    assert rc == 2 and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_stopped_test_leaves_the_earlier_outputs_together(models, tmp_path, capsys, monkeypatch):
    """Ctrl-C after the new grid is drawn but before its GIF and images: the earlier grid, GIF and
    folder stay, all from the earlier run, never a new grid beside an old GIF."""
    args = ["-t", "interpolate", "--steps", "4", "--individual"]
    rc, paths, _ = _test(capsys, models["onehot"], tmp_path / "out", *args)
    assert rc == 0 and [Path(p).name for p in paths] == ["interpolate.png", "interpolate.gif", "interpolate"]
    before = snapshot(tmp_path / "out")

    def stopped(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(render, "save_gif", stopped)
    rc, _, _ = _test(capsys, models["onehot"], tmp_path / "out", *args, "--seed", "1")
    assert rc == 130 and snapshot(tmp_path / "out") == before  # (snapshot reads hidden files too)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["interpolate", "interpolate.gif",
                                                                      "interpolate.png"]


def test_progress_notes_the_drawing_flags_it_does_not_use(models, tmp_path, capsys):
    rc, paths, err = _test(capsys, models["onehot"], tmp_path, "-t", "progress", "--seed", "3", "--no-ema",
                           "--device", "cuda:7")  # no GPU here: progress draws nothing, so no refusal
    assert rc == 0 and paths == [str(tmp_path / "progress.gif")]
    for flag in ("--seed", "--no-ema", "--device"):
        assert f"note: -t progress does not use {flag}; ignored" in err


def test_progress_shows_at_most_max_frames_evenly_spaced(tmp_path, capsys, monkeypatch):
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    for step in range(1, 8):  # a colour per step, so the frames shown can be read back
        Image.new("RGB", (4, 4), (30 * step, 0, 0)).save(snaps / f"fake_step_{step}.png")
    monkeypatch.setattr(sampling, "MAX_FRAMES", 3)
    rc, paths, err = _test(capsys, tmp_path / "nope", snaps, "-t", "progress")
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(paths[0]))]
    assert rc == 0 and [f[0, 0, 0] for f in frames] == [30, 120, 210]  # steps 1, 4, 7
    assert "note: progress.gif shows 3 of 7 snapshots, evenly spaced (the first and last included)" in err
    for n in range(1, 40):
        for most in range(2, 12):
            picked = sampling._evenly_spaced(list(range(n)), most)
            assert len(set(picked)) == min(n, most) and picked[0] == 0 and picked[-1] == n - 1
