"""SMPL as PyMAF calls it: smplx's SMPL, plus SPIN's extra joint regressor and the
49-joint output set, plus a subset forward that poses only the vertices a stage needs.

Skinning is smplx's own ``lbs``; nothing here re-implements it. The subset forward calls
the same ``lbs`` on a slice of the model that holds every vertex the joint regressors
read, so its joints are exactly the full model's.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import smplx
import torch
from smplx.lbs import lbs, vertices2joints
from smplx.utils import Struct

from engine.body.model_data import BodyModelData
from engine.common import smpl_topology as topo

# Above this many vertices a subset forward saves little; use the full mesh instead.
SUBSET_LIMIT = 3000


@dataclass
class BodyOutput:
    """vertices (B, N, 3): the whole mesh, or the requested subset in its order;
    joints49 (B, 49, 3); joints24 (B, 24, 3) kinematic joints. No translation applied."""

    vertices: torch.Tensor
    joints49: torch.Tensor
    joints24: torch.Tensor


class SMPL(smplx.SMPL):
    """smplx.SMPL with ``J_regressor_extra`` (state-dict layout of the PyMAF release).

    Built from a ``BodyModelData``; ``batch_size`` only sizes smplx's unused default
    parameters (64 in the release, so its ``smpl.betas`` key has shape [64, 10]).
    """

    def __init__(self, data: BodyModelData, batch_size: int = 64):
        # smplx prints a notice for 10-component models on stdout, which the engine
        # reserves for its JSON-lines protocol.
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(
                model_path="",
                data_struct=Struct(**data.to_npz_dict()),
                create_transl=False,
                batch_size=batch_size,
                num_betas=topo.NUM_BETAS,
            )
        num_vertices = data.num_vertices
        self.has_extra_joints = data.J_regressor_extra is not None
        extra = data.J_regressor_extra if self.has_extra_joints else np.zeros((9, num_vertices), np.float32)
        self.register_buffer("J_regressor_extra", torch.as_tensor(extra, dtype=torch.float32))
        self.register_buffer("joints49_source", torch.as_tensor(topo.JOINTS_49_SOURCE), persistent=False)
        self._note_pose_correctives()

    def _note_pose_correctives(self) -> None:
        # A body without pose correctives (the mannequin) need not multiply by 17 MB of
        # zeros on every call, the largest single cost of a batch-1 forward.
        self.zero_pose_correctives = not bool(torch.any(self.posedirs != 0))

    def lbs_posedirs(self, posedirs: torch.Tensor) -> torch.Tensor:
        """The pose-corrective basis to hand smplx's ``lbs``: the real one, or, for a body
        without correctives, a (207, 3) zero basis whose zero offset broadcasts over all
        vertices in ``lbs`` (same result, no matmul over the whole mesh)."""
        if self.zero_pose_correctives:
            return posedirs.new_zeros(posedirs.shape[0], 3)
        return posedirs

    # -- joint bookkeeping -------------------------------------------------------------
    def missing_joints49(self) -> list[str]:
        """Names of the 49 output joints this body cannot give (no extra regressor)."""
        if self.has_extra_joints:
            return []
        return [n for n, s in zip(topo.JOINT_NAMES_49, topo.JOINTS_49_SOURCE) if s >= 45]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        key = prefix + "J_regressor_extra"
        if key in state_dict:
            self.has_extra_joints = bool(torch.count_nonzero(state_dict[key]) > 0)
        self._note_pose_correctives()

    def _joints49(self, joints45: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """(B, 45, 3) smplx joints + (B, 9, 3) extra joints -> (B, 49, 3)."""
        if not self.has_extra_joints:
            extra = torch.full_like(extra, float("nan"))
        joints54 = torch.cat([joints45, extra], dim=1)
        return joints54[:, self.joints49_source]

    # -- forward -----------------------------------------------------------------------
    def pose(self, rotmat: torch.Tensor, betas: torch.Tensor) -> BodyOutput:
        """Full mesh. rotmat (B, 24, 3, 3), betas (B, 10) -> BodyOutput with (B, V, 3)."""
        vertices, joints24 = lbs(
            betas, rotmat, self.v_template, self.shapedirs, self.lbs_posedirs(self.posedirs),
            self.J_regressor, self.parents, self.lbs_weights, pose2rot=False,
        )
        joints45 = self.vertex_joint_selector(vertices, joints24)
        extra = vertices2joints(self.J_regressor_extra, vertices)
        return BodyOutput(vertices, self._joints49(joints45, extra), joints24)

    def pose_subset(self, rotmat: torch.Tensor, betas: torch.Tensor, subset: "VertexSubset") -> BodyOutput:
        """Only ``subset.vertex_ids``; same joints as ``pose``. -> vertices (B, n, 3)."""
        if subset.full:
            out = self.pose(rotmat, betas)
            return BodyOutput(out.vertices[:, subset.vertex_ids], out.joints49, out.joints24)
        m = subset.model
        vertices, joints24 = lbs(betas, rotmat, m["v_template"], m["shapedirs"], self.lbs_posedirs(m["posedirs"]),
                                 m["J_regressor"], self.parents, m["lbs_weights"], pose2rot=False)
        landmarks = vertices[:, subset.landmark_pos]
        joints45 = torch.cat([joints24, landmarks], dim=1)
        extra = vertices2joints(m["J_regressor_extra"], vertices)
        return BodyOutput(vertices[:, subset.wanted_pos], self._joints49(joints45, extra), joints24)

    def subset_for(self, vertex_ids: torch.Tensor) -> "VertexSubset":
        return VertexSubset.build(self, vertex_ids)


@dataclass
class VertexSubset:
    """Which mesh rows a subset forward must pose to give ``vertex_ids`` and exact joints.

    rows: sorted vertex rows (wanted + landmark + every vertex a joint regressor reads);
    wanted_pos / landmark_pos: positions of the wanted / landmark vertices within rows;
    model: the body's arrays sliced to ``rows`` (sliced once, not on every forward);
    full: True when the subset would be nearly the whole mesh (then pose everything).
    """

    vertex_ids: torch.Tensor
    rows: Optional[torch.Tensor] = None
    wanted_pos: Optional[torch.Tensor] = None
    landmark_pos: Optional[torch.Tensor] = None
    model: Optional[dict] = None
    full: bool = False

    @classmethod
    def build(cls, smpl: SMPL, vertex_ids: torch.Tensor) -> "VertexSubset":
        device = smpl.v_template.device
        vertex_ids = vertex_ids.to(device=device, dtype=torch.long)
        landmark_ids = smpl.vertex_joint_selector.extra_joints_idxs
        needed = (smpl.J_regressor.abs().sum(0) + smpl.J_regressor_extra.abs().sum(0)) > 0
        needed[vertex_ids] = True
        needed[landmark_ids] = True
        rows = torch.nonzero(needed).squeeze(1)
        if rows.numel() > SUBSET_LIMIT:
            return cls(vertex_ids, full=True)
        position = torch.full_like(needed, -1, dtype=torch.long)
        position[rows] = torch.arange(rows.numel(), device=device)
        num_basis = smpl.posedirs.shape[0]
        model = {
            "v_template": smpl.v_template[rows],
            "shapedirs": smpl.shapedirs[rows],
            "posedirs": smpl.posedirs.view(num_basis, -1, 3)[:, rows].reshape(num_basis, -1),
            "J_regressor": smpl.J_regressor[:, rows],
            "lbs_weights": smpl.lbs_weights[rows],
            "J_regressor_extra": smpl.J_regressor_extra[:, rows],
        }
        return cls(vertex_ids, rows, position[vertex_ids], position[landmark_ids], model)
