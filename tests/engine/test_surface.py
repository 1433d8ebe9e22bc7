"""The IUV surface parametrisation: DensePose part ids and per-part UV on body vertices."""
import numpy as np
import pytest

from engine.body.model_data import BodyModelData
from engine.render import surface as S

LEFT_PARTS = (4, 5, 8, 10, 12, 14, 15, 17, 19, 21, 24)
RIGHT_PARTS = (3, 6, 7, 9, 11, 13, 16, 18, 20, 22, 23)
FRONT_BACK = ((2, 1), (9, 7), (10, 8), (13, 11), (14, 12))          # (front, back)
INSIDE_OUTSIDE = ((15, 17), (16, 18), (19, 21), (20, 22))           # (inside, outside)
FULL_CHARTS = (3, 4, 5, 6)                                           # hands, feet: U wraps


@pytest.fixture(scope="module")
def surf(mannequin):
    return mannequin.vertex_parts, mannequin.vertex_uv, mannequin.v_template.astype(np.float64)


def test_tables():
    assert len(S.PART_NAMES) == 25 and S.PART_NAMES[0] == "background"
    assert S.PART_NAMES[1] == "torso_back" and S.PART_NAMES[2] == "torso_front"
    assert S.PART_NAMES[3] == "right_hand" and S.PART_NAMES[24] == "left_head"
    assert len(S.COARSE_PART_NAMES) == 15 and len(S.SIX_PART_NAMES) == 7
    coarse, six = S.COARSE_OF_PART, S.SIX_PARTS_OF_PART
    assert coarse.shape == six.shape == (25,) and coarse[0] == six[0] == 0
    assert set(coarse[1:]) == set(range(1, 15)) and set(six[1:]) == set(range(1, 7))
    # hand-checked entries
    assert coarse[1] == coarse[2] == 1                       # torso
    assert coarse[3] == 2 and coarse[4] == 3                 # right / left hand
    assert coarse[5] == 4 and coarse[6] == 5                 # left / right foot
    assert coarse[7] == coarse[9] == 6                       # right upper leg
    assert coarse[12] == coarse[14] == 9                     # left lower leg
    assert coarse[15] == coarse[17] == 10                    # left upper arm
    assert coarse[20] == coarse[22] == 13                    # right lower arm
    assert coarse[23] == coarse[24] == 14                    # head
    assert six[23] == six[24] == 1 and six[1] == six[2] == 2
    assert six[4] == six[15] == six[21] == 3                 # left hand, upper arm, lower arm
    assert six[3] == six[16] == six[22] == 4                 # right arm
    assert six[5] == six[8] == six[14] == 5                  # left foot, upper leg, lower leg
    assert six[6] == six[7] == six[13] == 6                  # right leg
    # the names agree with the maps
    for p in range(1, 25):
        name = S.PART_NAMES[p]
        cname = S.COARSE_PART_NAMES[coarse[p]]
        assert all(w in name for w in cname.split("_")), (name, cname)
        side = "left" if "left" in name else "right" if "right" in name else None
        if side and "head" not in name:
            assert S.SIX_PART_NAMES[six[p]].startswith(side), name
    coarse_img, six_img = S.part_maps(np.array([[0, 3], [23, 10]], np.uint8))
    assert coarse_img.tolist() == [[0, 2], [14, 7]] and six_img.tolist() == [[0, 4], [1, 5]]


def test_every_vertex_has_a_part_and_all_parts_present(surf, mannequin):
    parts, uv, v = surf
    assert parts.dtype == np.uint8 and parts.shape == (mannequin.num_vertices,)
    assert uv.dtype == np.float32 and uv.shape == (mannequin.num_vertices, 2)
    assert parts.min() >= 1 and parts.max() <= 24
    assert set(np.unique(parts)) == set(range(1, 25))
    assert np.bincount(parts, minlength=25)[1:].min() >= 50


def test_deterministic_and_from_the_body(surf, mannequin):
    parts, uv, _ = surf
    p2, uv2 = S.mannequin_surface(mannequin)
    assert np.array_equal(parts, p2) and np.array_equal(uv, uv2)
    # with_surface copies; it does not touch the input
    bare = BodyModelData(**{**mannequin.__dict__, "vertex_parts": None, "vertex_uv": None})
    dressed = S.with_surface(bare)
    assert bare.vertex_parts is None and np.array_equal(dressed.vertex_parts, parts)
    assert np.array_equal(dressed.v_template, mannequin.v_template)


