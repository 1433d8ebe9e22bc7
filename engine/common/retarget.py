"""Retargeting a PyMAF (SMPL) rig's motion onto other humanoid rigs: bone maps and maths.

numpy only (never torch, never bpy): ``pymaf_blender/blender/retarget.py`` reads the rigs
from Blender, calls what is here and writes the keys. docs/retargeting.md is the user's side.

Conventions. Rotation matrices act on column vectors; 4x4 matrices are Blender's (translation
in the last column). A *skeleton* is what Blender calls an armature's rest: per bone the
armature-space rest matrix ``bone.matrix_local`` (B, 4, 4), the parent index (-1 for roots)
and the object's ``matrix_world`` (4, 4). Pose-bone semantics are Blender's, for bones with
the default inherit settings::

    pose[b] = pose[parent] @ inv(rest[parent]) @ rest[b] @ basis[b]     (armature space)

``basis`` is ``pose_bone.matrix_basis`` (location, rotation, scale channels) and ``pose`` is
``pose_bone.matrix``. Functions are named by what goes in and out (``pose_from_basis``,
``basis_from_pose``, ``euler_from_rotmat``...).

The retarget (``plan_retarget`` + ``target_rotations`` + ``solve_basis``), per mapped bone:

1. The source bone's world rotation change from its rest, ``D_s = R_s(t) R_s_rest^T``, with a
   swing added so the direction from its head to the head of the next *mapped* joint down its
   chain is the source's own (exact when SMPL joints between them are unmapped).
2. The heading ``H``: the rotation about world Z from the source's rest facing to the
   target's (each from its hip joints): the target does the motion facing its own way.
3. The rest correction ``C``: the smallest rotation taking the source's rest bone direction
   (head -> next mapped joint, turned by ``H``) onto the target's, so a T-pose source drives
   an A-pose target (and any other rest difference) correctly. Bones without a mapped joint
   below them (hands, feet tips, head) use their nearest mapped ancestor's correction.
4. The target's world rotation ``R_t(t) = H D_s(t) H^T C^T R_t_rest`` (at the source's rest
   pose the target's bone points where the source's does, turned by ``H``).
5. World rotations -> pose-bone ``matrix_basis`` through the target's hierarchy (unmapped
   bones keep their rest basis, i.e. follow their parent).

Root motion (``root_targets``): the target's hip centre (mean of its hip joints) follows the
source's hip centre, scaled by the leg ratio ``target hip height / source hip height`` (hip
centre above the ankles at rest) and turned by ``H``. Horizontally it starts where the target
stands (the first frame's position is the target's rest position); vertically the source's
hip height above its ankles' floor (a low percentile of the lower ankle over the clip) is
scaled and put above the target's ankles. Modes: ``FULL`` (all on the hips), ``IN_PLACE``
(horizontal motion removed), ``ROOT_BONE`` (horizontal motion on the map's ``root`` bone,
e.g. UE5's ``root``; vertical on the hips).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from . import rotations
from .smpl_topology import SMPL_JOINT_NAMES, SMPL_PARENTS

SMPL_NAMES = tuple(SMPL_JOINT_NAMES)
# Which child's head a bone with several children points at (as pymaf_blender.blender.rig does).
PREFERRED_CHILD = {"pelvis": "spine1", "spine3": "neck"}
# Non-SMPL keys a bone map may have: ``torso`` a control above the hips that moves and turns
# the whole body (Rigify's torso): it takes the pelvis's rotation change and the root motion;
# ``root`` a bone at the feet that takes the horizontal motion in ROOT_BONE mode (UE5).
SPECIAL_KEYS = ("torso", "root")
MAP_KEYS = SMPL_NAMES + SPECIAL_KEYS
# A target must have these; the others (spine, neck, head, collars, toes, hands) are optional:
# missing ones are skipped and reported.
CORE = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist")
ROOT_MODES = ("FULL", "IN_PLACE", "ROOT_BONE")
FLOOR_PERCENTILE = 5.0          # source floor: this percentile of the lower ankle's height
MAP_FORMAT = "pymaf-retarget-map"
MAP_VERSION = 1
_EPS = 1e-9


def _sided(left: str, right: str, pairs) -> dict:
    """{'left_x': left.format(n), 'right_x': right.format(n)} for (smpl part, name) pairs."""
    out = {}
    for part, name in pairs:
        out["left_" + part] = [left.format(n) for n in ([name] if isinstance(name, str) else name)]
        out["right_" + part] = [right.format(n) for n in ([name] if isinstance(name, str) else name)]
    return out


def _limbs(parts: dict) -> tuple:
    return tuple((k, parts[k]) for k in ("hip", "knee", "ankle", "foot", "collar", "shoulder", "elbow", "wrist")
                 if k in parts)


# Bone maps: SMPL name (or a SPECIAL_KEYS key) -> target bone name, or a list of alternatives
# (the first the target has is used). SMPL's left = the character's left = Blender's ".L".
PRESETS = {
    # Rigify's human metarig (Add > Armature > Human): spine = hips, spine.004/.005 = neck,
    # spine.006 = head; spine.005 follows spine.004.
    "RIGIFY_METARIG": {
        "pelvis": "spine", "spine1": "spine.001", "spine2": "spine.002", "spine3": "spine.003",
        "neck": "spine.004", "head": "spine.006",
        **_sided("{}.L", "{}.R", _limbs({"hip": "thigh", "knee": "shin", "ankle": "foot", "foot": "toe",
                                         "collar": "shoulder", "shoulder": "upper_arm", "elbow": "forearm",
                                         "wrist": "hand"})),
    },
    # A rig Rigify generated from it: the FK controls (limbs' IK/FK switches on FK); torso
    # carries the body's rotation and the root motion, the FK spine the rest of the torso.
    "RIGIFY": {
        "torso": "torso",
        "pelvis": "spine_fk", "spine1": "spine_fk.001", "spine2": "spine_fk.002", "spine3": "spine_fk.003",
        "neck": "neck", "head": "head",
        **_sided("{}.L", "{}.R", _limbs({"hip": "thigh_fk", "knee": "shin_fk", "ankle": "foot_fk",
                                         "foot": ["toe_fk", "toe"], "collar": "shoulder",
                                         "shoulder": "upper_arm_fk", "elbow": "forearm_fk", "wrist": "hand_fk"})),
    },
    # Mixamo (FBX from mixamo.com): "mixamorig:" names (some files drop the prefix or number it).
    "MIXAMO": {
        k: [f"{p}{v}" for p in ("mixamorig:", "mixamorig1:", "mixamorig_", "")]
        for k, v in {
            "pelvis": "Hips", "spine1": "Spine", "spine2": "Spine1", "spine3": "Spine2", "neck": "Neck",
            "head": "Head", "left_hip": "LeftUpLeg", "right_hip": "RightUpLeg", "left_knee": "LeftLeg",
            "right_knee": "RightLeg", "left_ankle": "LeftFoot", "right_ankle": "RightFoot",
            "left_foot": "LeftToeBase", "right_foot": "RightToeBase", "left_collar": "LeftShoulder",
            "right_collar": "RightShoulder", "left_shoulder": "LeftArm", "right_shoulder": "RightArm",
            "left_elbow": "LeftForeArm", "right_elbow": "RightForeArm", "left_wrist": "LeftHand",
            "right_wrist": "RightHand",
        }.items()
    },
    # Unreal Engine 5 Manny / Quinn: five spine bones (spine_02 / spine_04 follow their
    # parents), two neck bones (neck_02 follows neck_01), a root bone at the feet.
    "UE5": {
        "root": "root", "pelvis": "pelvis", "spine1": "spine_01", "spine2": "spine_03",
        "spine3": "spine_05", "neck": "neck_01", "head": "head",
        **_sided("{}_l", "{}_r", _limbs({"hip": "thigh", "knee": "calf", "ankle": "foot", "foot": "ball",
                                         "collar": "clavicle", "shoulder": "upperarm", "elbow": "lowerarm",
                                         "wrist": "hand"})),
    },
    # Unity Humanoid avatar bone names (UpperChest, Neck, Shoulders and Toes are optional there).
    "UNITY": {
        "pelvis": "Hips", "spine1": "Spine", "spine2": "Chest", "spine3": "UpperChest", "neck": "Neck",
        "head": "Head",
        **_sided("Left{}", "Right{}", _limbs({"hip": "UpperLeg", "knee": "LowerLeg", "ankle": "Foot",
                                             "foot": "Toes", "collar": "Shoulder", "shoulder": "UpperArm",
                                             "elbow": "LowerArm", "wrist": "Hand"})),
    },
}
# For single-candidate entries keep plain strings (what a saved map looks like).
PRESETS = {p: {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in m.items()}
           for p, m in PRESETS.items()}

PRESET_LABELS = {
    "RIGIFY_METARIG": ("Rigify Metarig", "Rigify's human metarig (spine, thigh.L, upper_arm.L...)"),
    "RIGIFY": ("Rigify Rig", "A generated Rigify rig's FK controls (torso, thigh_fk.L...; limbs on FK)"),
    "MIXAMO": ("Mixamo", "Mixamo characters (mixamorig:Hips, LeftUpLeg...)"),
    "UE5": ("UE5 Manny/Quinn", "Unreal Engine 5 mannequin names (root, pelvis, spine_01, thigh_l...)"),
    "UNITY": ("Unity Humanoid", "Unity Humanoid avatar names (Hips, LeftUpperLeg...)"),
}


# --------------------------------------------------------------------------- bone maps

def check_bone_map(bone_map) -> dict:
    """A bone map (SMPL name or special key -> target name or list of names) -> a clean copy.

    ValueError naming the problem: unknown keys, empty names, a target name used twice."""
    if not isinstance(bone_map, dict) or not bone_map:
        raise ValueError("a bone map is a non-empty mapping of SMPL joint names to target bone names")
    out, seen = {}, {}
    unknown = [k for k in bone_map if k not in MAP_KEYS]
    if unknown:
        raise ValueError(f"bone map: unknown key(s) {', '.join(map(repr, unknown))} (keys are the SMPL joint "
                         f"names {', '.join(SMPL_NAMES)} and {', '.join(SPECIAL_KEYS)})")
    for k in MAP_KEYS:
        if k not in bone_map:
            continue
        v = bone_map[k]
        names = [v] if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else None
        if names is None or not all(isinstance(n, str) for n in names):
            raise ValueError(f"bone map: {k!r} must map to a bone name, got {v!r}")
        names = [n for n in names if n.strip()]
        if not names:
            continue  # an empty entry means "not mapped"
        for n in names:
            if n in seen and seen[n] != k:
                raise ValueError(f"bone map: target bone {n!r} is mapped from both {seen[n]!r} and {k!r}")
            seen[n] = k
        out[k] = names[0] if len(names) == 1 else names
    if not out:
        raise ValueError("the bone map maps nothing")
    return out


def resolve_bone_map(bone_map, target_names) -> tuple:
    """Bone map + the target's bone names -> (resolved {key: name}, skipped [key], missing core [key]).

    Each entry becomes the first of its names the target has. Core joints (``CORE``) without
    a bone go to ``missing``; other keys without one are skipped."""
    bone_map = check_bone_map(bone_map)
    have = set(target_names)
    resolved, skipped, missing = {}, [], []
    for k, v in bone_map.items():
        names = [v] if isinstance(v, str) else v
        found = next((n for n in names if n in have), None)
        if found is not None:
            resolved[k] = found
        elif k in CORE:
            missing.append(k)
        else:
            skipped.append(k)
    missing += [k for k in CORE if k not in bone_map]
    return resolved, skipped, missing


def describe_missing(bone_map, missing) -> str:
    """'pelvis (Hips), left_hip (LeftUpLeg)...' for an error message."""
    def names(k):
        v = bone_map.get(k)
        if v is None:
            return "not in the map"
        return " / ".join([v] if isinstance(v, str) else v)
    return ", ".join(f"{k} ({names(k)})" for k in missing)


def bone_map_to_json(bone_map, name: str = "") -> str:
    """Bone map -> JSON text (the user-map file format)."""
    return json.dumps({"format": MAP_FORMAT, "version": MAP_VERSION, "name": name,
                       "bones": check_bone_map(bone_map)}, indent=2)


def bone_map_from_json(text: str) -> dict:
    """JSON text (``bone_map_to_json``'s, or a plain {smpl name: bone name} object) -> bone map."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a bone map file (invalid JSON: {exc})") from None
    if isinstance(data, dict) and data.get("format") == MAP_FORMAT:
        if int(data.get("version", 0)) > MAP_VERSION:
            raise ValueError(f"bone map version {data.get('version')} is newer than this add-on reads ({MAP_VERSION})")
        data = data.get("bones")
    return check_bone_map(data)


_SIDE_PATTERNS = (
    (re.compile(r"(^|[^a-z])(left|lft)(?=[^a-z]|$|[A-Z])", re.I), "left"),
    (re.compile(r"(^|[^a-z])(right|rgt)(?=[^a-z]|$|[A-Z])", re.I), "right"),
    (re.compile(r"^left", re.I), "left"), (re.compile(r"^right", re.I), "right"),
    (re.compile(r"([._\- ]l|[._\- ]left)$", re.I), "left"), (re.compile(r"([._\- ]r|[._\- ]right)$", re.I), "right"),
    (re.compile(r"(^|[._\- :])l[._\- ]", re.I), "left"), (re.compile(r"(^|[._\- :])r[._\- ]", re.I), "right"),
)
# Body part -> words that name it (checked in this order: the first part a name matches wins).
_PART_WORDS = (
    ("wrist", ("hand", "wrist")),
    ("elbow", ("forearm", "lowerarm", "elbow", "lower_arm", "arm2")),
    ("shoulder", ("upperarm", "upper_arm", "arm1", "arm")),
    ("collar", ("clavicle", "collar", "shoulder")),
    ("foot", ("toebase", "toes", "toe", "ball")),
    ("ankle", ("foot", "ankle")),
    ("hip", ("upleg", "upperleg", "upper_leg", "thigh", "leg1", "hip")),
    ("knee", ("shin", "calf", "lowerleg", "lower_leg", "knee", "leg2", "leg")),
)
_SKIP_WORDS = ("end", "twist", "roll", "ik", "pole", "mch", "tweak", "target", "tgt", "nub", "finger", "thumb",
               "index", "middle", "ring", "pinky", "palm", "heel", "parent", "socket", "helper", "def-", "org-",
               "corrective", "bend", "upperarm_", "ctrl_ik")


def _words(name: str) -> str:
    n = name.split(":")[-1]
    n = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", n).lower()
    return n


def guess_bone_map(target_names, parents=None) -> dict:
    """A guess at the bone map for a target from its bone names (and hierarchy).

    target_names (B,), parents (B,) indices or None. A preset whose bones the target has (its
    core all present) wins; otherwise names are matched by words (left/right, thigh/upleg,
    calf/shin...), and the centre chain from the hips to the neck is split into spine1..3.
    -> {smpl name: target name} (only what was found)."""
    names = list(target_names)
    best, best_n = None, 0
    for key, m in PRESETS.items():
        resolved, _, missing = resolve_bone_map(m, names)
        if not missing and len(resolved) > best_n:
            best, best_n = resolved, len(resolved)
    if best is not None:
        return best

    def usable(n):
        w = _words(n)
        return "_fk" in w or not any(s in w for s in _SKIP_WORDS)   # Rigify's FK controls count

    out = {}
    for n in names:
        if not usable(n):
            continue
        w = _words(n)
        side = next((s for pat, s in _SIDE_PATTERNS if pat.search(n)), None)
        if side is None:
            continue
        core = re.sub(r"(left|right|_l$|_r$|\.l$|\.r$|^l_|^r_)", "", w)
        compact = re.sub(r"[^a-z0-9]", "", core)
        for part, words in _PART_WORDS:
            if any(x.replace("_", "") in compact for x in words):
                key = f"{side}_{part}"
                if key not in out or len(n) < len(out[key]):
                    out[key] = n
                break
    centre = [n for n in names if usable(n) and not any(pat.search(n) for pat, _ in _SIDE_PATTERNS)]
    for key, words in (("pelvis", ("hips", "pelvis", "hip")), ("neck", ("neck",)), ("head", ("head",))):
        cands = [n for n in centre if any(x in re.sub(r"[^a-z]", "", _words(n)) for x in words)
                 and "top" not in _words(n)]
        if cands:
            out[key] = min(cands, key=len) if key != "neck" else sorted(cands)[0]
    if parents is not None and "pelvis" in out and ("neck" in out or "head" in out):
        parents = np.asarray(parents).astype(int)
        top = names.index(out.get("neck") or out["head"])
        chain, b = [], parents[top]
        while b >= 0 and names[b] != out["pelvis"]:
            chain.append(names[b])
            b = parents[b]
        if b >= 0:
            chain = chain[::-1]  # hips -> neck order
            if len(chain) >= 3:
                out["spine1"], out["spine2"], out["spine3"] = chain[0], chain[len(chain) // 2], chain[-1]
            elif len(chain) == 2:
                out["spine1"], out["spine3"] = chain
            elif len(chain) == 1:
                out["spine2"] = chain[0]
    return out


# --------------------------------------------------------------------------- rotations

def rotation_part(M: np.ndarray) -> np.ndarray:
    """(..., 3, 3) or (..., 4, 4) matrices -> (..., 3, 3) nearest rotation (polar part, det +1)."""
    A = np.asarray(M, np.float64)[..., :3, :3]
    U, _, Vt = np.linalg.svd(A)
    d = np.sign(np.linalg.det(U @ Vt))
    U = U.copy()
    U[..., :, -1] *= d[..., None]
    return U @ Vt


def rotation_between_vectors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Directions a, b (..., 3) (any length) -> (..., 3, 3) the smallest rotation taking a to b.

    Opposite directions: a half turn about an axis perpendicular to a."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = np.broadcast_arrays(a, b)
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), _EPS)
    v = np.cross(a, b)
    c = np.sum(a * b, axis=-1)
    K = np.zeros(a.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2] = -v[..., 2], v[..., 1]
    K[..., 1, 0], K[..., 1, 2] = v[..., 2], -v[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -v[..., 1], v[..., 0]
    opposite = c < -1.0 + 1e-9
    denom = np.where(opposite, 1.0, 1.0 + c)
    R = np.eye(3) + K + (K @ K) / denom[..., None, None]
    if np.any(opposite):
        ao = a[opposite]
        helper = np.where(np.abs(ao[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
        axis = np.cross(ao, helper)
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        R[opposite] = 2.0 * axis[:, :, None] * axis[:, None, :] - np.eye(3)
    return R


def z_rotation(angle) -> np.ndarray:
    """Angle (...) radians -> (..., 3, 3) rotation about +Z."""
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(np.shape(angle) + (3, 3))
    R[..., 0, 0], R[..., 0, 1], R[..., 1, 0], R[..., 1, 1], R[..., 2, 2] = c, -s, s, c, 1.0
    return R


def angle_between_vectors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 3), (..., 3) -> (...) angle in degrees (atan2 form: accurate near 0)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1)))


