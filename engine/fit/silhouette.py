"""The silhouette term: each fitted frame moved so that the body's outline is the person's.

The landmark fit (engine/fit/fit.py) places the body by 33 points; its outline then misses the
person's by a few pixels along every limb. The BlazePose landmark network also segments the
person on its crop; this refines each frame's rotations and translation from the fit's own so
that the body's projected surface lies inside that mask and covers it, with a pull back to the
fit (docs/landmark-fit.md, "Silhouette term"):

    E = sum_frames [ mean_v rho(D_out(pi(v))) + mean_e sigma(min_v |e - pi(v)|)
                     + w_R |6D - 6D_0|^2 + w_t |t - t_0|^2 + w_z |z_J - z_J0|^2 ]
        + w_sR |D2(6D)|^2 + w_st |D2(t)|^2

v: surface points (vertices sampled once, skinned as the fit skins its landmark points), pi
the camera, D_out the distance (frame pixels) outside the mask (none outside the frame: a
person the frame cuts has no mask there, and their legs must not be pulled up into it), e
points on the mask's outline (not where the frame cuts it), rho the Charbonnier cost, sigma
the Geman-McClure cost c d^2 / (d^2 + c^2), which saturates: a person's mask holds clothes,
hair and held objects the body cannot cover, and an outline point far from the body is one of
those rather than a limb to move (a linear cost twisted the astronaut of scikit-image's photo
inside her suit); z_J the joints' depths: a mask says nothing about depth, the fit's 3D
landmarks do; D2 the second difference over consecutive frames of the refined motion itself
(steadiness: each frame's mask has its own errors; on the change from the fit instead, it
held back the corrections a jerky fit needs). The pulls are weak: the fit's pose is often a
limb's width off, and where they were stronger the outline stopped short of the mask
(docs/landmark-fit.md, "Silhouette term"). The hands (joints 22, 23) keep their rotations.

Masks live on the landmark crops: (S, S) bool over the crop an observation came from, with the
crop's ROI (cx, cy, side, angle) taking crop pixels to frame pixels (engine/landmarks/roi.py).
Shapes: N frames refined together, P surface points, K outline points, S crop size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.fit import correspondence as corr
from engine.fit.fit import (NUM_FITTED_JOINTS, Rig, assemble_rotations, charbonnier, forward_kinematics,
                            project, skin_points)
from engine.landmarks import roi as rois
from engine.model.geometry import rotmat_to_rot6d


@dataclass(frozen=True)
class SilhouetteParams:
    iterations: int = 100
    learning_rate: float = 0.02       # Adam, on the 6D entries and metres, cosine-decayed to
    final_learning_rate: float = 0.001    # this, so that the last steps do not shake the limbs
    weight_rotation: float = 1.0      # pull to the fit's 6D rotations (mean square)
    weight_translation: float = 10.0  # pull to the fit's translation (mean square, metres)
    weight_depth: float = 100.0       # pull to the fit's joint depths (mean square, metres)
    weight_steady_rotation: float = 200.0        # second differences over consecutive frames of the
    weight_steady_translation: float = 20000.0   # 6D rotations / translation: each frame's mask has its
    #                                              own errors (dancer.mp4: steadier than the fit alone)
    robust_px: float = 2.0            # Charbonnier scale of the distance outside the mask
    cover_px: float = 10.0            # outline points further than about this from the body stop pulling
    #                                   (clothes, hair, held objects; at 15-20 px the photos' fits broke)
    points: int = 1000                # surface points sampled from the body's vertices (3000 and 400
    outline_points: int = 200         # mask outline points per frame: +0.01 IoU, 6x the time)
    min_crop_px: float = 200.0        # smaller crops (people under ~150 px) are not refined: their
    #                                   masks are a few blurred pixels wide at the limbs
    min_mask_pixels: int = 100        # of the crop: less is no person's outline to refine to
    chunk_frames: int = 96            # frames refined together (memory: N x K x P distances; steadiness
    #                                   does not reach across chunks)


def surface_basis(body, count: int, seed: int = 0) -> corr.LandmarkBasis:
    """The fit's correspondence with ``count`` of the body's vertices as its points (each with
    its own skinning weights) instead of the 33 landmarks: ``make_rig`` of it gives a Rig
    whose ``skin_points`` are surface points. body: ``BodyModelData``."""
    basis = corr.landmark_basis(body)
    V = body.num_vertices
    idx = np.sort(np.random.RandomState(seed).choice(V, min(count, V), replace=False))
    return basis._replace(points0=np.asarray(body.v_template, np.float64)[idx],
                          point_dirs=np.asarray(body.shapedirs, np.float64)[idx],
                          weights=np.asarray(body.weights, np.float64)[idx])


def wants_silhouette(roi, mask: np.ndarray, params: SilhouetteParams = SilhouetteParams()) -> bool:
    """Whether a crop (cx, cy, side, angle) and its (S, S) bool mask are large enough to refine to."""
    return float(roi[2]) >= params.min_crop_px and int(np.count_nonzero(mask)) > params.min_mask_pixels


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """(S, S) bool -> (S * S / 8,) uint8: what the landmark stream keeps per person-frame."""
    return np.packbits(np.asarray(mask, bool).reshape(-1))


def unpack_masks(packed: np.ndarray, size: int = rois.INPUT_SIZE) -> np.ndarray:
    """(N, S * S / 8) uint8 -> (N, S, S) bool."""
    return np.unpackbits(packed, axis=-1)[:, :size * size].reshape(-1, size, size).astype(bool)


def outside_distance_fields(masks: np.ndarray) -> np.ndarray:
    """(N, S, S) bool -> (N, S, S) float32: each pixel's distance to the mask's edge (0 inside), crop px."""
    import cv2

    # distanceTransform measures to the nearest mask pixel's centre; the edge lies half a pixel nearer
    to_centre = [cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) for m in masks]
    return np.maximum(np.stack(to_centre) - 0.5, 0).astype(np.float32)


def outline_points(masks: np.ndarray, crop_to_image: np.ndarray, count: int, rng, frame_size=None) -> np.ndarray:
    """(N, S, S) bool, (N, 2, 3) crop -> frame affines -> (N, count, 2) frame px: points on each
    mask's outer outline (pixel centres), drawn with replacement where the outline is shorter.
    With frame_size (W, H), not where the frame cuts the person (within 2 px of its border:
    no outline there), unless that is all of it."""
    import cv2

    out = np.zeros((len(masks), count, 2), np.float32)
    for k, m in enumerate(masks):
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        edge = np.concatenate([c[:, 0] for c in contours], 0).astype(np.float64) + 0.5
        edge = edge @ crop_to_image[k, :, :2].T + crop_to_image[k, :, 2]
        if frame_size is not None:
            w, h = frame_size
            inner = (edge[:, 0] > 2) & (edge[:, 0] < w - 2) & (edge[:, 1] > 2) & (edge[:, 1] < h - 2)
            edge = edge[inner] if inner.any() else edge
        out[k] = edge[rng.choice(len(edge), count, replace=len(edge) < count)]
    return out


def distance_outside_px(uv: torch.Tensor, fields: torch.Tensor, image_to_crop: torch.Tensor,
                        px_per_crop: torch.Tensor) -> torch.Tensor:
    """Frame pixels uv (N, P, 2) -> their distance outside each frame's mask (N, P), frame px.

    fields (N, S, S) ``outside_distance_fields``; image_to_crop (N, 2, 3); px_per_crop (N,).
    Bilinear inside the crop; beyond it, the crop's border value plus the way out to it."""
    S = fields.shape[-1]
    crop = uv @ image_to_crop[:, :, :2].transpose(1, 2) + image_to_crop[:, None, :, 2]
    index = crop - 0.5                                   # pixel centres at +0.5
    inside = index.clamp(0, S - 1)
    beyond = (index - inside).norm(dim=-1)
    grid = (inside / (S - 1) * 2 - 1)[:, None]           # (N, 1, P, 2)
    d = torch.nn.functional.grid_sample(fields[:, None], grid, align_corners=True)[:, 0, 0]
    return (d + beyond) * px_per_crop[:, None]


