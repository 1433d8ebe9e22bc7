"""A stand-in for the engine's command line, for tests of everything around it (no torch).

It speaks the engine's protocol (docs/engine-cli.md): JSON lines on stdout, logs on stderr,
the documented exit codes, a valid result file (engine.common.result_schema, with rig data).
It is called like the engine's interpreter, ``FAKE -u -m engine run VIDEO -o OUT ...``, through
a wrapper script (``write_wrapper``) that the extension's preferences take as "the engine's
Python", or directly: ``python fake_engine.py run VIDEO -o OUT``.

What it does is chosen with the environment variable ``PYMAF_FAKE_ENGINE``:

    ok        progress lines, then a valid result and a "done" event (exit 0)   [default]
    fail      a progress line, then {"event": "error", "code": "no_person", ...}, exit 4
    hang      progress lines until SIGINT/SIGTERM; then a valid PARTIAL result, a "cancelled"
              error event and exit 130 (like the engine cancelled during inference)
    stubborn  like hang but ignores SIGINT (escalation to SIGTERM/SIGKILL is then needed)
    crash     a progress line, some stderr, then dies by SIGSEGV: no done/error event
    badresult says "done" but the file it wrote is not a valid result
    pipfail   (as a base Python for engine setup) "pip install" fails with exit 1
    landmarkfail  (engine setup) ``-m engine.landmarks.setup`` fails like the real one (exit 5,
              one "error: ..." line)
    oldmeta   like ok, but the result has no ``meta["estimator"]`` (an engine before it existed)

``run`` records the estimator the way the engine does: ``--estimator landmarks
--landmark-model SIZE`` -> ``meta["estimator"] = {"name": "landmarks", "model": SIZE, "label":
"BlazePose GHUM SIZE + landmark fit"}``, ``--estimator pymaf`` -> "PyMAF (official checkpoint)"
(with ``--checkpoint``) or "PyMAF (untrained network)". ``-m engine.landmarks.setup`` (engine
setup's last step) is answered here, never by the real engine (no download in tests).

``PYMAF_FAKE_DELAY`` (seconds between progress lines, default 0.02) and ``PYMAF_FAKE_FPS``
(default 25) adjust it; ``PYMAF_FAKE_ARGV_LOG`` appends every argv it was called with (JSON)
to that file. ``analyze VIDEO -o TRACKS.json`` writes a tracks file (people "1" and "2") and
``run --tracks`` reads it back. Other engine modules (``-m engine.overlay``, ``-m engine.check``)
are handed to the real engine interpreter named by ``PYMAF_REAL_ENGINE_PYTHON`` when it is set. As a base Python for the engine setup it understands ``-m venv DIR`` (creates
``DIR/bin/python`` pointing back at this fake) and ``-m pip install ...``.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODE = os.environ.get("PYMAF_FAKE_ENGINE", "ok")
DELAY = float(os.environ.get("PYMAF_FAKE_DELAY", "0.02"))
FPS = float(os.environ.get("PYMAF_FAKE_FPS", "25"))
WIDTH, HEIGHT, FOCAL = 640, 360, 600.0


def write_wrapper(path, python=None) -> Path:
    """An executable that runs this fake with ``python`` (default: this interpreter)."""
    path = Path(path)
    python = python or sys.executable
    if os.name == "nt":
        path = path.with_suffix(".cmd")
        path.write_text(f'@"{python}" "{Path(__file__).resolve()}" %*\n')
    else:
        path.write_text(f'#!/bin/sh\nexec "{python}" "{Path(__file__).resolve()}" "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def log(msg) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def option(argv, name, default=None):
    if name in argv:
        i = argv.index(name)
        if i + 1 < len(argv):
            return argv[i + 1]
    return default


# --- a valid result ---------------------------------------------------------------------------
def _body(body_path):
    """(faces, weights, parents, v_template, shapedirs, J_regressor) from an SMPL-style .npz, or a
    small synthetic body (one box per joint) when none is given."""
    import numpy as np
    from engine.common import smpl_topology as topo

    parents = np.array(topo.SMPL_PARENTS, np.int64)
    if body_path and str(body_path).endswith(".npz") and Path(body_path).is_file():
        z = np.load(body_path, allow_pickle=False)
        return (z["f"].astype(np.int64), z["weights"].astype(np.float64), parents,
                z["v_template"].astype(np.float64), z["shapedirs"].astype(np.float64)[..., :10],
                z["J_regressor"].astype(np.float64))
    # A synthetic body: joints of a standing figure (y up, metres), 8 vertices per joint.
    offsets = np.zeros((24, 3))
    for j, p in enumerate(parents):
        if p < 0:
            offsets[j] = (0.0, 0.9, 0.0)
        elif j in (1, 2):
            offsets[j] = (0.1 if j == 1 else -0.1, -0.1, 0.0)
        elif j in (13, 14, 16, 17, 18, 19, 20, 21, 22, 23):
            side = 1.0 if j % 2 else -1.0
            offsets[j] = (side * 0.15, 0.0, 0.0)
        else:
            offsets[j] = (0.0, -0.2 if j in (4, 5, 7, 8, 10, 11) else 0.15, 0.0)
    joints = np.zeros((24, 3))
    for j, p in enumerate(parents):
        joints[j] = offsets[j] + (joints[p] if p >= 0 else 0.0)
    cube = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * 0.03
    verts = (joints[:, None] + cube[None]).reshape(-1, 3)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for j in range(24):
        for a, b, c, d in quads:
            faces += [(8 * j + a, 8 * j + b, 8 * j + c), (8 * j + a, 8 * j + c, 8 * j + d)]
    weights = np.repeat(np.eye(24), 8, axis=0)
    regressor = np.repeat(np.eye(24), 8, axis=1) / 8.0
    return np.array(faces, np.int64), weights, parents, verts, np.zeros((len(verts), 3, 10)), regressor


def estimator_meta(argv):
    """meta["estimator"] as the engine writes it for these arguments (None: not recorded)."""
    name = option(argv, "--estimator")
    if MODE == "oldmeta" or name is None:
        return None
    if name == "landmarks":
        size = option(argv, "--landmark-model", "full")
        return {"name": "landmarks", "model": size, "label": f"BlazePose GHUM {size} + landmark fit"}
    if name == "pymaf-blazepose":
        return {"name": name, "model": "full", "label": "PyMAF heads on BlazePose GHUM full (trained by this project)"}
    return {"name": "pymaf", "label": "PyMAF (official checkpoint)" if option(argv, "--checkpoint")
            else "PyMAF (untrained network)"}


def make_result(video, n, start, people, body_path, partial_k=None, estimator=None):
    """A MotionResult with tracks "1" (all frames) and "2" (from frame 2), plausible motion."""
    import numpy as np
    from engine.common import rotations
    from engine.common.result_schema import BodyRig, MotionResult, TrackResult, make_meta

    faces, weights, parents, v_template, shapedirs, J_regressor = _body(body_path)
    done = n if partial_k is None else partial_k
    rng = np.random.default_rng(0)
    tracks = {}
    for tid, first, x in (("1", 0, -0.5), ("2", 2, 0.6)):
        if people and tid not in people:
            continue
        frames = np.arange(first, done, dtype=np.int64)
        T = len(frames)
        if T == 0:
            continue
        t = frames / FPS
        aa = np.zeros((T, 24, 3))
        aa[:, 0] = (np.pi, 0.0, 0.0)  # upright in the OpenCV camera (y down)
        aa[:, 1:] = rng.normal(0, 0.05, (T, 23, 3))
        aa[:, 16, 2] = -0.6 + 0.3 * np.sin(2 * np.pi * t)  # left shoulder swings
        R = rotations.axis_angle_to_rotmat(aa)
        transl = np.stack([np.full(T, x) + 0.1 * t, np.full(T, 0.2), np.full(T, 4.0)], axis=1)
        betas = np.zeros((T, 10))
        rest_vertices = v_template + shapedirs @ np.zeros(10)
        track = TrackResult.from_rotmats(frames, transl, R[:, 0], R[:, 1:], betas, np.full(T, 0.9),
                                         rest_vertices=rest_vertices, rest_joints=J_regressor @ rest_vertices)
        tracks[tid] = track
    extra = {"estimator": estimator} if estimator else {}
    meta = make_meta(video={"path": os.path.abspath(video), "width": WIDTH, "height": HEIGHT, "fps": FPS,
                            "frame_count": n if partial_k is None else None},
                     camera={"focal_px": FOCAL, "principal_point": [WIDTH / 2, HEIGHT / 2]},
                     partial=partial_k is not None, frames_done=done, track_ids=sorted(tracks),
                     provenance={"fake_engine": True}, smoothing=None, frame_start=start,
                     source_frame_count=start + n, **extra)
    return MotionResult(meta=meta, tracks=tracks, timestamps=np.arange(max(done, 1)) / FPS,
                        body=BodyRig(faces=faces, weights=weights, parents=parents))


# --- commands ---------------------------------------------------------------------------------
def cmd_analyze(argv) -> int:
    video, out = argv[0] if argv else None, option(argv, "-o") or option(argv, "--output")
    if not video or not os.path.isfile(video):
        emit({"event": "error", "code": "not_found", "message": f"Video file not found: {video}"})
        return 3
    start = int(option(argv, "--start", 0))
    stop = option(argv, "--stop")
    n = (int(stop) - start) if stop else 8
    for i in range(n):
        emit({"event": "progress", "stage": "analyze", "done": i + 1, "total": n, "fps": 50.0, "eta_s": 0.1})
        time.sleep(DELAY)
    tracks = []
    for tid, first in ((1, 0), (2, 2)):
        frames = list(range(start + first, start + n))
        tracks.append({"id": tid, "first_frame": frames[0], "last_frame": frames[-1], "frame_count": len(frames),
                       "frames": frames, "xyxy": [[100.0 * tid, 50.0, 100.0 * tid + 80, 330.0]] * len(frames),
                       "scores": [0.8] * len(frames), "interpolated": [False] * len(frames)})
    doc = {"format": "pymaf-tracks", "version": 1, "engine_version": "fake", "created": "2026-01-01T00:00:00+00:00",
           "partial": False, "video": {"path": os.path.abspath(video), "width": WIDTH, "height": HEIGHT, "fps": FPS,
                                       "frame_count": start + n},
           "frame_start": start, "frame_stop": start + n, "timestamps": [i / FPS for i in range(n)],
           "detector": "fake", "tracker": {}, "tracks": tracks}
    Path(out).write_text(json.dumps(doc))
    emit({"event": "done", "result": os.path.abspath(out), "tracks": ["1", "2"], "frames": n, "seconds": 0.1})
    return 0


def cmd_run(argv) -> int:
    from engine.common.result_schema import write_result

    video, out = argv[0] if argv else None, option(argv, "-o") or option(argv, "--output")
    if not video or not out:
        emit({"event": "error", "code": "usage", "message": "usage: run VIDEO -o OUT"})
        return 2
    if not os.path.isfile(video):
        log(f"error: Video file not found: {video}")
        emit({"event": "error", "code": "not_found", "message": f"Video file not found: {video}"})
        return 3
    start = int(option(argv, "--start", 0))
    stop = option(argv, "--stop")
    n = (int(stop) - start) if stop else 8
    tracks_file = option(argv, "--tracks")
    if tracks_file:
        doc = json.loads(Path(tracks_file).read_text())
        start, n = doc["frame_start"], doc["frame_stop"] - doc["frame_start"]
    people = option(argv, "--people")
    people = None if people in (None, "all") else set(people.split(","))
    body = option(argv, "--body")
    log(f"fake engine: mode {MODE}, {n} frames")

    cancelled = {"flag": False}

    def on_signal(signum, _frame):
        cancelled["flag"] = True

    if MODE == "stubborn":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    for i in range(n):
        emit({"event": "progress", "stage": "track", "done": i + 1, "total": n, "fps": 50.0, "eta_s": 0.1})
        time.sleep(DELAY)
    if MODE == "fail":
        log("error: no person found in the video")
        emit({"event": "error", "code": "no_person", "message": "no person found in the video"})
        return 4
    if MODE == "crash":
        log("Fatal Python error: Segmentation fault\n\nCurrent thread 0x00007f (most recent call first):\n"
            "  File \"engine/model/pymaf.py\", line 201 in forward")
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
        return 139
    if MODE in ("hang", "stubborn"):
        k = 0
        while not cancelled["flag"]:
            k += 1
            emit({"event": "progress", "stage": "infer", "done": min(k, n), "total": 2 * n, "fps": 1.0,
                  "eta_s": 9.0})
            time.sleep(0.05)
        frames_done = max(1, min(3, n))
        write_result(make_result(video, n, start, people, body, partial_k=frames_done), out)
        msg = f"cancelled; partial result ({frames_done} of {n} frames) written to {out}"
        log(f"error: {msg}")
        emit({"event": "error", "code": "cancelled", "message": msg})
        return 130
    for i in range(0, 2 * n, 4):
        emit({"event": "progress", "stage": "infer", "done": min(i + 4, 2 * n), "total": 2 * n, "fps": 30.0,
              "eta_s": 0.1})
        time.sleep(DELAY)
    if MODE == "badresult":
        Path(out).write_bytes(b"PK\x03\x04 this is not a result file")
    else:
        write_result(make_result(video, n, start, people, body, estimator=estimator_meta(argv)), out)
    emit({"event": "done", "result": os.path.abspath(out), "tracks": ["1", "2"], "frames": n, "seconds": 0.1})
    return 0


def cmd_landmark_setup(argv) -> int:
    """``-m engine.landmarks.setup``: the real one's output, nothing downloaded."""
    sizes = option(argv, "--sizes", "lite,full,heavy").split(",")
    if MODE == "landmarkfail":
        log("error: could not download https://registry.npmjs.org/@mediapipe/pose/-/pose-0.5.1675469404.tgz "
            "(fake: network down); the BlazePose GHUM 3D pose landmark model (from npm @mediapipe/pose "
            "0.5.1675469404, Apache-2.0) is needed")
        return 5
    for i, size in enumerate(sizes):
        print(f"converting the '{size}' landmark model ({i + 1}/{len(sizes)})", flush=True)
        time.sleep(DELAY)
    print("Pose landmark models: BlazePose GHUM 3D by Google, Apache License 2.0, from npm @mediapipe/pose "
          "0.5.1675469404", flush=True)
    return 0


