"""Roto operators and the sidebar sub-panel (3D viewport > N > PyMAF > Roto).

``pymaf.roto_mattes`` runs the engine's ``mattes`` command on the last result (a job like
Import: progress, Cancel; synchronous headless) and writes the per-person mattes and contours
into ``<result folder>/<result name>_mattes/``; ``pymaf.roto_setup`` builds the Blender-native
roto of one import from them (``blender/roto.py``: movie clip plate, camera background,
compositor, masks, track markers, holdout); ``pymaf.roto_holdout`` switches the bodies'
holdout. docs/roto.md describes it for users.
"""
from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import paths, tasks
from .common.result_schema import track_order
from .common.smpl_topology import SMPL_JOINT_NAMES
from .operators import TaskOperator
from .properties import scene_settings_registration
from .ui import SidebarPanel

JOINTS = tuple(SMPL_JOINT_NAMES)
DEFAULT_JOINTS = {"pelvis", "neck", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                  "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
                  "left_ankle", "right_ankle"}   # = blender.roto.DEFAULT_JOINTS
JOINT_ITEMS = tuple((j, j.replace("_", " ").title(), f"Track the {j.replace('_', ' ')}", 1 << i)
                    for i, j in enumerate(JOINTS))
FORMAT_ITEMS = (("png", "PNG", "8-bit PNG per person (what Set Up Roto loads)"),
                ("png16", "PNG 16-bit", "16-bit PNG per person"),
                ("exr", "EXR", "One multilayer OpenEXR per frame (for other compositors)"),
                ("all", "All", "Every format"))
KEYING_ITEMS = (("AUTO", "Automatic", "Mask shape keys (the Mask editor's own keys) when Blender has a window, "
                                      "else F-Curves on the points"),
                ("SHAPE_KEYS", "Shape Keys", "Mask layer shape keys (needs a window)"),
                ("FCURVES", "F-Curves", "F-Curves on the mask points (works in background mode)"))
ALPHA_ITEMS = (("BODY", "Body", "Each person's fitted body, rendered through the camera (engine --alpha body)"),
               ("SEGMENTATION", "Segmentation", "The person as the landmark network segments them on the plate, "
                                                "near their body: hair, clothes, the real outline (engine --alpha "
                                                "segmentation; slower; needs the plate)"))
MATTES_FOLDER_SUFFIX = "_mattes"
MIN_CONTOUR_POINTS = 64            # asked of the engine: masks may then use up to this many


class PYMAF_PG_roto(bpy.types.PropertyGroup):
    mattes_path: StringProperty(name="Mattes", subtype="DIR_PATH",
                                description="The engine's mattes folder (written by Mattes) that Set Up Roto uses")
    mask_points: IntProperty(name="Mask Points", default=32, min=3, max=512,
                             description="Points of each person's mask spline (the contour is resampled to "
                                         "this many; more than the engine wrote needs Mattes again)")
    smooth_masks: BoolProperty(name="Smooth", default=True,
                               description="Smooth (auto) handles on the mask points; off: straight segments")
    use_masks: BoolProperty(name="Masks", default=True, description="A Mask datablock per person, keyed per frame")
    use_tracks: BoolProperty(name="Track Markers", default=True,
                             description="2D track markers in the movie clip at the rigs' projected joints")
    joints: EnumProperty(name="Joints", items=JOINT_ITEMS, options={"ENUM_FLAG"}, default=DEFAULT_JOINTS,
                         description="The joints that get a track per person")
    use_compositor: BoolProperty(name="Compositor", default=True,
                                 description="Plate, render and mattes nodes in the scene's compositor")
    use_holdout: BoolProperty(name="Holdout Bodies", default=False,
                              description="The bodies cut holes in the render (the plate's actors show "
                                          "through); off: their own material")
    matte_format: EnumProperty(name="Format", items=FORMAT_ITEMS, default="png",
                               description="What Mattes writes (engine --format)")
    matte_alpha: EnumProperty(name="Matte From", items=ALPHA_ITEMS, default="BODY",
                              description="What a person's matte is made from")
    keying: EnumProperty(name="Mask Keys", items=KEYING_ITEMS, default="AUTO")


