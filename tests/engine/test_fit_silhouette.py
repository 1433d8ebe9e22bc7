"""engine/fit/silhouette.py: the silhouette term of the landmark fit.

Distances: a disc off the crop's centre, the crop turned, against the exact distance to the
disc (beyond the crop: an upper bound). Refinement: a rendered clip of the mannequin reaching
gives the true pose and the renderer's true masks (put on crops as the landmark stream keeps them); the pose with both
shoulders turned by 0.35 rad and the body 3 cm aside is refined to them: the body matte's IoU
rises from under 0.7 to above 0.9 and the joints lose at least 40 % of their error; frames
without a mask keep their pose; a cancel keeps the frames refined so far; a body already on
its mask stays on it."""
import numpy as np
import pytest
import torch

from engine.fit import silhouette as fs
from engine.landmarks import roi as rois


def disc_on_crop(centre, radius, roi, size=256):
    """(size, size) bool: crop pixels whose centre maps into the frame disc."""
    A = rois.crop_to_image_matrix(roi, size)
    v, u = np.mgrid[0:size, 0:size] + 0.5
    xy = np.stack([u, v], -1) @ A[:, :2].T + A[:, 2]
    return np.linalg.norm(xy - centre, axis=-1) <= radius


def test_distance_outside_is_the_frame_distance_through_a_turned_crop():
    roi = np.array([320.0, 240.0, 512.0, 0.6])          # 2 frame px per crop px, turned 0.6 rad
    centre, radius = np.array([380.0, 200.0]), 60.0
    mask = disc_on_crop(centre, radius, roi)
    field = torch.as_tensor(fs.outside_distance_fields(mask[None]))
    rng = np.random.RandomState(0)
    uv = np.concatenate([centre + rng.uniform(-200, 200, (400, 2)),     # in the crop
                         centre + np.array([[500.0, 0.0], [0.0, -420.0]])])   # beyond it
    got = fs.distance_outside_px(torch.as_tensor(uv[None], dtype=torch.float32), field,
                                 torch.as_tensor(rois.image_to_crop_matrix(roi[None]), dtype=torch.float32),
                                 torch.tensor([2.0]))[0].numpy()
    want = np.maximum(np.linalg.norm(uv - centre, axis=-1) - radius, 0)
    err = np.abs(got - want)[:-2]
    assert err.max() < 3.0 and err.mean() < 0.8, (err.max(), err.mean())   # 1.5 crop px at most: the stairs
    # beyond the crop: the border's distance plus the way there, an upper bound close to the truth
    assert np.all(got[-2:] >= want[-2:] - 3) and np.all(got[-2:] <= 1.15 * want[-2:]), (got[-2:], want[-2:])
    edges = fs.outline_points(mask[None], rois.crop_to_image_matrix(roi[None]), 50, rng)[0]
    assert np.abs(np.linalg.norm(edges - centre, axis=-1) - radius).max() < 2.5


def test_masks_pack_and_unpack():
    m = np.random.RandomState(1).rand(256, 256) > 0.5
    assert fs.pack_mask(m).nbytes == 256 * 256 // 8
    np.testing.assert_array_equal(fs.unpack_masks(fs.pack_mask(m)[None])[0], m)


def _moved(res, turn: float, shift: float):
    from engine.common.rotations import axis_angle_to_rotmat
    from engine.common.smpl_topology import SMPL_JOINT_NAMES

    tr = res.tracks["1"]
    R = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)
    j = SMPL_JOINT_NAMES.index
    R[:, j("left_shoulder")] = axis_angle_to_rotmat(np.array([0.0, 0.0, -turn])) @ R[:, j("left_shoulder")]
    R[:, j("right_shoulder")] = axis_angle_to_rotmat(np.array([0.0, 0.0, turn])) @ R[:, j("right_shoulder")]
    return R, tr.transl + np.array([shift, 0.0, 0.0])


def _with_pose(res, R, transl):
    from engine.common import result_schema as rs

    tr = res.tracks["1"]
    moved = rs.TrackResult.from_rotmats(
        frames=tr.frames, transl=np.asarray(transl, np.float64), global_orient_rotmat=np.asarray(R[:, 0], np.float64),
        body_pose_rotmat=np.asarray(R[:, 1:], np.float64), betas=tr.betas, confidence=tr.confidence,
        rest_vertices=tr.rest_vertices, rest_joints=tr.rest_joints)
    return rs.MotionResult(meta=res.meta, tracks={"1": moved}, timestamps=res.timestamps, body=res.body)


