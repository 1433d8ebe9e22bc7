"""``python -m engine.check``: good, bad and malicious checkpoints and body models.

Reuses the fixtures of the loader tests: the mannequin body (conftest), fake_smpl's malicious
pickles, and small PyMAF networks saved like the release or like our trainer.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import check
from engine.body.loading import save_body_model_npz
from tests.engine.fixtures import fake_smpl

torch = pytest.importorskip("torch")
from engine.model.checkpoint import save_pymaf  # noqa: E402
from engine.model.pymaf import ModelConfig, PyMAF  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(mannequin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("check")
    torch.manual_seed(0)
    net = PyMAF(mannequin, ModelConfig(backbone_depth=18))
    good = folder / "small_pymaf.pt"
    save_pymaf(net, good)
    official = folder / "PyMAF_model_checkpoint.pt"  # the release's container, ResNet-18 trunk
    torch.save({"model": net.state_dict(), "epoch": 3}, official)
    body = folder / "SMPL_NEUTRAL.npz"
    save_body_model_npz(mannequin, body, compressed=False)
    sd = dict(net.state_dict())
    no_body = folder / "no_body.pt"
    torch.save({"model": {k: v for k, v in sd.items() if not k.startswith("regressor.0.smpl.")}}, no_body)
    broken = folder / "broken.pt"
    sd2 = dict(sd)
    del sd2["regressor.1.deccam.bias"]
    sd2["something.new"] = torch.zeros(1)
    torch.save({"model": sd2}, broken)
    resnet = folder / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, resnet)
    return {"good": good, "official": official, "body": body, "no_body": no_body, "broken": broken,
            "resnet": resnet, "folder": folder}


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "engine.check", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    return proc


def test_good_files(files):
    res = check.run_checks(str(files["good"]), str(files["body"]))
    assert res["ok"]
    ck, body = res["checkpoint"], res["body"]
    assert ck["ok"] and ck["details"]["config"]["backbone_depth"] == 18 and ck["details"]["embeds_body"]
    assert "loads strictly" in ck["summary"] and ck["problems"] == []
    assert "embeds its own body model" in ck["warnings"][0]
    assert body["ok"] and body["details"]["vertices"] == 6890 and body["details"]["betas"] == 10
    official = check.run_checks(str(files["official"]))["checkpoint"]
    assert official["ok"] and official["details"]["format"] == "official"
    assert "official release layout" in official["summary"] and "ResNet-18" in official["summary"]


def test_mismatched_checkpoint_names_the_keys(files):
    rep = check.run_checks(str(files["broken"]))["checkpoint"]
    assert not rep["ok"] and "does not fit the PyMAF layout" in rep["summary"]
    text = "\n".join(rep["problems"])
    assert "regressor.1.deccam.bias" in text and "missing" in text and "something.new" in text


def test_wrong_kind_of_file_is_named(files):
    rep = check.run_checks(str(files["resnet"]))["checkpoint"]
    assert not rep["ok"] and "ImageNet" in rep["summary"]
    body = check.run_checks(body=str(files["resnet"]))["body"]
    assert not body["ok"] and "resnet50.pth" in body["summary"]


def test_checkpoint_without_body_needs_one(files):
    rep = check.run_checks(str(files["no_body"]))
    assert not rep["ok"] and "embeds no body model; choose an SMPL file" in rep["checkpoint"]["summary"]
    # With a body model the check reports what the engine does with the pair (strict load).
    with_body = check.run_checks(str(files["no_body"]), str(files["body"]))
    assert with_body["body"]["ok"] and with_body["checkpoint"]["path"] == str(files["no_body"])


def test_missing_and_garbage_files(tmp_path):
    rep = check.run_checks(str(tmp_path / "absent.pt"), str(tmp_path / "absent.pkl"))
    assert not rep["ok"]
    assert "not found" in rep["checkpoint"]["summary"] and "no such file" in rep["body"]["summary"]
    noise = tmp_path / "noise.pkl"
    noise.write_bytes(np.random.default_rng(1).bytes(4096))
    body = check.run_checks(body=str(noise))["body"]
    assert not body["ok"] and "not an SMPL model file" in body["summary"]
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(b"PK\x03\x04" + os.urandom(100))
    assert "not a readable PyTorch file" in check.run_checks(str(trunc))["checkpoint"]["summary"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "hook": _Payload(marker)}, path)
    rep = check.run_checks(str(path))["checkpoint"]
    assert not rep["ok"] and "refused" in rep["summary"] and rep["details"]["unsafe"]
    assert not marker.exists()


@pytest.mark.parametrize("kind", fake_smpl.MALICIOUS_KINDS[:2])
def test_malicious_body_pickle_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    fake_smpl.write_malicious_pickle(path, marker, kind)
    proc = run_cli("--body", path, "--json")
    assert proc.returncode == 5, proc.stderr
    rep = json.loads(proc.stdout)["body"]
    assert not rep["ok"] and kind in rep["summary"]
    assert not marker.exists()


def test_command_line_exit_codes_and_text(files, capsys):
    assert check.main(["--checkpoint", str(files["good"]), "--body", str(files["body"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True  # stdout holds only the JSON object
    bad = run_cli("--checkpoint", files["broken"])
    assert bad.returncode == 5
    assert bad.stdout.startswith(f"checkpoint {files['broken']}: PROBLEM - broken.pt does not fit")
    assert "    1 missing key(s): regressor.1.deccam.bias" in bad.stdout
    usage = run_cli("--json")
    assert usage.returncode == 2 and json.loads(usage.stdout)["ok"] is False
