#!/usr/bin/env python3
"""Task runner for PyMAF for Blender. Standard library only; runs with any Python >= 3.9.

    python3 build.py demo        the main job on the bundled default (sets everything up)
    python3 build.py test        the test suite (creates or reuses the environments)
    python3 build.py bench       benchmarks (prints tables; see docs/benchmarks.md)
    python3 build.py setup       only create/update the engine environment
    python3 build.py mannequin   only (re)generate the project's body model asset

The engine runs in its own virtual environment (.venvs/engine), never in Blender's
Python. Environments are reused while their requirement files are unchanged.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
ENGINE_VENV = VENVS / "engine"
ENGINE_REQUIREMENTS = [ROOT / "requirements" / "engine.txt", ROOT / "requirements" / "dev.txt"]
ENGINE_PYTHON_VERSION = (3, 11)  # the local CPU torch 2.13.0 wheel is cp311
ASSETS = ROOT / "build" / "assets"
MANNEQUIN = ASSETS / "mannequin.npz"


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
def find_python(version: tuple) -> str:
    """An interpreter of the given major.minor: this one, pythonX.Y on PATH, or pyenv's."""
    if sys.version_info[:2] == version:
        return sys.executable
    name = f"python{version[0]}.{version[1]}"
    found = shutil.which(name)
    if found:
        return found
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for candidate in sorted(pyenv_root.glob(f"{version[0]}.{version[1]}.*"), reverse=True):
        exe = candidate / "bin" / "python3"
        if exe.exists():
            return str(exe)
    sys.exit(f"[build] Python {version[0]}.{version[1]} is needed for the engine environment; install it "
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
    if not py.exists():
        check([find_python(python_version), "-m", "venv", venv])
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


# --- commands ----------------------------------------------------------------------------
def cmd_setup(args) -> int:
    py = engine_python(args)
    say(f"engine environment ready: {py}")
    return 0


def cmd_mannequin(args) -> int:
    ensure_mannequin(engine_python(args), force=True)
    return 0


def cmd_test(args) -> int:
    py = engine_python(args)
    ensure_system_libraries()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    code = run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/engine", *args.extra],
               cwd=ROOT, env=env)
    if code == 5:  # pytest: no tests collected
        say("no tests were collected")
        return 1
    return code


def cmd_bench(args) -> int:
    py = engine_python(args)
    return run([py, "-m", "engine.bench", *args.extra], cwd=ROOT)


def cmd_demo(args) -> int:
    py = engine_python(args)
    mannequin = ensure_mannequin(py)
    return run([py, "-m", "engine.demo", "--body", mannequin, "--out", ROOT / "build" / "demo"], cwd=ROOT)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-index-url", default="",
                        help="package index for a CUDA build of the pinned torch (GPU users)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="create/update the engine environment").set_defaults(func=cmd_setup)
    sub.add_parser("mannequin", help="regenerate build/assets/mannequin.npz").set_defaults(func=cmd_mannequin)
    sub.add_parser("test", help="run the test suite (extra arguments go to pytest)").set_defaults(func=cmd_test)
    sub.add_parser("bench", help="run the benchmarks (extra arguments go to engine.bench)").set_defaults(func=cmd_bench)
    sub.add_parser("demo", help="run the main job on the bundled default").set_defaults(func=cmd_demo)
    args, extra = parser.parse_known_args(argv)
    if extra and args.func not in (cmd_test, cmd_bench):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
