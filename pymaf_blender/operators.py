"""Operators: the panel's and the preferences' buttons.

Engine-running operators share ``TaskOperator``: ``invoke`` (a click in the interface) starts
the task and returns to Blender at once; a modal handler driven by a window-manager timer calls
``task.step()`` every 0.1 s, so the interface never freezes; the Cancel button next to the
progress bar cancels (Esc is left to Blender: it stops playback, closes menus). ``execute``
(scripts, ``blender -b``, the bpy module, tests) runs the SAME task synchronously.

The job operators are not registered for redo or Repeat Last (that would run the engine again,
synchronously); an import is still one undo step (``tasks.push_undo``).
"""

import os
import time
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import paths, tasks
from .properties import FBX_PRESET_ITEMS

TIMER_S = 0.1


def redraw(context, preferences: bool = False) -> None:
    """Redraw where progress is drawn: the sidebars of the 3D views (not the views themselves),
    and the preferences window for set-up and checks."""
    wm = context.window_manager
    for window in getattr(wm, "windows", []):
        screen = window.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()
            elif area.type == "PREFERENCES" and preferences:
                area.tag_redraw()


class TaskOperator:
    """Mixin: ``make_task(context) -> tasks.Task``."""
    _task = None
    _timer = None

    def make_task(self, context):
        raise NotImplementedError

    def _outcome(self, task):
        if task.message:
            self.report({task.level}, task.message)
        return {"FINISHED"} if task.status == "done" else {"CANCELLED"}

    def execute(self, context):
        last = {"t": 0.0, "text": ""}

        def show(task):  # headless: a progress line now and then on the console
            if bpy.app.background and task.progress_text != last["text"] and time.monotonic() - last["t"] > 1.0:
                last["t"], last["text"] = time.monotonic(), task.progress_text
                print(f"[PyMAF] {task.progress_text}", flush=True)

        try:
            task = self.make_task(context)
            task.run_sync(context, on_step=show)
        except (tasks.TaskError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return self._outcome(task)

    def invoke(self, context, event):
        try:
            task = self.make_task(context)
            task.start(context)
        except (tasks.TaskError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self._task = task
        if task.finished:     # nothing left to run in the background
            return self._outcome(task)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        redraw(context, task.kind != "engine")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        task = self._task
        if task is None:
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}  # Esc included: only the Cancel button cancels
        finished = task.step(context)
        redraw(context, task.kind != "engine")
        if not finished:
            return {"PASS_THROUGH"}
        self._stop_timer(context)
        return self._outcome(task)

    def cancel(self, context):
        """Blender ends the modal operator (a new file is loaded, the window closes)."""
        if self._task is not None:
            self._task.cancel(force=True)
            self._task.abandon()
        self._stop_timer(context)

    def _stop_timer(self, context):
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None


class PYMAF_OT_import_video(TaskOperator, bpy.types.Operator):
    """Run the engine on the video and build an animated rig per person (one undo step)"""
    bl_idname = "pymaf.import_video"
    bl_label = "Import as Rig"

    video: StringProperty(name="Video", description="Override the panel's video", options={"SKIP_SAVE"},
                          subtype="FILE_PATH")
    boxes: StringProperty(name="Boxes", description="Person boxes file instead of detection (engine --boxes)",
                          options={"SKIP_SAVE", "HIDDEN"})
    result_path: StringProperty(name="Result file", description="Where the engine writes its result",
                                options={"SKIP_SAVE", "HIDDEN"}, subtype="FILE_PATH")
    name: StringProperty(name="Name", description="Name of the new collection and objects",
                         options={"SKIP_SAVE"})

    def make_task(self, context):
        return tasks.ImportTask(video=self.video or None, boxes=self.boxes or None,
                                result_path=self.result_path or None, name=self.name or None)


class PYMAF_OT_import_result(TaskOperator, bpy.types.Operator):
    """Build the animated rigs from a result file the engine wrote before (no engine run)"""
    bl_idname = "pymaf.import_result"
    bl_label = "Import Result File"

    filepath: StringProperty(name="Result file", subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})
    video: StringProperty(name="Video", description="The footage for the camera background (default: the "
                                                   "video the result was made from)", options={"SKIP_SAVE"},
                          subtype="FILE_PATH")
    name: StringProperty(name="Name", description="Name of the new collection and objects", options={"SKIP_SAVE"})

    def invoke(self, context, event):
        if not self.filepath:
            self.filepath = str(paths.result_folder(create=False)) + os.sep
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return TaskOperator.invoke(self, context, event)

    def execute(self, context):
        if context.window is not None and not bpy.app.background:
            return TaskOperator.invoke(self, context, None)   # back from the file browser: modal
        return TaskOperator.execute(self, context)

    def make_task(self, context):
        return tasks.ImportResultTask(filepath=self.filepath, video=self.video or None, name=self.name or None)


