"""SMPL forward kinematics and rest shape in numpy (shared by the engine and the extension).

Conventions (as everywhere in ``engine.common``): rotation matrices act on column vectors,
``p' = R @ p``; local rotations are relative to the parent joint, SMPL style (rest
orientations are identity); joint 0's rotation is the global orient. The result is the same
as the joints smplx returns for the same pose (checked in tests/engine/test_kinematics.py).
"""
from __future__ import annotations

import numpy as np


def shaped_vertices(v_template: np.ndarray, shapedirs: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Rest-pose vertices for a shape.

    v_template (V, 3), shapedirs (V, 3, B), betas (B',) with B' <= B -> (V, 3)."""
    betas = np.asarray(betas, np.float64).reshape(-1)
    n = min(len(betas), shapedirs.shape[-1])
    return np.asarray(v_template, np.float64) + np.asarray(shapedirs, np.float64)[..., :n] @ betas[:n]


def regress_joints(j_regressor, vertices: np.ndarray) -> np.ndarray:
    """Joints from vertices. j_regressor (J, V) dense or scipy-sparse, vertices (V, 3) -> (J, 3)."""
    return np.asarray(j_regressor @ np.asarray(vertices, np.float64))


def forward_kinematics(rotmats: np.ndarray, rest_joints: np.ndarray, parents) -> tuple:
    """Posed joint positions and world rotations.

    rotmats (..., J, 3, 3) local rotations; rest_joints (J, 3); parents (J,) with
    parents[0] = -1 and parents[j] < j.
    -> (joints (..., J, 3) relative to the model origin (no translation),
        world rotations (..., J, 3, 3)).
    """
    R = np.asarray(rotmats, np.float64)
    J = np.asarray(rest_joints, np.float64)
    parents = np.asarray(parents).astype(int)
    world_R = np.empty_like(R)
    joints = np.empty(R.shape[:-2] + (3,))
    world_R[..., 0, :, :] = R[..., 0, :, :]
    joints[..., 0, :] = J[0]
    for j in range(1, len(parents)):
        p = parents[j]
        world_R[..., j, :, :] = world_R[..., p, :, :] @ R[..., j, :, :]
        joints[..., j, :] = joints[..., p, :] + np.einsum("...ab,b->...a", world_R[..., p, :, :], J[j] - J[p])
    return joints, world_R


def posed_joints(rotmats: np.ndarray, rest_joints: np.ndarray, parents, transl: np.ndarray) -> np.ndarray:
    """Joints in the engine's camera frame: FK plus the full-image translation.

    rotmats (T, J, 3, 3), rest_joints (J, 3), transl (T, 3) -> (T, J, 3)."""
    joints, _ = forward_kinematics(rotmats, rest_joints, parents)
    return joints + np.asarray(transl, np.float64)[:, None, :]


def skinned_vertices(rotmats: np.ndarray, rest_joints: np.ndarray, rest_vertices: np.ndarray,
                     weights: np.ndarray, parents) -> np.ndarray:
    """Linear blend skinning of one pose (no pose correctives: the mesh a Blender rig shows).

    rotmats (J, 3, 3) local, rest_joints (J, 3), rest_vertices (V, 3), weights (V, J) ->
    (V, 3) relative to the model origin (add the translation)."""
    joints, world = forward_kinematics(rotmats, rest_joints, parents)             # (J, 3), (J, 3, 3)
    offset = joints - np.einsum("jab,jb->ja", world, np.asarray(rest_joints, np.float64))
    blend = np.asarray(weights, np.float64) @ np.concatenate([world.reshape(-1, 9), offset], 1)   # (V, 12)
    v = np.asarray(rest_vertices, np.float64)
    return np.einsum("vab,vb->va", blend[:, :9].reshape(-1, 3, 3), v) + blend[:, 9:]
