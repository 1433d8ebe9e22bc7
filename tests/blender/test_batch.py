"""The Batch panel (pymaf_blender/batch_ops.py) with the real engine's ``batch`` command on a
local Ray, under real bpy (4.2 / 5.0 / 5.2).

The clips are rendered by the engine environment (a walking mannequin). The button runs the
folder with scenes: each good shot gets its result, a .blend and an FBX made by a background
Blender (this same bpy), a corrupt one fails alone; a shot imported from the list equals the rig
the batch's own .blend holds (same pose matrices on every frame checked, 1e-5); the list loads
back from the manifest; a rerun skips the complete shots; Cancel stops a running batch and keeps
what is finished.
"""
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import bpy
import pytest

from conftest import REPO, engine_python, no_chosen_engine
from layout_recorder import Recorder

MAKE_CLIPS = """
import sys
from pathlib import Path
import cv2
from engine.measure.tracking import render_crossing_clip
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for name, n, seed, repeat in (("a", 12, 3, 1), ("b", 12, 5, 1), ("long", 48, 7, 2)):
    frames, _, _ = render_crossing_clip(n, 480, 270, seed=seed, people=1)
    frames = [*frames, *frames[::-1]] * repeat if repeat > 1 else list(frames)
    w = cv2.VideoWriter(str(out / (name + ".avi")), cv2.VideoWriter_fourcc(*"MJPG"), 25, (480, 270))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
"""


