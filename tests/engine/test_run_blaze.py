"""``engine run --estimator pymaf-blazepose``: PyMAF's heads on the BlazePose trunk through the
same crop / batch / convert path as PyMAF; the result names the estimator; a file of the
other trunk is refused with the right option named; the shipped heads load strictly."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.landmarks.assets import converted_path
from engine.run import BLAZE_HEADS
from tests.engine.test_run import _clip

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not converted_path("full").is_file(), reason="converted BlazePose models not set up")


@pytest.fixture(scope="module")
def data(tmp_path_factory, mannequin):
    from engine.model.checkpoint import save_weights
    from engine.model.pymaf import build_pymaf
    from engine.train.configs import get_config

    d = tmp_path_factory.mktemp("run_blaze")
    (d / "boxes.json").write_text(json.dumps(_clip(d / "clip.avi", 6)))
    torch.manual_seed(0)
    model = build_pymaf(mannequin, get_config("blaze_default").model).eval()
    with torch.no_grad():
        for reg in model.regressor:          # input-dependent bodies, not the mean pose
            reg.decpose.weight.mul_(20.0)
    save_weights(model, d / "heads.pt", half=True, inference_only=True)
    return d


def _run(*args):
    return subprocess.run([sys.executable, "-m", "engine", "run", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_blaze_heads_run_like_pymaf_and_say_so(data, mannequin):
    from engine.common.result_schema import read_result
    from engine.model.checkpoint import load_pymaf
    from engine.model.inference import Predictor
    from engine.preprocess import crop_person
    from engine.video.decode import iter_frames

    out = data / "out.npz"
    p = _run(data / "clip.avi", "-o", out, "--estimator", "pymaf-blazepose", "--checkpoint", data / "heads.pt",
             "--boxes", data / "boxes.json", "--smoothing", "none", "--progress", "jsonl")
    assert p.returncode == 0, p.stderr
    done = json.loads(p.stdout.splitlines()[-1])
    assert done["estimator"]["name"] == "pymaf-blazepose"
    res = read_result(out)
    assert res.meta["estimator"] == {"name": "pymaf-blazepose", "model": "full",
                                     "label": "PyMAF heads on BlazePose GHUM full (checkpoint heads.pt)"}
    tr = res.tracks["1"]
    images = [f.image for f in iter_frames(data / "clip.avi")]
    crops = np.stack([crop_person(images[f], b[:2], b[2]) for f, b in zip(tr.frames, tr.boxes)])
    model, _ = load_pymaf(data / "heads.pt", body=mannequin)
    fin = Predictor(model, device="cpu").predict(crops).final
    np.testing.assert_allclose(tr.body_pose_rotmat, fin.rotmat.numpy()[:, 1:], atol=1e-4)
    assert float(np.ptp(tr.body_pose_rotmat[:, :, 0, 0], axis=0).max()) > 1e-3   # not a constant


def test_a_file_of_the_other_trunk_is_refused(data, mannequin):
    mannequin.save_npz(data / "body.npz")
    p = _run(data / "clip.avi", "-o", data / "x.npz", "--estimator", "pymaf", "--checkpoint", data / "heads.pt",
             "--body", data / "body.npz", "--boxes", data / "boxes.json", "--progress", "jsonl")
    assert p.returncode == 2
    err = json.loads(p.stdout.splitlines()[-1])
    assert err["code"] == "usage" and "--estimator pymaf-blazepose" in err["message"]
    assert not (data / "x.npz").exists()


def test_the_shipped_heads_load_strictly_and_are_small(mannequin):
    from engine.model.checkpoint import load_pymaf

    assert BLAZE_HEADS.stat().st_size < 20e6
    model, info = load_pymaf(BLAZE_HEADS, body=mannequin)
    assert info["dtype"] == "float16" and info["body_matches"]
    assert model.config.blaze and model.config.trunk == "blazepose-full" and not model.config.with_iuv_head


@pytest.mark.parametrize("argv, name", [
    ([], "landmarks"), (["--estimator", "default"], "landmarks"), (["--checkpoint", "x.pt"], "pymaf"),
    (["--estimator", "pymaf-blazepose"], "pymaf-blazepose"),
    (["--estimator", "pymaf-blazepose", "--checkpoint", "mine.pt"], "pymaf-blazepose"),
])
def test_estimator_names_resolve(argv, name):
    """'default' is the estimator that measures best (the landmark fit: docs/accuracy.md)."""
    from engine.run import DEFAULT_ESTIMATOR, build_parser, resolve_estimator

    args = build_parser("run").parse_args(["v.mp4", "-o", "o.npz", *argv])
    resolve_estimator(args)
    assert DEFAULT_ESTIMATOR == "landmarks"
    assert args.estimator == name == args._estimator_meta["name"]
    if "mine.pt" in argv:
        assert args._estimator_meta["label"] == "PyMAF heads on BlazePose GHUM full (checkpoint mine.pt)"


def test_a_corrupt_heads_file_is_a_model_error(data):
    (data / "broken.pt").write_bytes(b"not a torch file at all")
    p = _run(data / "clip.avi", "-o", data / "y.npz", "--estimator", "pymaf-blazepose", "--checkpoint",
             data / "broken.pt", "--boxes", data / "boxes.json", "--progress", "jsonl")
    assert p.returncode == 5
    err = json.loads(p.stdout.splitlines()[-1])
    assert err["event"] == "error" and "broken.pt" in err["message"]
    assert not (data / "y.npz").exists()
