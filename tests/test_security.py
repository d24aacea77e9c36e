"""The restricted unpickler: tags.pickle payloads that would run code are refused before they run
(directly, through `prepare` and through `train`), while plain tag pickles of every protocol load."""
import builtins
import collections
import io
import os
import pathlib
import pickle
import subprocess
import warnings

import numpy as np
import pytest
import torch

from anime_gan import safe_pickle
from anime_gan.data.formats import scan
from anime_gan.errors import UserError

from conftest import draw, write_tag_pickle


class Payload:
    """Pickles as a call of `func(*args)`: what a hostile tags.pickle looks like."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def nested_in_tensor_storage(target):
    """A payload hidden inside the torch storage blob that `torch.storage._load_from_bytes` loads."""
    inner = pickle.dumps(Payload(os.system, f"touch {target}"), protocol=2)
    return Payload(torch.storage._load_from_bytes, inner)


PAYLOADS = {
    "os.system": lambda t: Payload(os.system, f"touch {t}"),
    "subprocess.call": lambda t: Payload(subprocess.call, ["touch", str(t)]),
    "builtins.open": lambda t: Payload(builtins.open, str(t), "w"),
    "pathlib.Path.touch": lambda t: Payload(pathlib.Path.touch, pathlib.Path(t)),
    "builtins.exec": lambda t: Payload(builtins.exec, f"open({str(t)!r}, 'w').close()"),
    "getattr(os, 'system')": lambda t: Payload(eval, f"__import__('os').system('touch {t}')"),
    "storage blob": nested_in_tensor_storage,
}


def hostile_tags(target, kind, protocol=4) -> bytes:
    """A tags dict whose second entry is the payload (after one legitimate label)."""
    return pickle.dumps({0: torch.zeros(22), 1: PAYLOADS[kind](target)}, protocol=protocol)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payload_is_real_when_unpickled_naively(tmp_path, kind):
    """Guards the tests below: each payload does create the file under plain pickle.loads."""
    target = tmp_path / "pwned"
    try:
        pickle.loads(hostile_tags(target, kind))
    except Exception:
        pass  # torch.load of the storage blob fails *after* running the payload
    assert target.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("kind", PAYLOADS)
def test_restricted_unpickler_refuses_payloads(tmp_path, kind, protocol):
    target = tmp_path / "pwned"
    path = tmp_path / "tags.pickle"
    path.write_bytes(hostile_tags(target, kind, protocol))
    with pytest.raises(UserError) as e:
        safe_pickle.load(path)
    assert not target.exists()
    msg = str(e.value)
    assert str(path) in msg and "replace it with a good copy" in msg and "\n" not in msg


def hostile_folder(root, target, kind="os.system"):
    write_tag_pickle(root, pairs=[(0, 0), (1, 1)])
    (root / "tags.pickle").write_bytes(hostile_tags(target, kind))
    return root


@pytest.mark.parametrize("kind", ["os.system", "builtins.open", "pathlib.Path.touch"])
def test_prepare_refuses_hostile_tags_pickle(cli, tmp_path, kind):
    target = tmp_path / "pwned"
    src = hostile_folder(tmp_path / "src", target, kind)
    rc, out, err = cli("prepare", src, "-o", tmp_path / "out", "-q")
    assert rc == 2 and not target.exists()
    assert "tags.pickle" in err and "refused" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "cache").exists()


def test_train_refuses_hostile_tags_pickle(cli, tmp_path):
    target = tmp_path / "pwned"
    src = hostile_folder(tmp_path / "data", target)
    rc, out, err = cli("train", "-t", src, "-d", "cpu", "-i", "1", "--nf", "8", "-b", "2",
                       "-s", tmp_path / "samples", "-c", tmp_path / "ckpt", "-q")
    assert rc == 2 and not target.exists()
    assert "tags.pickle" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ckpt").exists()


def test_codecs_encode_only_rebuilds_latin1_bytes(tmp_path):
    class Encode:
        def __reduce__(self):
            import _codecs
            return _codecs.encode, ("abc", "rot13")
    path = tmp_path / "tags.pickle"
    path.write_bytes(pickle.dumps({0: Encode()}, protocol=2))
    with pytest.raises(UserError, match="unexpected encoding"):
        safe_pickle.load(path)


def test_a_tensor_claiming_more_numbers_than_its_storage_holds_is_refused(tmp_path):
    """Zero strides: 2**33 numbers over a storage of 22, in a file of a few hundred bytes, would
    fill the memory of whatever converts it to an array."""
    class Broadcast:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (torch.zeros(22).storage(), 0, (2 ** 33,), (0,),
                                                     False, collections.OrderedDict())
    path = tmp_path / "tags.pickle"
    with warnings.catch_warnings():  # (TypedStorage is deprecated: how torch pickles a tensor's storage)
        warnings.simplefilter("ignore")
        path.write_bytes(pickle.dumps({0: Broadcast()}, protocol=4))
    assert path.stat().st_size < 1000
    with pytest.raises(UserError, match=r"a tensor of shape \(8589934592,\) over a storage of 88 bytes"):
        safe_pickle.load(path)


@pytest.mark.parametrize("content, why", [(b"", "empty"), (b"\x80\x04garbage", "truncated"),
                                          (b"not a pickle at all", "text")])
def test_corrupt_pickles_are_user_errors(tmp_path, content, why):
    path = tmp_path / "tags.pickle"
    path.write_bytes(content)
    with pytest.raises(UserError, match="tags.pickle"):
        safe_pickle.load(path)


def test_missing_and_unreadable_pickles_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        safe_pickle.load(tmp_path / "tags.pickle")
    (tmp_path / "tags.pickle").mkdir()
    with pytest.raises(UserError, match="tags.pickle: a folder, not a tags file"):
        safe_pickle.load(tmp_path / "tags.pickle")


def test_a_broken_link_to_the_tags_file_is_a_missing_file_not_an_unlabelled_folder(tmp_path):
    draw(tmp_path / "d" / "images" / "0.jpg", (0, 0, 0))
    (tmp_path / "d" / "tags.pickle").symlink_to(tmp_path / "elsewhere" / "tags.pickle")
    with pytest.raises(UserError, match=r"tags.pickle: file not found \(a link to a file that is not there\)"):
        scan(tmp_path / "d")


# ---- legitimate pickles load ---------------------------------------------------------------------

def legit_tags():
    return {
        0: torch.cat([torch.eye(12)[3], torch.eye(10)[7]]),               # seed 001 README: 22-dim tensor
        1: (torch.eye(12)[1], torch.eye(10)[2]),                           # seed 001 code: a tuple
        2: (np.eye(12, dtype=np.float32)[5], np.eye(10, dtype=np.float64)[0]),
        3: torch.arange(30, dtype=torch.float32)[4:26],                    # a view with an offset
        4: [np.float32(1), np.int64(2), 3.0, True],
        "meta": {"names": ("a", "b"), "bytes": b"\x00\xff", "set": {1, 2}},
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legit_pickles_of_every_protocol_load(tmp_path, protocol):
    path = tmp_path / "tags.pickle"
    path.write_bytes(pickle.dumps(legit_tags(), protocol=protocol))
    got, want = safe_pickle.load(path), legit_tags()
    assert got.keys() == want.keys()
    assert torch.equal(got[0], want[0]) and torch.equal(got[3], want[3])
    assert all(torch.equal(a, b) for a, b in zip(got[1], want[1]))
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got[2], want[2]))
    assert got[4] == want[4] and got["meta"] == want["meta"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("style", ["tensor", "tuple", "numpy"])
def test_tag_pickle_layout_of_every_protocol_scans(tmp_path, protocol, style):
    root = write_tag_pickle(tmp_path / "d", pairs=[(0, 9), (11, 0)], style=style, protocol=protocol)
    src = scan(root)
    assert src.kind == "tag-pickle" and len(src.files) == 2
    assert np.flatnonzero(src.labels[0]).tolist() == [0, 21]
    assert np.flatnonzero(src.labels[1]).tolist() == [11, 12]


def test_torch_save_of_tags_is_also_refused_as_a_plain_pickle(tmp_path):
    """torch.save writes a zip, not a pickle: it is refused with the same clear message."""
    buf = io.BytesIO()
    torch.save({0: torch.zeros(22)}, buf)
    path = draw(tmp_path / "x.png", (0, 0, 0)).with_name("tags.pickle")
    path.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match=r"tags.pickle: written with torch.save \(a zip archive\), not a plain "
                                        r"pickle; save the tags with pickle.dump\(tags, f\) instead"):
        safe_pickle.load(path)


def test_label_files_cannot_point_outside_the_data_folder(tmp_path, cli):
    """A train.json or tags.pickle key like '../../secret.png' is skipped, never read."""
    import json as _json
    import pickle as _pickle

    from PIL import Image as _Image
    (tmp_path / "secret.png").parent.mkdir(parents=True, exist_ok=True)
    _Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "secret.png")
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    _Image.new("RGB", (8, 8)).save(src / "images" / "ok.png")
    (src / "objects.json").write_text(_json.dumps({"red cube": 0}))
    (src / "train.json").write_text(_json.dumps({"../../secret.png": ["red cube"], "ok.png": ["red cube"]}))
    code, out, _ = cli("prepare", str(src), "-o", str(tmp_path / "out"), "--image-size", "32", "-q")
    assert code == 0 and "1 images" in out and "unsafe file name" in out
    tags = tmp_path / "tp"
    (tags / "images").mkdir(parents=True)
    with open(tags / "tags.pickle", "wb") as f:
        label = torch.zeros(22)
        label[0] = label[12] = 1
        _pickle.dump({"../../secret": label}, f)
    code, _, err = cli("prepare", str(tags), "-o", str(tmp_path / "out2"), "--image-size", "32", "-q")
    assert code == 2 and "no usable images" in err


# ---- small files that would crash the process or fill its memory -------------------------------

def _refused(tmp_path, content: bytes, why: str):
    path = tmp_path / "tags.pickle"
    path.write_bytes(content)
    with pytest.raises(UserError, match=why):
        safe_pickle.load(path)


def test_numpy_arrays_come_only_from_numpy_pickles_of_numbers(tmp_path):
    # ndarray(shape, dtype, buffer, offset, strides): 2**28 numbers over one byte of file
    view = Payload(np.ndarray, (2 ** 28,), np.dtype("u1"), b"\0", 0, (0,))
    _refused(tmp_path, pickle.dumps({0: view}, protocol=4), "refused to call numpy.ndarray")
    # an object dtype reads pointers out of the file's bytes (a segfault, or worse)
    pointers = Payload(np.ndarray, (22,), np.dtype("O"), b"A" * 176)
    _refused(tmp_path, pickle.dumps({0: pointers}, protocol=2), r"refused numpy dtype dtype\('O'\)")
    scalar = Payload(np.float32(0).__reduce__()[0], np.dtype("O"), b"A" * 8)
    _refused(tmp_path, pickle.dumps({0: scalar}, protocol=4), r"refused numpy dtype")


def test_objects_nested_thousands_deep_are_refused_before_they_are_built(tmp_path, cli):
    # a dict key () wrapped in 200,000 one-tuples: hashing it recursed in C until a segfault
    deep_key = b"\x80\x04}" + b")" + b"\x85" * 200_000 + b"K\x01s."
    _refused(tmp_path, deep_key, "nested more than 32 deep")
    # 20 deep, memoized, popped, fetched back and wrapped 20 more times
    deep_through_memo = b"\x80\x04}" + b")" + b"\x85" * 20 + b"\x940h\x00" + b"\x85" * 20 + b"K\x01s."
    _refused(tmp_path, deep_through_memo, "nested more than 32 deep")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tags.pickle").write_bytes(deep_key)
    rc, out, err = cli("prepare", tmp_path / "data", "-o", tmp_path / "out")
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "tags.pickle: not a plain tags pickle (objects nested more than 32 deep)" in err


def test_a_memo_index_far_past_those_used_is_refused(tmp_path):
    # nine bytes asking the unpickler to grow its memo to 2**26 entries (1.5 GB)
    import struct
    _refused(tmp_path, b"\x80\x04}r" + struct.pack("<I", 2 ** 26) + b".", "memo index 67108864 out of order")


def test_a_tensor_where_a_storage_belongs_is_refused(tmp_path):
    blob = io.BytesIO()
    torch.save(torch.zeros(1).expand(2 ** 28), blob)  # loads as a view of 2**28 numbers over 4 bytes
    _refused(tmp_path, pickle.dumps({0: Payload(torch.storage._load_from_bytes, blob.getvalue())}, protocol=4),
             "refused a Tensor where a tensor storage belongs")


def test_a_tensor_rebuilt_by_its_state_into_a_huge_view_is_refused_before_it_is_copied(tmp_path):
    import pickletools
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        content = pickle.dumps({0: torch.zeros(22)}, protocol=4)
    # the storage is the result of the first REDUCE; BUILD then calls Tensor.__setstate__((storage,
    # 0, size, stride)), which sets a zero-stride view of 2**40 numbers over it
    memo, storage = 0, None
    for op, _, _ in pickletools.genops(content):
        if op.name == "REDUCE" and storage is None:
            storage = memo
        memo += op.name == "MEMOIZE"
    # 2**40 numbers: copied, as before this check, that was a MemoryError traceback (or 4 TB of swap)
    build = (b"(h" + bytes([storage]) + b"K\x00\x8a\x06" + (2 ** 40).to_bytes(6, "little") + b"\x85K\x00\x85tb")
    assert content.endswith(b"s.")
    root = tmp_path / "d"
    draw(root / "images" / "0.jpg", (255, 0, 0))
    (root / "tags.pickle").write_bytes(content[:-2] + build + b"s.")
    with pytest.raises(UserError, match=r"not a plain tags pickle \(refused to reset a tensor from the file's state\)"):
        scan(root)


def test_label_tuples_must_follow_the_groups_and_huge_keys_are_not_indices(tmp_path):
    from anime_gan.data.formats import MAX_INDEX
    root = tmp_path / "d"
    draw(root / "images" / "0.jpg", (255, 0, 0))
    eye_then_hair = (torch.eye(10)[0], torch.eye(12)[0])  # would concatenate to a plausible but wrong 22
    (root / "tags.pickle").write_bytes(pickle.dumps({0: eye_then_hair}))
    with pytest.raises(UserError, match=r"entry 0: a tuple of parts with \[10, 12\] numbers; expected one per "
                                        r"group in order, hair 12, eye 10"):
        scan(root)
    label = torch.cat([torch.eye(12)[0], torch.eye(10)[0]])
    (root / "tags.pickle").write_bytes(pickle.dumps({0: label, 10 ** 5000: label, -MAX_INDEX: label}))
    src = scan(root)  # str() of a 5000-digit number raises ValueError
    assert len(src.files) == 1 and [why for _, why in src.skipped] == ["not an image index"] * 2


def test_a_file_cannot_build_far_more_than_its_own_size_through_repeated_references(tmp_path):
    items = list(range(100_000))  # written once; every set(...) below refers back to it
    _refused(tmp_path, pickle.dumps({0: [Payload(set, items) for _ in range(50)]}, protocol=2),
             "builds more items than a file of its size can hold")
    blob = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(torch.zeros(100_000).untyped_storage(), blob)  # one storage blob, unpacked ten times
    data = blob.getvalue()  # one bytes object: the pickle writes it once and refers back to it
    _refused(tmp_path, pickle.dumps({0: [Payload(torch.storage._load_from_bytes, data) for _ in range(10)]},
                                    protocol=4), "builds more tensor bytes than a file of its size can hold")


def test_a_numpy_dtype_cannot_be_changed_by_the_files_state(tmp_path):
    # numpy.dtype('f8') then BUILD with flags 127: numpy failed with SystemError, or read pointers
    dtype = b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x7ftb"
    path = tmp_path / "tags.pickle"
    path.write_bytes(b"\x80\x02}K\x00" + dtype + b"s.")
    loaded = safe_pickle.load(path)[0]
    assert loaded is np.dtype("f8") and loaded.flags == np.dtype("f8").flags


def test_labels_nested_in_lists_are_refused_before_they_are_copied(tmp_path):
    row = [np.zeros(22)] * 1000
    root = tmp_path / "d"
    draw(root / "images" / "0.jpg", (255, 0, 0))
    (root / "tags.pickle").write_bytes(pickle.dumps({0: [[row] * 1000]}))  # 22 million numbers from 4 KB
    assert (root / "tags.pickle").stat().st_size < 10_000
    with pytest.raises(UserError, match="entry 0: label is not a vector of numbers"):
        scan(root)


def test_keys_that_cannot_name_an_image_are_skipped(tmp_path):
    root = tmp_path / "d"
    draw(root / "images" / "0.jpg", (255, 0, 0))
    label = torch.cat([torch.eye(12)[0], torch.eye(10)[0]])
    (root / "tags.pickle").write_bytes(pickle.dumps({0: label, frozenset({1}): label, 2.5: label}))
    src = scan(root)
    assert len(src.files) == 1 and sorted(src.skipped) == [
        (f"{root / 'tags.pickle'} entry of type float", "not an image index"),
        (f"{root / 'tags.pickle'} entry of type frozenset", "not an image index")]
