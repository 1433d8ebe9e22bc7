"""Retarget a PyMAF rig's action onto another armature (the Blender side).

The maths is ``pymaf_blender.common.retarget`` (engine/common/retarget.py, numpy); here:
read both rigs' rests (``skeleton_of``), the source's pose on every frame of its action from
the action's F-Curves (``action_basis``, no frame changes), and write the target's keys into a
new action ``<source action>_to_<target>`` (``compat`` helpers, bulk ``foreach_set``).
docs/retargeting.md is the user's side.

Targets whose mapped bones hang below constrained bones (a generated Rigify rig: MCH parents
with Copy Transforms / Armature constraints) are solved against Blender's own evaluation: per
frame, level by level down the mapped bones, each bone's ``matrix_basis`` is computed from its
parent's evaluated pose (``view_layer.update``), then the hips are put in place. Plain
hierarchies are solved in numpy for all frames at once.

    from pymaf_blender.blender import retarget
    info = retarget.retarget_action(bpy.context, source_obj, target_obj, retarget.preset_map("MIXAMO"))
    info["action"], info["warnings"]
"""
from __future__ import annotations

import math
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from ..common import retarget as rt
from . import animation, compat

MAX_NAME_BYTES = 63
MAPS_FOLDER = "retarget_maps"
RIGIFY_FK = 1.0            # Rigify's IK_FK property: 1 = FK
_ROT_PATHS = {"QUATERNION": ("rotation_quaternion", 4), "AXIS_ANGLE": ("rotation_axis_angle", 4)}


# --------------------------------------------------------------------------- maps

def preset_map(preset: str) -> dict:
    if preset not in rt.PRESETS:
        raise ValueError(f"unknown retarget preset {preset!r} (one of {', '.join(rt.PRESETS)} or USER)")
    return dict(rt.PRESETS[preset])


def user_maps_folder(create: bool = True) -> Path:
    """Where user bone maps are saved: the extension's user folder (``retarget_maps``), which
    survives updates of the extension."""
    from .. import paths

    try:
        folder = Path(bpy.utils.extension_path_user(paths.package(), path=MAPS_FOLDER, create=create))
    except ValueError:   # enabled from a checkout as a plain add-on
        folder = paths.user_dir(create=create) / MAPS_FOLDER
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_map(bone_map: dict, name: str, folder: Path = None) -> Path:
    """Write ``bone_map`` as ``<folder>/<name>.json`` (default folder: ``user_maps_folder``)."""
    stem = "".join(c if c.isalnum() or c in "-_. " else "_" for c in str(name)).strip(" .")
    if not stem:
        raise ValueError("give the bone map a name to save it under")
    path = Path(folder or user_maps_folder()) / f"{stem}.json"
    path.write_text(rt.bone_map_to_json(bone_map, name=stem), encoding="utf-8")
    return path


def load_map(path) -> dict:
    path = Path(bpy.path.abspath(str(path)))
    if not path.is_file():
        raise ValueError(f"bone map file not found: {path}")
    try:
        return rt.bone_map_from_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path.name}: {exc}") from None


def saved_maps() -> list:
    """The saved user maps' files, by name."""
    folder = user_maps_folder(create=False)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def guess_map(target_obj) -> dict:
    skel = skeleton_of(target_obj)
    return rt.guess_bone_map(skel.names, skel.parents)


# --------------------------------------------------------------------------- reading rigs

def is_pymaf_rig(obj) -> bool:
    return (obj is not None and obj.type == "ARMATURE"
            and all(n in obj.data.bones for n in rt.SMPL_NAMES))


def skeleton_of(obj) -> rt.Skeleton:
    """An armature object -> ``rt.Skeleton`` (names, parents, ``matrix_local``, ``matrix_world``)."""
    if obj is None or obj.type != "ARMATURE":
        raise ValueError(f"{getattr(obj, 'name', obj)!r} is not an armature")
    bones = obj.data.bones
    names = [b.name for b in bones]
    index = {n: i for i, n in enumerate(names)}
    parents = [index[b.parent.name] if b.parent else -1 for b in bones]
    rest = np.empty((len(bones), 4, 4))
    for i, b in enumerate(bones):
        rest[i] = np.array(b.matrix_local)
    return rt.Skeleton(names, parents, rest, np.array(obj.matrix_world))


def action_frames(action) -> np.ndarray:
    """The whole frames of an action's range (its keys' range unless set by hand)."""
    lo, hi = action.frame_range
    return np.arange(int(math.ceil(lo - 1e-6)), int(math.floor(hi + 1e-6)) + 1, dtype=np.float64)