def test_left_parts_on_plus_x(surf):
    parts, _, v = surf
    for p in LEFT_PARTS:   # (1 cm slack: skinning at the crotch and the midline of the head)
        assert np.all(v[parts == p, 0] > -0.01) and np.mean(v[parts == p, 0] > 0) > 0.98, S.PART_NAMES[p]
    for p in RIGHT_PARTS:
        assert np.all(v[parts == p, 0] < 0.01) and np.mean(v[parts == p, 0] < 0) > 0.98, S.PART_NAMES[p]
    assert np.all(v[parts == 24, 0] >= 0) and np.all(v[parts == 23, 0] < 0)   # head split at x = 0
    # the torso spans both sides
    assert v[parts == 1, 0].min() < -0.1 < 0.1 < v[parts == 1, 0].max()


def test_front_back_by_z_and_inside_outside_by_y(surf):
    parts, _, v = surf
    for front, back in FRONT_BACK:
        zf, zb = v[parts == front, 2], v[parts == back, 2]
        assert zf.mean() > zb.mean() + 0.04, (S.PART_NAMES[front], zf.mean(), zb.mean())
        # pairs are split along z: the overlap in z is small
        assert np.mean(zf < np.median(zb)) < 0.05 and np.mean(zb > np.median(zf)) < 0.05
    for inside, outside in INSIDE_OUTSIDE:
        yi, yo = v[parts == inside, 1], v[parts == outside, 1]
        assert yi.mean() < yo.mean() - 0.02, S.PART_NAMES[inside]
        assert np.mean(yi > np.median(yo)) < 0.05
    # the torso front is the +z side at every height
    torso = np.isin(parts, (1, 2))
    for lo in np.arange(-0.3, 0.2, 0.05):
        band = torso & (v[:, 1] >= lo) & (v[:, 1] < lo + 0.05) & (np.abs(v[:, 0]) < 0.05)
        if band.sum() > 4:
            zf = v[band & (parts == 2), 2]
            zb = v[band & (parts == 1), 2]
            assert zf.min() > zb.max(), lo


def test_head_at_the_top_and_limbs_in_place(surf):
    parts, _, v = surf
    head = np.isin(parts, (23, 24))
    assert v[head, 1].min() > v[np.isin(parts, (1, 2)), 1].mean()
    assert v[head, 1].mean() > max(v[parts == p, 1].mean() for p in range(1, 23))
    assert v[head, 1].max() == v[:, 1].max()                     # top of the skull
    feet = np.isin(parts, (5, 6))
    assert v[feet, 1].min() == v[:, 1].min()                     # soles
    hands = np.isin(parts, (3, 4))
    assert np.abs(v[hands, 0]).min() > np.abs(v[np.isin(parts, (19, 20, 21, 22)), 0]).mean()
    assert np.abs(v[hands, 0]).max() == np.abs(v[:, 0]).max()    # finger tips


def test_uv_in_range_and_varying(surf):
    parts, uv, _ = surf
    assert uv.min() >= 0.0 and uv.max() <= 1.0 and np.all(np.isfinite(uv))
    for p in range(1, 25):
        sel = uv[parts == p]
        assert sel[:, 0].std() > 0.1 and sel[:, 1].std() > 0.1, S.PART_NAMES[p]
        assert sel[:, 1].min() == 0.0 and sel[:, 1].max() == 1.0   # V spans the part
        assert sel[:, 0].max() - sel[:, 0].min() > 0.8


def test_uv_continuous_within_parts(surf, mannequin):
    parts, uv, _ = surf
    f = mannequin.faces
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    same = parts[edges[:, 0]] == parts[edges[:, 1]]
    e = edges[same]
    d = np.abs(uv[e[:, 0]] - uv[e[:, 1]])
    wraps = np.isin(parts[e[:, 0]], FULL_CHARTS)
    du = np.where(wraps, np.minimum(d[:, 0], 1 - d[:, 0]), d[:, 0])   # U is periodic on hands/feet
    # Edges are about 2 cm on parts a few cm across, so steps of 0.2 are normal; a seam
    # inside a part would jump by about 1.
    assert du.max() < 0.6 and d[:, 1].max() < 0.6
    assert np.percentile(du, 99) < 0.25 and np.percentile(d[:, 1], 99) < 0.25
    assert np.median(du) < 0.06 and np.median(d[:, 1]) < 0.06