_AXES = {"X": 0, "Y": 1, "Z": 2}


def _order_permutation(order: str):
    """Blender euler order ('XYZ'...) -> (P (3, 3), sign): R_order = P R_xyz(sign * angles) P^T."""
    idx = [_AXES[c] for c in order]
    P = np.zeros((3, 3))
    for col, axis in enumerate(idx):
        P[axis, col] = 1.0
    return P, float(np.round(np.linalg.det(P)))


def _basic_rotation(axis: int, angle) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    R = np.zeros(np.shape(angle) + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R[..., axis, axis] = 1.0
    R[..., i, i], R[..., i, j], R[..., j, i], R[..., j, j] = c, -s, s, c
    return R


def rotmat_from_euler(euler: np.ndarray, order: str = "XYZ") -> np.ndarray:
    """Blender Euler angles (..., 3) (x, y, z angles, radians) in ``order`` -> (..., 3, 3).

    Blender's 'XYZ' applies X first: R = Rz @ Ry @ Rx; in general R = R_c @ R_b @ R_a for order 'abc'."""
    e = np.asarray(euler, np.float64)
    a, b, c = (_AXES[ch] for ch in order)
    return _basic_rotation(c, e[..., c]) @ _basic_rotation(b, e[..., b]) @ _basic_rotation(a, e[..., a])


def euler_from_rotmat(R: np.ndarray, order: str = "XYZ", continuous: bool = True) -> np.ndarray:
    """Rotation matrices (T, 3, 3) -> Blender Euler angles (T, 3) in ``order``.

    continuous: each frame takes, of the two Euler triples of its rotation and their 2 pi
    shifts, the one nearest the previous frame (no flips between keys, as Blender's
    ``to_euler(order, compat)``)."""
    R = np.asarray(R, np.float64)
    P, sign = _order_permutation(order)
    M = np.swapaxes(P, -1, -2) @ R @ P          # = Rz(g) Ry(b) Rx(a) in permuted axes
    sb = np.clip(-M[..., 2, 0], -1.0, 1.0)
    beta = np.arcsin(sb)
    cb = np.cos(beta)
    gimbal = cb < 1e-7
    alpha = np.where(gimbal, 0.0, np.arctan2(M[..., 2, 1], M[..., 2, 2]))
    gamma = np.where(gimbal, np.arctan2(-M[..., 0, 1], M[..., 1, 1]), np.arctan2(M[..., 1, 0], M[..., 0, 0]))
    abc = np.stack([alpha, beta, gamma], axis=-1)   # angles about the order's 1st, 2nd, 3rd axes
    if continuous and abc.ndim == 2 and len(abc) > 1:
        twin = np.stack([alpha + np.pi, np.pi - beta, gamma + np.pi], axis=-1)
        out = np.empty_like(abc)
        out[0] = _wrap(abc[0])
        for t in range(1, len(abc)):
            best, best_d = None, np.inf
            for cand in (abc[t], twin[t]):
                c = out[t - 1] + _wrap(cand - out[t - 1])
                d = np.sum((c - out[t - 1]) ** 2)
                if d < best_d:
                    best, best_d = c, d
            out[t] = best
        abc = out
    else:
        abc = _wrap(abc)
    abc = sign * abc
    e = np.empty_like(abc)
    for col, ch in enumerate(order):
        e[..., _AXES[ch]] = abc[..., col]
    return e


def _wrap(x):
    return (np.asarray(x) + np.pi) % (2 * np.pi) - np.pi


def rotation_channels(R: np.ndarray, mode: str) -> np.ndarray:
    """Rotation matrices (T, 3, 3) -> key values (T, n) for a pose bone's ``rotation_mode``:
    QUATERNION (w, x, y, z) hemisphere-continuous, AXIS_ANGLE (angle, x, y, z), or an Euler
    order ('XYZ'...) continuous between frames."""
    R = np.asarray(R, np.float64)
    if mode == "QUATERNION":
        return rotations.quat_make_continuous(rotations.rotmat_to_quat(R), axis=0)
    if mode == "AXIS_ANGLE":
        q = rotations.quat_make_continuous(rotations.rotmat_to_quat(R), axis=0)
        v = q[:, 1:]
        n = np.linalg.norm(v, axis=-1)
        angle = 2.0 * np.arctan2(n, q[:, 0])
        axis = np.where(n[:, None] > 1e-12, v / np.maximum(n, 1e-12)[:, None], [0.0, 1.0, 0.0])
        return np.concatenate([angle[:, None], axis], axis=-1)
    if len(mode) == 3 and set(mode) == set("XYZ"):
        return euler_from_rotmat(R, mode)
    raise ValueError(f"unknown rotation mode {mode!r}")


def rotmat_from_channels(values: np.ndarray, mode: str) -> np.ndarray:
    """Key values (..., n) of a ``rotation_mode`` -> rotation matrices (..., 3, 3)."""
    v = np.asarray(values, np.float64)
    if mode == "QUATERNION":
        return rotations.quat_to_rotmat(v)
    if mode == "AXIS_ANGLE":
        axis = v[..., 1:]
        n = np.linalg.norm(axis, axis=-1, keepdims=True)
        axis = np.where(n > 1e-12, axis / np.maximum(n, 1e-12), [0.0, 1.0, 0.0])
        return rotations.axis_angle_to_rotmat(axis * v[..., :1])
    return rotmat_from_euler(v, mode)


# --------------------------------------------------------------------------- skeletons and poses

@dataclass
class Skeleton:
    """An armature's rest: bone names (B,), parents (B,) (-1: root), rest (B, 4, 4) armature
    space (``bone.matrix_local``), world (4, 4) the object's ``matrix_world``."""
    names: tuple
    parents: np.ndarray
    rest: np.ndarray
    world: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self):
        self.names = tuple(self.names)
        self.parents = np.asarray(self.parents).astype(int)
        self.rest = np.asarray(self.rest, np.float64)
        self.world = np.asarray(self.world, np.float64)
        if self.rest.shape != (len(self.names), 4, 4) or self.parents.shape != (len(self.names),):
            raise ValueError(f"skeleton: {len(self.names)} names, parents {self.parents.shape}, rest {self.rest.shape}")
        self._index = {n: i for i, n in enumerate(self.names)}

    def index(self, name: str) -> int:
        return self._index[name]

    def rest_world(self) -> np.ndarray:
        """(B, 4, 4) rest matrices in world space."""
        return self.world[None] @ self.rest

    def order(self) -> list:
        """Bone indices with every parent before its children."""
        done, out = np.zeros(len(self.names), bool), []
        for b in range(len(self.names)):
            stack = []
            while b >= 0 and not done[b]:
                stack.append(b)
                b = self.parents[b]
            for x in reversed(stack):
                done[x] = True
                out.append(x)
        return out

    def ancestors(self, b: int) -> list:
        out = []
        b = self.parents[b]
        while b >= 0:
            out.append(int(b))
            b = self.parents[b]
        return out

    def rest_relative(self) -> np.ndarray:
        """(B, 4, 4) each bone's rest relative to its parent's: inv(rest[parent]) @ rest[b]."""
        rel = self.rest.copy()
        has = self.parents >= 0
        rel[has] = np.linalg.inv(self.rest[self.parents[has]]) @ self.rest[has]
        return rel


