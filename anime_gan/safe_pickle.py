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
import pickle
import sys
import warnings

import numpy as np
import torch

from .errors import UserError


def _bytes_from_latin1(text, encoding="latin1"):
    # Protocol-2 pickles spell `bytes` as _codecs.encode(str, 'latin1'); allow nothing else.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode with an unexpected encoding")
    return codecs.encode(text, "latin1")


def _storage_from_bytes(data):
    # torch pickles a tensor's storage as a nested torch.save blob: load it the safe way too.
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 3": the error below says enough
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # torch's message is many lines long and suggests weights_only=False
        raise pickle.UnpicklingError("refused a tensor storage that is not plain data") from None


def _tensor_within_storage(*args):
    # A view with zero strides can claim 2**33 numbers over a storage of 22: a few hundred bytes of
    # file that would fill the memory of whatever reads it (the view itself costs nothing). A real
    # tensor never holds more numbers than its storage has bytes.
    t = torch._utils._rebuild_tensor_v2(*args)
    if t.numel() > t.untyped_storage().nbytes():
        raise pickle.UnpicklingError(f"a tensor of shape {tuple(t.shape)} over a storage of "
                                     f"{t.untyped_storage().nbytes()} bytes")
    return t


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _bytes_from_latin1,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor_within_storage,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
}
# Resolve numpy internals through the public module that exists in this numpy version.
_mm = getattr(np, "_core", None) or np.core
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(_prefix + ".multiarray", "_reconstruct")] = _mm.multiarray._reconstruct
    _ALLOWED[(_prefix + ".multiarray", "scalar")] = _mm.multiarray.scalar
    _ALLOWED[(_prefix + ".numeric", "_frombuffer")] = _mm.numeric._frombuffer
for _name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_"):
    _ALLOWED[("numpy", _name)] = getattr(np, _name)


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
            return _RestrictedUnpickler(f).load()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror}); check the file's permissions") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError,
            IndexError, KeyError, MemoryError, UnicodeDecodeError, OverflowError, Warning) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{path}: not a plain tags pickle ({reason}); it may be corrupt or unsafe; "
                        f"fix the file or replace it with a good copy") from None
    finally:
        sys.excepthook = hook
