"""Body boundaries put on the discs (working grid indexed [slice, row, col], mm per axis).

The geodesic growth (``assign.py``) puts the border between two vertebral bodies where the
fronts from their body cores meet. A core that sits off-centre in its body moves that border
off the disc: on the real 3 mm CT ``totalseg-abdomen`` T12 is cut by the top of the field of
view and its low-density marrow (95–105 HU) is left out of the bone mask, so T12's core is a
few slices at the top while L1's reaches its upper endplate; L1's front took the T12/L1 disc
and T12's lowest 6 mm. HU alone cannot say disc there (the partial-volumed disc reads 100–130
HU, as bright as T12's marrow), but its place can: along the line joining two body cores, the
mean HU over the body's cross-section falls into the disc between the two endplates and rises
on both sides of it, while marrow has no endplate on both sides within the span.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.geometry import FloatArray

logger = logging.getLogger(__name__)

# a voxel is moved to the other body only when this far beyond the disc's mid-plane (a real
# endplate is concave and a wedge disc tilts against the plane across the core axis)
MARGIN_MM = 2.0
# the valley between the endplates must be at least this much darker than the dimmer of them
MIN_DEPTH_HU = 15.0
# the profile's cross-section: within this percentile of the cores' distances from the axis
CORE_PERCENTILE = 90.0
# a cross-section wider than this is not two vertebral bodies' (a core holding the sacrum's
# alae or an ilium: the line between the centroids runs off the column)
MAX_RADIUS_MM = 25.0
# labelled voxels up to this far beyond the cross-section are moved: the body wall (cores are
# the bone deeper than 5-8 mm, see instances.py)
WALL_MM = 8.0
# between the endplates, voxels darker than this fraction of the way from the valley up to
# the dimmer endplate are disc, not bone
DISC_FRACTION = 0.5
MIN_BIN_VOXELS = 10
# the two endplate peaks are at most this far apart (a lumbar disc is 8-15 mm tall)
MAX_DISC_MM = 18.0
# the contact plane: at least this many voxels, at most this tilt from the cores' line
MIN_CONTACT = 30
MAX_TILT_DEG = 40.0


@dataclass(frozen=True, slots=True)
class Disc:
    """The disc between two body cores, on the axis ``origin + t · axis`` (mm, grid frame).

    ``normal`` is the disc's plane normal (the two bodies' contact surface, or ``axis``),
    ``t_mm`` the valley's position along it from ``origin`` (the disc's mid-plane),
    ``lower_mm`` and ``upper_mm`` the two endplate peaks around it, ``level_hu`` the disc/bone
    level between them, ``radius_mm`` the cross-section's radius about ``axis`` and
    ``depth_hu`` the valley's depth.
    """

    origin: FloatArray
    axis: FloatArray
    normal: FloatArray
    t_mm: float
    lower_mm: float
    upper_mm: float
    level_hu: float
    radius_mm: float
    depth_hu: float


def split_at_disc_valleys(
    labels: npt.NDArray[np.uint8],
    core_rank: npt.NDArray[np.int16],
    smooth_hu: npt.NDArray[np.float32],
    spacing: npt.ArrayLike,
) -> npt.NDArray[np.uint8]:
    """Move the border between vertebrae ``k`` and ``k + 1`` (consecutive body cores,
    ``core_rank``) onto the disc between them, and take the disc out (in place; returned).

    For each pair, :func:`find_disc` looks for the valley of the cross-section mean HU
    (``smooth_hu``) between the two cores, along the normal of the plane where their labels
    meet and along the line joining the cores; the deeper valley is the disc. Within
    ``WALL_MM`` of the cross-section, a voxel of ``k`` more than ``MARGIN_MM`` beyond the
    valley's mid-plane towards ``k + 1`` becomes ``k + 1`` and vice versa; voxels of either
    between the two endplate peaks and darker than the disc level become background.
    ``spacing``: mm per array axis. Pairs without a valley deeper than ``MIN_DEPTH_HU`` are
    left as they are.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    ranks = set(np.unique(core_rank[core_rank > 0]).tolist())
    for k in sorted(ranks):
        if k + 1 not in ranks:
            continue
        a, b = core_rank == k, core_rank == k + 1
        box = _box(a | b, sp)
        # the disc shows deepest along its own normal: the contact plane's or the cores' line
        found = [
            find_disc(a[box], b[box], smooth_hu[box], sp, contact)
            for contact in (_contact(labels[box], k), None)
        ]
        discs = [d for d in found if d is not None]
        disc = max(discs, key=lambda d: d.depth_hu) if discs else None
        if disc is not None:
            _apply(labels[box], smooth_hu[box], disc, k, sp)
    return labels


