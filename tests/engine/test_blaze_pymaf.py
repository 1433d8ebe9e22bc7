"""PyMAF's heads on the frozen BlazePose trunk (engine/model/blaze_trunk.py): the trunk's
decoder maps, frozen and never saved; the heads load strictly; cached maps give exactly
what the crops give; every ablation layout runs."""
import io

import pytest
import torch

from engine.landmarks.assets import assets_dir
from engine.landmarks.network import load_landmark_network
from engine.model.blaze_trunk import BlazeTrunk, decoder_taps, tap_channels, tensor_shapes
from engine.model.pymaf import ModelConfig, PyMAF


def _network(size="full"):
    path = assets_dir() / f"blazepose_{size}.pt"
    if not path.is_file():
        pytest.skip(f"{path} missing (python3 build.py setup)")
    return load_landmark_network(path, size)[0]


@pytest.fixture(scope="module")
def trunk():
    return BlazeTrunk(_network("full"))


@pytest.fixture(scope="module")
def crops():
    g = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, 256, 256, generator=g)


def test_taps_are_the_decoders_three_scales(trunk, crops):
    net = trunk.net
    shapes = tensor_shapes(net)
    assert [shapes[i] for i in decoder_taps(net)] == [(1, 48, 16, 16), (1, 48, 32, 32), (1, 48, 64, 64)]
    assert tap_channels(net) == 48 and tap_channels(_network("lite")) == 32
    # stopping early gives the very tensors the whole graph computes
    whole = net._execute(crops, set(trunk.taps), stop_early=False)
    for m, i in zip(trunk(crops), trunk.taps):
        torch.testing.assert_close(m, whole[i].float(), rtol=0, atol=0)
    # the 64 px map is what the landmark heatmaps are read from: it must carry the pose
    heat_step = next(s for s in net.steps if s["out"] == net.output_ids["heatmaps"])
    assert heat_step["in"] == [trunk.taps[-1]]


@pytest.mark.parametrize("config", [
    ModelConfig(trunk="blazepose-full"),
    ModelConfig(trunk="blazepose-full", feature_mode="grid"),
    ModelConfig(trunk="blazepose-full", feature_mode="global"),
    ModelConfig(trunk="blazepose-full", use_pyramid=False, with_iuv_head=False),
])
def test_heads_on_the_trunk(mannequin, trunk, crops, config):
    torch.manual_seed(0)
    model = PyMAF(mannequin, config, trunk_channels=trunk.channels).attach_trunk(trunk).eval()
    with torch.no_grad():
        out = model(crops)
        cached = model(trunk_maps=model.trunk_maps(crops))
    assert out.final.vertices.shape == (2, mannequin.num_vertices, 3) and out.final.cam.shape == (2, 3)
    torch.testing.assert_close(out.final.vertices, cached.final.vertices, rtol=0, atol=0)
    sd = model.state_dict()
    assert not [k for k in sd if k.startswith(("_blaze", "net.", "feature_extractor"))]
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for n, p in model.named_parameters() if not n.startswith("_blaze"))
    # saved and loaded strictly, weights only
    buf = io.BytesIO()
    torch.save({"model": sd, "config": config.to_dict()}, buf)
    buf.seek(0)
    obj = torch.load(buf, weights_only=True)
    again = PyMAF(mannequin, ModelConfig.from_dict(obj["config"]), trunk_channels=48)
    again.load_state_dict(obj["model"], strict=True)
    again.attach_trunk(trunk).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(crops).final.vertices, out.final.vertices, rtol=0, atol=0)


def test_trunk_is_frozen_and_heads_learn(mannequin, trunk, crops):
    model = PyMAF(mannequin, ModelConfig(trunk="blazepose-full"), trunk_channels=48).attach_trunk(trunk).train()
    out = model(crops)
    (out.final.vertices.square().mean() + sum(v.square().mean() for v in out.iuv.values())).backward()
    assert all(p.grad is None for p in trunk.parameters()) and not trunk.training
    assert model.neck[2][0].weight.grad is not None and model.regressor[2].fc1.weight.grad is not None
    assert out.iuv["predict_u"].shape[-2:] == (64, 64)   # the IUV head reads the finest level


def test_wrong_or_missing_trunk_is_refused(mannequin, crops):
    model = PyMAF(mannequin, ModelConfig(trunk="blazepose-full"), trunk_channels=48)
    with pytest.raises(RuntimeError, match="not attached"):
        model(crops)
    with pytest.raises(ValueError, match="32 channels, the heads expect 48"):
        model.attach_trunk(BlazeTrunk(_network("lite")))
    with pytest.raises(ValueError, match="trunk must be"):
        ModelConfig(trunk="blazepose-huge")
    assert ModelConfig().to_dict() == {"backbone_depth": 50, "with_iuv_head": True, "feature_mode": "maf",
                                       "use_pyramid": True}   # the official layout's config unchanged


def test_trunk_input_keeps_the_crop_frame():
    """A 224 crop becomes the 256 input of the same box: a pixel at normalised crop position
    (u, v) lands at the same normalised position."""
    from engine.model.blaze_trunk import trunk_input

    img = torch.zeros(1, 224, 224, 3, dtype=torch.uint8)
    img[0, 56, 168] = 255                         # u = (168 + 0.5) / 224, v = (56 + 0.5) / 224
    x = trunk_input(img)
    assert x.shape == (1, 3, 256, 256) and float(x.max()) <= 1.0
    y, xx = divmod(int(x[0, 0].argmax()), 256)
    assert abs((xx + 0.5) / 256 - 168.5 / 224) < 1.5 / 256 and abs((y + 0.5) / 256 - 56.5 / 224) < 1.5 / 256


def test_narrower_regressors_fit_the_weights_budget(mannequin, trunk, crops, tmp_path):
    """The regressors' width is a config field (the release's 1024 by default, its config
    unchanged); at 512 (``blaze_default``) the heads without the training-only IUV head fit
    20 MB in fp16: the inference-only export is that size, loads strictly into a model
    without the head, and gives the same bodies."""
    from engine.model.checkpoint import load_pymaf, save_pymaf, export_weights
    from engine.train.configs import get_config

    narrow = get_config("blaze_default").model
    assert narrow.regressor_width == 512 and narrow.with_iuv_head
    assert ModelConfig.from_dict(narrow.to_dict()) == narrow and "regressor_width" not in ModelConfig().to_dict()
    torch.manual_seed(0)
    model = PyMAF(mannequin, narrow, trunk_channels=48).attach_trunk(trunk).eval()
    with torch.no_grad():
        for reg in model.regressor:          # input-dependent bodies, not the mean pose
            reg.decpose.weight.mul_(20.0)
    save_pymaf(model, tmp_path / "run.pt")
    done = export_weights(tmp_path / "run.pt", tmp_path / "ship.pt", half=True, inference_only=True)
    assert done["bytes"] < 20e6, done
    shipped, info = load_pymaf(tmp_path / "ship.pt", body=mannequin)
    assert not shipped.config.with_iuv_head and not any(k.startswith("dp_head.") for k in shipped.state_dict())
    with torch.no_grad():
        a, b = model(crops).final.vertices, shipped(crops).final.vertices
    assert a.shape == (2, mannequin.num_vertices, 3)
    assert float((a - b).norm(dim=-1).max()) < 2e-3        # float16 storage: within 2 mm
    (tmp_path / "run.pt").unlink()
