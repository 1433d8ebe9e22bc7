"""Train the mannequin detector (``engine.people.learned``) on our own renders, on the CPU.

    python -m engine.people.train_detector --out w0.pt --minutes 15 --seed 0
    python -m engine.people.train_detector --init w0.pt --out w1.pt ...    (docs/people.md
                                            gives the three runs that made the shipped weights)

1. Scenes (``SceneGenerator``; scene i draws from ``SeedSequence([seed, i])``, so the
   same seed gives the same images whatever the process count): a frame of one of
   ``ASPECTS`` (landscape and portrait), rendered at 2x (75 %) or 1x the network's input
   size and letterboxed to it exactly as the detector letterboxes a video frame; 0-3
   mannequins (10 % empty frames), each with ``random_clothing``, body shape, pose and
   global orientation from ``SyntheticPeople.sample_body`` (40 % random poses, 60 % frames
   of the procedural motions; mostly upright, 30 % facing the camera, the rest at any
   heading), 7 % lying down, person extent 12-100 % of the frame (log-uniform), 30 % partly
   outside the frame, later people 40 % of the time placed next to an earlier one at
   another depth (occlusion); one light; any ``random_background`` kind; 15 % occluders;
   50 % ``appearance.photometric`` camera noise. People are rendered separately and
   composited by depth.
2. Labels: the box of ALL projected vertices clipped to the frame (the amodal box PyMAF's
   crop needs). A person with under 25 % of its pixels visible (others, occluders) or
   under 30 % of its vertices inside the frame is not a positive but an ignored region.
3. Training: augmentation on the fly (flip, zoom-in 1-1.4 with shift, 30 % text
   overlays (``overlay_text``: captions and titles, never people), blur, JPEG in ``augment``; channel gains, brightness, contrast, grey, noise in ``colour_jitter``),
   ``--negatives SHARE``: that share of the samples is a crop of a real photo without people
   instead (``negative_scene``; ``engine.data.registry_photos.NEGATIVE_PHOTOS``: streets with
   posts and bollards, a building, aerial views, objects; never the measured footage),
   CenterNet heatmap and TTFNet box targets (``learned.encode_targets``), focal loss +
   5 x GIoU (TTFNet's weights), AdamW, cosine learning rate, batches of one aspect, the
   next batch prepared in a thread during each step. ``--steps`` fixes the step count and
   the learning rate follows it (deterministic given the seed); without it training fills
   what is left of ``--minutes`` and the learning rate follows the clock (the run ends on
   time on a busy machine; the step count, which is printed and stored, varies). Renders
   use ``--workers`` spawned processes (deterministic per scene).
4. Score calibration (``fit_calibration``): a logistic fit of "is a person" on the
   heatmap peak over ``--val`` held-out scenes (another seed range), stored with the
   weights; then ``learned.save_weights`` (float16, atomic) with the settings and the
   held-out recall / precision.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

# Before torch loads OpenMP: with its default (spinning) wait policy, two training threads
# on a 2-core machine that also runs other work were measured 4-5x slower than with PASSIVE.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np

from engine.people import learned

#: Frame aspect ratios (width / height) and how often each is drawn.
ASPECTS = (16 / 9, 4 / 3, 1.0, 3 / 4, 9 / 16)
ASPECT_WEIGHTS = (0.35, 0.2, 0.1, 0.15, 0.2)
PEOPLE_WEIGHTS = (0.1, 0.4, 0.3, 0.2)          # 0, 1, 2, 3 people
MIN_VISIBLE, MIN_INSIDE = 0.25, 0.3
VAL_OFFSET = 10_000_000                        # validation scenes: indices from here


def _rot(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


class SceneGenerator:
    """Renders labelled detector training frames (see the module notes).

    ``scene(index) -> (canvas (Hp, Wp, 3) uint8 letterboxed network input, boxes (N, 4),
    ignore (M, 4), (h, w) of the image inside the padded canvas)``, boxes xyxy in canvas px."""

    def __init__(self, seed: int = 0, config: dict | None = None):
        from engine.body.mannequin import build_mannequin
        from engine.body.smpl_torch import SMPL
        from engine.data.synthetic import SyntheticConfig, SyntheticPeople

        self.seed = int(seed)
        self.config = {**learned.DEFAULT_CONFIG, **(config or {})}
        self.body = build_mannequin()
        self.smpl = SMPL(self.body).eval()
        # 60 % of the bodies from the procedural motions (walking, turning, crouching...), 30 %
        # facing the camera (+-25 deg), the rest at any heading: people seen side-on while
        # walking were the weakest case of a first model (boxes ~10 % short).
        self.sampler = SyntheticPeople(1, seed, body=self.body, config=SyntheticConfig(motion_prob=0.6, facing_prob=0.3))
        self._renderers = {}

    def renderer(self, width: int, height: int):
        from engine.render.renderer import Renderer

        key = (width, height)
        if key not in self._renderers:
            self._renderers[key] = Renderer(width, height, self.body.faces, self.body.vertex_parts,
                                            self.body.vertex_uv, max_tiles=3)
        return self._renderers[key]

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers = {}

    def frame_size(self, rng) -> tuple:
        """-> (render width, render height): the network size x 1 or 2 at a random aspect."""
        a = ASPECTS[rng.choice(len(ASPECTS), p=ASPECT_WEIGHTS)]
        long_side = self.config["long_side"] * (2 if rng.random() < 0.75 else 1)
        w, h = (long_side, round(long_side / a)) if a >= 1 else (round(long_side * a), long_side)
        return int(w), int(h)

    def people(self, rng, count: int) -> tuple:
        """-> (vertices (P, V, 3) posed, centred at the origin, camera axes; colours (P, V, 3))."""
        import torch

        rot, betas, colours = [], [], []
        for _ in range(count):
            r, b = self.sampler.sample_body(rng)
            if rng.random() < 0.07:                     # lying down: roll in the image or along the view
                axis = 2 if rng.random() < 0.6 else 0
                r[0] = _rot(axis, rng.choice([-1, 1]) * rng.uniform(np.radians(60), np.radians(100))) @ r[0]
            rot.append(r)
            betas.append(b)
            colours.append(appearance_clothing(rng, self.body))
        if not count:
            return np.zeros((0, self.body.num_vertices, 3)), np.zeros((0, self.body.num_vertices, 3), np.float32)
        with torch.no_grad():
            v = self.smpl.pose(torch.as_tensor(np.array(rot), dtype=torch.float32),
                               torch.as_tensor(np.array(betas), dtype=torch.float32)).vertices.double().numpy()
        v -= (v.min(1, keepdims=True) + v.max(1, keepdims=True)) / 2
        return v, np.array(colours)

    def place(self, rng, verts: np.ndarray, width: int, height: int, focal: float) -> np.ndarray:
        """Translate each centred body (P, V, 3) into the frame -> camera-frame vertices."""
        out, centres = [], []
        for body in verts:
            ext = body.max(0) - body.min(0)
            frac = math.exp(rng.uniform(math.log(0.12), math.log(1.0)))
            z = focal * max(ext[0] / width, ext[1] / height) / frac + ext[2] / 2
            z = max(z, ext[2] / 2 + 0.35)
            bw, bh = focal * ext[0] / z, focal * ext[1] / z
            t = rng.uniform(0, 0.4) if rng.random() < 0.3 else 0.0
            lo_u, hi_u = bw / 2 - t * bw, width - bw / 2 + t * bw
            lo_v, hi_v = bh / 2 - t * bh, height - bh / 2 + t * bh
            if centres and rng.random() < 0.4:          # next to an earlier person: occlusion
                u0, v0, w0 = centres[rng.integers(len(centres))]
                u, v = u0 + rng.normal(0, 0.35) * max(w0, bw), v0 + rng.normal(0, 0.1) * bh
            else:
                u = rng.uniform(min(lo_u, hi_u), max(lo_u, hi_u))
                v = rng.uniform(min(lo_v, hi_v), max(lo_v, hi_v))
            centres.append((u, v, bw))
            out.append(body + np.array([(u - width / 2) * z / focal, (v - height / 2) * z / focal, z]))
        return np.array(out).reshape(verts.shape)

    def scene(self, index: int) -> tuple:
        from engine.data import appearance

        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index)]))
        width, height = self.frame_size(rng)
        focal = float(width / 2 / math.tan(math.radians(rng.uniform(35, 75)) / 2))
        count = int(rng.choice(len(PEOPLE_WEIGHTS), p=PEOPLE_WEIGHTS))
        verts, colours = self.people(rng, count)
        verts = self.place(rng, verts, width, height, focal)
        light, albedo = appearance.random_light(rng)
        image = appearance.random_background(rng, width, height)
        boxes, ignore = [], []
        if count:
            r = self.renderer(width, height).render(verts, focal, None, np.clip(colours * albedo, 0, 1),
                                                    None, np.repeat(light[None], count, 0))
            owner = composite(r.mask, r.depth)
            for p in range(count):
                image[owner == p] = r.rgb[p][owner == p]
            occluded = np.zeros((height, width), bool)
            if rng.random() < 0.15:
                p = int(rng.integers(count))
                box = projected_box(verts[p], focal, width, height)[0]
                occluded = appearance.draw_occluders(rng, image, box, int(rng.integers(1, 3)))
            for p in range(count):
                box, inside = projected_box(verts[p], focal, width, height)
                area = r.mask[p].sum()
                visible = ((owner == p) & ~occluded).sum() / max(area, 1)
                if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                    continue
                (boxes if visible >= MIN_VISIBLE and inside >= MIN_INSIDE else ignore).append(box)
        cfg = self.config
        canvas, k = learned.letterbox(image, cfg["long_side"], cfg["multiple"], cfg["pad_value"])
        h, w = learned.letterbox_geometry(height, width, cfg["long_side"], cfg["multiple"])[1]
        if rng.random() < 0.5:                          # camera noise, at the network's size (cheaper)
            canvas[:h, :w] = appearance.photometric(rng, canvas[:h, :w])
        return canvas, np.array(boxes).reshape(-1, 4) * k, np.array(ignore).reshape(-1, 4) * k, (h, w)


def appearance_clothing(rng, body) -> np.ndarray:
    from engine.data import appearance

    return appearance.random_clothing(rng, body.v_template, body.vertex_parts, body.vertex_uv)


def projected_box(vertices: np.ndarray, focal: float, width: int, height: int) -> tuple:
    """Camera-frame vertices (V, 3), principal point at the image centre -> (box (4,)
    of all projected vertices clipped to the image, fraction of vertices inside)."""
    uv = focal * vertices[:, :2] / vertices[:, 2:3] + np.array([width / 2, height / 2])
    inside = ((uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)).mean()
    lo, hi = uv.min(0), uv.max(0)
    box = np.array([np.clip(lo[0], 0, width), np.clip(lo[1], 0, height), np.clip(hi[0], 0, width),
                    np.clip(hi[1], 0, height)])
    return box, float(inside)


def composite(masks: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Separately rendered people: masks (P, H, W) bool, depth (P, H, W) -> owner (H, W)
    int, the nearest person at each pixel, -1 for background."""
    d = np.where(masks, depth, np.inf)
    owner = d.argmin(0)
    return np.where(masks.any(0), owner, -1)