def basis_from_channels(location: np.ndarray, rotation: np.ndarray, scale: np.ndarray = None) -> np.ndarray:
    """location (..., 3), rotation (..., 3, 3), scale (..., 3) or None -> ``matrix_basis`` (..., 4, 4)."""
    R = np.asarray(rotation, np.float64)
    M = np.zeros(R.shape[:-2] + (4, 4))
    M[..., :3, :3] = R if scale is None else R * np.asarray(scale, np.float64)[..., None, :]
    M[..., :3, 3] = location
    M[..., 3, 3] = 1.0
    return M


def pose_from_basis(skeleton: Skeleton, basis: np.ndarray, bones=None) -> np.ndarray:
    """Pose-bone ``matrix_basis`` (T, B, 4, 4) -> ``pose_bone.matrix`` (T, B, 4, 4) armature space.

    bones: indices needed (their ancestors are computed too); None = all. Others stay zero."""
    basis = np.asarray(basis, np.float64)
    rel = skeleton.rest_relative()
    pose = np.zeros_like(basis)
    need = _with_ancestors(skeleton, bones)
    for b in skeleton.order():
        if not need[b]:
            continue
        p = skeleton.parents[b]
        local = rel[b] @ basis[:, b]
        pose[:, b] = local if p < 0 else pose[:, p] @ local
    return pose


