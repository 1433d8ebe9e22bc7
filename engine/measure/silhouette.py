"""``python -m engine.measure.silhouette``: what the silhouette term (engine/fit/silhouette.py)
does to an ``engine run`` result: the same video run with the defaults and with
``--no-silhouette``, compared.

Rendered clips (one per motion, the first seeds of engine.measure.mattes): the body matte's IoU
and boundary error against the renderer's true masks, and the 24 joints against the true ones
(camera frame, and root-relative: the pose without the position's depth error). dancer.mp4:
the body matte against the landmark network's own segmentation of the dancer (what the term
fits to, so not independent; the renders are the evidence). Both: the seconds of the fit and the term (the run's
``fit`` and ``silhouette`` stages).

    python -m engine.measure.silhouette [--out docs/mattes.md] [--frames 30]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from engine.measure.report import command_line, publish

RUNS = (("with the term (default)", ()), ("--no-silhouette", ("--no-silhouette",)))


def posed_joints_of(result, tid: str, frames) -> np.ndarray:
    """(F, 24, 3) camera-frame joints of track ``tid`` on result ``frames`` (all must be there)."""
    from engine.common.kinematics import posed_joints

    tr = result.tracks[tid]
    rows = [int(np.flatnonzero(tr.frames == f)[0]) for f in frames]
    rot = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)[rows]
    return posed_joints(rot, tr.rest_joints, result.body.parents, np.asarray(tr.transl)[rows])


def joint_errors_mm(result, tid: str, true_joints: np.ndarray) -> tuple:
    """(camera-frame, root-relative) mean joint distance, mm, over the frames the track has."""
    frames = [int(f) for f in result.tracks[tid].frames if f < len(true_joints)]
    j, t = posed_joints_of(result, tid, frames), true_joints[frames]
    rel = (j - j[:, :1]) - (t - t[:, :1])
    return float(np.linalg.norm(j - t, axis=-1).mean() * 1000), float(np.linalg.norm(rel, axis=-1).mean() * 1000)


def _run(video, out, extra) -> tuple:
    """-> (result, longest track id, fit seconds)."""
    from engine.common.result_schema import read_result
    from engine.measure.mattes import _engine_run

    done = _engine_run(video, out, *extra)
    res = read_result(out)
    seconds = done["stages"]["fit"] + done["stages"]["silhouette"]
    return res, max(res.tracks, key=lambda t: len(res.tracks[t].frames)), float(seconds)


def measure_renders(frames: int, log) -> list:
    from engine.body.mannequin import build_mannequin
    from engine.data.clips import MOTIONS, render_person_clip
    from engine.measure.mattes import SEED0, _write_video, result_masks, scores
    from engine.render.renderer import Renderer

    body = build_mannequin()
    rows = []
    renderer = Renderer(640, 480, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for m, motion in enumerate(MOTIONS):
                seed = SEED0 + 100 * m
                clip = render_person_clip(body, motion, frames, seed, renderer=renderer)
                gt = [renderer.render(v[None], clip.focal_px).mask[0] for v in clip.vertices]
                video = _write_video(clip.frames, Path(tmp) / f"{seed}.avi")
                row = {"motion": motion, "seed": seed, "frames": frames}
                for name, extra in RUNS:
                    res, tid, secs = _run(video, Path(tmp) / f"{seed}.npz", extra)
                    s = scores(result_masks(res, tid, range(frames)), gt)
                    row[name] = {"iou": s["iou"], "boundary_px": s["boundary_px"], "fit_s": secs,
                                 **dict(zip(("joints_mm", "relative_mm"), joint_errors_mm(res, tid, clip.joints)))}
                rows.append(row)
                log(f"{motion}: {row}")
    finally:
        renderer.close()
    return rows


def measure_dancer(log) -> dict:
    from engine.measure.mattes import FOOTAGE, result_masks, scores, segmentation_masks

    video = FOOTAGE / "dancer.mp4"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in RUNS:
            res, tid, secs = _run(video, Path(tmp) / "dancer.npz", extra)
            n = int(res.meta["frames_done"])
            ref = segmentation_masks(video, res, tid)
            s = scores(result_masks(res, tid, range(n)), ref)
            out[name] = {"frames": n, "iou": s["iou"], "boundary_px": s["boundary_px"], "fit_s": secs}
    log(f"dancer: {out}")
    return out


def report(renders: list, dancer: dict | None, command: str) -> str:
    first, second = (name for name, _ in RUNS)
    lines = ["### The silhouette term, on and off", "",
             f"`{command}` (engine/measure/silhouette.py): each video run through `python -m engine run` twice, with "
             "the defaults (the silhouette term on) and with `--no-silhouette`. Rendered clips: 640x480, one "
             "clip per motion (the first seed of each in the tables above), every frame; body matte IoU and "
             "boundary error (px) against the renderer's true masks; joints: mean distance of the 24 joints to the "
             "true ones, mm, in the camera frame (position included) and root-relative (the pose). Fit s: the run's "
             "`fit` and `silhouette` stages (the landmark fit, and the term when on), 2 CPU threads.", "",
             "| clip | IoU on | off | boundary px on | off | joints mm on | off | root-relative mm on | off "
             "| fit s on | off |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(name, a, b, bold=""):
        return (f"| {name} | {bold}{a['iou']:.3f}{bold} | {b['iou']:.3f} | {a['boundary_px']:.2f} | "
                f"{b['boundary_px']:.2f} | {a['joints_mm']:.0f} | {b['joints_mm']:.0f} | {a['relative_mm']:.0f} | "
                f"{b['relative_mm']:.0f} | {a['fit_s']:.1f} | {b['fit_s']:.1f} |")

    for r in renders:
        lines.append(row(f"{r['motion']} (seed {r['seed']}, {r['frames']} frames)", r[first], r[second]))
    if renders:
        mean = {n: {k: float(np.mean([r[n][k] for r in renders])) for k in renders[0][n]} for n in (first, second)}
        lines.append(row("**mean**", mean[first], mean[second], "**"))
    if dancer:
        a, b = dancer[first], dancer[second]
        lines += ["", f"dancer.mp4 ({a['frames']} frames), against the segmentation the term fits to (not "
                  f"independent): body matte IoU {a['iou']:.3f} with the term, {b['iou']:.3f} without; boundary "
                  f"error {a['boundary_px']:.2f} / {b['boundary_px']:.2f} px; fit and term {a['fit_s']:.1f} s / "
                  f"{b['fit_s']:.1f} s (1080p, the dancer about 580 px tall)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the section into this markdown page")
    p.add_argument("--frames", type=int, default=30, help="frames per rendered clip")
    p.add_argument("--skip-dancer", action="store_true")
    args = p.parse_args(argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    renders = measure_renders(args.frames, log)
    dancer = None if args.skip_dancer else measure_dancer(log)
    publish(report(renders, dancer, command_line("engine.measure.silhouette", argv)), args.out,
            "engine.measure.silhouette")
    return 0


if __name__ == "__main__":
    sys.exit(main())
