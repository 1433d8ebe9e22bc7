"""``python -m engine.measure.floor``: how well the shot's floor (engine/common/floor.py) comes
back, on synthetic shots with a known floor and camera and on real results.

* Synthetic: people walking and standing on the floor Z = 0 of a world, seen by a camera of
  known height, pitch and roll; joints with Gaussian noise, optionally each track's depth off
  by its own factor (as monocular estimates are). Error of the plane's angle (deg) and of the
  camera height (cm) for the plain fit (``estimate_floor``, what the Blender scene uses) and
  the scaled fit (``estimate_floor_scaled``).
* Real: result files of the engine (``engine run``): the floor world of the result
  (``floor_world_of_result``), then per person-frame the lowest sole's height above the floor
  (foot joints lowered by their rest heights above the sole): median |height| and the share
  within 10 cm, over all person-frames and over planted ones (the lowest foot slower than
  0.3 m/s).

    python -m engine.measure.floor [RESULT.npz ...] [--out docs/floor.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..common import floor as F
from ..common.blender_space import CAMERA_TO_WORLD
from ..common.kinematics import posed_joints

# Heights above the sole of walking_joints' ankles and toes (FOOT_JOINTS order).
SYNTHETIC_SOLE = np.array([0.08, 0.08, 0.03, 0.03])
CAMERAS = ((0, 0, 1.5), (12, 0, 1.7), (25, 4, 3.0), (-5, -3, 0.9), (35, 0, 6.0))   # pitch, roll (deg), height (m)


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def walking_joints(T: int, fps: float, start: np.ndarray, heading: float, speed: float = 1.2,
                   stride_hz: float = 1.0) -> np.ndarray:
    """(T, 24, 3) joints in a Z-up world on the floor Z = 0: pelvis at 0.95 m, neck 1.45 m,
    feet alternating stance (still on the floor) and swing (up to 12 cm, moving at twice the
    body speed). Other joints sit on the pelvis-neck line (only pelvis, neck and feet matter)."""
    t = np.arange(T) / fps
    d = np.array([np.cos(heading), np.sin(heading), 0.0])
    side = np.array([-d[1], d[0], 0.0])
    J = np.zeros((T, 24, 3))
    body = start + speed * t[:, None] * d
    J[:] = (body + [0, 0, 1.2])[:, None]
    J[:, F.PELVIS] = body + [0, 0, 0.95]
    J[:, F.NECK] = body + [0, 0, 1.45]
    for ankle, foot, sgn, phase in ((F.L_ANKLE, F.L_FOOT, 1, 0.0), (F.R_ANKLE, F.R_FOOT, -1, 0.5)):
        cyc = (t * stride_hz + phase) % 1.0
        swing = cyc >= 0.5
        # the foot's position along the walk: still during stance, catching up during swing
        stance_pos = np.floor(t * stride_hz + phase) / stride_hz * speed
        along = np.where(swing, stance_pos + (cyc - 0.5) * 2 * speed / stride_hz, stance_pos)
        lift = np.where(swing, 0.12 * np.sin((cyc - 0.5) * 2 * np.pi), 0.0)
        base = start + along[:, None] * d + sgn * 0.1 * side
        J[:, ankle] = base + np.c_[np.zeros((T, 2)), SYNTHETIC_SOLE[0] + lift]
        J[:, foot] = base + 0.12 * d + np.c_[np.zeros((T, 2)), SYNTHETIC_SOLE[2] + lift]
    return J


def synthetic_shot(pitch_deg: float, roll_deg: float, height: float, people: int = 3, T: int = 60,
                   fps: float = 30.0, noise: float = 0.01, seed: int = 0) -> tuple:
    """People on the floor Z = 0 (the last one standing still); a camera at (0, 0, height)
    looking along +Y, pitched down and rolled. -> (tracks (T, 24, 3) in the camera frame,
    true normal (3,) and offset)."""
    rng = np.random.default_rng(seed)
    # camera -> world for a level camera is CAMERA_TO_WORLD; tilt it about its own axes
    R_cw = CAMERA_TO_WORLD @ rot_x(-np.radians(pitch_deg)) @ rot_z(np.radians(roll_deg))
    cam = np.array([0.0, 0.0, height])
    tracks = []
    for i in range(people):
        start = np.array([rng.uniform(-2, 2), rng.uniform(4, 9), 0.0])
        J = walking_joints(T, fps, start, rng.uniform(0, 2 * np.pi))
        if i == people - 1:
            J[:] = J[:1]
        Jc = (J - cam) @ R_cw                             # world -> camera (R_cw^T (p - cam))
        tracks.append(Jc + rng.normal(scale=noise, size=Jc.shape))
    return tracks, R_cw.T @ np.array([0.0, 0.0, 1.0]), height


def floor_errors(fl: F.Floor, normal: np.ndarray, height: float) -> tuple:
    """-> (plane angle error (deg), camera height error (m))."""
    angle = float(np.degrees(np.arccos(np.clip(fl.normal @ normal, -1.0, 1.0))))
    return angle, abs(fl.camera_height - height)


def synthetic_rows(seeds: int = 5) -> list:
    """Per setting (noise, depth error): mean and max plane angle / height errors over the
    cameras in ``CAMERAS`` and ``seeds`` seeds, plain and scaled fits."""
    rows = []
    for noise, depth in ((0.01, 0.0), (0.03, 0.0), (0.01, 0.15)):
        errs = {"plain": [], "scaled": []}
        for pitch, roll, height in CAMERAS:
            for seed in range(seeds):
                tracks, normal, h = synthetic_shot(pitch, roll, height, people=4, T=90, noise=noise, seed=seed)
                if depth:
                    f = np.random.default_rng(100 + seed).uniform(1 - depth, 1 + depth, len(tracks))
                    f /= np.exp(np.log(f).mean())
                    tracks = [t * k for t, k in zip(tracks, f)]
                errs["plain"].append(floor_errors(F.estimate_floor(tracks, 30.0, SYNTHETIC_SOLE), normal, h))
                errs["scaled"].append(floor_errors(F.estimate_floor_scaled(tracks, 30.0, SYNTHETIC_SOLE)[0], normal, h))
        for fit, e in errs.items():
            e = np.array(e)
            rows.append((noise, depth, fit, e[:, 0].mean(), e[:, 0].max(), 100 * e[:, 1].mean(), 100 * e[:, 1].max()))
    return rows


def real_row(path: Path) -> dict:
    """A result file -> camera height/pitch of its floor world and the soles' heights."""
    from ..common.result_schema import read_result

    result = read_result(path)
    (R, t), fl = F.floor_world_of_result(result)
    fps = float(result.meta["video"]["fps"])
    heights, planted = [], []
    for tr in result.tracks.values():
        rot = np.concatenate([tr.global_orient_rotmat[:, None], tr.body_pose_rotmat], 1)
        J = posed_joints(rot, tr.rest_joints, result.body.parents, tr.transl) @ R.T + t
        feet = J[:, list(F.FOOT_JOINTS)]
        sole = feet[..., 2] - F.sole_offsets(tr.rest_joints, tr.rest_vertices)
        for run in F.consecutive_runs(tr.frames):
            low = sole[run].min(axis=1)
            speed = F.foot_speeds(feet[run], fps)[np.arange(len(run)), sole[run].argmin(axis=1)]
            heights.append(low)
            planted.append(speed < 0.3)
    h, p = np.concatenate(heights), np.concatenate(planted)
    return {"clip": path.name, "people": len(result.tracks), "person_frames": len(h),
            "camera_m": fl.camera_height, "pitch_deg": fl.camera_pitch_deg, "roll_deg": fl.camera_roll_deg,
            "median_cm": 100 * float(np.median(np.abs(h))), "within10": 100 * float(np.mean(np.abs(h) < 0.1)),
            "planted_within10": 100 * float(np.mean(np.abs(h[p]) < 0.1)) if p.any() else float("nan"),
            "planted_share": 100 * float(p.mean())}


