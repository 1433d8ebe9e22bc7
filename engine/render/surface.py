"""Body-surface parametrisation for PyMAF's auxiliary IUV task (numpy + scipy.io only).

PyMAF supervises dense correspondences in DensePose's "IUV" form: every body pixel
gets a part index I (DensePose's 24 fine parts, 0 = background) and per-part surface
coordinates (U, V) in [0, 1]. The official head predicts 25 part channels, 25 U, 25 V
and 15 coarse-part channels.

Here the labels live on the body model's vertices (``BodyModelData.vertex_parts``
(V,) uint8 1..24 and ``vertex_uv`` (V, 2) float32) and are rasterised by
``engine.render.renderer``. Two sources:

* ``mannequin_surface(body)``: our own, deterministic definition from the dominant
  skinning bone of each vertex (works for any SMPL-format body in SMPL's rest frame:
  y up, the body faces +z, the body's LEFT is +x, arms straight out along +-x).
* ``densepose_surface(path, body)``: DensePose's ``UV_Processed.mat`` (for users with
  the real SMPL and that file), reduced to one part and UV per SMPL vertex.

Chart layout of ``mannequin_surface`` (t = position along the chart axis, V = t
normalised over the part's vertices; angles measured around the axis):

* split charts (torso, thighs, shins: front/back by the +z side of the axis; upper and
  lower arms: inside/outside, inside = the -y half in the T-pose, the side that faces
  the torso when the arm hangs down; head: left/right by the +x side): each half is a
  half cylinder, U = 0.5 + atan2(q, |p|) / pi where p is the offset along the split
  direction and q along the third axis; continuous inside each half.
* full charts (hands, feet): a whole cylinder, U = (atan2(q, p) + pi) / (2 pi), with
  the seam at -p (hands: the little-finger edge; feet: the sole).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Union

import numpy as np

from engine.body.model_data import BodyModelData
from engine.common.smpl_topology import SMPL_JOINT_NAMES

__all__ = [
    "NUM_PARTS", "PART_NAMES", "COARSE_PART_NAMES", "COARSE_OF_PART", "SIX_PART_NAMES",
    "SIX_PARTS_OF_PART", "mannequin_surface", "with_surface", "densepose_surface",
    "part_maps",
]

NUM_PARTS = 24

#: DensePose's fine parts; index = part id (0 = background).
PART_NAMES = (
    "background",
    "torso_back", "torso_front", "right_hand", "left_hand", "left_foot", "right_foot",
    "right_upper_leg_back", "left_upper_leg_back", "right_upper_leg_front", "left_upper_leg_front",
    "right_lower_leg_back", "left_lower_leg_back", "right_lower_leg_front", "left_lower_leg_front",
    "left_upper_arm_inside", "right_upper_arm_inside", "left_upper_arm_outside", "right_upper_arm_outside",
    "left_lower_arm_inside", "right_lower_arm_inside", "left_lower_arm_outside", "right_lower_arm_outside",
    "right_head", "left_head",
)

#: DensePose's 14 coarse parts + background (the 15 coarse channels of PyMAF's IUV head).
COARSE_PART_NAMES = (
    "background", "torso", "right_hand", "left_hand", "left_foot", "right_foot",
    "right_upper_leg", "left_upper_leg", "right_lower_leg", "left_lower_leg",
    "left_upper_arm", "right_upper_arm", "left_lower_arm", "right_lower_arm", "head",
)
#: (25,) uint8: fine part id -> coarse part id.
COARSE_OF_PART = np.array(
    [0, 1, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9, 10, 11, 10, 11, 12, 13, 12, 13, 14, 14],
    dtype=np.uint8)

#: The 6-part segmentation used in evaluation (hands belong to arms, feet to legs).
SIX_PART_NAMES = ("background", "head", "torso", "left_arm", "right_arm", "left_leg", "right_leg")
#: (25,) uint8: fine part id -> six-part id.
SIX_PARTS_OF_PART = np.array(
    [0, 2, 2, 4, 3, 5, 6, 6, 5, 6, 5, 6, 5, 6, 5, 3, 4, 3, 4, 3, 4, 3, 4, 1, 1],
    dtype=np.uint8)

assert len(PART_NAMES) == len(COARSE_OF_PART) == len(SIX_PARTS_OF_PART) == NUM_PARTS + 1


def part_maps(part_image: np.ndarray) -> tuple:
    """(..., ) fine part ids -> ((...) coarse ids, (...) six-part ids), both uint8."""
    part_image = np.asarray(part_image)
    return COARSE_OF_PART[part_image], SIX_PARTS_OF_PART[part_image]


# ----------------------------------------------------------------------------------
# mannequin_surface: charts from the dominant skinning bone
# ----------------------------------------------------------------------------------
_J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
_X, _Y, _Z = np.eye(3)


@dataclasses.dataclass(frozen=True)
class _Chart:
    joints: tuple        # skinning bones (joint names) whose vertices the chart covers
    axis: tuple          # (start joint, end joint) of the chart axis
    split: tuple         # split direction in the rest frame (p axis)
    parts: tuple         # (part on the +p side, part on the -p side) or (part,) for a full chart


def _charts() -> tuple:
    charts = [
        _Chart(("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar"),
               ("pelvis", "neck"), tuple(_Z), (2, 1)),                      # torso front / back
        _Chart(("neck", "head"), ("neck", "head"), tuple(_X), (24, 23)),    # head left / right
    ]
    # (side, sign of x, upper arm (inside, outside), lower arm, hand, upper leg (front, back),
    #  lower leg, foot)
    for side, ua, la, hand, ul, ll, foot in (
            ("left", (15, 17), (19, 21), 4, (10, 8), (14, 12), 5),
            ("right", (16, 18), (20, 22), 3, (9, 7), (13, 11), 6)):
        s = side + "_"
        charts += [
            _Chart((s + "shoulder",), (s + "shoulder", s + "elbow"), tuple(-_Y), ua),
            _Chart((s + "elbow",), (s + "elbow", s + "wrist"), tuple(-_Y), la),
            # Seam on the little-finger edge (-z): the thumb side is +z.
            _Chart((s + "wrist", s + "hand"), (s + "wrist", s + "hand"), tuple(_Z), (hand,)),
            _Chart((s + "hip",), (s + "hip", s + "knee"), tuple(_Z), ul),
            _Chart((s + "knee",), (s + "knee", s + "ankle"), tuple(_Z), ll),
            # Seam along the sole (-y).
            _Chart((s + "ankle", s + "foot"), (s + "ankle", s + "foot"), tuple(_Y), (foot,)),
        ]
    return tuple(charts)


CHARTS = _charts()
assert sorted(_J[j] for c in CHARTS for j in c.joints) == list(range(24))
assert sorted(p for c in CHARTS for p in c.parts) == list(range(1, 25))


def _axis_frame(start: np.ndarray, end: np.ndarray, split: np.ndarray):
    """Orthonormal chart frame: a along the axis, e1 = split made orthogonal to a, e2 = a x e1."""
    a = end - start
    a = a / np.linalg.norm(a)
    e1 = split - np.dot(split, a) * a
    e1 = e1 / np.linalg.norm(e1)
    return a, e1, np.cross(a, e1)


def _spread(x: np.ndarray) -> float:
    """RMS about the axis (scale of the cross-section along one direction)."""
    return max(float(np.sqrt(np.mean(x * x))), 1e-9)


def _normalise(t: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (0.5 for a constant)."""
    lo, hi = t.min(), t.max()
    return np.full_like(t, 0.5) if hi - lo < 1e-12 else (t - lo) / (hi - lo)