class PYMAF_OT_analyze(TaskOperator, bpy.types.Operator):
    """Find and track the people in the video (no pose estimation) to choose whom to import"""
    bl_idname = "pymaf.analyze"
    bl_label = "Analyze"

    video: StringProperty(name="Video", options={"SKIP_SAVE"}, subtype="FILE_PATH")
    boxes: StringProperty(name="Boxes", options={"SKIP_SAVE", "HIDDEN"})

    def make_task(self, context):
        return tasks.AnalyzeTask(video=self.video or None, boxes=self.boxes or None)


class PYMAF_OT_overlay(TaskOperator, bpy.types.Operator):
    """Draw the posed bodies over the video frames (MP4 and PNG stills): a check of the fit"""
    bl_idname = "pymaf.overlay"
    bl_label = "Overlay Preview"

    out_dir: StringProperty(name="Folder", options={"SKIP_SAVE"}, subtype="DIR_PATH")
    png_count: IntProperty(name="PNG stills", default=4, min=0, max=100, options={"SKIP_SAVE"})

    def make_task(self, context):
        return tasks.OverlayTask(out_dir=paths.abspath(self.out_dir) or None, png_count=self.png_count)


class PYMAF_OT_check_models(TaskOperator, bpy.types.Operator):
    """Load the checkpoint and body model files like the engine does and say what is wrong"""
    bl_idname = "pymaf.check_models"
    bl_label = "Check"

    def make_task(self, context):
        return tasks.CheckTask()


class PYMAF_OT_setup_engine(TaskOperator, bpy.types.Operator):
    """Create the engine's own Python environment (with a system Python 3.11-3.13) and install PyTorch
    and the engine's other packages from PyPI into it. Blender's Python is not changed"""
    bl_idname = "pymaf.setup_engine"
    bl_label = "Set up Engine"

    def make_task(self, context):
        return tasks.SetupTask()


class PYMAF_OT_cancel(bpy.types.Operator):
    """Stop the running engine job (press again to stop it at once)"""
    bl_idname = "pymaf.cancel"
    bl_label = "Cancel"

    kind: EnumProperty(items=(("engine", "Engine", ""), ("setup", "Setup", ""), ("check", "Check", ""),
                              ("batch", "Batch", "")),
                       default="engine", options={"SKIP_SAVE"})
    force: BoolProperty(name="Now", description="Kill at once instead of asking the engine to stop",
                        options={"SKIP_SAVE"})

    def execute(self, context):
        task = tasks.active(self.kind)
        if task is None:
            self.report({"WARNING"}, "nothing is running")
            return {"CANCELLED"}
        task.cancel(force=self.force)
        redraw(context)
        return {"FINISHED"}


class PYMAF_OT_tracks_select(bpy.types.Operator):
    """Tick all, none, or invert the people to import"""
    bl_idname = "pymaf.tracks_select"
    bl_label = "Select People"
    bl_options = {"REGISTER", "UNDO"}

    action: EnumProperty(items=(("ALL", "All", ""), ("NONE", "None", ""), ("INVERT", "Invert", "")))

    def execute(self, context):
        for t in context.scene.pymaf.tracks:
            t.use = {"ALL": True, "NONE": False}.get(self.action, not t.use)
        return {"FINISHED"}


