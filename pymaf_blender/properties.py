"""Per-scene settings of the panel (``scene.pymaf``) and the analysed tracks list."""

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import paths

DEFAULT_SMOOTHING = 2.0 / 3.0  # the "default" One-Euro preset (docs/smoothing.md)
ESTIMATOR_ITEMS = (
    ("AUTO", "Automatic", "PyMAF when a checkpoint is chosen in the preferences, else Landmarks"),
    ("LANDMARKS", "Landmarks", "BlazePose GHUM 3D pose landmarks (Google, Apache-2.0) and a body fit to them; "
                               "needs the landmark models that 'Set up Engine' installs"),
    ("PYMAF", "PyMAF", "The PyMAF network with the checkpoint chosen in the preferences (required)"),
    ("PYMAF_BLAZEPOSE", "PyMAF on BlazePose",
     "PyMAF's mesh-alignment heads on the BlazePose GHUM network, trained by this project on synthetic "
     "people (no checkpoint needed; needs the landmark models). Less accurate than Landmarks so far: "
     "see the accuracy notes"),
)
LANDMARK_MODEL_ITEMS = (
    ("LITE", "Lite", "The smallest, fastest landmark model"),
    ("FULL", "Full", "The balanced landmark model (default)"),
    ("HEAVY", "Heavy", "The largest, most accurate and slowest landmark model"),
)
FBX_PRESET_ITEMS = (
    ("BLENDER", "Blender", "Blender's own axes and units (re-import into Blender)"),
    ("UNITY", "Unity", "Y up, scale and axes for Unity's humanoid import"),
    ("UNREAL", "Unreal", "Axes and centimetre scale for Unreal Engine"),
)


def default_smoothing(context=None) -> float:
    prefs = paths.preferences(context)
    return float(getattr(prefs, "default_smoothing", DEFAULT_SMOOTHING)) if prefs else DEFAULT_SMOOTHING


def _get_smoothing(self):
    # Until the user moves the slider in this scene, the preferences' default applies.
    return float(self.get("_smoothing", default_smoothing()))


def _set_smoothing(self, value):
    self["_smoothing"] = float(value)


SPACE_ITEMS = (
    ("FLOOR", "World with floor", "Z up, the floor found under the people's feet at Z = 0, the camera "
     "placed and tilted above it (falls back to camera space when no floor is found)"),
    ("CAMERA", "Camera space", "The camera at the origin looking along +Y; people where the engine put "
     "them relative to it"),
    ("IN_PLACE", "In place", "The floor world without the root's horizontal motion (game clips); the "
     "rigs no longer line up with the video"),
)


class PYMAF_PG_track(bpy.types.PropertyGroup):
    """One tracked person found by Analyze."""
    track_id: StringProperty(name="Id", description="The engine's track id")
    use: BoolProperty(name="Import", description="Import this person", default=True)
    first_frame: IntProperty(name="First", description="First video frame (0-based)")
    last_frame: IntProperty(name="Last", description="Last video frame (0-based)")
    frame_count: IntProperty(name="Frames", description="Frames where this person was found")
    score: FloatProperty(name="Score", description="Mean detection confidence", min=0.0, max=1.0)


class PYMAF_PG_settings(bpy.types.PropertyGroup):
    video_path: StringProperty(name="Video", description="The video to turn into animated rigs",
                               subtype="FILE_PATH")
    range_start: IntProperty(name="Start", description="First video frame to process (0-based)",
                             default=0, min=0)
    range_count: IntProperty(name="Frames", description="Number of frames to process (0: to the end)",
                             default=0, min=0)
    smoothing: FloatProperty(name="Smoothing", description=(
        "Temporal smoothing of the motion (0: raw network output; 1/3 light, 2/3 default, 1 strong). "
        "Applied in Blender: change it later with Re-apply Smoothing, without running the engine again"),
        min=0.0, max=1.0, subtype="FACTOR", get=_get_smoothing, set=_set_smoothing)
    estimator: EnumProperty(name="Estimator", items=ESTIMATOR_ITEMS, default="AUTO",
                            description="What estimates the poses (engine --estimator)")
    landmark_model: EnumProperty(name="Landmark model", items=LANDMARK_MODEL_ITEMS, default="FULL",
                                 description="Which BlazePose GHUM landmark model the Landmarks estimator uses "
                                             "(engine --landmark-model)")
    fit_outlines: BoolProperty(name="Fit to outlines", default=True, description=(
        "Landmarks estimator: move each frame's body onto the person's outline as BlazePose segments it "
        "(people over about 150 px tall), so that rigs and mattes sit on the plate; on 2 CPU cores a run "
        "goes at about 7 instead of 20 frames/s. Off: engine --no-silhouette"))
    tracks: CollectionProperty(type=PYMAF_PG_track)
    tracks_index: IntProperty(name="Active track", default=0)
    tracks_file: StringProperty(name="Tracks file", description="The analysis the list comes from")
    tracks_video: StringProperty()
    tracks_start: IntProperty()
    tracks_count: IntProperty()
    space: EnumProperty(name="World", items=SPACE_ITEMS, default="FLOOR",
                        description="Where the rigs and the camera stand in the scene")
    plant_feet: BoolProperty(name="Plant feet", default=True,
                             description="On the floor: stand each person on it (moving them along the camera "
                                         "rays) and keep planted feet still (leg IK, ordinary keys); contacts are "
                                         "keyed as the rig's custom properties pymaf_contact_left/right")
    fbx_preset: EnumProperty(name="FBX preset", items=FBX_PRESET_ITEMS, default="BLENDER")
    last_summary: StringProperty(name="Last run", description="What the last run did")
    last_estimator: StringProperty(name="Estimator", description="What made the last imported result")
    last_result: StringProperty(name="Result file", subtype="FILE_PATH")
    last_log: StringProperty(name="Log", subtype="FILE_PATH")
    last_overlay: StringProperty(name="Overlay", subtype="FILE_PATH")

    def analysis_matches(self) -> bool:
        """The tracks list belongs to the current video and frame range."""
        return bool(self.tracks_file) and len(self.tracks) > 0 and \
            paths.abspath(self.video_path) == self.tracks_video and \
            self.range_start == self.tracks_start and self.range_count == self.tracks_count


def scene_settings_registration(classes, attr: str, group) -> tuple:
    """(register, unregister) for ``classes`` plus a ``bpy.types.Scene.<attr>`` pointer to the
    property group ``group`` (one of them)."""
    def register():
        for cls in classes:
            bpy.utils.register_class(cls)
        setattr(bpy.types.Scene, attr, PointerProperty(type=group))

    def unregister():
        delattr(bpy.types.Scene, attr)
        for cls in reversed(classes):
            bpy.utils.unregister_class(cls)
    return register, unregister


CLASSES = (PYMAF_PG_track, PYMAF_PG_settings)

register, unregister = scene_settings_registration(CLASSES, "pymaf", PYMAF_PG_settings)