def action_basis(obj, action, frames) -> np.ndarray:
    """Every pose bone's ``matrix_basis`` (T, B, 4, 4) on ``frames`` as ``action`` keys it.

    Channels without an F-Curve keep the pose bone's current value; each bone's own
    ``rotation_mode`` decides which rotation channels count. F-Curves are read with
    ``FCurve.evaluate`` (no frame change, nothing else evaluated: constraints and drivers on
    the source are not seen)."""
    frames = np.asarray(frames, np.float64)
    curves = {}
    for fc in _fcurves(obj, action):
        curves[(fc.data_path, fc.array_index)] = fc
    flist = frames.tolist()

    def channel(pb, prop, n):
        current = np.array(getattr(pb, prop), np.float64).reshape(n)
        out = np.broadcast_to(current, (len(frames), n)).copy()
        path = pb.path_from_id(prop)
        for i in range(n):
            fc = curves.get((path, i))
            if fc is not None and not fc.mute:
                out[:, i] = [fc.evaluate(f) for f in flist]
        return out

    bones = obj.pose.bones
    basis = np.empty((len(frames), len(bones), 4, 4))
    for j, pb in enumerate(bones):
        mode = pb.rotation_mode
        prop, n = _ROT_PATHS.get(mode, ("rotation_euler", 3))
        R = rt.rotmat_from_channels(channel(pb, prop, n), mode)
        basis[:, j] = rt.basis_from_channels(channel(pb, "location", 3), R, channel(pb, "scale", 3))
    return basis


def _fcurves(obj, action) -> list:
    """The F-Curves of ``action`` for ``obj``, also when it is not the active action (a take
    pushed to the NLA: assigned just while its F-Curves are looked up)."""
    ad = obj.animation_data
    if ad is None or action is None:
        return []
    if ad.action == action:
        return compat.action_fcurves(action, obj)
    before = ad.action
    try:
        ad.action = action
        compat.ensure_action(obj, action.name)   # 4.4+: the slot, when the assignment left none
        return compat.action_fcurves(action, obj)
    finally:
        ad.action = before


def _needs_evaluation(target_obj, skel: rt.Skeleton, plan: rt.RetargetPlan) -> list:
    """Constrained bones above (or at) the bones the retarget moves or measures -> their names."""
    movers = list(plan.tgt) + plan.tgt_pivot + ([plan.root] if plan.root >= 0 else [])
    seen, out = set(), []
    for b in movers:
        for a in [b] + skel.ancestors(b):
            if a in seen:
                continue
            seen.add(a)
            if any(not c.mute and c.influence > 0 for c in target_obj.pose.bones[skel.names[a]].constraints):
                out.append(skel.names[a])
    return out


# --------------------------------------------------------------------------- solving

def _dependencies(target_obj, skel: rt.Skeleton) -> list:
    """Per bone, the bones of the same armature its pose depends on: its parent and the
    subtargets of its constraints (Rigify's MCH bones copy controls that are not their parents)."""
    index = {n: i for i, n in enumerate(skel.names)}
    deps = []
    for b, name in enumerate(skel.names):
        d = [int(skel.parents[b])] if skel.parents[b] >= 0 else []
        for c in target_obj.pose.bones[name].constraints:
            if c.mute or c.influence <= 0:
                continue
            targets = list(getattr(c, "targets", [])) or [c]
            for t in targets:
                if getattr(t, "target", None) == target_obj and getattr(t, "subtarget", "") in index:
                    d.append(index[t.subtarget])
        deps.append(d)
    return deps


def _mover_levels(target_obj, skel, movers) -> list:
    """Movers grouped so that each one's pose depends only on movers of earlier groups."""
    deps = _dependencies(target_obj, skel)
    mover_set = set(movers)
    upstream = {}

    def up(b, seen):
        if b in upstream:
            return upstream[b]
        out = set()
        for d in deps[b]:
            if d in seen:
                continue   # a dependency cycle (Blender reports it too): cut it
            out |= up(d, seen | {d})
            if d in mover_set:
                out.add(d)
        upstream[b] = out
        return out

    level = {}

    def lv(b):
        if b not in level:
            level[b] = 1 + max((lv(u) for u in up(b, {b}) if u != b), default=-1)
        return level[b]

    for b in movers:
        lv(b)
    return [[b for b in movers if level[b] == d] for d in range(max(level.values()) + 1)]


