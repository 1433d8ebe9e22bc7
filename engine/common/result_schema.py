"""The engine's result file: versioned, plain-array ``.npz`` (numpy only; Blender-safe).

The engine (its own process) writes one result file per video; the Blender extension reads it
with whatever numpy Blender ships (1.26 on Blender 4.5/5.0, 2.x on 4.2/5.2). So the file holds
only plain arrays: bool, int64, float32/float64, uint8 (the JSON metadata) and fixed-width
unicode ``'U'`` -- never object arrays or pickles -- and ``np.load(path, allow_pickle=False)``
reads every key under numpy 1.x and 2.x (npy format 1.0 headers). The full contract, with units
and conventions, is ``docs/result-format.md``.

Key layout (schema version 1)::

    schema_version                  ()          int64   SCHEMA_VERSION (read before anything else)
    meta/json                       (B,)        uint8   UTF-8 JSON, see META_REQUIRED
    video/timestamps                (N,)        float64 seconds since the video start, per decoded frame
    tracks/<id>/frames              (T,)        int64   0-based frame indices, strictly increasing (gaps allowed)
    tracks/<id>/boxes               (T, 3)      float   crop box cx, cy, side (image pixels)
    tracks/<id>/cam_crop            (T, 3)      float   PyMAF crop camera (s, tx, ty)
    tracks/<id>/transl              (T, 3)      float   full-image camera translation (metres, OpenCV camera)
    tracks/<id>/global_orient_rotmat(T, 3, 3)   float   SMPL root rotation, camera frame
    tracks/<id>/body_pose_rotmat    (T, 23, 3, 3) float SMPL joints 1..23, relative to the parent
    tracks/<id>/pose_axis_angle     (T, 72)     float   24 joints x axis-angle (joint 0 = global orient)
    tracks/<id>/pose_quat           (T, 24, 4)  float   24 joints x unit quaternion (w, x, y, z)
    tracks/<id>/betas               (T, 10)     float   per-frame shape
    tracks/<id>/betas_robust        (10,)       float   one shape for the whole track
    tracks/<id>/keypoints2d         (T, 49, 2)  float   49 joints projected to image pixels
    tracks/<id>/joints3d            (T, 49, 3)  float   49 joints, camera frame, INCLUDING transl
    tracks/<id>/confidence          (T,)        float   detection confidence in [0, 1]
    tracks/<id>/interpolated        (T,)        bool    frame filled across a short gap (not observed)
    tracks/<id>/landmarks2d         (T, 33, 3)  float   optional, landmark estimator: BlazePose body landmarks,
                                                        image pixels x, y and visibility in [0, 1]
    tracks/<id>/landmarks3d         (T, 33, 3)  float   optional, landmark estimator: BlazePose world landmarks,
                                                        metres, hip-centred, camera axes (not translated)

Optional rig data (engine >= 0.2 writes it; the Blender extension needs it to build a skinned
rig without reading any body model file itself)::

    body/faces                      (F, 3)      int64   triangles of the body mesh
    body/weights                    (V, 24)     float   skinning weights
    body/parents                    (24,)       int64   kinematic tree, parents[0] = -1
    tracks/<id>/rest_vertices       (V, 3)      float   rest mesh shaped by betas_robust (SMPL body frame)
    tracks/<id>/rest_joints         (24, 3)     float   J_regressor(rest_vertices) (SMPL body frame)

Writing is atomic (temp file in the target folder, fsync, ``os.replace``): a reader sees the old
file or the new one, never half of one; a full disk raises ``ResultError`` and leaves the target
untouched. The file's permissions are those of a plain ``open()``: ``0o666 & ~umask``
(``engine.common.atomic``).
"""
import datetime
import errno
import json
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np

from . import rotations
from .atomic import atomic_file
from . import smpl_topology as topo

SCHEMA_VERSION = 1

# Engine version that first wrote each schema version (for "update to engine >= X" messages).
SCHEMA_ENGINE_VERSIONS = {1: "0.1.0"}

