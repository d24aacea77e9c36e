"""Procedural anime-style faces: the built-in dataset (no real anime dataset can be downloaded).

Faces are drawn with PIL at 4x resolution (2x above 64 px) on an RGBA layer, rotated a few degrees, pasted on a
background and downsampled with LANCZOS for antialiasing.  All random draws happen in a fixed
order that never depends on the hair/eye colour names, so one rng state drawn with two different
colours gives the same face with only the colours changed (the tests use that to find hair and
eye pixels).
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from ..labels import COLOR_RGB

HAIR_COLORS = ("orange", "white", "aqua", "gray", "green", "red", "purple", "pink", "blue",
               "black", "brown", "blonde")
EYE_COLORS = ("black", "orange", "pink", "yellow", "aqua", "purple", "green", "brown", "red",
              "blue")

# Label priors skewed like tagged anime-face data (blonde/black/brown hair, blue/red eyes common),
# but no class under ~3% so every class still gets enough samples to learn.
_HAIR_P = np.array([3, 4, 6, 5, 6, 8, 7, 9, 10, 13, 13, 16], float)
_HAIR_P /= _HAIR_P.sum()
_EYE_P = np.array([6, 4, 5, 9, 8, 10, 11, 13, 14, 20], float)
_EYE_P /= _EYE_P.sum()

_SKINS = ((255, 232, 218), (252, 220, 198), (242, 204, 176), (224, 182, 146))
# Soft backgrounds; any too close to the hair colour is skipped so hair never melts into them.
_BACKGROUNDS = ((232, 234, 240), (198, 222, 245), (255, 236, 204), (218, 242, 220),
                (246, 214, 224), (228, 218, 248), (62, 70, 92), (248, 246, 212),
                (176, 188, 200), (210, 190, 162), (42, 44, 64), (160, 200, 180), (104, 122, 160))
_CLOTHES = ((40, 50, 90), (238, 238, 240), (120, 32, 44), (34, 34, 40), (96, 100, 112),
            (60, 90, 70))
_FAR = 110  # min RGB distance between hair and background (clothes: 80, they touch less hair)
_LID = (45, 28, 30)


def _mix(a, b, t):
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def _jitter(rgb, rng):
    # Small per-sample variation only: large jitter would blur e.g. orange vs blonde.
    shift, gain = rng.integers(-5, 6, size=3), rng.uniform(0.96, 1.04)
    return tuple(int(v) for v in np.clip(np.array(rgb) * gain + shift, 0, 255))


def _hair_tones(name, base):
    """(base, shade, line, highlight). White and black get custom shading so they stay readable."""
    if name == "white":
        return base, (206, 210, 222), (160, 166, 182), (255, 255, 255)
    if name == "black":
        return base, _mix(base, (0, 0, 0), 0.5), (0, 0, 0), (78, 84, 112)
    if name == "gray":
        return base, _mix(base, (0, 0, 0), 0.22), _mix(base, (0, 0, 0), 0.45), (180, 180, 186)
    # Darkening yellow towards black turns it olive, so blonde shades towards gold instead.
    dark = (150, 90, 20) if name == "blonde" else (0, 0, 0)
    return (base, _mix(base, dark, 0.2), _mix(base, dark, 0.45),
            _mix(base, (255, 255, 255), 0.5))


def _pick(palette, avoid, rng, far=_FAR):
    order = rng.permutation(len(palette))  # always one draw, whatever `avoid` is
    return [palette[i] for i in order if math.dist(palette[i], avoid) > far]


def _background(w, hair, rng):
    ok, mode = _pick(_BACKGROUNDS, hair, rng), int(rng.integers(3))
    c1 = np.array(ok[0], float)
    c2 = np.array(_mix(ok[0], (255, 255, 255) if sum(ok[0]) < 450 else (90, 90, 110), 0.3), float)
    if mode == 0 or math.dist(c2, hair) <= _FAR:
        return Image.new("RGB", (w, w), ok[0])
    t = np.linspace(0.0, 1.0, w)
    g = np.broadcast_to(t[:, None], (w, w)) if mode == 1 else (t[:, None] + t[None, :]) / 2
    return Image.fromarray((c1 + (c2 - c1) * g[..., None]).astype(np.uint8), "RGB")


def _ellipse(d, cx, cy, rx, ry, fill):
    d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)


def _body(d, g, skin, cloth):
    cx, cy, r = g
    _ellipse(d, cx, cy + 2.75 * r, 1.95 * r, 1.1 * r, cloth)
    shadow = _mix(skin, (150, 90, 90), 0.22)
    d.rectangle((cx - 0.3 * r, cy + 0.4 * r, cx + 0.3 * r, cy + 1.8 * r), fill=shadow)
    d.polygon([(cx - 0.42 * r, cy + 1.66 * r), (cx + 0.42 * r, cy + 1.66 * r),
               (cx, cy + 2.15 * r)], fill=shadow)


def _tail(d, g, s, base, line):
    """One twin-tail/ponytail hanging at side s (-1 left, +1 right) behind the head."""
    cx, cy, r = g
    pts = [(0.9, -0.95), (1.55, -0.45), (1.68, 0.45), (1.42, 1.75), (1.2, 0.6), (1.05, -0.45)]
    d.polygon([(cx + s * x * r, cy + y * r) for x, y in pts], fill=base)
    d.line([(cx + s * 1.3 * r, cy - 0.5 * r), (cx + s * 1.42 * r, cy + 0.5 * r),
            (cx + s * 1.38 * r, cy + 1.3 * r)], fill=line, width=max(1, int(0.05 * r)))
    _ellipse(d, cx + s * 0.98 * r, cy - 0.9 * r, 0.09 * r, 0.09 * r, (40, 40, 80))  # hair tie


def _back_hair(d, g, style, tail_side, tones):
    base, shade, line, _ = tones
    cx, cy, r = g
    _ellipse(d, cx, cy - 0.15 * r, 1.2 * r, 1.17 * r, shade)
    if style == 1:  # long: falls beside the face past the shoulders
        d.polygon([(cx - 1.18 * r, cy - 0.2 * r), (cx - 1.38 * r, cy + 1.0 * r),
                   (cx - 1.5 * r, cy + 2.6 * r), (cx + 1.5 * r, cy + 2.6 * r),
                   (cx + 1.38 * r, cy + 1.0 * r), (cx + 1.18 * r, cy - 0.2 * r)], fill=shade)
        for s in (-1, 1):
            d.line([(cx + s * 1.2 * r, cy + 0.2 * r), (cx + s * 1.3 * r, cy + 2.2 * r)],
                   fill=line, width=max(1, int(0.04 * r)))
    else:  # bob down to the jaw, the base of the other styles
        d.polygon([(cx - 1.18 * r, cy - 0.2 * r), (cx - 1.14 * r, cy + 0.6 * r),
                   (cx - 0.9 * r, cy + 0.8 * r), (cx + 0.9 * r, cy + 0.8 * r),
                   (cx + 1.14 * r, cy + 0.6 * r), (cx + 1.18 * r, cy - 0.2 * r)], fill=shade)
    if style == 2:
        _tail(d, g, -1, base, line)
        _tail(d, g, 1, base, line)
    elif style == 3:
        _tail(d, g, tail_side, base, line)


def _face(d, g, skin):
    cx, cy, r = g
    pts = []
    for t in np.linspace(0, 2 * math.pi, 48, endpoint=False):
        s, c = math.sin(t), math.cos(t)
        low = max(s, 0.0)  # narrow the lower half towards a pointed anime chin
        pts.append((cx + r * c * (1 - 0.3 * low ** 1.5), cy + r * s * (1 + 0.22 * low)))
    d.polygon(pts, fill=skin)


def _eye(d, g, s, iris, r_scale):
    """Eye on side s; the iris is ~0.46 r wide (>= 7 px at 64x64) so its colour reads clearly."""
    cx, cy, r = g
    ex, ey = cx + s * 0.45 * r, cy + 0.12 * r
    ew, eh = 0.3 * r, 0.32 * r * r_scale
    _ellipse(d, ex, ey, ew, eh, (252, 252, 255))
    iw, ih = 0.23 * r, 0.29 * r * r_scale
    ix, iy = ex - s * 0.02 * r, ey + 0.03 * r
    _ellipse(d, ix, iy, iw, ih, _mix(iris, (0, 0, 0), 0.3))
    _ellipse(d, ix, iy + 0.06 * r, iw * 0.92, ih * 0.82, iris)  # darker rim/top, as in anime
    _ellipse(d, ix, iy + 0.02 * r, 0.1 * r, 0.14 * r, _mix(iris, (0, 0, 0), 0.7))
    _ellipse(d, ix - 0.09 * r, iy - 0.1 * r, 0.075 * r, 0.075 * r, (255, 255, 255))
    _ellipse(d, ix + 0.08 * r, iy + 0.14 * r, 0.035 * r, 0.035 * r, (255, 255, 255))
    lw = max(1, int(0.085 * r))
    box = (ex - ew * 1.08, ey - eh, ex + ew * 1.08, ey + eh * 1.3)
    d.arc(box, 195, 345, fill=_LID, width=lw)  # upper lid line
    ox, oy = ex + s * ew * 1.0, ey - 0.2 * eh
    d.polygon([(ox, oy), (ox + s * 0.14 * r, oy - 0.1 * r), (ox - s * 0.02 * r, oy - 0.18 * r)],
              fill=_LID)  # outer lash flick
    d.arc((ex - ew * 0.7, ey - eh * 1.08, ex + ew * 0.7, ey + eh * 1.08), 60, 120,
          fill=_mix(_LID, (200, 140, 130), 0.4), width=max(1, lw // 2))


def _mouth_and_cheeks(d, g, skin, mouth, blush):
    cx, cy, r = g
    d.line([(cx + 0.02 * r, cy + 0.44 * r), (cx + 0.05 * r, cy + 0.5 * r)],
           fill=_mix(skin, (120, 60, 60), 0.35), width=max(1, int(0.03 * r)))  # hint of a nose
    my = cy + 0.74 * r
    if mouth == 0:
        d.arc((cx - 0.1 * r, my - 0.08 * r, cx + 0.1 * r, my + 0.04 * r), 20, 160,
              fill=(120, 50, 50), width=max(1, int(0.04 * r)))
    else:
        d.chord((cx - 0.1 * r, my - 0.09 * r, cx + 0.1 * r, my + 0.09 * r), 0, 180,
                fill=(150, 50, 60))
        d.chord((cx - 0.05 * r, my, cx + 0.05 * r, my + 0.08 * r), 0, 180,
                fill=(235, 120, 130))
    if blush:  # two opaque rings instead of alpha: ImageDraw cannot blend on an RGBA layer
        for s in (-1, 1):
            _ellipse(d, cx + s * 0.5 * r, cy + 0.47 * r, 0.17 * r, 0.07 * r,
                     _mix(skin, (255, 110, 120), 0.2))
            _ellipse(d, cx + s * 0.5 * r, cy + 0.47 * r, 0.1 * r, 0.04 * r,
                     _mix(skin, (255, 110, 120), 0.35))


def _front_hair(d, g, kind, side, sidelocks, jit, tones):
    base, shade, line, light = tones
    cx, cy, r = g
    hx, hy, rx, ry = cx, cy - 0.15 * r, 1.13 * r, 1.1 * r
    top = [(hx + rx * math.cos(a), hy + ry * math.sin(a))
           for a in np.linspace(math.pi, 2 * math.pi, 17)]

    def crown(x, k):  # y of the head outline at x, pulled k of the way up from the centre
        return hy - k * ry * math.sqrt(max(0.0, 1 - ((x - hx) / rx) ** 2))
    # Bangs edge, right to left: roots (high) alternate with strand tips (low).
    n = (9, 6, 6, 6)[kind]
    xs = np.linspace(cx + 1.0 * r, cx - 1.0 * r, 2 * n + 1)
    yb, depth = cy - 0.3 * r, (0.06, 0.3, 0.3, 0.3)[kind] * r
    edge, roots = [], []
    for i, x in enumerate(xs):
        off = abs(x - cx) / r
        y = yb + 0.28 * r * off ** 2  # outer strands reach down beside the eyes
        if i % 2 == 0:  # root
            y -= depth
            if kind == 3:  # parted in the middle: forehead shows in a narrow inverted V
                y -= 0.5 * r * max(0.0, 1 - off * 2.5)
            roots.append((x, y))
        else:
            y += 0.05 * r * jit[i % len(jit)]
            if kind == 2:  # swept to one side, longer on that side
                x += side * 0.16 * r
                y += side * 0.1 * r * (x - cx) / r
        edge.append((x, y))
    d.polygon(top + [(cx + 1.08 * r, cy + 0.05 * r)] + edge + [(cx - 1.08 * r, cy + 0.05 * r)],
              fill=base)
    lw = max(1, int(0.035 * r))
    for x, y in roots[1:-1:2 if kind == 0 else 1]:  # strand separations, kept inside the head
        x1 = x + (x - cx) * 0.15
        d.line([(x, y + 0.02 * r), (x1, max(y - 0.35 * r, crown(x1, 1) + 0.15 * r))],
               fill=line, width=lw)
    if sidelocks:
        for s in (-1, 1):
            pts = [(0.76, -0.45), (1.12, -0.35), (1.05, 0.6), (0.9, 1.0), (0.84, 0.3)]
            d.polygon([(cx + s * x * r, cy + y * r) for x, y in pts], fill=base)
            d.line([(cx + s * 0.95 * r, cy - 0.2 * r), (cx + s * 0.92 * r, cy + 0.6 * r)],
                   fill=shade, width=lw)
    # Highlight streak: the jagged "angel ring" of light that follows the curve of the head.
    for a, b in ((-0.8, -0.3), (-0.22, 0.22), (0.3, 0.74)):
        xs = [cx + (a + (b - a) * t) * r for t in np.linspace(0, 1, 5)]
        upper = [(x, crown(x, 0.74)) for x in xs]
        lower = [(x, crown(x, 0.6) + (0.07 * r if j % 2 else 0)) for j, x in enumerate(xs)]
        d.polygon(upper + lower[::-1], fill=light)


def draw_face(hair: str, eye: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One RGB face of size x size with the given hair and eye colour names."""
    if hair not in HAIR_COLORS or eye not in EYE_COLORS:
        raise ValueError(f"unknown colour: hair={hair!r} (one of {HAIR_COLORS}), "
                         f"eye={eye!r} (one of {EYE_COLORS})")
    ss = 4 if size <= 64 else 2  # supersampling factor
    w = size * ss
    tones = _hair_tones(hair, _jitter(COLOR_RGB[hair], rng))
    iris = _jitter(COLOR_RGB[eye], rng)
    bg = _background(w, tones[0], rng)
    cloth = _pick(_CLOTHES, tones[0], rng, 80)[0]
    skin = _SKINS[int(rng.integers(len(_SKINS)))]
    g = (w * (0.5 + rng.uniform(-0.04, 0.04)), w * (0.47 + rng.uniform(-0.03, 0.03)),
         w * rng.uniform(0.24, 0.27))
    style, kind = int(rng.integers(4)), int(rng.integers(4))
    side = 1 if rng.random() < 0.5 else -1
    sidelocks = style == 1 or rng.random() < 0.5
    jit = rng.uniform(-1, 1, size=8)
    eye_scale, mouth, blush = rng.uniform(0.92, 1.08), int(rng.integers(2)), rng.random() < 0.5
    angle = rng.uniform(-6, 6)

    # Layer taller than the image so the rotated shoulders still reach the bottom edge.
    layer = Image.new("RGBA", (w, int(w * 1.3)), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    _body(d, g, skin, cloth)
    _back_hair(d, g, style, side, tones)
    _face(d, g, skin)
    _eye(d, g, -1, iris, eye_scale)
    _eye(d, g, 1, iris, eye_scale)
    _mouth_and_cheeks(d, g, skin, mouth, blush)
    _front_hair(d, g, kind, side, sidelocks, jit, tones)
    # Premultiplied alpha so the rotation does not drag dark fringes in from transparent pixels.
    layer = layer.convert("RGBa").rotate(angle, Image.BILINEAR, center=(g[0], g[1]))
    layer = layer.convert("RGBA").crop((0, 0, w, w))
    bg.paste(layer, (0, 0), layer)
    return bg.resize((size, size), Image.LANCZOS)


def generate(n: int, seed: int = 0, size: int = 64):
    """Yield n tuples (PIL RGB image size x size, hair_index, eye_index); deterministic per seed.

    Labels follow the fixed non-uniform prior `_HAIR_P`/`_EYE_P` (every class >= 3%).
    """
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h = int(rng.choice(len(HAIR_COLORS), p=_HAIR_P))
        e = int(rng.choice(len(EYE_COLORS), p=_EYE_P))
        yield draw_face(HAIR_COLORS[h], EYE_COLORS[e], rng, size), h, e
