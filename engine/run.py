"""``python -m engine run VIDEO -o RESULT.npz`` and ``python -m engine analyze VIDEO -o TRACKS.json``.

``run``: probe -> load the estimator -> ONE streaming pass (engine/pipeline.py): a decode
thread, detection and an online tracker (or the boxes of an ``analyze`` file, ``--tracks``)
in a second thread, then in the main thread one of two estimators:

* ``landmarks`` (the default without ``--checkpoint``): BlazePose GHUM 3D landmarks on a crop
  that follows each person (engine/landmarks/), then the fit of the SMPL-format rig per track
  (engine/fit/); frames the landmark model does not see are gaps;
* ``pymaf``: each person cropped exactly like the official demo as soon as its box is final,
  batched prediction (halving the batch on GPU out-of-memory), conversion to full-image
  camera translation / image-pixel keypoints;

-> per-track smoothing, continuous quaternions -> atomic ``write_result``. Every frame is
decoded once; memory does not grow with the clip (the tracker holds at most ``max_lag`` frames).

``analyze``: the same decode / detect / track pass without the network; writes the tracks
(ids, frame spans, boxes per frame, scores, interpolated flags, video metadata) as JSON
(engine/people/tracks_file.py) so that a user can pick people, then
``run --tracks FILE --people 1,3`` infers only those, with the same ids and boxes.

Usage::

    python -m engine run VIDEO -o OUT.npz [--estimator landmarks|pymaf] [--landmark-model lite|full|heavy]
        [--checkpoint PATH] [--body PATH]
        [--device auto|cuda|mps|cpu] [--batch-size 16] [--autocast none|bf16|fp16]
        [--start N] [--stop N] [--people all|1,3] [--focal-px F]
        [--smoothing none|light|default|strong]
        [--detector NAME | --boxes FILE | --tracks TRACKS.json] [--progress tty|jsonl]
    python -m engine analyze VIDEO -o TRACKS.json [--start N] [--stop N]
        [--detector NAME | --boxes FILE] [--progress tty|jsonl]

``--estimator pymaf`` without ``--checkpoint`` runs an UNTRAINED network (seeded ResNet-50 on the
mannequin body, or on ``--body``), with a warning: the pipeline runs end to end but the poses
mean nothing. The landmark estimator needs the converted BlazePose models (``python3 build.py
setup`` / ``python -m engine.landmarks.setup``; missing: exit 5 naming the package and command).

Camera: ``--focal-px`` defaults to a 55 degree horizontal field of view,
``f = (W / 2) / tan(27.5 deg)`` (about 0.96 W), a typical phone/camcorder lens -- not the
official demo's 5000 px, which is a near-orthographic camera and puts people tens of metres
away. Principal point = image centre. Only the depth (Tz) depends on this choice.

Frame indices in the result count from ``--start`` (frame 0 of the result = video frame
``start``; ``meta.frame_start`` records it); ``video.frame_count`` is the number of frames in
the processed range (``meta.source_frame_count``: the whole file).

Stored values: rotations, translation and betas are smoothed with the chosen preset
(``--smoothing none`` stores the raw per-frame network output). The schema (v1) has no
fields for raw copies next to smoothed ones, so raw values are not kept when smoothing;
``keypoints2d``, ``joints3d`` and ``cam_crop`` are always the raw per-frame outputs.

Progress: ``--progress jsonl`` prints one JSON object per line on stdout and nothing else
(logs go to stderr)::

    {"event": "progress", "stage": "run"|"analyze", "done": k, "total": n, "fps": x, "eta_s": y}
    {"event": "done", "result": path, "tracks": ["1", ...], "frames": n, "seconds": t, "fps": x,
     "stages": {"decode": s, "detect": s, ...}, "batch_size": b}
    {"event": "error", "code": "...", "message": "..."}

``--progress tty`` (default) draws a progress line on stderr (tqdm when installed).

Exit codes:
    0    ok
    1    internal error (a bug: traceback on stderr)
    2    usage error (bad arguments, unreadable --boxes / --tracks file)
    3    video error (missing, unreadable, not a video, empty); JSON code = VideoError.code
    4    no person found (no track, or none of the ``--people`` ids)
    5    model / checkpoint / body model / device error, GPU out of memory at batch size 1
         (a partial result with the finished frames is written first)
    6    cannot write the result (disk full, folder missing, not writable)
    130  cancelled (SIGINT / SIGTERM). ``run`` writes a valid partial result first
         (meta.partial = true, meta.frames_done = k: exactly frames 0 .. k-1 are in it) when
         k > 0; ``analyze`` writes the tracks of the frames analysed (``"partial": true``).
Expected errors print one clear line (``error: ...``) on stderr, no traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from engine.cli_args import UsageParser, nonneg_int
from engine.common.jobs import report_internal_error
from engine.pipeline import Cancelled, log

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_VIDEO, EXIT_NO_PERSON, EXIT_MODEL, EXIT_WRITE = 0, 1, 2, 3, 4, 5, 6
EXIT_CANCELLED = 130
DEFAULT_FOV_DEG = 55.0
SMOOTHING_CHOICES = ("none", "light", "default", "strong")
ESTIMATORS = ("default", "landmarks", "pymaf", "pymaf-blazepose")
# what "default" (and no --estimator without --checkpoint) means: the estimator that measures best
# on both the synthetic and the real-footage measures of docs/accuracy.md
DEFAULT_ESTIMATOR = "landmarks"
# PyMAF's heads on the BlazePose GHUM full trunk, trained by this project (build.py train-default)
BLAZE_HEADS = Path(__file__).resolve().parent / "model" / "weights" / "pymaf_blazepose_full.pt"
LANDMARK_MODELS = ("lite", "full", "heavy")
UNTRAINED_SEED = 0
MIN_TRACK_FRAMES = 10   # shorter tracks are dropped (fewer when the whole range is shorter)
LANDMARK_QUEUE = 8      # decoded frames with final boxes waiting for the landmark model


class RunError(Exception):
    """An expected failure: exit code, machine code and a one-line message."""

    def __init__(self, exit_code: int, code: str, message: str):
        super().__init__(message)
        self.exit_code, self.code, self.message = exit_code, code, message


# ----------------------------------------------------------------------------- progress
class Progress:
    """Progress on stderr (``tty``), as JSON lines on ``stdout`` (``jsonl``) or nowhere (``None``)."""

    def __init__(self, mode, stdout=None):
        self.mode, self.stdout = mode, stdout
        self._bar = None
        self._stage = None
        self._t0 = time.monotonic()
        self._last = 0.0

    def emit(self, obj: dict) -> None:
        if self.mode == "jsonl":
            self.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
            self.stdout.flush()

    def start(self, stage: str, total: int) -> None:
        self.close()
        self._stage, self._total, self._t0, self._last = stage, total, time.monotonic(), 0.0
        self._shown = -1
        if self.mode == "tty":
            try:
                from tqdm import tqdm
                self._bar = tqdm(total=total, desc=stage, unit="frame", file=sys.stderr, leave=True)
            except Exception:  # noqa: BLE001 - tqdm is optional
                self._bar = None

    def update(self, done: int, force: bool = False) -> None:
        """Report ``done`` of ``total`` frames; at most every 0.2 s unless ``force`` or the
        first frame finished (so a caller sees work started at once)."""
        if self._stage is None or done == self._shown:
            return
        now = time.monotonic()
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()
            return
        if not (force or (done and self._shown <= 0)) and now - self._last < 0.2:
            return
        self._last, self._shown = now, done
        dt = max(now - self._t0, 1e-9)
        rate = done / dt
        total = max(self._total, done)
        eta = (total - done) / rate if rate > 0 else None
        if self.mode == "jsonl":
            self.emit({"event": "progress", "stage": self._stage, "done": int(done), "total": int(total),
                       "fps": round(rate, 3), "eta_s": None if eta is None else round(eta, 2)})
        elif self.mode == "tty":
            print(f"\r{self._stage}: {done}/{total} ({rate:.1f}/s)", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "tty" and self._stage is not None:
            print(file=sys.stderr)
        self._stage = None


# ----------------------------------------------------------------------------- arguments
def _people(text: str):
    if text == "all":
        return None
    try:
        ids = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--people takes 'all' or track ids like 1,3, not {text!r}")
    if not ids:
        raise argparse.ArgumentTypeError("--people: no track id given")
    if ids[0] < 1:
        raise argparse.ArgumentTypeError(f"--people: track ids count from 1, not {ids[0]}")
    return ids


def _positive_int(text):
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return v


def _positive_float(text):
    v = float(text)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError("must be a positive number")
    return v


def build_parser(command: str = "run") -> UsageParser:
    from engine.people.detect import DETECTOR_NAMES

    analyze = command == "analyze"
    p = UsageParser(prog=f"python -m engine {command}",
                description="Find and track the people in a video, without the network; write the tracks "
                            "as JSON." if analyze else "Estimate SMPL motion for the people in a video.")
    p.add_argument("video", help="input video file")
    p.add_argument("-o", "--output", required=True, help="tracks file (.json), written atomically" if analyze
                   else "result file (.npz), written atomically")
    if not analyze:
        p.add_argument("--estimator", choices=ESTIMATORS, default=None,
                       help="'landmarks': BlazePose GHUM 3D landmarks + our fit onto the SMPL-format rig; "
                            "'pymaf': the PyMAF network (needs --checkpoint for real results); "
                            "'pymaf-blazepose': PyMAF's heads on the BlazePose GHUM trunk, trained by this project "
                            "on synthetic renders (docs/accuracy.md says where it stands); 'default': "
                            f"{DEFAULT_ESTIMATOR}, the one that measures best. Without --estimator: pymaf when "
                            f"--checkpoint is given, else {DEFAULT_ESTIMATOR}")
        p.add_argument("--landmark-model", choices=LANDMARK_MODELS, default="full",
                       help="BlazePose landmark model size for --estimator landmarks (default full)")
        p.add_argument("--checkpoint", help="PyMAF checkpoint, for --estimator pymaf (without one: an UNTRAINED "
                                            "network, with a warning) or pymaf-blazepose (default: the shipped "
                                            "weights)")
        p.add_argument("--body", help="SMPL body model (.pkl/.npz/checkpoint); for the untrained network or "
                                      "checkpoints that embed none (default: the mannequin)")
        p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
        p.add_argument("--batch-size", type=_positive_int, default=16)
        p.add_argument("--autocast", default="none", choices=("none", "bf16", "fp16"),
                       help="reduced precision for the trunk and pyramid (fp16: GPU only)")
        p.add_argument("--no-silhouette", action="store_true",
                       help="landmark estimator: skip the silhouette term (each frame's body moved onto the "
                            "person's segmentation, people over ~150 px; engine/fit/silhouette.py): faster, "
                            "outlines a few pixels off")
    p.add_argument("--start", type=nonneg_int, default=None,
                   help="first video frame (0-based; default 0, or the --tracks file's first frame)")
    p.add_argument("--stop", type=nonneg_int, default=None, help="stop before this video frame")
    if not analyze:
        p.add_argument("--people", type=_people, default=None, help="'all' (default) or track ids, e.g. 1,3")
        p.add_argument("--focal-px", type=_positive_float, default=None,
                       help=f"focal length in image pixels (default: {DEFAULT_FOV_DEG:g} deg horizontal FOV)")
        p.add_argument("--smoothing", choices=SMOOTHING_CHOICES, default="default")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--detector", choices=DETECTOR_NAMES, default=None,
                     help="person detector (default: 'default', the one picked by measurement)")
    src.add_argument("--boxes", help="person boxes per frame (JSON or CSV, BoxesFromFile) instead of detection")
    src.add_argument("--onnx", help="a YOLOv5/v8-style person detector (.onnx) to use instead of the built-in "
                                    "ones (read with OpenCV; class 0 = person)")
    p.add_argument("--onnx-size", type=_positive_int, default=640, help="input size of the --onnx detector")
    p.add_argument("--no-verify", action="store_true",
                   help="keep every track; by default a detected track whose boxes the BlazePose landmark model "
                        "does not see a person in is dropped (engine/people/verify.py)")
    p.add_argument("--min-track-frames", type=_positive_int, default=None,
                   help=f"drop tracks shorter than this (default {MIN_TRACK_FRAMES}, at most the frame range)")
    if not analyze:
        src.add_argument("--tracks", help="tracks file from 'python -m engine analyze': no detection, same ids")
    p.add_argument("--progress", choices=("tty", "jsonl"), default="tty")
    return p


# ----------------------------------------------------------------------------- model
def load_model(args):
    """-> (PyMAF, provenance dict). Raises RunError(5)."""
    from engine.body.loading import BodyModelError, load_body_model
    from engine.model.checkpoint import CheckpointError, load_pymaf

    try:
        body = load_body_model(args.body) if args.body else None
        checkpoint = args.checkpoint
        if args.estimator == "pymaf-blazepose":
            checkpoint = checkpoint or str(BLAZE_HEADS)
            if body is None:   # the shipped heads are weights only, trained on the mannequin
                body = load_rig_body(args)
        if checkpoint:
            model, info = load_pymaf(checkpoint, body=body)
            if (args.estimator == "pymaf-blazepose") != model.config.blaze:
                want = "a BlazePose-trunk" if args.estimator == "pymaf-blazepose" else "a ResNet"
                raise RunError(EXIT_USAGE, "usage", f"{os.path.basename(checkpoint)} is not {want} PyMAF "
                               f"({model.config.trunk_label} trunk): use --estimator "
                               f"{'pymaf-blazepose' if model.config.blaze else 'pymaf'}")
            prov = {"checkpoint": os.path.abspath(checkpoint), "untrained": False,
                    "config": info.get("config"), "checkpoint_kind": info.get("kind")}
        else:
            import torch

            from engine.model.pymaf import ModelConfig, PyMAF
            if body is None:
                from engine.body.mannequin import default_mannequin
                body = default_mannequin()
            log("WARNING: no --checkpoint given: using an UNTRAINED network (seeded ResNet-50 on the "
                f"{'given body model' if args.body else 'mannequin'}); the poses are meaningless. "
                "A trained default checkpoint arrives with a later release.")
            torch.manual_seed(UNTRAINED_SEED)
            model = PyMAF(body, ModelConfig()).eval()
            prov = {"checkpoint": None, "untrained": True, "seed": UNTRAINED_SEED}
        prov["body"] = os.path.abspath(args.body) if args.body else (
            "mannequin" if args.estimator == "pymaf-blazepose" or not checkpoint else "embedded")
        return model, prov
    except (CheckpointError, BodyModelError) as e:
        raise RunError(EXIT_MODEL, "model", f"{e}".splitlines()[0]) from None
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise RunError(EXIT_MODEL, "model", f"could not load the model: {type(e).__name__}: {e}"
                       .splitlines()[0]) from None


def resolve_estimator(args) -> None:
    """Settle ``args.estimator`` (pymaf with a checkpoint, else landmarks) and the description
    the result file carries (``meta["estimator"]``). Raises RunError(2) on contradictions."""
    if args.estimator is None:
        args.estimator = "pymaf" if args.checkpoint else DEFAULT_ESTIMATOR
    elif args.estimator == "default":
        args.estimator = DEFAULT_ESTIMATOR
    if args.estimator == "landmarks" and args.checkpoint:
        raise RunError(EXIT_USAGE, "usage", "--checkpoint is a PyMAF checkpoint: use it with --estimator pymaf "
                                            "(or leave --estimator out)")
    if args.estimator == "landmarks":
        args._estimator_meta = {"name": "landmarks", "model": args.landmark_model,
                                "label": f"BlazePose GHUM {args.landmark_model} + landmark fit"}
    elif args.estimator == "pymaf-blazepose":
        args._estimator_meta = {"name": "pymaf-blazepose", "model": "full",
                                "label": "PyMAF heads on BlazePose GHUM full (" + (
                                    "checkpoint " + os.path.basename(args.checkpoint) if args.checkpoint
                                    else "trained by this project") + ")"}
    else:
        args._estimator_meta = {"name": "pymaf", "label": "PyMAF (official checkpoint)" if args.checkpoint
                                else "PyMAF (untrained network)"}


def make_follower(args):
    """-> (PersonFollower over the converted BlazePose model, provenance). Raises RunError(5)."""
    from engine.landmarks.assets import LandmarkModelError, converted_path, missing_message
    from engine.landmarks.landmarker import Landmarker, PersonFollower
    from engine.landmarks.network import LandmarkModelFileError

    size = args.landmark_model
    path = converted_path(size)
    if not os.path.isfile(path):
        raise RunError(EXIT_MODEL, "landmark_model_missing", missing_message(size))
    try:
        landmarker = Landmarker(path, size, device=args.device, autocast=args.autocast)
    except (LandmarkModelFileError, LandmarkModelError) as e:
        raise RunError(EXIT_MODEL, "landmark_model", f"{e}; {missing_message(size)}".splitlines()[0]) from None
    except (ValueError, RuntimeError) as e:
        raise RunError(EXIT_MODEL, "device", str(e).splitlines()[0]) from None
    log(f"estimator: {args._estimator_meta['label']} on {landmarker.device}")
    prov = {"estimator": "landmarks", "landmark_model": size, "landmark_weights": os.path.abspath(path),
            "landmark_source": landmarker.source, "body": os.path.abspath(args.body) if args.body else "mannequin",
            "silhouette_term": not args.no_silhouette}
    return PersonFollower(landmarker, keep_segmentation=not args.no_silhouette), prov


def load_rig_body(args):
    """The body the landmark fit poses: ``--body`` or the mannequin. Raises RunError(5)."""
    from engine.body.loading import BodyModelError, load_body_model

    try:
        if args.body:
            return load_body_model(args.body)
        from engine.body.mannequin import default_mannequin
        return default_mannequin()
    except (BodyModelError, OSError, ValueError) as e:
        raise RunError(EXIT_MODEL, "model", f"{e}".splitlines()[0]) from None


def make_predictor(args):
    """-> (Predictor, provenance). Raises RunError(5)."""
    model, prov = load_model(args)
    import torch

    from engine.model.inference import Predictor
    try:
        predictor = Predictor(model, device=args.device, autocast=args.autocast)
    except (ValueError, RuntimeError) as e:
        raise RunError(EXIT_MODEL, "device", str(e).splitlines()[0]) from None
    if predictor.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log(f"device: {predictor.device}" + (f", {args.autocast} autocast" if args.autocast != "none" else ""))
    return predictor, prov


# ----------------------------------------------------------------------------- shared steps
def _check_writable(path):
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise RunError(EXIT_WRITE, "write_failed", f"{path}: is a directory")
    if not os.path.isdir(folder):
        raise RunError(EXIT_WRITE, "write_failed", f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise RunError(EXIT_WRITE, "write_failed", f"{path}: folder {folder} is not writable")
    from engine.common.atomic import check_writable
    try:   # what the final write will do (root ignores permissions; names can be too long; ...)
        check_writable(path)
    except OSError as e:
        full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None))
        raise RunError(EXIT_WRITE, "disk_full" if full else "write_failed",
                       f"{path}: cannot write here ({e.strerror or e})") from None


def _open_video(args, default_range=(0, None)):
    """Probe the video and settle ``args.start`` / ``args.stop``. -> (VideoInfo, expected frame count)."""
    from engine.video.decode import probe

    if args.start is None:
        args.start = default_range[0]
    if args.stop is None:
        args.stop = default_range[1]
    if args.stop is not None and args.stop <= args.start:
        raise RunError(EXIT_USAGE, "usage", f"--stop ({args.stop}) must be greater than --start ({args.start})")
    _check_writable(args.output)
    info = probe(args.video)
    args._fps = info.fps   # the tracker's time-based settings (tracker_params)
    if args.start >= info.frame_count:
        raise RunError(EXIT_USAGE, "usage", f"--start {args.start} is past the end of {args.video} "
                       f"({info.frame_count} frames: 0 .. {info.frame_count - 1})")
    stop = info.frame_count if args.stop is None else min(args.stop, info.frame_count)
    total = max(0, stop - args.start)
    log(f"video: {info.width}x{info.height}, {info.fps:.3f} fps, {info.frame_count} frames")
    return info, total


def _make_detector(args):
    """-> (detector, its description for provenance). Raises RunError(2 or 5)."""
    from engine.people.detect import BoxesFromFile, make_detector

    if args.boxes:
        try:
            return BoxesFromFile(args.boxes), f"boxes:{os.path.abspath(args.boxes)}"
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise RunError(EXIT_USAGE, "usage", f"--boxes {args.boxes}: cannot read it ({e})") from None
    if args.onnx:
        from engine.people.detect import ONNXDetector
        try:
            return ONNXDetector(args.onnx, size=args.onnx_size), f"onnx:{os.path.abspath(args.onnx)}"
        except (OSError, ValueError) as e:
            raise RunError(EXIT_MODEL, "model", f"--onnx: {e}") from None
    from engine.landmarks.assets import LandmarkModelError
    from engine.people.detect import DEFAULT_DETECTOR

    name = args.detector or "default"
    kw = {}
    if (DEFAULT_DETECTOR if name == "default" else name) not in ("hog", "haar"):
        kw["device"] = getattr(args, "device", "auto")     # the networks run where the estimator does
    try:
        detector = make_detector(name, **kw)
        return detector, getattr(detector, "name", name)
    except LandmarkModelError as e:
        raise RunError(EXIT_MODEL, "detector_model", str(e).splitlines()[0]) from None
    except (OSError, ValueError, RuntimeError) as e:
        raise RunError(EXIT_MODEL, "model", f"detector {name!r}: {e}".splitlines()[0]) from None


def make_verifier(args):
    """The track verifier for detected tracks, or None: asked off (``--no-verify``), boxes the
    user gave (``--boxes`` / ``--tracks``), the landmark estimator (it verifies what it sees
    itself), or the landmark model not installed (a warning)."""
    if getattr(args, "no_verify", False) or getattr(args, "boxes", None) or getattr(args, "tracks", None) \
            or getattr(args, "estimator", None) == "landmarks":
        return None
    from engine.people.verify import make_verifier as make

    verifier, why = make(device=getattr(args, "device", "auto"))
    if verifier is None:
        log(f"warning: tracks are not verified: {why.splitlines()[0]}")
    return verifier


def drop_unverified(verifier, ids) -> set:
    """The track ids the verifier found no person in (logged). ``ids``: the ids to judge."""
    if verifier is None:
        return set()
    verdict = verifier.verdict()
    dropped = {t for t in ids if not verdict.get(t, True)}
    for t in sorted(dropped):
        seen, looked = verifier.summary(t)
        log(f"track {t}: the landmark model saw a person in {seen} of the {looked} box(es) it looked at; "
            f"not a person, dropped")
    return dropped


def tracker_params(args, total: int) -> dict:
    """Tracker settings: ``--min-track-frames`` (default MIN_TRACK_FRAMES), at most the range;
    a lost person keeps their id (and the gap is filled) for ``RELINK_SECONDS`` of the video."""
    from engine.people.tracking import relink_frames

    wanted = MIN_TRACK_FRAMES if args.min_track_frames is None else args.min_track_frames
    lost = relink_frames(getattr(args, "_fps", 0.0))
    return {"min_track_frames": min(wanted, max(total, 1)), "max_lost": lost, "max_gap": lost}


def make_tracker(args, total: int):
    """The online tracker of ``run`` / ``analyze``, its minimum track length capped by the
    frames that really decode (``_RangeTracker``), not only by the file's stated count."""
    from engine.people.tracking import OnlineTracker

    class _RangeTracker(OnlineTracker):
        """``OnlineTracker`` whose ``min_track_frames`` is lowered at ``close()`` to the number of
        frames it was given when fewer came than the range promised (a truncated video).

        Exact: a track ended before the last frame is shorter than the frames seen, so with
        either minimum it is kept or dropped alike; only tracks still live at the end (the
        ones over every frame, when the minimum exceeds the frames seen) can change, and their
        frames are all still held (a track's frames wait until it is long enough)."""

        frames_seen = 0

        def update(self, detections):
            self.frames_seen += 1
            return super().update(detections)

        def close(self):
            if not self._closed and 0 < self.frames_seen < self.params.min_track_frames:
                self.params = dataclasses.replace(self.params, min_track_frames=self.frames_seen)
            return super().close()

    return _RangeTracker(**tracker_params(args, total))