def _has_ray(py) -> bool:
    return subprocess.run([str(py), "-c", "import ray"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    py = engine_python()
    if not _has_ray(py):
        pytest.skip("Ray is not installed in the engine environment (python3 build.py setup --extras batch)")
    root = tmp_path_factory.mktemp("batch")
    all_clips = root / "all"
    r = subprocess.run([str(py), "-c", MAKE_CLIPS, str(all_clips)], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300)
    if r.returncode != 0 and "EGL" in r.stderr:
        pytest.skip("the engine cannot render here (no EGL)")
    assert r.returncode == 0, r.stderr
    shots = root / "shots"
    shots.mkdir()
    for name in ("a.avi", "b.avi"):
        (shots / name).write_bytes((all_clips / name).read_bytes())
    (shots / "corrupt.avi").write_bytes((all_clips / "a.avi").read_bytes()[:4096])
    long_shot = root / "long"
    long_shot.mkdir()
    (long_shot / "long.avi").write_bytes((all_clips / "long.avi").read_bytes())
    return SimpleNamespace(shots=shots, long=long_shot, root=root)


@pytest.fixture
def engine_env(monkeypatch):
    monkeypatch.setenv("PYMAF_ENGINE_PYTHON", str(engine_python()))
    with no_chosen_engine():
        yield


def start_batch() -> str:
    """Press Start Batch; -> the error it reports ("" when none): a shot that failed makes the
    batch end with an error report, which bpy.ops raises."""
    try:
        assert bpy.ops.pymaf.batch_start() == {"FINISHED"}
    except RuntimeError as exc:
        return str(exc)
    return ""


@pytest.fixture(scope="module")
def batch_run(clips):
    """The Start Batch button on the shots folder, scenes and FBX on (run once)."""
    import pymaf_blender

    registered = not hasattr(bpy.types, "PYMAF_PT_main")
    if registered:
        pymaf_blender.register()
    old = os.environ.get("PYMAF_ENGINE_PYTHON")
    os.environ["PYMAF_ENGINE_PYTHON"] = str(engine_python())
    try:
        with no_chosen_engine():
            bpy.ops.wm.read_homefile(use_empty=True)
            b = bpy.context.scene.pymaf_batch
            b.folder, b.out_dir, b.scenes = str(clips.shots), str(clips.root / "out"), True
            t0 = time.monotonic()
            outcome = start_batch()
            seconds = time.monotonic() - t0
            from pymaf_blender import tasks
            task = tasks.last("batch")
            shots = {s.name: (s.status, s.result, s.message, s.frames, s.people, s.video) for s in b.shots}
    finally:
        if old is None:
            os.environ.pop("PYMAF_ENGINE_PYTHON", None)
        else:
            os.environ["PYMAF_ENGINE_PYTHON"] = old
        if registered:
            pymaf_blender.unregister()
    return SimpleNamespace(outcome=outcome, task=task, shots=shots, out=clips.root / "out", seconds=seconds)


def test_the_button_runs_the_folder_and_a_corrupt_shot_fails_alone(batch_run):
    r = batch_run
    assert "1 of 3 shots failed: corrupt" in r.outcome      # finished, but a shot failed: reported as an error
    assert r.task.status == "error" and "1 of 3 shots failed: corrupt" in r.task.message, r.task.message
    assert sorted(r.shots) == ["a", "b", "corrupt"]
    for name in ("a", "b"):
        status, result, message, frames, people, video = r.shots[name]
        assert (status, frames, people) == ("done", 12, 1), r.shots[name]
        assert result == str(r.out / name / f"{name}.npz") and os.path.isfile(result)
        assert os.path.isfile(r.out / name / "scene" / f"{name}.blend")
        assert os.path.isfile(r.out / name / "scene" / f"{name}.fbx")
    status, result, message, *_ = r.shots["corrupt"]
    assert status == "failed" and result == "" and "cannot be opened" in message


def _pose(arm, frames):
    out = []
    for f in frames:
        bpy.context.scene.frame_set(f)
        out.append([[list(row) for row in arm.matrix_world @ pb.matrix] for pb in arm.pose.bones])
    return out


def test_an_imported_shot_equals_the_rig_in_the_batch_scene(batch_run, addon, engine_env):
    bpy.ops.wm.read_homefile(use_empty=True)
    b = bpy.context.scene.pymaf_batch
    assert bpy.ops.pymaf.batch_load(filepath=str(batch_run.out / "manifest.json")) == {"FINISHED"}
    assert [(s.name, s.status) for s in b.shots] == [("a", "done"), ("b", "done"), ("corrupt", "failed")]
    b.shots_index = 1
    assert bpy.ops.pymaf.batch_import() == {"FINISHED"}
    arms = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    assert len(arms) == 1 and arms[0]["pymaf_result_file"] == str(batch_run.out / "b" / "b.npz")
    frames = [1, 6, 12]
    imported = _pose(arms[0], frames)
    bpy.ops.wm.open_mainfile(filepath=str(batch_run.out / "b" / "scene" / "b.blend"))
    arms = [o for o in bpy.context.scene.objects if o.type == "ARMATURE"]
    assert len(arms) == 1
    import numpy as np
    np.testing.assert_allclose(np.array(_pose(arms[0], frames)), np.array(imported), atol=1e-5)
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.context.scene.pymaf_batch.shots_index = 0
    with pytest.raises(RuntimeError, match="no shot chosen"):      # an empty list: nothing to import
        bpy.ops.pymaf.batch_import()


def test_a_rerun_skips_the_complete_shots(batch_run, clips, addon, engine_env):
    bpy.ops.wm.read_homefile(use_empty=True)
    b = bpy.context.scene.pymaf_batch
    b.folder, b.out_dir, b.scenes = str(clips.shots), str(batch_run.out), True
    assert "corrupt" in start_batch()
    assert [(s.name, s.status) for s in b.shots] == [("a", "skipped"), ("b", "skipped"), ("corrupt", "failed")]
    assert all(s.result for s in b.shots if s.status == "skipped")


def test_cancel_stops_the_batch_and_says_what_is_kept(clips, addon, engine_env, tmp_path):
    from pymaf_blender import batch_ops, tasks

    bpy.ops.wm.read_homefile(use_empty=True)
    task = batch_ops.BatchTask(folder=str(clips.long), out_dir=str(tmp_path / "out"))
    task.start(bpy.context)
    deadline = time.monotonic() + 240
    cancelled_at = None
    while not task.step(bpy.context):
        shots = bpy.context.scene.pymaf_batch.shots
        if cancelled_at is None and len(shots) and shots[0].progress > 0:
            task.cancel()
            cancelled_at = shots[0].progress
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert cancelled_at is not None and task.status == "cancelled", task.message
    assert "finished shots are kept" in task.message
    assert bpy.context.scene.pymaf_batch.shots[0].status == "cancelled"
    assert tasks.active("batch") is None


def test_the_panel_and_the_missing_ray_message(addon):
    from pymaf_blender import batch_ops
    from pymaf_blender.common.jobs import JobResult

    bpy.ops.wm.read_homefile(use_empty=True)
    b = bpy.context.scene.pymaf_batch
    shot = b.shots.add()
    shot.name, shot.status, shot.message = "sh010", "failed", "Not a video file"
    rec = Recorder()
    bpy.types.PYMAF_PT_batch.draw(SimpleNamespace(layout=rec), bpy.context)
    assert "Estimator and world: the settings above" in rec.texts and "Not a video file" in rec.texts
    msg = batch_ops.BatchTask().error_message(JobResult("error", 5, "ray", "Ray is not installed"))
    assert "Batch processing (Ray)" in msg and "Set up Engine" in msg


def test_the_scene_job_names_its_files_after_the_shot(batch_run, tmp_path):
    """A shot is often a range of a longer video: its .blend and FBX carry the shot's name (the
    batch passes --name), not the video's."""
    out = tmp_path / "scene"
    video = batch_run.shots["a"][5]
    r = subprocess.run([sys.executable, "-m", "pymaf_blender.cli", video, "--out", str(out),
                        "--result", str(batch_run.out / "a" / "a.npz"), "--name", "sh010_v2.0", "--no-overlay",
                        "--engine-python", str(engine_python())],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sh010_v2.0.blend", "sh010_v2.0.fbx"]
