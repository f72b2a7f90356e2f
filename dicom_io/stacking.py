"""Stacking slices into a volume: sort along the normal, detect duplicates, gaps and gantry tilt.

Positions are projected on the image normal (row cosines × column cosines, LPS): that distance
orders the slices (never InstanceNumber). The in-plane drift of the positions with that distance is
the gantry tilt. What is tolerated, resampled or refused follows :class:`dicom_io.policy.LoadPolicy`
(documented in docs/loading.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dicom_io.errors import GeometryError
from dicom_io.frames import FrameInfo
from dicom_io.policy import LoadPolicy, TiltPolicy

_ORIENTATION_TOLERANCE = 1e-3
_SPACING_TOLERANCE = 1e-3  # relative, pixel spacing


@dataclass(frozen=True, slots=True, eq=False)
class StackPlan:
    """How a set of slices becomes a volume on a regular grid (LPS mm).

    ``order`` lists the frames kept, sorted by distance along the image normal (row cosines ×
    column cosines), so the volume's slice axis always points along the normal. When
    ``out_distances`` is None the sorted slices are the volume as they are; otherwise each output
    slice at ``out_distances[j]`` is interpolated from its two neighbours, each source slice first
    shifted in-plane by ``shifts[i]`` (rows, columns; pixels) to undo a gantry tilt.
    """

    order: tuple[int, ...]
    distances: npt.NDArray[np.float64]
    shifts: npt.NDArray[np.float64]
    out_distances: npt.NDArray[np.float64] | None
    affine: npt.NDArray[np.float64]
    tilt_deg: float
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StackGeometry:
    """The shared plane of a stack: orientation, pixel spacing (row, column) and size."""

    orientation: npt.NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    size: tuple[int, int]

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / np.linalg.norm(n)

    def affine(self, origin: npt.ArrayLike, slice_step: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The index → LPS affine of a stack with this plane, first voxel at ``origin``."""
        affine = np.eye(4)
        affine[:3, 0] = slice_step
        affine[:3, 1] = self.orientation[3:] * self.pixel_spacing[0]
        affine[:3, 2] = self.orientation[:3] * self.pixel_spacing[1]
        affine[:3, 3] = origin
        return affine


def common_plane(frames: Sequence[FrameInfo], labels: Sequence[str]) -> StackGeometry:
    """The plane all frames share; :class:`GeometryError` on mixed orientations, sizes, spacings."""
    first = frames[0]
    for frame in frames[1:]:
        where = f"{labels[first.instance]} and {labels[frame.instance]}"
        if np.max(np.abs(frame.orientation - first.orientation)) > _ORIENTATION_TOLERANCE:
            raise GeometryError(
                f"mixed image orientations ({where}): the series is not one stack of parallel "
                "slices (a localizer or a reformat mixed in?)",
                [list(first.orientation), list(frame.orientation)],
            )
        if frame.size != first.size:
            raise GeometryError(
                f"mixed image sizes {first.size} and {frame.size} ({where})",
                [first.size, frame.size],
            )
        ratio = np.asarray(frame.pixel_spacing) / np.asarray(first.pixel_spacing)
        if np.max(np.abs(ratio - 1)) > _SPACING_TOLERANCE:
            raise GeometryError(
                f"mixed pixel spacings {first.pixel_spacing} and {frame.pixel_spacing} ({where})",
                [first.pixel_spacing, frame.pixel_spacing],
            )
    return StackGeometry(first.orientation, first.pixel_spacing, first.size)


def _sorted_unique(
    frames: Sequence[FrameInfo],
    labels: Sequence[str],
    normal: npt.NDArray[np.float64],
    policy: LoadPolicy,
) -> tuple[list[int], list[str]]:
    """Frame indices sorted along the normal, duplicates of a position dropped or refused."""
    distances = np.array([float(f.position @ normal) for f in frames])
    order = [int(i) for i in np.argsort(distances, kind="stable")]
    kept: list[int] = [order[0]]
    dropped = 0
    for i in order[1:]:
        previous = kept[-1]
        if distances[i] - distances[previous] >= policy.duplicate_tolerance_mm:
            kept.append(i)
            continue
        if not policy.drop_duplicates:
            raise GeometryError(
                f"two slices at the same position {distances[i]:.2f} mm along the normal "
                f"({labels[frames[previous].instance]} and {labels[frames[i].instance]}): the "
                "series mixes acquisitions or reconstructions; send one, or load with "
                "LoadPolicy(drop_duplicates=True)",
                float(distances[i]),
            )
        if i < previous:  # keep the one given first
            kept[-1] = i
        dropped += 1
    notes = [f"{dropped} slice(s) at an already occupied position dropped"] if dropped else []
    return kept, notes