def _crop_masks(frame_masks, frames, T):
    """Frame masks -> (packed crop masks, crop ROIs) as the landmark stream keeps them."""
    import cv2

    packed, crop = [None] * T, np.zeros((T, 4))
    for f in frames:
        ys, xs = np.nonzero(frame_masks[f])
        crop[f] = rois.roi_from_box([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        M = rois.image_to_crop_matrix(crop[f])
        M[:, 2] += M[:, :2] @ np.array([0.5, 0.5]) - 0.5      # pixel centres on both sides
        on_crop = cv2.warpAffine(frame_masks[f].astype(np.uint8), M, (256, 256), flags=cv2.INTER_NEAREST)
        packed[f] = fs.pack_mask(on_crop > 0)
    return packed, crop


@pytest.mark.parametrize("moved_by", [(0.35, 0.03), (0.0, 0.0)])
def test_refinement_puts_a_body_on_its_mask(mannequin, egl, moved_by):
    from engine.data.clips import render_person_clip
    from engine.fit.fit import make_rig
    from engine.measure.mattes import iou, result_masks, true_result
    from engine.measure.silhouette import posed_joints_of
    from engine.render.renderer import Renderer

    body = mannequin
    with Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1) as r:
        clip = render_person_clip(body, "reach", 3, 2101, renderer=r, heading_deg=0.0)
        truth = [r.render(v[None], clip.focal_px).mask[0] for v in clip.vertices]
    true = true_result(body, clip)
    R, transl = _moved(true, *moved_by)
    off = _with_pose(true, R, transl)
    frames = [0, 2]
    packed, crop = _crop_masks(truth, frames, 3)
    rot, t = R.astype(np.float32), transl.astype(np.float32)
    rig = make_rig(fs.surface_basis(body, fs.SilhouetteParams().points), clip.betas)
    done = fs.refine_track(rot, t, rig, packed, crop, np.full(3, clip.focal_px), np.tile([320.0, 240.0], (3, 1)))
    np.testing.assert_array_equal(done, [True, False, True])
    refined = _with_pose(true, rot, t)
    np.testing.assert_array_equal(rot[1], R[1].astype(np.float32))       # no mask: as it was

    before = [iou(m, truth[f]) for m, f in zip(result_masks(off, "1", frames), frames)]
    after = [iou(m, truth[f]) for m, f in zip(result_masks(refined, "1", frames), frames)]
    moved = np.abs(posed_joints_of(refined, "1", frames) - posed_joints_of(off, "1", frames)).max()
    if moved_by[0]:
        # the arm 20 degrees off: its outline lies beyond the outline cost's 10 px reach, the
        # inside term brings it back (IoU 0.84 / 0.90)
        assert max(before) < 0.7 and min(after) > 0.8 and np.mean(after) > np.mean(before) + 0.2, (before, after)
        err = lambda res: np.linalg.norm(posed_joints_of(res, "1", frames) - clip.joints[frames], axis=-1).mean()  # noqa: E731
        assert err(refined) < 0.6 * err(off), (err(off), err(refined))
        # a cancel between chunks keeps what is refined and leaves the rest as it was
        rot2, t2, chunks = R.astype(np.float32), transl.astype(np.float32), []
        done = fs.refine_track(rot2, t2, rig, packed, crop, np.full(3, clip.focal_px), np.tile([320.0, 240.0], (3, 1)),
                               fs.SilhouetteParams(chunk_frames=1), cancel=lambda: len(chunks) >= 1,
                               on_chunk=chunks.append)
        np.testing.assert_array_equal(done, [True, False, False])
        assert chunks == [1]
        assert np.abs(rot2[0] - R[0]).max() > 0.1                  # refined (alone: not bit for bit the pair)
        np.testing.assert_array_equal(rot2[2], R[2].astype(np.float32))
    else:   # on its mask already: stays on it (joints within 3 cm, IoU 0.95: 1000 sampled points leave
        #     outline points at thin parts with no point close by, the crop mask has 1.6 px steps, and
        #     the pulls to the fit are weak on purpose)
        assert min(after) > 0.94 and moved < 0.03, (after, moved)


def test_an_object_in_the_mask_does_not_pull_the_body(mannequin, egl):
    """A held object or loose clothes widen the person's mask where no body can follow: the
    outline cost saturates, so the body stays where it was; a cost that keeps pulling from afar
    (the same with a 1000 px reach) drags the body towards it."""
    from engine.data.clips import render_person_clip
    from engine.fit.fit import make_rig
    from engine.measure.mattes import true_result
    from engine.measure.silhouette import posed_joints_of
    from engine.render.renderer import Renderer

    body = mannequin
    with Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1) as r:
        clip = render_person_clip(body, "reach", 3, 2101, renderer=r, heading_deg=0.0)
        truth = [r.render(v[None], clip.focal_px).mask[0] for v in clip.vertices]
    true = true_result(body, clip)
    frames = [0, 2]
    held = []
    for m in truth:                                   # a 70 x 120 px board beside the body
        ys, xs = np.nonzero(m)
        m = m.copy()
        y0 = int(ys.min() + 0.3 * (ys.max() - ys.min()))
        m[y0:y0 + 120, xs.max() - 5:xs.max() + 65] = True
        held.append(m)
    packed, crop = _crop_masks(held, frames, 3)
    tr = true.tracks["1"]
    R0 = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)
    rig = make_rig(fs.surface_basis(body, fs.SilhouetteParams().points), clip.betas)

    def moved(params):
        rot, t = R0.astype(np.float32), np.asarray(tr.transl, np.float32)
        fs.refine_track(rot, t, rig, packed, crop, np.full(3, clip.focal_px), np.tile([320.0, 240.0], (3, 1)),
                        params, frame_size=(640, 480))
        return np.abs(posed_joints_of(_with_pose(true, rot, t), "1", frames) - clip.joints[frames]).max()

    near, far = moved(fs.SilhouetteParams()), moved(fs.SilhouetteParams(cover_px=1000.0))
    assert near < 0.03 and far > 2 * near, (near, far)


