"""Where things are: the bundled engine, the engine's Python, the user directory, result files.

Nothing here starts a process that lasts; version probes of candidate interpreters are short
``subprocess.run`` calls with a timeout.
"""
from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import bpy

from . import common
from .common import jobs

ADDON_DIR = Path(__file__).resolve().parent
ENGINE_ROOT = Path(common.ENGINE_ROOT)        # the ``engine`` package (bundled or the checkout's)
ENGINE_PARENT = ENGINE_ROOT.parent            # what goes on the engine's PYTHONPATH
IN_CHECKOUT = ENGINE_PARENT != ADDON_DIR      # running from a source checkout, not an install
ENGINE_VENV_NAME = "engine-venv"
READY_MARKER = ".pymaf-engine-ready"          # written in the venv when set-up finished and its check passed
# Pythons the engine environment may be made with, preferred first: the project tests on 3.11;
# 3.12 and 3.13 run the engine's tests and give identical results (docs/extension.md).
SETUP_PYTHON_VERSIONS = ((3, 11), (3, 12), (3, 13))
RESULTS_FOLDER_NAME = "pymaf"                 # next to the saved .blend: //pymaf/
_WINDOWS = os.name == "nt"


def package() -> str:
    """The add-on's module name: ``bl_ext.<repo>.pymaf_blender`` when installed as an extension,
    ``pymaf_blender`` when enabled from a checkout."""
    return __package__


def preferences(context=None):
    """The AddonPreferences, or None when the add-on is registered without a preferences entry."""
    context = context or bpy.context
    addon = context.preferences.addons.get(package())
    return addon.preferences if addon else None


def user_dir(create: bool = True) -> Path:
    """The extension's own writable folder (engine venv, setup log, results of unsaved files)."""
    try:
        path = Path(bpy.utils.extension_path_user(package(), create=create))
    except ValueError:  # enabled as a plain add-on (a checkout): not an extension
        path = Path(bpy.utils.user_resource("DATAFILES", path="pymaf_blender", create=create))
    return path


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if _WINDOWS else "bin/python")


def own_engine_venv() -> Path:
    return user_dir(create=False) / ENGINE_VENV_NAME


def ready_marker(venv: Path) -> Path:
    """The file set-up writes into ``venv`` once every step and the final check passed: an
    environment without it (set-up failed, was cancelled or is running) is not used."""
    return venv / READY_MARKER


def online_access() -> bool:
    """Blender's "Allow Online Access" (Preferences > System > Network); extensions must not
    download anything without it."""
    return bool(getattr(bpy.app, "online_access", True))


def engine_requirements() -> Path:
    """The requirements the setup button installs: bundled in the extension as
    ``engine/requirements.txt``, in a checkout ``requirements/engine.txt``."""
    bundled = ENGINE_ROOT / "requirements.txt"
    return bundled if bundled.is_file() else ENGINE_PARENT / "requirements" / "engine.txt"


def batch_requirements() -> Path:
    """Ray, for Batch (optional): ``engine/requirements-batch.txt`` in the extension, in a
    checkout ``requirements/batch.txt``."""
    bundled = ENGINE_ROOT / "requirements-batch.txt"
    return bundled if bundled.is_file() else ENGINE_PARENT / "requirements" / "batch.txt"


def bundled_body() -> Optional[Path]:
    """The default body model (the project's mannequin): bundled as ``engine/assets/mannequin.npz``,
    in a checkout ``build/assets/mannequin.npz`` (``python3 build.py mannequin``)."""
    for p in (ENGINE_ROOT / "assets" / "mannequin.npz", ENGINE_PARENT / "build" / "assets" / "mannequin.npz"):
        if p.is_file():
            return p
    return None


_LANDMARK_ASSETS = {}


def landmark_assets():
    """The engine's ``engine/landmarks/assets.py`` (standard library only: pins, attribution,
    where the converted models live), loaded by path from the engine this add-on runs; None
    when that engine has no landmark support."""
    src = ENGINE_ROOT / "landmarks" / "assets.py"
    if not src.is_file():
        return None
    key = (str(src), src.stat().st_mtime)
    mod = _LANDMARK_ASSETS.get(key)
    if mod is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"{package()}._landmark_assets", src)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _LANDMARK_ASSETS.clear()
        _LANDMARK_ASSETS[key] = mod
    return mod


