"""The tracks file of ``python -m engine analyze`` (JSON, format ``pymaf-tracks`` version 1).

Written by ``analyze``, read back by ``run --tracks`` (which then skips detection and
tracking) and by the Blender extension to let the user pick people. The layout is documented
key by key in docs/engine-cli.md; frames are video frame indices (0 = the file's first frame).
"""
from __future__ import annotations

import datetime
import json
import math
import os

import numpy as np

from engine import __version__
from engine.common.atomic import atomic_file
from engine.people.tracking import Track

TRACKS_FORMAT = "pymaf-tracks"
TRACKS_VERSION = 1


class TracksFileError(ValueError):
    """The file is missing, not a tracks file, of another version, or inconsistent."""


def tracks_document(tracks: dict, *, video: dict, frame_start: int, timestamps, detector: str,
                    tracker: dict, partial: bool = False) -> dict:
    """{id: Track} (frames relative to ``frame_start``) -> the JSON document (a dict)."""
    stamps = [float(t) for t in timestamps]
    entries = []
    for tid, tr in sorted(tracks.items()):
        frames = [int(f) + frame_start for f in tr.frames]
        entries.append({"id": int(tid), "first_frame": frames[0], "last_frame": frames[-1],
                        "frame_count": len(frames), "frames": frames, "xyxy": tr.xyxy.tolist(),
                        "scores": [float(s) for s in tr.scores],
                        "interpolated": [bool(i) for i in tr.interpolated]})
    return {"format": TRACKS_FORMAT, "version": TRACKS_VERSION, "engine_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(), "partial": bool(partial),
            "video": dict(video), "frame_start": int(frame_start), "frame_stop": int(frame_start) + len(stamps),
            "timestamps": stamps, "detector": detector, "tracker": dict(tracker), "tracks": entries}


def write_tracks(path, document: dict) -> None:
    """Write atomically (the previous file stays whole on any error, a full disk included)."""
    text = json.dumps(document, allow_nan=False, separators=(",", ":"))
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))


def _fail(path, msg):
    raise TracksFileError(f"{os.fspath(path)}: {msg}")


def read_tracks(path) -> tuple:
    """-> (document dict, {id: Track} with video frame indices). Raises TracksFileError."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        _fail(path, "no such file")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        _fail(path, f"not a tracks file ({e})")
    if not isinstance(doc, dict) or doc.get("format") != TRACKS_FORMAT:
        _fail(path, f"not a tracks file (no \"format\": \"{TRACKS_FORMAT}\"); make one with python -m engine analyze")
    if doc.get("version") != TRACKS_VERSION:
        _fail(path, f"tracks file version {doc.get('version')!r} (written by engine {doc.get('engine_version')}); "
                    f"this engine reads version {TRACKS_VERSION}: run python -m engine analyze again")
    for key in ("video", "frame_start", "frame_stop", "timestamps", "tracks"):
        if key not in doc:
            _fail(path, f"missing key {key!r}")
    start, stop = doc["frame_start"], doc["frame_stop"]
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop):
        _fail(path, f"frame_start {start!r} / frame_stop {stop!r} are not a frame range")
    tracks = {}
    for i, t in enumerate(doc["tracks"]):
        try:
            tid = t["id"]
            frames = np.asarray(t["frames"], np.int64).reshape(-1)
            xyxy = np.asarray(t["xyxy"], np.float64).reshape(len(frames), 4)
            scores = np.asarray(t["scores"], np.float64).reshape(len(frames))
            interp = np.asarray(t["interpolated"], bool).reshape(len(frames))
        except (KeyError, TypeError, ValueError) as e:
            _fail(path, f"tracks[{i}]: {type(e).__name__}: {e}")
        if not isinstance(tid, int) or tid in tracks:
            _fail(path, f"tracks[{i}]: id {tid!r} is not a new integer")
        if (len(frames) == 0 or np.any(np.diff(frames) <= 0) or frames[0] < start or frames[-1] >= stop
                or not all(math.isfinite(v) for v in xyxy.ravel())):
            _fail(path, f"track {tid}: frames must increase inside [{start}, {stop}) and boxes be finite")
        tracks[tid] = Track(frames, xyxy, scores, interp)
    return doc, tracks
