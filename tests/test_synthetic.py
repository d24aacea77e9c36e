"""The procedural face generator: determinism, sizes, label coverage and colour separability."""
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from anime_gan import labels
from anime_gan.data.synthetic import EYE_COLORS, HAIR_COLORS, draw_face, generate
from anime_gan.labels import COLOR_RGB

SEEDS = (0, 1, 2, 3)


def _render(hair, eye, seed, size=64):
    return np.asarray(draw_face(hair, eye, np.random.default_rng(seed), size), dtype=np.int16)


def _changed(a, b):
    return np.abs(a - b).sum(-1) > 60


def _region(group, seed):
    """Pixels that change when only the hair (or eye) colour changes: the hair (or iris) region.

    Relies on draw_face drawing the same geometry for the same rng state whatever the colours.
    The two probe colours are far from every background/clothes tone, so nothing else changes.
    """
    if group == "hair":
        a, b = _render("orange", "blue", seed), _render("aqua", "blue", seed)
    else:
        a, b = _render("brown", "red", seed), _render("brown", "aqua", seed)
    mask = _changed(a, b)
    assert mask.sum() > (300 if group == "hair" else 40), "colour did not change the image"
    return mask


def _nearest(rgb, names):
    return min(names, key=lambda n: np.linalg.norm(np.asarray(COLOR_RGB[n]) - rgb))


def test_class_names_match_labels():
    assert HAIR_COLORS == labels.HAIR_COLORS and len(HAIR_COLORS) == 12
    assert EYE_COLORS == labels.EYE_COLORS and len(EYE_COLORS) == 10


def test_deterministic_per_seed():
    a = [np.asarray(im) for im, _, _ in generate(5, seed=7)]
    b = [np.asarray(im) for im, _, _ in generate(5, seed=7)]
    c = [np.asarray(im) for im, _, _ in generate(5, seed=8)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert [lab for _, *lab in generate(20, seed=7)] == [lab for _, *lab in generate(20, seed=7)]


@pytest.mark.parametrize("size", [32, 64, 128])
def test_sizes(size):
    for im, h, e in generate(3, seed=1, size=size):
        assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (size, size)
        assert 0 <= h < len(HAIR_COLORS) and 0 <= e < len(EYE_COLORS)
        assert np.asarray(im).std() > 20  # an actual drawing, not a flat image


def test_unknown_colour_rejected():
    with pytest.raises(ValueError):
        draw_face("teal", "blue", np.random.default_rng(0))


def test_generate_covers_every_class():
    hs, es = Counter(), Counter()
    for _, h, e in generate(600, seed=3, size=32):
        hs[h] += 1
        es[e] += 1
    assert set(hs) == set(range(len(HAIR_COLORS))) and set(es) == set(range(len(EYE_COLORS)))
    assert min(hs.values()) >= 6 and min(es.values()) >= 6
    # a non-uniform prior: blonde is far more common than orange
    assert hs[HAIR_COLORS.index("blonde")] > 2 * hs[HAIR_COLORS.index("orange")]


@pytest.mark.parametrize("group", ["hair", "eye"])
def test_colours_are_separable(group):
    """The median colour of the hair/iris region is nearest to its own class's base colour.

    Fails if colours were ignored (empty region), swapped or drifted towards a neighbour class.
    """
    names = HAIR_COLORS if group == "hair" else EYE_COLORS
    masks = {s: _region(group, s) for s in SEEDS}
    for name in names:
        px = np.concatenate([
            _render(name, "blue", s)[masks[s]] if group == "hair"
            else _render("brown", name, s)[masks[s]] for s in SEEDS])
        med = np.median(px, axis=0)
        assert _nearest(med, names) == name, (name, med)


def test_prepare_reports_the_built_in_set_as_drawn_not_as_a_source_folder(tmp_path, cli):
    rc, out, err = cli("prepare", "--synthetic", "6", "--seed", "3", "-o", tmp_path / "d", "-q")
    assert rc == 0 and (out + err).splitlines()[0] == f"6 built-in faces drawn with seed 3 -> {tmp_path / 'd'} at 64px"
    rc, out, err = cli("prepare", tmp_path / "d", "--image-size", "32", "-q")  # a prepared set is a tag-pickle one
    assert rc == 0 and "(tag-pickle layout)" in (out + err).splitlines()[0]
