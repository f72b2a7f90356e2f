"""Planar sections of a vertebra mask on a 0.5 mm grid, shared by the pedicle track, the isthmus
search and the wall midline (patient frame, LPS mm)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.geometry import FloatArray, VolumeSampler

GRID_MM = 0.5
MIN_SECTION_MM2 = 12.0  # smaller than any pedicle a 4.5 mm screw could enter


def section(
    inside: VolumeSampler,
    centre: FloatArray,
    u: FloatArray,
    v: FloatArray,
    half: float,
    *,
    order: int = 0,
) -> np.ndarray:
    """0/1 image of the mask on the plane centre + i·u + j·v, |i|,|j| ≤ half (GRID_MM pixels)."""
    g = np.arange(-half, half + 1e-9, GRID_MM)
    pts = centre + g[:, None, None] * v + g[None, :, None] * u
    return (inside(pts.reshape(-1, 3), order=order) > 0.5).reshape(g.size, g.size)


def run_from(ok: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.bool_]:
    """The contiguous run of True in ``ok`` that contains index ``k``."""
    lo, hi = k, k
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < ok.size - 1 and ok[hi + 1]:
        hi += 1
    out = np.zeros(ok.size, dtype=bool)
    out[lo : hi + 1] = True
    return out
