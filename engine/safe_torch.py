"""Reading PyTorch files that are untrusted input (checkpoints, embedded body models).

One place for ``torch.load(..., weights_only=True)``: tensors and plain containers only,
on the CPU, both the zip and the legacy format. Callers turn ``TorchFileError`` into
their own message.
"""
from __future__ import annotations

import os
from pathlib import Path

MAX_BYTES = 4 << 30  # far above any PyMAF checkpoint (~280 MB, ~640 MB with Adam state)


class TorchFileError(ValueError):
    """Unusable file. ``unsafe`` is True when it was refused for holding code or classes."""

    def __init__(self, message: str, unsafe: bool = False):
        super().__init__(message)
        self.unsafe = unsafe


def read_torch_file(path, max_bytes: int = MAX_BYTES):
    """The object in a torch file, loaded with ``weights_only=True`` on the CPU."""
    import torch  # callers on numpy-only routes never reach this

    path = Path(path)
    if not path.is_file():
        raise TorchFileError(f"{path.name}: file not found ({path})")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise TorchFileError(f"{path.name} is {size} bytes, over the {max_bytes}-byte limit")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an untrusted file can fail in many ways
        text = str(exc)
        lowered = text.lower()
        if any(w in lowered for w in ("unsupported global", "unsupported class", "is blocked")):
            detail = next((l.strip() for l in text.splitlines()
                           if "unsupported" in l.lower() or "blocked" in l.lower()), "")
            raise TorchFileError(
                f"{path.name}: refused to load: it contains Python objects other than tensors and plain "
                f"containers, which could run code from the file ({detail})", unsafe=True) from None
        first = text.strip().splitlines()[0] if text.strip() else "the data ends early"
        if "WeightsUnpickler error" in text or "weights_only" in text:
            first = "unrecognised data"
        raise TorchFileError(f"{path.name}: not a readable PyTorch file, truncated or corrupt "
                             f"({type(exc).__name__}: {first})") from None
