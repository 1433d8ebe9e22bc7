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


VTEST = ROOT.parent / "shared" / "footage" / "vtest.avi"
# vtest.avi frames 560-585, the tracker's boxes of two men (tracks 26 and 28 of ``engine analyze``):
# the one in front walks past the one behind, their boxes overlapping by up to a half
BEHIND = np.array([
    [171, 351, 219, 503], [169, 344, 229, 497], [176, 346, 229, 444], [178, 348, 233, 459],
    [178, 349, 233, 459], [189, 349, 233, 475], [190, 346, 232, 477], [190, 346, 230, 462],
    [184, 336, 227, 488], [188, 342, 233, 497], [189, 337, 237, 487], [187, 337, 240, 484],
    [189, 338, 246, 482], [193, 338, 245, 473], [193, 339, 244, 474], [195, 341, 245, 473],
    [203, 344, 252, 474], [209, 343, 259, 469], [213, 341, 262, 469], [216, 339, 270, 467],
    [227, 336, 281, 467], [239, 333, 283, 457], [248, 329, 291, 453], [261, 328, 324, 451],
    [267, 330, 330, 450], [273, 328, 327, 445]
], float)
FRONT = np.array([
    [198, 397, 243, 538], [191, 418, 247, 535], [186, 393, 250, 539], [182, 378, 243, 544],
    [181, 384, 238, 551], [181, 393, 243, 559], [179, 408, 262, 559], [180, 409, 258, 560],
    [180, 398, 246, 557], [177, 409, 243, 560], [171, 407, 226, 562], [168, 407, 227, 564],
    [163, 407, 230, 563], [160, 413, 221, 568], [157, 415, 218, 573], [159, 420, 220, 575],
    [166, 425, 223, 574], [167, 427, 226, 574], [171, 429, 227, 573], [175, 429, 233, 574],
    [180, 429, 259, 576], [183, 434, 258, 576], [189, 427, 263, 575], [214, 425, 264, 574],
    [219, 424, 274, 574], [225, 424, 292, 575]
], float)


@pytest.mark.skipif(not VTEST.is_file(), reason="../shared/footage/vtest.avi not present")
def test_follower_keeps_each_crop_on_its_own_person():
    """The man in front's landmark crop (from his previous landmarks) also holds the man behind;
    the network's landmarks slid onto the latter (their box fitting the other track's box with
    IoU 0.6-0.9, his own 0.0-0.05) while the crop centre stayed within his box. Now a crop whose
    landmarks fit another person's box better is redone from his box (or a gap)."""
    from engine.landmarks import assets
    from engine.landmarks.landmarker import Landmarker, PersonFollower, landmark_box
    from engine.people.tracking import box_iou
    from engine.video.decode import iter_frames

    follower = PersonFollower(Landmarker(assets.converted_path("full"), "full", device="cpu"))
    own, gaps = [], 0
    for i, frame in enumerate(iter_frames(VTEST, start=560, stop=586)):
        boxes = {26: BEHIND[i], 28: FRONT[i]}
        seen = follower.step(frame.image, list(boxes.items()))
        for tid, other in ((26, 28), (28, 26)):
            if seen[tid] is None:
                gaps += 1
                continue
            b = landmark_box(seen[tid].image)
            own.append(box_iou(b, boxes[tid]))
            assert box_iou(b, boxes[other]) <= own[-1] + 0.1, (frame.index, tid)
    assert gaps <= 4 and np.median(own) > 0.5
