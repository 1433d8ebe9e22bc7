"""Retarget operators and the sidebar sub-panel (3D viewport > N > PyMAF > Retarget).

``pymaf.retarget`` puts a PyMAF rig's action on another armature through a preset bone map
(Rigify metarig / generated rig, Mixamo, UE5, Unity) or a user map; the ``pymaf.retarget_map_*``
operators edit, guess, load and save user maps (JSON files in the extension's user folder).
The work is ``blender/retarget.py``; docs/retargeting.md describes it for users.
"""
from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, PointerProperty, StringProperty

from .common import retarget as rt
from .properties import scene_settings_registration
from .ui import SidebarPanel

PRESET_ITEMS = tuple((k, *rt.PRESET_LABELS[k]) for k in rt.PRESETS) + (
    ("USER", "User Map", "Your own bone map: the one edited below, or a saved map file"),)
ROOT_MODE_ITEMS = (
    ("FULL", "Full", "The hips follow the person's motion, scaled by the leg-length ratio"),
    ("IN_PLACE", "In Place", "Horizontal motion removed: the character moves up and down and turns on the spot"),
    ("ROOT_BONE", "On Root Bone", "Horizontal motion on the map's root bone (UE5's root), the rest on the hips"),
)


def _is_pymaf(self, obj):
    from .blender.retarget import is_pymaf_rig
    return is_pymaf_rig(obj)


def _is_target(self, obj):
    from .blender.retarget import is_pymaf_rig
    return obj.type == "ARMATURE" and not is_pymaf_rig(obj)


class PYMAF_PG_retarget_bone(bpy.types.PropertyGroup):
    """One row of the user bone map: ``name`` is the SMPL joint (or torso / root)."""
    bone: StringProperty(name="Bone", description="The target bone this joint drives (empty: not mapped)")


class PYMAF_PG_retarget(bpy.types.PropertyGroup):
    source: PointerProperty(type=bpy.types.Object, name="Source", poll=_is_pymaf,
                            description="The PyMAF rig whose motion is retargeted (empty: the active PyMAF rig)")
    target: PointerProperty(type=bpy.types.Object, name="Target", poll=_is_target,
                            description="The armature that gets the motion")
    preset: EnumProperty(name="Bone Map", items=PRESET_ITEMS, default="RIGIFY_METARIG",
                         description="Which bone names the target uses")
    root_mode: EnumProperty(name="Root Motion", items=ROOT_MODE_ITEMS, default="FULL")
    rigify_fk: BoolProperty(name="Switch Limbs to FK", default=True,
                            description="Set the Rigify rig's IK/FK switches to FK (the retarget keys the FK controls)")
    bones: CollectionProperty(type=PYMAF_PG_retarget_bone)
    bones_index: IntProperty()
    map_name: StringProperty(name="Name", default="my_rig", description="File name to save the user map under")


def settings(context):
    return context.scene.pymaf_retarget


def editor_map(s) -> dict:
    """The panel's user map (rows with a bone name)."""
    return {row.name: row.bone for row in s.bones if row.bone.strip()}


def fill_editor(s, bone_map: dict) -> None:
    """Show ``bone_map`` in the panel's editor: a row per map key (SMPL joints, torso, root)."""
    s.bones.clear()
    for key in rt.MAP_KEYS:
        row = s.bones.add()
        row.name = key
        v = bone_map.get(key, "")
        row.bone = v if isinstance(v, str) else (v[0] if v else "")


def _named(name: str):
    obj = bpy.data.objects.get(name)
    if obj is None:
        raise ValueError(f"no object named {name!r}")
    return obj


def _source(context, name: str):
    from .blender.retarget import is_pymaf_rig

    if name:
        return _named(name)
    s = settings(context)
    if s.source is not None:
        return s.source
    active = context.active_object
    if is_pymaf_rig(active):
        return active
    if active is not None and active.type == "MESH" and is_pymaf_rig(active.parent):
        return active.parent
    rigs = [o for o in context.scene.objects if is_pymaf_rig(o)]
    if len(rigs) == 1:
        return rigs[0]
    raise ValueError("choose the PyMAF rig to retarget (Source), or make it the active object")


