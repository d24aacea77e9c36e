"""Bad input through the CLI: exit status 2, one line on stderr naming the file and the fix, no
traceback, and nothing already on disk damaged. Plus --version, --help and usage errors."""
import argparse
import json
import pickle

import pytest
import torch

from anime_gan import __version__
from anime_gan.cli import build_parser

from conftest import (PAIRS, draw, one_line_error, snapshot, unwritable_dir, write_json_layout, write_tag_pickle,
                      write_tags_csv)


# ---- missing input -------------------------------------------------------------------------------

def test_missing_source_folder(cli, tmp_path):
    missing = tmp_path / "nope"
    one_line_error(cli("prepare", missing, "-q"), missing, "not found", "prepare --synthetic")
    one_line_error(cli("prepare", missing, "-o", tmp_path / "out", "-q"), missing)
    assert list(tmp_path.iterdir()) == []   # neither SOURCE nor -o was created


@pytest.mark.parametrize("args, needle", [
    (["train", "-t", " "], "' ': no such data folder"),
    (["train-judge", "-t", " "], "' ': no such data folder"),
    (["test", "-d", " "], "' ': no such run folder or checkpoint"),
    (["eval", "-d", " "], "' ': no such run folder or checkpoint"),
    (["train", "--resume", " "], "' ': no such run folder or checkpoint"),
])
def test_a_path_of_spaces_is_quoted_in_the_error(cli, tmp_path, monkeypatch, args, needle):
    """Unquoted, the line read "error:  : no such ..." with the name lost in the blanks."""
    monkeypatch.chdir(tmp_path)
    for dry_run in ([], ["--dry-run"]):
        one_line_error(cli(*args, *dry_run), f"error: {needle}")


