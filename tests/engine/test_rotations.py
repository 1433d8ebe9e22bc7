"""engine.common.rotations (numpy) and its torch twin engine.model.geometry."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from engine.common import rotations as rot
from engine.model import geometry as geo

S2 = np.sqrt(0.5)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _random_rotmats(n, seed=0):
    return Rotation.random(n, random_state=seed).as_matrix()


def _scipy_quat_wxyz(R):
    xyzw = Rotation.from_matrix(R).as_quat()
    return np.concatenate([xyzw[..., 3:], xyzw[..., :3]], axis=-1)


def _same_up_to_sign(q, ref, atol):
    sign = np.where(np.sum(q * ref, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    np.testing.assert_allclose(q, sign * ref, atol=atol)


def _edge_rotmats():
    """Rotations at and near 0 and pi about random axes (where naive formulas break)."""
    rng = _rng(1)
    axes = rng.normal(size=(8, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    angles = np.array([0.0, 1e-12, 1e-8, 1e-4, np.pi - 1e-6, np.pi - 1e-9, np.pi, np.pi])
    return Rotation.from_rotvec(axes * angles[:, None]).as_matrix(), angles


# ---------------------------------------------------------------- 6D

def test_rot6d_gives_proper_rotations():
    x = _rng().normal(size=(1000, 6))
    R = rot.rot6d_to_rotmat(x)
    assert R.shape == (1000, 3, 3)
    np.testing.assert_allclose(R.transpose(0, 2, 1) @ R, np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)


def test_rot6d_hand_computed_case():
    # Row-major 3x2: a1 = (1, 1, 0), a2 = (1, 0, 0).
    # b1 = (1,1,0)/sqrt2; a2 - (b1.a2) b1 = (.5,-.5,0) -> b2 = (1,-1,0)/sqrt2; b3 = b1 x b2 = (0,0,-1).
    x = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    expected = np.array([[S2, S2, 0.0], [S2, -S2, 0.0], [0.0, 0.0, -1.0]])
    np.testing.assert_allclose(rot.rot6d_to_rotmat(x), expected, atol=1e-15)
    # Gram-Schmidt ignores the scale of a1 and a2's component along a1.
    np.testing.assert_allclose(rot.rot6d_to_rotmat(np.array([3.0, 5.0, 3.0, 2.0, 0.0, 0.0])), expected, atol=1e-15)
    np.testing.assert_allclose(rot.rotmat_to_rot6d(expected), [S2, S2, S2, -S2, 0.0, 0.0], atol=1e-15)


def test_rot6d_identity_layout():
    np.testing.assert_array_equal(rot.rot6d_to_rotmat(np.array([1.0, 0, 0, 1, 0, 0])), np.eye(3))
    R = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(rot.rotmat_to_rot6d(R), [0, 1, 3, 4, 6, 7])


def test_rot6d_round_trip():
    R = _random_rotmats(500).reshape(20, 25, 3, 3)
    x = rot.rotmat_to_rot6d(R)
    assert x.shape == (20, 25, 6)
    np.testing.assert_allclose(rot.rot6d_to_rotmat(x), R, atol=1e-12)
    np.testing.assert_allclose(rot.rotmat_to_rot6d(rot.rot6d_to_rotmat(x)), x, atol=1e-12)


# ---------------------------------------------------------------- known rotations

KNOWN = [
    # (matrix, quaternion wxyz, axis-angle)
    (np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]]), [S2, S2, 0, 0], [np.pi / 2, 0, 0]),
    (np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]]), [S2, 0, S2, 0], [0, np.pi / 2, 0]),
    (np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]]), [S2, 0, 0, S2], [0, 0, np.pi / 2]),
    (np.eye(3), [1, 0, 0, 0], [0, 0, 0]),
]


@pytest.mark.parametrize("R, q, aa", KNOWN)
def test_known_rotations(R, q, aa):
    R = R.astype(float)
    np.testing.assert_allclose(rot.rotmat_to_quat(R), q, atol=1e-15)
    np.testing.assert_allclose(rot.rotmat_to_axis_angle(R), aa, atol=1e-15)
    np.testing.assert_allclose(rot.quat_to_rotmat(np.array(q, float)), R, atol=1e-15)
    np.testing.assert_allclose(rot.axis_angle_to_rotmat(np.array(aa, float)), R, atol=1e-15)
    np.testing.assert_allclose(rot.axis_angle_to_quat(np.array(aa, float)), q, atol=1e-15)
    np.testing.assert_allclose(rot.quat_to_axis_angle(np.array(q, float)), aa, atol=1e-15)


def test_half_turn_about_x():
    # PyMAF's mean global orientation: exactly 180 degrees about x.
    R = np.diag([1.0, -1.0, -1.0])
    _same_up_to_sign(rot.rotmat_to_quat(R), np.array([0.0, 1, 0, 0]), atol=1e-15)
    aa = rot.rotmat_to_axis_angle(R)
    np.testing.assert_allclose(np.abs(aa), [np.pi, 0, 0], atol=1e-15)
    np.testing.assert_allclose(rot.axis_angle_to_rotmat(aa), R, atol=1e-15)


# ---------------------------------------------------------------- round trips

def test_rotmat_axis_angle_round_trip():
    R = _random_rotmats(1000)
    np.testing.assert_allclose(rot.axis_angle_to_rotmat(rot.rotmat_to_axis_angle(R)), R, atol=1e-12)


def test_rotmat_quat_round_trip():
    R = _random_rotmats(1000)
    q = rot.rotmat_to_quat(R)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-14)
    assert np.all(q[..., 0] >= 0)
    np.testing.assert_allclose(rot.quat_to_rotmat(q), R, atol=1e-12)


def test_round_trips_near_zero_and_pi():
    R, angles = _edge_rotmats()
    aa = rot.rotmat_to_axis_angle(R)
    assert np.all(np.isfinite(aa))
    np.testing.assert_allclose(np.linalg.norm(aa, axis=-1), angles, atol=1e-9)
    assert np.all(np.linalg.norm(aa, axis=-1) <= np.pi + 1e-12)
    np.testing.assert_allclose(rot.axis_angle_to_rotmat(aa), R, atol=1e-12)
    np.testing.assert_allclose(rot.quat_to_rotmat(rot.rotmat_to_quat(R)), R, atol=1e-12)
    # Tiny angles keep their axis (a naive acos(trace) route returns 0 here).
    ref = Rotation.from_matrix(R[:4]).as_rotvec()
    np.testing.assert_allclose(aa[:4], ref, rtol=1e-6, atol=1e-20)


def test_quat_to_axis_angle_tiny_and_negative_w():
    # Below any sane threshold the limit angle/|v| -> 2/w must still be used (not 0, not NaN).
    np.testing.assert_allclose(rot.quat_to_axis_angle(np.array([1.0, 1e-40, 0, 0])), [2e-40, 0, 0], rtol=1e-12)
    np.testing.assert_array_equal(rot.quat_to_axis_angle(np.array([1.0, 0, 0, 0])), [0, 0, 0])
    # -q is the same rotation; the short-way angle (<= pi) is returned.
    q = _scipy_quat_wxyz(_random_rotmats(100, seed=2))
    np.testing.assert_allclose(rot.quat_to_axis_angle(-q), rot.quat_to_axis_angle(q), atol=1e-14)
    np.testing.assert_allclose(geo.quat_to_axis_angle(torch.from_numpy(-q)).numpy(), rot.quat_to_axis_angle(q), atol=1e-12)


def test_axis_angle_beyond_pi_wraps():
    aa = np.array([0.0, 0.0, 1.5 * np.pi])  # same rotation as -pi/2 about z
    np.testing.assert_allclose(rot.rotmat_to_axis_angle(rot.axis_angle_to_rotmat(aa)), [0, 0, -np.pi / 2], atol=1e-14)
    np.testing.assert_allclose(rot.quat_to_axis_angle(rot.axis_angle_to_quat(aa)), [0, 0, -np.pi / 2], atol=1e-14)


# ---------------------------------------------------------------- scipy as reference

def test_against_scipy():
    r = Rotation.random(500, random_state=3)
    R = r.as_matrix()
    _same_up_to_sign(rot.rotmat_to_quat(R), _scipy_quat_wxyz(R), atol=1e-12)
    np.testing.assert_allclose(rot.rotmat_to_axis_angle(R), r.as_rotvec(), atol=1e-12)
    big = _rng(4).normal(size=(500, 3)) * 3  # angles well beyond pi
    np.testing.assert_allclose(rot.axis_angle_to_rotmat(big), Rotation.from_rotvec(big).as_matrix(), atol=1e-12)
    q = _scipy_quat_wxyz(R) * 2.5  # quat_to_rotmat normalizes
    np.testing.assert_allclose(rot.quat_to_rotmat(q), R, atol=1e-12)


def test_quat_multiply_and_conjugate():
    a, b = Rotation.random(200, random_state=5), Rotation.random(200, random_state=6)
    qa, qb = _scipy_quat_wxyz(a.as_matrix()), _scipy_quat_wxyz(b.as_matrix())
    qab = rot.quat_multiply(qa, qb)
    np.testing.assert_allclose(rot.quat_to_rotmat(qab), a.as_matrix() @ b.as_matrix(), atol=1e-12)
    ident = rot.quat_multiply(qa, rot.quat_conjugate(qa))
    np.testing.assert_allclose(ident, np.broadcast_to([1.0, 0, 0, 0], ident.shape), atol=1e-12)
    # i * j = k
    np.testing.assert_allclose(rot.quat_multiply(np.array([0.0, 1, 0, 0]), np.array([0.0, 0, 1, 0])), [0, 0, 0, 1])


def test_normalize_quat():
    q = np.array([[2.0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_allclose(rot.normalize_quat(q), [[1, 0, 0, 0], [0.5] * 4, [0, 0, 0, 0]])


# ---------------------------------------------------------------- continuity

def _flipped_sequence(T=200, B=3, seed=7):
    rng = _rng(seed)
    omega = rng.normal(size=(B, 3)) * 0.2  # a steady spin, several full turns over T
    aa = np.arange(T)[:, None, None] * omega[None]
    q = rot.axis_angle_to_quat(aa)  # continuous up to the wrap at angle pi
    flips = np.where(rng.random((T, B, 1)) < 0.3, -1.0, 1.0)
    return q * flips


def test_quat_make_continuous():
    q = _flipped_sequence()
    assert np.any(np.sum(q[1:] * q[:-1], axis=-1) < 0)  # the test input really has jumps
    c = rot.quat_make_continuous(q, axis=0)
    assert np.all(np.sum(c[1:] * c[:-1], axis=-1) >= 0)
    assert np.all(np.abs(c) == np.abs(q))  # only signs change
    np.testing.assert_allclose(rot.quat_to_rotmat(c), rot.quat_to_rotmat(q), atol=1e-12)
    # Time on another axis gives the same result.
    c1 = rot.quat_make_continuous(q.transpose(1, 0, 2), axis=1)
    np.testing.assert_array_equal(c1, c.transpose(1, 0, 2))
    with pytest.raises(ValueError):
        rot.quat_make_continuous(q, axis=-1)


# ---------------------------------------------------------------- dtypes

def test_float32_stays_float32():
    rng = _rng(8)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    R = rot.rot6d_to_rotmat(x)
    q = rot.rotmat_to_quat(R)
    aa = rot.rotmat_to_axis_angle(R)
    outs = [R, q, aa, rot.rotmat_to_rot6d(R), rot.quat_to_rotmat(q), rot.axis_angle_to_rotmat(aa),
            rot.axis_angle_to_quat(aa), rot.quat_to_axis_angle(q), rot.quat_multiply(q, q),
            rot.quat_conjugate(q), rot.normalize_quat(q), rot.quat_make_continuous(q)]
    assert all(o.dtype == np.float32 for o in outs), [o.dtype for o in outs]
    np.testing.assert_allclose(rot.axis_angle_to_rotmat(aa), R, atol=1e-5)
    assert rot.rotmat_to_quat(R.astype(np.float64)).dtype == np.float64


# ---------------------------------------------------------------- numpy vs torch

def test_numpy_and_torch_agree():
    rng = _rng(9)
    x = rng.normal(size=(300, 6))
    R_np = rot.rot6d_to_rotmat(x)
    R_t = geo.rot6d_to_rotmat(torch.from_numpy(x))
    np.testing.assert_allclose(R_t.numpy(), R_np, atol=1e-6)
    np.testing.assert_allclose(geo.rotmat_to_rot6d(R_t).numpy(), rot.rotmat_to_rot6d(R_np), atol=1e-6)
    np.testing.assert_allclose(geo.rotmat_to_quat(R_t).numpy(), rot.rotmat_to_quat(R_np), atol=1e-6)
    np.testing.assert_allclose(geo.rotmat_to_axis_angle(R_t).numpy(), rot.rotmat_to_axis_angle(R_np), atol=1e-6)
    # float32 torch, as the network runs it
    R32 = geo.rot6d_to_rotmat(torch.from_numpy(x.astype(np.float32)))
    assert R32.dtype == torch.float32
    np.testing.assert_allclose(R32.numpy(), R_np, atol=1e-6)
    aa32 = geo.rotmat_to_axis_angle(R32)
    np.testing.assert_allclose(rot.axis_angle_to_rotmat(aa32.double().numpy()), R_np, atol=1e-5)


def test_torch_batched_shapes():
    x = torch.randn(2, 24, 6)
    R = geo.rot6d_to_rotmat(x)
    assert R.shape == (2, 24, 3, 3)
    assert geo.rotmat_to_axis_angle(R).shape == (2, 24, 3)
    assert geo.rotmat_to_quat(R).shape == (2, 24, 4)
    assert geo.rotmat_to_rot6d(R).shape == (2, 24, 6)


def test_torch_edge_cases_no_nan():
    R_edge, angles = _edge_rotmats()
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        R = torch.tensor(R_edge, dtype=dtype, requires_grad=True)
        aa = geo.rotmat_to_axis_angle(R)
        q = geo.rotmat_to_quat(R)
        assert torch.isfinite(aa).all() and torch.isfinite(q).all()
        np.testing.assert_allclose(aa.detach().norm(dim=-1).double().numpy(), angles, atol=atol * 10)
        np.testing.assert_allclose(rot.axis_angle_to_rotmat(aa.detach().double().numpy()), R_edge, atol=atol)
        (aa.sum() + q.sum()).backward()
        assert torch.isfinite(R.grad).all()
    # Gradient at the identity is the analytic one: d aa / d R = vee(dR - dR^T) / 2.
    R = torch.eye(3, dtype=torch.float64, requires_grad=True)
    geo.rotmat_to_axis_angle(R)[0].backward()
    expected = torch.zeros(3, 3, dtype=torch.float64)
    expected[2, 1], expected[1, 2] = 0.5, -0.5
    torch.testing.assert_close(R.grad, expected)
    # rot6d backward from the mean pose (180 degrees about x) is finite too.
    x = torch.tensor([1.0, 0, 0, -1, 0, 0], requires_grad=True)
    geo.rotmat_to_axis_angle(geo.rot6d_to_rotmat(x)).sum().backward()
    assert torch.isfinite(x.grad).all()
