"""A small learned person detector, trained on the project's own mannequin renders.

CenterNet-style ("Objects as Points"): the frame is letterboxed (scaled so its longer side
is ``long_side`` px, padded at the bottom / right to a multiple of 32) and a small
convolutional network predicts, on a grid of ``stride``-px cells,

* a centre heatmap (one logit per cell; sigmoid, trained with CenterNet's focal loss),
* the distances from the cell's centre to the four sides of the box, as
  ``log(distance / stride)`` (TTFNet: every cell near a centre regresses its box with a
  Gaussian-weighted GIoU loss, which trains in far fewer steps than CenterNet's
  centre-only size and offset).

Decoding keeps the cells that are the maximum of their 3x3 neighbourhood, turns them
into boxes, maps the peak value to a calibrated score (``calibrate``: a logistic fit on
held-out renders, stored with the weights) and keeps those above ``threshold``, then
non-max suppresses them (``engine.people.detect.nms``). Boxes are the AMODAL full-body box clipped to the image
(the bounding box of all projected vertices, occluded parts included): the box PyMAF's
crop needs.

Cell convention: output cell (row i, column j) covers input pixels ``[j s, (j + 1) s) x
[i s, (i + 1) s)`` (s = stride), its centre is pixel ``((j + 0.5) s, (i + 0.5) s)``; a box
centre at pixel x belongs to cell ``round(x / s - 0.5)``.

Weights: ``engine/people/weights/mannequin_detector.pt``, made by
``python -m engine.people.train_detector`` (docs/people.md gives the command): a plain
dict ``{"format", "version", "config": {str: int | float | str | list}, "state_dict":
{name: float16 tensor}}``, read only through ``engine.safe_torch.read_torch_file``
(``weights_only=True``) and checked key by key and shape by shape.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.people.detect import Detector, nms

WEIGHTS = Path(__file__).resolve().parent / "weights" / "mannequin_detector.pt"
FORMAT, VERSION = "pymaf-mannequin-detector", 1
#: Network settings; stored in the weights file's "config" and checked on load.
DEFAULT_CONFIG = {"widths": [24, 48, 64, 96], "head": 48, "stride": 8, "long_side": 320, "multiple": 32,
                  "pad_value": 114, "score_a": 1.0, "score_b": 0.0}
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25      # uint8 / 255 -> (x - mean) / std


class WeightsError(ValueError):
    """A detector weights file that cannot be used (wrong format, keys or shapes)."""


# ----------------------------------------------------------------------------------
# Letterbox
# ----------------------------------------------------------------------------------
def letterbox_geometry(height: int, width: int, long_side: int, multiple: int) -> tuple:
    """Frame (H, W) -> (scale k, (h, w) scaled size, (Hp, Wp) padded size).

    h = round(H k), w = round(W k) with k = long_side / max(H, W); Hp, Wp are h, w rounded
    up to a multiple of ``multiple``."""
    k = float(long_side) / float(max(height, width))
    h, w = max(1, round(height * k)), max(1, round(width * k))
    pad = lambda n: -(-n // multiple) * multiple  # noqa: E731
    return k, (h, w), (pad(h), pad(w))


def letterbox(image: np.ndarray, long_side: int, multiple: int, pad_value: int = 114) -> tuple:
    """(H, W, 3) uint8 -> (canvas (Hp, Wp, 3) uint8, k): the image scaled by k (area
    interpolation when shrinking) at the top-left corner, ``pad_value`` elsewhere.
    A point x in the image is at x k on the canvas."""
    k, (h, w), (hp, wp) = letterbox_geometry(image.shape[0], image.shape[1], long_side, multiple)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=interp) if (h, w) != image.shape[:2] \
        else image
    canvas = np.full((hp, wp, 3), pad_value, np.uint8)
    canvas[:h, :w] = small
    return canvas, k


def normalize(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 ``(x / 255 - 0.5) / 0.25``."""
    return (images.permute(0, 3, 1, 2).float() / 255.0 - PIXEL_MEAN) / PIXEL_STD


