"""Reading and writing PyMAF checkpoints (official release layout, ours, and weights only).

Checkpoints are untrusted input: ``torch.load(..., weights_only=True)`` only, on the
CPU, nothing downloaded. The official file is a dict whose ``'model'`` entry is the
state dict; ours add ``'config'`` (plain ints/bools) and ``'format'``. Both load with
``strict=True``. A mismatch is reported key by key, with a guess of what the file is.

A weights-only file (``WEIGHTS_FORMAT``, for shipping) holds what the network cannot
rebuild: its parameters and buffers without the three body-model copies
(``regressor.<t>.smpl.*``), the dense ``Dmap`` selection matrices (their vertex ids are
stored instead) and the fixed sampling grid; no optimizer, RNG or logs. Floating tensors
may be float16 (``half``); they load back as float32 into a PyMAF built with a body
model the caller gives. Written by ``python -m engine.model.checkpoint export IN OUT
[--half]``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from engine.body.loading import body_model_from_state_dict
from engine.body.model_data import BodyModelData
from engine.common.atomic import atomic_file
from engine.model.pymaf import ModelConfig, PyMAF, build_pymaf, grid_points, vertex_selection_matrix
from engine.safe_torch import TorchFileError, read_torch_file

OUR_FORMAT = "pymaf-blender-checkpoint/1"
WEIGHTS_FORMAT = "pymaf-blender-weights/1"
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
    without it (then it must be given), weights-only files included. Returns (model in
    eval mode, info dict).
    """
    obj = read_checkpoint(path)
    if obj.get("format") == WEIGHTS_FORMAT:
        model, info = load_weights_only(obj, body, Path(path).name)
        return model, {**info, "path": str(path)}
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
    model = build_pymaf(body, config)
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


# --- weights only (shipping) ---------------------------------------------------------
_BODY_KEY = re.compile(r"(^|\.)smpl\.")
FULL_PRECISION = (".init_pose", ".init_shape", ".init_cam")  # float32 even in a half file


def is_body_key(key: str) -> bool:
    """A state-dict entry of a body-model copy (``regressor.<t>.smpl.*``): data the network
    was trained with, not weights it learned."""
    return bool(_BODY_KEY.search(key))


def training_only_key(key: str) -> bool:
    """The auxiliary IUV head (``dp_head.*``): only the training loss reads it."""
    return key.startswith("dp_head.")


def rebuilt_key(key: str) -> bool:
    """True for state-dict entries ``PyMAF(body, config)`` makes itself, left out of a
    weights-only file: body-model copies, ``Dmap`` (from stored vertex ids), the grid."""
    return is_body_key(key) or key.endswith(".Dmap") or key == "points_grid"


def weights_layout(model: PyMAF) -> dict:
    """{key: shape} a weights-only file of ``model`` must hold, no more, no less."""
    return {k: shape for k, shape in expected_layout(model).items() if not rebuilt_key(k)}


BODY_SUMMARY_SIZE = 16      # random projections of the body's template and shape basis
BODY_SUMMARY_RTOL = 1e-4    # the same body built on another CPU differs in the last float bits


def body_summary(v_template: np.ndarray, shapedirs: np.ndarray) -> np.ndarray:
    """(V, 3) template, (V, 3, B) shape basis -> (BODY_SUMMARY_SIZE,) float64: fixed random
    projections of both, compared with a tolerance (``same_body``). A digest alone changes
    with the last bits of a body rebuilt on another machine (the mannequin is generated, and
    numpy's vectorised sums differ by CPU); a different body moves the projections by far more."""
    x = np.concatenate([np.asarray(v_template, np.float64).ravel(), np.asarray(shapedirs, np.float64).ravel()])
    directions = np.random.default_rng(0).standard_normal((BODY_SUMMARY_SIZE, x.size))
    return directions @ x / np.sqrt(x.size)


def body_fingerprint(model: PyMAF) -> dict:
    """Which body model the network was trained with: vertex count, a digest of its template
    and shape basis, and their ``body_summary`` (the caller's body is compared at load)."""
    smpl = model.regressor[0].smpl
    digest = hashlib.sha256()
    arrays = [t.detach().float().cpu().contiguous().numpy() for t in (smpl.v_template, smpl.shapedirs)]
    for a in arrays:
        digest.update(a.tobytes())
    return {"num_vertices": int(smpl.v_template.shape[0]), "sha256": digest.hexdigest(),
            "summary": body_summary(*arrays).tolist()}


