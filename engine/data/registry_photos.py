"""Real photos that ship inside registry packages: Debian's ``opencv-doc`` samples and
scikit-image's data. Measurement (the labelled people, engine/measure/label_people.py) and
training (real negatives for the learned detector, engine/people/train_detector.py; real
people with pseudo-labels for the PyMAF heads, engine/data/pseudo.py) read them from here;
nothing at run time does, and none is committed.

``NEGATIVE_PHOTOS``: the ones with no person in them (each looked at), streets and a
building with posts, bollards, doors and windows among them: real scenes a detector must
not call people.
"""
from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

OPENCV_DOC = {"package": "opencv-doc (Debian 12 bookworm)", "version": "4.6.0+dfsg-12",
              "fetch": "apt-get download opencv-doc; dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -x"}
OPENCV_DOC_DATA = "./usr/share/doc/opencv-doc/examples/data/"
NEGATIVE_PHOTOS = (
    # opencv-doc: two streets of Leuven (houses, posts, a bollard), a building with its
    # entrance, aerial views, a car, a palace, objects and textures
    ("opencv-doc", "leuvenA.jpg"), ("opencv-doc", "leuvenB.jpg"), ("opencv-doc", "building.jpg"),
    ("opencv-doc", "home.jpg"), ("opencv-doc", "aero1.jpg"), ("opencv-doc", "aero3.jpg"),
    ("opencv-doc", "licenseplate_motion.jpg"), ("opencv-doc", "aloeL.jpg"), ("opencv-doc", "board.jpg"),
    ("opencv-doc", "box_in_scene.png"), ("opencv-doc", "fruits.jpg"), ("opencv-doc", "rubberwhale1.png"),
    ("opencv-doc", "squirrel_cls.jpg"), ("opencv-doc", "stuff.jpg"), ("opencv-doc", "baboon.jpg"),
    # scikit-image
    ("skimage", "coffee"), ("skimage", "chelsea"), ("skimage", "rocket"), ("skimage", "brick"),
    ("skimage", "grass"), ("skimage", "gravel"),
)

# photos of people used for training (pseudo-labels, engine/data/pseudo.py): none of the
# photos the accuracy report measures (scikit-image's astronaut and camera)
TRAINING_PHOTOS = (("opencv-doc", "messi5.jpg"), ("opencv-doc", "basketball1.png"),
                   ("opencv-doc", "basketball2.png"))


def opencv_doc_image(name: str, cache: Path = Path(tempfile.gettempdir()) / "opencv-doc") -> np.ndarray:
    """An RGB image from Debian's opencv-doc package (the .deb downloaded once with apt-get
    into ``cache``, only that member extracted)."""
    out = cache / name
    if not out.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        debs = sorted(cache.glob("opencv-doc_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", "opencv-doc"], cwd=cache, check=True)
            debs = sorted(cache.glob("opencv-doc_*.deb"))
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            out.write_bytes(t.extractfile(OPENCV_DOC_DATA + name).read())
    return cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)


def skimage_image(name: str) -> np.ndarray:
    """An RGB image of ``skimage.data`` (grey ones repeated to 3 channels)."""
    from skimage import data

    im = getattr(data, name)()
    return np.dstack([im] * 3) if im.ndim == 2 else im[..., :3]


def registry_photo(source: str, name: str) -> np.ndarray:
    """One photo as RGB uint8: ``source`` "opencv-doc" (file name) or "skimage" (data name)."""
    return opencv_doc_image(name) if source == "opencv-doc" else skimage_image(name)


def negative_photos() -> list:
    """The ``NEGATIVE_PHOTOS`` as RGB uint8 arrays."""
    return [registry_photo(src, n) for src, n in NEGATIVE_PHOTOS]
