"""``engine run`` end to end on a clip rendered from the mannequin with known boxes, through the
default detector and tracker (no boxes given): tracked boxes match the truth, the crops the
pipeline feeds the network equal the official preprocessing formula pixel for pixel, and the
result file holds what the network returned for those crops."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from engine.common import result_schema as rs
from engine.measure import tracking as mt
from engine.people import tracking as tk
from tests.engine.official_crop import official_crop

FRAMES = 24


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, egl):
    frames, gt, visible = mt.render_crossing_clip(FRAMES, 640, 360, seed=7)
    d = tmp_path_factory.mktemp("rendered")
    w = cv2.VideoWriter(str(d / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 360))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    return d, gt, visible


class Recorder:
    """Sits in front of the real predictor and keeps every batch of crops it is given."""

    def __init__(self, predictor):
        self.inner, self.device, self.batches = predictor, predictor.device, []

    def predict(self, crops, **kw):
        a = crops.cpu().numpy() if hasattr(crops, "cpu") else np.asarray(crops)
        self.batches.append(a.copy())
        return self.inner.predict(crops, **kw)


def test_default_pipeline_on_a_rendered_clip(rendered):
    from engine import run as R
    from engine.video.decode import iter_frames

    d, gt, visible = rendered
    out = d / "result.npz"
    args = R.build_parser("run").parse_args([str(d / "clip.avi"), "-o", str(out), "--estimator", "pymaf", "--smoothing", "none",
                                             "--batch-size", "8"])
    rec = {}

    def wrap(p):
        rec["r"] = Recorder(p)
        return rec["r"]

    R.run(args, R.Progress("jsonl", io.StringIO()), {"flag": False}, wrap_predictor=wrap)
    res = rs.read_result(out)
    assert res.has_rig and len(res.tracks) == 2, sorted(res.tracks)

    # 1. tracking recovers the known boxes (square boxes vs the square of the truth)
    tracks = {int(t): tk.Track(tr.frames, np.column_stack([tr.boxes[:, :2] - tr.boxes[:, 2:] / 2,
                                                           tr.boxes[:, :2] + tr.boxes[:, 2:] / 2]),
                               tr.confidence, tr.interpolated) for t, tr in res.tracks.items()}
    ev = mt.evaluate(tracks, gt)
    seen = visible > 0.5
    assert (ev["ious"][seen] > 0.7).mean() >= 0.9, ev["ious"].round(2)
    assert ev["id_switches"] == 0

    # 2. the crops the network got equal the official formula on the decoded frames
    images = [f.image for f in iter_frames(d / "clip.avi")]
    crops = np.concatenate(rec["r"].batches)
    order = sorted((int(f), int(t)) for t, tr in res.tracks.items() for f in tr.frames)
    assert len(crops) == len(order)
    want = []
    for f, t in order:
        tr = res.tracks[str(t)]
        cx, cy, side = tr.boxes[list(tr.frames).index(f)]
        want.append(official_crop(images[f], cx, cy, side))
    want = np.stack(want)
    # same pixels, in some order: match each official crop to a pipeline crop exactly
    used = set()
    for i, w in enumerate(want):
        hits = [j for j in range(len(crops)) if j not in used and np.array_equal(crops[j], w)]
        assert hits, f"crop {order[i]} differs from the official formula (max diff " \
                     f"{min(np.abs(crops[j].astype(int) - w).max() for j in range(len(crops)))})"
        used.add(hits[0])

    # 3. the result file holds what the network returns for those crops
    fin = rec["r"].inner.predict(want).final
    R_net = fin.rotmat.float().cpu().numpy()
    for i, (f, t) in enumerate(order):
        tr = res.tracks[str(t)]
        row = list(tr.frames).index(f)
        np.testing.assert_allclose(tr.global_orient_rotmat[row], R_net[i, 0], atol=1e-4)
        np.testing.assert_allclose(tr.body_pose_rotmat[row], R_net[i, 1:], atol=1e-4)
        np.testing.assert_allclose(tr.betas[row], fin.betas[i].float().cpu().numpy(), atol=1e-4)
