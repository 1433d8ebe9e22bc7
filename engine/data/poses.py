"""Plausible SMPL body poses: joint limits, random poses and short procedural motions.

Frames and conventions
----------------------
* A joint's rotation acts in its parent's frame. In SMPL's rest pose every joint frame
  has the template's axes: y up, the body faces +z, the body's left is +x (the arms
  point along +-x, the legs along -y, the feet along +z). Limits are given in that
  frame, per axis, in degrees.
* Each joint has an intrinsic Euler order (scipy's upper-case convention):
  ``R = R_a(t_a) @ R_b(t_b) @ R_c(t_c)`` for order ``"abc"``. The main bending axis comes
  first, the twist about the bone comes last. Examples (left side): knee flexion is
  +x (the shin swings back), hip flexion is -x (the thigh swings forward), elbow flexion
  is -y (the forearm swings forward), shoulder +z raises the arm, shoulder -y brings it
  forward, spine flexion is +x (lean forward).
* Limits are written for the left side and the centre; a right joint mirrors its left
  twin through the x = 0 plane (``M R M`` with ``M = diag(-1, 1, 1)``), which keeps the x
  range and negates the y and z ranges.
* Poses are (..., 24, 3, 3) rotation matrices acting on column vectors. Index 0 (the
  global orientation) is the identity in body poses: the caller chooses the global
  orientation (camera frame, see ``engine.data.synthetic``).

A rotation is within limits when one of its two Euler decompositions in the joint's
order (``(a, b, c)`` and ``(a + pi, pi - b, c + pi)``) lies in the limit box.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.spatial.transform import Rotation

from engine.common.smpl_topology import SMPL_JOINT_NAMES

NUM_JOINTS = 24
JOINT_INDEX = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}

# name: (Euler order, {axis: (lo, hi) degrees}); left side and centre only.
_LIMITS_LEFT = {
    "spine1": ("XZY", {"x": (-20, 35), "z": (-15, 15), "y": (-15, 15)}),
    "spine2": ("XZY", {"x": (-15, 25), "z": (-12, 12), "y": (-15, 15)}),
    "spine3": ("XZY", {"x": (-10, 20), "z": (-10, 10), "y": (-12, 12)}),
    "neck": ("XZY", {"x": (-35, 40), "z": (-25, 25), "y": (-35, 35)}),
    "head": ("XZY", {"x": (-30, 30), "z": (-20, 20), "y": (-40, 40)}),
    "left_hip": ("XZY", {"x": (-125, 30), "z": (-20, 45), "y": (-35, 35)}),
    "left_knee": ("XYZ", {"x": (0, 150), "y": (-10, 10), "z": (-3, 3)}),
    "left_ankle": ("XZY", {"x": (-40, 50), "z": (-20, 20), "y": (-20, 20)}),
    "left_foot": ("XYZ", {"x": (-35, 15), "y": (-5, 5), "z": (-5, 5)}),
    "left_collar": ("ZYX", {"z": (-10, 25), "y": (-20, 10), "x": (-10, 10)}),
    "left_shoulder": ("ZYX", {"z": (-85, 80), "y": (-95, 40), "x": (-70, 60)}),
    "left_elbow": ("YZX", {"y": (-150, 0), "z": (-5, 5), "x": (-30, 30)}),
    "left_wrist": ("ZYX", {"z": (-70, 60), "y": (-30, 25), "x": (-45, 45)}),
    "left_hand": ("ZYX", {"z": (-40, 10), "y": (-10, 10), "x": (-10, 10)}),
}


def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


def _build_limits():
    orders = ["XYZ"] * NUM_JOINTS
    lo = np.zeros((NUM_JOINTS, 3))
    hi = np.zeros((NUM_JOINTS, 3))
    for name, (order, ranges) in _LIMITS_LEFT.items():
        for side_name, sign in ((name, 1.0), (_mirror_name(name), -1.0)):
            j = JOINT_INDEX[side_name]
            orders[j] = order
            for k, axis in enumerate(order.lower()):
                a, b = ranges[axis]
                if sign < 0 and axis in "yz":
                    a, b = -b, -a
                lo[j, k], hi[j, k] = a, b
    return tuple(orders), np.radians(lo), np.radians(hi)


#: Per joint: Euler order, and (24, 3) lower / upper limits in radians, in that order's
#: axis sequence. Joint 0 (global orientation) has zero limits: body poses keep it at I.
EULER_ORDERS, LIMITS_LO, LIMITS_HI = _build_limits()


def limits_table() -> dict:
    """name -> {axis: (lo_deg, hi_deg)} for all 23 body joints (readable form)."""
    out = {}
    for j in range(1, NUM_JOINTS):
        order = EULER_ORDERS[j].lower()
        out[SMPL_JOINT_NAMES[j]] = {a: (float(np.degrees(LIMITS_LO[j, k])), float(np.degrees(LIMITS_HI[j, k])))
                                    for k, a in enumerate(order)}
    return out


# ----------------------------------------------------------------------------------
# Euler <-> matrices
# ----------------------------------------------------------------------------------
def euler_to_pose(angles: np.ndarray) -> np.ndarray:
    """(..., 24, 3) Euler angles (each joint in its own order, radians) -> (..., 24, 3, 3).
    Joint 0 is set to the identity."""
    angles = np.asarray(angles, np.float64)
    lead = angles.shape[:-2]
    flat = angles.reshape(-1, NUM_JOINTS, 3)
    out = np.empty((flat.shape[0], NUM_JOINTS, 3, 3))
    out[:, 0] = np.eye(3)
    for j in range(1, NUM_JOINTS):
        out[:, j] = Rotation.from_euler(EULER_ORDERS[j], flat[:, j]).as_matrix()
    return out.reshape(lead + (NUM_JOINTS, 3, 3))


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def pose_to_euler(pose: np.ndarray):
    """(..., 24, 3, 3) -> the two Euler decompositions (..., 24, 3) each (radians)."""
    pose = np.asarray(pose, np.float64)
    lead = pose.shape[:-3]
    flat = pose.reshape(-1, NUM_JOINTS, 3, 3)
    e1 = np.zeros(flat.shape[:2] + (3,))
    for j in range(1, NUM_JOINTS):
        e1[:, j] = Rotation.from_matrix(flat[:, j]).as_euler(EULER_ORDERS[j])
    e2 = _wrap(np.stack([e1[..., 0] + np.pi, np.pi - e1[..., 1], e1[..., 2] + np.pi], axis=-1))
    e2[:, 0] = 0.0
    return e1.reshape(lead + (NUM_JOINTS, 3)), e2.reshape(lead + (NUM_JOINTS, 3))


def _excess(e: np.ndarray) -> np.ndarray:
    """How far (radians, summed over axes) Euler angles (..., 24, 3) lie outside the limits."""
    return (np.maximum(LIMITS_LO - e, 0) + np.maximum(e - LIMITS_HI, 0)).sum(-1)


def limit_violation(pose: np.ndarray) -> np.ndarray:
    """(..., 24, 3, 3) -> (..., 24) radians outside the limits (0 = within), joint 0 ignored."""
    e1, e2 = pose_to_euler(pose)
    v = np.minimum(_excess(e1), _excess(e2))
    v[..., 0] = 0.0
    return v


def within_limits(pose: np.ndarray, tol_deg: float = 0.01) -> np.ndarray:
    """(..., 24, 3, 3) -> (...) bool: every body joint (1..23) within its limits."""
    return np.all(limit_violation(pose) <= np.radians(tol_deg), axis=-1)


def clip_to_limits(pose: np.ndarray) -> np.ndarray:
    """(..., 24, 3, 3) -> the same with every body joint's Euler angles clipped into its
    limit box (of the two decompositions, the one needing the smaller clip). Joint 0 is
    passed through unchanged."""
    pose = np.asarray(pose, np.float64)
    e1, e2 = pose_to_euler(pose)
    c1 = np.clip(e1, LIMITS_LO, LIMITS_HI)
    c2 = np.clip(e2, LIMITS_LO, LIMITS_HI)
    use2 = (np.abs(c2 - e2).sum(-1) < np.abs(c1 - e1).sum(-1))[..., None]
    out = euler_to_pose(np.where(use2, c2, c1))
    out[..., 0, :, :] = pose[..., 0, :, :]
    return out


# ----------------------------------------------------------------------------------
# Random poses
# ----------------------------------------------------------------------------------
def _angles(spec: dict) -> np.ndarray:
    """{joint name: {axis: degrees}} (left/centre and right names allowed) -> (24, 3) radians
    in each joint's Euler order."""
    e = np.zeros((NUM_JOINTS, 3))
    for name, axes in spec.items():
        j = JOINT_INDEX[name]
        order = EULER_ORDERS[j].lower()
        for axis, deg in axes.items():
            e[j, order.index(axis)] = np.radians(deg)
    return e


