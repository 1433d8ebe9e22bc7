"""The job runner (engine/common/jobs.py) with real subprocesses: the fake engine
(tests/blender/fake_engine.py, numpy only) and the real engine's command line."""
import json
import os
import sys
import time
from pathlib import Path

import pytest

from engine.common import jobs
from engine.common.result_schema import read_result

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "blender" / "fake_engine.py"


def fake_job(tmp_path, mode="ok", *args, **kwargs):
    env = dict(os.environ, PYMAF_FAKE_ENGINE=mode, PYMAF_FAKE_DELAY="0.01")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video")
    argv = [sys.executable, "-u", str(FAKE), "run", str(video), "-o", str(tmp_path / "out.npz"),
            "--progress", "jsonl", *args]
    return jobs.Job(argv, env=env, **kwargs)


def drain(job, timeout=30.0):
    events = []
    result = job.wait(timeout=timeout, on_event=events.append)
    return result, events


def test_done_with_progress_and_a_valid_result(tmp_path):
    result, events = drain(fake_job(tmp_path, "ok", "--stop", "5", log_path=tmp_path / "engine.log"))
    kinds = [e["event"] for e in events]
    assert result.ok and result.status == "done" and result.returncode == 0
    assert kinds.count("progress") >= 5 and kinds[-2:] == ["done", "exit"]
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert stages[0] == "track" and stages[-1] == "infer"
    assert result.done["result"] == str(tmp_path / "out.npz")
    res = read_result(result.done["result"])
    assert sorted(res.tracks) == ["1", "2"] and res.timestamps.shape == (5,)
    # stderr lines are log events (never mixed into the protocol) and go to the log file
    assert any(e["event"] == "log" and e["stream"] == "stderr" and "fake engine" in e["line"] for e in events)
    log = (tmp_path / "engine.log").read_text()
    assert '"event": "done"' in log and "[stderr] fake engine" in log and log.startswith("$ ")


def test_engine_error_is_passed_through_with_its_code(tmp_path):
    result, events = drain(fake_job(tmp_path, "fail"))
    assert result.status == "error" and result.returncode == 4
    assert result.code == "no_person" and result.message == "no person found in the video"
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and events[-1] == {"event": "exit", "returncode": 4, "status": "error"}
    assert not (tmp_path / "out.npz").exists()


def test_crash_without_a_message_is_detected_with_exit_code_and_stderr_tail(tmp_path):
    result, events = drain(fake_job(tmp_path, "crash"))
    assert result.status == "error" and result.code == "crashed"
    assert result.returncode == -11 if os.name != "nt" else result.returncode != 0
    assert "SIGSEGV" in result.message and "without an error message" in result.message
    assert "Segmentation fault" in result.message and "pymaf.py" in result.stderr_tail
    synthesized = [e for e in events if e["event"] == "error"]
    assert len(synthesized) == 1 and synthesized[0]["code"] == "crashed"


def test_exit_zero_without_done_is_an_error(tmp_path):
    job = jobs.Job([sys.executable, "-c", "print('hello')"])
    result, events = drain(job)
    assert result.status == "error" and "without reporting a result" in result.message
    assert {"event": "log", "stream": "stdout", "line": "hello"} in events


def test_poll_never_blocks_and_lines_arrive_while_running(tmp_path):
    code = "import time, json\nfor i in range(5):\n    print(json.dumps({'event': 'progress', 'done': i}), " \
           "flush=True); time.sleep(0.2)\nprint(json.dumps({'event': 'done'}))"
    job = jobs.Job([sys.executable, "-c", code]).start()
    seen, t0, slowest = [], time.monotonic(), 0.0
    while not job.finished:
        t = time.monotonic()
        for e in job.poll():
            if e["event"] == "progress":
                seen.append((e["done"], time.monotonic() - t0))
        slowest = max(slowest, time.monotonic() - t)
        time.sleep(0.01)
    assert [d for d, _ in seen] == [0, 1, 2, 3, 4]
    assert seen[0][1] < 0.5 < seen[-1][1]  # incremental, not all at the end
    assert slowest < 0.05
    assert job.result.ok and job.last_progress["done"] == 4


