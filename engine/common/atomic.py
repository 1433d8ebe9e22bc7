"""Atomic file writes (numpy-free, torch-free): readers see the old file or the new one.

    with atomic_file(path) as f:      # an open binary file in path's folder
        np.savez(f, **arrays)         # a file object, so numpy does not append ".npz"

On success the temporary file is fsynced and renamed over ``path`` (and the folder is
fsynced so the rename survives a crash); on any error it is removed and ``path`` is left
exactly as it was. Errors propagate unchanged (callers word them, e.g. disk full).

The file gets the permissions a plain ``open(path, "wb")`` of a new file would give it,
``0o666 & ~umask`` (e.g. 0644 under umask 022): the temporary file is created with
``os.open(..., O_CREAT | O_EXCL, 0o666)`` so the kernel applies the umask, not with
``tempfile.mkstemp``, whose files are always 0600.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager


@contextmanager
def atomic_file(path):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = create_temp(folder, "." + os.path.basename(path) + ".", ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(folder)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def check_writable(path) -> None:
    """Raise the OSError that ``atomic_file(path)`` would meet creating its temporary file
    (folder missing or not writable, read-only file system, name too long, no inodes...), by
    creating and removing one now: a cheap check before hours of work."""
    path = os.fspath(path)
    fd, tmp = create_temp(os.path.dirname(os.path.abspath(path)), "." + os.path.basename(path) + ".", ".tmp")
    os.close(fd)
    os.unlink(tmp)


def create_temp(folder: str, prefix: str, suffix: str, attempts: int = 100):
    """A new file in ``folder``, opened for writing: -> (fd, path). Mode 0o666 & ~umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(attempts):
        tmp = os.path.join(folder, prefix + secrets.token_hex(4) + suffix)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name in {folder}")


def fsync_dir(folder: str) -> None:
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
