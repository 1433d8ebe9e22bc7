"""Time ``import_result`` on a long single-person result, and what keyframe_insert would cost.

    .venvs/blender-5.0/bin/python tests/blender/bench_import.py [--frames 10000] [--insert-frames 300,1000]
        [--result PATH] [--repeats 3]

Runs under a bpy venv (no torch). Without ``--result`` it writes the input first with the
engine interpreter (``tests/blender/make_results.py OUT --long N``; not timed). Prints a
Markdown table (docs/benchmarks.md, "Blender import"):

* ``import_result`` end to end (validation, rig, skinned body, camera, all keys), and its parts;
* the same with smoothing (strength 0.5) and ``reapply_smoothing``;
* the legacy way: ``pose_bone.keyframe_insert`` for every bone and frame, timed on
  ``--insert-frames`` frame counts (default 300 and 1000) and extrapolated to the full length,
  linearly from the largest (a lower bound: it grows faster than linearly) and with the power
  law through the measured counts.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="pymaf-bench-user-"))
sys.path.insert(0, str(REPO))

import bpy  # noqa: E402
import numpy as np  # noqa: E402

from pymaf_blender.blender import animation, rig, scene  # noqa: E402
from pymaf_blender.common.result_schema import read_result  # noqa: E402


def engine_python():
    env = os.environ.get("PYMAF_ENGINE_PYTHON")
    return Path(env) if env else REPO / ".venvs" / "engine" / "bin" / "python"


def make_input(frames):
    out = Path(tempfile.mkdtemp(prefix="pymaf-bench-"))
    subprocess.run([str(engine_python()), str(REPO / "tests" / "blender" / "make_results.py"), str(out),
                    "--long", str(frames)], check=True, stdout=subprocess.DEVNULL)
    return out / "long.npz"


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_import(path, repeats, strength=None):
    times, parts = [], None
    for _ in range(repeats):
        bpy.ops.wm.read_homefile(use_empty=True)
        t_read, result = timed(lambda: read_result(path))
        dt, out = timed(lambda: scene.import_result(bpy.context, result, strength=strength))
        times.append((t_read, dt))
    return times, out


def bench_parts(path):
    """Where the time goes: validate, plan maths, armature, body, keys (one run)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    result = read_result(path)
    t_val, _ = timed(result.validate)
    t_plan, plan = timed(lambda: scene._plan(result, None, None, None, None))
    coll = bpy.data.collections.new("bench")
    bpy.context.scene.collection.children.link(coll)
    p = plan["people"][plan["ids"][0]]
    t_arm, arm = timed(lambda: rig.build_armature(bpy.context, coll, "A", p["joints"], plan["parents"]))
    t_body, _ = timed(lambda: rig.build_body(coll, "B", arm, p["vertices"], plan["faces"], plan["weights"]))
    B = rig.bone_rest_matrices(arm)
    t_vals, (q, loc) = timed(lambda: animation.key_values(p["rotmat"], p["transl"], p["raw"]["rest_root"], B))
    t_keys, _ = timed(lambda: animation.write_pose_keys(arm, p["frames_bl"], q, loc))
    return {"validate (inside the next row too)": t_val, "checks + raw arrays (incl. validate)": t_plan,
            "armature": t_arm,
            "skinned body (6890 vertices, vertex groups)": t_body, "key values (numpy)": t_vals,
            "write keys (99 F-Curves, bulk)": t_keys}


def bench_keyframe_insert(path, frames):
    """The legacy loop on the first ``frames`` frames: pose values set, then keyframe_insert."""
    bpy.ops.wm.read_homefile(use_empty=True)
    result = read_result(path)
    out = scene.import_result(bpy.context, result)
    arm = out["armatures"]["0"]
    arm.animation_data_clear()
    raw = animation.load_raw(arm)
    q, loc = animation.key_values(raw["rotmat"][:frames], raw["transl"][:frames], raw["rest_root"],
                                  rig.bone_rest_matrices(arm))
    f0 = float(raw["frame_offset"])
    pbs = [arm.pose.bones[n] for n in rig.BONE_NAMES]
    t = time.perf_counter()
    for i in range(frames):
        for j, pb in enumerate(pbs):
            pb.rotation_quaternion = q[i, j]
            pb.keyframe_insert("rotation_quaternion", frame=f0 + i, group=pb.name)
        pbs[0].location = loc[i]
        pbs[0].keyframe_insert("location", frame=f0 + i, group=pbs[0].name)
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--insert-frames", default="300,1000",
                    help="comma-separated frame counts to time keyframe_insert on")
    ap.add_argument("--result", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    path = args.result or make_input(args.frames)
    result = read_result(path)
    T = result.tracks["0"].num_frames
    print(f"bpy {bpy.app.version_string}, numpy {np.__version__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; result: 1 person, {T} frames, {result.body.weights.shape[0]} vertices")
    rows = []
    times, _ = bench_import(path, args.repeats)
    rows.append(("read_result (load + validate)", [t[0] for t in times]))
    rows.append(("**import_result** (rig, body, camera, all keys)", [t[1] for t in times]))
    times, out = bench_import(path, 1, strength=0.5)
    rows.append(("import_result, strength 0.5 (One-Euro on 24 joints + root)", [times[0][1]]))
    arm = out["armatures"]["0"]
    t, _ = timed(lambda: scene.reapply_smoothing(bpy.context, arm, 0.8))
    rows.append(("reapply_smoothing(0.8)", [t]))
    for k, v in bench_parts(path).items():
        rows.append((f"  part: {k}", [v]))
    measured = []
    for n in sorted({min(int(x), T) for x in args.insert_frames.split(",") if x.strip()}):
        t_ins = bench_keyframe_insert(path, n)
        measured.append((n, t_ins))
        rows.append((f"keyframe_insert loop, {n} frames (measured)", [t_ins]))
    n, t_ins = measured[-1]
    if n < T:
        rows.append((f"keyframe_insert loop, {T} frames (linear extrapolation from {n}; a lower bound)",
                     [t_ins * T / n]))
        if len(measured) > 1:
            (n0, t0), (n1, t1) = measured[0], measured[-1]
            k = np.log(t1 / t0) / np.log(n1 / n0)
            rows.append((f"keyframe_insert loop, {T} frames (power law n^{k:.2f} through the measurements)",
                         [t1 * (T / n1) ** k]))
    print()
    print("| step | seconds (runs) |")
    print("|---|---|")
    for label, ts in rows:
        print(f"| {label} | {', '.join(f'{x:.3f}' for x in ts)} |")
    sys.stdout.flush()
    os._exit(0)  # bpy 4.2 can segfault at interpreter exit (blender-notes §9)


if __name__ == "__main__":
    main()
