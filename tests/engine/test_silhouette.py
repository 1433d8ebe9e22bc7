"""engine/common/silhouette.py: polygon fill, IoU, contour resampling, the coordinate spaces of
Blender's masks and tracking markers, camera projection, the contours file (numpy only)."""
import numpy as np
import pytest

from engine.common import blender_space, silhouette as sil


def pnpoly(points, height, width):
    """Reference even-odd test, one pixel centre at a time (the classic crossing test)."""
    p = np.asarray(points, float)
    out = np.zeros((height, width), bool)
    n = len(p)
    for r in range(height):
        y = r + 0.5
        for c in range(width):
            x = c + 0.5
            inside = False
            j = n - 1
            for i in range(n):
                xi, yi, xj, yj = p[i, 0], p[i, 1], p[j, 0], p[j, 1]
                if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
                    inside = not inside
                j = i
            out[r, c] = inside
    return out


def circle(cx, cy, r, n, start=-np.pi / 2):
    """n points on a circle, clockwise on screen (y down) from the top."""
    a = start + np.arange(n) * 2 * np.pi / n
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def test_rasterize_axis_aligned_square_uses_pixel_centres():
    sq = [(2, 1), (5, 1), (5, 4), (2, 4)]          # covers pixels 2..4 x 1..3 exactly
    m = sil.rasterize_polygon(sq, 6, 8)
    want = np.zeros((6, 8), bool)
    want[1:4, 2:5] = True
    assert np.array_equal(m, want)
    # half a pixel further the centres are crossed: one more column and row
    m = sil.rasterize_polygon([(1.4, 0.4), (5.6, 0.4), (5.6, 4.6), (1.4, 4.6)], 6, 8)
    want[0:5, 1:6] = True
    assert np.array_equal(m, want)
    # the orientation does not matter, nor do points outside the image
    assert np.array_equal(sil.rasterize_polygon(sq[::-1], 6, 8), sil.rasterize_polygon(sq, 6, 8))
    big = sil.rasterize_polygon([(-10, -10), (50, -10), (50, 50), (-10, 50)], 6, 8)
    assert big.all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_matches_the_crossing_test_on_random_and_self_intersecting_polygons(seed):
    rng = np.random.default_rng(seed)
    H, W = 23, 31
    poly = rng.uniform([-3, -3], [W + 3, H + 3], size=(9, 2))   # self-intersecting, partly outside
    got = sil.rasterize_polygon(poly, H, W)
    assert np.array_equal(got, pnpoly(poly, H, W))
    assert 0 < got.sum() < H * W
    star = circle(15, 11, 10, 5)[[0, 2, 4, 1, 3]]                # pentagram: centre is outside (even-odd)
    m = sil.rasterize_polygon(star, H, W)
    assert np.array_equal(m, pnpoly(star, H, W)) and not m[11, 15] and m[3, 15]


def test_rasterized_disc_has_the_discs_area_and_degenerate_input():
    m = sil.rasterize_polygon(circle(100.3, 80.7, 50, 720), 200, 240)
    assert m.sum() == pytest.approx(np.pi * 50 ** 2, rel=2e-3)
    assert not sil.rasterize_polygon([(1, 1), (5, 5)], 8, 8).any()      # fewer than 3 points
    assert not sil.rasterize_polygon([(1, 1), (5, 1), (9, 1)], 8, 8).any()   # no area
    assert sil.rasterize_polygon(np.zeros((0, 2)), 0, 5).shape == (0, 5)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        sil.rasterize_polygon(np.zeros((4, 3)), 8, 8)
    with pytest.raises(ValueError, match="finite"):
        sil.rasterize_polygon([(0, 0), (np.nan, 1), (2, 2)], 8, 8)


def test_iou():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert sil.iou(a, b) == 1.0
    a[:2] = True
    b[1:3] = True
    assert sil.iou(a, b) == pytest.approx(4 / 12)
    assert sil.iou(a, a) == 1.0 and sil.iou(a, ~a) == 0.0
    with pytest.raises(ValueError, match="shape"):
        sil.iou(a, np.zeros((3, 4), bool))


