#!/usr/bin/env python3
"""Task runner for PyMAF for Blender. Standard library only; runs with any Python >= 3.9.

    python3 build.py demo        the main job on the bundled default (sets everything up):
                                 video -> engine -> Blender scene -> .blend, .fbx, overlay preview
    python3 build.py test        the test suite: tests/engine in the engine environment, then
                                 tests/blender under each supported Blender (bpy 4.2, 5.0, 5.2)
    python3 build.py extension   the installable extension zip (dist/pymaf_blender-<version>.zip)
    python3 build.py bench       benchmarks: the network, then end to end (tables; docs/benchmarks.md)
    python3 build.py setup       only create/update the engine environment and the pose landmark
                                 models and the person detector (build/assets/*.pt; --blender: and those envs;
                                 --extras batch: and Ray, for python -m engine batch)
    python3 build.py mannequin   only (re)generate the project's body model asset
    python3 build.py train-default  train the PyMAF-on-BlazePose heads as shipped (2 CPU cores)

The engine runs in its own virtual environment (.venvs/engine), never in Blender's
Python. Blender's Python is the ``bpy`` module from PyPI, one venv per supported version
(.venvs/blender-4.2, -5.0, -5.2). Environments are reused while their requirement files
are unchanged.

    python3 build.py test --blender 5.0                 engine tests + Blender 5.0 only
    python3 build.py test --blender none -k check       engine tests only, pytest's -k
    python3 build.py test tests/blender/test_extension.py --blender 4.2,5.0
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
ENGINE_VENV = VENVS / "engine"
ENGINE_REQUIREMENTS = [ROOT / "requirements" / name for name in ("engine.txt", "train.txt", "dev.txt")]
# Optional parts of the engine environment: ``setup --extras batch``; the tests install them all.
ENGINE_EXTRAS = {"batch": ROOT / "requirements" / "batch.txt"}
ENGINE_PYTHON_VERSION = (3, 11)  # the local CPU torch 2.13.0 wheel is cp311
ASSETS = ROOT / "build" / "assets"
MANNEQUIN = ASSETS / "mannequin.npz"
# Supported Blender versions: the bpy module from PyPI, each in its own venv. bpy <= 5.0 is
# cp311 only, 5.1+ is cp313 only (../shared/reference/blender-notes.md section 1).
BLENDER_VERSIONS = {
    "4.2": (3, 11),   # LTS, the minimum the manifest allows
    "5.0": (3, 11),
    "5.2": (3, 13),   # LTS; skipped with a message where no Python 3.13 exists
}
DEFAULT_BLENDER = "5.0"  # builds the extension zip
DEMO_BLENDER = "4.2"     # the oldest supported Blender makes the demo scene: every supported Blender opens it
DIST = ROOT / "dist"
FOOTAGE = ROOT.parent / "shared" / "footage" / "dancer.mp4"


def say(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def run(cmd: list, **kwargs) -> int:
    """Run a command (no shell), streaming its output; returns its exit code."""
    say(" ".join(str(c) for c in cmd))
    return subprocess.call([str(c) for c in cmd], **kwargs)


def check(cmd: list, **kwargs) -> None:
    code = run(cmd, **kwargs)
    if code != 0:
        say(f"failed with exit code {code}")
        sys.exit(code)


# --- environments ----------------------------------------------------------------------
def find_python(version: tuple, purpose: str = "the engine environment", required: bool = True):
    """An interpreter of the given major.minor: this one, pythonX.Y on PATH, or pyenv's.

    Not found: exit with a message, or return None when ``required`` is False."""
    if sys.version_info[:2] == version:
        return sys.executable
    name = f"python{version[0]}.{version[1]}"
    found = shutil.which(name)
    # A pyenv shim is on PATH even where it cannot run that version: try it first.
    if found and subprocess.run([found, "-c", ""], capture_output=True).returncode == 0:
        return found
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(pyenv_root.glob(f"{version[0]}.{version[1]}.*"), reverse=True):
        exe = candidate / "bin" / "python3"
        if exe.exists():
            return str(exe)
    if not required:
        return None
    sys.exit(f"[build] Python {version[0]}.{version[1]} is needed for {purpose}; install it "
             f"(e.g. with pyenv) or put {name} on PATH.")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def requirements_stamp(files: list, extra: str = "") -> str:
    """Hash of the files' contents (and ``extra``): what an environment or asset was built from."""
    digest = hashlib.sha256(extra.encode())
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def ensure_venv(venv: Path, python_version: tuple, requirements: list, torch_index_url: str = "") -> Path:
    """Create the venv if needed and install requirements when they changed."""
    py = venv_python(venv)
    stamp_file = venv / ".requirements-stamp"
    stamp = requirements_stamp(requirements, torch_index_url)
    if py.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return py
    if py.exists() and not _venv_has_python(venv, python_version):
        say(f"{venv} was made with another Python; recreating it")
        shutil.rmtree(venv)
    if not py.exists():
        check([find_python(python_version, f"{venv.name}"), "-m", "venv", venv])
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if torch_index_url:
        # A GPU user's CUDA build of the pinned torch, installed before the rest.
        pin = next(l for l in (ROOT / "requirements" / "engine.txt").read_text().splitlines()
                   if l.startswith("torch=="))
        check(pip + ["--index-url", torch_index_url, pin])
    args = []
    for req in requirements:
        args += ["-r", req]
    check(pip + args)
    stamp_file.write_text(stamp)
    return py


