"""Which frames a person counts as present on: their track's frames plus the short gaps bridged.

A person missing for at most ``BRIDGED_GAP_S`` (the estimator lost them for a frame or two) is
shown throughout, the pose interpolated across: hiding them would blink the body out, the
exports would collapse it to scale 0 and BVH split it into takes, the mattes would drop it.
Longer gaps are real absences. One rule for the Blender scene, the exports and the mattes.
"""
from __future__ import annotations

import numpy as np

BRIDGED_GAP_S = 0.1


def longest_bridged(fps: float, max_gap_s: float = BRIDGED_GAP_S) -> int:
    """How many consecutive missing frames are bridged at ``fps``."""
    return int(np.floor(float(max_gap_s) * float(fps) + 1e-9)) if fps and fps > 0 else 0


def shown_frames(frames, fps: float, max_gap_s: float = BRIDGED_GAP_S) -> np.ndarray:
    """Strictly increasing frame numbers (T,) -> the frames a person is shown on: these plus
    every gap of at most ``max_gap_s`` (int64, sorted)."""
    f = np.asarray(frames, np.int64)
    if f.size < 2:
        return f.copy()
    longest = longest_bridged(fps, max_gap_s)
    filled = [f]
    for a, b in zip(f[:-1], f[1:]):
        if 1 < b - a <= longest + 1:
            filled.append(np.arange(a + 1, b, dtype=np.int64))
    return np.sort(np.concatenate(filled))