ASSETS_ENV = "PYMAF_ASSETS_DIR"   # the engine's variable for where converted models are


def models_folder() -> Optional[Path]:
    """Where the converted models (landmark models, person detector) are kept: an installed
    extension keeps them in its user folder, which survives updates of the extension (its own
    folder is replaced by each update); a checkout uses the engine's default (build/assets).
    ``PYMAF_ASSETS_DIR`` set in Blender's environment wins."""
    if os.environ.get(ASSETS_ENV, "").strip():
        return Path(os.environ[ASSETS_ENV].strip()).expanduser()
    if IN_CHECKOUT:
        return None
    return user_dir(create=False) / "models"


def engine_env() -> dict:
    """The environment of every engine child: the bundled engine on PYTHONPATH, and where the
    converted models are."""
    folder = models_folder()
    return jobs.engine_env(ENGINE_PARENT, extra={ASSETS_ENV: str(folder)} if folder else None)


def landmark_status() -> tuple:
    """-> ({size: installed?}, folder) for the pose landmark models (no hashing: cheap enough to
    call while drawing); ({}, None) when the engine has no landmark support."""
    mod = landmark_assets()
    if mod is None:
        return {}, None
    folder = models_folder()
    return {s: mod.installed(s, folder) for s in mod.MODEL_SIZES}, folder or mod.assets_dir()


def detector_installed():
    """True / False: the default person detector (MoveNet) is converted; None when this engine
    has no such detector (no hashing: cheap enough to call while drawing)."""
    mod = landmark_assets()
    if mod is None or not hasattr(mod, "movenet_installed"):
        return None
    return bool(mod.movenet_installed(models_folder()))


def abspath(path: str) -> str:
    """A Blender path (``//`` relative to the .blend) as an absolute, normalised file path."""
    return os.path.normpath(bpy.path.abspath(path)) if path else ""


def find_engine_python(prefs=None) -> tuple:
    """-> (path or None, where it came from). The order: the Python chosen in the preferences,
    the extension's own engine environment, ``PYMAF_ENGINE_PYTHON``, a checkout's
    ``.venvs/engine``."""
    chosen = abspath(getattr(prefs, "engine_python", "") or "")
    if chosen:
        return (Path(chosen) if os.path.isfile(chosen) else None), f"chosen in the preferences ({chosen})"
    own = own_engine_venv()
    half_made = venv_python(own).is_file() and not ready_marker(own).is_file()
    candidates = [] if half_made else [(venv_python(own), "the extension's engine environment")]
    env = os.environ.get("PYMAF_ENGINE_PYTHON")
    if env:
        candidates.append((Path(env), "PYMAF_ENGINE_PYTHON"))
    if IN_CHECKOUT:
        candidates.append((venv_python(ENGINE_PARENT / ".venvs" / "engine"), "the checkout's .venvs/engine"))
    for path, source in candidates:
        if path.is_file():
            return path, source
    if half_made:
        return None, "incomplete: set-up did not finish"
    return None, "not found"