def _load_abandonable(load, cancel, poll_s: float = 0.05):
    """``load()`` in a daemon thread while this (the main) thread watches the cancel flag every
    ``poll_s``: a SIGINT during a long model load acts at once (``Cancelled``), the half-done
    load is abandoned (its thread ends with the process). -> load()'s value; its exceptions
    are raised here."""
    box = {}

    def work():
        try:
            box["value"] = load()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            box["error"] = e

    t = threading.Thread(target=work, name="load", daemon=True)
    t.start()
    while t.is_alive():
        if cancel["flag"]:
            raise Cancelled()
        t.join(poll_s)
    if cancel["flag"]:
        raise Cancelled()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _possible_ids(detector, args, total: int) -> int:
    """--boxes: the most track ids the tracker can hand out over the range: ids are 1, 2, ...
    in order of birth, and only a detection with a high enough score and a non-empty box
    starts a track."""
    from engine.people.tracking import TrackerParams

    p = TrackerParams(**tracker_params(args, total))
    birth = max(p.high_thresh, p.high_thresh if p.new_thresh is None else p.new_thresh)
    n = 0
    for f, d in detector.boxes.items():
        if args.start <= f < args.start + total and len(d):
            d = np.asarray(d, np.float64)
            n += int(((d[:, 4] >= birth) & (d[:, 2] > d[:, 0]) & (d[:, 3] > d[:, 1])).sum())
    return n


