"""Restricted reading of official SMPL ``.pkl`` files (numpy only; no chumpy, no scipy).

The official SMPL files are Python-2 pickles (protocol 2) of a dict whose values are
numpy arrays, one or more ``chumpy.ch.Ch`` objects (``shapedirs``) and a
``scipy.sparse.csc_matrix`` (``J_regressor``). A normal ``pickle.load`` needs chumpy,
which no longer imports on current numpy/Python, and, worse, runs whatever callable a
file names: a model file downloaded from anywhere is untrusted input.

``SafeSmplUnpickler.find_class`` therefore resolves globals through a fixed table and
never imports anything the file asks for:

* numpy's array/dtype/scalar reconstruction functions (``numpy.core`` and
  ``numpy._core`` spellings map to the same objects, so no DeprecationWarning);
* ``set`` (chumpy's pickled state holds a set) and ``copy_reg._reconstructor`` with
  ``object`` (protocol 0/1 pickles of plain classes), the latter replaced by a version
  that only builds our stubs;
* every ``chumpy`` class and the ``scipy.sparse`` csc/csr classes, which become inert
  stubs that only record the state handed to ``__setstate__``.

Anything else raises ``UnsafePickleError`` naming the refused ``module.name``. After
loading, stubs are replaced by plain arrays (``Ch`` -> its ``x``; sparse -> dense).
"""
from __future__ import annotations

import math
import os
import pickle
from typing import Any, BinaryIO, Union

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

__all__ = ["UnsafePickleError", "load_smpl_pickle", "SafeSmplUnpickler", "MAX_PICKLE_BYTES"]

# The official SMPL files are 40-250 MB; anything above this is not a body model.
MAX_PICKLE_BYTES = 1 << 30
# A densified sparse matrix larger than this (elements) is not an SMPL regressor.
MAX_DENSE_ELEMENTS = 20_000_000
# SMPL values sit at depth 1-3 (dict -> Ch -> array); deeper nesting is not a model file.
MAX_NESTING = 8


class UnsafePickleError(ValueError):
    """The pickle is not a plain SMPL model: it names a refused global, is too big, ...

    Deliberately not a ``pickle.UnpicklingError``: the C unpickler turns those, when raised
    while it reads an opcode, into a bland ``EOFError('Ran out of input')``.
    """


# --- stubs -------------------------------------------------------------------------------
class _StateStub:
    """Inert stand-in for a pickled class: records the state and nothing else."""

    pickled_name = "?"

    def __new__(cls, *args, **kwargs):  # NEWOBJ / REDUCE may pass arguments: ignore them
        obj = object.__new__(cls)
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<stub of {self.pickled_name}>"


class _ChumpyStub(_StateStub):
    pass


class _SparseStub(_StateStub):
    sparse_format = "csc"


def _stub_class(cache: dict, base: type, module: str, name: str, **attrs) -> type:
    """One stub subclass per pickled (module, name), so messages can name the class."""
    key = (base, module, name)
    if key not in cache:
        cache[key] = type(f"Stub_{name}", (base,), {"pickled_name": f"{module}.{name}", **attrs})
    return cache[key]


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: usable only as ``_reconstruct``'s first argument.

    Handing out the real class would let a file call ``ndarray(huge_shape)`` directly.
    """

    def __repr__(self):
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()


def _safe_reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct`` as its own ``__reduce__`` uses it: an empty ndarray to fill."""
    if subtype is not _NDARRAY:
        raise UnsafePickleError(f"numpy _reconstruct of {subtype!r} refused (plain arrays only)")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape) \
            or math.prod(shape) > 1:
        raise UnsafePickleError(f"numpy _reconstruct with initial shape {shape!r} refused")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _safe_reconstructor(cls, base, state):
    """``copy_reg._reconstructor`` limited to ``object.__new__`` of our stubs."""
    if not (isinstance(cls, type) and issubclass(cls, _StateStub)) or base is not object:
        raise UnsafePickleError(
            f"copy_reg._reconstructor called with {cls!r}, {base!r}: not an SMPL model object"
        )
    if state is not None:
        raise UnsafePickleError("copy_reg._reconstructor with a base state is not supported")
    return cls.__new__(cls)


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python-3 protocol-2 pickles use it for bytes; latin-1 only."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in (
        "latin1", "iso88591"
    ):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} refused (latin-1 only)")
    return text.encode("latin1")


