"""``python -m engine batch`` on a local Ray, end to end with the real engine on small rendered
clips: the manifest says what happened, a rerun skips what is complete (checked) and redoes what
is not, a corrupt shot is reported without stopping the others, a worker killed mid-shot has its
shot retried to completion (and takes its engine with it), cancel keeps what was computed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.batch import record as rec
from engine.common.result_schema import read_result

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]


def _write_clip(path: Path, frames) -> None:
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    out.release()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, egl):
    """a.avi, b.avi: 12 frames of a walking mannequin; long.avi: 192 frames (48 rendered, walked
    forth and back twice: long enough to cancel mid-shot); corrupt.avi: the first 4 kB of a.avi."""
    from engine.measure.tracking import render_crossing_clip

    d = tmp_path_factory.mktemp("shots")
    for name, n, seed in (("a", 12, 3), ("b", 12, 5), ("long", 48, 7)):
        frames, _, _ = render_crossing_clip(n, 480, 270, seed=seed, people=1)
        if name == "long":
            frames = [*frames, *frames[::-1]] * 2
        _write_clip(d / f"{name}.avi", frames)
    (d / "corrupt.avi").write_bytes((d / "a.avi").read_bytes()[:4096])
    return d


def shot_list(folder: Path, *names) -> Path:
    lst = folder / ("_".join(names) + ".txt")
    lst.write_text("".join(f"{n}.avi\n" for n in names))
    return lst


def batch(shots, out, *args, on_event=None, timeout=300):
    """Run the batch with JSON-line progress; ``on_event(event, proc)`` sees every event.
    -> (exit code, events, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "engine", "batch", str(shots), "--out", str(out),
                             "--progress", "jsonl", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    events = []
    for line in proc.stdout:
        event = json.loads(line)   # stdout holds the JSON lines and nothing else
        events.append(event)
        if on_event is not None:
            on_event(event, proc)
    err = proc.stderr.read()
    return proc.wait(timeout=timeout), events, err


def manifest(out: Path) -> dict:
    data = json.loads((out / rec.MANIFEST_JSON).read_text())
    return {e["shot"]: e for e in data["shots"]}


def started(events) -> list:
    return [e["shot"] for e in events if e["event"] == "shot_start"]


@pytest.fixture(scope="module")
def first_run(clips, tmp_path_factory):
    """Every core per shot: Ray may run one shot at a time only."""
    out = tmp_path_factory.mktemp("batch") / "out"
    code, events, err = batch(shot_list(clips, "a", "b", "corrupt"), out, "--cpus-per-job", os.cpu_count())
    return out, code, events, err


def most_at_once(events) -> int:
    running, peak = set(), 0
    for e in events:
        if e["event"] == "shot_start":
            running.add(e["shot"])
            peak = max(peak, len(running))
        elif e["event"] == "shot_end":
            running.discard(e["shot"])
    return peak


def test_ray_runs_no_more_shots_at_once_than_the_cpus_allow(first_run):
    _, _, events, _ = first_run
    assert sum(e["event"] == "shot_start" for e in events) == 3
    assert most_at_once(events) == 1


def test_manifest_says_what_each_shot_did_and_a_corrupt_one_does_not_stop_the_others(clips, first_run):
    out, code, events, err = first_run
    assert code == 7, err                                 # finished, some shot failed
    assert events[-1]["event"] == "error" and events[-1]["code"] == "shots_failed"
    assert "corrupt" in events[-1]["message"]
    m = manifest(out)
    for name in ("a", "b"):
        e = m[name]
        res = read_result(out / name / f"{name}.npz")
        assert e["status"] == "done" and e["attempts"] == 1 and e["code"] == ""
        assert not res.partial and e["result"] == f"{name}/{name}.npz"
        assert e["frames"] == res.meta["frames_done"] == 12
        assert e["people"] == len(res.tracks) == 1
        assert e["estimator"] == res.meta["estimator"]["label"] == "BlazePose GHUM full + landmark fit"
        assert e["device"] == "cpu" and e["seconds"] > 0 and e["steps"]["result"]["status"] == "ran"
        assert res.meta["smoothing"] is None   # raw (--smoothing none), smoothed where it is imported
    c = m["corrupt"]
    assert c["status"] == "failed" and c["code"] == "not_video" and c["attempts"] == 1   # not retried
    assert "cannot be opened" in c["message"]
    assert not (out / "corrupt" / "corrupt.npz").exists()
    rows = (out / rec.MANIFEST_CSV).read_text().splitlines()
    assert rows[0].startswith("shot,status,attempts") and [r.split(",")[:2] for r in rows[1:]] == [
        ["a", "done"], ["b", "done"], ["corrupt", "failed"]]
    assert sorted(p.name for p in (out / "a").iterdir()) == ["a.npz", "logs", "shot.json"]


def test_rerun_skips_complete_shots_without_starting_ray(clips, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    code, events, err = batch(shot_list(clips, "a", "b"), out)
    assert code == 0, err
    assert not any(e["event"] == "ray" for e in events) and started(events) == []
    assert [s["status"] for s in events[0]["shots"]] == ["skipped", "skipped"]
    m = manifest(out)
    assert m["a"]["status"] == "skipped" and m["a"]["frames"] == 12 and m["a"]["result"] == "a/a.npz"


def test_rerun_redoes_a_damaged_result_and_only_that(clips, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    npz = out / "b" / "b.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF                        # same size, other content
    npz.write_bytes(bytes(data))
    code, events, err = batch(shot_list(clips, "a", "b"), out)
    assert code == 0, err
    assert started(events) == ["b"]
    assert [e["why"] for e in events if e["event"] == "step"] == ["b.npz has changed"]
    assert manifest(out)["b"]["status"] == "done" and not read_result(npz).partial
    # other engine options: redone, and said so
    code, events, err = batch(shot_list(clips, "a"), out, "--list", "--smoothing", "light")
    assert code == 0 and "a: to run (result: run with other options)" in err


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" in f.read()   # a zombie no one reaped yet has stopped running
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a worker by pid; the engine dies with it on Linux")
def test_a_killed_worker_has_its_shot_retried_and_nothing_is_lost(clips, tmp_path):
    out = tmp_path / "out"
    state = {"worker": {}, "engine": {}, "killed": None}

    def kill_b_mid_shot(event, proc):
        if event["event"] == "shot_start":
            state["worker"][event["shot"]] = event["pid"]
        elif event["event"] == "child":
            state["engine"][event["shot"]] = event["pid"]
        elif event["event"] == "progress" and event["shot"] == "b" and state["killed"] is None \
                and event["done"] >= 1:
            state["killed"] = (state["worker"]["b"], state["engine"]["b"])
            os.kill(state["worker"]["b"], signal.SIGKILL)

    code, events, err = batch(shot_list(clips, "a", "b"), out, on_event=kill_b_mid_shot)
    assert code == 0, err
    assert state["killed"] is not None
    ends = [e for e in events if e["event"] == "shot_end" and e["shot"] == "b"]
    assert [(e["status"], e["code"]) for e in ends] == [("failed", "worker_died"), ("done", "")]
    assert any(e["event"] == "retry" and e["shot"] == "b" and e["attempt"] == 2 for e in events)
    assert _gone(state["killed"][1])                    # the killed worker's engine did not run on
    m = manifest(out)
    assert (m["a"]["status"], m["a"]["attempts"]) == ("done", 1)
    assert (m["b"]["status"], m["b"]["attempts"]) == ("done", 2)
    for name in ("a", "b"):
        assert not read_result(out / name / f"{name}.npz").partial
    assert "$ " in (out / "b" / "logs" / "result.log").read_text()   # both tries logged


def test_without_retries_a_killed_worker_is_a_failed_shot(clips, tmp_path):
    out = tmp_path / "out"
    pids = {}

    def kill_a(event, proc):
        if event["event"] == "shot_start":
            pids[event["shot"]] = event["pid"]
        elif event["event"] == "progress" and event["done"] >= 1 and "killed" not in pids:
            pids["killed"] = True
            os.kill(pids["a"], signal.SIGKILL)

    code, events, err = batch(shot_list(clips, "a"), out, "--retries", "0", on_event=kill_a)
    assert code == 7
    e = manifest(out)["a"]
    assert e["status"] == "failed" and e["code"] == "worker_died" and "died" in e["message"]
    assert "failed" in (out / rec.MANIFEST_CSV).read_text()


def test_sigterm_cancels_keeps_what_was_computed_and_the_rerun_finishes(clips, tmp_path):
    """SIGTERM (what farm managers and ``timeout`` send) cancels like Ctrl+C (the Blender tests
    cancel with SIGINT)."""
    out = tmp_path / "out"
    sent = []

    def interrupt(event, proc):
        if event["event"] == "progress" and event["shot"] == "long" and event["done"] >= 1 and not sent:
            sent.append(True)
            proc.send_signal(signal.SIGTERM)

    code, events, err = batch(shot_list(clips, "long"), out, on_event=interrupt)
    assert code == 130, err
    assert events[-1] == {"event": "error", "code": "cancelled", "message": events[-1]["message"]}
    e = manifest(out)["long"]
    assert e["status"] == "cancelled"
    npz = out / "long" / "long.npz"
    if npz.exists():                                   # the engine's partial result, marked so
        res = read_result(npz)
        assert res.partial and 0 < res.meta["frames_done"] < 192
        assert f"({res.meta['frames_done']} of 192 frames)" in e["message"]
        code, events, err = batch(shot_list(clips, "long"), out, "--list")
        assert "long: to run (result: long.npz is a partial result (cancelled after" in err
    code, events, err = batch(shot_list(clips, "long"), out)
    assert code == 0, err
    assert started(events) == ["long"]
    res = read_result(npz)
    assert not res.partial and res.meta["frames_done"] == 192


def _batch_quick(*args, pre=""):
    code = pre + "import sys; from engine.batch.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_bad_batch_input_is_a_clear_usage_error(clips, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _batch_quick(empty, "--out", tmp_path / "o", "--progress", "jsonl")
    assert r.returncode == 2 and "no videos in" in r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["code"] == "usage"
    r = _batch_quick(clips, "--out", tmp_path / "o", "--tracks", "t.json")
    assert r.returncode == 2 and "--tracks cannot be used in a batch" in r.stderr
    r = _batch_quick(clips, "--out", tmp_path / "o", "--estimator", "nonsense")
    assert r.returncode == 2 and "invalid choice" in r.stderr and "passed to 'python -m engine run'" in r.stderr
    r = _batch_quick(clips, "--out", tmp_path / "o", "--frobnicate", "--progress", "jsonl")
    assert r.returncode == 2 and "usage: python -m engine run" not in r.stderr
    assert "neither an option of 'python -m engine batch' nor of 'python -m engine run'" in \
        json.loads(r.stdout.splitlines()[-1])["message"]
    r = _batch_quick(clips, "--out", tmp_path / "o", "--mattes-dilate", "2")
    assert r.returncode == 2 and "--mattes-dilate only apply with --mattes" in r.stderr
    r = _batch_quick(clips, "--out", tmp_path / "o", "--engine-python", tmp_path / "no" / "python")
    assert r.returncode == 2 and "--engine-python: no Python to run" in r.stderr
    r = _batch_quick(clips, "--out", tmp_path / "o", "--retries", "-1")
    assert r.returncode == 2
    r = _batch_quick(clips, "--out", tmp_path / "listed", "--list")
    assert r.returncode == 0 and "a: to run" in r.stdout and not (tmp_path / "listed").exists()
    blocked = tmp_path / "file"
    blocked.write_text("")
    r = _batch_quick(clips, "--out", blocked / "out")
    assert r.returncode == 6 and "cannot write" in r.stderr


def test_without_ray_the_batch_says_how_to_install_it(clips, tmp_path):
    r = _batch_quick(shot_list(clips, "a"), "--out", tmp_path / "o", pre="import sys; sys.modules['ray'] = None; ")
    assert r.returncode == 5, r.stderr
    assert "build.py setup --extras batch" in r.stderr
    assert manifest(tmp_path / "o")["a"]["code"] == "ray"


def test_an_unreachable_cluster_is_a_quick_clear_error(clips, tmp_path):
    r = _batch_quick(shot_list(clips, "a"), "--out", tmp_path / "o", "--ray", "127.0.0.1:1", "--progress", "jsonl")
    assert r.returncode == 5, r.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in json.loads(r.stdout.splitlines()[-1])["message"]
    assert manifest(tmp_path / "o")["a"]["code"] == "ray"


def test_gpus_are_resources_shots_wait_for_and_the_manifest_says_which(clips, tmp_path):
    """One GPU declared to the local Ray (this machine may have none: Ray then hands out the
    logical GPU and the engine, finding no CUDA, runs on the CPU): with a whole GPU per shot
    they run one at a time, each told GPU 0 through CUDA_VISIBLE_DEVICES."""
    out = tmp_path / "out"
    code, events, err = batch(shot_list(clips, "a", "b"), out, "--local-gpus", 1, "--gpus-per-job", 1,
                              "--cpus-per-job", 1)
    assert code == 0, err
    assert next(e for e in events if e["event"] == "ray")["gpus"] == 1
    assert most_at_once(events) == 1
    m = manifest(out)
    assert m["a"]["gpus"] == m["b"]["gpus"] == "0"
    assert json.loads((out / rec.MANIFEST_JSON).read_text())["options"]["gpus_per_job"] == 1
