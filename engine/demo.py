"""The fallback clip of ``python3 build.py demo`` (and of a Blender test) when
``../shared/footage/dancer.mp4`` is absent: a person-shaped card with its box given.

The main job itself is the extension's headless job (``python -m pymaf_blender.cli``), which
runs ``python -m engine run`` and builds the Blender scene: one way to do it.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_test_clip(folder: Path, frames: int = 8) -> tuple:
    """A small clip of a person-shaped card and a boxes file for it (no footage needed).
    -> (video path, boxes JSON path)."""
    path, boxes = folder / "test_card.avi", folder / "test_card_boxes.json"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (640, 360))
    for _ in range(frames):
        card = np.full((360, 640, 3), 90, np.uint8)
        cv2.ellipse(card, (320, 180), (45, 150), 0, 0, 360, (150, 170, 200), -1)
        writer.write(card)
    writer.release()
    boxes.write_text(json.dumps([[[270, 25, 370, 335]]] * frames))
    return path, boxes
