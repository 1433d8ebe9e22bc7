"""Synthetic labelled people: the body model rendered in random poses, shapes, clothes,
cameras and scenes, cropped exactly as the official demo crops (``engine.preprocess``).

``SyntheticPeople(length, seed)`` is a map-style dataset: ``dataset[i]`` is a sample dict
(``engine.data.sample.SAMPLE_SPEC``), the same every time for the same (seed, i, config,
body), independent of call order (each index draws from its own
``SeedSequence([seed, i])``).

How one sample is made
----------------------
1. Pose: 70% ``poses.random_pose`` (mild to strong, within the joint limits), 30% a
   random frame of a procedural motion (walk, turn, reach, crouch, kick). Betas
   N(0, 1) clipped to +-3.
2. Global orientation (camera frame): ``R_tilt @ Rx(180 deg) @ Ry(yaw)``. Rx(180) turns
   SMPL's y-up, +z-facing body upright and facing the camera (OpenCV frame, y down);
   yaw is N(0, 25 deg) for 55% of samples and uniform over the circle otherwise (plus
   the motion's own heading); R_tilt is a small camera pitch / roll (N(0, 8) / N(0, 4) deg).
3. Camera: image size from ``IMAGE_SIZES``; focal from a horizontal field of view
   uniform in 30-70 deg; principal point at the image centre (``camera.py``).
4. Placement: the posed mesh's extent is scaled to 30-95% of the image (the tighter of
   width and height) by choosing the depth; the box centre goes anywhere the box stays
   inside the image, or (25% of samples) up to 30% of it outside (truncation). Rejected
   and redrawn (same generator, so still deterministic) when under half the vertices
   project inside the image.
5. Render (``engine.render.renderer``): procedural clothing colours, light direction and
   exposure, a procedural or photo background (``appearance``). Outputs: colour, body
   mask, DensePose part id, UV.
6. Occluders (30% of samples, 1-2): textured shapes drawn over the person; the covered
   pixels are removed from the mask / part / UV labels (labels = VISIBLE body only;
   keypoint confidence is unchanged, see below).
7. Detector-like box: the tight box of the rendered body mask (before occluders, clipped
   to the image, as a detector sees the person), jittered (size x U(0.9, 1.1), aspect
   x exp(U(-0.1, 0.1)), centre +-5% of the size), squared to side max(w, h)
   (``preprocess.square_box``), and cropped to 224 with ``preprocess.crop_person``.
   Photometric camera noise (``appearance.photometric``) is applied to the crop, and
   the crop's black border (outside the image) is kept black.

Labels
------
* keypoints2d: the 49 joints + transl projected with (focal, image centre) to image
  pixels, mapped into the crop: ``x_n = (u - cx) / (side / 2)``. Confidence 1 when the
  projection is inside the image ([0, W) x [0, H)), 0 outside or when the joint is NaN
  (a body without ``J_regressor_extra``; its coordinates are then 0). Occluded joints
  keep confidence 1: their positions are exact, only their pixels are hidden.
* joints3d: the 49 joints in camera axes without translation, confidence 1 (0 if NaN).
* pose_rotmat: [global orientation (camera frame), body pose]; betas; transl (full-image
  camera translation, ``vertices_cam = SMPL(pose, betas) + transl``); focal_px; box
  (cx, cy, side); image_size (W, H).
* cam_crop = ``camera.full_translation_to_crop_cam(transl, box centre, side, image_size,
  focal)``: exact inverse of the demo's crop -> full conversion with this sample's focal,
  so it reproduces keypoints2d in the weak-perspective sense (``x_n ~ s (X + tx)``), the
  same approximation PyMAF's crop camera makes.
* iuv (3, 56, 56) and silhouette (56, 56): the full-resolution part / UV renders (after
  occluders) sampled at the CENTRES of the 56 x 56 label cells, nearest neighbour: cell
  (r, c) covers the crop pixels [4c, 4c + 4) x [4r, 4r + 4), whose centre maps to the
  image point ``(cx + ((c + 0.5) / 28 - 1) side / 2, cy + ((r + 0.5) / 28 - 1) side / 2)``
  (pixel origin at the image's top-left corner, as in ``camera.py`` and the renderer).
  Part 0 = background (also outside the image); U, V are 0 wherever part is 0;
  silhouette = (part > 0), so the IUV foreground equals the silhouette exactly.

Caching: with ``cache_dir`` the samples are stored in shards of ``shard_size`` samples
(``<cache_dir>/synthetic-<fingerprint>-<shard>.npz``; plain arrays, loaded with
``allow_pickle=False``). The fingerprint covers the generator version, seed, shard size,
config and body, so a changed setting never reads stale data (not the length: sample i
does not depend on it, so datasets of different lengths share shards). A missing shard is
generated (whole) on first access; ``write_cache()`` generates them all up front.

Workers: the renderer holds an EGL context per process, and a forked child of a process
that already rendered hangs in GL (``engine.render.renderer`` raises instead). Give
DataLoader workers a dataset that has not rendered yet in the parent, or use the
'spawn' start method, or pre-generate the cache (reading shards needs no GL).

Command line::

    python -m engine.data.synthetic --bench [--count N]
    python -m engine.data.synthetic --preview OUT.png --seed 0 --count 16
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from engine.common.camera import (
    focal_from_fov,
    full_translation_to_crop_cam,
    image_points_to_crop,
    perspective_project,
)
from engine.common.rotations import axis_angle_to_rotmat
from engine.common.atomic import atomic_file
from engine.data import appearance, poses
from engine.data.sample import CROP, IUV_SIZE, SAMPLE_SPEC, check_sample, collate, dataset_index
from engine.preprocess import crop_person, square_box

GENERATOR_VERSION = 1

#: (width, height) choices and their weights.
IMAGE_SIZES = ((640, 480), (480, 640), (640, 360), (512, 512), (480, 360), (360, 480))
IMAGE_SIZE_WEIGHTS = (0.3, 0.2, 0.15, 0.15, 0.1, 0.1)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Generator settings (all probabilities per sample)."""

    fov_deg: tuple = (30.0, 70.0)            # horizontal field of view range
    person_fraction: tuple = (0.3, 0.95)     # person extent / image extent (tighter axis)
    truncation_prob: float = 0.25            # allow the person box to leave the image
    max_truncation: float = 0.3              # ... by up to this fraction of its size
    motion_prob: float = 0.3                 # pose from a procedural motion (else random_pose)
    facing_prob: float = 0.55                # yaw ~ N(0, facing_yaw_deg), else uniform
    facing_yaw_deg: float = 25.0
    pitch_deg: float = 8.0                   # camera pitch / roll standard deviations
    roll_deg: float = 4.0
    occluder_prob: float = 0.3
    box_scale_jitter: float = 0.1            # detector box: size x U(1 - j, 1 + j)
    box_aspect_jitter: float = 0.1           # aspect x exp(U(-j, j))
    box_shift_jitter: float = 0.05           # centre +- j * size
    photometric: bool = True