VERSION_KEY = "schema_version"
META_KEY = "meta/json"
TIMESTAMPS_KEY = "video/timestamps"
TRACK_PREFIX = "tracks/"

NUM_KEYPOINTS = len(topo.JOINT_NAMES_49)  # 49
NUM_BODY_LANDMARKS = 33  # BlazePose GHUM body landmarks (the landmark estimator)
_NB = topo.NUM_BETAS  # 10
_NJ = topo.NUM_JOINTS  # 24

# name -> (trailing shape after T (None for per-track arrays: full shape), dtype kind, required)
# kind: "f" float32/float64, "i" int64, "b" bool.
TRACK_FIELDS = {
    "frames": ((), "i", True),
    "boxes": ((3,), "f", False),
    "cam_crop": ((3,), "f", False),
    "transl": ((3,), "f", True),
    "global_orient_rotmat": ((3, 3), "f", True),
    "body_pose_rotmat": ((_NJ - 1, 3, 3), "f", True),
    "pose_axis_angle": ((_NJ * 3,), "f", True),
    "pose_quat": ((_NJ, 4), "f", True),
    "betas": ((_NB,), "f", True),
    "keypoints2d": ((NUM_KEYPOINTS, 2), "f", False),
    "joints3d": ((NUM_KEYPOINTS, 3), "f", False),
    "confidence": ((), "f", True),
    "interpolated": ((), "b", True),
    "landmarks2d": ((NUM_BODY_LANDMARKS, 3), "f", False),
    "landmarks3d": ((NUM_BODY_LANDMARKS, 3), "f", False),
}
# Per-track arrays without a time axis: name -> (shape (None = any size), kind, required).
TRACK_STATIC_FIELDS = {
    "betas_robust": ((_NB,), "f", True),
    "rest_vertices": ((None, 3), "f", False),
    "rest_joints": ((_NJ, 3), "f", False),
}
BODY_PREFIX = "body/"
# name -> (shape (None = any size), kind); all present or all absent.
BODY_FIELDS = {"faces": ((None, 3), "i"), "weights": ((None, _NJ), "f"), "parents": ((_NJ,), "i")}

META_REQUIRED = ("schema_version", "engine_version", "created", "partial", "frames_done",
                 "video", "camera", "track_ids")
VIDEO_REQUIRED = ("path", "width", "height", "fps", "frame_count")
CAMERA_REQUIRED = ("focal_px", "principal_point", "convention")

ROT_ATOL = 1e-3  # orthonormality / unit norm / cross-representation agreement (float32-safe)
_TRACK_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_ALLOWED_KINDS = "biuf"  # plus 'U'; never 'O'


class ResultError(ValueError):
    """A result file or object is missing, corrupt, of an unknown version or inconsistent."""


def _engine_version():
    try:
        from engine import __version__
        return __version__
    except Exception:  # pragma: no cover - bundled copies without the package root
        return "unknown"


def make_meta(*, video, camera, partial=False, frames_done=None, provenance=None,
              smoothing=None, track_ids=(), engine_version=None, created=None, **extra):
    """Metadata dict with the required keys filled in (schema version, engine version, time).

    ``video``: {path, width, height, fps, frame_count}; ``camera``: {focal_px,
    principal_point: [cx, cy]} (convention defaults to "opencv"). Extra keyword arguments are
    stored as additional top-level metadata.
    """
    camera = {"convention": "opencv", **camera}
    meta = {
        "schema_version": SCHEMA_VERSION,
        "engine_version": engine_version or _engine_version(),
        "created": created or datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "partial": bool(partial),
        "frames_done": frames_done,
        "video": dict(video),
        "camera": camera,
        "provenance": dict(provenance or {}),
        "smoothing": smoothing,
        "track_ids": [str(t) for t in track_ids],
    }
    meta.update(extra)
    return meta


def _check_dtype(key, arr, kind):
    if arr.dtype.kind == "O":
        raise ResultError(f"{key}: object arrays are not allowed")
    if kind == "f" and arr.dtype not in (np.float32, np.float64):
        raise ResultError(f"{key}: dtype {arr.dtype} is not float32/float64")
    if kind == "i" and arr.dtype != np.int64:
        raise ResultError(f"{key}: dtype {arr.dtype} is not int64")
    if kind == "b" and arr.dtype != np.bool_:
        raise ResultError(f"{key}: dtype {arr.dtype} is not bool")


