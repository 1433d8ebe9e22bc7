"""The offscreen renderer (moderngl over EGL) against an independent numpy rasteriser.

Skipped where no EGL context can be made (no libEGL / libGL, no device).
"""
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("moderngl")

from engine.common.camera import perspective_project  # noqa: E402
from engine.render import renderer as R  # noqa: E402

W, H, FOCAL = 320, 240, 300.0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


pytestmark = pytest.mark.usefixtures("egl")   # tests/engine/conftest.py: skip without EGL


def pose_mannequin(body, rotvecs: dict, shift=(0.0, -0.3, 3.0)) -> np.ndarray:
    """smplx forward of ``body`` with joint -> axis-angle; then 180 deg about x (upright in the
    OpenCV frame, facing the camera) and ``shift``. -> (V, 3) float64 camera-frame vertices."""
    import smplx
    import torch
    from engine.body.loading import to_smplx_struct

    model = smplx.SMPL(model_path="unused", data_struct=to_smplx_struct(body), create_transl=False)
    pose = torch.zeros(1, 69)
    for joint, rv in rotvecs.items():
        pose[0, 3 * (joint - 1): 3 * joint] = torch.tensor(rv)
    with torch.no_grad():
        v = model(body_pose=pose, betas=torch.zeros(1, 10)).vertices[0].double().numpy()
    return v * np.array([1.0, -1.0, -1.0]) + np.asarray(shift)


# left elbow bent forward 90 deg, right arm lowered, left knee bent
BENT = {18: (0.0, -np.pi / 2, 0.0), 17: (0.0, 0.0, 1.0), 4: (0.6, 0.0, 0.0)}


@pytest.fixture(scope="module")
def scene(mannequin):
    verts = pose_mannequin(mannequin, BENT)
    renderer = R.Renderer(W, H, mannequin.faces, mannequin.vertex_parts, mannequin.vertex_uv)
    out = renderer.render(verts[None], FOCAL)
    yield mannequin, verts, renderer, out
    renderer.close()


# --- an independent rasteriser -------------------------------------------------------------
def reference_raster(px, z, faces, vertex_uv, width, height):
    """numpy z-buffer: a pixel is covered when its centre (j + 0.5, i + 0.5) is inside a
    projected triangle; nearest surface wins; perspective-correct depth and UV.
    -> mask (H, W) bool, depth (H, W), face (H, W) int (-1 background), uv (H, W, 2)."""
    tri = px[faces]                                             # (F, 3, 2)
    lo = np.ceil(tri.min(axis=1) - 0.5).astype(int)             # first pixel index inside
    hi = np.floor(tri.max(axis=1) - 0.5).astype(int)
    k = int(max(1, (hi - lo).max() + 1))
    off = np.stack(np.meshgrid(np.arange(k), np.arange(k), indexing="xy"), -1).reshape(-1, 2)
    pix = lo[:, None, :] + off[None]                            # (F, k*k, 2) (col, row)
    c = pix + 0.5
    a, b, d = tri[:, None, 0], tri[:, None, 1], tri[:, None, 2]

    def edge(p, q, r):
        return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])

    area = edge(a, b, d)                                        # (F, 1)
    w0, w1, w2 = edge(b, d, c) / area, edge(d, a, c) / area, edge(a, b, c) / area
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (np.abs(area) > 1e-12)
    inside &= (pix[..., 0] >= 0) & (pix[..., 0] < width) & (pix[..., 1] >= 0) & (pix[..., 1] < height)
    fi, si = np.nonzero(inside)
    bary = np.stack([w0[fi, si], w1[fi, si], w2[fi, si]], -1)   # screen-space barycentrics
    iz = 1.0 / z[faces[fi]]
    persp = bary * iz
    zz = 1.0 / persp.sum(-1)
    persp /= persp.sum(-1, keepdims=True)                       # perspective-correct weights
    uvs = np.einsum("nk,nkc->nc", persp, vertex_uv[faces[fi]])
    flat = pix[fi, si, 1] * width + pix[fi, si, 0]
    order = np.lexsort((zz, flat))                              # by pixel, then nearest
    first = order[np.r_[True, flat[order][1:] != flat[order][:-1]]]
    mask = np.zeros(height * width, bool)
    depth = np.zeros(height * width)
    face = np.full(height * width, -1)
    uv = np.zeros((height * width, 2))
    mask[flat[first]] = True
    depth[flat[first]] = zz[first]
    face[flat[first]] = fi[first]
    uv[flat[first]] = uvs[first]
    return (mask.reshape(height, width), depth.reshape(height, width),
            face.reshape(height, width), uv.reshape(height, width, 2))


