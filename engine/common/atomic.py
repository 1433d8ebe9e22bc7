"""Atomic file writes (numpy-free, torch-free): readers see the old file or the new one.

    with atomic_file(path) as f:      # an open binary file in path's folder
        np.savez(f, **arrays)         # a file object, so numpy does not append ".npz"

On success the temporary file is fsynced and renamed over ``path`` (and the folder is
fsynced so the rename survives a crash); on any error it is removed and ``path`` is left
exactly as it was. Errors propagate unchanged (callers word them, e.g. disk full).
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_file(path):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _fsync_dir(folder: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
