"""The BlazePose GHUM landmark network as a frozen image trunk for PyMAF's heads.

The landmark network (engine/landmarks/network.py, Google's weights converted at set-up) is
an encoder down to 8x8 followed by a top-down decoder whose 16x16, 32x32 and 64x64 maps (48
channels for ``full``) feed its 39 landmark heatmaps: real-trained, pose-specific features
at three scales, the roles the deconvolution pyramid's 14/28/56 maps play in PyMAF. This
module finds those decoder maps in the converted graph and runs the network only up to the
last of them, without gradients. Its weights stay the user's converted file: they are never
part of a PyMAF checkpoint.

Input: (B, 3, 256, 256) RGB in [0, 1], the same square crop PyMAF sees at 224 (so the crop
camera convention is unchanged), resized to the landmark network's 256.
"""
from __future__ import annotations

import torch
from torch import nn

from engine.landmarks.network import INPUT_SIZE, LandmarkNetwork

LEVEL_SIZES = (16, 32, 64)        # coarse -> fine, one per PyMAF stage
TRUNK_SIZES = ("lite", "full", "heavy")


def tensor_shapes(net: LandmarkNetwork) -> dict:
    """{tensor id: shape} of every step's output on one 256 input (one run of the graph)."""
    return {out: shape for _, _, out, shape in net.step_shapes()}


def decoder_taps(net: LandmarkNetwork, shapes: dict = None) -> list:
    """The tensor ids of the decoder's merged maps at 16, 32 and 64 pixels: the outputs of the
    ``add`` steps that join an upsampled coarser map with the encoder's skip connection.
    ``shapes``: ``tensor_shapes(net)`` when the caller has it."""
    made_by = {s["out"]: s for s in net.steps}
    shapes = shapes or tensor_shapes(net)
    taps = {}
    for s in net.steps:
        if s["op"] != "add" or made_by.get(s["in"][0], {}).get("op") != "resize":
            continue
        shape = shapes[s["out"]]
        if len(shape) == 4 and shape[-1] in LEVEL_SIZES and shape[-1] not in taps:
            taps[shape[-1]] = s["out"]
    missing = [size for size in LEVEL_SIZES if size not in taps]
    if missing:
        raise ValueError(f"the landmark network has no decoder map of {missing} pixels")
    return [taps[size] for size in LEVEL_SIZES]


def tap_channels(net: LandmarkNetwork, shapes: dict = None) -> int:
    """Channels of the decoder maps (48 for ``full``; the three levels share it)."""
    shapes = shapes or tensor_shapes(net)
    channels = {shapes[i][1] for i in decoder_taps(net, shapes)}
    if len(channels) != 1:
        raise ValueError(f"decoder maps of different widths: {sorted(channels)}")
    return channels.pop()


class BlazeTrunk(nn.Module):
    """Frozen landmark network -> [(B, C, 16, 16), (B, C, 32, 32), (B, C, 64, 64)] float32."""

    def __init__(self, net: LandmarkNetwork):
        super().__init__()
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        shapes = tensor_shapes(net)
        self.taps = decoder_taps(net, shapes)
        self.channels = tap_channels(net, shapes)
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)     # frozen: never in training mode

    @torch.no_grad()
    def forward(self, crops: torch.Tensor) -> list:
        if crops.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) crops, got {tuple(crops.shape)}")
        maps = self.net.features(crops, self.taps)
        return [maps[i].float().contiguous() for i in self.taps]


def neck_levels(in_channels: int, out_channels: int = 256) -> nn.ModuleList:
    """One trainable 3x3 conv -> BN -> ReLU per level, lifting the trunk's decoder maps to the
    256 channels PyMAF's per-point MLP reads (the deconvolution pyramid's width)."""
    return nn.ModuleList(nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, momentum=0.1),
        nn.ReLU(inplace=True)) for _ in LEVEL_SIZES)


def trunk_size(trunk: str) -> str:
    """"blazepose-full" -> "full"; raises ValueError for anything else."""
    prefix = "blazepose-"
    if not trunk.startswith(prefix) or trunk[len(prefix):] not in TRUNK_SIZES:
        raise ValueError(f"trunk must be 'resnet' or one of {[prefix + s for s in TRUNK_SIZES]}, got {trunk!r}")
    return trunk[len(prefix):]


def trunk_input(images: torch.Tensor) -> torch.Tensor:
    """PyMAF crops (B, 224, 224, 3) uint8 RGB -> the trunk's (B, 3, 256, 256) RGB in [0, 1]: the
    same square box, so the crop camera (s, tx, ty) means the same; bilinear, half-pixel
    centres (the resize the landmark graph itself uses)."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] == INPUT_SIZE and x.shape[-2] == INPUT_SIZE:
        return x.contiguous()
    return torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                           align_corners=False).clamp_(0.0, 1.0)
