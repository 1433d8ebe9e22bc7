"""Reading and writing PyMAF checkpoints (official release layout, and ours).

Checkpoints are untrusted input: ``torch.load(..., weights_only=True)`` only, on the
CPU, nothing downloaded. The official file is a dict whose ``'model'`` entry is the
state dict; ours add ``'config'`` (plain ints/bools) and ``'format'``. Both load with
``strict=True``. A mismatch is reported key by key, with a guess of what the file is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from engine.body.loading import body_model_from_state_dict
from engine.body.model_data import BodyModelData
from engine.common.atomic import atomic_file
from engine.model.pymaf import ModelConfig, PyMAF
from engine.safe_torch import TorchFileError, read_torch_file

OUR_FORMAT = "pymaf-blender-checkpoint/1"
BODY_PREFIX = "regressor.0.smpl."
# what a PyMAF checkpoint holds (the official release's state dict), for messages about files
# that are something else; tests check these against the network's own state_dict
OFFICIAL_KEY_COUNT = 441
EXPECTED_KEYS = ("feature_extractor.conv1.weight", "deconv_layers.0.weight", "maf_extractor.0.Dmap",
                 "regressor.0.fc1.weight", "regressor.0.decpose.weight", "regressor.0.smpl.v_template")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what the file looks like."""


# --- reading -------------------------------------------------------------------------
def read_checkpoint(path) -> dict:
    """The file's top-level dict, loaded safely. Both the zip and the legacy format."""
    try:
        obj = read_torch_file(path)
    except TorchFileError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{Path(path).name}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def state_dict_of(obj: dict) -> dict:
    """The model state dict inside a checkpoint dict (``'model'`` or top level).

    A ``module.`` prefix (saved from DataParallel) is removed.
    """
    sd = obj.get("model", obj) if isinstance(obj.get("model", None), dict) else obj
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("no tensors found: this file holds no model weights")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def infer_config(sd: dict, obj: Optional[dict] = None) -> ModelConfig:
    """Backbone depth and IUV head from the keys (or the file's own ``config``)."""
    saved = (obj or {}).get("config")
    if isinstance(saved, dict) and "backbone_depth" in saved:
        return ModelConfig.from_dict(saved)
    bottleneck = "feature_extractor.layer1.0.conv3.weight" in sd
    blocks3 = len({k.split(".")[2] for k in sd if k.startswith("feature_extractor.layer3.")})
    depth = 50 if bottleneck else (34 if blocks3 == 6 else 18)
    return ModelConfig(depth, any(k.startswith("dp_head.") for k in sd))


# --- diagnosis -----------------------------------------------------------------------
@dataclass
class LayoutReport:
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    wrong_shape: list = field(default_factory=list)  # (key, expected, found)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 12) -> str:
        lines = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                lines.append(f"{len(items)} {title} key(s): " + ", ".join(items[:limit])
                             + (" ..." if len(items) > limit else ""))
        if self.wrong_shape:
            shown = [f"{k} (expected {list(e)}, found {list(f)})" for k, e, f in self.wrong_shape[:limit]]
            lines.append(f"{len(self.wrong_shape)} key(s) with another shape: " + "; ".join(shown)
                         + (" ..." if len(self.wrong_shape) > limit else ""))
        return "\n".join(lines)


def compare_layout(sd: dict, expected: dict) -> LayoutReport:
    """Key-by-key comparison of a state dict with the expected {key: shape}."""
    report = LayoutReport()
    for key, shape in expected.items():
        if key not in sd:
            report.missing.append(key)
        elif tuple(sd[key].shape) != tuple(shape):
            report.wrong_shape.append((key, tuple(shape), tuple(sd[key].shape)))
    report.unexpected = [k for k in sd if k not in expected]
    return report


