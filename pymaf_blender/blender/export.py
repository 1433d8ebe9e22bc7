"""FBX (Blender round trip / Unity / Unreal), glTF binary and BVH export of imported rigs,
plus the matching re-imports used to check them. Choices and their reasons:
docs/blender-scene.md, "Export".

All three formats bake the animation the scene shows, one key per frame over the scene's
frame range (``import_result`` sets it to the video's), so several people share one timeline
and a frame keeps its number: FBX and glTF write time = Blender frame / fps.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import bpy

from . import compat

_FBX_COMMON = {
    "use_selection": True,
    "object_types": {"ARMATURE", "MESH", "CAMERA", "EMPTY"},
    "use_mesh_modifiers": False,       # the Armature modifier must not be baked into the mesh
    "use_custom_props": False,         # the raw motion data stays in Blender
    "add_leaf_bones": False,           # no "_end" bones: the 24 SMPL joints, nothing else
    "primary_bone_axis": "Y",          # Blender's bone axes as they are
    "secondary_bone_axis": "X",
    "use_armature_deform_only": False,
    "armature_nodetype": "NULL",
    "global_scale": 1.0,
    "apply_unit_scale": True,
    "use_space_transform": True,
    "bake_space_transform": False,     # "experimental, known to be broken with armatures/animations"
    "bake_anim": True,
    "bake_anim_use_all_bones": True,
    # One "Scene" take over the scene frame range, keyed at time = frame / fps. The per-action
    # default would export every action in the file that fits a rig (all people share bone
    # names) as extra takes, each shifted to start at 0 (blender-notes §6.2).
    "bake_anim_use_nla_strips": False,
    "bake_anim_use_all_actions": False,
    "bake_anim_force_startend_keying": True,
    "bake_anim_step": 1.0,
    "bake_anim_simplify_factor": 0.0,  # default 1.0 drops keys: lossy
    "path_mode": "AUTO",
    "embed_textures": False,
}

FBX_PRESETS = {
    # Back into Blender (or Maya/Max/MotionBuilder, which read FBX units and axes): Blender's
    # defaults, -Z forward / Y up, scale kept in the transforms.
    "BLENDER": {**_FBX_COMMON, "axis_forward": "-Z", "axis_up": "Y",
                "apply_scale_options": "FBX_SCALE_NONE", "mesh_smooth_type": "OFF"},
    # Unity (Y up, +Z forward, metres): -Z forward / Y up and "FBX All" so objects come in
    # with scale 1 instead of 100; face smoothing groups for the importer.
    "UNITY": {**_FBX_COMMON, "axis_forward": "-Z", "axis_up": "Y",
              "apply_scale_options": "FBX_SCALE_ALL", "mesh_smooth_type": "FACE"},
    # Unreal (Z up, centimetres): Epic's own Send to Unreal defaults: no axis conversion
    # (Y forward / Z up), "All Local" scale, face smoothing groups. The armature object
    # becomes the skeleton's root bone, with the pelvis under it.
    "UNREAL": {**_FBX_COMMON, "axis_forward": "Y", "axis_up": "Z",
               "apply_scale_options": "FBX_SCALE_NONE", "mesh_smooth_type": "FACE"},
}

# How to read each preset's file back into Blender (tests/blender/test_export.py).
FBX_IMPORT_OPTIONS = {
    "BLENDER": {"axis_forward": "-Z", "axis_up": "Y"},
    "UNITY": {"axis_forward": "-Z", "axis_up": "Y"},
    "UNREAL": {"axis_forward": "Y", "axis_up": "Z"},
}


def _with_children(objects) -> list:
    """The objects plus the meshes skinned to any armature among them (its children)."""
    out = []
    for o in objects:
        if o not in out:
            out.append(o)
        if o.type == "ARMATURE":
            for c in o.children:
                if c.type == "MESH" and c not in out:
                    out.append(c)
    return out


@contextmanager
def _selection(context, objects, active=None):
    """Select exactly ``objects`` (and make ``active`` active) for an operator; restore after."""
    vl = context.view_layer
    before = [o for o in vl.objects if o.select_get()]
    before_active = vl.objects.active
    hidden = []
    try:
        for o in before:
            o.select_set(False)
        for o in objects:
            if o.hide_get():
                hidden.append(o)
                o.hide_set(False)
            o.select_set(True)
        vl.objects.active = active or (objects[0] if objects else None)
        yield
    finally:
        for o in objects:
            try:
                o.select_set(False)
            except ReferenceError:
                pass
        for o in hidden:
            o.hide_set(True)
        for o in before:
            try:
                o.select_set(True)
            except ReferenceError:
                pass
        vl.objects.active = before_active


_VISIBILITY_PATHS = ("hide_viewport", "hide_render")


@contextmanager
def _shown(context, objects):
    """Exporters skip hidden objects, and a body is keyed hidden on frames its person is absent
    (maybe the current one): mute those keys and show the objects while exporting."""
    muted, states = [], []
    for o in objects:
        ad = o.animation_data
        for fc in compat.action_fcurves(ad.action if ad else None, o):
            if fc.data_path in _VISIBILITY_PATHS and not fc.mute:
                fc.mute = True
                muted.append(fc)
        states.append((o, o.hide_viewport, o.hide_render))
        o.hide_viewport = o.hide_render = False
    try:
        yield
    finally:
        for fc in muted:
            fc.mute = False
        for o, hv, hr in states:
            o.hide_viewport, o.hide_render = hv, hr
        context.scene.frame_set(context.scene.frame_current)


@contextmanager
def _true_rate_for_gltf(scene):
    """glTF time = frame / (fps * fps_base) in Blender's glTF add-on (import and export), but a
    rate is fps / fps_base: 29.97 (30 / 1.001) would be written 0.2 % fast. While exporting or
    importing, set fps_base to 1 / fps_base so the add-on's product is the true rate."""
    base = scene.render.fps_base
    if abs(base - 1.0) < 1e-9:
        yield
        return
    scene.render.fps_base = 1.0 / base
    try:
        yield
    finally:
        scene.render.fps_base = base


