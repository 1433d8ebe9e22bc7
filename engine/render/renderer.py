"""Offscreen rasteriser for posed bodies: moderngl over EGL (numpy in, numpy out).

One code path for CPU and GPU: EGL picks Mesa's llvmpipe on a machine without a GPU
and the NVIDIA driver's EGL device on a GPU machine. Per image it produces the shaded
colour (Lambert + ambient) over a background, the silhouette mask, DensePose part ids
(``engine.render.surface``), per-part UV and the camera depth.

Camera and pixel convention (the same as ``engine.common.camera.perspective_project``):

* Vertices are in the OpenCV camera frame: x right, y down, z forward, metres.
* A point projects to u = f X / Z + cx, v = f Y / Z + cy, in pixels whose origin is the
  top-left CORNER of the image: pixel (row i, column j) covers u in [j, j + 1) and
  v in [i, i + 1), its centre is (j + 0.5, i + 0.5). Output row 0 is the top of the
  image. The default principal point is the image centre (W / 2, H / 2).
* A pixel belongs to the body when its centre lies inside a projected triangle
  (OpenGL's rasterisation rule); no anti-aliasing, so labels never mix.

Implementation (measurements in docs/benchmarks.md, "Renderer (issue 3)"):

* One EGL context per process (``gl_context``), one framebuffer per ``Renderer``. A
  batch is drawn into an atlas of tiles (one viewport per image) and read back once.
* The projection maps image row v to GL window y = v (not H - v), so GL's bottom-up
  read-back is already top-down: no flip. It mirrors the screen, so outward faces
  are clockwise there (matters only with ``cull_back_faces``).
* Attachments: RGBA8 colour (alpha = coverage), RG32F UV, R32F camera z and R8UI part
  id, plus a depth renderbuffer; all cleared to 0, so background is 0 everywhere.
* Shading is Lambert + ambient per vertex (smooth vertex normals computed in numpy,
  turned outwards by the mesh's signed volume), interpolated over faces. On llvmpipe
  the cost is per triangle and per interpolated value, so the fragment shader gets
  only colour (3) and UV (2); depth is 1 / gl_FragCoord.w (exactly the camera z).
* The part id is per FACE: the majority part of its three vertices (all different:
  the first vertex's). Faces are rotated (winding kept) so that a vertex with that
  part comes last, and GL's provoking (last) vertex passes it as a flat integer. UV
  is interpolated from the vertices (faces on a part seam blend the parts' UV).
* No back-face culling by default: it is 1.25-1.4x faster on llvmpipe, but not
  bit-identical (a handful of silhouette pixels where a back face tied the depth
  test). ``cull_back_faces=True`` opts in.
* Near/far planes are chosen per image from the vertices' z (only depth-test precision
  depends on them).

Pitfalls:

* fork: with an EGL context in a process, ``fork``-ed children (multiprocessing's
  default start method on Linux, torch DataLoader workers) HANG on their first GL
  call. Create renderers only in the processes that use them, after forking, or use
  the ``spawn`` start method. ``gl_context`` raises in a forked child instead of
  hanging.
* A context is current in the thread that created it; use a renderer from that thread.
* ``PYMAF_GL_DEVICE=N`` selects the N-th EGL device (multi-GPU machines); unset, EGL's
  first device is used (glcontext also reads ``GLCONTEXT_DEVICE_INDEX``).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

__all__ = ["Renderer", "RenderOutput", "render_overlay", "gl_context", "egl_available",
           "release_context", "face_parts", "DEFAULT_COLOR", "DEFAULT_LIGHT_DIR", "AMBIENT"]

DEFAULT_COLOR = (0.75, 0.75, 0.75)          # light grey
DEFAULT_LIGHT_DIR = (-0.25, -0.35, -1.0)    # camera frame, towards the light: upper left, behind the camera
AMBIENT = 0.35                              # colour = albedo * (AMBIENT + (1 - AMBIENT) * max(n . l, 0))
MAX_ATLAS_SIDE = 2048                       # atlas framebuffer side limit (pixels)
MAX_TILES = 64                              # images per atlas draw
LIGHT_BLOCK = 64                            # meshes lit together in numpy


@dataclass
class RenderOutput:
    """Per-image buffers; B images of H x W pixels, row 0 = top of the image.

    rgb:   (B, H, W, 3) uint8   shaded body over the background
    mask:  (B, H, W) bool       pixels covered by the body
    part:  (B, H, W) uint8      0 background, 1..24 DensePose part
    uv:    (B, H, W, 2) float32 per-part surface coordinates, 0 on background
    depth: (B, H, W) float32    camera z in metres, 0 on background
    """

    rgb: np.ndarray
    mask: np.ndarray
    part: np.ndarray
    uv: np.ndarray
    depth: np.ndarray


# ----------------------------------------------------------------------------------
# The process's EGL context
# ----------------------------------------------------------------------------------
_CONTEXT = None
_CONTEXT_PID = None


def gl_context():
    """The process's moderngl context (EGL on Linux; WGL / CGL elsewhere), created on first use.

    Raises RuntimeError in a fork of a process that already had a context (GL would
    hang there; see the module notes) and whatever moderngl raises when no EGL device
    can be opened.
    """
    global _CONTEXT, _CONTEXT_PID
    if _CONTEXT is not None:
        if _CONTEXT_PID != os.getpid():
            raise RuntimeError(
                "engine.render: this process was forked from one that had an EGL context; "
                "GL calls would hang here. Create renderers only after forking or use the "
                "'spawn' multiprocessing start method.")
        return _CONTEXT
    import moderngl

    kwargs = {}
    device = os.environ.get("PYMAF_GL_DEVICE", "").strip()
    if device:
        kwargs["device_index"] = int(device)
    if sys.platform.startswith("linux"):   # headless: no X server needed
        kwargs["backend"] = "egl"
    _CONTEXT = moderngl.create_context(standalone=True, **kwargs)
    _CONTEXT_PID = os.getpid()
    return _CONTEXT


def release_context() -> None:
    """Release the process's context (renderers made from it become unusable)."""
    global _CONTEXT, _CONTEXT_PID
    if _CONTEXT is not None and _CONTEXT_PID == os.getpid():
        _CONTEXT.release()
    _CONTEXT, _CONTEXT_PID = None, None


