"""The contract between data sources (synthetic, SPIN-format) and the trainer/evaluator.

A *sample* is a dict of numpy arrays with exactly these keys; a *batch* is the same dict
with a leading batch axis (``collate``). Conventions: camera frame OpenCV (x right, y down,
z forward); 2D points in crop-normalized coordinates ([-1, 1] over the 224 crop, as the
network's ``joints2d``); 3D joints in the camera's orientation WITHOUT translation (as the
network's ``joints3d``); rotation matrices act on column vectors.
"""
from __future__ import annotations

import numpy as np

CROP = 224
IUV_SIZE = 56

# key: (shape, dtype). Shapes exclude the batch axis.
SAMPLE_SPEC = {
    "image": ((CROP, CROP, 3), np.uint8),          # RGB crop (official preprocessing)
    "keypoints2d": ((49, 3), np.float32),           # x, y crop-normalized, confidence (0 = absent)
    "joints3d": ((49, 4), np.float32),              # x, y, z metres (camera axes, no translation), confidence
    "pose_rotmat": ((24, 3, 3), np.float32),        # SMPL pose, global orient first, camera frame
    "betas": ((10,), np.float32),
    "cam_crop": ((3,), np.float32),                 # (s, tx, ty) that reproduces keypoints2d
    "transl": ((3,), np.float32),                   # full-image translation (camera frame)
    "focal_px": ((), np.float32),                   # full-image focal length used to render
    "box": ((3,), np.float32),                      # crop box in the full image: cx, cy, side (px)
    "image_size": ((2,), np.float32),               # full image width, height (px)
    "iuv": ((3, IUV_SIZE, IUV_SIZE), np.float32),   # part index (0 = background, 1..24), U, V in [0, 1]
    "silhouette": ((IUV_SIZE, IUV_SIZE), np.uint8), # 1 where the body is visible (after occluders)
    "has_smpl": ((), np.float32),                   # 1 when pose/betas are ground truth
    "has_iuv": ((), np.float32),                    # 1 when iuv/silhouette are ground truth
}


def check_sample(sample: dict) -> None:
    """Raise ValueError naming every key whose presence, shape or dtype is off."""
    problems = []
    for key, (shape, dtype) in SAMPLE_SPEC.items():
        if key not in sample:
            problems.append(f"{key}: missing")
            continue
        a = np.asarray(sample[key])
        if a.shape != shape or a.dtype != dtype:
            problems.append(f"{key}: expected {shape} {np.dtype(dtype)}, got {a.shape} {a.dtype}")
    extra = sorted(set(sample) - set(SAMPLE_SPEC))
    if extra:
        problems.append(f"unexpected keys {extra}")
    if problems:
        raise ValueError("bad sample: " + "; ".join(problems))


def collate(samples: list) -> dict:
    """List of samples -> batch dict with a leading axis."""
    return {key: np.stack([np.asarray(s[key]) for s in samples]) for key in SAMPLE_SPEC}


def dataset_index(index: int, length: int) -> int:
    """Python-style index (negative from the end) checked against a dataset's length."""
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for {length} samples")
    return index
