"""The learned mannequin detector (engine.people.learned): its weights file, its box coding,
its batch path, and detection + tracking on a rendered clip it was never trained on.

The clip test renders with EGL and is skipped where no EGL context can be made.
"""
import numpy as np
import pytest
import torch

from engine.measure import tracking as mt
from engine.people import learned
from engine.people import tracking as tk
from engine.people.detect import MergedDetector, make_detector



@pytest.fixture(scope="module")
def detector():
    return learned.MannequinDetector(device="cpu")


# ---------------------------------------------------------------------------- weights file
def test_shipped_weights_are_small_plain_float16():
    from engine.safe_torch import read_torch_file

    assert learned.WEIGHTS.stat().st_size < 2 << 20
    blob = read_torch_file(learned.WEIGHTS)          # weights_only=True
    assert blob["format"] == learned.FORMAT and blob["version"] == learned.VERSION
    assert all(isinstance(v, (int, float, str, list)) for v in blob["config"].values())
    assert {t.dtype for t in blob["state_dict"].values()} == {torch.float16}
    net, config = learned.load_weights()
    assert sum(p.numel() for p in net.parameters()) < 500_000
    assert config["stride"] == 8 and not net.training


def _save_variant(tmp_path, name, edit):
    blob = torch.load(learned.WEIGHTS, weights_only=True)
    edit(blob)
    path = tmp_path / name
    torch.save(blob, path)
    return path


def test_tampered_weights_give_a_clear_error(tmp_path):
    def drop(b):
        del b["state_dict"]["out.weight"]

    def reshape(b):
        b["state_dict"]["head.0.0.weight"] = torch.zeros(8, 8, 3, 3, dtype=torch.float16)

    def extra(b):
        b["state_dict"]["extra.weight"] = torch.zeros(1)

    def wrong_format(b):
        b["format"] = "something-else"

    cases = [(drop, "missing 1 tensors"), (reshape, "head.0.0.weight: shape (8, 8, 3, 3), expected"),
             (extra, "1 unexpected tensors"), (wrong_format, "not a mannequin detector weights file")]
    for edit, message in cases:
        with pytest.raises(learned.WeightsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            learned.load_weights(_save_variant(tmp_path, f"{edit.__name__}.pt", edit))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(learned.WeightsError, match="not a readable PyTorch file"):
        learned.load_weights(junk)


class Payload:  # a class in the file: refused by weights_only, never instantiated
    pass


def test_weights_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": learned.FORMAT, "version": learned.VERSION, "payload": Payload()}, path)
    with pytest.raises(learned.WeightsError, match="refused to load"):
        learned.load_weights(path)
    with pytest.raises(ValueError):            # make_detector's callers turn ValueError into a message
        learned.MannequinDetector(weights=path, device="cpu")


# ---------------------------------------------------------------------------- box coding
def _ideal_output(boxes_per_cell: np.ndarray, heat: np.ndarray, stride: int) -> torch.Tensor:
    """The network output that would reproduce the targets: heat logits +-5, box channels
    log(distance / stride) to the sides of the box each cell should predict."""
    h, w = heat.shape
    cx, cy = learned.cell_centres(h, w, stride)
    d = np.stack([cx - boxes_per_cell[0], cy - boxes_per_cell[1], boxes_per_cell[2] - cx, boxes_per_cell[3] - cy])
    reg = np.log(np.clip(d, 1e-3, None) / stride)
    logits = np.where(heat >= 1, 5.0, -5.0)
    return torch.from_numpy(np.concatenate([logits[None], reg])[None].astype(np.float32))


def test_targets_decode_back_to_the_boxes():
    stride = 8
    boxes = np.array([[40.3, 20.7, 90.1, 180.2], [150.0, 60.0, 190.5, 140.0], [200.2, 10.0, 318.0, 186.0]])
    t = learned.encode_targets(boxes, (24, 40), stride)
    assert (t["heat"] == 1).sum() == 3 and t["heat"].max() == 1
    for n, b in enumerate(boxes):                 # each box's regression weights sum to 1, on its own cells
        own = np.all(t["box"] == b[:, None, None].astype(np.float32), axis=0)
        assert t["box_weight"][own].sum() == pytest.approx(1.0, abs=1e-5) and own.sum() >= 3
    out = _ideal_output(t["box"], t["heat"], stride)
    dets = learned.decode(out, stride, threshold=0.5, smooth=False)[0]
    assert dets.shape == (3, 5)
    np.testing.assert_allclose(dets[np.argsort(dets[:, 0]), :4], boxes, atol=1e-3)
    # Every cell predicts the same box (one containing all cells, so no distance is
    # negative): the heat-weighted 3 x 3 smoothing gives it back exactly.
    big = np.array([-20.0, -12.5, 340.0, 205.0])
    one = np.broadcast_to(big[:, None, None], (4, 24, 40))
    dets = learned.decode(_ideal_output(one, t["heat"], stride), stride, threshold=0.5)[0]
    np.testing.assert_allclose(dets[:, :4], np.repeat(big[None], 3, 0), atol=1e-3)


def test_decode_keeps_only_local_maxima_and_calibrates():
    out = torch.zeros((1, 5, 10, 10))
    out[0, 0] = -8.0
    out[0, 0, 4, 4], out[0, 0, 4, 5] = 3.0, 2.0           # a peak and its weaker neighbour
    out[0, 0, 8, 1] = 0.5
    dets = learned.decode(out, 8, threshold=0.3, smooth=False)[0]
    assert len(dets) == 2
    np.testing.assert_allclose(dets[0], [28, 28, 44, 44, torch.sigmoid(torch.tensor(3.0)).item()], atol=1e-6)
    # smoothing: the peak's box is the heat-weighted mean of its 3 x 3 cells' boxes
    w = torch.sigmoid(out[0, 0, 3:6, 3:6]).numpy()
    jj, ii = np.meshgrid(np.arange(3, 6) + 0.5, np.arange(3, 6) + 0.5)
    x1, y1 = (w * (jj * 8 - 8)).sum() / w.sum(), (w * (ii * 8 - 8)).sum() / w.sum()
    smooth = learned.decode(out, 8, threshold=0.3)[0]
    np.testing.assert_allclose(smooth[0, :4], [x1, y1, x1 + 16, y1 + 16], atol=1e-5)
    cal = learned.decode(out, 8, threshold=0.3, calibration=(2.0, 1.0), smooth=False)[0]
    np.testing.assert_allclose(cal[:, 4], torch.sigmoid(2.0 * torch.tensor([3.0, 0.5]) + 1.0).numpy(), atol=1e-6)


def test_letterbox_geometry():
    k, hw, padded = learned.letterbox_geometry(1080, 1920, 320, 32)
    assert (k, hw, padded) == (pytest.approx(1 / 6), (180, 320), (192, 320))
    canvas, k = learned.letterbox(np.zeros((480, 360, 3), np.uint8), 320, 32, 114)
    assert canvas.shape == (320, 256, 3) and (canvas[:, 240:] == 114).all() and (canvas[:, :240] == 0).all()


# ---------------------------------------------------------------------------- detector API
def test_detect_contract_and_batch(detector):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    single = [detector.detect(im) for im in (a, b, a)]
    batch = detector.detect_batch([a, b, a])
    for s, m in zip(single, batch):
        assert s.dtype == np.float64 and s.shape[1:] == (5,)
        np.testing.assert_allclose(s, m, atol=1e-4)


def test_merged_detector_prefers_the_learned_box():
    merged = MergedDetector(None, None, "test")
    learned_boxes = np.array([[10, 10, 50, 110, 0.4]])
    hog_boxes = np.array([[5, 0, 55, 120, 0.8],          # same person, looser box
                          [200, 10, 240, 100, 0.6]])     # someone the learned detector missed
    out = merged.merge(learned_boxes, hog_boxes)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out[out[:, 0] == 10], [[10, 10, 50, 110, 0.8]])
    np.testing.assert_allclose(out[out[:, 0] == 200], [[200, 10, 240, 100, 0.6]])
    assert make_detector("mannequin", device="cpu").name == "mannequin"