def egl_available() -> tuple:
    """(True, renderer description) if an EGL context can be made, else (False, reason)."""
    try:
        ctx = gl_context()
    except Exception as err:  # ImportError, missing libEGL/libGL, no device, fork guard
        return False, f"{type(err).__name__}: {err}"
    return True, f"{ctx.info['GL_RENDERER']} ({ctx.info['GL_VERSION']})"


# ----------------------------------------------------------------------------------
# Shaders
# ----------------------------------------------------------------------------------
_VERTEX_SHADER = """
#version 330
uniform float u_focal;       // px
uniform vec2 u_principal;    // px, origin at the top-left image corner
uniform vec2 u_size;         // (W, H) px
uniform vec2 u_near_far;     // m
in vec3 in_pos;              // OpenCV camera frame
in vec3 in_color;            // lit colour
in vec2 in_uv;
in int in_part;
out vec3 v_color;
out vec2 v_uv;
flat out uint v_part;

void main() {
    // Clip coordinates with w = Z: x_ndc = 2 u / W - 1 and y_ndc = 2 v / H - 1, so GL's
    // window (x, y) is the pixel position (u, v) and read-back rows come out top-down.
    float z = in_pos.z;
    float n = u_near_far.x;
    float f = u_near_far.y;
    gl_Position = vec4(2.0 * (u_focal * in_pos.x + u_principal.x * z) / u_size.x - z,
                       2.0 * (u_focal * in_pos.y + u_principal.y * z) / u_size.y - z,
                       (f + n) / (f - n) * z - 2.0 * f * n / (f - n),
                       z);
    v_color = in_color;
    v_uv = in_uv;
    v_part = uint(in_part);
}
"""

_FRAGMENT_SHADER = """
#version 330
in vec3 v_color;
in vec2 v_uv;
flat in uint v_part;          // from the provoking (last) vertex: the face's part
layout(location = 0) out vec4 o_color;
layout(location = 1) out vec2 o_uv;
layout(location = 2) out float o_depth;
layout(location = 3) out uint o_part;

void main() {
    o_color = vec4(v_color, 1.0);
    o_uv = v_uv;
    o_depth = 1.0 / gl_FragCoord.w;   // gl_FragCoord.w = 1 / w_clip = 1 / Z
    o_part = v_part;
}
"""


