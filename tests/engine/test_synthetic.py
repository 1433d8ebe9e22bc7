"""Synthetic training data: determinism, label consistency, joint limits, motions, cache."""
import numpy as np
import pytest
from scipy import ndimage

from engine.common.camera import (
    crop_cam_to_full_translation,
    image_points_to_crop,
    perspective_project,
)
from engine.common.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle
from engine.data import poses
from engine.data.sample import SAMPLE_SPEC, check_sample, collate

from engine.data.synthetic import SyntheticConfig, SyntheticPeople, sample_label_maps

N = 6


def _gl():
    try:
        from engine.render.renderer import egl_available
    except ImportError as err:  # moderngl missing
        return False, str(err)
    return egl_available()


GL_OK, GL_WHY = _gl()
needs_gl = pytest.mark.skipif(not GL_OK, reason=f"no EGL context for the renderer: {GL_WHY}")


@pytest.fixture(scope="module")
def dataset(mannequin):
    if not GL_OK:
        pytest.skip(f"no EGL context for the renderer: {GL_WHY}")
    return SyntheticPeople(length=N, seed=123, body=mannequin)


@pytest.fixture(scope="module")
def full(dataset):
    """(sample, extras) pairs: extras hold the full-image render and occluder mask."""
    return [dataset.generate_full(i) for i in range(N)]


@pytest.fixture(scope="module")
def samples(full):
    return [s for s, _ in full]


def _equal(a: dict, b: dict) -> bool:
    return all(np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes() for k in SAMPLE_SPEC)


# ----------------------------------------------------------------------------------
# Contract and determinism
# ----------------------------------------------------------------------------------
def test_samples_pass_the_contract(samples):
    for s in samples:
        check_sample(s)
    batch = collate(samples)
    assert batch["image"].shape == (N, 224, 224, 3)


def test_same_seed_same_samples_in_any_order(dataset, samples, mannequin):
    other = SyntheticPeople(length=N, seed=123, body=mannequin)
    for i in (4, 1, 3):                      # another instance, another order
        assert _equal(other[i], samples[i]), i
    assert _equal(dataset[2], samples[2])    # the same instance again, via __getitem__
    other.close()


def test_different_seeds_differ(samples, mannequin):
    other = SyntheticPeople(length=N, seed=124, body=mannequin)
    s = other[0]
    assert not np.array_equal(s["image"], samples[0]["image"])
    assert not np.array_equal(s["pose_rotmat"], samples[0]["pose_rotmat"])
    assert not np.array_equal(samples[0]["betas"], samples[1]["betas"])
    other.close()


# ----------------------------------------------------------------------------------
# Labels agree with each other
# ----------------------------------------------------------------------------------
def test_keypoints_are_the_projection_of_the_3d_joints(samples):
    for s in samples:
        w, h = s["image_size"]
        uv = perspective_project(s["joints3d"][:, :3].astype(np.float64), s["transl"].astype(np.float64),
                                 float(s["focal_px"]), np.array([w / 2, h / 2]))
        kp = image_points_to_crop(uv, s["box"][:2], s["box"][2])
        # 0.5 crop pixel = 0.5 / 112 in normalized crop units.
        np.testing.assert_allclose(s["keypoints2d"][:, :2], kp, atol=0.5 / 112)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        np.testing.assert_array_equal(s["keypoints2d"][:, 2], inside.astype(np.float32))
        assert np.all(s["joints3d"][:, 3] == 1)