def test_mannequin_npz_round_trip(mannequin, tmp_path):
    from engine.body.loading import load_body_model

    arrays = mannequin.to_npz_dict()
    assert arrays["vertex_parts"].dtype == np.uint8 and arrays["vertex_uv"].dtype == np.float32
    path = tmp_path / "m.npz"
    mannequin.save_npz(path)
    with np.load(path) as z:
        back = BodyModelData.from_npz_dict({k: z[k] for k in z.files})
    assert np.array_equal(back.vertex_parts, mannequin.vertex_parts)
    assert np.array_equal(back.vertex_uv, mannequin.vertex_uv)
    loaded = load_body_model(path)                        # the user-facing loader keeps them too
    assert np.array_equal(loaded.vertex_parts, mannequin.vertex_parts)
    assert np.array_equal(loaded.vertex_uv, mannequin.vertex_uv)


# --- DensePose's UV_Processed.mat ----------------------------------------------------------
def _tiny_body(n: int) -> BodyModelData:
    rng = np.random.default_rng(0)
    return BodyModelData(
        v_template=rng.normal(size=(n, 3)).astype(np.float32),
        shapedirs=np.zeros((n, 3, 10), np.float32), posedirs=np.zeros((n, 3, 207), np.float32),
        J_regressor=np.full((24, n), 1.0 / n, np.float32), weights=np.full((n, 24), 1 / 24, np.float32),
        parents=np.zeros(24, np.int64), faces=np.array([[0, 1, 2]], np.int64))


def _write_mat(path, faces_1based, face_parts, u, v, smpl_1based):
    from scipy.io import savemat

    col = lambda a: np.asarray(a, np.float64).reshape(-1, 1)  # noqa: E731 - MATLAB column
    savemat(path, {"All_FaceIndices": col(face_parts), "All_Faces": np.asarray(faces_1based, np.float64),
                   "All_U_norm": col(u), "All_V_norm": col(v), "All_vertices": col(smpl_1based)})


def test_densepose_surface_synthetic_mat(tmp_path):
    body = _tiny_body(6)
    # DensePose vertices d0..d7 -> SMPL vertices (0-based here): SMPL 0 has three copies
    # (parts 3, 7, 7), SMPL 2 two copies (parts 3 and 7, a tie: the first copy wins),
    # SMPL 5 none (filled from its nearest labelled rest vertex).
    to_smpl = np.array([0, 1, 2, 0, 3, 4, 0, 2])
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 4, 5], [7, 4, 5]])
    face_parts = np.array([3, 7, 7, 7])
    u = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    v = 1 - u
    path = tmp_path / "UV_Processed.mat"
    _write_mat(path, faces + 1, face_parts, u, v, to_smpl + 1)
    parts, uv = S.densepose_surface(path, body)
    assert parts.dtype == np.uint8 and uv.dtype == np.float32 and uv.shape == (6, 2)
    assert parts[:5].tolist() == [7, 3, 3, 7, 7]
    np.testing.assert_allclose(uv[0], [0.4, 0.6])        # first copy of SMPL 0 with part 7 (d3)
    np.testing.assert_allclose(uv[1], [0.2, 0.8])
    np.testing.assert_allclose(uv[2], [0.3, 0.7])        # tie 3 / 7: first copy (d2, part 3)
    np.testing.assert_allclose(uv[3], [0.5, 0.5])
    rest = body.v_template.astype(np.float64)
    nearest = np.argmin(np.linalg.norm(rest[:5] - rest[5], axis=1))
    assert parts[5] == parts[nearest] and np.array_equal(uv[5], uv[nearest])
    # the result attaches like the mannequin's own surface
    dressed = S.with_surface(body, (parts, uv))
    assert np.array_equal(dressed.vertex_parts, parts)


def test_densepose_surface_rejects_bad_files(tmp_path):
    from scipy.io import savemat

    body = _tiny_body(3)
    path = tmp_path / "other.mat"
    savemat(path, {"something": np.zeros(3)})
    with pytest.raises(ValueError, match="UV_Processed"):
        S.densepose_surface(path, body)
    bad = tmp_path / "bad.mat"                               # SMPL index beyond the body
    _write_mat(bad, [[1, 2, 3]], [1], [0, 0, 0], [0, 0, 0], [1, 2, 9])
    with pytest.raises(ValueError, match="out of range"):
        S.densepose_surface(bad, body)
