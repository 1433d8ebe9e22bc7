"""One colour per person, the same in Blender (body material) and in the overlay preview.

Colours are sRGB bytes; Blender's material colours are linear (``srgb_to_linear``).
"""
from __future__ import annotations

# Distinct at a glance on footage, none close to skin tones or grey.
PERSON_COLORS_SRGB = ((90, 170, 255), (255, 150, 70), (120, 220, 120), (230, 110, 200),
                      (240, 220, 90), (110, 220, 230), (170, 130, 255), (255, 100, 110))


def person_color_srgb(index: int) -> tuple:
    """The ``index``-th person's colour (0-based; the palette repeats) -> (r, g, b) bytes."""
    return PERSON_COLORS_SRGB[int(index) % len(PERSON_COLORS_SRGB)]


def srgb_to_linear(rgb_bytes) -> tuple:
    """(r, g, b) sRGB bytes -> (r, g, b) linear floats in [0, 1] (the IEC 61966-2-1 curve)."""
    def lin(c):
        c = c / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return tuple(lin(float(c)) for c in rgb_bytes)