def _check_path(filepath, ext):
    filepath = os.path.abspath(os.fspath(filepath))
    if not filepath.lower().endswith(ext):
        filepath += ext
    folder = os.path.dirname(filepath)
    if not os.path.isdir(folder):
        raise ValueError(f"folder does not exist: {folder}")
    return filepath


@contextmanager
def complete_only(filepath):
    """Yield a temporary name next to ``filepath`` (same extension) for an exporter (or a
    .blend save) to write; it replaces ``filepath`` only when the writer finished: a failed or interrupted export
    never leaves a half-written file under the final name, nor removes the previous one."""
    folder, name = os.path.split(filepath)
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.partial-{os.getpid()}{ext}")
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise RuntimeError(f"the exporter wrote nothing to {filepath}")
        os.replace(tmp, filepath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _objects(objects):
    objects = [o for o in objects if o is not None]
    if not objects:
        raise ValueError("nothing to export: no objects given")
    return objects


def export_fbx(context, filepath, objects, preset="BLENDER") -> str:
    """Write ``objects`` (armatures bring their skinned bodies) to an FBX with ``preset``
    ('BLENDER', 'UNITY' or 'UNREAL'). -> the absolute path written."""
    if preset not in FBX_PRESETS:
        raise ValueError(f"unknown FBX preset {preset!r}; expected one of {', '.join(FBX_PRESETS)}")
    objs = _with_children(_objects(objects))
    filepath = _check_path(filepath, ".fbx")
    with _shown(context, objs), _selection(context, objs), complete_only(filepath) as tmp:
        bpy.ops.export_scene.fbx(filepath=tmp, check_existing=False, **FBX_PRESETS[preset])
    return filepath


def export_gltf(context, filepath, objects) -> str:
    """Write ``objects`` to a binary glTF (.glb): skins, the baked scene animation (one key per
    frame, no optimisation) and times in true seconds. -> the absolute path written."""
    objs = _with_children(_objects(objects))
    filepath = _check_path(filepath, ".glb")
    scene = context.scene
    with _shown(context, objs), _selection(context, objs), _true_rate_for_gltf(scene), \
            complete_only(filepath) as tmp:
        bpy.ops.export_scene.gltf(
            filepath=tmp, check_existing=False, export_format="GLB", use_selection=True,
            export_animations=True, export_animation_mode="SCENE", export_anim_scene_split_object=True,
            export_frame_range=True,
            export_force_sampling=True, export_frame_step=1, export_anim_slide_to_zero=False,
            export_optimize_animation_size=False, export_skins=True, export_def_bones=False,
            export_apply=False, export_cameras=True, export_yup=True)
    return filepath


def export_bvh(context, filepath, armature_obj) -> str:
    """Write one armature's motion to BVH over the scene frame range (BVH has no axis option:
    Blender's Z-up coordinates, 6 channels on the root). -> the absolute path written."""
    if armature_obj is None or armature_obj.type != "ARMATURE":
        raise ValueError("BVH export needs an armature object")
    filepath = _check_path(filepath, ".bvh")
    scene = context.scene
    with _selection(context, [armature_obj], armature_obj), complete_only(filepath) as tmp:
        bpy.ops.export_anim.bvh(filepath=tmp, check_existing=False, global_scale=1.0,
                                frame_start=scene.frame_start, frame_end=scene.frame_end,
                                rotate_mode="NATIVE", root_transform_only=False)
    return filepath


# --------------------------------------------------------------------------- re-import

def _new_objects(before) -> list:
    return [o for o in bpy.data.objects if o.name not in before]


def import_fbx(context, filepath, preset="BLENDER", **options) -> list:
    """Read an FBX written by ``export_fbx(preset=...)`` back, frames and rate exact.

    Frames: the file's times are Blender frame / fps, so ``anim_offset=0``. Rate: Blender's FBX
    importer converts times with the integer ``scene.render.fps`` and ignores ``fps_base``, so
    a 29.97 fps file lands 0.1 % late per frame; keys are divided by ``fps_base`` afterwards.
    ``options`` go to ``bpy.ops.import_scene.fbx`` (override the preset's). -> the new objects."""
    before = set(bpy.data.objects.keys())
    kwargs = {"use_anim": True, "anim_offset": 0.0, "ignore_leaf_bones": False,
              "automatic_bone_orientation": False, **FBX_IMPORT_OPTIONS[preset], **options}
    bpy.ops.import_scene.fbx(filepath=os.fspath(filepath), **kwargs)
    new = _new_objects(before)
    base = context.scene.render.fps_base
    if abs(base - 1.0) > 1e-9:
        seen = set()
        for o in new:
            ad = o.animation_data
            if ad is None or ad.action is None or ad.action.name in seen:
                continue
            seen.add(ad.action.name)
            for fc in compat.action_fcurves(ad.action, o):
                for k in fc.keyframe_points:
                    for attr in ("co", "handle_left", "handle_right"):
                        v = getattr(k, attr)
                        setattr(k, attr, (v[0] / base, v[1]))
                fc.update()
    return new


def import_gltf(context, filepath, fps=None) -> list:
    """Read a glTF/GLB written by ``export_gltf`` back. glTF stores seconds and no frame rate:
    ``fps`` (default: the scene's) sets the scene rate first. -> the new objects."""
    from . import timing
    scene = context.scene
    if fps is not None:
        scene.render.fps, scene.render.fps_base = timing.blender_fps(fps)
    before = set(bpy.data.objects.keys())
    with _true_rate_for_gltf(scene):
        bpy.ops.import_scene.gltf(filepath=os.fspath(filepath), disable_bone_shape=True)
    new = _new_objects(before)
    # The importer makes the file's first animation the active action and puts the others on
    # (muted) NLA tracks; ``export_gltf`` writes one animation per object, named after it.
    for o in new:
        ad = o.animation_data
        if ad is None or ad.action is not None:
            continue
        for track in list(ad.nla_tracks):
            acts = [s.action for s in track.strips if s.action is not None]
            if len(acts) == 1 and (acts[0].name == o.name or track.name == o.name):
                ad.action = acts[0]
                compat.ensure_action(o, acts[0].name)
                ad.nla_tracks.remove(track)
                break
    return new


def import_bvh(context, filepath, frame_start=1) -> list:
    """Read a BVH written by ``export_bvh`` back: Blender Z-up axes (``axis_forward='Y',
    axis_up='Z'``), first frame at ``frame_start`` (BVH stores no start frame), the scene rate
    from the file's frame time (6 decimals: 29.97 comes back as 29.9697). -> the new objects."""
    before = set(bpy.data.objects.keys())
    bpy.ops.import_anim.bvh(filepath=os.fspath(filepath), target="ARMATURE", global_scale=1.0,
                            frame_start=int(frame_start), use_fps_scale=False, update_scene_fps=True,
                            update_scene_duration=True, rotate_mode="NATIVE",
                            axis_forward="Y", axis_up="Z")
    return _new_objects(before)
