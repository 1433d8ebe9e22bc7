"""``python -m engine.measure.trunk_probe``: which of the BlazePose landmark network's feature
maps carry the most 3D pose information, for PyMAF's heads on that frozen trunk.

A linear probe: for each candidate map, its features average-pooled to a 4x4 grid (C x 16
numbers per sample) predict the root-relative 3D joints (SMPL's 24, metres, camera axes) by
ridge regression fitted on synthetic renders of one seed and scored on held-out renders of
another (MPJPE, mm). Lower = more pose, linearly readable. The rows: the encoder's 8x8 map,
the decoder's 16/32/64 maps (PyMAF's pyramid levels on this trunk), the 39 landmark heatmaps,
and as floors the mean pose (no image) and the crop's own pixels pooled the same way.

    python -m engine.measure.trunk_probe [--train 800] [--test 200] [--size full] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

POOL = 4


def pooled(m: torch.Tensor, grid: int = POOL) -> np.ndarray:
    """(B, C, H, W) -> (B, C * grid * grid) float64: average over grid x grid cells."""
    return torch.nn.functional.adaptive_avg_pool2d(m.float(), grid).flatten(1).double().numpy()


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> tuple:
    """Standardised ridge regression (N, D) -> (N, K): -> (mean, scale, weights, y mean)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    ym = y.mean(0)
    w = np.linalg.solve(z.T @ z + lam * len(z) * np.eye(z.shape[1]), z.T @ (y - ym))
    return mu, sd, w, ym


def ridge_predict(model: tuple, x: np.ndarray) -> np.ndarray:
    mu, sd, w, ym = model
    return ((x - mu) / sd) @ w + ym


def mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    """(N, 72) flattened root-relative joints (metres) -> mean joint error (mm)."""
    return float(np.linalg.norm((pred - gt).reshape(len(gt), -1, 3), axis=-1).mean() * 1000)


def probe(train: dict, test: dict, lams=(1e-3, 1e-2, 1e-1, 1.0)) -> dict:
    """{name: features (N, D)} of both sets (+ "joints") -> {name: best held-out MPJPE mm, lam}.
    The ridge strength is chosen on a split of the training set, then refitted on all of it."""
    y, yt = train["joints"], test["joints"]
    n_fit = int(0.8 * len(y))
    out = {"mean pose (no image)": (mpjpe_mm(np.repeat(y.mean(0, keepdims=True), len(yt), 0), yt), None)}
    for name, x in train.items():
        if name == "joints":
            continue
        scores = {lam: mpjpe_mm(ridge_predict(ridge_fit(x[:n_fit], y[:n_fit], lam), x[n_fit:]), y[n_fit:])
                  for lam in lams}
        lam = min(scores, key=scores.get)
        out[name] = (mpjpe_mm(ridge_predict(ridge_fit(x, y, lam), test[name]), yt), lam)
    return out


def features(dataset, indices, net, taps: dict, batch: int = 16) -> dict:
    """Pooled features of every tap for the samples, and their root-relative 24 joints (N, 72)."""
    from engine.model.blaze_trunk import trunk_input

    rows = {name: [] for name in ("pixels", *taps)}
    joints = []
    for a in range(0, len(indices), batch):
        samples = [dataset[i] for i in indices[a:a + batch]]
        images = torch.from_numpy(np.stack([s["image"] for s in samples]))
        x = trunk_input(images)
        with torch.no_grad():
            maps = net.features(x, taps.values())
        rows["pixels"].append(pooled(x))
        for name, i in taps.items():
            rows[name].append(pooled(maps[i]))
        for s in samples:
            j = s["joints3d"][:24, :3].astype(np.float64)        # SMPL's 24 joints first
            joints.append((j - j[0]).reshape(-1))
    out = {k: np.concatenate(v) for k, v in rows.items()}
    out["joints"] = np.stack(joints)
    return out


def candidate_taps(net) -> dict:
    """name -> tensor id: the encoder's last 8x8 map, the decoder's three maps, the heatmaps."""
    from engine.model.blaze_trunk import decoder_taps, tensor_shapes

    shapes = tensor_shapes(net)
    d16, d32, d64 = decoder_taps(net, shapes)
    made_by = {s["out"]: s for s in net.steps}
    encoder8 = made_by[made_by[d16]["in"][0]]["in"][0]      # resize <- the decoder's 8x8 start
    while shapes[encoder8][1] < 100:                        # back to the wide encoder map
        encoder8 = made_by[encoder8]["in"][0]
    return {f"encoder 8x8 ({shapes[encoder8][1]} ch)": encoder8,
            f"decoder 16x16 ({shapes[d16][1]} ch)": d16, f"decoder 32x32 ({shapes[d32][1]} ch)": d32,
            f"decoder 64x64 ({shapes[d64][1]} ch)": d64,
            "landmark heatmaps 64x64 (39)": net.output_ids["heatmaps"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=800)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--size", default="full", choices=("lite", "full", "heavy"))
    p.add_argument("--cache", default=None, help="shard folder for the rendered samples")
    p.add_argument("--out", default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    from engine.body.mannequin import default_mannequin
    from engine.landmarks.assets import assets_dir
    from engine.landmarks.network import load_landmark_network
    from engine.train.configs import EVAL_SEED
    from engine.train.data import synthetic_dataset

    net = load_landmark_network(assets_dir() / f"blazepose_{args.size}.pt", args.size)[0]
    taps = candidate_taps(net)
    body = default_mannequin()
    t0 = time.perf_counter()
    train = features(synthetic_dataset(1, args.train, body, args.cache), list(range(args.train)), net, taps)
    test = features(synthetic_dataset(EVAL_SEED, args.test, body, args.cache), list(range(args.test)), net, taps)
    res = probe(train, test)
    lines = [f"| feature (pooled {POOL}x{POOL}) | held-out MPJPE of a linear probe (mm) |", "|---|---|"]
    for name, (err, lam) in sorted(res.items(), key=lambda kv: kv[1][0]):
        lines.append(f"| {name} | {err:.1f} |")
    text = (f"BlazePose GHUM {args.size}: ridge regression from each map to the root-relative 3D joints, "
            f"{args.train} synthetic renders (seed 1) to fit, {args.test} held-out (seed {EVAL_SEED}); "
            f"{time.perf_counter() - t0:.0f} s.\n`python -m engine.measure.trunk_probe "
            + " ".join(argv if argv is not None else sys.argv[1:]) + "`\n\n" + "\n".join(lines) + "\n")
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