def check_models_installed(args) -> None:
    """Every converted model this run will load is there, before any work: one message
    naming all that are missing (a fresh install lacks them all). Raises RunError(5)."""
    from engine.landmarks import assets
    from engine.people.detect import DEFAULT_DETECTOR

    missing = []
    name = getattr(args, "detector", None) or "default"
    detector = DEFAULT_DETECTOR if name == "default" else name
    own_boxes = getattr(args, "tracks", None) or getattr(args, "boxes", None) or getattr(args, "onnx", None)
    if not own_boxes and detector.startswith("movenet") and not assets.movenet_path().is_file():
        missing.append((assets.movenet_what(), assets.movenet_path()))
    if getattr(args, "estimator", None) == "landmarks" and not assets.converted_path(args.landmark_model).is_file():
        missing.append((assets._what(args.landmark_model), assets.converted_path(args.landmark_model)))
    if getattr(args, "estimator", None) == "pymaf-blazepose" and not assets.converted_path("full").is_file():
        missing.append((assets._what("full"), assets.converted_path("full")))   # the heads' trunk
    if missing:
        what = " and ".join(w for w, _ in missing)
        where = ", ".join(str(p) for _, p in missing)
        raise RunError(EXIT_MODEL, "model_missing",
                       f"{what} {'is' if len(missing) == 1 else 'are'} not installed ({where} missing); set "
                       f"{'it' if len(missing) == 1 else 'them'} up with {assets.fix_command()}")


