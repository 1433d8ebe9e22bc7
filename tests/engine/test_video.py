"""Tests for engine.video.decode, on tiny clips written here with cv2.VideoWriter."""
from __future__ import annotations

import gc
import os
import struct
import time
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.video import decode
from engine.video.decode import VideoError, iter_frames, probe, read_frame

W, H, FPS = 64, 48, 25.0
DANCER = Path(__file__).resolve().parents[3] / "shared" / "footage" / "dancer.mp4"


BLOCK = 16  # 4 x 3 grid of 16-px blocks (macroblock aligned): 12 bits of frame index


def _bgr(i: int) -> np.ndarray:
    """Frame i: blue background; block b has red = 255 when bit b of i is set."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 200  # blue
    for b in range((W // BLOCK) * (H // BLOCK)):
        if i >> b & 1:
            r, c = divmod(b, W // BLOCK)
            img[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK, 2] = 255
    return img


def _index_of(rgb: np.ndarray) -> int:
    """Read the index back from a decoded RGB frame (also checks the channel order)."""
    assert rgb[..., 2].mean() > 150 and rgb[..., 1].mean() < 60, "channels not RGB"
    i = 0
    for b in range((W // BLOCK) * (H // BLOCK)):
        r, c = divmod(b, W // BLOCK)
        if rgb[r * BLOCK:(r + 1) * BLOCK, c * BLOCK:(c + 1) * BLOCK, 0].mean() > 128:
            i |= 1 << b
    return i


def _write(path: Path, n: int, fourcc: str = "mp4v", fps: float = FPS, frame=_bgr) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert w.isOpened()
    for i in range(n):
        w.write(frame(i))
    w.release()
    return path


@pytest.fixture(scope="module", params=[("clip.mp4", "mp4v"), ("clip.avi", "MJPG")])
def clip(request, tmp_path_factory):
    name, cc = request.param
    return _write(tmp_path_factory.mktemp("v") / name, 30, cc)


def _code(fn, *args, **kw) -> str:
    with pytest.raises(VideoError) as ei:
        r = fn(*args, **kw)
        if not isinstance(r, decode.VideoInfo) and not isinstance(r, decode.Frame):
            list(r)
    assert ei.value.message and "Traceback" not in ei.value.message
    return ei.value.code


# ----------------------------------------------------------------------------- probe


def test_probe_counts_fps_size(clip):
    info = probe(clip)
    assert (info.width, info.height) == (W, H)
    assert info.fps == pytest.approx(FPS)
    assert info.frame_count == 30 and info.frame_count_source == "container"
    assert info.duration == pytest.approx(30 / FPS)
    assert info.rotation == 0
    assert info.codec in ("FMP4", "MJPG", "mp4v")
    counted = probe(clip, count="decode")
    assert counted.frame_count == 30 and counted.frame_count_source == "decoded"


def test_probe_counts_by_decoding_when_container_does_not_store_count(tmp_path):
    p = _write(tmp_path / "clip.mkv", 23, "MJPG")
    info = probe(p)
    assert info.frame_count_source == "decoded" and info.frame_count == 23


# ----------------------------------------------------------------------------- frames


def test_all_frames_in_order_with_content_and_timestamps(clip):
    frames = list(iter_frames(clip))
    assert [f.index for f in frames] == list(range(30))
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert _index_of(f.image) == f.index
        assert f.timestamp == pytest.approx(f.index / FPS, abs=1e-3)
    ts = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(ts, ts[1:]))


@pytest.mark.parametrize("start,stop,step", [(0, None, 1), (5, 17, 1), (3, None, 4), (0, 10, 3), (29, None, 1), (30, None, 1), (7, 7, 1)])
@pytest.mark.parametrize("seek", [False, True])
def test_start_stop_step(clip, monkeypatch, start, stop, step, seek):
    if seek:  # force the CAP_PROP_POS_FRAMES path instead of grab-skipping
        monkeypatch.setattr(decode, "GRAB_SKIP_LIMIT", 0)
    want = list(range(30))[start:stop:step]
    frames = list(iter_frames(clip, start=start, stop=stop, step=step))
    assert [f.index for f in frames] == want
    assert [_index_of(f.image) for f in frames] == want
    for f in frames:
        assert f.timestamp == pytest.approx(f.index / FPS, abs=1e-3)


def test_read_frame(clip):
    assert _index_of(read_frame(clip, 0).image) == 0
    f = read_frame(clip, 21)
    assert f.index == 21 and _index_of(f.image) == 21
    with pytest.raises(IndexError):
        read_frame(clip, 30)
    with pytest.raises(IndexError):
        read_frame(clip, -1)


def test_bad_arguments(clip):
    for kw in (dict(start=-1), dict(step=0), dict(stop=-2)):
        with pytest.raises(ValueError):
            list(iter_frames(clip, **kw))


def test_rotation_metadata_is_applied(tmp_path):
    """Patch the MP4 track matrix to a 90 degree display rotation (what phones write)."""
    def frame(i):
        img = np.zeros((H, W, 3), np.uint8)
        img[: H // 2, : W // 2] = 255  # white block top-left
        return img

    src = _write(tmp_path / "plain.mp4", 5, frame=frame)
    data = bytearray(src.read_bytes())
    k = data.find(b"tkhd")
    assert k > 0 and data[k + 4] == 0  # version 0 box
    off = k + 4 + 4 + 4 * 5 + 8 + 2 + 2 + 2 + 2
    data[off: off + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    rot = tmp_path / "rot90.mp4"
    rot.write_bytes(bytes(data))

    info = probe(rot)
    assert info.rotation == 90
    assert (info.width, info.height) == (H, W)  # displayed: portrait
    img = read_frame(rot, 0).image
    assert img.shape == (info.height, info.width, 3)
    white = img[..., 0] > 128
    rows, cols = np.nonzero(white)
    assert rows.mean() < W / 2 and cols.mean() > H / 2  # rotated clockwise: block top-right


def test_memory_flat_while_streaming(tmp_path):
    import tracemalloc

    p = _write(tmp_path / "long.mp4", 600)
    frame_bytes = H * W * 3

    # liveness: at any time at most the current frame (plus the one just dropped) is alive
    refs, max_alive = [], 0
    n = 0
    for f in iter_frames(p):
        refs.append(weakref.ref(f.image))
        n += 1
        del f
        gc.collect() if n % 100 == 0 else None
        max_alive = max(max_alive, sum(r() is not None for r in refs))
    assert n == 600 and max_alive <= 2

    # traced memory: streaming peak is far below the clip size; the control (keeping all
    # frames) proves tracemalloc sees the frame buffers, so this check can fail
    def peak(consume):
        gc.collect()
        tracemalloc.start()
        try:
            consume()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    stream_peak = peak(lambda: sum(1 for _ in iter_frames(p)))
    keep_peak = peak(lambda: [f for f in iter_frames(p)])
    assert keep_peak > 500 * frame_bytes
    assert stream_peak < 20 * frame_bytes


# ----------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    for fn in (probe, iter_frames, lambda p: read_frame(p, 0)):
        assert _code(fn, tmp_path / "nope.mp4") == "not_found"


def test_directory(tmp_path):
    assert _code(probe, tmp_path) == "unreadable"
    assert _code(iter_frames, tmp_path) == "unreadable"


def test_text_random_empty_image_files(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello world, this is not a video\n" * 50)  # FFmpeg would open it as ANSI art
    rnd = tmp_path / "noise.mp4"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    png = tmp_path / "still.png"
    cv2.imwrite(str(png), _bgr(1))
    for p in (txt, rnd, zero, png):
        assert _code(probe, p) == "not_video", p
        assert _code(iter_frames, p) == "not_video", p


def test_video_without_frames_is_empty(tmp_path):
    p = _write(tmp_path / "none.avi", 0, "MJPG")
    assert _code(probe, p) == "empty"
    assert _code(iter_frames, p) == "empty"


def _cut_in_half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_truncated_avi_yields_then_raises(tmp_path):
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, (H, W, 3), np.uint8) for _ in range(40)]
    full = _write(tmp_path / "full.avi", 40, "MJPG", frame=lambda i: noise[i])
    cut = _cut_in_half(full, tmp_path / "cut.avi")
    got = []
    with pytest.raises(VideoError) as ei:
        for f in iter_frames(cut):
            got.append(f.index)
    assert ei.value.code == "truncated"
    assert 5 < len(got) < 40 and got == list(range(len(got)))
    # a range that ends before the damage is fine; one that reaches into it is truncated
    assert len(list(iter_frames(cut, stop=len(got)))) == len(got)
    assert _code(iter_frames, cut, start=len(got) - 1, stop=40) == "truncated"
    assert _code(iter_frames, cut, start=39) == "truncated"
    assert probe(cut).frame_count == 40  # the container's claim; decoding is the judge


def test_truncated_mp4_without_index_is_not_video(tmp_path):
    """OpenCV writes the MP4 index (moov) at the end: half a file cannot be opened at all."""
    full = _write(tmp_path / "full.mp4", 40)
    cut = _cut_in_half(full, tmp_path / "cut.mp4")
    assert _code(probe, cut) == "not_video"


# ----------------------------------------------------------------------------- real footage


@pytest.mark.skipif(not DANCER.exists(), reason="shared/footage/dancer.mp4 not present")
def test_dancer_footage():
    info = probe(DANCER)
    assert info.frame_count == 89
    assert (info.width, info.height) == (1920, 1080)
    assert info.fps == pytest.approx(30000 / 1001, rel=1e-4)
    assert info.rotation == 0 and info.codec == "h264"
    t0 = time.perf_counter()
    n, last = 0, -1.0
    for f in iter_frames(DANCER):
        assert f.index == n and f.image.shape == (1080, 1920, 3)
        assert f.timestamp > last
        assert f.timestamp == pytest.approx(n / info.fps, abs=2e-3)
        last = f.timestamp
        n += 1
    dt = time.perf_counter() - t0
    assert n == 89
    print(f"\ndancer.mp4: {info}\ndecode {n} frames in {dt:.2f}s = {n / dt:.0f} frames/s")