def _venv_has_python(venv: Path, version: tuple) -> bool:
    cfg = venv / "pyvenv.cfg"
    if not cfg.exists():
        return False
    m = re.search(r"^version(?:_info)?\s*=\s*(\d+)\.(\d+)", cfg.read_text(), re.M)
    return m is None or (int(m.group(1)), int(m.group(2))) == tuple(version)


def blender_requirements(version: str) -> Path:
    return ROOT / "requirements" / f"blender-{version}.txt"


def blender_python(version: str):
    """The bpy venv for one Blender version (created or reused), or None with a message when
    the Python it needs is not on this machine (only 5.2: Python 3.13)."""
    pyver = BLENDER_VERSIONS[version]
    venv = VENVS / f"blender-{version}"
    if not venv_python(venv).exists() and find_python(pyver, required=False) is None:
        say(f"Blender {version}: skipped, it needs Python {pyver[0]}.{pyver[1]} (bpy {version} has no wheel "
            f"for other Pythons); install it (e.g. 'pyenv install {pyver[0]}.{pyver[1]}') to test it")
        return None
    return ensure_venv(venv, pyver, [blender_requirements(version)])


def parse_blender_versions(text: str) -> list:
    if text in ("", "all"):
        return list(BLENDER_VERSIONS)
    if text == "none":
        return []
    versions = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in versions if v not in BLENDER_VERSIONS]
    if unknown:
        sys.exit(f"[build] unknown Blender version(s) {', '.join(unknown)}; known: {', '.join(BLENDER_VERSIONS)}")
    return versions


# Offscreen OpenGL for the renderer (moderngl over EGL): Mesa's software EGL on a CPU
# machine, the NVIDIA driver's EGL on a GPU one.
SYSTEM_LIBRARIES = {"EGL": "libegl1", "GL": "libgl1"}


