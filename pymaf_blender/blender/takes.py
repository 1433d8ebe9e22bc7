"""Takes: each import keys one action per person (``<import>_PyMAF_<id>_motion``, the import
named after the video); here those actions go onto NLA tracks so that imports of the same
shot made with other settings (smoothing, estimator, world) can be compared and blended on
one rig. docs/blender-scene.md, "Takes and NLA".
"""
from __future__ import annotations

import os

from . import animation, compat


def same_person(a, b) -> bool:
    """Two PyMAF rigs of the same person of the same video (another import, another take)."""
    ra, rb = animation.load_raw(a), animation.load_raw(b)
    va, vb = (os.path.basename(str(r.get("video") or "")) for r in (ra, rb))
    return ra["track_id"] == rb["track_id"] and va == vb and bool(va)


def _has_track_for(ad, action) -> bool:
    return any(s.action == action for t in ad.nla_tracks for s in t.strips)


def push_action(arm_obj, action, mute: bool = False):
    """Put ``action`` on a new NLA track of ``arm_obj`` named after it, its strip where its keys
    are (frame numbers kept). -> the track (the existing one when the action is already there)."""
    ad = arm_obj.animation_data or arm_obj.animation_data_create()
    for track in ad.nla_tracks:
        if any(s.action == action for s in track.strips):
            return track
    track = ad.nla_tracks.new()
    track.name = action.name
    start = int(round(action.frame_range[0]))
    strip = track.strips.new(action.name, start, action)
    strip.blend_type = "REPLACE"
    strip.extrapolation = "NOTHING"   # outside its frames a take does not hold its last pose
    track.mute = mute
    return track


def push_takes(arm_obj, rigs=(), gather: bool = True) -> list:
    """Push the rig's own motion to the NLA (the active action is cleared, so the tracks play)
    and, with ``gather``, every other take of the same person among ``rigs`` as muted tracks
    below it. -> names of the tracks now on the rig, bottom to top."""
    own = animation.motion_action(arm_obj)
    if own is None:
        raise ValueError(f"{arm_obj.name!r} has no motion to push (no action)")
    ad = arm_obj.animation_data
    others = [animation.motion_action(r) for r in rigs if r is not arm_obj and same_person(arm_obj, r)] if gather else []
    for act in others:
        if act is not None and act != own and not _has_track_for(ad, act):
            push_action(arm_obj, act, mute=True)
    push_action(arm_obj, own, mute=False)
    if ad.action is not None:
        ad.action = None
    return [t.name for t in ad.nla_tracks]


def restore_active(arm_obj) -> None:
    """Undo ``push_takes``'s clearing: the rig's own motion active again (its NLA tracks stay)."""
    own = animation.motion_action(arm_obj)
    if own is not None and arm_obj.animation_data.action is None:
        arm_obj.animation_data.action = own
        compat.ensure_action(arm_obj, own.name)   # 4.4+: the slot
