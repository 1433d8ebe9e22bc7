"""Measured sections of the docs: a command rewrites its own part of a page, the rest is kept.

The part sits between ``<!-- measured: python -m MODULE writes from here -->`` and
``<!-- measured: end -->``; a page without them gets the section appended.
"""
from __future__ import annotations

import sys
from pathlib import Path

END = "<!-- measured: end -->"


def begin_marker(module: str) -> str:
    return f"<!-- measured: python -m {module} writes from here -->"


def write_section(path: Path, text: str, module: str) -> None:
    """Put ``text`` between the module's markers in ``path``."""
    begin = begin_marker(module)
    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    if begin in old and END in old.split(begin, 1)[1]:
        head, rest = old.split(begin, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(f"{head}{begin}\n{text}\n{END}{tail}")
    else:
        path.write_text(f"{old}{begin}\n{text}\n{END}\n")


def command_line(module: str, argv=None) -> str:
    """The command that made a table, as the docs show it: ``python -m MODULE ARGS``."""
    return " ".join(["python -m", module, *(argv if argv is not None else sys.argv[1:])])


def publish(text: str, out, module: str) -> None:
    """Print a measured section and, with ``out``, write it into that page (``write_section``)."""
    if out:
        write_section(Path(out), text, module)
    print(text)