def guess_kind(sd: dict) -> str:
    """A short description of what a state dict looks like, for error messages."""
    keys = set(sd)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("feature_extractor.") and has("maf_extractor.") and has("regressor."):
        segments = {seg for k in keys for seg in k.split(".")}
        if any(seg.startswith(("hand", "face_")) or seg == "face" for seg in segments):
            return "a PyMAF-X (whole-body) checkpoint; this engine runs the body-only PyMAF"
        depth = infer_config(sd).backbone_depth
        return f"a PyMAF checkpoint (ResNet-{depth} trunk)"
    if "conv1.weight" in keys and "fc.weight" in keys:
        return "plain ResNet/ImageNet classification weights, not a PyMAF model"
    if has("encoder.gru") or has("regressor.") and has("encoder."):
        return "a VIBE/temporal model checkpoint, not PyMAF"
    if {"fc1.weight", "decpose.weight"} <= keys or has("regressor.fc1."):
        return "an HMR/SPIN regressor checkpoint (no mesh alignment feedback), not PyMAF"
    if "v_template" in keys or "shapedirs" in keys:
        return "a body model, not network weights"
    return "an unknown PyTorch model"


def describe_mismatch(sd: dict, shown: int = 5) -> str:
    """What a PyMAF checkpoint holds, and what ``sd`` holds instead (key count, first keys)."""
    def key(k):
        v = sd[k]
        return f"{k} {list(v.shape)}" if isinstance(v, torch.Tensor) else k

    keys = list(sd)
    first = ", ".join(key(k) for k in keys[:shown]) + (", ..." if len(keys) > shown else "")
    return (f"Expected a PyMAF checkpoint: a state dict ('model' entry) of {OFFICIAL_KEY_COUNT} tensors "
            f"(the official release) with keys such as {', '.join(EXPECTED_KEYS)}. "
            f"Found {len(keys)} tensor(s): {first or 'none'}.")


def expected_layout(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --- building ------------------------------------------------------------------------
def load_pymaf(path, *, body: Optional[BodyModelData] = None) -> tuple[PyMAF, dict]:
    """Build a PyMAF from a checkpoint file and load it strictly.

    The body model embedded in the checkpoint (``regressor.0.smpl.*``) is the one the
    network was trained with and is used as is; ``body`` only matters for checkpoints
    without it (then it must be given). Returns (model in eval mode, info dict).
    """
    obj = read_checkpoint(path)
    sd = state_dict_of(obj)
    kind = guess_kind(sd)
    ours = obj.get("format") == OUR_FORMAT  # carries its config (ablation layouts too)
    if not ours and not kind.startswith("a PyMAF checkpoint"):
        raise CheckpointError(f"{Path(path).name}: this looks like {kind}. {describe_mismatch(sd)}")
    config = infer_config(sd, obj)
    if body is None:
        if not any(k.startswith(BODY_PREFIX) for k in sd):
            raise CheckpointError(f"{Path(path).name}: it embeds no body model; choose an SMPL file.")
        body = body_model_from_state_dict(sd, prefix=BODY_PREFIX)
    model = PyMAF(body, config)
    report = compare_layout(sd, expected_layout(model))
    if not report.ok:
        raise CheckpointError(
            f"{Path(path).name} does not fit the PyMAF layout (it looks like {kind}):\n{report.describe()}")
    model.load_state_dict(sd, strict=True)
    model.eval()
    info = {"config": config.to_dict(), "kind": kind, "format": obj.get("format", "official"),
            "path": str(path)}
    return model, info


def save_pymaf(model: PyMAF, path, *, legacy_format: bool = False, extra: Optional[dict] = None) -> None:
    """Write ``{'model', 'config', 'format', ...}`` atomically (tmp file + rename).

    ``legacy_format`` writes torch's pre-1.6 serialization, like the 2021 release.
    ``extra`` must hold only plain values (numbers, strings, lists, dicts, tensors).
    """
    path = Path(path)
    payload = {"model": model.state_dict(), "config": model.config.to_dict(), "format": OUR_FORMAT}
    payload.update(extra or {})
    with atomic_file(path) as f:
        torch.save(payload, f, _use_new_zipfile_serialization=not legacy_format)


__all__ = ["CheckpointError", "read_checkpoint", "state_dict_of", "infer_config", "compare_layout",
           "guess_kind", "describe_mismatch", "expected_layout", "load_pymaf", "save_pymaf", "LayoutReport"]