def test_prepare_without_source_or_synthetic(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(cli("prepare", "-q"), "SOURCE", "--synthetic")
    assert list(tmp_path.iterdir()) == []   # no stray ./data


def test_empty_source_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(cli("prepare", tmp_path / "empty", "-o", tmp_path / "out", "-q"),
                   tmp_path / "empty", "no usable images", "README")
    assert not (tmp_path / "out").exists()


def test_no_usable_images_says_why(cli, tmp_path):
    root = write_tags_csv(tmp_path / "src", PAIRS[:2])
    for image in (root / "images").iterdir():
        image.unlink()
    one_line_error(cli("prepare", root, "-o", tmp_path / "out", "-q"), "no usable images found (2 skipped, first",
                   "missing image")
    assert not (tmp_path / "out").exists()


def test_tags_csv_with_a_byte_order_mark_and_odd_extensions(cli, tmp_path):
    """Excel's BOM is not part of id 0; images/<id> may be .webp, .bmp or upper case."""
    from PIL import Image
    root = write_tags_csv(tmp_path / "src", PAIRS[:3])
    (root / "tags.csv").write_bytes(b"\xef\xbb\xbf" + (root / "tags.csv").read_bytes())
    for i, ext in ((1, ".webp"), (2, ".PNG")):
        Image.open(root / "images" / f"{i}.jpg").save(root / "images" / f"{i}{ext}",
                                                     format="WEBP" if ext == ".webp" else "PNG")
        (root / "images" / f"{i}.jpg").unlink()
    rc, out, err = cli("prepare", root, "-o", tmp_path / "out")
    assert rc == 0 and out.startswith("3 images from") and "skipped" not in out, out


def test_json_layout_without_train_json(cli, tmp_path):
    root = write_json_layout(tmp_path / "src")
    (root / "train.json").unlink()
    one_line_error(cli("prepare", root, "-o", tmp_path / "out", "-q"), root / "train.json", "objects.json")


# ---- counts, missing and corrupt images: listed, and fatal only with --strict -----------------------

def test_tags_and_images_count_mismatch(cli, tmp_path):
    root = write_tag_pickle(tmp_path / "src")
    for i in (4, 10):                                   # 12 tags, 10 images
        (root / "images" / f"{i}.jpg").unlink()
    draw(root / "images" / "12.jpg", (0, 0, 0))          # and one image with no tag
    rc, out, err = cli("prepare", root, "-o", tmp_path / "out", "-q")
    assert rc == 0 and out.startswith("10 images") and "skipped 3 file(s)" in out
    assert f"{root / 'images' / '4'}.{{jpg,png,jpeg,bmp,webp}}: missing image" in out
    assert f"{root / 'images' / '12.jpg'}: missing label" in out
    one_line_error(cli("prepare", root, "-o", tmp_path / "strict", "--strict", "-q"),
                   "--strict: 3 file(s) skipped", f"{root / 'images' / '4'}.{{jpg,png,jpeg,bmp,webp}}", "drop --strict")


@pytest.mark.parametrize("damage", ["missing", "corrupt", "16-bit"])
def test_missing_or_corrupt_image_with_strict(cli, tmp_path, damage):
    root = write_tags_csv(tmp_path / "src")
    image = root / "images" / "5.jpg"
    if damage == "missing":
        image.unlink()
        image = f"{root / 'images' / '5'}.{{jpg,png,jpeg,bmp,webp}}"  # any of these would have done
    elif damage == "corrupt":
        image.write_bytes(b"\x00" * 100)
    else:
        from PIL import Image
        import numpy as np
        image.unlink()
        image = image.with_suffix(".png")
        Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(image)
    rc, out, _ = cli("prepare", root, "-o", tmp_path / "out", "-q")
    assert rc == 0 and "skipped 1 file(s)" in out and str(image) in out
    out_dir = tmp_path / "out"
    before = snapshot(out_dir)
    one_line_error(cli("prepare", root, "-o", out_dir, "--strict", "-q"), image, "--strict")
    assert snapshot(out_dir) == before


# ---- bad labels ----------------------------------------------------------------------------------

def test_unknown_object_in_train_json(cli, tmp_path):
    root = write_json_layout(tmp_path / "src", {"a.png": ["gray cube"], "b.png": ["pink cube"]})
    one_line_error(cli("prepare", root, "-o", tmp_path / "out", "-q"),
                   root / "train.json", "'b.png'", "pink cube", "objects.json")


def test_unknown_colour_in_tags_csv_is_listed_and_strict_fails(cli, tmp_path):
    root = write_tags_csv(tmp_path / "src", PAIRS[:3], extra_rows=["3,teal hair blue eyes"])
    draw(root / "images" / "3.jpg", (0, 0, 0))
    rc, out, _ = cli("prepare", root, "-o", tmp_path / "out", "-q")
    assert rc == 0 and out.startswith("3 images") and f"{root / 'tags.csv'}:4: unreadable label" in out
    assert "teal" in out
    err = one_line_error(cli("prepare", root, "-o", tmp_path / "strict", "--strict", "-q"),
                         f"{root / 'tags.csv'}:4", "'teal'", "valid hair colours: orange, white")
    assert "blonde" in err


@pytest.mark.parametrize("bad, needle", [
    (lambda: torch.zeros(21), "21 numbers"),
    (lambda: (torch.eye(12)[0], torch.eye(9)[0]), "a tuple of parts with [12, 9] numbers"),
    (lambda: torch.cat([torch.eye(12)[0] + torch.eye(12)[1], torch.eye(10)[0]]), "exactly one hair"),
    (lambda: "blue hair", "not a vector of numbers"),
])
def test_malformed_tags_pickle_entries(cli, tmp_path, bad, needle):
    root = write_tag_pickle(tmp_path / "src", PAIRS[:3])
    tags = {0: torch.cat([torch.eye(12)[0], torch.eye(10)[0]]), 1: bad(), 2: torch.zeros(22)}
    (root / "tags.pickle").write_bytes(pickle.dumps(tags))
    err = one_line_error(cli("prepare", root, "-o", tmp_path / "out", "-q"), root / "tags.pickle",
                         "entry 1", needle)
    assert "re-" in err   # says how to fix it (re-export / re-create)
    assert not (tmp_path / "out" / "cache").exists()


def test_tags_pickle_that_is_not_a_dict(cli, tmp_path):
    root = write_tag_pickle(tmp_path / "src", PAIRS[:2])
    (root / "tags.pickle").write_bytes(pickle.dumps([torch.zeros(22)] * 2))
    one_line_error(cli("prepare", root, "-q"), root / "tags.pickle", "expected a dict", "anime-gan prepare")


# ---- output folder -------------------------------------------------------------------------------

def test_unwritable_output_folder(cli, tmp_path):
    src = write_tags_csv(tmp_path / "src", PAIRS[:2])
    out = unwritable_dir(tmp_path)
    one_line_error(cli("prepare", src, "-o", out, "-q"), out, "cannot write", "-o")
    one_line_error(cli("prepare", "--synthetic", "4", "-o", out, "-q"), out, "cannot write")
    assert not out.exists()


@pytest.mark.parametrize("existing", ["builtin", "tags-csv", "json", "loose images"])
def test_synthetic_into_existing_data_set_is_refused(cli, tmp_path, builtin_set, existing):
    root = tmp_path / "data"
    if existing == "builtin":
        import shutil
        shutil.copytree(builtin_set, root)
    elif existing == "tags-csv":
        write_tags_csv(root, PAIRS[:2])
    elif existing == "json":
        write_json_layout(root)
    else:
        draw(root / "face.png", (1, 2, 3))
    before = snapshot(root)
    one_line_error(cli("prepare", "--synthetic", "8", "-o", root, "-q"), root, "already holds a data set",
                   "empty folder")
    assert snapshot(root) == before


@pytest.mark.parametrize("source_layout", ["tags-csv", "loose images"])
def test_prepare_into_another_data_set_is_refused(cli, tmp_path, builtin_set, source_layout):
    """Writing a smaller set over a bigger one would leave old images/{i} to be read as the new set's."""
    import shutil
    out = tmp_path / "data"
    shutil.copytree(builtin_set, out)
    src = tmp_path / "src"
    write_tags_csv(src, PAIRS[:2]) if source_layout == "tags-csv" else draw(src / "face.png", (1, 2, 3))
    before = snapshot(out)
    one_line_error(cli("prepare", src, "-o", out, "-q"), out, "already holds a data set from elsewhere",
                   "anime-gan prepare " + str(out) + " --image-size N")
    assert snapshot(out) == before


def test_prepare_rerun_from_the_same_source_replaces_its_copies(cli, tmp_path):
    """Re-running `prepare SRC -o OUT` after SRC shrank leaves no old copy or other-size cache behind."""
    from anime_gan.data.formats import scan
    src, out = write_tags_csv(tmp_path / "src"), tmp_path / "out"
    assert cli("prepare", src, "-o", out, "-q")[0] == 0
    assert cli("prepare", out, "--image-size", 32, "-q")[0] == 0
    n = len(scan(out).files)
    lines = (src / "tags.csv").read_text().splitlines()
    (src / "tags.csv").write_text("\n".join(lines[:-3]) + "\n")     # three fewer labelled images
    assert cli("prepare", src, "-o", out, "-q")[0] == 0
    rescanned = scan(out)
    assert len(rescanned.files) == n - 3 and not rescanned.skipped
    assert len(list((out / "images").iterdir())) == n - 3
    assert not (out / "cache" / "images_32.npy").exists() and (out / "cache" / "images_64.npy").exists()



def test_prepare_rerun_with_relative_paths_from_another_directory(cli, tmp_path, monkeypatch):
    """The same SOURCE named by a relative path from elsewhere is still the same SOURCE."""
    src = write_tags_csv(tmp_path / "a" / "src")
    monkeypatch.chdir(tmp_path / "a")
    assert cli("prepare", "src", "-o", "../out", "-q")[0] == 0
    monkeypatch.chdir(tmp_path)
    rc, _, err = cli("prepare", "a/src", "-o", "out", "-q")
    assert rc == 0, err
    assert len(list((tmp_path / "out" / "images").iterdir())) == len(list((src / "images").iterdir()))


def test_source_and_synthetic_together_are_refused(cli, tmp_path):
    src = write_tags_csv(tmp_path / "src")
    one_line_error(cli("prepare", src, "--synthetic", "8", "-o", tmp_path / "out", "-q"), "not both")
    assert not (tmp_path / "out").exists()


def test_source_that_is_a_file_names_its_folder(cli, builtin_set):
    one_line_error(cli("prepare", builtin_set / "tags.pickle", "-o", "never"), "is a file",
                   f"give the data folder that holds it ({builtin_set})")


def test_many_missing_images_are_summarised_not_listed(cli, tmp_path, builtin_set):
    """A tags file naming 30 absent images: a few lines and where the full list is, not a flood."""
    import shutil
    src = tmp_path / "src"
    shutil.copytree(builtin_set, src)
    for i in range(30):
        next((src / "images").glob(f"{i}.*")).unlink()
    rc, out, _ = cli("prepare", src, "-o", tmp_path / "out")
    listed = [l for l in out.splitlines() if "missing image" in l]
    assert rc == 0 and len(listed) == 10 and "images/0.{jpg,png,jpeg,bmp,webp}: missing image" in listed[0]
    assert "... and 20 more, all listed in" in out and "meta_64.json" in out

# ---- --version, --help, usage errors --------------------------------------------------------------

def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def test_a_tilde_the_shell_left_is_the_home_folder(cli, tmp_path, monkeypatch, builtin_set):
    """--train-dir=~/x and quoted paths: the shell does not expand the ~, so we do."""
    import shutil
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shutil.copytree(builtin_set, tmp_path / "home" / "faces")
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli("prepare", "~/faces", "-o", "~/out", "-q")
    assert rc == 0, err
    assert (tmp_path / "home" / "out" / "tags.pickle").exists() and not (tmp_path / "~").exists()


def test_version(cli):
    rc, out, _ = cli("--version")
    assert rc == 0 and out.strip() == f"anime-gan {__version__}"


def test_subcommands_include_the_core_three():
    assert {"prepare", "train", "test"} <= set(subcommands())


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_help_ends_with_examples(cli, command):
    rc, out, _ = cli(command, "--help")
    assert rc == 0
    tail = out.rstrip("\n").split("\nexamples:\n")
    assert len(tail) == 2, "no 'examples:' section"
    examples = tail[1].splitlines()
    assert examples and all(line.startswith("  ") and "anime" in line for line in examples)


@pytest.mark.parametrize("command", subcommands())
def test_every_option_with_a_default_says_it(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    silent = [a.option_strings[0] for a in sub._actions
              if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._StoreTrueAction))
              and a.default not in (None, []) and "default" not in (a.help or "")]
    assert silent == []


