"""PyMAF for Blender: the Blender side (bpy only; never imports torch).

The engine runs as a separate process in its own Python environment. This package
holds only what touches bpy; the shared numpy pieces live in ``engine.common``.
The import interface arrives with the extension issue; this module registers nothing
yet so the skeleton installs cleanly.
"""


def register():
    pass


def unregister():
    pass
