"""PyMAF engine: video in, SMPL motion out. Runs in its own Python environment.

Importing this package must stay cheap and torch-free: the Blender extension imports
``engine.common`` from the bundled copy.
"""
__version__ = "0.1.0"
