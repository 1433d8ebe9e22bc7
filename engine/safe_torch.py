"""Reading PyTorch files that are untrusted input (checkpoints, embedded body models).

One place for ``torch.load(..., weights_only=True)``: tensors and plain containers only,
on the CPU, both the zip and the legacy format. Callers turn ``TorchFileError`` into
their own message.
"""
from __future__ import annotations

import io
import os
import pickletools
import zipfile
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
        found = pickle_objects(path)
        if found:
            raise TorchFileError(
                f"{path.name}: refused to load: it is a pickle that holds code or Python objects other than "
                f"tensors and plain containers ({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}), "
                f"which could run code from the file", unsafe=True) from None
        first = text.strip().splitlines()[0] if text.strip() else "the data ends early"
        if "WeightsUnpickler error" in text or "weights_only" in text:
            first = "unrecognised data"
        raise TorchFileError(f"{path.name}: not a readable PyTorch file, truncated or corrupt "
                             f"({type(exc).__name__}: {first})") from None


# what torch's own files reference (weights_only allows these); anything else is code or objects
_TORCH_GLOBALS = ("collections.OrderedDict", "torch._utils.", "torch.Size", "torch.device", "torch.serialization.",
                  "torch.nn.parameter.Parameter", "torch.float", "torch.bfloat16", "torch.half", "torch.double",
                  "torch.int", "torch.long", "torch.bool", "torch.uint8", "torch.complex", "torch._tensor.",
                  "_codecs.encode", "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.slice",
                  "builtins.complex", "builtins.bytes")
_TORCH_STORAGE_SUFFIX = "Storage"
_OBJECT_OPCODES = {"INST", "OBJ"}            # protocol 0/1 instance creation: a class is called
_MAX_SCAN = 64 << 20


def _allowed(name: str) -> bool:
    return name.startswith(_TORCH_GLOBALS) or (name.startswith("torch.") and name.endswith(_TORCH_STORAGE_SUFFIX))


def _pickle_globals(data: bytes, limit: int = 4) -> list:
    """The globals (``module.name``) the first ``limit`` pickles in ``data`` reference, read
    with ``pickletools.genops``: opcodes are parsed, nothing is executed or imported."""
    found, stream = [], io.BytesIO(data)
    for _ in range(limit):
        if stream.tell() >= len(data):
            break
        strings, memo = [], {}
        try:
            for op, arg, _pos in pickletools.genops(stream):
                name = op.name
                if isinstance(arg, str) and name.endswith(("UNICODE", "UNICODE8", "STRING", "BINSTRING")):
                    strings.append(arg)
                elif name == "MEMOIZE":
                    memo[len(memo)] = strings[-1] if strings else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = strings[-1] if strings else None
                elif name in ("GET", "BINGET", "LONG_BINGET") and isinstance(memo.get(arg), str):
                    strings.append(memo[arg])
                elif name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]) if len(strings) >= 2 else "an unnamed global")
                if name in _OBJECT_OPCODES and not found:
                    found.append("an object instance")
        except Exception:  # noqa: BLE001 - not (or no more) pickle data: what was read is the answer
            break
    return found


def pickle_objects(path) -> list:
    """Globals outside torch's tensor machinery that a file's pickle(s) reference: the code a
    plain ``pickle.load`` would run or the classes it would build (``[]``: none found, or not
    a pickle). Looks at a plain pickle file, torch's legacy format and the zip format's
    ``data.pkl``. Nothing is executed."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                data = z.read(names[0])[:_MAX_SCAN] if names else b""
        else:
            with open(path, "rb") as f:
                data = f.read(_MAX_SCAN)
    except (OSError, zipfile.BadZipFile, KeyError):
        return []
    out = []
    for name in _pickle_globals(data):
        if not _allowed(name) and name not in out:
            out.append(name)
    return out