def settings(context):
    return context.scene.pymaf_roto


def _rigs(context, import_name=""):
    """(import name, rigs) for the operators: the named import; else the selected or active
    PyMAF rig's; else the scene's only one."""
    from .blender import roto

    if import_name:
        return roto.import_rigs(context.scene, import_name)
    arms = tasks.pymaf_armatures(context, selected_only=True)
    if arms:
        return roto.import_rigs(context.scene, armatures=arms)
    return roto.import_rigs(context.scene)


# --- mattes (engine job) ---------------------------------------------------------------------------
class MattesTask(tasks.Task):
    """``python -m engine mattes RESULT --out <result>_mattes ...`` on the last result."""
    title = "Mattes"

    def __init__(self, *, result: str = "", out_dir: str = "", video: str = ""):
        super().__init__()
        self.result_override, self.out_override, self.video_override = result, out_dir, video

    def build(self, context):
        s, r = context.scene.pymaf, settings(context)
        result = paths.abspath(self.result_override or s.last_result)
        if not result:
            raise tasks.TaskError("no result yet: import a video first (Mattes works on the last result)")
        if not os.path.isfile(result):
            raise tasks.TaskError(f"the result file is gone: {result}; import the video again")
        path = Path(result)
        self.out_dir = Path(paths.abspath(self.out_override)) if self.out_override else \
            path.parent / f"{path.stem}{MATTES_FOLDER_SUFFIX}"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.stem = path.stem
        self.log_path = self.out_dir / f"{path.stem}_mattes.log"
        args = ["mattes", path, "--out", self.out_dir, "--progress", "jsonl", "--name", self.stem,
                "--format", r.matte_format, "--contour-points", str(max(MIN_CONTOUR_POINTS, r.mask_points))]
        video = paths.abspath(self.video_override) if self.video_override else self._video(context, result)
        if video:
            args += ["--video", video]
        elif r.matte_alpha == "SEGMENTATION":
            raise tasks.TaskError("Segmentation mattes are read off the plate, and the scene shows none for this "
                                  "result: import the video again, or choose Matte From: Body")
        args += ["--alpha", r.matte_alpha.lower()]
        people = self._people(context, result)
        if people:
            args += ["--people", ",".join(people)]
        self.people = people
        return tasks.engine_job(context, args, self.log_path)

    @staticmethod
    def _rigs_of(context, result):
        return [a for a in tasks.pymaf_armatures(context) if paths.abspath(str(a.get("pymaf_result_file", "")))
                == result]

    def _people(self, context, result) -> list:
        """The people of that result that are in the scene (all of them: None)."""
        ids = {str(a["pymaf"].get("track_id")) for a in self._rigs_of(context, result)}
        return sorted(ids, key=track_order)

    def _video(self, context, result) -> str:
        """The plate the scene shows for that result (the camera background), if any."""
        from .blender import roto

        arms = self._rigs_of(context, result)
        if not arms:
            return ""
        try:
            name, arms = roto.import_rigs(context.scene, armatures=arms[:1])
            path = roto.plate_path(roto.import_camera(context.scene, name), arms)
        except ValueError:
            return ""
        return path if path and os.path.isfile(path) else ""

    def error_message(self, result) -> str:
        if result.returncode == 2 and "unknown command" in (result.stderr_tail or "") + (result.message or ""):
            return "Mattes failed: this engine has no 'mattes' command; update the extension"
        return super().error_message(result)

    def on_done(self, context, result) -> None:
        from .blender import roto

        try:
            found = roto.find_mattes(str(self.out_dir), prefer_stem=self.stem)
        except ValueError as exc:
            self._set("error", f"Mattes failed: {exc}", "ERROR")
            return
        settings(context).mattes_path = str(self.out_dir)
        self.outputs = {"mattes": str(self.out_dir), "contours": found["contours"] or ""}
        people = sorted(found["people"]) or (self.people or [])
        self.message = (f"Mattes written to {self.out_dir} ({len(people)} "
                        f"{'person' if len(people) == 1 else 'people'}): press Set Up Roto to use them")
        context.scene.pymaf.last_summary = self.message