# ----------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------
def _rot_x(a):
    return axis_angle_to_rotmat(np.array([a, 0.0, 0.0]))


def _rot_y(a):
    return axis_angle_to_rotmat(np.array([0.0, a, 0.0]))


def _rot_z(a):
    return axis_angle_to_rotmat(np.array([0.0, 0.0, a]))


def label_cell_centres(box_center, box_size, size: int = IUV_SIZE) -> tuple:
    """Image-pixel coordinates (x (size,), y (size,)) of the centres of the label cells
    of a ``size`` x ``size`` grid over the crop box (pixel origin = image corner)."""
    n = (np.arange(size) + 0.5) / (size / 2) - 1.0       # normalized crop coords of cell centres
    half = float(box_size) / 2
    return float(box_center[0]) + n * half, float(box_center[1]) + n * half


def sample_label_maps(part: np.ndarray, uv: np.ndarray, box_center, box_size, size: int = IUV_SIZE) -> tuple:
    """Full-image part (H, W) uint8 and uv (H, W, 2) -> (iuv (3, size, size) float32,
    silhouette (size, size) uint8), nearest neighbour at the label cell centres."""
    h, w = part.shape
    xs, ys = label_cell_centres(box_center, box_size, size)
    cols, rows = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    vx, vy = (cols >= 0) & (cols < w), (rows >= 0) & (rows < h)
    cc, rr = np.clip(cols, 0, w - 1), np.clip(rows, 0, h - 1)
    inside = vy[:, None] & vx[None, :]
    p = np.where(inside, part[rr[:, None], cc[None, :]], 0).astype(np.uint8)
    fg = p > 0
    uvs = np.where(fg[..., None], uv[rr[:, None], cc[None, :]], 0.0)
    iuv = np.stack([p.astype(np.float32), uvs[..., 0].astype(np.float32), uvs[..., 1].astype(np.float32)])
    return iuv, fg.astype(np.uint8)


