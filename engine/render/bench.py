"""Renderer throughput: ``python -m engine.render.bench [--size 224] [--batch 64]``.

Renders ``batch`` views of the mannequin (turned about the vertical axis, about 84 % of
the image height, all five outputs read back) and prints a markdown row of images per
second (best of ``--repeats`` timed batches, after one warm-up batch). ``--tiles 1``
draws and reads image by image instead of through the atlas; ``--cull`` adds rows
with back-face culling.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from engine.render.renderer import MAX_TILES, Renderer, gl_context

DEFAULT_ASSET = os.path.join("build", "assets", "mannequin.npz")


def load_body(path: str = DEFAULT_ASSET):
    """The mannequin with its surface labels: the built asset if present, else built now."""
    from engine.body.model_data import BodyModelData
    from engine.render.surface import with_surface

    if os.path.isfile(path):
        with np.load(path) as z:
            body = BodyModelData.from_npz_dict({k: z[k] for k in z.files}, source=path)
    else:
        from engine.body.mannequin import build_mannequin

        body = build_mannequin()
    return body if body.vertex_parts is not None else with_surface(body)


def turntable(rest: np.ndarray, batch: int, size: int, height_fraction: float = 0.84):
    """(V, 3) rest vertices (y up) -> ((B, V, 3) camera-frame views, focal px) filling
    ``height_fraction`` of a ``size`` px image, turned by 360 / B degrees each."""
    v = np.asarray(rest, np.float64) * np.array([1.0, -1.0, -1.0])   # y down, facing the camera
    v = v - (v.max(0) + v.min(0)) / 2
    depth = 3.0
    focal = height_fraction * size * depth / (v[:, 1].max() - v[:, 1].min())
    out = np.empty((batch, len(v), 3), np.float32)
    for i, a in enumerate(np.linspace(0, 2 * np.pi, batch, endpoint=False)):
        c, s = np.cos(a), np.sin(a)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        out[i] = v @ rot.T + [0.0, 0.0, depth]
    return out, float(focal)


def bench_renderer(body=None, size: int = 224, batch: int = 64, repeats: int = 5,
                   max_tiles: int = MAX_TILES, cull_back_faces: bool = False) -> dict:
    """Time ``Renderer.render`` on a batch; returns images/s and the setup."""
    body = load_body() if body is None else body
    views, focal = turntable(body.v_template, batch, size)
    with Renderer(size, size, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=max_tiles,
                  cull_back_faces=cull_back_faces) as r:
        r.render(views, focal)                                  # warm-up: shader compile, first touch
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r.render(views, focal)
            times.append(time.perf_counter() - t0)
        tiles = r.tiles
    best = min(times)
    return {"size": size, "batch": batch, "tiles": min(tiles, batch), "cull": cull_back_faces,
            "images_per_s": batch / best,
            "ms_per_image": 1000 * best / batch, "median_images_per_s": batch / float(np.median(times)),
            "renderer": gl_context().info["GL_RENDERER"], "cpus": os.cpu_count()}


def markdown_row(r: dict) -> str:
    return (f"| {r['renderer']} ({r['cpus']} CPUs, {platform.machine()}) | {r['size']}x{r['size']} "
            f"| {r['batch']} | {r['tiles']} | {'yes' if r['cull'] else 'no'} "
            f"| {r['images_per_s']:.0f} (median {r['median_images_per_s']:.0f}) "
            f"| {r['ms_per_image']:.2f} |")


HEADER = ("| device | image | batch | tiles per draw | back-face culling | images/s (best, median) | ms/image |\n"
          "|---|---|---|---|---|---|---|")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiles", type=int, nargs="*", default=[MAX_TILES],
                    help="atlas tile limits to compare (1 = image by image)")
    ap.add_argument("--cull", action="store_true", help="also time with back-face culling")
    ap.add_argument("--body", default=DEFAULT_ASSET, help="body model .npz (default: the mannequin)")
    args = ap.parse_args(argv)
    body = load_body(args.body)
    print(HEADER)
    for cull in (False, True) if args.cull else (False,):
        for tiles in args.tiles:
            row = bench_renderer(body, args.size, args.batch, args.repeats, tiles, cull)
            print(markdown_row(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
