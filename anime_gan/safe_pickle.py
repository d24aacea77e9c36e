"""Reading `tags.pickle` without trusting it.

A pickle can name any importable callable and have it run while loading (`os.system`, ...).  The
tag files we read only ever hold dicts/tuples/lists of numbers, numpy arrays and torch tensors, so
the unpickler below resolves exactly the globals those need and refuses every other one before it
is imported or called.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import os
import pickle
import pickletools
import sys
import warnings

import numpy as np
import torch

from .errors import UserError


class _Budget:
    """What one load may build, in items and bytes, beyond what it reads: the file's own size. The
    memo lets a file hand one big object to a callable again and again (set(L) a thousand times,
    one compressed storage blob unpacked ten times) at a few bytes per call."""
    left = 0
    tensors: list = []

    @classmethod
    def charge(cls, n: int, what: str) -> None:
        cls.left -= n
        if cls.left < 0:
            raise pickle.UnpicklingError(f"builds more {what} than a file of its size can hold")


def _counted(build):
    def counted(*args):
        _Budget.charge(sum(len(a) for a in args if isinstance(a, (list, tuple, dict, set, frozenset, str, bytes))),
                       "items")
        return build(*args)
    return counted


def _bytes_from_latin1(text, encoding="latin1"):
    # Protocol-2 pickles spell `bytes` as _codecs.encode(str, 'latin1'); allow nothing else.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode with an unexpected encoding")
    return codecs.encode(text, "latin1")


def _storage_from_bytes(data):
    # torch pickles a tensor's storage as a nested torch.save blob: load it the safe way too.
    with warnings.catch_warnings():  # "Detected pickle protocol 3", "TypedStorage is deprecated"
        warnings.simplefilter("ignore")
        try:
            storage = torch.load(io.BytesIO(data), weights_only=True)
        except Exception:  # torch's message is many lines long and suggests weights_only=False
            raise pickle.UnpicklingError("refused a tensor storage that is not plain data") from None
        # Only a storage in host memory: a ready-made tensor here would skip the size check below.
        plain = isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)) and storage.device.type == "cpu"
        if plain:
            _Budget.charge(storage.nbytes(), "tensor bytes")
    if not plain:
        raise pickle.UnpicklingError(f"refused a {type(storage).__name__} where a tensor storage belongs")
    return storage


def _refuse_state(*args):
    raise pickle.UnpicklingError("refused to reset a tensor from the file's state")


def _tensor_within_storage(*args):
    # A view with zero strides can claim 2**33 numbers over a storage of 22: a few hundred bytes of
    # file that would fill the memory of whatever reads it (the view itself costs nothing). A real
    # tensor never holds more numbers than its storage has bytes.
    t = torch._utils._rebuild_tensor_v2(*args)
    if t.numel() > t.untyped_storage().nbytes():
        raise pickle.UnpicklingError(f"a tensor of shape {tuple(t.shape)} over a storage of "
                                     f"{t.untyped_storage().nbytes()} bytes")
    t.__setstate__ = _refuse_state  # a BUILD after this would set_() any shape over the storage
    _Budget.tensors.append(t)  # (removed once loaded: a tensor with attributes pickles another way)
    return t


def plain_dtype(dtype):
    """Numbers only: an object dtype would read pointers out of the file's bytes."""
    if (not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or dtype.hasobject or dtype.fields is not None
            or dtype.subdtype is not None):
        raise pickle.UnpicklingError(f"refused numpy dtype {dtype!r}")
    return dtype


# numpy.ndarray itself is never called: ndarray(shape, dtype, buffer, offset, strides) builds a view
# of any shape over a few bytes. numpy's own pickles only pass the class to _reconstruct.
class _Ndarray:
    def __call__(self, *args):
        raise pickle.UnpicklingError("refused to call numpy.ndarray")


_NDARRAY = _Ndarray()
_mm = getattr(np, "_core", None) or np.core  # the numpy internals' module in this numpy version


def _reconstruct(cls, shape, typecode):
    # numpy pickles an array as an empty placeholder (ndarray, (0,), b'b') whose state then follows
    if cls is not _NDARRAY or tuple(shape) != (0,) or typecode not in (b"b", "b"):
        raise pickle.UnpicklingError("refused to reconstruct anything but an empty numpy array")
    return _mm.multiarray._reconstruct(np.ndarray, (0,), typecode)


def _shared_dtype(*args):
    # numpy's own dtype object of that kind, which ignores a BUILD: a fresh copy would take new
    # flags or fields from the file after this check (and crash numpy, or read pointers)
    dtype = plain_dtype(np.dtype(*args))
    shared = np.dtype(dtype.char)
    if dtype != shared:
        raise pickle.UnpicklingError(f"refused numpy dtype {dtype!r} (only this machine's byte order)")
    return shared


