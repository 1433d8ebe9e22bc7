"""Foot contacts and planted feet (numpy only; safe inside Blender).

The world, stated once: Z up, the floor at Z = ``floor_z`` (0 by default), metres. A body is
``rotmats (T, 24, 3, 3)`` SMPL local rotations (column vectors; joint 0 maps SMPL body
coordinates into the world), ``transl (T, 3)`` with posed joints
``forward_kinematics(rotmats, rest_joints, parents)[0] + transl``, on consecutive frames (the
caller splits a track at its gaps). ``sole_offsets (4,)`` are ``floor.sole_offsets``: the
heights of ``floor.FOOT_JOINTS`` (L ankle, R ankle, L toe, R toe) above the sole.

A foot is its ankle and its toe joint. Per foot and frame: its height (the lower of the two
above the floor) and speed (the slower of the two); ``detect_contacts`` thresholds both with
hysteresis (strict to enter a contact, lenient to stay in it), fills short gaps and drops short
blips. ``plant_feet`` pins each contact run's ankle to one spot on the floor by two-bone IK on
hip and knee (the foot keeps its world orientation), moving the root only when the spot is out
of the leg's reach or a sole would go below the floor; short smooth blends in and out of each
run. ``foot_skate`` and ``penetration`` measure the result (``python -m engine.measure.contacts``
writes the figures of docs/contacts.md).
"""
from __future__ import annotations

import numpy as np

from .floor import FOOT_JOINTS
from .kinematics import forward_kinematics
from .rotations import axis_angle_to_rotmat

# (hip, knee, ankle, toe) SMPL joints of the left and right leg (smpl_topology.SMPL_JOINT_NAMES)
LEGS = ((1, 4, 7, 10), (2, 5, 8, 11))
# the columns of sole_offsets / floor.FOOT_JOINTS holding each foot's (ankle, toe)
FOOT_COLUMNS = ((0, 2), (1, 3))
assert all(FOOT_JOINTS[c] == leg[k] for cols, leg in zip(FOOT_COLUMNS, LEGS) for c, k in zip(cols, (2, 3)))

# ---------------------------------------------------------------------------- thresholds
# Heights are above the track's own floor level (``floor_level``), speeds in m/s.
# Entering a contact needs the sole within 5 cm of the floor and the foot nearly still on one
# side in time (the "still" speed of ``one_sided_speeds``, < 0.35 m/s): a swinging foot moves at
# 2-4 m/s while walking, while a planted foot's estimated height wanders by a few cm (dancer.mp4:
# a standing foot 2.4-3.2 cm above its track's level for a third of a second). Once in contact the
# foot may rise to 8 cm (heel-off, estimate noise) and move at up to 1 m/s by the "moving" speed
# (the larger side: it passes 1 m/s within a frame or two of a lift-off) before the contact ends:
# hysteresis, so noise at one threshold does not chop a stance into pieces. A contact run is the
# whole stretch of "stay" frames around any "enter" frame (offline, so symmetric in time).
# Chosen on the synthetic walks, stands and jumps of engine/measure/contacts.py at 10, 30 and 60
# fps (docs/contacts.md), which agree with their known contacts as well with 3 cm as with 5 cm
# to enter; a looser exit (the still speed < 0.7 m/s) kept feet "planted" a frame into a jump.
H_ENTER, H_EXIT = 0.05, 0.08
V_ENTER, V_EXIT = 0.35, 1.0
# Shorter contacts than 0.1 s are a swinging foot passing low; gaps under 0.1 s inside a contact
# are a noisy frame or two, not a step (a walking step's swing takes 0.3-0.5 s).
MIN_CONTACT_S, MAX_GAP_S = 0.1, 0.1
# Speeds are differences over ~0.1 s (not neighbouring frames): 1 cm of per-frame noise at 30
# fps reads as ~0.7 m/s between neighbours, ~0.2 m/s over three frames.
SPEED_WINDOW_S = 0.1
# A monocular estimate is never exactly on Z = 0: heights are measured from the track's floor
# level (``floor_level``), the median height of the lower foot over the frames it moves slowly
# (walking, standing and dancing keep some foot on the floor most of the time; the median, not
# a low quantile, so that one foot estimated through the floor does not set the level), clipped
# to +-10 cm: a larger bias is a wrong floor or a wrong depth, not for contacts to paper over.
MAX_LEVEL = 0.10
# plant_feet: blends of 0.15 s (about 4 frames at 30 fps) in and out of each run; a leg reaches at
# most 99.8 % of its length (a fully straight knee makes the IK's knee angle jump with mm of
# target motion).
BLEND_S = 0.15
REACH = 0.998
# ground_along_rays: a run's depth changes by at most a factor 2 (a larger error is a wrong floor).
# Moving the root along its ray by a height h rescales the body in the image by h / drop (drop:
# the camera's height above the root), moving it straight up shifts it by h / depth everywhere:
# for joints up to ~0.8 m from the root (a standing body) the ray costs fewer pixels only when the
# camera is at least that much above the root. Below that (a camera at chest height, dancer.mp4:
# 0.6 m, where the ray moved the head 6 px for a 3.6 cm level) the lifts go straight up.
DEPTH_LIMITS = (0.5, 2.0)
MIN_RAY_DROP = 0.8
# penetration counts depths beyond a micrometre (rounding after a lift is not penetration)
PENETRATION_TOL = 1e-6