# ---------------------------------------------------------------------------- rendered clips
CLIP_SEEDS = (5, 7)       # crossing clips not used in training (its scenes are SeedSequence([seed, i])) nor in docs/people.md


@pytest.fixture(scope="module")
def crossing_clips(egl):
    return [mt.render_crossing_clip(60, 640, 360, seed=s) for s in CLIP_SEEDS]


@pytest.mark.parametrize("name", ["default", "mannequin"])
def test_detectors_and_tracker_follow_two_people_crossing(name, crossing_clips):
    """Detection + ``track`` (with appearance descriptors, as ``engine run`` does) on clips
    of two people walking across each other, with the default detector (MoveNet) and the
    learned one. For each person, on the frames where at least half of them is visible: the
    track matched by ``evaluate`` has square-box IoU > 0.7 (the crop PyMAF gets) on at least
    95 % of the frames and box IoU > 0.7 on at least 70 %; each person keeps one id from start
    to end (0 switches). Measured: docs/people.md."""
    detector = make_detector(name, device="cpu")
    assert detector.name == ("movenet" if name == "default" else name)
    for (frames, gt, visible), seed in zip(crossing_clips, CLIP_SEEDS):
        h, w = frames.shape[1:3]
        gt = mt.clip_to_frame(gt, w, h)
        dets = [tk.with_appearance(f, d) for f, d in zip(frames, detector.detect_batch(list(frames)))]
        tracks = tk.track(dets)
        ev = mt.evaluate(tracks, gt)
        mostly = visible >= 0.5
        square = (ev["ious"] > 0.7)[mostly].mean()
        box = (mt.matched_xyxy_iou(tracks, ev["ids"], gt) > 0.7)[mostly].mean()
        assert square >= 0.95 and box >= 0.7, (seed, square, box, np.round(ev["ious"].T, 2))
        assert ev["id_switches"] == 0, (seed, ev["ids"].T)
        ids = [set(ev["ids"][mostly[:, p], p].tolist()) - {-1} for p in range(gt.shape[1])]
        assert all(len(s) == 1 for s in ids) and ids[0] != ids[1], (seed, ids)


def test_real_negatives_are_unlabelled_photo_crops_in_the_scene_canvas():
    """``--negatives``: a training sample replaced by a crop of a real photo without people
    keeps the scene's canvas and padding and has no box to find."""
    from engine.data.registry_photos import NEGATIVE_PHOTOS, skimage_image
    from engine.people.train_detector import negative_scene

    assert ("opencv-doc", "leuvenA.jpg") in NEGATIVE_PHOTOS                     # a street with posts
    photos = [skimage_image("coffee"), skimage_image("brick")]
    rng = np.random.default_rng(0)
    scene = (np.zeros((192, 320, 3), np.uint8), np.array([[10, 10, 50, 150]]), np.zeros((0, 4)), (180, 320))
    for _ in range(10):
        canvas, boxes, ignore, valid = negative_scene(rng, photos, scene, 114)
        assert canvas.shape == (192, 320, 3) and valid == (180, 320)
        assert (canvas[180:] == 114).all() and canvas[:180].std() > 5             # padding kept, a photo inside
        assert boxes.shape == (0, 4) and ignore.shape == (0, 4)