def basis_from_pose(skeleton: Skeleton, pose: np.ndarray, bones=None) -> np.ndarray:
    """``pose_bone.matrix`` (T, B, 4, 4) armature space -> ``matrix_basis`` (T, B, 4, 4).

    The inverse of ``pose_from_basis``; bones: which to compute (None = all; others identity)."""
    pose = np.asarray(pose, np.float64)
    rel = skeleton.rest_relative()
    basis = np.broadcast_to(np.eye(4), pose.shape).copy()
    for b in (range(len(skeleton.names)) if bones is None else bones):
        p = skeleton.parents[b]
        frame = rel[b] if p < 0 else pose[:, p] @ rel[b]
        basis[:, b] = np.linalg.inv(frame) @ pose[:, b]
    return basis


def _with_ancestors(skeleton: Skeleton, bones) -> np.ndarray:
    need = np.zeros(len(skeleton.names), bool)
    if bones is None:
        need[:] = True
        return need
    for b in bones:
        while b >= 0 and not need[b]:
            need[b] = True
            b = skeleton.parents[b]
    return need


# --------------------------------------------------------------------------- the plan

@dataclass
class RetargetPlan:
    """Everything about a source/target pair that does not depend on the frame.

    keys (K,) map keys; src (K,) source bone of each (the pelvis for ``torso``); tgt (K,)
    target bone; src_dir (K, 2) source joints whose heads give the bone direction (-1: none),
    dir_key (K,) the map key of the second one (None: none);
    post (K, 3, 3) = H^T C^T (see the module docstring); heading (3, 3) H; ratio leg ratio;
    src_pivot / tgt_pivot source / target bones whose heads' mean is the hip centre;
    src_ankles / tgt_ankles; carrier: the target bone that takes the root motion; root: the
    ``root`` bone or -1; skipped: optional keys the target lacks."""
    keys: list
    src: np.ndarray
    tgt: np.ndarray
    src_dir: np.ndarray
    dir_key: list
    post: np.ndarray
    heading: np.ndarray
    ratio: float
    src_pivot: list
    tgt_pivot: list
    src_ankles: list
    tgt_ankles: list
    carrier: int
    root: int
    resolved: dict
    skipped: list


