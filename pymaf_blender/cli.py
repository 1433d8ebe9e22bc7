"""The headless main job: video -> engine -> Blender scene -> .blend + .fbx + overlay preview.

It presses the same buttons as a user (``bpy.ops.pymaf.import_video``, ``pymaf.export``,
``pymaf.overlay``), so it runs exactly the code path of the interface, synchronously.

With the bpy module (a source checkout, from the repository root)::

    .venvs/blender-5.0/bin/python -m pymaf_blender.cli VIDEO --out DIR [--frames N] [--start N]
        [--estimator auto|landmarks|pymaf|pymaf-blazepose] [--landmark-model lite|full|heavy]
        [--checkpoint FILE] [--body FILE] [--device auto|cuda|cpu|mps] [--smoothing 0.67]
        [--people 1,3] [--engine-python PY] [--space floor|camera|in-place] [--no-plant-feet] [--no-silhouette]
        [--fbx-preset BLENDER|UNITY|UNREAL] [--fbx-one-file] [--fbx-camera] [--no-overlay]
        [--result RESULT.npz]     (build the scene from a finished result: no engine run)
        [--name STEM]             (the .blend and FBX file stem and the objects' name; default: the video's)

With a real Blender and the extension installed (arguments after ``--``)::

    blender -b --python-expr "import sys, bl_ext.user_default.pymaf_blender.cli as c; \\
        sys.exit(c.main(sys.argv[sys.argv.index('--') + 1:]))" -- VIDEO --out DIR --frames 48
    blender -b -P /path/to/pymaf_blender/cli.py -- VIDEO --out DIR        # a checkout or the
                                                                        # installed add-on's file

Writes ``DIR/<video>.blend``, ``DIR/<video>_<id>.fbx`` per person (one person: ``DIR/<video>.fbx``;
``--fbx-one-file``: everyone in ``DIR/<video>.fbx``, bones named ``<id>_<bone>`` when there are
several), ``DIR/<video>_overlay.mp4`` with PNG stills
in ``DIR/<video>_overlay_frames/``, and keeps the engine's raw result and log in ``DIR/pymaf/``.
Starts from an empty scene. Each output is written under a temporary name and replaces the
previous one only once complete: a failed run leaves the previous run's files as they were.
Exit code 0, or 1 with the reason on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser():
    p = argparse.ArgumentParser(prog="python -m pymaf_blender.cli",
                                description="Video -> animated SMPL rigs in Blender -> .blend, .fbx, overlay preview")
    p.add_argument("video", help="the video file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--start", type=int, default=0, help="first video frame (0-based)")
    p.add_argument("--frames", type=int, default=0, help="number of frames (0: to the end)")
    p.add_argument("--estimator", default="auto", choices=("auto", "landmarks", "pymaf", "pymaf-blazepose"),
                   help="auto (default): pymaf when --checkpoint is given, else landmarks (BlazePose GHUM)")
    p.add_argument("--landmark-model", default="full", choices=("lite", "full", "heavy"),
                   help="the landmark model of the landmarks estimator (default full)")
    p.add_argument("--checkpoint", default="", help="PyMAF checkpoint (needed by the pymaf estimator)")
    p.add_argument("--body", default="", help="SMPL body model (default: the checkpoint's, or the bundled mannequin)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu", "mps"))
    p.add_argument("--smoothing", type=float, default=None, help="smoothing strength in [0, 1] (default 2/3)")
    p.add_argument("--people", default="", help="only these track ids, e.g. 1,3 (runs Analyze first)")
    p.add_argument("--boxes", default="", help="person boxes per frame instead of detection (engine --boxes)")
    p.add_argument("--engine-python", default="", help="the engine environment's Python (default: found "
                                                        "automatically, see the add-on's preferences)")
    p.add_argument("--space", default="floor", choices=("floor", "camera", "in-place"),
                   help="where the rigs stand: a world with the floor at Z = 0 (default), the engine's "
                        "camera space, or the floor world without horizontal root motion")
    p.add_argument("--no-silhouette", action="store_true",
                   help="landmarks estimator: skip fitting the bodies to the people's outlines (faster)")
    p.add_argument("--no-plant-feet", action="store_true",
                   help="keep the feet as estimated (by default, on the floor, planted feet are pinned)")
    p.add_argument("--fbx-preset", default="BLENDER", choices=("BLENDER", "UNITY", "UNREAL"))
    p.add_argument("--fbx-one-file", action="store_true",
                   help="every person in <video>.fbx (bones named <id>_<bone> when there are several) "
                        "instead of one FBX per person, <video>_<id>.fbx (one person: <video>.fbx)")
    p.add_argument("--fbx-camera", action="store_true", help="include the scene camera in the FBX")
    p.add_argument("--result", default="", help="build the scene from this result file of the engine instead of "
                                                "running it (the batch's scene step; the Import Result File button)")
    p.add_argument("--name", default="", help="file stem of the .blend and FBX files and name of the imported objects "
                                              "(default: the video's file name)")
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay preview")
    p.add_argument("--png-count", type=int, default=4, help="PNG stills of the overlay")
    return p


def _ensure_enabled(package: str) -> None:
    import addon_utils
    import bpy

    mod = sys.modules.get(package)
    if mod is not None and not hasattr(mod, "__time__") and getattr(mod, "__file__", None):
        mod.__time__ = os.path.getmtime(mod.__file__)  # imported already (python -m): no reload
    if package not in bpy.context.preferences.addons:
        addon_utils.enable(package, default_set=True, handle_error=None)
    if package not in bpy.context.preferences.addons:
        raise RuntimeError(f"could not enable the add-on {package}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        out = run(args)
    except (RuntimeError, ValueError, OSError) as exc:
        msg = str(exc).strip()
        msg = msg[len("Error: "):] if msg.startswith("Error: ") else msg  # bpy.ops' report prefix
        print(f"error: {msg}", file=sys.stderr, flush=True)
        return 1
    print("PyMAF for Blender: main job done")
    for label, key in (("estimator", "estimator"), ("scene", "blend"), ("FBX", "fbx"), ("overlay video", "overlay"),
                       ("result file", "result"),
                       ("engine log", "log")):
        for value in (out[key] if isinstance(out.get(key), list) else [out.get(key)]):
            if value:
                print(f"  {label + ':':<15}{value}")
    for png in out.get("pngs", []):
        print(f"  {'overlay still:':<15}{png}")
    for line in out.get("notes", []):
        print(f"  note: {line}")
    return 0


def run(args) -> dict:
    """The job itself (callable in-process); -> paths of what it wrote."""
    import bpy

    package = __package__ or "pymaf_blender"
    _ensure_enabled(package)
    from importlib import import_module
    tasks = import_module(f"{package}.tasks")
    paths = import_module(f"{package}.paths")

    video = os.path.abspath(args.video)
    if not os.path.isfile(video):
        raise ValueError(f"video not found: {video}")
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = paths.safe_name(args.name) if args.name else paths.safe_stem(video)

    prefs = paths.preferences()
    if args.engine_python:
        if not os.path.isfile(args.engine_python):
            raise ValueError(f"--engine-python: no such file: {os.path.abspath(args.engine_python)}")
        prefs.engine_python = os.path.abspath(args.engine_python)
    prefs.checkpoint_path = os.path.abspath(args.checkpoint) if args.checkpoint else ""
    prefs.body_path = os.path.abspath(args.body) if args.body else ""
    prefs.device = {"auto": "AUTO", "cuda": "CUDA", "cpu": "CPU", "mps": "MPS"}[args.device]

    before = prefs.results_folder
    prefs.results_folder = str(out_dir / paths.RESULTS_FOLDER_NAME)  # the raw result next to the .blend
    try:
        return _job(args, bpy, tasks, paths, video, out_dir, stem)
    finally:
        prefs.results_folder = before


def _job(args, bpy, tasks, paths, video, out_dir, stem) -> dict:
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0  # no .blend1 backups in the output
    blend = out_dir / f"{stem}.blend"
    s = bpy.context.scene.pymaf
    s.video_path = video
    s.range_start, s.range_count = max(0, args.start), max(0, args.frames)
    s.space = args.space.upper().replace("-", "_")
    s.plant_feet = not args.no_plant_feet
    if args.smoothing is not None:
        s.smoothing = min(1.0, max(0.0, args.smoothing))
    s.estimator = args.estimator.upper().replace("-", "_")
    s.landmark_model = args.landmark_model.upper()
    s.fit_outlines = not args.no_silhouette

    def failed(kind="engine"):
        task = tasks.last(kind)
        return RuntimeError(task.message if task is not None and task.message else "the job failed")

    if args.result:
        if args.people or args.boxes:
            raise ValueError("--result builds the scene from a finished result: --people and --boxes do not apply")
        if bpy.ops.pymaf.import_result(filepath=os.path.abspath(args.result), video=video,
                                       name=args.name) != {"FINISHED"}:
            raise failed()
    elif args.people:
        if bpy.ops.pymaf.analyze(boxes=args.boxes) != {"FINISHED"}:
            raise failed()
        wanted = {p.strip() for p in args.people.split(",") if p.strip()}
        found = {t.track_id for t in s.tracks}
        if not wanted & found:
            raise ValueError(f"none of the people {sorted(wanted)} was found (found: {sorted(found)})")
        for t in s.tracks:
            t.use = t.track_id in wanted
    if not args.result and bpy.ops.pymaf.import_video(boxes="" if args.people else args.boxes,
                                                      name=args.name) != {"FINISHED"}:
        raise failed()
    imp = tasks.last("engine")
    result = {"blend": str(blend), "result": imp.outputs.get("result"), "log": imp.outputs.get("log"),
              "estimator": getattr(imp, "estimator_label", ""),
              "rigs": sorted(imp.info.get("armatures", {})),
              # the first summary lines repeat the message and the estimator; then where the floor put
              # the camera (or why there is none) and any warning
              "notes": [imp.message, *(imp.summary or "").splitlines()[2:]], "pngs": []}
    # Each output replaces the previous run's only once complete (the exporters and the overlay
    # write under temporary names); the .blend last, when everything else is there.
    if not args.no_overlay:
        if bpy.ops.pymaf.overlay(out_dir=str(out_dir), png_count=args.png_count) != {"FINISHED"}:
            raise failed()
        ov = tasks.last("engine")
        result["overlay"], result["pngs"] = ov.outputs.get("video"), ov.outputs.get("pngs", [])
    # One FBX per person (<video>_<id>.fbx; a single person: <video>.fbx) unless asked for one file.
    from .blender.export import file_paths
    fbx = out_dir / f"{stem}.fbx"
    per_character = not args.fbx_one_file
    if bpy.ops.pymaf.export(format="FBX", preset=args.fbx_preset, filepath=str(fbx), per_character=per_character,
                            include_camera=args.fbx_camera) != {"FINISHED"}:
        raise RuntimeError(f"FBX export to {fbx} failed")
    result["fbx"] = file_paths(fbx, ".fbx", tasks.pymaf_armatures(bpy.context), per_character)
    save_blend_complete(blend)
    return result


def save_blend_complete(blend: Path) -> None:
    """Save the scene as ``blend``, replacing an older file only once the new one is written."""
    import bpy

    from .blender.export import complete_only

    with complete_only(str(blend)) as tmp:
        bpy.ops.wm.save_as_mainfile(filepath=tmp, copy=True)


def _script_main() -> int:
    """``blender -b -P cli.py -- ARGS``: find the add-on (an installed extension, else this
    file's folder as a package) and run its ``cli.main``."""
    import importlib

    import bpy

    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    here = Path(__file__).resolve().parent
    package = next((name for name in bpy.context.preferences.addons.keys()
                    if name == "pymaf_blender" or name.endswith(".pymaf_blender")), None)
    if package is None:
        if str(here.parent) not in sys.path:
            sys.path.insert(0, str(here.parent))
        package = here.name
    return importlib.import_module(f"{package}.cli").main(argv)


if __name__ == "__main__":
    if __package__:  # python -m pymaf_blender.cli
        code = main()
    else:            # blender -b -P cli.py -- ...
        code = _script_main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # bpy 4.2 can crash at interpreter exit (blender-notes §9)