def _target(context, name: str, source):
    from .blender.retarget import is_pymaf_rig

    if name:
        return _named(name)
    s = settings(context)
    if s.target is not None:
        return s.target
    picked = [o for o in context.selected_objects if o.type == "ARMATURE" and o != source and not is_pymaf_rig(o)]
    if len(picked) == 1:
        return picked[0]
    raise ValueError("choose the armature to retarget onto (Target), or select it with the PyMAF rig active")


class PYMAF_OT_retarget(bpy.types.Operator):
    """Put a PyMAF rig's motion on another armature (a new action on it), through a bone map"""
    bl_idname = "pymaf.retarget"
    bl_label = "Retarget"
    bl_options = {"REGISTER", "UNDO"}

    source: StringProperty(name="Source", description="PyMAF rig (default: the panel's, or the active one)")
    target: StringProperty(name="Target", description="Armature to retarget onto (default: the panel's)")
    preset: EnumProperty(name="Bone Map", items=PRESET_ITEMS)
    map_file: StringProperty(name="Map File", subtype="FILE_PATH",
                             description="A saved bone map (.json) for the User Map (default: the panel's map)")
    root_mode: EnumProperty(name="Root Motion", items=ROOT_MODE_ITEMS)
    rigify_fk: BoolProperty(name="Switch Limbs to FK", default=True)

    def execute(self, context):
        from .blender import retarget

        s = settings(context)
        for prop in ("preset", "root_mode", "rigify_fk"):   # unset: the panel's value (shown in the redo panel)
            if not self.properties.is_property_set(prop):
                setattr(self, prop, getattr(s, prop))
        try:
            source = _source(context, self.source)
            target = _target(context, self.target, source)
            if self.preset != "USER":
                bone_map = retarget.preset_map(self.preset)
            elif self.map_file:
                bone_map = retarget.load_map(self.map_file)
            else:
                bone_map = editor_map(s)
                if not bone_map:
                    raise ValueError("the user map is empty: fill it in the panel (Guess, From Preset, Load) "
                                     "or choose a map file")
            wm = context.window_manager
            wm.progress_begin(0, 100)   # the busy cursor shows how far (a constrained rig is solved per frame)
            try:
                info = retarget.retarget_action(context, source, target, bone_map, self.root_mode,
                                                rigify_fk=self.rigify_fk,
                                                progress=lambda f: wm.progress_update(int(100 * f)))
            finally:
                wm.progress_end()
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        f0, f1 = info["frames"]
        msg = f"Retargeted {source.name} onto {target.name}: action {info['action'].name!r}, frames {f0}-{f1}"
        if info["rigify_fk"]:
            msg += f"; limbs switched to FK ({', '.join(info['rigify_fk'])})"
        self.report({"INFO"}, msg)
        for w in info["warnings"]:
            self.report({"WARNING"}, w)
        return {"FINISHED"}


class PYMAF_OT_retarget_map_fill(bpy.types.Operator):
    """Fill the user bone map: guessed from the target's bone names, from the chosen preset, or cleared"""
    bl_idname = "pymaf.retarget_map_fill"
    bl_label = "Fill Bone Map"
    bl_options = {"REGISTER", "UNDO"}

    how: EnumProperty(items=(("GUESS", "Guess", "Match the target's bone names (left/right, thigh/upleg...)"),
                             ("PRESET", "From Preset", "Copy a preset's map (the names the target has)"),
                             ("CLEAR", "Clear", "Empty every row")), name="How", default="PRESET")
    preset: EnumProperty(name="Preset", items=tuple(i for i in PRESET_ITEMS if i[0] != "USER"))

    def execute(self, context):
        from .blender import retarget

        s = settings(context)
        try:
            if self.how == "CLEAR":
                bone_map = {}
            else:
                target = _target(context, "", None)
                if self.how == "GUESS":
                    bone_map = retarget.guess_map(target)
                else:
                    names = [b.name for b in target.data.bones]
                    bone_map, _, _ = rt.resolve_bone_map(retarget.preset_map(self.preset), names)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        fill_editor(s, bone_map)
        if self.how != "CLEAR":
            empty = [k for k in rt.CORE if k not in bone_map]
            level = {"WARNING"} if empty else {"INFO"}
            self.report(level, f"{len(bone_map)} joints mapped" + (f"; still to map: {', '.join(empty)}" if empty else ""))
        return {"FINISHED"}