def python_version(argv: list, timeout: float = 10.0) -> Optional[tuple]:
    """(major, minor) of an interpreter given as an argument list (e.g. ``["py", "-3.11"]``)."""
    try:
        out = subprocess.run([*argv, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)\.(\d+)", out.stdout or "")
    return (int(m.group(1)), int(m.group(2))) if out.returncode == 0 and m else None


def find_setup_python(prefs=None) -> tuple:
    """A system Python (``SETUP_PYTHON_VERSIONS``, 3.11 preferred) to create the engine
    environment with -> (argv prefix or None, description). The preferences' choice wins; then
    the usual places per platform; then Blender's own interpreter when it is one of them (the
    venv is separate either way: nothing is installed into Blender's Python)."""
    chosen = abspath(getattr(prefs, "setup_python", "") or "")
    if chosen:
        if not os.path.isfile(chosen):
            return None, f"the Python chosen for setup does not exist: {chosen}"
        return [chosen], f"chosen in the preferences ({chosen})"
    seen = set()
    for want in SETUP_PYTHON_VERSIONS:
        for argv in _setup_python_candidates(want):
            key = tuple(argv)
            if key in seen or (len(argv) == 1 and not os.path.isfile(argv[0])):
                continue
            seen.add(key)
            if python_version(argv) == want:
                return argv, " ".join(argv)
    return None, f"no Python 3.11 (or 3.12, 3.13) found: {install_python_hint()}"


def _setup_python_candidates(want: tuple) -> list:
    """Where a Python ``want`` (major, minor) usually is, as argument lists, most specific first."""
    v = f"{want[0]}.{want[1]}"
    name = f"python{v}"
    candidates = []
    if _WINDOWS:
        if shutil.which("py"):
            candidates.append(["py", f"-{v}"])
        local = Path(os.environ.get("LOCALAPPDATA", "")) / "Programs" / "Python" / f"Python{want[0]}{want[1]}" / "python.exe"
        candidates.append([str(local)])
    found = shutil.which(name)
    if found:
        candidates.append([found])
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += [[str(p / "bin" / "python3")] for p in sorted(pyenv.glob(f"{v}.*"), reverse=True)]
    for base in ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", f"/Library/Frameworks/Python.framework/Versions/{v}/bin"):
        candidates.append([f"{base}/{name}"])
    for generic in ("python3", "python"):
        found = shutil.which(generic)
        if found:
            candidates.append([found])
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python") and sys.version_info[:2] == want:
        candidates.append([str(exe)])  # Blender's own interpreter (or a bpy venv's)
    return candidates


def install_python_hint(want=SETUP_PYTHON_VERSIONS[0], platform: str = sys.platform) -> str:
    """What to install for the engine's Python on this platform, in one sentence."""
    v = f"{want[0]}.{want[1]}"
    if platform.startswith("win"):
        how = (f"run 'winget install Python.Python.{v}' in a terminal, or install Python {v} from "
               f"python.org/downloads/windows")
    elif platform == "darwin":
        how = f"run 'brew install python@{v}', or install Python {v} from python.org/downloads/macos"
    else:
        how = (f"install it with your package manager (Debian/Ubuntu: 'sudo apt install python{v} "
               f"python{v}-venv'; Fedora: 'sudo dnf install python{v}'), or with pyenv ('pyenv install {v}')")
    return how + "; then press 'Set up Engine' again, or choose that Python in 'Python for setup'"


def result_folder(create: bool = True) -> Path:
    """Where result files, tracks and logs go: the folder chosen in the preferences; else
    ``<blend folder>/pymaf/`` for a saved file; else ``unsaved_results_folder()``. Never the
    extension's own folder (uninstalling removes that)."""
    chosen = abspath(getattr(preferences(), "results_folder", "") or "")
    if chosen:
        folder = Path(chosen)
    elif bpy.data.filepath:
        folder = Path(bpy.path.abspath("//")) / RESULTS_FOLDER_NAME
    else:
        folder = unsaved_results_folder()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def unsaved_results_folder() -> Path:
    """Results of files not saved yet: Blender's user data folder (``.../datafiles/pymaf_results``),
    which survives uninstalling or updating the extension."""
    return Path(bpy.utils.user_resource("DATAFILES", path="pymaf_results", create=False))


def safe_stem(path: str) -> str:
    return safe_name(Path(path).stem)


def safe_name(text: str) -> str:
    """A file stem from any name: letters, digits, ``_.-``; at most 60 characters."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "video"
    return stem[:60]


def new_result_path(video: str, suffix: str = ".npz", folder: Optional[Path] = None) -> Path:
    """A fresh file name for one run on ``video``: ``<folder>/<stem>_<YYYYmmdd-HHMMSS>[-n]<suffix>``."""
    folder = folder or result_folder()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{safe_stem(video)}_{stamp}"
    path = folder / f"{base}{suffix}"
    n = 1
    while path.exists() or path.with_suffix(".log").exists():
        n += 1
        path = folder / f"{base}-{n}{suffix}"
    return path
