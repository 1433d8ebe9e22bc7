"""The engine's torch-free shared code (``engine/common``), imported as ``pymaf_blender.common``.

There is one copy of that code: ``engine/common``. In the installed extension the engine is
bundled inside the add-on folder (``<add-on>/engine/common``); in a source checkout it sits
next to this package (``<repo>/engine/common``). Its modules use relative imports only, so
they load under this package's name without putting ``engine`` on Blender's ``sys.path``.
"""
from pathlib import Path

_ADDON = Path(__file__).resolve().parent.parent
for _candidate in (_ADDON / "engine" / "common", _ADDON.parent / "engine" / "common"):
    if (_candidate / "rotations.py").is_file():
        __path__.append(str(_candidate))  # noqa: F821 - a package's __path__
        ENGINE_ROOT = _candidate.parent
        break
else:
    raise ImportError(f"PyMAF for Blender: the bundled engine is missing (looked in {_ADDON / 'engine'} "
                      f"and {_ADDON.parent / 'engine'}); reinstall the extension")
