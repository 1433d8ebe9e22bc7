"""Rasterising posed bodies (moderngl over EGL) and the body-surface parametrisation."""