# ---------------------------------------------------------------------------- per-foot signals
def foot_heights(joints: np.ndarray, sole_offsets, floor_z: float = 0.0) -> np.ndarray:
    """(T, 24, 3) posed joints (world, Z up) and (4,) sole offsets -> (T, 2) heights (m) of the
    left and right foot's sole above ``floor_z``.

    A foot's height is the lower of its ankle's and toe's (each minus its height above the
    sole): heel strike and flat foot rest on the heel, heel-off and toe-off on the ball, and the
    foot is on the floor with either."""
    j = np.asarray(joints, np.float64)
    h = j[:, list(FOOT_JOINTS), 2] - np.asarray(sole_offsets, np.float64) - float(floor_z)
    return np.stack([np.minimum(h[:, a], h[:, t]) for a, t in FOOT_COLUMNS], axis=1)


def one_sided_speeds(points: np.ndarray, fps: float, window_s: float = SPEED_WINDOW_S,
                     moving: bool = False) -> np.ndarray:
    """(T, P, 3) positions on consecutive frames -> (T, P) speeds (units/s) from the backward
    and the forward difference over k = max(1, round(window_s * fps)) frames: the smaller of
    the two ("still": a foot landing is still from that frame on, one lifting off up to it),
    or with ``moving`` the larger (a foot that has just lifted off moves on one side already).
    At the ends the one side there is; 0 for a single frame."""
    p = np.asarray(points, np.float64)
    T = len(p)
    if T < 2:
        return np.zeros(p.shape[:-1])
    k = min(max(1, int(round(window_s * float(fps)))), T - 1)
    step = np.linalg.norm(p[k:] - p[:-k], axis=-1) * (float(fps) / k)     # (T - k, P): frames t -> t + k
    back = np.concatenate([step[:k], step])        # the first k frames have no backward side: forward
    fwd = np.concatenate([step, step[-k:]])        # the last k no forward side: backward
    return np.maximum(back, fwd) if moving else np.minimum(back, fwd)


def foot_speeds(joints: np.ndarray, fps: float, window_s: float = SPEED_WINDOW_S, moving: bool = False) -> np.ndarray:
    """(T, 24, 3) posed joints on consecutive frames -> (T, 2) left / right foot speeds (m/s,
    ``one_sided_speeds``: the "still" speed, or with ``moving`` the "moving" one).

    A foot's speed is the slower of its ankle's and toe's: a planted foot rolling from heel to
    ball keeps one of them still while the other lifts."""
    v = one_sided_speeds(np.asarray(joints, np.float64)[:, list(FOOT_JOINTS)], fps, window_s, moving)
    return np.stack([np.minimum(v[:, a], v[:, t]) for a, t in FOOT_COLUMNS], axis=1)