def _check_people_early(args, detector, total: int) -> None:
    """What can be known about ``--people`` before any work. With ``--boxes`` an id above the
    number of boxes that can start a track cannot exist; with a live detector the ids are only
    known after tracking (checked at the end)."""
    from engine.people.detect import BoxesFromFile

    if args.people is None or not isinstance(detector, BoxesFromFile):
        return
    bound = _possible_ids(detector, args, total)
    impossible = [i for i in args.people if i > bound]
    if len(impossible) == len(args.people):
        raise RunError(EXIT_NO_PERSON, "no_person",
                       f"--people {','.join(map(str, args.people))}: {args.boxes} can start at most {bound} "
                       f"track(s) in frames [{args.start}, {args.start + total}) (ids count 1, 2, ... in order "
                       f"of appearance), so none of these ids can exist")
    if impossible:
        log(f"warning: --people {','.join(map(str, impossible))}: no such track can exist (at most {bound} "
            f"in {args.boxes})")


def _decoded(args, times):
    """The decode thread: frames ``args.start .. args.stop`` of the video, FRAME_QUEUE ahead."""
    from engine.pipeline import FRAME_QUEUE, Prefetch, timed
    from engine.video.decode import iter_frames

    return Prefetch(timed(iter_frames(args.video, start=args.start, stop=args.stop), times, "decode"),
                    FRAME_QUEUE, times, "detect_wait", name="decode")


