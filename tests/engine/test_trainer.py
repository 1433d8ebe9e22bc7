"""The trainer: the 'tiny' configuration overfits a small fixed set on the CPU, a resumed
run continues the same loss curve, and its files (CSV, PNG, checkpoints) are usable;
evaluations do not change the curve, --init starts from another file's weights, a
SIGTERM saves a checkpoint that resumes the same curve, and checkpoints come by time too."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.model.checkpoint import CheckpointError, load_pymaf, read_checkpoint
from engine.train.configs import EVAL_SEED, TrainConfig, config_names, get_config
from engine.train.trainer import (EXIT_INTERRUPTED, StepBatchSampler, StopRequest, Trainer, build_parser,
                                  checkpoint_path, latest_checkpoint, main)
from tests.engine.fake_batch import FakeDataset


@pytest.fixture(scope="module")
def samples16(mannequin):
    return FakeDataset(mannequin, 16, seed=11)


@pytest.fixture
def run_dir(tmp_path):
    """tmp_path, with the (large) checkpoints and weight files removed afterwards whatever the outcome."""
    yield tmp_path
    for p in tmp_path.rglob("*.pt*"):
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


# --- evaluation, initial weights, stopping and wall-time checkpoints -----------------------
def small_config(**overrides):
    """4 steps of batch 2: long enough to show a changed curve, short enough for the CPU."""
    return get_config("tiny", **{"batch_size": 2, "steps": 4, "checkpoint_every": 100, "log_every": 100,
                                 **overrides})


def curve(rows):
    """Log rows without the wall time, as written (so equality is bit-identity)."""
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


@pytest.fixture(scope="module")
def reference(mannequin, samples16, tmp_path_factory):
    """An uninterrupted 4-step run of ``small_config()`` without evaluation (one checkpoint)."""
    out = tmp_path_factory.mktemp("reference")
    trainer = Trainer(small_config(), out, device="cpu", dataset=samples16, body=mannequin, log=quiet)
    trainer.train()
    yield trainer
    for p in out.glob("checkpoint_*.pt"):
        p.unlink()


def test_evaluation_does_not_change_the_curve(reference, mannequin, samples16, run_dir):
    cfg = small_config(eval_every=2, eval_count=2)
    trainer = Trainer(cfg, run_dir, device="cpu", dataset=samples16, eval_dataset=samples16, body=mannequin,
                      log=quiet)
    trainer.train()
    assert [r["step"] for r in trainer.eval_history] == [2, 4]
    assert curve(read_log(run_dir / "log.csv")) == curve(read_log(reference.out_dir / "log.csv"))
    trainer.model.eval()
    trainer._evaluate()
    assert not trainer.model.training                                 # the mode it had


def test_init_from_another_runs_checkpoint(reference, mannequin, samples16, run_dir):
    source = latest_checkpoint(reference.out_dir)
    kwargs = {"device": "cpu", "dataset": samples16, "body": mannequin, "log": quiet}
    plain = Trainer(small_config(), run_dir / "plain", **kwargs)
    seeded_rng = torch.get_rng_state()
    full = Trainer(small_config(), run_dir / "full", init=source, **kwargs)
    assert torch.equal(torch.get_rng_state(), seeded_rng)            # the RNG starts fresh
    assert full.step == 0 and full.history == [] and full.optimizer.state_dict()["state"] == {}
    assert full.config.to_dict()["init"] == str(source.resolve()) and not full.config.init_trunk_only
    assert full.init_report["not_set"] == []
    theirs, seeded = reference.model.state_dict(), plain.model.state_dict()
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, theirs[key]), key

    trunk = Trainer(small_config(), run_dir / "trunk", init=source, init_trunk_only=True, **kwargs)
    assert trunk.config.init_trunk_only and "dp_head.predict_u.weight" in trunk.init_report["not_set"]
    for key, value in trunk.model.state_dict().items():
        expected = theirs if key.startswith("feature_extractor.") else seeded
        assert torch.equal(value, expected[key]), key
    # Both parts changed in the source run's 4 steps, so the checks above tell them apart.
    for key in ("feature_extractor.conv1.weight", "regressor.0.fc1.weight", "dp_head.predict_u.weight"):
        assert not torch.equal(theirs[key], seeded[key]), key

    # A bare torchvision-style ResNet (how ImageNet trunks come) gives the trunk too.
    bare = {k[len("feature_extractor."):]: v for k, v in theirs.items() if k.startswith("feature_extractor.")}
    bare.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(bare, run_dir / "resnet18.pth")
    imagenet = Trainer(small_config(), run_dir / "bare", init=run_dir / "resnet18.pth", init_trunk_only=True,
                       **kwargs)
    assert torch.equal(imagenet.model.state_dict()["feature_extractor.layer4.1.bn2.running_var"],
                       theirs["feature_extractor.layer4.1.bn2.running_var"])


def test_init_refuses_a_file_that_does_not_fit(reference, mannequin, samples16, run_dir):
    kwargs = {"device": "cpu", "dataset": samples16, "body": mannequin, "log": quiet}
    weights = dict(reference.model.state_dict())
    weights["regressor.0.fc1.weight"] = torch.zeros(3, 3)
    torch.save({"model": weights}, run_dir / "bad.pt")
    with pytest.raises(CheckpointError, match=r"regressor\.0\.fc1\.weight has shape \[3, 3\]"):
        Trainer(small_config(), run_dir / "bad", init=run_dir / "bad.pt", **kwargs)
    # e.g. a ResNet-18 trunk for a ResNet-34: every key fits, but the trunk would be half set
    del weights["regressor.0.fc1.weight"], weights["feature_extractor.layer4.1.conv2.weight"]
    torch.save({"model": weights}, run_dir / "partial.pt")
    with pytest.raises(CheckpointError, match=r"feature_extractor\.layer4\.1\.conv2\.weight of this run's trunk"):
        Trainer(small_config(), run_dir / "partial", init=run_dir / "partial.pt", init_trunk_only=True, **kwargs)
    with pytest.raises(ValueError, match="one of them"):
        Trainer(small_config(), run_dir / "both", init=run_dir / "bad.pt", resume=True, **kwargs)
    assert main(["--config", "tiny", "--out", str(run_dir / "cli"), "--resume", "--init", "x.pt"]) == 2


# The trainer's command line in a child process, on the 16 fake samples instead of rendered ones.
CHILD = """
import sys
import torch
torch.set_num_threads(int(sys.argv[1]))          # the parent's: same arithmetic, same bits
from engine.train import trainer
from tests.engine.fake_batch import FakeDataset
trainer.synthetic_dataset = lambda seed, size, body, cache_dir=None: FakeDataset(body, 16, seed=11)
sys.exit(trainer.main(sys.argv[2:]))
"""


def wait_for_rows(path, proc, timeout=180.0):
    deadline = time.monotonic() + timeout
    while not (path.exists() and read_log(path)):
        assert proc.poll() is None, f"the run ended early:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "no log row in time"
        time.sleep(0.02)


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX process groups")
def test_sigterm_saves_and_resume_continues_the_curve(reference, mannequin, samples16, run_dir):
    # To the whole process group, as a scheduler or Ctrl-C does: the data worker must survive it.
    repo = Path(__file__).resolve().parents[2]
    args = ["--config", "tiny", "--out", str(run_dir), "--steps", "4", "--batch-size", "2",
            "--checkpoint-every", "100", "--device", "cpu", "--workers", "1"]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(torch.get_num_threads()), *args], cwd=repo,
                            env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_rows(run_dir / "log.csv", proc)
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=180)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output, output
    last = int(read_log(run_dir / "log.csv")[-1]["step"])
    assert last < 4 and latest_checkpoint(run_dir) == checkpoint_path(run_dir, last)

    resumed = Trainer(small_config(), run_dir, device="cpu", dataset=samples16, body=mannequin, resume=True,
                      runtime_overrides={"num_workers": 0, "checkpoint_minutes": 45}, log=quiet)
    assert resumed.step == last and resumed.config.checkpoint_minutes == 45   # runtime: may change
    resumed.train()
    assert curve(read_log(run_dir / "log.csv")) == curve(read_log(reference.out_dir / "log.csv"))


def test_a_second_signal_exits_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert signal.getsignal(signal.SIGINT) == stop.handle
        signal.raise_signal(signal.SIGTERM)
        assert stop.signal_name == "SIGTERM"
        with pytest.raises(SystemExit) as exc:
            signal.raise_signal(signal.SIGINT)
        assert exc.value.code == EXIT_INTERRUPTED
    assert signal.getsignal(signal.SIGTERM) == before


def test_checkpoints_by_wall_time(mannequin, samples16, run_dir):
    kwargs = {"device": "cpu", "dataset": samples16, "body": mannequin, "log": quiet}
    cfg = small_config(steps=2, checkpoint_minutes=1e-5)             # due after every step
    Trainer(cfg, run_dir, **kwargs).train()                           # by steps: at the end only
    assert sorted(run_dir.glob("checkpoint_*.pt")) == [checkpoint_path(run_dir, s) for s in (1, 2)]
    args = build_parser().parse_args(["--out", "x", "--checkpoint-minutes", "0.5"])
    assert args.checkpoint_minutes == 0.5


def test_blaze_configurations_train_the_heads_only(mannequin, samples16, run_dir):
    """The BlazePose-trunk configurations: one budget for the ablation, the trunk frozen and out
    of the checkpoint, the loss falls on a small fixed set."""
    from engine.landmarks.assets import assets_dir

    if not (assets_dir() / "blazepose_full.pt").is_file():
        pytest.skip("the converted landmark model is missing (python3 build.py setup)")
    names = ("blaze", "blaze_grid", "blaze_global", "blaze_no_pyramid")
    budgets = {(c.batch_size, c.lr, c.steps, c.data_size, c.eval_count) for c in map(get_config, names)}
    assert len(budgets) == 1 and all(get_config(n).model.trunk == "blazepose-full" for n in names)
    assert TrainConfig.from_dict(get_config("blaze").to_dict()) == get_config("blaze")
    cfg = get_config("blaze", steps=12, batch_size=8, num_workers=0, eval_every=0, checkpoint_every=12, log_every=4)
    trainer = Trainer(cfg, run_dir, device="cpu", dataset=samples16, body=mannequin, log=quiet)
    trunk_before = {k: v.clone() for k, v in trainer.model._blaze.state_dict().items()}
    losses = np.array([r["loss"] for r in trainer.train()])
    assert np.isfinite(losses).all() and losses[-4:].mean() < losses[:4].mean(), losses
    after = trainer.model._blaze.state_dict()
    assert all(torch.equal(trunk_before[k], after[k]) for k in after)
    saved = read_checkpoint(checkpoint_path(run_dir, 12))
    assert saved["config"]["trunk"] == "blazepose-full"
    assert not [k for k in saved["model"] if k.startswith(("_blaze", "feature_extractor", "deconv_layers"))]
    assert any(k.startswith("neck.2.") for k in saved["model"])
    # loaded back (evaluation, the engine): the converted trunk is attached again
    loaded, _info = load_pymaf(checkpoint_path(run_dir, 12))
    crops = loaded.prepare_crops(torch.from_numpy(np.stack([samples16[i]["image"] for i in range(2)])))
    with torch.no_grad():
        torch.testing.assert_close(loaded(crops).final.vertices, trainer.model.eval()(crops).final.vertices)
