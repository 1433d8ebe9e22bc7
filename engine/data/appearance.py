"""Procedural appearance for synthetic people: clothing colours, lighting, backgrounds,
occluders and photometric noise (numpy + OpenCV; every function takes a numpy Generator,
so the same generator state gives the same result).

* Clothing (``random_clothing``): per-vertex colours (the renderer interpolates them over
  faces). Regions come from the DensePose part of each vertex plus its REST position
  (SMPL rest frame: y up, faces +z, left = +x, arms along +-x), so sleeve and trouser
  lengths, the waist line and the hair line move with the body when it is posed:
  skin / hair on the head, a shirt on the torso with sleeveless, short or long sleeves,
  trousers or shorts, shoes. Shirt and trousers get random palettes and a pattern
  (plain, stripes, checks, gradient, blotches, diagonal stripes) computed from the rest
  position or the part's surface UV.
* Lighting (``random_light``): a light direction in the camera frame (mostly from the
  camera side and above) and an albedo scale (the renderer's ambient term is fixed, so
  overall brightness varies through the albedo and ``photometric``).
* Backgrounds (``random_background``): procedural (gradients, multi-octave value noise,
  random shapes, tilings such as checkers, stripes, bricks and a wall-and-floor scene
  with a perspective floor) and photos shipped with scikit-image (``PHOTOS``; only those
  whose docstrings say public domain or CC0), randomly cropped, resized, flipped and
  tinted. Photos with people in them (astronaut, camera) are left out on purpose: a
  second, unlabelled person in the crop would teach the network to ignore people.
* Occluders (``draw_occluders``): rectangles, ellipses and bars filled with a texture,
  drawn over part of the person. They return a mask; the caller removes the occluded
  pixels from the silhouette / part / UV labels, which therefore describe the VISIBLE
  body only. Keypoint labels are not changed: an occluded joint keeps confidence 1
  (its position is still known exactly; only joints outside the image get 0).
"""
from __future__ import annotations

import colorsys
import functools

import cv2
import numpy as np

# ----------------------------------------------------------------------------------
# Part groups (DensePose fine part ids, 1..24)
# ----------------------------------------------------------------------------------
PART_GROUP = {
    "torso": (1, 2), "hand": (3, 4), "foot": (5, 6), "upper_leg": (7, 8, 9, 10),
    "lower_leg": (11, 12, 13, 14), "upper_arm": (15, 16, 17, 18), "lower_arm": (19, 20, 21, 22),
    "head": (23, 24),
}


def _group_mask(vertex_parts, *groups):
    ids = [p for g in groups for p in PART_GROUP[g]]
    return np.isin(vertex_parts, ids)


# Skin tones (sRGB, 0..1), light to dark.
SKIN_TONES = np.array([
    [0.98, 0.87, 0.78], [0.94, 0.80, 0.69], [0.90, 0.74, 0.62], [0.84, 0.66, 0.52],
    [0.76, 0.57, 0.42], [0.66, 0.47, 0.33], [0.55, 0.38, 0.26], [0.44, 0.30, 0.20],
    [0.35, 0.24, 0.17], [0.27, 0.19, 0.14],
])
HAIR_COLOURS = np.array([
    [0.05, 0.04, 0.04], [0.15, 0.10, 0.07], [0.30, 0.20, 0.12], [0.55, 0.40, 0.22],
    [0.80, 0.66, 0.40], [0.55, 0.25, 0.12], [0.60, 0.60, 0.60], [0.85, 0.85, 0.82],
])


