"""Small, self-consistent fake samples of the data contract (engine.data.sample), made from
a body model without any renderer: random poses and shapes through the SMPL layer, 2D
keypoints projected with the crop camera, and an image / IUV map / silhouette made by
splatting the projected vertices (z-buffered), labelled with the body's ``vertex_parts``
/ ``vertex_uv`` (or, without them, the vertex's main skinning joint). Deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.body.smpl_torch import SMPL
from engine.common.rotations import axis_angle_to_rotmat
from engine.data.sample import CROP, IUV_SIZE, check_sample, collate
from engine.model.geometry import crop_cam_to_crop_translation, project_to_crop

FLIP_X = np.diag([1.0, -1.0, -1.0])  # SMPL's y-up body upright in the OpenCV camera frame


def _splat(points_norm: np.ndarray, depth: np.ndarray, size: int, radius: int):
    """Nearest-surface index per pixel: (size, size) int, -1 where empty."""
    px = np.round((points_norm + 1.0) * 0.5 * size - 0.5).astype(np.int64)
    index = np.full((size, size), -1, np.int64)
    zbuf = np.full((size, size), np.inf)
    order = np.argsort(-depth)  # far first, near overwrite
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            x, y = px[order, 0] + dx, px[order, 1] + dy
            ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            xs, ys, ids = x[ok], y[ok], order[ok]
            closer = depth[ids] < zbuf[ys, xs]
            index[ys[closer], xs[closer]] = ids[closer]
            zbuf[ys[closer], xs[closer]] = depth[ids[closer]]
    return index


def fake_samples(body, count: int, seed: int = 0, *, has_smpl: float = 1.0, has_iuv: float = 1.0) -> list:
    """``count`` contract samples (dicts of numpy arrays) of random bodies."""
    rng = np.random.default_rng(seed)
    smpl = SMPL(body, batch_size=1)
    aa = rng.normal(0.0, 0.25, size=(count, 24, 3))
    yaw = rng.uniform(-0.6, 0.6, size=count)
    rotmat = axis_angle_to_rotmat(aa)
    for i in range(count):
        c, s = np.cos(yaw[i]), np.sin(yaw[i])
        rotmat[i, 0] = FLIP_X @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    betas = np.clip(rng.normal(0.0, 0.7, size=(count, 10)), -2, 2)
    cam = np.stack([rng.uniform(0.75, 1.0, count), rng.uniform(-0.1, 0.1, count),
                    rng.uniform(-0.1, 0.1, count)], axis=1)
    with torch.no_grad():
        r = torch.as_tensor(rotmat, dtype=torch.float32)
        b = torch.as_tensor(betas, dtype=torch.float32)
        posed = smpl.pose(r, b)
        c = torch.as_tensor(cam, dtype=torch.float32)
        verts2d = project_to_crop(posed.vertices, c).numpy()
        joints2d = project_to_crop(posed.joints49, c).numpy()
        transl = crop_cam_to_crop_translation(c).numpy()
    vertices = posed.vertices.numpy()
    if body.vertex_parts is not None:                                      # the IUV labels
        part_of_vertex = np.asarray(body.vertex_parts, np.int64)
        uv_of_vertex = np.asarray(body.vertex_uv, np.float32)
    else:                                                                  # main skinning joint
        part_of_vertex = body.weights.argmax(axis=1) + 1
        rest = body.v_template
        uv_of_vertex = (rest[:, :2] - rest[:, :2].min(0)) / np.ptp(rest[:, :2], axis=0)
    colours = np.random.default_rng(1234).integers(40, 255, size=(25, 3))

    samples = []
    for i in range(count):
        depth = vertices[i, :, 2] + transl[i, 2]
        big = _splat(verts2d[i], depth, CROP, radius=2)
        small = _splat(verts2d[i], depth, IUV_SIZE, radius=0)
        noise = rng.integers(0, 60, size=(CROP, CROP, 3))
        image = np.where(big[..., None] >= 0, colours[part_of_vertex[np.maximum(big, 0)]], noise)
        iuv = np.zeros((3, IUV_SIZE, IUV_SIZE), np.float32)
        fg = small >= 0
        iuv[0][fg] = part_of_vertex[small[fg]]
        iuv[1][fg] = uv_of_vertex[small[fg], 0]
        iuv[2][fg] = uv_of_vertex[small[fg], 1]
        sample = {
            "image": image.astype(np.uint8),
            "keypoints2d": np.concatenate([joints2d[i], np.ones((49, 1))], 1).astype(np.float32),
            "joints3d": np.concatenate([posed.joints49[i].numpy(), np.ones((49, 1))], 1).astype(np.float32),
            "pose_rotmat": rotmat[i].astype(np.float32),
            "betas": betas[i].astype(np.float32),
            "cam_crop": cam[i].astype(np.float32),
            "transl": transl[i].astype(np.float32),
            "focal_px": np.float32(5000.0),
            "box": np.array([CROP / 2, CROP / 2, CROP], np.float32),
            "image_size": np.array([CROP, CROP], np.float32),
            "iuv": iuv,
            "silhouette": fg.astype(np.uint8),
            "has_smpl": np.float32(has_smpl),
            "has_iuv": np.float32(has_iuv),
        }
        check_sample(sample)
        samples.append(sample)
    return samples


def fake_batch(body, count: int, seed: int = 0, **kwargs) -> dict:
    """Collated numpy batch (leading axis ``count``)."""
    return collate(fake_samples(body, count, seed, **kwargs))


class FakeDataset:
    """A fixed list of fake samples with the dataset interface the trainer streams from."""

    def __init__(self, body, count: int, seed: int = 0):
        self.samples = fake_samples(body, count, seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


__all__ = ["fake_samples", "fake_batch", "FakeDataset"]
