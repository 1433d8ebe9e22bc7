"""engine.body.smpl_torch: smplx's SMPL plus the 49 joints and subset posing, checked
against a plain smplx.SMPL forward."""
import dataclasses

import numpy as np
import pytest
import smplx
import torch
from smplx.utils import Struct

from engine.body.smpl_torch import SMPL
from engine.common import smpl_topology as topo
from engine.common.rotations import axis_angle_to_rotmat


def random_pose(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rotmat = torch.tensor(axis_angle_to_rotmat(rng.normal(size=(batch, 24, 3)) * 0.4), dtype=torch.float32)
    betas = torch.tensor(rng.normal(size=(batch, 10)), dtype=torch.float32)
    return rotmat, betas


def smplx_reference(body, rotmat, betas):
    ref = smplx.SMPL(model_path="", data_struct=Struct(**body.to_npz_dict()), create_transl=False)
    with torch.no_grad():
        out = ref(betas=betas, global_orient=rotmat[:, :1], body_pose=rotmat[:, 1:], pose2rot=False)
    extra = torch.einsum("jv,bvk->bjk", torch.as_tensor(body.J_regressor_extra), out.vertices)
    return out.vertices, torch.cat([out.joints, extra], 1)[:, topo.JOINTS_49_SOURCE]


@pytest.fixture(scope="module")
def body_with_correctives(mannequin):
    rng = np.random.default_rng(5)
    posedirs = (rng.normal(size=mannequin.posedirs.shape) * 1e-3).astype(np.float32)
    return dataclasses.replace(mannequin, posedirs=posedirs)


@pytest.mark.parametrize("which", ["mannequin", "with_correctives"])
def test_pose_equals_smplx(mannequin, body_with_correctives, which):
    body = mannequin if which == "mannequin" else body_with_correctives
    layer = SMPL(body)
    assert layer.zero_pose_correctives == (which == "mannequin")
    rotmat, betas = random_pose(3)
    verts_ref, joints_ref = smplx_reference(body, rotmat, betas)
    with torch.no_grad():
        out = layer.pose(rotmat, betas)
        subset = layer.subset_for(torch.as_tensor(topo.MAF_VERTEX_IDS))
        part = layer.pose_subset(rotmat, betas, subset)
    assert not subset.full
    assert torch.allclose(out.vertices, verts_ref, atol=1e-5)
    assert torch.allclose(out.joints49, joints_ref, atol=1e-5)
    assert torch.allclose(part.vertices, verts_ref[:, topo.MAF_VERTEX_IDS], atol=1e-5)
    assert torch.allclose(part.joints49, joints_ref, atol=1e-5)
    assert torch.allclose(part.joints24, out.joints24, atol=1e-5)


def test_missing_extra_regressor_gives_nan_for_exactly_those_joints(mannequin):
    layer = SMPL(dataclasses.replace(mannequin, J_regressor_extra=None))
    names = layer.missing_joints49()
    assert len(names) == 9 and "Head-top (LSP)" in names and "OP Nose" not in names
    rotmat, betas = random_pose(1)
    with torch.no_grad():
        joints = layer.pose(rotmat, betas).joints49[0]
    missing = torch.isnan(joints).any(-1)
    assert [topo.JOINT_NAMES_49[i] for i in torch.nonzero(missing).flatten()] == names


def test_state_dict_swap_updates_flags(mannequin, body_with_correctives):
    """Loading another body's buffers (as a checkpoint does) refreshes what was derived."""
    layer = SMPL(mannequin)
    other = SMPL(body_with_correctives)
    layer.load_state_dict(other.state_dict())
    assert layer.zero_pose_correctives is False
    rotmat, betas = random_pose(2)
    with torch.no_grad():
        assert torch.allclose(layer.pose(rotmat, betas).vertices, other.pose(rotmat, betas).vertices)
