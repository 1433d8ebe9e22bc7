"""Command-line parsing shared by the engine's commands (``run``, ``analyze``, ``mattes``,
``batch``): a parser whose usage errors exit 2 and, for ``--progress jsonl``, also print the
JSON error line the extension reads; and the argument types more than one command uses."""
from __future__ import annotations

import argparse
import json
import math
import sys

EXIT_USAGE = 2


class UsageParser(argparse.ArgumentParser):
    """``jsonl_stdout``: where the ``{"event": "error", "code": "usage"}`` line goes (None: nowhere)."""
    jsonl_stdout = None

    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr, flush=True)
        if self.jsonl_stdout is not None:
            self.jsonl_stdout.write(json.dumps({"event": "error", "code": "usage", "message": message}) + "\n")
            self.jsonl_stdout.flush()
        raise SystemExit(EXIT_USAGE)


def nonneg_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def nonneg_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return v


def finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return v
