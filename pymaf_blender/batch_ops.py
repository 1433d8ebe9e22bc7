"""Batch: a folder of videos through the engine's ``batch`` command, from the sidebar
(3D viewport > N > PyMAF > Batch).

``pymaf.batch_start`` runs ``python -m engine batch FOLDER --out OUT --progress jsonl`` with the
panel's estimator and world settings (a job of its own kind, "batch": the panel's Import stays
usable while a batch runs); its events fill the shot list (status and progress per shot), Cancel
stops it (finished shots are kept, a rerun continues). ``pymaf.batch_load`` fills the list from
the manifest of a batch run before or elsewhere (the command line, a cluster);
``pymaf.batch_import`` imports the chosen shot's result like Import Result File. Ray is needed in
the engine environment (Preferences: Batch processing). docs/batch.md describes it for users.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import bpy
from bpy.props import BoolProperty, CollectionProperty, FloatProperty, IntProperty, StringProperty

from . import paths, tasks
from .operators import TaskOperator
from .properties import scene_settings_registration
from .ui import SidebarPanel

OUT_FOLDER_NAME = "pymaf_batch"
MANIFEST_NAME = "manifest.json"
STATUS_ICONS = {"pending": "TIME", "running": "PLAY", "done": "CHECKMARK", "skipped": "CHECKMARK",
                "failed": "ERROR", "cancelled": "CANCEL"}


class PYMAF_PG_batch_shot(bpy.types.PropertyGroup):
    """One shot of the batch (its name is the output folder's)."""
    video: StringProperty(name="Video", subtype="FILE_PATH")
    status: StringProperty(name="Status", default="pending")
    attempt: IntProperty(name="Try", default=0)
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    step: StringProperty(name="Step")
    message: StringProperty(name="Message")
    result: StringProperty(name="Result", subtype="FILE_PATH")
    frames: IntProperty(name="Frames")
    people: IntProperty(name="People")


class PYMAF_PG_batch(bpy.types.PropertyGroup):
    folder: StringProperty(name="Videos", subtype="DIR_PATH",
                           description="The folder of videos to run (each video is a shot)")
    out_dir: StringProperty(name="Output", subtype="DIR_PATH",
                            description=f"Where each shot's results go (empty: '{OUT_FOLDER_NAME}' in the videos' "
                                        "folder); running again skips the shots already complete there")
    mattes: BoolProperty(name="Mattes", default=False,
                         description="Also the per-person mattes of every shot (engine mattes)")
    scenes: BoolProperty(name="Scenes and FBX", default=False,
                         description="Also a .blend scene and FBX per shot, made by a background Blender with "
                                     "the panel's world settings")
    retries: IntProperty(name="Retries", default=2, min=0, max=10,
                         description="Tries after the first for a shot that failed or whose worker died")
    ray_address: StringProperty(name="Ray", default="",
                                description="Empty: run on this computer; else a Ray cluster address "
                                            "(e.g. 'auto', 'host:6379')")
    shots: CollectionProperty(type=PYMAF_PG_batch_shot)
    shots_index: IntProperty(name="Active shot", default=0)
    manifest: StringProperty(name="Manifest", subtype="FILE_PATH")


def settings(context):
    return context.scene.pymaf_batch


def out_folder(b) -> str:
    if b.out_dir:
        return paths.abspath(b.out_dir)
    folder = paths.abspath(b.folder)
    return os.path.join(folder, OUT_FOLDER_NAME) if folder else ""


def blender_for_scenes() -> str:
    """What runs the per-shot scene job: this Blender, or (the bpy module) this Python."""
    binary = bpy.app.binary_path
    return binary if binary and os.path.isfile(binary) else sys.executable


def set_shot(shot, entry: dict, out_dir: str) -> None:
    """A shot's row from a manifest entry (``engine/batch/record.py``)."""
    shot.status = str(entry.get("status") or "pending")
    shot.attempt = int(entry.get("attempts") or 0)
    shot.message = str(entry.get("message") or "")[:1000]
    shot.frames = int(entry.get("frames") or 0)
    shot.people = int(entry.get("people") or 0)
    rel = entry.get("result") or ""
    shot.result = os.path.join(out_dir, rel) if rel and not rel.endswith("/") else ""
    if shot.status in ("done", "skipped"):
        shot.progress = 1.0


def fill_from_manifest(b, path: str) -> int:
    """The shot list from a batch manifest. -> number of shots. Raises ValueError."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the batch manifest {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != "pymaf-batch" or not isinstance(data.get("shots"), list):
        raise ValueError(f"{path} is not a batch manifest")
    b.shots.clear()
    out_dir = os.path.dirname(os.path.abspath(path))
    for entry in data["shots"]:
        shot = b.shots.add()
        shot.name, shot.video = str(entry.get("shot", "")), str(entry.get("video", ""))
        set_shot(shot, entry, out_dir)
    b.manifest = path
    return len(b.shots)


class BatchTask(tasks.Task):
    """``python -m engine batch FOLDER --out OUT`` with per-shot progress."""
    kind = "batch"
    title = "Batch"

    def __init__(self, *, folder: str = "", out_dir: str = ""):
        super().__init__()
        self.folder_override, self.out_override = folder, out_dir
        self.counts: dict = {}

    def build(self, context):
        b, s = settings(context), context.scene.pymaf
        prefs = paths.preferences(context)
        folder = paths.abspath(self.folder_override or b.folder)
        if not folder:
            raise tasks.TaskError("choose the folder of videos to run")
        if not os.path.isdir(folder):
            raise tasks.TaskError(f"the videos folder does not exist: {folder}")
        out = paths.abspath(self.out_override) if self.out_override else out_folder(b)
        Path(out).mkdir(parents=True, exist_ok=True)
        self.out_dir = out
        self.log_path = Path(out) / "batch.log"
        args = ["batch", folder, "--out", out, "--progress", "jsonl", "--retries", str(b.retries),
                *tasks.device_arg(prefs), *tasks.estimator_args(s, prefs)]
        if b.ray_address.strip():
            args += ["--ray", b.ray_address.strip()]
        if b.mattes:
            args += ["--mattes"]
        if b.scenes:
            args += ["--blender", blender_for_scenes(), "--space", s.space.lower().replace("_", "-"),
                     "--fbx-preset", s.fbx_preset]
            if not s.plant_feet:
                args += ["--no-plant-feet"]
        b.shots.clear()
        b.manifest = os.path.join(out, MANIFEST_NAME)
        return tasks.engine_job(context, args, self.log_path)

    def _shot(self, context, name):
        return settings(context).shots.get(name)

    def on_event(self, context, event) -> None:
        kind = event.get("event")
        b = settings(context)
        if kind == "batch":
            b.shots.clear()
            for entry in event.get("shots", []):
                shot = b.shots.add()
                shot.name, shot.video, shot.status = entry["shot"], entry.get("video", ""), entry.get("status", "")
            self.total = len(b.shots)
        elif kind == "shot_start" and self._shot(context, event.get("shot")):
            shot = self._shot(context, event["shot"])
            shot.status, shot.attempt, shot.progress = "running", int(event.get("attempt") or 1), 0.0
        elif kind == "step" and self._shot(context, event.get("shot")):
            self._shot(context, event["shot"]).step = str(event.get("step", ""))
        elif kind == "progress" and self._shot(context, event.get("shot")):
            shot = self._shot(context, event["shot"])
            total = event.get("total") or 0
            shot.progress = min(1.0, (event.get("done") or 0) / total) if total else 0.0
        elif kind == "retry" and self._shot(context, event.get("shot")):
            self._shot(context, event["shot"]).message = f"trying again: {event.get('reason', '')}"[:1000]
        elif kind == "shot_final" and self._shot(context, event.get("shot")):
            set_shot(self._shot(context, event["shot"]), event.get("entry", {}), self.out_dir)
        else:
            return
        shots = list(b.shots)
        finished = sum(1 for sh in shots if sh.status in ("done", "skipped", "failed", "cancelled"))
        if shots:
            self.progress = sum(1.0 if sh.status in ("done", "skipped", "failed", "cancelled") else sh.progress
                                for sh in shots) / len(shots)
            running = [sh for sh in shots if sh.status == "running"]
            self.progress_text = f"Batch: {finished}/{len(shots)} shots" + (
                f" ({running[0].name}: {running[0].progress:.0%})" if running else "")

    def _summary(self, context) -> str:
        counts = {}
        for sh in settings(context).shots:
            counts[sh.status] = counts.get(sh.status, 0) + 1
        return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))

    def on_done(self, context, result) -> None:
        self.outputs = {"manifest": settings(context).manifest, "out": self.out_dir}
        self.message = f"Batch done: {self._summary(context)}; results in {self.out_dir}"

    def error_message(self, result) -> str:
        if result.code == "ray":
            return ("Batch needs Ray in the engine environment: tick 'Batch processing (Ray)' in Preferences > "
                    "Add-ons > PyMAF for Blender and press Set up Engine (with your own Engine Python: pip "
                    f"install -r {paths.batch_requirements()})")
        if result.code == "shots_failed":
            return f"Batch finished: {self._summary(bpy.context)}. {result.message}"
        return super().error_message(result)

    def cancelled_message(self, result) -> str:
        return (f"Batch cancelled ({self._summary(bpy.context)}); finished shots are kept: Start Batch again "
                "to continue")


class PYMAF_OT_batch_start(TaskOperator, bpy.types.Operator):
    """Run every video of the folder through the engine as a batch (on Ray: this computer's cores
    and GPUs, or a cluster); shots already complete in the output folder are skipped"""
    bl_idname = "pymaf.batch_start"
    bl_label = "Start Batch"

    folder: StringProperty(name="Videos", subtype="DIR_PATH", options={"SKIP_SAVE"})
    out_dir: StringProperty(name="Output", subtype="DIR_PATH", options={"SKIP_SAVE"})

    def make_task(self, context):
        return BatchTask(folder=self.folder, out_dir=self.out_dir)


class PYMAF_OT_batch_load(bpy.types.Operator):
    """Show the shots of a batch run before (its manifest.json in the output folder)"""
    bl_idname = "pymaf.batch_load"
    bl_label = "Load Batch Results"

    filepath: StringProperty(name="Manifest", subtype="FILE_PATH", options={"SKIP_SAVE"})

    def execute(self, context):
        b = settings(context)
        path = paths.abspath(self.filepath) or os.path.join(out_folder(b), MANIFEST_NAME)
        try:
            n = fill_from_manifest(b, path)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{n} shots from {path}")
        return {"FINISHED"}


class PYMAF_OT_batch_import(bpy.types.Operator):
    """Import the chosen shot's result as rigs (like Import Result File, with the shot's video)"""
    bl_idname = "pymaf.batch_import"
    bl_label = "Import Shot"

    index: IntProperty(name="Shot", default=-1, options={"SKIP_SAVE"},
                       description="Index in the shot list (default: the active one)")

    def execute(self, context):
        b = settings(context)
        i = b.shots_index if self.index < 0 else self.index
        if not 0 <= i < len(b.shots):
            self.report({"ERROR"}, "no shot chosen")
            return {"CANCELLED"}
        shot = b.shots[i]
        if not shot.result or not os.path.isfile(shot.result):
            why = {"failed": f"it failed: {shot.message}", "cancelled": "it was cancelled",
                   "running": "it is still running"}.get(shot.status, "it has not run yet")
            self.report({"ERROR"}, f"shot {shot.name} has no result: {why}")
            return {"CANCELLED"}
        mode = "INVOKE_DEFAULT" if context.window is not None and not bpy.app.background else "EXEC_DEFAULT"
        return bpy.ops.pymaf.import_result(mode, filepath=shot.result, video=shot.video, name=shot.name)


class PYMAF_UL_batch_shots(bpy.types.UIList):
    """The shots of the batch: status, progress, frames and people."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.label(text=item.name, icon=STATUS_ICONS.get(item.status, "DOT"))
        sub = row.row()
        sub.alignment = "RIGHT"
        if item.status == "running":
            sub.label(text=f"{item.step} {item.progress:.0%}" + (f" (try {item.attempt})" if item.attempt > 1 else ""))
        elif item.status in ("done", "skipped"):
            sub.label(text=f"{item.people} people, {item.frames} frames")
        else:
            sub.label(text=item.status)