def _hsv_colour(rng, s_range=(0.0, 1.0), v_range=(0.1, 1.0)) -> np.ndarray:
    """A random colour (3,) in [0, 1] from hue / saturation / value ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s_range), rng.uniform(*v_range)))


def random_garment_colour(rng) -> np.ndarray:
    """Clothing colours: a mix of neutrals (black, grey, white, denim, khaki) and hues."""
    r = rng.random()
    if r < 0.12:
        return np.full(3, rng.uniform(0.03, 0.15))                       # black-ish
    if r < 0.22:
        return np.full(3, rng.uniform(0.75, 0.95))                       # white-ish
    if r < 0.32:
        return np.full(3, rng.uniform(0.25, 0.65))                       # grey
    if r < 0.42:
        return np.array([0.15, 0.22, 0.38]) * rng.uniform(0.7, 1.4)      # denim
    if r < 0.48:
        return np.array([0.62, 0.55, 0.40]) * rng.uniform(0.8, 1.2)      # khaki
    return _hsv_colour(rng, (0.2, 1.0), (0.2, 1.0))


def _pattern_weight(rng, pos: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(V,) in [0, 1]: where the secondary colour shows. pos (V, 3) rest positions (m)."""
    kind = rng.choice(["plain", "hstripes", "vstripes", "checks", "gradient", "blotches", "diagonal", "uvchecks"],
                      p=[0.35, 0.15, 0.07, 0.1, 0.1, 0.08, 0.08, 0.07])
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    if kind == "plain":
        return np.zeros(len(pos))
    if kind == "hstripes":
        period = rng.uniform(0.04, 0.16)
        duty = rng.uniform(0.25, 0.6)
        return (((y / period + rng.random()) % 1.0) < duty).astype(float)
    if kind == "vstripes":
        period = rng.uniform(0.04, 0.12)
        ang = np.arctan2(z, x) / (2 * np.pi)                             # around the body axis
        return (((ang * 2 * np.pi * 0.2 / period) % 1.0) < 0.5).astype(float)
    if kind == "checks":
        period = rng.uniform(0.05, 0.14)
        a = np.floor(x / period + rng.random()) + np.floor(y / period + rng.random()) + np.floor(z / period)
        return (a % 2).astype(float)
    if kind == "gradient":
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        t = pos @ d
        return (t - t.min()) / max(np.ptp(t), 1e-6)
    if kind == "blotches":
        w = np.zeros(len(pos))
        for _ in range(4):
            k = rng.normal(size=3) * rng.uniform(8, 30)
            w += np.sin(pos @ k + rng.uniform(0, 2 * np.pi))
        return (w > rng.uniform(-0.5, 0.5)).astype(float)
    if kind == "diagonal":
        period = rng.uniform(0.05, 0.15)
        return ((((x + y) / period + rng.random()) % 1.0) < 0.5).astype(float)
    # uvchecks: checks in each part's surface chart
    n = rng.integers(3, 9)
    return ((np.floor(uv[:, 0] * n) + np.floor(uv[:, 1] * n)) % 2).astype(float)


