"""PyMAF for Blender: the Blender side (bpy only; never imports torch).

The engine (PyTorch) runs as a separate process in its own Python environment; this add-on
starts it, shows its progress, and builds animated rigs from its result file. The shared numpy
pieces are the engine's own ``engine/common``, imported as ``pymaf_blender.common``.

Modules: ``properties`` (scene settings), ``preferences``, ``tasks`` (what the buttons run,
synchronous or driven by a modal timer), ``operators``, ``ui`` (the sidebar panel),
``overlay`` (the preview's projection), ``cli`` (the headless main job), ``retarget_ops``
(retargeting onto other rigs), ``roto_ops`` (mattes, masks, tracks), ``batch_ops`` (a folder of
videos as a batch), ``blender/*`` (rig, keys, camera, scene import, takes, export,
retargeting). docs/extension.md describes the whole.
"""
import bpy
from bpy.app.handlers import persistent

from . import batch_ops, operators, preferences, properties, retarget_ops, roto_ops, tasks, ui

_MODULES = (properties, preferences, operators, ui, retarget_ops, roto_ops, batch_ops)


@persistent
def _on_load_pre(*_args):
    # A new file replaces the scene a running job would import into: stop the engine.
    tasks.cancel_all(force=True)


def register():
    for module in _MODULES:
        module.register()
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister():
    tasks.cancel_all(force=True)
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    for module in reversed(_MODULES):
        module.unregister()