def test_orientation_start_and_resampling():
    sq = np.array([(0, 0), (0, 4), (4, 4), (4, 0)], float)   # counter-clockwise on screen
    assert sil.signed_area(sq) == -16
    cw = sil.clockwise(sq)
    assert sil.signed_area(cw) == 16 and np.array_equal(cw[0], sq[0])
    assert np.array_equal(sil.topmost_first(np.roll(cw, 2, axis=0))[0], (0, 0))
    r = sil.resample_closed(cw, 8)
    assert np.allclose(r, [(0, 0), (2, 0), (4, 0), (4, 2), (4, 4), (2, 4), (0, 4), (0, 2)])
    # a finely sampled circle to 32 points: on the circle, evenly spaced, same start and direction
    c = circle(50, 40, 20, 400)
    r = sil.resample_closed(c, 32)
    assert np.allclose(r[0], c[0]) and np.allclose(np.linalg.norm(r - (50, 40), axis=1), 20, atol=0.01)
    step = np.linalg.norm(np.diff(np.r_[r, r[:1]], axis=0), axis=1)
    assert step.std() < 1e-3 * step.mean() and sil.signed_area(r) > 0
    assert np.allclose(sil.simplify_contour(r, 32), r)          # already that many: unchanged
    assert np.allclose(sil.resample_closed([(1, 1)] * 5, 4), 1)   # degenerate outline
    with pytest.raises(ValueError, match="at least 3"):
        sil.resample_closed(c, 2)


def test_simplified_contour_still_covers_the_silhouette():
    c = circle(60, 50, 30, 256)
    full = sil.rasterize_polygon(c, 100, 120)
    assert sil.iou(sil.rasterize_polygon(sil.simplify_contour(c, 32), 100, 120), full) > 0.98
    assert sil.iou(sil.rasterize_polygon(sil.simplify_contour(c, 8), 100, 120), full) > 0.85


@pytest.mark.parametrize("W,H", [(1280, 720), (720, 1280), (500, 500)])
def test_coordinate_spaces(W, H):
    rng = np.random.default_rng(3)
    px = rng.uniform(-50, [W + 50, H + 50], size=(20, 2))
    for fwd, back in ((sil.pixels_to_normalized, sil.normalized_to_pixels), (sil.pixels_to_mask, sil.mask_to_pixels)):
        assert np.allclose(back(fwd(px, W, H), W, H), px)
    centre = (W / 2, H / 2)
    assert np.allclose(sil.pixels_to_normalized(centre, W, H), 0.5) and np.allclose(sil.pixels_to_mask(centre, W, H), 0.5)
    # the top-left corner: normalised (0, 1); in mask space the shorter side is squeezed
    assert np.allclose(sil.pixels_to_normalized((0, 0), W, H), (0, 1))
    m = sil.pixels_to_mask([(0, 0), (W, H)], W, H)
    if W > H:
        assert np.allclose(m, [(0, 0.5 + 0.5 * H / W), (1, 0.5 - 0.5 * H / W)])
    elif W < H:
        assert np.allclose(m, [(0.5 - 0.5 * W / H, 1), (0.5 + 0.5 * W / H, 0)])
    else:
        assert np.allclose(m, [(0, 1), (1, 0)])
    # one mask unit is the same number of pixels along x and y
    d = sil.mask_to_pixels([(0.5, 0.5), (0.6, 0.5), (0.5, 0.6)], W, H)
    assert np.linalg.norm(d[1] - d[0]) == pytest.approx(np.linalg.norm(d[2] - d[0]))
    with pytest.raises(ValueError, match="positive"):
        sil.pixels_to_mask(px, 0, H)


