"""Tests for anime_gan.render: grid geometry, captions, GIFs, atomic writes and plots."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from anime_gan import render
from anime_gan.errors import UserError


def _images_from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """[N,H,W,3] uint8 -> [N,3,H,W] float in [-1,1], the inverse of to_uint8."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen) * 2 - 1


def _has_dark_pixels(img: Image.Image, box) -> bool:
    return bool((np.asarray(img.crop(box).convert("L")) < 128).any())


# ---------------------------------------------------------------------------------------------
# to_uint8 and plain grids
# ---------------------------------------------------------------------------------------------


def test_to_uint8_clamps_rounds_and_reorders():
    images = torch.tensor([-2.0, -1.0, 0.0, 1.0, 5.0, float("nan")]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    out = render.to_uint8(images)
    assert out.shape == (1, 1, 6, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]


def test_to_uint8_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        render.to_uint8(torch.zeros(3, 64, 64))


@pytest.mark.parametrize("size", [64, 32])
def test_plain_grid_size_matches_make_grid(size):
    n, nrow, padding = 10, 3, 2
    grid = render.grid_image(_random_images(n, size), nrow, padding=padding)
    ncol, nrows = 3, 4  # 10 images, 3 per row
    assert grid.size == (ncol * (size + padding) + padding, nrows * (size + padding) + padding)


def test_plain_grid_with_fewer_images_than_nrow_uses_one_short_row():
    grid = render.grid_image(_random_images(2, 32), nrow=8, padding=2)
    assert grid.size == (2 * 34 + 2, 34 + 2)


def test_plain_grid_cells_round_trip_and_padding_is_black():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    grid = np.asarray(render.grid_image(_images_from_uint8(pixels), nrow=2, padding=3))
    for i in range(5):
        row, col = divmod(i, 2)
        y, x = 3 + row * 19, 3 + col * 19
        assert np.array_equal(grid[y : y + 16, x : x + 16], pixels[i])
    assert (grid[:3] == 0).all() and (grid[:, :3] == 0).all()
    assert (grid[-19:, -19:] == 0).all()  # the unfilled last cell stays black, as in make_grid


def test_scale_enlarges_cells_not_padding():
    pixels = np.random.default_rng(1).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    grid = np.asarray(render.grid_image(_images_from_uint8(pixels), nrow=3, padding=2, scale=2))
    assert grid.shape == (16 + 4, 3 * 18 + 2, 3)
    assert np.array_equal(grid[2:18, 2:18], pixels[0].repeat(2, axis=0).repeat(2, axis=1))


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def test_labels_add_a_white_margin_with_text():
    images = _random_images(6, 64)
    plain = render.grid_image(images, nrow=3)
    labelled = render.grid_image(images, nrow=3, row_labels=["blonde", "aqua"], col_labels=["a", "b", "c"])
    assert labelled.width > plain.width and labelled.height > plain.height
    left = labelled.width - plain.width
    top = labelled.height - plain.height
    # The plain grid sits in the bottom-right corner; the margins around it hold the text.
    assert np.array_equal(np.asarray(labelled)[top:, left:], np.asarray(plain))
    assert _has_dark_pixels(labelled, (0, top, left, labelled.height))  # row labels
    assert _has_dark_pixels(labelled, (left, 0, labelled.width, top))  # column labels


def test_title_only_adds_a_top_band():
    images = _random_images(6, 64)
    plain = render.grid_image(images, nrow=3)
    titled = render.grid_image(images, nrow=3, title="step 2000")
    assert titled.width == plain.width and titled.height > plain.height
    assert _has_dark_pixels(titled, (0, 0, titled.width, titled.height - plain.height))


def test_long_column_labels_are_written_vertically():
    images = _random_images(2, 64)
    short = render.grid_image(images, nrow=2, col_labels=["a", "b"])
    long = render.grid_image(images, nrow=2, col_labels=["blonde_hair_blue_eyes", "pink_hair_red_eyes"])
    # Rotated labels need a band taller than a line, but the grid keeps its width.
    assert long.height - short.height > 40
    assert long.width == short.width


def test_label_count_must_match_grid():
    with pytest.raises(ValueError, match="row_labels has 3 entries but the grid has 2 rows"):
        render.grid_image(_random_images(6, 32), nrow=3, row_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match="col_labels"):
        render.grid_image(_random_images(6, 32), nrow=3, col_labels=["a"])


def test_caption_frame_adds_band_and_keeps_original():
    img = Image.new("RGB", (200, 100), (0, 200, 0))
    out = render.caption_frame(img, "step 2000")
    band = out.height - img.height
    assert out.width == 200 and band > 0
    assert _has_dark_pixels(out, (0, 0, out.width, band))
    assert np.array_equal(np.asarray(out)[band:], np.asarray(img))
    assert img.size == (200, 100)  # input untouched


def test_caption_frame_widens_a_narrow_frame_rather_than_cut_the_caption():
    img = Image.new("RGB", (32, 32), (0, 200, 0))
    a, b = render.caption_frame(img, "t=0.25"), render.caption_frame(img, "t=0.50")
    assert a.width > 32 and a.size == b.size
    band = a.height - 32
    assert not np.array_equal(np.asarray(a)[:band], np.asarray(b)[:band])  # the steps read apart


# ---------------------------------------------------------------------------------------------
# GIFs
# ---------------------------------------------------------------------------------------------

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _solid_frames(size=(80, 60)):
    return [Image.new("RGB", size, colour) for colour in COLOURS]


def _read_gif(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


def _dominant_colour(frame: np.ndarray) -> tuple:
    colours, counts = np.unique(frame.reshape(-1, 3), axis=0, return_counts=True)
    return tuple(int(c) for c in colours[counts.argmax()])


def test_gif_keeps_frame_count_and_order(tmp_path):
    path = render.save_gif(_solid_frames(), tmp_path / "progress.gif", duration_ms=120)
    with Image.open(path) as gif:
        assert gif.n_frames == len(COLOURS)
        assert gif.info["duration"] == 120 and gif.info["loop"] == 0
    assert [_dominant_colour(f) for f in _read_gif(path)] == COLOURS


def test_a_gif_stopped_mid_write_leaves_the_old_one_and_nothing_to_finish_later(tmp_path, monkeypatch):
    """Ctrl-C while the frames are encoded: the earlier GIF stays, no temp file is left, and no
    half-done writer is left to encode again at exit (into a closed file: a traceback)."""
    import gc
    import sys
    from PIL import GifImagePlugin
    path = render.save_gif(_solid_frames(), tmp_path / "a.gif")
    before = path.read_bytes()
    calls, unraisable = [], []
    real = GifImagePlugin._write_frame_data

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(GifImagePlugin, "_write_frame_data", interrupted)
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(KeyboardInterrupt):
        render.save_gif(_solid_frames()[::-1], path)
    gc.collect()
    assert unraisable == [] and len(calls) == 2  # nothing encoded again behind our back
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.gif"]


def test_gif_captions_change_frames(tmp_path):
    plain = _read_gif(render.save_gif(_solid_frames(), tmp_path / "plain.gif"))
    captioned = _read_gif(
        render.save_gif(_solid_frames(), tmp_path / "captioned.gif", captions=[f"step {i}" for i in range(4)])
    )
    assert len(captioned) == len(plain)
    band = captioned[0].shape[0] - plain[0].shape[0]
    assert band > 0
    for frame, colour in zip(captioned, COLOURS):
        assert (frame[:band].min(axis=2) < 128).any()  # caption text
        assert _dominant_colour(frame[band:]) == colour


def test_gif_pads_frames_to_common_size(tmp_path):
    frames = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (60, 20), "blue")]
    path = render.save_gif(frames, tmp_path / "mixed.gif")
    assert [f.shape for f in _read_gif(path)] == [(30, 60, 3), (30, 60, 3)]


