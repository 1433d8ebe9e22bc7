"""Real people with pseudo-labels: photos shipped in registry packages, labelled by the
default estimator (the person detector, BlazePose GHUM landmarks, our fit onto the rig).

Training code (never imported at run time). The synthetic renders teach exact geometry;
these few real photos show the heads real skin, cloth and light. Their labels are only as
good as the landmark fit, so they are a minority of the samples (``TrainConfig.pseudo_size``).
The measurement clips (dancer.mp4, vtest.avi) and the photos the accuracy report measures
(scikit-image's astronaut and camera) are never among them.

1. ``label_photos(out)``: detect the people in each of ``TRAINING_PHOTOS``, run the landmark
   model on each box (a single frame: ``PersonFollower``), fit the rig (``fit_track``) and
   store per person: photo name, image size, focal, the detector box, rotations, betas and
   translation (``LABELS_FORMAT``). The focal is the engine's default (55 degree field of view).
2. ``PseudoLabelledPeople(labels, length, seed)``: a map-style dataset of samples of the
   data contract (``engine.data.sample``): sample ``i`` is person ``i mod n`` cropped from a
   jittered detector box (as the synthetic set jitters its boxes) with photometric noise;
   keypoints2d / joints3d / pose / betas / cam_crop computed from the fitted body exactly
   as the synthetic set computes them from its ground truth; no IUV labels (``has_iuv`` 0).

    python -m engine.data.pseudo OUT.npz [--landmark-model full]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from engine.data import appearance
from engine.data.registry_photos import TRAINING_PHOTOS, registry_photo
from engine.data.sample import IUV_SIZE, dataset_index
from engine.data.synthetic import detector_like_box, keypoint_labels
from engine.preprocess import crop_person

LABELS_FORMAT = "pymaf-pseudo-labels/1"
BOX_SCALE_JITTER, BOX_ASPECT_JITTER, BOX_SHIFT_JITTER = 0.15, 0.1, 0.08   # a bit wider than the renders'
MIN_PERSON_PX = 120          # smaller people carry too little for a 224 crop's labels


def label_photos(out, landmark_model: str = "full", photos=TRAINING_PHOTOS, log=print) -> dict:
    """Write the pseudo-labels of ``photos`` ((source, name) as ``registry_photo`` takes) to
    ``out`` (.npz). -> the arrays written."""
    from engine.body.mannequin import default_mannequin
    from engine.fit.correspondence import landmark_basis
    from engine.fit.fit import fit_track
    from engine.landmarks.assets import converted_path
    from engine.landmarks.landmarker import Landmarker, PersonFollower
    from engine.people.detect import make_detector
    from engine.common.camera import focal_from_fov
    from engine.run import DEFAULT_FOV_DEG

    detector = make_detector("default")
    follower = PersonFollower(Landmarker(converted_path(landmark_model), landmark_model, device="cpu"))
    basis = landmark_basis(default_mannequin())
    rows = {k: [] for k in ("photo", "image_size", "focal_px", "box_xyxy", "pose_rotmat", "betas", "transl")}
    for source, name in photos:
        image = registry_photo(source, name)
        h, w = image.shape[:2]
        focal = float(focal_from_fov(DEFAULT_FOV_DEG, w))
        boxes = [b for b in detector.detect(image) if b[3] - b[1] >= MIN_PERSON_PX]
        follower.next_roi.clear()
        seen = follower.step(image, [(k, b[:4]) for k, b in enumerate(boxes)])
        kept = 0
        for k, obs in sorted(seen.items()):
            if obs is None:
                continue
            fit = fit_track(obs.world[None], obs.image[None], obs.visibility[None], np.array([obs.presence]),
                            focal, (w / 2, h / 2), body=basis)
            if not fit.valid[0]:
                continue
            rows["photo"].append(f"{source}:{name}")
            rows["image_size"].append((w, h))
            rows["focal_px"].append(focal)
            rows["box_xyxy"].append(np.asarray(boxes[k][:4], np.float64))
            rows["pose_rotmat"].append(fit.rotmat[0])
            rows["betas"].append(fit.betas)
            rows["transl"].append(fit.transl[0])
            kept += 1
        log(f"{source}:{name}: {len(boxes)} box(es) of >= {MIN_PERSON_PX} px, {kept} person(s) fitted")
    if not rows["photo"]:
        raise RuntimeError("no person was fitted on any training photo")
    arrays = {k: np.asarray(v) if k == "photo" else np.asarray(v, np.float64) for k, v in rows.items()}
    arrays["format"] = np.asarray(LABELS_FORMAT)
    arrays["landmark_model"] = np.asarray(landmark_model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return arrays


def read_labels(path) -> dict:
    """The arrays of a ``label_photos`` file (plain arrays; no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != LABELS_FORMAT:
            raise ValueError(f"{path}: not a {LABELS_FORMAT} file")
        return {k: z[k] for k in z.files}


class PseudoLabelledPeople:
    """``length`` augmented samples of the people in a ``label_photos`` file (see the module)."""

    def __init__(self, labels, length: int, seed: int = 0, body=None):
        self.labels_path = str(labels)
        self.labels = read_labels(labels)
        self.length, self.seed = int(length), int(seed)
        self._body = body
        self._smpl = None
        self._images: dict = {}
        self._posed: dict = {}

    def __len__(self) -> int:
        return self.length

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_smpl=None, _images={}, _posed={})   # rebuilt lazily in a worker
        return state

    def image(self, person: int) -> np.ndarray:
        source, name = str(self.labels["photo"][person]).split(":", 1)
        if (source, name) not in self._images:
            self._images[source, name] = registry_photo(source, name)
        return self._images[source, name]

    def posed(self, person: int) -> np.ndarray:
        """(49, 3) joints of the fitted body, camera axes, no translation."""
        if person not in self._posed:
            import torch

            if self._smpl is None:
                from engine.body.mannequin import default_mannequin
                from engine.body.smpl_torch import SMPL
                self._smpl = SMPL(self._body if self._body is not None else default_mannequin()).eval()
            with torch.no_grad():
                out = self._smpl.pose(torch.as_tensor(self.labels["pose_rotmat"][person][None], dtype=torch.float32),
                                      torch.as_tensor(self.labels["betas"][person][None], dtype=torch.float32))
            self._posed[person] = out.joints49[0].double().numpy()
        return self._posed[person]

    def __getitem__(self, index: int) -> dict:
        index = dataset_index(index, self.length)
        person = index % len(self.labels["photo"])
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        box = detector_like_box(rng, self.labels["box_xyxy"][person], BOX_SCALE_JITTER, BOX_ASPECT_JITTER,
                                BOX_SHIFT_JITTER)
        centre, side = box[:2], float(box[2])
        image = self.image(person)
        crop = crop_person(image, centre, side)
        inside = crop_person(np.full_like(image, 255), centre, side)
        crop = ((appearance.photometric(rng, crop).astype(np.uint16) * inside + 127) // 255).astype(np.uint8)
        return pseudo_sample(crop, self.posed(person), self.labels["pose_rotmat"][person],
                             self.labels["betas"][person], self.labels["transl"][person],
                             float(self.labels["focal_px"][person]), centre, side, self.labels["image_size"][person])


def pseudo_sample(crop, joints49, rotmat, betas, transl, focal, centre, side, image_size) -> dict:
    """One sample of the data contract from a fitted body: crop (224, 224, 3) uint8; joints49
    (49, 3) camera axes without translation; rotmat (24, 3, 3); betas (10,); transl (3,);
    focal px; square box centre (2,) and side; image_size (W, H). 2D confidence 1 inside
    the image; no IUV labels."""
    keypoints2d, joints3d, cam_crop, _ = keypoint_labels(joints49, np.asarray(transl, np.float64), focal, centre,
                                                         side, image_size)
    f32 = np.float32
    return {
        "image": np.ascontiguousarray(crop, np.uint8),
        "keypoints2d": keypoints2d.astype(f32),
        "joints3d": joints3d.astype(f32),
        "pose_rotmat": np.asarray(rotmat, f32),
        "betas": np.asarray(betas, f32),
        "cam_crop": cam_crop.astype(f32),
        "transl": np.asarray(transl, f32),
        "focal_px": np.asarray(focal, f32),
        "box": np.array([centre[0], centre[1], side], f32),
        "image_size": np.asarray(image_size, f32),
        "iuv": np.zeros((3, IUV_SIZE, IUV_SIZE), f32),
        "silhouette": np.zeros((IUV_SIZE, IUV_SIZE), np.uint8),
        "has_smpl": np.asarray(1.0, f32),
        "has_iuv": np.asarray(0.0, f32),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.data.pseudo",
                                description="Pseudo-label the people in the registry photos for training.")
    p.add_argument("out", help="labels file to write (.npz)")
    p.add_argument("--landmark-model", default="full", choices=("lite", "full", "heavy"))
    args = p.parse_args(argv)
    arrays = label_photos(args.out, args.landmark_model)
    print(f"wrote {args.out}: {len(arrays['photo'])} people from {len(set(arrays['photo'].tolist()))} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
