"""Foot contacts and planted feet, measured (engine/common/contacts.py; docs/contacts.md).

    python -m engine.measure.contacts [RESULT.npz ...]

prints a markdown table: per clip, the share of foot-frames in contact, foot skate during
contacts (mm/frame) and floor penetration (mean / max mm, % of frames) before and after
``plant_feet``. Clips:

* synthetic sequences with known contacts (seeded): a body walking with its feet pinned exactly
  (made by two-bone IK towards a gait's ankle positions), standing, jumping in place; then an
  "estimate" of each made by noise on the root and leg rotations, a root drift and, for one
  walk, a +5 cm height bias. Contacts are detected on the estimate (``detect_contacts``), the
  estimate is planted with them, and skate is measured on the known contacts as well;
* real engine results (``engine run`` output): each track split at its gaps, moved into the
  shot's floor world (``floor.floor_of_result``), contacts detected and planted per piece.

The synthetic body is ``toy_body``: a made-up SMPL-like skeleton (round numbers, no body
model), also used by tests/engine/test_contacts.py.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from engine.common import contacts as C
from engine.common.blender_space import project_world_points, smpl_to_world
from engine.common.floor import FOOT_JOINTS, consecutive_runs, floor_world_of_result, sole_offsets, world_from_camera
from engine.common.kinematics import forward_kinematics
from engine.common.rotations import axis_angle_to_rotmat
from engine.common.smpl_topology import SMPL_PARENTS

SOLE_Y = -0.95        # toy_body's soles, body frame
MIN_PIECE = 10        # frames: shorter pieces of a real track are left out


# ---------------------------------------------------------------------------- the toy body
def toy_body() -> tuple:
    """-> (rest_joints (24, 3) SMPL body frame: y up, z forward, x to the body's left, metres;
    parents (24,); sole_offsets (4,)). A plausible adult of 1.7 m, pelvis at the origin."""
    half = [  # x >= 0 side and the centre line; right side mirrored below
        (0, (0.00, 0.00, 0.00)), (1, (0.07, -0.09, 0.00)), (3, (0.00, 0.10, -0.01)), (4, (0.09, -0.48, 0.01)),
        (6, (0.00, 0.23, 0.00)), (7, (0.08, -0.88, -0.03)), (9, (0.00, 0.29, 0.02)), (10, (0.10, -0.93, 0.10)),
        (12, (0.00, 0.50, -0.01)), (13, (0.07, 0.42, 0.00)), (15, (0.00, 0.58, 0.04)), (16, (0.17, 0.44, -0.01)),
        (18, (0.43, 0.43, -0.03)), (20, (0.68, 0.43, -0.03)), (22, (0.76, 0.42, -0.04)),
    ]
    rest = np.zeros((24, 3))
    for j, p in half:
        rest[j] = p
    for left in (1, 4, 7, 10, 13, 16, 18, 20, 22):
        rest[left + 1] = rest[left] * [-1, 1, 1]
    return rest, SMPL_PARENTS.copy(), rest[list(FOOT_JOINTS), 1] - SOLE_Y


def heading_frame(heading: float) -> np.ndarray:
    """(3, 3) global orient of a body standing upright in the Z-up world facing
    (cos heading, sin heading, 0): body y -> world Z, body z -> the facing direction."""
    c, s = np.cos(heading), np.sin(heading)
    return np.array([[-s, 0.0, c], [c, 0.0, s], [0.0, 1.0, 0.0]])


def _rot_z(a: np.ndarray) -> np.ndarray:
    return axis_angle_to_rotmat(np.asarray(a, np.float64)[..., None] * np.array([0.0, 0.0, 1.0]))


def pose_towards(ankles: np.ndarray, pelvis: np.ndarray, root: np.ndarray, foot_rot: np.ndarray, body=None) -> tuple:
    """A body whose ankles are exactly at ``ankles`` (T, 2, 3): pelvis (T, 3) world position,
    root (T, 3, 3) global orient, foot_rot (T, 3, 3) both feet's world rotation; other joints
    at rest. -> (rotmats (T, 24, 3, 3), transl (T, 3))."""
    rest, parents, _ = body or toy_body()
    T = len(pelvis)
    R = np.tile(np.eye(3), (T, 24, 1, 1))
    R[:, 0] = root
    transl = pelvis - rest[0]
    joints, world = forward_kinematics(R, rest, parents)
    joints = joints + transl[:, None]
    for f, (hip, knee, ankle, _) in enumerate(C.LEGS):
        hip_rot, knee_rot = C.two_bone_ik(joints[:, hip], joints[:, knee], joints[:, ankle], world[:, hip],
                                          world[:, knee], ankles[:, f])
        R[:, hip] = np.swapaxes(root, -1, -2) @ hip_rot
        R[:, knee] = np.swapaxes(hip_rot, -1, -2) @ knee_rot
        R[:, ankle] = np.swapaxes(knee_rot, -1, -2) @ foot_rot
    return R, transl


def _highest_pelvis(ankles: np.ndarray, root: np.ndarray, rest: np.ndarray, cap: float,
                    reach: float = 0.97) -> np.ndarray:
    """ankles (T, 2, 3) relative to the pelvis's ground point, root (T, 3, 3) -> (T,) the highest
    pelvis heights (<= cap) that keep both ankles within ``reach`` x the legs' length."""
    z = np.full(len(ankles), cap)
    for f, (hip, knee, ankle, _) in enumerate(C.LEGS):
        length = np.linalg.norm(rest[knee] - rest[hip]) + np.linalg.norm(rest[ankle] - rest[knee])
        hip_off = np.einsum("tab,b->ta", root, rest[hip] - rest[0])       # pelvis -> hip, world
        r_xy = np.linalg.norm(ankles[:, f, :2] - hip_off[:, :2], axis=-1)   # horizontal hip -> ankle
        z = np.minimum(z, ankles[:, f, 2] + np.sqrt((reach * length) ** 2 - r_xy ** 2) - hip_off[:, 2])
    return z


