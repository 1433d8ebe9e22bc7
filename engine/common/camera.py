"""Camera conversions between PyMAF's crop camera and the full image (numpy only).

Conventions, used by every function here:

* Camera frame is OpenCV's: x right, y down, z forward. Points given to a camera
  are already in camera axes (rotation = identity); only a translation is added.
* Pixel coordinates have their origin at the corner of the top-left pixel, as in
  the official crop (``x' = 112 + (x - cx) * 224 / h``): no half-pixel offset.
* Crop camera ``cam = (s, tx, ty)`` is weak perspective in the square crop:
  normalized crop coords (crop edges at -1 and +1) ``x_n ~ s * (X + tx)``.
  PyMAF uses it as a perspective camera with focal 5000 px in a 224 px crop.
* A box is ``box_center (cx, cy)`` in image pixels and ``box_size`` h, the side of
  the square crop in image pixels (PyMAF's bbox scale is 1.0).
* ``image_size`` is ``(W, H)``; the full-image principal point is its centre.

All functions broadcast over leading dims ``(...)``.
"""
import numpy as np

FOCAL_LENGTH = 5000.0  # official constants.FOCAL_LENGTH, in crop pixels
CROP_RES = 224
_DEPTH_EPS = 1e-9  # the official guard against s = 0


def _as_float(x):
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x


def crop_cam_to_crop_translation(cam, focal_px=FOCAL_LENGTH, crop_res=CROP_RES):
    """Crop camera (..., 3) -> translation (..., 3) for the perspective crop camera.

    t = (tx, ty, 2 f / (crop_res * s)): the depth at which a perspective camera of
    focal f sees the crop with the weak-perspective scale s.
    """
    cam = _as_float(cam)
    s, tx, ty = cam[..., 0], cam[..., 1], cam[..., 2]
    tz = 2 * focal_px / (crop_res * s + _DEPTH_EPS)
    return np.stack([tx, ty, tz], axis=-1)


def crop_cam_to_full_translation(cam, box_center, box_size, image_size, focal_px=FOCAL_LENGTH):
    """Crop camera (..., 3) + box -> full-image camera translation (..., 3).

    box_center (..., 2), box_size (...), image_size (W, H) or (..., 2).
    T = (tx + 2 (cx - W/2) / (s h), ty + 2 (cy - H/2) / (s h), 2 f / (s h)) for a
    camera of focal ``focal_px`` (image pixels) with principal point at the image
    centre. focal 5000 reproduces the official demo; any focal gives the same overlay
    in the weak-perspective limit, only Tz changes.
    """
    cam = _as_float(cam)
    box_center, box_size, image_size = _as_float(box_center), _as_float(box_size), _as_float(image_size)
    s, tx, ty = cam[..., 0], cam[..., 1], cam[..., 2]
    sh = s * box_size + _DEPTH_EPS
    return np.stack([
        tx + 2 * (box_center[..., 0] - image_size[..., 0] / 2) / sh,
        ty + 2 * (box_center[..., 1] - image_size[..., 1] / 2) / sh,
        2 * focal_px / sh,
    ], axis=-1)


def full_translation_to_crop_cam(translation, box_center, box_size, image_size, focal_px=FOCAL_LENGTH):
    """Full-image translation (..., 3) + box -> crop camera (..., 3).

    Exact inverse of :func:`crop_cam_to_full_translation` (same arguments).
    """
    T = _as_float(translation)
    box_center, box_size, image_size = _as_float(box_center), _as_float(box_size), _as_float(image_size)
    sh = 2 * focal_px / T[..., 2]  # = s*h + eps
    return np.stack([
        (sh - _DEPTH_EPS) / box_size,
        T[..., 0] - 2 * (box_center[..., 0] - image_size[..., 0] / 2) / sh,
        T[..., 1] - 2 * (box_center[..., 1] - image_size[..., 1] / 2) / sh,
    ], axis=-1)


def perspective_project(points, translation, focal_px, principal_point=None):
    """Camera-axis points (..., N, 3) -> pixels (..., N, 2).

    u = f (X + tx) / (Z + tz) + cx, same for v. translation (..., 3), focal_px scalar
    or (...), principal_point (..., 2) or None for (0, 0).
    """
    points, translation = _as_float(points), _as_float(translation)
    p = points + translation[..., None, :]
    # A plain scalar focal must not upcast float32 points.
    focal = float(focal_px) if np.ndim(focal_px) == 0 else _as_float(focal_px)[..., None, None]
    uv = focal * p[..., :2] / p[..., 2:]
    if principal_point is not None:
        uv = uv + _as_float(principal_point)[..., None, :]
    return uv


def crop_points_to_image(points_crop_norm, box_center, box_size):
    """Normalized crop coords (..., N, 2) in [-1, 1] -> image pixels (..., N, 2).

    x = cx + u * h / 2: the crop's edges (not its edge pixel centres) sit at -1, +1.
    """
    uv = _as_float(points_crop_norm)
    half = _as_float(box_size)[..., None, None] / 2
    return _as_float(box_center)[..., None, :] + uv * half


def image_points_to_crop(points_px, box_center, box_size):
    """Image pixels (..., N, 2) -> normalized crop coords (..., N, 2); inverse of the above."""
    xy = _as_float(points_px)
    half = _as_float(box_size)[..., None, None] / 2
    return (xy - _as_float(box_center)[..., None, :]) / half


def focal_from_fov(fov_deg, width_px):
    """Horizontal field of view in degrees -> focal length in pixels."""
    return (np.asarray(width_px) / 2) / np.tan(np.radians(fov_deg) / 2)


def fov_from_focal(focal_px, width_px):
    """Focal length in pixels -> horizontal field of view in degrees."""
    return np.degrees(2 * np.arctan((np.asarray(width_px) / 2) / np.asarray(focal_px)))
