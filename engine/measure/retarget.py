"""Procedural test skeletons for the retarget checks (numpy only; nothing licensed).

``humanoid(kind, ...)`` lays out a standing humanoid with one preset's bone names and
hierarchy (``engine.common.retarget.PRESETS``) from a few proportions: height, arm angle
(0 = T-pose, 45 = A-pose), number of spine and neck bones, extra unmapped bones the real rigs
have (end bones, fingers, heels, twist bones), rolls, and the object transform the rig has
after Blender imports it (Mixamo's FBX: Y up in centimetres under an object rotated 90 degrees
about X and scaled 0.01). The engine tests build skeletons from it in numpy; the Blender tests
and ``tests/blender/bench_retarget.py`` build real armatures from the same layouts.

    from engine.measure.retarget import humanoid, TEST_RIGS
    rig = humanoid("UE5", height=1.8, arm_angle=45, facing_deg=90)
    rig.bones  # [(name, parent name or None, head (3,), tail (3,), roll), ...] armature space
    rig.world  # (4, 4) object matrix
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("SMPL", "RIGIFY_METARIG", "RIGIFY", "MIXAMO", "UE5", "UNITY")


@dataclass
class Layout:
    kind: str
    bones: list          # [(name, parent or None, head (3,), tail (3,), roll radians)] armature space
    world: np.ndarray    # (4, 4) the armature object's matrix_world
    height: float        # metres (world)


def _rigify_sides(parts: dict) -> dict:
    """{'hipL': 'thigh.L', 'hipR': 'thigh.R', ...}: Rigify's .L / .R names of body parts."""
    return {part + side: f"{name}.{side}" for side in "LR" for part, name in parts.items()}


def _names(kind: str, spine_count: int, neck_count: int) -> dict:
    """Segment -> bone name(s) for a kind. Segments: pelvis, spine (list), neck (list), head,
    and per side s in 'LR': hip, knee, ankle, foot, collar, shoulder, elbow, wrist."""
    if kind == "SMPL":
        n = {"pelvis": "pelvis", "spine": ["spine1", "spine2", "spine3"][:spine_count], "neck": ["neck"],
             "head": "head"}
        for s, side in (("L", "left"), ("R", "right")):
            for part in ("hip", "knee", "ankle", "foot", "collar", "shoulder", "elbow", "wrist"):
                n[part + s] = f"{side}_{part}"
            n["hand" + s] = f"{side}_hand"
        return n
    if kind == "RIGIFY_METARIG":
        spine = [f"spine.{i:03d}" for i in range(1, spine_count + 1)]
        n = {"pelvis": "spine", "spine": spine,
             "neck": [f"spine.{i:03d}" for i in range(spine_count + 1, spine_count + 1 + neck_count)],
             "head": f"spine.{spine_count + 1 + neck_count:03d}"}
        return {**n, **_rigify_sides({"hip": "thigh", "knee": "shin", "ankle": "foot", "foot": "toe",
                                      "collar": "shoulder", "shoulder": "upper_arm", "elbow": "forearm",
                                      "wrist": "hand"})}
    if kind == "RIGIFY":
        n = {"pelvis": "spine_fk", "spine": [f"spine_fk.{i:03d}" for i in range(1, spine_count + 1)],
             "neck": ["neck"], "head": "head"}
        return {**n, **_rigify_sides({"hip": "thigh_fk", "knee": "shin_fk", "ankle": "foot_fk", "foot": "toe_fk",
                                      "collar": "shoulder", "shoulder": "upper_arm_fk", "elbow": "forearm_fk",
                                      "wrist": "hand_fk"})}
    if kind == "MIXAMO":
        p = "mixamorig:"
        n = {"pelvis": p + "Hips", "spine": [p + "Spine"] + [f"{p}Spine{i}" for i in range(1, spine_count)],
             "neck": [p + "Neck"], "head": p + "Head"}
        parts = {"hip": "UpLeg", "knee": "Leg", "ankle": "Foot", "foot": "ToeBase", "collar": "Shoulder",
                 "shoulder": "Arm", "elbow": "ForeArm", "wrist": "Hand"}
        for s, side in (("L", "Left"), ("R", "Right")):
            for part, name in parts.items():
                n[part + s] = f"{p}{side}{name}"
        return n
    if kind == "UE5":
        n = {"pelvis": "pelvis", "spine": [f"spine_{i:02d}" for i in range(1, spine_count + 1)],
             "neck": [f"neck_{i:02d}" for i in range(1, neck_count + 1)], "head": "head"}
        parts = {"hip": "thigh", "knee": "calf", "ankle": "foot", "foot": "ball", "collar": "clavicle",
                 "shoulder": "upperarm", "elbow": "lowerarm", "wrist": "hand"}
        for s in "LR":
            for part, name in parts.items():
                n[part + s] = f"{name}_{s.lower()}"
        return n
    if kind == "UNITY":
        spine = ["Spine", "Chest", "UpperChest"][:spine_count]
        n = {"pelvis": "Hips", "spine": spine, "neck": ["Neck"], "head": "Head"}
        parts = {"hip": "UpperLeg", "knee": "LowerLeg", "ankle": "Foot", "foot": "Toes", "collar": "Shoulder",
                 "shoulder": "UpperArm", "elbow": "LowerArm", "wrist": "Hand"}
        for s, side in (("L", "Left"), ("R", "Right")):
            for part, name in parts.items():
                n[part + s] = f"{side}{name}"
        return n
    raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")