def find_disc(
    a: npt.NDArray[np.bool_],
    b: npt.NDArray[np.bool_],
    smooth_hu: npt.NDArray[np.float32],
    spacing: FloatArray,
    contact: npt.NDArray[np.bool_] | None = None,
) -> Disc | None:
    """The disc between body cores ``a`` and ``b`` (masks on the grid of ``smooth_hu``), or
    ``None`` without a valley deeper than ``MIN_DEPTH_HU`` between two peaks inside the span
    at most ``MAX_DISC_MM`` apart, or for cores wider than bodies (cross-section radius above
    ``MAX_RADIUS_MM``).

    The profile is the mean HU in 1 mm bins along the disc's normal, over the voxels within
    the ``CORE_PERCENTILE`` of the cores' distances from the line joining their centroids
    (between the two); its valley is the bin deepest below the lower of the highest values on
    either side of it. The normal is that of the plane fitted to the ``contact`` voxels
    (where the two bodies' labels meet, which the growth shapes like the disc, wedge and
    tilt included, even where it put it off the disc) within the cross-section, or the line
    itself when they are too few or tilted more than ``MAX_TILT_DEG`` from it.
    """
    pa, pb = np.argwhere(a) * spacing, np.argwhere(b) * spacing
    if len(pa) == 0 or len(pb) == 0:
        return None
    origin = pa.mean(axis=0)
    span = float(np.linalg.norm(pb.mean(axis=0) - origin))
    if span < 2.0:
        return None
    axis = (pb.mean(axis=0) - origin) / span
    _, r_core = _along_across(np.concatenate([pa, pb]), origin, axis)
    radius = float(np.percentile(r_core, CORE_PERCENTILE))
    if radius > MAX_RADIUS_MM:
        return None
    normal = _plane_normal(contact, spacing, origin, axis, radius + WALL_MM)
    grid = np.argwhere(np.ones(a.shape, dtype=bool)) * spacing
    _, r = _along_across(grid, origin, axis)
    t = (grid - origin) @ normal
    end = float((pb.mean(axis=0) - origin) @ normal)
    inner = (r <= radius) & (t >= 0.0) & (t <= end)
    bins = np.floor(t[inner]).astype(np.int64)
    n = int(np.floor(end)) + 1
    count = np.bincount(bins, minlength=n)
    total = np.bincount(bins, weights=smooth_hu.ravel()[inner].astype(np.float64), minlength=n)
    ok = count >= MIN_BIN_VOXELS
    if ok.sum() < 5:
        return None
    prof = np.where(ok, total / np.maximum(count, 1), -np.inf)
    left = np.maximum.accumulate(prof)
    right = np.maximum.accumulate(prof[::-1])[::-1]
    depth = np.where(ok, np.minimum(left, right) - np.where(ok, prof, 0.0), -np.inf)
    j = int(np.argmax(depth))
    lo = int(np.argmax(prof[: j + 1]))
    hi = j + int(np.argmax(prof[j:]))
    # an endplate on each side within the span, close enough for a disc: else marrow
    if depth[j] < MIN_DEPTH_HU or lo == 0 or hi == n - 1 or hi - lo > MAX_DISC_MM:
        return None
    level = prof[j] + DISC_FRACTION * (min(prof[lo], prof[hi]) - prof[j])
    return Disc(
        origin, axis, normal, j + 0.5, lo + 0.5, hi + 0.5, float(level), radius, float(depth[j])
    )


