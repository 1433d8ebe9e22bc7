"""``python -m engine mattes RESULT.npz --out DIR``: per-person mattes rendered from the fitted bodies.

Every selected person's body is posed from the result (linear-blend skinning of the rig the
result carries: ``body/faces``, ``body/weights``, per-track ``rest_vertices`` / ``rest_joints``,
the stored rotations and ``transl``; the pose Blender's rig shows, without pose correctives)
and rasterised by ``engine.render.renderer`` through the result's camera
(``meta.camera.focal_px`` / ``principal_point``) at the plate's size
(``meta.video.width`` x ``height``). People are rendered one by one; the nearest surface owns
each pixel, so a person's matte has the parts other people hide removed.

    python -m engine mattes RESULT.npz --out DIR [--video PLATE] [--people all|1,3]
        [--start N] [--stop N] [--format png|png16|exr|all] [--parts densepose|coarse]
        [--alpha body|segmentation] [--dilate PX] [--feather PX] [--contour-points 32] [--name STEM]
        [--progress tty|jsonl]

``--start/--stop`` are video frame indices (``stop`` exclusive), as in ``engine run``; default:
the result's frames. Files are numbered by **Blender frame = video frame index + 1**
(= result frame + ``meta.frame_start`` + 1), 4 digits (more past 9999)::

    DIR/<stem>_person<ID>.####.png   visible alpha of track <ID> (8-bit; 16-bit with png16)
    DIR/<stem>_ids.####.png          0 background, person k -> its "id" in the sidecar (8-bit)
    DIR/<stem>_parts.####.png        part id of the visible person pixels (8-bit; the table
                                     is in the sidecar)
    DIR/<stem>.####.exr              multilayer OpenEXR (channels: ``EXR_CHANNELS_DOC``)
    DIR/<stem>_mattes.json           sidecar: size, fps, frame range, people, file patterns,
                                     parts table, options
    DIR/<stem>_contours.npz          outer contour of each person's largest visible region per
                                     frame, N points (for Blender Mask datablocks)

``--alpha segmentation`` (with ``--video``): a person's matte is what the BlazePose landmark
network segments as the person on the plate (``engine.landmarks.segmentation``: hair, clothes,
the real outline), kept within ``SEGMENT_MARGIN`` (0.1) of the body's height around their
fitted body and minus other people's bodies in front (``segmented_visible``); where the
network sees nobody, the track has no box (a bridged gap), or the segmentation misses most of
the body (the crop followed a neighbour), the body's silhouette. Ids
follow the mattes; parts and depth stay the body's (part 0 on hair and clothes outside it).

A person's PNG is written for every frame of the range (black where they are not seen), so
each kind of file is a gap-free sequence. ``--dilate PX`` grows (negative: shrinks) each
person's matte by PX pixels (Euclidean distance), ``--feather PX`` turns its edge into a
linear ramp PX pixels wide centred on the (dilated) edge; ids and parts are labels and are
never dilated or feathered. A person is shown, as in Blender, across gaps of at most 0.1 s in
their track (the pose interpolated), hidden in longer ones.

Every file is written under a hidden temporary name in DIR, fsynced, and renamed onto its
final name only when all files of its frame are written: a failed or cancelled run keeps the
frames before it and leaves no partial file under a final name. The sidecar and the contours
are written at the end (``"partial": true`` with the frames done after a cancel or a write
error, as far as the disk allows).

Progress and exit codes follow ``python -m engine run`` (docs/engine-cli.md)::

    {"event": "progress", "stage": "mattes", "done": k, "total": n, "frame": blender frame,
     "fps": x, "eta_s": y}
    {"event": "done", "result": sidecar path, "contours": path, "frames": n, "first_frame": a,
     "last_frame": b, "people": ["1", ...], "seconds": t, "fps": x}
    {"event": "error", "code": "...", "message": "..."}

    0 ok; 1 internal error; 2 bad arguments or bad input (no result / not a result, no body or
    camera in it, unknown person, frame range outside the result, plate of another size);
    3 plate video unreadable; 5 renderer, EXR writer or (``--alpha segmentation``) landmark model
    unavailable; 6 cannot write (disk full,
    folder not writable); 130 cancelled.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.cli_args import UsageParser, finite_float, nonneg_float
from engine.common.atomic import atomic_file, check_writable, create_temp, fsync_dir
from engine.common.gaps import shown_frames
from engine.common.jobs import report_internal_error
from engine.common.kinematics import skinned_vertices
from engine.common.palette import person_color_srgb, srgb_to_linear
from engine.common.result_schema import track_order

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_VIDEO, EXIT_RENDERER, EXIT_WRITE = 0, 1, 2, 3, 5, 6
EXIT_CANCELLED = 130
FORMATS = {"png": ("png",), "png16": ("png16",), "exr": ("exr",), "all": ("png", "exr")}
PART_KINDS = ("densepose", "coarse")
ALPHA_KINDS = ("body", "segmentation")
SEGMENT_MARGIN = 0.1              # --alpha segmentation: how far (x the body's height) outside its body a person's matte may reach
BLENDER_FRAME_OFFSET = 1          # Blender frame of video frame 0 (pymaf_blender/blender/timing.py)
BACKGROUND_Z = 1.0e10             # depth.Z where no person is (Blender's own background Z)
DEFAULT_CONTOUR_POINTS = 32
SIDECAR_FORMAT, SIDECAR_VERSION = "pymaf-mattes", 1
PNG_LEVEL = 1                     # zlib level: binary mattes compress well even at 1
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}

#: EXR channel name -> meaning (documented in docs/mattes.md and in the sidecar)
EXR_CHANNELS_DOC = {
    "R, G, B": "preview: each person's colour (linear) times their visible alpha (half)",
    "A": "union of the people's alphas (half)",
    "person<ID>.A": "visible alpha of track <ID>, dilated/feathered (half)",
    "ids.id": "0 background, person k -> id value (half: integers exact)",
    "parts.id": "part id of the visible person pixels, 0 background (half)",
    "depth.Z": f"camera z of the nearest person in metres, {BACKGROUND_Z:g} on background (float)",
}


class MatteError(Exception):
    """An expected failure: exit code, machine code and a one-line message."""

    def __init__(self, exit_code: int, code: str, message: str):
        super().__init__(message)
        self.exit_code, self.code, self.message = exit_code, code, message


def _usage(code: str, message: str) -> MatteError:
    return MatteError(EXIT_USAGE, code, message)


# ----------------------------------------------------------------------------- the result


def load_result(path):
    """The result, checked for what mattes need: a camera and the rig. -> MotionResult."""
    from engine.common.result_schema import ResultError, read_result

    path = os.fspath(path)
    try:
        res = read_result(path, validate=False)
    except ResultError as exc:
        raise _usage("bad_result", str(exc)) from None
    cam = res.meta.get("camera") if isinstance(res.meta, dict) else None
    if not isinstance(cam, dict) or "focal_px" not in cam or "principal_point" not in cam:
        raise _usage("no_camera", f"{path}: the result has no camera (meta.camera.focal_px / principal_point); "
                                  "re-run `python -m engine run` on the video")
    if not res.has_rig:
        raise _usage("no_rig", f"{path}: the result has no body (rig data: body/faces, body/weights and each "
                               "track's rest_vertices / rest_joints); re-run `python -m engine run` with "
                               "engine >= 0.2")
    try:
        res.validate()
    except ResultError as exc:
        raise _usage("bad_result", f"{path}: {exc}") from None
    return res


class Person:
    """One track's posed mesh per result frame (with the Blender side's short gaps bridged)."""

    def __init__(self, result, tid: str, index: int, fps: float):
        tr = result.tracks[tid]
        self.tid, self.index, self.value = tid, index, index + 1
        self.color = tuple(int(c) for c in person_color_srgb(index))
        self.frames = np.asarray(tr.frames, np.int64)
        self.shown = set(shown_frames(self.frames, fps).tolist())
        self.quat = np.asarray(tr.pose_quat, np.float64)
        self.rot = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1).astype(np.float64)
        self.transl = np.asarray(tr.transl, np.float64)
        self.rest_v = np.asarray(tr.rest_vertices, np.float64)
        self.rest_j = np.asarray(tr.rest_joints, np.float64)
        self.weights = np.asarray(result.body.weights, np.float64)
        self.parents = np.asarray(result.body.parents, np.int64)
        self.boxes = ({} if tr.boxes is None else
                      {int(f): np.asarray(b, np.float64) for f, b in zip(tr.frames, tr.boxes)})

    def box_xyxy(self, frame: int):
        """The track's square box (x1, y1, x2, y2) at result frame ``frame``, or None."""
        from engine.people.tracking import square_to_xyxy

        b = self.boxes.get(frame)
        return None if b is None else square_to_xyxy(b)

    def pose(self, frame: int):
        """(rotmats (24, 3, 3), transl (3,)) at result frame ``frame``, or None where not shown."""
        if frame not in self.shown:
            return None
        i = int(np.searchsorted(self.frames, frame))
        if i < len(self.frames) and self.frames[i] == frame:
            return self.rot[i], self.transl[i]
        a, b = i - 1, i                                    # a bridged gap: between two observed frames
        w = (frame - self.frames[a]) / float(self.frames[b] - self.frames[a])
        qa, qb = self.quat[a], self.quat[b]
        qb = np.where((qa * qb).sum(-1, keepdims=True) < 0, -qb, qb)
        from engine.common.rotations import normalize_quat, quat_to_rotmat
        R = quat_to_rotmat(normalize_quat((1 - w) * qa + w * qb))
        return np.asarray(R, np.float64), (1 - w) * self.transl[a] + w * self.transl[b]

    def vertices(self, frame: int):
        """(V, 3) float32 camera-frame vertices at result frame ``frame``, or None."""
        p = self.pose(frame)
        if p is None:
            return None
        v = skinned_vertices(p[0], self.rest_j, self.rest_v, self.weights, self.parents)
        return (v + p[1]).astype(np.float32)