def _tilt(
    positions: npt.NDArray[np.float64], distances: npt.NDArray[np.float64], plane: StackGeometry
) -> tuple[npt.NDArray[np.float64], float]:
    """In-plane offsets (mm, along column then row cosines) and the tilt angle in degrees."""
    rel = positions - positions[0]
    offsets = np.stack([rel @ plane.orientation[3:], rel @ plane.orientation[:3]], axis=1)
    t = distances - distances[0]
    slope, *_ = np.linalg.lstsq(np.stack([t, np.ones_like(t)], axis=1), offsets, rcond=None)
    residual = offsets - np.outer(t, slope[0]) - slope[1]
    limit = max(0.1, 0.5 * min(plane.pixel_spacing))
    worst = float(np.max(np.abs(residual)))
    if worst > limit:
        raise GeometryError(
            f"slice positions do not lie on one line (off by up to {worst:.2f} mm): the series "
            "mixes stacks or was moved between slices",
            worst,
        )
    return offsets, float(np.degrees(np.arctan(np.hypot(*slope[0]))))


def _grid_spacing(steps: npt.NDArray[np.float64], policy: LoadPolicy) -> tuple[float, bool]:
    """The regular spacing to use, and whether the steps are already regular."""
    median = float(np.median(steps))
    regular = bool(np.all(np.abs(steps - median) <= max(0.01, policy.spacing_tolerance * median)))
    if regular:
        return median, True
    return (policy.resample_spacing_mm or median), False


def _check_gaps(
    steps: npt.NDArray[np.float64],
    distances: npt.NDArray[np.float64],
    spacing: float,
    policy: LoadPolicy,
) -> str:
    widest = int(np.argmax(steps))
    gap = float(steps[widest])
    where = f"between {distances[widest]:.1f} and {distances[widest + 1]:.1f} mm along the normal"
    if not policy.resample_uneven:
        raise GeometryError(
            f"uneven slice spacing (steps {steps.min():.2f}–{gap:.2f} mm) and resampling is "
            "switched off (LoadPolicy.resample_uneven)",
            gap,
        )
    if gap > policy.max_gap_mm or gap > policy.max_gap_ratio * spacing:
        raise GeometryError(
            f"a gap of {gap:.2f} mm {where} is too wide to interpolate (limits: "
            f"{policy.max_gap_mm:g} mm and {policy.max_gap_ratio:g}× the {spacing:.2f} mm grid); "
            "slices are missing — resend the complete series",
            gap,
        )
    count = round((distances[-1] - distances[0]) / spacing) + 1
    return (
        f"uneven slice spacing: steps {steps.min():.2f}–{gap:.2f} mm (median "
        f"{np.median(steps):.2f}); widest gap {gap:.2f} mm {where}; resampled by linear "
        f"interpolation onto a regular {spacing:.2f} mm grid ({len(steps) + 1} → {count} slices)"
    )


def _regular_plan(
    kept: list[int],
    *,
    positions: npt.NDArray[np.float64],
    plane: StackGeometry,
    tilt: float,
    tilted: bool,
    notes: list[str],
) -> StackPlan:
    n = len(kept)
    distances = positions @ plane.normal
    if tilted:  # TiltPolicy.KEEP: the slice axis follows the sheared stack
        step = (positions[-1] - positions[0]) / (n - 1)
        notes.append(
            f"gantry tilt {tilt:.1f}° kept: the slice axis of the affine is oblique to the image "
            "plane (sheared grid)"
        )
    else:
        step = plane.normal * (distances[-1] - distances[0]) / (n - 1)
    return StackPlan(
        order=tuple(kept),
        distances=distances,
        shifts=np.zeros((n, 2)),
        out_distances=None,
        affine=plane.affine(positions[0], step),
        tilt_deg=tilt,
        warnings=tuple(notes),
    )


def _check_tilt(tilt: float, regular: bool, policy: LoadPolicy) -> bool:
    """Whether the stack counts as tilted; refuse what the policy refuses."""
    if tilt <= policy.tilt_tolerance_deg:
        return False
    if tilt > policy.max_tilt_deg:
        raise GeometryError(
            f"slice positions drift {tilt:.1f}° off the image normal, more than any gantry tilt "
            f"({policy.max_tilt_deg:g}° limit): the positions do not belong to these images",
            tilt,
        )
    if policy.tilt is TiltPolicy.REFUSE:
        raise GeometryError(
            f"gantry tilt of {tilt:.1f}° (slices stacked obliquely to their image plane); this "
            "node is set to refuse tilted series (LoadPolicy.tilt)",
            tilt,
        )
    if policy.tilt is TiltPolicy.KEEP and not regular:
        raise GeometryError(
            f"gantry tilt of {tilt:.1f}° with uneven slice spacing cannot be kept as a sheared "
            "grid; load with LoadPolicy(tilt=TiltPolicy.RESAMPLE)",
            tilt,
        )
    return True


