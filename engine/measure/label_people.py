"""Label people on real footage by hand: ``engine/measure/data/people_labels.json``.

Measurement code (never imported at run time). Workflow:

1. ``propose``: run the project's detectors ("default" and "hog", via
   ``engine.people.detect.make_detector``) on the chosen frames of every source, plus, for the
   static-camera vtest.avi, foreground blobs against the clip's median background (tight boxes;
   linked frame by frame over the whole clip, which gives a first guess of the person ids).
   Overlapping proposals are merged (IoU >= 0.3: the first source's box is kept, in the order
   motion, default, hog); each draft box carries ``"from"`` (which proposer made it)::

       python -m engine.measure.label_people propose --out /tmp/people_draft.json

2. ``sheet``: draw the labels onto the frames (box, id, colour per id; 50-px grid with
   coordinates every 100 px to read positions off; ignore regions hatched grey) as contact
   sheets, 2x2 frames per sheet at full resolution for vtest (so 50-px people stay visible)::

       python -m engine.measure.label_people sheet /tmp/people_draft.json --out-dir /tmp/sheets

3. Look at every sheet and edit the JSON: delete false boxes (posts, signs, a tripod, ...),
   add missed people, fix boxes (tight around the visible body, head to feet), fix ids (one
   id per person per video, kept across frames), set ``occluded`` (more than half hidden),
   add ignore regions. Re-render the sheets and look again until they are right. Copy the
   result to ``engine/measure/data/people_labels.json`` (``"from"`` keys may stay; they are
   ignored). ``tests/engine/test_people_labels.py`` checks the file is well-formed.

Format (``"format": "pymaf-people-labels", "version": 1``)::

    {"videos": {NAME: {"source": {...how to fetch it...}, "width": W, "height": H,
                        "frames": {"FRAME": [{"id": 1, "xyxy": [x0, y0, x1, y1], "occluded": false}, ...]},
                        "ignore": {"FRAME": [{"xyxy": [...], "why": "..."}]}}}}

FRAME is the 0-based frame index in the video (0 for a photo); xyxy in image pixels. A box
under 50 px tall carries ``"small": true`` (a person entering or leaving, or cut by the frame
edge: kept so ids stay continuous, not counted by a measurement that wants >= 50 px).
"""
from __future__ import annotations

import argparse
import colorsys
import json
from pathlib import Path

import cv2
import numpy as np

from engine.data.registry_photos import OPENCV_DOC, OPENCV_DOC_DATA, opencv_doc_image, skimage_image

ROOT = Path(__file__).resolve().parents[2]
FOOTAGE = ROOT.parent / "shared" / "footage"
LABELS = Path(__file__).resolve().parent / "data" / "people_labels.json"


def sources() -> dict:
    """Every labelled source: name -> (source record, frame indices)."""
    import skimage

    sk = {"package": "scikit-image (PyPI)", "version": skimage.__version__}
    doc = dict(OPENCV_DOC)
    return {
        "vtest.avi": ({"kind": "video", "path": "shared/footage/vtest.avi"}, list(range(0, 781, 13))),
        "dancer.mp4": ({"kind": "video", "path": "shared/footage/dancer.mp4"},
                       [int(round(x)) for x in np.linspace(0, 88, 12)]),
        "astronaut.png": ({"kind": "photo", **sk, "path": "skimage.data.astronaut()"}, [0]),
        "camera.png": ({"kind": "photo", **sk, "path": "skimage.data.camera()"}, [0]),
        "basketball1.png": ({"kind": "photo", **doc, "path": OPENCV_DOC_DATA[1:] + "basketball1.png"}, [0]),
        "basketball2.png": ({"kind": "photo", **doc, "path": OPENCV_DOC_DATA[1:] + "basketball2.png"}, [0]),
    }


