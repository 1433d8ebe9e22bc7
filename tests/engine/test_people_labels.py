"""The hand-made people labels (engine/measure/data/people_labels.json) are well-formed."""
import json
from pathlib import Path

import pytest

LABELS = Path(__file__).resolve().parents[2] / "engine" / "measure" / "data" / "people_labels.json"
MIN_FRAMES = {"vtest.avi": 60, "dancer.mp4": 10, "astronaut.png": 1, "camera.png": 1,
              "basketball1.png": 1, "basketball2.png": 1}


@pytest.fixture(scope="module")
def labels():
    return json.loads(LABELS.read_text())


def test_header(labels):
    assert labels["format"] == "pymaf-people-labels" and labels["version"] == 1
    assert set(MIN_FRAMES) <= set(labels["videos"])


@pytest.mark.parametrize("name", sorted(MIN_FRAMES))
def test_video(labels, name):
    v = labels["videos"][name]
    w, h = v["width"], v["height"]
    assert isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0
    src = v["source"]
    assert src["kind"] in ("video", "photo") and src["path"]
    if src["kind"] == "photo":
        assert src["package"] and src["version"]
    assert len(v["frames"]) >= MIN_FRAMES[name]
    n_boxes = 0
    for f, boxes in v["frames"].items():
        assert int(f) >= 0
        ids = [b["id"] for b in boxes]
        assert all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids), (name, f)
        assert len(ids) == len(set(ids)), f"{name} frame {f}: an id twice"
        for b in boxes:
            x0, y0, x1, y1 = b["xyxy"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (name, f, b)
            assert isinstance(b["occluded"], bool)
            assert y1 - y0 >= 50 or b.get("small") is True, (name, f, b)
        n_boxes += len(boxes)
    assert n_boxes >= len(v["frames"]) if name != "vtest.avi" else n_boxes >= 3 * len(v["frames"])
    for f, regions in v.get("ignore", {}).items():
        assert f in v["frames"], (name, f)
        for r in regions:
            x0, y0, x1, y1 = r["xyxy"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and r["why"], (name, f, r)


def test_spread(labels):
    """vtest frames cover the whole clip (795 frames), dancer's its 89."""
    for name, last in (("vtest.avi", 794), ("dancer.mp4", 88)):
        frames = sorted(int(f) for f in labels["videos"][name]["frames"])
        assert frames[0] <= 0.05 * last and frames[-1] >= 0.9 * last