def vertex_parts(result, tids) -> np.ndarray:
    """(V,) uint8 DensePose part per vertex (1..24) from the rig: ``mannequin_surface``'s charts
    (dominant skinning bone, split by the rest pose) on the mean rest mesh of ``tids``."""
    from types import SimpleNamespace

    from engine.render.surface import mannequin_surface

    rest = np.mean([np.asarray(result.tracks[t].rest_vertices, np.float64) for t in tids], 0)
    joints = np.mean([np.asarray(result.tracks[t].rest_joints, np.float64) for t in tids], 0)
    # A (24, V) regressor that gives exactly these rest joints (rest has rank 3: pinv(rest) @ rest = I).
    regressor = joints @ np.linalg.pinv(rest)
    body = SimpleNamespace(v_template=rest, weights=np.asarray(result.body.weights), J_regressor=regressor)
    parts, _ = mannequin_surface(body)
    return parts


def part_table(kind: str) -> list:
    from engine.render.surface import COARSE_PART_NAMES, PART_NAMES

    names = PART_NAMES if kind == "densepose" else COARSE_PART_NAMES
    return [{"id": i, "name": n} for i, n in enumerate(names) if i > 0]


# ----------------------------------------------------------------------------- image work


@dataclass
class FrameMattes:
    """One frame: per-person visible masks and alphas, labels, depth."""
    alphas: dict                  # tid -> (H, W) float32 in [0, 1] (dilated / feathered)
    visible: dict                 # tid -> (H, W) bool (exact, before dilate / feather)
    ids: np.ndarray               # (H, W) uint8
    parts: np.ndarray             # (H, W) uint8
    depth: np.ndarray             # (H, W) float32, BACKGROUND_Z on background
    person_depth: dict = field(default_factory=dict)   # tid -> median camera z of the whole silhouette
    box: tuple = None             # (y0, y1, x0, x1) holding every non-zero alpha; None: nobody