def load_frames(name: str, record: dict, frames) -> dict:
    """{frame index: RGB image} of one source."""
    if record["kind"] == "video":
        want, got = set(frames), {}
        cap = cv2.VideoCapture(str(ROOT.parent / record["path"]))
        i = 0
        while want - set(got):
            ok, im = cap.read()
            if not ok:
                break
            if i in want:
                got[i] = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
            i += 1
        return got
    if record["package"].startswith("scikit-image"):
        return {0: skimage_image(name.split(".")[0])}
    return {0: opencv_doc_image(name)}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def _split(mask: np.ndarray, x: int, y: int, n: int = 0) -> list:
    """A blob wider than 0.6x its height (people walking side by side) -> one box per person:
    cut at the foreground column profile's minima near equal widths, each part's rows tightened."""
    h, w = mask.shape
    n = n or (max(1, int(round(w / (0.4 * h)))) if w > 0.6 * h else 1)
    prof, cuts = mask.sum(0), [0]
    for k in range(1, n):
        c, r = k * w // n, max(1, w // (4 * n))
        cuts.append(c - r + int(np.argmin(prof[c - r:c + r + 1])))
    cuts.append(w)
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        rows = np.flatnonzero(mask[:, a:b].sum(1) > 1)
        cols = np.flatnonzero(mask[:, a:b].sum(0) > 1)
        if len(rows) and len(cols):
            out.append([float(x + a + cols[0]), float(y + rows[0]), float(x + a + cols[-1] + 1), float(y + rows[-1] + 1)])
    return out


def motion_tracks(path: Path, min_h: int = 30) -> dict:
    """Foreground blobs of a static-camera video against its median background, linked frame
    to frame (greedy: nearest centre within 0.4 box heights, a track lost up to 10 frames may come back)
    -> {frame: [(id, [x0, y0, x1, y1]), ...]} for every frame."""
    cap, ims = cv2.VideoCapture(str(path)), []
    while True:
        ok, im = cap.read()
        if not ok:
            break
        ims.append(im)
    bg = np.median(np.stack(ims[::8]), axis=0).astype(np.int16)
    out, live, next_id = {}, {}, 1
    for f, im in enumerate(ims):
        fg = (np.abs(im.astype(np.int16) - bg).max(2) > 35).astype(np.uint8)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 15)))
        n, _, stats, _ = cv2.connectedComponentsWithStats(fg)
        boxes = []
        for x, y, w, h, a in stats[1:]:
            if h >= min_h and a >= 150 and w < 2.5 * h:
                boxes += _split(fg[y:y + h, x:x + w], x, y)
        cur, used = [], set()
        for b in sorted(boxes, key=lambda b: b[1] - b[3]):          # tall blobs first
            cx, cy, bh = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[3] - b[1]
            near = [(np.hypot(cx - (p[0] + p[2]) / 2, cy - (p[1] + p[3]) / 2) / bh, pid)
                    for pid, (p, last) in live.items() if pid not in used and f - last <= 10]
            d, pid = min(near, default=(1.0, None))
            if d >= 0.4:
                pid, next_id = next_id, next_id + 1
            used.add(pid)
            live[pid] = (b, f)
            cur.append((pid, b))
        out[f] = cur
    return out


def propose(args) -> None:
    from engine.people.detect import make_detector

    dets = {n: make_detector(n) for n in ("default", "hog")}
    labels = {"format": "pymaf-people-labels", "version": 1, "videos": {}}
    for name, (record, frames) in sources().items():
        if args.only and name not in args.only:
            continue
        images = load_frames(name, record, frames)
        moving = motion_tracks(ROOT.parent / record["path"]) if name == "vtest.avi" else {}
        h, w = next(iter(images.values())).shape[:2]
        entry = {"source": record, "width": w, "height": h, "frames": {}, "ignore": {}}
        for f in frames:
            boxes = [{"id": pid, "xyxy": b, "occluded": False, "from": "motion"} for pid, b in moving.get(f, [])]
            for dname, d in dets.items():
                for x0, y0, x1, y1, s in d.detect(images[f], f):
                    b = [round(float(v), 1) for v in (max(x0, 0), max(y0, 0), min(x1, w), min(y1, h))]
                    if s >= args.min_score and all(_iou(b, o["xyxy"]) < 0.3 for o in boxes):
                        boxes.append({"id": 0, "xyxy": b, "occluded": False, "from": f"{dname} {s:.2f}"})
            nid = max([b["id"] for b in boxes] + [1000])
            for b in boxes:           # detector boxes: ids 1001+ (per frame), to be fixed by hand
                if b["id"] == 0:
                    nid += 1
                    b["id"] = nid
            entry["frames"][str(f)] = boxes
        labels["videos"][name] = entry
        print(name, len(frames), "frames,", sum(map(len, entry["frames"].values())), "proposals", flush=True)
    write_labels(labels, Path(args.out))


