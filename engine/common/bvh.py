"""BVH (Biovision hierarchy) writing and reading in numpy; no bpy, safe inside Blender.

What ``write_bvh`` writes (docs/blender-scene.md, "Export"):

* the hierarchy with every joint's rest ``OFFSET`` from its parent (``End Site`` offsets for
  leaves), the root's offset 0 0 0;
* ``CHANNELS 6 Xposition Yposition Zposition <rot>`` on the root, ``CHANNELS 3 <rot>`` on the
  other joints, ``<rot>`` the three rotation channels in ``order`` (default ``ZXY``:
  ``Zrotation Xrotation Yrotation``);
* per frame the root's position (absolute: with offset 0 both readings of the root channels,
  "offset + channels" and "channels only", give the same point) and each joint's local rotation
  as Euler angles in degrees, continuous from frame to frame (no 360° jumps, the nearer of the
  two equivalent triples);
* ``Frame Time`` with 10 significant digits, so 29.97 fps (30000 / 1001) reads back as 29.97.

Conventions: rotation matrices act on column vectors; channels listed as ``Zrotation
Xrotation Yrotation`` mean ``R = Rz(z) @ Rx(x) @ Ry(y)``; a joint's world rotation is its
parent's times its own local one and its position ``p = p_parent + R_parent_world @ offset``.
Units and axes are whatever the caller passes (the extension: metres, Y up).
"""
from __future__ import annotations

import io
import math
import os

import numpy as np

_AXIS = {"X": 0, "Y": 1, "Z": 2}


def _check_order(order: str) -> tuple:
    order = str(order).upper()
    if sorted(order) != ["X", "Y", "Z"]:
        raise ValueError(f"rotation order must be a permutation of XYZ, got {order!r}")
    return tuple(_AXIS[c] for c in order)


def axis_rotation(axis: int, angle) -> np.ndarray:
    """Rotation matrices about a coordinate axis. angle (...) radians -> (..., 3, 3)."""
    a = np.asarray(angle, np.float64)
    c, s = np.cos(a), np.sin(a)
    R = np.zeros(a.shape + (3, 3))
    i, j = (axis + 1) % 3, (axis + 2) % 3
    R[..., axis, axis] = 1.0
    R[..., i, i] = c
    R[..., j, j] = c
    R[..., i, j] = -s
    R[..., j, i] = s
    return R


def matrices_from_euler(angles, order: str = "ZXY") -> np.ndarray:
    """Euler angles (..., 3) in radians, listed in ``order`` -> R = R_order[0] @ R_order[1] @ R_order[2]."""
    ax = _check_order(order)
    a = np.asarray(angles, np.float64)
    return axis_rotation(ax[0], a[..., 0]) @ axis_rotation(ax[1], a[..., 1]) @ axis_rotation(ax[2], a[..., 2])


def _euler_one(R: np.ndarray, order: tuple) -> np.ndarray:
    """R (N, 3, 3) -> (N, 3) angles in (-pi, pi], middle one in [-pi/2, pi/2]."""
    i, j, k = order
    s = 1.0 if (j - i) % 3 == 1 else -1.0         # +1 for XYZ, YZX, ZXY; -1 for the others
    sb = np.clip(s * R[:, i, k], -1.0, 1.0)
    b = np.arcsin(sb)
    cb = np.hypot(R[:, i, i], R[:, i, j])
    a = np.arctan2(-s * R[:, j, k], R[:, k, k])
    c = np.arctan2(-s * R[:, i, j], R[:, i, i])
    lock = cb < 1e-9                               # gimbal lock: only a +/- c is defined; c = 0
    if np.any(lock):
        a[lock] = np.arctan2(s * R[lock, k, j], R[lock, j, j])
        c[lock] = 0.0
    return np.stack([a, b, c], axis=-1)