def project(verts, focal=FOCAL, principal=(W / 2, H / 2)):
    return perspective_project(verts, np.zeros(3), focal, np.asarray(principal, float))


# --- geometry and labels -------------------------------------------------------------------
def test_output_types(scene):
    _, _, _, out = scene
    assert out.rgb.shape == (1, H, W, 3) and out.rgb.dtype == np.uint8
    assert out.mask.shape == (1, H, W) and out.mask.dtype == bool
    assert out.part.shape == (1, H, W) and out.part.dtype == np.uint8
    assert out.uv.shape == (1, H, W, 2) and out.uv.dtype == np.float32
    assert out.depth.shape == (1, H, W) and out.depth.dtype == np.float32


def test_matches_reference_rasteriser(scene):
    body, verts, _, out = scene
    mask, depth, face, uv = reference_raster(project(verts), verts[:, 2], body.faces,
                                             body.vertex_uv.astype(np.float64), W, H)
    got = out.mask[0]
    area, ref_area = got.sum(), mask.sum()
    assert ref_area > 3000
    assert abs(area - ref_area) / ref_area < 0.01, (area, ref_area)
    assert np.sum(got ^ mask) / ref_area < 0.01
    both = got & mask
    dz = np.abs(out.depth[0][both] - depth[both])
    assert np.percentile(dz, 99) < 0.01 and np.median(dz) < 1e-3
    ref_part = R.face_parts(body.faces, body.vertex_parts)[face[both]]
    assert np.mean(out.part[0][both] == ref_part) > 0.98
    same_face_part = out.part[0][both] == ref_part
    duv = np.abs(out.uv[0][both][same_face_part] - uv[both][same_face_part])
    assert np.median(duv) < 1e-3 and np.percentile(duv, 95) < 0.02


def test_projected_vertices_inside_mask(scene):
    from scipy.ndimage import binary_dilation

    _, verts, _, out = scene
    px = project(verts)
    col, row = np.floor(px[:, 0]).astype(int), np.floor(px[:, 1]).astype(int)
    assert col.min() >= 0 and row.min() >= 0 and col.max() < W and row.max() < H
    grown = binary_dilation(out.mask[0], np.ones((3, 3), bool))
    assert grown[row, col].all()
    # and the mask is not just everything: its bounding box is the vertices' box
    rows, cols = np.nonzero(out.mask[0])
    assert abs(rows.min() - row.min()) <= 1 and abs(rows.max() - row.max()) <= 1
    assert abs(cols.min() - col.min()) <= 1 and abs(cols.max() - col.max()) <= 1


def test_parts_uv_depth_agree_with_visible_vertices(scene):
    from scipy.spatial import cKDTree

    body, verts, _, out = scene
    px = project(verts)
    col, row = np.floor(px[:, 0]).astype(int), np.floor(px[:, 1]).astype(int)
    d = out.depth[0][row, col]
    # visible: covered, and the rendered surface is not in front of the vertex
    visible = out.mask[0][row, col] & (d > verts[:, 2] - 0.01)
    assert visible.sum() > 1500
    # depth matches vertex z within a cm at the visible vertices
    assert np.percentile(np.abs(d[visible] - verts[visible, 2]), 95) < 0.01
    # the nearest surface wins: the pixel of a covered vertex shows a surface behind it
    # only where the pixel centre misses the vertex's own part (inner silhouettes: < 1 %)
    covered = out.mask[0][row, col]
    assert np.mean(d[covered] > verts[covered, 2] + 0.02) < 0.01
    # part of each pixel = part of the nearest visible vertex, for the large majority
    rows, cols = np.nonzero(out.mask[0])
    _, nearest = cKDTree(px[visible]).query(np.stack([cols + 0.5, rows + 0.5], -1))
    vis_ids = np.flatnonzero(visible)[nearest]
    agree = out.part[0][rows, cols] == body.vertex_parts[vis_ids]
    assert agree.mean() > 0.85, agree.mean()
    duv = np.abs(out.uv[0][rows, cols][agree] - body.vertex_uv[vis_ids][agree])
    assert np.median(duv) < 0.05