# ----------------------------------------------------------------------------------
# Small numpy helpers
# ----------------------------------------------------------------------------------
def face_parts(faces: np.ndarray, vertex_parts: np.ndarray) -> np.ndarray:
    """(F, 3) faces, (V,) parts -> (F,) uint8: the majority part of each face's vertices
    (all three differ: the first vertex's part)."""
    p = np.asarray(vertex_parts).astype(np.uint8)[faces]        # (F, 3)
    return np.where(p[:, 1] == p[:, 2], p[:, 1], p[:, 0])


def provoking_order(faces: np.ndarray, vertex_parts: np.ndarray) -> np.ndarray:
    """(F, 3) faces rotated (winding kept) so the last vertex carries the face's part."""
    faces = np.asarray(faces, np.int64)
    p = np.asarray(vertex_parts)[faces]
    k = np.argmax(p == face_parts(faces, vertex_parts)[:, None], axis=1)   # first vertex with it
    shift = (k + 1) % 3                       # roll left by k + 1 puts vertex k last
    idx = (np.arange(3)[None] + shift[:, None]) % 3
    return np.take_along_axis(faces, idx, axis=1)


def vertex_normal_matrix(faces: np.ndarray, num_vertices: int):
    """(V, F) sparse incidence matrix: vertex normals = M @ face normals (area weighted)."""
    from scipy.sparse import csr_matrix

    faces = np.asarray(faces, np.int64)
    rows = faces.ravel()
    cols = np.repeat(np.arange(len(faces)), 3)
    return csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                      shape=(num_vertices, len(faces)))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray, incidence) -> np.ndarray:
    """(B, V, 3) vertices -> (B, V, 3) float32 unit vertex normals pointing out of the body.

    Normals follow the winding, then each mesh's are flipped if its signed volume is
    negative (inward-wound faces). Works vertex-major ((V, B, 3)): gathering rows is much
    faster than gathering along axis 1, and the face normals then multiply the incidence
    matrix without a copy.
    """
    v = np.asarray(vertices, np.float32)
    b, nv, _ = v.shape
    vm = np.ascontiguousarray(v.transpose(1, 0, 2))                  # (V, B, 3)
    p0, p1, p2 = vm[faces[:, 0]], vm[faces[:, 1]], vm[faces[:, 2]]  # (F, B, 3) each
    e1, e2 = p1 - p0, p2 - p0
    fn = np.empty_like(e1)                                           # cross, |.| = 2 area
    fn[..., 0] = e1[..., 1] * e2[..., 2] - e1[..., 2] * e2[..., 1]
    fn[..., 1] = e1[..., 2] * e2[..., 0] - e1[..., 0] * e2[..., 2]
    fn[..., 2] = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    volume = np.einsum("fbc,fbc->b", p0, fn)                         # 6 x signed volume
    vn = (incidence @ fn.reshape(len(faces), b * 3)).reshape(nv, b, 3)
    vn *= np.where(volume < 0, -1.0, 1.0).astype(np.float32)[None, :, None]
    vn /= np.maximum(np.linalg.norm(vn, axis=-1, keepdims=True), 1e-12)
    return vn.transpose(1, 0, 2)


def lambert(colors: np.ndarray, normals: np.ndarray, light: np.ndarray, ambient: float = AMBIENT):
    """(B, V, 3) albedo, (B, V, 3) unit normals, (B, 3) unit light -> (B, V, 3) float32 colour."""
    cos = np.maximum(np.einsum("bvc,bc->bv", normals, light.astype(np.float32)), 0.0)
    return np.ascontiguousarray(colors * (ambient + (1.0 - ambient) * cos)[..., None], dtype=np.float32)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """(V, 3), (F, 3) -> volume enclosed by the mesh; positive for outward-wound faces."""
    t = np.asarray(vertices, np.float64)[faces]
    return float(np.einsum("fi,fi->", t[:, 0], np.cross(t[:, 1], t[:, 2])) / 6.0)


def _per_image(x, b: int, tail: tuple, name: str, dtype=np.float32) -> np.ndarray:
    """Broadcast x of shape tail or (B,) + tail to (B,) + tail."""
    x = np.asarray(x, dtype)
    if x.shape == tail:
        return np.broadcast_to(x, (b,) + tail)
    if x.shape == (b,) + tail:
        return x
    raise ValueError(f"{name}: expected shape {tail} or {(b,) + tail}, got {x.shape}")


