"""``python -m engine run VIDEO -o RESULT.npz``: video in, SMPL motion result out.

Pipeline: probe -> pass 1 (decode, detect, track; streaming) -> pass 2 (decode again, crop
every tracked person per frame exactly like the official demo, batch the crops, predict,
convert to full-image camera translation / image-pixel keypoints / continuous quaternions)
-> per-track smoothing -> atomic ``write_result``.

Usage::

    python -m engine run VIDEO -o OUT.npz [--checkpoint PATH] [--body PATH]
        [--device auto|cuda|mps|cpu] [--batch-size 16] [--start N] [--stop N]
        [--people all|1,3] [--focal-px F] [--smoothing none|light|default|strong]
        [--boxes FILE] [--progress tty|jsonl]

Without ``--checkpoint`` an UNTRAINED network (seeded ResNet-50 on the mannequin body, or on
``--body``) is used, with a warning: the pipeline runs end to end but the poses mean nothing.

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

    {"event": "progress", "stage": "track"|"infer", "done": k, "total": n, "fps": x, "eta_s": y}
    {"event": "done", "result": path, "tracks": ["1", ...], "frames": n, "seconds": t}
    {"event": "error", "code": "...", "message": "..."}

``--progress tty`` (default) draws a progress line on stderr (tqdm when installed).

Exit codes:
    0    ok
    1    internal error (a bug: traceback on stderr)
    2    usage error (bad arguments)
    3    video error (missing, unreadable, not a video, empty); JSON code = VideoError.code
    4    no person found (no track, or none of the ``--people`` ids)
    5    model / checkpoint / body model / device error
    6    cannot write the result (disk full, folder missing, not writable)
    130  cancelled (SIGINT / SIGTERM). When cancelled during inference, a valid partial
         result is written first (meta.partial = true, meta.frames_done = k: exactly frames
         0 .. k-1 are in it).
Expected errors print one clear line (``error: ...``) on stderr, no traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time

import numpy as np

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_VIDEO, EXIT_NO_PERSON, EXIT_MODEL, EXIT_WRITE = 0, 1, 2, 3, 4, 5, 6
EXIT_CANCELLED = 130
DEFAULT_FOV_DEG = 55.0
SMOOTHING_CHOICES = ("none", "light", "default", "strong")
UNTRAINED_SEED = 0


class RunError(Exception):
    """An expected failure: exit code, machine code and a one-line message."""

    def __init__(self, exit_code: int, code: str, message: str):
        super().__init__(message)
        self.exit_code, self.code, self.message = exit_code, code, message


class Cancelled(Exception):
    pass


# ----------------------------------------------------------------------------- progress
class Progress:
    def __init__(self, mode: str, stdout):
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
        if self.mode == "tty":
            try:
                from tqdm import tqdm
                self._bar = tqdm(total=total, desc=stage, unit="frame" if stage == "track" else "crop",
                                 file=sys.stderr, leave=True)
            except Exception:  # noqa: BLE001 - tqdm is optional
                self._bar = None

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()
            return
        if not force and now - self._last < 0.2 and self._last:
            return
        first = self._last == 0.0
        self._last = now
        dt = max(now - self._t0, 1e-9)
        rate = done / dt
        total = self._total
        eta = (total - done) / rate if rate > 0 else None
        if self.mode == "jsonl":
            self.emit({"event": "progress", "stage": self._stage, "done": int(done), "total": int(total),
                       "fps": round(rate, 3), "eta_s": None if eta is None else round(eta, 2)})
        elif self.mode == "tty" and (force or not first or done):
            print(f"\r{self._stage}: {done}/{total} ({rate:.1f}/s)", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "tty" and self._stage is not None:
            print(file=sys.stderr)
        self._stage = None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- arguments
class _Parser(argparse.ArgumentParser):
    jsonl_stdout = None

    def error(self, message):  # usage errors: exit 2, JSON error in jsonl mode
        self.print_usage(sys.stderr)
        log(f"error: {message}")
        if self.jsonl_stdout is not None:
            self.jsonl_stdout.write(json.dumps({"event": "error", "code": "usage", "message": message}) + "\n")
            self.jsonl_stdout.flush()
        raise SystemExit(EXIT_USAGE)


def _people(text: str):
    if text == "all":
        return None
    try:
        ids = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--people takes 'all' or track ids like 1,3, not {text!r}")
    if not ids:
        raise argparse.ArgumentTypeError("--people: no track id given")
    return ids


def _nonneg(text):
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


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


def build_parser(prog="python -m engine run") -> _Parser:
    p = _Parser(prog=prog, description="Estimate SMPL motion for the people in a video.")
    p.add_argument("video", help="input video file")
    p.add_argument("-o", "--output", required=True, help="result file (.npz), written atomically")
    p.add_argument("--checkpoint", help="PyMAF checkpoint (default: an UNTRAINED network, with a warning)")
    p.add_argument("--body", help="SMPL body model (.pkl/.npz/checkpoint); for the untrained network or "
                                  "checkpoints that embed none (default: the mannequin)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--start", type=_nonneg, default=0, help="first video frame (0-based)")
    p.add_argument("--stop", type=_nonneg, default=None, help="stop before this video frame")
    p.add_argument("--people", type=_people, default=None, help="'all' (default) or track ids, e.g. 1,3")
    p.add_argument("--focal-px", type=_positive_float, default=None,
                   help=f"focal length in image pixels (default: {DEFAULT_FOV_DEG:g} deg horizontal FOV)")
    p.add_argument("--smoothing", choices=SMOOTHING_CHOICES, default="default")
    p.add_argument("--boxes", help="person boxes per frame (JSON or CSV, BoxesFromFile) instead of detection")
    p.add_argument("--progress", choices=("tty", "jsonl"), default="tty")
    return p


# ----------------------------------------------------------------------------- model
def load_model(args):
    """-> (PyMAF, provenance dict). Raises RunError(5)."""
    from engine.body.loading import BodyModelError, load_body_model
    from engine.model.checkpoint import CheckpointError, load_pymaf

    try:
        body = load_body_model(args.body) if args.body else None
        if args.checkpoint:
            model, info = load_pymaf(args.checkpoint, body=body)
            prov = {"checkpoint": os.path.abspath(args.checkpoint), "untrained": False,
                    "config": info.get("config"), "checkpoint_kind": info.get("kind")}
        else:
            import torch

            from engine.model.pymaf import ModelConfig, PyMAF
            if body is None:
                from engine.body.mannequin import build_mannequin
                body = build_mannequin()
            log("WARNING: no --checkpoint given: using an UNTRAINED network (seeded ResNet-50 on the "
                f"{'given body model' if args.body else 'mannequin'}); the poses are meaningless. "
                "A trained default checkpoint arrives with a later release.")
            torch.manual_seed(UNTRAINED_SEED)
            model = PyMAF(body, ModelConfig()).eval()
            prov = {"checkpoint": None, "untrained": True, "seed": UNTRAINED_SEED}
        prov["body"] = os.path.abspath(args.body) if args.body else ("embedded" if args.checkpoint else "mannequin")
        return model, prov
    except (CheckpointError, BodyModelError) as e:
        raise RunError(EXIT_MODEL, "model", f"{e}".splitlines()[0]) from None
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise RunError(EXIT_MODEL, "model", f"could not load the model: {type(e).__name__}: {e}"
                       .splitlines()[0]) from None


# ----------------------------------------------------------------------------- passes
def pass_track(args, info, detector, progress, cancel):
    """-> (timestamps (N,), tracks {id: Track}, N). Frame indices relative to args.start."""
    from engine.people.tracking import track
    from engine.video.decode import VideoError, iter_frames

    stop = args.stop if args.stop is not None else info.frame_count
    total = max(0, min(stop, info.frame_count) - args.start) if info.frame_count else 0
    progress.start("track", total)
    dets, stamps = [], []
    try:
        for fr in iter_frames(args.video, start=args.start, stop=args.stop):
            if cancel["flag"]:
                raise Cancelled()
            dets.append(detector.detect(fr.image, index=fr.index))
            stamps.append(fr.timestamp)
            progress.update(len(dets))
    except VideoError as e:
        if e.code != "truncated" or not dets:
            raise
        log(f"warning: {e.message}; using the {len(dets)} frames that decode")
    progress.update(len(dets), force=True)
    progress.close()
    n = len(dets)
    if n == 0:
        raise RunError(EXIT_VIDEO, "empty", f"no frames in the range [{args.start}, {args.stop}) of {args.video}")
    stamps = np.asarray(stamps, np.float64)
    if np.any(np.diff(stamps) <= 0):  # broken container timestamps: fall back to the nominal rate
        fps = info.fps if info.fps > 0 else 30.0
        log("warning: the video's timestamps are not increasing; using frame / fps")
        stamps = (args.start + np.arange(n)) / fps
    tracks = track(dets, min_track_frames=min(10, n))
    return stamps, tracks, n


def pass_infer(args, predictor, tracks, n, progress, cancel, stamps):
    """Crop, predict, convert. -> (per-track dict of lists, frames_done)."""
    import torch  # noqa: F401 - predictor already imported it

    from engine.common.camera import crop_cam_to_full_translation, crop_points_to_image
    from engine.preprocess import crop_person
    from engine.video.decode import VideoError, iter_frames

    # frame -> [(track id, row in track)]
    per_frame = {}
    for tid, tr in tracks.items():
        for row, f in enumerate(tr.frames):
            per_frame.setdefault(int(f), []).append((tid, row))
    total = sum(len(v) for v in per_frame.values())
    out = {tid: [] for tid in tracks}  # tid -> list of (row, dict)
    boxes = {tid: tr.boxes for tid, tr in tracks.items()}
    pending = []  # (tid, row, frame, crop)
    done_crops = 0
    progress.start("infer", total)

    def flush(count):
        nonlocal done_crops
        batch, pending[:] = pending[:count], pending[count:]
        crops = np.stack([b[3] for b in batch])
        fin = predictor.predict(crops).final
        rot = fin.rotmat.float().cpu().numpy()
        betas = fin.betas.float().cpu().numpy()
        cam = fin.cam.float().cpu().numpy()
        j3d = fin.joints3d.float().cpu().numpy()
        j2d = fin.joints2d.float().cpu().numpy()
        for i, (tid, row, f, _) in enumerate(batch):
            box = boxes[tid][row]
            transl = crop_cam_to_full_translation(cam[i], box[:2], box[2], (W, H), focal)
            # the result format stores joints3d in the camera frame, translation included
            out[tid].append((row, {"rotmat": rot[i], "betas": betas[i], "cam": cam[i],
                                   "joints3d": j3d[i] + transl, "transl": transl,
                                   "kp2d": crop_points_to_image(j2d[i], box[:2], box[2])}))
        done_crops += len(batch)
        progress.update(done_crops, force=done_crops == len(batch) or done_crops == total)

    W, H, focal = args._width, args._height, args._focal
    frames_done = 0
    rel = -1
    last_needed = max(per_frame) if per_frame else -1
    try:
        for fr in iter_frames(args.video, start=args.start, stop=args.start + n):
            rel = fr.index - args.start
            if rel > last_needed:
                break
            for tid, row in per_frame.get(rel, ()):
                c = boxes[tid][row]
                pending.append((tid, row, rel, crop_person(fr.image, c[:2], c[2])))
            while len(pending) >= args.batch_size:
                flush(args.batch_size)
                if cancel["flag"]:
                    raise Cancelled()
            if cancel["flag"]:
                raise Cancelled()
        if pending:
            flush(len(pending))
        frames_done = n
    except Cancelled:
        # every crop of frames <= rel was queued; the unpredicted ones are dropped
        frames_done = min(p[2] for p in pending) if pending else rel + 1
        progress.close()
        return out, frames_done, True
    except VideoError as e:
        if e.code != "truncated":
            raise
        log(f"warning: {e.message}")
        if pending:
            flush(len(pending))
        frames_done = n
    progress.close()
    return out, frames_done, False


def assemble(args, tracks, out, frames_done, fps):
    """-> {str id: TrackResult}, only frames < frames_done, smoothed per the preset."""
    from engine.common import smoothing as sm
    from engine.common.result_schema import TrackResult

    params = sm.PRESETS[args.smoothing]
    result = {}
    for tid, items in out.items():
        tr = tracks[tid]
        items = sorted((r, d) for r, d in items if int(tr.frames[r]) < frames_done)
        if not items:
            continue
        rows = np.array([r for r, _ in items])
        frames = tr.frames[rows].astype(np.int64)
        R = np.stack([d["rotmat"] for _, d in items]).astype(np.float64)
        transl = np.stack([d["transl"] for _, d in items]).astype(np.float64)
        betas = np.stack([d["betas"] for _, d in items]).astype(np.float64)
        if not params.is_identity and len(frames) > 1:
            R = sm.smooth_track(frames, R, fps, params)
            transl = sm.smooth_track(frames, transl, fps, params)
            betas = sm.smooth_track(frames, betas, fps, sm.BETAS_PARAMS,
                                    smoother=lambda seg, ts, p: sm.smooth_betas(seg, ts, p))
        result[str(tid)] = TrackResult.from_rotmats(
            frames=frames, transl=transl, global_orient_rotmat=R[:, 0], body_pose_rotmat=R[:, 1:],
            betas=betas, confidence=tr.scores[rows], interpolated=tr.interpolated[rows],
            betas_robust=sm.robust_betas(betas), boxes=tr.boxes[rows],
            cam_crop=np.stack([d["cam"] for _, d in items]),
            keypoints2d=np.stack([d["kp2d"] for _, d in items]),
            joints3d=np.stack([d["joints3d"] for _, d in items]))
    return result


def write(args, info, stamps, n, track_results, frames_done, partial, prov):
    from engine.common import smoothing as sm
    from engine.common.result_schema import MotionResult, ResultError, make_meta, write_result

    p = sm.PRESETS[args.smoothing]
    smoothing = None if p.is_identity else {"preset": args.smoothing, "min_cutoff": p.min_cutoff,
                                            "beta": p.beta, "d_cutoff": p.d_cutoff, "zero_phase": p.zero_phase}
    meta = make_meta(
        video={"path": os.path.abspath(args.video), "width": info.width, "height": info.height,
               "fps": info.fps, "frame_count": n},
        camera={"focal_px": float(args._focal), "principal_point": [info.width / 2, info.height / 2]},
        partial=partial, frames_done=int(frames_done), provenance=prov, smoothing=smoothing,
        track_ids=sorted(track_results, key=int), frame_start=args.start,
        source_frame_count=info.frame_count, focal_source=args._focal_source)
    res = MotionResult(meta=meta, tracks=track_results, timestamps=stamps)
    try:
        write_result(res, args.output)
    except ResultError as e:
        code = "disk_full" if "disk space" in str(e) else "write_failed"
        raise RunError(EXIT_WRITE, code, str(e)) from None


def _check_writable(path):
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise RunError(EXIT_WRITE, "write_failed", f"{path}: is a directory")
    if not os.path.isdir(folder):
        raise RunError(EXIT_WRITE, "write_failed", f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise RunError(EXIT_WRITE, "write_failed", f"{path}: folder {folder} is not writable")


# ----------------------------------------------------------------------------- main
def run(args, progress, cancel) -> int:
    from engine.video.decode import probe

    t0 = time.monotonic()
    if args.stop is not None and args.stop <= args.start:
        raise RunError(EXIT_USAGE, "usage", f"--stop ({args.stop}) must be greater than --start ({args.start})")
    _check_writable(args.output)
    info = probe(args.video)
    args._width, args._height = info.width, info.height
    if args.focal_px is not None:
        args._focal, args._focal_source = float(args.focal_px), "--focal-px"
    else:
        from engine.common.camera import focal_from_fov
        args._focal = float(focal_from_fov(DEFAULT_FOV_DEG, info.width))
        args._focal_source = f"default {DEFAULT_FOV_DEG:g} deg horizontal FOV"
    log(f"video: {info.width}x{info.height}, {info.fps:.3f} fps, {info.frame_count} frames; "
        f"focal {args._focal:.1f} px ({args._focal_source})")

    if args.boxes:
        from engine.people.detect import BoxesFromFile
        try:
            detector = BoxesFromFile(args.boxes)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise RunError(EXIT_USAGE, "usage", f"--boxes {args.boxes}: cannot read it ({e})") from None
    else:
        from engine.people.detect import HOGDetector
        detector = HOGDetector()

    stamps, tracks, n = pass_track(args, info, detector, progress, cancel)
    found = sorted(tracks)
    if args.people is not None:
        missing = [i for i in args.people if i not in tracks]
        if missing:
            log(f"warning: no track with id {', '.join(map(str, missing))} (found: {found or 'none'})")
        tracks = {i: t for i, t in tracks.items() if i in args.people}
    if not tracks:
        raise RunError(EXIT_NO_PERSON, "no_person",
                       "no person found in the video" if not found else
                       f"none of the requested people {args.people} were found (tracks: {found})")
    log(f"tracked {len(tracks)} person(s) over {n} frames: ids {sorted(tracks)}")

    model, prov = load_model(args)
    from engine.model.inference import Predictor
    try:
        predictor = Predictor(model, device=args.device)
    except (ValueError, RuntimeError) as e:
        raise RunError(EXIT_MODEL, "device", str(e).splitlines()[0]) from None
    log(f"device: {predictor.device}")

    out, frames_done, cancelled = pass_infer(args, predictor, tracks, n, progress, cancel, stamps)
    fps = info.fps if info.fps > 0 else 30.0
    track_results = assemble(args, tracks, out, frames_done, fps)
    write(args, info, stamps, n, track_results, frames_done, cancelled, prov)
    if cancelled:
        log(f"cancelled: wrote a partial result with {frames_done} of {n} frames to {args.output}")
        raise RunError(EXIT_CANCELLED, "cancelled",
                       f"cancelled; partial result ({frames_done} of {n} frames) written to {args.output}")
    progress.emit({"event": "done", "result": os.path.abspath(args.output),
                   "tracks": sorted(track_results, key=int), "frames": n,
                   "seconds": round(time.monotonic() - t0, 3)})
    log(f"wrote {args.output}: {len(track_results)} track(s), {n} frames")
    return EXIT_OK


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # nothing but progress JSON goes to stdout
    try:
        parser = build_parser()
        if "jsonl" in argv:
            parser.jsonl_stdout = real_stdout
        args = parser.parse_args(argv)
        progress = Progress(args.progress, real_stdout)
        cancel = {"flag": False}

        def on_signal(signum, _frame):
            if not cancel["flag"]:
                log(f"received {signal.Signals(signum).name}: stopping after the current batch")
            cancel["flag"] = True

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

        from engine.video.decode import VideoError
        try:
            return run(args, progress, cancel)
        except Cancelled:
            e = RunError(EXIT_CANCELLED, "cancelled", "cancelled before inference; no result written")
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
        import traceback
        traceback.print_exc()
        if "jsonl" in argv:
            real_stdout.write(json.dumps({"event": "error", "code": "internal",
                                          "message": f"{type(err).__name__}: {err}"}) + "\n")
            real_stdout.flush()
        return EXIT_INTERNAL
    finally:
        sys.stdout = real_stdout


if __name__ == "__main__":
    sys.exit(main())