def mask_box(mask: np.ndarray):
    """(H, W) bool -> tight box (x0, y0, x1, y1) in pixel-corner coordinates, or None."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(xs) == 0:
        return None
    return float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)


def _body_fingerprint(body) -> str:
    h = hashlib.sha1()
    for a in (body.v_template, body.faces, body.weights, body.shapedirs, body.J_regressor,
              body.vertex_parts, body.vertex_uv, body.J_regressor_extra):
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


# ----------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------
def keypoint_labels(joints49, transl, focal: float, centre, side: float, image_size) -> tuple:
    """The keypoint labels of a body (see the module notes): its 49 joints (49, 3) in camera
    axes without translation, at ``transl`` (3,) before a camera of ``focal`` px with the
    principal point at the centre of an image ``image_size`` (W, H), cropped at the square box
    (``centre`` (2,), ``side``). -> keypoints2d (49, 3), joints3d (49, 4), cam_crop (3,),
    joints_px (49, 2) image pixels; float64."""
    width, height = float(image_size[0]), float(image_size[1])
    joints_px = perspective_project(joints49, transl, focal, np.array([width / 2, height / 2]))
    finite = np.all(np.isfinite(joints49), axis=1)
    inside = finite & (joints_px[:, 0] >= 0) & (joints_px[:, 0] < width) & \
        (joints_px[:, 1] >= 0) & (joints_px[:, 1] < height)
    kp = image_points_to_crop(np.where(finite[:, None], joints_px, 0.0), centre, side)
    kp = np.where(finite[:, None], kp, 0.0)
    keypoints2d = np.concatenate([kp, inside[:, None].astype(np.float64)], axis=1)
    joints3d = np.concatenate([np.where(finite[:, None], joints49, 0.0), finite[:, None].astype(np.float64)], axis=1)
    cam_crop = full_translation_to_crop_cam(transl, centre, side, np.array([width, height]), focal)
    return keypoints2d, joints3d, cam_crop, joints_px


def detector_like_box(rng, box_xyxy, scale_jitter: float, aspect_jitter: float, shift_jitter: float) -> np.ndarray:
    """Box (x0, y0, x1, y1) -> a jittered square box (cx, cy, side): size x U(1 -+ scale),
    aspect x exp(U(-+ aspect)), centre +- shift x the larger side (a detector's variation)."""
    x0, y0, x1, y1 = box_xyxy
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    s = rng.uniform(1 - scale_jitter, 1 + scale_jitter)
    a = np.exp(rng.uniform(-aspect_jitter, aspect_jitter))
    w2, h2 = w * s * a, h * s / a
    size = max(w, h)
    cx += rng.uniform(-shift_jitter, shift_jitter) * size
    cy += rng.uniform(-shift_jitter, shift_jitter) * size
    return square_box(np.array([cx - w2 / 2, cy - h2 / 2, w2, h2]))


class SyntheticPeople:
    """Map-style dataset of synthetic labelled people (see the module notes).

    length: number of samples; seed: base seed; body: a ``BodyModelData`` (default: the
    mannequin); its ``vertex_parts`` / ``vertex_uv`` are taken from the body or, if
    absent, from ``engine.render.surface.mannequin_surface``. cache_dir: shard folder
    (None: generate on every access); shard_size: samples per shard.
    """

    def __init__(self, length: int = 10000, seed: int = 0, body=None, config: Optional[SyntheticConfig] = None,
                 cache_dir=None, shard_size: int = 64):
        if body is None:
            from engine.body.mannequin import build_mannequin

            body = build_mannequin()
        if body.vertex_parts is None or body.vertex_uv is None:
            from engine.render.surface import with_surface

            body = with_surface(body)
        self.body = body
        self.length = int(length)
        self.seed = int(seed)
        self.config = config or SyntheticConfig()
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.shard_size = int(shard_size)
        self.rest_vertices = np.asarray(body.v_template, np.float64)
        self._smpl = None
        self._renderers = {}
        self._shard = (None, None)   # (shard index, arrays)

    # -- pickling (DataLoader workers): no GL objects or torch modules travel ------------
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_smpl"], state["_renderers"], state["_shard"] = None, {}, (None, None)
        return state

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        index = dataset_index(index, self.length)
        if self.cache_dir is None:
            return self.generate(index)
        shard = index // self.shard_size
        arrays = self._load_shard(shard)
        k = index - shard * self.shard_size
        return {key: np.array(arrays[key][k]) for key in SAMPLE_SPEC}

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers = {}

    # -- model and renderers -----------------------------------------------------------
    @property
    def smpl(self):
        if self._smpl is None:
            from engine.body.smpl_torch import SMPL

            self._smpl = SMPL(self.body).eval()
        return self._smpl

    def renderer(self, width: int, height: int):
        key = (int(width), int(height))
        if key not in self._renderers:
            from engine.render.renderer import Renderer

            self._renderers[key] = Renderer(width, height, self.body.faces, self.body.vertex_parts,
                                            self.body.vertex_uv, max_tiles=1)
        return self._renderers[key]

    def pose_body(self, rotmat: np.ndarray, betas: np.ndarray) -> tuple:
        """(24, 3, 3), (10,) -> vertices (V, 3), joints49 (49, 3) float64, camera axes, no transl."""
        import torch

        # One body is far too small for torch's thread pool: with several threads on a
        # busy machine a forward takes ~50 ms instead of ~3 ms. Run it on one thread and
        # restore the caller's setting (only speed depends on this, never results).
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            with torch.no_grad():
                out = self.smpl.pose(torch.as_tensor(rotmat[None], dtype=torch.float32),
                                     torch.as_tensor(betas[None], dtype=torch.float32))
        finally:
            torch.set_num_threads(threads)
        return out.vertices[0].double().numpy(), out.joints49[0].double().numpy()

    # -- generation ----------------------------------------------------------------------
    def _rngs(self, index: int):
        ss = np.random.SeedSequence([self.seed, index])
        return [np.random.default_rng(s) for s in ss.spawn(6)]

    def sample_body(self, rng) -> tuple:
        """-> (pose_rotmat (24, 3, 3) camera-frame global orient + body pose, betas (10,))."""
        cfg = self.config
        yaw = 0.0
        if rng.random() < cfg.motion_prob:
            name = poses.MOTIONS[rng.integers(len(poses.MOTIONS))]
            m = poses.motion(name, 60, rng)
            k = int(rng.integers(60))
            body_pose, yaw = m.poses[k], float(m.yaw[k])
        else:
            body_pose = poses.random_pose(rng)
        if rng.random() < cfg.facing_prob:
            yaw += np.radians(rng.normal(0.0, cfg.facing_yaw_deg))
        else:
            yaw += rng.uniform(-np.pi, np.pi)
        tilt = _rot_x(np.radians(rng.normal(0.0, cfg.pitch_deg))) @ _rot_z(np.radians(rng.normal(0.0, cfg.roll_deg)))
        rotmat = np.array(body_pose, np.float64)
        rotmat[0] = tilt @ _rot_x(np.pi) @ _rot_y(yaw)
        betas = np.clip(rng.normal(size=10), -3.0, 3.0)
        return rotmat, betas

    def sample_camera(self, rng) -> tuple:
        """-> (width, height, focal_px)."""
        k = rng.choice(len(IMAGE_SIZES), p=np.asarray(IMAGE_SIZE_WEIGHTS) / sum(IMAGE_SIZE_WEIGHTS))
        w, h = IMAGE_SIZES[k]
        fov = rng.uniform(*self.config.fov_deg)
        return w, h, float(focal_from_fov(fov, w))

    def place(self, rng, vertices: np.ndarray, width: int, height: int, focal: float) -> np.ndarray:
        """A translation putting the posed mesh in frame (see the module notes, step 4)."""
        cfg = self.config
        lo, hi = vertices.min(0), vertices.max(0)
        mid, ext = (lo + hi) / 2, hi - lo
        for _attempt in range(20):
            frac = rng.uniform(*cfg.person_fraction)
            z = focal * max(ext[0] / width, ext[1] / height) / frac + ext[2] / 2
            bw, bh = focal * ext[0] / z, focal * ext[1] / z
            t = rng.uniform(0, cfg.max_truncation) if rng.random() < cfg.truncation_prob else 0.0
            u = rng.uniform(bw / 2 - t * bw, width - bw / 2 + t * bw)
            v = rng.uniform(bh / 2 - t * bh, height - bh / 2 + t * bh)
            transl = np.array([(u - width / 2) * z / focal - mid[0], (v - height / 2) * z / focal - mid[1], z - mid[2]])
            p = vertices + transl
            if p[:, 2].min() < 0.2:
                continue
            uv = perspective_project(vertices, transl, focal, (width / 2, height / 2))
            inside = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
            if inside.mean() >= 0.5:
                return transl
        return transl

    def jitter_box(self, rng, box_xyxy) -> np.ndarray:
        """Tight box -> detector-like square box (cx, cy, side)."""
        cfg = self.config
        return detector_like_box(rng, box_xyxy, cfg.box_scale_jitter, cfg.box_aspect_jitter, cfg.box_shift_jitter)

    def generate(self, index: int) -> dict:
        """Sample ``index`` (no cache)."""
        sample, _ = self.generate_full(index)
        return sample

    def generate_full(self, index: int) -> tuple:
        """-> (sample, extras) where extras holds the full-image render for inspection:
        rgb (H, W, 3), mask (visible body), part, uv, occluder mask, vertices (camera frame,
        translated), joints2d_px (49, 2)."""
        cfg = self.config
        r_body, r_cam, r_look, r_bg, r_occ, r_box = self._rngs(index)

        rotmat, betas = self.sample_body(r_body)
        vertices, joints49 = self.pose_body(rotmat, betas)
        width, height, focal = self.sample_camera(r_cam)
        transl = self.place(r_cam, vertices, width, height, focal)
        principal = np.array([width / 2, height / 2])

        colours = appearance.random_clothing(r_look, self.rest_vertices, self.body.vertex_parts, self.body.vertex_uv)
        light, albedo = appearance.random_light(r_look)
        background = appearance.random_background(r_bg, width, height)
        out = self.renderer(width, height).render(
            (vertices + transl)[None], focal, principal, np.clip(colours * albedo, 0, 1)[None], background[None],
            light[None])
        rgb, mask, part, uv = out.rgb[0].copy(), out.mask[0], out.part[0].copy(), out.uv[0].copy()
        body_box = mask_box(mask)
        if body_box is None:   # cannot happen with placement's checks; keep the sample valid
            body_box = (0.0, 0.0, float(width), float(height))

        occluded = np.zeros((height, width), bool)
        if r_occ.random() < cfg.occluder_prob:
            count = int(r_occ.integers(1, 3))
            for _attempt in range(3):
                trial = rgb.copy()
                occ = appearance.draw_occluders(r_occ, trial, body_box, count)
                if (mask & ~occ).sum() >= 0.4 * mask.sum():
                    rgb, occluded = trial, occ
                    break
        visible = mask & ~occluded
        part[~visible] = 0
        uv[~visible] = 0.0

        box = self.jitter_box(r_box, body_box)
        center, side = box[:2], float(box[2])
        image = crop_person(rgb, center, side)
        if cfg.photometric:
            # Camera noise on the crop (6x fewer pixels than the full image); the crop's
            # black border (outside the image) is restored with the same warp of a white
            # image, so it stays exactly as crop_person leaves it.
            image = appearance.photometric(r_occ, image)
            inside = crop_person(np.full((height, width, 3), 255, np.uint8), center, side)
            image = ((image.astype(np.uint16) * inside + 127) // 255).astype(np.uint8)
        iuv, silhouette = sample_label_maps(part, uv, center, side)

        image_size = np.array([width, height], np.float64)
        keypoints2d, joints3d, cam_crop, joints_px = keypoint_labels(joints49, transl, focal, center, side, image_size)

        f32 = np.float32
        sample = {
            "image": image,
            "keypoints2d": keypoints2d.astype(f32),
            "joints3d": joints3d.astype(f32),
            "pose_rotmat": rotmat.astype(f32),
            "betas": betas.astype(f32),
            "cam_crop": cam_crop.astype(f32),
            "transl": transl.astype(f32),
            "focal_px": np.asarray(focal, f32),
            "box": np.array([center[0], center[1], side], f32),
            "image_size": image_size.astype(f32),
            "iuv": iuv,
            "silhouette": silhouette,
            "has_smpl": np.asarray(1.0, f32),
            "has_iuv": np.asarray(1.0, f32),
        }
        extras = {"rgb": rgb, "mask": visible, "part": part, "uv": uv, "occluded": occluded,
                  "vertices": vertices + transl, "joints2d_px": joints_px, "body_box": np.array(body_box)}
        return sample, extras

    def batch(self, indices) -> dict:
        """collate([self[i] for i in indices])."""
        return collate([self[int(i)] for i in indices])

    # -- cache ---------------------------------------------------------------------------
    def fingerprint(self) -> str:
        # Not the length: sample i does not depend on it, so datasets of different
        # lengths share shards (a short last shard is regenerated when a longer one is needed).
        h = hashlib.sha1(repr((GENERATOR_VERSION, self.seed, self.shard_size,
                               dataclasses.astuple(self.config), _body_fingerprint(self.body))).encode())
        return h.hexdigest()[:16]

    def shard_path(self, shard: int) -> Path:
        return self.cache_dir / f"synthetic-{self.fingerprint()}-{shard:06d}.npz"

    @property
    def num_shards(self) -> int:
        return -(-self.length // self.shard_size)

    def _load_shard(self, shard: int) -> dict:
        if self._shard[0] == shard:
            return self._shard[1]
        path = self.shard_path(shard)
        wanted = min(self.length, (shard + 1) * self.shard_size) - shard * self.shard_size
        arrays = None
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if len(arrays["index"]) < wanted:   # written for a shorter dataset
                arrays = None
        if arrays is None:
            self._write_shard(shard)
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        self._shard = (shard, arrays)
        return arrays

    def _write_shard(self, shard: int) -> Path:
        start = shard * self.shard_size
        stop = min(self.length, start + self.shard_size)
        arrays = collate([self.generate(i) for i in range(start, stop)])
        arrays["index"] = np.arange(start, stop, dtype=np.int64)
        path = self.shard_path(shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            np.savez_compressed(f, **arrays)
        return path

    def write_cache(self, shards=None) -> list:
        """Generate every missing shard (or the listed ones); returns their paths."""
        if self.cache_dir is None:
            raise ValueError("no cache_dir")
        out = []
        for s in range(self.num_shards) if shards is None else shards:
            path = self.shard_path(s)
            wanted = min(self.length, (s + 1) * self.shard_size) - s * self.shard_size
            if path.exists():
                with np.load(path, allow_pickle=False) as z:
                    have = len(z["index"])
            if not path.exists() or have < wanted:
                self._write_shard(s)
            out.append(path)
        return out


# ----------------------------------------------------------------------------------
# Preview and benchmark
# ----------------------------------------------------------------------------------
# Skeleton edges over the 24 SPIN "GT" joints (indices in the 49-set).
_SKELETON = ((25, 26), (26, 27), (28, 29), (29, 30), (27, 39), (28, 39), (39, 41), (41, 40), (40, 37), (37, 38),
             (31, 32), (32, 33), (33, 40), (34, 40), (34, 35), (35, 36), (27, 28), (33, 34))


def _part_palette() -> np.ndarray:
    import colorsys

    pal = np.zeros((25, 3), np.uint8)
    for p in range(1, 25):
        r, g, b = colorsys.hsv_to_rgb(((p * 7) % 24) / 24.0, 0.85, 0.95)
        pal[p] = (int(r * 255), int(g * 255), int(b * 255))
    return pal


def preview_tiles(sample: dict) -> np.ndarray:
    """(224, 448, 3) uint8: the crop with keypoints and skeleton | the crop with the IUV
    parts (56 x 56, upsampled) and the U/V isolines blended over it."""
    import cv2

    img = np.ascontiguousarray(sample["image"].copy())
    kp = sample["keypoints2d"]
    px = (kp[:, :2] + 1) * CROP / 2
    for a, b in _SKELETON:
        if kp[a, 2] > 0 and kp[b, 2] > 0:
            cv2.line(img, tuple(int(v) for v in px[a]), tuple(int(v) for v in px[b]), (255, 255, 0), 1, cv2.LINE_AA)
    for j in range(49):
        colour = (0, 255, 0) if j >= 25 else (255, 0, 255)
        if kp[j, 2] > 0:
            cv2.circle(img, (int(round(px[j, 0])), int(round(px[j, 1]))), 2, colour, -1, cv2.LINE_AA)
        else:
            cv2.drawMarker(img, (int(round(px[j, 0])), int(round(px[j, 1]))), (255, 0, 0), cv2.MARKER_TILTED_CROSS, 5)
    iuv = sample["iuv"]
    part = iuv[0].astype(np.int64)
    scale = CROP // IUV_SIZE
    colour = _part_palette()[part]
    # U/V stripes inside the parts (shows UV alignment and continuity).
    stripes = ((np.floor(iuv[1] * 5) + np.floor(iuv[2] * 5)) % 2 == 0) & (part > 0)
    colour = np.where(stripes[..., None], (colour * 0.6).astype(np.uint8), colour)
    big = np.kron(colour, np.ones((scale, scale, 1), np.uint8))
    fg = np.kron(part > 0, np.ones((scale, scale), bool))
    over = sample["image"].copy()
    over[fg] = (0.35 * over[fg] + 0.65 * big[fg]).astype(np.uint8)
    sil = np.kron(sample["silhouette"], np.ones((scale, scale), np.uint8))
    contours, _ = cv2.findContours(sil, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(over, contours, -1, (255, 255, 255), 1)
    return np.concatenate([img, over], axis=1)


def write_preview(path, seed: int = 0, count: int = 16, columns: int = 4, dataset: Optional[SyntheticPeople] = None):
    import cv2

    ds = dataset or SyntheticPeople(length=max(count, 1), seed=seed)
    tiles = [preview_tiles(ds[i]) for i in range(count)]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    grid = np.concatenate(rows, axis=0)
    cv2.imwrite(str(path), np.ascontiguousarray(grid[..., ::-1]))
    return grid


def bench(count: int = 40, seed: int = 0) -> float:
    ds = SyntheticPeople(length=count + 1, seed=seed)
    ds[count]                                    # warm up: model, EGL context, photos
    t0 = time.perf_counter()
    for i in range(count):
        check_sample(ds[i])
    dt = time.perf_counter() - t0
    rate = count / dt
    try:
        import torch

        threads = torch.get_num_threads()
    except Exception:  # pragma: no cover
        threads = -1
    print(f"synthetic: {count} samples in {dt:.2f} s = {rate:.1f} samples/s "
          f"(one process, {os.cpu_count()} CPUs, torch threads {threads})")
    return rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.data.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--bench", action="store_true", help="print the generator speed (samples/s)")
    ap.add_argument("--preview", metavar="OUT.png", help="write a grid of crops with keypoints and IUV")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--cache", metavar="DIR", help="generate the cache shards for --length samples into DIR")
    ap.add_argument("--length", type=int, default=1024)
    args = ap.parse_args(argv)
    if not (args.bench or args.preview or args.cache):
        ap.print_help()
        return 2
    if args.preview:
        write_preview(args.preview, seed=args.seed, count=args.count or 16)
        print(f"wrote {args.preview}")
    if args.bench:
        bench(count=args.count or 40, seed=args.seed)
    if args.cache:
        ds = SyntheticPeople(length=args.length, seed=args.seed, cache_dir=args.cache)
        t0 = time.perf_counter()
        paths = ds.write_cache()
        print(f"{len(paths)} shards in {args.cache} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