def test_background_and_value_ranges(scene):
    _, _, _, out = scene
    fg, bg = out.mask[0], ~out.mask[0]
    assert np.all(out.part[0][fg] >= 1) and np.all(out.part[0][fg] <= 24) and np.all(out.part[0][bg] == 0)
    assert np.all(out.uv[0][bg] == 0) and out.uv[0][fg].min() >= 0 and out.uv[0][fg].max() <= 1
    assert out.uv[0][fg].std() > 0.1
    assert np.all(out.depth[0][bg] == 0) and np.all(out.depth[0][fg] > 2.5) and np.all(out.depth[0][fg] < 3.5)
    assert np.all(out.rgb[0][bg] == 0) and out.rgb[0][fg].max() > 150
    assert len(np.unique(out.part[0])) >= 20


def test_row_zero_is_top_and_left_is_image_right(scene):
    _, _, _, out = scene
    part = out.part[0]
    rows_of = lambda ps: np.nonzero(np.isin(part, ps))[0]  # noqa: E731
    cols_of = lambda ps: np.nonzero(np.isin(part, ps))[1]  # noqa: E731
    assert rows_of((23, 24)).max() < rows_of((5, 6)).min()          # head above feet
    assert rows_of((23, 24)).min() == np.nonzero(out.mask[0])[0].min()
    # facing the camera, the body's left (+x) is on the image's right
    assert cols_of((4,)).mean() > cols_of((2,)).mean() > cols_of((3,)).mean()
    assert cols_of((24,)).mean() > cols_of((23,)).mean()
    assert np.isin(part, (2,)).sum() > 10 * np.isin(part, (1,)).sum()  # front of the torso visible


# --- camera, batching ----------------------------------------------------------------------
def test_batches_tiles_and_chunks_are_identical(scene, mannequin):
    body, verts, renderer, _ = scene
    other = pose_mannequin(body, {16: (0.0, 0.0, -1.0), 1: (-0.5, 0.0, 0.0)}, shift=(0.2, -0.2, 3.5))
    batch = np.stack([verts, other, verts + [0.1, 0, 0.5]])
    focal = np.array([300.0, 280.0, 320.0])
    principal = np.array([[160.0, 120.0], [150.0, 130.0], [170.0, 110.0]])
    full = renderer.render(batch, focal, principal)
    with R.Renderer(W, H, body.faces, body.vertex_parts, body.vertex_uv, max_tiles=2) as small:
        assert small.tiles == 2
        chunked = small.render(batch, focal, principal)
    for i in range(3):
        single = renderer.render(batch[i][None], float(focal[i]), principal[i])
        # Another tile covers the same pixels; interpolated values may differ in the last
        # bits (GL adds the viewport offset in float32).
        for name in ("mask", "part"):
            a, b, c = getattr(full, name)[i], getattr(chunked, name)[i], getattr(single, name)[0]
            assert np.sum(a != b) <= 3 and np.sum(a != c) <= 3, (name, i)
        for name, tol in (("rgb", 1.5), ("uv", 1e-3), ("depth", 1e-4)):
            a, b, c = getattr(full, name)[i], getattr(chunked, name)[i], getattr(single, name)[0]
            a, b, c = (x.astype(np.float64) for x in (a, b, c))
            assert np.abs(a - b).max() < tol and np.abs(a - c).max() < tol, (name, i)
    assert not np.array_equal(full.mask[0], full.mask[1])


def test_principal_point_shifts_the_image(scene):
    _, verts, renderer, out = scene
    shifted = renderer.render(verts[None], FOCAL, np.array([W / 2 + 7, H / 2 - 5]))
    # integer shift: the same pixel centres see the same rays, 7 columns right, 5 rows up
    expect = np.zeros_like(out.mask[0])
    expect[:-5, 7:] = out.mask[0][5:, :-7]
    assert np.mean(shifted.mask[0] ^ expect) < 1e-3
    px = project(verts, principal=(W / 2 + 7, H / 2 - 5))
    assert np.mean(shifted.mask[0][np.floor(px[:, 1]).astype(int), np.floor(px[:, 0]).astype(int)]) > 0.9


def test_partly_outside_and_behind_the_camera(scene):
    _, verts, renderer, _ = scene
    behind = verts * [1, 1, -1]
    off = verts + [3.0, 0, 0]                    # far right of the image
    half = verts + [1.3, 0, 0]                   # the left side leaves the image
    out = renderer.render(np.stack([behind, off, half]), FOCAL)
    assert not out.mask[0].any() and not out.mask[1].any()
    assert out.mask[2].any() and out.mask[2][:, -1].any()
    assert np.all(out.depth[:2] == 0) and np.all(out.part[:2] == 0)


