"""Bad input suite: hypothesis fuzzing of the tags.pickle / JSON / tags.csv readers and of CLI flags.

Every case must end in success (exit 0, and then a data set that reads back cleanly) or in exactly
one line 'anime-gan <command>: error: ...' with exit status 2: never a traceback, never a warning
on stderr, never a hang, and never a half-written output that replaces a good one.

Images are 8x8 PNGs and caches 32px so the whole file runs in well under a minute.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import pickle
import re
import shutil
import signal
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from anime_gan import safe_pickle
from anime_gan.cli import build_parser, main
from anime_gan.data.formats import scan
from anime_gan.errors import UserError
from anime_gan.labels import COLOR_RGB, EYE_COLORS, HAIR_COLORS, Schema

from conftest import CLEVR_OBJECTS, draw, snapshot

TINY = (8, 8)
PAIRS = [(0, 1), (5, 9), (11, 3)]          # (hair, eye) of images/0.png, 1.png, 2.png
PREPARE = ("-q", "--image-size", "32")
HANG_S = 120                               # one command takes milliseconds; this long is a hang


def fuzz(n: int):
    """n examples; no example database on disk. The plain run draws the same examples every time, so
    CI passes or fails on the code, not on the draw; set $FUZZ_SCALE (a multiplier) for a longer,
    random run by hand, which is how new bad inputs are found."""
    scale = os.environ.get("FUZZ_SCALE")
    return settings(max_examples=n * int(scale or "1"), deadline=None, database=None, derandomize=not scale,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


def fresh(tmp_path: Path) -> Path:
    """A new empty folder per hypothesis example (tmp_path is shared by all of them)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def label(h: int, e: int) -> np.ndarray:
    """The 22-dim multi-hot label of hair colour h and eye colour e."""
    vec = np.zeros(len(HAIR_COLORS) + len(EYE_COLORS), np.float32)
    vec[h] = vec[len(HAIR_COLORS) + e] = 1.0
    return vec


def draw_images(folder: Path, names, pairs=PAIRS) -> None:
    for name, (h, _) in zip(names, pairs):
        draw(folder / name, COLOR_RGB[HAIR_COLORS[h]], size=TINY)


# ---- the property ---------------------------------------------------------------------------------

class Hang(BaseException):
    """Not an Exception, so that no `except Exception` in the code under test can swallow it."""


def _hang(signum, frame):
    raise Hang(f"one call ran for {HANG_S} s")