def ensure_system_libraries() -> None:
    """Install the Debian packages behind missing shared libraries (needs root and apt)."""
    import ctypes.util

    missing = [pkg for lib, pkg in SYSTEM_LIBRARIES.items() if ctypes.util.find_library(lib) is None]
    if not missing or sys.platform != "linux":
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        say(f"the renderer needs the system packages {' '.join(missing)}; install them "
            f"(e.g. 'sudo apt-get install {' '.join(missing)}'); rendering tests will be skipped")
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    check([apt, "-q", "update"], env=env)
    check([apt, "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def engine_python(args=None) -> Path:
    return ensure_venv(ENGINE_VENV, ENGINE_PYTHON_VERSION, ENGINE_REQUIREMENTS,
                       getattr(args, "torch_index_url", "") or "")


def ensure_extras(py: Path, names) -> None:
    """Install optional requirement files into the engine environment (once per content)."""
    for name in names:
        req = ENGINE_EXTRAS[name]
        stamp_file = ENGINE_VENV / f".extra-{name}-stamp"
        stamp = requirements_stamp([req])
        if stamp_file.exists() and stamp_file.read_text() == stamp:
            continue
        check([py, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", req])
        stamp_file.write_text(stamp)


def parse_extras(text: str) -> list:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINE_EXTRAS]
    if unknown:
        say(f"unknown extra(s) {', '.join(unknown)}; known: {', '.join(ENGINE_EXTRAS)}")
        sys.exit(2)
    return names


# The generated body model is rebuilt whenever the code that generates it changes.
MANNEQUIN_SOURCES = [ROOT / "engine" / "body" / "mannequin.py", ROOT / "engine" / "render" / "surface.py"]


def ensure_mannequin(py: Path, force: bool = False) -> Path:
    stamp_file = MANNEQUIN.with_suffix(".stamp")
    stamp = requirements_stamp(MANNEQUIN_SOURCES)
    fresh = MANNEQUIN.exists() and stamp_file.exists() and stamp_file.read_text() == stamp
    if force or not fresh:
        ASSETS.mkdir(parents=True, exist_ok=True)
        check([py, "-m", "engine.body.mannequin", MANNEQUIN], cwd=ROOT)
        stamp_file.write_text(stamp)
    return MANNEQUIN


# The pose landmark models (BlazePose GHUM 3D, Apache-2.0, from the npm package @mediapipe/pose;
# docs/third-party.md): downloaded, checked against the pins in engine/landmarks/assets.py and
# converted to build/assets/blazepose_<size>.pt on this machine. Never committed, never zipped.
# what set-up converts: the landmark models, the person detector (MoveNet) and BlazePose's own
# person detector (a measured candidate), by their converted file names
LANDMARK_SIZES = ("lite", "full", "heavy", "movenet", "detector")
CONVERTED_NAMES = {"movenet": "movenet_multipose", "detector": "blazepose_detector"}
LANDMARK_SOURCES = [ROOT / "engine" / "landmarks" / n for n in ("assets.py", "setup.py", "convert.py", "network.py")]
DOWNLOAD_CACHE = ROOT / "build" / "cache"  # the npm tarballs and the mediapipe wheel, kept for re-conversions


def landmark_dir() -> Path:
    """Where the engine looks for the converted weights (engine/landmarks/assets.py assets_dir)."""
    env = os.environ.get("PYMAF_ASSETS_DIR", "").strip()
    return Path(env).expanduser() if env else ASSETS


def ensure_landmark_models(py: Path, force: bool = False, required: bool = True) -> bool:
    """Converted landmark models for every size; redone when the converter's code changes
    (``engine.landmarks.setup`` itself skips sizes that are present and match the pins).
    -> True when ready; on failure exit (``required``) or warn and return False."""
    folder = landmark_dir()
    stamp_file = folder / "blazepose.stamp"
    stamp = requirements_stamp([f for f in LANDMARK_SOURCES if f.exists()], ",".join(LANDMARK_SIZES))
    fresh = stamp_file.exists() and stamp_file.read_text() == stamp and all(
        (folder / f"{n}.pt").exists() and (folder / f"{n}.source.json").exists()
        for n in (CONVERTED_NAMES.get(s, f"blazepose_{s}") for s in LANDMARK_SIZES))
    if fresh and not force:
        return True
    cmd = [py, "-m", "engine.landmarks.setup", "--sizes", ",".join(LANDMARK_SIZES), "--cache", DOWNLOAD_CACHE]
    code = run(cmd + (["--force"] if force else []), cwd=ROOT)
    if code != 0:
        if required:
            say(f"the pose landmark models could not be set up (exit code {code}); see the error above")
            sys.exit(code)
        say(f"WARNING: the pose landmark models could not be set up (exit code {code}); tests that "
            f"need them will fail")
        return False
    folder.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)
    return True


TF_REFERENCE_VENV = VENVS / "tf-reference"
TF_REFERENCE_REQUIREMENTS = [ROOT / "requirements" / "tf-reference.txt"]


def tf_reference_python() -> Path:
    """TensorFlow in its own environment: the reference the MoveNet tests compare our torch
    port with (tests/engine/reference/movenet_tf.py); never part of the engine."""
    return ensure_venv(TF_REFERENCE_VENV, ENGINE_PYTHON_VERSION, TF_REFERENCE_REQUIREMENTS)


def engine_ready(args=None, required: bool = True) -> Path:
    """The engine environment plus the converted landmark models (the default estimator's)."""
    py = engine_python(args)
    ensure_landmark_models(py, required=required)
    return py


# --- commands ----------------------------------------------------------------------------
def cmd_mannequin(args) -> int:
    ensure_mannequin(engine_python(args), force=True)
    return 0


def run_pytest(label: str, py: Path, folder: str, extra: list, env: dict) -> dict:
    """One pytest run, streamed; -> {label, code, summary, seconds}."""
    t0 = time.monotonic()
    paths = [] if any(a.startswith(folder) for a in extra) else [folder]
    cmd = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths, *extra]
    say(f"--- {label}: " + " ".join(str(c) for c in cmd))
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
    summary = ""
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if re.search(r"\b(passed|failed|error|errors|skipped|deselected|no tests ran)\b.* in [\d.]+s", line):
            summary = line.strip().strip("=").strip()
    code = proc.wait()
    return {"label": label, "code": code, "summary": summary or f"exit code {code}",
            "seconds": time.monotonic() - t0}


def _suites_asked(extra: list) -> set:
    """Which test folders explicit paths in the pytest arguments point at (empty: no paths)."""
    asked = set()
    for a in extra:
        if a.startswith("-") or not a.startswith("tests"):
            continue
        for folder in ("tests/engine", "tests/blender"):
            if a.split("::")[0].rstrip("/").startswith(folder) or folder.startswith(a.rstrip("/")):
                asked.add(folder)
    return asked


def cmd_test(args) -> int:
    asked = _suites_asked(args.extra)
    versions = parse_blender_versions(args.blender)
    py = engine_ready(args, required=False)
    ensure_extras(py, ENGINE_EXTRAS)   # the batch tests run Ray
    ensure_system_libraries()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYMAF_ENGINE_PYTHON=str(py))
    results = []
    if not asked or "tests/engine" in asked:
        env["PYMAF_TF_REFERENCE_PYTHON"] = str(tf_reference_python())
        results.append(run_pytest("engine", py, "tests/engine",
                                  [a for a in args.extra if not a.startswith("tests/blender")
                                   and a.rstrip("/") != "tests"], env))
    if versions and (not asked or "tests/blender" in asked):
        ensure_mannequin(py)
        blender_extra = [a for a in args.extra if not a.startswith("tests/engine") and a.rstrip("/") != "tests"]
        zip_path = None
        for version in versions:
            bpy_py = blender_python(version)
            if bpy_py is None:
                results.append({"label": f"blender {version}", "code": None, "seconds": 0.0,
                                "summary": f"skipped: no Python {'.'.join(map(str, BLENDER_VERSIONS[version]))}"})
                continue
            if zip_path is None:  # one zip for every version (the tests install it)
                zip_path = build_extension(bpy_py, ROOT / "build" / "extension-test")
            benv = dict(env, PYMAF_EXTENSION_ZIP=str(zip_path))
            results.append(run_pytest(f"blender {version}", bpy_py, "tests/blender", blender_extra, benv))
    say("summary:")
    failed = False
    for r in results:
        code = r["code"]
        if code is None:
            state = "SKIPPED"
        elif code == 0:
            state = "ok"
        elif code == 5:  # pytest: nothing collected (e.g. -k matched nothing in this suite)
            state = "no tests selected"
        else:
            state, failed = "FAILED", True
        say(f"  {r['label']:<12} {state:<18} {r['summary']}  [{r['seconds']:.0f} s]")
    if results and all(r["code"] in (5, None) for r in results):
        say("no tests were collected")
        return 1
    return 1 if failed else 0