# ----------------------------------------------------------------------------------
# Data set and augmentation
# ----------------------------------------------------------------------------------
_WORKER = {}


def _worker_init(seed: int, config: dict) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER["gen"] = SceneGenerator(seed, config)


def _worker_scenes(indices) -> list:
    return [_WORKER["gen"].scene(i) for i in indices]


def render_scenes(indices, seed: int, config: dict, workers: int = 2, log=print) -> list:
    """[(canvas, boxes, ignore, valid_hw)] for the scene indices, rendered by ``workers`` spawned
    processes (one process: here). Same result for any ``workers``."""
    indices = list(indices)
    chunks = [indices[i:i + 50] for i in range(0, len(indices), 50)]
    out, t0 = [], time.perf_counter()
    if workers <= 1:
        _worker_init(seed, config)
        results = map(_worker_scenes, chunks)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(workers, _worker_init, (seed, config))
        results = pool.imap(_worker_scenes, chunks)
    try:
        for part in results:
            out.extend(part)
            if len(out) % 1000 < 50 or len(out) == len(indices):
                dt = time.perf_counter() - t0
                log(f"  rendered {len(out)}/{len(indices)} scenes, {len(out) / dt:.1f}/s")
    finally:
        if workers > 1:
            pool.close()
            pool.join()
        else:
            _WORKER.pop("gen").close()
    return out