def _sym(spec: dict) -> dict:
    """Add the mirrored right-side entries for every left-side entry (y, z negated)."""
    out = dict(spec)
    for name, axes in spec.items():
        if name.startswith("left_"):
            out.setdefault(_mirror_name(name), {a: (v if a == "x" else -v) for a, v in axes.items()})
    return out


#: Relaxed standing: arms down by the sides, elbows and knees slightly bent.
REST = _sym({"left_shoulder": {"z": -68}, "left_elbow": {"y": -12}, "left_knee": {"x": 4},
             "left_collar": {"z": -3}})

# Templates the random poses scatter around (weights: how often each is the centre).
_TEMPLATES = (
    ("stand", 0.40, REST),
    ("t_pose", 0.04, {}),
    ("a_pose", 0.05, _sym({"left_shoulder": {"z": -40}})),
    ("arms_up", 0.06, _sym({"left_shoulder": {"z": 70}, "left_collar": {"z": 15}, "left_elbow": {"y": -20}})),
    ("arms_forward", 0.05, _sym({"left_shoulder": {"z": -10, "y": -75}, "left_elbow": {"y": -20}})),
    ("sit", 0.10, {**_sym({"left_hip": {"x": -90, "z": 8}, "left_knee": {"x": 90}, "left_shoulder": {"z": -65},
                           "left_elbow": {"y": -45}}), "spine1": {"x": 8}}),
    ("squat", 0.07, {**_sym({"left_hip": {"x": -100, "z": 20}, "left_knee": {"x": 125}, "left_ankle": {"x": -30},
                             "left_shoulder": {"z": -20, "y": -60}, "left_elbow": {"y": -30}}), "spine1": {"x": 25},
                     "spine2": {"x": 15}}),
    ("lunge", 0.06, {**_sym({"left_shoulder": {"z": -60}}), "left_hip": {"x": -80}, "left_knee": {"x": 85},
                     "right_hip": {"x": 20}, "right_knee": {"x": 60}, "right_ankle": {"x": 25}}),
    ("one_leg", 0.05, {**_sym({"left_shoulder": {"z": -30}}), "left_hip": {"x": -70}, "left_knee": {"x": 100}}),
    ("kneel", 0.04, {**_sym({"left_shoulder": {"z": -65}}), "left_hip": {"x": -90}, "left_knee": {"x": 90},
                     "right_hip": {"x": 0}, "right_knee": {"x": 95}, "right_ankle": {"x": 40}}),
    ("wave", 0.03, {**REST, "left_shoulder": {"z": 40}, "left_elbow": {"y": -100}, "left_wrist": {"x": 20}}),
)
_TEMPLATE_ANGLES = [np.clip(_angles(spec), LIMITS_LO, LIMITS_HI) for _, _, spec in _TEMPLATES]
_TEMPLATE_P = np.array([w for _, w, _ in _TEMPLATES]) / sum(w for _, w, _ in _TEMPLATES)
TEMPLATE_NAMES = tuple(n for n, _, _ in _TEMPLATES)