def cmd_bench(args) -> int:
    """No arguments: the network benchmark, then the end-to-end one. ``--e2e ARGS``: only the
    end-to-end one (engine.bench_e2e); other ARGS: only the network one (engine.bench)."""
    py = engine_ready(args)
    extra = list(args.extra)
    if "--e2e" in extra:
        extra.remove("--e2e")
        return run([py, "-m", "engine.bench_e2e", *extra], cwd=ROOT)
    if extra:
        return run([py, "-m", "engine.bench", *extra], cwd=ROOT)
    code = run([py, "-m", "engine.bench"], cwd=ROOT)
    return code if code else run([py, "-m", "engine.bench_e2e"], cwd=ROOT)


def cmd_setup(args) -> int:
    extras = parse_extras(args.extras)
    py = engine_python(args)
    ensure_extras(py, extras)
    say(f"engine environment ready: {py}" + (f" (with {', '.join(extras)})" if extras else ""))
    ensure_landmark_models(py, force=args.force_landmarks)
    say(f"pose landmark models ready: {landmark_dir()} (BlazePose GHUM 3D by Google, Apache-2.0, "
        f"npm @mediapipe/pose 0.5.1675469404)")
    for version in parse_blender_versions(args.blender):
        bpy_py = blender_python(version)
        if bpy_py:
            say(f"Blender {version} environment ready: {bpy_py}")
    return 0


