"""engine.common.camera (numpy) and the camera half of engine.model.geometry (torch).

How the crop camera and the full-image camera relate (derived here, asserted below).
For a camera-axis point (X, Y, Z) let a = s*h/2 (image pixels per metre of the weak-
perspective overlay), c = box centre, d = c - image centre, and

    u_wp = c + a (X + tx)                     (weak-perspective overlay, both cameras agree)
    eps_c = Z / tz_crop,  tz_crop = 2 f / (224 s)   (crop camera, f = 5000 crop px)
    eps_f = Z / Tz,       Tz = 2 f / (s h)          (full camera, focal f image px)

Then exactly:
    u_crop - c   = a (X + tx) / (1 + eps_c)      -> u_crop - u_wp = -(u_crop - c) eps_c
    u_full - W/2 = (a (X + tx) + d) / (1 + eps_f) -> u_full - u_wp = -(u_full - W/2) eps_f
    u_full - u_crop = (-d eps_f + (u_crop - c)(eps_c - eps_f)) / (1 + eps_f)

So the two cameras agree exactly on the plane Z = 0 (the depth of the body origin),
and elsewhere differ by a relative-depth term: with f = 5000 a 20 cm depth offset
moves points by up to a few pixels for an off-centre box, not by 1e-3 px.
"""
import numpy as np
import torch

from engine.common import camera as cm
from engine.model import geometry as geo

W, H = 1920, 1080
IMAGE_SIZE = np.array([W, H], dtype=float)
CENTRE = IMAGE_SIZE / 2