class PYMAF_OT_reapply_smoothing(bpy.types.Operator):
    """Re-key the selected PyMAF rigs (else the active one, else all of them) with the panel's
    smoothing strength, from the raw motion kept with each rig (no engine run)"""
    bl_idname = "pymaf.reapply_smoothing"
    bl_label = "Re-apply Smoothing"
    bl_options = {"REGISTER", "UNDO"}

    strength: FloatProperty(name="Strength", min=0.0, max=1.0, default=2.0 / 3.0, subtype="FACTOR",
                            description="Smoothing strength (when not given: the panel's)")

    def invoke(self, context, event):
        self.strength = float(context.scene.pymaf.smoothing)  # the redo panel starts at the panel's value
        return self.execute(context)

    def execute(self, context):
        from .blender.scene import reapply_smoothing

        arms = tasks.pymaf_armatures(context)
        if not arms:
            self.report({"ERROR"}, "no PyMAF rig in the scene: import a video first")
            return {"CANCELLED"}
        s = float(self.strength if self.properties.is_property_set("strength") else context.scene.pymaf.smoothing)
        try:
            for arm in arms:
                reapply_smoothing(context, arm, s)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Smoothing {s:.2f} applied to {len(arms)} rig(s)")
        return {"FINISHED"}


class PYMAF_OT_push_takes(bpy.types.Operator):
    """Put the selected PyMAF rigs' motion (else the active rig's, else all rigs') on NLA tracks, with
    the same person's motion from other imports of the same video as muted tracks to compare or blend"""
    bl_idname = "pymaf.push_takes"
    bl_label = "Push Takes to NLA"
    bl_options = {"REGISTER", "UNDO"}

    gather: BoolProperty(name="Other imports too", default=True,
                         description="Also add the same person's motion from other imports of the same "
                                     "video (muted tracks)")

    def execute(self, context):
        from .blender.takes import push_takes

        arms = tasks.pymaf_armatures(context)
        if not arms:
            self.report({"ERROR"}, "no PyMAF rig in the scene: import a video first")
            return {"CANCELLED"}
        every = [o for o in context.scene.objects if o.type == "ARMATURE" and "pymaf" in o.keys()]
        counts = []
        try:
            for arm in arms:
                counts.append(len(push_takes(arm, every, gather=self.gather)))
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{sum(counts)} take(s) on the NLA of {len(arms)} rig(s)")
        return {"FINISHED"}


EXPORT_FORMATS = (("FBX", "FBX", "Rig, skinned body and animation (.fbx)"),
                  ("GLTF", "glTF", "Binary glTF with skins and animation (.glb)"),
                  ("BVH", "BVH", "Skeleton motion only (.bvh), one file per person (per take where "
                                 "the person is absent for a while)"))
EXTENSIONS = {"FBX": ".fbx", "GLTF": ".glb", "BVH": ".bvh"}


def with_extension(path: str, ext: str) -> str:
    """``path`` ending in ``ext``, replacing another export format's extension (a format
    changed in the file browser gives ``x.glb``, not ``x.fbx.glb``)."""
    root, old = os.path.splitext(path)
    if old.lower() in EXTENSIONS.values() or old.lower() == ".gltf":
        path = root
    return path if path.lower().endswith(ext) else path + ext


