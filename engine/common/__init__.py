"""Pure-numpy pieces shared by the engine and the Blender extension.

Nothing in this package may import torch (a test enforces it): the extension imports
it inside Blender's Python, where torch is never installed.
"""
