"""The paper's training losses (PyMAF, ICCV 2021, Eq. 2 and Eq. 4), as small pure functions.

Shapes: B batch, J joints, H x W the IUV map (56 x 56 in the release). Predictions come
from ``engine.model.pymaf.PyMAFOutput``; ground truth is a batch of the data contract
(``engine.data.sample``) as torch tensors (``batch_to_tensors``).

Eq. 2 (on EVERY stage's output, as the release's trainer: ``smpl_out[1..3]``, not the
mean-parameter start):

* 2D keypoints: confidence-weighted MSE on crop-normalized coordinates, the first 25
  (OpenPose) joints weighted by ``openpose_weight``, the other 24 by ``gt_weight``;
  averaged over every coordinate of the batch (SPIN's ``keypoint_loss``).
* 3D joints: the 24 SPIN "ground truth" joints (indices 25..48 of the 49-set), each set
  centred on its own pelvis = midpoint of 'R hip' and 'L hip' (49-set 27 and 28),
  confidence-weighted MSE averaged over the samples that have any 3D joint (SPIN's
  ``keypoint_3d_loss``; its ``has_pose_3d`` is "some confidence > 0" here).
* SMPL parameters, only where ``has_smpl``: pose as rotation matrices (MSE over the
  24 x 3 x 3 entries), betas MSE.
* SPIN's camera regulariser ``(exp(-10 s))^2`` averaged over the batch (keeps s > 0).

Eq. 4 (the auxiliary dense-correspondence head, only where ``has_iuv``):

* cross-entropy of the 25-way part index (``predict_uv_index``, 0 = background) and of
  the 15-way coarse parts (``predict_ann_index``, labels via ``COARSE_OF_PART``), over all
  pixels of those samples (background is a class);
* smooth-L1 on U and V of the ground-truth part's channel only, foreground pixels only
  (background pixels do not enter), summed and divided by the batch size (the release).
  A prediction map of another size than the ground truth gets the ground truth resized
  to it by nearest neighbour (the release).

Weights (``LossWeights``) default to the release's ``configs/pymaf_config.yaml``:
KP_2D_W 300, KP_3D_W 300, POSE_W 60, SHAPE_W 0.06, POINT_REGRESSION_WEIGHTS 0.5,
INDEX_WEIGHTS 2.0, PART_WEIGHTS 0.3 (the UV pair is weighted 0.5 x ``uv`` = 0.5 x 1.0).
Notes on where this differs from the release's ``core/trainer.py`` (HEAD), which
  - multiplies only U/V by POINT_REGRESSION_WEIGHTS and adds the two cross-entropies
    unweighted (INDEX_WEIGHTS / PART_WEIGHTS are defined in its config, not read):
    ``LossWeights.release_trainer()`` reproduces that;
  - adds the camera regulariser unweighted (there is no CAM_W key): ``cam`` = 1.0;
  - trains with ``openpose_train_weight`` 0 (its first 25 keypoints are OpenPose
    detections); ours are exact for synthetic data, so ``openpose_weight`` = 1.0;
  - supervises U/V channel 0 towards 0 on background pixels; here background is ignored.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from engine.render.surface import COARSE_OF_PART

NUM_OPENPOSE = 25                    # first 25 of the 49 joints
R_HIP_24, L_HIP_24 = 2, 3            # within the 24 SPIN joints (49-set 27, 28)

def coarse_of_part() -> np.ndarray:
    """(25,) coarse part 0..14 of each DensePose part 0..24 (0 = background)."""
    return np.asarray(COARSE_OF_PART, dtype=np.int64)


@dataclass(frozen=True)
class LossWeights:
    """Loss weights; the defaults are the release's config values (see the module notes)."""

    kp_2d: float = 300.0          # KP_2D_W
    kp_3d: float = 300.0          # KP_3D_W
    pose: float = 60.0            # POSE_W
    shape: float = 0.06           # SHAPE_W (betas)
    cam: float = 1.0              # camera regulariser (unweighted in the release)
    point_regression: float = 0.5  # POINT_REGRESSION_WEIGHTS (on U and V)
    uv: float = 1.0               # inside the point regression term
    index: float = 2.0            # INDEX_WEIGHTS: 25-way part index cross-entropy
    part: float = 0.3             # PART_WEIGHTS: 15-way coarse part cross-entropy
    openpose_weight: float = 1.0  # per-joint factor of the first 25 keypoints (2D)
    gt_weight: float = 1.0        # per-joint factor of the other 24 keypoints (2D)

    @classmethod
    def release_trainer(cls) -> "LossWeights":
        """What the release's trainer effectively applies (CE terms unweighted)."""
        return cls(index=1.0, part=1.0)

    def without_aux(self) -> "LossWeights":
        return replace(self, point_regression=0.0, index=0.0, part=0.0)

    @property
    def has_aux(self) -> bool:
        return self.point_regression * self.uv > 0 or self.index > 0 or self.part > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LossWeights":
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in d.items() if k in names})