# ----------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------
def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CenterNetSmall(nn.Module):
    """A 4 x 4 stride-4 patch convolution, then stages at strides 4, 8, 16, 32 (``widths``
    channels, plain 3x3 conv + BN + ReLU blocks), a top-down pyramid summed into ``head`` channels at ``stride`` (4 or 8),
    two 3x3 head convs and one 1x1 output conv with 5 channels: heatmap logit, log
    distances to the box sides (4).

    forward: (B, 3, H, W) normalised, H and W multiples of 32 -> (B, 5, H / stride, W / stride)."""

    def __init__(self, widths=(24, 48, 64, 96), head: int = 48, stride: int = 8):
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"stride must be 4 or 8, got {stride}")
        w = list(widths)
        # Stride 4 at once (a 4 x 4 patch convolution): the layers at stride 2 cost 40 % of
        # a training step on the CPU for little gain in 4-px cells.
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 4, 4, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        self.s4 = _cbr(w[0], w[0])
        self.s8 = nn.Sequential(_cbr(w[0], w[1], 2), _cbr(w[1], w[1]))
        self.s16 = nn.Sequential(_cbr(w[1], w[2], 2), _cbr(w[2], w[2]), _cbr(w[2], w[2]))
        self.s32 = nn.Sequential(_cbr(w[2], w[3], 2), _cbr(w[3], w[3]), _cbr(w[3], w[3]))
        levels = (w[3], w[2], w[1]) + ((w[0],) if stride == 4 else ())
        self.lateral = nn.ModuleList(nn.Conv2d(c, head, 1) for c in levels)
        self.head = nn.Sequential(_cbr(head, head), _cbr(head, head))
        self.out = nn.Conv2d(head, 5, 1)
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([-2.19,                  # heatmap prior 0.1 (CenterNet)
                                              np.log(20 / stride), np.log(50 / stride),
                                              np.log(20 / stride), np.log(50 / stride)]))   # a 40 x 100 px box

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c4 = self.s4(self.stem(x))
        c8 = self.s8(c4)
        c16 = self.s16(c8)
        p = self.lateral[0](self.s32(c16))
        for lat, c in zip(self.lateral[1:], (c16, c8, c4)):
            p = lat(c) + F.interpolate(p, size=c.shape[-2:], mode="nearest")
        return self.out(self.head(p))


def build_network(config: dict) -> CenterNetSmall:
    return CenterNetSmall(config["widths"], config["head"], config["stride"])


# ----------------------------------------------------------------------------------
# Targets and decoding
# ----------------------------------------------------------------------------------
def cell_centres(h: int, w: int, stride: int) -> tuple:
    """Pixel coordinates of the output cells' centres: (x (h, w), y (h, w)) = ((j + 0.5) s, (i + 0.5) s)."""
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return (jj + 0.5) * stride, (ii + 0.5) * stride


def encode_targets(boxes: np.ndarray, out_hw: tuple, stride: int, ignore: np.ndarray | None = None,
                   alpha: float = 0.54, min_sigma: float = 0.6, reg_min: float = 0.2) -> dict:
    """Training targets for one image (CenterNet heatmap, TTFNet box regression).

    boxes (N, 4) xyxy in network-input px; out_hw (h, w) output cells; ignore (M, 4)
    boxes whose central half gets no negative heatmap loss (people too hidden to ask for).
    -> dict of float32 arrays: heat (h, w) elliptical Gaussians (sigma = alpha * box size /
    6 in cells, at least ``min_sigma``) with 1 exactly at each centre cell; box (4, h, w)
    the xyxy box (px) a cell must predict where a box owns it (its Gaussian is the largest
    there and at least ``reg_min``); box_weight (h, w) that Gaussian, scaled so each box's
    weights sum to 1 (0 elsewhere); neg_weight (h, w) 0 inside ignored regions, else 1."""
    h, w = out_hw
    heat = np.zeros((h, w), np.float32)
    target = np.zeros((4, h, w), np.float32)
    owner = np.full((h, w), -1)
    gauss = []
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    for n, b in enumerate(boxes):
        bw, bh = b[2] - b[0], b[3] - b[1]
        if bw <= 0 or bh <= 0:
            gauss.append(None)
            continue
        cx, cy = (b[0] + b[2]) / 2 / stride - 0.5, (b[1] + b[3]) / 2 / stride - 0.5
        pj, pi = int(np.clip(round(cx), 0, w - 1)), int(np.clip(round(cy), 0, h - 1))
        sx, sy = max(alpha * bw / stride / 6, min_sigma), max(alpha * bh / stride / 6, min_sigma)
        g = np.exp(-((jj - pj) ** 2 / (2 * sx * sx) + (ii - pi) ** 2 / (2 * sy * sy))).astype(np.float32)
        g[pi, pj] = 1.0
        own = (g > heat) & (g >= reg_min)
        heat = np.maximum(heat, g)
        owner[own] = n
        gauss.append(g)
    weight = np.zeros((h, w), np.float32)
    for n, g in enumerate(gauss):
        own = owner == n
        if g is None or not own.any():
            continue
        target[:, own] = boxes[n][:, None]
        weight[own] = g[own] / g[own].sum()
    neg_weight = np.ones((h, w), np.float32)
    for b in np.asarray(ignore if ignore is not None else [], np.float64).reshape(-1, 4):
        cx, cy = (b[0] + b[2]) / 2 / stride - 0.5, (b[1] + b[3]) / 2 / stride - 0.5
        hw, hh = (b[2] - b[0]) / stride / 4, (b[3] - b[1]) / stride / 4
        neg_weight[(np.abs(jj - cx) <= hw) & (np.abs(ii - cy) <= hh) & (heat < 1)] = 0.0
    return dict(heat=heat, box=target, box_weight=weight, neg_weight=neg_weight)