def _wrap_near(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """x shifted by multiples of 2 pi to lie within pi of ref."""
    return x - 2.0 * np.pi * np.round((x - ref) / (2.0 * np.pi))


def euler_from_matrices(R, order: str = "ZXY", continuous: bool = True) -> np.ndarray:
    """Rotation matrices (T, J, 3, 3) or (T, 3, 3) -> Euler angles (T, [J,] 3) in radians,
    listed in ``order`` (``matrices_from_euler`` inverts it).

    With ``continuous`` each frame takes, of the two equivalent triples (a, b, c) and
    (a + pi, pi - b, c + pi) shifted by whole turns, the one nearest the previous frame's."""
    ax = _check_order(order)
    R = np.asarray(R, np.float64)
    single = R.ndim == 3
    if single:
        R = R[:, None]
    T, J = R.shape[:2]
    eul = _euler_one(R.reshape(-1, 3, 3), ax).reshape(T, J, 3)
    if continuous and T > 1:
        alt = eul + np.array([np.pi, 0.0, np.pi])
        alt[..., 1] = np.pi - eul[..., 1]
        for t in range(1, T):
            prev = eul[t - 1]
            e1 = _wrap_near(eul[t], prev)
            e2 = _wrap_near(alt[t], prev)
            pick = np.abs(e2 - prev).sum(-1) < np.abs(e1 - prev).sum(-1)
            eul[t] = np.where(pick[:, None], e2, e1)
    return eul[:, 0] if single else eul


def _fmt(values) -> str:
    return " ".join(f"{v:.6f}" for v in values).replace("-0.000000", "0.000000")


def bvh_text(names, parents, offsets, root_positions, rotations, frame_time, *, end_sites=None,
             order: str = "ZXY") -> str:
    """The BVH file's text.

    names (J,) joint names; parents (J,) with parents[0] = -1 and parents[j] < j; offsets (J, 3)
    rest offset of each joint from its parent (offsets[0] is written as 0 0 0: the root's place
    is in its position channels); root_positions (T, 3); rotations (T, J, 3, 3) local rotations;
    frame_time seconds per frame; end_sites {joint index: (3,) offset} for leaves (a leaf
    without one gets a zero offset)."""
    names = [str(n) for n in names]
    parents = np.asarray(parents).astype(int)
    J = len(names)
    offsets = np.asarray(offsets, np.float64).reshape(J, 3)
    pos = np.asarray(root_positions, np.float64).reshape(-1, 3)
    rot = np.asarray(rotations, np.float64)
    T = len(pos)
    if rot.shape != (T, J, 3, 3):
        raise ValueError(f"rotations must be ({T}, {J}, 3, 3), got {rot.shape}")
    if parents.shape != (J,) or parents[0] != -1 or any(parents[j] >= j or parents[j] < 0 for j in range(1, J)):
        raise ValueError("parents must start with -1 and list each joint after its parent")
    if not (math.isfinite(frame_time) and frame_time > 0):
        raise ValueError(f"frame time must be positive, got {frame_time!r}")
    for n in names:
        if not n or any(ch.isspace() for ch in n):
            raise ValueError(f"BVH joint names cannot be empty or contain spaces: {n!r}")
    _check_order(order)
    rot_channels = " ".join(f"{c}rotation" for c in order.upper())
    children = {j: [k for k in range(J) if parents[k] == j] for j in range(J)}
    end_sites = end_sites or {}

    out = io.StringIO()
    out.write("HIERARCHY\n")

    def node(j, depth):
        pad = "\t" * depth
        out.write(f"{pad}{'ROOT' if j == 0 else 'JOINT'} {names[j]}\n{pad}{{\n")
        out.write(f"{pad}\tOFFSET {_fmt(np.zeros(3) if j == 0 else offsets[j])}\n")
        if j == 0:
            out.write(f"{pad}\tCHANNELS 6 Xposition Yposition Zposition {rot_channels}\n")
        else:
            out.write(f"{pad}\tCHANNELS 3 {rot_channels}\n")
        for k in children[j]:
            node(k, depth + 1)
        if not children[j]:
            end = np.asarray(end_sites.get(j, np.zeros(3)), np.float64)
            out.write(f"{pad}\tEnd Site\n{pad}\t{{\n{pad}\t\tOFFSET {_fmt(end)}\n{pad}\t}}\n")
        out.write(f"{pad}}}\n")

    node(0, 0)
    # Joints in the order their channels appear: depth-first, as written above.
    written = []

    def walk(j):
        written.append(j)
        for k in children[j]:
            walk(k)
    walk(0)
    if len(written) != J:
        raise ValueError("every joint must descend from joint 0")
    eul = np.degrees(euler_from_matrices(rot, order)) if T else np.zeros((0, J, 3))
    out.write(f"MOTION\nFrames: {T}\nFrame Time: {frame_time:.10g}\n")
    for t in range(T):
        out.write(_fmt(pos[t]) + " " + _fmt(eul[t, written].reshape(-1)) + "\n")
    return out.getvalue()


def write_bvh(path, *args, **kwargs) -> str:
    """``bvh_text(*args, **kwargs)`` written to ``path`` (UTF-8, ``\\n``). -> the path."""
    text = bvh_text(*args, **kwargs)
    with open(os.fspath(path), "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return os.fspath(path)


def read_bvh(text: str) -> dict:
    """Parse BVH text (any channel layout) ->
    {"names", "parents", "offsets" (J, 3), "channels" [[str]], "end_sites" {j: (3,)},
     "frame_time", "motion" (T, C)}."""
    tok = text.split()
    p = 0
    names, parents, offsets, channels, end_sites = [], [], [], [], {}
    stack = []

    def take():
        nonlocal p
        p += 1
        return tok[p - 1]

    if take() != "HIERARCHY":
        raise ValueError("not a BVH file: no HIERARCHY")
    while True:
        t = take()
        if t in ("ROOT", "JOINT"):
            names.append(take())
            parents.append(stack[-1] if stack else -1)
            stack.append(len(names) - 1)
            channels.append([])
            offsets.append(None)
            if take() != "{":
                raise ValueError("BVH: '{' expected")
        elif t == "OFFSET":
            offsets[stack[-1]] = [float(take()) for _ in range(3)]
        elif t == "CHANNELS":
            channels[stack[-1]] = [take() for _ in range(int(take()))]
        elif t == "End":
            take()  # "Site"
            take()  # "{"
            take()  # "OFFSET"
            end_sites[stack[-1]] = np.array([float(take()) for _ in range(3)])
            take()  # "}"
        elif t == "}":
            stack.pop()
        elif t == "MOTION":
            break
        else:
            raise ValueError(f"BVH: unexpected {t!r}")
    take()  # "Frames:"
    T = int(take())
    take()  # "Frame"
    take()  # "Time:"
    frame_time = float(take())
    C = sum(len(c) for c in channels)
    vals = np.array([float(v) for v in tok[p:p + T * C]], np.float64).reshape(T, C)
    return {"names": names, "parents": np.array(parents), "offsets": np.array(offsets, np.float64),
            "channels": channels, "end_sites": end_sites, "frame_time": frame_time, "motion": vals}


def bvh_joint_positions(bvh: dict) -> np.ndarray:
    """World joint positions (T, J, 3) of a parsed BVH (``read_bvh``), rotation channels in any
    order, position channels on any joint (added to the offset), the root's offset included."""
    parents, offsets = bvh["parents"], bvh["offsets"]
    motion = bvh["motion"]
    T, J = len(motion), len(parents)
    P = np.zeros((T, J, 3))
    W = np.zeros((T, J, 3, 3))
    col = 0
    for j in range(J):
        loc = np.tile(offsets[j], (T, 1))
        R = np.tile(np.eye(3), (T, 1, 1))
        for ch in bvh["channels"][j]:
            v = motion[:, col]
            col += 1
            axis = _AXIS[ch[0].upper()]
            if ch.lower().endswith("position"):
                loc[:, axis] += v
            else:
                R = R @ axis_rotation(axis, np.radians(v))
        if parents[j] < 0:
            P[:, j] = loc
            W[:, j] = R
        else:
            pj = parents[j]
            P[:, j] = P[:, pj] + np.einsum("tab,tb->ta", W[:, pj], loc)
            W[:, j] = W[:, pj] @ R
    return P