class PYMAF_OT_retarget_map_save(bpy.types.Operator):
    """Save the user bone map as a preset file in the extension's user folder"""
    bl_idname = "pymaf.retarget_map_save"
    bl_label = "Save Bone Map"

    name: StringProperty(name="Name", description="File name (default: the panel's)")

    def execute(self, context):
        from .blender import retarget

        s = settings(context)
        try:
            path = retarget.save_map(editor_map(s), self.name or s.map_name)
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Bone map saved: {path}")
        return {"FINISHED"}


class PYMAF_OT_retarget_map_load(bpy.types.Operator):
    """Load a saved bone map into the user map (and choose the User Map)"""
    bl_idname = "pymaf.retarget_map_load"
    bl_label = "Load Bone Map"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def invoke(self, context, event):
        from .blender import retarget

        if not self.filepath:
            self.filepath = str(retarget.user_maps_folder()) + os.sep
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return self.execute(context)

    def execute(self, context):
        from .blender import retarget

        s = settings(context)
        try:
            bone_map = retarget.load_map(self.filepath)
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        fill_editor(s, bone_map)
        s.preset = "USER"
        s.map_name = os.path.splitext(os.path.basename(self.filepath))[0]
        self.report({"INFO"}, f"Bone map loaded: {len(bone_map)} joints")
        return {"FINISHED"}


class PYMAF_PT_retarget(SidebarPanel, bpy.types.Panel):
    bl_label = "Retarget"
    bl_parent_id = "PYMAF_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = settings(context)
        col = layout.column(align=True)
        col.prop(s, "source")
        col.prop(s, "target")
        layout.prop(s, "preset")
        if s.preset == "RIGIFY":
            layout.prop(s, "rigify_fk")
        layout.prop(s, "root_mode")
        if s.preset == "USER":
            draw_user_map(layout, s)
        row = layout.row()
        row.scale_y = 1.3
        row.operator("pymaf.retarget", icon="ARMATURE_DATA")


def draw_user_map(layout, s):
    """The user map editor: a row per joint with the target's bone, and the map buttons."""
    box = layout.box()
    row = box.row(align=True)
    row.operator("pymaf.retarget_map_fill", text="Guess").how = "GUESS"
    row.operator_menu_enum("pymaf.retarget_map_fill", "preset", text="From Preset")
    row.operator("pymaf.retarget_map_fill", text="", icon="X").how = "CLEAR"
    if not len(s.bones):
        box.label(text="Empty: Guess from the target's names, or Load a map", icon="INFO")
    target = s.target
    col = box.column(align=True)
    for item in s.bones:
        r = col.row(align=True)
        r.label(text=item.name)
        if target is not None and target.type == "ARMATURE":
            r.prop_search(item, "bone", target.data, "bones", text="")
        else:
            r.prop(item, "bone", text="")
    row = box.row(align=True)
    row.operator("pymaf.retarget_map_load", text="Load", icon="FILE_FOLDER")
    row.prop(s, "map_name", text="")
    row.operator("pymaf.retarget_map_save", text="Save", icon="FILE_TICK")


CLASSES = (PYMAF_PG_retarget_bone, PYMAF_PG_retarget, PYMAF_OT_retarget, PYMAF_OT_retarget_map_fill,
           PYMAF_OT_retarget_map_save, PYMAF_OT_retarget_map_load, PYMAF_PT_retarget)


register, unregister = scene_settings_registration(CLASSES, "pymaf_retarget", PYMAF_PG_retarget)
