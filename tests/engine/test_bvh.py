"""engine.common.bvh: Euler conversions in every order, continuity, and write -> read -> FK
giving back the joints (the reading is independent of the writer: any channel layout)."""
import numpy as np
import pytest

from engine.common import bvh
from engine.common import rotations
from engine.common.kinematics import forward_kinematics

ORDERS = ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"]
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def random_rotmats(rng, shape, scale=1.5):
    return rotations.axis_angle_to_rotmat(rng.normal(scale=scale, size=shape + (3,)))


@pytest.mark.parametrize("order", ORDERS)
def test_euler_round_trip_every_order(order):
    rng = np.random.default_rng(0)
    R = random_rotmats(rng, (200,), scale=2.0)
    eul = bvh.euler_from_matrices(R, order, continuous=False)
    assert np.abs(bvh.matrices_from_euler(eul, order) - R).max() < 1e-12
    # R = R_first @ R_second @ R_third, literally
    ax = {"X": 0, "Y": 1, "Z": 2}
    one = (bvh.axis_rotation(ax[order[0]], eul[:, 0]) @ bvh.axis_rotation(ax[order[1]], eul[:, 1])
           @ bvh.axis_rotation(ax[order[2]], eul[:, 2]))
    assert np.abs(one - R).max() < 1e-12


@pytest.mark.parametrize("order", ORDERS)
def test_euler_gimbal_lock(order):
    ax = {"X": 0, "Y": 1, "Z": 2}
    R = bvh.axis_rotation(ax[order[0]], 0.3) @ bvh.axis_rotation(ax[order[1]], np.pi / 2) \
        @ bvh.axis_rotation(ax[order[2]], -0.2)
    eul = bvh.euler_from_matrices(R[None], order, continuous=False)
    assert np.abs(bvh.matrices_from_euler(eul, order)[0] - R).max() < 1e-9


def test_euler_continuity_no_jumps():
    """A joint turning steadily through 720 degrees about a tilted axis: consecutive frames'
    angles differ by little (no 360 degree wraps, no switch to the equivalent triple)."""
    t = np.linspace(0, 4 * np.pi, 400)
    axis = np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2])
    R = rotations.axis_angle_to_rotmat(axis[None] * t[:, None])
    eul = bvh.euler_from_matrices(R, "ZXY")
    assert np.abs(np.diff(eul, axis=0)).max() < 0.2
    assert np.abs(bvh.matrices_from_euler(eul, "ZXY") - R).max() < 1e-12
    raw = bvh.euler_from_matrices(R, "ZXY", continuous=False)
    assert np.abs(np.diff(raw, axis=0)).max() > 3  # the test would see a wrap


def test_write_read_fk_gives_back_the_joints(tmp_path):
    rng = np.random.default_rng(1)
    T, J = 30, 24
    rest = rng.normal(scale=0.3, size=(J, 3))
    rest[0] = [0.1, 0.9, -0.2]
    R = random_rotmats(rng, (T, J), scale=0.8)
    root = np.cumsum(rng.normal(scale=0.02, size=(T, 3)), axis=0) + rest[0]
    joints, _ = forward_kinematics(R, rest, PARENTS)
    joints = joints - joints[:, :1] + root[:, None]        # root at `root`, rest root excluded
    offsets = rest - rest[np.maximum(PARENTS, 0)]
    ends = {j: np.array([0.0, 0.05 * j, 0.0]) for j in range(J) if j not in PARENTS}
    names = [f"j{j}" for j in range(J)]
    path = bvh.write_bvh(tmp_path / "x.bvh", names, PARENTS, offsets, root, R, 1001 / 30000, end_sites=ends)
    text = open(path).read()
    assert text.startswith("HIERARCHY\nROOT j0\n{\n\tOFFSET 0.000000 0.000000 0.000000\n")
    assert "\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation\n" in text
    assert "Frame Time: 0.03336666667\n" in text
    b = bvh.read_bvh(text)
    idx = [names.index(n) for n in b["names"]]           # the file lists joints depth-first
    assert sorted(idx) == list(range(J)) and len(b["motion"]) == T
    assert [idx[p] if p >= 0 else -1 for p in b["parents"]] == [PARENTS[j] for j in idx]
    assert 1 / b["frame_time"] == pytest.approx(30000 / 1001, rel=1e-9)
    assert np.allclose(b["offsets"][1:], offsets[idx][1:], atol=1e-6) and np.all(b["offsets"][0] == 0)
    assert {idx[j] for j in b["end_sites"]} == set(ends)
    got = bvh.bvh_joint_positions(b)
    assert np.abs(got - joints[:, idx]).max() < 1e-5   # 6 decimals (micrometres, micro-degrees)


def test_write_refuses_bad_input(tmp_path):
    R = np.tile(np.eye(3), (2, 2, 1, 1))
    with pytest.raises(ValueError, match="order"):
        bvh.bvh_text(["a", "b"], [-1, 0], np.zeros((2, 3)), np.zeros((2, 3)), R, 0.04, order="XXY")
    with pytest.raises(ValueError, match="spaces"):
        bvh.bvh_text(["a", "b c"], [-1, 0], np.zeros((2, 3)), np.zeros((2, 3)), R, 0.04)
    with pytest.raises(ValueError, match="parents"):
        bvh.bvh_text(["a", "b"], [0, 0], np.zeros((2, 3)), np.zeros((2, 3)), R, 0.04)
    with pytest.raises(ValueError, match="rotations"):
        bvh.bvh_text(["a", "b"], [-1, 0], np.zeros((2, 3)), np.zeros((3, 3)), R, 0.04)
    with pytest.raises(ValueError, match="frame time"):
        bvh.bvh_text(["a", "b"], [-1, 0], np.zeros((2, 3)), np.zeros((2, 3)), R, 0.0)
