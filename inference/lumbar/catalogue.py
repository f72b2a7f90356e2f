"""Screw catalogue: snapping lengths down and choosing diameters (sizes in mm)."""

from __future__ import annotations

from collections.abc import Sequence


def snap_length(channel_mm: float, ratio: float, lengths: Sequence[float]) -> float | None:
    """``ratio × channel`` snapped DOWN to the catalogue; None if even the shortest is too long."""
    wanted = ratio * channel_mm
    fitting = [v for v in lengths if v <= wanted + 1e-9]
    return max(fitting) if fitting else None


def fit_diameter(radius_mm: float, margin_mm: float, diameters: Sequence[float]) -> float | None:
    """Largest catalogue diameter whose radius is ≤ ``radius_mm − margin_mm``; None if none fits."""
    room = radius_mm - margin_mm
    fitting = [v for v in diameters if v / 2.0 <= room + 1e-9]
    return max(fitting) if fitting else None


def next_smaller(value: float, sizes: Sequence[float]) -> float | None:
    """The catalogue size just below ``value``; None at the bottom of the catalogue."""
    smaller = [v for v in sizes if v < value - 1e-9]
    return max(smaller) if smaller else None
