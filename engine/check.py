"""``python -m engine.check``: say exactly what is wrong with a checkpoint or body model file.

    python -m engine.check [--checkpoint PATH] [--body PATH] [--json]

The Blender extension's "Check" button runs this in the engine environment with the files
the import would use. Files are read the same way the engine reads them (safe loading only:
``torch.load(weights_only=True)`` for checkpoints, the restricted unpickler for SMPL ``.pkl``,
no pickles in ``.npz``), and a checkpoint is built into a PyMAF network and loaded strictly,
exactly like ``python -m engine run`` does. The messages are the loaders' own
(``engine.model.checkpoint``, ``engine.body.loading``): they name the offending keys, shapes,
and what the file looks like instead (ImageNet ResNet, SPIN/HMR, VIBE, PyMAF-X, SMPL-X...).

Output: one line per file (``OK`` or ``PROBLEM`` with the reason), or with ``--json`` one JSON
object on stdout::

    {"ok": false,
     "checkpoint": {"path": ..., "ok": false, "summary": "<first line>", "problems": [...],
                    "warnings": [...], "details": {...}},
     "body": {...} | null}

Exit codes: 0 every given file is usable, 5 at least one is not, 2 usage (no file given).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

EXIT_OK, EXIT_USAGE, EXIT_PROBLEM = 0, 2, 5


def _report(kind: str, path, ok: bool, summary: str, problems=(), warnings=(), details=None) -> dict:
    return {"kind": kind, "path": os.fspath(path), "ok": bool(ok), "summary": summary,
            "problems": list(problems), "warnings": list(warnings), "details": dict(details or {})}


def _problem(kind: str, path, exc: BaseException) -> dict:
    text = str(exc).strip() or type(exc).__name__
    lines = [l for l in text.splitlines() if l.strip()]
    details = {"unsafe": "refused" in text and ("code" in text or "object" in text)}
    return _report(kind, path, False, lines[0], lines, details=details)


def check_body(path) -> tuple:
    """-> (report, BodyModelData or None)."""
    from engine.body.loading import BodyModelError, load_body_model, missing_joints_49

    try:
        data = load_body_model(path)
    except BodyModelError as exc:
        return _problem("body", path, exc), None
    except Exception as exc:  # noqa: BLE001 - untrusted input: report, do not crash
        return _problem("body", path, RuntimeError(f"{Path(path).name} could not be read "
                                                   f"({type(exc).__name__}: {exc})")), None
    warnings = list(data.warnings)
    missing = missing_joints_49(data)
    if missing:
        warnings.append(f"no J_regressor_extra: {len(missing)} of the 49 keypoints ({', '.join(missing[:4])}"
                        f"{'...' if len(missing) > 4 else ''}) are not computed; put SPIN's "
                        "J_regressor_extra.npy next to the file to add them")
    details = {"vertices": data.num_vertices, "joints": int(len(data.parents)), "betas": data.num_betas,
               "faces": int(len(data.faces)), "source": data.source}
    summary = (f"SMPL body model: {data.num_vertices} vertices, {len(data.parents)} joints, "
               f"{data.num_betas} shape components")
    return _report("body", path, True, summary, warnings=warnings, details=details), data


def check_checkpoint(path, body=None) -> dict:
    """Load like the engine does (strict). ``body``: a BodyModelData for checkpoints without one."""
    from engine.body.loading import BodyModelError
    from engine.model.checkpoint import BODY_PREFIX, CheckpointError, load_pymaf, read_checkpoint, state_dict_of

    try:
        model, info = load_pymaf(path, body=body)
    except (CheckpointError, BodyModelError) as exc:
        return _problem("checkpoint", path, exc)
    except Exception as exc:  # noqa: BLE001 - untrusted input: report, do not crash
        return _problem("checkpoint", path, RuntimeError(f"{Path(path).name} could not be loaded "
                                                         f"({type(exc).__name__}: {exc})"))
    del model
    # Without a body model, a checkpoint only loads when it embeds one; with one, look.
    embeds = body is None or any(k.startswith(BODY_PREFIX) for k in state_dict_of(read_checkpoint(path)))
    cfg = info.get("config", {})
    fmt = "the official release layout" if info.get("format") == "official" else f"format {info.get('format')}"
    details = {"format": info.get("format"), "kind": info.get("kind"), "config": cfg, "embeds_body": embeds,
               "bytes": os.path.getsize(path)}
    summary = f"{info.get('kind')}, {fmt}, loads strictly" + ("; embeds its SMPL body model" if embeds else "")
    warnings = []
    if embeds and body is not None:
        warnings.append("the checkpoint embeds its own body model, which the engine uses; the chosen body "
                        "model file only matters for checkpoints without one")
    return _report("checkpoint", path, True, summary, warnings=warnings, details=details)


def run_checks(checkpoint: Optional[str] = None, body: Optional[str] = None) -> dict:
    out = {"ok": True, "checkpoint": None, "body": None}
    body_data = None
    if body:
        out["body"], body_data = check_body(body)
    if checkpoint:
        if body and body_data is None:
            # The body is broken: check the checkpoint on its own (it may embed one).
            out["checkpoint"] = check_checkpoint(checkpoint, None)
        else:
            out["checkpoint"] = check_checkpoint(checkpoint, body_data)
    out["ok"] = all(r["ok"] for r in (out["checkpoint"], out["body"]) if r is not None)
    return out


def format_text(result: dict) -> str:
    lines = []
    for key in ("checkpoint", "body"):
        rep = result.get(key)
        if rep is None:
            continue
        state = "OK" if rep["ok"] else "PROBLEM"
        lines.append(f"{key} {rep['path']}: {state} - {rep['summary']}")
        lines += [f"    {p}" for p in rep["problems"][1:]]
        lines += [f"    warning: {w}" for w in rep["warnings"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="PyMAF checkpoint (.pt/.pth/.tar)")
    parser.add_argument("--body", help="SMPL body model (.pkl/.npz/checkpoint)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.body:
        msg = "nothing to check: give --checkpoint and/or --body"
        if args.json:
            print(json.dumps({"ok": False, "error": msg, "checkpoint": None, "body": None}), flush=True)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # loaders' prints never mix into the JSON
    try:
        result = run_checks(args.checkpoint, args.body)
    finally:
        sys.stdout = real_stdout
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(format_text(result), flush=True)
    return EXIT_OK if result["ok"] else EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