def test_crop_camera_matches_translation_and_pose_labels(samples, mannequin):
    import torch

    from engine.body.smpl_torch import SMPL

    smpl = SMPL(mannequin)
    for s in samples:
        back = crop_cam_to_full_translation(s["cam_crop"], s["box"][:2], s["box"][2], s["image_size"], s["focal_px"])
        np.testing.assert_allclose(back, s["transl"], rtol=1e-4, atol=1e-4)
        # Weak perspective roughly reproduces the keypoints (median within ~10 crop px).
        sc, tx, ty = s["cam_crop"]
        x = s["joints3d"][:, :3]
        weak = np.stack([sc * (x[:, 0] + tx), sc * (x[:, 1] + ty)], axis=1)
        assert np.median(np.abs(weak - s["keypoints2d"][:, :2])) < 10 / 112
        # joints3d are SMPL(pose_rotmat, betas)'s 49 joints.
        with torch.no_grad():
            out = smpl.pose(torch.as_tensor(s["pose_rotmat"][None]), torch.as_tensor(s["betas"][None]))
        np.testing.assert_allclose(out.joints49[0].numpy(), s["joints3d"][:, :3], atol=1e-4)
    # Upright-ish: the head is above (smaller y, OpenCV frame) the ankles for most samples.
    up = [s["joints3d"][38, 1] < s["joints3d"][[25, 30], 1].mean() for s in samples]
    assert np.mean(up) >= 0.5


def test_iuv_matches_silhouette(samples):
    for s in samples:
        part, u, v = s["iuv"]
        sil = s["silhouette"].astype(bool)
        assert sil.any()
        np.testing.assert_array_equal(part > 0, sil)
        assert set(np.unique(part)) <= set(range(25))
        assert np.all(part == np.round(part))
        assert np.all((u[~sil] == 0) & (v[~sil] == 0))
        assert np.all((u >= 0) & (u <= 1) & (v >= 0) & (v <= 1))
        assert len(np.unique(part[sil])) >= 4   # several parts visible


def test_body_is_where_the_keypoints_are(full):
    hits, total = 0, 0
    for s, extra in full:
        # Occluders hide the body (labels = visible body), so count their cells as body.
        occ, _ = sample_label_maps(extra["occluded"].astype(np.uint8), np.zeros(extra["uv"].shape, np.float32),
                                   s["box"][:2], s["box"][2])
        sil = ndimage.binary_dilation(s["silhouette"].astype(bool) | (occ[0] > 0), iterations=2)
        kp = s["keypoints2d"]
        cells = np.floor((kp[:, :2] + 1) * 28).astype(int)
        ok = (kp[:, 2] > 0) & np.all((cells >= 0) & (cells < 56), axis=1)
        hits += int(sil[cells[ok, 1], cells[ok, 0]].sum())
        total += int(ok.sum())
    assert total > 0 and hits / total > 0.9


@needs_gl
def test_silhouette_is_aligned_with_the_image_crop(mannequin):
    """The 56x56 labels (sampled at cell centres) agree with the official 224 crop of the
    full-image mask (an independent path: cv2 warp + 4x4 average)."""
    import cv2

    from engine.preprocess import crop_matrix

    ds = SyntheticPeople(length=3, seed=7, body=mannequin, config=SyntheticConfig(occluder_prob=0.0))
    for i in range(2):
        s, extra = ds.generate_full(i)
        m = cv2.warpAffine(extra["mask"].astype(np.float32), crop_matrix(s["box"][:2], s["box"][2]), (224, 224),
                           flags=cv2.INTER_LINEAR)
        pooled = m.reshape(56, 4, 56, 4).mean(axis=(1, 3)) > 0.5
        sil = s["silhouette"].astype(bool)
        iou = (pooled & sil).sum() / (pooled | sil).sum()
        assert iou > 0.93, iou
        # A one-cell (4 crop px) shift already fails the check.
        shifted = np.roll(sil, 1, axis=1)
        assert (pooled & shifted).sum() / (pooled | shifted).sum() < 0.9
    ds.close()


@needs_gl
def test_occluders_hide_body_labels(mannequin):
    ds = SyntheticPeople(length=4, seed=11, body=mannequin, config=SyntheticConfig(occluder_prob=1.0))
    found = False
    for i in range(4):
        s, extra = ds.generate_full(i)
        occ = extra["occluded"]
        assert not np.any(extra["mask"] & occ)
        assert not np.any(extra["part"][occ])
        found |= bool(occ.any())
        check_sample(s)
    assert found
    ds.close()


