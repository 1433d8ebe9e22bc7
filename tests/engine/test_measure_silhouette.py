"""engine.measure.silhouette: the silhouette-term prototype moves a body that is off back onto
the person's mask.

A rendered clip of the mannequin reaching gives the true pose and the renderer's true masks;
the result holds that pose with both shoulders turned by 0.35 rad and the body 3 cm aside.
Refined to the true masks, the body matte's IoU rises from under 0.7 to above 0.9 and the
joints lose at least 40 % of their error (63 -> 32 mm: depth is what a mask says least about); refined with a mask that is the body as it
was, nothing moves."""
import numpy as np

from engine.common import result_schema as rs
from engine.common.smpl_topology import SMPL_JOINT_NAMES
from engine.measure import silhouette as ms


def _moved(res, turn: float, shift: float):
    from engine.common.rotations import axis_angle_to_rotmat

    tr = res.tracks["1"]
    R = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)
    j = SMPL_JOINT_NAMES.index
    R[:, j("left_shoulder")] = axis_angle_to_rotmat(np.array([0.0, 0.0, -turn])) @ R[:, j("left_shoulder")]
    R[:, j("right_shoulder")] = axis_angle_to_rotmat(np.array([0.0, 0.0, turn])) @ R[:, j("right_shoulder")]
    moved = rs.TrackResult.from_rotmats(
        frames=tr.frames, transl=tr.transl + np.array([shift, 0.0, 0.0]), global_orient_rotmat=R[:, 0],
        body_pose_rotmat=R[:, 1:], betas=tr.betas, confidence=tr.confidence, rest_vertices=tr.rest_vertices,
        rest_joints=tr.rest_joints)
    return rs.MotionResult(meta=res.meta, tracks={"1": moved}, timestamps=res.timestamps, body=res.body)


def test_refinement_puts_an_offset_body_back_on_its_mask(mannequin, egl):
    from engine.data.clips import render_person_clip
    from engine.measure.mattes import iou, result_masks, true_result
    from engine.render.renderer import Renderer

    body = mannequin
    with Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1) as r:
        clip = render_person_clip(body, "reach", 3, 2101, renderer=r, heading_deg=0.0)
        truth = [r.render(v[None], clip.focal_px).mask[0] for v in clip.vertices]
    frames = [0, 2]
    true = true_result(body, clip)
    off = _moved(true, 0.35, 0.03)
    before = [iou(m, truth[f]) for m, f in zip(result_masks(off, "1", frames), frames)]
    refined = ms.refined_result(off, "1", frames, [truth[f] for f in frames])
    after = [iou(m, truth[f]) for m, f in zip(result_masks(refined, "1", frames), frames)]
    assert max(before) < 0.7 and min(after) > 0.9, (before, after)

    err = lambda res: np.linalg.norm(ms.posed_joints_of(res, "1", frames) - clip.joints[frames], axis=-1).mean()  # noqa: E731
    assert err(refined) < 0.6 * err(off), (err(off), err(refined))
    # frames not refined keep their pose
    np.testing.assert_array_equal(refined.tracks["1"].body_pose_rotmat[1], off.tracks["1"].body_pose_rotmat[1])

    # a body already on its mask stays where it is (within 1 cm: the sampled points miss thin parts)
    own = result_masks(off, "1", frames)
    still = ms.refined_result(off, "1", frames, own)
    assert np.abs(ms.posed_joints_of(still, "1", frames) - ms.posed_joints_of(off, "1", frames)).max() < 0.01