def _coerce(arr, kind):
    """Bring user input to the stored dtype (keeps float32 vs float64; ints -> float64)."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "O":
        return arr  # rejected by validate()
    if kind == "f" and arr.dtype not in (np.float32, np.float64):
        return arr.astype(np.float64)
    if kind == "i" and arr.dtype != np.int64 and arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if kind == "b" and arr.dtype != np.bool_ and arr.dtype.kind in "iub":
        return arr.astype(bool)
    return arr


def _check_rotmats(key, R):
    if not np.all(np.isfinite(R)):
        raise ResultError(f"{key}: non-finite rotation entries")
    R = R.astype(np.float64)
    eye_err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(initial=0.0)
    if eye_err > ROT_ATOL:
        raise ResultError(f"{key}: not orthonormal (max |R^T R - I| = {eye_err:.3g})")
    if R.size and np.linalg.det(R).min() < 1 - ROT_ATOL:
        raise ResultError(f"{key}: determinant is not +1 (reflection?)")


def _check_static(key, arr, shape, kind):
    _check_dtype(key, arr, kind)
    if arr.ndim != len(shape) or any(w is not None and w != d for w, d in zip(shape, arr.shape)):
        want = "(" + ", ".join("N" if w is None else str(w) for w in shape) + ")"
        raise ResultError(f"{key}: expected shape {want}, got {arr.shape}")
    if kind == "f" and not np.all(np.isfinite(arr)):
        raise ResultError(f"{key}: contains NaN or inf")


@dataclass
class BodyRig:
    """The body mesh topology and skinning shared by all tracks (optional rig data)."""
    faces: np.ndarray
    weights: np.ndarray
    parents: np.ndarray

    def __post_init__(self):
        for name, (_, kind) in BODY_FIELDS.items():
            setattr(self, name, _coerce(getattr(self, name), kind))

    def validate(self):
        for name, (shape, kind) in BODY_FIELDS.items():
            _check_static(BODY_PREFIX + name, getattr(self, name), shape, kind)
        V = self.weights.shape[0]
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
            raise ResultError(f"{BODY_PREFIX}faces: vertex index outside [0, {V})")
        if self.parents[0] != -1 or np.any(self.parents[1:] >= np.arange(1, _NJ)) or np.any(self.parents[1:] < 0):
            raise ResultError(f"{BODY_PREFIX}parents: not a kinematic tree with parents[0] = -1 and "
                              "parents[j] < j")
        return self


@dataclass
class TrackResult:
    """One person's motion. Per-frame arrays share their first dim T = len(frames)."""
    frames: np.ndarray
    transl: np.ndarray
    global_orient_rotmat: np.ndarray
    body_pose_rotmat: np.ndarray
    pose_axis_angle: np.ndarray
    pose_quat: np.ndarray
    betas: np.ndarray
    betas_robust: np.ndarray
    confidence: np.ndarray
    interpolated: np.ndarray
    boxes: np.ndarray = None
    cam_crop: np.ndarray = None
    keypoints2d: np.ndarray = None
    joints3d: np.ndarray = None
    landmarks2d: np.ndarray = None
    landmarks3d: np.ndarray = None
    rest_vertices: np.ndarray = None
    rest_joints: np.ndarray = None

    def __post_init__(self):
        for name, (_, kind, _) in {**TRACK_FIELDS, **TRACK_STATIC_FIELDS}.items():
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, _coerce(v, kind))

    @classmethod
    def from_rotmats(cls, frames, transl, global_orient_rotmat, body_pose_rotmat, betas,
                     confidence, interpolated=None, betas_robust=None, **optional):
        """Build a track from rotation matrices; derives axis-angle and quaternions.

        Quaternions are made sign-continuous over time (``quat_make_continuous``) so Blender
        interpolates keyframes the short way. ``betas_robust`` defaults to the median.
        """
        go = np.asarray(global_orient_rotmat)
        bp = np.asarray(body_pose_rotmat)
        R = np.concatenate([go[:, None], bp], axis=1)  # (T, 24, 3, 3)
        aa = rotations.rotmat_to_axis_angle(R).reshape(R.shape[0], -1)
        q = rotations.quat_make_continuous(rotations.rotmat_to_quat(R), axis=0)
        betas = np.asarray(betas)
        T = len(frames)
        return cls(frames=frames, transl=transl, global_orient_rotmat=go, body_pose_rotmat=bp,
                   pose_axis_angle=aa, pose_quat=q, betas=betas,
                   betas_robust=np.median(betas, axis=0) if betas_robust is None else betas_robust,
                   confidence=confidence,
                   interpolated=np.zeros(T, bool) if interpolated is None else interpolated,
                   **optional)

    @property
    def num_frames(self):
        return int(np.asarray(self.frames).shape[0])

    def arrays(self):
        """Stored field name -> array (absent optional fields left out)."""
        out = {}
        for name in (*TRACK_FIELDS, *TRACK_STATIC_FIELDS):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        return out

    def validate(self, prefix="track"):
        """Raise ResultError naming the key and the problem; return self when valid."""
        for name, (shape, kind, required) in {**TRACK_FIELDS, **TRACK_STATIC_FIELDS}.items():
            if getattr(self, name) is None and required:
                raise ResultError(f"{prefix}/{name}: required array is missing")
        frames = np.asarray(self.frames)
        if frames.ndim != 1:
            raise ResultError(f"{prefix}/frames: expected shape (T,), got {frames.shape}")
        T = frames.shape[0]
        if T == 0:
            raise ResultError(f"{prefix}/frames: empty track (T = 0)")
        for name, (tail, kind, _) in TRACK_FIELDS.items():
            arr = getattr(self, name)
            if arr is None:
                continue
            key = f"{prefix}/{name}"
            _check_dtype(key, arr, kind)
            if arr.shape != (T,) + tail:
                want = "(" + ", ".join(["T"] + [str(d) for d in tail]) + ")"
                raise ResultError(f"{key}: expected shape {want} with T = {T} (len(frames)), "
                                  f"got {arr.shape}")
            if kind == "f" and not np.all(np.isfinite(arr)):
                raise ResultError(f"{key}: contains NaN or inf")
        for name, (shape, kind, _) in TRACK_STATIC_FIELDS.items():
            arr = getattr(self, name)
            if arr is None:
                continue
            _check_static(f"{prefix}/{name}", arr, shape, kind)

        if frames.min() < 0:
            raise ResultError(f"{prefix}/frames: negative frame index {int(frames.min())}")
        d = np.diff(frames)
        if np.any(d <= 0):
            i = int(np.argmax(d <= 0))
            what = "duplicate" if d[i] == 0 else "unsorted"
            raise ResultError(f"{prefix}/frames: {what} frame indices "
                              f"(frames[{i}] = {int(frames[i])}, frames[{i + 1}] = {int(frames[i + 1])}); "
                              "must be strictly increasing")
        c = self.confidence
        if np.any((c < 0) | (c > 1)):
            raise ResultError(f"{prefix}/confidence: values outside [0, 1]")

        # Rotations: valid, and the three representations agree.
        _check_rotmats(f"{prefix}/global_orient_rotmat", self.global_orient_rotmat)
        _check_rotmats(f"{prefix}/body_pose_rotmat", self.body_pose_rotmat)
        R = np.concatenate([self.global_orient_rotmat[:, None], self.body_pose_rotmat],
                           axis=1).astype(np.float64)
        q = self.pose_quat.astype(np.float64)
        norm_err = np.abs(np.linalg.norm(q, axis=-1) - 1).max()
        if norm_err > ROT_ATOL:
            raise ResultError(f"{prefix}/pose_quat: quaternions are not unit norm "
                              f"(max ||q| - 1| = {norm_err:.3g})")
        err = np.abs(rotations.quat_to_rotmat(q) - R).max()
        if err > ROT_ATOL:
            raise ResultError(f"{prefix}/pose_quat: disagrees with the rotation matrices "
                              f"(max entry error {err:.3g}); expected (w, x, y, z) order, joint 0 = "
                              "global orient")
        aa = self.pose_axis_angle.astype(np.float64).reshape(T, _NJ, 3)
        err = np.abs(rotations.axis_angle_to_rotmat(aa) - R).max()
        if err > ROT_ATOL:
            raise ResultError(f"{prefix}/pose_axis_angle: disagrees with the rotation matrices "
                              f"(max entry error {err:.3g}); expected 24 joints x 3, joint 0 = "
                              "global orient")
        return self


