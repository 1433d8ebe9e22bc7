"""FBX (Blender / Unity / Unreal presets), binary glTF and BVH export of imported rigs, made for
game engines and DCCs and checked through Blender's own importers with default options.
Choices, their reasons and the measured round trips: docs/blender-scene.md, "Export".

* **One file per character** by default: ``<stem>_<track id>.<ext>`` holds one armature and its
  body (and the scene camera when asked). ``per_character=False`` writes everything to one
  file, each skeleton's bones prefixed ``<track id>_`` so no bone name repeats.
* **The clip** covers the character's own frames, first to last present frame (all characters'
  in one file: the first frame anyone is present to the last), and **starts at 0 s**.
* **Absent frames are hidden, not frozen**: the armature object (the skeleton's root node) is
  keyed to scale 0 on them, CONSTANT, so the skeleton and the skinned body collapse to a point
  and present frames are untouched. BVH has no scale: a character with gaps gets one file
  (take) per run of present frames, ``<stem>_<id>_<first>-<last>.bvh``.
* **True frame rate**: FBX ``TimeMode``/``CustomFrameRate``, glTF times in true seconds, BVH
  ``Frame Time`` with 10 digits.

The scene is never changed: the FBX and glTF exporters see temporary copies of the rigs (and of
the camera) whose keys are shifted to start at frame 0, with the scale keys, prefixed bones or
centimetre data added; the copies carry the original names (the originals are renamed while the
exporter runs) and are removed afterwards, and every scene setting touched is restored.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager

import bpy
import numpy as np
from mathutils import Matrix

from ..common import bvh, gaps
from . import compat, datablocks, timing

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
    # One "Scene" take over the scene frame range (set to the clip, starting at frame 0 while
    # exporting), time = frame / fps. The per-action mode would add every action in the file
    # that fits a rig as an extra take (all people share bone names; blender-notes §6.2).
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
    # defaults, -Z forward / Y up, centimetre file units with the metre scale on the root nodes.
    "BLENDER": {**_FBX_COMMON, "axis_forward": "-Z", "axis_up": "Y",
                "apply_scale_options": "FBX_SCALE_NONE", "mesh_smooth_type": "OFF"},
    # Unity (Y up, metres): -Z forward / Y up and "FBX All": file units metres, root scale 1
    # (Unity's "Convert Units" reads them); face smoothing groups for the importer.
    "UNITY": {**_FBX_COMMON, "axis_forward": "-Z", "axis_up": "Y",
              "apply_scale_options": "FBX_SCALE_ALL", "mesh_smooth_type": "FACE"},
    # Unreal (Z up, centimetres): no axis conversion (Y forward / Z up, as Epic's Send to
    # Unreal), and the data itself in centimetres: the copies are scaled by 100 and written with
    # file units cm and scale 1 on every node, so Unreal reads the right size whether or not
    # "Convert Scene Unit" is ticked, and the root bone has no 100x scale.
    "UNREAL": {**_FBX_COMMON, "axis_forward": "Y", "axis_up": "Z", "apply_unit_scale": False,
               "global_scale": 0.01, "apply_scale_options": "FBX_SCALE_NONE", "mesh_smooth_type": "FACE"},
}
# Presets whose copies are scaled to centimetre numbers before the export (see above).
_CENTIMETRE_PRESETS = {"UNREAL": 100.0}

# Blender Z up -> Y up (x, y, z) -> (x, z, -y): the inverse of what Blender's BVH importer
# applies by default (axis_forward='-Z', axis_up='Y'); glTF's convention too.
Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_TMP = "~pymaf-export"


# --------------------------------------------------------------------------- what is exported

def _armatures(objects) -> list:
    """The armatures to export (in order, no repeats); anything else is refused."""
    if objects is None:
        objects = []
    elif isinstance(objects, bpy.types.Object):
        objects = [objects]
    out = []
    for o in objects:
        if o is None:
            continue
        if o.type != "ARMATURE":
            raise ValueError(f"{o.name!r} is not an armature: export takes PyMAF rigs (armatures); "
                             "their bodies come with them")
        if o not in out:
            out.append(o)
    if not out:
        raise ValueError("nothing to export: no armature given")
    return out


def present_frames(arm, scene=None) -> np.ndarray:
    """Scene frames (sorted ints) on which the character is present: the track's frames for a
    PyMAF rig (with the short gaps it is shown across, ``gaps.shown_frames``), else every
    frame of its action's range (else of the scene's)."""
    from . import animation
    try:
        raw = animation.load_raw(arm)
        return gaps.shown_frames(np.asarray(raw["frames"], np.int64) + int(raw["frame_offset"]), raw["fps"])
    except (ValueError, KeyError):
        pass
    ad = arm.animation_data
    if ad is not None and ad.action is not None:
        lo, hi = ad.action.frame_range
        return np.arange(int(np.ceil(lo - 1e-6)), int(np.floor(hi + 1e-6)) + 1, dtype=np.int64)
    scene = scene or bpy.context.scene
    return np.arange(scene.frame_start, scene.frame_end + 1, dtype=np.int64)


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", str(text)).strip("_") or "rig"


def character_labels(arms) -> dict:
    """{armature: label}: the track id, or the armature's name where ids repeat (two imports
    of one video) or are missing."""
    def track_id(arm):
        try:
            return str(arm["pymaf"]["track_id"])
        except (KeyError, TypeError):
            return ""
    ids = {a: track_id(a) for a in arms}
    out = {}
    for a in arms:
        tid = ids[a]
        unique = tid and list(ids.values()).count(tid) == 1
        out[a] = _safe(tid if unique else a.name)
    return out


def _stem(filepath, ext) -> str:
    filepath = os.path.abspath(os.fspath(filepath))
    if filepath.lower().endswith(ext):
        filepath = filepath[:-len(ext)]
    folder = os.path.dirname(filepath)
    if not os.path.isdir(folder):
        raise ValueError(f"folder does not exist: {folder}")
    return filepath


def _plan(filepath, ext, arms, per_character) -> list:
    """[(path, [armatures], first frame, last frame)] for the files to write: per character
    ``<stem>_<id><ext>``, or everyone in ``<stem><ext>`` (also a single character's file)."""
    stem = _stem(filepath, ext)
    frames = {a: present_frames(a) for a in arms}
    for a, f in frames.items():
        if len(f) == 0:
            raise ValueError(f"{a.name!r} has no frames to export")
    if per_character and len(arms) > 1:
        labels = character_labels(arms)
        return [(f"{stem}_{labels[a]}{ext}", [a], int(frames[a][0]), int(frames[a][-1])) for a in arms]
    return [(stem + ext, list(arms), min(int(f[0]) for f in frames.values()),
             max(int(f[-1]) for f in frames.values()))]


def file_paths(filepath, ext, arms, per_character) -> list:
    """The absolute paths ``export_*`` writes for these armatures (``_plan``'s)."""
    return [path for path, *_ in _plan(filepath, ext, list(arms), per_character)]


# --------------------------------------------------------------------------- scene helpers

@contextmanager
def _selection(context, objects, active=None):
    """Select exactly ``objects`` (and make ``active`` active) for an operator; restore after."""
    vl = context.view_layer
    before = [o for o in vl.objects if o.select_get()]
    before_active = vl.objects.active
    try:
        for o in before:
            o.select_set(False)
        for o in objects:
            o.select_set(True)
        vl.objects.active = active or (objects[0] if objects else None)
        yield
    finally:
        for o in objects:
            try:
                o.select_set(False)
            except ReferenceError:
                pass
        for o in before:
            try:
                o.select_set(True)
            except ReferenceError:
                pass
        vl.objects.active = before_active


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


@contextmanager
def _clip_range(scene, length):
    """The scene range 0 .. length - 1 while exporting (what the exporters bake), the current
    frame one past it; restored. The exporters write static values (FBX Lcl properties, glTF
    node transforms, from which both importers build the rest pose) at the current frame: past
    the clip the scale keys show every character (a zero scale there makes Blender's FBX
    importer drop the bones and its glTF importer fail)."""
    saved = (scene.frame_start, scene.frame_end, scene.frame_current, scene.use_preview_range)
    try:
        scene.frame_start = 0
        scene.frame_end = max(0, length - 1)
        scene.use_preview_range = False
        scene.frame_set(length)
        yield
    finally:
        scene.frame_start, scene.frame_end = saved[0], saved[1]
        scene.use_preview_range = saved[3]
        scene.frame_set(saved[2])


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


# --------------------------------------------------------------------------- temporary copies

def _all_fcurves(action) -> list:
    """Every F-Curve of ``action``, all slots (a copy made for the export: ours alone)."""
    if not compat.is_slotted(action):
        return list(action.fcurves)
    return [fc for layer in action.layers for strip in layer.strips for cb in strip.channelbags
            for fc in cb.fcurves]


def _animation_actions(idb) -> list:
    ad = getattr(idb, "animation_data", None)
    if ad is None:
        return []
    acts = [ad.action] if ad.action is not None else []
    return acts + [s.action for t in ad.nla_tracks for s in t.strips if s.action is not None]


def _edit_keys(fc, frame_shift=0.0, value_scale=1.0) -> None:
    kp = fc.keyframe_points
    n = len(kp)
    if n == 0:
        return
    for attr in ("co", "handle_left", "handle_right"):
        a = np.empty(2 * n, np.float64)
        kp.foreach_get(attr, a)
        a[0::2] += frame_shift
        a[1::2] *= value_scale
        kp.foreach_set(attr, a)
    fc.update()


class _Stage:
    """Temporary copies of rigs and camera for one file; ``close`` removes them and gives the
    originals their names back."""

    def __init__(self, context):
        self.context = context
        self.scene = context.scene
        self.coll = bpy.data.collections.new(_TMP)
        self.scene.collection.children.link(self.coll)
        self.made = []      # datablocks to remove (objects first)
        self.renamed = []   # (original datablock, its name)
        self.selected = []  # the copies to export

    def _take_name(self, original, copy):
        name = original.name
        k = 0
        while True:
            tmp = f"{_TMP}-{k}"
            k += 1
            if tmp not in bpy.data.objects and tmp not in bpy.data.meshes and tmp not in bpy.data.armatures \
                    and tmp not in bpy.data.cameras:
                break
        self.renamed.append((original, name))
        original.name = tmp
        copy.name = name

    def _copy_action(self, action):
        act = action.copy()
        self.made.append(act)
        return act

    def _own_animation(self, id_copy, shift, copy_strip_actions):
        """Shift a copied ID's animation by ``shift`` frames: its active action becomes its own
        copy, keys shifted; NLA strips are moved (their actions copied too with
        ``copy_strip_actions``, for edits that must not reach the originals)."""
        ad = id_copy.animation_data
        if ad is None:
            return
        for track in ad.nla_tracks:
            for strip in sorted(track.strips, key=lambda st: st.frame_start):
                if copy_strip_actions and strip.action is not None:
                    slot = getattr(strip, "action_slot", None)
                    strip.action = self._copy_action(strip.action)
                    if slot is not None and getattr(strip, "action_slot", None) is None:
                        strip.action_slot = next((s for s in strip.action.slots if s.identifier == slot.identifier),
                                                 None)
                strip.frame_start_ui = strip.frame_start + shift     # moves the strip, keeps its length
        if ad.action is not None:
            act = self._copy_action(ad.action)
            ad.action = act
            compat.ensure_action(id_copy, act.name)
            for fc in _all_fcurves(act):
                _edit_keys(fc, frame_shift=shift)

    def copy(self, original, shift, copy_data=False):
        cp = original.copy()
        self.made.insert(0, cp)
        if "pymaf" in cp.keys():
            del cp["pymaf"]           # the raw motion: large, and not exported
        if copy_data and original.data is not None:
            data = original.data.copy()
            self.made.append(data)
            cp.data = data
            self._take_name(original.data, data)
            self._own_animation(data, shift, copy_data)
        self._take_name(original, cp)
        self.coll.objects.link(cp)
        cp.hide_viewport = cp.hide_render = cp.hide_select = False
        cp.hide_set(False)
        self._own_animation(cp, shift, copy_data)
        self.selected.append(cp)
        return cp

    def close(self):
        datablocks.remove(reversed(self.made))   # in the order made: objects first
        try:
            bpy.data.collections.remove(self.coll)
        except ReferenceError:
            pass
        for original, name in reversed(self.renamed):
            try:
                original.name = name
            except ReferenceError:
                pass


def _hide_absent_keys(obj, present, lo, hi, shift):
    """Key ``obj``'s scale: its own on present frames, 0 on absent ones (CONSTANT), over the
    file's frames lo..hi (scene numbering), written at frame + shift. -> the action keyed (None
    when the character is present throughout)."""
    present = set(int(f) for f in present)
    frames, visible = [], []
    for f in range(lo, hi + 2):         # hi + 1: shown again past the clip (see _clip_range)
        v = f in present or f > hi
        if not visible or visible[-1] != v:
            frames.append(f + shift)
            visible.append(v)
    if all(visible):
        return None
    act = compat.ensure_action(obj, f"{obj.name}_export")
    const = compat.interpolation_value("CONSTANT")
    for i in range(3):
        fc = compat.ensure_fcurve(act, obj, "scale", i, "Object Transforms")
        vals = np.where(visible, float(obj.scale[i]), 0.0)
        compat.set_keys(fc, np.asarray(frames, np.float64), vals, const)
    return act


def _freeze_data(obj, frame) -> None:
    """Set ``obj.data``'s animated properties to their values at ``frame`` and drop the keys
    (glTF: a camera's field of view is static without KHR_animation_pointer)."""
    data = obj.data
    ad = data.animation_data
    if ad is None or ad.action is None:
        return
    for fc in compat.action_fcurves(ad.action, data):
        path, _, attr = fc.data_path.rpartition(".")
        try:
            owner = data.path_resolve(path) if path else data
            cur = getattr(owner, attr)
            if hasattr(cur, "__len__"):
                cur[fc.array_index] = fc.evaluate(frame)
            else:
                setattr(owner, attr, fc.evaluate(frame))
        except (ValueError, AttributeError, TypeError):
            pass
    data.animation_data_clear()


def _rename_bones(arm_copy, bodies, prefix) -> None:
    """Prefix every bone of ``arm_copy`` (its own armature data); vertex groups of ``bodies``
    and the copy's F-Curve paths follow (Blender renames them too; checked and finished here)."""
    mapping = {}
    for b in arm_copy.data.bones:
        old = b.name
        b.name = prefix + old
        mapping[old] = b.name
    for body in bodies:
        for vg in body.vertex_groups:
            if vg.name in mapping:
                vg.name = mapping[vg.name]
    for act in _animation_actions(arm_copy):       # the copy's own actions (see _own_animation)
        for fc in _all_fcurves(act):
            m = re.match(r'pose\.bones\["(.*?)"\](.*)', fc.data_path)
            if m and m.group(1) in mapping:
                fc.data_path = f'pose.bones["{mapping[m.group(1)]}"]{m.group(2)}'


def _to_centimetres(stage, factor) -> None:
    """Scale the staged copies' world by ``factor`` (data, locations, location keys, clipping)."""
    for ob in stage.selected:
        ob.location = ob.location * factor
        pi = ob.matrix_parent_inverse.copy()
        pi.translation = pi.translation * factor
        ob.matrix_parent_inverse = pi
        if ob.type in ("ARMATURE", "MESH"):
            ob.data.transform(Matrix.Scale(factor, 4))
        if ob.type == "ARMATURE":
            for pb in ob.pose.bones:
                pb.location = pb.location * factor
        if ob.type == "CAMERA":
            ob.data.clip_start *= factor
            ob.data.clip_end *= factor
        for act in _animation_actions(ob):             # the copy's own actions (see _own_animation)
            for fc in _all_fcurves(act):
                if fc.data_path == "location" or fc.data_path.endswith(".location"):
                    _edit_keys(fc, value_scale=factor)


@contextmanager
def _staged(context, arms, lo, hi, *, camera=None, hide_absent=True, prefix_bones=False, centimetres=None,
            static_camera_data=False):
    """Copies of ``arms`` (with their bodies) and of ``camera`` for one file: keys shifted so
    scene frame ``lo`` is frame 0, absent frames keyed hidden, bones prefixed, data in
    centimetres, as asked; the scene range is 0 .. hi - lo meanwhile. Yields the copies."""
    stage = _Stage(context)
    shift = -float(lo)
    try:
        labels = character_labels(arms)
        for arm in arms:
            bodies = [c for c in arm.children if c.type == "MESH"]
            copy_data = bool(prefix_bones or centimetres)
            ac = stage.copy(arm, shift, copy_data=copy_data)
            body_copies = []
            for body in bodies:
                bc = stage.copy(body, shift, copy_data=copy_data)
                bc.animation_data_clear()      # the visibility keys: hiding is the scale keys' job
                bc.hide_viewport = bc.hide_render = False
                bc.parent = ac
                for mod in bc.modifiers:
                    if mod.type == "ARMATURE" and mod.object == arm:
                        mod.object = ac
                body_copies.append(bc)
            if prefix_bones:
                _rename_bones(ac, body_copies, f"{labels[arm]}_")
            if hide_absent:
                act = ac.animation_data.action if ac.animation_data else None
                made = _hide_absent_keys(ac, present_frames(arm), lo, hi, shift)
                if made is not None and made is not act:
                    stage.made.append(made)
        if camera is not None:
            cc = stage.copy(camera, shift, copy_data=True)
            if static_camera_data:
                _freeze_data(cc, 0.0)
        if centimetres:
            _to_centimetres(stage, centimetres)
        with _clip_range(context.scene, hi - lo + 1):
            yield stage.selected
    finally:
        stage.close()


# --------------------------------------------------------------------------- exporters

def _camera(context, camera):
    """``camera``: True for the scene camera, a camera object, or False/None."""
    if camera is None or camera is False:
        return None
    if camera is True:
        camera = context.scene.camera
        if camera is None:
            raise ValueError("the scene has no camera to include")
    if getattr(camera, "type", None) != "CAMERA":
        raise ValueError(f"{getattr(camera, 'name', camera)!r} is not a camera object")
    return camera


def _write_files(context, filepath, ext, objects, *, per_character, camera, hide_absent, progress, write,
                 **staging) -> list:
    """The files of ``_plan``, each written by ``write(temporary path, camera or None)`` while its
    characters are staged (``_staged``: the clip from 0 s, absent frames hidden, bones prefixed
    when several skeletons share the file) and selected. -> the absolute paths written."""
    arms = _armatures(objects)
    cam = _camera(context, camera)
    plan = _plan(filepath, ext, arms, per_character)
    written = []
    for k, (path, group, lo, hi) in enumerate(plan):
        if progress:
            progress(k, len(plan))
        with _staged(context, group, lo, hi, camera=cam, hide_absent=hide_absent,
                     prefix_bones=len(group) > 1, **staging) as objs, \
                _selection(context, objs), complete_only(path) as tmp:
            write(tmp, cam)
        written.append(path)
    return written


def export_fbx(context, filepath, objects, preset="BLENDER", *, per_character=True, camera=False,
               hide_absent=True, progress=None) -> list:
    """Write the armatures ``objects`` (with their skinned bodies) to FBX with ``preset``
    ('BLENDER', 'UNITY' or 'UNREAL'): one file per character ``<stem>_<id>.fbx`` (default) or
    all in ``<stem>.fbx`` with bones prefixed ``<id>_``; ``camera``: True (the scene camera) or
    a camera object to include. -> the absolute paths written."""
    if preset not in FBX_PRESETS:
        raise ValueError(f"unknown FBX preset {preset!r}; expected one of {', '.join(FBX_PRESETS)}")

    def write(tmp, _cam):
        bpy.ops.export_scene.fbx(filepath=tmp, check_existing=False, **FBX_PRESETS[preset])
    return _write_files(context, filepath, ".fbx", objects, per_character=per_character, camera=camera,
                        hide_absent=hide_absent, progress=progress, write=write,
                        centimetres=_CENTIMETRE_PRESETS.get(preset))


def export_gltf(context, filepath, objects, *, per_character=True, camera=False, hide_absent=True,
                progress=None) -> list:
    """Write the armatures ``objects`` to binary glTF (.glb): skins, one animation ("the
    scene's") sampled on every frame, times in true seconds from 0; files and options as
    ``export_fbx``. -> the absolute paths written."""
    def write(tmp, cam):
        with _true_rate_for_gltf(context.scene):
            bpy.ops.export_scene.gltf(
                filepath=tmp, check_existing=False, export_format="GLB", use_selection=True,
                export_animations=True, export_animation_mode="SCENE", export_anim_scene_split_object=False,
                export_frame_range=True, export_force_sampling=True, export_frame_step=1,
                export_anim_slide_to_zero=False, export_optimize_animation_size=False,
                export_skins=True, export_def_bones=False, export_apply=False,
                export_current_frame=True,     # static transforms from one past the clip: _clip_range
                export_cameras=cam is not None, export_yup=True)
    return _write_files(context, filepath, ".glb", objects, per_character=per_character, camera=camera,
                        hide_absent=hide_absent, progress=progress, write=write, static_camera_data=True)


def scene_frame_time(scene) -> float:
    """Seconds per frame of the scene's rate; ``fps_base`` is a float32 (1.001 reads back as
    1.0010000467), so it is taken to 6 decimals: 29.97 gives 1001 / 30000 s exactly."""
    return round(scene.render.fps_base, 6) / scene.render.fps


def _bvh_take(context, arm, frames) -> dict:
    """World-space motion of ``arm`` on ``frames`` (scene numbering) for ``bvh.write_bvh``:
    Y up, the root's position absolute, rotations relative to the rest pose."""
    scene = context.scene
    bones = list(arm.data.bones)
    order, seen = [], set()
    while len(order) < len(bones):           # parents before children
        for b in bones:
            if b.name not in seen and (b.parent is None or b.parent.name in seen):
                order.append(b)
                seen.add(b.name)
    if sum(b.parent is None for b in order) != 1:
        raise ValueError(f"{arm.name!r}: BVH needs a skeleton with one root bone")
    names = [b.name for b in order]
    index = {n: i for i, n in enumerate(names)}
    parents = np.array([index[b.parent.name] if b.parent else -1 for b in order])

    def unit(R):
        return R / np.linalg.norm(R, axis=-2, keepdims=True)

    scene.frame_set(int(frames[0]))
    Mo = np.array(arm.matrix_world)
    rest = np.array([Mo @ np.array(b.matrix_local) for b in order])
    R_rest = unit(rest[:, :3, :3])
    head = rest[:, :3, 3]
    offsets = head - head[np.maximum(parents, 0)]
    ends = {j: Y_UP @ (Mo[:3, :3] @ np.array(b.tail_local) + Mo[:3, 3] - head[j])
            for j, b in enumerate(order) if not b.children}
    pbs = [arm.pose.bones[n] for n in names]
    T, J = len(frames), len(order)
    root = np.empty((T, 3))
    local = np.empty((T, J, 3, 3))
    for t, f in enumerate(frames):
        scene.frame_set(int(f))
        Mw = np.array(arm.matrix_world)
        M = np.array([Mw @ np.array(pb.matrix) for pb in pbs])
        G = unit(M[:, :3, :3]) @ np.swapaxes(R_rest, -1, -2)           # rest -> posed, world axes
        Gp = G[np.maximum(parents, 0)]
        L = np.swapaxes(Gp, -1, -2) @ G
        L[0] = G[0]
        local[t] = Y_UP @ L @ Y_UP.T
        root[t] = Y_UP @ M[0, :3, 3]
    return {"names": [re.sub(r"\s+", "_", n) for n in names], "parents": parents,
            "offsets": offsets @ Y_UP.T, "root_positions": root, "rotations": local, "end_sites": ends}


def export_bvh(context, filepath, objects, *, split_gaps=True, progress=None) -> list:
    """Write each armature's motion to BVH: ``<stem>_<id>.bvh`` (a single character:
    ``<stem>.bvh``), or one take per run of present frames ``<stem>_<id>_<first>-<last>.bvh``
    (scene frames) where the character has gaps
    (``split_gaps=False``: one file over first..last, gaps as the rig shows them). Y up, metres,
    the root's position in world space, ZXY rotation channels, true frame time; read right by
    Blender's importer with its defaults. -> the absolute paths written."""
    arms = _armatures(objects)
    stem = _stem(filepath, ".bvh")
    labels = character_labels(arms)
    scene = context.scene
    frame_time = scene_frame_time(scene)
    jobs = []
    for arm in arms:
        runs = timing.present_runs(present_frames(arm, scene))
        if not runs:
            raise ValueError(f"{arm.name!r} has no frames to export")
        name = stem if len(arms) == 1 else f"{stem}_{labels[arm]}"   # one character: the name given
        if not split_gaps or len(runs) == 1:
            jobs.append((f"{name}.bvh", arm, runs[0][0], runs[-1][1]))
        else:
            jobs += [(f"{name}_{a}-{b}.bvh", arm, a, b) for a, b in runs]
    written = []
    current = scene.frame_current
    try:
        for k, (path, arm, a, b) in enumerate(jobs):
            if progress:
                progress(k, len(jobs))
            take = _bvh_take(context, arm, np.arange(a, b + 1))
            with complete_only(path) as tmp:
                bvh.write_bvh(tmp, take["names"], take["parents"], take["offsets"], take["root_positions"],
                              take["rotations"], frame_time, end_sites=take["end_sites"])
            written.append(path)
    finally:
        scene.frame_set(current)
    return written


# --------------------------------------------------------------------------- exact re-import

def _new_objects(before) -> list:
    return [o for o in bpy.data.objects if o.name not in before]


def _rescale_key_times(objects, factor, origin) -> None:
    seen = set()
    for o in objects:
        for idb in (o, o.data):
            ad = getattr(idb, "animation_data", None)
            if ad is None or ad.action is None or ad.action.name in seen:
                continue
            seen.add(ad.action.name)
            for fc in compat.action_fcurves(ad.action, idb):
                kp = fc.keyframe_points
                for attr in ("co", "handle_left", "handle_right"):
                    a = np.empty(2 * len(kp), np.float64)
                    kp.foreach_get(attr, a)
                    a[0::2] = origin + (a[0::2] - origin) * factor
                    kp.foreach_set(attr, a)
                fc.update()


def import_fbx(context, filepath, **options) -> list:
    """Blender's FBX importer (its defaults, or ``options``), then the frame rate made exact:
    the importer converts file seconds with the integer ``scene.render.fps`` (30 for 29.97), so
    key k of an NTSC file lands on frame 1 + 1.001 k; here it is moved to 1 + k (key times
    divided by ``fps_base``). -> the new objects."""
    before = set(bpy.data.objects.keys())
    bpy.ops.import_scene.fbx(filepath=os.fspath(filepath), **options)
    new = _new_objects(before)
    base = context.scene.render.fps_base
    if abs(base - 1.0) > 1e-9:
        _rescale_key_times(new, 1.0 / base, float(options.get("anim_offset", 1.0)))
    return new


def import_gltf(context, filepath, fps=None, **options) -> list:
    """Blender's glTF importer (its defaults, or ``options``) at the true rate: glTF stores seconds
    and no rate, so ``fps`` (default: the scene's) sets the scene's first, and the add-on's
    fps x fps_base is made the true rate while it reads (time 0 lands on frame 0, its
    convention). -> the new objects."""
    scene = context.scene
    if fps is not None:
        scene.render.fps, scene.render.fps_base = timing.blender_fps(fps)
    before = set(bpy.data.objects.keys())
    with _true_rate_for_gltf(scene):
        bpy.ops.import_scene.gltf(filepath=os.fspath(filepath), **options)
    return _new_objects(before)
