"""The BlazePose GHUM 3D landmark network (lite / full / heavy) in torch.

The architecture is the one in Google's ``pose_landmark_<size>.tflite`` files, read at set-up
by ``engine/landmarks/convert.py`` into a layer list (``spec``): convolutions (plain and
depthwise, fused ReLU6), explicit zero padding, residual additions, max pooling, half-pixel
bilinear upsampling and the output heads. ``LandmarkNetwork`` builds one ``nn.Conv2d`` per
convolution of that list and runs the list in order; its ``state_dict`` holds exactly the
converted weights (loaded strictly).

Input: (B, 3, 256, 256) RGB in [0, 1] (the crop, see ``engine/landmarks/roi.py``).
Outputs (``LandmarkOutput``; conventions of the model, in crop pixels of the 256 input):

    landmarks     (B, 39, 5)  x, y, z (crop pixels; z relative depth, same scale as x),
                              visibility and presence logits; 0..32 body, 33..38 auxiliary
    presence      (B,)        probability that a person is in the crop
    segmentation  (B, 256, 256) person mask logits
    heatmaps      (B, 39, 64, 64) per-landmark heatmap logits
    world         (B, 39, 3)  metres, origin between the hips, axes of the crop
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.landmarks.convert import FORMAT, FORMAT_VERSION

NUM_LANDMARKS = 39
NUM_BODY_LANDMARKS = 33
INPUT_SIZE = 256


class LandmarkModelFileError(ValueError):
    """A landmark weights file that is not ours, not of the requested size, or damaged."""


@dataclass
class LandmarkOutput:
    landmarks: torch.Tensor
    presence: torch.Tensor
    segmentation: torch.Tensor
    heatmaps: torch.Tensor
    world: torch.Tensor


def _same_pads(size: int, kernel: int, stride: int) -> tuple:
    """TensorFlow 'SAME' padding (before, after) of one axis: the extra pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _activate(x: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    if act == "relu":
        return F.relu(x)
    return x


def _activate_(x: torch.Tensor, act: str) -> torch.Tensor:
    """``_activate`` in place, for a tensor nothing else holds (a convolution's fresh output)."""
    if act == "relu6":
        return x.clamp_(0.0, 6.0)
    if act == "relu":
        return x.clamp_(min=0.0)
    return x


class LandmarkNetwork(nn.Module):
    """The landmark network of one size, built from its converted layer list."""

    def __init__(self, spec: dict):
        super().__init__()
        self.steps = [dict(s) for s in spec["steps"]]
        self.input_id = int(spec["input"])
        self.output_ids = {k: int(v) for k, v in spec["outputs"].items()}
        layers = []
        for s in self.steps:
            if s["op"] not in ("conv", "dwconv"):
                continue
            if s["layer"] != len(layers):
                raise LandmarkModelFileError("layer list out of order")
            # shapes come from the weights; placeholders here, replaced by load_state_dict
            layers.append(_ConvSlot(s))
        self.layers = nn.ModuleList(layers)
        last_use = {}
        for k, s in enumerate(self.steps):
            for i in s["in"]:
                last_use[i] = k
        keep = set(self.output_ids.values())
        # tensors no later step reads are freed as soon as possible (memory at batch 64+)
        self._free_after = [[i for i in s["in"] if last_use[i] == k and i not in keep]
                            for k, s in enumerate(self.steps)]

    def forward(self, images: torch.Tensor) -> LandmarkOutput:
        """images (B, 3, 256, 256) float RGB in [0, 1] -> LandmarkOutput."""
        o = self.run(images)
        B = images.shape[0]
        return LandmarkOutput(
            landmarks=o["landmarks"].float().reshape(B, NUM_LANDMARKS, 5),
            presence=o["presence"].float().reshape(B),
            segmentation=o["segmentation"].float().reshape(B, INPUT_SIZE, INPUT_SIZE),
            heatmaps=o["heatmaps"].float(),
            world=o["world"].float().reshape(B, NUM_LANDMARKS, 3))

    def run(self, images: torch.Tensor) -> dict:
        """The graph on (B, 3, H, W) input (the model's own input convention) -> {output name:
        tensor}; 4-d outputs are (B, C, H, W), reshaped ones keep the source's (NHWC) order
        (the detector's ``regressors`` (B, 2254, 12), ``scores`` (B, 2254, 1))."""
        env = self._execute(images, set(self.output_ids.values()), stop_early=False)
        return {k: env[i].float() for k, i in self.output_ids.items()}

    def features(self, images: torch.Tensor, tensor_ids) -> dict:
        """Intermediate tensors of the graph -> {tensor id: (B, C, H, W)}: only the steps up to
        the last of them run (a frozen trunk for other heads). ``step_shapes`` lists the ids."""
        return self._execute(images, {int(i) for i in tensor_ids}, stop_early=True)

    def step_shapes(self, size: int = INPUT_SIZE) -> list:
        """[(step index, op, output tensor id, output shape)] of every step on one (1, 3, size,
        size) input: where the feature maps are."""
        with torch.no_grad():
            out = self._execute(torch.zeros(1, 3, size, size), {s["out"] for s in self.steps}, stop_early=False)
        return [(k, s["op"], s["out"], tuple(out[s["out"]].shape)) for k, s in enumerate(self.steps)]

    def _execute(self, images: torch.Tensor, wanted: set, stop_early: bool) -> dict:
        """Run the steps; -> {id: tensor} of the ``wanted`` ones (others are freed as soon as
        no later step reads them). ``stop_early``: stop once every wanted tensor exists."""
        # channels-last runs the depthwise convolutions 1.5-3x faster on CPU
        env = {self.input_id: images.contiguous(memory_format=torch.channels_last)}
        kept = {}
        for k, s in enumerate(self.steps):
            x = env[s["in"][0]]
            op = s["op"]
            if op in ("conv", "dwconv"):
                layer = self.layers[s["layer"]]
                pad = (0, 0)
                if s["padding"] == "same":
                    kh, kw = layer.weight.shape[-2:]
                    ph = _same_pads(x.shape[-2], kh, s["stride"][0])
                    pw = _same_pads(x.shape[-1], kw, s["stride"][1])
                    if ph[0] == ph[1] and pw[0] == pw[1]:
                        pad = (ph[0], pw[0])        # symmetric: the convolution pads (no copy)
                    else:
                        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
                y = F.conv2d(x, layer.weight, layer.bias, stride=tuple(s["stride"]), padding=pad,
                             groups=x.shape[1] if op == "dwconv" else 1)
                y = _activate_(y, s["act"])
            elif op == "pad":
                top, bottom, left, right, c0, c1 = s["pads"]
                y = F.pad(x, (left, right, top, bottom, c0, c1))
            elif op == "add":
                y = _activate(x + env[s["in"][1]], s["act"])
            elif op == "maxpool":
                if s["padding"] != "valid":
                    raise LandmarkModelFileError("max pooling with SAME padding is not supported")
                y = F.max_pool2d(x, tuple(s["kernel"]), tuple(s["stride"]))
            elif op == "resize":
                size = tuple(s["size"]) if "size" in s else (x.shape[-2] * s["scale"][0], x.shape[-1] * s["scale"][1])
                y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            elif op == "affine":              # per-channel x * mul + add (input scaling)
                mul = x.new_tensor(s["mul"]).view(1, -1, 1, 1)
                add = x.new_tensor(s["add"]).view(1, -1, 1, 1)
                y = x * mul + add
            elif op == "sigmoid":
                y = torch.sigmoid(x)
            elif op == "reshape":
                if x.dim() == 4:
                    x = x.permute(0, 2, 3, 1)   # the source's element order is NHWC
                shape = s.get("shape")
                y = x.reshape(x.shape[0], -1) if shape is None else x.reshape(x.shape[0], *shape[1:])
            elif op == "depth_to_space":
                # TF: out[h*b + i, w*b + j, c] = in[h, w, (i*b + j)*C + c] (not torch's pixel_shuffle
                # order, whose input channel is c*b*b + i*b + j)
                b = int(s["block"])
                B, C, H, W = x.shape
                y = (x.reshape(B, b, b, C // (b * b), H, W).permute(0, 3, 4, 1, 5, 2)
                     .reshape(B, C // (b * b), H * b, W * b))
            elif op == "concat":
                axis = int(s["axis"])
                if int(s.get("ndim", x.dim())) == 4:
                    axis = (0, 2, 3, 1)[axis]   # NHWC axis -> NCHW
                y = _activate(torch.cat([env[i] for i in s["in"]], dim=axis), s.get("act", "none"))
            else:
                raise LandmarkModelFileError(f"unknown step {op!r}")
            env[s["out"]] = y
            if s["out"] in wanted:
                kept[s["out"]] = y
                if stop_early and len(kept) == len(wanted):
                    break
            for i in self._free_after[k]:
                env.pop(i, None)
        return kept


class _ConvSlot(nn.Module):
    """Holds one convolution's weight and bias (shapes set by the converted weights)."""

    def __init__(self, step: dict):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(0), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(0), requires_grad=False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # shapes are defined by the file: adopt them before the (strict) key check
        for name in ("weight", "bias"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, nn.Parameter(torch.empty_like(state_dict[key], dtype=torch.float32),
                                                 requires_grad=False))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def read_landmark_file(path, size: str) -> dict:
    """Our converted weights file, checked: format, version and model size. -> the document."""
    from engine.safe_torch import TorchFileError, read_torch_file

    path = Path(path)
    try:
        doc = read_torch_file(path)
    except TorchFileError as e:
        raise LandmarkModelFileError(str(e)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        kind = "a PyMAF/torch checkpoint" if isinstance(doc, dict) and any(
            "state_dict" in k or "model" in k for k in doc) else "not a converted landmark model"
        raise LandmarkModelFileError(f"{path.name}: {kind}, not a BlazePose landmark weights file "
                                     f"(format {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise LandmarkModelFileError(f"{path.name}: landmark weights format version {doc.get('format_version')}, "
                                     f"this engine reads {FORMAT_VERSION}; run the set-up again")
    if doc.get("size") != size:
        kind = lambda v: "pose detector" if v == "detector" else "landmark model"  # noqa: E731
        raise LandmarkModelFileError(f"{path.name}: holds the '{doc.get('size')}' {kind(doc.get('size'))}, "
                                     f"not '{size}'")
    return doc


def load_landmark_network(path, size: str) -> tuple:
    """-> (LandmarkNetwork in eval mode, float32 on the CPU, the file's provenance dict).

    Raises LandmarkModelFileError naming the problem (wrong file, wrong size, missing or
    unexpected weights, wrong shapes)."""
    doc = read_landmark_file(path, size)
    try:
        net = LandmarkNetwork(doc["spec"])
        net.load_state_dict({k: v.float() for k, v in doc["state_dict"].items()}, strict=True)
    except (KeyError, TypeError, RuntimeError) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise LandmarkModelFileError(f"{Path(path).name}: damaged landmark weights file "
                                     f"({type(e).__name__}: {detail[:300]})") from None
    for layer, step in zip(net.layers, (s for s in net.steps if s["op"] in ("conv", "dwconv"))):
        if layer.weight.dim() != 4 or (step["op"] == "dwconv" and layer.weight.shape[1] != 1):
            raise LandmarkModelFileError(f"{Path(path).name}: layer {step['layer']} has a wrong shape")
    return net.eval(), dict(doc.get("source", {}))


def load_detector_network(weights, size: str, what: str) -> tuple:
    """A converted person-detector network (``size`` "detector" or "movenet"; ``weights`` the
    file set-up made) -> (network, provenance) like ``load_landmark_network``, a wrong or damaged
    file reported as ``assets.LandmarkModelError`` naming ``what`` and the set-up command."""
    from engine.landmarks import assets

    try:
        return load_landmark_network(weights, size)
    except LandmarkModelFileError as e:
        raise assets.LandmarkModelError(f"{e}; {what} is needed: set it up with {assets.fix_command()}",
                                        code="detector_model") from None