@pytest.mark.parametrize("argv, needle", [
    ([], "COMMAND"),
    (["prepare", "--image-size", "48"], "--image-size"),
    (["prepare", "--synthetic", "many"], "--synthetic"),
    (["nonsense"], "nonsense"),
])
def test_usage_errors_are_one_line(cli, argv, needle):
    rc, out, err = cli(*argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err and "--help" in err


@pytest.mark.parametrize("argv, name", [
    (["train", "-c", "", "--dry-run"], "-c/--checkpoint_dir/--checkpoint-dir"),
    (["train", "--resume", "", "--dry-run"], "--resume"),
    (["train", "--name", "", "--dry-run"], "--name"),
    (["prepare", "", "--dry-run"], "SOURCE"),
    (["prepare", "--synthetic", "8", "-o", "", "--dry-run"], "-o/--out"),
    (["test", "--hair", "", "--dry-run"], "--hair"),
    (["eval", "--judge", "", "--dry-run"], "--judge"),
    (["train-judge", "-t", "", "--dry-run"], "-t/--train_dir/--train-dir"),
])
def test_an_empty_value_is_refused_not_read_as_the_current_folder(cli, tmp_path, monkeypatch, argv, name):
    # `-c "$CKPT"` with CKPT unset: Path("") is ".", which would fill the current folder
    monkeypatch.chdir(tmp_path)
    one_line_error(cli(*argv), f"argument {name}: empty value")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_flag_names_its_command(cli):
    rc, _, err = cli("test", "-t", "fix_noise", "--bogus")
    assert rc == 2 and err.startswith("anime-gan test: error: unrecognized arguments: --bogus")
    rc, _, err = cli("prepare", "--synthetic", "0")
    assert rc == 2 and "--synthetic N (1 or more)" in err


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    """`anime-gan prepare ... | head -0`: the report cannot be printed; the data set is still written
    and there is no traceback about the broken pipe."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "anime_gan", "prepare", "--synthetic", "8", "-o",
                             str(tmp_path / "d"), "--image-size", "32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err and "Broken pipe" not in err
    assert len(list((tmp_path / "d" / "images").iterdir())) == 8 and (tmp_path / "d" / "tags.pickle").is_file()


def test_a_prefix_of_one_option_spelled_two_ways_is_that_option(cli, tmp_path):
    rc, out, _ = cli("train", "--batch", 4, "-t", tmp_path, "--dry-run")  # --batch_size and --batch-size
    assert rc == 0 and json.loads(out)["train"]["batch_size"] == 4
    one_line_error(cli("train", "--n", 4, "-t", tmp_path, "--dry-run"), "ambiguous option: --n could match --nf")