def synthetic_walk(T: int = 240, fps: float = 30.0, speed: float = 1.0, period: float = 1.0, duty: float = 0.6,
                   lift: float = 0.10, heading: float = 0.4, sway_deg: float = 5.0) -> dict:
    """A body walking straight at ``speed`` (m/s), a stride of ``period`` s per foot with the foot
    on the floor ``duty`` of it (double support between), the swing foot rising ``lift`` m;
    the pelvis yaws +-``sway_deg`` and sits as high as the legs allow (<= 0.93 m). Feet flat,
    exactly still while in contact. -> dict(rotmats, transl, contacts (T, 2) the stance phases, fps)."""
    rest, parents, sole = toy_body()
    t = np.arange(T) / fps
    d = np.array([np.cos(heading), np.sin(heading), 0.0])
    side = np.array([-d[1], d[0], 0.0])                                   # the body's left
    ankles, contacts = np.zeros((T, 2, 3)), np.zeros((T, 2), bool)
    for f, (phase, ankle_j) in enumerate(((0.0, 7), (0.5, 8))):
        u = t / period + phase
        k, c = np.floor(u), u - np.floor(u)
        contacts[:, f] = c < duty
        place = speed * period * (k + duty / 2 - phase)                 # under the body at mid-stance
        s = np.clip((c - duty) / (1 - duty), 0.0, 1.0)
        along = np.where(contacts[:, f], place, place + s * s * (3 - 2 * s) * speed * period)
        ankles[:, f] = (along + rest[ankle_j, 2])[:, None] * d + rest[ankle_j, 0] * side
        ankles[:, f, 2] = sole[f] + np.where(contacts[:, f], 0.0, lift * np.sin(np.pi * s))
    yaw = np.radians(sway_deg) * np.sin(2 * np.pi * t / period)
    root = _rot_z(yaw) @ heading_frame(heading)
    body_xy = speed * t[:, None] * d
    rel = ankles - body_xy[:, None]
    pelvis = body_xy + np.array([0.0, 0.0, 1.0]) * _highest_pelvis(rel, root, rest, 0.93)[:, None]
    R, transl = pose_towards(ankles, pelvis, root, heading_frame(heading)[None].repeat(T, 0), (rest, parents, sole))
    return dict(rotmats=R, transl=transl, contacts=contacts, fps=fps)