def write_labels(labels: dict, path: Path) -> None:
    """JSON with one box per line (easy to edit by hand)."""
    def dump(x, ind):
        if isinstance(x, dict) and not ("xyxy" in x and ind > 3):
            items = [f'{" " * (ind + 1)}{json.dumps(k)}: {dump(v, ind + 1)}' for k, v in x.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * ind + "}" if items else "{}"
        if isinstance(x, list) and x and isinstance(x[0], dict):
            return "[\n" + ",\n".join(" " * (ind + 1) + dump(v, ind + 1) for v in x) + "\n" + " " * ind + "]"
        return json.dumps(x)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(labels, 0) + "\n")


def _colour(i: int) -> tuple:
    r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.9, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw(image: np.ndarray, boxes: list, ignore: list, title: str, grid: int = 50) -> np.ndarray:
    im = image.copy()
    h, w = im.shape[:2]
    for x in range(0, w, grid):
        cv2.line(im, (x, 0), (x, h), (255, 255, 255) if x % (2 * grid) == 0 else (160, 160, 160), 1)
    for y in range(0, h, grid):
        cv2.line(im, (0, y), (w, y), (255, 255, 255) if y % (2 * grid) == 0 else (160, 160, 160), 1)
    im = cv2.addWeighted(image, 0.75, im, 0.25, 0)
    for x in range(0, w, 2 * grid):
        cv2.putText(im, str(x), (x + 2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    for y in range(2 * grid, h, 2 * grid):
        cv2.putText(im, str(y), (2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    for r in ignore:
        x0, y0, x1, y1 = map(int, r["xyxy"])
        for k in range(x0 - (y1 - y0), x1, 8):
            cv2.line(im, (max(k, x0), y0 + max(0, x0 - k)), (min(k + (y1 - y0), x1), y1 - max(0, k + (y1 - y0) - x1)),
                     (128, 128, 128), 1)
        cv2.rectangle(im, (x0, y0), (x1, y1), (128, 128, 128), 1)
    for b in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in b["xyxy"])
        c = _colour(b["id"])
        cv2.rectangle(im, (x0, y0), (x1, y1), c, 1 if b.get("occluded") else 2)
        tag = str(b["id"]) + ("o" if b.get("occluded") else "") + ("s" if b.get("small") else "")
        cv2.putText(im, tag, (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3)
        cv2.putText(im, tag, (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, c, 1)
    cv2.putText(im, title, (5, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4)
    cv2.putText(im, title, (5, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
    return im


def sheet(args) -> None:
    labels = json.loads(Path(args.labels).read_text())
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, entry in labels["videos"].items():
        if args.only and name not in args.only:
            continue
        frames = sorted(int(f) for f in entry["frames"])
        if args.frames:
            frames = [f for f in frames if f in args.frames]
        images = load_frames(name, entry["source"], frames)
        tiles = [draw(images[f], entry["frames"][str(f)], entry.get("ignore", {}).get(str(f), []), f"{name} {f}")
                 for f in frames]
        h, w = tiles[0].shape[:2]
        k = min(1.0, args.max_side / max(h, w))          # big frames (1080p) are scaled down
        tiles = [cv2.resize(t, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA) for t in tiles]
        n = args.per_sheet
        cols = 2 if n > 1 else 1
        for s in range(0, len(tiles), n):
            group = tiles[s:s + n] + [np.zeros_like(tiles[0])] * (-len(tiles[s:s + n]) % cols)
            rows = [np.hstack(group[r:r + cols]) for r in range(0, len(group), cols)]
            path = out_dir / f"{Path(name).stem}_{s // n:02d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
            print(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("propose", help="run the detectors, write a draft labels JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--only", nargs="*", help="source names (default: all)")
    p.add_argument("--min-score", type=float, default=0.3)
    p.set_defaults(fn=propose)
    s = sub.add_parser("sheet", help="render contact sheets of a labels JSON")
    s.add_argument("labels", nargs="?", default=str(LABELS))
    s.add_argument("--out-dir", required=True)
    s.add_argument("--only", nargs="*", help="source names (default: all)")
    s.add_argument("--frames", nargs="*", type=int, help="only these frame indices")
    s.add_argument("--per-sheet", type=int, default=4)
    s.add_argument("--max-side", type=int, default=960, help="tiles scaled down to this long side (never up)")
    s.set_defaults(fn=sheet)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