@dataclass
class MotionResult:
    """A whole result: metadata, per-frame video timestamps and tracks keyed by track id."""
    meta: dict
    tracks: dict = field(default_factory=dict)
    timestamps: np.ndarray = None
    body: BodyRig = None

    def __post_init__(self):
        if self.timestamps is not None:
            self.timestamps = _coerce(self.timestamps, "f").astype(np.float64, copy=False)

    @property
    def partial(self):
        return bool(self.meta.get("partial"))

    def validate(self):
        """Raise ResultError naming the key and the problem; return self when valid."""
        meta = self.meta
        if not isinstance(meta, dict):
            raise ResultError(f"{META_KEY}: metadata must be a dict, got {type(meta).__name__}")
        check_schema_version(meta.get("schema_version"), meta.get("engine_version"))
        for k in META_REQUIRED:
            if k not in meta:
                raise ResultError(f"{META_KEY}: missing required key {k!r}")
        for sub, req in (("video", VIDEO_REQUIRED), ("camera", CAMERA_REQUIRED)):
            if not isinstance(meta[sub], dict):
                raise ResultError(f"{META_KEY}: {sub!r} must be an object")
            for k in req:
                if k not in meta[sub]:
                    raise ResultError(f"{META_KEY}: missing required key {sub}.{k}")
        cam = meta["camera"]
        if cam["convention"] != "opencv":
            raise ResultError(f"{META_KEY}: camera.convention must be 'opencv', got {cam['convention']!r}")
        pp = cam["principal_point"]
        if not (isinstance(pp, (list, tuple)) and len(pp) == 2):
            raise ResultError(f"{META_KEY}: camera.principal_point must be [cx, cy]")
        if not (isinstance(cam["focal_px"], (int, float)) and cam["focal_px"] > 0):
            raise ResultError(f"{META_KEY}: camera.focal_px must be a positive number")
        if not isinstance(meta["partial"], bool):
            raise ResultError(f"{META_KEY}: 'partial' must be true or false")

        ts = self.timestamps
        if ts is None:
            raise ResultError(f"{TIMESTAMPS_KEY}: required array is missing")
        if ts.ndim != 1:
            raise ResultError(f"{TIMESTAMPS_KEY}: expected shape (N,), got {ts.shape}")
        N = ts.shape[0]
        if not np.all(np.isfinite(ts)):
            raise ResultError(f"{TIMESTAMPS_KEY}: contains NaN or inf")
        if np.any(np.diff(ts) <= 0):
            raise ResultError(f"{TIMESTAMPS_KEY}: timestamps must be strictly increasing")

        done = meta["frames_done"]
        if not (isinstance(done, int) and not isinstance(done, bool) and 0 <= done <= N):
            raise ResultError(f"{META_KEY}: frames_done must be an integer in [0, {N}] "
                              f"(N = len({TIMESTAMPS_KEY})), got {done!r}")
        if not meta["partial"]:
            if done != N:
                raise ResultError(f"{META_KEY}: complete result (partial = false) needs "
                                  f"frames_done == N = {N}, got {done}")
            fc = meta["video"]["frame_count"]
            if fc != N:
                raise ResultError(f"{META_KEY}: video.frame_count = {fc!r} but {TIMESTAMPS_KEY} "
                                  f"has {N} entries (complete result)")

        ids = meta["track_ids"]
        if not isinstance(ids, list) or sorted(map(str, ids)) != sorted(self.tracks):
            raise ResultError(f"{META_KEY}: track_ids {ids!r} do not match the stored tracks "
                              f"{sorted(self.tracks)!r}")
        for tid, tr in self.tracks.items():
            if not (isinstance(tid, str) and _TRACK_ID_RE.match(tid)):
                raise ResultError(f"tracks: invalid track id {tid!r} (use letters, digits, _ . -)")
            if not isinstance(tr, TrackResult):
                raise ResultError(f"{TRACK_PREFIX}{tid}: expected a TrackResult")
            prefix = TRACK_PREFIX + tid
            tr.validate(prefix)
            last = int(tr.frames[-1])
            if last >= done:
                raise ResultError(f"{prefix}/frames: frame index {last} >= frames_done = {done}")
            if tr.rest_vertices is not None and self.body is not None \
                    and tr.rest_vertices.shape[0] != self.body.weights.shape[0]:
                raise ResultError(f"{prefix}/rest_vertices: {tr.rest_vertices.shape[0]} vertices but "
                                  f"{BODY_PREFIX}weights has {self.body.weights.shape[0]}")
        if self.body is not None:
            self.body.validate()
        return self

    @property
    def has_rig(self):
        """True when the optional rig data (body section, rest mesh and joints per track) is there."""
        return self.body is not None and all(
            t.rest_vertices is not None and t.rest_joints is not None for t in self.tracks.values())

    def to_arrays(self):
        """Flat key -> array dict, exactly what goes into the npz."""
        try:
            text = json.dumps(self.meta, allow_nan=False, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise ResultError(f"{META_KEY}: metadata is not plain JSON ({e})") from e
        out = {
            VERSION_KEY: np.array(SCHEMA_VERSION, dtype=np.int64),
            META_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8),
            TIMESTAMPS_KEY: np.asarray(self.timestamps, dtype=np.float64),
        }
        for tid, tr in self.tracks.items():
            for name, arr in tr.arrays().items():
                out[f"{TRACK_PREFIX}{tid}/{name}"] = np.ascontiguousarray(arr)
        if self.body is not None:
            for name in BODY_FIELDS:
                out[BODY_PREFIX + name] = np.ascontiguousarray(getattr(self.body, name))
        for k, a in out.items():
            if a.dtype.kind not in _ALLOWED_KINDS and a.dtype.kind != "U":
                raise ResultError(f"{k}: dtype {a.dtype} is not storable (bool/int/float/'U' only)")
        return out

    @classmethod
    def from_arrays(cls, arrays):
        """Inverse of ``to_arrays`` (checks the version first; does not validate)."""
        if VERSION_KEY not in arrays or META_KEY not in arrays:
            raise ResultError("not a PyMAF result file (no 'schema_version' / 'meta/json' keys)")
        ver = arrays[VERSION_KEY]
        try:
            text = bytes(np.asarray(arrays[META_KEY], dtype=np.uint8)).decode("utf-8")
            meta = json.loads(text)
        except (ValueError, TypeError) as e:
            raise ResultError(f"{META_KEY}: corrupt metadata ({e})") from e
        engine_ver = meta.get("engine_version") if isinstance(meta, dict) else None
        check_schema_version(ver.item() if getattr(ver, "shape", None) == () else ver, engine_ver)
        if not isinstance(meta, dict):
            raise ResultError(f"{META_KEY}: metadata must be a JSON object")
        if meta.get("schema_version") != int(ver):
            raise ResultError(f"{META_KEY}: schema_version {meta.get('schema_version')!r} "
                              f"disagrees with '{VERSION_KEY}' = {int(ver)}")
        per_track = {}
        known = set(TRACK_FIELDS) | set(TRACK_STATIC_FIELDS)
        for k, a in arrays.items():
            if not k.startswith(TRACK_PREFIX):
                continue
            rest = k[len(TRACK_PREFIX):]
            tid, _, name = rest.rpartition("/")
            if name in known and tid:  # unknown names: additive fields of a later engine, ignored
                per_track.setdefault(tid, {})[name] = a
        tracks = {}
        for tid, fields in per_track.items():
            missing = [n for n, (_, _, req) in {**TRACK_FIELDS, **TRACK_STATIC_FIELDS}.items()
                       if req and n not in fields]
            if missing:
                raise ResultError(f"{TRACK_PREFIX}{tid}/{missing[0]}: required array is missing")
            tracks[tid] = TrackResult(**fields)
        body = None
        present = [n for n in BODY_FIELDS if BODY_PREFIX + n in arrays]
        if present:
            if len(present) != len(BODY_FIELDS):
                missing = sorted(set(BODY_FIELDS) - set(present))[0]
                raise ResultError(f"{BODY_PREFIX}{missing}: required array is missing (the body section "
                                  "is all or nothing)")
            body = BodyRig(**{n: arrays[BODY_PREFIX + n] for n in BODY_FIELDS})
        return cls(meta=meta, tracks=tracks, timestamps=arrays.get(TIMESTAMPS_KEY), body=body)