@pytest.mark.parametrize("W,H,cx,cy", [(1280, 720, 652.0, 348.0), (720, 1280, 352.5, 651.0)])
def test_camera_projection_inverts_the_scene_camera(W, H, cx, cy):
    """The Blender camera the import builds (blender_space.blender_camera, HORIZONTAL fit) gives
    back the engine's pinhole, and projecting through its object matrix lands where the engine's
    projection does, in the floor world too."""
    f = 1100.0
    s = blender_space.blender_camera(f, (cx, cy), W, H)
    focal, pp = sil.camera_intrinsics(s["lens"], s["sensor_width"], 24.0, s["sensor_fit"], s["shift_x"],
                                      s["shift_y"], W, H)
    assert focal == pytest.approx(f) and np.allclose(pp, (cx, cy))
    # AUTO fits the larger side: the same camera on a portrait frame is fitted vertically
    fa, ppa = sil.camera_intrinsics(50.0, 36.0, 36.0, "AUTO", 0.1, -0.05, 720, 1280)
    assert fa == pytest.approx(50.0 * 1280 / 36.0) and np.allclose(ppa, (360 - 128, 640 - 64))
    rng = np.random.default_rng(4)
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R *= np.sign(np.linalg.det(R))
    world = (R, np.array([0.3, -0.2, 1.7]))
    P = blender_space.camera_points_to_world(rng.uniform([-1, -1, 2], [1, 1, 8], size=(30, 3)), world)
    M = blender_space.camera_object_matrix(world)
    want = blender_space.project_world_points(P, f, (cx, cy), world)
    assert np.allclose(sil.project_to_pixels(P, M, focal, pp), want, atol=1e-9)
    assert (sil.depth_in_front(P, M) > 1.9).all()


def test_marker_frames_and_short_gaps():
    frames = [5, 6, 7, 10, 11, 20]
    assert sil.present_runs(frames) == [(5, 7), (10, 11), (20, 20)]
    assert sil.disabled_marker_frames(frames, 1, 30).tolist() == [4, 8, 9, 12, 19, 21]
    assert sil.disabled_marker_frames(frames, 5, 20).tolist() == [8, 9, 12, 19]
    assert sil.disabled_marker_frames([], 1, 10).tolist() == []
    f, v = sil.fill_short_gaps([1, 2, 5, 9], np.array([[0.0, 0], [1, 1], [4, 7], [8, 8]]), 2)
    assert f.tolist() == [1, 2, 3, 4, 5, 9]
    assert np.allclose(v[2:4], [[2, 3], [3, 5]]) and np.allclose(v[[0, 1, 4, 5]], [[0, 0], [1, 1], [4, 7], [8, 8]])


def test_contours_file(tmp_path):
    pts = circle(30, 20, 8, 16)[None].repeat(3, 0).astype(np.float32)
    path = tmp_path / "clip_contours.npz"
    np.savez(path, width=np.int64(64), height=np.int64(48), ids=np.array(["0", "12"]),
             **{"0/frames": np.array([3, 4, 7]), "0/points": pts,
                "12/frames": np.zeros(0, np.int64), "12/points": np.zeros((0, 16, 2), np.float32)})
    c = sil.load_contours(path)
    assert (c["width"], c["height"]) == (64, 48) and sorted(c["people"]) == ["0", "12"]
    frames, points = c["people"]["0"]
    assert frames.tolist() == [3, 4, 7] and points.shape == (3, 16, 2) and np.allclose(points, pts)
    assert len(c["people"]["12"][0]) == 0
    np.savez(path, width=64, height=48, ids=np.array(["0"]), **{"0/frames": np.array([4, 3]), "0/points": pts[:2]})
    with pytest.raises(ValueError, match="strictly increasing"):
        sil.load_contours(path)
    np.savez(path, width=64, height=48, ids=np.array(["0"]), **{"0/frames": np.array([3]), "0/points": pts[:2]})
    with pytest.raises(ValueError, match="shape"):
        sil.load_contours(path)
    np.savez(path, width=64, ids=np.array(["0"]))
    with pytest.raises(ValueError, match="not a contours file"):
        sil.load_contours(path)
    with pytest.raises(ValueError, match="cannot read"):
        sil.load_contours(tmp_path / "missing.npz")