def mannequin_surface(body: BodyModelData) -> tuple:
    """Parts and UV per vertex from the dominant skinning bone of each rest vertex.

    body: any SMPL-format body in SMPL's rest frame (v_template (V, 3), weights (V, 24),
    J_regressor (24, V)). Returns (vertex_parts (V,) uint8 in 1..24, vertex_uv (V, 2)
    float32 in [0, 1]). Deterministic (no randomness, no data files).
    """
    v = np.asarray(body.v_template, np.float64)
    joints = np.asarray(body.J_regressor, np.float64) @ v                  # (24, 3) rest joints
    bone = np.asarray(body.weights).argmax(axis=1)                        # (V,) dominant bone
    parts = np.zeros(len(v), np.uint8)
    uv = np.zeros((len(v), 2), np.float64)
    for chart in CHARTS:
        sel = np.isin(bone, [_J[j] for j in chart.joints])
        if not sel.any():
            continue
        start, end = joints[_J[chart.axis[0]]], joints[_J[chart.axis[1]]]
        a, e1, e2 = _axis_frame(start, end, np.asarray(chart.split, np.float64))
        r = v[sel] - start
        t, p, q = r @ a, r @ e1, r @ e2                                   # axis, split, third
        # Angles of the cross-section scaled to unit spread: flat parts (hands, the torso)
        # get U spread evenly around them instead of bunched at their narrow edges.
        p, q = p / _spread(p), q / _spread(q)
        idx = np.flatnonzero(sel)
        if len(chart.parts) == 1:
            # Whole cylinder; the seam is at -e1.
            parts[idx] = chart.parts[0]
            uv[idx, 0] = (np.arctan2(q, p) + np.pi) / (2 * np.pi)
            uv[idx, 1] = _normalise(t)
            continue
        positive = p >= 0
        for part, half in zip(chart.parts, (positive, ~positive)):
            hidx = idx[half]
            if len(hidx) == 0:
                continue
            parts[hidx] = part
            # Half cylinder: atan2(q, |p|) in [-pi/2, pi/2], continuous inside the half.
            uv[hidx, 0] = 0.5 + np.arctan2(q[half], np.abs(p[half])) / np.pi
            uv[hidx, 1] = _normalise(t[half])
    return parts, np.clip(uv, 0.0, 1.0).astype(np.float32)