def track_order(track_id: str) -> tuple:
    """Sort key of track ids: numbers in numeric order ("2" before "10"), then other ids by name."""
    tid = str(track_id)
    return (0, int(tid), "") if tid.isdigit() else (1, 0, tid)


def check_schema_version(version, engine_version=None):
    """Raise ResultError unless ``version`` is a schema version this code can read."""
    if isinstance(version, np.ndarray) and version.shape == ():
        version = version.item()
    if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)):
        raise ResultError(f"{VERSION_KEY}: missing or not an integer ({version!r})")
    version = int(version)
    if version == SCHEMA_VERSION:
        return
    writer = f" (written by engine {engine_version})" if engine_version else ""
    if version > SCHEMA_VERSION:
        raise ResultError(
            f"{VERSION_KEY}: result schema version {version}{writer} is newer than this reader "
            f"supports (version {SCHEMA_VERSION}, engine {_engine_version()}); update the PyMAF "
            f"extension/engine to a version that reads schema {version}"
            + (f" (engine >= {engine_version})" if engine_version else ""))
    raise ResultError(
        f"{VERSION_KEY}: result schema version {version}{writer} is no longer supported "
        f"(this reader needs version {SCHEMA_VERSION}, written by engine >= "
        f"{SCHEMA_ENGINE_VERSIONS[SCHEMA_VERSION]}); re-run the engine on the video")


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


