"""``python -m engine.measure.follower``: do the landmark crops stay on their own person?

``engine run`` follows each tracked person with a landmark crop made from their previous
frame's landmarks (``engine.landmarks.landmarker.PersonFollower``). Where people overlap, a
crop holds two of them and the network may find the other one. This replays the follower over
a clip's tracks (from ``python -m engine analyze``, cached) and counts, per track-frame where
the network sees a person, whether the landmarks' extent fits another track's box of that
frame better than its own by more than ``DRIFT_MARGIN`` IoU ("on another person", the
follower's own test, ``fits_another_box``): such a frame's fit is
the neighbour's pose under this person's id. Once with the follower as it runs, once with its
drift check off (``drift_margin=None``: the follower before the check).

    python -m engine.measure.follower --out docs/people.md

Measurement code: nothing at run time imports it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine.measure.report import command_line, publish

ROOT = Path(__file__).resolve().parents[2]
VTEST = ROOT.parent / "shared" / "footage" / "vtest.avi"
MODULE = "engine.measure.follower"


def cached_tracks(video: Path, cache: Path) -> Path:
    """The clip's tracks file, made once by ``python -m engine analyze`` (defaults)."""
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "engine", "analyze", str(video), "-o", str(cache)],
                       check=True, cwd=ROOT)
    return cache


def boxes_by_frame(tracks: dict) -> dict:
    """{id: Track} (video frame indices) -> {frame: [(id, xyxy (4,))]}."""
    out: dict = {}
    for tid, tr in tracks.items():
        for f, b in zip(tr.frames, tr.xyxy):
            out.setdefault(int(f), []).append((tid, np.asarray(b, np.float64)))
    return out


def replay(video: Path, by_frame: dict, follower) -> dict:
    """Run the follower over the clip -> {"boxes": track-frames with a box, "seen": with a
    person seen, "on_other": seen but ``fits_another_box``, "own_iou": (n,)}."""
    from engine.landmarks.landmarker import fits_another_box, landmark_box
    from engine.people.tracking import box_iou
    from engine.video.decode import iter_frames

    counts = {"boxes": 0, "seen": 0, "on_other": 0}
    own_iou = []
    first, last = min(by_frame), max(by_frame) + 1
    for frame in iter_frames(video, first, last):
        boxes = by_frame.get(frame.index, [])
        seen = follower.step(frame.image, boxes)
        counts["boxes"] += len(boxes)
        for tid, xyxy in boxes:
            obs = seen.get(tid)
            if obs is None:
                continue
            counts["seen"] += 1
            counts["on_other"] += int(fits_another_box(obs.image, tid, dict(boxes)))
            own_iou.append(float(box_iou(landmark_box(obs.image), xyxy)))
    counts["own_iou"] = np.array(own_iou)
    return counts


def report(rows: dict, video: Path, command: str) -> str:
    from engine.landmarks.landmarker import DRIFT_MARGIN

    lines = ["### Landmark crops on their own person", "",
             f"`{command}` (engine/measure/follower.py): the landmark follower of `engine run` replayed over "
             f"the tracks `python -m engine analyze` finds in {video.name} (defaults). A track-frame is on another "
             f"person when the extent of the landmarks the network found fits another track's box of that frame "
             f"better than the person's own by more than {DRIFT_MARGIN} IoU; those frames' fits are the neighbour's pose "
             "under this person's id. Own IoU: the landmarks' extent against the person's own box (it is "
             "below 1 even when right: the landmarks stop at the eyes and ankles, boxes at the hair and shoes).",
             "", "| follower | track-frames with a box | person seen | on another person | own IoU 1st pct | "
             "5th pct | median |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        p1, p5, p50 = np.percentile(r["own_iou"], [1, 5, 50])
        lines.append(f"| {name} | {r['boxes']} | {r['seen']} | {r['on_other']} | {p1:.2f} | {p5:.2f} | {p50:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=VTEST)
    p.add_argument("--tracks", type=Path, default=None,
                   help="tracks file of the video (default: made once with engine analyze under build/measure)")
    p.add_argument("--out", default=None, help="write the table into this markdown page (its own section)")
    args = p.parse_args(argv)
    import torch

    from engine.landmarks.assets import converted_path
    from engine.landmarks.landmarker import DRIFT_MARGIN, Landmarker, PersonFollower
    from engine.people.tracks_file import read_tracks

    torch.set_num_threads(2)
    path = args.tracks or cached_tracks(args.video, ROOT / "build" / "measure" / f"{args.video.stem}_tracks.json")
    _, tracks = read_tracks(path)
    by_frame = boxes_by_frame(tracks)
    landmarker = Landmarker(converted_path("full"), "full", device="cpu")
    rows = {}
    for name, margin in ((f"as `engine run` (drift check, margin {DRIFT_MARGIN})", DRIFT_MARGIN),
                         ("without the drift check", None)):
        rows[name] = replay(args.video, by_frame, PersonFollower(landmarker, drift_margin=margin))
        print(name, {k: v for k, v in rows[name].items() if k != "own_iou"}, flush=True)
    text = report(rows, args.video, command_line(MODULE, argv))
    publish(text, args.out, MODULE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
