"""End-to-end benchmark: ``python -m engine run`` on a 1080p clip, frames/s and the share of each stage.

    python -m engine.bench_e2e [--video PATH | --generated] [--frames N] [--device auto|cpu|cuda]
        [--estimator landmarks|pymaf] [--landmark-model lite|full|heavy|all]
        [--batch-size B] [--autocast none|bf16] [--detector NAME] [--warmup N]

Runs the real command in this process (decode thread, detection, online tracking, then either
the default estimator -- BlazePose landmarks per person crop and the fit onto the rig, one row
per ``--landmark-model`` size -- or crops and the batched untrained ResNet-50 PyMAF, the same
cost as a trained one; smoothing, result file) and prints markdown rows (paste into
docs/benchmarks.md). The clip is
``../shared/footage/dancer.mp4`` when present; otherwise a generated 1080p clip of a moving
figure with its boxes given (``--boxes``: no detection then, said in the table).

frames/s = frames / (wall time - load), where load (building the network and the detector)
happens once per run. Each stage's share is its busy seconds / that wall time; decoding and
detection run in their own threads beside the network, so shares can add up to more than
100 %. "network waited" is the time the network loop had no crops to work on; "detection
waited" the time detection had no decoded frame.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

DANCER = Path(__file__).resolve().parents[2] / "shared" / "footage" / "dancer.mp4"
COLUMNS = ("decode", "detect", "track", "crop", "infer", "convert", "fit", "silhouette", "write")


def generated_clip(folder: Path, frames: int, width: int = 1920, height: int = 1080) -> tuple:
    """A 1080p clip of a figure walking across a textured background, and its boxes file."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    background = cv2.resize(rng.integers(40, 200, (height // 8, width // 8, 3), np.uint8), (width, height))
    path, boxes_path = folder / "generated_1080p.mp4", folder / "generated_1080p_boxes.json"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (width, height))
    boxes = {}
    for i in range(frames):
        img = background.copy()
        x = 300 + 12 * i
        cv2.ellipse(img, (x, 560), (110, 330), 0, 0, 360, (150, 170, 200), -1)
        cv2.circle(img, (x, 190), 60, (180, 190, 220), -1)
        writer.write(img)
        boxes[str(i)] = [[x - 110, 130, x + 110, 890, 0.9]]
    writer.release()
    boxes_path.write_text(json.dumps(boxes))
    return path, boxes_path


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


def run_once(video, out, *, frames, device, batch, autocast, detector, boxes, estimator="pymaf",
             landmark_model="full") -> dict:
    from engine.run import Progress, build_parser, run

    argv = [str(video), "-o", str(out), "--device", device, "--batch-size", str(batch), "--autocast", autocast,
            "--stop", str(frames), "--estimator", estimator, "--landmark-model", landmark_model] + \
        (["--boxes", str(boxes)] if boxes else ["--detector", detector])
    return run(build_parser("run").parse_args(argv), Progress(None), {"flag": False})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=None, help="clip (default: dancer.mp4, else a generated 1080p clip)")
    parser.add_argument("--generated", action="store_true", help="use the generated 1080p clip (given boxes)")
    parser.add_argument("--frames", type=int, default=90, help="frames to process (default 90: 3 s of 1080p30)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 on the CPU, 64 on a GPU")
    parser.add_argument("--autocast", default=None, choices=("none", "bf16", "fp16"),
                        help="default: none on the CPU, bf16 on a GPU")
    parser.add_argument("--detector", default="default")
    parser.add_argument("--estimator", default="landmarks", choices=("landmarks", "pymaf"))
    parser.add_argument("--landmark-model", default="all", choices=("lite", "full", "heavy", "all"))
    parser.add_argument("--warmup", type=int, default=None,
                        help="frames of an untimed first run (default: 0 on the CPU, 2 batches on a GPU)")
    args = parser.parse_args(argv)

    import torch

    from engine.model.inference import resolve_device
    from engine.video.decode import probe

    device = resolve_device(args.device)
    gpu = device.type != "cpu"
    batch = args.batch_size or (64 if gpu else 16)
    autocast = args.autocast or ("bf16" if gpu else "none")
    warmup = (2 * batch if gpu else 0) if args.warmup is None else args.warmup
    with tempfile.TemporaryDirectory() as tmp:
        boxes = None
        if args.video:
            video = Path(args.video)
        elif DANCER.exists() and not args.generated:
            video = DANCER
        else:
            video, boxes = generated_clip(Path(tmp), args.frames)
        info = probe(video)
        frames = min(args.frames, info.frame_count)
        kw = dict(device=device.type, batch=batch, autocast=autocast, detector=args.detector, boxes=boxes,
                  estimator=args.estimator)
        sizes = ("lite", "full", "heavy") if args.landmark_model == "all" else (args.landmark_model,)
        if args.estimator == "pymaf":
            sizes = ("full",)   # ignored by the PyMAF estimator
        rows = []
        for size in sizes:
            if warmup:
                run_once(video, Path(tmp) / "warmup.npz", frames=min(warmup, frames), landmark_model=size, **kw)
            rows.append((size, run_once(video, Path(tmp) / "bench.npz", frames=frames, landmark_model=size, **kw)))
    from engine.people.detect import DEFAULT_DETECTOR

    detector = "boxes file (no detection)" if boxes else \
        f"default ({DEFAULT_DETECTOR})" if args.detector == "default" else args.detector
    what = "BlazePose GHUM landmarks + fit onto the mannequin" if args.estimator == "landmarks" else \
        "untrained ResNet-50 PyMAF on the mannequin"
    print(f"\nEnd to end: python -m engine.bench_e2e {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"{video.name}: {info.width}x{info.height}, {info.fps:.2f} fps; device {device.type} ({device_name(device)}), "
          f"torch {torch.__version__}; {what}")
    print("| clip | frames | tracks | device | estimator | batch | precision | detector | frames/s end to end | "
          "x real time | " + " | ".join(COLUMNS) + " | network waited | detection waited |")
    print("|---" * (12 + len(COLUMNS)) + "|")
    precision = "fp32" if autocast == "none" else f"{autocast} autocast"
    for size, done in rows:
        st = done["stages"]
        wall = max(done["seconds"] - st["load"], 1e-9)
        fps = done["frames"] / wall
        share = lambda k: f"{st.get(k, 0.0) / wall:.0%}"  # noqa: E731
        estimator = f"landmarks ({size})" if args.estimator == "landmarks" else "pymaf"
        batch_text = done.get("batch_size", "people of a frame")
        print(f"| {video.name} {info.width}x{info.height} | {done['frames']} | {len(done['tracks'])} | {device.type} | "
              f"{estimator} | {batch_text} | {precision} | {detector} | {fps:.2f} | {fps / (info.fps or 30.0):.2f} | "
              + " | ".join(share(k) for k in COLUMNS) + f" | {share('infer_wait')} | {share('detect_wait')} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