def same_body(trained: dict, current: dict) -> bool:
    """A file's ``body`` entry against ``body_fingerprint`` of the body chosen now: the same
    digest, or (when the file holds one) the same summary within ``BODY_SUMMARY_RTOL``."""
    if trained.get("sha256") == current["sha256"]:
        return True
    summary = trained.get("summary")
    if not isinstance(summary, list) or len(summary) != BODY_SUMMARY_SIZE:
        return False
    a, b = np.asarray(summary, np.float64), np.asarray(current["summary"], np.float64)
    return bool(np.allclose(a, b, rtol=BODY_SUMMARY_RTOL, atol=BODY_SUMMARY_RTOL * np.abs(b).max()))


def _check_rebuildable(model: PyMAF) -> None:
    """Refuse to drop buffers a fresh build would not reproduce (a ``Dmap`` that is not a
    0/1 selection, another sampling grid)."""
    if not torch.equal(model.points_grid.cpu(), grid_points()):
        raise CheckpointError("points_grid differs from the standard 21x21 grid; it cannot be left out")
    for t, extractor in enumerate(model.maf_extractor):
        rebuilt = vertex_selection_matrix(extractor.vertex_ids().cpu().numpy(), extractor.Dmap.shape[1])
        if not torch.equal(extractor.Dmap.cpu(), rebuilt):
            raise CheckpointError(f"maf_extractor.{t}.Dmap is not a 0/1 vertex selection; it cannot be rebuilt")


def weights_payload(model: PyMAF, *, half: bool = False, inference_only: bool = False) -> dict:
    """The weights-only file's dict: {'format', 'config', 'dtype', 'model': {key: tensor},
    'maf_vertex_ids' (stages, 431) int64, 'body': fingerprint}. Floating tensors in
    float16 with ``half`` (but ``FULL_PRECISION``); everything copied to the CPU (no
    shared storage is saved). ``inference_only`` leaves out the auxiliary IUV head
    (``dp_head.*``, used only by the training loss) and says so in the config."""
    _check_rebuildable(model)
    config = model.config
    if inference_only:
        config = replace(config, with_iuv_head=False)
    dtype = torch.float16 if half else torch.float32

    def stored(key, value):
        # The mean-parameter start (157 numbers) stays exact: rounding init_cam's scale
        # alone would move every estimate's depth.
        keep = not value.is_floating_point() or key.endswith(FULL_PRECISION)
        return (value if keep else value.to(dtype)).detach().cpu().clone()

    weights = {k: stored(k, v) for k, v in model.state_dict().items()
               if not rebuilt_key(k) and not (inference_only and training_only_key(k))}
    ids = [e.vertex_ids().cpu() for e in model.maf_extractor]
    return {"format": WEIGHTS_FORMAT, "config": config.to_dict(), "dtype": str(dtype).split(".")[-1],
            "model": weights, "maf_vertex_ids": torch.stack(ids) if ids else torch.zeros(0, 0, dtype=torch.long),
            "body": body_fingerprint(model)}


def save_weights(model: PyMAF, path, *, half: bool = False, inference_only: bool = False) -> None:
    """Write ``weights_payload(model, half=half, inference_only=inference_only)`` atomically."""
    payload = weights_payload(model, half=half, inference_only=inference_only)
    with atomic_file(Path(path)) as f:
        torch.save(payload, f)


def _weights_state(obj: dict, model: PyMAF, name: str) -> dict:
    """The full state dict for ``model``: the file's weights (float16 -> the model's dtype),
    ``Dmap`` rebuilt from the stored vertex ids, the rest (body, grid) the model's own."""
    weights = obj.get("model")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{name}: a weights-only file without its 'model' dict of tensors")
    report = compare_layout(weights, weights_layout(model))
    if not report.ok:
        raise CheckpointError(f"{name}: weights-only file does not fit the PyMAF layout of its config "
                              f"{model.config.to_dict()}:\n{report.describe()}")
    state = model.state_dict()
    for key, value in weights.items():
        if value.is_floating_point() and state[key].is_floating_point():
            value = value.to(state[key].dtype)
        elif value.dtype != state[key].dtype:
            raise CheckpointError(f"{name}: {key} is {value.dtype}, expected {state[key].dtype}")
        state[key] = value
    if len(model.maf_extractor):
        ids = _vertex_ids(obj.get("maf_vertex_ids"), len(model.maf_extractor), model.maf_extractor[0].Dmap.shape, name)
        for t, extractor in enumerate(model.maf_extractor):
            state[f"maf_extractor.{t}.Dmap"] = vertex_selection_matrix(ids[t].numpy(), extractor.Dmap.shape[1])
    return state


