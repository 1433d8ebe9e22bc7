"""Rotation conversions (numpy only; safe to import inside Blender).

Conventions, used by every function here:

* Rotation matrices act on column vectors: ``x' = R @ x``.
* Quaternions are ``(w, x, y, z)`` (Blender's order), unit norm. Functions that
  output quaternions return ``w >= 0`` unless stated otherwise.
* Axis-angle is ``unit_axis * angle`` in radians; outputs have angle in [0, pi].
* 6D is PyMAF's layout: the first two columns of R, flattened row-wise
  ``(R00, R01, R10, R11, R20, R21)``.

All functions are batched over leading dims ``(...)``. float32 in gives float32
out, float64 in gives float64 out; integer input is promoted to float64.
"""
import numpy as np

_NORM_EPS = 1e-12  # same floor as torch.nn.functional.normalize


def _as_float(x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x


def _normalize(v, eps=_NORM_EPS):
    """v (..., n) -> v / max(|v|, eps) along the last axis."""
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, eps).astype(v.dtype)


def rot6d_to_rotmat(x):
    """6D (..., 6) -> rotation matrix (..., 3, 3), PyMAF's Gram-Schmidt.

    Each 6-vector is read row-major as a 3x2 matrix [a1 | a2]; the result's columns
    are b1 = a1/|a1|, b2 = the part of a2 orthogonal to b1 (normalized), b3 = b1 x b2.
    """
    x = _as_float(x)
    m = x.reshape(x.shape[:-1] + (3, 2))
    a1, a2 = m[..., 0], m[..., 1]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def rotmat_to_rot6d(R):
    """Rotation matrix (..., 3, 3) -> 6D (..., 6): first two columns, row-wise."""
    R = _as_float(R)
    return R[..., :, :2].reshape(R.shape[:-2] + (6,))


def normalize_quat(q, eps=_NORM_EPS):
    """Quaternion (..., 4) -> unit quaternion (..., 4) (same sign)."""
    return _normalize(_as_float(q), eps)


def quat_conjugate(q):
    """Quaternion (..., 4) -> conjugate (w, -x, -y, -z); the inverse for unit q."""
    q = _as_float(q)
    return q * np.array([1, -1, -1, -1], dtype=q.dtype)


def quat_multiply(a, b):
    """Hamilton product a * b of (..., 4) quaternions: rotate by b, then by a."""
    a, b = _as_float(a), _as_float(b)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_to_rotmat(q):
    """Quaternion (..., 4), any norm -> rotation matrix (..., 3, 3)."""
    w, x, y, z = np.moveaxis(normalize_quat(q), -1, 0)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def rotmat_to_quat(R):
    """Rotation matrix (..., 3, 3) -> unit quaternion (..., 4) with w >= 0.

    Shepperd's method: of the four algebraically equal formulas, use the one whose
    square root argument (4w^2, 4x^2, 4y^2 or 4z^2) is largest, so it never divides
    by a small number (stable near 0 and near pi).
    """
    R = _as_float(R)
    r00, r01, r02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    r10, r11, r12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    r20, r21, r22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # Each candidate row is proportional to q: (4w^2, 4wx, 4wy, 4wz), (4wx, 4x^2, ...), ...
    cands = np.stack([
        np.stack([1 + r00 + r11 + r22, r21 - r12, r02 - r20, r10 - r01], axis=-1),
        np.stack([r21 - r12, 1 + r00 - r11 - r22, r01 + r10, r02 + r20], axis=-1),
        np.stack([r02 - r20, r01 + r10, 1 - r00 + r11 - r22, r12 + r21], axis=-1),
        np.stack([r10 - r01, r02 + r20, r12 + r21, 1 - r00 - r11 + r22], axis=-1),
    ], axis=-2)
    diag = np.diagonal(cands, axis1=-2, axis2=-1)
    best = np.argmax(diag, axis=-1)[..., None, None]
    q = np.take_along_axis(cands, best, axis=-2)[..., 0, :]
    q = normalize_quat(q)  # replaces the 1/(2 sqrt(.)) scale; also absorbs slight non-orthogonality
    return np.where(q[..., :1] < 0, -q, q)


def axis_angle_to_quat(aa):
    """Axis-angle (..., 3) -> unit quaternion (..., 4); w < 0 when the angle exceeds pi."""
    aa = _as_float(aa)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    # sin(angle/2)/angle written with np.sinc so angle = 0 is exact.
    k = (0.5 * np.sinc(angle / (2 * np.pi))).astype(aa.dtype)
    return np.concatenate([np.cos(angle / 2), aa * k], axis=-1)


def quat_to_axis_angle(q):
    """Quaternion (..., 4), any norm -> axis-angle (..., 3), angle in [0, pi]."""
    q = normalize_quat(q)
    q = np.where(q[..., :1] < 0, -q, q)  # q and -q are the same rotation; w >= 0 keeps angle <= pi
    w, v = q[..., :1], q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2 * np.arctan2(s, w)
    tiny = np.finfo(q.dtype).eps ** 2
    big = s > tiny
    # angle/s -> 2/w as s -> 0 (relative error ~s^2); w > 0 whenever s is small.
    k = np.where(big, angle / np.where(big, s, 1), 2 / np.where(big, 1, w))
    return v * k


def axis_angle_to_rotmat(aa):
    """Axis-angle (..., 3) -> rotation matrix (..., 3, 3)."""
    return quat_to_rotmat(axis_angle_to_quat(aa))


def rotmat_to_axis_angle(R):
    """Rotation matrix (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi].

    Goes through the quaternion, which stays accurate near 0 and at pi (where the
    textbook acos/trace formula loses the axis). At exactly pi the sign of the axis
    is arbitrary: both signs are the same rotation.
    """
    return quat_to_axis_angle(rotmat_to_quat(R))


def quat_make_continuous(q, axis=0):
    """Flip quaternion signs along a time axis so neighbours have dot >= 0.

    q (..., 4) with time on ``axis`` (not the last). Returns the same rotations with
    no sign jumps, which Blender needs to interpolate keyframes the short way.
    """
    q = _as_float(q)
    axis = axis % q.ndim
    if axis == q.ndim - 1:
        raise ValueError("axis must be a time axis, not the quaternion axis")
    qt = np.moveaxis(q, axis, 0)
    if qt.shape[0] < 2:
        return q.copy()
    dots = np.sum(qt[1:] * qt[:-1], axis=-1, keepdims=True)
    step = np.where(dots < 0, -1, 1).astype(q.dtype)
    # Frame t is flipped iff an odd number of sign changes precede it.
    sign = np.concatenate([np.ones_like(step[:1]), np.cumprod(step, axis=0)], axis=0)
    return np.moveaxis(qt * sign, 0, axis)