def _heads(M: np.ndarray) -> np.ndarray:
    return M[..., :3, 3]


def _facing_left(points_left, points_right) -> np.ndarray:
    """Horizontal unit vector from the right joint(s) to the left one(s) (the body's left)."""
    v = np.asarray(points_left, np.float64) - np.asarray(points_right, np.float64)
    v = v.copy()
    v[..., 2] = 0.0
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if np.any(n < 1e-6):
        raise ValueError("the left and right hips are at the same place seen from above: cannot tell which way "
                         "the rig faces")
    return v / n


def heading_between(src_left: np.ndarray, tgt_left: np.ndarray) -> np.ndarray:
    """Horizontal left directions (3,) of two bodies -> (3, 3) rotation about Z from the first to the second."""
    a = np.arctan2(tgt_left[1], tgt_left[0]) - np.arctan2(src_left[1], src_left[0])
    return z_rotation(a)


def plan_retarget(source: Skeleton, target: Skeleton, bone_map) -> RetargetPlan:
    """Source (a PyMAF rig: SMPL bone names) + target + bone map -> ``RetargetPlan``.

    ValueError when the source is not an SMPL rig or the target lacks core bones (the message
    lists them with the names looked for)."""
    missing_src = [n for n in SMPL_NAMES if n not in source.names]
    if missing_src:
        raise ValueError(f"the source is not a PyMAF rig (bones missing: {', '.join(missing_src)})")
    bone_map = check_bone_map(bone_map)
    resolved, skipped, missing = resolve_bone_map(bone_map, target.names)
    if missing:
        raise ValueError(f"the target armature lacks bones the map needs: {describe_missing(bone_map, missing)}")
    used = {}
    for k, n in resolved.items():
        if n in used:
            raise ValueError(f"bone map: target bone {n!r} is mapped from both {used[n]!r} and {k!r}")
        used[n] = k
    S = source.rest_world()
    T = target.rest_world()
    s = {n: source.index(n) for n in SMPL_NAMES}
    t = {k: target.index(n) for k, n in resolved.items()}

    # Heading: from the hips (each body's right hip -> left hip, seen from above).
    src_left = _facing_left(_heads(S[s["left_hip"]]), _heads(S[s["right_hip"]]))
    tgt_left = _facing_left(_heads(T[t["left_hip"]]), _heads(T[t["right_hip"]]))
    H = heading_between(src_left, tgt_left)

    # Mapped keys in SMPL tree order (torso first: it is above the pelvis).
    keys = [k for k in ("torso",) + SMPL_NAMES if k in t]
    smpl_children = {n: [c for c in SMPL_NAMES if SMPL_PARENTS[SMPL_NAMES.index(c)] == SMPL_NAMES.index(n)]
                     for n in SMPL_NAMES}

    def next_mapped(n):
        """The first mapped SMPL joint down n's (preferred) chain, or None."""
        kids = smpl_children[n]
        while kids:
            c = PREFERRED_CHILD.get(n) if PREFERRED_CHILD.get(n) in kids else kids[0]
            if len(kids) > 1 and n not in PREFERRED_CHILD:
                return None
            if c in t:
                return c
            n, kids = c, smpl_children[c]
        return None

    src_idx, tgt_idx, src_dir, dir_key, post = [], [], [], [], {}
    Rs_rest = rotation_part(S)
    for k in keys:
        tb = t[k]
        if k == "torso":
            src_idx.append(s["pelvis"])
            tgt_idx.append(tb)
            src_dir.append((-1, -1))
            dir_key.append(None)
            post[k] = H.T  # the whole body's rotation, turned to the target's heading
            continue
        src_idx.append(s[k])
        tgt_idx.append(tb)
        c = next_mapped(k)
        if c is not None and tb in target.ancestors(t[c]):
            d_s = _heads(S[s[c]]) - _heads(S[s[k]])
            d_t = _heads(T[t[c]]) - _heads(T[tb])
            if np.linalg.norm(d_s) > 1e-6 and np.linalg.norm(d_t) > 1e-6:
                C = rotation_between_vectors(H @ d_s, d_t)
                post[k] = H.T @ C.T
                src_dir.append((s[k], s[c]))
                dir_key.append(c)
                continue
        src_dir.append((-1, -1))
        dir_key.append(None)
        # No mapped joint below (hands, toes, head) or not in its chain: the nearest mapped
        # ancestor's correction (the bone keeps its rest relation to that ancestor).
        a = SMPL_PARENTS[SMPL_NAMES.index(k)]
        while a >= 0 and SMPL_NAMES[a] not in post:
            a = SMPL_PARENTS[a]
        post[k] = post[SMPL_NAMES[a]] if a >= 0 else H.T
    # Leaves whose ancestor came later in `keys` order cannot happen (SMPL order is topological).
    post_arr = np.array([post[k] for k in keys])

    src_pivot = [s["left_hip"], s["right_hip"]]
    tgt_pivot = [t["left_hip"], t["right_hip"]]
    src_ankles = [s["left_ankle"], s["right_ankle"]]
    tgt_ankles = [t["left_ankle"], t["right_ankle"]]
    h_src = _heads(S[src_pivot]).mean(0)[2] - _heads(S[src_ankles]).mean(0)[2]
    h_tgt = _heads(T[tgt_pivot]).mean(0)[2] - _heads(T[tgt_ankles]).mean(0)[2]
    if h_src <= 1e-3 or h_tgt <= 1e-3:
        raise ValueError("the hips must be above the ankles at rest (with Z up) in both rigs: is the target "
                         "standing upright?")
    carrier = t.get("torso", t["pelvis"])
    for b in tgt_pivot:
        if carrier not in target.ancestors(b):
            raise ValueError(f"the hip bone {target.names[b]!r} is not below {target.names[carrier]!r} in the "
                             f"target's hierarchy: the root motion cannot move it")
    root = t.get("root", -1)
    if root >= 0 and root not in target.ancestors(carrier):
        raise ValueError(f"the root bone {resolved['root']!r} is not above the hips bone "
                         f"{target.names[carrier]!r} in the target's hierarchy")
    return RetargetPlan(keys=keys, src=np.array(src_idx), tgt=np.array(tgt_idx), src_dir=np.array(src_dir),
                        dir_key=dir_key, post=post_arr, heading=H, ratio=float(h_tgt / h_src), src_pivot=src_pivot,
                        tgt_pivot=tgt_pivot, src_ankles=src_ankles, tgt_ankles=tgt_ankles, carrier=carrier,
                        root=root, resolved=resolved, skipped=skipped)


