"""Round trips of every export preset through Blender's own importers with DEFAULT options.

    .venvs/blender-4.2/bin/python tests/blender/bench_export.py [--out docs/exports.md]

Imports the test fixture (tests/blender/make_results.py, written with the engine's interpreter:
three people, one with two gaps, one appearing late, 29.97 fps, scene frames 11-70), exports
every person to their own file (camera included for FBX and glTF) and reads each file back into
an empty scene with ``bpy.ops.import_scene.fbx(filepath=...)``, ``import_scene.gltf(filepath=...)``
or ``import_anim.bvh(filepath=...)`` and nothing else passed (glTF carries no frame rate: its
scene is set to the clip's rate first, as a user's project would be). Then, against the source
rig on each present frame: world joint positions at the times the importer put the keys and at
whole frames, where the keys landed, whether absent frames read as hidden, and the rate read
back. The same again with the scene at 30 fps (an integer rate). Prints a Markdown table;
``--out`` writes it into that file between the BENCH markers (or creates it).
"""
from __future__ import annotations

import argparse
import os
import platform
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

from pymaf_blender.blender import export, scene  # noqa: E402
from pymaf_blender.common.result_schema import read_result  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- BENCH:export BEGIN -->", "<!-- BENCH:export END -->"


def results_dir(given):
    if given:
        return Path(given)
    out = Path(tempfile.mkdtemp(prefix="pymaf-bench-results-"))
    py = os.environ.get("PYMAF_ENGINE_PYTHON") or str(REPO / ".venvs" / "engine" / "bin" / "python")
    subprocess.run([py, str(REPO / "tests" / "blender" / "make_results.py"), str(out)], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    return out


def world_joints(arm, names):
    return np.array([arm.matrix_world @ arm.pose.bones[n].head for n in names])


def at(frame):
    f = float(frame)
    bpy.context.scene.frame_set(int(np.floor(f)), subframe=f - np.floor(f))


def animate_camera(cam):
    """Give the (static) imported camera some motion and a focal-length change to carry."""
    sc = bpy.context.scene
    sc.frame_set(sc.frame_start)
    for path in ("location", "rotation_euler"):
        cam.keyframe_insert(path, frame=20)
    cam.data.keyframe_insert("lens", frame=20)
    cam.location.x += 0.4
    cam.rotation_euler.z += 0.2
    cam.data.lens *= 1.5
    for path in ("location", "rotation_euler"):
        cam.keyframe_insert(path, frame=50)
    cam.data.keyframe_insert("lens", frame=50)


def vertical_fov(cam):
    c, r = cam.data, bpy.context.scene.render
    if c.sensor_fit == "VERTICAL":
        return c.angle_y
    return 2 * np.arctan(c.sensor_width / 2 * r.resolution_y / r.resolution_x / c.lens)


def reference(res):
    bpy.ops.wm.read_homefile(use_empty=True)
    out = scene.import_result(bpy.context, read_result(res / "multi.npz"))
    cam = out["camera"]
    animate_camera(cam)
    sc = bpy.context.scene
    ref = {"camera": {}}
    for f in range(sc.frame_start, sc.frame_end + 1):
        sc.frame_set(f)
        ref["camera"][f] = (np.array(cam.matrix_world), cam.data.lens, vertical_fov(cam))
    for tid, arm in out["armatures"].items():
        present = export.present_frames(arm)
        names = [b.name for b in arm.data.bones]
        joints = {}
        for f in present:
            bpy.context.scene.frame_set(int(f))
            joints[int(f)] = world_joints(arm, names)
        ref[tid] = {"present": [int(f) for f in present], "joints": joints, "names": names}
    return out, ref


def key_frames(arm):
    """Frames of the imported action's keys (the F-Curve with the most keys)."""
    from pymaf_blender.blender import compat
    best = []
    for fc in compat.action_fcurves(arm.animation_data.action, arm):
        if len(fc.keyframe_points) > len(best):
            best = [k.co[0] for k in fc.keyframe_points]
    return np.array(best)


def read_back(path, fmt, rate):
    """An empty scene, Blender's importer with its defaults -> (where file frame k lands:
    start + k * factor, the rate read back or None)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    if fmt == "glTF":                       # no rate in the file: the scene at the clip's
        sc.render.fps, sc.render.fps_base = export.timing.blender_fps(rate)
        bpy.ops.import_scene.gltf(filepath=path)
        return 0.0, sc.render.fps * sc.render.fps_base / rate, None   # the add-on's fps x base
    if fmt == "FBX":
        bpy.ops.import_scene.fbx(filepath=path)
        return 1.0, sc.render.fps / rate, sc.render.fps / sc.render.fps_base  # the importer's integer rate
    bpy.ops.import_anim.bvh(filepath=path)
    with open(path) as f:
        back = 1.0 / float([ln for ln in f if ln.startswith("Frame Time:")][0].split()[2])
    return 1.0, 1.0, back


def measure(arm, start, factor, r, frames, cam_ref, static_fov, prefix=""):
    """One re-imported armature (and the file's camera) against the source over ``frames``
    (scene frames; file frame 0 = frames[0], landing on start + k * factor)."""
    names = [prefix + n for n in r["names"]]
    keys = key_frames(arm)
    lo = frames[0]
    err_key, whole, hidden = 0.0, [], 0.0
    cams = [o for o in bpy.data.objects if o.type == "CAMERA"]
    cam_pos = cam_rot = cam_fov = 0.0
    present = set(r["present"])
    for f in frames:
        at(start + (f - lo) * factor)
        if f in present:
            err_key = max(err_key, np.abs(world_joints(arm, names) - r["joints"][f]).max())
        else:
            hidden = max(hidden, max(arm.matrix_world.to_scale()))
        if cams:
            M = np.array(cams[0].matrix_world)
            R = M[:3, :3] / np.linalg.norm(M[:3, :3], axis=0)     # FBX in cm: the importer scales it 0.01
            want = cam_ref[f]
            cam_pos = max(cam_pos, np.abs(M[:3, 3] - want[0][:3, 3]).max())
            cam_rot = max(cam_rot, np.abs(R - want[0][:3, :3]).max())
            fov_want = cam_ref[frames[0]][2] if static_fov else want[2]   # glTF: static, the clip's start
            cam_fov = max(cam_fov, abs(vertical_fov(cams[0]) - fov_want))
        if f in present:
            at(start + (f - lo))
            whole.append(np.abs(world_joints(arm, names) - r["joints"][f]).max())
    k = np.arange(len(keys))
    return {"err_key": err_key, "whole": whole, "drift": np.abs(keys - (start + k * 1.0)).max(),
            "first": keys[0], "n_keys": len(keys), "n": len(frames), "hidden": hidden,
            "absent": sum(f not in present for f in frames),
            "cam": (cam_pos, np.degrees(cam_rot), np.degrees(cam_fov)) if cams else None}


CASES = [("FBX", p, True) for p in export.FBX_PRESETS] + [("FBX", "UNITY", False), ("glTF", "", True),
                                                           ("glTF", "", False), ("BVH", "", True)]


def run(blend, ref, rate, tmp):
    rows = []
    for fmt, preset, per_character in CASES:
        bpy.ops.wm.open_mainfile(filepath=str(blend))
        sc = bpy.context.scene
        sc.render.fps, sc.render.fps_base = export.timing.blender_fps(rate)
        arms = sorted((o for o in bpy.data.objects if o.type == "ARMATURE"), key=lambda o: o.name)
        tids = {a.name: str(a["pymaf"]["track_id"]) for a in arms}
        stem = str(tmp / f"{fmt}{preset}{int(per_character)}_{rate:.2f}")
        t = time.perf_counter()
        if fmt == "FBX":
            paths = export.export_fbx(bpy.context, stem, arms, preset, per_character=per_character, camera=True)
        elif fmt == "glTF":
            paths = export.export_gltf(bpy.context, stem, arms, per_character=per_character, camera=True)
        else:
            paths = export.export_bvh(bpy.context, stem, arms)
        dt = time.perf_counter() - t
        size = sum(os.path.getsize(p) for p in paths)
        ms, back = [], None
        for path in paths:
            start, factor, back = read_back(path, fmt, rate)
            label = Path(path).stem[len(Path(stem).name) + 1:]
            if not per_character:
                lo = min(r["present"][0] for key, r in ref.items() if key != "camera")
                hi = max(r["present"][-1] for key, r in ref.items() if key != "camera")
                for name, tid in tids.items():
                    arm = bpy.data.objects[name]
                    ms.append(measure(arm, start, factor, ref[tid], list(range(lo, hi + 1)), ref["camera"],
                                      fmt == "glTF", prefix=f"{tid}_"))
                continue
            tid = label.split("_")[0]
            r = ref[tid]
            if "-" in label:          # a BVH take: "<id>_<first>-<last>"
                a, b = (int(x) for x in label.split("_")[1].split("-"))
            else:
                a, b = r["present"][0], r["present"][-1]
            arm = [o for o in bpy.data.objects if o.type == "ARMATURE"][0]
            ms.append(measure(arm, start, factor, r, list(range(a, b + 1)), ref["camera"], fmt == "glTF"))
        whole = np.concatenate([m["whole"] for m in ms])
        cams = [m["cam"] for m in ms if m["cam"] is not None]
        rows.append({"case": f"{fmt} {preset.title()}".strip() + ("" if per_character else ", one file"),
                     "files": len(paths), "export_s": dt, "size": size,
                     "err_key": max(m["err_key"] for m in ms), "whole_max": whole.max(),
                     "whole_med": float(np.median(whole)), "drift": max(m["drift"] for m in ms),
                     "first": min(m["first"] for m in ms), "hidden": max(m["hidden"] for m in ms),
                     "absent": sum(m["absent"] for m in ms), "rate": back,
                     "cam": tuple(max(c[i] for c in cams) for i in range(3)) if cams else None})
    return rows


def table(rows, rate):
    fps, base = export.timing.blender_fps(rate)
    out = [f"Scene at {rate:.3f} fps ({fps} / {base:g}):", "",
           "| export | files | joints at the keys | joints at whole frames: max (median) | first key on frame "
           "| keys off whole frames by | absent frames: count (max scale) | camera: position, rotation, "
           "vertical FOV | rate read back | export time |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rb = "— (none in glTF)" if r["rate"] is None else f"{r['rate']:.4f}"
        cam = "—" if r["cam"] is None else \
            f"{r['cam'][0] * 1000:.3f} mm, {r['cam'][1]:.4f}°, {r['cam'][2]:.4f}°"
        out.append(f"| {r['case']} | {r['files']} | {r['err_key'] * 1000:.3f} mm "
                   f"| {r['whole_max'] * 1000:.3f} mm ({r['whole_med'] * 1000:.3f} mm) | {r['first']:g} "
                   f"| {r['drift']:.3f} | {r['absent']} ({r['hidden']:.1g}) | {cam} | {rb} | {r['export_s']:.2f} s |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    res = results_dir(args.results)
    tmp = Path(tempfile.mkdtemp(prefix="pymaf-bench-export-"))
    out, ref = reference(res)
    clip_rate = out["fps"]
    blend = tmp / "source.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    parts = [f"Blender {bpy.app.version_string}, {platform.machine()}; command: "
             f"`.venvs/blender-{bpy.app.version[0]}.{bpy.app.version[1]}/bin/python tests/blender/bench_export.py"
             f" --out docs/exports.md`.", ""]
    for rate in (clip_rate, round(clip_rate)):
        parts += [table(run(blend, ref, rate, tmp), rate), ""]
    text = "\n".join(parts).rstrip() + "\n"
    print(text)
    if args.out:
        path = Path(args.out)
        block = f"{MARK_BEGIN}\n{text}{MARK_END}"
        old = path.read_text() if path.exists() else ""
        if MARK_BEGIN in old and MARK_END in old:
            new = old[:old.index(MARK_BEGIN)] + block + old[old.index(MARK_END) + len(MARK_END):]
        else:
            new = (old.rstrip() + "\n\n" if old else "# Export round trips\n\n") + block + "\n"
        path.write_text(new)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # bpy 4.2 can crash at interpreter exit (blender-notes §9)