def random_clothing(rng: np.random.Generator, rest_vertices: np.ndarray, vertex_parts: np.ndarray,
                    vertex_uv: np.ndarray) -> np.ndarray:
    """Per-vertex colours (V, 3) float32 in [0, 1] for one person.

    rest_vertices (V, 3): the body's rest (T-pose) vertices, SMPL rest frame (y up,
    the body's left = +x); vertex_parts (V,) DensePose parts 1..24; vertex_uv (V, 2).
    """
    pos = np.asarray(rest_vertices, np.float64)
    parts = np.asarray(vertex_parts)
    uv = np.asarray(vertex_uv, np.float64)
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    nv = len(pos)

    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.08, 3)
    colours = np.tile(skin, (nv, 1))

    head = _group_mask(parts, "head")
    if rng.random() > 0.1:                                                # 10% bald
        hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15, 3)
        hairline = rng.uniform(0.43, 0.47)
        long_hair = rng.random() < 0.35
        back = z < rng.uniform(-0.04, 0.02)
        nape = rng.uniform(0.26, 0.33) if long_hair else rng.uniform(0.36, 0.40)
        hair_mask = head & ((y > hairline) | (back & (y > nape)))
        if long_hair:  # hair over the upper back and shoulders
            hair_mask |= _group_mask(parts, "torso") & (z < -0.02) & (y > rng.uniform(0.05, 0.2)) & (np.abs(x) < 0.15)
        colours[hair_mask] = hair

    # Shirt: torso above the waist, plus sleeves along |x| in the rest pose.
    shirt_a, shirt_b = random_garment_colour(rng), random_garment_colour(rng)
    waist = rng.uniform(-0.27, -0.12)
    sleeve_end = rng.choice([0.20, rng.uniform(0.26, 0.36), rng.uniform(0.45, 0.55), rng.uniform(0.64, 0.70)],
                            p=[0.15, 0.4, 0.1, 0.35])
    torso = _group_mask(parts, "torso")
    arm = _group_mask(parts, "upper_arm", "lower_arm")
    shirt = (torso & (y > waist)) | (arm & (np.abs(x) < sleeve_end))
    # Trousers: lower torso and legs down to a random length.
    trousers_a = random_garment_colour(rng)
    trousers_b = random_garment_colour(rng)
    leg = _group_mask(parts, "upper_leg", "lower_leg")
    leg_end = rng.choice([rng.uniform(-0.62, -0.5), rng.uniform(-0.9, -0.78), -1.09], p=[0.25, 0.1, 0.65])
    trousers = (torso & (y <= waist)) | (leg & (y > leg_end))
    dress = rng.random() < 0.08                                           # one-piece: same cloth
    if dress:
        trousers_a, trousers_b = shirt_a, shirt_b
    w = _pattern_weight(rng, pos, uv)[:, None]
    colours[shirt] = (shirt_a * (1 - w) + shirt_b * w)[shirt]
    w = _pattern_weight(rng, pos, uv)[:, None] if not dress else w
    colours[trousers] = (trousers_a * (1 - w) + trousers_b * w)[trousers]
    # Shoes: feet and the bottom of the ankles; sometimes bare feet.
    if rng.random() > 0.08:
        shoe = random_garment_colour(rng) if rng.random() < 0.6 else np.full(3, rng.uniform(0.05, 0.9))
        colours[_group_mask(parts, "foot") | (y < -1.085)] = shoe
    # Gloves, rarely.
    if rng.random() < 0.05:
        colours[_group_mask(parts, "hand")] = random_garment_colour(rng)
    # A little per-vertex variation (fabric / skin texture).
    colours *= rng.uniform(0.96, 1.04, (nv, 1))
    return np.clip(colours, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------
# Lighting
# ----------------------------------------------------------------------------------
def random_light(rng: np.random.Generator) -> tuple:
    """(light_dir (3,) camera frame, towards the light; albedo scale).

    Mostly from the camera side (z < 0) and above (y < 0); sometimes from the side or
    behind (rim light). The scale multiplies the vertex colours (overall exposure).
    """
    az = rng.normal(0, 0.8)                        # around the camera axis, radians
    el = rng.uniform(-0.2, 1.0)                    # above the horizon (radians)
    back = rng.random() < 0.1
    d = np.array([np.sin(az) * np.cos(el), -np.sin(el), (1.0 if back else -1.0) * np.cos(az) * np.cos(el)])
    d /= np.linalg.norm(d)
    return d.astype(np.float32), float(rng.uniform(0.7, 1.15))


# ----------------------------------------------------------------------------------
# Backgrounds
# ----------------------------------------------------------------------------------
#: scikit-image sample images used as background photos, with their licence as given in
#: the docstrings of ``skimage.data`` (checked for scikit-image 0.26).
PHOTOS = {
    "coffee": "CC0 (Rachel Michetti)",
    "chelsea": "CC0 (Stefan van der Walt)",
    "rocket": "public domain (SpaceX)",
    "hubble_deep_field": "public domain (NASA)",
    "clock": "public domain (Stefan van der Walt)",
    "brick": "CC0 (CC0Textures)",
    "grass": "CC0 (CC0Textures)",
    "gravel": "CC0 (CC0Textures)",
    "text": "public domain",
}


@functools.lru_cache(maxsize=None)
def _photos() -> tuple:
    """The photos as (H, W, 3) uint8 RGB arrays (grey ones stacked); loaded once."""
    import skimage.data

    out = []
    for name in PHOTOS:
        try:
            im = np.asarray(getattr(skimage.data, name)())
        except Exception:  # a missing optional file: skip it
            continue
        if im.dtype != np.uint8:
            im = (im > 0).astype(np.uint8) * 255 if im.dtype == bool else im.astype(np.uint8)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(im[..., :3]))
    return tuple(out)