# --- data ------------------------------------------------------------------------------
def batch_to_tensors(batch: dict, device=None, non_blocking: bool = False) -> dict:
    """Batch of numpy arrays / tensors -> tensors on ``device`` (images stay uint8)."""
    out = {}
    for key, value in batch.items():
        t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        out[key] = t.to(device, non_blocking=non_blocking) if device is not None else t
    return out


def _zero(ref: torch.Tensor) -> torch.Tensor:
    return ref.new_zeros(()) if ref.is_floating_point() else torch.zeros(())


# --- Eq. 2 ---------------------------------------------------------------------------------
def keypoint_2d_loss(pred: torch.Tensor, gt: torch.Tensor, openpose_weight: float = 1.0,
                     gt_weight: float = 1.0) -> torch.Tensor:
    """pred (B, 49, 2), gt (B, 49, 3) = (x, y, confidence), crop-normalized -> scalar.

    mean over B x 49 x 2 of conf_j * (pred - gt)^2; conf scaled by ``openpose_weight``
    for joints 0..24 and ``gt_weight`` for 25..48.
    """
    conf = gt[..., 2:].clone()
    conf[:, :NUM_OPENPOSE] *= openpose_weight
    conf[:, NUM_OPENPOSE:] *= gt_weight
    return (conf * (pred - gt[..., :2]) ** 2).mean()


def pelvis_centred(joints24: torch.Tensor) -> torch.Tensor:
    """(B, 24, 3) SPIN joints -> the same minus their mid-hip pelvis."""
    pelvis = 0.5 * (joints24[:, R_HIP_24] + joints24[:, L_HIP_24])
    return joints24 - pelvis[:, None]


def keypoint_3d_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """pred (B, 49, 3), gt (B, 49, 4) = (x, y, z, confidence) metres -> scalar.

    The 24 SPIN joints (25..48), each centred on its mid-hip pelvis; conf-weighted MSE,
    mean over the samples with any confidence > 0 (0 when there are none).
    """
    pred24, gt24 = pred[:, NUM_OPENPOSE:], gt[:, NUM_OPENPOSE:]
    conf = gt24[..., 3:]
    valid = conf.flatten(1).sum(1) > 0
    if not bool(valid.any()):
        return _zero(pred)
    diff = pelvis_centred(pred24[valid]) - pelvis_centred(gt24[valid, :, :3])
    return (conf[valid] * diff ** 2).mean()


def smpl_losses(pred_rotmat: torch.Tensor, pred_betas: torch.Tensor, gt_rotmat: torch.Tensor,
                gt_betas: torch.Tensor, has_smpl: torch.Tensor) -> tuple:
    """(B, 24, 3, 3), (B, 10), (B, 24, 3, 3), (B, 10), (B,) -> (pose MSE, betas MSE).

    Only samples with ``has_smpl`` > 0 enter; both are 0 when there are none.
    """
    valid = has_smpl > 0.5
    if not bool(valid.any()):
        return _zero(pred_rotmat), _zero(pred_betas)
    return (F.mse_loss(pred_rotmat[valid], gt_rotmat[valid]),
            F.mse_loss(pred_betas[valid], gt_betas[valid]))


def camera_loss(cam: torch.Tensor) -> torch.Tensor:
    """cam (B, 3) = (s, tx, ty) -> mean of exp(-10 s)^2 (SPIN; penalises s <= 0)."""
    return (torch.exp(-10.0 * cam[:, 0]) ** 2).mean()


# --- Eq. 4 ---------------------------------------------------------------------------------
def _labels_at(gt_iuv: torch.Tensor, size: tuple) -> torch.Tensor:
    """(B, 3, H, W) ground truth -> the same at ``size`` (nearest, the release)."""
    if tuple(gt_iuv.shape[-2:]) == tuple(size):
        return gt_iuv
    return F.interpolate(gt_iuv.float(), size=size, mode="nearest")