class PYMAF_OT_roto_mattes(TaskOperator, bpy.types.Operator):
    """Run the engine's mattes command on the last result: a matte (alpha) image sequence and the
    outline of each person in the scene, for Set Up Roto"""
    bl_idname = "pymaf.roto_mattes"
    bl_label = "Mattes"

    result: StringProperty(name="Result file", subtype="FILE_PATH", options={"SKIP_SAVE"},
                           description="The result file (default: the last one)")
    out_dir: StringProperty(name="Folder", subtype="DIR_PATH", options={"SKIP_SAVE"},
                            description="Where the mattes go (default: <result>_mattes next to it)")
    video: StringProperty(name="Video", subtype="FILE_PATH", options={"SKIP_SAVE"},
                          description="The footage (default: the camera background's)")

    def make_task(self, context):
        return MattesTask(result=self.result, out_dir=self.out_dir, video=self.video)


# --- set up --------------------------------------------------------------------------------------
class PYMAF_OT_roto_setup(bpy.types.Operator):
    """Set up Blender-native roto for the selected rigs' import (else the only one): the video as a
    movie clip (camera background, compositor), a mask per person keyed on every frame, track
    markers at the joints, optionally holdout bodies. Run again to rebuild"""
    bl_idname = "pymaf.roto_setup"
    bl_label = "Set Up Roto"
    bl_options = {"REGISTER", "UNDO"}

    import_name: StringProperty(name="Import", options={"SKIP_SAVE"},
                                description="The import to set up (default: the selected rigs', else the only one)")
    mattes: StringProperty(name="Mattes", subtype="DIR_PATH", options={"SKIP_SAVE"},
                           description="The mattes folder (default: the panel's)")
    video: StringProperty(name="Video", subtype="FILE_PATH", options={"SKIP_SAVE"},
                          description="The footage (default: the camera background's)")
    mask_points: IntProperty(name="Mask Points", default=32, min=3, max=512)
    use_masks: BoolProperty(name="Masks", default=True)
    use_tracks: BoolProperty(name="Track Markers", default=True)
    use_compositor: BoolProperty(name="Compositor", default=True)
    use_holdout: BoolProperty(name="Holdout Bodies", default=False)
    smooth_masks: BoolProperty(name="Smooth", default=True)
    keying: EnumProperty(name="Mask Keys", items=KEYING_ITEMS, default="AUTO")

    def invoke(self, context, event):
        return self.execute(context)

    def execute(self, context):
        from .blender import roto

        r = settings(context)
        for prop in ("mask_points", "use_masks", "use_tracks", "use_compositor", "use_holdout", "smooth_masks",
                     "keying"):    # unset: the panel's (the redo panel then shows them)
            if not self.properties.is_property_set(prop):
                setattr(self, prop, getattr(r, prop))
        mattes = paths.abspath(self.mattes or r.mattes_path) or None
        try:
            name, arms = _rigs(context, self.import_name)
            info = roto.setup_roto(context, armatures=arms, video_path=self.video or None, mattes=mattes,
                                   masks=self.use_masks, mask_points=self.mask_points,
                                   smooth_masks=self.smooth_masks, tracks=self.use_tracks,
                                   joints=[j for j in JOINTS if j in r.joints], holdout=self.use_holdout,
                                   compositor=self.use_compositor, keying=self.keying)
        except (ValueError, RuntimeError, OSError) as exc:
            self.report({"ERROR"}, f"Set Up Roto: {exc}")
            return {"CANCELLED"}
        tracks_n = sum(len(v) for v in info["tracks"].values())
        parts = [f"clip {info['clip'].name!r}"]
        if info["masks"]:
            parts.append(f"{len(info['masks'])} mask(s) of {self.mask_points} points "
                         f"({'shape keys' if info['keying'] == 'SHAPE_KEYS' else 'F-Curves'})")
        if tracks_n:
            parts.append(f"{tracks_n} track(s)")
        if info["nodes"]:
            parts.append("compositor nodes")
        if self.use_holdout:
            parts.append("holdout bodies")
        self.report({"INFO"}, f"Roto for {name}: " + ", ".join(parts))
        for w in info["warnings"]:
            self.report({"WARNING"}, w)
        return {"FINISHED"}