def plan_stack(frames: Sequence[FrameInfo], labels: Sequence[str], policy: LoadPolicy) -> StackPlan:
    """Sort, check and plan the grid of a stack of frames (see :class:`StackPlan`).

    Raises
    ------
    GeometryError
        Mixed orientations/sizes/spacings, duplicate positions, positions off a line, a gap too
        wide, or a tilt the policy refuses.
    """
    plane = common_plane(frames, labels)
    kept, notes = _sorted_unique(frames, labels, plane.normal, policy)
    if len(kept) < policy.min_slices:
        raise GeometryError(
            f"only {len(kept)} distinct slice position(s); at least {policy.min_slices} needed",
            len(kept),
        )
    positions = np.array([frames[i].position for i in kept])
    distances = positions @ plane.normal
    offsets, tilt = _tilt(positions, distances, plane)
    steps = np.diff(distances)
    spacing, regular = _grid_spacing(steps, policy)
    tilted = _check_tilt(tilt, regular, policy)
    if regular and (not tilted or policy.tilt is TiltPolicy.KEEP):
        return _regular_plan(
            kept, positions=positions, plane=plane, tilt=tilt, tilted=tilted, notes=notes
        )
    if regular:
        out = distances.copy()
    else:
        notes.append(_check_gaps(steps, distances, spacing, policy))
        count = round((distances[-1] - distances[0]) / spacing) + 1
        out = np.linspace(distances[0], distances[-1], max(count, 2))
    ref = (offsets.min(axis=0) + offsets.max(axis=0)) / 2 if tilted else np.zeros(2)
    shifts_mm = offsets - ref if tilted else np.zeros_like(offsets)
    origin = positions[0] + ref[0] * plane.orientation[3:] + ref[1] * plane.orientation[:3]
    if tilted:
        notes.append(
            f"gantry tilt {tilt:.1f}°: resampled onto an orthogonal grid (slice axis along the "
            f"image normal); slices shifted in-plane by up to {np.abs(shifts_mm).max():.1f} mm, "
            "uncovered voxels filled with the padding value"
        )
    step = (out[-1] - out[0]) / (len(out) - 1)
    return StackPlan(
        order=tuple(kept),
        distances=distances,
        shifts=shifts_mm / np.asarray(plane.pixel_spacing),
        out_distances=out,
        affine=plane.affine(origin, plane.normal * step),
        tilt_deg=tilt,
        warnings=tuple(notes),
    )


def resample_stack(
    src: npt.NDArray[np.float32], plan: StackPlan, fill: float
) -> npt.NDArray[np.float32]:
    """Interpolate the sorted source slices onto the planned regular, orthogonal grid."""
    from scipy import ndimage

    if plan.out_distances is None:
        return src
    d = plan.distances
    cache: dict[int, npt.NDArray[np.float32]] = {}

    def shifted(i: int) -> npt.NDArray[np.float32]:
        if i not in cache:
            if len(cache) > 2:
                cache.pop(min(cache))
            shift = plan.shifts[i]
            if np.max(np.abs(shift)) < 1e-3:
                cache[i] = src[i]
            else:
                cache[i] = ndimage.shift(
                    src[i], shift, order=1, mode="constant", cval=fill, prefilter=False
                ).astype(np.float32, copy=False)
        return cache[i]

    out = np.empty((len(plan.out_distances), *src.shape[1:]), dtype=np.float32)
    for j, target in enumerate(plan.out_distances):
        i = int(np.clip(np.searchsorted(d, target, side="right") - 1, 0, len(d) - 2))
        w = float(np.clip((target - d[i]) / (d[i + 1] - d[i]), 0.0, 1.0))
        if w < 1e-6:
            out[j] = shifted(i)
        elif w > 1 - 1e-6:
            out[j] = shifted(i + 1)
        else:
            np.multiply(shifted(i), 1 - w, out=out[j])
            out[j] += w * shifted(i + 1)
    return out


def tissue_shifted_out(src: npt.NDArray[np.float32], plan: StackPlan, threshold: float) -> int:
    """How many source voxels above ``threshold`` HU the tilt correction moves off the grid."""
    rows, cols = src.shape[1:]
    lost = 0
    for i, (shift_r, shift_c) in enumerate(plan.shifts):
        plane = src[i] > threshold
        # source row r lands on r + shift: outside [0, rows - 1] once it is past the edge
        keep_r = slice(
            max(0, int(np.ceil(-shift_r))), min(rows, int(np.floor(rows - 1 - shift_r)) + 1)
        )
        keep_c = slice(
            max(0, int(np.ceil(-shift_c))), min(cols, int(np.floor(cols - 1 - shift_c)) + 1)
        )
        lost += int(plane.sum()) - int(plane[keep_r, keep_c].sum())
    return lost
