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


def median_time(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn() in seconds, synchronizing the device around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: PyMAF, batch: int, device: torch.device, autocast: str, repeats: int) -> dict:
    dtype = AUTOCAST_DTYPES[autocast]
    x = torch.randn(batch, 3, 224, 224, device=device)

    def cnn(fn, inp):
        if dtype is None:
            return fn(inp)
        with torch.autocast(device_type=device.type, dtype=dtype):
            return fn(inp)

    with torch.inference_mode():
        feat = cnn(model.feature_extractor, x)
        pyramid_in = feat
        rot = torch.eye(3, device=device).expand(batch, topo.NUM_JOINTS, 3, 3).contiguous()
        betas = torch.zeros(batch, topo.NUM_BETAS, device=device)
        subsets = model.stage_subsets()

        def pyramid():
            f = pyramid_in
            for t in range(NUM_STAGES):
                f = cnn(model.pyramid_block(t), f)
            return f

        def smpl_calls():
            for t in range(NUM_STAGES - 1):
                model.regressor[t].smpl.pose_subset(rot, betas, subsets[t])
            model.regressor[-1].smpl.pose(rot, betas)

        total = median_time(lambda: model(x, autocast_dtype=dtype), device, repeats)
        backbone = median_time(lambda: cnn(model.feature_extractor, x), device, repeats)
        pyr = median_time(pyramid, device, repeats)
        smpl = median_time(smpl_calls, device, repeats)
    rest = max(total - backbone - pyr - smpl, 0.0)
    return {"batch": batch, "autocast": autocast, "fps": batch / total, "total_ms": total * 1e3,
            "backbone": backbone / total, "pyramid": pyr / total, "maf": rest / total, "smpl": smpl / total,
            "overhead": total / (backbone + pyr) - 1.0}


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