_ALLOWED = {
    ("collections", "OrderedDict"): _counted(collections.OrderedDict),
    ("builtins", "set"): _counted(set),
    ("builtins", "frozenset"): _counted(frozenset),
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _bytes_from_latin1,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _shared_dtype,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor_within_storage,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(_prefix + ".multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(_prefix + ".multiarray", "scalar")] = lambda dtype, *a: _mm.multiarray.scalar(plain_dtype(dtype), *a)
    _ALLOWED[(_prefix + ".numeric", "_frombuffer")] = (
        lambda buf, dtype, *a: _mm.numeric._frombuffer(buf, plain_dtype(dtype), *a))
# (numpy's scalar types are not here: its pickles build scalars with multiarray.scalar, and
# numpy.float64(L) of a memo'd list would copy it as often as the file asks)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Protocols 0-2 spell some names the Python 2 way (__builtin__.set): map them, then check.
        module, name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load '{module}.{name}'") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


MAX_DEPTH = 32  # a tag file nests about 8 deep (dict, tensor, its arguments); the C code recurses on more
_PUT = ("PUT", "BINPUT", "LONG_BINPUT")
_GET = ("GET", "BINGET", "LONG_BINGET")
_FILLS = ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD")  # change the object below


def check_opcodes(f) -> None:
    """Walk the opcodes, building nothing, and refuse the two shapes that hurt before any check of
    ours could run: objects nested thousands deep (hashing or freeing them recurses in C until the
    stack overflows) and memo indices far past those used so far (the memo grows to fit them)."""
    depths, marks, memo = [], [], {}
    for op, arg, _ in pickletools.genops(f):
        if op.name in _PUT or op.name == "MEMOIZE":
            index = len(memo) if op.name == "MEMOIZE" else arg
            if index > len(memo):  # picklers number memo entries 0, 1, 2, ...
                raise pickle.UnpicklingError(f"memo index {index} out of order")
            memo[index] = depths[-1] if depths else 0
            continue
        if op.name in _GET:
            depths.append(memo.get(arg, 0))
            continue
        if op.name == "MARK":
            marks.append(len(depths))
            continue
        if op.name == "DUP":
            depths.append(depths[-1] if depths else 0)
            continue
        popped, below = [], len(op.stack_before)
        if pickletools.markobject in op.stack_before:  # what lies above the mark, then what lies below it
            start = marks.pop() if marks else 0
            popped, depths[start:] = depths[start:], []
            below = op.stack_before.index(pickletools.markobject)
        popped = depths[len(depths) - below:] + popped if below else popped
        del depths[len(depths) - below:]
        if op.name in _FILLS and popped:
            depth = max([popped[0]] + [d + 1 for d in popped[1:]])
        else:
            depth = max(popped, default=0) + 1
        if depth > MAX_DEPTH:
            raise pickle.UnpicklingError(f"objects nested more than {MAX_DEPTH} deep")
        depths += [depth] * len(op.stack_after)


def load(path) -> object:
    """Unpickle `path` admitting only containers, numbers, strings, numpy arrays and tensors."""
    hook = sys.excepthook
    # CPython 3.11's unpickler, asked for a bytearray too big to allocate, prints "SystemError:
    # deallocated bytearray object has exported buffers" through sys.excepthook before raising the
    # MemoryError handled below: keep that print off stderr.
    sys.excepthook = lambda kind, value, tb: None if kind is SystemError else hook(kind, value, tb)
    try:
        # A warning while building an object (numpy's dtype(align=10), ...) means the file holds
        # what no writer of ours produces: reject it like any other malformed pickle.
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("error")
            if f.read(4) == b"PK\x03\x04":
                raise UserError(f"{path}: written with torch.save (a zip archive), not a plain pickle; save the "
                                f"tags with pickle.dump(tags, f) instead")
            f.seek(0)
            check_opcodes(f)
            f.seek(0)
            _Budget.left, _Budget.tensors = os.fstat(f.fileno()).st_size, []
            loaded = _RestrictedUnpickler(f).load()
            for t in _Budget.tensors:
                del t.__setstate__
            return loaded
    except FileNotFoundError:
        broken = " (a link to a file that is not there)" if os.path.islink(path) else ""
        raise UserError(f"{path}: file not found{broken}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a tags file; remove it or put the tags file there") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror}); check the file's permissions") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError,
            IndexError, KeyError, MemoryError, UnicodeDecodeError, OverflowError, RecursionError, SystemError,
            Warning) as e:  # (SystemError: numpy's, on a dtype state no writer makes)
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{path}: not a plain tags pickle ({reason}); it may be corrupt or unsafe; "
                        f"fix the file or replace it with a good copy") from None
    finally:
        sys.excepthook = hook
        _Budget.tensors = []