def _video_meta(args, info, frame_count: int) -> dict:
    """The video entry of a result or tracks file (frame_count: frames decoded, or the file's)."""
    return {"path": os.path.abspath(args.video), "width": info.width, "height": info.height,
            "fps": info.fps, "frame_count": int(frame_count)}


def _timestamps(stamps, start, fps):
    stamps = np.asarray(stamps, np.float64)
    if np.any(np.diff(stamps) <= 0):  # broken container timestamps: fall back to the nominal rate
        log("warning: the video's timestamps are not increasing; using frame / fps")
        stamps = (start + np.arange(len(stamps))) / (fps if fps > 0 else 30.0)
    return stamps


def _no_person(found, wanted):
    if wanted is not None:
        missing = [i for i in wanted if i not in found]
        if missing:
            log(f"warning: no track with id {', '.join(map(str, missing))} (found: {sorted(found) or 'none'})")
        if len(missing) < len(wanted):
            return None
    elif found:
        return None
    return RunError(EXIT_NO_PERSON, "no_person", "no person found in the video" if not found else
                    f"none of the requested people {wanted} were found (tracks: {sorted(found)})")


# ----------------------------------------------------------------------------- run
def _read_tracks(path):
    from engine.people.tracks_file import TracksFileError, read_tracks

    try:
        return read_tracks(path)
    except TracksFileError as e:
        raise RunError(EXIT_USAGE, "usage", f"--tracks: {e}") from None


def _fixed_boxes(args, info, total, doc, tracks):
    """--tracks: the analysis file's boxes of the chosen people -> {relative frame: [TrackBox]}."""
    from engine.people.tracking import TrackBox

    v = doc["video"]
    if (v.get("width"), v.get("height"), v.get("frame_count")) != (info.width, info.height, info.frame_count):
        raise RunError(EXIT_USAGE, "usage", f"--tracks {args.tracks} was made for another video "
                       f"({v.get('width')}x{v.get('height')}, {v.get('frame_count')} frames; this one is "
                       f"{info.width}x{info.height}, {info.frame_count} frames)")
    a, b = doc["frame_start"], doc["frame_stop"]
    stop = args.start + total
    if args.start < a or stop > b:
        raise RunError(EXIT_USAGE, "usage", f"--start/--stop [{args.start}, {stop}) is outside the frames "
                       f"analysed in {args.tracks}: [{a}, {b})")
    boxes = {}
    for tid, tr in tracks.items():
        if args.people is not None and tid not in args.people:
            continue
        for f, xyxy, score, interp in zip(tr.frames, tr.xyxy, tr.scores, tr.interpolated):
            if args.start <= f < stop:
                boxes.setdefault(int(f) - args.start, []).append(TrackBox(tid, xyxy, float(score), bool(interp)))
    for v in boxes.values():
        v.sort(key=lambda b: b.id)
    return boxes


