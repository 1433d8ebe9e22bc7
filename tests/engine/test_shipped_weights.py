"""Weights-only files for shipping (``python -m engine.model.checkpoint export``): no body
model, no Dmap, no optimizer; they load strictly into a PyMAF on a body the caller gives,
reproduce the network exactly in float32 and closely in float16, and a file with a missing
or extra tensor is refused by name."""
import os

import numpy as np
import pytest
import torch

from engine.model import checkpoint as ckpt
from engine.model.pymaf import ModelConfig, PyMAF

# float16 storage of a ResNet-18 PyMAF: largest vertex difference (mm) allowed against the
# float32 network (measured 0.19 mm on this fixture and on a 40-step 'tiny' run; docs/training.md).
HALF_TOLERANCE_MM = 1.0
BODY_WORDS = ("smpl", "Dmap", "v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "faces")


def varied(model: PyMAF) -> PyMAF:
    """An untrained network made to give input-dependent bodies: random BN statistics and
    larger regressor updates (the default init stays at the mean pose)."""
    g = torch.Generator().manual_seed(3)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
        elif name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
    with torch.no_grad():
        for reg in model.regressor:
            for head in (reg.decpose, reg.decshape):
                head.weight.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="module")
def files(mannequin, tmp_path_factory):
    """A training-style checkpoint (with optimizer / RNG / step), its fp32 and fp16 exports,
    and the source network. Files removed afterwards (about 300 MB)."""
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = varied(PyMAF(mannequin, ModelConfig(backbone_depth=18)))
    full = d / "checkpoint.pt"
    optimizer = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(64)}},
                 "param_groups": [{"lr": 1e-4, "params": [0]}]}
    ckpt.save_pymaf(model, full, extra={"optimizer": optimizer, "step": 5, "rng": {"torch": torch.zeros(8)}})
    paths = {"full": full, "fp32": d / "weights.pt", "fp16": d / "weights_half.pt"}
    assert ckpt.main(["export", str(full), str(paths["fp32"])]) == 0
    assert ckpt.main(["export", str(full), str(paths["fp16"]), "--half"]) == 0
    yield paths, model
    for p in paths.values():
        p.unlink(missing_ok=True)


def crops():
    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(9))


@torch.no_grad()
def predict(model):
    out = model(crops())
    return out.final.vertices, out.final.cam


def test_export_holds_network_weights_only(files):
    paths, model = files
    obj = ckpt.read_checkpoint(paths["fp32"])                            # weights_only=True
    assert set(obj) == {"format", "config", "dtype", "model", "maf_vertex_ids", "body"}
    assert obj["format"] == ckpt.WEIGHTS_FORMAT and obj["config"] == model.config.to_dict()
    keys = list(obj["model"])
    assert not [k for k in keys if any(w in k for w in BODY_WORDS)]
    assert not [k for k in keys if "optim" in k or "rng" in k]
    assert "regressor.0.init_cam" in keys and "feature_extractor.conv1.weight" in keys
    assert obj["maf_vertex_ids"].shape == (3, 431)
    sizes = {k: os.path.getsize(p) for k, p in paths.items()}
    assert sizes["fp32"] < 0.6 * sizes["full"] and sizes["fp16"] < 0.55 * sizes["fp32"], sizes
    half = ckpt.read_checkpoint(paths["fp16"])["model"]
    exact = {k for k in half if k.endswith(ckpt.FULL_PRECISION)}                 # the mean-parameter start
    assert len(exact) == 9 and {half[k].dtype for k in exact} == {torch.float32}
    assert {v.dtype for k, v in half.items() if v.is_floating_point() and k not in exact} == {torch.float16}


def test_fp32_weights_reproduce_the_network_exactly(files, mannequin):
    paths, model = files
    loaded, info = ckpt.load_pymaf(paths["fp32"], body=mannequin)
    assert info["format"] == ckpt.WEIGHTS_FORMAT and info["body_matches"] and info["config"]["backbone_depth"] == 18
    reference = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype == reference[key].dtype and torch.equal(value, reference[key]), key
    for a, b in zip(predict(loaded), predict(model)):
        assert torch.equal(a, b)


def test_fp16_weights_stay_within_tolerance(files, mannequin):
    paths, model = files
    loaded, info = ckpt.load_pymaf(paths["fp16"], body=mannequin)
    assert info["dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    (v16, cam16), (v32, cam32) = predict(loaded), predict(model)
    diff_mm = 1000 * (v16 - v32).abs().max().item()
    spread_mm = 1000 * (v32 - v32.mean(0)).abs().max().item()
    print(f"fp16 weights: max vertex difference {diff_mm:.3f} mm (bodies differ by up to {spread_mm:.0f} mm)")
    assert 0 < diff_mm < HALF_TOLERANCE_MM and spread_mm > 10 * HALF_TOLERANCE_MM
    assert (cam16 - cam32).abs().max() < 1e-3


def _rewrite(path, out, change):
    obj = ckpt.read_checkpoint(path)
    change(obj)
    torch.save(obj, out)
    return out


def test_a_missing_or_extra_key_is_refused_by_name(files, mannequin, tmp_path):
    paths, _ = files
    missing = _rewrite(paths["fp16"], tmp_path / "missing.pt", lambda o: o["model"].pop("regressor.1.fc2.bias"))
    with pytest.raises(ckpt.CheckpointError, match=r"1 missing key\(s\): regressor\.1\.fc2\.bias"):
        ckpt.load_pymaf(missing, body=mannequin)
    extra = _rewrite(paths["fp16"], tmp_path / "extra.pt",
                     lambda o: o["model"].update({"regressor.0.smpl.v_template": torch.zeros(6890, 3)}))
    with pytest.raises(ckpt.CheckpointError, match=r"1 unexpected key\(s\): regressor\.0\.smpl\.v_template"):
        ckpt.load_pymaf(extra, body=mannequin)
    with pytest.raises(ckpt.CheckpointError, match="weights only, no body model"):
        ckpt.load_pymaf(paths["fp16"])
    bad_ids = _rewrite(paths["fp16"], tmp_path / "ids.pt", lambda o: o.update(maf_vertex_ids=o["maf_vertex_ids"][:2]))
    with pytest.raises(ckpt.CheckpointError, match="maf_vertex_ids"):
        ckpt.load_pymaf(bad_ids, body=mannequin)


def test_the_body_check_allows_float_noise_but_not_another_body(mannequin):
    """The shipped heads were trained on the mannequin as built on another machine: the same
    body to the last few float bits, another digest. The summary check accepts that (noise of
    1e-7 relative, the size of a CPU's vectorised rounding) and refuses a body 1 mm off or with
    another shape basis."""
    v, dirs = np.asarray(mannequin.v_template, np.float64), np.asarray(mannequin.shapedirs, np.float64)
    trained = {"sha256": "another machine's digest", "summary": ckpt.body_summary(v, dirs).tolist()}

    def now(v2, d2):
        return {"sha256": "this machine's digest", "summary": ckpt.body_summary(v2, d2).tolist()}

    rng = np.random.default_rng(1)
    noisy = v * (1 + 1e-7 * rng.standard_normal(v.shape))
    assert ckpt.same_body(trained, now(noisy, dirs))
    assert not ckpt.same_body(trained, now(v + 0.001, dirs))
    assert not ckpt.same_body(trained, now(v, dirs * 1.01))
    assert not ckpt.same_body({"sha256": "another machine's digest"}, now(noisy, dirs))   # no summary: digest only