def synthetic_stand(T: int = 150, fps: float = 30.0, heading: float = 1.0) -> dict:
    """A body standing with both feet planted, its pelvis swaying +-1.5 cm sideways at 0.3 Hz
    and bobbing 1 cm at 0.5 Hz. -> dict(rotmats, transl, contacts (all True), fps)."""
    rest, parents, sole = toy_body()
    t = np.arange(T) / fps
    F = heading_frame(heading)
    feet = np.stack([F @ (rest[a] - rest[0]) for a in (7, 8)])
    ankles = np.repeat(feet[None], T, 0)
    ankles[..., 2] = sole[:2]
    pelvis = np.zeros((T, 3))
    pelvis[:, :2] = 0.015 * np.sin(2 * np.pi * 0.3 * t)[:, None] * F[:2, 0]
    pelvis[:, 2] = 0.92 - 0.01 * (1 - np.cos(2 * np.pi * 0.5 * t))
    R, transl = pose_towards(ankles, pelvis, F[None].repeat(T, 0), F[None].repeat(T, 0), (rest, parents, sole))
    return dict(rotmats=R, transl=transl, contacts=np.ones((T, 2), bool), fps=fps)


def synthetic_jump(T: int = 105, fps: float = 30.0, heading: float = -0.5, flight_s: float = 0.4) -> dict:
    """Standing, a crouch (12 cm), a jump in place of ``flight_s`` s (both feet off the floor,
    the legs as at take-off), a landing crouch, standing. -> dict(rotmats, transl, contacts
    (False in the air), fps)."""
    rest, parents, sole = toy_body()
    t = np.arange(T) / fps
    F = heading_frame(heading)
    take_off = 1.6
    air = (t > take_off) & (t < take_off + flight_s)
    tau = t - take_off
    g = 9.81
    rise = np.where(air, g * flight_s / 2 * tau - g / 2 * tau ** 2, 0.0)
    bump = lambda a, b: np.where((t > a) & (t < b), np.sin(np.pi * np.clip((t - a) / (b - a), 0, 1)) ** 2, 0.0)
    crouch = 0.12 * (bump(take_off - 0.6, take_off) + bump(take_off + flight_s, take_off + flight_s + 0.6))
    feet = np.stack([F @ (rest[a] - rest[0]) for a in (7, 8)])
    ankles = np.repeat(feet[None], T, 0)
    ankles[..., 2] = sole[:2] + rise[:, None]
    pelvis = np.zeros((T, 3))
    pelvis[:, 2] = 0.92 + rise - crouch
    R, transl = pose_towards(ankles, pelvis, F[None].repeat(T, 0), F[None].repeat(T, 0), (rest, parents, sole))
    return dict(rotmats=R, transl=transl, contacts=~air[:, None].repeat(2, 1), fps=fps)


def corrupt(seq: dict, seed: int = 0, rot_deg: float = 0.4, transl_m: float = 0.003, drift_m: float = 0.002,
            bias: float = 0.0) -> dict:
    """An "estimate" of a sequence: per-frame random rotations (``rot_deg`` RMS per axis) on the
    root, hips, knees and ankles, Gaussian root noise (``transl_m`` per axis), a root random
    walk (``drift_m`` per frame, horizontal) and a constant height ``bias`` (m)."""
    rng = np.random.default_rng(seed)
    R = seq["rotmats"].copy()
    T = len(R)
    joints = [0, 1, 2, 4, 5, 7, 8]
    R[:, joints] = R[:, joints] @ axis_angle_to_rotmat(rng.normal(scale=np.radians(rot_deg), size=(T, len(joints), 3)))
    tr = seq["transl"] + rng.normal(scale=transl_m, size=(T, 3))
    tr[:, :2] += np.cumsum(rng.normal(scale=drift_m, size=(T, 2)), axis=0)
    tr[:, 2] += bias
    return {**seq, "rotmats": R, "transl": tr}


# ---------------------------------------------------------------------------- measuring
def joints_of(rotmats, transl, rest, parents) -> np.ndarray:
    return forward_kinematics(rotmats, rest, parents)[0] + np.asarray(transl)[:, None]


