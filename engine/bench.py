"""Network benchmark: frames per second and where the time goes.

    python -m engine.bench [--device cpu|cuda] [--batches 1 32] [--depth 50] [--autocast none bf16]

Times the whole forward (inference mode, the way the engine runs it) and, separately on
the same inputs, the trunk, the pyramid and the SMPL calls; the MAF/regressor share is
the remainder. Prints a markdown table (paste into docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from engine.body.mannequin import build_mannequin
from engine.common import smpl_topology as topo
from engine.model.inference import AUTOCAST_DTYPES, resolve_device
from engine.model.pymaf import NUM_STAGES, ModelConfig, PyMAF


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_times(fns: dict, device, repeats: int, warmup: int = 2) -> dict:
    """Median wall time (s) of each fn, run interleaved so that machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def measure(model: PyMAF, batch: int, device: torch.device, autocast: str, repeats: int) -> dict:
    """Whole forward vs. trunk+pyramid alone (the overhead goal), and the share of each part."""
    dtype = AUTOCAST_DTYPES[autocast]
    x = torch.randn(batch, 3, 224, 224, device=device)

    def cnn(fn, inp):
        if dtype is None:
            return fn(inp)
        with torch.autocast(device_type=device.type, dtype=dtype):
            return fn(inp)

    def backbone():
        return cnn(model.feature_extractor, x)

    def backbone_and_pyramid():
        f = backbone()
        for t in range(NUM_STAGES):
            f = cnn(model.pyramid_block(t), f)
        return f

    rot = torch.eye(3, device=device).expand(batch, topo.NUM_JOINTS, 3, 3).contiguous()
    betas = torch.zeros(batch, topo.NUM_BETAS, device=device)
    subsets = model.stage_subsets()

    def smpl_calls():  # what one forward poses: two vertex subsets, one full mesh
        for t in range(NUM_STAGES - 1):
            model.regressor[t].smpl.pose_subset(rot, betas, subsets[t])
        model.regressor[-1].smpl.pose(rot, betas)

    with torch.inference_mode():
        t = median_times({"total": lambda: model(x, autocast_dtype=dtype), "cnn": backbone_and_pyramid,
                          "backbone": backbone, "smpl": smpl_calls}, device, repeats)
    total = t["total"]
    pyramid = max(t["cnn"] - t["backbone"], 0.0)
    rest = max(total - t["cnn"] - t["smpl"], 0.0)
    return {"fps": batch / total, "total_ms": total * 1e3, "backbone": t["backbone"] / total,
            "pyramid": pyramid / total, "maf": rest / total, "smpl": t["smpl"] / total,
            "overhead": total / t["cnn"] - 1.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="batch sizes (default: 1 32 on the CPU, 1 256 on a GPU)")
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50))
    parser.add_argument("--autocast", nargs="+", default=None,
                        help="none / bf16 / fp16 (default: none on the CPU, none and bf16 on a GPU)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    batches = args.batches or ([1, 32] if device.type == "cpu" else [1, 256])
    autocasts = args.autocast or (["none"] if device.type == "cpu" else ["none", "bf16"])
    model = PyMAF(build_mannequin(), ModelConfig(backbone_depth=args.depth)).to(device).eval()

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"PyMAF ResNet-{args.depth}, device {device.type} ({name}), torch {torch.__version__}")
    print("| batch | precision | frames/s | ms/batch | backbone | pyramid | MAF+regressors | SMPL | overhead vs backbone+pyramid |")
    print("|---|---|---|---|---|---|---|---|---|")
    for autocast in autocasts:
        for batch in batches:
            r = measure(model, batch, device, autocast, args.repeats)
            precision = "fp32" if autocast == "none" else f"{autocast} autocast (trunk+pyramid)"
            print(f"| {batch} | {precision} | {r['fps']:.1f} | {r['total_ms']:.1f} | {r['backbone']:.0%} | "
                  f"{r['pyramid']:.0%} | {r['maf']:.0%} | {r['smpl']:.0%} | {r['overhead']:+.1%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