def test_cancel_interrupts_and_the_engine_leaves_a_partial_result(tmp_path):
    job = fake_job(tmp_path, "hang").start()
    deadline = time.monotonic() + 20
    while not any(e["event"] == "progress" and e["stage"] == "infer" for e in job.poll()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job.cancel()
    assert job.cancelling
    result, events = drain(job)
    assert result.status == "cancelled" and result.returncode == 130 and result.code == "cancelled"
    partial = read_result(tmp_path / "out.npz")
    assert partial.partial and partial.meta["frames_done"] == 3


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_cancel_escalates_when_the_child_ignores_the_interrupt(tmp_path):
    job = fake_job(tmp_path, "stubborn", grace_s=0.3, kill_s=0.3).start()
    deadline = time.monotonic() + 20
    while not any(e["event"] == "progress" and e["stage"] == "infer" for e in job.poll()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    t0 = time.monotonic()
    job.cancel()
    result, _ = drain(job)
    assert result.status == "cancelled" and result.returncode == -15  # SIGTERM after the grace time
    assert 0.25 < time.monotonic() - t0 < 5


def test_forced_cancel_kills_at_once(tmp_path):
    job = jobs.Job([sys.executable, "-c", "import time, signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                    "time.sleep(60)"]).start()
    time.sleep(0.2)
    job.cancel(force=True)
    result, _ = drain(job, timeout=10)
    assert result.status == "cancelled" and result.seconds < 5


def test_argument_list_only_no_shell(tmp_path):
    with pytest.raises(TypeError):
        jobs.Job("python -m engine run x.mp4")
    marker = tmp_path / "marker"
    weird = f"a b; touch {marker} && echo $HOME"
    code = "import sys, json; print(json.dumps({'event': 'done', 'argv': sys.argv[1:]}))"
    result, _ = drain(jobs.Job([sys.executable, "-c", code, weird]))
    assert result.ok and result.done["argv"] == [weird] and not marker.exists()


def test_a_missing_program_is_an_error_not_an_exception(tmp_path):
    result, events = drain(jobs.Job([str(tmp_path / "no-such-python"), "-m", "engine"]))
    assert result.status == "error" and result.code == "start_failed"
    assert "no-such-python" in result.message and events[-1]["event"] == "exit"


def test_plain_protocol_and_sequence(tmp_path):
    log = tmp_path / "setup.log"
    ok = [sys.executable, "-c", "print('step output')"]
    seq = jobs.Sequence([("first", ok), ("second", ok)], log_path=log)
    result, events = drain(seq)
    assert result.ok
    progress = [(e["stage"], e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert progress == [("first", 0, 2), ("second", 1, 2)]
    assert log.read_text().count("\nstep output\n") == 2

    bad = [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]
    ran = tmp_path / "ran"
    never = [sys.executable, "-c", f"open({str(ran)!r}, 'w')"]
    result, events = drain(jobs.Sequence([("ok", ok), ("bad", bad), ("never", never)]))
    assert result.status == "error" and "bad failed (exit code 3)" in result.message and "boom" in result.message
    assert not ran.exists()

    seq = jobs.Sequence([("sleep", [sys.executable, "-c", "import time; time.sleep(60)"]), ("never", never)])
    seq.start()
    seq.poll()
    time.sleep(0.2)
    seq.cancel()
    result, _ = drain(seq, timeout=20)
    assert result.status == "cancelled" and not ran.exists()


def test_engine_env_points_at_the_engine_only():
    env = jobs.engine_env("/opt/addon", base={"PYTHONHOME": "/blender/python", "PYTHONPATH": "/x", "PATH": "/bin"})
    assert env["PYTHONPATH"] == "/opt/addon" and "PYTHONHOME" not in env and env["PATH"] == "/bin"
    assert jobs.engine_command("/venv/bin/python", "run", Path("v.mp4"))[:4] == ["/venv/bin/python", "-u", "-m", "engine"]


def test_real_engine_error_through_the_job(tmp_path):
    """The engine's own command line, through the job: a missing video is exit 3, code not_found."""
    argv = jobs.engine_command(sys.executable, "run", tmp_path / "missing.mp4", "-o", tmp_path / "o.npz",
                               "--progress", "jsonl", "--smoothing", "none")
    result, events = drain(jobs.Job(argv, env=jobs.engine_env(REPO), cwd=tmp_path))
    assert result.status == "error" and result.returncode == 3 and result.code == "not_found"
    assert "missing.mp4" in result.message
    assert all(e["event"] in ("log", "error", "exit") for e in events)
    json.dumps(events)  # events are plain JSON
