"""The evaluation report's guards against a constant predictor: the mean-pose baseline
(errors of predicting the mean ground-truth body for every sample) and the prediction
spread, checked with stand-in models whose answers are known (a constant body, the ground
truth itself), then on a real (untrained) tiny network through ``write_report``."""
import json

import pytest
import torch
from torch import nn

from engine.body.smpl_torch import SMPL
from engine.model.inference import normalize_crops
from engine.model.pymaf import PyMAFOutput, StageOutput
from engine.train.data import collate_tensors
from engine.train.evaluate import (BASELINE_NAME, constant_predictor_warnings, evaluate_model, spread,
                                   write_report)
from engine.train.metrics import lsp14_pelvis_aligned
from tests.engine.fake_batch import FakeDataset

COUNT = 10


@pytest.fixture(scope="module")
def dataset(mannequin):
    return FakeDataset(mannequin, COUNT, seed=21)


@pytest.fixture(scope="module")
def truth(mannequin, dataset):
    """Ground truth of the whole set: normalized crops, joints49 (N, 49, 3), vertices (N, V, 3)."""
    batch = collate_tensors([dataset[i] for i in range(COUNT)])
    with torch.no_grad():
        vertices = SMPL(mannequin).pose(batch["pose_rotmat"].float(), batch["betas"].float()).vertices
    return {"crops": normalize_crops(batch["image"]), "joints": batch["joints3d"][..., :3].float(),
            "vertices": vertices}


class StandIn(nn.Module):
    """Answers with given bodies: ``pick(crops) -> (joints49 (B, 49, 3), vertices (B, V, 3))``,
    the same for every stage; the body model for ground truth comes from ``body``."""

    def __init__(self, body, pick):
        super().__init__()
        holder = nn.Module()
        holder.smpl = SMPL(body)
        self.regressor = nn.ModuleList([holder])
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the evaluator a device
        self.pick = pick

    @staticmethod
    def prepare_crops(crops):
        from engine.model.inference import normalize_crops
        return normalize_crops(crops)

    def forward(self, crops, **_):
        joints, vertices = self.pick(crops)
        b = len(crops)
        stage = StageOutput(rotmat=torch.eye(3).expand(b, 24, 3, 3), pose_axis_angle=torch.zeros(b, 72),
                            pose6d=torch.zeros(b, 144), betas=torch.zeros(b, 10),
                            cam=torch.tensor([[0.9, 0.0, 0.0]]).expand(b, 3), joints3d=joints,
                            joints2d=joints[..., :2], sampled_vertices=vertices[:, :431], vertices=vertices)
        return PyMAFOutput(stages=[stage, stage, stage])


def oracle(truth):
    """The ground truth of whichever samples the crops are."""
    def pick(crops):
        d = (crops[:, None] - truth["crops"][None]).abs().flatten(2).sum(2)   # (B, N)
        i = d.argmin(dim=1)
        assert torch.all(d[torch.arange(len(i)), i] == 0)
        return truth["joints"][i], truth["vertices"][i]
    return pick


def constant(joints, vertices):
    """One body (49, 3), (V, 3) for every input."""
    return lambda crops: (joints.expand(len(crops), -1, -1), vertices.expand(len(crops), -1, -1))


def test_spread_is_zero_for_a_constant_set_and_the_mean_distance_otherwise():
    x = torch.randn(1, 14, 3, dtype=torch.float64).expand(5, -1, -1)
    assert spread(x) == pytest.approx(0.0, abs=1e-12)
    two = torch.zeros(2, 14, 3, dtype=torch.float64)
    two[1, :, 0] = 0.2                                     # each 0.1 from the mean
    assert spread(two) == pytest.approx(0.1)


def test_the_mean_body_scores_exactly_the_baseline(mannequin, dataset, truth):
    model = StandIn(mannequin, constant(truth["joints"].mean(0), truth["vertices"].mean(0)))
    r = evaluate_model(model, dataset, batch_size=4)
    assert r["prediction_spread"] == pytest.approx(0.0, abs=1e-3)
    assert r["gt_spread"] > 50                                            # mm: the set does vary
    for key in ("mpjpe", "pa_mpjpe", "pve"):
        assert r[key] == pytest.approx(r["baseline"][key], abs=1e-3), key
    # The ground truth's spread is the baseline's MPJPE (same mean, same distances).
    assert r["gt_spread"] == pytest.approx(r["baseline"]["mpjpe"], abs=1e-6)
    assert len(constant_predictor_warnings(r)) == 2


def test_another_constant_body_is_no_better_than_the_baseline(mannequin, dataset, truth):
    model = StandIn(mannequin, constant(truth["joints"][3], truth["vertices"][3]))
    r = evaluate_model(model, dataset, indices=range(1, COUNT), batch_size=3)
    assert r["prediction_spread"] == pytest.approx(0.0, abs=1e-3)
    assert r["mpjpe"] > r["baseline"]["mpjpe"] - 0.5 and r["pve"] > r["baseline"]["pve"] - 0.5


def test_the_ground_truth_scores_zero_with_the_true_spread(mannequin, dataset, truth):
    r = evaluate_model(StandIn(mannequin, oracle(truth)), dataset, batch_size=4)
    for key in ("mpjpe", "pa_mpjpe", "pve"):
        assert r[key] == pytest.approx(0.0, abs=1e-3), key
        assert r["baseline"][key] > 10, key
    assert r["prediction_spread"] == pytest.approx(r["gt_spread"], abs=1e-6)
    gt14 = lsp14_pelvis_aligned(truth["joints"].double())
    assert r["gt_spread"] == pytest.approx(1000 * spread(gt14), abs=1e-6)
    assert constant_predictor_warnings(r) == []


def test_report_shows_baseline_rows_and_spreads(mannequin, dataset, tmp_path):
    from engine.model.pymaf import ModelConfig, PyMAF

    torch.manual_seed(0)
    model = PyMAF(mannequin, ModelConfig(backbone_depth=18))              # untrained: near-constant output
    r = evaluate_model(model, dataset, indices=range(6), batch_size=3)
    assert set(r["baseline"]) == {"mpjpe", "pa_mpjpe", "pve"} and r["prediction_spread"] < r["gt_spread"]
    text = write_report(r, tmp_path, header={"checkpoint": "none"}).read_text()
    assert "| metric | value | mean-pose baseline |" in text
    assert f"| MPJPE (mm) | {r['mpjpe']:.1f} | {r['baseline']['mpjpe']:.1f} |" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {BASELINE_NAME} |"))
    assert row.split(" | ")[1:4] == [f"{r['baseline'][k]:.1f}" for k in ("mpjpe", "pa_mpjpe", "pve")]
    assert f"prediction spread {r['prediction_spread']:.1f} mm vs ground truth {r['gt_spread']:.1f} mm" in text
    assert "**Warning:** the predictions barely vary" in text
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["baseline"]["pve"] == pytest.approx(r["baseline"]["pve"])
    assert saved["prediction_spread"] == pytest.approx(r["prediction_spread"])
