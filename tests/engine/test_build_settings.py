"""build.py's settings that users meet: the demo's scene opens in every supported Blender, and
the user's engine environment gets only what running the engine needs."""
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import build  # noqa: E402


def test_demo_scene_is_made_with_the_oldest_supported_blender():
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    oldest = min(build.BLENDER_VERSIONS, key=lambda v: tuple(map(int, v.split("."))))
    assert build.DEMO_BLENDER == oldest
    assert manifest["blender_version_min"].startswith(oldest + ".")


def _names(path):
    return {line.split("#")[0].split("=")[0].split(">")[0].strip().lower()
            for line in path.read_text().splitlines() if line.split("#")[0].strip()}


def test_user_environment_gets_no_training_or_test_packages():
    """requirements/engine.txt is what the extension's Set up Engine installs."""
    runtime = _names(REPO / "requirements" / "engine.txt")
    for extra in ("train.txt", "dev.txt"):
        assert not runtime & _names(REPO / "requirements" / extra), extra
    assert {"pytest", "scikit-image", "matplotlib"}.isdisjoint(runtime)
    assert {"moderngl", "glcontext"} <= runtime     # the mattes rasterise with the renderer
    assert [p.name for p in build.ENGINE_REQUIREMENTS] == ["engine.txt", "train.txt", "dev.txt"]