def predicted_boxes(reg: torch.Tensor, stride: int) -> torch.Tensor:
    """Box channels (B, 4, h, w) -> (B, 4, h, w) xyxy px: each cell predicts its distances
    to the box sides (left, top, right, bottom) as ``exp(value) * stride``."""
    b, _, h, w = reg.shape
    jj = (torch.arange(w, device=reg.device, dtype=reg.dtype) + 0.5) * stride
    ii = (torch.arange(h, device=reg.device, dtype=reg.dtype) + 0.5) * stride
    d = torch.exp(reg.clamp(max=8.0)) * stride
    cx, cy = jj.view(1, 1, w).expand(b, h, w), ii.view(1, h, 1).expand(b, h, w)
    return torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1)


def calibrate(score: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Heatmap peak -> calibrated score ``sigmoid(a * logit(peak) + b)`` (a, b fitted on
    held-out scenes so the score estimates the chance that the box is a person)."""
    p = score.clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid(a * torch.log(p / (1 - p)) + b)


def decode(out: torch.Tensor, stride: int, threshold: float = 0.2, top_k: int = 40,
           calibration: tuple = (1.0, 0.0), smooth: bool = True) -> list:
    """Network output (B, 5, h, w) -> per image an (N, 5) float64 array [x1, y1, x2, y2,
    score] in network-input px, before NMS: cells that are the maximum of their 3x3
    neighbourhood (max-pool), at most ``top_k``, with calibrated score >= threshold."""
    heat = torch.sigmoid(out[:, 0].float())
    peak = heat == F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0]
    heat = torch.where(peak, heat, torch.zeros_like(heat))
    b, h, w = heat.shape
    k = min(int(top_k), h * w)
    scores, idx = heat.reshape(b, -1).topk(k, dim=1)                               # (B, k)
    scores = calibrate(scores, *calibration)
    boxes = predicted_boxes(out[:, 1:].float(), stride)
    if smooth:                                   # heat-weighted mean of the 3 x 3 cells' boxes
        wgt = torch.sigmoid(out[:, :1].float())
        boxes = F.avg_pool2d(boxes * wgt, 3, 1, 1) / F.avg_pool2d(wgt, 3, 1, 1).clamp(min=1e-6)
    boxes = boxes.reshape(b, 4, -1)
    boxes = torch.gather(boxes, 2, idx[:, None, :].expand(b, 4, k))                # (B, 4, k)
    dets = torch.cat([boxes.transpose(1, 2), scores[..., None]], -1)               # (B, k, 5)
    return [d[s >= threshold].double().cpu().numpy() for d, s in zip(dets, scores)]


def focal_loss(logits: torch.Tensor, heat: torch.Tensor, neg_weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss. logits, heat, neg_weight (B, h, w) ->
    scalar, summed and divided by the number of centre cells (heat == 1, at least 1)."""
    pos = heat >= 1.0
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = torch.sigmoid(logits)
    pos_loss = -((1 - p) ** 2 * logp)[pos].sum()
    neg_loss = -((1 - heat) ** 4 * p ** 2 * log1mp * neg_weight)[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted 1 - generalised IoU. pred, target (B, 4, h, w) xyxy; weight (B, h, w)
    (each box's weights sum to 1) -> scalar, averaged over the boxes."""
    m = weight > 0
    if not m.any():
        return pred.sum() * 0.0
    p, t = pred.permute(0, 2, 3, 1)[m], target.permute(0, 2, 3, 1)[m]             # (K, 4)
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    lt, rb = torch.max(p[:, :2], t[:, :2]), torch.min(p[:, 2:], t[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    union = area(p) + area(t) - inter
    hull = (torch.max(p[:, 2:], t[:, 2:]) - torch.min(p[:, :2], t[:, :2])).prod(1)
    giou = inter / union.clamp(min=1e-6) - (hull - union) / hull.clamp(min=1e-6)
    return ((1 - giou) * weight[m]).sum() / weight.sum().clamp(min=1e-6)


# ----------------------------------------------------------------------------------
# Weights file
# ----------------------------------------------------------------------------------
def _saved_keys(model: nn.Module) -> dict:
    """name -> shape of every tensor the file stores (BatchNorm's counters are not stored)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def save_weights(model: nn.Module, config: dict, path, extra: dict | None = None) -> None:
    """Write ``{"format", "version", "config", "state_dict" (float16)}`` atomically.
    ``extra``: plain values recorded alongside (training settings, metrics)."""
    from engine.common.atomic import atomic_file

    keys = _saved_keys(model)
    state = {k: v.detach().to("cpu", torch.float16).clone() for k, v in model.state_dict().items() if k in keys}
    blob = {"format": FORMAT, "version": VERSION, "config": dict(config), "state_dict": state,
            "info": dict(extra or {})}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(blob, f)


def load_weights(path=WEIGHTS) -> tuple:
    """-> (network in eval mode, float32, on the CPU; config dict). Raises ``WeightsError``
    naming what does not fit."""
    from engine.safe_torch import TorchFileError, read_torch_file

    name = Path(path).name
    try:
        blob = read_torch_file(path, max_bytes=64 << 20)
    except TorchFileError as exc:
        raise WeightsError(f"mannequin detector weights: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightsError(f"{name}: not a mannequin detector weights file (no format {FORMAT!r})")
    if blob.get("version") != VERSION:
        raise WeightsError(f"{name}: weights version {blob.get('version')!r}, this code reads {VERSION}")
    config = {**DEFAULT_CONFIG, **dict(blob.get("config") or {})}
    try:
        model = build_network(config)
    except Exception as exc:  # noqa: BLE001 - a config from a file
        raise WeightsError(f"{name}: unusable network config {blob.get('config')!r} ({exc})") from None
    state = blob.get("state_dict")
    if not isinstance(state, dict):
        raise WeightsError(f"{name}: no state_dict")
    want = _saved_keys(model)
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    wrong = sorted(k for k in set(want) & set(state)
                   if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != want[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        for k in wrong[:3]:
            got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
            parts.append(f"{k}: shape {got}, expected {want[k]}")
        raise WeightsError(f"{name}: does not fit the detector network: " + "; ".join(parts))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return model.eval(), config


# ----------------------------------------------------------------------------------
# The detector
# ----------------------------------------------------------------------------------
class MannequinDetector(Detector):
    """The learned detector. ``detect(image RGB uint8 (H, W, 3), index=None) -> (N, 5)
    [x1, y1, x2, y2, score]`` in full-image pixels; ``detect_batch(images)`` runs frames
    of one size in one forward pass.

    weights: path (default: the shipped file); device: auto | cpu | cuda | mps
    (``engine.model.inference.resolve_device``); threshold: minimum calibrated score;
    nms_iou: suppression overlap; long_side: network input size (default: as trained)."""

    name = "mannequin"

    def __init__(self, weights=None, device: str = "auto", threshold: float = 0.2, nms_iou: float = 0.5,
                 long_side: int | None = None, top_k: int = 40, batch_size: int = 16):
        from engine.model.inference import resolve_device

        self.device = resolve_device(device)
        self.net, self.config = load_weights(WEIGHTS if weights is None else weights)
        self.net.to(self.device)
        self.long_side = int(long_side or self.config["long_side"])
        self.threshold, self.nms_iou, self.top_k = float(threshold), float(nms_iou), int(top_k)
        self.batch_size = int(batch_size)

    def detect(self, image: np.ndarray, index: int | None = None) -> np.ndarray:
        return self.detect_batch([image])[0]

    def detect_batch(self, images, indices=None) -> list:
        """list of (H, W, 3) uint8 RGB frames -> list of (N, 5) float64 arrays."""
        images = list(images)
        out: list = [None] * len(images)
        groups: dict = {}
        for n, im in enumerate(images):
            groups.setdefault(np.shape(im)[:2], []).append(n)
        for (h, w), members in groups.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                boxed = [letterbox(images[n], self.long_side, self.config["multiple"], self.config["pad_value"])
                         for n in chunk]
                k = boxed[0][1]
                x = torch.from_numpy(np.stack([c for c, _ in boxed])).to(self.device)
                with torch.no_grad():
                    raw = self.net(normalize(x))
                cal = (self.config["score_a"], self.config["score_b"])
                for n, d in zip(chunk, decode(raw, self.config["stride"], self.threshold, self.top_k, cal)):
                    out[n] = nms(clip_boxes(d, k, w, h), self.nms_iou)
        return out


def clip_boxes(dets: np.ndarray, k: float, width: int, height: int) -> np.ndarray:
    """(N, 5) boxes in network px at scale k -> full-image px, clipped to the image,
    empty boxes dropped."""
    d = np.asarray(dets, np.float64).reshape(-1, 5).copy()
    d[:, :4] /= k
    d[:, [0, 2]] = d[:, [0, 2]].clip(0, width)
    d[:, [1, 3]] = d[:, [1, 3]].clip(0, height)
    return d[(d[:, 2] - d[:, 0] > 1) & (d[:, 3] - d[:, 1] > 1)]
