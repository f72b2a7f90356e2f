"""Narrowest pediculoisthmic diameter (MPD) by oblique sections perpendicular to the pedicle axis.

Frame: LPS millimetres; the volume is indexed ``[slice, row, col]`` with a 4×4 affine
``(slice, row, col, 1)`` → LPS. A sweep cuts the HU volume with planes ⊥ ``axis`` every
``step_mm`` along it, resamples each plane on a ``grid_mm`` grid, keeps the bone region on the
axis (holes filled) and measures its minimum caliper width (outer) and the width of the marrow
region inside the cortex (endosteal). The isthmus is the narrowest section that lies in a valley
of the width profile (wider bone on both sides), which rejects the caps where the axis enters or
leaves the bone. The axis is refined at the isthmus as the normal of the smallest bone section
through it (a tube's smallest section is perpendicular to its axis), then the sweep is repeated;
the narrowest isthmus over the iterations is kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.c2.sections import (
    BoolArray,
    FloatArray,
    Plane,
    component_at,
    inside_volume,
    mask_width_mm,
    plane_basis,
    sample,
    unit,
)
from inference.c2.settings import C2Settings
from inference.results import MPDKind

logger = logging.getLogger(__name__)

AIR_HU = -1000.0
# A section is an isthmus candidate when bone at least this much wider lies on both sides of it.
VALLEY_MARGIN_MM = 1.0
COARSE_GRID_MM = 0.25
COARSE_STEP_MM = 0.5
FIELD_MM = 20.0
# Gaps in a thin, partial-volume-blurred cortex up to twice this are bridged before filling.
CLOSING_MM = 0.6
MAX_ITERATIONS = 4
MAX_TILT_DEG = 20.0
# The isthmus is looked for within this distance of the seed point along the axis.
SEED_WINDOW_MM = 8.0
REAIM_WINDOW_MM = 3.0
# The fine sweep spans ±FINE_HALF_MM around the coarse isthmus; its minimum lies within the window.
FINE_HALF_MM = 4.0
FINE_WINDOW_MM = 2.0
# Smaller bone regions are specks (noise, a grazed cortex), not a section of a pedicle.
MIN_AREA_MM2 = 6.0
# A section belongs to the pedicle when its bone region reaches this close to the axis.
REACH_MM = 1.0
MAX_TURN_DEG = 30.0
REAIM_TOLERANCE_MM = 0.15


@dataclass(frozen=True, slots=True)
class Section:
    """One oblique section at ``t_mm`` along the axis (LPS centroid of the bone region)."""

    t_mm: float
    outer_mm: float
    endosteal_mm: float
    area_mm2: float
    centroid: FloatArray
    touches_field: bool
    clipped: bool


@dataclass(frozen=True, slots=True)
class MPDMeasurement:
    """The narrowest section of one pediculoisthmic component.

    ``location`` is the LPS centroid of the narrowest section, ``axis`` the unit pedicle axis
    (LPS), ``profile`` the ``(t_mm, outer_mm)`` pairs of the final sweep, ``clipped`` whether the
    bone near the isthmus reaches the edge of the volume.
    """

    mpd_mm: float
    kind: MPDKind
    outer_mm: float
    endosteal_mm: float
    location: FloatArray
    axis: FloatArray
    profile: tuple[tuple[float, float], ...]
    clipped: bool


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """Where and how finely to cut: planes at ``origin + t·axis`` for ``t`` in ``t_values``."""

    origin: FloatArray
    axis: FloatArray
    t_values: FloatArray
    grid_mm: float
    field_mm: float = FIELD_MM


@dataclass(frozen=True, slots=True)
class Scan:
    """The HU volume to cut (indexed ``[slice, row, col]``, ``affine`` → LPS) and how.

    ``cortex_level_hu`` is the HU of full-thickness cortical bone in this scan, when known: the
    outer boundary is then put at half the step from soft tissue to it, which stays unbiased for
    a cortex thinner than the blur (half the local maximum would put it outside).
    """

    hu: npt.NDArray[np.floating]
    affine: FloatArray
    settings: C2Settings
    cortex_level_hu: float | None = None


def _levels(values: npt.NDArray[np.float32], region: BoolArray) -> tuple[float, float, float]:
    """Local soft-tissue, marrow and cortex levels (HU) around and inside a bone region."""
    ring = ndimage.binary_dilation(region, iterations=8) & ~ndimage.binary_dilation(
        region, iterations=3
    )
    soft = float(np.clip(np.median(values[ring]), -200.0, 200.0)) if ring.any() else 0.0
    inside = values[region]
    cortex = float(np.percentile(inside, 95))
    marrow = float(np.percentile(inside, 30))
    return soft, marrow, cortex


def _section(
    scan: Scan, plane: Plane
) -> tuple[BoolArray, BoolArray, BoolArray | None, bool] | None:
    """Outer bone pixels on the axis, the filled region, its marrow, whether it leaves the volume.

    Boundaries are placed at half the local contrast (half maximum between soft tissue and cortex
    for the outer boundary, between marrow and cortex for the endosteal one), which is unbiased
    for a blurred, partial-volume-averaged edge; ``bone_hu`` only seeds the region.
    """
    settings = scan.settings
    world = plane.points()
    values = sample(scan.hu, scan.affine, world, AIR_HU)
    reach = max(1, round(REACH_MM / plane.grid_mm))
    close = max(1, round(CLOSING_MM / plane.grid_mm))
    seed = component_at(_closed(values >= settings.bone_hu, close), reach)
    if seed is None:
        return None
    soft, marrow, cortex = _levels(values, seed)
    level = cortex if scan.cortex_level_hu is None else scan.cortex_level_hu
    threshold = min(0.5 * (soft + level), soft + 0.8 * (cortex - soft))
    outer = seed & (values >= max(threshold, settings.bone_hu))
    if outer.sum() * plane.grid_mm**2 < MIN_AREA_MM2:
        return None
    region = _closed(outer, close) & seed
    inner = None
    if cortex - marrow >= settings.cortex_hu - settings.bone_hu:
        inner = component_at(region & (values < 0.5 * (marrow + cortex)), reach)
    clipped = bool((region & ~inside_volume(scan.hu.shape, scan.affine, world)).any())
    return outer, region, inner, clipped


def _closed(mask: BoolArray, iterations: int) -> BoolArray:
    """``mask`` with gaps up to ``2·iterations`` pixels bridged and holes filled."""
    padded = np.pad(mask, iterations)
    closed = ndimage.binary_closing(padded, iterations=iterations)[
        iterations:-iterations, iterations:-iterations
    ]
    filled: BoolArray = ndimage.binary_fill_holes(closed | mask)
    return filled


def sweep(scan: Scan, spec: SweepSpec) -> list[Section | None]:
    """Cut ``hu`` with planes ⊥ ``spec.axis``; ``None`` where the axis is not in bone."""
    axis = unit(spec.axis)
    u, v = plane_basis(axis)
    size = round(spec.field_mm / spec.grid_mm) | 1
    out: list[Section | None] = []
    for t in spec.t_values:
        plane = Plane(spec.origin + float(t) * axis, u, v, size, spec.grid_mm)
        cut = _section(scan, plane)
        if cut is None:
            out.append(None)
            continue
        outer_px, region, inner, clipped = cut
        outer = mask_width_mm(outer_px, spec.grid_mm)[0]
        endo = 0.0 if inner is None else mask_width_mm(inner, spec.grid_mm)[0]
        ij = np.argwhere(region).astype(np.float64).mean(axis=0)
        edge = bool(
            region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any()
        )
        area = float(region.sum()) * spec.grid_mm**2
        out.append(Section(float(t), outer, endo, area, plane.to_world(ij), edge, clipped))
    return out


def _runs(sections: list[Section | None]) -> list[list[Section]]:
    """The runs of consecutive present sections (the bone along the axis, piece by piece)."""
    runs: list[list[Section]] = []
    current: list[Section] = []
    for s in sections:
        if s is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(s)
    if current:
        runs.append(current)
    return runs


def valley(run: list[Section]) -> list[Section]:
    """Sections of ``run`` with bone at least ``VALLEY_MARGIN_MM`` wider on both sides."""
    widths = np.array([np.inf if s.touches_field else s.outer_mm for s in run])
    if len(widths) < 3:
        return []
    before = np.maximum.accumulate(widths)
    after = np.maximum.accumulate(widths[::-1])[::-1]
    keep = []
    for i in range(1, len(run) - 1):
        w = widths[i]
        if before[i - 1] >= w + VALLEY_MARGIN_MM and after[i + 1] >= w + VALLEY_MARGIN_MM:
            keep.append(run[i])
    return keep


def _section_area(scan: Scan, point: FloatArray, normal: FloatArray) -> float:
    """Area (mm²) of the bone region through ``point`` in the plane ⊥ ``normal``; inf if none."""
    u, v = plane_basis(normal)
    size = round(FIELD_MM / COARSE_GRID_MM) | 1
    cut = _section(scan, Plane(point, u, v, size, COARSE_GRID_MM))
    if cut is None:
        return float("inf")
    region = cut[1]
    if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
        return float("inf")
    return float(region.sum()) * COARSE_GRID_MM**2


def _min_area_axis(scan: Scan, point: FloatArray, axis: FloatArray) -> FloatArray:
    """The plane normal through ``point`` with the smallest bone section, found by a pattern
    search over tilts of ``axis`` (within ``MAX_TILT_DEG``): a tube's smallest section is the
    one perpendicular to its axis."""
    u, v = plane_basis(axis)

    def normal(a: float, b: float) -> FloatArray:
        return unit(axis + np.tan(np.radians(a)) * u + np.tan(np.radians(b)) * v)

    best_ab, best = (0.0, 0.0), _section_area(scan, point, axis)
    step = 8.0
    while step >= 0.5:
        moved = False
        for da, db in ((step, 0), (-step, 0), (0, step), (0, -step)):
            ab = (best_ab[0] + da, best_ab[1] + db)
            if max(abs(ab[0]), abs(ab[1])) > MAX_TILT_DEG:
                continue
            area = _section_area(scan, point, normal(*ab))
            if area < best:
                best_ab, best, moved = ab, area, True
        if not moved:
            step /= 2
    return normal(*best_ab)


def _kind_width(s: Section, kind: MPDKind) -> float:
    return s.outer_mm if kind is MPDKind.OUTER else s.endosteal_mm


def measure_mpd(
    scan: Scan,
    origin: npt.ArrayLike,
    axis: npt.ArrayLike,
    *,
    half_length_mm: float = 20.0,
) -> MPDMeasurement | None:
    """MPD of the pedicle through ``origin`` (LPS mm) roughly along ``axis``; ``None`` if no
    narrowing bone is found along it."""
    centre = np.asarray(origin, dtype=np.float64)
    direction = seed_axis = unit(axis)
    t_coarse = np.arange(-half_length_mm, half_length_mm + 1e-9, COARSE_STEP_MM)
    # An oblique cut of a convex tube is never narrower than the perpendicular one, so a later
    # (re-aimed) isthmus replaces the kept one only if it is not clearly wider than the narrowest.
    best: tuple[float, FloatArray, FloatArray] | None = None
    narrowest_mm = float("inf")
    window = SEED_WINDOW_MM
    for _ in range(MAX_ITERATIONS):
        sections = sweep(scan, SweepSpec(centre, direction, t_coarse, COARSE_GRID_MM))
        candidates = [s for run in _runs(sections) for s in valley(run) if abs(s.t_mm) <= window]
        window = REAIM_WINDOW_MM  # re-aiming turns the axis about the isthmus, not along it
        if not candidates:
            logger.debug("no narrowing bone along the axis through %s", np.round(centre, 1))
            break
        narrowest = min(candidates, key=lambda s: s.outer_mm)
        centre = narrowest.centroid
        if narrowest.outer_mm <= narrowest_mm + REAIM_TOLERANCE_MM:
            best = (narrowest.outer_mm, centre, direction)
        narrowest_mm = min(narrowest_mm, narrowest.outer_mm)
        new = _min_area_axis(scan, centre, direction)
        if float(new @ seed_axis) < np.cos(np.radians(MAX_TURN_DEG)):
            logger.debug("axis turned more than %s degrees from its seed", MAX_TURN_DEG)
            break
        turned = float(np.degrees(np.arccos(np.clip(new @ direction, -1.0, 1.0))))
        direction = new
        if turned < 1.0:
            break
    return None if best is None else _fine(scan, (best[1], best[2]))


def _fine(scan: Scan, line: tuple[FloatArray, FloatArray]) -> MPDMeasurement | None:
    """Re-measure around the coarse isthmus at ``step_mm`` on the ``grid_mm`` grid.

    The narrowest fine section must again lie in a valley of the fine profile (within
    ``FINE_WINDOW_MM`` of the coarse isthmus); without one, the sections within one coarse step
    of it are used.
    """
    centre, direction = line
    settings = scan.settings
    t_fine = np.arange(-FINE_HALF_MM, FINE_HALF_MM + 1e-9, settings.step_mm)
    spec = SweepSpec(centre, direction, t_fine, settings.grid_mm)
    sections = sweep(scan, spec)
    fine = [s for s in sections if s is not None and not s.touches_field]
    if not fine:
        return None
    pool = [s for run in _runs(sections) for s in valley(run) if abs(s.t_mm) <= FINE_WINDOW_MM] or [
        s for s in fine if abs(s.t_mm) <= COARSE_STEP_MM
    ]
    if not pool:
        return None
    best = min(pool, key=lambda s: _kind_width(s, settings.mpd_kind))
    profile = tuple((round(s.t_mm, 3), round(s.outer_mm, 3)) for s in fine)
    return MPDMeasurement(
        mpd_mm=_kind_width(best, settings.mpd_kind),
        kind=settings.mpd_kind,
        outer_mm=best.outer_mm,
        endosteal_mm=best.endosteal_mm,
        location=best.centroid,
        axis=direction,
        profile=profile,
        clipped=any(s.clipped for s in pool),
    )
