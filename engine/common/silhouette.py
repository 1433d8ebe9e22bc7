"""Silhouettes and 2D points between the engine's pixels and Blender's roto data (numpy only).

Used by the Blender extension's roto set-up (``pymaf_blender/blender/roto.py``, docs/roto.md)
and by the tests that check it. Never imports torch or bpy.

Coordinate systems:

* **pixels**: x right, y down, origin at the top-left image corner, pixel (col, row) covers
  [col, col + 1) x [row, row + 1), so its centre is (col + 0.5, row + 0.5). The engine's
  contours (``<stem>_contours.npz``) and projected keypoints use these.
* **normalised frame** (Blender's tracking markers, ``MovieTrackingMarker.co``, and
  ``world_to_camera_view``): u = x / W, v = 1 - y / H; (0, 0) bottom-left, (1, 1) top-right.
* **mask space** (``MaskSplinePoint.co``): the normalised frame squeezed along its shorter side
  so that a unit in x and a unit in y are the same number of pixels (Blender's
  ``BKE_mask_coord_from_frame``): for W >= H, x = u and y = (v - 0.5) H / W + 0.5; for W < H,
  x = (u - 0.5) W / H + 0.5 and y = v. The frame's centre is (0.5, 0.5) in every space.

Contours are closed polygons (N, 2) in pixels. The engine writes them clockwise on screen,
starting at the topmost point; ``resample_closed`` keeps the start, so a contour resampled to
the same count on every frame gives points that correspond from frame to frame (what mask
shape keys interpolate between).
"""
from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------- rasterising


