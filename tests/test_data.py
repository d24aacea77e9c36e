"""Data: reading the four layouts, `prepare` into the tag-pickle layout plus the memory-mapped cache,
skipped files, and the loaders (`open_packed` + `Batches`, `FileImages`)."""
import io
import json
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from anime_gan import safe_pickle
from anime_gan.config import PrepareConfig
from anime_gan.data.dataset import Batches, FileImages, LabelSampler, open_packed
from anime_gan.data.formats import read_image, scan
from anime_gan.data.prepare import cache_paths, prepare
from anime_gan.errors import UserError
from anime_gan.labels import EYE_COLORS, HAIR_COLORS, Schema, anime_schema

from conftest import (PAIRS, colour_of, draw, one_line_error, onehot, snapshot, write_folder, write_json_layout,
                      write_tag_pickle, write_tags_csv)

ANIME = anime_schema()


def pair_labels(pairs=PAIRS):
    out = np.zeros((len(pairs), 22), np.float32)
    for i, (h, e) in enumerate(pairs):
        out[i, h] = out[i, 12 + e] = 1
    return out


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


LAYOUTS = {
    "tag-pickle": lambda root: write_tag_pickle(root),
    "tag-pickle-tuples": lambda root: write_tag_pickle(root, style="tuple", ext=".png"),
    "json": lambda root: write_json_layout(root),
    "tags-csv": lambda root: write_tags_csv(root),
    "folder": lambda root: write_folder(root),
}
KIND = {"tag-pickle": "tag-pickle", "tag-pickle-tuples": "tag-pickle", "json": "json",
        "tags-csv": "tags-csv", "folder": "folder"}


def expected_colours(layout, src):
    """The hair-colour name each image was drawn in (see conftest)."""
    if layout == "json":
        scenes = json.loads((src.root / "train.json").read_text())
        return [scenes[f.name][0].split()[0] for f in src.files]
    if layout == "folder":
        return [HAIR_COLORS[int(f.stem.split("_")[1]) % 12] for f in src.files]
    return [HAIR_COLORS[h] for h in src.labels[:, :12].argmax(1)]


# ---- scanning each layout ------------------------------------------------------------------------

@pytest.mark.parametrize("style", ["tensor", "tuple", "numpy", "list"])
def test_tag_pickle_labels_of_every_style(tmp_path, style):
    src = scan(write_tag_pickle(tmp_path, style=style))
    assert src.kind == "tag-pickle" and src.schema == ANIME and not src.skipped
    assert [f.name for f in src.files] == [f"{i}.jpg" for i in range(12)]  # numeric, not 0, 1, 10, 11, 2
    assert np.array_equal(src.labels, pair_labels()) and src.labels.dtype == np.float32


def test_tag_pickle_with_schema_json_uses_it(tmp_path):
    schema = Schema.from_dict({"groups": [{"name": "hair", "classes": ["red", "blue"], "suffixes": ["hair"]}]})
    schema.save(tmp_path)
    for i, c in enumerate(["red", "blue", "blue"]):
        draw(tmp_path / "images" / f"{i}.png", (0, 0, 0))
    tags = {i: torch.eye(2)[c] for i, c in enumerate([0, 1, 1])}
    (tmp_path / "tags.pickle").write_bytes(__import__("pickle").dumps(tags))
    src = scan(tmp_path)
    assert src.schema == schema and src.labels.argmax(1).tolist() == [0, 1, 1]


@pytest.mark.parametrize("objects_name, base, image_dir", [("objects.json", 0, "images"),
                                                           ("object.json", 0, ""),
                                                           ("object.json", 1, "iclevr")])
def test_json_layout(tmp_path, objects_name, base, image_dir):
    scenes = {"a.png": ["gray cube"], "b.png": ["cyan cube", "cyan sphere"],
              "c.png": ["yellow cylinder", "red cube", "blue sphere"]}
    src = scan(write_json_layout(tmp_path, scenes, objects_name, base, image_dir))
    assert src.kind == "json" and src.schema.multi_label == 24 and not src.skipped
    assert [f.name for f in src.files] == list(scenes)
    assert [src.schema.describe(v) for v in src.labels] == [
        "gray cube", "cyan cube cyan sphere", "red cube blue sphere yellow cylinder"]


def test_tags_csv_layout(tmp_path):
    src = scan(write_tags_csv(tmp_path, extra_rows=["", "99,teal hair blue eyes", "98"]))
    assert src.kind == "tags-csv" and src.schema == ANIME
    assert np.array_equal(src.labels, pair_labels())
    reasons = dict(src.skipped)
    assert "teal" in reasons[f"{tmp_path / 'tags.csv'}:14"] and "valid hair colours" in reasons[f"{tmp_path / 'tags.csv'}:14"]
    assert reasons[f"{tmp_path / 'tags.csv'}:15"] == "no tags after the id"


