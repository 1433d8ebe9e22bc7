"""Video decoding for the engine: probe a clip, stream its frames as RGB, read one frame.

Everything lives in :mod:`engine.video.decode` and uses only OpenCV's bundled FFmpeg
(``opencv-python-headless``); no system ``ffmpeg``/``ffprobe`` is needed.
"""
