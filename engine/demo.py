"""The fallback clip of ``python3 build.py demo`` (and of a Blender test) when
``../shared/footage/dancer.mp4`` is absent: our mannequin walking, rendered, with its box given.

The main job itself is the extension's headless job (``python -m pymaf_blender.cli``), which
runs ``python -m engine run`` and builds the Blender scene: one way to do it.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2


def write_test_clip(folder: Path, frames: int = 8) -> tuple:
    """A clip of the mannequin walking in place, three-quarter view (the landmark model sees
    it), and a boxes file for it (no footage, no detector needed). -> (video path, boxes JSON path)."""
    from engine.body.mannequin import build_mannequin
    from engine.data.clips import render_person_clip

    clip = render_person_clip(build_mannequin(), "walk", frames, seed=5, heading_deg=25.0)
    path, boxes = folder / "test_walk.avi", folder / "test_walk_boxes.json"
    h, w = clip.frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    for frame in clip.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    pad = 0.05 * (clip.boxes[:, 3] - clip.boxes[:, 1])[:, None] * [-1, -1, 1, 1]
    boxes.write_text(json.dumps([[list(map(float, b))] for b in clip.boxes + pad]))
    return path, boxes