def report(results: list) -> str:
    lines = ["## Synthetic shots (known floor and camera)", "",
             f"Cameras (pitch, roll, height): {', '.join(f'({a}°, {b}°, {c} m)' for a, b, c in CAMERAS)}; "
             "4 people (one standing), 90 frames at 30 fps, 5 seeds each.", "",
             "| joint noise | per-track depth error | fit | plane angle mean / max (deg) | camera height mean / max (cm) |",
             "|---|---|---|---|---|"]
    for noise, depth, fit, am, ax, hm, hx in synthetic_rows():
        lines.append(f"| {100 * noise:.0f} cm | {'±' + format(100 * depth, '.0f') + ' %' if depth else 'none'} | "
                     f"{fit} | {am:.2f} / {ax:.2f} | {hm:.1f} / {hx:.1f} |")
    if results:
        lines += ["", "## Real results (the floor world the Blender scene uses)", "",
                  "| clip | people | person-frames | camera height | pitch / roll | median lowest sole | within 10 cm | planted: within 10 cm (share planted) |",
                  "|---|---|---|---|---|---|---|---|"]
        for path in results:
            r = real_row(Path(path))
            lines.append(f"| {r['clip']} | {r['people']} | {r['person_frames']} | {r['camera_m']:.2f} m | "
                         f"{r['pitch_deg']:.1f}° / {r['roll_deg']:.1f}° | {r['median_cm']:.1f} cm | {r['within10']:.0f} % | "
                         f"{r['planted_within10']:.0f} % ({r['planted_share']:.0f} %) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="*", help="engine result files (.npz)")
    p.add_argument("--out", default="", help="write the tables to this markdown file (after a KEEP_ABOVE marker)")
    args = p.parse_args(argv)
    text = report(args.results)
    print(text)
    if args.out:
        out = Path(args.out)
        head = out.read_text().split("<!-- KEEP_ABOVE -->")[0] if out.exists() else ""
        out.write_text(head + "<!-- KEEP_ABOVE -->\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
