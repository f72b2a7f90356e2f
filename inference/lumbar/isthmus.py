"""Pedicle isthmus search and the channel along the pedicle axis.

Patient frame (LPS mm). A vertebra is given as a 0/1 sampler of its mask and its anatomy (frame,
body walls). The pedicle axis is found as in ``ALGORITHMS.md``: a first guess from the pedicle's
coronal cross-section behind the body, then planes ⊥ the axis every 0.5 mm; the isthmus is the
smallest cross-section and the axis is refitted through the section centroids around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.errors import InferenceError
from inference.geometry import FloatArray, VolumeSampler, perpendicular_basis, ray_exit, unit
from inference.lumbar.frames import VertebraAnatomy
from inference.results import Side

GRID_MM = 0.5
MAX_OFFSET_MM = 2.5
MIN_SECTION_MM2 = 12.0  # smaller than any pedicle a 4.5 mm screw could enter


@dataclass(frozen=True, slots=True)
class Channel:
    """The pedicle axis of one side and the bone channel along it (patient mm)."""

    isthmus: FloatArray
    direction: FloatArray
    entry: FloatArray
    exit: FloatArray
    isthmus_area_mm2: float

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.exit - self.entry))


def _section(
    inside: VolumeSampler, centre: FloatArray, u: FloatArray, v: FloatArray, half: float
) -> np.ndarray:
    """0/1 image of the mask on the plane centre + i·u + j·v, |i|,|j| ≤ half (GRID_MM pixels)."""
    g = np.arange(-half, half + 1e-9, GRID_MM)
    pts = centre + g[:, None, None] * v + g[None, :, None] * u
    return (inside(pts.reshape(-1, 3), order=0) > 0.5).reshape(g.size, g.size)


def _component_at(image: np.ndarray, reach_px: int = 6) -> tuple[np.ndarray, bool]:
    """The connected component nearest the image centre (within ``reach_px``), and found-flag."""
    labels, n = ndimage.label(image)
    c = image.shape[0] // 2
    if n == 0:
        return image, False
    window = labels[c - reach_px : c + reach_px + 1, c - reach_px : c + reach_px + 1]
    if labels[c, c]:
        return labels == labels[c, c], True
    ids = window[window > 0]
    if ids.size == 0:
        return labels == -1, False
    return labels == np.bincount(ids).argmax(), True


def pedicle_seed(inside: VolumeSampler, anatomy: VertebraAnatomy, side: Side) -> FloatArray:
    """Centre of the pedicle on ``side``: the smallest pedicle section in coronal planes behind
    the body (planes ⊥ a, 1–14 mm posterior to the posterior body wall)."""
    f = anatomy.frame
    sign = -1.0 if side is Side.LEFT else 1.0  # r points to patient right
    best: tuple[float, FloatArray] | None = None
    for k in np.arange(1.0, 14.5, 1.0):
        centre = f.origin + (anatomy.body_back_mm - k) * f.a
        img = _section(inside, centre, f.r, f.s, 40.0)
        labels, n = ndimage.label(img)
        if n == 0:
            continue
        g = np.arange(-40.0, 40.0 + 1e-9, GRID_MM)
        idx = ndimage.center_of_mass(img, labels, range(1, n + 1))
        area = ndimage.sum(img, labels, range(1, n + 1)) * GRID_MM**2
        for (row, col), a_mm2 in zip(idx, area, strict=True):
            rr, ss = np.interp(col, np.arange(g.size), g), np.interp(row, np.arange(g.size), g)
            if sign * rr < 4.0 or sign * rr > 40.0 or abs(ss) > 22.0 or a_mm2 < 8.0:
                continue
            if best is None or a_mm2 < best[0]:
                best = (float(a_mm2), centre + rr * f.r + ss * f.s)
    if best is None:
        raise InferenceError(f"no {side} pedicle found behind the vertebral body", str(side))
    return best[1]


def _profile(
    inside: VolumeSampler, point: FloatArray, direction: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Areas and centroids of the axis-connected sections ⊥ ``direction`` around ``point``."""
    u, v = perpendicular_basis(direction)
    ts = np.arange(-12.0, 12.0 + 1e-9, GRID_MM)
    areas = np.full(ts.size, np.inf)
    cents = np.zeros((ts.size, 3))
    half = 14.0
    g = np.arange(-half, half + 1e-9, GRID_MM)
    for i, t in enumerate(ts):
        centre = point + t * direction
        comp, found = _component_at(_section(inside, centre, u, v, half))
        if not found:
            continue
        rows, cols = np.nonzero(comp)
        if rows.size * GRID_MM**2 < MIN_SECTION_MM2:  # a sliver at the end of the bone
            continue
        touches = rows.min() == 0 or cols.min() == 0 or rows.max() == g.size - 1
        offset = np.hypot(g[cols].mean(), g[rows].mean())
        if offset > MAX_OFFSET_MM:  # a section cut off-axis (end of a bone run): not the pedicle
            continue
        areas[i] = comp.sum() * GRID_MM**2 * (4.0 if touches else 1.0)
        cents[i] = centre + g[cols].mean() * u + g[rows].mean() * v
    return ts, areas, cents