# ----------------------------------------------------------------------------------
# Poses and motions
# ----------------------------------------------------------------------------------
def test_random_poses_within_limits():
    rng = np.random.default_rng(0)
    ps = np.stack([poses.random_pose(rng) for _ in range(200)])
    assert poses.within_limits(ps).all()
    np.testing.assert_allclose(ps[:, 0], np.broadcast_to(np.eye(3), (200, 3, 3)), atol=1e-12)
    # Mix of mild and strong poses: spread of total joint angle.
    total = np.linalg.norm(rotmat_to_axis_angle(ps[:, 1:]), axis=-1).sum(-1)
    assert np.percentile(total, 90) > 1.5 * np.percentile(total, 10)


def test_limits_reject_impossible_joints_and_clip_fixes_them():
    p = np.broadcast_to(np.eye(3), (24, 3, 3)).copy()
    k, e = poses.JOINT_INDEX["left_knee"], poses.JOINT_INDEX["right_elbow"]
    p[k] = axis_angle_to_rotmat(np.array([-0.6, 0, 0]))        # knee bent forwards
    assert not poses.within_limits(p)
    q = p.copy()
    q[k] = axis_angle_to_rotmat(np.array([1.5, 0, 0]))         # normal knee flexion
    assert poses.within_limits(q)
    q[e] = axis_angle_to_rotmat(np.array([0, -1.0, 0]))        # right elbow the wrong way
    assert not poses.within_limits(q)
    q[e] = axis_angle_to_rotmat(np.array([0, 1.0, 0]))         # the right way (mirror of left)
    assert poses.within_limits(q)
    rng = np.random.default_rng(1)
    wild = axis_angle_to_rotmat(rng.normal(size=(10, 24, 3)) * 1.5)
    assert not poses.within_limits(wild).any()
    clipped = poses.clip_to_limits(wild)
    assert poses.within_limits(clipped).all()
    np.testing.assert_allclose(clipped[:, 0], wild[:, 0])
    # Clipping leaves a valid pose unchanged.
    ok = poses.random_pose(rng)
    np.testing.assert_allclose(poses.clip_to_limits(ok), ok, atol=1e-9)


def _angular_acceleration(p):
    rel = np.einsum("tjba,tjbc->tjac", p[:-1], p[1:])          # R_t^T R_{t+1}
    w = rotmat_to_axis_angle(rel)                               # rad / frame
    return np.linalg.norm(np.diff(w, axis=0), axis=-1).max()


@pytest.mark.parametrize("name", poses.MOTIONS)
def test_motions_smooth_and_within_limits(name):
    for seed in range(3):
        m = poses.motion(name, 90, np.random.default_rng(seed))
        assert m.poses.shape == (90, 24, 3, 3) and m.root.shape == (90, 3) and m.yaw.shape == (90,)
        assert poses.within_limits(m.poses).all()
        assert _angular_acceleration(m.poses) < 0.15           # rad / frame^2 at 30 fps
        assert np.abs(np.diff(m.root, 2, axis=0)).max() < 0.01  # m / frame^2
        assert np.abs(np.diff(m.yaw, 2)).max() < 0.02
        # It moves.
        assert np.linalg.norm(rotmat_to_axis_angle(m.poses[:, 1:]) - rotmat_to_axis_angle(m.poses[:1, 1:]),
                              axis=-1).max() > 0.3
    # The smoothness check does catch a jerky sequence.
    rng = np.random.default_rng(0)
    assert _angular_acceleration(np.stack([poses.random_pose(rng) for _ in range(10)])) > 0.15


def test_motion_specifics():
    walk = poses.motion("walk", 60, np.random.default_rng(0))
    assert walk.root[-1, 2] > 1.0                                # walks forward (+z)
    turn = poses.motion("turn", 120, np.random.default_rng(0))
    assert abs(turn.yaw[-1]) > np.radians(55)
    crouch = poses.motion("crouch", 120, np.random.default_rng(0))
    assert crouch.root[:, 1].min() < -0.1                       # the pelvis goes down
    with pytest.raises(ValueError):
        poses.motion("moonwalk", 10, np.random.default_rng(0))


