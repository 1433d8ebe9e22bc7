"""Pictures of an SMPL-format body model (matplotlib, Agg backend; no OpenGL).

``python -m engine.body.preview OUT.png`` renders the project's mannequin (rest pose,
a posed example through smplx, and the beta0 = +2 / beta1 = +2 shape variants) from
the front and the side. ``render_body_model(data, path)`` does the same for any
``BodyModelData`` (for example a user's SMPL, to compare).

The renderer is deliberately simple: orthographic projection, back-face culling,
painter's algorithm (faces sorted far to near) and Lambert shading of
the averaged vertex normals, drawn as a
matplotlib ``PolyCollection`` (what ``Poly3DCollection`` does internally, with the
camera under our control so every panel shares one metric scale).
"""
from __future__ import annotations

import sys

import numpy as np

# Camera for each view: (screen-right axis, screen-up axis, towards-the-viewer axis).
VIEWS = {
    "front": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])),
    # seen from the body's right side (-x): the body's front (+z) points screen-right
    "side": (np.array([0, 0, 1.0]), np.array([0, 1.0, 0]), np.array([-1.0, 0, 0])),
    # three-quarter view from the front-left, slightly from above
    "3/4": None,
}


def _camera(view: str):
    if view != "3/4":
        return VIEWS[view]
    yaw, pitch = np.radians(35.0), np.radians(12.0)
    back = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return right, up, back


def draw_mesh(ax, vertices, faces, view: str = "front", color=(0.80, 0.72, 0.62),
              light=(-0.35, 0.55, 0.75), offset=(0.0, 0.0)):
    """Draw a shaded triangle mesh into a 2-D matplotlib axes (metres on both axes).

    Returns the 2-D bounding box (xmin, xmax, ymin, ymax) of what was drawn.
    """
    from matplotlib.collections import PolyCollection

    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    right, up, back = _camera(view)
    screen = np.stack([v @ right + offset[0], v @ up + offset[1]], axis=1)
    depth = v @ back
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    facing = n @ back > 0.0
    # light given in camera coordinates (x right, y up, z towards the viewer)
    l_world = light[0] * right + light[1] * up + light[2] * back
    l_world /= np.linalg.norm(l_world)
    # smooth shading: light each face with the mean of its vertex normals
    vn = np.zeros_like(v)
    for i in range(3):
        np.add.at(vn, f[:, i], n)
    vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)
    fn = vn[f].mean(axis=1)
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
    lam = np.clip(fn @ l_world, 0.0, 1.0)
    shade = 0.28 + 0.72 * lam
    order = np.argsort(depth[f].mean(axis=1)[facing], kind="stable")
    idx = np.nonzero(facing)[0][order]
    cols = np.clip(np.asarray(color)[None, :] * shade[idx, None], 0.0, 1.0)
    pc = PolyCollection(screen[f[idx]], facecolors=cols, edgecolors=cols, linewidths=0.15,
                        antialiased=True)
    ax.add_collection(pc)
    return screen[:, 0].min(), screen[:, 0].max(), screen[:, 1].min(), screen[:, 1].max()


