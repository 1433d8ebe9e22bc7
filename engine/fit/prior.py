"""Pose prior and soft joint limits for the landmark fit (torch, runtime).

* The prior is a Gaussian mixture over the 69-D body pose: the axis-angle vectors of the
  23 local body rotations (joints 1..23, SMPL order), learned from the synthetic pose
  distribution of ``engine.data.poses`` by ``python -m engine.train.pose_prior``.
  Stored in ``weights/pose_prior.npz`` (no pickles): ``means (K, 69)``,
  ``precision_cholesky (K, 69, 69)`` (lower L with precision = L L^T) and
  ``log_norm (K,)`` (log mixture weight + log|L| - 69/2 log 2 pi).
* Joint limits are ``engine.data.poses``'s Euler boxes; the penalty is how far (radians)
  a rotation lies outside its box, taking the better of the two Euler decompositions,
  exactly as ``engine.data.poses.limit_violation`` measures it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from engine.data.poses import EULER_ORDERS, LIMITS_HI, LIMITS_LO

DEFAULT_PRIOR_PATH = Path(__file__).resolve().parent / "weights" / "pose_prior.npz"
PRIOR_DIM = 69
_AXIS = {"X": 0, "Y": 1, "Z": 2}


class PosePrior(NamedTuple):
    """means (K, 69), precision_cholesky (K, 69, 69), log_norm (K,); float32 tensors."""

    means: torch.Tensor
    precision_cholesky: torch.Tensor
    log_norm: torch.Tensor


def load_pose_prior(path=None) -> PosePrior:
    """Read the prior written by ``engine.train.pose_prior`` (plain arrays only)."""
    with np.load(Path(path) if path else DEFAULT_PRIOR_PATH, allow_pickle=False) as f:
        arrays = {k: torch.as_tensor(np.asarray(f[k], np.float32))
                  for k in ("means", "precision_cholesky", "log_norm")}
    if arrays["means"].shape[-1] != PRIOR_DIM:
        raise ValueError(f"pose prior has dimension {arrays['means'].shape[-1]}, expected {PRIOR_DIM}")
    return PosePrior(**arrays)


def pose_prior_nll(prior: PosePrior, body_axis_angle: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of body poses. body_axis_angle (..., 69) -> (...)."""
    d = body_axis_angle[..., None, :] - prior.means                          # (..., K, 69)
    y = torch.einsum("...ki,kij->...kj", d, prior.precision_cholesky)
    log_p = prior.log_norm - 0.5 * (y * y).sum(-1)
    return -torch.logsumexp(log_p, dim=-1)


# ----------------------------------------------------------------------------------
# Joint limits
# ----------------------------------------------------------------------------------
def _order_indices(order: str):
    i, j, k = (_AXIS[a] for a in order)
    parity = 1.0 if (i, j, k) in ((0, 1, 2), (1, 2, 0), (2, 0, 1)) else -1.0
    return i, j, k, parity


def euler_intrinsic(R: torch.Tensor, order: str) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> intrinsic Euler angles (..., 3) with
    R = R_a(t0) R_b(t1) R_c(t2) for order "abc" (scipy's upper-case convention),
    middle angle in [-pi/2, pi/2]."""
    i, j, k, s = _order_indices(order)
    sin_b = (s * R[..., i, k]).clamp(-1 + 1e-6, 1 - 1e-6)
    a = torch.atan2(-s * R[..., j, k], R[..., k, k])
    b = torch.asin(sin_b)
    c = torch.atan2(-s * R[..., i, j], R[..., i, i])
    return torch.stack([a, b, c], dim=-1)


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


class JointLimits(NamedTuple):
    """Per-joint Euler orders (24 strings) and limits lo/hi (24, 3) radians (tensors)."""

    orders: tuple
    lo: torch.Tensor
    hi: torch.Tensor


def default_joint_limits() -> JointLimits:
    return JointLimits(tuple(EULER_ORDERS), torch.as_tensor(LIMITS_LO, dtype=torch.float32),
                       torch.as_tensor(LIMITS_HI, dtype=torch.float32))


def joint_limit_excess(rotmats: torch.Tensor, limits: JointLimits, joints=range(1, 24)) -> torch.Tensor:
    """Radians outside the limit box. rotmats (..., 24, 3, 3) -> (..., len(joints)).

    Joints sharing an Euler order are decomposed together (one call per order)."""
    joints = list(joints)
    out = [None] * len(joints)
    by_order: dict = {}
    for n, j in enumerate(joints):
        by_order.setdefault(limits.orders[j], []).append((n, j))
    for order, members in by_order.items():
        idx = torch.tensor([j for _, j in members])
        e1 = euler_intrinsic(rotmats[..., idx, :, :], order)
        e2 = _wrap(torch.stack([e1[..., 0] + math.pi, math.pi - e1[..., 1], e1[..., 2] + math.pi], dim=-1))
        lo, hi = limits.lo[idx], limits.hi[idx]
        x1 = (torch.relu(lo - e1) + torch.relu(e1 - hi)).sum(-1)
        x2 = (torch.relu(lo - e2) + torch.relu(e2 - hi)).sum(-1)
        excess = torch.minimum(x1, x2)
        for m, (n, _) in enumerate(members):
            out[n] = excess[..., m]
    return torch.stack(out, dim=-1)
