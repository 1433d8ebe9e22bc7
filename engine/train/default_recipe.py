"""The recipe of the shipped PyMAF-on-BlazePose heads (``--estimator pymaf-blazepose``),
from a fresh clone on 2 CPU cores: ``python3 build.py train-default`` runs

    python -m engine.train.default_recipe --out build/train_default \\
        --weights engine/model/weights/pymaf_blazepose_full.pt

Stages (rerun the same command after a stop: each resumes where it was):

1. ``pseudo_labels.npz``: the registry photos' people labelled by the landmark fit
   (``engine.data.pseudo``; 5 people in 3 photos of Debian's opencv-doc).
2. ``synthetic/``: the ``blaze_default`` configuration (frozen BlazePose GHUM full trunk,
   pyramid + mesh-aligned features, regressors 512 wide, IUV head) on 4000 renders of data
   seed 1, ``SYNTHETIC_STEPS`` steps of batch 16, Adam lr 1e-4.
3. ``mixed/``: from stage 2's weights (fresh optimizer), ``MIXED_STEPS`` more steps on the
   same renders plus ``DEFAULT_PSEUDO_SIZE`` augmented real samples (1 in 11 drawn samples).
4. the weights only, float16, without the training-only IUV head -> ``--weights``.

``OUT/recipe.json`` records the settings and each stage's wall time. Synthetic renders are
cached in ``build/cache/synthetic`` (they are a pure function of seed and index).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine.train.configs import DEFAULT_PSEUDO_SIZE

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "blaze_default"
SYNTHETIC_STEPS = 1600
MIXED_STEPS = 300
WEIGHTS = ROOT / "engine" / "model" / "weights" / "pymaf_blazepose_full.pt"
CACHE = ROOT / "build" / "cache" / "synthetic"


def stage_args(out: Path, args) -> dict:
    """The trainer's command line of each stage (stage 3's start depends on what is on disk)."""
    from engine.train.trainer import checkpoint_path, latest_checkpoint

    common = ["--config", CONFIG, "--workers", "0", "--cache-dir", str(args.cache_dir)]
    if args.data_size is not None:
        common += ["--data-size", str(args.data_size)]
    evals = lambda every: [] if every is None else ["--eval-every", str(every)]  # noqa: E731
    synthetic = ["--out", str(out / "synthetic"), "--steps", str(args.synthetic_steps), "--resume", *common,
                 *evals(args.eval_every)]
    # the mixed stage is evaluated at its end (the configuration's interval is longer than it)
    mixed = ["--out", str(out / "mixed"), "--steps", str(args.mixed_steps), *common,
             *evals(args.mixed_steps if args.eval_every is None else args.eval_every)]
    if latest_checkpoint(out / "mixed") is not None:
        mixed.append("--resume")
    else:
        mixed += ["--init", str(checkpoint_path(out / "synthetic", args.synthetic_steps)),
                  "--pseudo-labels", str(out / "pseudo_labels.npz"), "--pseudo-size", str(args.pseudo_size)]
    return {"synthetic": synthetic, "mixed": mixed}


def training_seconds(run_dir: Path) -> float:
    """Wall time of a training run so far (log.csv's last ``time``: seconds since the run
    began, summed over resumes)."""
    import csv

    with open(run_dir / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return round(float(rows[-1]["time"]), 1) if rows else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.train.default_recipe", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "build" / "train_default"), help="run folder")
    p.add_argument("--weights", default=str(WEIGHTS), help="the shipped weights file to write")
    p.add_argument("--synthetic-steps", type=int, default=SYNTHETIC_STEPS)
    p.add_argument("--mixed-steps", type=int, default=MIXED_STEPS)
    p.add_argument("--pseudo-size", type=int, default=DEFAULT_PSEUDO_SIZE)
    p.add_argument("--data-size", type=int, default=None, help="renders (default: the configuration's 4000)")
    p.add_argument("--eval-every", type=int, default=None, help="held-out evaluation interval (default 500)")
    p.add_argument("--cache-dir", default=str(CACHE))
    args = p.parse_args(argv)

    from engine.data.pseudo import label_photos
    from engine.model.checkpoint import export_weights
    from engine.train.trainer import checkpoint_path
    from engine.train.trainer import main as train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "recipe.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record["settings"] = {k: v for k, v in vars(args).items() if k not in ("out", "weights", "cache_dir")}
    record.setdefault("seconds", {})

    def save_record():
        record_path.write_text(json.dumps(record, indent=1) + "\n")

    def timed(stage, fn):
        t0 = time.monotonic()
        code = fn()
        record["seconds"][stage] = round(record["seconds"].get(stage, 0.0) + time.monotonic() - t0, 1)
        save_record()
        return code

    labels = out / "pseudo_labels.npz"
    if not labels.is_file():
        timed("pseudo_labels", lambda: label_photos(labels))
    for stage in ("synthetic", "mixed"):
        code = train(stage_args(out, args)[stage])
        record["seconds"][stage] = training_seconds(out / stage)   # across resumes, as the trainer counts
        save_record()
        if code != 0:
            print(f"stage {stage} stopped (exit {code}); run the same command again to continue", file=sys.stderr)
            return code
    done = timed("export", lambda: export_weights(checkpoint_path(out / "mixed", args.mixed_steps), args.weights,
                                                   half=True, inference_only=True))
    total = sum(record["seconds"].values())
    record["weights"] = {"path": str(args.weights), "bytes": done["bytes"]}
    save_record()
    print(f"wrote {args.weights}: {done['bytes'] / 1e6:.1f} MB; recipe wall time {total / 60:.0f} min "
          f"({', '.join(f'{k} {v / 60:.1f}' for k, v in record['seconds'].items())} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
