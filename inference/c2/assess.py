"""C2 pedicle screw feasibility without weights: ``assess_c2(hu, affine, settings)``.

Frame: ``hu`` is indexed ``[slice, row, col]`` and ``affine`` maps ``(slice, row, col, 1)`` to
DICOM LPS millimetres; every point and direction in the result is LPS mm. Patient left is LPS +x
(more precisely the C2 frame's ``left`` = cranial × anterior), which decides each finding's side.

Steps: find C2 (:mod:`.locate`), seed each pediculoisthmic component at the bottleneck between
the body and the posterior arch (:mod:`.bottleneck`), measure the narrowest oblique section
(:mod:`.mpd`), classify at the cut-off and attach the calibrated logistic probability
(:mod:`.probability`), and keep ``slice_count`` sections ⊥ the axis centred on the narrowest
one for the report and the learned classifier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.c2.bottleneck import find_pedicle_seeds
from inference.c2.locate import (
    SOLID_PASSES,
    C2Frame,
    CoarseGrid,
    estimate_frame,
    find_c2_column,
    midline_window,
    solid_bone,
)
from inference.c2.mpd import AIR_HU, MPDMeasurement, Scan, measure_mpd
from inference.c2.probability import GEOMETRIC_METHOD, probability_feasible, risk_class
from inference.c2.sections import FloatArray, Plane, plane_basis, sample
from inference.c2.settings import C2Settings
from inference.results import C2Finding, Side

logger = logging.getLogger(__name__)

# C2 pediculoisthmic widths are 5.8 ± 1.2 mm (Naderi 2004); outside this range the section found
# is not an isthmus (a grazed cortex, or the body).
MIN_PLAUSIBLE_MM = 2.0
MAX_PLAUSIBLE_MM = 12.0
CORTEX_PERCENTILE = 99.0
CORTEX_RADIUS_MM = 40.0


@dataclass(frozen=True, slots=True, eq=False)
class SliceStack:
    """Oblique sections ⊥ the pedicle axis, centred on the narrowest one.

    ``hu[k, i, j]`` sits at LPS ``affine @ (k, i, j, 1)``: ``k`` steps ``step_mm`` along ``axis``
    (posterior → anterior), rows and columns are ``pixel_mm`` apart; the middle slice holds the
    narrowest section, centred on ``centre``.
    """

    side: Side
    hu: npt.NDArray[np.float32]
    affine: FloatArray
    centre: FloatArray
    axis: FloatArray
    pixel_mm: float
    step_mm: float


@dataclass(frozen=True, slots=True, eq=False)
class C2Assessment:
    """Findings per side (left first), warnings, the slice stacks and the raw measurements."""

    findings: tuple[C2Finding, ...]
    warnings: tuple[str, ...]
    stacks: tuple[SliceStack, ...] = ()
    measurements: tuple[MPDMeasurement, ...] = ()


def side_of(point: npt.ArrayLike, frame: C2Frame) -> Side:
    """The patient side of an LPS point relative to the C2 midsagittal plane."""
    lateral = float((np.asarray(point, dtype=np.float64) - frame.origin) @ frame.left)
    return Side.LEFT if lateral > 0 else Side.RIGHT


def coarsest_spacing_mm(affine: FloatArray) -> float:
    """The largest voxel step (mm) of an index → LPS affine."""
    return float(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0).max())


def assess_c2(
    hu: npt.NDArray[np.floating],
    affine: npt.ArrayLike,
    settings: C2Settings | None = None,
    labels: npt.NDArray[np.integer] | None = None,
) -> C2Assessment:
    """Assess both C2 pedicles of a CT volume; a volume without C2 gives no finding and a warning.

    ``labels`` (optional, same grid, VerSe ids: C2 = 2) restricts the search to C2's voxels.
    """
    settings = settings or C2Settings()
    aff = np.asarray(affine, dtype=np.float64)
    spacing = coarsest_spacing_mm(aff)
    if spacing > settings.max_spacing_mm:
        return C2Assessment(
            (),
            (
                f"C2 not assessed: voxel spacing {spacing:.2f} mm is coarser than the "
                f"{settings.max_spacing_mm:.2f} mm an MPD needs (reconstruct thinner slices)",
            ),
        )
    grid = CoarseGrid.from_volume(hu, aff, midline_window(hu, aff))
    solid, dist, column = _find_c2(grid, labels)
    if column is None:
        return C2Assessment((), ("no C2 found in the field of view: C2 not assessed",))
    if _touches_border(column):
        return C2Assessment((), ("C2 is only partly inside the field of view: C2 not assessed",))
    frame = estimate_frame(column, solid, grid)
    scan = Scan(hu, aff, settings, _cortex_level(grid, solid, frame))
    warnings: list[str] = []
    if spacing > settings.reliable_spacing_mm:
        warnings.append(
            f"voxel spacing {spacing:.2f} mm is coarser than "
            f"{settings.reliable_spacing_mm:.2f} mm: the MPD is less reliable "
            "(the probability accounts for it)"
        )
    seeds = {seed.side: seed for seed in find_pedicle_seeds(dist, column, grid, frame)}
    findings, stacks, measured = [], [], []
    for side in (Side.LEFT, Side.RIGHT):
        seed = seeds.get(side)
        m = None if seed is None else measure_mpd(scan, seed.point, seed.axis)
        problem = _problem(m, side, frame)
        if problem is not None or m is None:
            warnings.append(f"{side} C2 pedicle: {problem}; not measured")
            continue
        findings.append(_finding(m, side, settings, spacing))
        stacks.append(slice_stack(scan, m, side))
        measured.append(m)
    return C2Assessment(tuple(findings), tuple(warnings), tuple(stacks), tuple(measured))


def _find_c2(
    grid: CoarseGrid, labels: npt.NDArray[np.integer] | None
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32], npt.NDArray[np.bool_] | None]:
    """Solid bone, its depth (mm) and the C2 body/dens column, trying ``SOLID_PASSES`` in turn."""
    for threshold, closing in SOLID_PASSES:
        solid = solid_bone(grid, labels, threshold, closing)
        dist = ndimage.distance_transform_edt(solid, sampling=grid.spacing).astype(np.float32)
        column = find_c2_column(solid, dist, grid)
        if column is not None or labels is not None:
            break
    return solid, dist, column


def _problem(m: MPDMeasurement | None, side: Side, frame: C2Frame) -> str | None:
    if m is None:
        return "no narrowing pediculoisthmic component found"
    if m.clipped:
        return "its isthmus reaches the edge of the field of view"
    if not MIN_PLAUSIBLE_MM <= m.outer_mm <= MAX_PLAUSIBLE_MM:
        return f"the narrowest section found ({m.outer_mm:.1f} mm) is not a plausible isthmus"
    if side_of(m.location, frame) is not side:
        return "the narrowest section lies across the midline"
    return None


def _finding(m: MPDMeasurement, side: Side, settings: C2Settings, spacing: float) -> C2Finding:
    axis = m.axis
    return C2Finding(
        side=side,
        mpd_mm=float(m.mpd_mm),
        mpd_kind=m.kind,
        location_mm=(float(m.location[0]), float(m.location[1]), float(m.location[2])),
        axis_mm=(float(axis[0]), float(axis[1]), float(axis[2])),
        risk=risk_class(m.mpd_mm, settings.cutoff_mm),
        probability_feasible=probability_feasible(m.mpd_mm, settings.cutoff_mm, spacing),
        method=GEOMETRIC_METHOD,
    )


def _touches_border(mask: npt.NDArray[np.bool_]) -> bool:
    return bool(
        mask[0].any()
        or mask[-1].any()
        or mask[:, 0].any()
        or mask[:, -1].any()
        or mask[:, :, 0].any()
        or mask[:, :, -1].any()
    )


def _cortex_level(grid: CoarseGrid, solid: npt.NDArray[np.bool_], frame: C2Frame) -> float:
    """HU of full cortical bone near C2: a high percentile of the bone voxels around it."""
    idx = np.argwhere(solid)
    near = np.linalg.norm(grid.world(idx) - frame.origin, axis=1) <= CORTEX_RADIUS_MM
    values = grid.data[tuple(idx[near].T)]
    return float(np.percentile(values, CORTEX_PERCENTILE))


def slice_stack(scan: Scan, m: MPDMeasurement, side: Side) -> SliceStack:
    """The ``slice_count`` sections ⊥ the axis, ``slice_step_mm`` apart, around the isthmus."""
    s = scan.settings
    u, v = plane_basis(m.axis)
    size = round(s.slice_field_mm / s.slice_pixel_mm)
    half_k = (s.slice_count - 1) // 2
    planes = []
    for k in range(s.slice_count):
        centre = m.location + (k - half_k) * s.slice_step_mm * m.axis
        planes.append(Plane(centre, u, v, size, s.slice_pixel_mm).points())
    hu = sample(scan.hu, scan.affine, np.stack(planes), AIR_HU)
    half = (size - 1) / 2.0
    affine = np.eye(4)
    affine[:3, 0] = s.slice_step_mm * m.axis
    affine[:3, 1] = s.slice_pixel_mm * v
    affine[:3, 2] = s.slice_pixel_mm * u
    affine[:3, 3] = (
        m.location - half_k * s.slice_step_mm * m.axis - half * s.slice_pixel_mm * (u + v)
    )
    return SliceStack(side, hu, affine, m.location, m.axis, s.slice_pixel_mm, s.slice_step_mm)