def _apply(
    labels: npt.NDArray[np.uint8],
    smooth_hu: npt.NDArray[np.float32],
    disc: Disc,
    k: int,
    spacing: FloatArray,
) -> None:
    """Move ``k``/``k + 1`` voxels across ``disc``'s mid-plane and clear its dark voxels."""
    mine = (labels == k) | (labels == k + 1)
    idx = np.argwhere(mine)
    _, r = _along_across(idx * spacing, disc.origin, disc.axis)
    t = (idx * spacing - disc.origin) @ disc.normal
    near = r <= disc.radius_mm + WALL_MM
    lab = labels[tuple(idx.T)]
    new = lab.copy()
    new[near & (lab == k) & (t > disc.t_mm + MARGIN_MM)] = k + 1
    new[near & (lab == k + 1) & (t < disc.t_mm - MARGIN_MM)] = k
    between = near & (t > disc.lower_mm) & (t < disc.upper_mm)
    new[between & (smooth_hu[tuple(idx.T)] < disc.level_hu)] = 0
    logger.debug(
        "disc %d/%d: at %.1f mm (endplates %.1f, %.1f), depth %.0f HU, tilt %.1f deg, "
        "moved %d down and %d up, %d cleared",
        k,
        k + 1,
        disc.t_mm,
        disc.lower_mm,
        disc.upper_mm,
        disc.depth_hu,
        np.degrees(np.arccos(np.clip(disc.normal @ disc.axis, -1.0, 1.0))),
        int(((lab == k) & (new == k + 1)).sum()),
        int(((lab == k + 1) & (new == k)).sum()),
        int(((lab > 0) & (new == 0)).sum()),
    )
    labels[tuple(idx.T)] = new


def _contact(labels: npt.NDArray[np.uint8], k: int) -> npt.NDArray[np.bool_]:
    """Voxels of ``k`` with a face neighbour labelled ``k + 1``."""
    mine, other = labels == k, labels == k + 1
    out = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        for shift in (1, -1):
            out |= mine & np.roll(other, shift, axis=axis)
    return out


def _plane_normal(
    contact: npt.NDArray[np.bool_] | None,
    spacing: FloatArray,
    origin: FloatArray,
    axis: FloatArray,
    radius: float,
) -> FloatArray:
    """Normal (towards ``axis``) of the plane fitted to the ``contact`` voxels within
    ``radius`` of the line ``origin + t · axis``; ``axis`` itself when fewer than
    ``MIN_CONTACT`` or tilted more than ``MAX_TILT_DEG`` from it."""
    if contact is None:
        return axis
    pts = np.argwhere(contact) * spacing
    _, r = _along_across(pts, origin, axis)
    pts = pts[r <= radius]
    if len(pts) < MIN_CONTACT:
        return axis
    _, vecs = np.linalg.eigh(np.cov((pts - pts.mean(axis=0)).T))
    normal = vecs[:, 0] * (1.0 if vecs[:, 0] @ axis >= 0 else -1.0)
    if float(normal @ axis) < np.cos(np.radians(MAX_TILT_DEG)):
        return axis
    out: FloatArray = normal
    return out


def _along_across(
    points: FloatArray, origin: FloatArray, axis: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Each point's position along the line ``origin + t · axis`` and distance from it (mm)."""
    rel = points - origin
    t = rel @ axis
    r = np.linalg.norm(rel - np.outer(t, axis), axis=1)
    return t, r


def _box(mask: npt.NDArray[np.bool_], spacing: FloatArray) -> tuple[slice, ...]:
    """The box around ``mask`` grown by the cores' reach (25 mm) plus ``WALL_MM``, clipped."""
    idx = np.argwhere(mask)
    pad = np.ceil((25.0 + WALL_MM) / spacing).astype(np.int64)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
