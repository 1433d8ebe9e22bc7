"""The 33 BlazePose GHUM landmarks on an SMPL-format body (numpy).

Every landmark becomes a *skinned point* of the rig: a rest position that is linear in
the shape (``rest = rest0 + rest_dirs @ betas``) and 24 skinning weights, so joints,
surface vertices and points fixed to the pelvis are posed by one formula (linear blend
skinning of that point; a joint is a point with weight 1 on itself).

====  ==================  =====================================  =======================
 id   BlazePose           SMPL                                   used as
====  ==================  =====================================  =======================
 0    nose                vertex 332 (smplx "nose")              position
 1    left eye inner      --                                     not used
 2    left eye            vertex 2800 (smplx "leye")             position
 3    left eye outer      --                                     not used
 4    right eye inner     --                                     not used
 5    right eye           vertex 6260 (smplx "reye")             position
 6    right eye outer     --                                     not used
 7    left ear            vertex 583 (smplx "lear")              position
 8    right ear           vertex 4071 (smplx "rear")             position
 9    mouth left          --                                     not used
10    mouth right         --                                     not used
11    left shoulder       joint 16 left_shoulder                 position
12    right shoulder      joint 17 right_shoulder                position
13    left elbow          joint 18 left_elbow                    position
14    right elbow         joint 19 right_elbow                   position
15    left wrist          joint 20 left_wrist                    position
16    right wrist         joint 21 right_wrist                   position
17    left pinky          vertex 2673 (smplx "lpinky")           hand directions only
18    right pinky         vertex 6133 (smplx "rpinky")           hand directions only
19    left index          vertex 2319 (smplx "lindex")           hand directions only
20    right index         vertex 5782 (smplx "rindex")           hand directions only
21    left thumb          vertex 2746 (smplx "lthumb")           hand directions only
22    right thumb         vertex 6191 (smplx "rthumb")           hand directions only
23    left hip            pelvis point: joints 1/2 pushed out    position
24    right hip           (see below), rigid on the pelvis       position
25    left knee           joint 4 left_knee                      position
26    right knee          joint 5 right_knee                     position
27    left ankle          joint 7 left_ankle                     position
28    right ankle         joint 8 right_ankle                    position
29    left heel           vertex 3387 (smplx "LHeel")            position
30    right heel          vertex 6787 (smplx "RHeel")            position
31    left foot index     vertex 3216 (smplx "LBigToe")          position
32    right foot index    vertex 6617 (smplx "RBigToe")          position
====  ==================  =====================================  =======================

Decisions
---------
* Hips. BlazePose's hips sit on the outside of the pelvis, wider than SMPL's hip joints
  (the femur heads, about 0.14 m apart). They are modelled as two points rigidly fixed to
  the pelvis (joint 0): the SMPL hip joints pushed apart symmetrically about their
  midpoint by ``HIP_WIDTH_SCALE`` (1.35, about 0.19 m for an average body). Because the
  push is symmetric, the hip *midpoint* (BlazePose's world origin) and the hip *line
  direction* (the pelvis yaw/roll) are those of the SMPL hip joints, whatever the scale:
  a wrong scale costs a constant residual on two landmarks, never a rotation. The hip
  width is therefore left out of the shape fit. The value is a typical-proportions
  estimate, not a calibration against real BlazePose output.
* Hand points. BlazePose's pinky/index/thumb points lie near the knuckles, SMPL's
  landmark vertices at the finger tips, so their positions do not match. They enter the
  fit only as unit directions (``HAND_DIRECTIONS``): wrist -> between index and pinky
  (the hand's pointing direction), pinky -> index (across the palm: the forearm/wrist
  twist) and wrist -> thumb (which side the palm faces). SMPL's hand joints (22, 23) are
  not estimated (identity).
* Eye inner/outer corners and the mouth have no SMPL landmark vertex that both SMPL and
  the mannequin define; they are not used (weight 0).
* Only vertex ids from ``engine.common.smpl_topology`` are used, so any SMPL-topology body
  (the user's SMPL or the mannequin) gives the same correspondence.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from engine.common.kinematics import regress_joints
from engine.common.smpl_topology import NUM_VERTICES, VERTEX_JOINTS

NUM_LANDMARKS = 33
BLAZEPOSE_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
LANDMARK = {n: i for i, n in enumerate(BLAZEPOSE_NAMES)}

#: How far BlazePose's hips sit outside SMPL's hip joints (ratio of the two hip widths).
HIP_WIDTH_SCALE = 1.35

_VERTEX = dict(VERTEX_JOINTS)
#: landmark -> SMPL joint index (kinematic joints).
JOINT_OF = {11: 16, 12: 17, 13: 18, 14: 19, 15: 20, 16: 21, 25: 4, 26: 5, 27: 7, 28: 8}
#: landmark -> SMPL vertex id (smplx's landmark vertices).
VERTEX_OF = {
    0: _VERTEX["nose"], 2: _VERTEX["leye"], 5: _VERTEX["reye"], 7: _VERTEX["lear"], 8: _VERTEX["rear"],
    17: _VERTEX["lpinky"], 18: _VERTEX["rpinky"], 19: _VERTEX["lindex"], 20: _VERTEX["rindex"],
    21: _VERTEX["lthumb"], 22: _VERTEX["rthumb"],
    29: _VERTEX["LHeel"], 30: _VERTEX["RHeel"], 31: _VERTEX["LBigToe"], 32: _VERTEX["RBigToe"],
}
#: landmark -> (SMPL hip joint, the other hip joint): pelvis points pushed out of the joint.
PELVIS_POINT_OF = {23: (1, 2), 24: (2, 1)}
HAND_LANDMARKS = (17, 18, 19, 20, 21, 22)
UNUSED_LANDMARKS = (1, 3, 4, 6, 9, 10)

#: Landmarks compared by position (3D world and 2D image).
POSITION_WEIGHT = np.array([0.0 if (i in UNUSED_LANDMARKS or i in HAND_LANDMARKS) else 1.0
                            for i in range(NUM_LANDMARKS)], np.float32)


def _direction_rows():
    """(D, 33) coefficient rows: a direction is ``row @ landmarks`` (to minus from)."""
    rows = []
    for wrist, pinky, index, thumb in ((15, 17, 19, 21), (16, 18, 20, 22)):
        r = np.zeros(NUM_LANDMARKS); r[[index, pinky]] = 0.5; r[wrist] = -1.0; rows.append(r)  # hand
        r = np.zeros(NUM_LANDMARKS); r[index] = 1.0; r[pinky] = -1.0; rows.append(r)           # palm width
        r = np.zeros(NUM_LANDMARKS); r[thumb] = 1.0; r[wrist] = -1.0; rows.append(r)           # thumb
    return np.stack(rows).astype(np.float32)


#: (6, 33) the hand directions: per side wrist->hand, pinky->index, wrist->thumb.
HAND_DIRECTIONS = _direction_rows()

#: Left/right landmark pairs (the person's left first).
LEFT_RIGHT_PAIRS = ((1, 4), (2, 5), (3, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16), (17, 18),
                    (19, 20), (21, 22), (23, 24), (25, 26), (27, 28), (29, 30), (31, 32))
#: Pairs swapped together when BlazePose mixes up the sides (each group decided on its own).
SWAP_GROUPS = {
    "face": ((1, 4), (2, 5), (3, 6), (7, 8), (9, 10)),
    "arms": ((11, 12), (13, 14), (15, 16), (17, 18), (19, 20), (21, 22)),
    "legs": ((23, 24), (25, 26), (27, 28), (29, 30), (31, 32)),
}
SWAP_GROUP_NAMES = tuple(SWAP_GROUPS)

#: Bones measured for the shape (pairs of landmark sets; a set's mean is one end).
SHAPE_BONES = (
    ((11,), (12,)),                       # shoulder width
    ((11,), (13,)), ((12,), (14,)),       # upper arms
    ((13,), (15,)), ((14,), (16,)),       # forearms
    ((23,), (25,)), ((24,), (26,)),       # thighs
    ((25,), (27,)), ((26,), (28,)),       # shins
    ((11, 12), (23, 24)),                 # torso: mid-shoulder to mid-hip
    # feet left out: BlazePose's heel -> foot-index is ~0.13 m on dancer.mp4 where our heel and
    # toe vertices are ~0.24 m apart (other points on the foot); fitting them bent every shape
)


class LandmarkBasis(NamedTuple):
    """The 33 landmarks and the 24 joints as linear functions of the shape (float64).

    joints0 (24, 3), joint_dirs (24, 3, B): rest joints = joints0 + joint_dirs @ betas;
    points0 (33, 3), point_dirs (33, 3, B): rest landmark points, the same way;
    weights (33, 24): skinning weights of each landmark point;
    parents (24,) int64."""

    joints0: np.ndarray
    joint_dirs: np.ndarray
    points0: np.ndarray
    point_dirs: np.ndarray
    weights: np.ndarray
    parents: np.ndarray


def landmark_basis(body) -> LandmarkBasis:
    """The correspondence for one body model (``BodyModelData``, SMPL topology).

    Unused landmarks get the head joint's position and weight (they carry no loss)."""
    if body.num_vertices != NUM_VERTICES:
        raise ValueError(f"landmark fit needs the SMPL topology ({NUM_VERTICES} vertices), "
                         f"got {body.num_vertices} from {body.source or 'the body model'}")
    V, B = body.num_vertices, body.num_betas
    v0 = np.asarray(body.v_template, np.float64)
    vdirs = np.asarray(body.shapedirs, np.float64)
    j0 = regress_joints(body.J_regressor, v0)
    jdirs = regress_joints(body.J_regressor, vdirs.reshape(V, 3 * B)).reshape(-1, 3, B)
    J = j0.shape[0]
    p0 = np.zeros((NUM_LANDMARKS, 3))
    pdirs = np.zeros((NUM_LANDMARKS, 3, B))
    w = np.zeros((NUM_LANDMARKS, J))
    head = 15
    for i in range(NUM_LANDMARKS):
        if i in JOINT_OF:
            j = JOINT_OF[i]
            p0[i], pdirs[i], w[i, j] = j0[j], jdirs[j], 1.0
        elif i in VERTEX_OF:
            v = VERTEX_OF[i]
            p0[i], pdirs[i] = v0[v], vdirs[v]
            w[i] = np.asarray(body.weights, np.float64)[v]
        elif i in PELVIS_POINT_OF:
            a, b = PELVIS_POINT_OF[i]
            # mid + s (a - mid), linear in the rest joints and so in the shape
            ca, cb = 0.5 * (1 + HIP_WIDTH_SCALE), 0.5 * (1 - HIP_WIDTH_SCALE)
            p0[i] = ca * j0[a] + cb * j0[b]
            pdirs[i] = ca * jdirs[a] + cb * jdirs[b]
            w[i, 0] = 1.0
        else:
            p0[i], pdirs[i], w[i, head] = j0[head], jdirs[head], 1.0
    w /= w.sum(axis=1, keepdims=True)
    return LandmarkBasis(j0, jdirs, p0, pdirs, w, np.asarray(body.parents, np.int64))


def swap_permutation(groups=SWAP_GROUP_NAMES) -> np.ndarray:
    """(33,) landmark permutation exchanging the left/right pairs of the named groups."""
    perm = np.arange(NUM_LANDMARKS)
    for g in groups:
        for a, b in SWAP_GROUPS[g]:
            perm[a], perm[b] = b, a
    return perm


def group_landmarks(group: str) -> np.ndarray:
    """The landmark ids of one swap group."""
    return np.array([i for pair in SWAP_GROUPS[group] for i in pair], np.int64)