def _photo_background(rng, width, height) -> np.ndarray:
    photos = _photos()
    if not photos:
        return _gradient(rng, width, height)
    im = photos[rng.integers(len(photos))]
    ph, pw = im.shape[:2]
    aspect = width / height
    # Crop of the target aspect, 35-100% of the largest such crop.
    cw = min(pw, ph * aspect)
    frac = rng.uniform(0.35, 1.0)
    cw = max(8.0, cw * frac)
    ch = cw / aspect
    x0 = rng.uniform(0, pw - cw)
    y0 = rng.uniform(0, ph - ch)
    # Affine crop + resize in one warp.
    sx, sy = width / cw, height / ch
    m = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]])
    out = cv2.warpAffine(im, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.3:  # colour tint (grey textures become coloured)
        out = out.astype(np.float32) * rng.uniform(0.6, 1.3, 3)
    return np.clip(out, 0, 255).astype(np.uint8)


def _gradient(rng, width, height) -> np.ndarray:
    c0, c1 = _hsv_colour(rng, (0, 0.8)), _hsv_colour(rng, (0, 0.8))
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    if rng.random() < 0.7:
        ang = rng.uniform(0, 2 * np.pi)
        t = (xx - width / 2) * np.cos(ang) + (yy - height / 2) * np.sin(ang)
    else:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        t = np.hypot(xx - cx, yy - cy)
    t = np.broadcast_to(t, (height, width)).astype(np.float32)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0.astype(np.float32) * (1 - t[..., None]) + c1.astype(np.float32) * t[..., None]
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _value_noise(rng, width, height, channels=1) -> np.ndarray:
    """Multi-octave value noise in [0, 1], (H, W, channels) float32."""
    out = np.zeros((height, width, channels), np.float32)
    amp, total = 1.0, 0.0
    cells = rng.integers(2, 6)
    for _ in range(rng.integers(2, 6)):
        g = rng.random((cells + 1, cells + 1, channels)).astype(np.float32)
        up = cv2.resize(g, (width, height), interpolation=cv2.INTER_CUBIC)
        out += amp * up.reshape(height, width, channels)
        total += amp
        amp *= rng.uniform(0.4, 0.7)
        cells *= 2
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _noise_background(rng, width, height) -> np.ndarray:
    if rng.random() < 0.5:
        t = _value_noise(rng, width, height, 1)
        c0, c1 = _hsv_colour(rng), _hsv_colour(rng)
        img = c0 * (1 - t) + c1 * t
    else:
        img = _value_noise(rng, width, height, 3) * rng.uniform(0.5, 1.0, 3)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _draw_shapes(rng, img: np.ndarray, count: int) -> np.ndarray:
    h, w = img.shape[:2]
    for _ in range(count):
        col = tuple(float(c) for c in (_hsv_colour(rng) * 255))
        kind = rng.integers(5)
        thick = -1 if rng.random() < 0.7 else int(rng.integers(2, 12))
        if kind == 0:
            p0 = (int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h)))
            p1 = (p0[0] + int(rng.integers(10, w // 2 + 11)), p0[1] + int(rng.integers(10, h // 2 + 11)))
            cv2.rectangle(img, p0, p1, col, thick)
        elif kind == 1:
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(5, max(6, h // 3))),
                       col, thick)
        elif kind == 2:
            cv2.ellipse(img, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                        (int(rng.integers(5, w // 3 + 6)), int(rng.integers(5, h // 3 + 6))),
                        float(rng.uniform(0, 180)), 0, 360, col, thick)
        elif kind == 3:
            pts = np.stack([rng.integers(0, w, 5), rng.integers(0, h, 5)], axis=1).astype(np.int32)
            cv2.fillPoly(img, [pts], col)
        else:
            cv2.line(img, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                     (int(rng.integers(0, w)), int(rng.integers(0, h))), col, int(rng.integers(2, 20)))
    return img


def _tiling(rng, width, height) -> np.ndarray:
    """Checkers, stripes or bricks, as a flat pattern or a wall + perspective floor."""
    c0, c1 = _hsv_colour(rng, (0, 0.7)) * 255, _hsv_colour(rng, (0, 0.7)) * 255
    size = int(rng.integers(12, 80))

    def pattern(w, h):
        yy = np.arange(h)[:, None]
        xx = np.arange(w)[None, :]
        kind = rng.integers(3)
        if kind == 0:
            m = (xx // size + yy // size) % 2 == 1
        elif kind == 1:
            m = (xx // size) % 2 == 1 if rng.random() < 0.5 else (yy // size) % 2 == 1
        else:  # bricks with mortar lines
            bh, bw = size, 2 * size
            xs = xx + ((yy // bh) % 2) * (bw // 2)
            m = ((yy % bh) < 3) | ((xs % bw) < 3)
        m = np.broadcast_to(m, (h, w))
        return np.where(m[..., None], c1.astype(np.float32), c0.astype(np.float32))

    if rng.random() < 0.5:
        return np.clip(pattern(width, height), 0, 255).astype(np.uint8)
    # Wall (flat colour or noise) above a horizon, tiled floor warped into perspective below.
    horizon = int(height * rng.uniform(0.3, 0.7))
    wall = _noise_background(rng, width, height) if rng.random() < 0.5 else _gradient(rng, width, height)
    tex = pattern(width * 2, height * 2)
    src = np.float32([[0, 0], [2 * width, 0], [2 * width, 2 * height], [0, 2 * height]])
    spread = rng.uniform(0.1, 0.45) * width
    dst = np.float32([[width / 2 - spread, horizon], [width / 2 + spread, horizon],
                      [width * 1.6, height * 1.3], [-width * 0.6, height * 1.3]])
    floor = cv2.warpPerspective(tex, cv2.getPerspectiveTransform(src, dst), (width, height),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = wall.astype(np.float32)
    out[horizon:] = floor[horizon:]
    return np.clip(out, 0, 255).astype(np.uint8)


BACKGROUND_KINDS = ("photo", "gradient", "noise", "shapes", "tiling")


def random_background(rng: np.random.Generator, width: int, height: int, kind: str | None = None) -> np.ndarray:
    """A random background (height, width, 3) uint8 RGB."""
    if kind is None:
        kind = BACKGROUND_KINDS[rng.choice(len(BACKGROUND_KINDS), p=[0.4, 0.12, 0.16, 0.16, 0.16])]
    if kind == "photo":
        img = _photo_background(rng, width, height)
    elif kind == "gradient":
        img = _gradient(rng, width, height)
    elif kind == "noise":
        img = _noise_background(rng, width, height)
    elif kind == "shapes":
        base = _gradient(rng, width, height) if rng.random() < 0.5 else _noise_background(rng, width, height)
        img = _draw_shapes(rng, np.ascontiguousarray(base), int(rng.integers(3, 25)))
    elif kind == "tiling":
        img = _tiling(rng, width, height)
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    if kind != "shapes" and rng.random() < 0.25:   # clutter on top of anything
        img = _draw_shapes(rng, np.ascontiguousarray(img), int(rng.integers(1, 6)))
    return np.ascontiguousarray(img)


def random_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A texture for occluders: solid, striped, noise or a background patch."""
    r = rng.random()
    if r < 0.3:
        return np.broadcast_to((random_garment_colour(rng) * 255).astype(np.uint8), (height, width, 3)).copy()
    if r < 0.5:
        return _tiling(rng, width, height)
    return random_background(rng, width, height, kind=rng.choice(["photo", "noise", "gradient"]))


# ----------------------------------------------------------------------------------
# Occluders
# ----------------------------------------------------------------------------------
def occluder_mask(rng: np.random.Generator, width: int, height: int, box_xyxy) -> np.ndarray:
    """(H, W) bool mask of one random occluder overlapping the person box (x0, y0, x1, y1).

    Rectangle, ellipse or bar (a long thin strip, like a pole, railing or table edge),
    centred inside the box, 15-55% of the box size.
    """
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    bw, bh = max(x1 - x0, 4.0), max(y1 - y0, 4.0)
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    m = np.zeros((height, width), np.uint8)
    kind = rng.integers(3)
    if kind == 0:
        hw, hh = bw * rng.uniform(0.15, 0.5) / 2, bh * rng.uniform(0.1, 0.4) / 2
        cv2.rectangle(m, (int(cx - hw), int(cy - hh)), (int(cx + hw), int(cy + hh)), 1, -1)
    elif kind == 1:
        ax = (max(2, int(bw * rng.uniform(0.15, 0.5) / 2)), max(2, int(bh * rng.uniform(0.1, 0.35) / 2)))
        cv2.ellipse(m, (int(cx), int(cy)), ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        thick = max(3, int(min(bw, bh) * rng.uniform(0.06, 0.2)))
        if rng.random() < 0.5:   # horizontal bar across the image
            cv2.rectangle(m, (0, int(cy - thick / 2)), (width, int(cy + thick / 2)), 1, -1)
        else:                    # vertical pole
            cv2.rectangle(m, (int(cx - thick / 2), 0), (int(cx + thick / 2), height), 1, -1)
    return m.astype(bool)


def draw_occluders(rng: np.random.Generator, image: np.ndarray, box_xyxy, count: int) -> np.ndarray:
    """Draw ``count`` occluders over ``image`` (H, W, 3) uint8 in place; return the union
    mask (H, W) bool. The caller removes the mask from the body labels."""
    h, w = image.shape[:2]
    union = np.zeros((h, w), bool)
    for _ in range(count):
        m = occluder_mask(rng, w, h, box_xyxy)
        tex = random_texture(rng, w, h)
        image[m] = tex[m]
        union |= m
    return union


# ----------------------------------------------------------------------------------
# Photometric noise
# ----------------------------------------------------------------------------------
def photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Camera-like noise on an (H, W, 3) uint8 image: exposure, contrast, saturation,
    white balance, gamma, sensor noise, sometimes blur and JPEG compression."""
    img = image.astype(np.float32) / 255.0
    img = img * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, 3)               # exposure, white balance
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.75, 1.25) + mean                            # contrast
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.6, 1.3)                              # saturation
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25)                             # gamma
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(0.003, 0.03), img.shape).astype(np.float32)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 95))])
        if ok:
            out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out