def cmd_venv(argv) -> int:
    folder = Path([a for a in argv if not a.startswith("-")][0])
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    write_wrapper(folder / "bin" / "python")
    (folder / "pyvenv.cfg").write_text("home = fake\n")
    print(f"created virtual environment in {folder}", flush=True)
    return 0


def cmd_pip(argv) -> int:
    print(f"pip {' '.join(argv)}", flush=True)
    for pkg in ("numpy", "torch", "smplx"):
        print(f"Collecting {pkg}", flush=True)
        time.sleep(DELAY)
    if MODE == "pipfail":
        log("ERROR: Could not find a version that satisfies the requirement torch==2.13.0")
        return 1
    print("Successfully installed numpy torch smplx", flush=True)
    return 0


def main(argv) -> int:
    log_file = os.environ.get("PYMAF_FAKE_ARGV_LOG")
    if log_file:
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(argv) + "\n")
    args = [a for a in argv if a not in ("-u", "-I", "-E", "-s")]
    if args[:2] == ["-m", "venv"]:
        return cmd_venv(args[2:])
    if args[:2] == ["-m", "pip"]:
        return cmd_pip(args[2:])
    if args[:2] == ["-m", "engine.landmarks.setup"]:
        return cmd_landmark_setup(args[2:])
    if len(args) >= 2 and args[0] == "-m" and args[1].startswith("engine.") and \
            os.environ.get("PYMAF_REAL_ENGINE_PYTHON"):
        real = os.environ["PYMAF_REAL_ENGINE_PYTHON"]
        sys.stdout.flush()
        os.execv(real, [real, "-u", *args])
    if args[:2] == ["-m", "engine"]:
        args = args[2:]
    if args[:1] == ["run"]:
        return cmd_run(args[1:])
    if args[:1] == ["analyze"]:
        return cmd_analyze(args[1:])
    if args[:1] == ["-c"]:  # version probes: behave like a Python 3.11
        print("3.11.0", flush=True)
        return 0
    emit({"event": "error", "code": "usage", "message": f"fake engine: unknown command {args!r}"})
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