def target_rotations(plan: RetargetPlan, source: Skeleton, target: Skeleton, source_pose: np.ndarray) -> np.ndarray:
    """Source pose (T, Bs, 4, 4) (``pose_bone.matrix``, source armature space) -> the mapped
    target bones' rotations (T, K, 3, 3) in the TARGET's armature space (``plan.keys`` order)."""
    Pw = source.world[None, None] @ np.asarray(source_pose, np.float64)
    Rs = rotation_part(Pw[:, plan.src])                                  # (T, K, 3, 3)
    Rs_rest = rotation_part(source.rest_world()[plan.src])               # (K, 3, 3)
    D = Rs @ np.swapaxes(Rs_rest, -1, -2)[None]
    has = plan.src_dir[:, 0] >= 0
    if np.any(has):
        i, c = plan.src_dir[has, 0], plan.src_dir[has, 1]
        S = source.rest_world()
        d_rest = _heads(S[c]) - _heads(S[i])                             # (k, 3)
        d_now = _heads(Pw[:, c]) - _heads(Pw[:, i])                      # (T, k, 3)
        swung = np.einsum("tkij,kj->tki", D[:, has], d_rest)
        D[:, has] = rotation_between_vectors(swung, d_now) @ D[:, has]
    H = plan.heading
    Rt_rest = rotation_part(target.rest_world()[plan.tgt])               # (K, 3, 3)
    Rw = H[None, None] @ D @ plan.post[None] @ Rt_rest[None]             # world
    Qw = rotation_part(target.world)
    return Qw.T[None, None] @ Rw


