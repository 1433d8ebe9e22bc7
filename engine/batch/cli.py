"""``python -m engine batch SHOTS --out DIR [options] [run options]``: a shot library on Ray.

SHOTS is a folder of videos, a glob (quote it: ``'shots/**/*.mov'``) or a ``.txt`` / ``.csv``
list (engine/batch/shots.py). Each shot becomes a Ray task that runs ``engine run`` (every option
this command does not know is passed to it: ``--estimator``, ``--device``, ``--smoothing``, ...)
and, when asked, the mattes (``--mattes``) and the headless Blender job (``--blender``: .blend and
FBX). Outputs per shot in ``DIR/<shot>/``; ``DIR/manifest.json`` and ``DIR/manifest.csv`` say per
shot: status, attempts, timings, frames, people, estimator, device and the error.

A rerun skips every step whose outputs are complete and valid (checked: engine/batch/record.py)
and redoes the rest; a shot that fails is retried (``--retries``, not when the video cannot be
read or has nobody in it), then recorded as failed while the others go on.

Ray: started here with this machine's cores and GPUs unless ``--ray ADDRESS`` names a cluster
(``auto``: the one this node belongs to). Ray is optional: ``python3 build.py setup --extras
batch``.

Progress: ``--progress jsonl`` prints one JSON object per line on stdout: ``batch`` (the shots,
which are complete already), ``shot_start``, ``step``, ``progress`` (per shot), ``retry``,
``shot_end``, then ``done`` (the counts and the manifest) or ``error``.

Exit codes: 0 every shot complete; 2 usage (bad options, no shots); 5 Ray missing or the
cluster unreachable; 6 the output folder or the manifest cannot be written; 7 finished, but some
shots failed (the manifest says which and why); 130 cancelled (SIGINT/SIGTERM; a second one kills).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..cli_args import UsageParser, finite_float, nonneg_float, nonneg_int
from ..mattes import ALPHA_KINDS
from ..run import build_parser as run_parser
from . import record as rec
from .shots import ShotListError, list_shots

EXIT_OK, EXIT_USAGE, EXIT_RAY, EXIT_WRITE, EXIT_SHOTS_FAILED, EXIT_CANCELLED = 0, 2, 5, 6, 7, 130
ENGINE_PARENT = Path(__file__).resolve().parents[2]
# engine run options that name one video's own files, or that the batch sets itself
NOT_PASSED = ("-o", "--output", "--progress", "--boxes", "--tracks")
MATTES_FORMATS = ("all", "png", "exr")
FBX_PRESETS = ("BLENDER", "UNITY", "UNREAL")


def build_parser() -> UsageParser:
    p = UsageParser(prog="python -m engine batch", description="Run many shots as a batch on Ray. Options not listed "
                "here go to 'python -m engine run' for every shot (e.g. --estimator, --device, --smoothing).")
    p.add_argument("shots", help="a folder of videos, a glob, or a .txt / .csv shot list")
    p.add_argument("--out", required=True, help="output folder: DIR/<shot>/ per shot, DIR/manifest.json/.csv")
    p.add_argument("--ray", default="local", metavar="ADDRESS",
                   help="'local' (default): start Ray on this machine; else a cluster address ('auto', "
                        "'host:6379', 'ray://host:10001')")
    p.add_argument("--cpus-per-job", type=nonneg_float, default=None,
                   help="CPUs each shot asks for, also its PyTorch threads (default 1; 4 with --gpus-per-job)")
    p.add_argument("--gpus-per-job", type=nonneg_float, default=0.0,
                   help="GPUs each shot asks for (default 0; a fraction shares a GPU, e.g. 0.25: 4 shots per GPU)")
    p.add_argument("--local-gpus", type=nonneg_float, default=None,
                   help="local Ray only: how many of this machine's GPUs the batch may use (default: all it finds)")
    p.add_argument("--retries", type=nonneg_int, default=2,
                   help="tries after the first for a shot that failed or whose worker died (default 2)")
    p.add_argument("--start", type=nonneg_int, default=None, help="first video frame of every shot (a CSV list's "
                                                               "start column wins)")
    p.add_argument("--stop", type=nonneg_int, default=None, help="stop before this frame (a CSV's stop column wins)")
    p.add_argument("--mattes", action="store_true", help="also the per-person mattes (python -m engine mattes)")
    p.add_argument("--mattes-format", choices=MATTES_FORMATS, default="all")
    p.add_argument("--mattes-dilate", type=finite_float, default=0.0, metavar="PX")
    p.add_argument("--mattes-feather", type=nonneg_float, default=0.0, metavar="PX")
    p.add_argument("--mattes-alpha", choices=ALPHA_KINDS, default="body",
                   help="what a matte is made from (engine mattes --alpha): the fitted body, or the landmark "
                        "network's segmentation of the person on the shot's video")
    p.add_argument("--blender", metavar="PATH", default="",
                   help="also the Blender scene (.blend) and FBX per shot: a Blender executable, or a Python "
                        "with the bpy module")
    p.add_argument("--fbx-preset", choices=FBX_PRESETS, default="BLENDER")
    p.add_argument("--space", choices=("floor", "camera", "in-place"), default="floor")
    p.add_argument("--no-plant-feet", action="store_true")
    p.add_argument("--engine-python", default=sys.executable,
                   help="the engine's Python as the workers see it (default: this one)")
    p.add_argument("--list", action="store_true", help="only say which shots would run and why, run nothing")
    p.add_argument("--progress", choices=("tty", "jsonl"), default="tty")
    return p


def scene_command(blender: str, engine_parent: Path = ENGINE_PARENT) -> dict:
    """How to start the headless Blender job with the add-on next to this engine: a checkout's
    ``pymaf_blender/`` or, in an installed extension, the add-on folder the engine sits in."""
    addon = engine_parent / "pymaf_blender"
    if not (addon / "cli.py").is_file():
        addon = engine_parent
    if not (addon / "cli.py").is_file():
        raise ValueError(f"the Blender add-on is not next to this engine ({engine_parent}): --blender needs it")
    path = os.path.abspath(os.path.expanduser(blender))
    if not os.path.isfile(path):
        raise ValueError(f"--blender: no such file: {path}")
    if os.path.basename(path).lower().startswith("python"):   # a Python with the bpy module
        return {"command": [path, "-u", "-m", f"{addon.name}.cli"], "pythonpath": str(addon.parent)}
    return {"command": [path, "-b", "--factory-startup", "--python-exit-code", "1", "-P", str(addon / "cli.py"),
                        "--"], "pythonpath": str(engine_parent)}


def make_plans(args, run_args: list) -> list:
    shots = list_shots(args.shots)
    out = os.path.abspath(args.out)
    threads = str(max(1, int(round(args.cpus_per_job))))
    scene = None
    if args.blender:
        scene = scene_command(args.blender)
        scene["args"] = ["--no-overlay", "--fbx-preset", args.fbx_preset, "--space", args.space] + (
            ["--no-plant-feet"] if args.no_plant_feet else [])
    mattes = None
    if args.mattes:
        mattes = ["--format", args.mattes_format, "--dilate", str(args.mattes_dilate),
                  "--feather", str(args.mattes_feather)]
        if args.mattes_alpha != "body":         # the default stays out: older records keep matching
            mattes += ["--alpha", args.mattes_alpha]
    if not any(a == "--smoothing" or a.startswith("--smoothing=") for a in run_args):
        # stored raw, like the panel's Import: Blender smooths on import (its slider, re-smoothable)
        run_args = ["--smoothing", "none", *run_args]
    plans = []
    for s in shots:
        d = s.as_dict()
        if d["start"] is None and d["stop"] is None:
            d["start"], d["stop"] = args.start, args.stop
        plans.append({"shot": d, "out_dir": out, "engine_python": os.path.abspath(args.engine_python),
                      "engine_parent": str(ENGINE_PARENT), "run_args": run_args, "mattes_args": mattes,
                      "scene": scene, "env": {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}})
    return plans


def check_run_args(extra: list) -> list:
    """The options meant for ``engine run``, checked by its own parser before anything starts.
    Raises ValueError with what is wrong."""
    import contextlib
    import io

    for a in extra:
        if a.split("=")[0] in NOT_PASSED:
            raise ValueError(f"{a.split('=')[0]} cannot be used in a batch (each shot has its own video and "
                             "outputs)")
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            run_parser("run").parse_args(["shot.mp4", "-o", "shot.npz", *extra])
    except SystemExit:
        why = next((line[len("error: "):] for line in reversed(said.getvalue().splitlines())
                    if line.startswith("error: ")), "not accepted")
        if why.startswith("unrecognized arguments"):
            raise ValueError(f"{why}: neither an option of 'python -m engine batch' nor of 'python -m engine run' "
                             "(see --help of each)") from None
        raise ValueError(f"{why} (an option passed to 'python -m engine run')") from None
    return list(extra)


def check_options(args, argv: list) -> None:
    """Options that would be ignored, or an engine Python that cannot run: refused before anything
    starts. Raises ValueError."""
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    for needs, options in (("--mattes", ("--mattes-format", "--mattes-dilate", "--mattes-feather", "--mattes-alpha")),
                           ("--blender", ("--fbx-preset", "--space", "--no-plant-feet"))):
        unused = [o for o in options if o in given]
        if unused and not getattr(args, needs[2:]):
            raise ValueError(f"{', '.join(unused)} only apply with {needs}")
    if args.local_gpus is not None and args.ray not in ("", "local"):
        raise ValueError("--local-gpus is for a local Ray; a cluster's nodes declare their own GPUs")
    py = os.path.abspath(os.path.expanduser(args.engine_python))
    if args.ray in ("", "local") and not (os.path.isfile(py) and os.access(py, os.X_OK)):
        raise ValueError(f"--engine-python: no Python to run at {py}")


class Reporter:
    """Progress as JSON lines on stdout (``jsonl``) or readable lines on stderr (``tty``)."""

    def __init__(self, mode: str, total: int, stream):
        self.mode, self.total, self.ended, self.stream = mode, total, 0, stream
        self._last_progress = {}

    def __call__(self, event: dict) -> None:
        if self.mode == "jsonl":
            self.stream.write(json.dumps(event, allow_nan=False, default=str) + "\n")
            self.stream.flush()
            return
        kind, shot = event.get("event"), event.get("shot", "")
        if kind == "progress":
            now = time.monotonic()
            if now - self._last_progress.get(shot, 0.0) < 5.0:
                return
            self._last_progress[shot] = now
            line = f"  {shot}: {event.get('step')} {event.get('done')}/{event.get('total')}"
        elif kind == "shot_start":
            line = f"  {shot}: started (try {event.get('attempt')}) on {event.get('host')}"
        elif kind == "step":
            line = f"  {shot}: {event.get('step')} ({event.get('why')})"
        elif kind == "ray":
            line = (f"Ray ({event.get('address')}): {event.get('nodes')} node(s), {event.get('cpus'):g} CPUs, "
                    f"{event.get('gpus'):g} GPUs; {event.get('shots')} of {self.total} shots to run")
        elif kind == "retry":
            reason = (event.get("reason") or "").strip().splitlines() or [""]
            line = f"  {shot}: trying again (try {event.get('attempt')}): {reason[0]}"
        elif kind == "shot_end":
            return
        elif kind == "shot_final":
            self.ended += 1
            e = event["entry"]
            what = {"done": f"done in {e.get('seconds', 0):.1f} s", "skipped": "complete already"}.get(
                e["status"], f"{e['status']}: {e.get('message', '')}")
            line = f"[{self.ended}/{self.total}] {shot}: {what}"
        else:
            return
        print(line, file=sys.stderr, flush=True)


def _entry(plan: dict) -> dict:
    s = plan["shot"]
    return {"shot": s["shot"], "video": s["video"], "start": s["start"], "stop": s["stop"], "status": "pending",
            "attempts": 0, "seconds": 0.0, "frames": None, "people": None, "estimator": "", "device": "",
            "result": "", "code": "", "message": "", "host": "", "gpus": "", "steps": {}}


def _complete_entry(plan: dict, entry: dict) -> None:
    """A shot complete from an earlier run: what its record says."""
    from .shot import shot_folder
    record = rec.read_record(shot_folder(plan)) or {"steps": {}}
    res = record["steps"].get("result", {})
    entry.update(status="skipped", message="complete from an earlier run",
                 result=f"{plan['shot']['shot']}/{res.get('result', '')}",
                 **{k: res.get(k) for k in ("frames", "people", "estimator", "device")})


def events_stream(jsonl: bool):
    """Where the JSON lines go: the real stdout, kept for them alone. Everything else that would
    print there (Ray's messages, the workers' output) goes to stderr instead."""
    if not jsonl:
        return sys.stdout
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if any(a == "--progress=jsonl" or (a == "jsonl" and i and argv[i - 1] == "--progress")
           for i, a in enumerate(argv)):
        parser.jsonl_stdout = sys.stdout   # usage errors come before the events stream exists
    args, extra = parser.parse_known_args(argv)
    jsonl = args.progress == "jsonl"
    stream = events_stream(jsonl)

    def fail(code: int, kind: str, message: str) -> int:
        print(f"error: {message}", file=sys.stderr, flush=True)
        if jsonl:
            stream.write(json.dumps({"event": "error", "code": kind, "message": message}) + "\n")
            stream.flush()
        return code

    if args.cpus_per_job is None:
        args.cpus_per_job = 4.0 if args.gpus_per_job > 0 else 1.0
    try:
        check_options(args, argv)
        run_args = check_run_args(extra)
        plans = make_plans(args, run_args)
    except (ShotListError, ValueError) as e:
        return fail(EXIT_USAGE, "usage", str(e))
    out = Path(args.out).resolve()
    if not args.list:   # --list writes nothing
        try:
            out.mkdir(parents=True, exist_ok=True)
            from ..common.atomic import check_writable
            check_writable(out / rec.MANIFEST_JSON)
        except OSError as e:
            return fail(EXIT_WRITE, "write_failed", f"cannot write to {out}: {e.strerror or e}")

    from .shot import clear_cancel, pending_steps
    if not args.list:
        clear_cancel(out)   # a flag left by a batch that was killed while cancelling
    entries = {p["shot"]["shot"]: _entry(p) for p in plans}
    todo = []
    for plan in plans:
        pending = pending_steps(plan)
        if pending:
            todo.append(plan)
            entries[plan["shot"]["shot"]]["message"] = "; ".join(f"{k}: {v}" for k, v in pending.items())
        else:
            _complete_entry(plan, entries[plan["shot"]["shot"]])
    report = Reporter(args.progress, len(plans), stream)
    report({"event": "batch", "out": str(out), "shots": [
        {"shot": e["shot"], "video": e["video"], "status": e["status"],
         **({"why": e["message"]} if e["status"] == "pending" else {})} for e in entries.values()]})
    if args.list:
        for e in entries.values():
            print(f"{e['shot']}: {'complete' if e['status'] == 'skipped' else 'to run (' + e['message'] + ')'}")
        return EXIT_OK
    for e in entries.values():
        if e["status"] == "skipped":
            report({"event": "shot_final", "shot": e["shot"], "entry": e})
    started, t0 = rec.now_iso(), time.monotonic()
    options = {"run": plans[0]["run_args"], "mattes": plans[0]["mattes_args"], "scene": (plans[0]["scene"] or {}).get("args"),
               "cpus_per_job": args.cpus_per_job, "gpus_per_job": args.gpus_per_job, "retries": args.retries}
    ray_info = {"address": args.ray}

    def write_manifest(finished: bool) -> None:
        rec.write_manifest(out, rec.manifest(list(entries.values()), started=started, seconds=time.monotonic() - t0,
                                             ray=ray_info, options=options, finished=finished))

    cancel = {"flag": False}
    try:
        write_manifest(False)
        if todo:
            from . import cluster
            try:
                ray, info = cluster.start(args.ray, engine_parent=str(ENGINE_PARENT), num_gpus=args.local_gpus)
            except cluster.RayUnavailable as e:
                for plan in todo:
                    entries[plan["shot"]["shot"]].update(status="failed", code="ray", message=str(e))
                write_manifest(True)
                return fail(EXIT_RAY, "ray", str(e))
            except KeyboardInterrupt:   # Ctrl+C while Ray starts: nothing ran
                cancel["flag"] = True
                ray = None
            if ray is not None:
                # after ray.init, which installs its own SIGTERM handler: ours cancel gracefully
                cluster.install_cancel_handlers(cancel)
                ray_info.update(info)
                report({"event": "ray", **info, "shots": len(todo)})

            def on_event(event: dict) -> None:
                e = entries.get(event.get("shot"))
                if e is not None and event.get("event") == "shot_start":
                    e.update(status="running", attempts=event.get("attempt", 1), host=event.get("host", ""),
                             gpus=event.get("gpus", ""))
                report(event)

            def on_outcome(plan: dict, outcome: dict) -> None:
                e = entries[plan["shot"]["shot"]]
                e.update({k: outcome[k] for k in ("status", "code", "message", "seconds", "frames", "people",
                                                  "estimator", "device", "result", "host", "gpus", "steps")
                          if k in outcome and outcome[k] is not None})
                e["attempts"] = outcome.get("attempt", e["attempts"])
                if e["status"] == "skipped":   # complete when the task looked (another batch finished it)
                    e["message"] = "complete from an earlier run"
                write_manifest(False)
                report({"event": "shot_final", "shot": e["shot"], "entry": e})

            if ray is not None:
                try:
                    cluster.run_tasks(ray, todo, cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job,
                                      retries=args.retries, on_event=on_event, on_outcome=on_outcome, cancel=cancel)
                finally:
                    ray.shutdown()
        for e in entries.values():
            if e["status"] in ("pending", "running"):
                e.update(status="cancelled", code="cancelled", message="not run: the batch was cancelled")
        write_manifest(True)
    except OSError as e:
        return fail(EXIT_WRITE, "write_failed", f"cannot write the manifest in {out}: {e.strerror or e}")
    counts = {}
    for e in entries.values():
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    manifest = str(out / rec.MANIFEST_JSON)
    if cancel["flag"]:
        return fail(EXIT_CANCELLED, "cancelled", f"batch cancelled ({summary}); manifest: {manifest}")
    failed = [e["shot"] for e in entries.values() if e["status"] != "done" and e["status"] != "skipped"]
    if failed:
        return fail(EXIT_SHOTS_FAILED, "shots_failed", f"{len(failed)} of {len(entries)} shots failed: "
                    f"{', '.join(failed[:10])}{' ...' if len(failed) > 10 else ''} (reasons in {manifest})")
    if jsonl:
        stream.write(json.dumps({"event": "done", "manifest": manifest, "counts": counts,
                                 "seconds": round(time.monotonic() - t0, 2)}) + "\n")
        stream.flush()
    else:
        print(f"batch done: {summary} in {time.monotonic() - t0:.1f} s; manifest: {manifest}", file=sys.stderr)
    return EXIT_OK
