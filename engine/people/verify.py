"""Track verification: does a track's box hold a person? The BlazePose landmark model answers.

Our person detectors fire on objects (on vtest.avi: a camera tripod, a sign, a doorway, a
post). The landmark model's presence score, on a crop around the box, tells a person from
them. ``TrackVerifier`` looks at every ``every``-th final box of each track (the first one
always), in one batch per frame, and keeps the presence scores; a track is a person when the
model saw one in at least ``MIN_SEEN_FRACTION`` of the boxes it looked at (``is_person``).
The landmark estimator needs no verifier: it runs the landmark model on every box anyway and
applies the same rule to what it saw (engine/landmarks/stream.py).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

PRESENCE_THRESHOLD = 0.5     # BlazePose's own "a person is in the crop"
MIN_SEEN_FRACTION = 0.25     # of a track's looked-at boxes; below, the boxes hold something else
VERIFY_EVERY = 5             # look at every 5th box of a track (the first always)
# lite took vtest.avi's camera tripod for a person (presence 0.62); full and heavy did not (0.00)
VERIFY_MODEL = "full"


def is_person(seen: int, looked: int, min_fraction: float = MIN_SEEN_FRACTION) -> bool:
    """A track whose boxes showed a person ``seen`` times out of ``looked`` is a person."""
    return looked > 0 and seen > 0 and seen >= min_fraction * looked


class TrackVerifier:
    """Presence of a person in tracks' final boxes.

    ``observe(image, boxes)`` with one frame's final ``TrackBox``es; ``verdict() -> {id: bool}``
    for every track seen; ``summary(id) -> (seen, looked)``."""

    def __init__(self, landmarker, every: int = VERIFY_EVERY, threshold: float = PRESENCE_THRESHOLD):
        self.landmarker, self.every, self.threshold = landmarker, int(every), float(threshold)
        self._count = defaultdict(int)   # id -> final boxes so far
        self._seen = defaultdict(int)    # id -> boxes looked at where the model saw a person
        self._looked = defaultdict(int)  # id -> boxes looked at

    def observe(self, image: np.ndarray, boxes: list) -> None:
        from engine.landmarks import roi as rois

        todo = []
        for b in boxes:
            if self._count[b.id] % self.every == 0 and not b.interpolated:
                todo.append(b)
            self._count[b.id] += 1
        if not todo:
            return
        crops = np.stack([rois.crop_image(image, rois.roi_from_box(b.xyxy)) for b in todo])
        presence = self.landmarker.predict(crops)["presence"]
        for b, p in zip(todo, presence):
            self._looked[b.id] += 1
            self._seen[b.id] += int(p >= self.threshold)

    def summary(self, tid) -> tuple:
        return self._seen[tid], self._looked[tid]

    def verdict(self) -> dict:
        """{track id: is a person} for every track that had a box."""
        return {tid: is_person(self._seen[tid], self._looked[tid]) for tid in self._count}


def make_verifier(device: str = "auto"):
    """A verifier on the installed ``VERIFY_MODEL`` landmark model, or None (with the reason)
    when it is not installed: -> (TrackVerifier or None, message)."""
    from engine.landmarks.assets import converted_path, missing_message
    from engine.landmarks.landmarker import Landmarker

    path = converted_path(VERIFY_MODEL)
    if not path.is_file():
        return None, missing_message(VERIFY_MODEL)
    # no heatmap refinement: only the presence score is used
    return TrackVerifier(Landmarker(path, VERIFY_MODEL, device=device, refine=False)), ""