class PYMAF_OT_roto_holdout(bpy.types.Operator):
    """Make the selected rigs' bodies (else all PyMAF bodies) holdouts: they cut holes in the render
    so the plate's actors show through; or give them back their own material"""
    bl_idname = "pymaf.roto_holdout"
    bl_label = "Holdout Bodies"
    bl_options = {"REGISTER", "UNDO"}

    enable: BoolProperty(name="Holdout", default=True)

    def execute(self, context):
        from .blender import roto

        arms = tasks.pymaf_armatures(context)
        bodies = [m for a in arms for m in tasks.rig_meshes(a)]
        if not bodies:
            self.report({"ERROR"}, "no PyMAF body in the scene: import a video first")
            return {"CANCELLED"}
        roto.set_holdout(bodies, self.enable)
        settings(context).use_holdout = self.enable
        self.report({"INFO"}, f"{len(bodies)} bod{'y' if len(bodies) == 1 else 'ies'} "
                              f"{'made holdouts' if self.enable else 'back to their own material'}")
        return {"FINISHED"}


class PYMAF_PT_roto(SidebarPanel, bpy.types.Panel):
    bl_label = "Roto"
    bl_parent_id = "PYMAF_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from .preferences import draw_task

        layout = self.layout
        s, r = context.scene.pymaf, settings(context)
        running = tasks.active("engine")
        col = layout.column(align=True)
        col.label(text="1. Mattes from the last result", icon="IMAGE_ALPHA")
        if isinstance(running, MattesTask):
            draw_task(col, running, "engine")
        else:
            row = col.row(align=True)
            row.enabled = bool(s.last_result) and running is None
            row.prop(r, "matte_format", text="")
            row.prop(r, "matte_alpha", text="")
            row.operator("pymaf.roto_mattes", icon="RENDER_RESULT")
            if not s.last_result:
                col.label(text="Import a video first", icon="INFO")
        layout.prop(r, "mattes_path")
        col = layout.column(align=True)
        col.label(text="2. Roto in Blender", icon="CLIP")
        row = col.row(align=True)
        row.prop(r, "use_masks", toggle=True)
        sub = row.row(align=True)
        sub.active = r.use_masks
        sub.prop(r, "mask_points", text="Points")
        sub.prop(r, "smooth_masks", text="", icon="SMOOTHCURVE")
        row = col.row(align=True)
        row.prop(r, "use_tracks", toggle=True)
        row.prop(r, "use_compositor", toggle=True)
        if r.use_tracks:
            box = layout.box()
            box.label(text="Joints to track")
            box.prop(r, "joints")
        layout.prop(r, "use_holdout")
        row = layout.row()
        row.scale_y = 1.3
        row.enabled = bool(tasks.pymaf_armatures(context)) and running is None
        row.operator("pymaf.roto_setup", icon="CLIP")


CLASSES = (PYMAF_PG_roto, PYMAF_OT_roto_mattes, PYMAF_OT_roto_setup, PYMAF_OT_roto_holdout, PYMAF_PT_roto)

register, unregister = scene_settings_registration(CLASSES, "pymaf_roto", PYMAF_PG_roto)