@contextlib.contextmanager
def no_hang():
    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def clean_exit(cli, command, *args):
    """Run `anime-gan COMMAND ARGS`: exit 0, or 2 with one 'anime-gan ...: error:' line on stderr.

    An exception other than argparse's SystemExit escapes `cli` and fails the test, and so does a
    hang. A warning (other than a deprecation) counts as stderr output: the real CLI prints it."""
    with no_hang(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc, out, err = cli(command, *args)
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    assert not shown, f"would print a warning on stderr: {shown[0].category.__name__}: {shown[0].message}"
    assert rc in (0, 2), (rc, out, err)
    event(f"exit {rc}")   # --hypothesis-show-statistics: how many cases got past the readers
    assert "Traceback" not in err, err
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert re.match(rf"anime-gan( {re.escape(command)})?: error: \S", lines[0]), err
    return rc, out, err


def scan_is_clean(root: Path) -> None:
    """`scan` either returns or raises UserError: nothing else."""
    with no_hang(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scan(root)
        except UserError:
            pass


def check_prepared(out: Path, fresh_out: bool = True) -> None:
    """What a successful prepare wrote reads back as a clean tag-pickle data set (one with no
    stray images when it was written into an empty folder)."""
    images = np.load(out / "cache" / "images_32.npy", mmap_mode="r")
    assert images.shape[1:] == (3, 32, 32) and len(images) >= 1
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    if not (out / "tags.pickle").exists():   # an unlabelled folder
        return
    schema = Schema.load(out)
    tags = safe_pickle.load(out / "tags.pickle")
    assert sorted(tags) == list(range(len(images)))
    for vec in tags.values():
        schema.check(vec.numpy(), "prepared tags.pickle")
    labels = np.load(out / "cache" / "labels_32.npy")
    assert labels.shape == (len(images), schema.dim)
    again = scan(out)
    assert len(again.files) == len(images) and (again.skipped == [] or not fresh_out), again.skipped
    np.testing.assert_array_equal(again.labels, labels)


def prepare_is_clean(cli, tmp_path, write, *extra) -> int:
    """write(SOURCE); scan it; `prepare SOURCE -o OUT`: the property, and a failure writes nothing."""
    case = fresh(tmp_path)
    src, out = case / "src", case / "out"
    src.mkdir()
    write(src)
    scan_is_clean(src)
    rc, _, _ = clean_exit(cli, "prepare", src, "-o", out, *PREPARE, *extra)
    if rc == 0:
        check_prepared(out)
    else:
        assert not [p for p in out.rglob("*") if p.is_file()], "a failed prepare left files behind"
    return rc


# ---- strategies -----------------------------------------------------------------------------------

SPECIAL = [0, 1, 2, -1, 0.5, -0.0, math.nan, math.inf, -math.inf, True, 10 ** 400, 1e300, 1j, 1 + 0j]
SCALARS = st.one_of(st.sampled_from(SPECIAL), st.floats(), st.integers(), st.none(), st.text(max_size=3),
                    st.binary(max_size=3))


@st.composite
def arrays(pick):
    """numpy arrays or torch tensors of random shape, dtype and 0/1/2/-1/nan/inf entries."""
    shape = tuple(pick(st.lists(st.integers(0, 23), max_size=3)))
    values = np.zeros(int(np.prod(shape)), np.float64)
    for _ in range(pick(st.integers(0, 4))):
        if len(values):
            values[pick(st.integers(0, len(values) - 1))] = pick(st.sampled_from([1, 2, -1, 0.5, math.nan, math.inf]))
    kind = pick(st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool", "complex64"]))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = values.reshape(shape).astype(kind)
    if pick(st.booleans()):
        tensor = torch.from_numpy(arr)
        return tensor.to(torch.bfloat16) if kind == "float32" and pick(st.booleans()) else tensor
    return arr


@st.composite
def near_valid_labels(pick):
    """A one-hot (hair, eye) label in any stored style, perhaps with an entry or the length off."""
    vec = label(pick(st.integers(0, 11)), pick(st.integers(0, 9)))
    for i, v in pick(st.lists(st.tuples(st.integers(0, 21), st.sampled_from([0.0, 1.0, 2.0, -1.0, math.nan, 0.5])),
                              max_size=2)):
        vec[i] = v
    style = pick(st.sampled_from(["tensor", "tuple", "numpy", "list", "ints", "short", "long", "nested"]))
    hair, eye = vec[:12], vec[12:]
    return {"tensor": lambda: torch.from_numpy(vec),
            "tuple": lambda: (torch.from_numpy(hair), torch.from_numpy(eye)),
            "numpy": lambda: (hair, eye),
            "list": lambda: vec.tolist(),
            "ints": lambda: [int(v) if v == v else v for v in vec.tolist()],
            "short": lambda: torch.from_numpy(vec[:pick(st.integers(0, 21))]),
            "long": lambda: torch.from_numpy(np.concatenate([vec, vec[:pick(st.integers(1, 5))]])),
            "nested": lambda: [hair.tolist(), [eye.tolist()]]}[style]()


LABELS = st.recursive(st.one_of(SCALARS, arrays(), near_valid_labels()),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                              st.dictionaries(st.integers(0, 3), inner, max_size=2)),
                      max_leaves=6)
KEYS = st.one_of(st.integers(0, 3), st.integers(), st.sampled_from(["0", "1", " 2", "../0", "a/b", "x" * 300,
                                                                    "a\x00b", "a\nb", "", None, 1.0, True]),
                 st.text(max_size=5), st.none(), st.tuples(st.integers(0, 2)), st.floats())


@st.composite
def one_bad_entry(pick):
    """Good labels for images 0-2 and one more entry (or a replaced one) of any key and value."""
    tags = {i: torch.from_numpy(label(h, e)) for i, (h, e) in enumerate(PAIRS)}
    tags[pick(st.one_of(st.sampled_from([0, 1, 2, 3]), KEYS))] = pick(st.one_of(LABELS, near_valid_labels()))
    return tags


TAGS = st.one_of(one_bad_entry(),
                 st.dictionaries(KEYS, st.one_of(near_valid_labels(), LABELS), max_size=4),
                 st.dictionaries(st.integers(0, 3), near_valid_labels(), min_size=1, max_size=4),
                 LABELS, st.lists(near_valid_labels(), max_size=3), st.frozensets(st.integers(), max_size=3))


def good_tags(style: str = "tensor") -> dict:
    tags = {}
    for i, (h, e) in enumerate(PAIRS):
        vec = label(h, e)
        tags[i] = {"tensor": lambda: torch.from_numpy(vec), "tuple": lambda: (torch.from_numpy(vec[:12]),
                   torch.from_numpy(vec[12:])), "numpy": lambda: (vec[:12], vec[12:]),
                   "list": lambda: vec.tolist()}[style]()
    return tags


@functools.lru_cache(maxsize=None)
def good_pickle(style: str, protocol: int) -> bytes:
    # made once: a tensor's pickle differs from one dumps to the next, and hypothesis needs the
    # same bytes to replay (and shrink) a case
    return pickle.dumps(good_tags(style), protocol=protocol)


@st.composite
def mutated_pickles(pick):
    """A real {i: label} pickle with bytes flipped, inserted, deleted, or the tail cut off."""
    data = bytearray(good_pickle(pick(st.sampled_from(["tensor", "tuple", "numpy", "list"])),
                                 pick(st.integers(0, 5))))
    for _ in range(pick(st.integers(1, 4))):
        op = pick(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        pos = pick(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= pick(st.integers(1, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = pick(st.binary(min_size=1, max_size=8))
        else:
            del data[pos:pos + pick(st.integers(1, 8))]
    return bytes(data)


def pickled(value, protocol: int) -> bytes:
    return pickle.dumps(value, protocol=protocol)


PICKLE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from([b"\x80\x02", b"\x80\x04\x95", b"\x80\x05\x95", b"(", b"}q\x00("]),
              st.binary(max_size=120)).map(b"".join),
    mutated_pickles(),
    st.builds(pickled, TAGS, st.integers(0, 5)))

JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=10)
OBJECT_NAMES = st.one_of(st.sampled_from(CLEVR_OBJECTS[:4]), st.text(max_size=6))
SCENES = ["scene_0.png", "scene_1.png", "scene_2.png"]
IMAGE_NAMES = st.one_of(st.sampled_from(SCENES + ["missing.png", "../scene_0.png", "images/scene_0.png", "",
                                                  "x" * 300 + ".png", "a\x00.png", "/"]),
                        st.text(max_size=8))
OBJECTS_DOCS = st.one_of(
    JSON,
    st.dictionaries(OBJECT_NAMES, st.one_of(st.integers(), st.floats(), st.sampled_from([math.inf, math.nan, True]),
                                            st.text(max_size=3), st.none(), JSON), max_size=5),
    st.just({n: i for i, n in enumerate(CLEVR_OBJECTS[:4])}),
    st.lists(st.sampled_from(CLEVR_OBJECTS[:4]), max_size=4, unique=True).map(
        lambda names: {n: i for i, n in enumerate(names)}))
TRAIN_DOCS = st.one_of(
    JSON,
    st.dictionaries(IMAGE_NAMES, st.one_of(st.lists(OBJECT_NAMES, max_size=3), JSON), max_size=4),
    st.dictionaries(st.sampled_from(SCENES), st.lists(st.sampled_from(CLEVR_OBJECTS[:4]), max_size=2),
                    min_size=1, max_size=3))


def json_text(docs):
    """The document as JSON, some other text (invalid JSON), raw bytes, or None (no such file)."""
    return st.one_of(docs.map(json.dumps), st.text(max_size=40), st.binary(max_size=40),
                     st.sampled_from(['{"gray cube": 1e400}', '{"gray cube": -Infinity}', '{"a": NaN}',
                                      '{"gray cube": "1" ', "\ufeff{}", '{"a": 9' + "9" * 5000 + "}"]),
                     st.none())


def write_text(path: Path, text) -> None:
    if text is None:
        return
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")


def tag_source(pickle_bytes: bytes, n: int = 3):
    def write(root: Path):
        draw_images(root / "images", [f"{i}.png" for i in range(n)])
        (root / "tags.pickle").write_bytes(pickle_bytes)
    return write


def json_source(objects_name: str, objects, train):
    def write(root: Path):
        draw_images(root / "images", SCENES)
        write_text(root / objects_name, objects)
        write_text(root / "train.json", train)
    return write


def csv_source(content):
    def write(root: Path):
        draw_images(root / "images", [f"{i}.png" for i in range(3)])
        write_text(root / "tags.csv", content)
    return write


# ---- 1. tags.pickle -------------------------------------------------------------------------------

@fuzz(60)
@given(head=st.sampled_from([b"", b"\x80\x02", b"\x80\x04\x95", b"\x80\x05", b"c", b"(dp0\n"]),
       body=st.binary(max_size=200), strict=st.booleans())
@example(head=b"", body=b"", strict=False)
@example(head=b"", body=b"\x80\x04N.", strict=False)                          # None
@example(head=b"", body=b"cos\nsystem\n(S'true'\ntR.", strict=False)         # a hostile global
@example(head=b"(dp0\n", body=b"\x96\x0c\xa8\xbbJ~n\x8aT2u\x8eat\x05\xea\xe0x", strict=True)  # huge bytearray
@example(head=b"", body=b"cnumpy\ndtype\n(Vf4\nI10\nI01\ntR.", strict=False)  # numpy warns: align=10
def test_tags_pickle_of_arbitrary_bytes(cli, tmp_path, head, body, strict):
    """Random bytes, some behind a pickle protocol header; `scan` and `prepare` both stay clean."""
    prepare_is_clean(cli, tmp_path, tag_source(head + body), *(["--strict"] if strict else []))


def inner_protocol_3() -> bytes:
    """A tensor's nested torch.save blob claiming pickle protocol 3 (torch.load warns about it)."""
    data = good_pickle("tensor", 4)
    i = data.index(b"\x80\x02\x8a\n")
    return data[:i] + b"\x80\x03" + data[i + 2:]


@fuzz(60)
@given(data=mutated_pickles(), strict=st.booleans())
@example(data=inner_protocol_3(), strict=False)
def test_tags_pickle_with_mutated_bytes(cli, tmp_path, data, strict):
    """A real tags.pickle with a few bytes flipped, inserted or deleted, or cut short."""
    prepare_is_clean(cli, tmp_path, tag_source(data), *(["--strict"] if strict else []))


@fuzz(60)
@given(tags=TAGS, protocol=st.integers(0, 5), strict=st.booleans())
@example(tags={0: label(0, 1), 1: {"hair": 1}}, protocol=4, strict=False)    # a dict as a label
@example(tags={0: [10 ** 400] * 22}, protocol=4, strict=False)               # too big for a float
@example(tags={0: [1j] * 22}, protocol=4, strict=False)                      # complex
@example(tags={0: [1e300] * 22}, protocol=4, strict=False)                   # overflows float32
@example(tags={"x" * 300: label(0, 0)}, protocol=4, strict=False)            # file name too long
@example(tags={0: label(0, 1), "a\nb": label(1, 1)}, protocol=4, strict=True)  # newline in a name
@example(tags={i: torch.from_numpy(label(h, e)) for i, (h, e) in enumerate(PAIRS)}, protocol=4, strict=True)
def test_tags_pickle_with_wrong_values(cli, tmp_path, tags, protocol, strict):
    """Real pickles of wrong things: keys of any type, labels of any shape, dtype and value."""
    prepare_is_clean(cli, tmp_path, tag_source(pickle.dumps(tags, protocol=protocol)),
                     *(["--strict"] if strict else []))


GROUP_NAMES = st.one_of(st.sampled_from(["hair", "eye", "objects", "", ".", "..", "a/b", "../../x", "x" * 300,
                                         "a\x00b", "a\nb", "hair "]), st.text(max_size=6))
SCHEMA_DOCS = st.one_of(
    st.fixed_dictionaries({"groups": st.lists(st.fixed_dictionaries(
        {"name": GROUP_NAMES, "classes": st.lists(st.text(max_size=5), max_size=3)},
        optional={"multi": st.booleans(), "suffixes": st.one_of(st.lists(st.text(max_size=4), max_size=2), JSON)}),
        max_size=3)}),
    JSON)


@fuzz(30)
@given(schema=SCHEMA_DOCS, picks=st.lists(st.integers(0, 5), min_size=3, max_size=3))
@example(schema={"groups": [{"name": "a/b", "classes": ["x", "y"]}]}, picks=[0, 1, 0])
@example(schema={"groups": [{"name": "../../escaped", "classes": ["x"]}]}, picks=[0, 0, 0])
@example(schema={"groups": [{"name": "x" * 300, "classes": ["x"]}]}, picks=[0, 0, 0])
@example(schema={"groups": [{"name": "g", "classes": ["x"]}, {"name": "g", "classes": ["y", "z"]}]}, picks=[0, 1, 2])
def test_schema_json_beside_tags_pickle(cli, tmp_path, schema, picks):
    """A schema.json with any group names and classes, and tags.pickle labels that fit it."""
    groups = schema.get("groups") if isinstance(schema, dict) else None
    sizes = [len(g["classes"]) for g in groups] if isinstance(groups, list) and all(
        isinstance(g, dict) and isinstance(g.get("classes"), list) for g in groups) else [1]
    tags = {}
    for i, p in enumerate(picks):
        vec = np.zeros(sum(sizes), np.float32)
        for gi, size in enumerate(sizes):
            if size:
                vec[sum(sizes[:gi]) + (p + gi) % size] = 1.0
        tags[i] = torch.from_numpy(vec)

    def write(root):
        tag_source(pickle.dumps(tags, protocol=4))(root)
        (root / "schema.json").write_text(json.dumps(schema))
    prepare_is_clean(cli, tmp_path, write)


# ---- 2. JSON layout -------------------------------------------------------------------------------

@fuzz(60)
@given(objects_name=st.sampled_from(["objects.json", "object.json"]), objects=json_text(OBJECTS_DOCS),
       train=json_text(TRAIN_DOCS), strict=st.booleans())
@example(objects_name="objects.json", objects='{"gray cube": Infinity}', train="{}", strict=False)
@example(objects_name="objects.json", objects='{"gray cube": 1e400}', train="{}", strict=False)
@example(objects_name="objects.json", objects="{}", train='{"scene_0.png": []}', strict=False)
@example(objects_name="objects.json", objects='{"gray cube": 0}', train=json.dumps({"x" * 300: []}), strict=False)
@example(objects_name="objects.json", objects='{"gray cube": 0}', train='{"scene_0.png": ["gray cube"]}',
         strict=True)
def test_json_layout(cli, tmp_path, objects_name, objects, train, strict):
    """objects.json / train.json holding any JSON value, invalid JSON, raw bytes, or missing."""
    prepare_is_clean(cli, tmp_path, json_source(objects_name, objects, train), *(["--strict"] if strict else []))


# ---- 3. tags.csv ----------------------------------------------------------------------------------

COLOUR_WORDS = st.sampled_from(sorted(set(HAIR_COLORS + EYE_COLORS)) + ["hair", "eyes", "eye", "teal"])
CSV_FIELDS = st.one_of(st.integers(-1, 3).map(str), COLOUR_WORDS, st.sampled_from(['"', '""', ",", " ", "", "\x00",
                                                                                   "x" * 300, "\t", "_"]),
                       st.text(max_size=6))
CSV_LINES = st.one_of(st.text(max_size=30),
                      st.lists(CSV_FIELDS, max_size=6).map(" ".join),
                      st.lists(CSV_FIELDS, max_size=6).map(",".join),
                      st.builds(lambda i, h, e: f"{i},{h} hair {e} eyes", st.integers(0, 3),
                                st.sampled_from(HAIR_COLORS), st.sampled_from(EYE_COLORS)))
CSV_TEXT = st.one_of(
    st.tuples(st.lists(CSV_LINES, max_size=6), st.sampled_from(["\n", "\r\n", "\r"])).map(lambda t: t[1].join(t[0])),
    st.binary(max_size=80),
    st.sampled_from(['"' + "x" * 200_000, "0,\"blue hair\nred eyes", "\x00,\x00", "x" * 300 + ",blue hair red eyes"]))


@fuzz(50)
@given(content=CSV_TEXT, strict=st.booleans())
@example(content="x" * 300 + ",blue hair red eyes\n0,blue hair red eyes", strict=False)   # file name too long
@example(content='"' + "x" * 200_000, strict=False)                                      # field over csv's limit
def test_tags_csv(cli, tmp_path, content, strict):
    """tags.csv of any lines: stray quotes and commas, NULs, unicode, \\r line ends, bytes."""
    prepare_is_clean(cli, tmp_path, csv_source(content), *(["--strict"] if strict else []))


def any_case(pick, word: str) -> str:
    flips = pick(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c for c, f in zip(word, flips))


@st.composite
def valid_csv(pick):
    """Rows naming a real hair and eye colour with any case, spacing, order and quoting, among blank lines."""
    space = st.sampled_from([" ", "  ", "\t", "_", " _ ", ", ", " ,"])
    lines, expected = [], []
    for i in range(pick(st.integers(1, 3))):
        h, e = pick(st.integers(0, 11)), pick(st.integers(0, 9))
        hair = any_case(pick, HAIR_COLORS[h]) + pick(space) + any_case(pick, "hair")
        eye = any_case(pick, EYE_COLORS[e]) + pick(space) + any_case(pick, pick(st.sampled_from(["eyes", "eye"])))
        tags = pick(space).join([hair, eye] if pick(st.booleans()) else [eye, hair])
        pad = st.sampled_from(["", " ", "\t"])
        ident, tags = pick(pad) + str(i) + pick(pad), pick(pad) + tags + pick(pad)
        if pick(st.booleans()):   # csv quoting: the whole field, padding included
            ident, tags = f'"{ident}"', f'"{tags}"'
        lines += [""] * pick(st.integers(0, 1)) + [f"{ident},{tags}"]
        expected.append(label(h, e))
    return "\n".join(lines), np.stack(expected)


@fuzz(25)
@given(case=valid_csv())
def test_tags_csv_with_valid_colours_parses_to_the_right_labels(cli, tmp_path, case):
    """Every row naming a real hair and eye colour is read, and as exactly those colours."""
    text, expected = case
    root = fresh(tmp_path)
    csv_source(text)(root / "src")
    for i in range(len(expected), 3):   # an image no row labels is skipped ("missing label")
        (root / "src" / "images" / f"{i}.png").unlink()
    src = scan(root / "src")
    assert src.skipped == [], src.skipped
    np.testing.assert_array_equal(src.labels, expected)
    rc, _, _ = clean_exit(cli, "prepare", root / "src", "-o", root / "out", *PREPARE, "--strict")
    assert rc == 0
    check_prepared(root / "out")
    tags = safe_pickle.load(root / "out" / "tags.pickle")
    np.testing.assert_array_equal(np.stack([tags[i].numpy() for i in range(len(tags))]), expected)
    np.testing.assert_array_equal(np.load(root / "out" / "cache" / "labels_32.npy"), expected)


# ---- 4. CLI arguments -----------------------------------------------------------------------------

def _subcommand(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _vocabulary(command: str):
    """Every flag of COMMAND (but --dry-run and --help) and every value its choices name."""
    actions = _subcommand(command)._actions
    flags = sorted(s for a in actions for s in a.option_strings if s not in ("-h", "--help", "--dry-run"))
    choices = sorted({str(c) for a in actions if a.choices for c in a.choices})
    return flags, choices


WORDS = st.text(st.characters(exclude_characters="\x00"), max_size=12)
NUMBERS = st.one_of(st.integers(-5, 300), st.integers(), st.floats()).map(str)
ODD_VALUES = st.sampled_from(["0", "-1", "-0", "1e9", "1e400", str(10 ** 30), "nan", "inf", "-inf", "1e-9", "0x10",
                              "", " ", "-", "cuda", "cuda:0", "cpu", "auto", "latest", "blue", "a\nb", "x" * 300,
                              "../..", "--", "-h", "--version"])


@pytest.mark.parametrize("command", ["prepare", "train", "test", "eval", "train-judge"])
def test_dry_run_with_random_arguments(cli, tmp_path, monkeypatch, command):
    """Any mix of the command's flags, odd values and unknown flags with --dry-run: exit 0 with
    the config as JSON, or an argparse / UserError line with exit 2; and no file in the cwd."""
    flags, choices = _vocabulary(command)
    values = st.one_of(NUMBERS, ODD_VALUES, WORDS, st.sampled_from(choices))
    token_groups = st.one_of(st.tuples(st.sampled_from(flags)), st.tuples(st.sampled_from(flags), values),
                             st.tuples(values), st.tuples(WORDS.map(lambda w: "--" + w)),
                             st.tuples(st.sampled_from(flags), values).map(lambda t: (f"{t[0]}={t[1]}",)))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    @fuzz(40)
    @given(groups=st.lists(token_groups, max_size=6), where=st.integers(0, 6))
    @example(groups=[("--nf", "a\nb")], where=0)
    @example(groups=[("a\nb",)], where=0)
    @example(groups=[("--device", "a\nb")], where=0)
    @example(groups=[("--seed", "-1"), ("--workers", "-1"), ("--synthetic", "-3")], where=0)
    def run(groups, where):
        args = [t for g in groups for t in g]
        # "--dry-run" anywhere, but not after a bare "--" (which would make it a positional value)
        end = args.index("--") if "--" in args else len(args)
        args.insert(min(where, end), "--dry-run")
        rc, out, err = clean_exit(cli, command, *args)
        if rc == 0:
            assert err == "", err
            if not out.startswith(("usage:", "anime-gan ")):     # not --help / --version
                json.loads(out)
        written = [p for p in cwd.rglob("*") if ".hypothesis" not in p.parts]   # hypothesis' own cache
        assert written == [], f"--dry-run wrote {written}"
    run()


@fuzz(20)
@given(synthetic=st.integers(-1, 3), seed=st.one_of(st.integers(-1, 3), st.integers()),
       workers=st.one_of(st.integers(-1, 2), st.integers(-10 ** 6, 10 ** 6)))
@example(synthetic=0, seed=0, workers=-1)
@example(synthetic=-3, seed=0, workers=0)
@example(synthetic=2, seed=-1, workers=0)
@example(synthetic=2, seed=10 ** 30, workers=10 ** 6)
def test_prepare_numeric_flags_for_real(cli, tmp_path, synthetic, seed, workers):
    """Not a dry run: --synthetic, --seed and --workers of any sign or size reach the code."""
    case = fresh(tmp_path)
    tag_source(good_pickle("tensor", 4))(case / "src")
    source = ["--synthetic", synthetic] if synthetic else [case / "src"]
    rc, _, _ = clean_exit(cli, "prepare", *source, "-o", case / "out", "--seed", seed, "--workers", workers,
                          *PREPARE)
    if rc == 0:
        check_prepared(case / "out")


# ---- 5. a failed prepare never damages a good data set --------------------------------------------

@pytest.fixture(scope="module")
def good_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    tag_source(pickle.dumps(good_tags(), protocol=4))(root / "src")
    assert main(["prepare", str(root / "src"), "-o", str(root / "out"), *PREPARE]) == 0
    return root / "out"


# per image: None (a good image, of another colour than the good set's) or bytes that do not decode
CORRUPT_IMAGES = st.lists(st.one_of(st.none(), st.binary(max_size=40),
                                    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"])),
                          min_size=3, max_size=3)
OTHER_PAIRS = [(7, 2), (8, 4), (9, 6)]
BAD_SOURCES = st.one_of(
    st.tuples(st.just("tags.pickle"), PICKLE_BYTES),
    st.tuples(st.just("json"), json_text(OBJECTS_DOCS), json_text(TRAIN_DOCS)),
    st.tuples(st.just("csv"), CSV_TEXT),
    st.tuples(st.just("corrupt images"), CORRUPT_IMAGES),
    st.tuples(st.just("missing image"), st.integers(3, 10)))


def write_bad(root: Path, case) -> None:
    kind = case[0]
    if kind == "tags.pickle":
        tag_source(case[1])(root)
    elif kind == "json":
        json_source("objects.json", case[1], case[2])(root)
    elif kind == "csv":
        csv_source(case[1])(root)
    elif kind == "corrupt images":   # labels fine, some images do not decode: fatal with --strict
        tag_source(good_pickle("tensor", 4))(root)
        draw_images(root / "images", [f"{i}.png" for i in range(3)], OTHER_PAIRS)
        for i, data in enumerate(case[1]):
            if data is not None:
                (root / "images" / f"{i}.png").write_bytes(data)
    else:                            # one label without its image: fatal with --strict
        tags = good_tags()
        tags[case[1]] = tags[0]
        tag_source(pickle.dumps(tags, protocol=4))(root)
        draw_images(root / "images", [f"{i}.png" for i in range(3)], OTHER_PAIRS)


@fuzz(40)
@given(case=BAD_SOURCES, strict=st.booleans())
@example(case=("corrupt images", [b"", b"\x89PNG\r\n\x1a\n", b"junk"]), strict=False)
@example(case=("corrupt images", [None, b"junk", None]), strict=True)
@example(case=("missing image", 7), strict=True)
@example(case=("tags.pickle", b"\x80\x04N."), strict=False)
@example(case=("json", None, None), strict=False)     # unlabelled images into a labelled set
def test_failed_prepare_leaves_an_existing_data_set_byte_identical(cli, tmp_path, good_out, case, strict):
    """OUT holds a good data set; `prepare BAD -o OUT` exits 2 and leaves every byte of it as it was,
    no *.tmp* file included (or succeeds, and OUT is then a clean data set)."""
    case_dir = fresh(tmp_path)
    out = shutil.copytree(good_out, case_dir / "out")
    before = snapshot(out)
    (case_dir / "bad").mkdir()
    write_bad(case_dir / "bad", case)
    rc, _, _ = clean_exit(cli, "prepare", case_dir / "bad", "-o", out, *PREPARE, *(["--strict"] if strict else []))
    if rc == 2:
        assert snapshot(out) == before, "a failed prepare changed the existing data set"
    else:
        check_prepared(out, fresh_out=False)