# --- shading and compositing ---------------------------------------------------------------
def test_colours_light_and_background(scene):
    body, verts, renderer, out = scene
    m = out.mask[0]
    red = renderer.render(verts[None], FOCAL, vertex_colors=np.array([1.0, 0.0, 0.0]))
    assert np.all(red.rgb[0][m][:, 1:] == 0) and red.rgb[0][m][:, 0].min() >= int(255 * R.AMBIENT) - 1
    per_vertex = np.zeros((1, body.num_vertices, 3))
    per_vertex[0, :, 2] = 1.0
    blue = renderer.render(verts[None], FOCAL, vertex_colors=per_vertex)
    assert np.all(blue.rgb[0][m][:, :2] == 0)
    front = renderer.render(verts[None], FOCAL, light_dir=np.array([0.0, 0.0, -1.0]))
    back = renderer.render(verts[None], FOCAL, light_dir=np.array([0.0, 0.0, 1.0]))
    assert front.rgb[0][m].mean() > back.rgb[0][m].mean() + 40
    # light from behind: only ambient on surfaces facing the camera
    assert np.median(back.rgb[0][m][:, 0]) == round(255 * R.DEFAULT_COLOR[0] * R.AMBIENT)
    bg = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    comp = renderer.render(verts[None], FOCAL, background=bg)
    assert np.array_equal(comp.rgb[0][~m], bg[~m]) and np.array_equal(comp.rgb[0][m], out.rgb[0][m])
    for name in ("mask", "part", "uv", "depth"):
        assert np.array_equal(getattr(comp, name), getattr(out, name))


def test_winding_does_not_change_the_image(scene):
    body, verts, _, out = scene
    with R.Renderer(W, H, body.faces[:, ::-1], body.vertex_parts, body.vertex_uv) as flipped:
        other = flipped.render(verts[None], FOCAL)
    assert np.array_equal(other.mask, out.mask)
    diff = np.abs(other.rgb[0][out.mask[0]].astype(int) - out.rgb[0][out.mask[0]])
    assert np.percentile(diff, 99) <= 2          # normals turned outwards either way


def test_cull_option_changes_at_most_a_few_pixels(scene):
    body, verts, _, out = scene
    with R.Renderer(W, H, body.faces, body.vertex_parts, body.vertex_uv, cull_back_faces=True) as culled:
        got = culled.render(verts[None], FOCAL)
    assert np.array_equal(got.mask, out.mask)
    assert np.sum(got.part != out.part) <= 5 and np.sum(np.abs(got.depth - out.depth) > 1e-3) <= 5


def test_face_part_rule_and_provoking_order():
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 4, 8]])
    parts = np.array([1, 1, 1, 2, 5, 5, 7, 8, 7], np.uint8)
    assert R.face_parts(faces, parts).tolist() == [1, 5, 7, 1]   # majority; all differ: first
    rot = R.provoking_order(faces, parts)
    assert np.all(parts[rot[:, 2]] == R.face_parts(faces, parts))
    for f, g in zip(faces, rot):                                  # a cyclic shift: same winding
        assert any(np.array_equal(np.roll(f, s), g) for s in range(3))


def test_overlay(scene):
    body, verts, renderer, out = scene
    image = np.full((H, W, 3), 200, np.uint8)
    over = renderer.render_overlay(image, verts, FOCAL, alpha=1.0)
    assert over.shape == (H, W, 3)
    assert np.array_equal(over[out.mask[0]], out.rgb[0][out.mask[0]])
    assert np.all(over[~out.mask[0]] == 200)
    half = R.render_overlay(image, verts, body.faces, FOCAL, alpha=0.5)
    expect = np.rint(0.5 * out.rgb[0].astype(float) + 0.5 * 200)
    assert np.abs(half[out.mask[0]].astype(float) - expect[out.mask[0]]).max() <= 1
    assert np.all(half[~out.mask[0]] == 200)


