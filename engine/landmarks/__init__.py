"""Pose landmarks: BlazePose GHUM 3D landmark models (Google, Apache-2.0; docs/third-party.md).

``assets`` pins and fetches the model files and says where the converted weights live
(stdlib only); ``setup`` is the command that prepares them (``python -m engine.landmarks.setup``).
"""