def composite(masks: np.ndarray, depths: np.ndarray, parts: np.ndarray):
    """Per-person renders (P, H, W) -> (owner (H, W) int, -1 background; depth (H, W) float32,
    BACKGROUND_Z on background; parts (H, W) of the owner). The nearest surface owns a pixel
    (ties: the earlier person)."""
    if len(masks) == 1:
        m = masks[0]
        return (np.where(m, 0, -1), np.where(m, depths[0], BACKGROUND_Z).astype(np.float32),
                np.where(m, parts[0], 0).astype(np.uint8))
    z = np.where(masks, depths, np.inf).astype(np.float32)
    owner = np.argmin(z, axis=0)
    zmin = np.take_along_axis(z, owner[None], 0)[0]
    covered = np.isfinite(zmin)
    owner = np.where(covered, owner, -1)
    part = np.where(covered, np.take_along_axis(parts, np.maximum(owner, 0)[None], 0)[0], 0).astype(np.uint8)
    return owner, np.where(covered, zmin, BACKGROUND_Z).astype(np.float32), part


def segmented_visible(owner: np.ndarray, bodies: np.ndarray, segments: list, depths: np.ndarray,
                      margins: np.ndarray) -> np.ndarray:
    """Each person's visible matte from their segmentation, over one window of the frame.

    ``owner`` (H, W) int: the person whose body is nearest at each pixel (-1: no body;
    ``composite``); ``bodies`` (P, H, W) bool: each person's whole body silhouette;
    ``segments``: P masks (H, W) bool, or None for a person without one this frame (their
    matte stays their visible body); ``depths`` (P,): each person's median camera depth;
    ``margins`` (P,) px. A person's matte is their segmentation within ``margins`` of their
    body (hair, clothes; not a neighbour the crop also holds), minus the pixels where another
    person's body is in front; a pixel outside every body that two people's segmentations
    claim goes to the nearer person. A segmentation covering less than half of the person's
    visible body is someone else's (the crop followed a neighbour): their visible body is used.
    -> (P, H, W) bool."""
    import cv2

    P = len(bodies)
    out = np.zeros(bodies.shape, bool)
    claims = np.zeros(bodies.shape, bool)
    for k in range(P):
        if segments[k] is None:
            out[k] = owner == k
            continue
        r = max(int(round(margins[k])), 0)
        near = bodies[k] if r == 0 else cv2.dilate(bodies[k].astype(np.uint8), cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        claims[k] = segments[k] & near & ((owner < 0) | (owner == k))
        own = owner == k
        if (claims[k] & own).sum() < 0.5 * own.sum():
            claims[k] = False
            out[k] = own
    free = owner < 0
    if P > 1 and (claims.sum(0) > 1).any():       # outside the bodies: the nearer person's
        z = np.where(claims, np.asarray(depths, np.float64)[:, None, None], np.inf)
        first = np.argmin(z, axis=0)
        for k in range(P):
            claims[k] &= ~free | (first == k)
    return out | claims


def _bbox(mask: np.ndarray):
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def soften(mask: np.ndarray, dilate: float = 0.0, feather: float = 0.0) -> np.ndarray:
    """A binary matte (H, W) -> alpha (H, W) float32 in [0, 1].

    Signed distance ``s`` of each pixel centre to the matte's edge (pixel-centre Euclidean
    distance to the nearest pixel of the other side, minus half a pixel: +0.5 on the inner
    boundary row, -0.5 on the outer), shifted by ``dilate``; alpha = ``s + dilate > 0``
    without feather, else the ramp ``clip(0.5 + (s + dilate) / feather, 0, 1)`` (half the
    feather inside the edge, half outside). Frame borders do not count as edges."""
    mask = np.asarray(mask, bool)
    if dilate == 0 and feather <= 0:
        return mask.astype(np.float32)
    import cv2

    out = np.zeros(mask.shape, np.float32)
    box = _bbox(mask)
    if box is None:
        return out
    reach = int(math.ceil(max(dilate, 0.0) + feather / 2.0)) + 2
    h, w = mask.shape
    y0, y1, x0, x1 = max(box[0] - reach, 0), min(box[1] + reach, h), max(box[2] - reach, 0), min(box[3] + reach, w)
    m = mask[y0:y1, x0:x1]
    d_in = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = ~m
    if outside.any():
        d_out = cv2.distanceTransform(outside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    else:
        d_out = np.zeros_like(d_in)
    s = np.where(m, d_in - 0.5, 0.5 - d_out) + float(dilate)
    if feather > 0:
        out[y0:y1, x0:x1] = np.clip(0.5 + s / float(feather), 0.0, 1.0)
    else:
        out[y0:y1, x0:x1] = s > 0
    return out


def outer_contour(mask: np.ndarray, n: int):
    """The outer contour of the largest region of a binary mask (H, W), resampled to ``n``
    points by arc length. -> (n, 2) float32 pixel coordinates (x right, y down, origin at the
    image's top-left corner, pixel centres at +0.5), starting at the topmost point (leftmost
    of those) and clockwise on screen; None for an empty mask.

    The boundary pixels' centres (OpenCV's border following) are moved half a pixel outwards
    along the contour's normal, so that the polygon runs along the pixels' outer edges and
    rasterising it (pixel centre inside) gives the mask back."""
    import cv2

    box = _bbox(mask)
    if box is None:
        return None
    y0, y1, x0, x1 = max(box[0] - 1, 0), box[1] + 1, max(box[2] - 1, 0), box[3] + 1
    m = np.ascontiguousarray(mask[y0:y1, x0:x1], np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    areas = [cv2.contourArea(c) + len(c) for c in contours]     # + length: regions 1 px thin count
    c = contours[int(np.argmax(areas))][:, 0, :].astype(np.float64) + (x0 + 0.5, y0 + 0.5)
    if len(c) < 3:                                          # a dot or a 2-pixel line: its pixel box
        lo, hi = c.min(0) - 0.5, c.max(0) + 0.5
        c = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    else:
        if _signed_area(c) < 0:                           # make it clockwise on screen (y down)
            c = c[::-1]
        tangent = np.roll(c, -1, 0) - np.roll(c, 1, 0)
        normal = np.stack([tangent[:, 1], -tangent[:, 0]], 1)   # outward for a clockwise-on-screen polygon
        length = np.linalg.norm(normal, axis=1, keepdims=True)
        c = c + 0.5 * np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    if _signed_area(c) < 0:
        c = c[::-1]
    return resample_closed(c, n)


def _signed_area(points: np.ndarray) -> float:
    """Shoelace area in image coordinates: positive = clockwise on screen (y down)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def resample_closed(points: np.ndarray, n: int) -> np.ndarray:
    """A closed polygon (M, 2) -> (n, 2) float32 points equally spaced by arc length, the first
    at its topmost vertex (smallest y; then smallest x), in the polygon's own direction."""
    p = np.asarray(points, np.float64)
    start = int(np.lexsort((p[:, 0], p[:, 1]))[0])
    p = np.roll(p, -start, 0)
    closed = np.vstack([p, p[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    if total <= 0:
        return np.repeat(p[:1], n, 0).astype(np.float32)
    s = np.arange(n) * (total / n)
    x = np.interp(s, cum, closed[:, 0])
    y = np.interp(s, cum, closed[:, 1])
    return np.stack([x, y], 1).astype(np.float32)


# ----------------------------------------------------------------------------- files


def _put(f, data: bytes) -> None:
    """Write ``data`` to an open file (one place for tests to simulate a full disk)."""
    f.write(data)


_EXR_THREADS = False


def _exr_file_write(path: str, header: dict, channels: dict) -> None:
    """Write an EXR with the OpenEXR package (one place for tests to simulate a full disk)."""
    import OpenEXR

    global _EXR_THREADS
    if not _EXR_THREADS:
        _EXR_THREADS = True
        OpenEXR.set_global_thread_count(min(os.cpu_count() or 1, 4))   # compression in parallel
    with OpenEXR.File(header, channels) as exr:
        exr.write(path)


class Staging:
    """A frame's files under hidden temporary names in their folder; ``commit`` renames them
    all onto their final names, ``discard`` removes them (final names untouched)."""

    def __init__(self):
        self.pairs = []

    def _temp(self, final: Path):
        return create_temp(str(final.parent), f".{final.name}.", ".tmp")

    def add_bytes(self, final: Path, data: bytes) -> None:
        fd, tmp = self._temp(final)
        self.pairs.append((tmp, final))
        with os.fdopen(fd, "wb") as f:
            _put(f, data)
            f.flush()
            os.fsync(f.fileno())

    def add_exr(self, final: Path, header: dict, channels: dict) -> None:
        fd, tmp = self._temp(final)
        os.close(fd)
        self.pairs.append((tmp, final))
        try:
            _exr_file_write(tmp, header, channels)
        except OSError:
            raise
        except Exception as exc:                          # the library's own error type
            raise _exr_os_error(final, exc) from exc
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def commit(self) -> None:
        for tmp, final in self.pairs:
            os.replace(tmp, final)
        if self.pairs:
            fsync_dir(str(self.pairs[0][1].parent))
        self.pairs = []

    def discard(self) -> None:
        for tmp, _ in self.pairs:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self.pairs = []


def _exr_os_error(path: Path, exc: Exception) -> OSError:
    """The EXR library raises its own errors: an OSError with ENOSPC when the disk is full."""
    try:
        st = os.statvfs(path.parent)
        full = st.f_bavail * st.f_frsize < 1 << 20
    except (OSError, AttributeError):
        full = False
    return OSError(errno.ENOSPC if full else errno.EIO, f"{'no space left on device' if full else exc}")


def encode_png(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL,
                                            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:
        raise OSError(errno.EIO, "PNG encoding failed")
    return data.tobytes()


def file_names(stem: str, tids: list, formats: tuple) -> dict:
    """kind -> printf pattern (``%04d`` = Blender frame); person kinds are ``person:<id>``."""
    out = {}
    if "png" in formats or "png16" in formats:
        for t in tids:
            out[f"person:{t}"] = f"{stem}_person{t}.%04d.png"
        out["ids"] = f"{stem}_ids.%04d.png"
        out["parts"] = f"{stem}_parts.%04d.png"
    if "exr" in formats:
        out["exr"] = f"{stem}.%04d.exr"
    return out


def hashes(printf: str) -> str:
    return printf.replace("%04d", "####")


# ----------------------------------------------------------------------------- the work


@dataclass
class Options:
    formats: tuple = ("png", "exr")
    parts: str = "densepose"
    dilate: float = 0.0
    feather: float = 0.0
    contour_points: int = DEFAULT_CONTOUR_POINTS
    alpha: str = "body"            # "body": the fitted body's silhouette; "segmentation": see segmented_visible


class MatteMaker:
    """Renders the mattes of the selected people, frame by frame."""

    def __init__(self, result, tids: list, options: Options):
        from engine.render.surface import COARSE_OF_PART

        meta = result.meta
        self.result, self.tids, self.options = result, list(tids), options
        self.width, self.height = int(meta["video"]["width"]), int(meta["video"]["height"])
        cam = meta["camera"]
        self.focal = float(cam["focal_px"])
        self.principal = np.asarray(cam["principal_point"], np.float64)
        fps = meta["video"].get("fps")
        self.fps = float(fps) if isinstance(fps, (int, float)) and fps > 0 else 0.0
        self.people = [Person(result, t, k, self.fps) for k, t in enumerate(self.tids)]
        self.faces = np.asarray(result.body.faces, np.int64)
        self.vertex_parts = vertex_parts(result, self.tids)
        self.part_lut = COARSE_OF_PART if options.parts == "coarse" else np.arange(256, dtype=np.uint8)
        self.renderer = None
        self.segmenter = None

    def open(self) -> None:
        from engine.render.renderer import Renderer

        try:
            self.renderer = Renderer(self.width, self.height, self.faces, self.vertex_parts, None, max_tiles=4)
        except ImportError as exc:
            raise MatteError(EXIT_RENDERER, "renderer_missing",
                             f"the renderer needs moderngl and glcontext ({exc}); install them into the engine "
                             "environment: pip install moderngl==5.13.0 glcontext==3.1.0") from None
        except Exception as exc:  # noqa: BLE001 - no EGL device / library: say so in one line
            raise MatteError(EXIT_RENDERER, "renderer",
                             f"cannot start the offscreen renderer (EGL): {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        if self.options.alpha == "segmentation":
            self.segmenter = open_segmenter()

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None

    def frame(self, result_frame: int, image: np.ndarray = None) -> FrameMattes:
        """The mattes of one result frame (the work is done inside the people's bounding box).
        ``image``: the plate's frame (RGB), needed with ``alpha="segmentation"``."""
        H, W = self.height, self.width
        posed = [(p, p.vertices(result_frame)) for p in self.people]
        posed = [(p, v) for p, v in posed if v is not None]
        ids, parts = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
        depth = np.full((H, W), BACKGROUND_Z, np.float32)
        alphas = {p.tid: np.zeros((H, W), np.float32) for p in self.people}
        visible = {p.tid: np.zeros((H, W), bool) for p in self.people}
        fm = FrameMattes(alphas, visible, ids, parts, depth)
        if not posed:
            return fm
        r = self.renderer.render(np.stack([v for _, v in posed]), self.focal, self.principal)
        box = _bbox(r.mask.any(0))
        if box is None:
            return fm
        segments = self._segments(result_frame, image, posed) if self.segmenter is not None else None
        if segments is not None:                         # the window holds the segmentations too
            box = _bbox(r.mask.any(0) | np.any([s for s in segments if s is not None], 0))
        y0, y1, x0, x1 = box
        crop = (slice(None), slice(y0, y1), slice(x0, x1))
        owner, zc, pc = composite(r.mask[crop], r.depth[crop], r.part[crop])
        depth[y0:y1, x0:x1] = zc
        parts[y0:y1, x0:x1] = self.part_lut[pc]
        for k in range(len(posed)):
            m = r.mask[k][crop[1:]]
            if m.any():
                fm.person_depth[posed[k][0].tid] = float(np.median(r.depth[k][crop[1:]][m]))
        if segments is None:
            vis = np.stack([owner == k for k in range(len(posed))])
        else:
            far = np.array([fm.person_depth.get(p.tid, np.inf) for p, _ in posed])
            bodies = r.mask[crop]                          # the window holds every body pixel
            heights = np.array([np.ptp(np.flatnonzero(m.any(1))) + 1 if m.any() else 0 for m in bodies])
            vis = segmented_visible(owner, bodies, [None if s is None else s[crop[1:]] for s in segments],
                                    far, SEGMENT_MARGIN * heights)
        reach = int(math.ceil(max(self.options.dilate, 0.0) + self.options.feather / 2.0)) + 2
        fm.box = (max(y0 - reach, 0), min(y1 + reach, H), max(x0 - reach, 0), min(x1 + reach, W))
        for k, (p, _) in enumerate(posed):
            ids[y0:y1, x0:x1][vis[k]] = p.value
            visible[p.tid][y0:y1, x0:x1] = vis[k]
            alphas[p.tid] = soften(visible[p.tid], self.options.dilate, self.options.feather)
        return fm

    def _segments(self, result_frame: int, image, posed: list) -> list:
        """Each posed person's segmentation mask (H, W) on the plate, or None (no box there, or
        the landmark model sees nobody in the crop)."""
        boxes = [(p.tid, p.box_xyxy(result_frame)) for p, _ in posed]
        got = self.segmenter.step(image, [(t, b) for t, b in boxes if b is not None])
        return [None if got.get(p.tid) is None else got[p.tid].mask(self.height, self.width) for p, _ in posed]


def open_segmenter():
    """The landmark network (``full``) on the CPU as a ``PersonSegmenter``; MatteError (exit 5)
    when it is not installed or not usable."""
    from engine.landmarks.assets import LandmarkModelError, require_converted

    try:
        from engine.landmarks.landmarker import Landmarker
        from engine.landmarks.segmentation import PersonSegmenter

        return PersonSegmenter(Landmarker(require_converted("full"), "full", device="cpu"))
    except LandmarkModelError as exc:
        raise MatteError(EXIT_RENDERER, "landmark_model", f"--alpha segmentation needs the landmark model: {exc}") from None


def exr_channels(fm: FrameMattes, people: list) -> dict:
    """Channel name -> (H, W) array for one frame's multilayer EXR."""
    H, W = fm.ids.shape
    ch = {}
    rgb = np.zeros((3, H, W), np.float16)
    union = np.zeros((H, W), np.float16)
    box = fm.box
    if box is not None:
        y0, y1, x0, x1 = box
        acc = np.zeros((3, y1 - y0, x1 - x0), np.float32)
        acc_a = np.zeros((y1 - y0, x1 - x0), np.float32)
    for p in people:
        a = np.zeros((H, W), np.float16)
        if box is not None:
            ac = fm.alphas[p.tid][y0:y1, x0:x1]
            a[y0:y1, x0:x1] = ac
            acc += np.asarray(srgb_to_linear(p.color), np.float32)[:, None, None] * ac
            np.maximum(acc_a, ac, out=acc_a)
        ch[f"person{p.tid}.A"] = a
    if box is not None:
        rgb[:, y0:y1, x0:x1] = np.minimum(acc, 1.0)
        union[y0:y1, x0:x1] = acc_a
    ids, parts = np.zeros((H, W), np.float16), np.zeros((H, W), np.float16)
    if box is not None:                                   # labels are 0 outside the box
        ids[y0:y1, x0:x1] = fm.ids[y0:y1, x0:x1]
        parts[y0:y1, x0:x1] = fm.parts[y0:y1, x0:x1]
    ch.update({"R": rgb[0], "G": rgb[1], "B": rgb[2], "A": union, "ids.id": ids, "parts.id": parts,
               "depth.Z": fm.depth})
    return ch


def exr_header() -> dict:
    import OpenEXR

    return {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}


def alpha_image(alpha: np.ndarray, box, top: int) -> np.ndarray:
    """Alpha in [0, 1] -> uint8 (top 255) or uint16 (top 65535) image, rounded; zero outside ``box``."""
    img = np.zeros(alpha.shape, np.uint16 if top > 255 else np.uint8)
    if box is not None:
        y0, y1, x0, x1 = box
        img[y0:y1, x0:x1] = np.rint(alpha[y0:y1, x0:x1] * float(top))
    return img


def write_frame(out_dir: Path, names: dict, blender_frame: int, fm: FrameMattes, people: list,
                formats: tuple) -> int:
    """All files of one frame, staged then renamed together. -> number of files."""
    staging = Staging()
    try:
        png_kind = "png16" if "png16" in formats else ("png" if "png" in formats else None)
        if png_kind is not None:
            for p in people:
                img = alpha_image(fm.alphas[p.tid], fm.box, 65535 if png_kind == "png16" else 255)
                staging.add_bytes(out_dir / (names[f"person:{p.tid}"] % blender_frame), encode_png(img))
            staging.add_bytes(out_dir / (names["ids"] % blender_frame), encode_png(fm.ids))
            staging.add_bytes(out_dir / (names["parts"] % blender_frame), encode_png(fm.parts))
        if "exr" in formats:
            staging.add_exr(out_dir / (names["exr"] % blender_frame), exr_header(), exr_channels(fm, people))
        n = len(staging.pairs)
        staging.commit()
        return n
    except BaseException:
        staging.discard()
        raise


def sidecar(*, result_path, stem, maker: MatteMaker, names: dict, first: int, last: int, done: int,
            partial: bool, options: Options, contours_name: str, counts: dict) -> dict:
    meta = maker.result.meta
    off = int(meta.get("frame_start") or 0)
    files = {}
    for kind, pattern in names.items():
        entry = {"printf": pattern, "hashes": hashes(pattern)}
        if kind.startswith("person:"):
            entry["bits"] = 16 if "png16" in options.formats else 8
            files.setdefault("person", {})[kind.split(":", 1)[1]] = entry
        else:
            if kind in ("ids", "parts"):
                entry["bits"] = 8
            files[kind] = entry
    return {
        "format": SIDECAR_FORMAT, "version": SIDECAR_VERSION,
        "result": os.path.abspath(os.fspath(result_path)), "name": stem,
        "width": maker.width, "height": maker.height, "fps": maker.fps or None,
        "frame_numbering": "Blender frame = video frame index + 1 = result frame + meta.frame_start + 1",
        "frame_start": first, "frame_end": last,
        "video_frames": [first - BLENDER_FRAME_OFFSET, last - BLENDER_FRAME_OFFSET],
        "result_frames": [first - BLENDER_FRAME_OFFSET - off, last - BLENDER_FRAME_OFFSET - off],
        "frames_written": done, "partial": bool(partial),
        "camera": {"focal_px": maker.focal, "principal_point": [float(x) for x in maker.principal]},
        "people": [{"track_id": p.tid, "id": p.value, "color_srgb": list(p.color),
                    "color_linear": [round(c, 6) for c in srgb_to_linear(p.color)],
                    "frames_visible": counts.get(p.tid, 0)} for p in maker.people],
        "files": files,
        "exr_channels": {"person": [f"person{p.tid}.A" for p in maker.people],
                         "preview": ["R", "G", "B", "A"], "ids": "ids.id", "parts": "parts.id",
                         "depth": "depth.Z", "depth_background": BACKGROUND_Z,
                         "meaning": EXR_CHANNELS_DOC} if "exr" in options.formats else None,
        "ids": {"background": 0, **{p.tid: p.value for p in maker.people}},
        "parts": {"kind": options.parts, "background": 0, "table": part_table(options.parts)},
        "contours": contours_name,
        "options": {"format": "+".join(options.formats), "parts": options.parts, "dilate": options.dilate,
                    "feather": options.feather, "contour_points": options.contour_points, "alpha": options.alpha},
    }


def contour_arrays(maker: MatteMaker, contours: dict) -> dict:
    n = maker.options.contour_points
    out = {"width": np.array(maker.width, np.int64), "height": np.array(maker.height, np.int64),
           "ids": np.array([p.tid for p in maker.people], dtype="U"),
           "contour_points": np.array(n, np.int64)}
    for p in maker.people:
        rows = contours.get(p.tid, [])
        out[f"{p.tid}/frames"] = np.array([r[0] for r in rows], np.int64)
        out[f"{p.tid}/points"] = (np.stack([r[1] for r in rows]).astype(np.float32) if rows
                                  else np.zeros((0, n, 2), np.float32))
        out[f"{p.tid}/depth"] = np.array([r[2] for r in rows], np.float32)
    return out


def _write_json(path: Path, obj: dict) -> None:
    with atomic_file(path) as f:
        _put(f, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8"))


def _write_npz(path: Path, arrays: dict) -> None:
    with atomic_file(path) as f:
        np.savez(f, **arrays)


def _check_formats(formats: tuple) -> None:
    if "exr" in formats:
        try:
            import OpenEXR  # noqa: F401
        except ImportError as exc:
            raise MatteError(EXIT_RENDERER, "exr_writer_missing",
                             f"writing OpenEXR needs the OpenEXR package ({exc}); install it into the engine "
                             "environment (pip install OpenEXR==3.5.3, requirements/engine.txt) or use "
                             "--format png") from None


def _check_plate(plate, width: int, height: int) -> None:
    from engine.video.decode import VideoError, probe

    try:
        info = probe(plate, count="container")
    except VideoError as exc:
        raise MatteError(EXIT_VIDEO, exc.code, exc.message) from None
    if (info.width, info.height) != (width, height):
        raise _usage("plate_size", f"the plate {plate} is {info.width}x{info.height} but the result was made on a "
                                   f"{width}x{height} video: the mattes would not line up (use the plate the result "
                                   "was made from, or one of the same size)")


def make_mattes(result_path, out_dir, *, video=None, people=None, start=None, stop=None,
                options: Options = None, name=None, progress=None, cancel=None) -> dict:
    """Write the mattes; -> the done event. Raises MatteError for every expected failure."""
    options = options or Options()
    _check_formats(options.formats)
    result = load_result(result_path)
    meta = result.meta
    width, height = meta["video"].get("width"), meta["video"].get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise _usage("bad_result", f"{result_path}: meta.video.width/height are not positive integers")
    available = sorted(result.tracks, key=track_order)
    if people is None:
        tids = available
    else:
        tids = list(dict.fromkeys(str(t) for t in people))
        unknown = [t for t in tids if t not in result.tracks]
        if unknown:
            raise _usage("unknown_person", f"--people: track id(s) {', '.join(unknown)} not in the result "
                                           f"(it has {', '.join(available) or 'none'})")
    if not tids:
        raise _usage("no_person", f"{result_path}: the result has no tracks")
    if len(tids) > 255:
        raise _usage("usage", f"{len(tids)} people: the 8-bit ids image holds at most 255; pick some with --people")
    off = int(meta.get("frame_start") or 0)
    done_frames = int(meta.get("frames_done") or len(result.timestamps))
    lo, hi = off, off + done_frames
    start = lo if start is None else int(start)
    stop = hi if stop is None else int(stop)
    if stop <= start:
        raise _usage("usage", f"--stop ({stop}) must be greater than --start ({start})")
    if start < lo or stop > hi:
        raise _usage("frame_range", f"--start/--stop [{start}, {stop}) is outside the result's video frames "
                                    f"[{lo}, {hi})")
    if options.alpha not in ALPHA_KINDS:
        raise _usage("usage", f"alpha {options.alpha!r}: one of {', '.join(ALPHA_KINDS)}")
    if options.alpha == "segmentation" and video is None:
        raise _usage("usage", "--alpha segmentation reads the people off the plate: give it with --video")
    if video is not None:
        _check_plate(video, width, height)
    out_dir = Path(out_dir)
    stem = name if name else Path(os.fspath(result_path)).stem
    if not stem or any(c in stem for c in "/\\") or stem in (".", ".."):
        raise _usage("usage", f"--name {stem!r}: not a plain file name")
    _prepare_folder(out_dir, stem)

    maker = MatteMaker(result, tids, options)
    names = file_names(stem, tids, options.formats)
    total = stop - start
    contours, counts = {}, {}
    written, files, t0 = 0, 0, time.monotonic()
    first_bf = start + BLENDER_FRAME_OFFSET
    contours_name = f"{stem}_contours.npz"
    error = None
    maker.open()
    plate = plate_frames(video, start, stop) if options.alpha == "segmentation" else None
    try:
        for video_frame in range(start, stop):
            if cancel is not None and cancel():
                raise MatteError(EXIT_CANCELLED, "cancelled", f"cancelled after {written} of {total} frames "
                                                              f"(Blender frames {first_bf}..{first_bf + written - 1} kept)")
            bf = video_frame + BLENDER_FRAME_OFFSET
            fm = maker.frame(video_frame - off, None if plate is None else next(plate))
            try:
                files += write_frame(out_dir, names, bf, fm, maker.people, options.formats)
            except OSError as exc:
                full = exc.errno in _DISK_FULL
                kept = (f"Blender frames {first_bf}..{bf - 1} were written and kept" if written
                        else "no frame was written")
                raise MatteError(EXIT_WRITE, "disk_full" if full else "write_failed",
                                 f"cannot write frame {bf} to {out_dir} ({exc.strerror or exc}); {kept}, nothing "
                                 f"of frame {bf} is left behind"
                                 + (". Free some disk space and re-run with --start "
                                    f"{video_frame} to finish" if full else "")) from None
            for p in maker.people:
                alpha = fm.alphas[p.tid]
                solid = alpha >= 0.5 if (options.dilate or options.feather) else fm.visible[p.tid]
                pts = outer_contour(solid, options.contour_points)
                if pts is not None:
                    contours.setdefault(p.tid, []).append((bf, pts, fm.person_depth.get(p.tid, np.nan)))
                    counts[p.tid] = counts.get(p.tid, 0) + 1
            written += 1
            if progress is not None:
                progress(written, total, bf)
    except MatteError as exc:
        error = exc
    finally:
        maker.close()
        if plate is not None:
            plate.close()
    last_bf = first_bf + written - 1
    side = sidecar(result_path=result_path, stem=stem, maker=maker, names=names, first=first_bf,
                   last=last_bf if error is None else first_bf + total - 1, done=written,
                   partial=error is not None, options=options, contours_name=contours_name, counts=counts)
    if error is not None:
        side["frames_written_range"] = [first_bf, last_bf] if written else None
        if written:                                           # as far as the disk allows
            try:
                _write_npz(out_dir / contours_name, contour_arrays(maker, contours))
                _write_json(out_dir / f"{stem}_mattes.json", side)
            except OSError:
                pass
        raise error
    try:
        _write_npz(out_dir / contours_name, contour_arrays(maker, contours))
        _write_json(out_dir / f"{stem}_mattes.json", side)
    except OSError as exc:
        full = exc.errno in _DISK_FULL
        raise MatteError(EXIT_WRITE, "disk_full" if full else "write_failed",
                         f"the frames were written but not the sidecar / contours in {out_dir} "
                         f"({exc.strerror or exc})") from None
    seconds = time.monotonic() - t0
    return {"event": "done", "result": str((out_dir / f"{stem}_mattes.json").resolve()),
            "contours": str((out_dir / contours_name).resolve()), "frames": written, "files": files,
            "first_frame": first_bf, "last_frame": last_bf, "people": tids,
            "seconds": round(seconds, 3), "fps": round(written / max(seconds, 1e-9), 3)}


def plate_frames(video, start: int, stop: int):
    """The plate's RGB frames ``start .. stop - 1``, one per ``next``; a frame that does not
    decode is MatteError (exit 3) naming it."""
    from engine.video.decode import VideoError, iter_frames

    frames = iter_frames(video, start=start, stop=stop)
    for k in range(start, stop):
        try:
            yield next(frames).image
        except (StopIteration, VideoError) as exc:
            why = exc.message if isinstance(exc, VideoError) else "the video ends there"
            raise MatteError(EXIT_VIDEO, getattr(exc, "code", "truncated"),
                             f"the plate {video}: frame {k} does not decode ({why})") from None


def _prepare_folder(out_dir: Path, stem: str) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise MatteError(EXIT_WRITE, "write_failed", f"--out {out_dir}: is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        check_writable(out_dir / f"{stem}_mattes.json")
    except OSError as exc:
        full = exc.errno in _DISK_FULL
        raise MatteError(EXIT_WRITE, "disk_full" if full else "write_failed",
                         f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None


# ----------------------------------------------------------------------------- command line


def _people_arg(text: str):
    if text == "all":
        return None
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("--people: no track id given")
    return ids


def _points(text: str) -> int:
    v = int(text)
    if v < 3:
        raise argparse.ArgumentTypeError(f"must be at least 3, not {text!r}")
    return v


def _frame(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a video frame index >= 0, not {text!r}")
    return v


def build_parser() -> UsageParser:
    p = UsageParser(prog="python -m engine mattes",
                description="Per-person mattes (PNG / multilayer EXR sequences, contours) rendered from a "
                            "result's fitted bodies; docs/mattes.md.")
    p.add_argument("result", help="result file of `python -m engine run` (.npz)")
    p.add_argument("--out", required=True, help="folder for the mattes (made if missing)")
    p.add_argument("--video", help="the plate: checked to be the result's size")
    p.add_argument("--people", type=_people_arg, default=None, help="all (default) or track ids like 1,3")
    p.add_argument("--start", type=_frame, help="first video frame index (default: the result's first)")
    p.add_argument("--stop", type=_frame, help="video frame index to stop before (default: after the result's last)")
    p.add_argument("--format", choices=tuple(FORMATS), default="all", help="all = png + exr")
    p.add_argument("--parts", choices=PART_KINDS, default="densepose",
                   help="24 DensePose parts or 14 coarse groups")
    p.add_argument("--alpha", choices=ALPHA_KINDS, default="body",
                   help="body: the fitted body's silhouette; segmentation: the person as the landmark network "
                        "segments them on the plate (hair, clothes), near their body (needs --video)")
    p.add_argument("--dilate", type=finite_float, default=0.0, help="grow (negative: shrink) each matte by PX pixels")
    p.add_argument("--feather", type=nonneg_float, default=0.0, help="soft edge PX pixels wide, centred on the edge")
    p.add_argument("--contour-points", type=_points, default=DEFAULT_CONTOUR_POINTS,
                   help="points per contour in the contours file")
    p.add_argument("--name", help="file name stem (default: the result file's stem)")
    p.add_argument("--progress", choices=("tty", "jsonl"), default="tty")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr                   # nothing but progress JSON goes to stdout
    cancel = {"flag": False}
    jsonl = False

    def emit(obj):
        if jsonl:
            real_stdout.write(json.dumps(obj, allow_nan=False) + "\n")
            real_stdout.flush()

    def on_signal(signum, _frame):
        cancel["flag"] = True

    try:
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        parser = build_parser()
        if "jsonl" in argv:
            parser.jsonl_stdout = real_stdout
        args = parser.parse_args(argv)
        jsonl = args.progress == "jsonl"
        t0 = time.monotonic()
        state = {"last": 0.0}

        def progress(done, total, frame):
            now = time.monotonic()
            if done != total and done != 1 and now - state["last"] < 0.2:
                return
            state["last"] = now
            rate = done / max(now - t0, 1e-9)
            emit({"event": "progress", "stage": "mattes", "done": done, "total": total, "frame": frame,
                  "fps": round(rate, 3), "eta_s": round((total - done) / rate, 2) if rate > 0 else None})
            if not jsonl:
                print(f"\rmattes: {done}/{total} (frame {frame}, {rate:.1f}/s)", end="", file=sys.stderr, flush=True)

        options = Options(formats=FORMATS[args.format], parts=args.parts, dilate=args.dilate,
                          feather=args.feather, contour_points=args.contour_points, alpha=args.alpha)
        try:
            done = make_mattes(args.result, args.out, video=args.video, people=args.people, start=args.start,
                               stop=args.stop, options=options, name=args.name, progress=progress,
                               cancel=lambda: cancel["flag"])
        except MatteError as exc:
            print(f"\nerror: {exc.message}", file=sys.stderr, flush=True)
            emit({"event": "error", "code": exc.code, "message": exc.message})
            return exc.exit_code
        if not jsonl:
            print(f"\nwrote {done['frames']} frames (Blender {done['first_frame']}..{done['last_frame']}) of "
                  f"{len(done['people'])} people to {args.out}; sidecar {done['result']}", file=sys.stderr)
        emit(done)
        return EXIT_OK
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - a bug: keep the traceback
        report_internal_error(err, real_stdout, "jsonl" in argv)
        return EXIT_INTERNAL
    finally:
        sys.stdout = real_stdout


if __name__ == "__main__":
    sys.exit(main())