def iuv_losses(pred: dict, gt_iuv: torch.Tensor, has_iuv: torch.Tensor,
               coarse: Optional[torch.Tensor] = None) -> dict:
    """Dense-correspondence losses of the auxiliary head.

    pred: predict_u, predict_v (B, 25, h, w) (channel p = part p), predict_uv_index
    (B, 25, h, w) logits, predict_ann_index (B, 15, h, w) logits; gt_iuv (B, 3, H, W)
    = part index 0..24 (0 background), U, V in [0, 1]; has_iuv (B,).
    -> {'u', 'v': smooth-L1 sums over foreground pixels / B, 'index', 'part': CE means}.
    All four are 0 when no sample has IUV ground truth.
    """
    u_pred = pred["predict_u"]
    batch = u_pred.shape[0]
    valid = has_iuv > 0.5
    if not bool(valid.any()):
        z = _zero(u_pred)
        return {"u": z, "v": z, "index": z, "part": z}
    gt = _labels_at(gt_iuv[valid], u_pred.shape[-2:])
    part = gt[:, 0].round().long().clamp(0, 24)            # (b, h, w)
    coarse = torch.as_tensor(coarse_of_part() if coarse is None else coarse, device=part.device)
    out = {
        "index": F.cross_entropy(pred["predict_uv_index"][valid].float(), part),
        "part": F.cross_entropy(pred["predict_ann_index"][valid].float(), coarse[part]),
    }
    fg = part > 0
    for key, channel in (("u", 1), ("v", 2)):
        chosen = pred["predict_" + key][valid].float().gather(1, part[:, None]).squeeze(1)  # (b, h, w)
        out[key] = F.smooth_l1_loss(chosen[fg], gt[:, channel][fg], reduction="sum") / batch
    return out


# --- total -----------------------------------------------------------------------------
def stage_losses(stage, batch: dict, w: LossWeights) -> dict:
    """Weighted Eq. 2 terms of one StageOutput -> {'kp2d', 'kp3d', 'pose', 'betas', 'cam'}."""
    pose, betas = smpl_losses(stage.rotmat, stage.betas, batch["pose_rotmat"], batch["betas"],
                              batch["has_smpl"])
    return {
        "kp2d": w.kp_2d * keypoint_2d_loss(stage.joints2d, batch["keypoints2d"], w.openpose_weight,
                                           w.gt_weight),
        "kp3d": w.kp_3d * keypoint_3d_loss(stage.joints3d, batch["joints3d"]),
        "pose": w.pose * pose,
        "betas": w.shape * betas,
        "cam": w.cam * camera_loss(stage.cam),
    }


def total_loss(out, batch: dict, weights: LossWeights = LossWeights()) -> tuple:
    """PyMAFOutput + batch of tensors -> (total loss, {name: detached 0-dim tensor}).

    Component names: ``kp2d_t``, ``kp3d_t``, ``pose_t``, ``betas_t``, ``cam_t`` for stage
    t = 1..len(out.stages) (M1..M3; M0 is the mean-parameter start, not supervised),
    and ``iuv_u``, ``iuv_v``, ``iuv_index``, ``iuv_part`` when ``out.iuv`` is present and
    the aux weights are not zero. Every value is already weighted; the total is their sum.
    """
    terms = {}
    for t, stage in enumerate(out.stages, start=1):
        for name, value in stage_losses(stage, batch, weights).items():
            terms[f"{name}_{t}"] = value
    if out.iuv is not None and weights.has_aux:
        dense = iuv_losses(out.iuv, batch["iuv"], batch["has_iuv"])
        point = weights.point_regression * weights.uv
        terms["iuv_u"] = point * dense["u"]
        terms["iuv_v"] = point * dense["v"]
        terms["iuv_index"] = weights.index * dense["index"]
        terms["iuv_part"] = weights.part * dense["part"]
    total = torch.stack([v.reshape(()) for v in terms.values()]).sum()
    return total, {k: v.detach() for k, v in terms.items()}


def components_to_floats(components: dict) -> dict:
    """{name: 0-dim tensor} -> {name: float}, with one device synchronisation."""
    if not components:
        return {}
    values = torch.stack([v.reshape(()).float() for v in components.values()]).tolist()
    return dict(zip(components, values))


__all__ = ["LossWeights", "batch_to_tensors", "keypoint_2d_loss", "keypoint_3d_loss", "pelvis_centred",
           "smpl_losses", "camera_loss", "iuv_losses", "stage_losses", "total_loss",
           "components_to_floats", "coarse_of_part"]
