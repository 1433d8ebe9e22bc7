"""Pseudo-labelled real people (engine.data.pseudo): their labels follow the synthetic set's
conventions exactly, the fit's translation means what the body layer's does, the dataset is
deterministic and mixes into the trainer's index space, and the whole chain (detector,
landmarks, fit) labels a real photo where its person is."""
import numpy as np
import pytest
import torch

from engine.body.smpl_torch import SMPL
from engine.data.pseudo import LABELS_FORMAT, PseudoLabelledPeople, label_photos, pseudo_sample, read_labels
from engine.data.sample import check_sample
from engine.data.synthetic import SyntheticPeople
from engine.landmarks.assets import converted_path
from tests.engine.test_fit import run_fit, synthetic_track


def test_labels_follow_the_synthetic_sets_conventions(mannequin):
    """The same body, camera and box give the synthetic set's own labels."""
    ds = SyntheticPeople(length=3, seed=5, body=mannequin)
    for i in range(3):
        s = ds[i]
        joints49 = ds.pose_body(s["pose_rotmat"].astype(np.float64), s["betas"].astype(np.float64))[1]
        p = pseudo_sample(s["image"], joints49, s["pose_rotmat"], s["betas"], s["transl"].astype(np.float64),
                          float(s["focal_px"]), s["box"][:2].astype(np.float64), float(s["box"][2]), s["image_size"])
        check_sample(p)
        for key in ("keypoints2d", "joints3d", "cam_crop", "box", "image_size", "pose_rotmat", "betas"):
            np.testing.assert_allclose(p[key], s[key], atol=2e-4, err_msg=key)
        assert (p["has_iuv"], p["has_smpl"]) == (0.0, 1.0)


def test_fit_translation_is_the_body_layers(mannequin):
    """The landmark fit's (rotmat, betas, transl) put the body layer's joints where the fit's are."""
    from engine.fit.correspondence import landmark_basis

    basis = landmark_basis(mannequin)
    track = synthetic_track(mannequin, basis, "walk", 4, seed=3, betas=np.random.default_rng(5).normal(size=10))
    fit = run_fit(track, basis)
    with torch.no_grad():
        out = SMPL(mannequin).pose(torch.as_tensor(fit.rotmat, dtype=torch.float32),
                                   torch.as_tensor(np.repeat(fit.betas[None], 4, 0), dtype=torch.float32))
    np.testing.assert_allclose(out.joints24.numpy() + fit.transl[:, None], fit.joints, atol=2e-3)


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory):
    """A hand-made labels file: one standing body placed in scikit-image's astronaut photo."""
    from engine.data.poses import random_pose

    path = tmp_path_factory.mktemp("pseudo") / "labels.npz"
    rotmat = random_pose(np.random.default_rng(0))
    rotmat[0] = np.diag([1.0, -1.0, -1.0])          # upright, facing the camera
    np.savez(path, format=np.asarray(LABELS_FORMAT), landmark_model=np.asarray("full"),
             photo=np.asarray(["skimage:astronaut"]), image_size=np.array([[512.0, 512.0]]),
             focal_px=np.array([492.0]), box_xyxy=np.array([[150.0, 40.0, 380.0, 500.0]]),
             pose_rotmat=rotmat[None], betas=np.zeros((1, 10)), transl=np.array([[0.0, 0.2, 2.5]]))
    return path