def _affine_boxes(boxes: np.ndarray, scale: float, shift: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4) * scale
    return b + np.r_[shift, shift]


def augment(rng, canvas: np.ndarray, valid_hw: tuple, boxes: np.ndarray, ignore: np.ndarray, pad_value: int):
    """Random flip, zoom-in with shift, blur and JPEG of the letterboxed image (the padding
    stays as it is) -> (canvas, boxes, ignore). Colour: ``colour_jitter`` on the batch."""
    img = canvas.copy()
    h, w = valid_hw
    view = img[:h, :w]
    boxes, ignore = np.array(boxes, np.float64).reshape(-1, 4), np.array(ignore, np.float64).reshape(-1, 4)
    if rng.random() < 0.5:
        view[:] = view[:, ::-1]
        boxes[:, [0, 2]], ignore[:, [0, 2]] = w - boxes[:, [2, 0]], w - ignore[:, [2, 0]]
    if rng.random() < 0.4:
        s = rng.uniform(1.0, 1.4)
        shift = np.array([rng.uniform(w - w * s, 0), rng.uniform(h - h * s, 0)])
        m = np.array([[s, 0, shift[0]], [0, s, shift[1]]])
        view[:] = cv2.warpAffine(np.ascontiguousarray(view), m, (w, h), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
        full = _affine_boxes(boxes, s, shift)
        ignore = _affine_boxes(ignore, s, shift)
        clipped = np.column_stack([full[:, [0, 2]].clip(0, w), full[:, [1, 3]].clip(0, h)])[:, [0, 2, 1, 3]]
        area = lambda b: np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), 1)  # noqa: E731
        keep = area(clipped) >= 0.4 * np.maximum(area(full), 1e-9)
        ignore = np.concatenate([ignore, clipped[~keep & (area(clipped) > 0)]])
        boxes = clipped[keep]
        ignore = np.column_stack([ignore[:, [0, 2]].clip(0, w), ignore[:, [1, 3]].clip(0, h)])[:, [0, 2, 1, 3]]
    if rng.random() < 0.3:
        overlay_text(rng, view)
    if rng.random() < 0.15:
        view[:] = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.5, 1.3))
    if rng.random() < 0.15:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(view), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        if ok:
            view[:] = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return img, boxes, ignore


