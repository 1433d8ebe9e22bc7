"""SPIN-format datasets (``dataset_extras/*.npz`` + an image folder) as samples in the
contract of ``engine.data.sample``.

The ``.npz`` holds one row per person (plain arrays; loaded with ``allow_pickle=False``):

=========== ============ ==========================================================
key         shape        meaning
=========== ============ ==========================================================
imgname     (N,) str     image path relative to the image folder
center      (N, 2)       box centre (px)
scale       (N,)         box size / 200 (SPIN's convention): the crop side is scale*200
part        (N, 24, 3)   SPIN's 24 "GT" 2D joints (px) + visibility      (optional)
openpose    (N, 25, 3)   OpenPose BODY_25 joints (px) + confidence        (optional)
S           (N, 24, 4)   3D joints (m, camera axes, root-relative) + conf (optional)
pose        (N, 72)      SMPL axis-angle pose, global orient first        (optional)
shape       (N, 10)      SMPL betas                                       (optional)
has_smpl    (N,)         1 when pose/shape are ground truth               (optional)
=========== ============ ==========================================================

Mapping to a sample:

* image: ``preprocess.crop_person(image, center, scale * 200)`` (the official crop at
  scale 1.0 of a box of side scale*200; SPIN's own crop rounds the box to whole pixels,
  which this does not reproduce). No augmentation here.
* keypoints2d: [openpose (25) | part (24)] mapped into the crop as
  ``x_n = (u - cx) / (side / 2)``; the files' pixel coordinates are taken as they are
  (no half-pixel offset). Confidence: the file's (clipped to [0, 1]); 0 for a missing key.
* joints3d: [0 for the OpenPose 25 | S (24)], S's own confidence.
* pose_rotmat / betas / has_smpl from pose / shape / has_smpl (zeros and has_smpl 0 if
  absent).
* The crop camera, full-image translation and focal are not in these files: cam_crop,
  transl and focal_px are 0 (no ground truth; a trainer must not supervise them for
  these samples). box = (cx, cy, side), image_size = the image's (W, H).
* iuv / silhouette are zeros with has_iuv 0.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.common.camera import image_points_to_crop
from engine.common.rotations import axis_angle_to_rotmat
from engine.data.sample import IUV_SIZE, dataset_index
from engine.preprocess import crop_person

REQUIRED = ("imgname", "center", "scale")


class SpinDataset:
    """Map-style dataset over a SPIN-format ``.npz`` and its image folder."""

    def __init__(self, npz_path, image_dir):
        self.npz_path = Path(npz_path)
        self.image_dir = Path(image_dir)
        with np.load(self.npz_path, allow_pickle=False) as z:
            data = {k: np.asarray(z[k]) for k in z.files}
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{self.npz_path}: not a SPIN-format file (missing {missing})")
        self.data = data
        self.length = len(data["imgname"])

    def __len__(self) -> int:
        return self.length

    def _get(self, key, index, shape, default=0.0):
        if key in self.data:
            return np.asarray(self.data[key][index], np.float64).reshape(shape)
        return np.full(shape, default, np.float64)

    def __getitem__(self, index: int) -> dict:
        index = dataset_index(index, self.length)
        d = self.data
        path = self.image_dir / str(d["imgname"][index])
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path}")
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        h, w = rgb.shape[:2]
        center = np.asarray(d["center"][index], np.float64).reshape(2)
        side = float(np.asarray(d["scale"][index]).reshape(())) * 200.0

        openpose = self._get("openpose", index, (25, 3))
        part = self._get("part", index, (24, 3))
        kp_px = np.concatenate([openpose, part], axis=0)
        kp = image_points_to_crop(kp_px[:, :2], center, side)
        conf = np.clip(kp_px[:, 2], 0.0, 1.0)
        kp = np.where(conf[:, None] > 0, kp, 0.0)
        keypoints2d = np.concatenate([kp, conf[:, None]], axis=1)

        joints3d = np.zeros((49, 4))
        joints3d[25:] = self._get("S", index, (24, 4))

        has_smpl = float(np.asarray(d["has_smpl"][index]).reshape(())) if "has_smpl" in d else 0.0
        if "pose" in d:
            pose_rotmat = axis_angle_to_rotmat(np.asarray(d["pose"][index], np.float64).reshape(24, 3))
        else:
            pose_rotmat, has_smpl = np.broadcast_to(np.eye(3), (24, 3, 3)), 0.0
        betas = self._get("shape", index, (10,))
        if "shape" not in d:
            has_smpl = 0.0

        f32 = np.float32
        return {
            "image": crop_person(rgb, center, side),
            "keypoints2d": keypoints2d.astype(f32),
            "joints3d": joints3d.astype(f32),
            "pose_rotmat": np.asarray(pose_rotmat, f32),
            "betas": betas.astype(f32),
            "cam_crop": np.zeros(3, f32),
            "transl": np.zeros(3, f32),
            "focal_px": np.asarray(0.0, f32),
            "box": np.array([center[0], center[1], side], f32),
            "image_size": np.array([w, h], f32),
            "iuv": np.zeros((3, IUV_SIZE, IUV_SIZE), f32),
            "silhouette": np.zeros((IUV_SIZE, IUV_SIZE), np.uint8),
            "has_smpl": np.asarray(has_smpl, f32),
            "has_iuv": np.asarray(0.0, f32),
        }
