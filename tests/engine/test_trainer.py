"""The trainer: the 'tiny' configuration overfits a small fixed set on the CPU, a resumed
run continues the same loss curve, and its files (CSV, PNG, checkpoints) are usable."""
import csv
import time

import numpy as np
import pytest
import torch

from engine.model.checkpoint import load_pymaf, read_checkpoint
from engine.train.configs import EVAL_SEED, TrainConfig, config_names, get_config
from engine.train.trainer import StepBatchSampler, Trainer, build_parser
from tests.engine.fake_batch import FakeDataset


@pytest.fixture(scope="module")
def samples16(mannequin):
    return FakeDataset(mannequin, 16, seed=11)


@pytest.fixture
def run_dir(tmp_path):
    """tmp_path, with the (large) checkpoints removed afterwards whatever the outcome."""
    yield tmp_path
    for p in tmp_path.rglob("checkpoint_*.pt"):
        p.unlink()


def read_log(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def quiet(_line):
    pass


def test_tiny_overfits_a_small_set(mannequin, samples16, run_dir):
    tmp_path = run_dir
    cfg = get_config("tiny", steps=20, checkpoint_every=20)
    assert cfg.batch_size == 8 and cfg.model.backbone_depth == 18 and cfg.num_workers == 0
    trainer = Trainer(cfg, tmp_path, device="cpu", dataset=samples16, body=mannequin, log=quiet)
    start = time.perf_counter()
    history = trainer.train()
    wall = time.perf_counter() - start
    losses = np.array([r["loss"] for r in history])
    assert len(losses) == 20 and np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.6 * losses[:5].mean(), losses

    rows = read_log(tmp_path / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    assert {"time", "loss", "kp2d_3", "pose_1", "iuv_index"} <= set(rows[0])
    assert np.allclose([float(r["loss"]) for r in rows], losses)
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    path = tmp_path / "checkpoint_00000020.pt"
    model, info = load_pymaf(path)                                   # strict, weights_only
    assert info["config"]["backbone_depth"] == 18
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.cpu()), key
    obj = read_checkpoint(path)
    assert obj["step"] == 20 and set(obj["optimizer"]) == {"state", "param_groups"}
    assert TrainConfig.from_dict(obj["train_config"]) == cfg
    assert {"torch", "numpy", "python"} <= set(obj["rng"])
    # Speed is a benchmark figure (docs/benchmarks.md), not a pass/fail condition here.
    print(f"tiny: {len(history)} steps in {wall:.0f} s")


def test_resume_continues_the_same_curve(mannequin, samples16, run_dir):
    tmp_path = run_dir
    cfg = get_config("tiny", batch_size=2, steps=6, checkpoint_every=3, log_every=100)
    whole = Trainer(cfg, tmp_path / "whole", device="cpu", dataset=samples16, body=mannequin,
                    keep_checkpoints=1, log=quiet)
    whole.train()

    first = Trainer(cfg, tmp_path / "split", device="cpu", dataset=samples16, body=mannequin,
                    steps_override=3, keep_checkpoints=1, log=quiet)
    first.train()
    second = Trainer(cfg, tmp_path / "split", device="cpu", dataset=samples16, body=mannequin,
                     resume=True, steps_override=6, keep_checkpoints=1, log=quiet)
    assert second.step == 3 and len(second.history) == 3
    second.train()

    a, b = read_log(tmp_path / "whole" / "log.csv"), read_log(tmp_path / "split" / "log.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(s) for s in range(1, 7)]
    for key in a[0]:
        if key != "time":
            assert np.allclose([float(r[key]) for r in a], [float(r[key]) for r in b], rtol=1e-6, atol=0), key
    for key, value in whole.model.state_dict().items():
        assert torch.allclose(value.float(), second.model.state_dict()[key].float(), rtol=1e-6, atol=1e-7), key


def test_a_no_aux_baseline_trains(mannequin, samples16, run_dir):
    tmp_path = run_dir
    cfg = get_config("ief_global", depth=18, batch_size=2, steps=1, num_workers=0, eval_every=0)
    assert not cfg.with_aux and cfg.model.feature_mode == "global"
    trainer = Trainer(cfg, tmp_path, device="cpu", dataset=samples16, body=mannequin, log=quiet)
    history = trainer.train()
    assert np.isfinite(history[0]["loss"]) and not any(k.startswith("iuv") for k in history[0])
    assert trainer.model.dp_head is None


def test_named_configurations():
    assert set(config_names()) >= {"pymaf", "ief_global", "grid", "maf_no_pyramid", "pymaf_no_aux",
                                   "grid_no_aux", "tiny"}
    expect = {"pymaf": ("maf", True, True), "ief_global": ("global", True, False), "grid": ("grid", True, True),
              "grid_no_aux": ("grid", True, False), "maf_no_pyramid": ("maf", False, True),
              "pymaf_no_aux": ("maf", True, False)}
    for name, (mode, pyramid, aux) in expect.items():
        cfg = get_config(name)
        assert (cfg.model.feature_mode, cfg.model.with_iuv_head, cfg.with_aux) == (mode, aux, aux), name
        if mode != "global":
            assert cfg.model.use_pyramid == pyramid, name
        assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.model.backbone_depth) == (64, 5e-5, 0.0, 50)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert get_config("pymaf", depth=18).model.backbone_depth == 18
    with pytest.raises(ValueError):
        get_config("pymaf", data_seed=EVAL_SEED)
    with pytest.raises(ValueError):
        get_config("nope")
    args = build_parser().parse_args(["--config", "tiny", "--out", "x", "--steps", "5", "--depth", "34"])
    assert (args.steps, args.depth, args.resume) == (5, 34, False)


def test_batch_order_depends_only_on_the_step():
    whole = StepBatchSampler(10, 4, seed=3, total_steps=8)
    batches = list(whole)
    assert batches[5:] == list(StepBatchSampler(10, 4, seed=3, start_step=5, total_steps=8))
    flat = [i for b in batches[:5] for i in b]                        # 20 = two epochs
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert batches != list(StepBatchSampler(10, 4, seed=4, total_steps=8))
