"""Keyframes for one person, and the raw per-frame data kept with the rig.

The maths is ``pymaf_blender.common`` (engine/common): the smoothed SMPL parameters (camera
frame) -> ``blender_space.smpl_to_world`` in the scene's world (floor world, camera space, or
the floor world without horizontal root motion) -> ``armature_rotations`` -> ``bone_local_quats``
with the bones' rest orientations read back from Blender; root motion -> ``root_offsets`` ->
``root_locations``. Keys go in with
``keyframe_points.add`` + ``foreach_set`` (``compat.set_keys``), one action per person, on the
frames the track has and no others (docs/blender-scene.md).

Raw data: the track's per-frame SMPL rotation matrices (float32, as the engine writes them),
translation and frame numbers are stored on the armature object (``obj["pymaf"]``,
little-endian bytes plus their shapes) so ``reapply`` can re-filter with
``smoothing.smooth_track`` and re-key without the engine. Bytes rather than ID-property arrays
so that Blender's Custom Properties panel does not turn a million floats into a Python list on
every redraw.
"""
from __future__ import annotations

import json

import numpy as np

from ..common import blender_space, contacts, floor, smoothing, smpl_topology
from . import compat, rig

RAW_KEY = "pymaf"
RAW_VERSION = 1
_ARRAYS = {"frames": "<i8", "rotmat": "<f4", "transl": "<f8", "rest_root": "<f8",
           "world_rotation": "<f8", "world_translation": "<f8", "rest_joints": "<f8", "sole_offsets": "<f8"}
# Where the rig stands (docs/blender-scene.md, "World"): the floor world (default), the
# engine's camera space, or the floor world with the root's horizontal motion removed.
SPACES = ("FLOOR", "CAMERA", "IN_PLACE")
# Per-frame foot contacts, keyed as custom properties of the armature (1 = planted), CONSTANT.
CONTACT_PROPS = ("pymaf_contact_left", "pymaf_contact_right")


# --------------------------------------------------------------------------- raw data

def raw_from_track(track, meta: dict, track_id: str, import_name: str, body_name: str,
                   space: str = "CAMERA", world=None, plant_feet: bool = False) -> dict:
    """A track of the result -> the raw dict stored with the rig (numpy arrays + scalars).
    ``space`` one of ``SPACES``; ``world`` (R, t) of that space (None: camera space);
    ``plant_feet``: clean the feet on the floor (floor worlds only, ``world_motion``)."""
    R_w, t_w = blender_space.world_or_camera(world)
    R = np.concatenate([np.asarray(track.global_orient_rotmat, np.float32)[:, None],
                        np.asarray(track.body_pose_rotmat, np.float32)], axis=1)
    smoothing_meta = meta.get("smoothing")
    return {
        "version": RAW_VERSION,
        "track_id": str(track_id),
        "import_name": import_name,
        "video": str(meta["video"].get("path") or ""),      # takes of one shot share it
        "body": body_name,
        "fps": float(meta["video"]["fps"]),
        "frame_offset": int(meta.get("frame_start") or 0) + 1,
        "frames": np.asarray(track.frames, np.int64),
        "rotmat": R,                                         # (T, 24, 3, 3) SMPL local, float32
        "transl": np.asarray(track.transl, np.float64),      # (T, 3) camera frame
        "rest_root": np.asarray(track.rest_joints, np.float64)[0],
        "rest_joints": np.asarray(track.rest_joints, np.float64),
        "sole_offsets": floor.sole_offsets(track.rest_joints, track.rest_vertices),
        "plant_feet": bool(plant_feet) and space != "CAMERA",
        "space": space,
        "world_rotation": R_w,                               # world = R p_camera + t
        "world_translation": t_w,
        "strength": 0.0,
        "result_smoothing": json.dumps(smoothing_meta) if smoothing_meta else "",
    }


def store_raw(obj, raw: dict) -> None:
    data = {}
    for k, v in raw.items():
        if k in _ARRAYS:
            a = np.ascontiguousarray(v, _ARRAYS[k])
            data[k] = a.tobytes()
            data[k + "_shape"] = list(a.shape)
        else:
            data[k] = v
    obj[RAW_KEY] = data


