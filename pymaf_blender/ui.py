"""The sidebar panel (3D viewport > N > PyMAF)."""
from __future__ import annotations

import os

import bpy

from . import paths, tasks
from .preferences import draw_lines, draw_task


class PYMAF_UL_tracks(bpy.types.UIList):
    """The people Analyze found: tick whom to import."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.prop(item, "use", text="")
        row.label(text=f"Person {item.track_id}", icon="ARMATURE_DATA")
        sub = row.row()
        sub.alignment = "RIGHT"
        sub.label(text=f"frames {item.first_frame}-{item.last_frame} ({item.frame_count})")


class SidebarPanel:
    """The 3D viewport's sidebar tab "PyMAF" (every panel of the add-on, the sub-panels too)."""
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "PyMAF"


class PYMAF_PT_main(SidebarPanel, bpy.types.Panel):
    bl_label = "PyMAF: Video to Rig"

    def draw(self, context):
        layout = self.layout
        s = context.scene.pymaf
        prefs = paths.preferences(context)
        py, source = paths.find_engine_python(prefs)
        setting_up = tasks.active("setup") is not None
        if setting_up:
            layout.label(text="Setting up the engine (see Preferences)...", icon="SORTTIME")
        elif py is None:
            box = layout.box()
            box.label(text="Engine set-up did not finish" if source.startswith("incomplete")
                      else "No engine environment yet", icon="ERROR")
            op = box.operator("preferences.addon_show", text="Open Preferences > Set up Engine", icon="PREFERENCES")
            op.module = paths.package()

        layout.prop(s, "video_path", text="")
        row = layout.row(align=True)
        row.prop(s, "range_start")
        row.prop(s, "range_count")

        running = tasks.active("engine")
        col = layout.column()
        col.enabled = running is None and not setting_up
        col.operator("pymaf.analyze", icon="VIEWZOOM")
        if len(s.tracks):
            if not s.analysis_matches():
                layout.label(text="The list is for another video or range: Analyze again", icon="ERROR")
            layout.template_list("PYMAF_UL_tracks", "", s, "tracks", s, "tracks_index", rows=3)
            row = layout.row(align=True)
            row.operator("pymaf.tracks_select", text="All").action = "ALL"
            row.operator("pymaf.tracks_select", text="None").action = "NONE"
            row.operator("pymaf.tracks_select", text="Invert").action = "INVERT"

        col = layout.column(align=True)
        col.enabled = running is None
        col.prop(s, "estimator")
        name = tasks.resolve_estimator(s, prefs)
        if name in ("landmarks", "pymaf-blazepose"):
            if name == "landmarks":
                col.prop(s, "landmark_model")
                col.prop(s, "fit_outlines")
            else:   # the heads read the full landmark network's features
                col.label(text="Heads trained by this project (see accuracy notes)", icon="INFO")
            status, _ = paths.landmark_status()
            size = s.landmark_model.lower() if name == "landmarks" else "full"
            if status and not status.get(size, False):
                box = layout.box()
                box.label(text=f"The '{size}' landmark model is not installed", icon="ERROR")
                op = box.operator("preferences.addon_show", text="Preferences > Set up Engine", icon="PREFERENCES")
                op.module = paths.package()
        elif not (getattr(prefs, "checkpoint_path", "") or ""):
            layout.label(text="PyMAF needs a checkpoint (Preferences)", icon="ERROR")
        else:
            col.label(text=f"PyMAF: {bpy.path.basename(prefs.checkpoint_path)}", icon="CHECKMARK")
        if paths.detector_installed() is False:
            box = layout.box()
            box.label(text="The person detector (MoveNet) is not installed", icon="ERROR")
            op = box.operator("preferences.addon_show", text="Preferences > Set up Engine", icon="PREFERENCES")
            op.module = paths.package()

        layout.prop(s, "smoothing", slider=True)
        row = layout.row(align=True)
        row.prop(s, "space", text="")
        sub = row.row(align=True)
        sub.active = s.space != "CAMERA"
        sub.prop(s, "plant_feet", toggle=True)
        if running is not None:
            draw_task(layout, running, "engine")
        else:
            row = layout.row()
            row.scale_y = 1.4
            row.enabled = not setting_up
            row.operator("pymaf.import_video", icon="OUTLINER_OB_ARMATURE")
            layout.operator("pymaf.import_result", icon="FILE_FOLDER")


def rig_estimator_labels(arms) -> list:
    """"Made by: <estimator>" lines for the rigs (one per distinct estimator; "unknown" for rigs
    from results that did not record it)."""
    seen = {}
    for arm in arms:
        label = tasks.rig_estimator(arm)
        seen.setdefault(label, []).append(arm.name)
    if len(seen) == 1:
        return [f"Made by: {next(iter(seen))}"]
    return [f"Made by: {label} ({', '.join(names)})" for label, names in seen.items()]


class PYMAF_PT_rig(SidebarPanel, bpy.types.Panel):
    bl_label = "Rig"
    bl_parent_id = "PYMAF_PT_main"

    def draw(self, context):
        layout = self.layout
        s = context.scene.pymaf
        arms = tasks.pymaf_armatures(context)
        layout.label(text=f"{len(arms)} PyMAF rig(s) {'selected' if any(a.select_get() for a in arms) else 'in the scene'}"
                     if arms else "No PyMAF rig yet", icon="ARMATURE_DATA")
        for label in rig_estimator_labels(arms):
            layout.label(text=label, icon="INFO")
        col = layout.column()
        col.enabled = bool(arms) and tasks.active("engine") is None
        col.operator("pymaf.reapply_smoothing", icon="IPO_EASE_IN_OUT")
        col.operator("pymaf.push_takes", icon="NLA_PUSHDOWN")
        row = col.row(align=True)
        row.prop(s, "fbx_preset", text="")
        op = row.operator("pymaf.export", text="FBX", icon="EXPORT")
        op.format, op.preset = "FBX", s.fbx_preset
        row = col.row(align=True)
        row.operator("pymaf.export", text="glTF").format = "GLTF"
        row.operator("pymaf.export", text="BVH").format = "BVH"
        col.operator("pymaf.overlay", icon="IMAGE_BACKGROUND")


class PYMAF_PT_last_run(SidebarPanel, bpy.types.Panel):
    bl_label = "Last Run"
    bl_parent_id = "PYMAF_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.pymaf
        if not (s.last_summary or s.last_result):
            layout.label(text="Nothing run yet in this scene")
            return
        draw_lines(layout, s.last_summary, context=context)
        if s.last_estimator:
            layout.label(text=f"Made by: {s.last_estimator}", icon="INFO")
        for label, prop in (("Result", "last_result"), ("Log", "last_log"), ("Overlay", "last_overlay")):
            value = getattr(s, prop)
            if value:
                row = layout.row(align=True)
                row.label(text=f"{label}: {bpy.path.basename(value)}")
                row.operator("wm.path_open", text="", icon="FILE_FOLDER").filepath = folder_of(value)


def folder_of(path: str) -> str:
    """The folder holding ``path`` (the Last Run buttons open folders, not the files)."""
    return os.path.dirname(bpy.path.abspath(path))


CLASSES = (PYMAF_UL_tracks, PYMAF_PT_main, PYMAF_PT_rig, PYMAF_PT_last_run)

register, unregister = bpy.utils.register_classes_factory(CLASSES)
