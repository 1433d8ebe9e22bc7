"""Removing data-blocks an operation created (a failed import, an export's temporary copies)."""
from __future__ import annotations

import bpy

_KINDS = ((bpy.types.Object, "objects"), (bpy.types.Armature, "armatures"), (bpy.types.Mesh, "meshes"),
          (bpy.types.Camera, "cameras"), (bpy.types.Action, "actions"), (bpy.types.Collection, "collections"),
          (bpy.types.Image, "images"), (bpy.types.Material, "materials"))


def remove(ids) -> None:
    """Remove each data-block of ``ids`` from ``bpy.data`` (objects before the data they use:
    pass them in creation order, they go in reverse); ones already gone are skipped."""
    for idb in reversed(list(ids)):
        for typ, attr in _KINDS:
            if isinstance(idb, typ):
                try:
                    getattr(bpy.data, attr).remove(idb)
                except (ReferenceError, RuntimeError):
                    pass
                break