# --- the extension zip ----------------------------------------------------------------------
ADDON = ROOT / "pymaf_blender"
# Third-party model files that must not be shipped: converted landmark weights, the npm package.
NOT_BUNDLED = ("blazepose_*", "movenet_*", "movenet-*", "*.bin", "*.tflite", "*.tgz", "*.whl", "package.json", "pose_*.data", "pose_*.wasm", "pose_*.binarypb")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "*.tmp", *NOT_BUNDLED)


def blender_ext_script(bpy_py: Path) -> Path:
    """Blender's own extension build/validate CLI, inside the bpy wheel (stdlib-only script)."""
    code = ("import os, bpy; print(os.path.join(bpy.utils.system_resource('SCRIPTS'), "
            "'addons_core/bl_pkg/cli/blender_ext.py'))")
    out = subprocess.run([str(bpy_py), "-c", code], capture_output=True, text=True, check=True)
    path = Path(out.stdout.strip().splitlines()[-1])
    if not path.is_file():
        sys.exit(f"[build] blender_ext.py not found in the bpy module ({path})")
    return path


def stage_extension(stage: Path) -> Path:
    """The add-on folder as it is zipped: manifest + pymaf_blender/* at the root, the engine
    package inside it (no tests, no caches), its requirements, the default body model."""
    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(ADDON, stage, ignore=_SKIP)
    shutil.copy2(ROOT / "blender_manifest.toml", stage / "blender_manifest.toml")
    shutil.copytree(ROOT / "engine", stage / "engine",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "*.tmp", "tests",
                                                  *NOT_BUNDLED))
    shutil.copy2(ROOT / "requirements" / "engine.txt", stage / "engine" / "requirements.txt")
    shutil.copy2(ENGINE_EXTRAS["batch"], stage / "engine" / "requirements-batch.txt")
    if not MANNEQUIN.exists():
        sys.exit(f"[build] {MANNEQUIN} is missing; run 'python3 build.py mannequin'")
    (stage / "engine" / "assets").mkdir(exist_ok=True)
    shutil.copy2(MANNEQUIN, stage / "engine" / "assets" / "mannequin.npz")
    # The landmark models (and anything of the npm package) are made on the user's machine by
    # the extension's Set up Engine; they are never shipped in the zip.
    stray = [p for pat in NOT_BUNDLED for p in stage.rglob(pat)]
    if stray:
        sys.exit(f"[build] refusing to bundle {', '.join(str(p.relative_to(stage)) for p in stray)}")
    return stage


def build_extension(bpy_py: Path, out_dir: Path = DIST) -> Path:
    """Stage, validate and build the zip with Blender's blender_ext.py; -> the zip."""
    script = blender_ext_script(bpy_py)
    stage = stage_extension(ROOT / "build" / "extension" / "pymaf_blender")
    check([bpy_py, script, "validate", stage])
    out_dir.mkdir(parents=True, exist_ok=True)
    version = re.search(r'^version\s*=\s*"([^"]+)"', (stage / "blender_manifest.toml").read_text(), re.M).group(1)
    zip_path = out_dir / f"pymaf_blender-{version}.zip"
    if zip_path.exists():
        zip_path.unlink()
    check([bpy_py, script, "build", "--source-dir", stage, "--output-filepath", zip_path])
    check([bpy_py, script, "validate", zip_path])
    say(f"extension: {zip_path} ({zip_path.stat().st_size / 1e6:.1f} MB)")
    return zip_path


