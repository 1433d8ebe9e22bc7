"""Evaluation metrics: 3D errors against known answers, silhouette / part scores on
hand-made masks, and the crop camera used to render the predicted mesh."""
import numpy as np
import pytest
import torch

from engine.common.rotations import axis_angle_to_rotmat
from engine.train.metrics import (SegmentationScores, joint_errors, mpjpe, pa_mpjpe, part_scores, pve,
                                  silhouette_scores)


def points(n=49, batch=3, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).normal(0, 0.3, size=(batch, n, 3)))


def reference_pa_error(pred, gt):
    """SPIN-style compute_similarity_transform written independently (numpy, per sample)."""
    out = []
    for p, g in zip(np.asarray(pred), np.asarray(gt)):
        mp, mg = p.mean(0), g.mean(0)
        x, y = p - mp, g - mg
        u, s, vt = np.linalg.svd(x.T @ y)
        z = np.eye(3)
        z[2, 2] = np.sign(np.linalg.det(u @ vt))
        r = (u @ z @ vt).T                    # y ~ scale * r x
        scale = np.trace(np.diag(s) @ z) / (x ** 2).sum()
        aligned = scale * x @ r.T + mg
        out.append(np.linalg.norm(aligned - g, axis=1).mean())
    return np.array(out)


def test_pa_mpjpe_of_a_similarity_transformed_copy_is_zero():
    gt = points()
    rot = torch.as_tensor(axis_angle_to_rotmat(np.array([[0.3, -1.2, 0.7], [2.5, 0.1, 0.0], [0, 0, 3.0]])))
    pred = 1.7 * gt @ rot.transpose(1, 2) + torch.tensor([0.5, -2.0, 4.0])
    assert (mpjpe(pred, gt) > 0.1).all()
    assert torch.allclose(pa_mpjpe(pred, gt), torch.zeros(3, dtype=gt.dtype), atol=1e-9)


def test_pa_mpjpe_matches_a_reference_and_refuses_reflections():
    gt, pred = points(seed=1), points(seed=2)
    assert np.allclose(pa_mpjpe(pred, gt).numpy(), reference_pa_error(pred, gt), atol=1e-9)
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0])                   # not a proper rotation
    assert (pa_mpjpe(mirrored, gt) > 0.01).all()


def test_mpjpe_and_pve_of_a_constant_offset_equal_the_offset():
    gt = points()
    offset = torch.tensor([3.0, -4.0, 12.0]) / 13.0 * 0.010          # |offset| = 10 mm
    assert np.allclose(1000 * mpjpe(gt + offset, gt).numpy(), 10.0)
    verts = points(n=6890, batch=2, seed=3)
    assert np.allclose(1000 * pve(verts + offset, verts).numpy(), 10.0)


def test_evaluation_joints_are_pelvis_aligned_lsp14():
    gt = points()
    errors = joint_errors(gt + torch.tensor([0.1, 0.2, 0.3]), gt)     # translation only
    assert torch.allclose(errors["mpjpe"], torch.zeros(3, dtype=gt.dtype), atol=1e-12)
    moved = gt.clone()
    moved[:, 32] += torch.tensor([0.0, 0.014, 0.0])                  # 'R elbow' by 14 mm
    moved[:, 5] += 1.0                                               # an OpenPose joint: not evaluated
    assert np.allclose(1000 * joint_errors(moved, gt)["mpjpe"].numpy(), 1.0)   # 14 mm / 14 joints
    hip = gt.clone()
    hip[:, 27] += torch.tensor([0.028, 0.0, 0.0])                    # 'R hip' moves the pelvis too
    e = 1000 * joint_errors(hip, gt)["mpjpe"].numpy()
    assert np.allclose(e, 14.0)                                      # pelvis moves 14 mm: every joint off by 14


def test_silhouette_scores_identical_and_hand_made():
    gt = np.zeros((4, 4), bool)
    gt[1:3, 1:3] = True
    assert silhouette_scores(gt, gt) == (1.0, 1.0)
    pred = np.zeros((4, 4), bool)
    pred[1, 1:3] = True                                              # 2 right
    pred[3, 0:2] = True                                              # 2 wrong
    acc, f1 = silhouette_scores(pred, gt)
    assert acc == pytest.approx(12 / 16)
    # foreground: tp 2, fp 2, fn 2 -> 0.5; background: tp 10, fp 2, fn 2 -> 20/24
    assert f1 == pytest.approx((0.5 + 20 / 24) / 2)


def test_part_scores_and_dataset_level_accumulation():
    gt = np.array([[0, 1, 1, 2], [0, 3, 3, 2]])
    assert part_scores(gt, gt) == (1.0, 1.0)
    pred = np.array([[0, 1, 2, 2], [0, 3, 3, 0]])
    acc, f1 = part_scores(pred, gt)
    assert acc == pytest.approx(6 / 8)
    # class 0: tp 2 fp 1 fn 0 -> 4/5; 1: tp 1 fn 1 -> 2/3; 2: tp 1 fp 1 fn 1 -> 1/2; 3: 1
    assert f1 == pytest.approx(np.mean([4 / 5, 2 / 3, 1 / 2, 1.0]))
    acc_split = SegmentationScores(7).update(pred[:1], gt[:1]).update(pred[1:], gt[1:])
    assert acc_split.accuracy == pytest.approx(acc) and acc_split.f1 == pytest.approx(f1)


def test_rendered_mask_follows_the_crop_camera(mannequin, egl):
    from engine.train.evaluate import make_renderer
    from engine.train.metrics import render_labels
    from engine.body.smpl_torch import SMPL
    from engine.model.geometry import project_to_crop
    from tests.engine.fake_batch import fake_batch

    batch = fake_batch(mannequin, 3, seed=7)
    verts = SMPL(mannequin).pose(torch.as_tensor(batch["pose_rotmat"]), torch.as_tensor(batch["betas"])).vertices
    cam = torch.as_tensor(batch["cam_crop"])
    renderer, _ = make_renderer(mannequin, 112)
    mask, parts = render_labels(renderer, verts, cam, 112)
    assert mask.shape == (3, 112, 112) and parts.max() <= 24 and (parts[mask] > 0).all()
    px = np.clip((project_to_crop(verts, cam).numpy() + 1) * 56, 0, 112)   # pixel units at 112 px
    for i in range(3):
        rows, cols = np.nonzero(mask[i])
        seen = np.array([cols.min(), cols.max() + 1, rows.min(), rows.max() + 1])
        expect = np.array([px[i, :, 0].min(), px[i, :, 0].max(), px[i, :, 1].min(), px[i, :, 1].max()])
        assert np.abs(seen - expect).max() < 1.5, (seen, expect)
    # The fake labels (splatted vertices) agree with the rendering of the same bodies.
    mask56, _ = render_labels(make_renderer(mannequin, 56)[0], verts, cam, 56)
    assert silhouette_scores(mask56, batch["silhouette"])[0] > 0.95