def test_dataset_is_deterministic_and_valid(labels_file, mannequin):
    ds = PseudoLabelledPeople(labels_file, 6, seed=2, body=mannequin)
    a, b, c = ds[1], ds[1], ds[2]
    check_sample(a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not np.array_equal(a["box"], c["box"])          # each index its own box jitter
    # the labels move with the box: image points are the same whichever crop shows them
    from engine.common.camera import crop_points_to_image
    pa = crop_points_to_image(a["keypoints2d"][None, :, :2], a["box"][None, :2], a["box"][None, 2])[0]
    pc = crop_points_to_image(c["keypoints2d"][None, :, :2], c["box"][None, :2], c["box"][None, 2])[0]
    np.testing.assert_allclose(pa, pc, atol=1e-3)
    with pytest.raises(IndexError):
        ds[6]


def test_trainer_draws_renders_and_real_people(labels_file, mannequin, tmp_path):
    from engine.train.configs import get_config
    from engine.train.trainer import Trainer
    from tests.engine.fake_batch import FakeDataset

    cfg = get_config("tiny", data_size=16, pseudo_labels=str(labels_file), pseudo_size=4)
    trainer = Trainer(cfg, tmp_path, device="cpu", dataset=FakeDataset(mannequin, 16, seed=11), body=mannequin,
                      log=lambda _line: None)
    assert trainer.num_samples == 20 and len(trainer.dataset) == 20
    assert trainer.dataset[15]["has_iuv"] == 1.0 and trainer.dataset[16]["has_iuv"] == 0.0
    with pytest.raises(ValueError):
        get_config("tiny", pseudo_size=4)                  # a size without a labels file


@pytest.mark.skipif(not converted_path("full").is_file(), reason="converted BlazePose models not set up")
def test_a_real_photo_is_labelled_where_its_person_is(tmp_path, mannequin):
    """Detector -> landmarks -> fit on a real photo: the pseudo-labels' shoulders, elbows,
    wrists and knees land on the landmark model's own 2D points (within 6 % of the box)."""
    from engine.landmarks.landmarker import Landmarker, PersonFollower

    arrays = label_photos(tmp_path / "labels.npz", photos=(("skimage", "camera"),), log=lambda _l: None)
    labels = read_labels(tmp_path / "labels.npz")
    assert len(labels["photo"]) == 1 and str(labels["photo"][0]) == "skimage:camera"
    np.testing.assert_array_equal(arrays["transl"], labels["transl"])
    ds = PseudoLabelledPeople(tmp_path / "labels.npz", 1, body=mannequin)
    image = ds.image(0)
    box = labels["box_xyxy"][0]
    follower = PersonFollower(Landmarker(converted_path("full"), "full", device="cpu"))
    obs = follower.step(image, [(0, box)])[0]
    from engine.common.camera import perspective_project
    h, w = image.shape[:2]
    px = perspective_project(ds.posed(0)[25:], labels["transl"][0], float(labels["focal_px"][0]),
                             np.array([w / 2, h / 2]))
    # SPIN's 24 joints (49-set 25..): r/l shoulder 33/34 -> 8/9, elbows 7/10, wrists 6/11, hips 2/3, knees 1/4
    spin = [8, 9, 7, 10, 6, 11, 1, 4]
    blaze = [12, 11, 14, 13, 16, 15, 26, 25]
    err = np.linalg.norm(px[spin] - obs.image[blaze], axis=1) / (box[3] - box[1])
    assert np.median(err) < 0.06, err


@pytest.mark.skipif(not converted_path("full").is_file(), reason="converted BlazePose models not set up")
def test_the_default_recipe_runs_resumes_and_ships_small_weights(labels_file, tmp_path, mannequin):
    """build.py train-default's recipe at toy size: both stages, then float16 weights without
    the IUV head that load for --estimator pymaf-blazepose; a rerun only re-exports."""
    import json
    import shutil

    from engine.model.checkpoint import load_pymaf
    from engine.train.default_recipe import main

    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(labels_file, out / "pseudo_labels.npz")     # skip the detector stage
    argv = ["--out", str(out), "--weights", str(tmp_path / "heads.pt"), "--synthetic-steps", "2",
            "--mixed-steps", "1", "--pseudo-size", "2", "--data-size", "4", "--eval-every", "0",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    record = json.loads((out / "recipe.json").read_text())
    assert set(record["seconds"]) == {"synthetic", "mixed", "export"}
    mixed = torch.load(out / "mixed" / "checkpoint_00000001.pt", weights_only=True, map_location="cpu")
    assert mixed["train_config"]["pseudo_size"] == 2 and mixed["train_config"]["init"].endswith("checkpoint_00000002.pt")
    model, info = load_pymaf(tmp_path / "heads.pt", body=mannequin)
    assert info["dtype"] == "float16" and model.config.blaze and not model.config.with_iuv_head
    assert model.config.regressor_width == 512 and (tmp_path / "heads.pt").stat().st_size < 20e6
    before = (out / "mixed" / "log.csv").read_text()
    assert main(argv) == 0                                    # done stages are not trained again
    assert (out / "mixed" / "log.csv").read_text() == before
    for p in out.rglob("*.pt"):
        p.unlink()


def test_bad_label_files_and_options_are_refused(tmp_path, labels_file):
    from engine.train.trainer import main

    other = tmp_path / "other.npz"
    np.savez(other, format=np.asarray("something else"), photo=np.asarray(["x:y"]))
    with pytest.raises(ValueError, match="not a pymaf-pseudo-labels/1 file"):
        read_labels(other)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, format=np.asarray(LABELS_FORMAT), photo=np.asarray([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        read_labels(pickled)                          # object arrays are never unpickled
    assert main(["--config", "tiny", "--out", str(tmp_path / "run"), "--pseudo-size", "4"]) == 2
    assert not (tmp_path / "run").exists()