def root_targets(plan: RetargetPlan, source: Skeleton, target: Skeleton, source_pose: np.ndarray,
                 mode: str = "FULL") -> tuple:
    """Source pose (T, Bs, 4, 4) -> (hip centre (T, 3), root offset (T, 3)) in the TARGET's
    armature space: where the target's hip centre goes, and how far the ``root`` bone moves
    from its rest (zero unless mode is ROOT_BONE). See the module docstring."""
    if mode not in ROOT_MODES:
        raise ValueError(f"root motion mode must be one of {', '.join(ROOT_MODES)}, got {mode!r}")
    if mode == "ROOT_BONE" and plan.root < 0:
        raise ValueError("root motion on the root bone needs a 'root' bone in the map (e.g. UE5's root); "
                         "use Full or In Place for this target")
    Pw = source.world[None, None] @ np.asarray(source_pose, np.float64)
    pivot = _heads(Pw[:, plan.src_pivot]).mean(1)                        # (T, 3) world
    ankle_z = _heads(Pw[:, plan.src_ankles])[..., 2].min(1)
    floor = float(np.percentile(ankle_z, FLOOR_PERCENTILE))
    S, Tw = source.rest_world(), target.rest_world()
    h_src = _heads(S[plan.src_pivot]).mean(0)[2] - _heads(S[plan.src_ankles]).mean(0)[2]
    ref = np.array([pivot[0, 0], pivot[0, 1], floor + h_src])
    v = (pivot - ref) @ plan.heading.T * plan.ratio                     # (T, 3) world, target heading
    horizontal = v.copy()
    horizontal[:, 2] = 0.0
    if mode == "IN_PLACE":
        v[:, :2] = 0.0
    tgt_pivot_rest = _heads(Tw[plan.tgt_pivot]).mean(0)
    hips_world = tgt_pivot_rest[None] + v
    root_world = horizontal if mode == "ROOT_BONE" else np.zeros_like(v)
    Winv = np.linalg.inv(target.world)
    hips = hips_world @ Winv[:3, :3].T + Winv[:3, 3]
    return hips, root_world @ Winv[:3, :3].T


