"""Shot lists and shot records of ``python -m engine batch`` (no Ray, no engine run): which
shots a folder / glob / text / CSV list names, their folder names, and when a finished step
counts as complete on a rerun."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from engine.batch import record as rec
from engine.batch import shot as shot_mod
from engine.batch.cli import scene_command
from engine.batch.shots import Shot, ShotListError, list_shots, safe_name


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_lists_its_videos_by_name_and_nothing_else(tmp_path):
    for name in ("b.MP4", "a.mov", "notes.txt", ".hidden.mp4", "c.avi"):
        _touch(tmp_path / name)
    (tmp_path / "sub").mkdir()
    _touch(tmp_path / "sub" / "d.mp4")
    shots = list_shots(str(tmp_path))
    assert [s.name for s in shots] == ["a", "b", "c"]
    assert shots[0] == Shot("a", str((tmp_path / "a.mov").resolve()))


def test_glob_recurses_and_same_stems_get_their_folder_names(tmp_path):
    _touch(tmp_path / "sh010" / "plate.mov")
    _touch(tmp_path / "sh020" / "plate.mov")
    _touch(tmp_path / "sh020" / "witness cam#1.mp4")
    shots = list_shots(str(tmp_path / "**" / "*.*"))
    assert [s.name for s in shots] == ["sh010_plate", "sh020_plate", "witness_cam_1"]


def test_text_list_is_relative_to_its_folder_with_comments(tmp_path):
    _touch(tmp_path / "clips" / "x.mp4")
    lst = tmp_path / "lists" / "tonight.txt"
    lst.parent.mkdir()
    lst.write_text("# tonight\n\n../clips/x.mp4\n../clips/missing.mp4\n")
    shots = list_shots(str(lst))
    assert [s.name for s in shots] == ["x", "missing"]   # a missing video fails as its own shot
    assert shots[1].video == str((tmp_path / "clips" / "missing.mp4").resolve())


def test_csv_list_with_names_and_frame_ranges(tmp_path):
    _touch(tmp_path / "x.mp4")
    lst = tmp_path / "shots.csv"
    lst.write_text("video,name,start,stop,notes\nx.mp4,hero,10,50,approved\nx.mp4,,50,,\nx.mp4,,,,\n")
    shots = list_shots(str(lst))
    assert [(s.name, s.start, s.stop) for s in shots] == [("hero", 10, 50), ("x_50-end", 50, None), ("x", None, None)]


@pytest.mark.parametrize("text,match", [
    ("name\nx.mp4\n", "'video' column"),
    ("video,start\nx.mp4,ten\n", "frame number"),
    ("video,start,stop\nx.mp4,20,10\n", "must be after start"),
    ("video,name\nx.mp4,a\ny.mp4,a\n", "same folder"),
    ("video\nx.mp4\nx.mp4\n", "listed twice"),
    ("video\n", "names no video"),
])
def test_bad_csv_lists_say_what_is_wrong(tmp_path, text, match):
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(ShotListError, match=match):
        list_shots(str(tmp_path / "l.csv"))


def test_nothing_to_run_is_an_error(tmp_path):
    with pytest.raises(ShotListError, match="no videos in"):
        list_shots(str(tmp_path))
    with pytest.raises(ShotListError, match="no videos match"):
        list_shots(str(tmp_path / "*.mov"))
    with pytest.raises(ShotListError, match="no such folder"):
        list_shots(str(tmp_path / "nope"))
    with pytest.raises(ShotListError, match="neither"):
        list_shots(str(_touch(tmp_path / "a.json")))


def test_safe_name():
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("...") == "shot"
    assert safe_name("Shot 010 (v2)") == "Shot_010_v2"


def _plan(tmp_path, video, **kw):
    return {"shot": Shot("s", str(video)).as_dict(), "out_dir": str(tmp_path / "out"), "engine_python": "py",
            "engine_parent": "/", "run_args": ["--smoothing", "none"], "mattes_args": kw.get("mattes"),
            "scene": None, "env": {}}


def _finish_result(tmp_path, plan, partial=False):
    """A real, valid result file where the batch puts it, and its record."""
    from engine.common import result_schema as rs
    from tests.engine.test_result_schema import make_result   # a valid small result

    folder = shot_mod.shot_folder(plan)
    folder.mkdir(parents=True)
    res = make_result(partial=partial)
    rs.write_result(res, shot_mod.result_path(plan))
    record = rec.new_record(plan["shot"])
    keys = shot_mod.step_keys(plan, record)
    rec.save_step(folder, record, "result", keys["result"], [shot_mod.result_path(plan)], result="s.npz")
    return folder


def test_a_finished_step_is_complete_until_anything_it_depends_on_changes(tmp_path):
    video = _touch(tmp_path / "v.mp4", b"video")
    plan = _plan(tmp_path, video)
    assert shot_mod.pending_steps(plan) == {"result": rec.NOT_FINISHED}
    folder = _finish_result(tmp_path, plan)
    assert shot_mod.pending_steps(plan) == {}
    # other options
    assert shot_mod.pending_steps(dict(plan, run_args=["--smoothing", "light"])) == {
        "result": "run with other options"}
    # mattes asked for later: only they run; they start from this result
    with_mattes = dict(plan, mattes_args=["--format", "png"])
    assert shot_mod.pending_steps(with_mattes) == {"mattes": rec.NOT_FINISHED}
    # the result file damaged, with the same size: the hash notices
    data = bytearray((folder / "s.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "s.npz").write_bytes(bytes(data))
    assert shot_mod.pending_steps(plan) == {"result": "s.npz has changed"}
    (folder / "s.npz").unlink()
    assert shot_mod.pending_steps(plan) == {"result": "s.npz is missing"}


def test_a_changed_video_or_a_partial_or_foreign_record_means_rerun(tmp_path):
    video = _touch(tmp_path / "v.mp4", b"video")
    plan = _plan(tmp_path, video)
    folder = _finish_result(tmp_path, plan)
    os.utime(video, ns=(1, 1))
    assert shot_mod.pending_steps(plan) == {"result": "the video changed"}
    (folder / rec.RECORD_NAME).write_text(json.dumps({"format": "something else"}))
    assert shot_mod.pending_steps(plan) == {"result": rec.NOT_FINISHED}


def test_a_partial_result_never_counts_as_complete(tmp_path):
    video = _touch(tmp_path / "v.mp4", b"video")
    plan = _plan(tmp_path, video)
    _finish_result(tmp_path, plan, partial=True)
    assert "partial result" in shot_mod.pending_steps(plan)["result"]


def test_scene_command_for_a_bpy_python_and_for_a_blender_executable(tmp_path):
    py = _touch(tmp_path / "bin" / "python3.11")
    cmd = scene_command(str(py))
    assert cmd["command"][1:] == ["-u", "-m", "pymaf_blender.cli"]
    blender = _touch(tmp_path / "blender-4.2" / "blender")
    cmd = scene_command(str(blender))
    assert cmd["command"][1:5] == ["-b", "--factory-startup", "--python-exit-code", "1"]
    assert cmd["command"][-2].endswith(os.path.join("pymaf_blender", "cli.py")) and cmd["command"][-1] == "--"
    with pytest.raises(ValueError, match="no such file"):
        scene_command(str(tmp_path / "nope"))


def test_manifest_csv_has_a_row_per_shot(tmp_path):
    entries = [{"shot": "a", "status": "done", "attempts": 1, "seconds": 1.5, "frames": 12, "people": 2,
                "estimator": "E", "device": "cpu", "video": "/v/a.mp4", "result": "a/a.npz", "code": "",
                "message": ""},
               {"shot": "b", "status": "failed", "attempts": 3, "seconds": 0.2, "video": "/v/b.mp4", "code": "x",
                "message": "went wrong, badly"}]
    rec.write_manifest(tmp_path, rec.manifest(entries, started="t", seconds=2, ray={}, options={}, finished=True))
    import csv
    rows = list(csv.DictReader((tmp_path / rec.MANIFEST_CSV).read_text().splitlines()))
    assert [r["shot"] for r in rows] == ["a", "b"]
    assert rows[1]["error"] == "went wrong, badly" and rows[0]["error"] == ""
    data = json.loads((tmp_path / rec.MANIFEST_JSON).read_text())
    assert data["counts"] == {"done": 1, "failed": 1} and data["finished"] is True


def test_a_new_result_takes_what_was_made_from_the_old_one_with_it(tmp_path):
    video = _touch(tmp_path / "v.mp4", b"video")
    plan = _plan(tmp_path, video, mattes=["--format", "png"])
    folder = _finish_result(tmp_path, plan)
    record = rec.read_record(folder)
    _touch(folder / "mattes" / "s_person1.0001.png")
    rec.save_step(folder, record, "mattes", shot_mod.step_keys(plan, record)["mattes"], [folder / "mattes"])
    assert shot_mod.pending_steps(plan) == {}
    rec.drop_steps(folder, record, ["mattes", "scene"])
    assert not (folder / "mattes").exists() and "mattes" not in rec.read_record(folder)["steps"]
    assert shot_mod.pending_steps(plan) == {"mattes": rec.NOT_FINISHED}


def test_mattes_options_reach_the_mattes_step(tmp_path):
    """--mattes-alpha segmentation is passed to engine mattes; the default adds nothing (a batch
    finished before the option existed keeps its mattes step's key)."""
    from engine.batch.cli import build_parser, make_plans

    (tmp_path / "a.mp4").write_bytes(b"")
    base = [str(tmp_path), "--out", str(tmp_path / "o"), "--cpus-per-job", "1", "--mattes", "--mattes-format", "png"]
    plain = make_plans(build_parser().parse_args(base), [])[0]["mattes_args"]
    assert plain == ["--format", "png", "--dilate", "0.0", "--feather", "0.0"]
    seg = make_plans(build_parser().parse_args([*base, "--mattes-alpha", "segmentation"]), [])[0]["mattes_args"]
    assert seg == [*plain, "--alpha", "segmentation"]
