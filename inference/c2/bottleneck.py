"""Seeds of the C2 pediculoisthmic components: the bottleneck between the body and the laminae.

Frame: LPS millimetres, on the coarse grid of :mod:`.locate`. On each side of the midsagittal
plane, the only bone joining the C2 body to the posterior arch of that side is the
pediculoisthmic component (PIC). The widest path between them — the largest clearance θ such
that bone deeper than θ still connects body and lamina — has its narrowest point in the PIC, and
θ is about half the PIC's width. The seed is the centre of that narrowest point; its direction is
the published screw direction (≈ 31° medial, ≈ 19.5° cranial [Naderi 2004]), which the MPD sweep
refines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.c2.locate import C2Frame, CoarseGrid, screw_direction
from inference.c2.sections import BoolArray, FloatArray
from inference.results import Side

logger = logging.getLogger(__name__)

MEDIAL_DEG = 31.0
CRANIAL_DEG = 19.5
CROP_MM = 45.0
# Where the body and the posterior arch are, in the C2 frame (mm from the body centroid).
SLAB_MM = (-14.0, 10.0)
POSTERIOR_AP_MM = -16.0
POSTERIOR_LAT_MM = 12.0
SEARCH_ITERATIONS = 12


@dataclass(frozen=True, slots=True)
class PedicleSeed:
    """A line through one pediculoisthmic component: ``point`` at its bottleneck, ``axis`` the
    screw direction (posterior → anterior), ``clearance_mm`` the bone depth at the bottleneck
    (about half its width)."""

    side: Side
    point: FloatArray
    axis: FloatArray
    clearance_mm: float


@dataclass(frozen=True, slots=True)
class _Crop:
    """A box of the coarse grid around the C2 body with the frame coordinates of its voxels."""

    index: tuple[slice, slice, slice]
    lateral_left: FloatArray
    anterior: FloatArray
    cranial: FloatArray
    world: FloatArray


def _crop(grid: CoarseGrid, frame: C2Frame) -> _Crop:
    centre = grid.index(frame.origin[None, :])[0]
    half = CROP_MM / grid.spacing
    shape = grid.data.shape
    lo = [max(0, int(c - h)) for c, h in zip(centre, half, strict=True)]
    hi = [min(n, int(c + h) + 1) for c, h, n in zip(centre, half, shape, strict=True)]
    index = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    k, i, j = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij")
    world = grid.world(np.stack([k, i, j], axis=-1).reshape(-1, 3)).reshape((*k.shape, 3))
    rel = world - frame.origin
    return _Crop(index, rel @ frame.left, rel @ frame.anterior, rel @ frame.cranial, world)


def find_pedicle_seeds(
    dist: npt.NDArray[np.float32], column: BoolArray, grid: CoarseGrid, frame: C2Frame
) -> list[PedicleSeed]:
    """One seed per side where the body and that side's posterior arch are joined by bone.

    ``dist`` is each coarse voxel's depth (mm) inside the solid bone, ``column`` the C2 body/dens
    core from :func:`.locate.find_c2_column`.
    """
    crop = _crop(grid, frame)
    depth = dist[crop.index]
    seeds = []
    for side, sign in ((Side.LEFT, 1.0), (Side.RIGHT, -1.0)):
        lat = sign * crop.lateral_left
        allowed = (
            (depth > 0) & (lat >= 1.0) & (crop.cranial >= SLAB_MM[0]) & (crop.cranial <= SLAB_MM[1])
        )
        sources = allowed & column[crop.index]
        targets = allowed & (crop.anterior <= POSTERIOR_AP_MM) & (lat >= POSTERIOR_LAT_MM)
        found = _bottleneck(depth, allowed, sources, targets)
        if found is None:
            logger.debug("no bone joins the C2 body to the %s posterior arch", side)
            continue
        theta, neck = found
        point = crop.world[neck].mean(axis=0)
        axis = screw_direction(frame, side, MEDIAL_DEG, CRANIAL_DEG)
        seeds.append(PedicleSeed(side, point, axis, theta))
    return seeds


def _joined(mask: BoolArray, sources: BoolArray, targets: BoolArray) -> BoolArray | None:
    """The union of components of ``mask`` touching both ``sources`` and ``targets``."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    common = np.intersect1d(np.unique(labels[sources & mask]), np.unique(labels[targets & mask]))
    common = common[common > 0]
    if len(common) == 0:
        return None
    out: BoolArray = np.isin(labels, common)
    return out


def _bottleneck(
    depth: npt.NDArray[np.float32], allowed: BoolArray, sources: BoolArray, targets: BoolArray
) -> tuple[float, BoolArray] | None:
    """Largest depth θ keeping sources and targets joined, and the voxels of the neck there."""
    if _joined(allowed, sources, targets) is None:
        return None
    lo, hi = 0.0, float(depth[sources].max()) if sources.any() else 0.0
    for _ in range(SEARCH_ITERATIONS):
        mid = (lo + hi) / 2
        if _joined(allowed & (depth >= mid), sources, targets) is None:
            hi = mid
        else:
            lo = mid
    region = _joined(allowed & (depth >= lo), sources, targets)
    if region is None:
        return None
    above = region & (depth >= lo + 0.75)
    near_src = _joined(above, sources, sources)
    near_tgt = _joined(above, targets, targets)
    if near_src is None or near_tgt is None:
        return lo, region & (depth <= lo + 0.25)
    d_src = ndimage.distance_transform_edt(~near_src)
    d_tgt = ndimage.distance_transform_edt(~near_tgt)
    total = np.where(region, d_src + d_tgt, np.inf)
    neck: BoolArray = total <= total.min() + 1.5
    return lo, neck