def render_panels(rows, path, title: str = "", dpi: int = 110, row_height_in: float = 4.2):
    """rows: list of rows, each a list of (label, vertices, faces, view) panels (a
    panel may hold several meshes: vertices and faces then are lists, drawn side by
    side). Every panel and row shares one metric scale."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    def meshes(v, f):
        return list(zip(v, f)) if isinstance(v, (list, tuple)) else [(v, f)]

    layout = []
    for row in rows:
        items = []
        for label, v, f, view in row:
            right, up, _ = _camera(view)
            parts, x = [], 0.0
            for vi, fi in meshes(v, f):
                s = np.stack([vi @ right, vi @ up], axis=1)
                lo, hi = s[:, 0].min(), s[:, 0].max()
                parts.append((vi, fi, x - lo))
                x += hi - lo + 0.08
            ys = np.concatenate([m[0] @ up for m in parts])
            items.append((label, view, parts, x - 0.08, ys.min(), ys.max()))
        layout.append(items)
    ymin = min(it[4] for row in layout for it in row) - 0.04
    ymax = max(it[5] for row in layout for it in row) + 0.04
    scale = (row_height_in - 0.35) / (ymax - ymin)            # inches per metre
    pad = 0.10
    row_w = [sum((it[3] + 2 * pad) for it in row) for row in layout]
    fig_w = max(row_w) * scale + 0.2
    fig_h = row_height_in * len(layout) + (0.3 if title else 0.0)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    fig.patch.set_facecolor("white")
    for r, row in enumerate(layout):
        x0 = 0.1 + (max(row_w) - row_w[r]) * scale / 2
        y0 = fig_h - (0.3 if title else 0.0) - (r + 1) * row_height_in + 0.05
        for label, view, parts, width, _, _ in row:
            w = width + 2 * pad
            ax = fig.add_axes([x0 / fig_w, y0 / fig_h, w * scale / fig_w,
                               (row_height_in - 0.35) / fig_h])
            x0 += w * scale
            for vi, fi, dx in parts:
                draw_mesh(ax, vi, fi, view, offset=(dx, 0.0))
            ax.set_xlim(-pad, width + pad)
            ax.set_ylim(ymin, ymax)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.axhline(ymin + 0.04, color="0.7", lw=0.6)
            ax.set_title(label, fontsize=8, pad=2)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 - 0.08 / fig_h, va="top")
    fig.savefig(path, dpi=dpi, facecolor="white")
    plt.close(fig)


# A walking pose with the left arm raised and the right arm down (smplx body_pose,
# axis-angle per joint 1..23, by SMPL joint name).
EXAMPLE_POSE = {
    "left_hip": (-0.55, 0.0, 0.05),
    "right_hip": (0.35, 0.0, -0.05),
    "left_knee": (1.05, 0.0, 0.0),
    "right_knee": (0.25, 0.0, 0.0),
    "left_ankle": (-0.15, 0.0, 0.0),
    "right_ankle": (0.2, 0.0, 0.0),
    "spine1": (0.05, 0.1, 0.0),
    "spine3": (0.0, 0.1, 0.0),
    "head": (0.1, -0.3, 0.0),
    "left_shoulder": (0.0, 0.0, 1.0),
    "left_elbow": (0.0, -1.4, 0.0),
    "right_shoulder": (0.0, 0.4, 1.2),
    "right_elbow": (0.0, 0.6, 0.0),
}


def example_body_pose(pose: dict = None) -> np.ndarray:
    """(69,) smplx body_pose (axis-angle, joints 1..23) from a name -> vector dict."""
    from engine.common.smpl_topology import SMPL_JOINT_NAMES

    pose = EXAMPLE_POSE if pose is None else pose
    out = np.zeros((23, 3))
    for name, aa in pose.items():
        out[SMPL_JOINT_NAMES.index(name) - 1] = aa
    return out.reshape(-1)


def smplx_model(data):
    """An ``smplx.SMPL`` built from a ``BodyModelData`` (data_struct route)."""
    import smplx
    from smplx.utils import Struct

    return smplx.SMPL(model_path="unused", data_struct=Struct(**data.to_npz_dict()),
                      create_transl=False)


def posed_vertices(data, body_pose=None, betas=None, model=None) -> np.ndarray:
    """Vertices of ``data`` posed through smplx (numpy, float64)."""
    import torch

    model = smplx_model(data) if model is None else model
    bp = torch.zeros(1, 69) if body_pose is None else torch.as_tensor(
        np.asarray(body_pose, np.float32)).reshape(1, 69)
    b = torch.zeros(1, model.num_betas) if betas is None else torch.as_tensor(
        np.asarray(betas, np.float32)).reshape(1, -1)
    with torch.no_grad():
        out = model(betas=b, body_pose=bp, global_orient=torch.zeros(1, 3))
    return out.vertices[0].numpy().astype(np.float64)


# Arms lowered (for the side-by-side shape variants).
ARMS_DOWN_POSE = {"left_shoulder": (0.0, 0.0, -1.2), "right_shoulder": (0.0, 0.0, 1.2)}


def render_body_model(data, path, title: str = None, dpi: int = 110) -> None:
    """Two rows at one scale: the rest pose (front, side, 3/4); the example pose
    (front, side, 3/4) and, arms lowered, beta = 0 next to beta0 = +2 and beta1 = +2."""
    model = smplx_model(data)
    f = np.asarray(data.faces)
    rest = posed_vertices(data, model=model)
    posed = posed_vertices(data, example_body_pose(), model=model)
    down = example_body_pose(ARMS_DOWN_POSE)
    variants = []
    for k in (None, 0, 1):
        b = np.zeros(model.num_betas)
        if k is not None:
            b[k] = 2.0
        variants.append(posed_vertices(data, down, b, model=model))
    rows = [
        [("rest, front", rest, f, "front"), ("rest, side", rest, f, "side"),
         ("rest, 3/4", rest, f, "3/4")],
        [("posed, front", posed, f, "front"), ("posed, side", posed, f, "side"),
         ("posed, 3/4", posed, f, "3/4"),
         ("beta = 0  |  beta0 = +2 (height)  |  beta1 = +2 (girth)", variants, [f] * 3, "front")],
    ]
    if title is None:
        title = f"{data.source}: {data.num_vertices} vertices, {len(f)} triangles"
    render_panels(rows, path, title=title, dpi=dpi)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m engine.body.preview OUT.png", file=sys.stderr)
        return 2
    from engine.body.mannequin import build_mannequin

    render_body_model(build_mannequin(), argv[0])
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
