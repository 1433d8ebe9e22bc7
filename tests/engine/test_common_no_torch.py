"""engine and engine.common must import without torch: the Blender extension ships them."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _torch_free(code):
    """Run ``code`` in a fresh interpreter, then report whether torch got imported."""
    script = code + "\nimport sys\nprint('TORCH' if 'torch' in sys.modules else 'CLEAN')\n"
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()


def test_engine_package_is_torch_free():
    assert _torch_free("import engine")[-1] == "CLEAN"


def test_every_common_module_is_torch_free():
    out = _torch_free(
        "import importlib, pkgutil, engine.common as pkg\n"
        "names = [m.name for m in pkgutil.walk_packages(pkg.__path__, 'engine.common.')]\n"
        "for n in names:\n"
        "    importlib.import_module(n)\n"
        "print(' '.join(names))\n"
    )
    modules = out[0].split()
    assert "engine.common.rotations" in modules and "engine.common.camera" in modules
    assert out[-1] == "CLEAN"


@pytest.mark.parametrize("module", ["engine.common.rotations", "engine.common.camera"])
def test_self_check_detects_torch(module):
    # Guard against a vacuous test: the same probe must notice torch when it is imported.
    assert _torch_free(f"import {module}, torch")[-1] == "TORCH"