def test_plain_folder_is_unlabelled_and_skips_the_cache(tmp_path):
    write_folder(tmp_path, 5)
    draw(tmp_path / "cache" / "old.png", (0, 0, 0))
    (tmp_path / "notes.txt").write_text("not an image")
    src = scan(tmp_path)
    assert src.kind == "folder" and src.schema is None and src.labels is None
    assert sorted(f.relative_to(tmp_path).as_posix() for f in src.files) == [
        "img_0.png", "img_1.png", "img_2.png", "more/img_3.png", "more/img_4.png"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_file_loader_reads_every_layout(tmp_path, layout):
    src = scan(LAYOUTS[layout](tmp_path / "d"))
    assert src.kind == KIND[layout]
    loader = torch.utils.data.DataLoader(FileImages(src, 32), batch_size=4, shuffle=False)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (len(src.files), 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.5 and x.max() > 0.5
    assert y.shape == ((len(src.files), src.schema.dim) if src.schema else (len(src.files), 0))
    assert [colour_of(to_uint8(im)) for im in x] == expected_colours(layout, src)


# ---- prepare: any layout -> tag-pickle layout + packed cache ------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_prepare_converts_every_layout(cli, tmp_path, layout):
    src_root = LAYOUTS[layout](tmp_path / "src")
    before, source_bytes = scan(src_root), snapshot(src_root)
    out = tmp_path / "out"
    rc, stdout, err = cli("prepare", src_root, "-o", out, "-q")
    assert rc == 0, err
    n = len(before.files)
    assert stdout.startswith(f"{n} images from {src_root} ({KIND[layout]} layout) -> {out} at 64px")
    assert snapshot(src_root) == source_bytes  # the source is only read

    # the packed cache: uint8 [N, 3, 64, 64], opened memory-mapped
    images_path, labels_path, meta_path = cache_paths(out, 64)
    assert images_path == out / "cache" / "images_64.npy"
    raw = np.load(images_path, mmap_mode="r")
    assert isinstance(raw, np.memmap) and raw.dtype == np.uint8 and raw.shape == (n, 3, 64, 64)
    packed = open_packed(out, 64)
    assert isinstance(packed.images, np.memmap) and len(packed) == n
    assert [colour_of(im) for im in packed.images] == expected_colours(layout, before)

    after = scan(out)
    assert [f.name for f in after.files] == [f"{i}{before.files[i].suffix}" for i in range(n)]
    if layout == "folder":
        assert after.kind == "folder" and packed.labels is None and packed.schema is None
        assert not (out / "tags.pickle").exists()
        return
    # the tag-pickle layout: tags.pickle of multi-hot tensors, schema.json and class-frequency priors
    assert after.kind == "tag-pickle" and after.schema == before.schema == packed.schema
    assert np.array_equal(after.labels, before.labels) and np.array_equal(packed.labels, before.labels)
    tags = safe_pickle.load(out / "tags.pickle")
    assert sorted(tags) == list(range(n)) and all(isinstance(t, torch.Tensor) for t in tags.values())
    assert Schema.load(out) == before.schema
    for g in before.schema.groups:
        counts = before.labels[:, before.schema.span(g.name)].sum(0)
        prior = np.load(out / f"{g.name}_prob.npy")
        assert prior.dtype == np.float32 and np.allclose(prior, counts / counts.sum())
    x, y = packed[0]
    assert x.min() >= -1 and x.max() <= 1 and torch.equal(y, torch.from_numpy(before.labels[0]))


def test_prepare_priors_and_counts_follow_class_frequencies(tmp_path):
    pairs = [(8, 8)] * 3 + [(11, 9)] + [(0, 0)] * 4   # blue x3, blonde x1, orange x4
    report = prepare(PrepareConfig(source=str(write_tags_csv(tmp_path / "src", pairs)),
                                   out=str(tmp_path / "out"), quiet=True))
    hair = report["class_counts"]["hair"]
    assert list(hair) == list(HAIR_COLORS) and list(report["class_counts"]["eye"]) == list(EYE_COLORS)
    assert (hair["blue"], hair["blonde"], hair["orange"], hair["red"]) == (3, 1, 4, 0)
    assert report["class_counts"]["eye"]["red"] == 3
    prior = np.load(tmp_path / "out" / "hair_prob.npy")
    assert prior[8] == pytest.approx(3 / 8) and prior[11] == pytest.approx(1 / 8) and prior[0] == 0.5
    assert json.loads((tmp_path / "out" / "cache" / "meta_64.json").read_text())["class_counts"] == \
        report["class_counts"]


def test_prepare_prints_counts_per_class(cli, tmp_path):
    rc, out, _ = cli("prepare", write_tags_csv(tmp_path / "src", [(8, 8), (8, 1)]), "-o", tmp_path / "o", "-q")
    assert rc == 0
    assert "  hair: orange 0, white 0, aqua 0, gray 0, green 0, red 0, purple 0, pink 0, blue 2," in out
    assert "  eye: black 0, orange 1, " in out and "red 1" in out


@pytest.mark.parametrize("size", [32, 64, 128])
def test_prepare_at_each_size(cli, tmp_path, size):
    src = write_tags_csv(tmp_path / "src", PAIRS[:3])
    assert cli("prepare", src, "-o", tmp_path / "out", "--image-size", size, "-q")[0] == 0
    packed = open_packed(tmp_path / "out", size)
    assert packed.images.shape == (3, 3, size, size)
    assert [colour_of(im) for im in packed.images] == [HAIR_COLORS[h] for h, _ in PAIRS[:3]]
    other = 64 if size != 64 else 32
    with pytest.raises(UserError, match=f"--image-size {other}"):
        open_packed(tmp_path / "out", other)


def test_prepare_in_place_adds_a_cache_and_keeps_the_labels(cli, tmp_path):
    root = write_tag_pickle(tmp_path / "d")
    before = snapshot(root)
    assert cli("prepare", root, "-q")[0] == 0
    assert cli("prepare", root, "--image-size", 128, "-q")[0] == 0
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before   # nothing overwritten
    assert {"cache/images_64.npy", "cache/images_128.npy", "hair_prob.npy", "schema.json"} <= set(after)
    assert open_packed(root, 128).images.shape == (12, 3, 128, 128)
    assert np.array_equal(open_packed(root, 64).labels, pair_labels())


def test_prepare_tags_csv_in_place_keeps_labels_in_the_cache(tmp_path):
    root = write_tags_csv(tmp_path / "d")
    prepare(PrepareConfig(source=str(root), out=str(root), quiet=True))
    packed = open_packed(root, 64)
    assert packed.schema == ANIME and np.array_equal(packed.labels, pair_labels())
    assert set(packed.priors) == {"hair", "eye"} and np.isclose(packed.priors["hair"].sum(), 1)


def test_prepare_dry_run_prints_json_and_writes_nothing(cli, tmp_path):
    write_folder(tmp_path / "src")
    before = snapshot(tmp_path)
    rc, out, _ = cli("prepare", tmp_path / "src", "-o", tmp_path / "out", "--image-size", 32, "--strict",
                     "--dry-run")
    cfg = json.loads(out)
    assert rc == 0 and cfg["source"] == str(tmp_path / "src") and cfg["out"] == str(tmp_path / "out")
    assert cfg["image_size"] == 32 and cfg["strict"] is True and cfg["synthetic"] == 0
    assert snapshot(tmp_path) == before


def test_prepare_notes_a_seed_that_only_the_builtin_faces_use(cli, tmp_path):
    write_folder(tmp_path / "src")
    rc, _, err = cli("prepare", tmp_path / "src", "-o", tmp_path / "out", "--seed", 5, "-q")
    assert rc == 0 and err == "note: --seed picks the built-in faces --synthetic draws; a SOURCE is read as it " \
                              "is: ignored\n"


def test_prepare_dry_run_refuses_the_folders_a_real_run_refuses(cli, tmp_path):
    for dry_run in ([], ["--dry-run"]):
        one_line_error(cli("prepare", tmp_path / "typo", "-o", tmp_path / "out", *dry_run),
                       f"{tmp_path / 'typo'}: data folder not found")
        # a name of spaces is quoted, or the line would start with blanks and the command lose its argument
        # and SOURCE is only read: the built-in faces are not offered to be drawn into the typo
        err = one_line_error(cli("prepare", " ", *dry_run), "error: ' ': data folder not found",
                             "prepare --synthetic 2000 -o DIR`")
        assert "-o ' '" not in err
        write_folder(tmp_path / "src")
        write_folder(tmp_path / "other")  # -o naming another data set
        before = snapshot(tmp_path)
        one_line_error(cli("prepare", tmp_path / "src", "-o", tmp_path / "other", *dry_run),
                       f"{tmp_path / 'other'}: already holds a data set from elsewhere")
        one_line_error(cli("prepare", "--synthetic", 4, "-o", tmp_path / "other", *dry_run),
                       f"{tmp_path / 'other'}: already holds a data set; choose an empty folder")
        (tmp_path / "run").mkdir(exist_ok=True)
        (tmp_path / "run" / "G_2.ckpt").write_text("a checkpoint")  # -o naming a folder of other things
        before = snapshot(tmp_path)
        for source in (["--synthetic", 4], [tmp_path / "src"]):
            one_line_error(cli("prepare", *source, "-o", tmp_path / "run", *dry_run),
                           f"{tmp_path / 'run'}: holds other files (G_2.ckpt); choose an empty or new folder")
        assert snapshot(tmp_path) == before
        (tmp_path / "no_images").mkdir(exist_ok=True)
        (tmp_path / "no_images" / "readme.txt").write_text("not an image")
        before = snapshot(tmp_path)
        one_line_error(cli("prepare", tmp_path / "no_images", "-o", tmp_path / "out", *dry_run),
                       f"{tmp_path / 'no_images'}: no usable images found")
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, message", [
    (["--synthetic", "-5"], "--synthetic must be 0 or more, got -5"),
    (["--synthetic", "2000000"], "more than the 1,000,000 faces"),
    (["--seed", "-1", "--synthetic", "4"], "--seed must be between 0 and 2147483647"),
    ([], "prepare needs a SOURCE folder"),
])
def test_prepare_dry_run_checks_values_like_a_real_run(cli, tmp_path, args, message):
    rc, out, err = cli("prepare", *args, "-o", tmp_path / "out", "--dry-run")
    assert rc == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_builtin_data_set(builtin_set):
    src = scan(builtin_set)
    assert src.kind == "tag-pickle" and len(src.files) == 120 and not src.skipped
    packed = open_packed(builtin_set, 64)
    assert packed.images.shape == (120, 3, 64, 64) and isinstance(packed.images, np.memmap)
    assert np.array_equal(packed.labels, src.labels)
    for g in ("hair", "eye"):
        counts = src.labels[:, ANIME.span(g)].sum(0)
        assert np.allclose(np.load(builtin_set / f"{g}_prob.npy"), counts / 120)
    assert (src.labels[:, :12].sum(0) > 0).sum() >= 10   # the colours are spread, not one class


# ---- image decoding ------------------------------------------------------------------------------

