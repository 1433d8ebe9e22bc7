"""Blender-side tests: run under real bpy (a bpy venv), never with torch.

``python3 build.py test`` runs this folder once per supported Blender (bpy 4.2 LTS, 5.0 and,
where Python 3.13 exists, 5.2), each in its own venv. The engine runs in its own venv too:
``PYMAF_ENGINE_PYTHON`` (set by build.py) is its interpreter, used through subprocesses only.
"""
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"

# Before bpy is imported: keep the user's Blender config and extensions out of the tests.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="pymaf-blender-user-"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bpy  # noqa: E402

assert "torch" not in sys.modules, "the Blender side must never import torch"


def engine_python() -> Path:
    """The engine venv's interpreter (the one build.py created)."""
    env = os.environ.get("PYMAF_ENGINE_PYTHON")
    py = Path(env) if env else REPO / ".venvs" / "engine" / "bin" / "python"
    if not py.exists():
        pytest.skip(f"engine environment missing ({py}); run 'python3 build.py setup'")
    return py


@contextlib.contextmanager
def no_chosen_engine():
    """An installed extension's preferences choose no engine Python (PYMAF_ENGINE_PYTHON then
    decides), restored afterwards."""
    saved = []
    for addon in bpy.context.preferences.addons:
        prefs = getattr(addon, "preferences", None)
        if prefs is not None and hasattr(prefs, "engine_python"):
            saved.append((prefs, prefs.engine_python))
            prefs.engine_python = ""
    try:
        yield
    finally:
        for prefs, value in saved:
            prefs.engine_python = value


@pytest.fixture
def empty_scene():
    """A fresh empty scene (keeps preferences and installed extensions, unlike factory settings)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene


@pytest.fixture(scope="session")
def results(tmp_path_factory):
    """Result files + reference arrays (tests/blender/make_results.py), written once per session
    by the ENGINE interpreter: the references come from the engine's own smplx model."""
    import subprocess

    out = tmp_path_factory.getbasetemp() / "pymaf-results"
    if not (out / "multi_ref.npz").exists():
        subprocess.run([str(engine_python()), str(REPO / "tests" / "blender" / "make_results.py"), str(out)],
                       check=True, cwd=REPO)
    return out


# bpy 4.2.x segfaults at interpreter exit after some operations (exit code 139 even when all
# tests passed; see ../shared/reference/blender-notes.md §9): leave with pytest's status at once.
_exit = {"code": 0}


def pytest_sessionfinish(session, exitstatus):
    _exit["code"] = int(exitstatus)


def pytest_unconfigure(config):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit["code"])


@pytest.fixture
def addon():
    """The add-on's operators and panels: the installed extension's when an earlier test
    installed it, else this checkout's, registered for the test."""
    if hasattr(bpy.types, "PYMAF_PT_main"):
        yield
        return
    import pymaf_blender

    pymaf_blender.register()
    try:
        yield
    finally:
        pymaf_blender.unregister()