def _solve_evaluated(context, target_obj, skel, plan, frames, rot_arm, hips, root_off, progress=None) -> np.ndarray:
    """Per frame, level by level: each mover's ``matrix_basis`` from its parent's evaluated pose.
    -> basis (T, Bt, 4, 4) (unmapped bones: their current basis)."""
    pbs = target_obj.pose.bones
    names = skel.names
    rel = skel.rest_relative()
    movers = list(dict.fromkeys(([plan.root] if plan.root >= 0 else []) + [int(b) for b in plan.tgt]))
    k_of = {int(b): k for k, b in enumerate(plan.tgt)}
    levels = _mover_levels(target_obj, skel, movers)
    static = np.array([np.array(pb.matrix_basis) for pb in pbs])
    basis = np.broadcast_to(static, (len(frames),) + static.shape).copy()
    view_layer = context.view_layer

    def parent_frame(b):
        p = skel.parents[b]
        P = np.array(pbs[names[p]].matrix) if p >= 0 else np.eye(4)
        return P @ rel[b]

    for i in range(len(frames)):
        if progress is not None:
            progress(i / len(frames))
        for level in levels:
            view_layer.update()
            for b in level:
                F = parent_frame(b)
                M = np.eye(4)
                if b == plan.root:
                    M[:3, 3] = np.linalg.solve(F[:3, :3], root_off[i])
                else:
                    M[:3, :3] = np.linalg.solve(F[:3, :3], rot_arm[i, k_of[b]])
                    if b == plan.carrier and i > 0:
                        M[:3, 3] = basis[i - 1, b, :3, 3]   # a guess: the fix below makes it exact
                basis[i, b] = M
                pbs[names[b]].matrix_basis = Matrix(M.tolist())
        view_layer.update()
        now = np.mean([np.array(pbs[names[b]].head) for b in plan.tgt_pivot], axis=0)
        F = parent_frame(plan.carrier)
        basis[i, plan.carrier, :3, 3] += rt.carrier_location_fix(F, now, hips[i])
        pbs[names[plan.carrier]].matrix_basis = Matrix(basis[i, plan.carrier].tolist())
    return basis


def _rigify_fk(target_obj, value=None) -> dict:
    """Set every Rigify limb's IK/FK switch (the ``IK_FK`` property) to FK, or to the values of
    ``value`` ({bone: value}, to undo). -> {bone: previous value} of the switches changed."""
    changed = {}
    for pb in target_obj.pose.bones:
        if "IK_FK" not in pb.keys():
            continue
        want = RIGIFY_FK if value is None else value.get(pb.name, float(pb["IK_FK"]))
        if float(pb["IK_FK"]) != want:
            changed[pb.name] = float(pb["IK_FK"])
            pb["IK_FK"] = want
    if changed:
        target_obj.update_tag()   # the drivers that read the switches re-evaluate only when tagged
    return changed


def _check_movable(target_obj, skel, plan, mode):
    b = skel.names[plan.carrier]
    if target_obj.data.bones[b].use_connect:
        raise ValueError(f"the hips bone {b!r} is connected to its parent, so it cannot move: disconnect it "
                         f"(Edit Mode, Bone properties > Relations > Connected) or map 'torso'/'pelvis' to another bone")
    if mode == "ROOT_BONE" and target_obj.data.bones[skel.names[plan.root]].use_connect:
        raise ValueError(f"the root bone {skel.names[plan.root]!r} is connected to its parent, so it cannot move")


def action_name(source_action_name: str, target_name: str) -> str:
    name = f"{source_action_name}_to_{target_name}"
    b = name.encode("utf-8")[:MAX_NAME_BYTES]
    return b.decode("utf-8", "ignore")


