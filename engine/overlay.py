"""``python -m engine.overlay``: draw posed bodies over the video (a preview of the fit).

    python -m engine.overlay INPUT.npz --video-out overlay.mp4 [--png-dir DIR] [--png-count 4]
        [--max-width 1280] [--alpha 0.6] [--progress tty|jsonl]

The Blender extension evaluates the posed meshes in its scene, projects their vertices with
the scene camera and writes INPUT.npz (plain arrays, no pickles); this command, in the engine
environment (OpenCV, video decoding), fills the triangles over the video frames: no GPU and no
renderer needed. Triangles are drawn far to near with back faces culled and flat shading, each
person in its own colour, blended over the frame.

INPUT.npz keys (K = overlay frames, V = vertices, F = triangles):

    meta/json               (B,)       uint8    {"video": path, "width": W, "height": H, "fps": fps,
                                                 "people": ["1", ...]}
    video_frames            (K,)       int64    video frame index (0-based, in the file) per frame
    people/<id>/faces       (F, 3)     int64    triangles
    people/<id>/uv          (K, V, 2)  float32  pixels (x right, y down, origin at the top-left corner)
    people/<id>/cam         (K, V, 3)  float32  camera frame, OpenCV axes (x right, y down, z forward), metres
    people/<id>/present     (K,)       bool     the person has data at that frame

Outputs: an MP4 (``mp4v``; ``.avi`` with MJPG where the MP4 writer is unavailable) at the
video's frame rate, plus ``--png-count`` evenly spaced PNG stills in ``--png-dir``.
Progress and exit codes follow ``python -m engine run`` (jsonl events; 2 usage, 3 video,
6 cannot write, 130 cancelled).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_USAGE, EXIT_VIDEO, EXIT_WRITE, EXIT_CANCELLED = 0, 2, 3, 6, 130
PALETTE_RGB = ((90, 170, 255), (255, 150, 70), (120, 220, 120), (230, 110, 200), (240, 220, 90),
               (110, 220, 230))


class OverlayError(Exception):
    def __init__(self, exit_code: int, code: str, message: str):
        super().__init__(message)
        self.exit_code, self.code, self.message = exit_code, code, message


def read_input(path) -> dict:
    """The projected meshes written by the extension (validated shapes)."""
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise OverlayError(EXIT_USAGE, "usage", f"{path}: not a readable overlay input ({exc})") from None
    try:
        meta = json.loads(bytes(arrays["meta/json"]).decode("utf-8"))
        frames = arrays["video_frames"].astype(np.int64)
        people = {}
        for pid in meta["people"]:
            p = f"people/{pid}/"
            faces, uv, cam, present = (arrays[p + "faces"], arrays[p + "uv"], arrays[p + "cam"],
                                       arrays[p + "present"].astype(bool))
            K = len(frames)
            if uv.shape[0] != K or cam.shape[:2] != uv.shape[:2] or present.shape != (K,) or faces.ndim != 2:
                raise ValueError(f"person {pid}: inconsistent shapes")
            if faces.size and (faces.min() < 0 or faces.max() >= uv.shape[1]):
                raise ValueError(f"person {pid}: face index out of range")
            people[pid] = {"faces": faces.astype(np.int64), "uv": uv, "cam": cam, "present": present}
    except (KeyError, ValueError, TypeError) as exc:
        raise OverlayError(EXIT_USAGE, "usage", f"{path}: invalid overlay input ({exc})") from None
    return {"meta": meta, "frames": frames, "people": people}


def draw_person(image: np.ndarray, layer: np.ndarray, mask: np.ndarray, faces, uv, cam, color,
                scale: float = 1.0) -> int:
    """Fill the visible triangles of one posed mesh into ``layer`` (far to near); -> count."""
    import cv2

    tri_cam = cam[faces]                                   # (F, 3, 3)
    centroid = tri_cam.mean(axis=1)
    normal = np.cross(tri_cam[:, 1] - tri_cam[:, 0], tri_cam[:, 2] - tri_cam[:, 0])
    facing = -(normal * centroid).sum(axis=1)              # > 0: the face looks at the camera
    keep = (facing > 0) & (centroid[:, 2] > 1e-3)
    if not np.any(keep):
        return 0
    norm = np.linalg.norm(normal[keep], axis=1) * np.linalg.norm(centroid[keep], axis=1)
    shade = 0.35 + 0.65 * np.clip(facing[keep] / np.maximum(norm, 1e-12), 0.0, 1.0)
    order = np.argsort(-centroid[keep, 2])                 # far first
    pts = np.round(uv[faces[keep]] * scale * 16.0).astype(np.int32)[order]  # 4 fractional bits
    shade = shade[order]
    base = np.asarray(color, np.float64)
    limit = 1 << 26
    for tri, s in zip(pts, shade):
        if np.abs(tri).max() > limit:
            continue
        c = tuple(int(v) for v in base * s)
        cv2.fillConvexPoly(layer, tri, c, lineType=cv2.LINE_8, shift=4)
        cv2.fillConvexPoly(mask, tri, 255, lineType=cv2.LINE_8, shift=4)
    return int(len(pts))


def render(data: dict, video_out, png_dir=None, png_count: int = 4, max_width: int = 1280,
           alpha: float = 0.6, progress=None, cancel=None) -> dict:
    """Draw every overlay frame; -> {"video": path, "pngs": [...], "frames": K}."""
    import cv2

    from engine.video.decode import VideoError, iter_frames

    meta, frames, people = data["meta"], data["frames"], data["people"]
    K = len(frames)
    if K == 0:
        raise OverlayError(EXIT_USAGE, "usage", "the overlay input has no frames")
    width, height = int(meta["width"]), int(meta["height"])
    scale = min(1.0, max_width / float(width)) if max_width else 1.0
    out_w, out_h = int(round(width * scale)) // 2 * 2, int(round(height * scale)) // 2 * 2
    fps = float(meta.get("fps") or 25.0)
    video_out = Path(video_out)
    video_out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(video_out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (out_w, out_h))
    if not writer.isOpened():
        video_out = video_out.with_suffix(".avi")
        writer = cv2.VideoWriter(str(video_out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (out_w, out_h))
        if not writer.isOpened():
            raise OverlayError(EXIT_WRITE, "write_failed", f"cannot write a video to {video_out}")
    stills = set(np.unique(np.linspace(0, K - 1, max(0, min(png_count, K))).round().astype(int)).tolist()) \
        if png_dir and png_count > 0 else set()
    pngs = []
    if stills:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
    wanted = {int(f): i for i, f in enumerate(frames)}
    colors = {pid: PALETTE_RGB[i % len(PALETTE_RGB)] for i, pid in enumerate(people)}
    written = 0
    try:
        for frame in iter_frames(meta["video"], start=int(frames.min()), stop=int(frames.max()) + 1):
            if cancel is not None and cancel():
                raise OverlayError(EXIT_CANCELLED, "cancelled", f"cancelled after {written} of {K} frames")
            k = wanted.get(frame.index)
            if k is None:
                continue
            image = frame.image
            if scale != 1.0:
                image = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)
            elif image.shape[:2] != (out_h, out_w):
                image = image[:out_h, :out_w]
            layer = np.zeros_like(image)
            mask = np.zeros(image.shape[:2], np.uint8)
            for pid, p in people.items():
                if p["present"][k]:
                    draw_person(image, layer, mask, p["faces"], p["uv"][k], p["cam"][k], colors[pid], scale)
            m = (mask > 0)[..., None]
            blended = np.where(m, (image * (1 - alpha) + layer * alpha).astype(np.uint8), image)
            bgr = cv2.cvtColor(blended, cv2.COLOR_RGB2BGR)
            writer.write(bgr)
            if k in stills:
                path = Path(png_dir) / f"overlay_{int(frame.index):05d}.png"
                if not cv2.imwrite(str(path), bgr):
                    raise OverlayError(EXIT_WRITE, "write_failed", f"cannot write {path}")
                pngs.append(str(path))
            written += 1
            if progress is not None:
                progress(written, K)
    except VideoError as exc:
        if written == 0 or exc.code != "truncated":
            raise OverlayError(EXIT_VIDEO, exc.code, exc.message) from None
    finally:
        writer.release()
    if written == 0:
        raise OverlayError(EXIT_VIDEO, "empty", f"none of the overlay frames could be read from {meta['video']}")
    return {"video": str(video_out), "pngs": pngs, "frames": written}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.overlay", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="projected meshes (.npz) written by the extension")
    parser.add_argument("--video-out", required=True, help="MP4 to write")
    parser.add_argument("--png-dir", help="folder for PNG stills")
    parser.add_argument("--png-count", type=int, default=4, help="number of evenly spaced PNG stills")
    parser.add_argument("--max-width", type=int, default=1280, help="downscale wider videos (0: never)")
    parser.add_argument("--alpha", type=float, default=0.6, help="body opacity over the footage")
    parser.add_argument("--progress", choices=("tty", "jsonl"), default="tty")
    args = parser.parse_args(argv)
    jsonl = args.progress == "jsonl"

    def emit(obj):
        if jsonl:
            print(json.dumps(obj), flush=True)

    cancelled = {"flag": False}

    def on_signal(signum, _frame):
        cancelled["flag"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def progress(done, total):
        emit({"event": "progress", "stage": "overlay", "done": done, "total": total})
        if not jsonl:
            print(f"\roverlay: {done}/{total}", end="", file=sys.stderr, flush=True)

    try:
        out = render(read_input(args.input), args.video_out, args.png_dir, args.png_count, args.max_width,
                     args.alpha, progress, lambda: cancelled["flag"])
    except OverlayError as exc:
        print(f"\nerror: {exc.message}", file=sys.stderr, flush=True)
        emit({"event": "error", "code": exc.code, "message": exc.message})
        return exc.exit_code
    except OSError as exc:
        msg = f"cannot write the overlay ({exc})"
        print(f"\nerror: {msg}", file=sys.stderr, flush=True)
        emit({"event": "error", "code": "write_failed", "message": msg})
        return EXIT_WRITE
    if not jsonl:
        print(f"\nwrote {out['video']} ({out['frames']} frames) and {len(out['pngs'])} PNG stills", file=sys.stderr)
    emit({"event": "done", "result": os.path.abspath(out["video"]), "pngs": out["pngs"], "frames": out["frames"]})
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