# ----------------------------------------------------------------------------------
# Cache shards
# ----------------------------------------------------------------------------------
@needs_gl
def test_shards_round_trip(tmp_path, samples, mannequin):
    cached = SyntheticPeople(length=N, seed=123, body=mannequin, cache_dir=tmp_path, shard_size=4)
    got = cached[5]                                  # generates shard 1 (samples 4, 5)
    assert _equal(got, samples[5])
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as z:
        assert set(SAMPLE_SPEC) <= set(z.files)
    # A fresh instance reads from disk without generating.
    reader = SyntheticPeople(length=N, seed=123, body=mannequin, cache_dir=tmp_path, shard_size=4)

    def fail(index):
        raise AssertionError("generated instead of reading the shard")

    reader.generate = fail
    assert _equal(reader[4], samples[4])
    check_sample(reader[5])
    # A different seed does not read these shards; a different length shares them.
    other = SyntheticPeople(length=N, seed=5, body=mannequin, cache_dir=tmp_path, shard_size=4)
    assert other.fingerprint() != cached.fingerprint()
    shorter = SyntheticPeople(length=5, seed=123, body=mannequin, cache_dir=tmp_path, shard_size=4)
    shorter.generate = fail
    assert _equal(shorter[4], samples[4])
    cached.close()


# ----------------------------------------------------------------------------------
# SPIN-format loader (tiny fake dataset)
# ----------------------------------------------------------------------------------
def test_spin_loader(tmp_path):
    import cv2

    from engine.data.spin import SpinDataset
    from engine.preprocess import crop_person

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    images = []
    for k in range(2):
        img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / "images" / f"im{k}.png"), img[..., ::-1])
        images.append(img)
    center = np.array([[80.0, 60.0], [70.0, 50.0]])
    scale = np.array([0.5, 0.4])                       # sides 100 and 80 px
    part = np.zeros((2, 24, 3))
    part[:, 0] = [[80, 60, 1], [70, 50, 1]]            # at the box centre -> (0, 0)
    part[:, 1] = [[130, 60, 1], [110, 50, 0]]          # right edge of the box -> x = 1
    openpose = np.zeros((2, 25, 3))
    S = np.concatenate([rng.normal(size=(2, 24, 3)), np.ones((2, 24, 1))], axis=2)
    pose = rng.normal(size=(2, 72)) * 0.2
    np.savez(tmp_path / "fake.npz", imgname=np.array(["im0.png", "im1.png"]), center=center, scale=scale,
             part=part, openpose=openpose, S=S, pose=pose, shape=rng.normal(size=(2, 10)),
             has_smpl=np.array([1.0, 0.0]))
    ds = SpinDataset(tmp_path / "fake.npz", tmp_path / "images")
    assert len(ds) == 2
    for k in range(2):
        s = ds[k]
        check_sample(s)
        np.testing.assert_array_equal(s["image"], crop_person(images[k], center[k], scale[k] * 200))
        np.testing.assert_allclose(s["keypoints2d"][25], [0, 0, 1], atol=1e-6)
        np.testing.assert_allclose(s["keypoints2d"][26, 2], part[k, 1, 2])
        np.testing.assert_allclose(s["joints3d"][25:], S[k], atol=1e-6)
        assert np.all(s["joints3d"][:25] == 0) and np.all(s["keypoints2d"][:25, 2] == 0)
        np.testing.assert_allclose(s["pose_rotmat"], axis_angle_to_rotmat(pose[k].reshape(24, 3)), atol=1e-6)
        np.testing.assert_allclose(s["box"], [*center[k], scale[k] * 200])
        np.testing.assert_allclose(s["image_size"], [160, 120])
        assert s["has_iuv"] == 0
    np.testing.assert_allclose(ds[0]["keypoints2d"][26], [1, 0, 1], atol=1e-6)
    assert ds[0]["has_smpl"] == 1 and ds[1]["has_smpl"] == 0
    with pytest.raises(IndexError):
        ds[2]
    np.savez(tmp_path / "bad.npz", imgname=np.array(["im0.png"]))
    with pytest.raises(ValueError):
        SpinDataset(tmp_path / "bad.npz", tmp_path / "images")
