"""Version-branching bits of the animation API (Blender 4.2 LTS to 5.x).

Blender 4.4 introduced slotted (layered) actions and 5.0 removed ``Action.fcurves`` /
``Action.groups`` (../shared/reference/blender-notes.md §4). Everything that creates or finds
F-Curves goes through here so the rest of the extension never branches on the version.

Keys are written in bulk (``keyframe_points.add`` + ``foreach_set``), never with
``keyframe_insert``, which is O(n^2) in the number of keys (§5).
"""
from __future__ import annotations

import bpy
import numpy as np

_HAS_GROUP_NAME = bpy.app.version >= (5, 0, 0)  # fcurve_ensure_for_datablock(group_name=) is 5.0+


def interpolation_value(name: str) -> int:
    """Integer of a keyframe interpolation enum item ('LINEAR', 'CONSTANT', ...) for foreach_set."""
    return bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items[name].value


def is_slotted(action) -> bool:
    return hasattr(action, "fcurve_ensure_for_datablock")


def ensure_action(id_data, name: str):
    """The action assigned to ``id_data`` (created and assigned if there is none).

    On 4.4+ the assigned slot is fixed up when the action has one but the ID has none
    (blender-notes §5.1: assigning an existing action to another ID leaves no slot)."""
    ad = id_data.animation_data or id_data.animation_data_create()
    action = ad.action
    if action is None:
        action = bpy.data.actions.new(name)
        ad.action = action
    if is_slotted(action) and getattr(ad, "action_slot", None) is None and len(action.slots):
        for slot in action.slots:
            if getattr(slot, "target_id_type", "UNSPECIFIED") in (id_data.id_type, "UNSPECIFIED"):
                ad.action_slot = slot
                break
    return action


def ensure_fcurve(action, id_data, data_path: str, index: int, group: str):
    """Get or create the F-Curve (data_path, index) that animates ``id_data``, in group ``group``.

    ``action`` must already be assigned to ``id_data`` (``ensure_action``)."""
    if is_slotted(action):
        if _HAS_GROUP_NAME:
            return action.fcurve_ensure_for_datablock(id_data, data_path, index=index, group_name=group)
        fc = action.fcurve_ensure_for_datablock(id_data, data_path, index=index)
        if fc.group is None:  # 4.4 / 4.5: no group_name argument; put it in the group by hand
            from bpy_extras import anim_utils
            cb = anim_utils.action_get_channelbag_for_slot(action, id_data.animation_data.action_slot)
            fc.group = cb.groups.get(group) or cb.groups.new(group)
        return fc
    fc = action.fcurves.find(data_path, index=index)
    return fc or action.fcurves.new(data_path, index=index, action_group=group)


def action_fcurves(action, id_data) -> list:
    """All F-Curves of ``action`` that animate ``id_data`` (its slot on 4.4+)."""
    if action is None:
        return []
    if is_slotted(action):
        from bpy_extras import anim_utils
        slot = id_data.animation_data.action_slot if id_data.animation_data else None
        if slot is None:
            return []
        cb = anim_utils.action_get_channelbag_for_slot(action, slot)
        return list(cb.fcurves) if cb is not None else []
    return list(action.fcurves)


def set_keys(fcurve, frames: np.ndarray, values: np.ndarray, interpolation: int) -> None:
    """Replace all keys of ``fcurve`` with (frames, values), in bulk.

    frames, values (n,); interpolation: ``interpolation_value(...)``. Existing keys are reused
    (re-keying after smoothing keeps the same frames), extra ones removed."""
    kp = fcurve.keyframe_points
    n = len(frames)
    have = len(kp)
    if have < n:
        kp.add(n - have)
    while len(kp) > n:
        kp.remove(kp[len(kp) - 1], fast=True)
    co = np.empty(2 * n, np.float32)
    co[0::2] = frames
    co[1::2] = values
    kp.foreach_set("co", co)
    kp.foreach_set("interpolation", np.full(n, interpolation, np.int32))
    fcurve.update()


def get_keys(fcurve) -> tuple:
    """(frames, values) float32 arrays of an F-Curve's keys."""
    kp = fcurve.keyframe_points
    co = np.empty(2 * len(kp), np.float32)
    kp.foreach_get("co", co)
    return co[0::2].copy(), co[1::2].copy()
