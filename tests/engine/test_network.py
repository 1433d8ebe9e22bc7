"""The PyMAF network: layout of the release, strict checkpoint loading, and forward
semantics checked against a literal re-statement of the release's forward pass."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
import torch.nn.functional as F
from smplx.utils import Struct

from engine.common import smpl_topology as topo
from engine.model import checkpoint as ckpt
from engine.model.geometry import rot6d_to_rotmat
from engine.model.inference import Predictor, normalize_crops, resolve_device
from engine.model.pymaf import ModelConfig, PyMAF, grid_points

LAYOUT = Path(__file__).resolve().parents[3] / "shared" / "reference" / "checkpoint-layout.json"


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def model(mannequin):
    torch.manual_seed(0)
    return randomize(PyMAF(mannequin))


@pytest.fixture(scope="module")
def crops():
    torch.manual_seed(1)
    return torch.randn(2, 3, 224, 224)


# --- layout --------------------------------------------------------------------------
def official_layout() -> dict:
    if LAYOUT.exists():
        return json.loads(LAYOUT.read_text())["keys"]
    pytest.skip("shared/reference/checkpoint-layout.json not present")


def test_state_dict_equals_release_layout(model):
    layout = official_layout()
    sd = model.state_dict()
    assert list(sd) == list(layout), "key order differs from the release"
    for key, spec in layout.items():
        assert list(sd[key].shape) == spec["shape"], key
        assert str(sd[key].dtype).replace("torch.", "") == spec["dtype"], key
    learned = sum(p.numel() for n, p in model.named_parameters() if not n.split(".")[-1] in ("betas", "global_orient", "body_pose"))
    assert learned == 45_168_512


@pytest.mark.parametrize("depth", [18, 34])
def test_lighter_backbones_keep_the_structure(mannequin, depth):
    small = PyMAF(mannequin, ModelConfig(backbone_depth=depth))
    keys = [k for k in small.state_dict() if not k.startswith("feature_extractor.")]
    full = [k for k in official_layout() if not k.startswith("feature_extractor.")]
    assert keys == full
    assert small.state_dict()["deconv_layers.0.weight"].shape == (512, 256, 4, 4)
    assert ckpt.infer_config(small.state_dict()).backbone_depth == depth


def test_points_grid_order():
    grid = grid_points()[0]
    k = torch.arange(441)
    assert torch.allclose(grid[0], -1 + 2 * (k // 21) / 20, atol=1e-6)
    assert torch.allclose(grid[1], -1 + 2 * (k % 21) / 20, atol=1e-6)


def test_dmap_selects_the_release_vertices(model):
    for extractor in model.maf_extractor:
        assert torch.equal(extractor.vertex_ids(), torch.as_tensor(topo.MAF_VERTEX_IDS))
        assert torch.all(extractor.Dmap.sum(1) == 1)


# --- forward semantics ----------------------------------------------------------------
def reference_forward(model: PyMAF, x: torch.Tensor, body) -> list:
    """The release's forward, stated literally: dense Dmap matmul, full smplx SMPL in every
    stage, channel-major flatten, projection /112. Returns [(theta-like dict)] per stage."""
    smpl = smplx.SMPL(model_path="", data_struct=Struct(**body.to_npz_dict()), create_transl=False)
    buffers = model.regressor[0].smpl.state_dict()
    smpl.load_state_dict({k: v for k, v in buffers.items()
                          if k not in ("J_regressor_extra", "betas", "global_orient", "body_pose")}, strict=False)
    extra = model.regressor[0].smpl.J_regressor_extra
    s_feat = model.feature_extractor(x)
    batch = x.shape[0]
    reg0 = model.regressor[0]
    pose, shape, cam = reg0.init_pose.expand(batch, -1), reg0.init_shape.expand(batch, -1), reg0.init_cam.expand(batch, -1)
    verts, outs = None, []
    for t in range(3):
        s_feat = model.deconv_layers[3 * t:3 * t + 3](s_feat)
        if t == 0:
            pts = model.points_grid.transpose(1, 2).expand(batch, -1, -1)
        else:
            ds = torch.matmul(model.maf_extractor[t].Dmap.unsqueeze(0), verts)
            tz = 2 * 5000.0 / (224 * cam[:, 0] + 1e-9)
            p = ds + torch.stack([cam[:, 1], cam[:, 2], tz], -1)[:, None]
            pts = 5000.0 * p[..., :2] / p[..., 2:] / 112.0
        feat = F.grid_sample(s_feat, pts.unsqueeze(2), align_corners=True)[..., 0]
        mlp = model.maf_extractor[t]
        y0 = F.leaky_relu(mlp.conv0(feat))
        y1 = F.leaky_relu(mlp.conv1(torch.cat([y0, feat], 1)))
        y2 = F.relu(mlp.conv2(torch.cat([y1, feat], 1)))
        reg = model.regressor[t]
        xc = torch.cat([y2.view(batch, -1), pose, shape, cam], 1)
        xc = reg.fc2(reg.fc1(xc))
        pose, shape, cam = pose + reg.decpose(xc), shape + reg.decshape(xc), cam + reg.deccam(xc)
        R = rot6d_to_rotmat(pose.view(batch, 24, 6))
        out = smpl(betas=shape, body_pose=R[:, 1:], global_orient=R[:, :1], pose2rot=False)
        verts = out.vertices
        j54 = torch.cat([out.joints, torch.einsum("jv,bvk->bjk", extra, verts)], 1)
        outs.append({"rotmat": R, "betas": shape, "cam": cam, "verts": verts,
                     "joints": j54[:, topo.JOINTS_49_SOURCE]})
    return outs


def test_forward_matches_literal_release_forward(model, crops, mannequin):
    with torch.no_grad():
        ours = model(crops)
        ref = reference_forward(model, crops, mannequin)
    for t, (a, b) in enumerate(zip(ours.stages, ref)):
        assert torch.allclose(a.rotmat, b["rotmat"], atol=1e-5), t
        assert torch.allclose(a.betas, b["betas"], atol=1e-5), t
        assert torch.allclose(a.cam, b["cam"], atol=1e-5), t
        assert torch.allclose(a.joints3d, b["joints"], atol=1e-4), t
    assert torch.allclose(ours.final.vertices, ref[-1]["verts"], atol=1e-4)
    # the stages really refine: each one changes the estimate
    assert not torch.allclose(ours.stages[0].cam, ours.stages[2].cam)


def test_subset_stages_equal_full_mesh_stages(model, crops):
    with torch.no_grad():
        fast = model(crops)
        full = model(crops, full_mesh_every_stage=True)
    for a, b in zip(fast.stages, full.stages):
        assert torch.allclose(a.joints3d, b.joints3d, atol=1e-5)
        assert torch.allclose(a.sampled_vertices, b.sampled_vertices, atol=1e-5)
        assert torch.allclose(a.joints2d, b.joints2d, atol=1e-5)
    assert fast.stages[0].vertices is None and full.stages[0].vertices.shape == (2, 6890, 3)
    assert model.stage_subsets()[0].full is False, "the mannequin's regressors are local"


def test_outputs_are_consistent(model, crops):
    with torch.no_grad():
        out = model(crops).final
    R = out.rotmat
    assert R.shape == (2, 24, 3, 3) and R.dtype == torch.float32
    eye = torch.eye(3).expand_as(R)
    assert torch.allclose(R @ R.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.det(R), torch.ones(2, 24), atol=1e-5)
    aa = out.pose_axis_angle.view(2, 24, 3)
    from engine.common.rotations import axis_angle_to_rotmat
    assert np.allclose(axis_angle_to_rotmat(aa.numpy().astype(np.float64)), R.numpy(), atol=1e-4)
    assert out.joints3d.shape == (2, 49, 3) and out.joints2d.shape == (2, 49, 2)
    # joints2d = the release's projection of joints3d with the crop camera
    s, tx, ty = out.cam.unbind(-1)
    p = out.joints3d + torch.stack([tx, ty, 2 * 5000 / (224 * s + 1e-9)], -1)[:, None]
    assert torch.allclose(out.joints2d, 5000 * p[..., :2] / p[..., 2:] / 112, atol=1e-5)


def test_training_mode_gradients_and_feedback_detach(mannequin):
    torch.manual_seed(0)
    net = PyMAF(mannequin, ModelConfig(backbone_depth=18)).train()
    out = net(torch.randn(2, 3, 224, 224))
    assert out.iuv["predict_u"].shape == (2, 25, 56, 56)
    assert out.iuv["predict_ann_index"].shape == (2, 15, 56, 56)
    out.final.joints3d.sum().backward()
    assert net.regressor[2].fc1.weight.grad is not None
    assert net.feature_extractor.conv1.weight.grad.abs().sum() > 0
    # the last stage starts from a detached estimate: no gradient into earlier regressors
    assert net.regressor[0].fc1.weight.grad is None
    assert net.regressor[1].decpose.weight.grad is None


def test_bf16_autocast_keeps_geometry_float32(model, crops):
    with torch.inference_mode():
        ref = model(crops).final
        low = model(crops, autocast_dtype=torch.bfloat16).final
    assert low.rotmat.dtype == torch.float32 and low.vertices.dtype == torch.float32
    assert torch.isfinite(low.vertices).all()
    assert (low.vertices - ref.vertices).abs().max() < 0.05


# --- checkpoints ----------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_official_layout_checkpoint_loads_strictly_and_reproduces(model, crops, tmp_path, legacy):
    path = tmp_path / "PyMAF_model_checkpoint.pt"
    # exactly the release's container: {'model': state_dict, + trainer bookkeeping}
    torch.save({"model": model.state_dict(), "epoch": 3, "batch_idx": 0, "batch_size": 64,
                "total_step_count": 1000}, path, _use_new_zipfile_serialization=not legacy)
    loaded, info = ckpt.load_pymaf(path)
    assert info["config"]["backbone_depth"] == 50 and info["format"] == "official"
    with torch.no_grad():
        a, b = model(crops).final, loaded(crops).final
    assert torch.allclose(a.vertices, b.vertices, atol=1e-6)
    assert torch.allclose(a.joints2d, b.joints2d, atol=1e-6)


def test_own_checkpoint_roundtrip_small_backbone(mannequin, tmp_path, crops):
    torch.manual_seed(3)
    net = randomize(PyMAF(mannequin, ModelConfig(backbone_depth=18)))
    path = tmp_path / "small.pt"
    ckpt.save_pymaf(net, path)
    loaded, info = ckpt.load_pymaf(path)
    assert info["config"]["backbone_depth"] == 18 and info["format"] == ckpt.OUR_FORMAT
    with torch.no_grad():
        assert torch.allclose(net(crops).final.vertices, loaded(crops).final.vertices, atol=1e-6)


def test_mismatch_lists_offending_keys(model, tmp_path):
    sd = dict(model.state_dict())
    del sd["regressor.1.deccam.bias"]
    sd["regressor.2.fc1.weight"] = torch.zeros(1024, 100)
    sd["something.new"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_pymaf(path)
    msg = str(err.value)
    assert "regressor.1.deccam.bias" in msg and "missing" in msg
    assert "regressor.2.fc1.weight (expected [1024, 2312], found [1024, 100])" in msg
    assert "something.new" in msg and "ResNet-50" in msg


def test_wrong_kinds_of_file_are_named(tmp_path):
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}
    torch.save(resnet, tmp_path / "resnet50.pth")
    with pytest.raises(ckpt.CheckpointError, match="ImageNet"):
        ckpt.load_pymaf(tmp_path / "resnet50.pth")
    spin = {"fc1.weight": torch.zeros(1024, 2205), "decpose.weight": torch.zeros(144, 1024)}
    torch.save({"model": spin}, tmp_path / "spin.pt")
    with pytest.raises(ckpt.CheckpointError, match="SPIN"):
        ckpt.load_pymaf(tmp_path / "spin.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00PK" + os.urandom(2000))
    with pytest.raises(ckpt.CheckpointError, match="not a readable PyTorch file"):
        ckpt.load_pymaf(tmp_path / "garbage.pt")
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load_pymaf(tmp_path / "absent.pt")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "hook": payload}, path)
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.load_pymaf(path)
    assert not marker.exists()


def test_dataparallel_prefix_is_stripped(model, tmp_path):
    """Weights saved from DataParallel ('module.' prefix) load too."""
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"model": sd}, tmp_path / "dp.pt")
    loaded, _ = ckpt.load_pymaf(tmp_path / "dp.pt")
    assert torch.equal(loaded.deconv_layers[0].weight, model.deconv_layers[0].weight)


# --- inference API --------------------------------------------------------------------
def test_predictor_uint8_crops_and_device(model, tmp_path):
    predictor = Predictor(model, device="auto")
    assert predictor.device.type in ("cpu", "cuda", "mps")
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (3, 224, 224, 3), dtype=np.uint8)
    out = predictor.predict(crops)
    assert out.final.vertices.shape == (3, 6890, 3)
    assert not out.final.vertices.requires_grad
    x = normalize_crops(torch.from_numpy(crops))
    expected = (crops[0, 10, 20] / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.allclose(x[0, :, 10, 20].numpy(), expected, atol=1e-5)
    with pytest.raises(ValueError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


# --- ablation variants (Tables 4 and 5 of the paper) ------------------------------------
@pytest.mark.parametrize("config", [
    ModelConfig(backbone_depth=18, feature_mode="global", with_iuv_head=False),
    ModelConfig(backbone_depth=18, feature_mode="global", with_iuv_head=True),
    ModelConfig(backbone_depth=18, feature_mode="grid"),
    ModelConfig(backbone_depth=18, use_pyramid=False),
], ids=["global", "global+aux", "grid", "no-pyramid"])
def test_ablation_variants_train_and_roundtrip(mannequin, config, tmp_path):
    torch.manual_seed(0)
    net = PyMAF(mannequin, config).train()
    out = net(torch.randn(2, 3, 224, 224), with_initial=True)
    assert len(out.stages) == 3 and out.initial is not None
    assert (out.iuv is not None) == config.with_iuv_head
    loss = sum(s.joints3d.square().mean() for s in out.stages)
    loss.backward()
    if config.feature_mode == "global":
        assert len(net.regressor) == 1 and len(net.maf_extractor) == 0
        assert net.regressor[0].fc1.in_features == 512 + 157
    elif config.feature_mode == "grid":
        assert all(r.fc1.in_features == 2205 + 157 for r in net.regressor)
    path = tmp_path / "variant.pt"
    ckpt.save_pymaf(net, path)
    loaded, info = ckpt.load_pymaf(path)
    assert loaded.config == config
    net.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(net(x).final.vertices, loaded(x).final.vertices, atol=1e-6)


def test_no_pyramid_samples_the_finest_map_every_stage(mannequin):
    net = PyMAF(mannequin, ModelConfig(backbone_depth=18, use_pyramid=False)).eval()
    with torch.no_grad():
        maps = net._stage_maps(net.feature_extractor(torch.randn(1, 3, 224, 224)), None, False)
    assert [m.shape[-1] for m in maps] == [56, 56, 56]
    paper = PyMAF(mannequin, ModelConfig(backbone_depth=18)).eval()
    with torch.no_grad():
        maps = paper._stage_maps(paper.feature_extractor(torch.randn(1, 3, 224, 224)), None, False)
    assert [m.shape[-1] for m in maps] == [14, 28, 56]


def test_initial_estimate_is_the_mean_parameters(model, crops):
    with torch.no_grad():
        out = model(crops, with_initial=True)
    reg = model.regressor[0]
    assert torch.allclose(out.initial.cam, reg.init_cam.expand(2, -1))
    assert torch.allclose(out.initial.rotmat[:, 0], torch.diag(torch.tensor([1.0, -1.0, -1.0])).expand(2, 3, 3))