def test_points_outside_the_frame_cost_nothing():
    uv = torch.tensor([[[-3.0, 10.0], [5.0, 5.0], [5.0, 481.0], [641.0, 0.0]]])
    np.testing.assert_array_equal(fs.in_frame(uv, (640, 480)).numpy(), [[0.0, 1.0, 0.0, 0.0]])


def test_distance_to_nearest_matches_the_whole_table_in_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    points, others = torch.rand(2, 40, 2, generator=g) * 100, torch.rand(2, 300, 2, generator=g) * 100
    a, b = points.clone().requires_grad_(True), others.clone().requires_grad_(True)
    weights = torch.rand(2, 40, generator=g)
    (fs.distance_to_nearest(a, b) * weights).sum().backward()
    c, d = points.clone().requires_grad_(True), others.clone().requires_grad_(True)
    table = lambda p, q: (p[:, :, None] - q[:, None]).norm(dim=-1)  # noqa: E731 - exact, differentiated whole
    (table(c, d).min(2).values * weights).sum().backward()
    torch.testing.assert_close(fs.distance_to_nearest(points, others), table(points, others).min(2).values)
    torch.testing.assert_close(a.grad, c.grad)
    torch.testing.assert_close(b.grad, d.grad)
    assert b.grad.abs().sum() > 0


def test_second_differences_only_over_consecutive_frames():
    x = torch.arange(6, dtype=torch.float32)[:, None] ** 2          # t^2: second difference 2
    got = fs.second_differences(x, np.array([0, 1, 2, 4, 5, 6]))     # t = 1 and t = 5 have both neighbours
    np.testing.assert_array_equal(got.numpy(), [[2.0], [2.0]])
    assert fs.second_differences(x[:2], np.array([0, 1])).shape[0] == 0


def test_steadiness_evens_out_one_frame_whose_mask_is_off(mannequin, egl):
    """Three frames on their true pose; the middle one's mask 8 px to the right. Without the
    steadiness terms that frame follows its mask; with them the motion stays even."""
    from engine.data.clips import render_person_clip
    from engine.fit.fit import make_rig
    from engine.measure.mattes import true_result
    from engine.render.renderer import Renderer

    body = mannequin
    with Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1) as r:
        clip = render_person_clip(body, "walk", 3, 2102, renderer=r, heading_deg=0.0)
        truth = [r.render(v[None], clip.focal_px).mask[0] for v in clip.vertices]
    truth[1] = np.roll(truth[1], 8, axis=1)
    true = true_result(body, clip)
    tr = true.tracks["1"]
    R0 = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1).astype(np.float32)
    packed, crop = _crop_masks(truth, [0, 1, 2], 3)
    rig = make_rig(fs.surface_basis(body, fs.SilhouetteParams().points), clip.betas)
    bumps = {}
    for name, params in (("off", fs.SilhouetteParams(weight_steady_rotation=0.0, weight_steady_translation=0.0)),
                         ("on", fs.SilhouetteParams())):
        rot, t = R0.copy(), np.asarray(tr.transl, np.float32).copy()
        fs.refine_track(rot, t, rig, packed, crop, np.full(3, clip.focal_px), np.tile([320.0, 240.0], (3, 1)),
                        params, frames=np.arange(3))
        bumps[name] = float(np.linalg.norm(t[0] - 2 * t[1] + t[2]))
    assert bumps["off"] > 0.02 and bumps["on"] < 0.5 * bumps["off"], bumps
