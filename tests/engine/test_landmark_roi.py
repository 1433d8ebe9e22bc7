"""Crops that follow the person: ROI geometry (numpy) and the follower on real frames.

Geometry: the crop <-> image maps are inverse, the warp puts image points where the map says,
the alignment angle follows BlazePose's convention (upright person -> 0). Follower (real model,
dancer.mp4): the first crop of a track comes from its box and is re-aligned on that frame's
landmarks, later crops come from the previous frame's landmarks, a frame without the person
is a gap, and the box brings the person back afterwards.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.landmarks import roi as rois

ROOT = Path(__file__).resolve().parents[2]
DANCER = ROOT.parent / "shared" / "footage" / "dancer.mp4"


def test_crop_and_image_maps_are_inverse():
    rng = np.random.default_rng(0)
    roi = np.array([400.0, 300.0, 220.0, 0.7])
    pts = rng.uniform(0, 256, (20, 2))
    A, B = rois.crop_to_image_matrix(roi), rois.image_to_crop_matrix(roi)
    img = pts @ A[:, :2].T + A[:, 2]
    back = img @ B[:, :2].T + B[:, 2]
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # the crop centre is the ROI centre, the crop's side is the ROI side
    c = np.array([128.0, 128.0]) @ A[:, :2].T + A[:, 2]
    np.testing.assert_allclose(c, roi[:2], atol=1e-9)
    corner = np.array([[0.0, 0.0], [256.0, 0.0]]) @ A[:, :2].T + A[:, 2]
    assert np.linalg.norm(corner[1] - corner[0]) == pytest.approx(roi[2])


def test_alignment_angle_convention():
    # upright: the scale point straight above the centre -> no rotation
    r = rois.roi_from_alignment([100.0, 200.0], [100.0, 120.0])
    assert r[3] == pytest.approx(0.0)
    assert r[2] == pytest.approx(2 * 80 * rois.SCALE)
    # lying with the head to the right: the crop turns so that the head is up in the crop
    r = rois.roi_from_alignment([100.0, 200.0], [180.0, 200.0])
    assert abs(r[3]) == pytest.approx(np.pi / 2)
    A = rois.crop_to_image_matrix(r)
    head_in_crop = np.linalg.solve(A[:, :2], np.array([180.0, 200.0]) - A[:, 2])
    assert head_in_crop[0] == pytest.approx(128.0) and head_in_crop[1] < 128.0


def test_warp_puts_image_points_where_the_map_says():
    image = np.zeros((480, 640, 3), np.uint8)
    image[300:306, 420:426] = 255                                  # a bright 6x6 square centred at (423, 303)
    roi = np.array([400.0, 280.0, 200.0, 0.4])
    crop = rois.crop_image(image, roi)
    ys, xs = np.nonzero(crop[..., 0] > 127)
    found = np.array([xs.mean() + 0.5, ys.mean() + 0.5])           # pixel centres at +0.5 (corner origin)
    B = rois.image_to_crop_matrix(roi)
    expected = np.array([423.0, 303.0]) @ B[:, :2].T + B[:, 2]
    np.testing.assert_allclose(found, expected, atol=0.35)
    # landmarks come back through the same map; world landmarks turn with the crop
    lm = np.concatenate([expected, [10.0]])[None]
    out = rois.crop_landmarks_to_image(lm, roi)[0]
    np.testing.assert_allclose(out[:2], [423.0, 303.0], atol=1e-9)
    assert out[2] == pytest.approx(10.0 * 200 / 256)
    w = rois.rotate_world(np.array([[0.0, -1.0, 0.5]]), roi)[0]    # "up" in the crop
    np.testing.assert_allclose(w, [np.sin(0.4), -np.cos(0.4), 0.5], atol=1e-12)


@pytest.mark.skipif(not DANCER.is_file(), reason="../shared/footage/dancer.mp4 not present")
def test_follower_on_dancer_follows_gaps_and_recovers():
    from engine.landmarks import assets
    from engine.landmarks.landmarker import Landmarker, PersonFollower
    from engine.video.decode import iter_frames

    frames = [f.image for f in iter_frames(DANCER, start=30, stop=36)]
    box = np.array([640.0, 120.0, 1060.0, 1000.0])                 # around the dancer in these frames
    follower = PersonFollower(Landmarker(assets.converted_path("full"), "full", device="cpu"))
    first = follower.step(frames[0], [(7, box)])[7]
    assert first is not None and first.presence > 0.9
    # the first crop was re-aligned on its own landmarks: not the box's upright square
    assert not np.allclose(first.roi, rois.roi_from_box(box))
    np.testing.assert_allclose(first.roi[:2], (first.image[23] + first.image[24]) / 2, atol=40)
    planned = follower.next_roi[7].copy()
    second = follower.step(frames[1], [(7, box)])[7]
    np.testing.assert_allclose(second.roi, planned)                # from the previous frame's landmarks
    # the landmarks stay on her: hips between the box's sides, head above the knees
    assert box[0] < second.image[23, 0] < box[2] and second.image[0, 1] < second.image[25, 1]
    # a frame without the person: a gap, and the follower forgets the landmark crop
    blank = np.full_like(frames[2], 128)
    assert follower.step(blank, [(7, box)])[7] is None
    assert 7 not in follower.next_roi
    # the box brings her back on the next frame
    back = follower.step(frames[3], [(7, box)])[7]
    assert back is not None and back.presence > 0.9
    # a track without a box this frame is dropped from the follower's state
    follower.step(frames[4], [])
    assert follower.next_roi == {}