# ----------------------------------------------------------------------------------
# Renderer
# ----------------------------------------------------------------------------------
class Renderer:
    """Rasterises one mesh topology at a fixed image size; batched over poses.

    faces (F, 3) int, vertex_parts (V,) 1..24 (None: all 0), vertex_uv (V, 2) (None: 0).
    The framebuffer is an atlas of ``tiles`` images (at most ``max_tiles``, within a
    2048 px square); a batch larger than that is drawn in chunks. ``cull_back_faces``
    trades exactness at a few silhouette pixels for speed (see the module notes). Call
    ``close()`` (or use it as a context manager) to free its GL objects.
    """

    def __init__(self, width: int, height: int, faces: np.ndarray,
                 vertex_parts: np.ndarray, vertex_uv: np.ndarray, *, max_tiles: int = MAX_TILES,
                 cull_back_faces: bool = False):
        self.width, self.height = int(width), int(height)
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise ValueError(f"faces: expected (F, 3), got {faces.shape}")
        nv = int(faces.max()) + 1 if vertex_parts is None else len(vertex_parts)
        parts = np.zeros(nv, np.uint8) if vertex_parts is None else np.asarray(vertex_parts)
        uv = np.zeros((nv, 2), np.float32) if vertex_uv is None else np.asarray(vertex_uv, np.float32)
        if faces.min() < 0 or faces.max() >= nv or parts.shape != (nv,) or uv.shape != (nv, 2):
            raise ValueError(f"faces index {faces.max() + 1} vertices; vertex_parts / vertex_uv "
                             f"have shapes {parts.shape} / {uv.shape}")
        self.num_vertices = nv
        self.faces = provoking_order(faces, parts)                  # same triangles, same winding
        self.cull_back_faces = bool(cull_back_faces)

        import moderngl

        self.ctx = ctx = gl_context()
        self._last_vertex = moderngl.LAST_VERTEX_CONVENTION
        limit = min(ctx.info["GL_MAX_TEXTURE_SIZE"], *ctx.info["GL_MAX_VIEWPORT_DIMS"])
        if self.width > limit or self.height > limit or min(self.width, self.height) < 1:
            raise ValueError(f"image size {self.width}x{self.height} outside 1..{limit} px")
        # Atlas layout: tile k at GL viewport (k % cols * W, k // cols * H).
        max_side = min(MAX_ATLAS_SIDE, limit)
        max_tiles = max(1, int(max_tiles))
        self.cols = max(1, min(max_tiles, max_side // self.width))
        self.rows = max(1, min(-(-max_tiles // self.cols), max_side // self.height))
        self.tiles = min(self.cols * self.rows, max_tiles)
        aw, ah = self.cols * self.width, self.rows * self.height

        self._incidence = vertex_normal_matrix(self.faces, nv)
        self.prog = ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.prog["u_size"].value = (float(self.width), float(self.height))
        # Dynamic positions / lit colours for all tiles; static UV, parts and indices are
        # repeated per tile (tile k's vertices start at k * V).
        t = self.tiles
        self._pos = ctx.buffer(reserve=t * nv * 12, dynamic=True)
        self._col = ctx.buffer(reserve=t * nv * 12, dynamic=True)
        self._uv = ctx.buffer(np.ascontiguousarray(np.tile(uv, (t, 1)), np.float32))
        self._part = ctx.buffer(np.tile(parts.astype(np.int32), t))
        index = self.faces.astype(np.int32)[None] + (np.arange(t, dtype=np.int32) * nv)[:, None, None]
        self._ibo = ctx.buffer(np.ascontiguousarray(index))
        self.vao = ctx.vertex_array(self.prog, [
            (self._pos, "3f", "in_pos"), (self._col, "3f", "in_color"),
            (self._uv, "2f", "in_uv"), (self._part, "1i", "in_part"),
        ], index_buffer=self._ibo, index_element_size=4)

        self._targets = [
            ctx.texture((aw, ah), 4, dtype="f1"),   # colour + coverage
            ctx.texture((aw, ah), 2, dtype="f4"),   # uv
            ctx.texture((aw, ah), 1, dtype="f4"),   # camera z
            ctx.texture((aw, ah), 1, dtype="u1"),   # part id (R8UI)
        ]
        self._depth = ctx.depth_renderbuffer((aw, ah))
        self.fbo = ctx.framebuffer(color_attachments=self._targets, depth_attachment=self._depth)
        # (components, moderngl dtype, numpy dtype) per attachment; read-back scratch.
        self._formats = [(4, "f1", np.uint8), (2, "f4", np.float32), (1, "f4", np.float32), (1, "u1", np.uint8)]
        self._scratch = [np.empty(aw * ah * c, nd) for c, _, nd in self._formats]
        self._closed = False

    # --- context manager ---------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Free the renderer's GL objects (the process's context stays)."""
        if self._closed:
            return
        self._closed = True
        if _CONTEXT_PID != os.getpid():   # forked copy: GL calls would hang
            return
        for obj in (self.vao, self.fbo, self._depth, *self._targets,
                    self._pos, self._col, self._uv, self._part, self._ibo, self.prog):
            obj.release()

    # --- rendering ---------------------------------------------------------------------
    def render(self, vertices: np.ndarray,
               focal: float | np.ndarray,
               principal: np.ndarray | None = None,
               vertex_colors: np.ndarray | None = None,
               background: np.ndarray | None = None,
               light_dir: np.ndarray | None = None,
               ) -> RenderOutput:
        """Render a batch of posed meshes.

        vertices (B, V, 3) metres in the OpenCV camera frame ((V, 3) is taken as B = 1);
        focal px, scalar or (B,); principal (2,) or (B, 2) px, default (W / 2, H / 2);
        vertex_colors (V, 3) or (B, V, 3) (or one (3,) colour) in [0, 1], default light
        grey; background (H, W, 3) or (B, H, W, 3) uint8, default black; light_dir (3,)
        or (B, 3), camera frame, pointing towards the light (normalised here), default
        from the upper left behind the camera.
        """
        if self._closed:
            raise RuntimeError("Renderer is closed")
        v = np.asarray(vertices, np.float32)
        if v.ndim == 2:
            v = v[None]
        b, nv = v.shape[0], self.num_vertices
        if v.shape[1:] != (nv, 3):
            raise ValueError(f"vertices: expected (B, {nv}, 3), got {v.shape}")
        w, h = self.width, self.height
        focal = _per_image(focal, b, (), "focal", np.float64)
        principal = _per_image((w / 2, h / 2) if principal is None else principal, b, (2,), "principal", np.float64)
        if vertex_colors is None or np.shape(vertex_colors) == (3,):   # one colour for all
            one = DEFAULT_COLOR if vertex_colors is None else vertex_colors
            colors = np.broadcast_to(np.asarray(one, np.float32), (b, nv, 3))
        else:
            colors = _per_image(vertex_colors, b, (nv, 3), "vertex_colors")
        light = _per_image(DEFAULT_LIGHT_DIR if light_dir is None else light_dir, b, (3,), "light_dir", np.float64)
        light = light / np.maximum(np.linalg.norm(light, axis=-1, keepdims=True), 1e-12)
        if background is not None:
            background = _per_image(background, b, (h, w, 3), "background", np.uint8)

        out = RenderOutput(
            rgb=np.empty((b, h, w, 3), np.uint8), mask=np.empty((b, h, w), bool),
            part=np.empty((b, h, w), np.uint8), uv=np.empty((b, h, w, 2), np.float32),
            depth=np.empty((b, h, w), np.float32))
        # Lighting in numpy for up to LIGHT_BLOCK meshes at once (batched normals are
        # cheaper per mesh), drawing in chunks of ``tiles``.
        for block in range(0, b, LIGHT_BLOCK):
            bl = slice(block, min(b, block + LIGHT_BLOCK))
            lit = lambert(colors[bl], vertex_normals(v[bl], self.faces, self._incidence), light[bl])
            for start in range(bl.start, bl.stop, self.tiles):
                sl = slice(start, min(bl.stop, start + self.tiles))
                self._render_chunk(v[sl], focal[sl], principal[sl], lit[sl.start - block:sl.stop - block],
                                   out, start)
        if background is not None:
            out.rgb[~out.mask] = background[~out.mask]
        return out

    def render_overlay(self, image: np.ndarray, vertices: np.ndarray, focal,
                       principal=None, vertex_colors=None, light_dir=None,
                       alpha: float = 0.8) -> np.ndarray:
        """Alpha-blend the shaded body over ``image`` (H, W, 3) or (B, H, W, 3) uint8.

        Returns uint8 of the image's shape; other arguments as in ``render``.
        """
        image = np.asarray(image, np.uint8)
        r = self.render(vertices, focal, principal, vertex_colors, None, light_dir)
        a = (alpha * r.mask[..., None]).astype(np.float32)
        base = np.broadcast_to(image, r.rgb.shape).astype(np.float32)
        blended = np.rint(base * (1 - a) + r.rgb.astype(np.float32) * a).astype(np.uint8)
        return blended[0] if image.ndim == 3 and len(blended) == 1 else blended

    def _render_chunk(self, v, focal, principal, lit, out: RenderOutput, offset: int) -> None:
        """Draw n <= tiles meshes (lit: (n, V, 3) shaded vertex colours) into the atlas,
        read back once, copy into ``out``."""
        ctx, prog = self.ctx, self.prog
        n, nf = len(v), len(self.faces)
        w, h = self.width, self.height
        self._pos.write(np.ascontiguousarray(v, np.float32))
        self._col.write(np.ascontiguousarray(lit, np.float32))

        self.fbo.use()
        if self.cull_back_faces:
            # The y-down projection mirrors the screen: outward faces are clockwise.
            ctx.front_face, ctx.cull_face = "cw", "back"
            ctx.enable_only(ctx.DEPTH_TEST | ctx.CULL_FACE)
        else:
            ctx.enable_only(ctx.DEPTH_TEST)         # no culling, no blending
        ctx.provoking_vertex = self._last_vertex    # GL's default, made explicit
        self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        for k in range(n):
            z = v[k, :, 2]
            zpos = z[z > 1e-6]
            if len(zpos) == 0:
                continue                            # entirely behind the camera
            near, far = max(0.9 * float(zpos.min()), 1e-4), 1.1 * float(zpos.max()) + 1e-3
            prog["u_focal"].value = float(focal[k])
            prog["u_principal"].value = (float(principal[k, 0]), float(principal[k, 1]))
            prog["u_near_far"].value = (near, far)
            self.fbo.viewport = ((k % self.cols) * w, (k // self.cols) * h, w, h)
            self.vao.render(vertices=nf * 3, first=k * nf * 3)

        rows = -(-n // self.cols)
        cols = self.cols if rows > 1 else n
        region = (0, 0, cols * w, rows * h)
        dst = {0: out.rgb, 1: out.uv, 2: out.depth, 3: out.part}
        for target, scratch, (comp, dtype, _) in zip(range(4), self._scratch, self._formats):
            size = region[2] * region[3] * comp
            self.fbo.read_into(scratch[:size], viewport=region, components=comp,
                               attachment=target, alignment=1, dtype=dtype)
            a = scratch[:size].reshape(rows, h, cols, w, comp)       # already top-down
            for r in range(rows):                                   # one copy per row of tiles
                c = min(cols, n - r * cols)
                tiles = a[r, :, :c].transpose(1, 0, 2, 3)          # (c, H, W, comp) view
                at = slice(offset + r * cols, offset + r * cols + c)
                if target == 0:
                    out.rgb[at] = tiles[..., :3]
                    out.mask[at] = tiles[..., 3] > 0
                elif comp == 1:
                    dst[target][at] = tiles[..., 0]
                else:
                    dst[target][at] = tiles


def render_overlay(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray, focal,
                   principal=None, vertex_colors=None, light_dir=None, alpha: float = 0.8) -> np.ndarray:
    """One-off preview: the body (V, 3) or (B, V, 3) alpha-blended over ``image``.

    image (H, W, 3) uint8 (or (B, H, W, 3)); other arguments as in ``Renderer.render``.
    Builds and frees a ``Renderer`` for the image size; keep a ``Renderer`` for repeated use.
    """
    h, w = np.shape(image)[-3:-1]
    with Renderer(w, h, faces, None, None) as renderer:
        return renderer.render_overlay(image, vertices, focal, principal, vertex_colors, light_dir, alpha)