# Mirror: the joint permutation left <-> right, and the Euler sign (x kept, y/z negated).
_MIRROR_PERM = np.array([JOINT_INDEX[_mirror_name(n)] for n in SMPL_JOINT_NAMES])
_MIRROR_SIGN = np.array([[1.0 if a == "x" else -1.0 for a in EULER_ORDERS[j].lower()] for j in range(NUM_JOINTS)])


def mirror_angles(e: np.ndarray) -> np.ndarray:
    """(..., 24, 3) Euler angles -> the left/right mirrored pose (stays within limits)."""
    e = np.asarray(e)
    return e[..., _MIRROR_PERM, :] * _MIRROR_SIGN


def random_strength(rng: np.random.Generator) -> float:
    """How far a random pose strays from its template: mostly mild, some strong."""
    r = rng.random()
    if r < 0.55:
        return float(rng.uniform(0.05, 0.3))
    if r < 0.85:
        return float(rng.uniform(0.3, 0.6))
    return float(rng.uniform(0.6, 1.0))


def random_pose_angles(rng: np.random.Generator, strength: float | None = None,
                       template: str | None = None) -> np.ndarray:
    """(24, 3) Euler angles within the limits (joint 0 zero). See ``random_pose``."""
    k = rng.choice(len(_TEMPLATES), p=_TEMPLATE_P) if template is None else TEMPLATE_NAMES.index(template)
    base = _TEMPLATE_ANGLES[k]
    s = random_strength(rng) if strength is None else float(strength)
    # Each joint strays by its own fraction of s (some joints stay near the template).
    sj = s * rng.uniform(0.3, 1.3, size=(NUM_JOINTS, 1))
    target = rng.uniform(LIMITS_LO, LIMITS_HI)
    e = base + np.clip(sj, 0, 1) * (target - base)
    e = np.clip(e, LIMITS_LO, LIMITS_HI)
    if rng.random() < 0.5:
        e = mirror_angles(e)
    e[0] = 0.0
    return e