def rasterize_polygon(points, height: int, width: int) -> np.ndarray:
    """Even-odd fill of a closed polygon. points (N, 2) pixel coordinates (x right, y down);
    -> (height, width) bool, True where the pixel's centre is inside.

    A pixel whose centre lies exactly on a left or top edge counts as inside, on a right or
    bottom edge as outside (the half-open rule: abutting polygons share no pixel). Points
    outside the image are fine (clipped)."""
    H, W = int(height), int(width)
    if H < 0 or W < 0:
        raise ValueError(f"image size must not be negative, got {W} x {H}")
    out = np.zeros((H, W), bool)
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"polygon points must be (N, 2), got {p.shape}")
    if len(p) < 3 or H == 0 or W == 0:
        return out
    if not np.all(np.isfinite(p)):
        raise ValueError("polygon points must be finite")
    x0, y0 = p[:, 0], p[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    keep = y0 != y1                               # horizontal edges cross no row centre
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    # rows r whose centre r + 0.5 is in [lo, hi): r in [ceil(lo - 0.5), ceil(hi - 0.5))
    r0 = np.clip(np.ceil(lo - 0.5), 0, H).astype(np.int64)
    r1 = np.clip(np.ceil(hi - 0.5), 0, H).astype(np.int64)
    n = np.maximum(r1 - r0, 0)
    total = int(n.sum())
    if total == 0:
        return out
    edge = np.repeat(np.arange(len(n)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    rows = r0[edge] + (np.arange(total) - first)
    yc = rows + 0.5
    t = (yc - y0[edge]) / (y1[edge] - y0[edge])
    xc = x0[edge] + t * (x1[edge] - x0[edge])
    # a crossing at x flips every pixel whose centre c + 0.5 >= x, i.e. c >= ceil(x - 0.5)
    cols = np.clip(np.ceil(xc - 0.5), 0, W).astype(np.int64)
    flips = np.zeros((H, W + 1), np.int32)
    np.add.at(flips, (rows, cols), 1)
    out[:] = (np.cumsum(flips, axis=1)[:, :W] & 1).astype(bool)
    return out


def iou(a, b) -> float:
    """Intersection over union of two bool masks of the same shape (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b)) / union


# --------------------------------------------------------------------------- polygons


def signed_area(points) -> float:
    """Shoelace area of a closed polygon (N, 2). In pixel coordinates (y down) it is positive
    for a polygon that runs clockwise on screen."""
    p = np.asarray(points, np.float64)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def topmost_first(points) -> np.ndarray:
    """The closed polygon rolled so that it starts at its topmost point (smallest y; the
    leftmost of equals)."""
    p = np.asarray(points, np.float64)
    k = int(np.lexsort((p[:, 0], p[:, 1]))[0])
    return np.roll(p, -k, axis=0)


def clockwise(points) -> np.ndarray:
    """The closed polygon running clockwise on screen (y down), same start point."""
    p = np.asarray(points, np.float64)
    if signed_area(p) < 0:
        p = np.concatenate([p[:1], p[:0:-1]])
    return p


def resample_closed(points, count: int) -> np.ndarray:
    """A closed polygon (N, 2) -> ``count`` points evenly spaced along its outline by arc
    length, the first one at ``points[0]``, same direction. Repeated points are harmless."""
    p = np.asarray(points, np.float64)
    count = int(count)
    if count < 3:
        raise ValueError(f"a closed outline needs at least 3 points, got {count}")
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 1:
        raise ValueError(f"polygon points must be (N, 2) with N >= 1, got {p.shape}")
    ring = np.concatenate([p, p[:1]])
    seg = np.linalg.norm(np.diff(ring, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    length = s[-1]
    if length <= 0:
        return np.repeat(p[:1], count, axis=0)
    want = np.arange(count) * (length / count)
    i = np.clip(np.searchsorted(s, want, side="right") - 1, 0, len(seg) - 1)
    step = np.where(seg[i] > 0, seg[i], 1.0)
    t = np.clip((want - s[i]) / step, 0.0, 1.0)[:, None]
    return ring[i] + t * (ring[i + 1] - ring[i])


def simplify_contour(points, count: int) -> np.ndarray:
    """The engine's contour (topmost first, clockwise) -> ``count`` points for a mask spline:
    the same outline resampled by arc length from the same start (unchanged when it already
    has ``count`` points), so the points of consecutive frames correspond."""
    p = np.asarray(points, np.float64)
    return p.copy() if len(p) == int(count) else resample_closed(p, count)


# --------------------------------------------------------------------------- coordinate spaces


def _size(width, height):
    W, H = float(width), float(height)
    if not (W > 0 and H > 0):
        raise ValueError(f"image size must be positive, got {width} x {height}")
    return W, H


def pixels_to_normalized(points, width, height) -> np.ndarray:
    """Pixels (..., 2) -> normalised frame (..., 2): (x / W, 1 - y / H), y up (markers)."""
    W, H = _size(width, height)
    p = np.asarray(points, np.float64)
    return np.stack([p[..., 0] / W, 1.0 - p[..., 1] / H], axis=-1)


def normalized_to_pixels(uv, width, height) -> np.ndarray:
    """Inverse of ``pixels_to_normalized``."""
    W, H = _size(width, height)
    q = np.asarray(uv, np.float64)
    return np.stack([q[..., 0] * W, (1.0 - q[..., 1]) * H], axis=-1)


def normalized_to_mask(uv, width, height) -> np.ndarray:
    """Normalised frame (..., 2) -> mask space (..., 2) (Blender's ``BKE_mask_coord_from_frame``)."""
    W, H = _size(width, height)
    q = np.array(uv, np.float64)
    if W > H:
        q[..., 1] = (q[..., 1] - 0.5) * (H / W) + 0.5
    elif W < H:
        q[..., 0] = (q[..., 0] - 0.5) * (W / H) + 0.5
    return q


def mask_to_normalized(co, width, height) -> np.ndarray:
    """Inverse of ``normalized_to_mask``."""
    W, H = _size(width, height)
    q = np.array(co, np.float64)
    if W > H:
        q[..., 1] = (q[..., 1] - 0.5) * (W / H) + 0.5
    elif W < H:
        q[..., 0] = (q[..., 0] - 0.5) * (H / W) + 0.5
    return q


def pixels_to_mask(points, width, height) -> np.ndarray:
    """Pixels (..., 2) -> mask space (..., 2)."""
    return normalized_to_mask(pixels_to_normalized(points, width, height), width, height)


def mask_to_pixels(co, width, height) -> np.ndarray:
    """Mask space (..., 2) -> pixels (..., 2)."""
    return normalized_to_pixels(mask_to_normalized(co, width, height), width, height)


# --------------------------------------------------------------------------- cameras and markers


def camera_intrinsics(lens_mm: float, sensor_width_mm: float, sensor_height_mm: float, sensor_fit: str,
                      shift_x: float, shift_y: float, width: int, height: int,
                      pixel_aspect: float = 1.0) -> tuple:
    """A Blender perspective camera's settings -> (focal_px, (cx, cy)) in pixels of a
    ``width`` x ``height`` render (square pixels). sensor_fit 'AUTO' fits the sensor width to
    the larger side, 'HORIZONTAL' to the width, 'VERTICAL' the sensor height to the height;
    shifts are fractions of that side. Inverse of ``blender_space.blender_camera``."""
    W, H = _size(width, height)
    if abs(float(pixel_aspect) - 1.0) > 1e-9:
        raise ValueError("non-square pixels are not supported")
    fit = str(sensor_fit)
    if fit == "AUTO":
        fit = "HORIZONTAL" if W >= H else "VERTICAL"
    if fit == "HORIZONTAL":
        side, sensor = W, float(sensor_width_mm)
    elif fit == "VERTICAL":
        side, sensor = H, float(sensor_height_mm)
    else:
        raise ValueError(f"unknown sensor fit {sensor_fit!r}")
    focal = float(lens_mm) * side / sensor
    return focal, (W / 2.0 - float(shift_x) * side, H / 2.0 + float(shift_y) * side)


def project_to_pixels(points_world, camera_matrix_world, focal_px: float, principal_point) -> np.ndarray:
    """World points (..., 3) -> pixels (..., 2) through a Blender camera object with
    ``matrix_world`` (4, 4) (its local axes: x right, y up, looking along -z) and the pinhole
    (``camera_intrinsics``). Points behind the camera come out mirrored: check depth first."""
    M = np.asarray(camera_matrix_world, np.float64).reshape(4, 4)
    inv = np.linalg.inv(M)
    p = np.asarray(points_world, np.float64) @ inv[:3, :3].T + inv[:3, 3]
    depth = -p[..., 2:3]
    cx, cy = (float(v) for v in principal_point)
    return np.concatenate([float(focal_px) * p[..., 0:1] / depth + cx,
                           -float(focal_px) * p[..., 1:2] / depth + cy], axis=-1)


def depth_in_front(points_world, camera_matrix_world) -> np.ndarray:
    """(...,) distance along the view direction of a Blender camera (positive: in front)."""
    M = np.asarray(camera_matrix_world, np.float64).reshape(4, 4)
    inv = np.linalg.inv(M)
    p = np.asarray(points_world, np.float64) @ inv[:3, :3].T + inv[:3, 3]
    return -p[..., 2]


def present_runs(frames) -> list:
    """Strictly increasing frame numbers -> [(first, last), ...] runs of consecutive frames."""
    f = np.asarray(frames, np.int64)
    if f.size == 0:
        return []
    cut = np.flatnonzero(np.diff(f) != 1)
    starts, ends = np.r_[0, cut + 1], np.r_[cut, len(f) - 1]
    return [(int(f[a]), int(f[b])) for a, b in zip(starts, ends)]


def disabled_marker_frames(frames, first: int, last: int) -> np.ndarray:
    """Frames where a track must be switched off so that it is off exactly where ``frames``
    (sorted Blender frames it has markers on) have none, within [first, last]: the frame
    before each run and the frame after it (Blender holds a marker until the next one)."""
    have = set(int(f) for f in np.asarray(frames, np.int64))
    off = set()
    for a, b in present_runs(sorted(have)):
        if a - 1 >= first and a - 1 not in have:
            off.add(a - 1)
        if b + 1 <= last and b + 1 not in have:
            off.add(b + 1)
    return np.array(sorted(off), np.int64)


def fill_short_gaps(frames, values, longest: int) -> tuple:
    """Sorted frames (T,) with values (T, ...) -> (frames, values) with every gap of at most
    ``longest`` missing frames filled by linear interpolation between its two neighbours."""
    f = np.asarray(frames, np.int64)
    v = np.asarray(values, np.float64)
    if f.size < 2 or longest < 1:
        return f.copy(), v.copy()
    out_f, out_v = [f[:1]], [v[:1]]
    for k in range(1, len(f)):
        a, b = f[k - 1], f[k]
        if 1 < b - a <= longest + 1:
            t = (np.arange(a + 1, b) - a) / float(b - a)
            t = t.reshape((-1,) + (1,) * (v.ndim - 1))
            out_f.append(np.arange(a + 1, b, dtype=np.int64))
            out_v.append(v[k - 1][None] + t * (v[k] - v[k - 1])[None])
        out_f.append(f[k:k + 1])
        out_v.append(v[k:k + 1])
    return np.concatenate(out_f), np.concatenate(out_v)


# --------------------------------------------------------------------------- the engine's contours file


def load_contours(path) -> dict:
    """Read ``<stem>_contours.npz`` (engine ``mattes``). -> {"width", "height", "people":
    {track id: (frames (n,) int64 Blender frames, points (n, N, 2) float64 pixels)}}.
    ValueError names what is wrong."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the contours file {path}: {exc}") from None
    with z:
        files = set(z.files)
        for key in ("width", "height", "ids"):
            if key not in files:
                raise ValueError(f"{path}: not a contours file (no {key!r})")
        W, H = int(z["width"]), int(z["height"])
        if W <= 0 or H <= 0:
            raise ValueError(f"{path}: image size {W} x {H} is not positive")
        people = {}
        for tid in [str(t) for t in np.atleast_1d(z["ids"]).tolist()]:
            fk, pk = f"{tid}/frames", f"{tid}/points"
            if fk not in files or pk not in files:
                raise ValueError(f"{path}: person {tid} lacks {fk!r} or {pk!r}")
            frames = np.asarray(z[fk], np.int64).reshape(-1)
            points = np.asarray(z[pk], np.float64)
            if points.ndim != 3 or points.shape[0] != len(frames) or points.shape[2] != 2 or \
                    (len(frames) and points.shape[1] < 3):
                raise ValueError(f"{path}: {pk} has shape {points.shape}, expected ({len(frames)}, N >= 3, 2)")
            if len(frames) > 1 and np.any(np.diff(frames) <= 0):
                raise ValueError(f"{path}: {fk} must be strictly increasing")
            if not np.all(np.isfinite(points)):
                raise ValueError(f"{path}: {pk} holds non-finite values")
            people[tid] = (frames, points)
    return {"width": W, "height": H, "people": people}