def body_of(model):
    """The body model the network poses (the checkpoint's own, or the one it was built on)."""
    from engine.body.loading import body_model_from_state_dict
    from engine.model.checkpoint import BODY_PREFIX

    return body_model_from_state_dict(model.state_dict(), prefix=BODY_PREFIX, validate=False)


# record key -> result track field, stored when the estimator provides it
OPTIONAL_RECORD_FIELDS = {"cam": "cam_crop", "kp2d": "keypoints2d", "joints3d": "joints3d",
                          "landmarks2d": "landmarks2d", "landmarks3d": "landmarks3d"}


def assemble(args, records, frames_done, fps, body=None, camera=None, times=None, cancel=None, on_chunk=None,
             frame_size=None):
    """{id: [record per frame]} -> {str id: TrackResult}, frames < frames_done, smoothed per the preset.

    With ``body`` each track also gets its rig data: the rest mesh and joints of its robust shape;
    records that kept the person's mask (the landmark estimator) are then refined to it through
    ``camera`` (focal px, principal point) on frames of ``frame_size`` (W, H), timed as the
    ``silhouette`` stage of ``times``;
    ``cancel()`` ends that refinement early, ``on_chunk(frames)`` reports it."""
    from engine.common import smoothing as sm
    from engine.common.result_schema import TrackResult
    from engine.landmarks.stream import silhouette_refined

    params = sm.PRESETS[args.smoothing]
    result, cache = {}, {}
    for tid, recs in sorted(records.items()):
        recs = [r for r in recs if r["frame"] < frames_done]
        if not recs:
            continue
        col = lambda k: np.stack([r[k] for r in recs])  # noqa: E731
        frames = np.array([r["frame"] for r in recs], np.int64)
        R = col("rotmat").astype(np.float64)
        transl = col("transl").astype(np.float64)
        betas = col("betas").astype(np.float64)
        if not params.is_identity and len(frames) > 1:
            R = sm.smooth_track(frames, R, fps, params)
            transl = sm.smooth_track(frames, transl, fps, params)
            betas = sm.smooth_track(frames, betas, fps, sm.BETAS_PARAMS,
                                    smoother=lambda seg, ts, p: sm.smooth_betas(seg, ts, p))
        betas_robust = sm.robust_betas(betas)
        rig = {}
        if body is not None:
            verts, joints = body.rest_shape(betas_robust)
            rig = {"rest_vertices": verts.astype(np.float32), "rest_joints": joints}
            if camera is not None:
                with times("silhouette") if times is not None else contextlib.nullcontext():
                    R, transl = silhouette_refined(tid, recs, R, transl, betas_robust, body, camera, cache, cancel,
                                                   on_chunk, frame_size)
        # per-estimator extras: PyMAF's crop camera and 49 joints, BlazePose's 33 landmarks
        extras = {field: col(key) for key, field in OPTIONAL_RECORD_FIELDS.items() if key in recs[0]}
        result[str(tid)] = TrackResult.from_rotmats(
            frames=frames, transl=transl, global_orient_rotmat=R[:, 0], body_pose_rotmat=R[:, 1:],
            betas=betas, confidence=np.array([r["score"] for r in recs], np.float64),
            interpolated=np.array([r["interp"] for r in recs], bool), betas_robust=betas_robust,
            boxes=col("box"), **extras, **rig)
    return result


def write(args, info, stamps, track_results, frames_done, partial, prov, body=None):
    from engine.common import smoothing as sm
    from engine.common.result_schema import BodyRig, MotionResult, ResultError, make_meta, write_result

    p = sm.PRESETS[args.smoothing]
    smoothing = None if p.is_identity else {"preset": args.smoothing, "min_cutoff": p.min_cutoff,
                                            "beta": p.beta, "d_cutoff": p.d_cutoff, "zero_phase": p.zero_phase}
    meta = make_meta(
        video=_video_meta(args, info, len(stamps)),
        camera={"focal_px": float(args._focal), "principal_point": [info.width / 2, info.height / 2]},
        partial=partial, frames_done=int(frames_done), provenance=prov, smoothing=smoothing,
        track_ids=sorted(track_results, key=int), frame_start=args.start,
        source_frame_count=info.frame_count, focal_source=args._focal_source, estimator=args._estimator_meta)
    rig = None if body is None else BodyRig(faces=body.faces, weights=body.weights.astype(np.float32),
                                            parents=body.parents)
    res = MotionResult(meta=meta, tracks=track_results, timestamps=stamps, body=rig)
    try:
        write_result(res, args.output)
    except ResultError as e:
        code = "disk_full" if "disk space" in str(e) else "write_failed"
        raise RunError(EXIT_WRITE, code, str(e)) from None


def _set_focal(args, info):
    if args.focal_px is not None:
        args._focal, args._focal_source = float(args.focal_px), "--focal-px"
    else:
        from engine.common.camera import focal_from_fov
        args._focal = float(focal_from_fov(DEFAULT_FOV_DEG, info.width))
        args._focal_source = f"default {DEFAULT_FOV_DEG:g} deg horizontal FOV"
    log(f"focal {args._focal:.1f} px ({args._focal_source})")


