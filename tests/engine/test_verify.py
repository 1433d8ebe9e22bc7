"""Track verification with the BlazePose landmark model on real footage: a pedestrian's track
is a person, the camera tripod's is not; the rule and the bookkeeping."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.people.tracking import TrackBox
from engine.people.verify import TrackVerifier, is_person, make_verifier

ROOT = Path(__file__).resolve().parents[2]
VTEST = ROOT.parent / "shared" / "footage" / "vtest.avi"
# vtest.avi frame 30: the camera tripod in the middle of the lawn, and a pedestrian on the path
TRIPOD = np.array([470.0, 350.0, 528.0, 484.0])
PEDESTRIAN = np.array([625.0, 253.0, 676.0, 348.0])


def test_rule():
    assert is_person(3, 10) and is_person(1, 4)
    assert not is_person(2, 10) and not is_person(0, 0) and not is_person(0, 5)


@pytest.mark.skipif(not VTEST.is_file(), reason="../shared/footage/vtest.avi not present")
def test_pedestrian_is_a_person_and_the_tripod_is_not():
    from engine.video.decode import iter_frames

    verifier, why = make_verifier(device="cpu")
    assert verifier is not None, why
    verifier.every = 2
    for fr in iter_frames(VTEST, start=30, stop=36):
        verifier.observe(fr.image, [TrackBox(1, TRIPOD, 0.9, False), TrackBox(2, PEDESTRIAN, 0.9, False),
                                    TrackBox(3, PEDESTRIAN, 0.0, True)])
    assert verifier.summary(1) == (0, 3)                     # frames 30, 32, 34: no person on the tripod
    seen, looked = verifier.summary(2)
    assert looked == 3 and seen == 3
    assert verifier.summary(3) == (0, 0)                     # interpolated boxes are never looked at
    assert verifier.verdict() == {1: False, 2: True, 3: False}


class _Counting:
    """Stands in for the landmarker to count what the verifier asks it (presence 1 always)."""

    def __init__(self):
        self.crops = 0

    def predict(self, crops):
        self.crops += len(crops)
        return {"presence": np.ones(len(crops))}


def test_looks_at_every_nth_box_of_each_track():
    model = _Counting()
    v = TrackVerifier(model, every=5)
    img = np.zeros((100, 100, 3), np.uint8)
    for _ in range(12):
        v.observe(img, [TrackBox(1, np.array([10.0, 10, 40, 90]), 0.9, False),
                        TrackBox(2, np.array([50.0, 10, 90, 90]), 0.9, False)])
    assert v.summary(1) == (3, 3) and v.summary(2) == (3, 3)   # boxes 0, 5, 10 of each
    assert model.crops == 6


@pytest.mark.skipif(not VTEST.is_file(), reason="../shared/footage/vtest.avi not present")
def test_analyze_drops_the_tripod_track_unless_asked_not_to(tmp_path):
    """The learned mannequin detector boxes the tripod on vtest.avi; analyze drops that track,
    keeps the pedestrians, and keeps everything with --no-verify. The default detector
    (MoveNet) makes no track on it at all, even unverified."""
    import json

    from engine import run as R

    def tracks(*extra):
        out = tmp_path / "t.json"
        args = R.build_parser("analyze").parse_args([str(VTEST), "-o", str(out), "--stop", "40", *extra])
        R.analyze(args, R.Progress(None), {"flag": False})
        return json.loads(out.read_text())["tracks"]

    def on_tripod(t):
        xyxy = np.array(t["xyxy"])
        lt, rb = np.maximum(xyxy[:, :2], TRIPOD[:2]), np.minimum(xyxy[:, 2:], TRIPOD[2:])
        inter = np.clip(rb - lt, 0, None).prod(-1)
        return np.median(inter / ((TRIPOD[2] - TRIPOD[0]) * (TRIPOD[3] - TRIPOD[1]))) > 0.5

    default_all = tracks("--no-verify")
    assert not any(on_tripod(t) for t in default_all) and len(default_all) >= 3
    kept_all = tracks("--no-verify", "--detector", "mannequin")
    assert any(on_tripod(t) for t in kept_all), "the detector no longer boxes the tripod: pick another object"
    verified = tracks("--detector", "mannequin")
    assert not any(on_tripod(t) for t in verified)
    assert len(verified) >= 3                                 # the pedestrians stay
    assert {t["id"] for t in verified} < {t["id"] for t in kept_all}