@pytest.mark.parametrize("side", [256, 100])
def test_resize_is_antialiased(tmp_path, side):
    """A 1-pixel checkerboard shrunk must become flat grey; point sampling gives black, white or
    a full-contrast moire instead."""
    board = (np.indices((side, side)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board).save(tmp_path / "board.png")
    x = read_image(tmp_path / "board.png", 64).astype(np.float64)
    assert x.shape == (3, 64, 64)
    assert abs(x.mean() - 127.5) < 4 and x.std() < 4


def test_centre_crop_and_transparency_on_white(tmp_path):
    wide = np.zeros((40, 120, 4), np.uint8)
    wide[:, :40] = (255, 0, 0, 255)
    wide[:, 40:80] = (0, 0, 255, 255)
    wide[:, 80:] = (0, 255, 0, 255)
    wide[:10, 40:80, 3] = 0   # a transparent strip at the top of the middle third
    Image.fromarray(wide, "RGBA").save(tmp_path / "wide.png")
    x = read_image(tmp_path / "wide.png", 32)
    assert x.shape == (3, 32, 32)
    assert tuple(x[:, 24, 16]) == (0, 0, 255)           # the centre square is the blue third
    assert tuple(x[:, 2, 16]) == (255, 255, 255)        # transparent -> white, not black


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with EXIF orientation 6 ("rotate 90 clockwise to view") is read the
    way viewers show it: the red top strip as stored becomes the right side."""
    stored = np.zeros((40, 40, 3), np.uint8)
    stored[:10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "side.jpg", exif=exif, quality=95)
    x = read_image(tmp_path / "side.jpg", 40)
    assert x[0, 20, 36] > 200 and x[0, 2, 20] < 60     # red on the right, not on top
    (tmp_path / "bad").mkdir()  # damaged EXIF over good pixels: the pixels as stored
    Image.fromarray(stored).save(tmp_path / "bad" / "x.jpg", exif=b"Exif\x00\x00II*\x00garbage")
    assert read_image(tmp_path / "bad" / "x.jpg", 40)[0, 2, 20] > 200


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "LA"])
def test_other_8bit_modes_decode_to_rgb(tmp_path, mode):
    Image.new("RGB", (20, 20), (200, 200, 200)).convert(mode).save(tmp_path / ("x.png" if mode != "CMYK" else "x.jpg"))
    x = read_image(next(tmp_path.iterdir()), 16)
    assert x.shape == (3, 16, 16) and x.dtype == np.uint8


def broken_files(images):
    """Four bad images next to good ones: corrupt, truncated, 16-bit, empty."""
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "JPEG")
    (images / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(images / "deep.png")
    assert Image.open(images / "deep.png").mode == "I;16"
    (images / "empty.png").write_bytes(b"")


def test_read_image_reasons(tmp_path):
    broken_files(tmp_path)
    reasons = {}
    for f in sorted(tmp_path.iterdir()):
        with pytest.raises(ValueError) as e:
            read_image(f, 32)
        reasons[f.name] = str(e.value)
    assert reasons["deep.png"] == "unsupported image mode I;16"
    assert all(r.startswith("unreadable image") for k, r in reasons.items() if k != "deep.png")


# ---- skipped files -------------------------------------------------------------------------------

def messy_tag_pickle(root):
    """12 labelled images, of which 4 are broken, one tag without an image, one image without a tag."""
    write_tag_pickle(root)
    images = root / "images"
    broken_files(images)
    for i, name in zip((2, 5, 7, 11), ("corrupt.jpg", "truncated.jpg", "deep.png", "empty.png")):
        (images / f"{i}.jpg").unlink()
        (images / name).rename(images / (f"{i}.png" if name.endswith(".png") else f"{i}.jpg"))
    (images / "9.jpg").unlink()                               # tag 9: missing image
    draw(images / "extra.jpg", (0, 0, 0))                     # no tag: missing label
    return root


def test_prepare_lists_skipped_files_instead_of_dying(cli, tmp_path):
    src = messy_tag_pickle(tmp_path / "src")
    rc, out, err = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0, err
    img = src / "images"
    expected = {f"{img / '9'}.{{jpg,png,jpeg,bmp,webp}}: missing image", f"{img / 'extra.jpg'}: missing label",
                f"{img / '7.png'}: unsupported image mode I;16"}
    assert expected <= set(line.strip() for line in out.splitlines())
    for name in ("2.jpg", "5.jpg", "11.png"):
        assert f"    {img / name}: unreadable image" in out
    assert "skipped 6 file(s):" in out and out.startswith("7 images from")
    kept = [i for i in range(12) if i not in (2, 5, 7, 9, 11)]
    packed = open_packed(tmp_path / "out", 64)
    assert len(packed) == len(kept) == 7
    assert np.array_equal(packed.labels, pair_labels()[kept])
    assert [colour_of(im) for im in packed.images] == [HAIR_COLORS[PAIRS[i][0]] for i in kept]
    meta = json.loads((tmp_path / "out" / "cache" / "meta_64.json").read_text())
    assert len(meta["skipped"]) == 6 and meta["images"] == 7


def test_strict_turns_any_skip_into_exit_2(cli, tmp_path):
    src = messy_tag_pickle(tmp_path / "src")
    rc, out, err = cli("prepare", src, "-o", tmp_path / "out", "--strict", "-q")
    assert rc == 2 and out == ""
    assert "--strict: 6 file(s) skipped" in err and "drop --strict" in err
    assert not (tmp_path / "out" / "cache" / "images_64.npy").exists()


def test_strict_with_only_decode_failures_keeps_an_existing_cache(cli, tmp_path):
    """A decode-time skip under --strict must not replace (or delete) the cache already there."""
    src = write_tag_pickle(tmp_path / "src")
    out = tmp_path / "out"
    assert cli("prepare", src, "-o", out, "-q")[0] == 0
    before = snapshot(out)
    (src / "images" / "3.jpg").write_bytes(b"garbage")
    rc, _, err = cli("prepare", src, "-o", out, "--strict", "-q")
    assert rc == 2 and "3.jpg (unreadable image" in err
    assert snapshot(out) == before


def test_prepare_when_no_image_decodes(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"junk")
    (src / "b.jpg").write_bytes(b"junk")
    rc, _, err = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 2 and "none of the 2 image(s) could be read" in err and "a.png" in err
    assert not (tmp_path / "out" / "cache" / "images_64.npy").exists()


# ---- the packed loader ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def packed_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed")
    write_tags_csv(root, PAIRS * 3)
    prepare(PrepareConfig(source=str(root), out=str(root / "out"), quiet=True))
    return open_packed(root / "out", 64)


def test_batches_yield_images_in_range_with_their_labels(packed_set):
    batches = Batches(packed_set, 16, "cpu", torch.Generator().manual_seed(0))
    for _ in range(3):
        x, y = next(batches)
        assert x.shape == (16, 3, 64, 64) and x.dtype == torch.float32 and y.shape == (16, 22)
        assert x.min() >= -1 and x.max() <= 1
        assert [colour_of(to_uint8(im)) for im in x] == [HAIR_COLORS[h] for h in y[:, :12].argmax(1)]
        assert torch.equal(y.sum(1), torch.full((16,), 2.0))


def test_data_on_device_auto_copies_to_ram_only_when_it_fits(packed_set, monkeypatch):
    """On the CPU, auto copied the whole cache into RAM whatever its size (the help says "if it fits")."""
    from anime_gan.data import dataset
    size = packed_set.images.nbytes
    for free, copied in ((size // 2, False), (size * 3, True), (None, True)):  # None: unknown, as before
        monkeypatch.setattr(dataset, "free_memory", lambda device: free)
        assert Batches(packed_set, 8, "cpu", torch.Generator(), on_device="auto").on_device is copied, free


def test_batches_are_seeded_and_memmap_path_matches_device_path(packed_set):
    def draw_batches(mode, seed=3, flip=True):
        b = Batches(packed_set, 24, "cpu", torch.Generator().manual_seed(seed), on_device=mode, flip=flip)
        assert b.on_device == (mode == "on")
        return [next(b) for _ in range(3)]
    on, off = draw_batches("on"), draw_batches("off")
    for (x1, y1), (x2, y2) in zip(on, off):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other = draw_batches("off", seed=4)
    assert not torch.equal(on[0][1], other[0][1])
    # without flips, every batch row is exactly one cached image
    cache = torch.from_numpy(np.asarray(packed_set.images)).float() / 127.5 - 1
    x, _ = draw_batches("off", flip=False)[0]
    assert all(any(torch.equal(row, c) for c in cache) for row in x)


def test_label_sampler_draws_valid_labels_by_the_priors(packed_set):
    sampler = LabelSampler(packed_set, "cpu")
    y = sampler(4000, torch.Generator().manual_seed(0))
    assert y.shape == (4000, 22)
    assert torch.equal(y[:, :12].sum(1), torch.ones(4000)) and torch.equal(y[:, 12:].sum(1), torch.ones(4000))
    freq = y[:, :12].mean(0).numpy()
    assert np.allclose(freq, packed_set.priors["hair"], atol=0.03)
    # A class with no mass (first, middle or last) is never drawn; the others keep their shares.
    for empty in (0, 5, 11):
        p = np.full(12, 1 / 11, np.float32)
        p[empty] = 0
        sampler.cdfs["hair"] = torch.tensor(np.cumsum(p))
        freq = sampler(4000, torch.Generator().manual_seed(1))[:, :12].mean(0).numpy()
        assert freq[empty] == 0 and np.allclose(freq, p, atol=0.03)


def test_open_packed_errors_name_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"no 64px cache; run `anime-gan prepare"):
        open_packed(tmp_path, 64)
    write_tags_csv(tmp_path / "d", PAIRS[:2])
    prepare(PrepareConfig(source=str(tmp_path / "d"), out=str(tmp_path / "d"), quiet=True))
    cache_paths(tmp_path / "d", 64)[1].unlink()
    with pytest.raises(UserError, match=f"labels_64.npy: unreadable .No such file or directory.; "
                                        f"re-run `anime-gan prepare {tmp_path / 'd'} -o "):
        open_packed(tmp_path / "d", 64)
    np.save(cache_paths(tmp_path / "d", 64)[0], np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(UserError, match=r"expected uint8 \[N, 3, 64, 64\]"):
        open_packed(tmp_path / "d", 64)


def train_on(cli, tmp_path, data):
    """One tiny training step on `data`: enough to open its cache and draw fake labels."""
    return cli("train", "-t", data, "-d", "cpu", "-i", "1", "--nf", "8", "-b", "2",
               "-s", tmp_path / "samples", "-c", tmp_path / "ckpt", "-q")


def npz(path, array):
    with open(path, "wb") as f:   # np.savez would add .npz to the name
        np.savez(f, a=array)


@pytest.mark.parametrize("name, write, needle", [
    ("meta_64.json", lambda p: p.write_text("[]"), "expected a JSON dict, got list"),
    ("meta_64.json", lambda p: p.write_text("{garbage"), "not valid JSON"),
    ("meta_64.json", lambda p: p.write_text('{"schema": {"groups": []}}'), "at least one group"),
    ("labels_64.npy", lambda p: np.save(p, np.array(3, np.uint8)), "shape [], expected [3, 22]"),
    ("labels_64.npy", lambda p: np.save(p, np.zeros((3, 21), np.uint8)), "shape [3, 21], expected [3, 22]"),
    ("labels_64.npy", lambda p: np.save(p, np.zeros((3, 22), np.complex64)), "complex"),
    ("labels_64.npy", lambda p: np.save(p, np.full((3, 22), np.nan, np.float32)), "other than 0 and 1"),
    ("images_64.npy", lambda p: npz(p, np.zeros((3, 3, 64, 64), np.uint8)), ".npz archive"),
    ("images_64.npy", lambda p: p.write_bytes(b""), "unreadable"),
    ("images_64.npy", lambda p: p.write_bytes(p.read_bytes()[:10] + b"\xff" * 10 + p.read_bytes()[20:]),
     "unreadable"),  # numpy's header parser raises tokenize.TokenError
    ("meta_64.json", lambda p: p.unlink(), "missing, so the labels in labels_64.npy cannot be read"),
], ids=["meta-list", "meta-garbage", "meta-no-groups", "labels-0d", "labels-width", "labels-complex", "labels-nan",
        "images-npz", "images-empty", "images-header", "meta-missing"])
def test_malformed_cache_is_one_line_naming_the_file_and_prepare_rebuilds_it(cli, tmp_path, name, write,
                                                                                needle):
    data = write_tags_csv(tmp_path / "d", PAIRS[:3])
    assert cli("prepare", data, "-q")[0] == 0
    write(data / "cache" / name)
    err = one_line_error(train_on(cli, tmp_path, data), data / "cache" / name, needle,
                         f"re-run `anime-gan prepare {data} -o {data} --image-size 64`")
    assert "images_64" not in err or name != "meta_64.json"
    assert not (tmp_path / "ckpt").exists()   # no automatic repack, and no half run left behind
    assert cli("prepare", data, "-o", data, "--image-size", 64, "-q")[0] == 0   # the advice works
    assert np.array_equal(open_packed(data, 64).labels, pair_labels(PAIRS[:3]))


@pytest.mark.parametrize("prior", [[np.nan] + [1] * 11, [1] * 11 + [np.inf], [-np.inf] + [1] * 11,
                                   [1e308] * 12], ids=["nan", "inf", "-inf", "sum-overflows"])
def test_non_finite_priors_are_refused(cli, tmp_path, prior):
    data = write_tags_csv(tmp_path / "d", PAIRS[:3])
    assert cli("prepare", data, "-q")[0] == 0
    np.save(data / "hair_prob.npy", np.array(prior))
    one_line_error(train_on(cli, tmp_path, data), data / "hair_prob.npy", "finite", "NaN or infinite",
                   "delete it")
    # prepare keeps a folder's own priors: it says so too, rather than pass a set train refuses
    one_line_error(cli("prepare", data, "-q"), data / "hair_prob.npy", "finite", "delete it")
    (data / "hair_prob.npy").unlink()
    assert cli("prepare", data, "-q")[0] == 0 and train_on(cli, tmp_path, data)[0] == 0  # the advice works


def test_priors_of_the_wrong_shape_are_refused(cli, tmp_path):
    data = write_tags_csv(tmp_path / "d", PAIRS[:3])
    assert cli("prepare", data, "-q")[0] == 0
    np.save(data / "hair_prob.npy", np.ones((3, 4)))  # 12 numbers, but not a list of 12 priors
    one_line_error(train_on(cli, tmp_path, data), data / "hair_prob.npy", "expected 12 finite",
                   "got an array of shape (3, 4)", "delete it")


@pytest.mark.parametrize("out_name", ["prepared", "more/prepared", "images"])
def test_prepare_into_a_folder_inside_the_source_does_not_read_its_own_output(cli, tmp_path, out_name):
    pics = write_folder(tmp_path / "pics", 5)
    out = pics / out_name
    for _ in range(3):
        rc, stdout, err = cli("prepare", pics, "-o", out, "-q")
        assert rc == 0 and stdout.startswith(f"5 images from {pics} (folder layout)"), (stdout, err)
        assert len(open_packed(out, 64)) == 5 and len(list((out / "images").iterdir())) == 5
    assert sorted(f.name for f in scan(out).files) == [f"{i}.png" for i in range(5)]


@pytest.mark.parametrize("layout", ["tags-csv", "json"])
def test_unlabelled_images_are_listed_and_strict_refuses_them(cli, tmp_path, layout):
    if layout == "json":
        src = write_json_layout(tmp_path / "src", {"0.png": ["gray cube"], "1.png": ["red cube"]})
    else:
        src = write_tags_csv(tmp_path / "src", PAIRS[:2])
    unlabelled = draw(src / "images" / "2.png", (0, 0, 0))
    rc, out, err = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0 and out.startswith("2 images"), err
    assert f"    {unlabelled}: missing label" in out.splitlines() and "skipped 1 file(s):" in out
    one_line_error(cli("prepare", src, "-o", tmp_path / "strict", "--strict", "-q"),
                   "--strict: 1 file(s) skipped", f"{unlabelled} (missing label)")
    assert not (tmp_path / "strict").exists()


def test_a_bad_label_line_is_not_listed_again_as_a_missing_label(cli, tmp_path):
    src = write_tags_csv(tmp_path / "src", PAIRS[:2], extra_rows=["2,teal hair blue eyes", "3"])
    draw(src / "images" / "2.jpg", (0, 0, 0))
    draw(src / "images" / "3.jpg", (0, 0, 0))
    rc, out, _ = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0 and "skipped 2 file(s):" in out and "missing label" not in out


@pytest.mark.parametrize("name, content, needle", [
    ("tags.pickle", b"garbage", "not a plain tags pickle"),
    ("tags.pickle", pickle.dumps([1, 2]), "expected a dict"),
    ("schema.json", b"{bad json", "cannot read the label schema"),
    ("schema.json", b'{"nothing": 1}', "not a valid label schema"),
], ids=["pickle-garbage", "pickle-list", "schema-bad-json", "schema-no-groups"])
def test_corrupt_source_label_file_says_to_fix_it_not_to_rerun_prepare(cli, tmp_path, name, content, needle):
    src = write_tag_pickle(tmp_path / "src", PAIRS[:2])
    (src / name).write_bytes(content)
    for args in (["-o", tmp_path / "out"], []):   # into another folder, and in place
        err = one_line_error(cli("prepare", src, *args, "-q"), src / name, needle,
                             "fix the file or replace it with a good copy")
        assert "re-run" not in err.lower() and "re-create" not in err.lower()


DEEP = "[" * 100000 + "]" * 100000  # valid-looking JSON too deep for Python's reader (RecursionError)


@pytest.mark.parametrize("name", ["objects.json", "train.json"])
def test_json_nested_too_deep_is_one_line(cli, tmp_path, name):
    src = write_json_layout(tmp_path / "src")
    (src / name).write_text(DEEP)
    one_line_error(cli("prepare", src, "-o", tmp_path / "out", "-q"), src / name, "not valid JSON")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, text, needle", [
    ("train.json", '{"scene_0.png": ["gray cube"], "scene_0.png": ["red cube"]}',
     "not valid JSON (the key 'scene_0.png' appears twice)"),
    ("objects.json", '{"gray cube": 1.7, "red cube": 1.2}', "distinct whole-number indices"),
    ("objects.json", '{"gray cube": true, "red cube": 0}', "distinct whole-number indices"),
    ("objects.json", '{"gray cube": 0, "red cube": "0"}', "distinct whole-number indices"),
], ids=["repeated-image", "fractional", "bool", "repeated-index"])
def test_json_labels_that_would_be_read_wrongly_are_refused(cli, tmp_path, name, text, needle):
    src = write_json_layout(tmp_path / "src")
    (src / name).write_text(text)
    one_line_error(cli("prepare", src, "-o", tmp_path / "out", "-q"), src / name, needle)
    assert not (tmp_path / "out").exists()


def test_a_cache_meta_file_nested_too_deep_is_one_line(cli, builtin_set, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(builtin_set, data)
    (data / "cache" / "meta_64.json").write_text(DEEP)
    one_line_error(cli("train", "-t", data, "-c", tmp_path / "c", "-s", tmp_path / "s", "-i", "1"),
                   data / "cache" / "meta_64.json")


# A TIFF named .png on which PIL's decoder raises TypeError (not an OSError) while loading
BAD_TIFF = ("SUkqAAgAAAAIAAABBAABAAAAGAAAAAEBBAABAAAAFAAAAAMBAwABAAAAAQAAAAYBAwABAAAAAQAAABEBBwABAAAAbgAAABYBBAAB"
            "AAAAFAAAABcBBAABAAAAPAAAABwBAwABAAAAAQAAAAAAAAD/////Vv/bVbb/AP/cADf0tR24EB/4bo/Rva36qlezvc75vs+s/5v4"
            "9263f7vvvu+627rv/nG6lhXdDUI=")


def test_an_image_whose_decoder_raises_anything_is_skipped(cli, tmp_path, monkeypatch):
    import base64
    src = write_folder(tmp_path / "src", 3)
    (src / "bad.png").write_bytes(base64.b64decode(BAD_TIFF))
    rc, out, _ = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0 and "bad.png: unreadable image" in out and len(open_packed(tmp_path / "out", 64)) == 3
    # whatever a decoder raises (this PIL's TIFF raised TypeError; another version may differ)
    monkeypatch.setattr(Image.Image, "load", lambda self: (_ for _ in ()).throw(IndexError("bad strip")))
    with pytest.raises(ValueError, match=r"unreadable image \(IndexError: bad strip\)"):
        read_image(src / "bad.png", 64)


def test_transparent_images_are_on_white_in_the_copies_too(cli, tmp_path):
    """The cache flattens transparency onto white; the copies prepare makes (from which a later
    size is packed) must too, or two sizes of one set would disagree."""
    (tmp_path / "src").mkdir()
    for i in range(3):
        im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        im.paste((200, 30, 30, 255), (20, 20, 44, 44))
        im.save(tmp_path / "src" / f"{i}.webp", lossless=True)
    assert cli("prepare", tmp_path / "src", "-o", tmp_path / "out", "-q")[0] == 0
    assert cli("prepare", tmp_path / "out", "--image-size", 32, "-q")[0] == 0
    for size in (64, 32):
        assert tuple(np.load(cache_paths(tmp_path / "out", size)[0])[0, :, 0, 0]) == (255, 255, 255)


def test_images_in_a_subfolder_named_cache_are_read_and_in_the_top_one_listed(cli, tmp_path):
    src = write_folder(tmp_path / "src", 2)
    draw(src / "cats" / "cache" / "x.png", (255, 0, 0))
    draw(src / "cache" / "y.png", (255, 0, 0))  # where prepare keeps its own files: not read, but said
    rc, out, _ = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0 and len(open_packed(tmp_path / "out", 64)) == 3
    assert f"{src / 'cache' / 'y.png'}: in cache/, the folder prepare writes its cache to" in out


def test_a_refused_prepare_into_a_folder_leaves_no_cache_that_blocks_the_rerun(cli, tmp_path):
    src = write_folder(tmp_path / "src", 3)
    (src / "bad.png").write_bytes(b"junk")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".gitignore").write_text("*")  # a clone's data/ holds just this
    one_line_error(cli("prepare", src, "-o", tmp_path / "out", "--strict", "-q"), "--strict: 1 file(s) skipped")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".gitignore"]
    assert cli("prepare", src, "-o", tmp_path / "out", "-q")[0] == 0


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_while_drawing_the_builtin_faces_leaves_nothing(cli, tmp_path, monkeypatch, sig):
    """A job scheduler's SIGTERM, or a closed terminal's SIGHUP, unwinds like a Ctrl-C."""
    import os
    import signal
    from anime_gan.data import synthetic
    real = synthetic.generate

    def generate(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 5:
                os.kill(os.getpid(), getattr(signal, sig))
            yield item
    monkeypatch.setattr(synthetic, "generate", generate)
    rc, out, err = cli("prepare", "--synthetic", 40, "-o", tmp_path / "out", "-q")
    assert rc == 128 + getattr(signal, sig) and err == f"anime-gan prepare: stopped by {sig}\n"
    assert not (tmp_path / "out").exists()
    # train drawing them into an empty -t: the folder is left as it was, empty
    (tmp_path / "empty").mkdir()
    rc, _, _ = cli("train", "-t", tmp_path / "empty", "-c", tmp_path / "c", "-s", tmp_path / "s", "-i", "1")
    assert rc == 128 + getattr(signal, sig) and list((tmp_path / "empty").iterdir()) == []
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_fifo_named_like_an_image_is_missing_not_a_hang(cli, tmp_path):
    import os
    src = write_tag_pickle(tmp_path / "src", PAIRS[:3])
    victim = next((src / "images").glob("1.*"))
    victim.unlink()
    os.mkfifo(src / "images" / "1.png")
    rc, out, _ = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0 and "missing image" in out and len(open_packed(tmp_path / "out", 64)) == 2


def test_a_file_name_that_is_not_utf8_is_reported_under_a_strict_locale(tmp_path):
    # ... and PIL's warnings about damaged metadata of an image that decodes stay off stderr
    import os
    import subprocess
    import sys
    src = write_folder(tmp_path / "src", 2)
    (src / os.fsdecode(b"bad\xff.png")).write_bytes(b"junk")
    bad_exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x0f\x00\x02\x00\x00\xff\xff\x00\x00\x00\x00"
    Image.new("RGB", (40, 40), (200, 0, 0)).save(src / "exif.jpg", exif=bad_exif)
    done = subprocess.run([sys.executable, "-m", "anime_gan", "prepare", str(src), "-o", str(tmp_path / "out")],
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"bad\\udcff.png: unreadable image" in done.stdout
    assert b"3 images from" in done.stdout and done.stderr == b""


def test_a_repeated_image_id_is_skipped_not_added_twice(cli, tmp_path):
    src = write_tags_csv(tmp_path / "csv", PAIRS[:3], extra_rows=["1,blue hair red eyes"])
    assert len(scan(src).files) == 3
    rc, out, _ = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0 and "tags.csv:4: repeated id '1' (first on line 2)" in out
    assert len(open_packed(tmp_path / "out", 64)) == 3
    src = write_tag_pickle(tmp_path / "pkl", PAIRS[:3])
    tags = pickle.loads((src / "tags.pickle").read_bytes())
    tags["0"] = tags[1]  # names images/0.jpg again
    (src / "tags.pickle").write_bytes(pickle.dumps(tags))
    found = scan(src)
    assert len(found.files) == 3 and np.array_equal(found.labels, pair_labels(PAIRS[:3]))
    assert dict(found.skipped)[f"{src / 'tags.pickle'} entry '0'"].startswith("repeated index")


def test_json_label_files_may_start_with_a_bom(cli, tmp_path):
    src = write_json_layout(tmp_path / "src")
    for name in ("objects.json", "train.json"):
        (src / name).write_bytes(b"\xef\xbb\xbf" + (src / name).read_bytes())
    assert cli("prepare", src, "-o", tmp_path / "out", "-q")[0] == 0
    assert len(open_packed(tmp_path / "out", 64)) == 8


def test_a_rerun_of_prepare_stopped_while_copying_leaves_the_earlier_images_whole(cli, tmp_path, monkeypatch):
    import shutil
    src = write_tag_pickle(tmp_path / "src", PAIRS[:6])
    assert cli("prepare", src, "-o", tmp_path / "out", "-q")[0] == 0
    before, whole = snapshot(tmp_path / "out" / "images"), snapshot(tmp_path / "out")
    shutil.rmtree(src)
    src = write_tag_pickle(tmp_path / "src", PAIRS[2:7])  # the source changed since
    real_copy, copied = shutil.copyfile, []

    def copy_then_ctrl_c(a, b, *args, **kwargs):
        if len(copied) == 3:
            raise KeyboardInterrupt
        copied.append(b)
        return real_copy(a, b, *args, **kwargs)
    monkeypatch.setattr(shutil, "copyfile", copy_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(source=str(src), out=str(tmp_path / "out"), quiet=True))
    assert snapshot(tmp_path / "out" / "images") == before and len(before) == 6
    assert snapshot(tmp_path / "out") == whole  # the cache too: not the new set's beside the old images
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    assert cli("prepare", src, "-o", tmp_path / "out", "-q")[0] == 0  # and a later re-run completes
    assert len(snapshot(tmp_path / "out" / "images")) == 5 and len(open_packed(tmp_path / "out", 64)) == 5


def test_a_rerun_of_prepare_stopped_after_the_cache_was_replaced_leaves_a_set_train_refuses(tmp_path, monkeypatch):
    from anime_gan.data import prepare as prepare_module
    src = write_tag_pickle(tmp_path / "src", PAIRS[:6])
    prepare(PrepareConfig(source=str(src), out=str(tmp_path / "out"), quiet=True))

    def stopped(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare_module, "commit_tag_pickle_layout", stopped)
    with pytest.raises(KeyboardInterrupt):  # the new cache is in place; images/ and tags.pickle are not yet
        prepare(PrepareConfig(source=str(src), out=str(tmp_path / "out"), quiet=True))
    with pytest.raises(UserError, match=r"`anime-gan prepare \S+src -o \S+out` was stopped before it finished"):
        open_packed(tmp_path / "out", 64)


def test_a_copy_stopped_between_images_and_labels_is_refused_until_the_same_command_finishes_it(
        cli, tmp_path, monkeypatch):
    """The source shrank; the re-run copying it was stopped after images/ was swapped, before the
    labels: packing that folder in place would pair the new images with the old labels."""
    import shutil
    from anime_gan.data import prepare as prepare_module
    src, out = tmp_path / "src", tmp_path / "out"
    write_tags_csv(src, PAIRS)
    assert cli("prepare", src, "-o", out, "-q")[0] == 0
    shutil.rmtree(src)
    write_tags_csv(src, PAIRS[::-1][:7])  # other colours at the same numbers
    monkeypatch.setattr(prepare_module, "write_labels", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(source=str(src), out=str(out), quiet=True))
    monkeypatch.undo()
    assert len(list((out / "images").iterdir())) == 7 and not (out / "cache" / "meta_64.json").exists()
    command = f"`anime-gan prepare {src} -o {out}` was stopped before it finished"
    one_line_error(cli("prepare", out, "-q"), command, "run that command again")  # in place: refused
    one_line_error(cli("train", "-t", out, "--model", "cgan", "--dry-run"), command)
    for dry_run in ([], ["--dry-run"]):  # nor copied on as the SOURCE of another set
        one_line_error(cli("prepare", out, "-o", tmp_path / "copy", "-q", *dry_run), command)
    assert not (tmp_path / "copy").exists()
    assert cli("prepare", src, "-o", out, "-q")[0] == 0  # the same command is not "a set from elsewhere"
    data = open_packed(out, 64)
    assert [colour_of(x) for x in data.images] == [HAIR_COLORS[h] for h in data.labels[:, :12].argmax(1)]
    assert len(data) == 7 and not (out / "cache" / "unfinished.json").exists()


def test_the_command_that_finishes_a_stopped_copy_runs_from_anywhere_at_its_size(cli, tmp_path, monkeypatch):
    from anime_gan.data import prepare as prepare_module
    monkeypatch.chdir(tmp_path)
    write_tags_csv(tmp_path / "src", PAIRS[:3])
    assert cli("prepare", "src", "-o", "out", "--image-size", "32", "-q")[0] == 0
    with monkeypatch.context() as m:  # a re-run over it, stopped half-way
        m.setattr(prepare_module, "commit_tag_pickle_layout", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        assert cli("prepare", "src", "-o", "out", "--image-size", "32", "-q")[0] == 130
    monkeypatch.chdir(tmp_path / "src")  # elsewhere: the command names SOURCE absolutely
    one_line_error(cli("prepare", "../out", "-q"),
                   f"`anime-gan prepare {tmp_path / 'src'} -o ../out --image-size 32` was stopped")
    assert cli("prepare", tmp_path / "src", "-o", "../out", "--image-size", "32", "-q")[0] == 0
    assert len(open_packed(tmp_path / "out", 32)) == 3


def test_a_source_that_lost_its_labels_leaves_none_of_the_old_ones_beside_its_copies(cli, tmp_path):
    src, out = write_tags_csv(tmp_path / "src"), tmp_path / "out"
    assert cli("prepare", src, "-o", out, "-q")[0] == 0
    assert (out / "tags.pickle").exists() and (out / "hair_prob.npy").exists()
    (src / "tags.csv").unlink()
    assert cli("prepare", src, "-o", out, "-q")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["cache", "images"]
    assert cli("prepare", out, "--image-size", "32", "-q")[0] == 0
    assert open_packed(out, 32).labels is None


def test_json_object_names_that_read_alike_are_refused_by_prepare_naming_objects_json(cli, tmp_path):
    src = write_json_layout(tmp_path / "src")
    (src / "objects.json").write_text(json.dumps({"gray cube": 0, "Gray  Cube": 1}))
    (src / "train.json").write_text(json.dumps({"scene_0.png": ["gray cube"]}))
    one_line_error(cli("prepare", src, "-o", tmp_path / "out"), f"{src / 'objects.json'}: group 'objects'",
                   "read the same", "distinct")
    assert not (tmp_path / "out").exists()


def test_a_refused_prepare_into_new_nested_folders_removes_all_it_made(cli, tmp_path):
    src = write_tags_csv(tmp_path / "src", extra_rows=["99,teal hair blue eyes"])
    one_line_error(cli("prepare", src, "-o", tmp_path / "new1" / "new2" / "out", "--strict"), "--strict")
    assert not (tmp_path / "new1").exists()


def test_strict_dry_run_refuses_what_the_scan_already_skipped(cli, tmp_path):
    src = write_tags_csv(tmp_path / "src", extra_rows=["99,teal hair blue eyes"])
    one_line_error(cli("prepare", src, "-o", tmp_path / "out", "--strict", "--dry-run"), "--strict: 1 file(s)",
                   "tags.csv:13")
    assert cli("prepare", src, "-o", tmp_path / "out", "--dry-run")[0] == 0


def test_copies_keep_jpeg_bytes_and_the_copying_shows_a_progress_bar(cli, tmp_path, monkeypatch):
    from anime_gan.data import prepare as prepare_module
    bars, real_tqdm = [], prepare_module.tqdm

    def tqdm(*args, **kwargs):
        bars.append(kwargs["desc"])
        return real_tqdm(*args, **kwargs)
    monkeypatch.setattr(prepare_module, "tqdm", tqdm)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn only on a terminal
    src = write_tag_pickle(tmp_path / "src", PAIRS[:3], ext=".jpeg")
    assert cli("prepare", src, "-o", tmp_path / "out")[0] == 0
    assert bars == ["packing 64px", "copying to images/"]  # (decoded first: a bad image stops it before the copy)
    for i in range(3):
        assert (tmp_path / "out" / "images" / f"{i}.jpg").read_bytes() == (src / "images" / f"{i}.jpeg").read_bytes()


def test_a_second_image_with_the_same_number_is_listed_as_skipped(tmp_path):
    root = write_tag_pickle(tmp_path / "d", PAIRS[:3])
    draw(root / "images" / "1.png", (0, 0, 0))
    src = scan(root)
    assert [f.name for f in src.files] == ["0.jpg", "1.jpg", "2.jpg"]
    assert src.skipped == [(str(root / "images" / "1.png"), "same number as 1.jpg, which is the one read")]


def test_a_plain_folder_reads_linked_folders_once_and_lists_images_outside_its_images_folder(tmp_path):
    import os
    pics = write_folder(tmp_path / "pics")
    os.symlink(tmp_path / "pics" / "more", tmp_path / "linked")
    os.symlink(tmp_path / "linked", pics / "more" / "loop")  # a link back up: read once, not for ever
    other = tmp_path / "other"
    draw(other / "a.png", (1, 2, 3))
    os.symlink(other, pics / "set2")
    src = scan(pics)
    names = sorted(f.relative_to(pics).as_posix() for f in src.files)
    assert names == ["img_0.png", "img_1.png", "img_2.png", "more/img_3.png", "more/img_4.png", "set2/a.png"]
    draw(pics / "images" / "z.png", (9, 9, 9))
    src = scan(pics)
    assert [f.name for f in src.files] == ["z.png"]
    assert len(src.skipped) == 6 and all("outside images/" in r for _, r in src.skipped)


def test_links_up_the_tree_or_to_the_output_folder_are_not_followed(cli, tmp_path):
    import os
    pics = write_folder(tmp_path / "pics", 3)
    os.symlink("../..", pics / "more" / "up")  # back to pics' parent, which holds out/ too
    (tmp_path / "out").mkdir()
    os.symlink("../out", pics / "outlink")
    for _ in range(3):  # the same count each time: its own copies are never read back in
        rc, out, _ = cli("prepare", pics, "-o", tmp_path / "out", "-q")
        assert rc == 0 and len(open_packed(tmp_path / "out", 64)) == 3, out


def test_damaged_cache_meta_files_give_one_line_not_a_traceback(cli, tmp_path):
    src, out = write_tags_csv(tmp_path / "src"), tmp_path / "out"
    assert cli("prepare", src, "-o", out, "-q")[0] == 0
    meta = out / "cache" / "meta_64.json"
    good = json.loads(meta.read_text())
    meta.write_text("[]")
    one_line_error(cli("prepare", src, "-o", out, "-q"), "already holds a data set from elsewhere")
    meta.write_text(json.dumps({**good, "folder_state": {"a\u0000b/": [1, "x"]}}))
    rc, _, err = cli("train", "-t", out, "--model", "cgan", "--dry-run")
    assert rc == 0 and "Traceback" not in err


def test_bf16_label_tensors_are_read(tmp_path):
    root = write_tag_pickle(tmp_path / "d", PAIRS[:2])
    tags = {i: torch.cat([onehot(h, 12), onehot(e, 10)]).bfloat16() for i, (h, e) in enumerate(PAIRS[:2])}
    (root / "tags.pickle").write_bytes(pickle.dumps(tags))
    assert scan(root).labels.tolist() == pair_labels(PAIRS[:2]).tolist()


def test_an_unreadable_image_is_listed_with_pils_reason(tmp_path):
    root = write_tag_pickle(tmp_path / "d", PAIRS[:2], ext=".png")
    data = (root / "images" / "1.png").read_bytes()
    (root / "images" / "1.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"^unreadable image \((OSError|SyntaxError): .*(truncated|broken)"):
        read_image(root / "images" / "1.png", 64)


def test_prepare_waits_for_another_process_preparing_the_same_folder(cli, tmp_path):
    import threading
    from anime_gan.files import take_lock
    src = write_tags_csv(tmp_path / "src", PAIRS[:3])
    lock = take_lock(tmp_path / ".out.prepare.lock")
    threading.Timer(2.0, lock.release).start()
    rc, _, err = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0 and "waiting for another process" in err and len(open_packed(tmp_path / "out", 64)) == 3
    # held for a moment only (torchrun's other ranks reading the labels): waited for without a word
    lock = take_lock(tmp_path / ".out.prepare.lock")
    threading.Timer(0.2, lock.release).start()
    rc, _, err = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0 and "waiting" not in err and len(open_packed(tmp_path / "out", 64)) == 3


def _loaded(root, lines):
    from anime_gan.config import TrainConfig
    from anime_gan.train import load_training_data
    return load_training_data(TrainConfig(train_dir=str(root), image_size=32, quiet=True), lines.append)


def test_a_data_folder_changed_since_packing_is_packed_again_by_train(tmp_path):
    root = write_tag_pickle(tmp_path / "d")
    prepare(PrepareConfig(source=str(root), out=str(root), image_size=32, quiet=True))
    lines = []
    assert len(_loaded(root, lines)) == len(PAIRS) and lines == []
    (root / "judge_32.pt").write_bytes(b"saved beside the set")  # not part of it: no repack
    (root / "images" / "notes.txt").write_text("not an image")
    assert len(_loaded(root, lines)) == len(PAIRS) and lines == []
    (root / "images" / "0.jpg").unlink()  # an image removed
    assert len(_loaded(root, lines)) == len(PAIRS) - 1
    assert lines[0] == f"{root} changed since its 32px cache was packed (images/: {len(PAIRS)} -> " \
                       f"{len(PAIRS) - 1} images): packing it again"
    lines.clear()
    assert len(_loaded(root, lines)) == len(PAIRS) - 1 and lines == []  # packed once, not every time
    tags = safe_pickle.load(root / "tags.pickle")
    tags[1] = torch.zeros_like(tags[1]).index_fill_(0, torch.tensor([0, 12]), 1.0)
    (root / "tags.pickle").write_bytes(pickle.dumps(tags))  # a label edited
    data = _loaded(root, lines)
    assert "(tags.pickle edited)" in lines[0] and data.labels[0].nonzero()[0].tolist() == [0, 12]


def test_packing_a_changed_folder_again_keeps_where_its_set_came_from(tmp_path, cli):
    src = write_tag_pickle(tmp_path / "src", PAIRS[:6])
    out = tmp_path / "out"
    prepare(PrepareConfig(source=str(src), out=str(out), image_size=32, quiet=True))
    (out / "images" / "5.jpg").unlink()
    lines = []
    assert len(_loaded(out, lines)) == 5 and "packing it again" in lines[0]
    assert json.loads((out / "cache" / "meta_32.json").read_text())["source"] == str(src)
    assert cli("prepare", src, "-o", out, "--image-size", 32, "-q")[0] == 0  # still its own: a re-run
    assert len(open_packed(out, 32)) == 6
    builtin = tmp_path / "builtin"
    prepare(PrepareConfig(out=str(builtin), synthetic=8, image_size=32, quiet=True))
    (builtin / "images" / "0.png").unlink()
    assert len(_loaded(builtin, lines)) == 7
    meta = json.loads((builtin / "cache" / "meta_32.json").read_text())
    assert meta["layout"] == "built-in" and meta["source"] == "built-in faces" and meta["seed"] == 0


def test_a_folder_copied_elsewhere_is_not_packed_again(tmp_path):
    import shutil
    root = write_folder(tmp_path / "pics")
    prepare(PrepareConfig(source=str(root), out=str(root), image_size=32, quiet=True))
    shutil.copytree(root, tmp_path / "copy")  # new times, same files
    lines = []
    assert len(_loaded(tmp_path / "copy", lines)) == 5 and lines == []
    draw(tmp_path / "copy" / "more" / "img_9.png", (1, 2, 3))  # in a subfolder images came from
    assert len(_loaded(tmp_path / "copy", lines)) == 6 and "(more/: 2 -> 3 images)" in lines[0]


def test_images_past_the_pixel_limit_are_skipped_not_decoded(tmp_path, monkeypatch):
    from PIL import Image as PILImage
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # PIL's is 89M: 270 MB decoded, per worker
    draw(tmp_path / "ok.png", (1, 2, 3), size=(31, 31))
    draw(tmp_path / "over.png", (1, 2, 3), size=(40, 40))  # 1600 pixels: PIL warns
    draw(tmp_path / "far_over.png", (1, 2, 3), size=(80, 80))  # past twice the limit: PIL raises
    assert read_image(tmp_path / "ok.png", 32).shape == (3, 32, 32)
    for name in ("over.png", "far_over.png"):
        with pytest.raises(ValueError, match=r"too large \(over 1,000 pixels\); scale it down first"):
            read_image(tmp_path / name, 32)


def test_a_plain_folder_packed_in_place_sees_images_in_a_new_subfolder(tmp_path):
    root = write_folder(tmp_path / "pics", 4)
    prepare(PrepareConfig(source=str(root), out=str(root), image_size=32, quiet=True))
    lines = []
    assert len(_loaded(root, lines)) == 4 and lines == []
    draw(root / "new" / "a.png", (0, 0, 0))  # a folder that held no image when it was packed
    draw(root / "new" / "b.png", (9, 9, 9))
    assert len(_loaded(root, lines)) == 6
    assert lines[0] == f"{root} changed since its 32px cache was packed (images below it: 4 -> 6 images): packing it again"


def test_a_data_set_prepared_inside_a_plain_folder_is_not_read_back_by_an_in_place_prepare(cli, tmp_path):
    pics = write_folder(tmp_path / "pics", 4)
    assert cli("prepare", pics, "-o", pics / "out", "-q")[0] == 0
    rc, out, err = cli("prepare", pics, "-q")
    assert rc == 0 and out.startswith(f"4 images from {pics} (folder layout)"), (out, err)
    assert f"    {pics / 'out'}: a data set prepare made (its cache/meta_*.json says so)" in out
    assert len(open_packed(pics, 64)) == 4
    # a folder packed in place holds the user's own images, copied or moved as it may be: read
    shutil.copytree(pics, tmp_path / "all" / "pics_copy", ignore=shutil.ignore_patterns("out"))
    write_folder(tmp_path / "all" / "extra", 2)
    rc, out, err = cli("prepare", tmp_path / "all", "-q")
    assert rc == 0 and out.startswith(f"6 images from {tmp_path / 'all'} (folder layout)"), (out, err)


@pytest.mark.parametrize("name, needle", [
    ("train.json", "the JSON layout also needs objects.json"),
    ("tags_clean.csv", "MLDS's raw tag counts, which are not read; write a tags.csv"),
])
def test_a_label_file_of_no_layout_is_refused_not_read_as_an_unlabelled_folder(cli, tmp_path, name, needle):
    """Seed 003's train.json without its objects.json, or MLDS's raw tags_clean.csv: labels were meant."""
    src = write_json_layout(tmp_path / "src")
    (src / "objects.json").unlink()
    if name != "train.json":
        (src / "train.json").unlink()
        (src / name).write_text("0,touhou:4\tlong hair:3\tblue hair:2\n")
    for dry in ([], ["--dry-run"]):
        one_line_error(cli("prepare", src, "-o", tmp_path / "out", *dry), f"{src / name}: {needle}",
                       f"or move it out of {src} to use the images without labels")
    assert not (tmp_path / "out").exists()


def test_commands_in_messages_quote_paths_a_shell_would_split(cli, tmp_path):
    data = tmp_path / "my data"
    assert cli("prepare", "--synthetic", 8, "-o", data, "-q")[0] == 0
    np.save(data / "cache" / "images_64.npy", np.zeros((8, 3, 64, 64), np.float32))  # not what prepare writes
    one_line_error(cli("train", "-t", data, "-d", "cpu", "--dry-run"),
                   f"re-run `anime-gan prepare '{data}' -o '{data}' --image-size 64` to rebuild the cache")


def test_a_copy_keeps_the_sources_own_class_priors(cli, tmp_path):
    """Seed 001 ships hair_prob.npy / eye_prob.npy, the law fake labels are drawn from: a copy keeps
    them (frequencies only where the source has none, or an unusable one)."""
    src = write_tag_pickle(tmp_path / "src", PAIRS[:6])
    uniform = np.full(len(HAIR_COLORS), 1 / len(HAIR_COLORS), np.float32)
    np.save(src / "hair_prob.npy", uniform)
    np.save(src / "eye_prob.npy", np.full(3, 1 / 3, np.float32))  # the wrong length: refused, as train would
    one_line_error(cli("prepare", src, "-o", tmp_path / "out", "-q"),
                   f"{src / 'eye_prob.npy'}: expected 10 finite, non-negative probabilities, got 3 values")
    assert not (tmp_path / "out").exists()
    (src / "eye_prob.npy").unlink()
    assert cli("prepare", src, "-o", tmp_path / "out", "-q")[0] == 0
    assert np.array_equal(np.load(tmp_path / "out" / "hair_prob.npy"), uniform)
    counts = pair_labels(PAIRS[:6])[:, len(HAIR_COLORS):].sum(0)
    assert np.allclose(np.load(tmp_path / "out" / "eye_prob.npy"), counts / counts.sum())


def test_prepare_in_a_log_says_how_far_it_is_now_and_then(cli, tmp_path, monkeypatch):
    """stderr a file or pipe (a script's log): no progress bar, but a line at tenths of the way for
    long work (here every tenth: the interval is set to 0), so a long prepare does not look hung."""
    from anime_gan.data import prepare as prepare_module
    monkeypatch.setattr(prepare_module, "LOG_EVERY_S", 0.0)
    rc, out, err = cli("prepare", "--synthetic", 20, "-o", tmp_path / "d", "--image-size", 32)
    assert rc == 0 and out.startswith("20 built-in faces drawn"), err
    lines = err.splitlines()
    assert [l.split(":")[0] for l in lines] == ["drawing built-in faces"] * 9 + ["packing 32px"] * 9, err
    assert lines[0].startswith("drawing built-in faces: 2/20 images, ") and lines[0].endswith(" s")
    monkeypatch.setattr(prepare_module, "LOG_EVERY_S", 3600.0)  # seconds of work: not a line
    rc, out, err = cli("prepare", "--synthetic", 20, "-o", tmp_path / "e")
    assert rc == 0 and err == ""


def test_packing_a_copy_again_in_place_says_what_it_read_and_where_the_copy_came_from(cli, tmp_path):
    src = write_tags_csv(tmp_path / "src", PAIRS[:3])
    assert cli("prepare", src, "-o", tmp_path / "out", "-q")[0] == 0
    rc, out, _ = cli("prepare", tmp_path / "out", "-q")
    assert rc == 0 and out.splitlines()[0] == (f"3 images from {tmp_path / 'out'} (tag-pickle layout; a copy of "
                                               f"{src}, tags-csv layout) -> {tmp_path / 'out'} at 64px")
    meta = json.loads((tmp_path / "out" / "cache" / "meta_64.json").read_text())
    assert (meta["source"], meta["layout"], meta["read_layout"]) == (str(src), "tags-csv", "tag-pickle")


def test_prepare_says_which_images_it_enlarged(cli, tmp_path):
    # An icon-sized picture packed at 64 px comes out as a blur: prepare keeps it but says so.
    src = tmp_path / "src"
    src.mkdir()
    for name, side in (("big.png", 96), ("exact.png", 64), ("small.png", 40), ("tiny.png", 16)):
        Image.new("RGB", (side, side + 10), (200, 30, 30)).save(src / name)
    rc, out, err = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 0, err
    assert (f"  enlarged 2 image(s) smaller than 64px, which come out blurred (smallest 16px: "
            f"{src / 'tiny.png'}); drop them") in out.splitlines()  # (even 32 px would enlarge a 16 px one)
    meta = json.loads((tmp_path / "out" / "cache" / "meta_64.json").read_text())
    assert meta["enlarged"] == {"images": 2, "smallest_side": 16, "file": str(src / "tiny.png")}
    assert len(open_packed(tmp_path / "out", 64)) == 4
    rc, out, err = cli("prepare", src, "-o", tmp_path / "out32", "--image-size", 32, "-q")
    assert rc == 0 and "  enlarged 1 image(s) smaller than 32px" in out and "--image-size" not in out, out
    (src / "tiny.png").unlink()
    rc, out, err = cli("prepare", src, "-o", tmp_path / "out", "-q")  # the smallest is 40 px: 32 enlarges none
    assert (f"  enlarged 1 image(s) smaller than 64px, which come out blurred (smallest 40px: "
            f"{src / 'small.png'}); drop them, or pack at --image-size 32") in out.splitlines()
    rc, out, err = cli("prepare", src, "-o", tmp_path / "out32", "--image-size", 32, "-q")
    assert rc == 0 and "enlarged" not in out and "enlarged" not in json.loads(
        (tmp_path / "out32" / "cache" / "meta_32.json").read_text()), out