DEFAULT_SPINE = {"SMPL": 3, "RIGIFY_METARIG": 3, "RIGIFY": 3, "MIXAMO": 3, "UE5": 5, "UNITY": 3}
DEFAULT_NECK = {"SMPL": 1, "RIGIFY_METARIG": 2, "RIGIFY": 1, "MIXAMO": 1, "UE5": 2, "UNITY": 1}


def humanoid(kind: str, height: float = 1.7, arm_angle: float = 0.0, spine_count: int = None,
             neck_count: int = None, rolls: bool = False, seed: int = 0, facing_deg: float = 0.0,
             fbx_units: bool = False, extras: bool = True) -> Layout:
    """A standing humanoid of ``kind`` (see module docstring).

    height: metres; arm_angle: degrees below horizontal (0 T-pose, 45 A-pose; elbows slightly
    bent back when > 0, as A-pose rigs are); rolls: random bone rolls (else 0); facing_deg:
    the object turned about world Z (0: facing -Y, 90: facing +X); fbx_units: armature in
    centimetres with Y up under an object rotated 90 degrees about X and scaled 0.01 (how
    Blender imports a Mixamo FBX); extras: the unmapped bones real rigs have."""
    spine_count = DEFAULT_SPINE[kind] if spine_count is None else spine_count
    neck_count = DEFAULT_NECK[kind] if neck_count is None else neck_count
    n = _names(kind, spine_count, neck_count)
    rng = np.random.default_rng(seed)
    h = float(height)
    P = {}
    P["pelvis"] = np.array([0.0, 0.005, 0.53]) * h
    P["neck_base"] = np.array([0.0, 0.01, 0.825]) * h
    P["head"] = np.array([0.0, -0.005, 0.875]) * h
    P["head_top"] = np.array([0.0, -0.005, 0.995]) * h
    a = np.radians(arm_angle)
    for s, x in (("L", 1.0), ("R", -1.0)):
        P["hip" + s] = np.array([x * 0.055, 0.0, 0.505]) * h
        P["knee" + s] = np.array([x * 0.057, -0.006, 0.285]) * h
        P["ankle" + s] = np.array([x * 0.058, 0.012, 0.045]) * h
        P["ball" + s] = np.array([x * 0.06, -0.07, 0.012]) * h
        P["toe" + s] = np.array([x * 0.06, -0.11, 0.012]) * h
        P["collar" + s] = np.array([x * 0.012, -0.012, 0.80]) * h
        P["shoulder" + s] = np.array([x * 0.105, 0.004, 0.805]) * h
        d = np.array([x * np.cos(a), 0.0, -np.sin(a)])
        bend = np.array([0.0, 0.012 if arm_angle > 0 else 0.0, 0.0]) * h
        P["elbow" + s] = P["shoulder" + s] + 0.17 * h * d + bend
        P["wrist" + s] = P["elbow" + s] + 0.15 * h * d - bend * 0.5
        P["hand" + s] = P["wrist" + s] + 0.09 * h * d
    # spine heads between the pelvis and the neck, slightly curved
    k = spine_count
    spine_heads = [P["pelvis"] + (P["neck_base"] - P["pelvis"]) * (0.15 + 0.8 * i / k) +
                   np.array([0.0, 0.012 * np.sin(np.pi * i / k), 0.0]) * h for i in range(k)]
    neck_heads = [P["neck_base"] + (P["head"] - P["neck_base"]) * i / neck_count for i in range(neck_count)]

    bones = []

    def add(name, parent, head, tail):
        bones.append([name, parent, np.asarray(head, float), np.asarray(tail, float), 0.0])

    top = None
    if kind == "RIGIFY":
        add("root", None, [0, 0, 0], [0, 0.25 * h, 0])
        torso_head = P["pelvis"] + np.array([0.0, 0.02, 0.03]) * h
        add("torso", "root", torso_head, torso_head + np.array([0, 0.2 * h, 0]))
        pivot = spine_heads[1]
        add("hips", "torso", pivot, pivot + np.array([0, 0.08 * h, 0]))
        add("chest", "torso", pivot, pivot + np.array([0, 0.1 * h, 0]))
        # Rigify's lower FK spine hangs from the pivot: spine_fk.001 then spine_fk (the hips)
        add(n["spine"][0], "torso", pivot, pivot + (pivot - spine_heads[0]))
        add(n["pelvis"], n["spine"][0], spine_heads[0], spine_heads[0] + (spine_heads[0] - P["pelvis"]))
        parent = "torso"
        for i in range(1, k):
            tail = spine_heads[i + 1] if i + 1 < k else P["neck_base"]
            add(n["spine"][i], parent, spine_heads[i], tail)
            parent = n["spine"][i]
        top = parent
        leg_parent = n["pelvis"]
    else:
        if kind == "UE5" and extras:
            add("root", None, [0, 0, 0], [0, 0.15 * h, 0])
        add(n["pelvis"], "root" if kind == "UE5" and extras else None, P["pelvis"], spine_heads[0])
        parent = n["pelvis"]
        for i in range(k):
            tail = spine_heads[i + 1] if i + 1 < k else P["neck_base"]
            add(n["spine"][i], parent, spine_heads[i], tail)
            parent = n["spine"][i]
        top = parent
        leg_parent = n["pelvis"]
    parent = top
    for i in range(neck_count):
        tail = neck_heads[i + 1] if i + 1 < neck_count else P["head"]
        add(n["neck"][i], parent, neck_heads[i], tail)
        parent = n["neck"][i]
    add(n["head"], parent, P["head"], P["head_top"])
    for s in "LR":
        add(n["hip" + s], leg_parent, P["hip" + s], P["knee" + s])
        add(n["knee" + s], n["hip" + s], P["knee" + s], P["ankle" + s])
        add(n["ankle" + s], n["knee" + s], P["ankle" + s], P["ball" + s])
        add(n["foot" + s], n["ankle" + s], P["ball" + s], P["toe" + s])
        add(n["collar" + s], top, P["collar" + s], P["shoulder" + s])
        add(n["shoulder" + s], n["collar" + s], P["shoulder" + s], P["elbow" + s])
        add(n["elbow" + s], n["shoulder" + s], P["elbow" + s], P["wrist" + s])
        add(n["wrist" + s], n["elbow" + s], P["wrist" + s], P["hand" + s])
        if kind == "SMPL":
            add(n["hand" + s], n["wrist" + s], P["hand" + s], P["hand" + s] + (P["hand" + s] - P["wrist" + s]) * 0.5)
    if extras:
        _extras(kind, n, P, bones, add, h)
    if rolls:
        for b in bones:
            b[4] = float(rng.uniform(-np.pi, np.pi))
    W = np.eye(4)
    if fbx_units:
        # armature space: centimetres, Y up, facing +Z; the object: 90 degrees about X, scale 0.01
        to_arm = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]) * 100.0
        for b in bones:
            b[2], b[3] = to_arm @ b[2], to_arm @ b[3]
        W[:3, :3] = np.linalg.inv(to_arm)
    c, s_ = np.cos(np.radians(facing_deg)), np.sin(np.radians(facing_deg))
    Rz = np.array([[c, -s_, 0, 0], [s_, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    W = Rz @ W
    return Layout(kind=kind, bones=[tuple(b) for b in bones], world=W, height=h)


def _extras(kind, n, P, bones, add, h):
    """Unmapped bones real rigs of this kind have."""
    if kind == "MIXAMO":
        add("mixamorig:HeadTop_End", n["head"], P["head_top"], P["head_top"] + np.array([0, 0, 0.03 * h]))
        for s, side in (("L", "Left"), ("R", "Right")):
            add(f"mixamorig:{side}Toe_End", n["foot" + s], P["toe" + s], P["toe" + s] + np.array([0, -0.03 * h, 0]))
            add(f"mixamorig:{side}HandIndex1", n["wrist" + s], P["hand" + s], P["hand" + s] * 1.02)
    elif kind == "UE5":
        for s in "LR":
            sl = s.lower()
            mid = (P["shoulder" + s] + P["elbow" + s]) / 2
            add(f"upperarm_twist_01_{sl}", n["shoulder" + s], mid, P["elbow" + s])
            add(f"index_01_{sl}", n["wrist" + s], P["hand" + s], P["hand" + s] * 1.02)
    elif kind == "RIGIFY_METARIG":
        for s in "LR":
            add(f"heel.02.{s}", n["ankle" + s], P["ankle" + s] * [1.0, 1.0, 0.0] + [0, 0.03 * h, 0],
                P["ankle" + s] * [1.4, 1.0, 0.0] + [0, 0.03 * h, 0])
            add(f"pelvis.{s}", n["pelvis"], P["pelvis"], P["hip" + s] + [0, -0.05 * h, 0.08 * h])
            add(f"breast.{s}", n["spine"][-1], P["collar" + s] + [0.05 * h, 0.05 * h, -0.1 * h],
                P["collar" + s] + [0.05 * h, -0.03 * h, -0.1 * h])
    elif kind == "UNITY":
        add("LeftEye", n["head"], P["head"] + [0.03 * h, -0.05 * h, 0.04 * h], P["head"] + [0.03 * h, -0.08 * h, 0.04 * h])


# Each preset's test rig in tests/blender/test_retarget.py and the bench: proportions, rest
# pose and transform differ from the PyMAF source (a T-pose about 1.7 m tall facing -Y).
TEST_RIGS = {
    "MIXAMO": dict(kind="MIXAMO", height=1.8, arm_angle=0.0, fbx_units=True),
    "UNITY": dict(kind="UNITY", height=1.55, arm_angle=0.0, spine_count=2),                  # no UpperChest
    "UE5": dict(kind="UE5", height=1.8, arm_angle=45.0, rolls=True, seed=5, facing_deg=90.0),  # 5 spine bones
    "RIGIFY_METARIG": dict(kind="RIGIFY_METARIG", height=1.9, arm_angle=30.0, rolls=True, seed=3),
    "RIGIFY": dict(kind="RIGIFY", height=1.75, arm_angle=30.0, rolls=True, seed=4),
}


def format_table(rows) -> str:
    """rows [(preset, rig description, n bones, frames, mean deg, p95 deg, max deg, hips err mm)] -> Markdown."""
    out = ["| preset | test rig | bones compared | frames | mean error (deg) | 95th pct (deg) | max error (deg) "
           "| hip centre vs scaled source (mm) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2g} | {r[5]:.2g} | {r[6]:.2g} | {r[7]:.2g} |")
    return "\n".join(out)


def bone_rest_matrix(head, tail, roll: float = 0.0) -> np.ndarray:
    """(4, 4) a bone's armature-space rest: Y along head -> tail, turned by ``roll`` about it,
    at ``head``. (Blender's own roll origin differs; the retarget never depends on it.)"""
    from engine.common.retarget import rotation_between_vectors

    head = np.asarray(head, np.float64)
    R = rotation_between_vectors(np.array([0.0, 1.0, 0.0]), np.asarray(tail, np.float64) - head)
    c, s = np.cos(roll), np.sin(roll)
    M = np.eye(4)
    M[:3, :3] = R @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    M[:3, 3] = head
    return M


def skeleton_from_layout(layout: Layout):
    """Layout -> ``engine.common.retarget.Skeleton`` (numpy rest matrices, ``bone_rest_matrix``)."""
    from engine.common.retarget import Skeleton

    names = [b[0] for b in layout.bones]
    parents = [names.index(b[1]) if b[1] is not None else -1 for b in layout.bones]
    rest = np.array([bone_rest_matrix(b[2], b[3], b[4]) for b in layout.bones])
    return Skeleton(names, parents, rest, layout.world)