def write_result(result, path, compress=False):
    """Validate ``result`` and write it to ``path`` atomically; returns ``path``.

    Uncompressed by default: float pose data barely compresses (see docs/result-format.md)
    and zlib costs seconds on long videos. The npz goes to a temp file in the same folder,
    is fsynced, then ``os.replace``d over ``path`` -- readers see the old file or the new
    one. Any OSError (disk full included) raises ResultError and leaves ``path`` untouched.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ResultError(f"{path}: is a directory; refusing to overwrite it with a result file")
    result.validate()
    arrays = result.to_arrays()
    try:
        with atomic_file(path) as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise ResultError(f"{path}: not enough disk space to write the result "
                              f"(no space left on device); the previous file, if any, is "
                              f"unchanged. Free some disk space and retry.") from e
        raise ResultError(f"{path}: could not write the result ({e})") from e
    return path


def read_result(path, validate=True):
    """Read and (by default) validate a result file; never unpickles anything."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ResultError(f"{path}: no result file there")
    if os.path.isdir(path):
        raise ResultError(f"{path}: is a directory, not a result file")
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):  # a bare .npy: np.load returned an ndarray
            raise ResultError(f"{path}: not a PyMAF result file (a single .npy array, not an .npz)")
        with z:
            arrays = {k: z[k] for k in z.files}
    except ResultError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError) as e:
        raise ResultError(f"{path}: not a PyMAF result file or corrupt/truncated ({e})") from e
    result = MotionResult.from_arrays(arrays)
    if validate:
        try:
            result.validate()
        except ResultError as e:
            raise ResultError(f"{path}: {e}") from e
    return result
