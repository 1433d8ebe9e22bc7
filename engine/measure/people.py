"""``python -m engine.measure.people``: finding and following people on real footage, measured
on our labelled set (engine/measure/data/people_labels.json, made with label_people.py).

For each candidate (a detector, with or without track verification by the landmark model):

* detection, on every labelled frame and photo: recall of the people taller than 100 px and
  of those taller than 50 px (not occluded), precision (a detection matching nobody is false,
  unless it lies on an ignore region or on a person too small or too hidden to count);
* tracking, on each labelled video, the same detector + the online tracker (+ verification)
  over the frames up to the last labelled one, as ``engine run`` / ``analyze`` do: tracks on
  non-people (a track covering labelled frames that never matches a labelled person and is
  not only on ignore regions, i.e. people too small to label), id switches (in view: between
  two consecutive labelled frames where the person is labelled and found in both), id
  switches (a person's matched track id changes between labelled frames), fragments (extra
  track ids per person) and the share of labelled person-frames a track covers;
* speed: frames/s of detection + tracking (+ verification) on the video.

Matching: detectors draw boxes their own way (HOG pads its window, BlazePose's person box is
the square around the whole-body circle), so plain IoU with our tight labels would judge the
convention, not the finding. A detection (or track box) matches a labelled person when it
covers at least 70 % of the person's box and the person fills at least 25 % of it (a square
around a standing person: about a third); Hungarian on the covered share, one to one.

    python -m engine.measure.people [--out docs/people-real.md] [--candidates NAME,...] [--cache DIR]
    python -m engine.measure.people --cache DIR --rescore     (labels changed: no detector runs)
    python -m engine.measure.people --cache DIR --replay [--tracker FIELD=VALUE,...]
        (tracker settings tried on the detections the cache recorded: no detector runs)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parents[2]
LABELS = Path(__file__).resolve().parent / "data" / "people_labels.json"
RETRAINED = ROOT / "build" / "detector" / "mannequin_negatives.pt"   # the learned detector + real negatives
MIN_COVER, MIN_FILL = 0.7, 0.25   # share of the person covered, share of the box that is the person


# ----------------------------------------------------------------------------- matching
def cover_fill(gt: np.ndarray, pred: np.ndarray) -> tuple:
    """xyxy (N, 4), (M, 4) -> (share of each person box covered by each prediction (N, M),
    share of each prediction that the person box fills (N, M))."""
    gt, pred = np.asarray(gt, np.float64).reshape(-1, 4), np.asarray(pred, np.float64).reshape(-1, 4)
    lt = np.maximum(gt[:, None, :2], pred[None, :, :2])
    rb = np.minimum(gt[:, None, 2:], pred[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.maximum((x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1]), 1e-9)  # noqa: E731
    return inter / area(gt)[:, None], inter / area(pred)[None, :]


def match(gt: np.ndarray, pred: np.ndarray) -> list:
    """-> [(gt index, pred index)]: one to one, each pair covering >= MIN_COVER of the person
    with the person filling >= MIN_FILL of the box, most covered first."""
    if not len(gt) or not len(pred):
        return []
    cover, fill = cover_fill(gt, pred)
    ok = (cover >= MIN_COVER) & (fill >= MIN_FILL)
    r, c = linear_sum_assignment(-np.where(ok, cover + fill, 0.0))
    return [(i, j) for i, j in zip(r, c) if ok[i, j]]


def _height(box) -> float:
    return float(box[3] - box[1])


def _counts(person: dict, min_height: float) -> bool:
    return not person.get("occluded", False) and not person.get("small", False) \
        and _height(person["xyxy"]) >= min_height


# ----------------------------------------------------------------------------- labels
def load_labels(path=LABELS) -> dict:
    doc = json.loads(Path(path).read_text())
    if doc.get("format") != "pymaf-people-labels" or doc.get("version") != 1:
        raise ValueError(f"{path}: not a version-1 pymaf-people-labels file")
    return doc


def labelled_images(name: str, entry: dict) -> list:
    """-> [(frame index, RGB image)] of a source's labelled frames (a photo is frame 0)."""
    from engine.measure.label_people import load_frames

    got = load_frames(name, entry["source"], sorted(int(k) for k in entry["frames"]))
    return sorted(got.items())


def video_path(entry: dict):
    """A labelled video's file on this machine, or None for photos."""
    src = entry["source"]
    return ROOT.parent / src["path"] if src.get("kind") == "video" else None