def load_raw(obj) -> dict:
    """The raw dict stored by ``store_raw`` (ValueError when ``obj`` carries none)."""
    if obj is None or obj.type != "ARMATURE" or RAW_KEY not in obj.keys():
        name = getattr(obj, "name", obj)
        raise ValueError(f"{name!r} is not a rig imported by PyMAF (it has no stored motion data); "
                         "select a PyMAF armature or import the result again")
    g = obj[RAW_KEY]
    if int(g.get("version", 0)) != RAW_VERSION:
        raise ValueError(f"{obj.name!r}: stored motion data version {g.get('version')!r} is not "
                         f"{RAW_VERSION}; import the result again")
    raw = {}
    for k in g.keys():
        if k.endswith("_shape"):
            continue
        if k in _ARRAYS:
            shape = tuple(int(s) for s in g[k + "_shape"])
            raw[k] = np.frombuffer(bytes(g[k]), _ARRAYS[k]).reshape(shape).astype(_ARRAYS[k][1:])
        else:
            v = g[k]
            raw[k] = v.to_dict() if hasattr(v, "to_dict") else v
    return raw


# --------------------------------------------------------------------------- key values

def check_strength(strength):
    """None or a number in [0, 1] -> None or float; ValueError otherwise."""
    if strength is None:
        return None
    try:
        s = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"smoothing strength must be a number in [0, 1], got {strength!r}") from None
    if not (0.0 <= s <= 1.0):
        raise ValueError(f"smoothing strength must be in [0, 1], got {s}")
    return s


def smoothed(raw: dict, strength) -> tuple:
    """(rotmat (T, 24, 3, 3), transl (T, 3)) after the strength's One-Euro filter
    (``smoothing.smooth_track``: on the rotation group, restarting after long gaps).

    Strength None or 0 returns the stored arrays untouched (bit for bit)."""
    q, t = raw["rotmat"], raw["transl"]
    params = smoothing.params_for_strength(strength or 0.0)
    if params.is_identity:
        return q, t
    frames, fps = raw["frames"], raw["fps"]
    return (smoothing.smooth_track(frames, q, fps, params=params),
            smoothing.smooth_track(frames, t, fps, params=params))


def raw_world(raw: dict) -> tuple:
    """The (R, t) world a rig's raw data was placed in (camera space for rigs stored before
    worlds existed)."""
    if "world_rotation" not in raw:
        return blender_space.CAMERA_WORLD
    return raw["world_rotation"], raw["world_translation"]


def world_motion(raw: dict, strength) -> tuple:
    """The stored motion, smoothed at ``strength``, in the rig's world: SMPL local rotations
    (T, 24, 3, 3) with joint 0 relative to the world, translation (T, 3) world, and the foot
    contacts (T, 2) bool (None when the feet are not planted). With ``plant_feet`` each run of
    consecutive frames is stood on the floor along the camera rays and its planted feet pinned
    (``contacts.clean_track``; docs/contacts.md)."""
    q, t = smoothed(raw, strength)
    R_w, t_w = blender_space.smpl_to_world(q, t, raw["rest_root"], raw_world(raw))
    found = None
    if raw.get("plant_feet"):
        found = np.zeros((len(R_w), 2), bool)
        camera = raw_world(raw)[1]
        for run in floor.consecutive_runs(raw["frames"]):
            R_w[run], t_w[run], found[run], _ = contacts.clean_track(
                R_w[run], t_w[run], raw["rest_joints"], smpl_topology.SMPL_PARENTS, raw["sole_offsets"],
                raw["fps"], camera_position=camera)
    if raw.get("space") == "IN_PLACE":
        t_w = blender_space.transl_in_place(t_w, raw["rest_root"])
    return R_w, t_w, found


def key_values(rotmat: np.ndarray, transl: np.ndarray, rest_root: np.ndarray, bone_rest: np.ndarray,
               rest_head=None) -> tuple:
    """World SMPL rotations (T, 24, 3, 3) + translation (T, 3) (``world_motion``) -> pose-bone
    values; ``rest_head`` (3,) the root bone's rest head (``rig.root_rest_head``).
    -> (rotation_quaternion (T, 24, 4) hemisphere-continuous, root location (T, 3))."""
    world = blender_space.IDENTITY_WORLD
    M = blender_space.armature_rotations(np.asarray(rotmat, np.float64), world)
    q_bone = blender_space.bone_local_quats(M, bone_rest)
    offsets = blender_space.root_offsets(transl, rest_root, world, rest_head)
    return q_bone, blender_space.root_locations(offsets, bone_rest[0])


