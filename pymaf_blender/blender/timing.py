"""Frame rate and frame numbering between the video, the result file and Blender (no bpy).

Mapping (docs/blender-scene.md, "Frames and time"):

    Blender frame = video frame index + 1 = meta.frame_start + result frame index + 1

``meta.frame_start`` is the engine's ``--start`` (result frame 0 = video frame ``frame_start``;
0 when absent). The "+1" is Blender's own movie convention: a movie image or clip with
``frame_start = 1`` shows the file's first frame on scene frame 1, so the camera background
shows exactly the video frame the pose was estimated on, and frame numbers in Blender's movie
clip editor and tracker line up with ours.

``common.gaps.shown_frames``: a person is shown across gaps of at most ``BRIDGED_GAP_S`` (a frame
or two the estimator missed), hidden in longer ones (``visibility_keys``; the exports and the
mattes use the same frames).

Frame rates are split into Blender's integer ``fps`` and float ``fps_base`` (rate =
fps / fps_base), with the NTSC family written the way Blender's own presets write it:
29.97 -> 30 / 1.001, 23.976 -> 24 / 1.001, 59.94 -> 60 / 1.001.
"""
from __future__ import annotations

import math

import numpy as np

BLENDER_FRAME_OFFSET = 1  # Blender frame of video frame 0


def blender_fps(fps: float) -> tuple:
    """Frames per second -> (fps: int, fps_base: float) with fps / fps_base == the rate.

    Integer rates give base 1.0; NTSC rates (within 0.005 fps of n / 1.001) give n / 1.001;
    any other rate r gives (round(r), round(r) / r)."""
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"frame rate must be a positive number, got {fps!r}")
    n = round(fps)
    if n >= 1 and abs(fps - n) < 1e-6 * n:
        return int(n), 1.0
    n = round(fps * 1.001)
    if n >= 1 and abs(n / 1.001 - fps) < 5e-3:
        return int(n), 1.001
    n = max(1, round(fps))
    return int(n), n / fps


def scene_rate(fps: int, fps_base: float) -> float:
    return fps / fps_base


def frame_offset(meta: dict) -> int:
    """Blender frame of result frame 0."""
    return int(meta.get("frame_start") or 0) + BLENDER_FRAME_OFFSET


def blender_frames(frames, meta: dict) -> np.ndarray:
    """Result frame indices (T,) -> Blender frame numbers (T,) float64."""
    return np.asarray(frames, np.float64) + frame_offset(meta)


def present_runs(frames) -> list:
    """Strictly increasing frame numbers -> [(first, last), ...] runs of consecutive frames."""
    f = np.asarray(frames, np.int64)
    if f.size == 0:
        return []
    cut = np.flatnonzero(np.diff(f) != 1)
    starts = np.r_[0, cut + 1]
    ends = np.r_[cut, len(f) - 1]
    return [(int(f[a]), int(f[b])) for a, b in zip(starts, ends)]


def visibility_keys(frames, scene_start: int, scene_end: int) -> tuple:
    """Keys that show a body only on the frames its track has.

    frames (T,) Blender frame numbers of the track (strictly increasing). -> (key frames,
    hidden values) for a CONSTANT F-Curve: 1.0 (hidden) from ``scene_start`` until the first
    frame, 0.0 on the first frame of every run of consecutive frames, 1.0 on the frame after
    every run (when inside the scene range)."""
    runs = present_runs(frames)
    keys, vals = [], []
    if runs and runs[0][0] > scene_start:
        keys.append(scene_start)
        vals.append(1.0)
    for a, b in runs:
        keys.append(a)
        vals.append(0.0)
        if b + 1 <= scene_end:
            keys.append(b + 1)
            vals.append(1.0)
    return np.asarray(keys, np.float64), np.asarray(vals, np.float64)
