"""Everything that builds or changes Blender data (rig, animation, camera, export).

Only bpy-side code lives here; the maths it applies comes from ``pymaf_blender.common``
(the engine's numpy code) and is tested without Blender.
"""
