"""BlazePose landmarks for tracked people: crops that follow each person, batched inference.

``Landmarker`` runs the torch landmark network on a batch of 256x256 crops and returns
plain numpy arrays (sigmoid-ed scores, heatmap-refined 2D landmarks). ``PersonFollower``
chooses each person's crop the way BlazePose does in video: from the tracker's box on a
track's first frame (then once more from the landmarks of that same frame, so the first crop
is aligned too), from the previous frame's landmarks afterwards, and back to the box when the
presence score drops, the landmark ROI leaves the box, or the landmarks fit another person's
box of the frame better than the person's own (the crop drifted onto a neighbour).

Per person-frame observation (``Observation``), image pixels and metres:

    image       (33, 2)  body landmarks in image pixels
    depth       (33,)    BlazePose's relative depth (image-pixel units, hip-centred)
    visibility  (33,)    probability that the landmark is visible
    world       (33, 3)  metres, origin between the hips, image axes (x right, y down, z away)
    presence    ()       probability that the crop holds a person (the result's confidence)
    roi         (4,)     the crop used: cx, cy, side, angle
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.landmarks import roi as rois
from engine.landmarks.network import NUM_BODY_LANDMARKS, load_landmark_network
from engine.model.inference import resolve_autocast, resolve_device

PRESENCE_THRESHOLD = 0.5     # BlazePose's own threshold for "a person is in the crop"
DRIFT_MARGIN = 0.1           # IoU by which another person's box must fit the landmarks better
HEATMAP_KERNEL = 7           # refinement window (heatmap pixels), as BlazePose's graph
HEATMAP_MIN_CONFIDENCE = 0.5


@dataclass
class Observation:
    image: np.ndarray
    depth: np.ndarray
    visibility: np.ndarray
    world: np.ndarray
    presence: float
    roi: np.ndarray


def refine_from_heatmaps(xy: torch.Tensor, heatmaps: torch.Tensor, kernel: int = HEATMAP_KERNEL,
                         min_confidence: float = HEATMAP_MIN_CONFIDENCE, size: int = rois.INPUT_SIZE) -> torch.Tensor:
    """Move each landmark to the confidence-weighted centre of its heatmap window.

    xy (B, N, 2) crop pixels; heatmaps (B, N, h, w) logits -> (B, N, 2). A landmark whose
    window has no confidence above ``min_confidence`` (or lies outside) keeps its value."""
    B, N, h, w = heatmaps.shape
    conf = torch.sigmoid(heatmaps.float())
    r = kernel // 2
    col = torch.floor(xy[..., 0] / size * w).long()
    row = torch.floor(xy[..., 1] / size * h).long()
    off = torch.arange(-r, r + 1, device=xy.device)
    cols = col[..., None] + off                     # (B, N, k)
    rows = row[..., None] + off
    inside_c = (cols >= 0) & (cols < w)
    inside_r = (rows >= 0) & (rows < h)
    cc, rr = cols.clamp(0, w - 1), rows.clamp(0, h - 1)
    flat = conf.reshape(B, N, h * w)
    idx = (rr[..., :, None] * w + cc[..., None, :]).reshape(B, N, -1)
    vals = torch.gather(flat, 2, idx).reshape(B, N, kernel, kernel)
    vals = vals * (inside_r[..., :, None] & inside_c[..., None, :])
    total = vals.sum((-1, -2))
    ok = (vals.amax((-1, -2)) >= min_confidence) & (total > 0)
    wx = (vals.sum(-2) * (cc.float() + 0.5)).sum(-1) / total.clamp_min(1e-12)
    wy = (vals.sum(-1) * (rr.float() + 0.5)).sum(-1) / total.clamp_min(1e-12)
    refined = torch.stack([wx / w * size, wy / h * size], -1)
    return torch.where(ok[..., None], refined, xy)


class Landmarker:
    """The landmark network of one size on a device; crops in, numpy landmarks out."""

    def __init__(self, path, size: str, device: str = "auto", autocast: str = "none", refine: bool = True):
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_autocast(autocast, self.device)
        net, self.source = load_landmark_network(path, size)
        self.network = net.to(self.device)
        self.size, self.refine = size, refine

    def predict(self, crops: np.ndarray, segmentation: bool = False) -> dict:
        """crops (B, 256, 256, 3) uint8 RGB -> {"landmarks": (B, 39, 5) crop px x, y, z and
        visibility / presence probabilities, "world": (B, 39, 3) m, "presence": (B,)}, and with
        ``segmentation`` "segmentation": (B, 256, 256) float32 person-mask logits of the crops."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode():
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    out = self.network(x)
            else:
                out = self.network(x)
            lm = out.landmarks.clone()
            lm[..., 3:] = torch.sigmoid(lm[..., 3:])
            if self.refine:
                lm[:, :, :2] = refine_from_heatmaps(lm[:, :, :2], out.heatmaps)
            packed = torch.cat([lm.reshape(len(x), -1), out.world.reshape(len(x), -1), out.presence[:, None]], 1)
            flat = packed.float().cpu().numpy()      # one device -> host copy
            seg = out.segmentation.float().cpu().numpy() if segmentation else None
        n = lm.shape[1]
        got = {"landmarks": flat[:, :n * 5].reshape(-1, n, 5),
               "world": flat[:, n * 5:n * 8].reshape(-1, n, 3),
               "presence": flat[:, -1]}
        if segmentation:
            got["segmentation"] = seg
        return got