def test_gif_rejects_mismatched_captions_and_wrong_suffix(tmp_path):
    with pytest.raises(ValueError, match="captions"):
        render.save_gif(_solid_frames(), tmp_path / "a.gif", captions=["only one"])
    with pytest.raises(UserError, match=r"\.gif"):
        render.save_gif(_solid_frames(), tmp_path / "a.png")


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def test_save_grid_creates_folders_and_png(tmp_path):
    path = render.save_grid(_random_images(4, 32), tmp_path / "run" / "samples" / "fakes.png", nrow=2)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (70, 70)


def test_save_image_jpg_and_unknown_suffix(tmp_path):
    img = Image.new("RGBA", (10, 10), (1, 2, 3, 4))
    with Image.open(render.save_image(img, tmp_path / "a.jpg")) as back:
        assert back.format == "JPEG"
    with pytest.raises(UserError, match="unknown suffix"):
        render.save_image(img, tmp_path / "a.notanimage")


def test_failed_save_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "fakes.png"
    render.save_image(Image.new("RGB", (8, 8), "red"), path)
    before = path.read_bytes()

    def crash_mid_write(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", crash_mid_write)
    with pytest.raises(UserError, match=r"fakes\.png: could not be written \(No space left on device\); free space"):
        render.save_image(Image.new("RGB", (8, 8), "blue"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fakes.png"]


def test_failed_gif_leaves_no_temp(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(render, "_write_gif", crash)
    with pytest.raises(UserError, match="progress.gif: could not be written"):
        render.save_gif(_solid_frames(), tmp_path / "progress.gif")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def test_plot_curves_writes_png_and_tolerates_missing_keys(tmp_path):
    records = [
        {"step": 0, "loss_G": 2.0, "loss_D": 1.0},
        {"step": 10, "loss_G": 1.5},  # no loss_D
        {"step": 20, "loss_G": 1.2, "loss_D": None},
        {"loss_G": 9.9},  # no step: skipped
        {"step": 30, "loss_G": 1.0, "loss_D": 0.8},
    ]
    path = render.plot_curves(records, ["loss_G", "loss_D", "never_logged"], tmp_path / "loss.png", smooth=2)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 100
        img.verify()


def test_a_series_of_one_point_is_drawn_with_a_marker():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    assert render._plot_series(ax, [5.0], [1.0], "loss_G", smooth=5)
    assert [line.get_marker() for line in ax.lines] == ["o"]  # a line through one point draws nothing
    plt.close(fig)


def test_plot_curves_with_no_data_still_writes(tmp_path):
    path = render.plot_curves([], ["loss_G"], tmp_path / "plots" / "empty.png", title="nothing yet")
    with Image.open(path) as img:
        assert img.format == "PNG"
    assert [p.name for p in path.parent.iterdir()] == ["empty.png"]


def test_moving_average_is_trailing():
    assert render._moving_average([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]