# --------------------------------------------------------------------------- writing keys

def write_pose_keys(arm_obj, frames_bl: np.ndarray, q_bone: np.ndarray, loc: np.ndarray,
                    action_name: str = None):
    """Key every bone's rotation_quaternion and the root's location on ``frames_bl``. -> action."""
    action = compat.ensure_action(arm_obj, action_name or f"{arm_obj.name}_motion")
    linear = compat.interpolation_value("LINEAR")
    frames_bl = np.asarray(frames_bl, np.float64)
    q_bone = np.asarray(q_bone, np.float64)
    for j, name in enumerate(rig.BONE_NAMES):
        pb = arm_obj.pose.bones[name]
        path = pb.path_from_id("rotation_quaternion")
        for i in range(4):
            fc = compat.ensure_fcurve(action, arm_obj, path, i, name)
            compat.set_keys(fc, frames_bl, q_bone[:, j, i], linear)
    root = rig.BONE_NAMES[0]
    path = arm_obj.pose.bones[root].path_from_id("location")
    for i in range(3):
        fc = compat.ensure_fcurve(action, arm_obj, path, i, root)
        compat.set_keys(fc, frames_bl, loc[:, i], linear)
    return action


def write_contact_keys(arm_obj, frames_bl: np.ndarray, found: np.ndarray) -> None:
    """Key the foot contacts (T, 2) bool as the armature's ``CONTACT_PROPS`` custom properties
    (1 = planted; CONSTANT) in its motion action."""
    action = compat.ensure_action(arm_obj, f"{arm_obj.name}_motion")
    for k, prop in enumerate(CONTACT_PROPS):
        arm_obj[prop] = 0.0
        fc = compat.ensure_fcurve(action, arm_obj, f'["{prop}"]', 0, "Contacts")
        compat.set_keys(fc, frames_bl, np.asarray(found, np.float64)[:, k], compat.interpolation_value("CONSTANT"))


def write_visibility_keys(obj, key_frames: np.ndarray, hidden: np.ndarray, action_name: str = None):
    """CONSTANT keys on ``hide_viewport`` and ``hide_render`` of ``obj``. -> action."""
    action = compat.ensure_action(obj, action_name or f"{obj.name}_visibility")
    const = compat.interpolation_value("CONSTANT")
    for path in ("hide_viewport", "hide_render"):
        fc = compat.ensure_fcurve(action, obj, path, 0, "Visibility")
        compat.set_keys(fc, key_frames, hidden, const)
    return action


def motion_action(arm_obj):
    """The rig's own motion: the action it was imported with (active, or, once pushed to the
    NLA, the strip action named after the rig)."""
    ad = arm_obj.animation_data
    if ad is None:
        return None
    if ad.action is not None:
        return ad.action
    for track in ad.nla_tracks:
        for strip in track.strips:
            if strip.action is not None and strip.action.name.startswith(arm_obj.name):
                return strip.action
    return None


def rekey(arm_obj, raw: dict, strength) -> None:
    """(Re)write the pose keys of ``arm_obj``'s own motion from ``raw`` at ``strength`` (also
    when it was pushed to the NLA: it is made active just while writing)."""
    bone_rest = rig.bone_rest_matrices(arm_obj)
    q, t, found = world_motion(raw, strength)
    q_bone, loc = key_values(q, t, raw["rest_root"], bone_rest, rig.root_rest_head(arm_obj))
    frames_bl = raw["frames"].astype(np.float64) + raw["frame_offset"]
    own = motion_action(arm_obj)
    ad = arm_obj.animation_data
    pushed = own is not None and ad.action is None
    if pushed:
        ad.action = own
        compat.ensure_action(arm_obj, own.name)   # 4.4+: the slot
    try:
        write_pose_keys(arm_obj, frames_bl, q_bone, loc)
        if found is not None:
            write_contact_keys(arm_obj, frames_bl, found)
    finally:
        if pushed:
            ad.action = None


def reapply(context, arm_obj, strength) -> None:
    """Re-filter the stored raw data at ``strength`` and re-key (no engine run)."""
    s = check_strength(strength)
    if s is None:
        raise ValueError("smoothing strength must be a number in [0, 1], got None")
    raw = load_raw(arm_obj)
    rekey(arm_obj, raw, s)
    arm_obj[RAW_KEY]["strength"] = s
    scene = context.scene
    scene.frame_set(scene.frame_current)