def retarget_action(context, source_obj, target_obj, bone_map: dict, root_mode: str = "FULL",
                    rigify_fk: bool = True, progress=None) -> dict:
    """Retarget ``source_obj``'s action (a PyMAF rig) onto ``target_obj`` through ``bone_map``.

    Keys every whole frame of the source action's range: each mapped bone's rotation (in its
    own ``rotation_mode``), the location of the hips (or ``torso``) bone and, in ROOT_BONE mode,
    of the ``root`` bone, in a new action assigned to the target. Everything is checked before
    the target changes (ValueError says what is wrong: missing bones are listed).
    rigify_fk: switch Rigify limbs to FK when the target has such switches. progress: called
    with the fraction done while a constrained target is solved frame by frame.

    -> {"action", "frames" (first, last), "plan", "evaluated" (constrained target),
        "warnings": [str], "rigify_fk": [bone names switched]}"""
    if not is_pymaf_rig(source_obj):
        raise ValueError(f"{getattr(source_obj, 'name', source_obj)!r} is not a PyMAF rig: choose an armature "
                         f"imported by PyMAF as the source")
    if target_obj is None or target_obj.type != "ARMATURE":
        raise ValueError(f"{getattr(target_obj, 'name', target_obj)!r} is not an armature: choose the rig to "
                         f"retarget onto")
    if target_obj == source_obj:
        raise ValueError("the source and the target are the same armature")
    src_action = animation.motion_action(source_obj)   # active, or its own take on the NLA
    if src_action is None or not _fcurves(source_obj, src_action):
        raise ValueError(f"{source_obj.name!r} has no motion (no action with keys) to retarget")
    if root_mode not in rt.ROOT_MODES:
        raise ValueError(f"root motion mode must be one of {', '.join(rt.ROOT_MODES)}, got {root_mode!r}")
    if context.object is not None and context.object.mode == "EDIT":
        bpy.ops.object.mode_set(mode="OBJECT")   # edit bones are only written back on leaving Edit Mode
    if any(abs(s - target_obj.matrix_world.to_scale()[0]) > 1e-6 * abs(s) for s in target_obj.matrix_world.to_scale()):
        raise ValueError(f"{target_obj.name!r} is scaled unevenly (object scale {tuple(target_obj.scale)}): "
                         f"apply the scale first (Object > Apply > Scale)")

    src = skeleton_of(source_obj)
    tgt = skeleton_of(target_obj)
    plan = rt.plan_retarget(src, tgt, bone_map)
    _check_movable(target_obj, tgt, plan, root_mode)
    frames = action_frames(src_action)
    src_pose = rt.pose_from_basis(src, action_basis(source_obj, src_action, frames))
    rot_arm = rt.target_rotations(plan, src, tgt, src_pose)
    hips, root_off = rt.root_targets(plan, src, tgt, src_pose, root_mode)

    warnings = []
    if plan.skipped:
        warnings.append("not on the target, skipped: " + rt.describe_missing(rt.check_bone_map(bone_map), plan.skipped))
    switched = _rigify_fk(target_obj) if rigify_fk else {}
    constrained = _needs_evaluation(target_obj, tgt, plan)
    tad = target_obj.animation_data or target_obj.animation_data_create()
    old_action = tad.action
    saved = {pb.name: pb.matrix_basis.copy() for pb in target_obj.pose.bones}
    try:
        tad.action = None
        if constrained:
            basis = _solve_evaluated(context, target_obj, tgt, plan, frames, rot_arm, hips, root_off, progress)
        else:
            static = np.array([np.array(pb.matrix_basis) for pb in target_obj.pose.bones])
            basis = rt.solve_basis(plan, tgt, rot_arm, hips, root_off, static_basis=static)
        action = write_keys(target_obj, action_name(src_action.name, target_obj.name), frames, basis, plan)
    except BaseException:
        tad.action = old_action
        _rigify_fk(target_obj, switched)
        raise
    finally:
        for pb in target_obj.pose.bones:
            pb.matrix_basis = saved[pb.name]
    context.scene.frame_set(context.scene.frame_current)
    return {"action": action, "frames": (int(frames[0]), int(frames[-1])), "plan": plan,
            "evaluated": bool(constrained), "warnings": warnings, "rigify_fk": sorted(switched)}


def write_keys(target_obj, name: str, frames, basis: np.ndarray, plan: rt.RetargetPlan):
    """A new action ``name`` on ``target_obj`` with the movers' keys from ``basis`` (T, B, 4, 4):
    rotations of the mapped bones (their ``rotation_mode``), locations of the carrier and root."""
    ad = target_obj.animation_data or target_obj.animation_data_create()
    ad.action = None
    action = compat.ensure_action(target_obj, name)
    linear = compat.interpolation_value("LINEAR")
    frames = np.asarray(frames, np.float64)
    names = [b.name for b in target_obj.data.bones]
    loc_bones = {plan.carrier} | ({plan.root} if plan.root >= 0 else set())
    movers = list(dict.fromkeys(([plan.root] if plan.root >= 0 else []) + [int(b) for b in plan.tgt]))
    for b in movers:
        pb = target_obj.pose.bones[names[b]]
        mode = pb.rotation_mode
        prop = _ROT_PATHS.get(mode, ("rotation_euler", 3))[0]
        values = rt.rotation_channels(rt.rotation_part(basis[:, b]), mode)
        path = pb.path_from_id(prop)
        for i in range(values.shape[1]):
            compat.set_keys(compat.ensure_fcurve(action, target_obj, path, i, pb.name), frames, values[:, i], linear)
        if b in loc_bones:
            path = pb.path_from_id("location")
            for i in range(3):
                compat.set_keys(compat.ensure_fcurve(action, target_obj, path, i, pb.name), frames,
                                basis[:, b, i, 3], linear)
    return action