def run(args, progress, cancel, wrap_predictor=None) -> dict:
    """The ``run`` command. -> the ``done`` event (also emitted). Raises RunError.

    ``wrap_predictor(predictor) -> predictor`` lets tests put a fake in front of the network."""
    from engine.common.camera import crop_cam_to_full_translation, crop_points_to_image
    from engine.pipeline import (Batcher, Prefetch, StageTimes, StreamStats, crop_stream, fixed_stream,
                                 predict_stream, track_stream, until_truncated)

    t0 = time.monotonic()
    times, stats = StageTimes(), StreamStats()
    resolve_estimator(args)
    check_models_installed(args)
    if args.tracks:
        doc, tracks = _read_tracks(args.tracks)
        info, total = _open_video(args, (doc["frame_start"], doc["frame_stop"]))
    else:
        info, total = _open_video(args)
    _set_focal(args, info)
    people = None if args.people is None else set(args.people)
    if args.tracks:
        fixed = _fixed_boxes(args, info, total, doc, tracks)
        # the people with a box in the range (a track of the file can lie outside it)
        in_range = {tid for tid, tr in tracks.items()
                    if any(args.start <= f < args.start + total for f in tr.frames)}
        err = _no_person(in_range, args.people)
        if err is not None:
            raise err
        source_desc = {"tracks_file": os.path.abspath(args.tracks)}
    elif args.boxes:                       # a file read, not a model: checked before loading
        detector, det_desc = _make_detector(args)
        source_desc = {"detector": det_desc}
        _check_people_early(args, detector, total)
    if cancel["flag"]:
        raise Cancelled()

    def load():
        out = {}
        if not (args.tracks or args.boxes):
            out["detector"] = _make_detector(args)
        if cancel["flag"]:
            return out
        if args.estimator == "landmarks":
            out["follower"] = make_follower(args)
            if not cancel["flag"]:
                out["body"] = load_rig_body(args)
        else:
            out["predictor"] = make_predictor(args)
        if not cancel["flag"]:
            out["verifier"] = make_verifier(args)
        return out

    with times("load"):
        loaded = _load_abandonable(load, cancel)
    if "detector" in loaded:
        detector, det_desc = loaded["detector"]
        source_desc = {"detector": det_desc}
    if args.estimator == "landmarks":
        follower, prov = loaded["follower"]
        body = loaded["body"]
        prov["device"] = str(follower.landmarker.device)
    else:
        predictor, prov = loaded["predictor"]
        body = body_of(predictor.model)
        prov["device"] = str(predictor.device)
    prov.update(source_desc)
    if args.estimator != "landmarks" and wrap_predictor is not None:
        predictor = wrap_predictor(predictor)

    if cancel["flag"]:
        raise Cancelled()
    W, H, focal = info.width, info.height, args._focal
    records = {}

    def convert(entries, out):
        with times("convert"):
            sq = np.array([e[2] for e in entries])
            transl = crop_cam_to_full_translation(out["cam"], sq[:, :2], sq[:, 2], (W, H), focal)
            kp2d = crop_points_to_image(out["joints2d"], sq[:, :2], sq[:, 2])
            # the result format stores joints3d in the camera frame, translation included
            j3d = out["joints3d"] + transl[:, None]
            for i, (frame, box, square) in enumerate(entries):
                records.setdefault(box.id, []).append(
                    {"frame": frame, "box": square, "score": box.score, "interp": box.interpolated,
                     "rotmat": out["rotmat"][i], "betas": out["betas"][i], "cam": out["cam"][i],
                     "joints3d": j3d[i], "transl": transl[i], "kp2d": kp2d[i]})

    verifier = loaded.get("verifier")
    frames = _decoded(args, times)
    stream = until_truncated(frames, stats)
    if args.tracks:
        finalised = fixed_stream(stream, fixed, stats)
    else:
        finalised = track_stream(stream, detector, make_tracker(args, total), times, stats, verifier=verifier,
                                 fps=getattr(args, "_fps", 0.0), last=total - 1)
    progress.start("run", total)
    if args.estimator == "landmarks":
        from engine.landmarks.stream import fit_records, landmark_stream
        # whole frames wait here (the follower crops them itself): a short queue
        items = Prefetch(finalised, LANDMARK_QUEUE, times, "infer_wait", stop=lambda: cancel["flag"], name="people")
        try:
            outcome, observed = landmark_stream(items, follower, people, times, cancel=lambda: cancel["flag"],
                                                on_progress=progress.update)
        finally:
            items.close()
            frames.close()
        with times("fit"):
            # the tracker's minimum length, of the frames done (a cancelled run keeps short tracks)
            min_frames = 1 if args.tracks else min(tracker_params(args, total)["min_track_frames"],
                                                   max(outcome.frames_done, 1))
            records = fit_records(observed, outcome.frames_done, focal, (W / 2, H / 2), body, min_frames)
    else:
        batcher = Batcher(predictor, args.batch_size, times)
        items = Prefetch(crop_stream(finalised, people, times), max(32, 2 * args.batch_size), times, "infer_wait",
                         stop=lambda: cancel["flag"], name="people")
        try:
            outcome = predict_stream(items, batcher, convert, cancel=lambda: cancel["flag"],
                                     on_progress=progress.update)
        finally:
            items.close()
            frames.close()
    progress.update(outcome.frames_done, force=True)
    progress.close()
    for tid in drop_unverified(verifier, list(records)):   # no rig for what is not a person
        del records[tid]

    n, k = len(outcome.timestamps), outcome.frames_done
    if outcome.status == "cancelled" and k == 0:
        raise RunError(EXIT_CANCELLED, "cancelled", "cancelled before any frame was finished; no result written")
    if outcome.status == "complete":
        if n == 0:
            raise RunError(EXIT_VIDEO, "empty", f"no frames in the range [{args.start}, {args.stop}) of {args.video}")
        if not args.tracks:
            err = _no_person(stats.track_ids, args.people)
            if err is not None:
                raise err
            log(f"tracked {len(stats.track_ids)} person(s) over {n} frames: ids {sorted(stats.track_ids)}; "
                f"at most {stats.held_max} frames held for the tracker")
    stamps = _timestamps(outcome.timestamps, args.start, info.fps)
    refining = 0
    if args.estimator == "landmarks":
        from engine.landmarks.stream import masked_frames
        refining = masked_frames(records)
    if refining:    # the silhouette term: its own progress, and a cancel keeps what is refined
        progress.start("silhouette", refining)
        refined = [0]

        def on_chunk(frames):
            refined[0] += frames
            progress.update(refined[0])
    with times("write"):
        track_results = assemble(args, records, k, info.fps if info.fps > 0 else 30.0, body, (focal, (W / 2, H / 2)),
                                 times, lambda: cancel["flag"], on_chunk if refining else None, (W, H))
        if refining:
            progress.update(refined[0], force=True)
            progress.close()
        partial = outcome.status != "complete"
        if not partial and not track_results:   # e.g. --tracks whose chosen people lie outside the range
            seen = " (the landmark model saw no person in the tracked boxes)" \
                if args.estimator == "landmarks" or verifier is not None else ""
            raise RunError(EXIT_NO_PERSON, "no_person", f"no person to estimate{seen} in frames [{args.start}, "
                           f"{args.start + n}) of {args.video}")
        if not partial or k > 0:
            write(args, info, stamps, track_results, k, partial, prov, body)
    if outcome.status == "cancelled":
        # of the frames asked for, not of those decoded before the cancel
        log(f"cancelled: wrote a partial result with {k} of {max(total, n)} frames to {args.output}")
        raise RunError(EXIT_CANCELLED, "cancelled",
                       f"cancelled; partial result ({k} of {max(total, n)} frames) written to {args.output}")
    if outcome.status == "out_of_memory":
        written = f"partial result ({k} of {max(total, n)} frames) written to {args.output}" if k else "no result written"
        raise RunError(EXIT_MODEL, "out_of_memory", f"{outcome.message}; {written}. Free GPU memory or run "
                       f"with --device cpu")
    seconds = time.monotonic() - t0
    done = {"event": "done", "result": os.path.abspath(args.output), "tracks": sorted(track_results, key=int),
            "frames": n, "seconds": round(seconds, 3), "fps": round(n / max(seconds, 1e-9), 3),
            "stages": times.rounded(), "estimator": args._estimator_meta}
    if args.estimator != "landmarks":
        done["batch_size"] = batcher.batch_size
    progress.emit(done)
    log(f"wrote {args.output}: {len(track_results)} track(s), {n} frames")
    return done