# (module, name) -> object. Looked up, never imported from the file's names.
_NUMPY_GLOBALS = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = _safe_reconstruct
    _NUMPY_GLOBALS[(_mod, "scalar")] = _multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _NUMPY_GLOBALS[(_mod, "_frombuffer")] = _numeric._frombuffer  # protocol-5 re-saves
_NUMPY_GLOBALS[("numpy", "ndarray")] = _NDARRAY
_NUMPY_GLOBALS[("numpy", "dtype")] = np.dtype

_OTHER_GLOBALS = {
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("copy_reg", "_reconstructor"): _safe_reconstructor,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
    ("_codecs", "encode"): _latin1_encode,
}

_SPARSE_MODULES = {
    "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
    "scipy.sparse.compressed", "scipy.sparse._compressed", "scipy.sparse", "scipy.sparse._arrays",
}
_SPARSE_CLASSES = {"csc_matrix": "csc", "csr_matrix": "csr", "csc_array": "csc", "csr_array": "csr"}


class SafeSmplUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only knows an SMPL file's globals."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stubs: dict = {}  # per load, so odd names in one file cannot pile up

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[key]
        if key in _OTHER_GLOBALS:
            return _OTHER_GLOBALS[key]
        if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
            return _stub_class(self._stubs, _ChumpyStub, module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            return _stub_class(self._stubs, _SparseStub, module, name,
                               sparse_format=_SPARSE_CLASSES[name])
        raise UnsafePickleError(
            f"refused global '{module}.{name}': an SMPL model file only contains numpy, "
            "chumpy and scipy.sparse objects (the file may be malicious)"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError("persistent ids are not used by SMPL model files")


class _LimitedReader:
    """File-like wrapper that refuses to deliver more than ``limit`` bytes in total."""

    def __init__(self, raw: BinaryIO, limit: int):
        self._raw, self._limit, self._count = raw, limit, 0

    def _account(self, data: bytes) -> bytes:
        self._count += len(data)
        if self._count > self._limit:
            raise UnsafePickleError(f"pickle larger than {self._limit} bytes: not an SMPL model")
        return data

    def read(self, n=-1):
        budget = self._limit - self._count + 1  # one byte more than allowed trips the check
        return self._account(self._raw.read(budget if n is None or n < 0 else min(n, budget)))

    def readline(self, size=-1):
        budget = self._limit - self._count + 1
        return self._account(self._raw.readline(budget if size is None or size < 0
                                                else min(size, budget)))


# --- stub -> array -----------------------------------------------------------------------
def _chumpy_to_array(stub: _ChumpyStub, where: str, memo: dict, depth: int) -> np.ndarray:
    state = stub.state
    if not isinstance(state, dict) or "x" not in state:
        raise UnsafePickleError(
            f"{where}: {stub.pickled_name} without 'x' is a derived chumpy expression, not supported"
        )
    x = state["x"]
    if isinstance(x, _StateStub):  # a Ch wrapping a Ch
        x = _convert(x, where, memo, depth + 1)
    return np.asarray(x)


def _sparse_to_dense(stub: _SparseStub, where: str) -> np.ndarray:
    """Dense (rows, cols) array from a csc/csr state; duplicates are summed like scipy.

    csc: ``indptr`` runs over columns and ``indices`` are row numbers; csr the reverse.
    """
    state = stub.state
    if not isinstance(state, dict):
        raise UnsafePickleError(f"{where}: {stub.pickled_name} has no readable state")
    fmt = stub.sparse_format
    declared = state.get("format")
    if isinstance(declared, str) and declared in ("csc", "csr") and declared != fmt:
        raise UnsafePickleError(f"{where}: {stub.pickled_name} claims format {declared!r}")
    try:
        shape = tuple(int(s) for s in state.get("_shape", state.get("shape")))
        data = np.asarray(state["data"])
        indices = np.asarray(state["indices"]).astype(np.int64)
        indptr = np.asarray(state["indptr"]).astype(np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnsafePickleError(f"{where}: incomplete sparse matrix state ({exc})") from None
    if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > MAX_DENSE_ELEMENTS:
        raise UnsafePickleError(f"{where}: sparse matrix shape {shape} not plausible")
    n_major, n_minor = (shape[1], shape[0]) if fmt == "csc" else shape
    nnz = int(indptr[-1]) if indptr.size else -1
    if (indptr.shape != (n_major + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0)
            or nnz > min(len(indices), len(data))
            or (nnz > 0 and (indices[:nnz].min() < 0 or indices[:nnz].max() >= n_minor))):
        raise UnsafePickleError(f"{where}: inconsistent sparse matrix (indptr/indices/data)")
    major = np.repeat(np.arange(n_major), np.diff(indptr))
    dense = np.zeros(shape, dtype=data.dtype)
    rows, cols = (indices[:nnz], major) if fmt == "csc" else (major, indices[:nnz])
    np.add.at(dense, (rows, cols), data[:nnz])
    return dense


def _convert(value: Any, where: str, memo: dict, depth: int = 0) -> Any:
    """Replace stubs inside ``value`` (dict/list/tuple containers walked recursively).

    ``memo`` (id -> result) makes shared sub-objects cost once, so a pickle that reuses
    references cannot make the walk exponential; ``MAX_NESTING`` stops cycles.
    """
    if depth > MAX_NESTING:
        raise UnsafePickleError(f"{where}: nested more than {MAX_NESTING} levels: not an SMPL model")
    if not isinstance(value, (_StateStub, dict, list, tuple)):
        return value
    key = id(value)
    if key in memo:
        return memo[key][1]
    if isinstance(value, _ChumpyStub):
        result = _chumpy_to_array(value, where, memo, depth)
    elif isinstance(value, _SparseStub):
        result = _sparse_to_dense(value, where)
    elif isinstance(value, dict):
        result = {k: _convert(v, f"{where}[{k!r}]", memo, depth + 1) for k, v in value.items()}
    else:
        result = type(value)(_convert(v, where, memo, depth + 1) for v in value)
    memo[key] = (value, result)  # keep value alive so its id cannot be reused
    return result


# --- public --------------------------------------------------------------------------------
def load_smpl_pickle(path_or_file: Union[str, os.PathLike, BinaryIO],
                     max_bytes: int = MAX_PICKLE_BYTES) -> dict:
    """Read an SMPL-format ``.pkl`` without chumpy/scipy and without running its code.

    Returns the top-level dict (str keys in SMPL files); chumpy objects become their value array
    and sparse matrices become dense arrays (e.g. ``J_regressor`` (24, 6890)).
    Raises ``UnsafePickleError`` for refused globals, oversized files, non-dict content
    and derived chumpy expressions; ``pickle.UnpicklingError``/``EOFError`` and the like
    propagate for corrupt or truncated files.
    """
    if isinstance(path_or_file, (str, os.PathLike)):
        size = os.path.getsize(path_or_file)
        if size > max_bytes:
            raise UnsafePickleError(
                f"{os.fspath(path_or_file)} is {size} bytes, over the {max_bytes}-byte limit "
                "for an SMPL model pickle"
            )
        with open(path_or_file, "rb") as fh:
            return load_smpl_pickle(fh, max_bytes)

    reader = _LimitedReader(path_or_file, max_bytes)
    # latin1: Python-2 str objects (array bytes, dict keys) decode 1:1. fix_imports off:
    # find_class sees (and refusals name) the globals exactly as written in the file.
    result = SafeSmplUnpickler(reader, encoding="latin1", fix_imports=False).load()
    if not isinstance(result, dict):
        raise UnsafePickleError(
            f"pickle holds a {type(result).__name__}, not a dict: not an SMPL model file"
        )
    memo: dict = {}
    return {k: _convert(v, f"[{k!r}]", memo, 1) for k, v in result.items()}