def solve_basis(plan: RetargetPlan, target: Skeleton, rotations_arm: np.ndarray, hips: np.ndarray,
                root_offset: np.ndarray, static_basis: np.ndarray = None) -> np.ndarray:
    """Target armature-space rotations of the mapped bones (T, K, 3, 3), hip centre (T, 3) and
    root offset (T, 3) (``root_targets``) -> ``matrix_basis`` (T, Bt, 4, 4) of every target
    bone, through the target's hierarchy without constraints.

    The carrier (``torso`` or the pelvis bone) gets the location that puts the hip centre in
    place; the ``root`` bone gets the root offset; other mapped bones only rotate. Unmapped
    bones keep ``static_basis`` (Bt, 4, 4) (default identity: their rest pose)."""
    n_frames = len(rotations_arm)
    B = len(target.names)
    start = np.eye(4) if static_basis is None else np.asarray(static_basis, np.float64)
    basis = np.broadcast_to(start, (n_frames, B, 4, 4)).copy()
    k_of = {int(b): k for k, b in enumerate(plan.tgt)}
    rel = target.rest_relative()
    need = _with_ancestors(target, list(plan.tgt) + plan.tgt_pivot + ([plan.root] if plan.root >= 0 else []))
    pose = np.zeros((n_frames, B, 4, 4))
    carrier_frame = None
    for b in target.order():
        if not need[b]:
            continue
        p = target.parents[b]
        frame = np.broadcast_to(rel[b], (n_frames, 4, 4)) if p < 0 else pose[:, p] @ rel[b]
        if b == plan.root:
            basis[:, b] = np.eye(4)
            basis[:, b, :3, 3] = np.einsum("tij,tj->ti", np.linalg.inv(frame[:, :3, :3]), root_offset)
        elif b in k_of:
            want = rotations_arm[:, k_of[b]]
            basis[:, b] = np.eye(4)
            basis[:, b, :3, :3] = np.linalg.inv(frame[:, :3, :3]) @ want
        if b == plan.carrier:
            carrier_frame = frame.copy()
        pose[:, b] = frame @ basis[:, b]
    # The hip centre moves rigidly with the carrier's location: one linear correction.
    now = _heads(pose[:, plan.tgt_pivot]).mean(1)
    A = carrier_frame[:, :3, :3]
    basis[:, plan.carrier, :3, 3] += np.einsum("tij,tj->ti", np.linalg.inv(A), hips - now)
    return basis


def carrier_location_fix(parent_frame: np.ndarray, hips_now: np.ndarray, hips_want: np.ndarray) -> np.ndarray:
    """For an evaluated rig: (4, 4) ``pose[parent] @ inv(rest[parent]) @ rest[carrier]``, the hip
    centre now and wanted (3,) armature space -> the change (3,) of the carrier's location."""
    return np.linalg.solve(np.asarray(parent_frame, np.float64)[:3, :3], np.asarray(hips_want) - np.asarray(hips_now))


def retarget(source: Skeleton, target: Skeleton, source_pose: np.ndarray, bone_map, mode: str = "FULL") -> tuple:
    """Source pose (T, Bs, 4, 4) -> (target ``matrix_basis`` (T, Bt, 4, 4), plan), for targets
    without constraints (the whole pipeline in numpy)."""
    plan = plan_retarget(source, target, bone_map)
    R = target_rotations(plan, source, target, source_pose)
    hips, root = root_targets(plan, source, target, source_pose, mode)
    return solve_basis(plan, target, R, hips, root), plan


# --------------------------------------------------------------------------- checks

def direction_pairs(plan: RetargetPlan, target: Skeleton) -> list:
    """[(key, src head bone, src child bone, tgt head bone, tgt child bone)] for the mapped bones
    whose direction (head -> next mapped joint's head) the retarget matches."""
    out = []
    for k, key in enumerate(plan.keys):
        i, c = plan.src_dir[k]
        if i >= 0:
            out.append((key, int(i), int(c), int(plan.tgt[k]), target.index(plan.resolved[plan.dir_key[k]])))
    return out


def direction_errors(src_heads: np.ndarray, tgt_heads: np.ndarray, pairs, heading: np.ndarray) -> np.ndarray:
    """World heads (T, Bs, 3), (T, Bt, 3) + ``direction_pairs`` + heading (3, 3) ->
    (T, P) angle (degrees) between each target bone's direction and the source's turned by the heading."""
    d_s = np.stack([src_heads[:, c] - src_heads[:, i] for _, i, c, _, _ in pairs], 1) @ heading.T
    d_t = np.stack([tgt_heads[:, c] - tgt_heads[:, i] for _, _, _, i, c in pairs], 1)
    return angle_between_vectors(d_s, d_t)