def measure_piece(rotmats, transl, rest, parents, sole, fps, known=None, camera_position=None,
                  project=None) -> dict:
    """One body on consecutive frames, world -> detected contacts, skate and penetration before
    and after ``clean_track`` (what the Blender scene does: grounding along the camera rays when
    ``camera_position`` is given, then ``plant_feet``; skate on the detected contacts, and on
    ``known`` when given)."""
    transl = np.asarray(transl, np.float64)
    before = joints_of(rotmats, transl, rest, parents)
    R2, t2, found, factor = C.clean_track(rotmats, transl, rest, parents, sole, fps, camera_position)
    after = joints_of(R2, t2, rest, parents)
    if project is not None:   # what the clean-up costs on the plate: joints' image shift (px)
        shift = np.linalg.norm(project(after) - project(before), axis=-1)
    if camera_position is not None:   # the root's own change, apart from the move along its ray
        transl = transl + (factor - 1.0) * (transl + rest[0] - np.asarray(camera_position))
    out = dict(frames=len(before), contact=found, known=known, factor=factor,
               skate=(C.foot_skate(before, found), C.foot_skate(after, found)),
               strict=(C.foot_skate(before, found, strict=True), C.foot_skate(after, found, strict=True)),
               pen=(C.penetration(before, sole), C.penetration(after, sole)),
               moved_root=(float(np.linalg.norm((t2 - transl)[:, :2], axis=1).max()),
                           float(np.abs(t2 - transl)[:, 2].max())))
    if project is not None:
        out["shift_px"] = shift
    if known is not None:
        out["skate_known"] = (C.foot_skate(before, known), C.foot_skate(after, known))
        out["agree"] = float((found == known).mean())
    return out


def synthetic_clips() -> list:
    """[(name, seq truth, estimate)] of the measured synthetic clips (seeded)."""
    walk = synthetic_walk()
    return [
        ("walk (noise + drift)", walk, corrupt(walk, seed=1)),
        ("walk, +5 cm height bias", walk, corrupt(walk, seed=2, bias=0.05)),
        ("walk, 2x noise", walk, corrupt(walk, seed=3, rot_deg=0.8, transl_m=0.006, drift_m=0.004)),
        ("walk at 10 fps", synthetic_walk(T=80, fps=10.0), None),
        ("standing", synthetic_stand(), None),
        ("jump in place", synthetic_jump(), None),
    ]


def world_pieces(result, scaled: bool = False) -> list:
    """A result's tracks in the floor world, split at gaps -> [(name, rotmats, transl, rest,
    parents, sole, fps, camera position, world -> pixels)] (pieces under MIN_PIECE frames left out).

    The floor world is ``floor_world_of_result``'s (one plane, the tracks' depths as
    estimated), or with ``scaled`` ``estimate_floor_scaled``'s, each piece then moved along the
    camera rays through its feet by its depth scale s (per frame by (s - 1) x the mean of its
    foot joints, so the feet land where the fit put them; the body keeps its size)."""
    from engine.common.floor import estimate_floor_scaled
    from engine.common.kinematics import posed_joints

    parents = np.asarray(result.body.parents)
    fps = float(result.meta.get("video", {}).get("fps") or 30.0)
    pieces = []
    for tid, tr in result.tracks.items():
        for run in consecutive_runs(tr.frames):
            R = np.concatenate([tr.global_orient_rotmat[run][:, None], tr.body_pose_rotmat[run]], 1).astype(np.float64)
            pieces.append((f"{tid}:{tr.frames[run[0]]}", R, np.asarray(tr.transl, np.float64)[run],
                           np.asarray(tr.rest_joints, np.float64), sole_offsets(tr.rest_joints, tr.rest_vertices)))
    if scaled:
        joints = [posed_joints(R, rest, parents, t) for _, R, t, rest, _ in pieces]
        floor, scales = estimate_floor_scaled(joints, fps, np.mean([p[4] for p in pieces], axis=0))
        pieces = [(n, R, t + (s - 1) * j[:, list(FOOT_JOINTS)].mean(1), rest, sole)
                  for (n, R, t, rest, sole), j, s in zip(pieces, joints, scales)]
        Rw, tw = world_from_camera(floor.normal, floor.offset)
    else:
        Rw, tw = floor_world_of_result(result)[0]
    cam = result.meta["camera"]

    def project(points):
        return project_world_points(points, float(cam["focal_px"]), cam["principal_point"], (Rw, tw))

    out = []
    for name, R, t, rest, sole in pieces:
        if len(R) < MIN_PIECE:
            continue
        R, t = smpl_to_world(R, t, rest[0], (Rw, tw))
        out.append((name, R, t, rest, parents, sole, fps, tw, project))
    return out


