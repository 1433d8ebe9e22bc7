"""The paper's losses: zero for a perfect prediction, positive and differentiable otherwise,
and the masking rules (background pixels, GT part channel, has_smpl / has_iuv)."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from engine.model.pymaf import PyMAFOutput, StageOutput
from engine.train.losses import (LossWeights, batch_to_tensors, coarse_of_part, iuv_losses, keypoint_2d_loss,
                                 keypoint_3d_loss, total_loss)
from tests.engine.fake_batch import fake_batch

STAGE_TERMS = ("kp2d", "kp3d", "pose", "betas", "cam")
IUV_TERMS = ("iuv_u", "iuv_v", "iuv_index", "iuv_part")


@pytest.fixture(scope="module")
def batch(mannequin):
    return batch_to_tensors(fake_batch(mannequin, 4, seed=3))


def perfect_output(batch, noise: float = 0.0, seed: int = 0) -> PyMAFOutput:
    """A PyMAFOutput equal to the ground truth (plus ``noise``); every tensor is a leaf
    that requires grad."""
    g = torch.Generator().manual_seed(seed)

    def leaf(x):
        x = x.float().clone()
        if noise:
            x = x + noise * torch.randn(x.shape, generator=g)
        return x.requires_grad_(True)

    stages = []
    for _ in range(3):
        stages.append(StageOutput(
            rotmat=leaf(batch["pose_rotmat"]), pose_axis_angle=torch.zeros(4, 72), pose6d=torch.zeros(4, 144),
            betas=leaf(batch["betas"]), cam=leaf(batch["cam_crop"]),
            joints3d=leaf(batch["joints3d"][..., :3]), joints2d=leaf(batch["keypoints2d"][..., :2]),
            sampled_vertices=torch.zeros(4, 431, 3)))
    part = batch["iuv"][:, 0].long()
    onehot = F.one_hot(part, 25).permute(0, 3, 1, 2).float()
    coarse = torch.as_tensor(coarse_of_part())[part]
    iuv = {
        "predict_u": leaf(batch["iuv"][:, 1:2].expand(-1, 25, -1, -1)),
        "predict_v": leaf(batch["iuv"][:, 2:3].expand(-1, 25, -1, -1)),
        "predict_uv_index": leaf(60.0 * onehot),
        "predict_ann_index": leaf(60.0 * F.one_hot(coarse, 15).permute(0, 3, 1, 2).float()),
    }
    return PyMAFOutput(stages=stages, iuv=iuv)


def leaves(out: PyMAFOutput) -> dict:
    named = {f"{k}_{t}": getattr(s, k) for t, s in enumerate(out.stages, 1)
             for k in ("rotmat", "betas", "cam", "joints3d", "joints2d")}
    named.update(out.iuv)
    return named


def test_fake_batch_is_self_consistent(batch):
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 224, 224, 3)
    fg = batch["iuv"][:, 0] > 0
    assert fg.any() and (~fg).any()
    assert torch.equal(fg, batch["silhouette"] > 0)


def test_every_loss_is_zero_for_a_perfect_prediction(batch):
    total, parts = total_loss(perfect_output(batch), batch, LossWeights())
    assert set(parts) == {f"{n}_{t}" for n in STAGE_TERMS for t in (1, 2, 3)} | set(IUV_TERMS)
    for name, value in parts.items():
        assert abs(float(value)) < 1e-6, name
    assert abs(float(total.detach())) < 1e-5


def test_every_loss_is_positive_and_differentiable_otherwise(batch):
    out = perfect_output(batch, noise=0.05, seed=1)
    # A wrong part / coarse-part prediction somewhere (noise alone keeps the argmax).
    with torch.no_grad():
        out.iuv["predict_uv_index"][:, :, :8] = 0.0
        out.iuv["predict_ann_index"][:, :, :8] = 0.0
    total, parts = total_loss(out, batch, LossWeights())
    for name, value in parts.items():
        assert float(value) > 0, name
    total.backward()
    for name, tensor in leaves(out).items():
        assert tensor.grad is not None, name
        assert torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name


def test_weights_scale_their_terms(batch):
    out = perfect_output(batch, noise=0.05, seed=2)
    _, base = total_loss(out, batch, LossWeights())
    _, doubled = total_loss(out, batch, replace(LossWeights(), kp_2d=600.0, index=4.0))
    assert torch.allclose(doubled["kp2d_1"], 2 * base["kp2d_1"])
    assert torch.allclose(doubled["iuv_index"], 2 * base["iuv_index"])
    assert torch.allclose(doubled["pose_1"], base["pose_1"])
    _, no_aux = total_loss(out, batch, LossWeights().without_aux())
    assert not any(k.startswith("iuv") for k in no_aux)


def test_uv_loss_ignores_background_and_other_channels(batch):
    out = perfect_output(batch, noise=0.02, seed=4)
    pred = {k: v.detach().clone() for k, v in out.iuv.items()}
    ref = iuv_losses(pred, batch["iuv"], batch["has_iuv"])
    part = batch["iuv"][:, 0].long()
    bg = (part == 0)[:, None].expand(-1, 25, -1, -1)

    changed = {k: v.clone() for k, v in pred.items()}
    changed["predict_u"][bg] += 5.0
    changed["predict_v"][bg] -= 3.0
    after = iuv_losses(changed, batch["iuv"], batch["has_iuv"])
    assert float(after["u"]) == float(ref["u"]) and float(after["v"]) == float(ref["v"])

    # Channels other than the GT part's do not count either ...
    other = {k: v.clone() for k, v in pred.items()}
    own = F.one_hot(part, 25).permute(0, 3, 1, 2).bool()
    other["predict_u"][~own] += 5.0
    assert float(iuv_losses(other, batch["iuv"], batch["has_iuv"])["u"]) == float(ref["u"])

    # ... but the GT part's channel on a foreground pixel does.
    fg = torch.nonzero(part[0] > 0)[0]
    hit = {k: v.clone() for k, v in pred.items()}
    hit["predict_u"][0, part[0, fg[0], fg[1]], fg[0], fg[1]] += 1.0
    assert float(iuv_losses(hit, batch["iuv"], batch["has_iuv"])["u"]) > float(ref["u"])


def test_has_smpl_turns_off_smpl_terms(batch):
    out = perfect_output(batch, noise=0.05, seed=5)
    no_smpl = dict(batch, has_smpl=torch.zeros(4))
    _, parts = total_loss(out, no_smpl, LossWeights())
    for t in (1, 2, 3):
        assert float(parts[f"pose_{t}"]) == 0.0 and float(parts[f"betas_{t}"]) == 0.0
        assert float(parts[f"kp2d_{t}"]) > 0   # the keypoint terms stay
    # Mixed: only the samples with SMPL ground truth count.
    mixed = dict(batch, has_smpl=torch.tensor([1.0, 0.0, 1.0, 0.0]))
    _, m = total_loss(out, mixed, LossWeights())
    keep = [0, 2]
    expect = 60.0 * F.mse_loss(out.stages[0].rotmat[keep], batch["pose_rotmat"][keep])
    assert torch.allclose(m["pose_1"], expect)


def test_has_iuv_turns_off_dense_terms(batch):
    out = perfect_output(batch, noise=0.05, seed=6)
    _, parts = total_loss(out, dict(batch, has_iuv=torch.zeros(4)), LossWeights())
    for name in IUV_TERMS:
        assert float(parts[name]) == 0.0


def test_keypoint_confidence_and_pelvis_centring(batch):
    gt2d = batch["keypoints2d"].clone()
    pred2d = gt2d[..., :2] + 0.1
    assert float(keypoint_2d_loss(pred2d, gt2d)) > 0
    op_only = gt2d[..., :2].clone()
    op_only[:, :25] += 0.1                                         # only the OpenPose joints off
    assert float(keypoint_2d_loss(op_only, gt2d, openpose_weight=0.0)) == 0.0
    assert float(keypoint_2d_loss(op_only, gt2d, gt_weight=0.0)) > 0
    gt2d[..., 2] = 0.0
    assert float(keypoint_2d_loss(pred2d, gt2d)) == 0.0          # no confidence, no loss
    gt3d = batch["joints3d"]
    shifted = gt3d[..., :3] + torch.tensor([0.3, -0.2, 1.5])      # a global offset
    assert float(keypoint_3d_loss(shifted, gt3d)) < 1e-10           # is removed by centring
    bent = gt3d[..., :3].clone()
    bent[:, 25] += 0.1                                               # one joint moved
    assert float(keypoint_3d_loss(bent, gt3d)) > 0
