"""Turn generator output into pictures people can judge: captioned sample grids, GIFs, loss plots.

Everything here runs on CPU without a display and uses only the font bundled with Pillow.
Every file is written atomically (a temp file in the same folder, then os.replace), so a run
killed mid-save never leaves a truncated PNG where a good one used to be.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from anime_gan.errors import UserError
from anime_gan.files import landed_name, replace_atomically

TEXT_COLOUR = (0, 0, 0)
MARGIN_COLOUR = (255, 255, 255)
GAP = 4  # px between a caption and whatever it sits next to
ROTATED_LABEL_MAX = 120  # px; a vertical column label longer than this is abbreviated

# Only used to measure text; drawing happens on per-caption images.
_MEASURE = ImageDraw.Draw(Image.new("L", (1, 1)))


# ---------------------------------------------------------------------------------------------
# Tensors -> pixels
# ---------------------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] float in [-1,1] -> [N,H,W,3] uint8 (clamped, rounded)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images shaped [N, 3, H, W], got {list(images.shape)}")
    x = images.detach().to("cpu", torch.float32)
    # A diverged generator can emit NaN; draw it black rather than crash the sample save.
    x = torch.nan_to_num(x, nan=-1.0).clamp(-1.0, 1.0)
    x = ((x + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _tile(cells: np.ndarray, ncol: int, padding: int) -> np.ndarray:
    """Lay [N,H,W,3] cells out row-major on a black canvas, the way torchvision's make_grid does."""
    n, h, w, _ = cells.shape
    nrows = math.ceil(n / ncol)
    grid = np.zeros((nrows * (h + padding) + padding, ncol * (w + padding) + padding, 3), np.uint8)
    for i, cell in enumerate(cells):
        row, col = divmod(i, ncol)
        y, x = padding + row * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = cell
    return grid