_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
          cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_ITALIC | cv2.FONT_HERSHEY_SIMPLEX)
_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789   :-&"))


def overlay_text(rng, view: np.ndarray) -> None:
    """1-3 captions drawn in place (video overlays: titles, credits, watermarks, time codes),
    text 3-12 % of the image height, half of them near an edge, some on a caption bar. They
    are never labelled people: tall capitals were measured to fire the detector on real
    footage (a title on dancer.mp4, docs/people.md)."""
    h, w = view.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        text = "".join(rng.choice(_CHARS, int(rng.integers(3, 15)))).strip() or "TITLE"
        if rng.random() < 0.5:
            text = text.upper()
        font = int(_FONTS[rng.integers(len(_FONTS))])
        thick = int(rng.integers(1, 4))
        (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
        scale = rng.uniform(0.03, 0.12) * h / max(th, 1)
        tw, th = int(tw * scale), int(th * scale)
        edge = rng.random() < 0.5
        x = int(rng.uniform(0, max(w - tw, 1)))
        y = int(rng.uniform(th, h)) if not edge else int(rng.choice([rng.uniform(th, 0.2 * h + th),
                                                                     rng.uniform(0.8 * h, h)]))
        colour = [(255, 255, 255), (0, 0, 0), (255, 220, 0)][rng.integers(3)] if rng.random() < 0.7 \
            else tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.3:           # a caption bar behind the text
            bar = tuple(int(255 - c) for c in colour) if rng.random() < 0.5 else tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.rectangle(view, (x - th // 3, y - th - th // 3), (x + tw + th // 3, y + th // 3), bar, -1)
        cv2.putText(view, text, (x, y), font, scale, colour, max(1, round(thick * scale)), cv2.LINE_AA)


def colour_jitter(rng, images, valid: np.ndarray):
    """Per image: channel gains 0.8-1.2, brightness N(0, 8), contrast 0.75-1.3, 10 % grey,
    20 % sensor noise, inside the image only (``valid`` (B, 2) h, w; the padding stays).
    images (B, H, W, 3) uint8 tensor -> normalised (B, 3, H, W) float32."""
    import torch

    b = images.shape[0]
    x = images.permute(0, 3, 1, 2).float()
    gain, offset = rng.uniform(0.8, 1.2, (b, 3)), rng.normal(0, 8, (b, 1))
    contrast = rng.uniform(0.75, 1.3, (b, 1))
    mu = x.mean((2, 3)).numpy()                                  # (B, 3)
    m = (gain * mu).mean(1, keepdims=True) + offset              # image mean after gain + offset
    scale, shift = gain * contrast, (offset - m) * contrast + m  # y = x * scale + shift
    col = lambda a: torch.as_tensor(a, dtype=torch.float32).view(b, -1, 1, 1)  # noqa: E731
    y = torch.addcmul(col(shift).expand(b, 3, 1, 1), x, col(scale))
    for i in np.flatnonzero(rng.random(b) < 0.1):
        y[i] = y[i].mean(0, keepdim=True)
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
    for i in np.flatnonzero(rng.random(b) < 0.2):
        y[i] += float(rng.uniform(2, 8)) * torch.randn(y[i].shape, generator=gen)
    rows, cols = torch.arange(x.shape[2]).view(1, -1, 1), torch.arange(x.shape[3]).view(1, 1, -1)
    inside = (rows < torch.as_tensor(valid[:, 0]).view(-1, 1, 1)) & (cols < torch.as_tensor(valid[:, 1]).view(-1, 1, 1))
    x = torch.where(inside[:, None], y.clamp_(0, 255), x)
    return (x / 255.0 - learned.PIXEL_MEAN) / learned.PIXEL_STD


def negative_scene(rng, photos: list, scene: tuple, pad_value: int) -> tuple:
    """A scene of the same canvas as ``scene`` showing a random crop of one real photo
    without people (``engine.data.registry_photos.NEGATIVE_PHOTOS``): no boxes, no ignores."""
    canvas, _, _, (h, w) = scene
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    frac = rng.uniform(0.35, 1.0)                     # the crop's share of the photo's side
    ch = min(ph, int(round(frac * min(ph, pw * h / w))))
    cw = min(pw, max(1, int(round(ch * w / h))))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    out = np.full_like(canvas, pad_value)
    out[:h, :w] = cv2.resize(photo[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
    return out, np.zeros((0, 4)), np.zeros((0, 4)), (h, w)


def make_batch(rng, scenes: list, members: list, config: dict, negatives: list | None = None,
               negative_share: float = 0.0) -> dict:
    """Augmented samples ``members`` of ``scenes`` (one canvas size) -> dict of tensors:
    input (B, 3, H, W) normalised network input, the ``learned.encode_targets`` arrays
    stacked (B, ...). With ``negatives`` (real photos without people), each sample is one of
    them instead with probability ``negative_share`` (``negative_scene``)."""
    import torch

    imgs, targets = [], []
    for n in members:
        canvas, boxes, ignore, valid = scenes[n]
        if negatives and rng.random() < negative_share:
            canvas, boxes, ignore, valid = negative_scene(rng, negatives, scenes[n], config["pad_value"])
        img, b, ig = augment(rng, canvas, valid, boxes, ignore, config["pad_value"])
        hp, wp = img.shape[:2]
        s = config["stride"]
        imgs.append(img)
        targets.append(learned.encode_targets(b, (hp // s, wp // s), s, ig))
    batch = {k: torch.from_numpy(np.stack([t[k] for t in targets])) for k in targets[0]}
    batch["input"] = colour_jitter(rng, torch.from_numpy(np.stack(imgs)), np.array([scenes[n][3] for n in members]))
    return batch


def losses(out, batch, stride: int) -> dict:
    """Network output (B, 5, h, w) and a batch -> {"heat", "giou"} scalar losses."""
    return {"heat": learned.focal_loss(out[:, 0], batch["heat"], batch["neg_weight"]),
            "giou": learned.giou_loss(learned.predicted_boxes(out[:, 1:], stride), batch["box"], batch["box_weight"])}


def _val_detections(net, scenes: list, config: dict, threshold: float, calibration: tuple, batch: int = 16):
    """-> per held-out scene its NMS-ed detections (N, 5) in canvas px."""
    import torch

    from engine.people.detect import nms

    out = [None] * len(scenes)
    groups: dict = {}
    for n, sc in enumerate(scenes):
        groups.setdefault(sc[0].shape, []).append(n)
    net.eval()
    for members in groups.values():
        for i in range(0, len(members), batch):
            chunk = members[i:i + batch]
            x = torch.from_numpy(np.stack([scenes[n][0] for n in chunk]))
            with torch.no_grad():
                dets = learned.decode(net(learned.normalize(x)), config["stride"], threshold, calibration=calibration)
            for n, d in zip(chunk, dets):
                out[n] = nms(d, 0.5)
    return out


def label_detections(dets: np.ndarray, gt: np.ndarray, ignore: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Greedy matching in score order -> per detection 1 (a person not yet taken, IoU >=
    iou), 0 (nobody), -1 (on an ignored person: neither)."""
    from engine.people.tracking import iou_matrix

    labels = np.zeros(len(dets), int)
    taken = np.zeros(len(gt), bool)
    for k in np.argsort(-dets[:, 4]):
        m = iou_matrix(dets[k:k + 1, :4], gt)[0] if len(gt) else np.zeros(0)
        m[taken] = 0
        if len(m) and m.max() >= iou:
            labels[k], taken[m.argmax()] = 1, True
        elif len(ignore) and iou_matrix(dets[k:k + 1, :4], ignore).max() > 0.3:
            labels[k] = -1
    return labels


def fit_calibration(net, scenes: list, config: dict) -> tuple:
    """Logistic fit of 'is a person (IoU >= 0.5)' on logit(heatmap peak) over the held-out
    scenes' detections -> (a, b) for ``learned.calibrate``."""
    import torch
    import torch.nn.functional as F

    xs, ys = [], []
    for d, sc in zip(_val_detections(net, scenes, config, 0.02, (1.0, 0.0)), scenes):
        lab = label_detections(d, sc[1], sc[2])
        xs.append(d[lab >= 0, 4])
        ys.append(lab[lab >= 0])
    p = torch.as_tensor(np.concatenate(xs)).clamp(1e-6, 1 - 1e-6)
    x, y = torch.log(p / (1 - p)), torch.as_tensor(np.concatenate(ys), dtype=torch.float64)
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=100)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(ab[0] * x + ab[1], y)
        loss.backward()
        return loss
    opt.step(closure)
    return float(ab[0].detach()), float(ab[1].detach())


def box_scores(net, scenes: list, config: dict, threshold: float = 0.5) -> dict:
    """Held-out scenes -> recall of the labelled people at IoU 0.5 / 0.7 (best detection
    with calibrated score >= threshold) and precision of those detections at IoU 0.5
    (detections on ignored people count as neither)."""
    from engine.people.tracking import iou_matrix

    hit5 = hit7 = total = tp = fp = 0
    cal = (config["score_a"], config["score_b"])
    for d, sc in zip(_val_detections(net, scenes, config, threshold, cal), scenes):
        gt = sc[1]
        total += len(gt)
        if len(gt) and len(d):
            m = iou_matrix(gt, d[:, :4]).max(1)
            hit5, hit7 = hit5 + int((m > 0.5).sum()), hit7 + int((m > 0.7).sum())
        lab = label_detections(d, gt, sc[2])
        tp, fp = tp + int((lab == 1).sum()), fp + int((lab == 0).sum())
    return {"recall_iou50": hit5 / max(total, 1), "recall_iou70": hit7 / max(total, 1),
            "precision_iou50": tp / max(tp + fp, 1), "people": total}


def train(scenes: list, config: dict, seed: int, steps: int | None, deadline: float, batch_size: int = 16,
          lr: float = 3e-3, log=print, init=None, negatives: list | None = None, negative_share: float = 0.0):
    """Train a fresh network (or ``init``, a network to go on training) on ``scenes``. ``steps``: a fixed count (the learning rate
    follows the step, a deterministic run); None: train until ``deadline``
    (time.perf_counter()) with the learning rate following the elapsed time (ends on
    time on a busy machine; the count then varies). -> (net, steps done)."""
    import torch

    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(seed)
    net = (learned.build_network(config) if init is None else init).train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    groups: dict = {}
    for n, sc in enumerate(scenes):
        groups.setdefault(sc[0].shape, []).append(n)
    keys = sorted(groups)
    p = np.array([len(groups[k]) for k in keys], np.float64)
    p /= p.sum()
    warmup = 150
    t0 = time.perf_counter()
    budget = max(deadline - t0, 1.0)
    def batch_for(step):     # its own generator per step: the same batches with or without the prefetch thread
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, step]))
        members = groups[keys[rng.choice(len(keys), p=p)]]
        return make_batch(rng, scenes, list(rng.choice(members, size=batch_size)), config, negatives, negative_share)

    prefetch = ThreadPoolExecutor(1)              # the next batch is prepared during this step
    pending = prefetch.submit(batch_for, 0)
    step, run = 0, {}
    while True:
        done = step / steps if steps else (time.perf_counter() - t0) / budget
        if done >= 1.0:
            break
        frac = min(1.0, (step + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * done)))
        for g in opt.param_groups:
            g["lr"] = lr * frac
        batch = pending.result()
        pending = prefetch.submit(batch_for, step + 1)
        out = net(batch["input"])
        parts = losses(out, batch, config["stride"])
        loss = parts["heat"] + 5.0 * parts["giou"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in parts.items():
            run[k] = 0.98 * run.get(k, v.item()) + 0.02 * v.item()
        step += 1
        if step % 100 == 0:
            dt = time.perf_counter() - t0
            log(f"  step {step}{'/' + str(steps) if steps else ''} ({100 * done:.0f} %)  heat {run['heat']:.3f}  "
                f"giou {run['giou']:.3f}  lr {lr * frac:.2e}  "
                f"{step * batch_size / dt:.0f} img/s  {dt:.0f} s")
    prefetch.shutdown(cancel_futures=True)
    return net.eval(), step


def read_info(path) -> dict:
    """The training record stored with a weights file (its "info" dict)."""
    from engine.safe_torch import read_torch_file

    return dict(read_torch_file(path).get("info") or {})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train the mannequin person detector on rendered scenes (CPU).")
    ap.add_argument("--out", required=True, help="weights file to write (.pt)")
    ap.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget for the whole run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=4000, help="rendered training scenes")
    ap.add_argument("--val", type=int, default=300, help="held-out scenes for the score")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: fill --minutes)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--init", default=None, help="weights file to go on training from (a second run with "
                    "another --seed sees new scenes)")
    ap.add_argument("--negatives", type=float, default=0.0,
                    help="share of training samples replaced by crops of real photos without people "
                         "(engine.data.registry_photos.NEGATIVE_PHOTOS; default 0: renders only)")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    deadline = t0 + 60 * a.minutes
    config = dict(learned.DEFAULT_CONFIG)
    init = None
    if a.init:
        init, loaded = learned.load_weights(a.init)
        config.update({k: loaded[k] for k in config if k not in ("score_a", "score_b")})
        before = read_info(a.init)
    log = lambda *s: print(*s, flush=True)  # noqa: E731
    log(f"rendering {a.scenes} training + {a.val} held-out scenes (seed {a.seed}, {a.workers} processes)")
    both = render_scenes(list(range(a.scenes)) + [VAL_OFFSET + i for i in range(a.val)], a.seed, config,
                         a.workers, log)
    scenes, val = both[:a.scenes], both[a.scenes:]
    people = sum(len(s[1]) for s in scenes)
    log(f"  {len(scenes)} scenes, {people} labelled people, {time.perf_counter() - t0:.0f} s")
    reserve = 20 + 0.02 * a.val                       # held-out scoring and saving
    negatives = None
    if a.negatives > 0:
        from engine.data.registry_photos import negative_photos

        negatives = negative_photos()
        log(f"  {len(negatives)} real photos without people as negatives ({100 * a.negatives:.0f} % of samples)")
    net, steps = train(scenes, config, a.seed, a.steps, deadline - reserve, a.batch, a.lr, log, init,
                       negatives, a.negatives)
    config["score_a"], config["score_b"] = fit_calibration(net, val, config)
    log(f"score calibration: sigmoid({config['score_a']:.3f} logit(peak) + {config['score_b']:.3f})")
    score = box_scores(net, val, config)
    params = sum(p.numel() for p in net.parameters())
    wall = time.perf_counter() - t0
    info = {"seed": a.seed, "scenes": a.scenes, "steps": steps, "negatives": a.negatives,
            **({"init": {k: before.get(k) for k in ("seed", "scenes", "steps", "lr", "wall_s", "init")}} if a.init else {}), "batch": a.batch, "lr": a.lr, "params": params,
            "wall_s": round(wall, 1), **{k: round(float(v), 4) for k, v in score.items()}}
    learned.save_weights(net, config, a.out, info)
    log(f"held-out ({a.val} scenes, {score['people']} people): recall IoU>0.5 {score['recall_iou50']:.3f}, "
        f"IoU>0.7 {score['recall_iou70']:.3f}, precision {score['precision_iou50']:.3f}")
    log(f"wrote {a.out}: {params} parameters, {steps} steps, {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