def _scene(seed=0, B=16, N=300, flat=False):
    """Body-sized point clouds (~1.8 m tall, Z within +-0.2 m) with random cams and boxes."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1, 1, size=(B, N, 3)) * np.array([0.4, 0.9, 0.0 if flat else 0.2])
    cam = np.stack([rng.uniform(0.6, 1.2, B), rng.uniform(-0.2, 0.2, B), rng.uniform(-0.2, 0.2, B)], -1)
    box_size = rng.uniform(200, 900, B)
    box_center = np.stack([rng.uniform(0, W, B), rng.uniform(0, H, B)], -1)
    return pts, cam, box_center, box_size


def _crop_overlay(pts, cam, box_center, box_size):
    """What the official code draws: project in the 224 crop (f=5000), paste the crop back."""
    uv_crop_px = cm.perspective_project(pts, cm.crop_cam_to_crop_translation(cam), 5000.0) + 112
    # official inverse crop affine: x = cx + (x' - 112) * h / 224
    scale = (box_size / 224)[:, None, None]
    via_affine = box_center[:, None, :] + (uv_crop_px - 112) * scale
    via_helper = cm.crop_points_to_image((uv_crop_px - 112) / 112, box_center, box_size)
    np.testing.assert_allclose(via_helper, via_affine, atol=1e-9)
    return via_helper


def _full_overlay(pts, cam, box_center, box_size, focal):
    T = cm.crop_cam_to_full_translation(cam, box_center, box_size, (W, H), focal)
    centre = np.broadcast_to(CENTRE, box_center.shape)
    return cm.perspective_project(pts, T, focal, centre), T


def _weak_perspective(pts, cam, box_center, box_size):
    a = (cam[:, 0] * box_size / 2)[:, None, None]
    return box_center[:, None, :] + a * (pts[..., :2] + cam[:, None, 1:])


def test_crop_and_full_camera_agree_on_the_body_plane():
    pts, cam, c, h = _scene(flat=True)  # Z = 0 for every point
    u_crop = _crop_overlay(pts, cam, c, h)
    for focal in (5000.0, 1500.0, 800.0):
        u_full, _ = _full_overlay(pts, cam, c, h, focal)
        np.testing.assert_allclose(u_full, u_crop, atol=1e-6)
    np.testing.assert_allclose(u_crop, _weak_perspective(pts, cam, c, h), atol=1e-6)


def test_crop_vs_full_difference_is_exactly_the_depth_term():
    pts, cam, c, h = _scene(seed=1)
    u_crop = _crop_overlay(pts, cam, c, h)
    u_full, T = _full_overlay(pts, cam, c, h, 5000.0)
    Z = pts[..., 2:]
    eps_f = Z / T[:, None, 2:]
    eps_c = Z / cm.crop_cam_to_crop_translation(cam)[:, None, 2:]
    d = (c - CENTRE)[:, None, :]
    rel = u_crop - c[:, None, :]
    predicted = (-d * eps_f + rel * (eps_c - eps_f)) / (1 + eps_f)
    np.testing.assert_allclose(u_full - u_crop, predicted, atol=1e-6)
    # The tight bound that follows, and its size for this body-sized cloud.
    bound = (np.abs(d) * np.abs(eps_f) + np.abs(rel) * np.abs(eps_c - eps_f)) / (1 - np.abs(eps_f).max())
    diff = np.abs(u_full - u_crop)
    assert np.all(diff <= bound + 1e-6)
    assert diff.max() > 1e-2  # genuinely not exact off the body plane...
    assert diff.max() < 30.0  # ...but a few pixels at most for f = 5000


def test_each_camera_deviates_from_weak_perspective_by_its_relative_depth():
    pts, cam, c, h = _scene(seed=2)
    u_wp = _weak_perspective(pts, cam, c, h)
    Z = pts[..., 2:]
    u_crop = _crop_overlay(pts, cam, c, h)
    eps_c = Z / cm.crop_cam_to_crop_translation(cam)[:, None, 2:]
    np.testing.assert_allclose(u_crop - u_wp, -(u_crop - c[:, None, :]) * eps_c, atol=1e-6)
    for focal in (5000.0, 1500.0):
        u_full, T = _full_overlay(pts, cam, c, h, focal)
        eps_f = Z / T[:, None, 2:]
        np.testing.assert_allclose(u_full - u_wp, -(u_full - CENTRE) * eps_f, atol=1e-6)


def test_realistic_focal_overlay_is_close_near_the_body_centre():
    pts, cam, c, h = _scene(seed=3)
    u_5000, T5000 = _full_overlay(pts, cam, c, h, 5000.0)
    u_1500, T1500 = _full_overlay(pts, cam, c, h, 1500.0)
    # Only the depth changes with the focal.
    np.testing.assert_allclose(T1500[:, :2], T5000[:, :2], atol=1e-12)
    np.testing.assert_allclose(T1500[:, 2], T5000[:, 2] * 0.3, rtol=1e-12)
    u_crop = _crop_overlay(pts, cam, c, h)
    near = np.abs(pts[..., 2]) <= 0.02  # within 2 cm of the body-origin plane
    # |u_1500 - u_wp| = |u_1500 - W/2| * |Z| / Tz, with Tz = 2 * 1500 / (s h).
    max_eps = 0.02 / T1500[:, 2].min()
    r = np.abs(u_1500 - CENTRE).max()
    assert np.abs(u_1500 - _weak_perspective(pts, cam, c, h))[near].max() <= r * max_eps + 1e-6
    # Against what the official demo draws (crop camera), the near-plane points move
    # by well under a pixel per 100 px of distance from the principal point.
    err = np.abs(u_1500 - u_crop)[near]
    assert err.max() < 0.02 / T1500[:, 2].min() * (r + np.abs(c - CENTRE).max()) + 1e-6
    assert err.max() < 10.0


def test_full_translation_round_trip():
    rng = np.random.default_rng(4)
    _, cam, c, h = _scene(seed=4, B=200)
    for focal in (5000.0, 1234.5):
        T = cm.crop_cam_to_full_translation(cam, c, h, (W, H), focal)
        np.testing.assert_allclose(cm.full_translation_to_crop_cam(T, c, h, (W, H), focal), cam, rtol=1e-12, atol=1e-14)
        T2 = np.stack([rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 200), rng.uniform(2, 40, 200)], -1)
        back = cm.crop_cam_to_full_translation(cm.full_translation_to_crop_cam(T2, c, h, (W, H), focal), c, h, (W, H), focal)
        np.testing.assert_allclose(back, T2, rtol=1e-12)
    # Per-sample image sizes broadcast too.
    sizes = np.tile(IMAGE_SIZE, (200, 1))
    np.testing.assert_allclose(cm.crop_cam_to_full_translation(cam, c, h, sizes), cm.crop_cam_to_full_translation(cam, c, h, (W, H)))


def test_full_translation_formula():
    cam = np.array([0.8, 0.1, -0.05])
    c, h = np.array([1200.0, 400.0]), 500.0
    sh = 0.8 * 500.0
    expected = [0.1 + 2 * (1200 - 960) / sh, -0.05 + 2 * (400 - 540) / sh, 2 * 5000 / sh]
    np.testing.assert_allclose(cm.crop_cam_to_full_translation(cam, c, h, (W, H)), expected, rtol=1e-11)
    np.testing.assert_allclose(cm.crop_cam_to_crop_translation(cam), [0.1, -0.05, 2 * 5000 / (224 * 0.8 + 1e-9)], rtol=1e-15)


def test_crop_point_mapping_round_trip():
    rng = np.random.default_rng(5)
    uv = rng.uniform(-1, 1, (4, 50, 2))
    c, h = rng.uniform(0, 1000, (4, 2)), rng.uniform(100, 800, 4)
    px = cm.crop_points_to_image(uv, c, h)
    np.testing.assert_allclose(cm.image_points_to_crop(px, c, h), uv, atol=1e-12)
    # crop corners land on the box corners: no half-pixel offset
    corner = cm.crop_points_to_image(np.array([[[-1.0, -1.0], [1.0, 1.0]]]), np.array([[100.0, 50.0]]), np.array([40.0]))
    np.testing.assert_allclose(corner, [[[80, 30], [120, 70]]])


def test_perspective_project_formula():
    pts = np.array([[[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]]])
    t = np.array([[0.05, 0.1, 9.7]])
    uv = cm.perspective_project(pts, t, 1500.0, np.array([[960.0, 540.0]]))
    np.testing.assert_allclose(uv, [[[1500 * 0.15 / 10 + 960, 1500 * -0.1 / 10 + 540], [1500 * 0.05 / 9.7 + 960, 1500 * 0.1 / 9.7 + 540]]])
    # per-sample focal
    uv2 = cm.perspective_project(np.repeat(pts, 2, 0), np.repeat(t, 2, 0), np.array([1500.0, 3000.0]))
    np.testing.assert_allclose(uv2[1], 2 * uv2[0])
    assert cm.perspective_project(pts.astype(np.float32), t.astype(np.float32), 5000.0).dtype == np.float32


def test_fov_focal():
    np.testing.assert_allclose(cm.focal_from_fov(90.0, 1920), 960.0)
    np.testing.assert_allclose(cm.fov_from_focal(960.0, 1920), 90.0)
    f = cm.focal_from_fov(np.array([30.0, 55.0, 100.0]), 1280)
    np.testing.assert_allclose(cm.fov_from_focal(f, 1280), [30.0, 55.0, 100.0])


# ---------------------------------------------------------------- torch

def test_project_to_crop_matches_official_formula():
    pts, cam, _, _ = _scene(seed=6, B=4, N=431)
    uv = geo.project_to_crop(torch.from_numpy(pts), torch.from_numpy(cam)).numpy()
    s, tx, ty = cam[:, 0, None], cam[:, 1, None], cam[:, 2, None]
    tz = 2 * 5000.0 / (224 * s + 1e-9)
    X, Y, Z = pts[..., 0], pts[..., 1], pts[..., 2]
    expected = np.stack([5000 * (X + tx) / (Z + tz), 5000 * (Y + ty) / (Z + tz)], -1) / 112
    np.testing.assert_allclose(uv, expected, rtol=1e-12, atol=1e-12)
    # ~ s (X + tx): the weak-perspective reading of the crop camera
    np.testing.assert_allclose(uv, s[..., None] * (pts[..., :2] + cam[:, None, 1:]), atol=0.02)
    # float32 and autograd
    p32 = torch.from_numpy(pts).float().requires_grad_()
    c32 = torch.from_numpy(cam).float().requires_grad_()
    uv32 = geo.project_to_crop(p32, c32)
    assert uv32.dtype == torch.float32
    np.testing.assert_allclose(uv32.detach().numpy(), expected, atol=1e-5)
    uv32.sum().backward()
    assert torch.isfinite(p32.grad).all() and torch.isfinite(c32.grad).all()


def test_torch_camera_matches_numpy():
    pts, cam, c, h = _scene(seed=7, B=8, N=20)
    t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731
    T_np = cm.crop_cam_to_full_translation(cam, c, h, (W, H), 1500.0)
    T_t = geo.crop_cam_to_full_translation(t(cam), t(c), t(h), (W, H), 1500.0)
    np.testing.assert_allclose(T_t.numpy(), T_np, rtol=1e-12)
    np.testing.assert_allclose(
        geo.crop_cam_to_crop_translation(t(cam)).numpy(), cm.crop_cam_to_crop_translation(cam), rtol=1e-12)
    pp = np.broadcast_to(CENTRE, c.shape).copy()
    focal = np.linspace(1000, 5000, 8)
    np.testing.assert_allclose(
        geo.perspective_project(t(pts), T_t, t(focal), t(pp)).numpy(),
        cm.perspective_project(pts, T_np, focal, pp), rtol=1e-12)