def distance_to_nearest(points: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """points (N, K, 2), others (N, P, 2) -> (N, K): each point's distance to the nearest of
    ``others``. Its gradient is that pair's alone, as for a minimum over the whole table; the
    table is built without gradients (differentiated, it took 2/3 of the term's time), and
    holds |o|^2 - 2 p.o, the squared distance less the row's constant |p|^2."""
    with torch.no_grad():
        nearest = torch.baddbmm((others * others).sum(-1)[:, None, :], points, others.transpose(1, 2),
                                alpha=-2).argmin(2)
    return (points - torch.gather(others, 1, nearest[..., None].expand(-1, -1, others.shape[-1]))).norm(dim=-1)


def in_frame(uv: torch.Tensor, frame_size) -> torch.Tensor:
    """Frame pixels uv (..., 2) -> (...) float: 1 inside a (W, H) frame, 0 outside it."""
    w, h = frame_size
    return ((uv[..., 0] >= 0) & (uv[..., 0] <= w) & (uv[..., 1] >= 0) & (uv[..., 1] <= h)).to(uv.dtype)


def second_differences(x: torch.Tensor, frames: np.ndarray) -> torch.Tensor:
    """x (N, ...) over frame numbers ``frames`` (N,) -> x[t-1] - 2 x[t] + x[t+1] (M, ...) for
    every t whose neighbours are the frames just before and after it."""
    f = np.asarray(frames)
    if len(f) < 3:
        return x[:0]
    ok = torch.as_tensor((np.diff(f[:-1]) == 1) & (np.diff(f[1:]) == 1))
    return (x[2:] - 2 * x[1:-1] + x[:-2])[ok]


def geman_mcclure(d: torch.Tensor, scale: float) -> torch.Tensor:
    """Distances (...) -> scale d^2 / (d^2 + scale^2): quadratic near 0, at most ``scale`` far away."""
    return scale * d ** 2 / (d ** 2 + scale ** 2)


def cosine_schedule(first: float, last: float, steps: int) -> np.ndarray:
    """(steps,) learning rates from ``first`` down to ``last`` along half a cosine."""
    return last + (first - last) * 0.5 * (1 + np.cos(np.pi * np.arange(steps) / max(steps - 1, 1)))


def refine_to_silhouettes(rotmat: torch.Tensor, transl: torch.Tensor, rig: Rig, masks: np.ndarray,
                          crop_rois: np.ndarray, focal: torch.Tensor, principal_point: torch.Tensor,
                          params: SilhouetteParams = SilhouetteParams(), seed: int = 0, frames=None,
                          frame_size=None) -> tuple:
    """N frames refined together (module docstring).

    rotmat (N, 24, 3, 3) local, transl (N, 3): camera frame = FK(rotmat) + transl; rig: a
    surface Rig (``make_rig(surface_basis(...), betas)``); masks (N, S, S) bool over the crops
    ``crop_rois`` (N, 4); focal (N,), principal_point (N, 2); frames (N,): their frame
    numbers, for the steadiness terms (None: none); frame_size (W, H): surface points outside
    the frame cost nothing (None: all count). -> (rotmat, transl), float32."""
    A = rois.crop_to_image_matrix(crop_rois, masks.shape[-1])
    fields = torch.as_tensor(outside_distance_fields(masks))
    edges = torch.as_tensor(outline_points(masks, A, params.outline_points, np.random.RandomState(seed),
                                         frame_size))
    to_crop = torch.as_tensor(rois.image_to_crop_matrix(crop_rois, masks.shape[-1]), dtype=torch.float32)
    scale = torch.as_tensor(np.sqrt(np.abs(np.linalg.det(A[:, :, :2]))), dtype=torch.float32)
    with torch.no_grad():
        J0, _ = forward_kinematics(rotmat, rig)
        depth0 = J0[..., 2] + transl[:, None, 2]
    six0 = rotmat_to_rot6d(rotmat[:, :NUM_FITTED_JOINTS]).detach()
    six = six0.clone().requires_grad_(True)
    shift = torch.zeros_like(transl, requires_grad=True)
    opt = torch.optim.Adam([six, shift], lr=params.learning_rate)
    for lr in cosine_schedule(params.learning_rate, params.final_learning_rate, params.iterations):
        for group in opt.param_groups:
            group["lr"] = lr
        R = assemble_rotations(six)
        J, Rw = forward_kinematics(R, rig)
        uv = project(skin_points(J, Rw, rig) + (transl + shift)[:, None], focal, principal_point)
        outside = distance_outside_px(uv, fields, to_crop, scale)
        if frame_size is not None:
            outside = outside * in_frame(uv, frame_size)
        inside = charbonnier(outside, params.robust_px).mean(1)
        near = distance_to_nearest(edges, uv)
        cover = geman_mcclure(near, params.cover_px).mean(1)
        pull = (params.weight_rotation * ((six - six0) ** 2).flatten(1).mean(1)
                + params.weight_translation * (shift ** 2).mean(1)
                + params.weight_depth * ((J[..., 2] + transl[:, None, 2] + shift[:, None, 2] - depth0) ** 2).mean(1))
        loss = (inside + cover + pull).sum()   # a sum over frames keeps each one's scale
        if frames is not None:
            bend = second_differences(six, frames) ** 2
            jolt = second_differences(transl + shift, frames) ** 2
            loss = loss + (params.weight_steady_rotation * bend.flatten(1).mean(1)).sum() \
                + (params.weight_steady_translation * jolt.mean(1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        R = assemble_rotations(six)
        R[:, NUM_FITTED_JOINTS:] = rotmat[:, NUM_FITTED_JOINTS:]
        return R, transl + shift


def refine_track(rotmat: np.ndarray, transl: np.ndarray, rig: Rig, packed_masks: list, crop_rois: np.ndarray,
                 focal: np.ndarray, principal_point: np.ndarray, params: SilhouetteParams = SilhouetteParams(),
                 cancel=None, on_chunk=None, frames=None, frame_size=None) -> np.ndarray:
    """A fitted track's frames that have a mask, refined in place.

    rotmat (T, 24, 3, 3), transl (T, 3) float32 (NaN on gaps); rig: a surface Rig
    (``make_rig(surface_basis(...), betas)``); packed_masks T of ``pack_mask`` output or
    None; crop_rois (T, 4); focal (T,), principal_point (T, 2); frames (T,): frame numbers
    (for the steadiness terms; None: without them); frame_size (W, H) of the frames (None: points
    outside them count as outside the mask). ``cancel()`` true stops before
    the next chunk (the frames done stay done); ``on_chunk(frames)`` after each.
    -> (T,) bool: the frames refined."""
    use = np.array([m is not None and np.isfinite(transl[i]).all() for i, m in enumerate(packed_masks)], bool)
    todo = np.flatnonzero(use)
    done = np.zeros(len(use), bool)
    f32 = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    for start in range(0, len(todo), params.chunk_frames):
        if cancel is not None and cancel():
            break
        idx = todo[start:start + params.chunk_frames]
        masks = unpack_masks(np.stack([packed_masks[i] for i in idx]))
        R, t = refine_to_silhouettes(f32(rotmat[idx]), f32(transl[idx]), rig, masks, crop_rois[idx],
                                     f32(focal[idx]), f32(principal_point[idx]), params, seed=start,
                                     frames=None if frames is None else np.asarray(frames)[idx],
                                     frame_size=frame_size)
        rotmat[idx], transl[idx] = R.numpy(), t.numpy()
        done[idx] = True
        if on_chunk is not None:
            on_chunk(len(idx))
    return done