def _run_around_seed(areas: FloatArray) -> FloatArray:
    """Only the contiguous run of valid sections that contains (or is nearest) the seed (the
    middle of the profile); isolated slivers elsewhere along the axis are dropped."""
    valid = np.isfinite(areas)
    if not valid.any():
        return areas
    mid = areas.size // 2
    idx = np.nonzero(valid)[0]
    start = int(idx[np.argmin(np.abs(idx - mid))])
    lo = start
    while lo > 0 and valid[lo - 1]:
        lo -= 1
    hi = start
    while hi < areas.size - 1 and valid[hi + 1]:
        hi += 1
    out = np.full_like(areas, np.inf)
    out[lo : hi + 1] = areas[lo : hi + 1]
    return out


def pedicle_axis(
    inside: VolumeSampler, anatomy: VertebraAnatomy, side: Side, iterations: int = 4
) -> tuple[FloatArray, FloatArray, float]:
    """(isthmus centroid, unit axis pointing anterior, isthmus area mm²) of the pedicle."""
    f = anatomy.frame
    point = pedicle_seed(inside, anatomy, side)
    target = f.origin + anatomy.body_front_mm * f.a
    direction = unit(target - point)
    area = float("nan")
    for _ in range(iterations):
        ts, areas, cents = _profile(inside, point, direction)
        if not np.isfinite(areas).any():
            raise InferenceError(f"{side} pedicle lost while searching the isthmus", str(side))
        areas = _run_around_seed(areas)
        if not np.isfinite(areas).any():
            raise InferenceError(f"{side} pedicle lost while searching the isthmus", str(side))
        k = int(np.argmin(areas))
        area = float(areas[k])
        near = (np.abs(ts - ts[k]) <= 8.0) & np.isfinite(areas) & (areas < 1.4 * area)
        pts = cents[near]
        point = cents[k]
        if pts.shape[0] >= 4:
            centred = pts - pts.mean(axis=0)
            axis = np.linalg.svd(centred, full_matrices=False)[2][0]
            direction = unit(axis if axis @ f.a > 0 else -axis)
            point = pts.mean(axis=0)
    return point, direction, area


def channel(inside: VolumeSampler, anatomy: VertebraAnatomy, side: Side) -> Channel:
    """The pedicle axis and its bone channel: entry = first bone crossing from posterior, exit =
    where the axis leaves the anterior body cortex."""
    point, direction, area = pedicle_axis(inside, anatomy, side)
    back = ray_exit(inside, point, -direction, 80.0, 0.25)
    front = ray_exit(inside, point, direction, 120.0, 0.25)
    return Channel(
        isthmus=point,
        direction=direction,
        entry=point - back * direction,
        exit=point + front * direction,
        isthmus_area_mm2=area,
    )
