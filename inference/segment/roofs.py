"""Canal-roof markers: each vertebra's lamina, found behind its spinal canal (working grid
[slice, row, col], affine → LPS mm).

On thick slices a pedicle is thin enough to be all cortex, and the weighted growth
(``assign.py``) crosses it at the cortex weight along its whole length, while a neighbour's
marrow reaches the arch across one facet or a spinous contact for two cortical walls: the arch
went to the neighbour (3 mm phantoms: the whole L5 arch to S1). Seeding each arch on its own
lamina gives it back. Tried and not kept: seeding 30 mm wide only the roofs the first growth
gave away (seed 9, 1.25 mm: L4 0.942 -> 0.783, a wide seed took the neighbour's arch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import BoolArray, FloatArray, mm_to_index, unit, voxel_spacing
from inference.segment.assign import GAP_LOW_HU

# the canal behind a body (see canal_roof_markers): its depth range and the marker's size
CANAL_MIN_MM = 6.0
CANAL_MAX_MM = 30.0
ROOF_HALF_THICKNESS_MM = 1.5
ROOF_HALF_WIDTH_MM = 12.0
ROOF_DEPTH_MM = 8.0


@dataclass(frozen=True, slots=True)
class Roof:
    """A canal roof marker: ``point`` (patient mm) on the lamina junction, the slab around it
    (``normal`` = the vertebra's axis, ``lateral``, ``back``: unit vectors) and the label."""

    point: FloatArray
    normal: FloatArray
    lateral: FloatArray
    back: FloatArray
    value: int


def canal_roof_markers(
    bone: BoolArray,
    aff: FloatArray,
    cents: FloatArray,
    cranial: FloatArray,
    hu: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.int16]:
    """Markers on each vertebra's canal roof: the first bone behind its spinal canal.

    From each body centroid of ``cents`` (cranial first, patient mm; not the last, which may
    be the sacrum) a ray runs backwards in the vertebra's sagittal plane (⊥ the line through
    its neighbours' centroids, so lordosis tilts it with the vertebra): through the body,
    across the canal (a gap of ``CANAL_MIN_MM``–``CANAL_MAX_MM``), onto the lamina junction
    of the same vertebra. The bone of a slab through that point (``ROOF_HALF_THICKNESS_MM``
    along the column, ``ROOF_HALF_WIDTH_MM`` sideways, ``ROOF_DEPTH_MM`` front to back) that
    is connected to it gets the vertebra's rank (1 = most cranial), so the arch grows from its
    own lamina: a thin pedicle that is all cortex on thick slices costs more to cross than a
    contact with the neighbour's processes, and the arch went to the neighbour. With ``hu``
    (same grid), thin dark gaps (a facet joint: ``GAP_LOW_HU`` below the grey closing) part
    the slab, so a neighbour's articular process touching the lamina stays out.
    """
    out = np.zeros(bone.shape, dtype=np.int16)
    n = len(cents)
    lateral = unit(np.cross(cranial, [0.0, 1.0, 0.0]))
    back = unit(np.cross(lateral, cranial))  # LPS +y when cranial is +z
    steps = np.arange(0.0, 90.0, 0.5)
    for k in range(n - 1):
        tangent = unit(cents[max(k - 1, 0)] - cents[k + 1])
        post = unit(back - (back @ tangent) * tangent)
        hit = _behind_canal(bone, aff, cents[k] + np.outer(steps, post))
        if hit is not None:
            side = unit(np.cross(tangent, post))
            _paint_roof(out, bone, aff, Roof(hit, tangent, side, post, k + 1), hu)
    return out


def _behind_canal(bone: BoolArray, aff: FloatArray, ray: FloatArray) -> FloatArray | None:
    """The first bone point of ``ray`` (0.5 mm steps, patient mm, starting in a body) after a
    gap as deep as a canal, or ``None``."""
    idx = np.rint(mm_to_index(aff, ray)).astype(int)
    inside = np.all((idx >= 0) & (idx < bone.shape), axis=1)
    on = np.zeros(len(ray), dtype=bool)
    on[inside] = bone[tuple(idx[inside].T)]
    if not on[0]:
        return None
    first_gap = int(np.argmin(on))
    if on[first_gap]:
        return None
    after = np.nonzero(on[first_gap:])[0]
    if after.size == 0:
        return None
    depth = 0.5 * float(after[0])
    if not CANAL_MIN_MM <= depth <= CANAL_MAX_MM:
        return None
    out: FloatArray = ray[first_gap + int(after[0])]
    return out


def _paint_roof(
    out: npt.NDArray[np.int16],
    bone: BoolArray,
    aff: FloatArray,
    roof: Roof,
    hu: npt.NDArray[np.float32] | None,
) -> None:
    """Set ``roof.value`` on the bone of the roof's slab (see :class:`Roof`) connected to its
    point (not through thin dark gaps when ``hu`` is given), where ``out`` is still 0."""
    spacing = voxel_spacing(aff)
    c = np.rint(mm_to_index(aff, roof.point)[0]).astype(int)
    r = np.ceil(max(ROOF_HALF_WIDTH_MM, ROOF_DEPTH_MM) / spacing).astype(int)
    lo, hi = np.maximum(c - r, 0), np.minimum(c + r + 1, bone.shape)
    if np.any(hi <= lo) or np.any(c < lo) or np.any(c >= hi):
        return
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    axes = [np.arange(a, b) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float64)
    rel = grid @ aff[:3, :3].T + aff[:3, 3] - roof.point
    slab = (np.abs(rel @ roof.normal) <= ROOF_HALF_THICKNESS_MM) & (
        np.abs(rel @ roof.lateral) <= ROOF_HALF_WIDTH_MM
    )
    slab &= np.abs(rel @ roof.back) <= ROOF_DEPTH_MM
    solid = slab & bone[box]
    if hu is not None:
        closing = ndimage.grey_closing(hu[box], footprint=ndimage.generate_binary_structure(3, 2))
        solid &= closing - hu[box] <= GAP_LOW_HU
    cc, _ = ndimage.label(solid)
    here = cc[tuple(c - lo)]
    if here == 0:
        return
    sub = out[box]
    sub[(cc == here) & (sub == 0)] = roof.value