def cmd_extension(args) -> int:
    ensure_mannequin(engine_python(args))
    versions = parse_blender_versions(args.blender)
    for version in [DEFAULT_BLENDER] + [v for v in versions if v != DEFAULT_BLENDER]:
        bpy_py = blender_python(version)
        if bpy_py:
            zip_path = build_extension(bpy_py)
            say(f"install it in Blender: Edit > Preferences > Get Extensions > (menu) Install from Disk > {zip_path}")
            return 0
    sys.exit("[build] no Blender (bpy) environment available to build the extension")


def cmd_demo(args) -> int:
    """The main job, headless, through the extension's own code path (pymaf_blender.cli)."""
    py = engine_ready(args)
    ensure_mannequin(py)  # the bundled default body (found by the add-on in build/assets)
    bpy_py = blender_python(DEMO_BLENDER)
    out = ROOT / "build" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    video, extra = FOOTAGE, []
    if not video.is_file():  # a generated clip with its person box (no detector needed)
        say(f"{FOOTAGE} not found: using a generated clip")
        code = ("import sys, pathlib; from engine.demo import write_test_clip; "
                "v, b = write_test_clip(pathlib.Path(sys.argv[1]), frames=24); print(v); print(b)")
        res = subprocess.run([str(py), "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True, check=True)
        video_s, boxes = res.stdout.strip().splitlines()[-2:]
        video, extra = Path(video_s), ["--boxes", boxes]
    env = dict(os.environ, PYMAF_ENGINE_PYTHON=str(py),
               BLENDER_USER_RESOURCES=str(ROOT / "build" / "blender-user"))
    return run([bpy_py, "-m", "pymaf_blender.cli", video, "--out", out, "--frames", str(args.frames),
                *extra, *args.extra], cwd=ROOT, env=env)


def cmd_train_default(args) -> int:
    """The shipped PyMAF-on-BlazePose heads from scratch (engine/train/default_recipe.py):
    about 80 minutes on 2 CPU cores; rerun to continue after a stop."""
    py = engine_ready(args)
    ensure_mannequin(py)
    return run([py, "-m", "engine.train.default_recipe", *args.extra], cwd=ROOT)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-index-url", default="",
                        help="package index for a CUDA build of the pinned torch (GPU users)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="create/update the engine environment, the pose landmark models "
                                     "(and --blender environments)")
    p.add_argument("--blender", default="none", help="also these Blender versions: all, none or e.g. 4.2,5.0")
    p.add_argument("--force-landmarks", action="store_true",
                   help="convert the pose landmark models again even when they are up to date")
    p.add_argument("--extras", default="", help=f"optional parts too, e.g. batch (Ray, for python -m engine batch); "
                                               f"known: {', '.join(ENGINE_EXTRAS)}")
    p.set_defaults(func=cmd_setup)
    sub.add_parser("mannequin", help="regenerate build/assets/mannequin.npz").set_defaults(func=cmd_mannequin)
    p = sub.add_parser("test", help="run the test suite (extra arguments go to pytest)")
    p.add_argument("--blender", default="all",
                   help=f"Blender versions to test: all (default), none, or a list like 4.2,5.0 "
                        f"(known: {', '.join(BLENDER_VERSIONS)})")
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("extension", help="build the installable extension zip into dist/")
    p.add_argument("--blender", default=DEFAULT_BLENDER, help="the bpy environment whose blender_ext.py builds it")
    p.set_defaults(func=cmd_extension)
    sub.add_parser("bench", help="run the benchmarks: network, then end to end (--e2e ARGS: only end to end, "
                                 "engine.bench_e2e; other ARGS go to engine.bench)").set_defaults(func=cmd_bench)
    p = sub.add_parser("demo", help="run the main job on the bundled default (extra arguments go to "
                                    "pymaf_blender.cli)")
    p.add_argument("--frames", type=int, default=24, help="frames of the video to process (default 24)")
    p.set_defaults(func=cmd_demo)
    sub.add_parser("train-default", help="train the PyMAF-on-BlazePose heads as shipped (about 80 min on 2 "
                                         "cores; extra arguments go to engine.train.default_recipe)"
                   ).set_defaults(func=cmd_train_default)
    args, extra = parser.parse_known_args(argv)
    if extra and args.func not in (cmd_test, cmd_bench, cmd_demo, cmd_train_default):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