def floor_level(heights: np.ndarray, speeds: np.ndarray | None = None, max_speed: float = V_ENTER,
                max_level: float = MAX_LEVEL) -> float:
    """(T, 2) foot heights (and "still" speeds) of one track -> its floor level (m): the median
    height of the lower foot over the frames where that foot moves slower than ``max_speed`` (all
    frames without speeds, or when none is that slow), clipped to +-``max_level``; 0 for an
    empty track."""
    h = np.asarray(heights, np.float64)
    if h.size == 0:
        return 0.0
    low = np.argmin(h, axis=1)
    lower = h[np.arange(len(h)), low]
    if speeds is not None:
        slow = np.asarray(speeds, np.float64)[np.arange(len(h)), low] < max_speed
        lower = lower[slow] if slow.any() else lower
    return float(np.clip(np.median(lower), -max_level, max_level))


# ---------------------------------------------------------------------------- 1-D masks
def runs(mask: np.ndarray) -> list:
    """(T,) bool -> [(start, stop)] of its runs of True (stop exclusive)."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def hysteresis(enter: np.ndarray, stay: np.ndarray) -> np.ndarray:
    """(T,) bool -> (T,) bool: every run of ``stay | enter`` holding at least one ``enter``."""
    enter = np.asarray(enter, bool)
    out = np.zeros_like(enter)
    for a, b in runs(enter | np.asarray(stay, bool)):
        if enter[a:b].any():
            out[a:b] = True
    return out


def fill_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """(T,) bool -> (T,) bool with gaps of at most ``max_gap`` frames between two runs filled."""
    out = np.asarray(mask, bool).copy()
    r = runs(out)
    for (_, b), (a, _) in zip(r[:-1], r[1:]):
        if a - b <= max_gap:
            out[b:a] = True
    return out


def drop_short(mask: np.ndarray, min_len: int) -> np.ndarray:
    """(T,) bool -> (T,) bool without its runs shorter than ``min_len`` frames."""
    out = np.asarray(mask, bool).copy()
    for a, b in runs(out):
        if b - a < min_len:
            out[a:b] = False
    return out


# ---------------------------------------------------------------------------- detection
def detect_contacts(heights: np.ndarray, speeds: np.ndarray, fps: float, moving_speeds: np.ndarray | None = None,
                    level: float | None = None, h_enter: float = H_ENTER, h_exit: float = H_EXIT,
                    v_enter: float = V_ENTER, v_exit: float = V_EXIT, min_contact_s: float = MIN_CONTACT_S,
                    max_gap_s: float = MAX_GAP_S) -> np.ndarray:
    """(T, 2) foot heights (m, ``foot_heights``) and "still" speeds (m/s, ``foot_speeds``) of
    one track on consecutive frames -> (T, 2) bool contacts (left, right).

    ``moving_speeds`` (T, 2) (``foot_speeds(..., moving=True)``; default ``speeds``) decide
    when a contact ends. Heights count from ``level`` (default ``floor_level(heights, speeds)``:
    robust to a constant bias). Per foot: hysteresis between (h < h_enter and still speed <
    v_enter) and (h < h_exit and moving speed < v_exit), then gaps up to ``max_gap_s`` filled,
    then runs shorter than ``min_contact_s`` dropped."""
    h = np.asarray(heights, np.float64)
    v = np.asarray(speeds, np.float64)
    vm = v if moving_speeds is None else np.asarray(moving_speeds, np.float64)
    if not (h.shape == v.shape == vm.shape) or h.ndim != 2:
        raise ValueError(f"heights and speeds must all be (T, 2), got {h.shape}, {v.shape} and {vm.shape}")
    h = h - (floor_level(h, v) if level is None else float(level))
    gap = int(round(max_gap_s * float(fps)))
    shortest = max(1, int(round(min_contact_s * float(fps))))
    out = np.zeros(h.shape, bool)
    for f in range(h.shape[1]):
        c = hysteresis((h[:, f] < h_enter) & (v[:, f] < v_enter), (h[:, f] < h_exit) & (vm[:, f] < v_exit))
        out[:, f] = drop_short(fill_gaps(c, gap), shortest)
    return out


def contacts_of(joints: np.ndarray, sole_offsets, fps: float, floor_z: float = 0.0, **kw) -> np.ndarray:
    """(T, 24, 3) posed joints of one track on consecutive frames (world, Z up) -> (T, 2) bool
    contacts: ``detect_contacts`` on ``foot_heights`` and both ``foot_speeds``; ``kw`` go to it."""
    return detect_contacts(foot_heights(joints, sole_offsets, floor_z), foot_speeds(joints, fps), fps,
                           moving_speeds=foot_speeds(joints, fps, moving=True), **kw)


# ---------------------------------------------------------------------------- rotations
def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 3), (N, 3) non-zero vectors -> (N, 3, 3) the smallest rotations taking the direction
    of ``a`` to that of ``b`` (half a turn about an axis across ``a`` when they are opposite)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=-1, keepdims=True)
    c = np.sum(a * b, axis=-1, keepdims=True)
    # opposite (or equal) directions: any axis across a; pick the one across the least aligned world axis
    across = np.cross(a, np.eye(3)[np.argmin(np.abs(a), axis=-1)])
    across /= np.linalg.norm(across, axis=-1, keepdims=True)
    unit = np.where(s > 1e-12, axis / np.maximum(s, 1e-300), across)
    return axis_angle_to_rotmat(unit * np.arctan2(s, c))


def two_bone_ik(hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray, hip_rot: np.ndarray,
                knee_rot: np.ndarray, target: np.ndarray) -> tuple:
    """Analytic two-bone IK of a leg, batched over N.

    hip, knee, ankle (N, 3) world positions of the chain; hip_rot, knee_rot (N, 3, 3) the hip's
    and knee's world rotations; target (N, 3) where the ankle should go.
    -> (hip_rot', knee_rot') (N, 3, 3) new world rotations putting the ankle on the target, or
    as close as the bone lengths allow (the distance clipped to [|l1 - l2|, l1 + l2]).

    First the knee bends (about the axis across both bones; about the knee's own x axis, SMPL's
    flexion axis, when the leg is straight) so the hip-ankle distance is the hip-target
    distance, then the whole leg swings about the hip by the smallest rotation onto the target
    (the knee keeps pointing where it did). The ankle's world rotation is the caller's to keep:
    its new local rotation is ``knee_rot'.T @ ankle_world_rot``."""
    hip, knee, ankle, target = (np.asarray(x, np.float64) for x in (hip, knee, ankle, target))
    hip_rot, knee_rot = np.asarray(hip_rot, np.float64), np.asarray(knee_rot, np.float64)
    u, v = knee - hip, ankle - knee
    l1, l2 = np.linalg.norm(u, axis=-1), np.linalg.norm(v, axis=-1)
    d = np.clip(np.linalg.norm(target - hip, axis=-1), np.abs(l1 - l2), l1 + l2)
    cross = np.cross(u, v)
    sin_b = np.linalg.norm(cross, axis=-1)
    bend = np.arctan2(sin_b, np.sum(u * v, axis=-1))                # 0: straight leg
    want = np.arccos(np.clip((d * d - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0))
    flex = knee_rot[..., :, 0]                                       # the knee's x axis, world
    flex = flex - np.sum(flex * u, -1, keepdims=True) * u / (l1 * l1)[..., None]
    axis = np.where((sin_b > 1e-6 * l1 * l2)[..., None], cross / np.maximum(sin_b, 1e-300)[..., None],
                    flex / np.linalg.norm(flex, axis=-1, keepdims=True))
    bend_rot = axis_angle_to_rotmat(axis * (want - bend)[..., None])
    ankle_bent = knee + np.einsum("nab,nb->na", bend_rot, v)
    swing = rotation_between(ankle_bent - hip, target - hip)
    return swing @ hip_rot, swing @ bend_rot @ knee_rot


# ---------------------------------------------------------------------------- planting
def blend_weights(mask: np.ndarray, frames: int) -> list:
    """(T,) bool contacts of one foot -> [(start, stop, weights (T,))] per run: 1 on the run,
    a smoothstep from 0 to 1 over ``frames`` frames before it and back over as many after."""
    T = len(mask)
    t = np.arange(T, dtype=np.float64)
    out = []
    for a, b in runs(mask):
        before = np.clip((t - (a - frames - 1)) / (frames + 1), 0.0, 1.0)
        after = np.clip(((b + frames) - t) / (frames + 1), 0.0, 1.0)
        x = np.minimum(before, after)
        out.append((a, b, x * x * (3 - 2 * x)))
    return out


def contact_weights(contacts: np.ndarray, fps: float, blend_s: float = BLEND_S) -> np.ndarray:
    """(T, 2) bool contacts -> (T, 2) weights in [0, 1]: 1 during a run, ``blend_weights``'
    ramps around it (summed where two runs' ramps meet, at most 1); 0: the foot is free."""
    c = np.asarray(contacts, bool)
    frames = max(1, int(round(blend_s * float(fps))))
    w = np.zeros(c.shape)
    for f in range(c.shape[1]):
        for _, _, x in blend_weights(c[:, f], frames):
            w[:, f] += x
    return np.minimum(w, 1.0)


def contact_targets(joints: np.ndarray, contacts: np.ndarray, sole_offsets, fps: float,
                    blend_s: float = BLEND_S, floor_z: float = 0.0) -> tuple:
    """Where each ankle should be. joints (T, 24, 3) world, contacts (T, 2) bool ->
    (targets (T, 2, 3), weights (T, 2) ``contact_weights``; 0: the foot is free).

    During a run the ankle stands at the run's median horizontal position, lowered or raised so
    the foot's sole (``foot_heights``, its orientation unchanged) is on the floor. Around a run
    the ankle keeps its own motion plus the run's correction at its nearest end, faded by the
    ramp (runs whose ramps meet share the frames between them by weight), so an airborne foot
    is not dragged towards the spot; and it is never lowered below the floor."""
    j = np.asarray(joints, np.float64)
    c = np.asarray(contacts, bool)
    h = foot_heights(j, sole_offsets, floor_z)
    frames = max(1, int(round(blend_s * float(fps))))
    targets = np.empty((len(j), 2, 3))
    for f, (_, _, ankle_j, _) in enumerate(LEGS):
        ankle = j[:, ankle_j]
        shift, total = np.zeros((len(j), 3)), np.zeros(len(j))
        inside = np.zeros(len(j), bool)
        for a, b, w in blend_weights(c[:, f], frames):
            spot = np.median(ankle[a:b, :2], axis=0)
            t = np.arange(len(j))
            edge = np.clip(t, a, b - 1)                              # the run's nearest frame
            off = np.concatenate([spot - ankle[edge, :2], -h[edge, f:f + 1]], axis=1)
            off[a:b] = np.c_[spot - ankle[a:b, :2], -h[a:b, f]]      # inside: pinned, sole on the floor
            shift += w[:, None] * off
            total += w
            inside[a:b] = True
        shift /= np.maximum(total, 1.0)[:, None]
        shift[:, 2] = np.where(inside, shift[:, 2], np.maximum(shift[:, 2], -h[:, f]))
        targets[:, f] = ankle + shift
    return targets, contact_weights(c, fps, blend_s)


def lift_out_of_floor(joints: np.ndarray, sole_offsets, floor_z: float = 0.0, weights=None) -> np.ndarray:
    """(T, 24, 3) -> (T,) the least upward root shift (m) that puts no foot's sole below the
    floor (0 where none is). With ``weights`` (T, 2) (``contact_weights``) a foot's depth counts
    only by 1 - its weight: the IK puts a planted foot on the floor itself."""
    depth = np.maximum(-foot_heights(joints, sole_offsets, floor_z), 0.0)
    if weights is not None:
        depth = depth * (1.0 - np.asarray(weights, np.float64))
    return depth.max(axis=1)


def reach_shift(hips: np.ndarray, targets: np.ndarray, weights: np.ndarray, lengths, reach: float = REACH,
                iterations: int = 30) -> np.ndarray:
    """The smallest root shifts that bring the targets within the legs' reach.

    hips (T, 2, 3) hip positions, targets (T, 2, 3), weights (T, 2) (only feet with weight > 0
    count), lengths (2,) thigh + shin of each leg -> (T, 3): per frame the shortest s with
    |target_f - (hip_f + s)| <= reach x length_f for both legs, i.e. zero projected onto the
    intersection of two balls (Dykstra's alternating projections; when the balls do not meet,
    a shift between them, and the IK stretches towards what it cannot reach)."""
    centre = np.asarray(targets, np.float64) - np.asarray(hips, np.float64)      # (T, 2, 3)
    radius = np.where(np.asarray(weights) > 0, reach * np.asarray(lengths, np.float64)[None], np.inf)

    def project(z, f):
        d = z - centre[:, f]
        n = np.linalg.norm(d, axis=-1)
        scale = np.where(n > radius[:, f], radius[:, f] / np.maximum(n, 1e-300), 1.0)
        return centre[:, f] + d * scale[:, None]

    x = np.zeros((len(centre), 3))
    p, q = np.zeros_like(x), np.zeros_like(x)
    for _ in range(iterations):
        y = project(x + p, 0)
        p = x + p - y
        x = project(y + q, 1)
        q = y + q - x
    return x


def lift_directions(roots: np.ndarray, camera_position=None) -> np.ndarray:
    """(T, 3) root positions -> (T, 3) directions whose Z component is 1 along which a root is
    lifted: straight up, or with ``camera_position`` along the ray from the root towards the
    camera (the body stays on its pixels; monocular depth is what is least certain), straight
    up where the camera is not at least ``MIN_RAY_DROP`` above the root (see there)."""
    r = np.asarray(roots, np.float64)
    out = np.zeros_like(r)
    out[:, 2] = 1.0
    if camera_position is not None:
        to_cam = np.asarray(camera_position, np.float64) - r
        ok = to_cam[:, 2] >= MIN_RAY_DROP
        out[ok] = to_cam[ok] / to_cam[ok, 2:3]
    return out


def hold_heading(world_rot: np.ndarray, forward: np.ndarray, contacts: np.ndarray, frames: int) -> np.ndarray:
    """A foot's world rotations (T, 3, 3), its rest forward vector (3,) (ankle -> toe), its
    contacts (T,) bool -> the rotations with the heading (the turn about Z) held at each contact
    run's mean heading, blended in and out over ``frames`` (``blend_weights``); pitch and roll
    (heel-off, a tilted sole) are left as they are."""
    Rw = np.asarray(world_rot, np.float64)
    f = Rw @ np.asarray(forward, np.float64)
    heading = np.arctan2(f[:, 1], f[:, 0])
    turn, best = np.zeros(len(Rw)), np.zeros(len(Rw))
    for a, b, w in blend_weights(np.asarray(contacts, bool), frames):
        held = np.arctan2(np.sin(heading[a:b]).mean(), np.cos(heading[a:b]).mean())
        d = np.angle(np.exp(1j * (held - heading)))                 # wrapped to (-pi, pi]
        take = w > best
        turn[take], best[take] = w[take] * d[take], w[take]
    return axis_angle_to_rotmat(turn[:, None] * np.array([0.0, 0.0, 1.0])) @ Rw


def plant_feet(rotmats: np.ndarray, transl: np.ndarray, rest_joints: np.ndarray, parents, contacts: np.ndarray,
               sole_offsets, fps: float, blend_s: float = BLEND_S, reach: float = REACH,
               floor_z: float = 0.0, camera_position=None) -> tuple:
    """Keep planted feet planted. rotmats (T, 24, 3, 3) local, transl (T, 3) world, rest_joints
    (24, 3), parents (24,), contacts (T, 2) bool (left, right), sole_offsets (4,) ->
    (rotmats' (T, 24, 3, 3), transl' (T, 3)), float64.

    1. The root rises by the least amount that puts no free foot's sole below the floor
       (``lift_out_of_floor``; a planted foot's depth is the IK's to remove).
    2. Ankle targets (``contact_targets``): pinned to one spot on the floor during each run,
       blended in and out around it.
    3. Where a target is beyond the leg's reach the root makes the smallest move that brings it
       within reach (``reach_shift``); nothing else moves the root horizontally.
    4. Two-bone IK (``two_bone_ik``) sets hip and knee; the ankle's local rotation is reset so
       the foot keeps its world orientation, except its heading, held during each run
       (``hold_heading``): the toe does not swing about the pinned ankle with the estimate's noise.
    5. A last lift in case step 3 lowered a free foot through the floor.
    Frames with no weight on either foot change only by step 1's lift (none without penetration).
    With ``camera_position`` step 1's lift moves the root along its camera ray
    (``lift_directions``)."""
    R = np.array(rotmats, np.float64)
    tr = np.array(transl, np.float64)
    rest = np.asarray(rest_joints, np.float64)
    parents = np.asarray(parents).astype(int)
    contacts = np.asarray(contacts, bool)
    if contacts.shape != (len(R), 2) or tr.shape != (len(R), 3):
        raise ValueError(f"{len(R)} frames: transl must be ({len(R)}, 3), contacts ({len(R)}, 2); "
                         f"got {tr.shape} and {contacts.shape}")
    local, world = forward_kinematics(R, rest, parents)
    weights = contact_weights(contacts, fps, blend_s)
    root0 = rest[0]
    tr += lift_out_of_floor(local + tr[:, None], sole_offsets, floor_z, weights)[:, None] * \
        lift_directions(tr + root0, camera_position)
    joints = local + tr[:, None]
    targets, weights = contact_targets(joints, contacts, sole_offsets, fps, blend_s, floor_z)
    lengths = [np.linalg.norm(rest[k] - rest[hp]) + np.linalg.norm(rest[a] - rest[k]) for hp, k, a, _ in LEGS]
    tr += reach_shift(joints[:, [LEGS[0][0], LEGS[1][0]]], targets, weights, lengths, reach)
    joints = local + tr[:, None]
    blend_frames = max(1, int(round(blend_s * float(fps))))
    for f, (hip, knee, ankle, toe) in enumerate(LEGS):
        n = np.flatnonzero(weights[:, f] > 0)
        if len(n) == 0:
            continue
        hip_rot, knee_rot = two_bone_ik(joints[n, hip], joints[n, knee], joints[n, ankle], world[n, hip],
                                        world[n, knee], targets[n, f])
        R[n, hip] = np.swapaxes(world[n, parents[hip]], -1, -2) @ hip_rot
        R[n, knee] = np.swapaxes(hip_rot, -1, -2) @ knee_rot
        foot = hold_heading(world[:, ankle], rest[toe] - rest[ankle], contacts[:, f], blend_frames)
        R[n, ankle] = np.swapaxes(knee_rot, -1, -2) @ foot[n]
    local = forward_kinematics(R, rest, parents)[0]
    tr[:, 2] += lift_out_of_floor(local + tr[:, None], sole_offsets, floor_z)   # small: keep the pins
    return R, tr


# ---------------------------------------------------------------------------- a whole track
def ground_along_rays(joints: np.ndarray, transl: np.ndarray, rest_root: np.ndarray, sole_offsets, fps: float,
                      camera_position: np.ndarray, limits: tuple = DEPTH_LIMITS) -> tuple:
    """Stand one run of a body on the floor by moving it along the camera rays through its root.

    joints (T, 24, 3) world, transl (T, 3), rest_root (3,), camera_position (3,) world ->
    (transl' (T, 3), factor): the root goes from the camera c to c + k (root - c) with one k
    for the run, chosen so the run's floor level (``floor_level``, unclipped) becomes 0; k is
    clipped to ``limits``. Monocular depth is the least certain quantity: along its ray the
    root stays on its pixel, where lifting it onto the floor would move it off the plate (on
    vtest.avi by up to 1.9 m). Returns the run unchanged (factor 1) when the camera is less
    than ``MIN_RAY_DROP`` above the root: ``plant_feet`` then lifts it straight up."""
    j = np.asarray(joints, np.float64)
    t = np.asarray(transl, np.float64)
    c = np.asarray(camera_position, np.float64)
    level = floor_level(foot_heights(j, sole_offsets), foot_speeds(j, fps), max_level=np.inf)
    root = t + np.asarray(rest_root, np.float64)
    drop = float(np.median(root[:, 2] - c[2]))        # how the feet move per unit of k - 1
    if abs(drop) < MIN_RAY_DROP:
        return t.copy(), 1.0
    k = float(np.clip(1.0 - level / drop, *limits))
    return t + (k - 1.0) * (root - c), k


def clean_track(rotmats: np.ndarray, transl: np.ndarray, rest_joints: np.ndarray, parents, sole_offsets,
                fps: float, camera_position=None) -> tuple:
    """One run of a body (world, consecutive frames) -> (rotmats', transl', contacts (T, 2)
    bool, depth factor): grounded along the camera rays when ``camera_position`` is given
    (``ground_along_rays``), contacts detected (``contacts_of``), feet planted (``plant_feet``)."""
    R = np.asarray(rotmats, np.float64)
    t = np.asarray(transl, np.float64)
    rest = np.asarray(rest_joints, np.float64)
    local = forward_kinematics(R, rest, parents)[0]
    k = 1.0
    if camera_position is not None:
        t, k = ground_along_rays(local + t[:, None], t, rest[0], sole_offsets, fps, camera_position)
    found = contacts_of(local + t[:, None], sole_offsets, fps)
    R, t = plant_feet(R, t, rest, parents, found, sole_offsets, fps, camera_position=camera_position)
    return R, t, found, k


# ---------------------------------------------------------------------------- metrics
def foot_skate(joints: np.ndarray, contacts: np.ndarray, strict: bool = False) -> float:
    """(T, 24, 3) world joints, (T, 2) contacts -> mean horizontal slide of a planted foot per
    frame (mm), over the (foot, frame) pairs in contact on the frame and the one before; NaN
    when there are none. A foot's slide is the smaller of its ankle's and its toe's (the foot
    rolling over its heel or ball is not skating; both moving is); with ``strict`` the larger
    (any turn of a planted foot counts)."""
    j = np.asarray(joints, np.float64)
    c = np.asarray(contacts, bool)
    both = c[1:] & c[:-1]
    if not both.any():
        return float("nan")
    step = np.linalg.norm(np.diff(j[:, list(FOOT_JOINTS), :2], axis=0), axis=-1)    # (T - 1, 4)
    pick = np.maximum if strict else np.minimum
    slide = np.stack([pick(step[:, a], step[:, t]) for a, t in FOOT_COLUMNS], axis=1)
    return float(1000.0 * slide[both].mean())


def penetration(joints: np.ndarray, sole_offsets, floor_z: float = 0.0) -> tuple:
    """(T, 24, 3) world joints -> (mean depth (mm) over the frames with a sole below the floor
    (0 when none), max depth (mm), share of such frames in [0, 1]). A frame's depth is its
    lowest foot joint's sole below ``floor_z``."""
    depth = lift_out_of_floor(joints, sole_offsets, floor_z)
    below = depth > PENETRATION_TOL
    if not below.any():
        return 0.0, 0.0, 0.0
    return float(1000.0 * depth[below].mean()), float(1000.0 * depth.max()), float(below.mean())


__all__ = ["foot_heights", "one_sided_speeds", "foot_speeds", "floor_level", "runs", "hysteresis", "fill_gaps",
           "drop_short", "detect_contacts", "contacts_of", "rotation_between", "two_bone_ik", "blend_weights",
           "contact_weights", "contact_targets", "lift_out_of_floor", "lift_directions", "reach_shift", "hold_heading", "plant_feet", "ground_along_rays",
           "clean_track", "foot_skate",
           "penetration", "LEGS"]