def observation_from(pred: dict, i: int, roi: np.ndarray) -> tuple:
    """Item ``i`` of a ``Landmarker.predict`` output, cropped with ``roi`` -> (image-space
    Observation, all 39 landmarks (39, 3) in image pixels)."""
    lm = rois.crop_landmarks_to_image(pred["landmarks"][i, :, :3], roi)
    return Observation(image=lm[:NUM_BODY_LANDMARKS, :2], depth=lm[:NUM_BODY_LANDMARKS, 2],
                       visibility=pred["landmarks"][i, :NUM_BODY_LANDMARKS, 3].astype(np.float64),
                       world=rois.rotate_world(pred["world"][i, :NUM_BODY_LANDMARKS], roi),
                       presence=float(pred["presence"][i]), roi=np.asarray(roi, np.float64),
                       ), lm


def landmark_box(landmarks_px) -> np.ndarray:
    """Image-pixel landmarks (..., N, >=2) -> (..., 4) x0, y0, x1, y1 of the 33 body landmarks."""
    xy = np.asarray(landmarks_px, np.float64)[..., :NUM_BODY_LANDMARKS, :2]
    return np.concatenate([xy.min(-2), xy.max(-2)], -1)


def fits_another_box(landmarks_px, own: int, box_of: dict, margin: float = DRIFT_MARGIN) -> bool:
    """The landmarks' box overlaps another track's box (``box_of`` {id: xyxy}) by more than
    ``margin`` IoU over the track ``own``'s box: the network found the neighbour in the crop.
    Side by side at vtest.avi's sizes a crop from the last frame's landmarks holds both people
    and stays centred within the right box while the landmarks slide onto the other."""
    from engine.people.tracking import box_iou

    b = landmark_box(landmarks_px)
    mine = box_iou(b, box_of[own])
    return any(box_iou(b, xyxy) > mine + margin for tid, xyxy in box_of.items() if tid != own)


def _centre_in_box(roi: np.ndarray, xyxy: np.ndarray, margin: float = 0.25) -> bool:
    """The ROI centre lies in the box grown by ``margin`` of its size on each side."""
    x0, y0, x1, y1 = xyxy
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return x0 - mx <= roi[0] <= x1 + mx and y0 - my <= roi[1] <= y1 + my


class PersonFollower:
    """Per-track crop state across frames: ``step(image, boxes) -> {track id: Observation or None}``.

    ``boxes``: [(track id, xyxy)] of one frame. All crops of a frame go through the network
    as one batch; a second small batch re-runs the people whose crop came from a box (aligned
    with their fresh landmarks) or whose landmark crop lost them (from the box). None: the
    model does not see a person there (presence below the threshold) or sees only another
    tracked person (``fits_another_box``, from the box crop too): a gap, never a guess.
    ``keep_segmentation``: after each ``step``, ``segmentation`` holds {track id: (256, 256)
    segmentation logits of the crop its Observation came from (``Observation.roi``)}.
    ``drift_margin``: ``fits_another_box``'s margin; None turns the check off (its measurement,
    engine/measure/follower.py, compares)."""

    def __init__(self, landmarker: Landmarker, presence_threshold: float = PRESENCE_THRESHOLD,
                 keep_segmentation: bool = False, drift_margin: float | None = DRIFT_MARGIN):
        self.landmarker = landmarker
        self.threshold = presence_threshold
        self.drift_margin = drift_margin
        self.next_roi: dict = {}   # track id -> ROI from the previous frame's landmarks
        self.keep_segmentation = keep_segmentation
        self.segmentation: dict = {}

    def _run(self, image: np.ndarray, jobs: list) -> list:
        """jobs [(id, roi)] -> [(id, roi, Observation, landmarks (39, 3) image px, segmentation
        logits (256, 256) or None)]."""
        if not jobs:
            return []
        crops = np.stack([rois.crop_image(image, r) for _, r in jobs])
        pred = self.landmarker.predict(crops, segmentation=self.keep_segmentation)
        out = []
        for i, (tid, r) in enumerate(jobs):
            obs, lm = observation_from(pred, i, r)
            out.append((tid, r, obs, lm, pred["segmentation"][i] if self.keep_segmentation else None))
        return out

    def step(self, image: np.ndarray, boxes: list) -> dict:
        first, from_box = [], set()
        for tid, xyxy in boxes:
            r = self.next_roi.get(tid)
            if r is None or not _centre_in_box(r, np.asarray(xyxy, np.float64)):
                r = rois.roi_from_box(xyxy)
                from_box.add(tid)
            first.append((tid, r))
        box_of = {tid: np.asarray(xyxy, np.float64) for tid, xyxy in boxes}

        def sees_own(tid, obs, lm) -> bool:
            return obs.presence >= self.threshold and (
                self.drift_margin is None or not fits_another_box(lm, tid, box_of, self.drift_margin))

        results = {tid: (r, obs, lm, seg) for tid, r, obs, lm, seg in self._run(image, first)}
        retry = []
        for tid, (r, obs, lm, _) in results.items():
            if tid in from_box and obs.presence >= self.threshold:
                retry.append((tid, rois.roi_from_landmarks(lm)))   # align the first crop
            elif tid not in from_box and not sees_own(tid, obs, lm):
                retry.append((tid, rois.roi_from_box(box_of[tid])))  # the landmark crop lost them
        for tid, r, obs, lm, seg in self._run(image, retry):
            if sees_own(tid, obs, lm) or not sees_own(tid, *results[tid][1:3]):
                results[tid] = (r, obs, lm, seg)
        frame = {}
        self.segmentation = {}
        for tid, (r, obs, lm, seg) in results.items():
            if sees_own(tid, obs, lm):
                self.next_roi[tid] = rois.roi_from_landmarks(lm)
                frame[tid] = obs
                if seg is not None:
                    self.segmentation[tid] = seg
            else:
                self.next_roi.pop(tid, None)
                frame[tid] = None
        for tid in set(self.next_roi) - set(box_of):   # tracks without a box this frame
            self.next_roi.pop(tid)
        return frame