def test_bad_inputs(scene):
    body, verts, renderer, _ = scene
    with pytest.raises(ValueError):
        renderer.render(verts[None, :100], FOCAL)
    with pytest.raises(ValueError):
        renderer.render(verts[None], np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        R.Renderer(W, H, body.faces, body.vertex_parts[:10], body.vertex_uv)
    r = R.Renderer(32, 32, body.faces, body.vertex_parts, body.vertex_uv)
    r.close()
    r.close()
    with pytest.raises(RuntimeError):
        r.render(verts[None], FOCAL)


# --- processes and devices -----------------------------------------------------------------
def _child_calls_gl(queue):
    try:
        R.gl_context()
        queue.put("no error")
    except RuntimeError as err:
        queue.put(str(err))


def test_forked_child_raises_instead_of_hanging():
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method here")
    R.gl_context()                                   # this process has a context
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_calls_gl, args=(queue,))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        pytest.fail("forked child hung")
    assert "spawn" in queue.get(timeout=5)


_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import moderngl
    if sys.argv[1] == "list":
        names = []
        for i in range(8):
            try:
                ctx = moderngl.create_context(standalone=True, backend="egl", device_index=i)
            except Exception:
                break
            names.append(ctx.info["GL_RENDERER"])
            ctx.release()
        print(json.dumps(names))
    else:
        from engine.render.renderer import Renderer
        z = np.load(sys.argv[2])
        r = Renderer(int(z["w"]), int(z["h"]), z["faces"], z["parts"], z["uv"])
        out = r.render(z["verts"], float(z["focal"]))
        np.savez(sys.argv[3], **{k: getattr(out, k) for k in ("rgb", "mask", "part", "uv", "depth")})
""")


def _run_device_script(tmp_path, args, device=None):
    script = tmp_path / "device_script.py"
    script.write_text(_DEVICE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("PYMAF_GL_DEVICE", None)
    if device is not None:
        env["PYMAF_GL_DEVICE"] = str(device)
    res = subprocess.run([sys.executable, str(script), *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _render_on(tmp_path, scene, device):
    body, verts, _, _ = scene
    src = tmp_path / "scene.npz"
    np.savez(src, w=W, h=H, faces=body.faces, parts=body.vertex_parts, uv=body.vertex_uv,
             verts=verts[None], focal=FOCAL)
    dst = tmp_path / f"out{device}.npz"
    _run_device_script(tmp_path, ["render", str(src), str(dst)], device)
    with np.load(dst) as z:
        return {k: z[k] for k in z.files}


def test_device_selection_in_a_fresh_process(scene, tmp_path):
    names = json.loads(_run_device_script(tmp_path, ["list"]).strip().splitlines()[-1])
    assert names, "no EGL device listed"
    here = R.gl_context().info["GL_RENDERER"]
    if not names[0].startswith("llvmpipe") or not here.startswith("llvmpipe"):
        pytest.skip(f"device 0 is {names[0]!r}; this compares llvmpipe with itself")
    got = _render_on(tmp_path, scene, 0)                 # PYMAF_GL_DEVICE=0 in a new process
    for k, v in got.items():
        assert np.array_equal(v[0], getattr(scene[3], k)[0]), k


def test_gpu_matches_cpu(scene, tmp_path):
    if not (os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi")):
        pytest.skip("no NVIDIA GPU on this machine")
    names = json.loads(_run_device_script(tmp_path, ["list"]).strip().splitlines()[-1])
    gpu = [i for i, n in enumerate(names) if "llvmpipe" not in n.lower() and "softpipe" not in n.lower()]
    cpu = [i for i, n in enumerate(names) if "llvmpipe" in n.lower()]
    if not gpu or not cpu:
        pytest.skip(f"needs an NVIDIA EGL device and Mesa's llvmpipe; EGL devices: {names}")
    a, b = _render_on(tmp_path, scene, gpu[0]), _render_on(tmp_path, scene, cpu[0])
    ma, mb = a["mask"][0], b["mask"][0]
    assert np.sum(ma ^ mb) <= max(10, 0.002 * mb.sum())    # rasterisers differ only at exact edges
    both = ma & mb
    assert np.mean(a["part"][0][both] == b["part"][0][both]) > 0.995
    assert np.percentile(np.abs(a["depth"][0][both] - b["depth"][0][both]), 99) < 1e-3
    assert np.percentile(np.abs(a["uv"][0][both] - b["uv"][0][both]), 99) < 1e-2
    assert np.percentile(np.abs(a["rgb"][0][both].astype(int) - b["rgb"][0][both]), 99) <= 3