def _pool(rows: list) -> dict:
    """Several pieces' measures -> one clip's (frame-weighted where it matters)."""
    def skate(k, i):
        pairs = [(r[k][i], (r["contact"][1:] & r["contact"][:-1]).sum()) for r in rows if k in r]
        pairs = [(s, n) for s, n in pairs if n > 0 and np.isfinite(s)]
        return sum(s * n for s, n in pairs) / sum(n for _, n in pairs) if pairs else float("nan")

    def pen(i):
        frames = sum(r["frames"] for r in rows)
        share = sum(r["pen"][i][2] * r["frames"] for r in rows) / frames
        n_below = [r["pen"][i][2] * r["frames"] for r in rows]
        mean = sum(r["pen"][i][0] * n for r, n in zip(rows, n_below)) / max(sum(n_below), 1e-9)
        return mean, max(r["pen"][i][1] for r in rows), share

    out = dict(frames=sum(r["frames"] for r in rows), pieces=len(rows),
               share=float(np.concatenate([r["contact"] for r in rows]).mean()),
               skate=(skate("skate", 0), skate("skate", 1)), strict=(skate("strict", 0), skate("strict", 1)),
               pen=(pen(0), pen(1)),
               moved_root=tuple(max(r["moved_root"][i] for r in rows) for i in (0, 1)),
               factor=(min(r["factor"] for r in rows), max(r["factor"] for r in rows)))
    if all("shift_px" in r for r in rows):
        shift = np.concatenate([r["shift_px"].ravel() for r in rows])
        out["shift_px"] = (float(np.median(shift)), float(np.percentile(shift, 95)))
    if all("agree" in r for r in rows):
        out["agree"] = rows[0]["agree"]
        out["skate_known"] = rows[0]["skate_known"]
    return out


def _shift_text(m: dict) -> str:
    if "shift_px" not in m:
        return "—"
    median, p95 = m["shift_px"]
    return f"{median:.1f} / {p95:.1f}"


def _factor_range(factor) -> str:
    lo, hi = factor
    return "—" if lo == hi == 1.0 else f"{lo:.2f}–{hi:.2f}"


def _fmt(x, digits=1):
    return "—" if not np.isfinite(x) else f"{x:.{digits}f}"


def table(clips: list) -> str:
    head = ("| clip | frames (pieces) | contact share | agreement with known | skate before → after (mm/frame) "
            "| strict skate | skate on known contacts | penetration before: mean / max mm, % frames | after "
            "| root moved, max: horizontal / vertical (m) | depth factor along the rays "
            "| joints' image shift: median / 95th pct (px) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, m in clips:
        pb, pa = m["pen"]
        known = m.get("skate_known")
        agree = "—" if "agree" not in m else f"{100 * m['agree']:.1f} %"
        on_known = "—" if known is None else f"{_fmt(known[0])} → {_fmt(known[1], 2)}"
        lines.append(
            f"| {name} | {m['frames']} ({m['pieces']}) | {100 * m['share']:.0f} % | {agree} | "
            f"{_fmt(m['skate'][0])} → {_fmt(m['skate'][1], 2)} | "
            f"{_fmt(m['strict'][0])} → {_fmt(m['strict'][1], 2)} | "
            f"{on_known} | "
            f"{pb[0]:.1f} / {pb[1]:.1f}, {100 * pb[2]:.0f} % | {pa[0]:.1f} / {pa[1]:.1f}, {100 * pa[2]:.0f} % | "
            f"{m['moved_root'][0]:.3f} / {m['moved_root'][1]:.3f} | "
            f"{_factor_range(m['factor'])} | "
            f"{_shift_text(m)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.measure.contacts", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="*", help="engine result files (.npz) to measure as well")
    ap.add_argument("--scaled", action="store_true",
                    help="real results: the floor fitted with each track's depth free (estimate_floor_scaled)")
    args = ap.parse_args(argv)
    rest, parents, sole = toy_body()
    clips = []
    for name, truth, est in synthetic_clips():
        est = est if est is not None else corrupt(truth, seed=4)
        m = measure_piece(est["rotmats"], est["transl"], rest, parents, sole, truth["fps"], known=truth["contacts"])
        clips.append((name, _pool([m])))
    for path in args.results:
        from engine.common.result_schema import read_result

        result = read_result(path)
        rows = [measure_piece(R, t, r, p, s, fps, camera_position=c, project=proj)
                for _, R, t, r, p, s, fps, c, proj in world_pieces(result, args.scaled)]
        if rows:
            clips.append((f"{path}{' (scaled floor)' if args.scaled else ''}", _pool(rows)))
        else:
            print(f"{path}: no track of {MIN_PIECE}+ consecutive frames", file=sys.stderr)
    print(table(clips))
    return 0


if __name__ == "__main__":
    sys.exit(main())