def _vertex_ids(ids, stages: int, dmap_shape: tuple, name: str) -> torch.Tensor:
    """A file's ``maf_vertex_ids``, checked: (stages, n) int64 below V for a ``Dmap`` of (n, V)."""
    n, num_vertices = dmap_shape
    if (not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or tuple(ids.shape) != (stages, n)
            or ids.min() < 0 or ids.max() >= num_vertices):
        raise CheckpointError(f"{name}: maf_vertex_ids must be ({stages}, {n}) vertex indices below {num_vertices}")
    return ids


def load_weights_only(obj: dict, body: Optional[BodyModelData], name: str) -> tuple[PyMAF, dict]:
    """Build a PyMAF on ``body`` from a weights-only file's dict and load it strictly."""
    if body is None:
        raise CheckpointError(f"{name}: it holds network weights only, no body model; choose the SMPL body "
                              "model it was trained with.")
    if not isinstance(obj.get("config"), dict):
        raise CheckpointError(f"{name}: a weights-only file without its 'config'")
    config = ModelConfig.from_dict(obj["config"])
    trained = obj.get("body") if isinstance(obj.get("body"), dict) else {}
    if trained.get("num_vertices", body.num_vertices) != body.num_vertices:
        raise CheckpointError(f"{name}: trained with a {trained['num_vertices']}-vertex body model; the chosen one "
                              f"has {body.num_vertices} vertices")
    model = build_pymaf(body, config)
    model.load_state_dict(_weights_state(obj, model, name), strict=True)
    model.eval()
    dtype = str(obj.get("dtype", "float32"))
    info = {"config": config.to_dict(), "format": WEIGHTS_FORMAT, "dtype": dtype,
            "kind": f"PyMAF weights only ({config.trunk_label} trunk, {dtype})",
            "body_matches": same_body(trained, body_fingerprint(model))}
    return model, info


def export_weights(src, dst, *, half: bool = False, inference_only: bool = False,
                   body: Optional[BodyModelData] = None) -> dict:
    """Read checkpoint ``src`` (any layout ``load_pymaf`` reads) and write its weights only
    to ``dst``. -> {'source_bytes', 'bytes', 'tensors', 'dtype'}."""
    model, _ = load_pymaf(src, body=body)
    save_weights(model, dst, half=half, inference_only=inference_only)
    kept = [k for k in weights_layout(model) if not (inference_only and training_only_key(k))]
    return {"source_bytes": os.path.getsize(src), "bytes": os.path.getsize(dst),
            "tensors": len(kept), "dtype": "float16" if half else "float32"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.model.checkpoint",
                                     description="PyMAF checkpoint tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write the network weights only (for shipping)")
    export.add_argument("src", metavar="IN", help="a training checkpoint (or the official release)")
    export.add_argument("dst", metavar="OUT", help="the weights-only file to write")
    export.add_argument("--half", action="store_true", help="store floating tensors as float16")
    export.add_argument("--inference-only", action="store_true",
                        help="leave out the auxiliary IUV head (used only by the training loss)")
    export.add_argument("--body", help="SMPL body model, for an IN that embeds none")
    args = parser.parse_args(argv)
    try:
        body = None
        if args.body:
            from engine.body.loading import load_body_model
            body = load_body_model(args.body)
        done = export_weights(args.src, args.dst, half=args.half, inference_only=args.inference_only, body=body)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: {done['bytes'] / 1e6:.1f} MB ({done['tensors']} tensors, {done['dtype']}) "
          f"from {done['source_bytes'] / 1e6:.1f} MB")
    return 0


__all__ = ["CheckpointError", "read_checkpoint", "state_dict_of", "infer_config", "compare_layout",
           "guess_kind", "describe_mismatch", "expected_layout", "load_pymaf", "save_pymaf", "LayoutReport",
           "WEIGHTS_FORMAT", "FULL_PRECISION", "rebuilt_key", "weights_layout", "weights_payload", "save_weights", "load_weights_only",
           "export_weights", "main"]


if __name__ == "__main__":
    sys.exit(main())
