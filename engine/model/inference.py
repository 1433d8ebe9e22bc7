"""Inference API: batched 224x224 person crops in, per-stage SMPL estimates out.

    predictor = Predictor.from_checkpoint("PyMAF_model_checkpoint.pt", device="auto")
    out = predictor.predict(crops_uint8)          # (B, 224, 224, 3) RGB uint8
    out.final.rotmat, out.final.vertices, out.final.joints2d ...
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from engine.model.checkpoint import load_pymaf
from engine.model.pymaf import PyMAF, PyMAFOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU. An unavailable choice is an error."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {name!r}")
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is usable by this torch build")
    if name == "mps" and not mps_ok:
        raise ValueError("device 'mps' requested but Apple's Metal backend is not available")
    return torch.device(name)


def resolve_autocast(name: str, device: torch.device):
    """'none' | 'bf16' | 'fp16' -> the autocast dtype (None for none); fp16 needs a GPU."""
    if name not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast must be one of {tuple(AUTOCAST_DTYPES)}, got {name!r}")
    dtype = AUTOCAST_DTYPES[name]
    if dtype is torch.float16 and device.type == "cpu":
        raise ValueError("fp16 autocast needs a GPU; use bf16 on the CPU")
    return dtype


def normalize_crops(crops: torch.Tensor) -> torch.Tensor:
    """(B, 224, 224, 3) uint8 RGB -> (B, 3, 224, 224) float32, /255 then ImageNet mean/std."""
    x = crops.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class Predictor:
    """A PyMAF in eval mode on a device, with optional autocast for trunk and pyramid."""

    def __init__(self, model: PyMAF, device: str = "auto", autocast: str = "none"):
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_autocast(autocast, self.device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path, device: str = "auto", autocast: str = "none", body=None) -> "Predictor":
        model, _info = load_pymaf(path, body=body)
        return cls(model, device=device, autocast=autocast)

    def predict(self, crops, *, full_mesh_every_stage: bool = False) -> PyMAFOutput:
        """crops: (B, 224, 224, 3) uint8 RGB (numpy or tensor), or an already normalized
        (B, 3, 224, 224) float tensor. Returns tensors on the predictor's device."""
        if isinstance(crops, np.ndarray):
            crops = torch.from_numpy(crops)
        crops = crops.to(self.device, non_blocking=True)
        if crops.dtype == torch.uint8:
            crops = self.model.prepare_crops(crops)
        with torch.inference_mode():
            return self.model(crops, full_mesh_every_stage=full_mesh_every_stage,
                              run_iuv=False, autocast_dtype=self.autocast_dtype)
