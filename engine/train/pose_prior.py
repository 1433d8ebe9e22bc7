"""Learn the landmark fit's pose prior from the synthetic pose distribution.

``python -m engine.train.pose_prior --out engine/fit/weights/pose_prior.npz``

A K-component full-covariance Gaussian mixture (EM, numpy) over the 69-D body pose
(axis-angle of the local rotations of joints 1..23) of ``engine.data.poses``: random
poses around its templates plus frames of its procedural motions. The file is read by
``engine.fit.prior.load_pose_prior`` (format described there).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from scipy.spatial.transform import Rotation

from engine.common.atomic import atomic_file
from engine.data.poses import MOTIONS, euler_to_pose, motion, random_pose_angles

DIM = 69


def sample_poses(num_random: int, motion_clips: int, seed: int) -> np.ndarray:
    """(N, 24, 3, 3) body poses: random poses, then frames of every motion."""
    rng = np.random.default_rng(seed)
    angles = np.stack([random_pose_angles(rng) for _ in range(num_random)])
    poses = [euler_to_pose(angles)]
    for _ in range(motion_clips):
        for name in MOTIONS:
            poses.append(motion(name, 90, rng).poses)
    return np.concatenate(poses)


def body_axis_angle(poses: np.ndarray) -> np.ndarray:
    """(N, 24, 3, 3) -> (N, 69) axis-angle of joints 1..23."""
    n = poses.shape[0]
    return Rotation.from_matrix(poses[:, 1:].reshape(-1, 3, 3)).as_rotvec().reshape(n, DIM)


def _component_log_prob(x, mean, cov):
    """log N(x; mean, cov) for x (N, D) -> (N,), and the precision Cholesky factor."""
    chol = np.linalg.cholesky(cov)
    y = np.linalg.solve(chol, (x - mean).T).T
    log_det = 2 * np.log(np.diag(chol)).sum()
    return -0.5 * ((y * y).sum(1) + log_det + x.shape[1] * math.log(2 * math.pi))


def fit_gmm(x: np.ndarray, k: int, iters: int, seed: int, reg: float = 1e-3):
    """EM for a full-covariance mixture. -> (weights (K,), means (K, D), covs (K, D, D))."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    means = x[rng.choice(n, k, replace=False)]
    covs = np.repeat(np.cov(x.T)[None] + reg * np.eye(d), k, axis=0)
    weights = np.full(k, 1.0 / k)
    for it in range(iters):
        log_r = np.stack([np.log(weights[c]) + _component_log_prob(x, means[c], covs[c]) for c in range(k)], 1)
        log_z = np.logaddexp.reduce(log_r, axis=1, keepdims=True)
        r = np.exp(log_r - log_z)
        nk = r.sum(0) + 1e-9
        weights = nk / n
        means = (r.T @ x) / nk[:, None]
        for c in range(k):
            dx = x - means[c]
            covs[c] = (r[:, c, None] * dx).T @ dx / nk[c] + reg * np.eye(d)
        if it % 10 == 0 or it == iters - 1:
            print(f"EM {it:3d}: mean log-likelihood {float(log_z.mean()):.3f}", flush=True)
    return weights, means, covs


def prior_arrays(weights, means, covs) -> dict:
    """The runtime file's arrays: means, precision_cholesky (precision = L L^T), log_norm."""
    k, d = means.shape
    chols, log_norm = [], []
    for c in range(k):
        prec = np.linalg.inv(covs[c])
        L = np.linalg.cholesky(0.5 * (prec + prec.T))
        chols.append(L)
        log_norm.append(math.log(weights[c]) + np.log(np.diag(L)).sum() - 0.5 * d * math.log(2 * math.pi))
    return {"means": means.astype(np.float32), "precision_cholesky": np.stack(chols).astype(np.float32),
            "log_norm": np.asarray(log_norm, np.float32)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="engine/fit/weights/pose_prior.npz")
    ap.add_argument("--components", type=int, default=8)
    ap.add_argument("--random-poses", type=int, default=30000)
    ap.add_argument("--motion-clips", type=int, default=20, help="clips of 90 frames per motion")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    x = body_axis_angle(sample_poses(args.random_poses, args.motion_clips, args.seed))
    print(f"{len(x)} poses, {x.shape[1]}-D axis-angle", flush=True)
    arrays = prior_arrays(*fit_gmm(x, args.components, args.iters, args.seed))
    arrays["num_training_poses"] = np.asarray(len(x), np.int64)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with atomic_file(args.out) as fh:
        np.savez_compressed(fh, **arrays)
    os.chmod(args.out, 0o644)  # the temporary file's 0600 would follow it into the checkout
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