def with_surface(body: BodyModelData, surface: "tuple | None" = None) -> BodyModelData:
    """A copy of ``body`` with ``vertex_parts`` / ``vertex_uv`` set.

    surface: (vertex_parts, vertex_uv) to attach, e.g. from ``densepose_surface``;
    default ``mannequin_surface(body)``.
    """
    parts, uv = mannequin_surface(body) if surface is None else surface
    return dataclasses.replace(body, vertex_parts=np.asarray(parts, np.uint8),
                               vertex_uv=np.asarray(uv, np.float32), warnings=list(body.warnings))


# ----------------------------------------------------------------------------------
# densepose_surface: DensePose's UV_Processed.mat reduced to SMPL vertices
# ----------------------------------------------------------------------------------
def densepose_surface(uv_processed_mat_path: Union[str, os.PathLike], body: BodyModelData) -> tuple:
    """DensePose's ``UV_Processed.mat`` -> (vertex_parts (V,) uint8, vertex_uv (V, 2) float32).

    The file describes DensePose's re-topology of SMPL (7829 vertices, 13774 faces) in
    which SMPL vertices on part seams are split into one copy per part:
    ``All_FaceIndices`` (F,) part 1..24 per face, ``All_Faces`` (F, 3) 1-based DensePose
    vertex ids, ``All_U_norm`` / ``All_V_norm`` (D,) per DensePose vertex, and
    ``All_vertices`` (D,) 1-based SMPL vertex id per DensePose vertex. Read with
    ``scipy.io.loadmat`` (MATLAB arrays only, no pickles).

    Per SMPL vertex: the majority part over its DensePose copies (ties: the tied part
    whose first copy has the lowest DensePose id), and the UV of the first copy with
    that part. SMPL vertices without a
    copy (none in the real file) take the labels of the nearest labelled rest vertex.
    """
    from scipy.io import loadmat

    mat = loadmat(os.fspath(uv_processed_mat_path))
    try:
        face_part = np.asarray(mat["All_FaceIndices"]).ravel().astype(np.int64)
        faces = np.asarray(mat["All_Faces"]).astype(np.int64).reshape(-1, 3) - 1
        u = np.asarray(mat["All_U_norm"], np.float64).ravel()
        v = np.asarray(mat["All_V_norm"], np.float64).ravel()
        to_smpl = np.asarray(mat["All_vertices"]).ravel().astype(np.int64) - 1
    except KeyError as err:
        raise ValueError(f"{os.fspath(uv_processed_mat_path)}: not DensePose's UV_Processed.mat "
                         f"(missing {err})") from None
    n_dp, n_smpl = len(to_smpl), body.num_vertices
    if not (len(u) == len(v) == n_dp and len(face_part) == len(faces)):
        raise ValueError("UV_Processed.mat: inconsistent array sizes")
    if faces.min() < 0 or faces.max() >= n_dp or to_smpl.min() < 0 or to_smpl.max() >= n_smpl:
        raise ValueError(f"UV_Processed.mat: indices out of range for a {n_smpl}-vertex body")
    if face_part.min() < 1 or face_part.max() > NUM_PARTS:
        raise ValueError("UV_Processed.mat: face parts outside 1..24")

    # Part of each DensePose vertex: majority over its faces (all agree in the real file).
    dp_votes = np.zeros((n_dp, NUM_PARTS + 1), np.int64)
    np.add.at(dp_votes, (faces.ravel(), np.repeat(face_part, 3)), 1)
    dp_part = dp_votes.argmax(axis=1)                                       # 0 = in no face

    # Majority part per SMPL vertex; argmax takes the lowest part on a tie, so break
    # ties towards the first copy's part instead.
    votes = np.zeros((n_smpl, NUM_PARTS + 1), np.int64)
    used = dp_part > 0
    np.add.at(votes, (to_smpl[used], dp_part[used]), 1)
    best = votes.max(axis=1)
    order = np.arange(n_dp)[used]
    first_of = {}
    for d in order:                                    # first copy per (SMPL vertex, part)
        first_of.setdefault((to_smpl[d], dp_part[d]), d)
    parts = np.zeros(n_smpl, np.uint8)
    uv = np.zeros((n_smpl, 2), np.float32)
    chosen = {}
    for d in order:                                    # first copy (by id) whose part is a majority
        s = to_smpl[d]
        if s not in chosen and votes[s, dp_part[d]] == best[s]:
            chosen[s] = dp_part[d]
    for s, part in chosen.items():
        d = first_of[(s, part)]
        parts[s] = part
        uv[s] = (u[d], v[d])

    missing = np.flatnonzero(parts == 0)
    if len(missing):
        if len(missing) == n_smpl:
            raise ValueError("UV_Processed.mat labels no vertex of the body")
        from scipy.spatial import cKDTree

        labelled = np.flatnonzero(parts > 0)
        rest = np.asarray(body.v_template, np.float64)
        _, nearest = cKDTree(rest[labelled]).query(rest[missing])
        parts[missing] = parts[labelled[nearest]]
        uv[missing] = uv[labelled[nearest]]
    return parts, np.clip(uv, 0.0, 1.0).astype(np.float32)