class PYMAF_PT_batch(SidebarPanel, bpy.types.Panel):
    bl_label = "Batch"
    bl_parent_id = "PYMAF_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from .preferences import draw_lines, draw_task

        layout = self.layout
        b = settings(context)
        running = tasks.active("batch")
        col = layout.column()
        col.enabled = running is None
        col.prop(b, "folder")
        col.prop(b, "out_dir")
        row = col.row(align=True)
        row.prop(b, "mattes", toggle=True)
        row.prop(b, "scenes", toggle=True)
        row = col.row(align=True)
        row.prop(b, "retries")
        row.prop(b, "ray_address", text="Ray")
        layout.label(text="Estimator and world: the settings above", icon="INFO")
        if running is not None:
            draw_task(layout, running, "batch")
        else:
            row = layout.row(align=True)
            row.scale_y = 1.3
            row.enabled = bool(b.folder)
            row.operator("pymaf.batch_start", icon="SEQ_STRIP_DUPLICATE")
            layout.operator("pymaf.batch_load", icon="FILE_REFRESH")
        last = tasks.last("batch")
        if running is None and last is not None and last.message:
            draw_lines(layout, last.message, context=context, limit=4)
        if len(b.shots):
            layout.template_list("PYMAF_UL_batch_shots", "", b, "shots", b, "shots_index", rows=4)
            if 0 <= b.shots_index < len(b.shots):
                shot = b.shots[b.shots_index]
                if shot.message and shot.status in ("failed", "cancelled", "running"):
                    draw_lines(layout, shot.message, icon="ERROR" if shot.status == "failed" else "INFO",
                               context=context, limit=4)
                row = layout.row(align=True)
                row.enabled = bool(shot.result) and os.path.isfile(shot.result)
                row.operator("pymaf.batch_import", icon="OUTLINER_OB_ARMATURE")
                if shot.result:
                    row.operator("wm.path_open", text="", icon="FILE_FOLDER").filepath = os.path.dirname(shot.result)


CLASSES = (PYMAF_PG_batch_shot, PYMAF_PG_batch, PYMAF_OT_batch_start, PYMAF_OT_batch_load,
           PYMAF_OT_batch_import, PYMAF_UL_batch_shots, PYMAF_PT_batch)

register, unregister = scene_settings_registration(CLASSES, "pymaf_batch", PYMAF_PG_batch)
