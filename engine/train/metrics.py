"""Evaluation metrics of the paper (and of SPIN, whose evaluation PyMAF reuses).

3D (per sample, in the input's unit; the evaluator reports millimetres):

* ``mpjpe``: mean per-joint position error, mean over joints of the Euclidean distance.
* ``pa_mpjpe``: the same after the similarity transform (rotation, translation, scale)
  that best maps the prediction onto the ground truth, per sample (Umeyama / orthogonal
  Procrustes by SVD with a reflection guard), as SPIN's ``reconstruction_error``.
* ``pve``: mean per-vertex error of the meshes (the release's evaluation: both meshes
  without translation, not aligned further).
* ``joint_errors``: the evaluation joint set: the 14 LSP joints of the 49-set (indices
  25..38, SPIN's evaluation joints), each set centred on its mid-hip pelvis (the midpoint
  of 'R hip' and 'L hip', 49-set 27 and 28 = 14-set 2 and 3), then MPJPE and PA-MPJPE.

2D (projected predicted mesh vs ground truth, SPIN's LSP evaluation, accumulated over the
whole set, not averaged per image):

* silhouette: pixel accuracy, and F1 averaged over the two classes (foreground and
  background);
* six-part segmentation (0 background + 6 parts): pixel accuracy, and F1 averaged over
  the 7 classes (background included, as SPIN's "Parts F1 (BG)").

``render_labels`` renders the predicted mesh with the crop camera (focal 5000 for a
224 px crop, scaled to the label resolution; translation (tx, ty, 2f / (224 s)); principal
point at the centre) through ``engine.render.renderer.Renderer`` and returns its mask and
part map (parts 0..24, to be mapped to six with ``SIX_PARTS_OF_PART``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.model.geometry import FOCAL_LENGTH, CROP_RES, crop_cam_to_crop_translation

LSP14 = np.arange(25, 39)                 # the 14 LSP joints of the 49-set
LSP14_NAMES = ("R ankle", "R knee", "R hip", "L hip", "L knee", "L ankle", "R wrist", "R elbow",
               "R shoulder", "L shoulder", "L elbow", "L wrist", "Neck (LSP)", "Head-top (LSP)")
R_HIP_14, L_HIP_14 = 2, 3


def _t(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


# --- 3D --------------------------------------------------------------------------------
def mpjpe(pred, gt) -> torch.Tensor:
    """(B, N, 3), (B, N, 3) -> (B,) mean Euclidean distance over the N points."""
    pred, gt = _t(pred), _t(gt)
    return torch.linalg.norm(pred - gt, dim=-1).mean(dim=-1)


def procrustes_align(pred, gt) -> torch.Tensor:
    """Similarity transform of ``pred`` (B, N, 3) best fitting ``gt`` (B, N, 3), per sample.

    argmin over s, R, t of sum |s R p + t - g|^2 (R a proper rotation), computed in
    float64; returns s R p + t in pred's dtype.
    """
    pred, gt = _t(pred), _t(gt)
    p, g = pred.double(), gt.double()
    mu_p, mu_g = p.mean(dim=1, keepdim=True), g.mean(dim=1, keepdim=True)
    x, y = p - mu_p, g - mu_g
    var_p = (x ** 2).sum(dim=(1, 2))
    k = x.transpose(1, 2) @ y                                  # (B, 3, 3) = X^T Y
    u, sigma, vh = torch.linalg.svd(k)
    v = vh.transpose(1, 2)
    d = torch.ones_like(sigma)
    d[:, -1] = torch.sign(torch.linalg.det(v @ u.transpose(1, 2)))
    d[:, -1] = torch.where(d[:, -1] == 0, torch.ones_like(d[:, -1]), d[:, -1])
    rot = v @ torch.diag_embed(d) @ u.transpose(1, 2)          # maps x onto y
    scale = (sigma * d).sum(dim=1) / var_p.clamp_min(1e-12)
    aligned = scale[:, None, None] * (x @ rot.transpose(1, 2)) + mu_g
    return aligned.to(pred.dtype)


def pa_mpjpe(pred, gt) -> torch.Tensor:
    """(B, N, 3), (B, N, 3) -> (B,) MPJPE after per-sample Procrustes alignment."""
    gt = _t(gt)
    return mpjpe(procrustes_align(pred, gt).to(gt.dtype), gt)


def pve(pred_vertices, gt_vertices) -> torch.Tensor:
    """(B, V, 3), (B, V, 3) -> (B,) mean per-vertex Euclidean error (no alignment)."""
    return mpjpe(pred_vertices, gt_vertices)


def lsp14_pelvis_aligned(joints49) -> torch.Tensor:
    """(B, 49, 3+) -> (B, 14, 3): the LSP joints minus their mid-hip pelvis."""
    j = _t(joints49)[:, torch.as_tensor(LSP14), :3]
    return j - 0.5 * (j[:, R_HIP_14] + j[:, L_HIP_14])[:, None]


def joint_errors(pred49, gt49) -> dict:
    """Evaluation joint errors (B,) in the input unit: {'mpjpe', 'pa_mpjpe'} on LSP14."""
    p, g = lsp14_pelvis_aligned(pred49), lsp14_pelvis_aligned(gt49).to(_t(pred49).dtype)
    return {"mpjpe": mpjpe(p, g), "pa_mpjpe": pa_mpjpe(p, g)}


# --- 2D --------------------------------------------------------------------------------
def f1_scores(tp, fp, fn) -> np.ndarray:
    """Per-class F1 = 2 tp / (2 tp + fp + fn); NaN for a class absent from both."""
    tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


@dataclass
class SegmentationScores:
    """Pixel counts accumulated over a set: ``update`` per batch, then ``accuracy``/``f1``.

    ``num_classes`` 2 for silhouettes (0 background, 1 body), 7 for six parts + background.
    """

    num_classes: int
    correct: int = 0
    pixels: int = 0
    tp: np.ndarray = field(default=None)
    fp: np.ndarray = field(default=None)
    fn: np.ndarray = field(default=None)

    def __post_init__(self):
        for name in ("tp", "fp", "fn"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.num_classes, np.int64))

    def update(self, pred, gt) -> "SegmentationScores":
        """pred, gt: integer label maps of the same shape (any leading dims)."""
        pred = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred).astype(np.int64)
        gt = np.asarray(gt.detach().cpu() if isinstance(gt, torch.Tensor) else gt).astype(np.int64)
        if pred.shape != gt.shape:
            raise ValueError(f"label maps differ in shape: {pred.shape} vs {gt.shape}")
        self.correct += int((pred == gt).sum())
        self.pixels += int(gt.size)
        for c in range(self.num_classes):
            p, g = pred == c, gt == c
            self.tp[c] += int((p & g).sum())
            self.fp[c] += int((p & ~g).sum())
            self.fn[c] += int((~p & g).sum())
        return self

    @property
    def accuracy(self) -> float:
        return self.correct / self.pixels if self.pixels else float("nan")

    @property
    def per_class_f1(self) -> np.ndarray:
        return f1_scores(self.tp, self.fp, self.fn)

    @property
    def f1(self) -> float:
        """Mean F1 over the classes present in prediction or ground truth."""
        scores = self.per_class_f1
        return float(np.nanmean(scores)) if np.any(~np.isnan(scores)) else float("nan")


def silhouette_scores(pred_mask, gt_mask) -> tuple:
    """Binary masks (any shape) -> (accuracy, F1 averaged over foreground and background)."""
    s = SegmentationScores(2).update(np.asarray(pred_mask) > 0, np.asarray(gt_mask) > 0)
    return s.accuracy, s.f1


def part_scores(pred_parts6, gt_parts6) -> tuple:
    """Six-part label maps (0 background, 1..6) -> (accuracy, mean F1 over the 7 classes)."""
    s = SegmentationScores(7).update(pred_parts6, gt_parts6)
    return s.accuracy, s.f1


def six_part_labels(parts25) -> np.ndarray:
    """Part map 0..24 (DensePose parts, 0 background) -> 0..6 via ``SIX_PARTS_OF_PART``."""
    from engine.render.surface import SIX_PARTS_OF_PART

    table = np.asarray(SIX_PARTS_OF_PART, dtype=np.int64)
    p = parts25.detach().cpu().numpy() if isinstance(parts25, torch.Tensor) else np.asarray(parts25)
    return table[np.clip(np.round(p).astype(np.int64), 0, len(table) - 1)]


def crop_camera(cam: torch.Tensor, size: int, crop_res: int = CROP_RES, focal_px: float = FOCAL_LENGTH):
    """Crop camera (B, 3) -> (translation (B, 3), focal, principal (B, 2)) for a ``size`` px
    rendering of the crop: the 224 px crop camera's focal scaled by size / 224."""
    translation = crop_cam_to_crop_translation(cam, focal_px, crop_res)
    principal = cam.new_full((cam.shape[0], 2), size / 2.0)
    return translation, focal_px * size / crop_res, principal


def render_labels(renderer, vertices: torch.Tensor, cam: torch.Tensor, size: int) -> tuple:
    """Render meshes (B, V, 3) (no translation) seen by crop cameras (B, 3) at ``size`` px
    (the renderer's own resolution; square) -> numpy (mask (B, size, size) bool,
    parts (B, size, size) int 0..24)."""
    cam = _t(cam).float()
    translation, focal, principal = crop_camera(cam, size)
    camera_vertices = (_t(vertices).float() + translation[:, None]).detach().cpu().numpy()
    out = renderer.render(camera_vertices, focal, principal=principal.detach().cpu().numpy())
    return np.asarray(out.mask, bool), np.asarray(out.part, np.int64)


__all__ = ["LSP14", "LSP14_NAMES", "mpjpe", "procrustes_align", "pa_mpjpe", "pve", "lsp14_pelvis_aligned",
           "joint_errors", "f1_scores", "SegmentationScores", "silhouette_scores", "part_scores",
           "six_part_labels", "crop_camera", "render_labels"]