class PYMAF_OT_export(bpy.types.Operator):
    """Export the selected PyMAF rigs (else the active one, else all of them): one file per character
    (<name>_<id>.<ext>) or all in one file with uniquely named skeletons; each clip starts at 0 s,
    absent frames hidden (scale 0)"""
    bl_idname = "pymaf.export"
    bl_label = "Export"

    format: EnumProperty(name="Format", items=EXPORT_FORMATS, default="FBX")
    preset: EnumProperty(name="FBX preset", items=FBX_PRESET_ITEMS, default="BLENDER")
    per_character: BoolProperty(
        name="One file per character", default=True,
        description="Write each character (armature and body) to its own file, <name>_<id>.<ext>, its clip "
                    "from the first to the last frame the person is seen. Off: one file with every "
                    "character, bones renamed <id>_<bone> so no name repeats. BVH is always per character")
    include_camera: BoolProperty(
        name="Include camera", default=False,
        description="Add the scene camera, with its motion and focal length, to each FBX or glTF file")
    filepath: StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"})
    filter_glob: StringProperty(default="*.fbx;*.glb;*.bvh", options={"HIDDEN"})
    check_existing: BoolProperty(default=True, options={"HIDDEN"})

    @classmethod
    def description(cls, context, props):
        return {"FBX": f"Export the PyMAF rigs to FBX ({props.preset.title()} preset)",
                "GLTF": "Export the PyMAF rigs to binary glTF (.glb)",
                "BVH": "Export the PyMAF rigs' motion to BVH (one file per person)"}[props.format]

    def _default_path(self, context, arms) -> str:
        folder = Path(bpy.path.abspath("//")) if bpy.data.filepath else Path.home()
        stem = arms[0].get("pymaf", {}).get("import_name") if len(arms) else None
        return str(folder / f"{stem or 'pymaf'}{EXTENSIONS[self.format]}")

    def invoke(self, context, event):
        arms = tasks.pymaf_armatures(context)
        if not arms:
            self.report({"ERROR"}, "no PyMAF rig in the scene: import a video first")
            return {"CANCELLED"}
        if self.format == "FBX" and not self.properties.is_property_set("preset"):
            self.preset = context.scene.pymaf.fbx_preset
        if not self.filepath:
            self.filepath = self._default_path(context, arms)
        self.check(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "format")
        if self.format == "FBX":
            layout.prop(self, "preset")
        col = layout.column()
        col.enabled = self.format != "BVH"
        col.prop(self, "per_character")
        col.prop(self, "include_camera")

    def check(self, context):
        """The file browser changed a setting: keep the file name's extension and filter in step
        with the format."""
        ext = EXTENSIONS[self.format]
        self.filter_glob = "*" + ext
        path = with_extension(self.filepath, ext) if self.filepath else self.filepath
        if path != self.filepath:
            self.filepath = path
            return True
        return False

    def execute(self, context):
        from .blender.export import export_bvh, export_fbx, export_gltf

        arms = tasks.pymaf_armatures(context)
        if not arms:
            self.report({"ERROR"}, "no PyMAF rig in the scene: import a video first")
            return {"CANCELLED"}
        camera = self.include_camera and self.format != "BVH"
        if camera and context.scene.camera is None:
            self.report({"ERROR"}, "Include camera: the scene has no camera")
            return {"CANCELLED"}
        ext = EXTENSIONS[self.format]
        path = with_extension(paths.abspath(self.filepath) or self._default_path(context, arms), ext)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        wm = context.window_manager
        wm.progress_begin(0, 1)   # the busy cursor shows how far (Blender cannot redraw meanwhile)

        def progress(k, n):
            wm.progress_update(k / max(n, 1))

        try:
            if self.format == "BVH":
                written = export_bvh(context, path, arms, progress=progress)
            elif self.format == "FBX":
                written = export_fbx(context, path, arms, self.preset, per_character=self.per_character,
                                     camera=camera, progress=progress)
            else:
                written = export_gltf(context, path, arms, per_character=self.per_character, camera=camera,
                                      progress=progress)
        except (ValueError, RuntimeError, OSError) as exc:
            self.report({"ERROR"}, f"Export failed: {exc}")
            return {"CANCELLED"}
        finally:
            wm.progress_end()
        self.report({"INFO"}, f"Exported {len(arms)} rig(s) to {len(written)} file(s): " + ", ".join(written))
        return {"FINISHED"}


CLASSES = (PYMAF_OT_import_video, PYMAF_OT_import_result, PYMAF_OT_analyze, PYMAF_OT_overlay, PYMAF_OT_check_models,
           PYMAF_OT_setup_engine, PYMAF_OT_cancel, PYMAF_OT_tracks_select, PYMAF_OT_reapply_smoothing,
           PYMAF_OT_push_takes,
           PYMAF_OT_export)

register, unregister = bpy.utils.register_classes_factory(CLASSES)
