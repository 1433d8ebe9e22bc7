"""``python -m engine.overlay``: draw posed bodies over the video (a preview of the fit).

    python -m engine.overlay INPUT --video-out overlay.mp4 [--png-dir DIR] [--png-count 4]
        [--max-width 1280] [--alpha 0.6] [--progress tty|jsonl]

The Blender extension evaluates the posed meshes in its scene, projects their vertices with
the scene camera and writes the INPUT folder (plain ``.npy`` arrays, no pickles), one frame at
a time; this command, in the engine environment (OpenCV, video decoding), fills the triangles
over the video frames: no GPU and no renderer needed. Triangles are drawn far to near with back
faces culled and flat shading, each person in its own colour, blended over the frame.

INPUT layout (K = overlay frames, P = frames where that person is drawn, V = vertices,
F = triangles; every ``.npy`` is memory-mapped, so memory stays at about one frame's worth):

    meta.json               {"format": "pymaf-overlay-input", "version": 2, "video": path,
                             "width": W, "height": H, "fps": fps, "people": ["1", "2", ...]}
    video_frames.npy        (K,)       int64    video frame index (0-based, in the file) of each
                                                overlay frame, strictly increasing
    people/<id>/faces.npy   (F, 3)     int64    triangles (vertex indices)
    people/<id>/frames.npy  (P,)       int64    indices into video_frames where this person is
                                                drawn, strictly increasing
    people/<id>/uv.npy      (P, V, 2)  float32  pixels (x right, y down, origin at the top-left corner)
    people/<id>/cam.npy     (P, V, 3)  float32  camera frame, OpenCV axes (x right, y down,
                                                z forward), metres
    people/<id>/color.npy   (3,)       uint8    RGB colour of this person (optional: otherwise
                                                the palette, by the person's place in "people")

Person ids are plain names (letters, digits, ``_ . -``; not only dots). Index arrays may be
any integer type and coordinates any float type; anything else is refused (exit 2).

Outputs: a video at the video's frame rate, H.264 (``avc1``) in the ``--video-out`` file where
this OpenCV build can write it, else MPEG-4 Part 2 (``mp4v``) in the same file, else Motion
JPEG in an ``.avi`` next to it; plus ``--png-count`` evenly spaced PNG stills in ``--png-dir``.
Every output is written under a temporary name (``.<stem>.partial-XXXXXXXX<ext>``) in its
folder and renamed onto its final name only once the whole run has succeeded, so a cancelled
or failed run leaves earlier outputs untouched and no partial files behind. Files get the
permissions of a plain ``open()`` (``0o666 & ~umask``).

Progress and exit codes follow ``python -m engine run`` (jsonl events; 2 usage, 3 video,
6 cannot write, 130 cancelled). The final event is ``{"event": "done", "result": video path,
"pngs": [...], "frames": n, "codec": "h264" | "mp4v" | "mjpg"}`` plus a ``"note"`` when the
video is not H.264 (what it will and will not play in).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from engine.common.atomic import create_temp, fsync_dir   # numpy-free, torch-free
from engine.common.palette import person_color_srgb      # the colours Blender gives the bodies

EXIT_OK, EXIT_USAGE, EXIT_VIDEO, EXIT_WRITE, EXIT_CANCELLED = 0, 2, 3, 6, 130
INPUT_FORMAT, INPUT_VERSION = "pymaf-overlay-input", 2
PERSON_ID = re.compile(r"[A-Za-z0-9_.-]+")
# (codec name, fourcc, container suffix or None for --video-out's own), best first
CODECS = (("h264", "avc1", None), ("mp4v", "mp4v", None), ("mjpg", "MJPG", ".avi"))
CODEC_NOTES = {
    "mp4v": "this OpenCV build cannot write H.264; the preview is MPEG-4 Part 2 "
            "(plays in VLC and Blender, not in most web browsers)",
    "mjpg": "this OpenCV build cannot write H.264 or MPEG-4 video; the preview is Motion JPEG in an "
            ".avi file (large; plays in VLC and Blender, not in web browsers)",
}


class OverlayError(Exception):
    def __init__(self, exit_code: int, code: str, message: str):
        super().__init__(message)
        self.exit_code, self.code, self.message = exit_code, code, message


def _usage(message: str) -> OverlayError:
    return OverlayError(EXIT_USAGE, "usage", message)


# ----------------------------------------------------------------------------- input


def read_input(folder) -> dict:
    """The projected meshes written by the extension, validated; the per-frame arrays stay
    memory-mapped. -> {"meta": dict, "frames": (K,) int64, "people": {id: {"faces": (F, 3) int64,
    "frames": (P,) int64, "uv": (P, V, 2), "cam": (P, V, 3), "color": (r, g, b)}}}"""
    folder = Path(folder)
    if not folder.is_dir():
        raise _usage(f"{folder}: not an overlay input folder (the extension writes a folder with meta.json)")
    meta = _read_meta(folder / "meta.json")
    frames = _index_array(_load_npy(folder / "video_frames.npy"), folder / "video_frames.npy")
    if frames.size and frames[0] < 0:
        raise _usage(f"{folder / 'video_frames.npy'}: negative video frame index {frames[0]}")
    people = {pid: _read_person(folder / "people" / pid, pid, i, len(frames))
              for i, pid in enumerate(meta["people"])}
    return {"meta": meta, "frames": frames, "people": people}


def _read_meta(path: Path) -> dict:
    """meta.json, checked: format, version, video, size, fps and the person ids."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _usage(f"{path.parent}: no meta.json (not an overlay input folder)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _usage(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != INPUT_FORMAT:
        raise _usage(f"{path}: not an overlay input (format is not {INPUT_FORMAT!r})")
    if meta.get("version") != INPUT_VERSION:
        raise _usage(f"{path}: overlay input version {meta.get('version')!r}; this engine reads version "
                     f"{INPUT_VERSION} (update the extension and the engine together)")
    if not isinstance(meta.get("video"), str) or not meta["video"]:
        raise _usage(f"{path}: 'video' must be a file path")
    for key in ("width", "height"):
        if not _is_int(meta.get(key)) or meta[key] <= 0:
            raise _usage(f"{path}: {key!r} must be a positive integer")
    fps = meta.get("fps")
    if fps is not None and (not _is_number(fps) or not np.isfinite(fps)):
        raise _usage(f"{path}: 'fps' must be a number")
    people = meta.get("people")
    if not isinstance(people, list) or not all(isinstance(p, str) for p in people):
        raise _usage(f"{path}: 'people' must be a list of person ids")
    for pid in people:
        if not PERSON_ID.fullmatch(pid) or set(pid) == {"."}:   # ids name folders: no "..", no "/"
            raise _usage(f"{path}: person id {pid!r} is not a plain name (letters, digits, _ . - only)")
    if len(set(people)) != len(people):
        raise _usage(f"{path}: a person id is listed twice")
    return meta


def _read_person(folder: Path, pid: str, order: int, K: int) -> dict:
    """One person's arrays, checked against each other and against K overlay frames."""
    faces = _index_array(_load_npy(folder / "faces.npy"), folder / "faces.npy", ndim=2, strict=False)
    frames = _index_array(_load_npy(folder / "frames.npy"), folder / "frames.npy")
    uv, cam = _load_npy(folder / "uv.npy"), _load_npy(folder / "cam.npy")
    P = len(frames)
    if faces.shape[1:] != (3,):
        raise _usage(f"{folder / 'faces.npy'}: shape {faces.shape}, expected (F, 3)")
    if frames.size and (frames[0] < 0 or frames[-1] >= K):
        raise _usage(f"{folder / 'frames.npy'}: index out of range (the input has {K} overlay frames)")
    for arr, path, last in ((uv, folder / "uv.npy", 2), (cam, folder / "cam.npy", 3)):
        if arr.dtype.kind != "f":
            raise _usage(f"{path}: dtype {arr.dtype}, expected float32")
        if arr.ndim != 3 or arr.shape[0] != P or arr.shape[2] != last:
            raise _usage(f"{path}: shape {arr.shape}, expected ({P}, V, {last}) for person {pid!r} "
                         f"drawn on {P} frames")
    if uv.shape[1] != cam.shape[1]:
        raise _usage(f"person {pid!r}: uv.npy has {uv.shape[1]} vertices, cam.npy {cam.shape[1]}")
    if faces.size and (faces.min() < 0 or faces.max() >= uv.shape[1]):
        raise _usage(f"{folder / 'faces.npy'}: face index out of range (the mesh has {uv.shape[1]} vertices)")
    return {"faces": faces, "frames": frames, "uv": uv, "cam": cam,
            "color": _read_color(folder / "color.npy", order)}


def _read_color(path: Path, order: int) -> tuple:
    """The person's RGB colour, or the palette's by their place in the list."""
    if not path.exists():
        return person_color_srgb(order)
    color = _load_npy(path)
    if color.dtype != np.uint8 or color.shape != (3,):
        raise _usage(f"{path}: expected (3,) uint8 RGB, got {color.shape} {color.dtype}")
    return tuple(int(c) for c in color)


def _load_npy(path: Path) -> np.ndarray:
    """A plain (non-object) array, memory-mapped read-only."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise _usage(f"{path}: missing") from None
    except (OSError, ValueError, EOFError) as exc:   # object dtype / pickles land here too
        raise _usage(f"{path}: not a plain .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):              # an .npz renamed to .npy loads as an archive
        raise _usage(f"{path}: not a plain .npy array")
    return arr


def _index_array(arr: np.ndarray, path: Path, ndim: int = 1, strict: bool = True) -> np.ndarray:
    """An integer array read into memory as int64 (index arrays are small); ``strict``:
    1-D and strictly increasing."""
    if arr.dtype.kind not in "iu":
        raise _usage(f"{path}: dtype {arr.dtype}, expected int64")
    if arr.ndim != ndim:
        raise _usage(f"{path}: {arr.ndim}-D array, expected {ndim}-D")
    out = np.array(arr, dtype=np.int64)
    if strict and out.size > 1 and np.any(np.diff(out) <= 0):
        raise _usage(f"{path}: indices must be strictly increasing")
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ----------------------------------------------------------------------------- drawing


def draw_person(image: np.ndarray, layer: np.ndarray, mask: np.ndarray, faces, uv, cam, color,
                scale: float = 1.0) -> int:
    """Fill the visible triangles of one posed mesh into ``layer`` (H, W, 3) and ``mask``
    (H, W), far to near. faces (F, 3), uv (V, 2) pixels, cam (V, 3) metres; -> count drawn."""
    import cv2

    tri_cam = np.asarray(cam, np.float64)[faces]           # (F, 3, 3)
    centroid = tri_cam.mean(axis=1)
    normal = np.cross(tri_cam[:, 1] - tri_cam[:, 0], tri_cam[:, 2] - tri_cam[:, 0])
    facing = -(normal * centroid).sum(axis=1)              # > 0: the face looks at the camera
    keep = (facing > 0) & (centroid[:, 2] > 1e-3)          # NaN compares False: dropped too
    tri_uv = np.asarray(uv, np.float64)[faces[keep]] * (scale * 16.0)   # 4 fractional bits
    limit = float(1 << 26)
    drawable = np.isfinite(tri_uv).all(axis=(1, 2)) & (np.abs(tri_uv).max(axis=(1, 2), initial=0) < limit)
    keep_idx = np.flatnonzero(keep)[drawable]
    if keep_idx.size == 0:
        return 0
    norm = np.linalg.norm(normal[keep_idx], axis=1) * np.linalg.norm(centroid[keep_idx], axis=1)
    shade = 0.35 + 0.65 * np.clip(facing[keep_idx] / np.maximum(norm, 1e-12), 0.0, 1.0)
    order = np.argsort(-centroid[keep_idx, 2], kind="stable")   # far first
    pts = np.round(tri_uv[drawable]).astype(np.int32)[order]
    shade = shade[order]
    base = np.asarray(color, np.float64)
    for tri, s in zip(pts, shade):
        c = tuple(int(round(v)) for v in base * s)
        cv2.fillConvexPoly(layer, tri, c, lineType=cv2.LINE_8, shift=4)
        cv2.fillConvexPoly(mask, tri, 255, lineType=cv2.LINE_8, shift=4)
    return int(len(pts))


def person_slot(frames: np.ndarray, k: int):
    """Row of a person's per-frame arrays for overlay frame ``k``, or None where not drawn."""
    j = int(np.searchsorted(frames, k))
    return j if j < len(frames) and frames[j] == k else None


def compose(image: np.ndarray, people: dict, k: int, scale: float, alpha: float) -> np.ndarray:
    """Overlay frame ``k``: every person drawn there, blended over ``image`` (H, W, 3) RGB."""
    layer = np.zeros_like(image)
    mask = np.zeros(image.shape[:2], np.uint8)
    for p in people.values():
        j = person_slot(p["frames"], k)
        if j is not None:                                   # one row read from the memory map
            draw_person(image, layer, mask, p["faces"], p["uv"][j], p["cam"][j], p["color"], scale)
    m = (mask > 0)[..., None]
    return np.where(m, (image * (1 - alpha) + layer * alpha).astype(np.uint8), image)


def still_indices(K: int, png_dir, png_count: int) -> set:
    """Overlay frames (0..K-1) saved as PNG stills: ``png_count`` evenly spaced."""
    if not png_dir or png_count <= 0:
        return set()
    return set(np.unique(np.linspace(0, K - 1, min(png_count, K)).round().astype(int)).tolist())


# ----------------------------------------------------------------------------- outputs


class Staged:
    """Output files written under temporary names next to their final ones: ``commit()``
    renames them all into place, ``discard()`` removes them (the final names untouched)."""

    def __init__(self):
        self.pairs = []                                     # [(temporary, final)]

    def new(self, final: Path) -> Path:
        """Reserve a fresh temporary name for ``final`` (created empty, mode 0o666 & ~umask)."""
        final = Path(final)
        fd, tmp = create_temp(str(final.parent), f".{final.stem}.partial-", final.suffix)
        os.close(fd)
        self.pairs.append((Path(tmp), final))
        return Path(tmp)

    def drop(self, tmp: Path) -> None:
        self.pairs = [(t, f) for t, f in self.pairs if t != tmp]
        _unlink(tmp)

    def commit(self) -> None:
        """fsync every file, then rename it onto its final name (the video, staged first, last)."""
        for tmp, _ in self.pairs:
            fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, final in reversed(self.pairs):
            os.replace(tmp, final)
        for folder in {str(final.parent) for _, final in self.pairs}:
            fsync_dir(folder)
        self.pairs = []

    def discard(self) -> None:
        for tmp, _ in self.pairs:
            _unlink(tmp)
        self.pairs = []


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (OpenCV's and FFmpeg's own logging) for a moment: a failed
    H.264 attempt prints errors that are expected, not the user's problem."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:                                         # no usable stderr: nothing to hide
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def open_video(staged: Staged, video_out: Path, fps: float, size: tuple):
    """The best video writer this OpenCV build has (``CODECS`` order), writing to a staged
    temporary file. -> (writer, codec name, temporary path, final path)."""
    import cv2

    for name, fourcc, suffix in CODECS:
        final = video_out.with_suffix(suffix) if suffix else video_out
        tmp = staged.new(final)
        with _quiet_stderr() if name == "h264" else nullcontext():
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if writer.isOpened():
            return writer, name, tmp, final
        writer.release()
        staged.drop(tmp)
    raise OverlayError(EXIT_WRITE, "write_failed", f"cannot write a video to {video_out}")


def write_png(staged: Staged, path: Path, bgr: np.ndarray) -> None:
    """A PNG still into a staged temporary file (renamed with the video at the end)."""
    import cv2

    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise OverlayError(EXIT_WRITE, "write_failed", f"cannot encode {path}")
    tmp = staged.new(path)
    with open(tmp, "wb") as f:
        f.write(data.tobytes())


# ----------------------------------------------------------------------------- render


def render(data: dict, video_out, png_dir=None, png_count: int = 4, max_width: int = 1280,
           alpha: float = 0.6, progress=None, cancel=None) -> dict:
    """Draw every overlay frame; outputs appear only if the whole run succeeds.
    -> {"video": path, "pngs": [...], "frames": n, "codec": "h264" | "mp4v" | "mjpg"}."""
    import cv2

    from engine.video.decode import VideoError, iter_frames

    meta, frames, people = data["meta"], data["frames"], data["people"]
    K = len(frames)
    if K == 0:
        raise _usage("the overlay input has no frames")
    width, height = int(meta["width"]), int(meta["height"])
    scale = min(1.0, max_width / float(width)) if max_width else 1.0
    out_w, out_h = max(2, int(round(width * scale)) // 2 * 2), max(2, int(round(height * scale)) // 2 * 2)
    fps = float(meta.get("fps") or 25.0)
    if fps <= 0:
        fps = 25.0
    video_out = Path(video_out)
    video_out.parent.mkdir(parents=True, exist_ok=True)
    stills = still_indices(K, png_dir, png_count)
    if stills:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
    wanted = {int(f): i for i, f in enumerate(frames)}
    staged, pngs, written = Staged(), [], 0
    try:
        writer, codec, tmp_video, final_video = open_video(staged, video_out, fps, (out_w, out_h))
        try:
            for frame in iter_frames(meta["video"], start=int(frames[0]), stop=int(frames[-1]) + 1):
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
                bgr = cv2.cvtColor(compose(image, people, k, scale, alpha), cv2.COLOR_RGB2BGR)
                writer.write(bgr)
                if k in stills:
                    path = Path(png_dir) / f"overlay_{int(frame.index):05d}.png"
                    write_png(staged, path, bgr)
                    pngs.append(str(path))
                written += 1
                if progress is not None:
                    progress(written, K)
        except VideoError as exc:
            if written == 0 or exc.code != "truncated":     # a cut file: keep what was drawn
                raise OverlayError(EXIT_VIDEO, exc.code, exc.message) from None
        finally:
            writer.release()
        if written == 0:
            raise OverlayError(EXIT_VIDEO, "empty", f"none of the overlay frames could be read from {meta['video']}")
        if cancel is not None and cancel():                   # asked after the last frame: still honoured
            raise OverlayError(EXIT_CANCELLED, "cancelled", f"cancelled after {written} of {K} frames")
        if os.path.getsize(tmp_video) == 0:
            raise OverlayError(EXIT_WRITE, "write_failed", f"the video writer wrote nothing to {final_video}")
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    return {"video": str(final_video), "pngs": pngs, "frames": written, "codec": codec}


def done_event(out: dict) -> dict:
    """The final jsonl event: the video, stills, frame count, codec and, unless H.264, a note."""
    event = {"event": "done", "result": os.path.abspath(out["video"]), "pngs": out["pngs"],
             "frames": out["frames"], "codec": out["codec"]}
    if out["codec"] in CODEC_NOTES:
        event["note"] = CODEC_NOTES[out["codec"]]
    return event


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.overlay", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="folder of projected meshes written by the extension")
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
    event = done_event(out)
    if not jsonl:
        print(f"\nwrote {out['video']} ({out['frames']} frames, {out['codec']}) and {len(out['pngs'])} PNG stills",
              file=sys.stderr)
        if "note" in event:
            print(f"note: {event['note']}", file=sys.stderr)
    emit(event)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