# ---------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at `size` px; the fixed-size bitmap font on Pillow < 10.1 or without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _label_font_size(cell_height: int) -> int:
    # About five lines of text per cell height: readable at 64 px, still legible at 32 px.
    return max(10, min(cell_height // 5, 24))


def _text_width(text: str, font) -> int:
    return _MEASURE.textbbox((0, 0), text, font=font)[2]


def _line_height(font) -> int:
    return _MEASURE.textbbox((0, 0), "Ag", font=font)[3] + 2


def _wrap(text: str, font, max_width: int) -> list[str]:
    """Greedy word wrap. A word wider than max_width still gets a line of its own."""
    lines: list[str] = []
    for word in text.split():
        if lines and _text_width(f"{lines[-1]} {word}", font) <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _truncate(text: str, font, max_width: int) -> str:
    """Abbreviate with '...' until the text fits: the last resort when wrapping is not enough."""
    if _text_width(text, font) <= max_width:
        return text
    while text and _text_width(text + "...", font) > max_width:
        text = text[:-1]
    return text.rstrip() + "..."


def _fit_lines(text: str, font, max_width: int, max_lines: int) -> list[str]:
    """Wrap into at most max_lines lines, each no wider than max_width."""
    lines = _wrap(text, font, max_width)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
    return [_truncate(line, font, max_width) for line in lines]


def _text_mask(lines: list[str], font, align: str = "center") -> Image.Image:
    """Render lines as an 'L' mask (255 = ink) so it can be rotated and pasted onto any background."""
    width = max(1, max(_text_width(line, font) for line in lines))
    line_h = _line_height(font)
    mask = Image.new("L", (width, line_h * len(lines)), 0)
    draw = ImageDraw.Draw(mask)
    for i, line in enumerate(lines):
        spare = width - _text_width(line, font)
        x = {"left": 0, "center": spare // 2, "right": spare}[align]
        draw.text((x, i * line_h), line, fill=255, font=font)
    return mask


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------


def grid_image(
    images: torch.Tensor,
    nrow: int,
    *,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    title: str | None = None,
    padding: int = 2,
    scale: int = 1,
) -> Image.Image:
    """Tile N images, `nrow` per row (as in torchvision's make_grid), into one picture.

    Without captions the result matches make_grid exactly: black `padding` px separation and
    width = ncol * (W*scale + padding) + padding, where ncol = min(nrow, N). `scale` enlarges
    each image (nearest neighbour) but not the padding. With row_labels (one per row),
    col_labels (one per column) or a title, the grid sits on a white margin carrying them.
    """
    if nrow < 1 or padding < 0 or scale < 1:
        raise ValueError(f"need nrow >= 1, padding >= 0, scale >= 1; got {nrow}, {padding}, {scale}")
    cells = to_uint8(images)
    if len(cells) == 0:
        raise ValueError("grid_image got no images to tile")
    if scale > 1:
        cells = cells.repeat(scale, axis=1).repeat(scale, axis=2)
    ncol = min(nrow, len(cells))
    nrows = math.ceil(len(cells) / ncol)
    grid = Image.fromarray(_tile(cells, ncol, padding))
    if not (row_labels or col_labels or title):
        return grid
    _check_label_count("row_labels", row_labels, nrows, "rows")
    _check_label_count("col_labels", col_labels, ncol, "columns")
    return _add_captions(grid, cells.shape[1:3], padding, row_labels, col_labels, title)


def _check_label_count(name: str, labels: list[str] | None, expected: int, what: str) -> None:
    if labels and len(labels) != expected:
        raise ValueError(f"{name} has {len(labels)} entries but the grid has {expected} {what}")


def _add_captions(grid, cell_hw, padding, row_labels, col_labels, title) -> Image.Image:
    """Put the grid on a white canvas with row labels on the left, column labels and title on top."""
    cell_h, cell_w = cell_hw
    size = _label_font_size(cell_h)
    font = _font(size)
    row_masks = _row_label_masks(row_labels, font, cell_h, cell_w) if row_labels else []
    col_masks = _col_label_masks(col_labels, font, cell_h, cell_w) if col_labels else []
    left = max((m.width for m in row_masks), default=0) + (2 * GAP if row_masks else 0)
    band = max((m.height for m in col_masks), default=0) + (2 * GAP if col_masks else 0)

    content_w = left + grid.width
    title_mask = _title_mask(title, size, content_w) if title else None
    title_h = title_mask.height + 2 * GAP if title_mask else 0
    canvas_w = max(content_w, title_mask.width + 2 * GAP if title_mask else 0)
    x0 = (canvas_w - content_w) // 2  # centre the content under a title wider than it
    top = title_h + band

    canvas = Image.new("RGB", (canvas_w, top + grid.height), MARGIN_COLOUR)
    canvas.paste(grid, (x0 + left, top))
    if title_mask:
        canvas.paste(TEXT_COLOUR, ((canvas_w - title_mask.width) // 2, GAP), title_mask)
    for row, mask in enumerate(row_masks):
        centre_y = top + padding + row * (cell_h + padding) + cell_h // 2
        canvas.paste(TEXT_COLOUR, (x0 + left - GAP - mask.width, centre_y - mask.height // 2), mask)
    for col, mask in enumerate(col_masks):
        centre_x = x0 + left + padding + col * (cell_w + padding) + cell_w // 2
        # Bottom-aligned so every label sits directly above its own column.
        canvas.paste(TEXT_COLOUR, (centre_x - mask.width // 2, top - GAP - mask.height), mask)
    return canvas


def _row_label_masks(labels, font, cell_h, cell_w) -> list[Image.Image]:
    # Row labels may be wider than a cell (the margin grows), but no taller than their row.
    max_width = max(2 * cell_w, 96)
    max_lines = max(1, cell_h // _line_height(font))
    return [_text_mask(_fit_lines(label, font, max_width, max_lines), font, "right") for label in labels]


def _col_label_masks(labels, font, cell_h, cell_w) -> list[Image.Image]:
    """Horizontal (wrapped onto up to two lines) if every label fits its column, else vertical."""
    room = cell_w - GAP  # leaves a visible gap between neighbouring labels
    wrapped = [_wrap(label, font, room) for label in labels]
    if all(len(lines) <= 2 and all(_text_width(l, font) <= room for l in lines) for lines in wrapped):
        return [_text_mask(lines, font) for lines in wrapped]
    # Reads bottom to top, like a y-axis label; only abbreviated if very long.
    max_len = max(3 * cell_h, ROTATED_LABEL_MAX)
    return [_text_mask([_truncate(label, font, max_len)], font).rotate(90, expand=True) for label in labels]


def _title_mask(title: str, label_size: int, content_w: int) -> Image.Image:
    font = _font(int(label_size * 1.3))
    # A short title may widen a narrow grid's canvas (up to 480 px) rather than wrap.
    max_width = max(content_w - 2 * GAP, min(_text_width(title, font), 480))
    return _text_mask(_fit_lines(title, font, max_width, max_lines=3), font)


def caption_frame(img: Image.Image, text: str) -> Image.Image:
    """Return a copy with `text` written in a white band on top (e.g. 'step 2000')."""
    img = img.convert("RGB")
    font = _font(max(10, min(img.width // 24, 20)))
    # A short caption may widen a narrow frame (32 px) rather than be cut to "t=0...."
    room = max(img.width - 2 * GAP, min(_text_width(text, font), 160))
    mask = _text_mask(_fit_lines(text, font, room, max_lines=2), font)
    band = mask.height + 2 * GAP
    out = Image.new("RGB", (max(img.width, mask.width + 2 * GAP), img.height + band), MARGIN_COLOUR)
    out.paste(img, ((out.width - img.width) // 2, band))
    out.paste(TEXT_COLOUR, ((out.width - mask.width) // 2, GAP), mask)
    return out


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(f) on a temp file next to `path`, then move it over `path` in one step."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, write)
    except IsADirectoryError:
        raise UserError(f"{landed_name(path)}: is a folder, so the file cannot be written; move or delete that "
                        f"folder, or choose another output folder") from None
    except OSError as e:  # a full disk or a folder that turned read-only
        raise UserError(f"{landed_name(path)}: could not be written ({e.strerror or e}); free space on that disk "
                        f"or choose another output folder") from None
    return path


def _image_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot save image '{path}': unknown suffix '{path.suffix}'; use .png or .jpg")
    return fmt


def save_image(img: Image.Image, path) -> Path:
    """Write atomically; the format follows the suffix (.png, .jpg, ...). Creates parent folders."""
    path = Path(path)
    fmt = _image_format(path)
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")  # JPEG has no alpha or palette
    return _atomic_write(path, lambda f: img.save(f, format=fmt))


def save_grid(images: torch.Tensor, path, nrow: int, **caption_kwargs) -> Path:
    """grid_image(images, nrow, **caption_kwargs) saved with save_image."""
    return save_image(grid_image(images, nrow, **caption_kwargs), path)


def save_gif(
    frames: list[Image.Image],
    path,
    *,
    duration_ms: int = 300,
    loop: int = 0,
    captions: list[str] | None = None,
) -> Path:
    """Animated GIF of `frames` (optionally captioned), padded to a common size, written atomically.

    loop=0 repeats forever. Pillow merges consecutive identical frames into one longer frame,
    so a GIF can hold fewer frames than given when some repeat exactly.
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise UserError(f"cannot save GIF '{path}': the file name must end in .gif")
    if not frames:
        raise ValueError("save_gif got no frames")
    if captions is not None:
        if len(captions) != len(frames):
            raise ValueError(f"save_gif got {len(frames)} frames but {len(captions)} captions")
        frames = [caption_frame(frame, text) for frame, text in zip(frames, captions)]
    arrays = _pad_to_common_size(frames)
    return _atomic_write(path, lambda f: _write_gif(f, arrays, duration_ms, loop))


def _pad_to_common_size(frames: list[Image.Image]) -> list[np.ndarray]:
    # Top-left aligned on white, so captions and grids stay put from frame to frame.
    width, height = max(f.width for f in frames), max(f.height for f in frames)
    padded = []
    for frame in frames:
        canvas = Image.new("RGB", (width, height), MARGIN_COLOUR)
        canvas.paste(frame.convert("RGB"), (0, 0))
        padded.append(np.asarray(canvas))
    return padded


def _write_gif(f: BinaryIO, frames: list[np.ndarray], duration_ms: int, loop: int) -> None:
    # Pillow itself, not imageio's Pillow plugin: that one encodes when it is closed, so a Ctrl-C
    # mid-write left it to encode everything again at exit, into a closed file (a traceback, and
    # seconds more before the command ended).
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=loop)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def plot_curves(
    records: list[dict],
    keys: list[str],
    path,
    *,
    title: str = "",
    xkey: str = "step",
    smooth: int = 0,
) -> Path:
    """Plot records[i][key] against records[i][xkey] for every key, and save it atomically.

    Records lacking a key (or holding a non-number there) are skipped for that key; a key found
    in no record is left out of the legend. smooth > 1 draws a trailing moving average over that
    many points on top of the faint raw curve.
    """
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    path = Path(path)
    # The object-oriented API with an Agg canvas: no display needed, and pyplot's global
    # state (and whatever backend someone else chose) is left alone.
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    plotted = [key for key in keys if _plot_series(ax, *_series(records, xkey, key), key, smooth)]
    if plotted:
        ax.legend()
    else:
        ax.text(0.5, 0.5, f"no data yet for {', '.join(keys)}", ha="center", transform=ax.transAxes)
    ax.set_xlabel(xkey)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fmt = path.suffix.lstrip(".").lower() or "png"
    return _atomic_write(path, lambda f: fig.savefig(f, format=fmt))


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _series(records: list[dict], xkey: str, key: str) -> tuple[list[float], list[float]]:
    points = []
    for record in records:
        x, y = _number(record.get(xkey)), _number(record.get(key))
        if x is not None and y is not None:
            points.append((x, y))
    # Sorted by x: a resumed run may append steps that an earlier stretch already logged.
    points.sort(key=lambda p: p[0])
    return [p[0] for p in points], [p[1] for p in points]


def _plot_series(ax, xs: list[float], ys: list[float], label: str, smooth: int) -> bool:
    if not xs:
        return False
    if len(xs) == 1:  # a line through one point draws nothing: a run checked once still shows it
        ax.plot(xs, ys, marker="o", label=label)
    elif smooth > 1:
        (raw,) = ax.plot(xs, ys, alpha=0.25, linewidth=1)
        ax.plot(xs, _moving_average(ys, smooth), color=raw.get_color(), label=label)
    else:
        ax.plot(xs, ys, label=label)
    return True


def _moving_average(values: list[float], window: int) -> np.ndarray:
    """Trailing mean over up to `window` points; the first points average what exists so far."""
    sums = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)