def _ignored(box, entry: dict, frame: int) -> bool:
    """A detection lying mostly (>= half of it) on one of the frame's ignore regions."""
    regions = np.array([r["xyxy"] for r in entry.get("ignore", {}).get(str(frame), [])], np.float64).reshape(-1, 4)
    if not len(regions):
        return False
    b = np.asarray(box, np.float64)
    lt, rb = np.maximum(regions[:, :2], b[:2]), np.minimum(regions[:, 2:], b[2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    return bool((inter >= 0.5 * max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)).any())


# ----------------------------------------------------------------------------- detection
def detection_scores(detector, labels: dict, record: dict | None = None, replay: dict | None = None) -> dict:
    """Recall (>= 100 px, >= 50 px) and precision over every labelled frame and photo.
    ``record``: filled with the detections ({source: {frame: [[x1, y1, x2, y2, score]]}});
    ``replay``: such a record scored instead of running ``detector``."""
    hit = {100: [0, 0], 50: [0, 0]}
    tp = fp = 0
    for name, entry in labels["videos"].items():
        frames = ([(int(f), None) for f in sorted(entry["frames"], key=int)] if replay is not None
                  else labelled_images(name, entry))
        for f, image in frames:
            people = entry["frames"][str(f)]
            gt = np.array([p["xyxy"] for p in people], np.float64).reshape(-1, 4)
            found = replay[name][str(f)] if replay is not None else detector.detect(image, index=f)
            found = np.asarray(found, np.float64).reshape(-1, 5)
            if record is not None:
                record.setdefault(name, {})[str(f)] = found.tolist()
            det = found[:, :4]
            pairs = match(gt, det)
            matched_gt = {i for i, _ in pairs}
            matched_det = {j for _, j in pairs}
            for h in hit:
                counted = [i for i, p in enumerate(people) if _counts(p, h)]
                hit[h][0] += sum(i in matched_gt for i in counted)
                hit[h][1] += len(counted)
            tp += len(matched_det)
            for j in range(len(det)):
                if j in matched_det or _ignored(det[j], entry, f):
                    continue
                # on a labelled person too small / hidden to count: neither right nor wrong
                cover, fill = cover_fill(gt, det[j:j + 1])
                if ((cover >= MIN_COVER) & (fill >= MIN_FILL)).any():
                    continue
                fp += 1
    return {"recall_100": hit[100][0] / max(hit[100][1], 1), "recall_50": hit[50][0] / max(hit[50][1], 1),
            "people_100": hit[100][1], "people_50": hit[50][1],
            "precision": tp / max(tp + fp, 1), "false": fp, "true": tp}


# ----------------------------------------------------------------------------- tracking
def tracker_settings(video_fps: float, min_track_frames: int = 10, **overrides) -> dict:
    """The ``OnlineTracker`` settings ``engine run`` uses for a video (``overrides``: other
    ``TrackerParams`` values, for ``--replay``)."""
    from engine.people.tracking import relink_frames

    lost = relink_frames(video_fps)
    return {"min_track_frames": min_track_frames, "max_lost": lost, "max_gap": lost, **overrides}


def _recording_tracker(**params):
    """An ``OnlineTracker`` that keeps each frame's detections as they are given to it
    (``.given``: (N, 5 + K) arrays with the appearance descriptors, None where the detector
    skipped the frame), so that ``replay_tracks`` can run the tracker again without the detector."""
    from engine.people.tracking import OnlineTracker

    class Recording(OnlineTracker):
        def __init__(self):
            super().__init__(**params)
            self.given = []

        def update(self, detections) -> list:
            self.given.append(None if detections is None else np.asarray(detections, np.float64))
            return super().update(detections)

    return Recording()


def run_tracker(path: Path, detector, stop: int, verify: bool, min_track_frames: int = 10,
                record: list | None = None, start: int = 0) -> tuple:
    """Detect + track (+ verify) frames start .. stop-1 as ``analyze`` does.
    -> ({track id: (frames (T,) counted from ``start``, xyxy (T, 4))}, frames/s, {id: is person}
    or None). ``record``: a list that gets each frame's detections as the tracker saw them."""
    from engine.people.tracking import FinalFrame, tracks_from_frames
    from engine.pipeline import StageTimes, StreamStats, track_stream
    from engine.video.decode import iter_frames

    verifier = None
    if verify:
        from engine.people.verify import make_verifier

        verifier, why = make_verifier(device="cpu")
        if verifier is None:
            raise RuntimeError(why)
    from engine.video.decode import probe

    video_fps = probe(path).fps
    tracker = _recording_tracker(**tracker_settings(video_fps, min_track_frames))
    t0 = time.perf_counter()
    finals = [FinalFrame(it.index, it.boxes) for it in track_stream(
        iter_frames(path, start=start, stop=stop), detector, tracker, StageTimes(), StreamStats(), keep_images=False,
        verifier=verifier, fps=video_fps, last=stop - 1 - start)]
    fps = len(finals) / max(time.perf_counter() - t0, 1e-9)
    if record is not None:
        record.extend(tracker.given)
    tracks = tracks_from_frames(finals)
    verdict = verifier.verdict() if verifier is not None else None
    if verdict is not None:
        tracks = {t: tr for t, tr in tracks.items() if verdict.get(t, False)}
    return {t: (tr.frames, tr.xyxy) for t, tr in tracks.items()}, fps, verdict


def replay_tracks(given: list, video_fps: float, **params) -> dict:
    """The tracks the tracker makes from recorded detections (``run_tracker(record=...)``),
    with ``params`` changed from what ``engine run`` uses. -> {track id: (frames, xyxy)}."""
    from engine.people.tracking import OnlineTracker, tracks_from_frames

    tracker = OnlineTracker(**tracker_settings(video_fps, **params))
    finals = [ff for d in given for ff in tracker.update(d)] + tracker.close()
    return {t: (tr.frames, tr.xyxy) for t, tr in tracks_from_frames(finals).items()}


def pack_detections(given: list) -> dict:
    """[(N_f, C) array or None per frame] -> plain arrays for an .npz: ``rows`` (sum N_f, C),
    ``count`` (F,) (-1 for a frame the detector skipped)."""
    width = max((d.shape[1] for d in given if d is not None), default=5)
    return {"rows": np.concatenate([d.reshape(-1, width) for d in given if d is not None] or [np.zeros((0, width))]),
            "count": np.array([-1 if d is None else len(d) for d in given], np.int64)}


def unpack_detections(rows: np.ndarray, count: np.ndarray) -> list:
    """``pack_detections``'s arrays -> the per-frame list."""
    out, at = [], 0
    for n in np.asarray(count).tolist():
        out.append(None if n < 0 else rows[at:at + n])
        at += max(n, 0)
    return out


def tracking_scores(tracks: dict, entry: dict) -> dict:
    """Tracks (id -> frames, boxes) vs one video's labels."""
    frames = sorted(int(k) for k in entry["frames"])
    boxes_at = {f: {} for f in frames}
    for tid, (fr, xyxy) in tracks.items():
        for f, b in zip(fr, xyxy):
            if int(f) in boxes_at:
                boxes_at[int(f)][tid] = b
    matched_ids = {}              # person id -> [track id per labelled frame where matched]
    at = {}                       # (person id, labelled frame index k) -> matched track id or None
    track_hits = {t: 0 for t in tracks}
    track_misses = {t: 0 for t in tracks}      # boxes on nobody (not on an ignore region either)
    covered = total = boxes_ok = boxes_all = 0
    for k, f in enumerate(frames):
        people = entry["frames"][str(f)]
        tids = list(boxes_at[f])
        for p in people:
            at[(p["id"], k)] = None
        gt = np.array([p["xyxy"] for p in people], np.float64).reshape(-1, 4)
        tb = np.array([boxes_at[f][t] for t in tids], np.float64).reshape(-1, 4)
        pairs = match(gt, tb)
        for i, j in pairs:
            matched_ids.setdefault(people[i]["id"], []).append(tids[j])
            at[(people[i]["id"], k)] = tids[j]
            track_hits[tids[j]] += 1
        total += sum(_counts(p, 50) for p in people)
        covered += sum(_counts(people[i], 50) for i, _ in pairs)
        # track boxes that are a person (or lie on an ignore region): the rigs' precision
        on_person = {j for _, j in pairs}
        for j in range(len(tb)):
            if j not in on_person and not _ignored(tb[j], entry, f):
                track_misses[tids[j]] += 1
        boxes_all += sum(1 for j in range(len(tb)) if j in on_person or not _ignored(tb[j], entry, f))
        boxes_ok += len(on_person)
    switches = sum(sum(a != b for a, b in zip(s, s[1:])) for s in matched_ids.values())
    # the id changes while a person stays in view: between two consecutive labelled frames
    # (1.3 s apart on vtest) where they are labelled and found in both
    visible = sum(1 for (pid, k), t in at.items()
                  if t is not None and at.get((pid, k + 1)) is not None and at[(pid, k + 1)] != t)
    fragments = sum(len(set(s)) - 1 for s in matched_ids.values())
    # on labelled frames never on a person, and not only on ignore regions (people under 50 px)
    non_people = [t for t in tracks if track_misses[t] > 0 and track_hits[t] == 0]
    return {"tracks": len(tracks), "non_people": len(non_people), "id_switches": int(switches),
            "switches_in_view": int(visible),
            "fragments": int(fragments), "coverage": covered / max(total, 1),
            "box_precision": boxes_ok / max(boxes_all, 1)}


# ----------------------------------------------------------------------------- candidates
def candidates() -> dict:
    """name -> (detector factory, verify?): the measured combinations."""
    from engine.people.detect import DETECTOR_NAMES, make_detector

    out = {}
    for name in DETECTOR_NAMES:
        if name == "default":
            continue
        out[name] = (lambda n=name: make_detector(n), False)
        out[f"{name} + verification"] = (lambda n=name: make_detector(n), True)
    if RETRAINED.is_file():   # made by the command in docs/people.md (not shipped)
        out["mannequin retrained with real negatives"] = (lambda: make_detector("mannequin", weights=RETRAINED), False)
        out["mannequin retrained with real negatives + verification"] = (
            lambda: make_detector("mannequin", weights=RETRAINED), True)
    return out


def _cache_file(cache, name: str) -> Path:
    return Path(cache) / ("".join(c if c.isalnum() else "_" for c in name) + ".json")


def measure(names=None, log=print, cache=None) -> list:
    """Run each candidate; -> report rows. ``cache``: a folder where each candidate's
    detection scores and tracks are kept (JSON), so ``rescore`` can score them again after
    the labels change without running the detectors, and, for candidates without
    verification, the detections of every frame as the tracker saw them
    (``<name>.detections.npz``), so ``replay`` can run the tracker on them again."""
    from engine.video.decode import probe

    labels = load_labels()
    rows = []
    for name, (factory, verify) in candidates().items():
        if names and name not in names:
            continue
        detector = factory()
        found = {}
        det = None if verify else detection_scores(detector, labels, record=found)   # verification: tracks only
        track, kept, given = {}, {}, {}
        for vname, entry in labels["videos"].items():
            path = video_path(entry)
            if path is None:
                continue
            stop = max(int(k) for k in entry["frames"]) + 1
            given[vname] = []
            tracks, fps, _ = run_tracker(path, detector, stop, verify, record=given[vname])
            track[vname] = {**tracking_scores(tracks, entry), "fps": fps}
            kept[vname] = {"fps": fps, "video_fps": probe(path).fps,
                           "tracks": {str(t): [np.asarray(f).tolist(), np.asarray(b).tolist()]
                                      for t, (f, b) in tracks.items()}}
        rows.append({"name": name, "detection": det, "tracking": track})
        if cache:
            Path(cache).mkdir(parents=True, exist_ok=True)
            _cache_file(cache, name).write_text(json.dumps({"name": name, "detections": found, "videos": kept}))
            if not verify:   # what --replay reads (verification looks at the frames: not replayed)
                np.savez_compressed(_given_file(cache, name), **{
                    f"{v}/{k}": a for v, g in given.items() for k, a in pack_detections(g).items()})
        log(f"{name}: {rows[-1]}")
    return rows


def _given_file(cache, name: str) -> Path:
    return _cache_file(cache, name).with_suffix(".detections.npz")


def replay(cache, params: dict, names=None) -> list:
    """Report rows with the tracker run again, ``params`` changed, on each candidate's recorded
    detections (a ``measure`` cache; candidates without verification): tracker settings
    measured in seconds instead of the detectors' hour. Detection scores and frames/s are the
    cached ones."""
    def tracks_of(name, doc):
        g = _given_file(cache, name)
        if not g.is_file():
            return None
        with np.load(g, allow_pickle=False) as z:
            return {vname: replay_tracks(unpack_detections(z[f"{vname}/rows"], z[f"{vname}/count"]),
                                         v["video_fps"], **params) for vname, v in doc["videos"].items()}

    return _rows_from_cache(cache, names, tracks_of)


def tracker_overrides(text: str) -> dict:
    """``"take_back_dist=0.5,occluder_margin=0"`` -> {field: value} of ``TrackerParams``, each
    value of its field's type."""
    import dataclasses

    from engine.people.tracking import TrackerParams

    fields = {f.name: f for f in dataclasses.fields(TrackerParams)}
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        if key not in fields or not value:
            raise ValueError(f"--tracker: {item!r} is not FIELD=VALUE of one of {', '.join(fields)}")
        default = fields[key].default
        out[key] = (value.lower() in ("1", "true", "yes") if isinstance(default, bool)
                    else int(value) if isinstance(default, int) else float(value))
    return out


def rescore(cache, names=None) -> list:
    """Report rows from a ``measure`` cache, detection and tracking scored against the current
    labels (same labelled frames)."""
    def tracks_of(name, doc):
        return {vname: {t: (np.asarray(fr, int), np.asarray(b, np.float64).reshape(-1, 4))
                        for t, (fr, b) in v["tracks"].items()} for vname, v in doc["videos"].items()}

    return _rows_from_cache(cache, names, tracks_of)


def _rows_from_cache(cache, names, tracks_of) -> list:
    """Report rows for the candidates a ``measure`` cache holds, scored against the current
    labels; ``tracks_of(name, cached doc)`` -> {video: {track id: (frames, xyxy)}}, or None to
    leave the candidate out. Frames/s are the cached ones."""
    labels = load_labels()
    rows = []
    for name in candidates():
        f = _cache_file(cache, name)
        if (names and name not in names) or not f.is_file():
            continue
        doc = json.loads(f.read_text())
        tracks = tracks_of(name, doc)
        if tracks is None:
            continue
        track = {vname: {**tracking_scores(t, labels["videos"][vname]), "fps": doc["videos"][vname]["fps"]}
                 for vname, t in tracks.items()}
        det = detection_scores(None, labels, replay=doc["detections"]) if doc["detections"] else None
        rows.append({"name": name, "detection": det, "tracking": track})
    return rows


def report(rows: list, labels: dict, command: str) -> str:
    videos = [v for v, e in labels["videos"].items() if video_path(e) is not None]
    lines = ["## Real footage, labelled (`engine/measure/data/people_labels.json`)", "",
             f"Measured by `{command}` on this machine (2 CPU cores). Detection on every labelled frame "
             "and photo; tracking over each labelled video up to its last labelled frame. A box finds a person "
             "when it covers >= 70 % of the labelled box and the person fills >= 25 % of it (detectors draw "
             "boxes their own way). \"+ verification\": tracks whose boxes the BlazePose "
             "landmark model (full) does not see a person in (at least a quarter of every 5th box) are dropped.", "",
             "| candidate | recall >= 100 px | recall >= 50 px | precision | "
             + " | ".join(f"{v}: tracks / on non-people / id switches (in view) / fragments / coverage / "
                          f"track-box precision / frames/s" for v in videos)
             + " |", "|---|---|---|---|" + "---|" * len(videos)]
    for r in rows:
        d = r["detection"]
        det = (f"{d['recall_100']:.0%} ({d['people_100']}) | {d['recall_50']:.0%} ({d['people_50']}) | "
               f"{d['precision']:.0%} ({d['false']} false)") if d else "(as without) | | "
        cells = []
        for v in videos:
            t = r["tracking"].get(v)
            cells.append("-" if t is None else f"{t['tracks']} / {t['non_people']} / {t['id_switches']} "
                         f"({t['switches_in_view']}) / {t['fragments']} / {t['coverage']:.0%} / "
                         f"{t['box_precision']:.0%} / {t['fps']:.1f}")
        lines.append(f"| {r['name']} | {det} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="write the table to this markdown file")
    p.add_argument("--candidates", default="", help="comma-separated candidate names (default: all)")
    p.add_argument("--cache", default=None, help="keep each candidate's scores and tracks in this folder")
    p.add_argument("--rescore", action="store_true",
                   help="no detector runs: the table from --cache, tracking scored against the current labels")
    p.add_argument("--replay", action="store_true",
                   help="no detector runs: the tracker again on the detections --cache recorded "
                        "(candidates without verification), with --tracker's settings")
    p.add_argument("--tracker", default="", help="with --replay: TrackerParams changes, e.g. take_back_dist=0.5")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.candidates.split(",") if n.strip()] or None
    if (args.rescore or args.replay) and not args.cache:
        p.error("--rescore and --replay need --cache")
    if args.tracker and not args.replay:
        p.error("--tracker goes with --replay")
    if args.rescore:
        rows = rescore(args.cache, names)
    elif args.replay:
        try:
            rows = replay(args.cache, tracker_overrides(args.tracker), names)
        except ValueError as exc:
            p.error(str(exc))
    else:
        import torch

        torch.set_num_threads(2)
        rows = measure(names, log=lambda m: print(m, file=sys.stderr, flush=True), cache=args.cache)
    command = "python -m engine.measure.people " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(rows, load_labels(), command.strip())
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