# ----------------------------------------------------------------------------- analyze
def analyze(args, progress, cancel) -> dict:
    """The ``analyze`` command. -> the ``done`` event (also emitted). Raises RunError."""
    from engine.people.tracking import FinalFrame, tracks_from_frames
    from engine.people.tracks_file import tracks_document, write_tracks
    from engine.pipeline import StageTimes, StreamStats, track_stream, until_truncated

    t0 = time.monotonic()
    times, stats = StageTimes(), StreamStats()
    check_models_installed(args)
    info, total = _open_video(args)
    if cancel["flag"]:
        raise Cancelled()
    with times("load"):
        detector, det_desc, verifier = _load_abandonable(lambda: (*_make_detector(args), make_verifier(args)),
                                                         cancel)
    tracker = make_tracker(args, total)
    finals, stamps = [], []
    frames = _decoded(args, times)
    progress.start("analyze", total)
    try:
        for item in track_stream(until_truncated(frames, stats), detector, tracker, times, stats, keep_images=False,
                                 stop=lambda: cancel["flag"], on_frame=progress.update, verifier=verifier,
                                 fps=getattr(args, "_fps", 0.0), last=total - 1):
            finals.append(FinalFrame(item.index, item.boxes))
            stamps.append(item.timestamp)
    finally:
        frames.close()
    progress.update(len(stamps), force=True)
    progress.close()
    n = len(stamps)
    if n == 0:
        if stats.stopped:
            raise RunError(EXIT_CANCELLED, "cancelled", "cancelled before any frame was analysed; nothing written")
        raise RunError(EXIT_VIDEO, "empty", f"no frames in the range [{args.start}, {args.stop}) of {args.video}")
    tracks = tracks_from_frames(finals)
    for tid in drop_unverified(verifier, list(tracks)):
        del tracks[tid]
    if not stats.stopped:
        err = _no_person(set(tracks), None)
        if err is not None:
            raise err
    doc = tracks_document(
        tracks, video=_video_meta(args, info, info.frame_count),
        frame_start=args.start, timestamps=_timestamps(stamps, args.start, info.fps), detector=det_desc,
        tracker=dataclasses.asdict(tracker.params), partial=stats.stopped)
    with times("write"):
        try:
            write_tracks(args.output, doc)
        except OSError as e:
            full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", None))
            raise RunError(EXIT_WRITE, "disk_full" if full else "write_failed",
                           f"{args.output}: could not write the tracks ({e})") from None
    if stats.stopped:
        raise RunError(EXIT_CANCELLED, "cancelled", f"cancelled; tracks of the first {n} frames written to "
                       f"{args.output}")
    seconds = time.monotonic() - t0
    done = {"event": "done", "result": os.path.abspath(args.output), "tracks": [str(t) for t in tracks],
            "frames": n, "seconds": round(seconds, 3), "fps": round(n / max(seconds, 1e-9), 3),
            "stages": times.rounded()}
    progress.emit(done)
    log(f"wrote {args.output}: {len(tracks)} track(s) over {n} frames: " + ", ".join(
        f"{t} [{args.start + tr.frames[0]}..{args.start + tr.frames[-1]}]" for t, tr in tracks.items()))
    return done


# ----------------------------------------------------------------------------- main
def main(argv=None, command: str = "run") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # nothing but progress JSON goes to stdout
    cancel = {"flag": False}

    def on_signal(signum, _frame):
        if not cancel["flag"]:
            log(f"received {signal.Signals(signum).name}: stopping after the current batch")
        cancel["flag"] = True

    try:
        # first thing: a signal during start-up is a cancel too, not a KeyboardInterrupt
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        parser = build_parser(command)
        if "jsonl" in argv:
            parser.jsonl_stdout = real_stdout
        args = parser.parse_args(argv)
        progress = Progress(args.progress, real_stdout)

        from engine.video.decode import VideoError
        try:
            (analyze if command == "analyze" else run)(args, progress, cancel)
            return EXIT_OK
        except Cancelled:
            e = RunError(EXIT_CANCELLED, "cancelled", "cancelled before processing started; nothing written")
        except RunError as err:
            e = err
        except VideoError as err:
            e = RunError(EXIT_VIDEO, err.code, err.message)
        progress.close()
        log(f"error: {e.message}")
        progress.emit({"event": "error", "code": e.code, "message": e.message})
        return e.exit_code
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - a bug: keep the traceback
        report_internal_error(err, real_stdout, "jsonl" in argv)
        return EXIT_INTERNAL
    finally:
        sys.stdout = real_stdout


if __name__ == "__main__":
    sys.exit(main())