def random_pose(rng: np.random.Generator, strength: float | None = None, template: str | None = None) -> np.ndarray:
    """A random body pose (24, 3, 3) float64 within the joint limits; joint 0 = identity.

    Scattered around one of a few templates (standing, sitting, squatting, arms up, ...;
    mirrored half the time): each joint moves a random fraction of ``strength`` of the
    way from the template towards a uniformly drawn angle in its range. ``strength``
    defaults to a mix: 55% mild (<= 0.3), 30% moderate, 15% strong (up to the full range).
    """
    return euler_to_pose(random_pose_angles(rng, strength, template))


# ----------------------------------------------------------------------------------
# Procedural motions
# ----------------------------------------------------------------------------------
MOTIONS = ("walk", "turn", "reach", "crouch", "kick")
FPS = 30.0


class Motion(NamedTuple):
    """poses (T, 24, 3, 3) body poses (joint 0 = identity); root (T, 3) root (pelvis)
    offset in metres in SMPL's world frame (y up, +z = the direction the body faces at
    yaw 0), relative to the start; yaw (T,) heading in radians about +y."""

    poses: np.ndarray
    root: np.ndarray
    yaw: np.ndarray


def _smooth_bump(phase):
    """0 at phase 0 and 1, 1 at 0.5, smooth and periodic (C-infinity): (1 - cos 2 pi p) / 2."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * phase)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * t * (t * (6 * t - 15) + 10)  # C2: zero velocity and acceleration at the ends


def _set(e, name, axis, values):
    j = JOINT_INDEX[name]
    e[:, j, EULER_ORDERS[j].lower().index(axis)] = np.radians(values)


def _add(e, name, axis, values):
    j = JOINT_INDEX[name]
    e[:, j, EULER_ORDERS[j].lower().index(axis)] += np.radians(values)


def _rest_angles(T):
    return np.repeat(np.clip(_angles(REST), LIMITS_LO, LIMITS_HI)[None], T, axis=0)


def _gait(e, phase, stride_deg, knee_deg, arm_deg):
    """Walking gait on the Euler tracks e (T, 24, 3); phase in cycles."""
    w = 2 * np.pi * phase
    s, c = np.sin(w), np.cos(w)
    for side, sgn, off in (("left", 1.0, 0.0), ("right", -1.0, 0.5)):
        ws = w + 2 * np.pi * off
        hip = -stride_deg * np.sin(ws) - 4          # flexion forward is -x
        # Knee: flexed most in swing (leg coming forward), a little at heel strike.
        swing = np.clip(0.5 + 0.5 * np.sin(ws + 0.6), 0, 1) ** 2
        knee = 6 + knee_deg * swing
        ankle = 8 * np.sin(ws + 1.2)
        _set(e, f"{side}_hip", "x", hip)
        _set(e, f"{side}_knee", "x", knee)
        _set(e, f"{side}_ankle", "x", ankle)
        # Arms swing opposite to the leg on the same side (forward is -y on the left).
        arm = arm_deg * np.sin(ws)
        _set(e, f"{side}_shoulder", "y", sgn * arm)
        _add(e, f"{side}_elbow", "y", sgn * -(8 + 8 * (0.5 - 0.5 * np.sin(ws))))
    _set(e, "spine1", "y", 4 * s)
    _set(e, "spine3", "y", -5 * s)
    _set(e, "spine1", "z", 2 * c)
    return e


def _walk(T, rng, t):
    period = rng.uniform(0.95, 1.25)
    stride = rng.uniform(15, 28)
    e = _gait(_rest_angles(T), t / period + rng.random(), stride, rng.uniform(40, 60), rng.uniform(10, 25))
    speed = stride / 22.0 * 1.3 * (1.1 / period)  # m/s, about 1.3 m/s for a normal gait
    root = np.zeros((T, 3))
    root[:, 2] = speed * t
    root[:, 1] = 0.02 * np.cos(4 * np.pi * t / period)  # bob twice per cycle
    root[:, 1] -= root[0, 1]
    yaw = np.radians(rng.uniform(-3, 3)) * np.sin(2 * np.pi * t / rng.uniform(3, 6))
    return e, root, yaw


def _turn(T, rng, t):
    period = rng.uniform(1.0, 1.4)
    e = _gait(_rest_angles(T), t / period + rng.random(), rng.uniform(6, 12), rng.uniform(25, 40), rng.uniform(5, 12))
    total = np.radians(rng.uniform(60, 180)) * rng.choice([-1.0, 1.0])
    duration = rng.uniform(1.5, 3.0)
    yaw = total * _smoothstep(t / duration)
    root = np.zeros((T, 3))
    root[:, 0] = 0.05 * np.sin(2 * np.pi * t / period)  # weight shift between steps
    return e, root, yaw


def _reach(T, rng, t):
    duration = rng.uniform(1.5, 2.5)          # out and back; repeats
    a = _smooth_bump(t / duration)[:, None]
    e = _rest_angles(T)
    side = "left" if rng.random() < 0.5 else "right"
    sgn = 1.0 if side == "left" else -1.0
    # Target arm angles: shoulder elevation z, forward y (left-side signs), elbow straight.
    z_t = rng.uniform(-30, 60)
    y_t = rng.uniform(-85, -20)
    rest = np.degrees(e[0])
    js, je = JOINT_INDEX[f"{side}_shoulder"], JOINT_INDEX[f"{side}_elbow"]
    sh0, el0 = rest[js].copy(), rest[je].copy()
    _set(e, f"{side}_shoulder", "z", (sh0[0] + (sgn * z_t - sh0[0]) * a[:, 0]))
    _set(e, f"{side}_shoulder", "y", (sgn * y_t) * a[:, 0])
    _set(e, f"{side}_elbow", "y", (el0[0] + (sgn * -5 - el0[0]) * a[:, 0]))
    lean = rng.uniform(5, 25)
    _set(e, "spine1", "x", lean * 0.5 * a[:, 0])
    _set(e, "spine2", "x", lean * 0.3 * a[:, 0])
    _set(e, "spine2", "y", -sgn * rng.uniform(0, 12) * a[:, 0])
    _set(e, "neck", "x", -0.3 * lean * a[:, 0])
    root = np.zeros((T, 3))
    root[:, 2] = 0.05 * a[:, 0]
    return e, root, np.zeros(T)


def _crouch(T, rng, t):
    duration = rng.uniform(1.6, 3.0)
    a = _smooth_bump(t / duration)
    depth = rng.uniform(0.4, 1.0)
    hip_deg = 85 * depth * a
    knee_deg = 120 * depth * a
    ankle_deg = hip_deg - knee_deg                 # keeps the feet flat
    e = _rest_angles(T)
    for side in ("left", "right"):
        _set(e, f"{side}_hip", "x", -hip_deg)
        _set(e, f"{side}_knee", "x", 4 + knee_deg)
        _set(e, f"{side}_ankle", "x", ankle_deg)
    _set(e, "spine1", "x", 20 * depth * a)
    _set(e, "spine2", "x", 10 * depth * a)
    _set(e, "neck", "x", -15 * depth * a)
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        _set(e, f"{side}_shoulder", "y", sgn * -50 * depth * a)
        _set(e, f"{side}_shoulder", "z", sgn * (-68 + 40 * depth * a))
    # Pelvis drop for a 0.40 m thigh and 0.38 m shin with flat feet.
    h, k = np.radians(hip_deg), np.radians(knee_deg)
    root = np.zeros((T, 3))
    root[:, 1] = -(0.40 * (1 - np.cos(h)) + 0.38 * (1 - np.cos(k - h)))
    root[:, 2] = -0.15 * np.sin(h)  # hips move back
    return e, root, np.zeros(T)


def _kick(T, rng, t):
    duration = rng.uniform(1.0, 1.6)
    p = (t / duration) % 1.0
    # Keyframes over one period (phase, hip x, knee x): wind-up, kick, recover.
    height = rng.uniform(0.5, 1.0)
    keys = np.array([
        [0.00, -4, 12],
        [0.25, 18, 70],
        [0.50, -85 * height, 12],
        [0.75, -30, 60],
        [1.00, -4, 12],
    ])
    from scipy.interpolate import CubicSpline
    spline = CubicSpline(keys[:, 0], keys[:, 1:], bc_type="periodic", axis=0)
    hk = spline(p)
    e = _rest_angles(T)
    side = "left" if rng.random() < 0.5 else "right"
    other = "right" if side == "left" else "left"
    _set(e, f"{side}_hip", "x", hk[:, 0])
    _set(e, f"{side}_knee", "x", hk[:, 1])
    _set(e, f"{side}_ankle", "x", 20 * _smooth_bump(p))
    lean = 12 * height * _smooth_bump(p)
    _set(e, "spine1", "x", -lean)
    _set(e, f"{other}_knee", "x", 6 + 10 * _smooth_bump(p))
    for s2, sgn in (("left", 1.0), ("right", -1.0)):
        _set(e, f"{s2}_shoulder", "z", sgn * (-68 + 35 * _smooth_bump(p)))
    root = np.zeros((T, 3))
    return e, root, np.zeros(T)


_MOTION_FUNCS = {"walk": _walk, "turn": _turn, "reach": _reach, "crouch": _crouch, "kick": _kick}


def motion(name: str, num_frames: int, rng: np.random.Generator, fps: float = FPS) -> Motion:
    """A short procedural motion at ``fps`` frames per second (durations are in seconds,
    so a longer clip shows more of the motion, not a slower one).

    walk: a gait cycle (periodic), forward along +z; turn: stepping in place while the
    heading turns 60-180 degrees (smoothstep); reach: one arm reaches out and back
    (periodic); crouch: down and up with flat feet (periodic); kick: wind-up, kick,
    recover (periodic cubic spline). Random amplitudes, speeds and sides from ``rng``.
    Every frame is within the joint limits (angles are built inside them, then clipped).
    """
    if name not in _MOTION_FUNCS:
        raise ValueError(f"unknown motion {name!r}; expected one of {MOTIONS}")
    T = int(num_frames)
    t = np.arange(T) / float(fps)
    e, root, yaw = _MOTION_FUNCS[name](T, rng, t)
    e = np.clip(e, LIMITS_LO, LIMITS_HI)
    e[:, 0] = 0.0
    return Motion(euler_to_pose(e), np.asarray(root, np.float64), np.asarray(yaw, np.float64))
