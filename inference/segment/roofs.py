"""Canal-roof markers: each vertebra's lamina, found behind its spinal canal (working grid
[slice, row, col], affine → LPS mm).

On thick slices a pedicle is thin enough to be all cortex, and the weighted growth
(``assign.py``) crosses it at the cortex weight along its whole length, while a neighbour's
marrow reaches the arch across one facet or a spinous contact for two cortical walls: the arch
went to the neighbour (3 mm phantoms: the whole L5 arch to S1). Seeding each arch on its own
lamina gives it back. Tried and not kept: seeding 30 mm wide only the roofs the first growth
gave away (seed 9, 1.25 mm: L4 0.942 -> 0.783, a wide seed took the neighbour's arch).

The roof alone does not hold the pedicles where a neighbour's bone touches them with no image
border between (a narrowed, wedged L5/S1 disc on 3 mm slices: S1's thick sacral base reaches
within a few mm of L5's pedicles, L5's body core is 20 mm away): the canal's ring (the bone
around the canal's lumen in the same slab: body wall, pedicles, laminae) is seeded too.
"""

from __future__ import annotations

from collections.abc import Collection
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
ROOF_ENTER_MM = 3.0
# the canal's ring (see canal_roof_markers): bone this close to the lumen, lumens up to this area
RING_MM = 5.0
RING_MAX_LUMEN_MM2 = 700.0


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
    *,
    first: npt.NDArray[np.uint8] | None = None,
    rings: Collection[int] | None = None,
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

    The canal's ring gets the rank too: in the slab through the canal's middle on the ray
    (``ROOF_HALF_THICKNESS_MM`` along the column), the bone within ``RING_MM`` of the lumen
    (the non-bone component holding that point) and connected to the roof's point, when the
    lumen is closed (at most ``RING_MAX_LUMEN_MM2`` per slab thickness: a foramen opens it).
    Only the ranks in ``rings`` get a ring (``None``: all). With ``first`` (the labels of a
    first growth, same ranks), ring voxels it gave to the
    vertebra above are left out: that vertebra's inferior articular processes reach down beside
    this one's laminae (a narrowed disc: seed 9, 1.25 mm), while the vertebra below is the one
    whose bone takes the pedicles (S1's sacral base).
    """
    out = np.zeros(bone.shape, dtype=np.int16)
    n = len(cents)
    lateral = unit(np.cross(cranial, [0.0, 1.0, 0.0]))
    back = unit(np.cross(lateral, cranial))  # LPS +y when cranial is +z
    steps = np.arange(0.0, 90.0, 0.5)
    for k in range(n - 1):
        tangent = unit(cents[max(k - 1, 0)] - cents[k + 1])
        post = unit(back - (back @ tangent) * tangent)
        found = _behind_canal(bone, aff, cents[k] + np.outer(steps, post))
        if found is not None:
            side = unit(np.cross(tangent, post))
            roof = Roof(found[0], tangent, side, post, k + 1)
            _paint_roof(out, bone, aff, roof, hu)
            if rings is None or k + 1 in rings:
                _paint_ring(out, bone, aff, roof, hu, middle=found[1], first=first)
    return out


def _behind_canal(
    bone: BoolArray, aff: FloatArray, ray: FloatArray
) -> tuple[FloatArray, FloatArray] | None:
    """The first bone point of ``ray`` (0.5 mm steps, patient mm, starting in a body) after a
    gap as deep as a canal and the gap's middle, or ``None``."""
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
    hit: FloatArray = ray[first_gap + int(after[0])]
    middle: FloatArray = ray[first_gap + int(after[0]) // 2]
    return hit, middle


def _paint_roof(
    out: npt.NDArray[np.int16],
    bone: BoolArray,
    aff: FloatArray,
    roof: Roof,
    hu: npt.NDArray[np.float32] | None,
) -> None:
    """Set ``roof.value`` on the bone of the roof's slab (see :class:`Roof`) connected to its
    point (not through thin dark gaps when ``hu`` is given), where ``out`` is still 0."""
    found = _slab_box(bone.shape, aff, roof.point, max(ROOF_HALF_WIDTH_MM, ROOF_DEPTH_MM))
    if found is None:
        return
    box, _, rel = found
    slab = (np.abs(rel @ roof.normal) <= ROOF_HALF_THICKNESS_MM) & (
        np.abs(rel @ roof.lateral) <= ROOF_HALF_WIDTH_MM
    )
    slab &= np.abs(rel @ roof.back) <= ROOF_DEPTH_MM
    solid = slab & bone[box]
    if hu is not None:
        closing = ndimage.grey_closing(hu[box], footprint=ndimage.generate_binary_structure(3, 2))
        solid &= closing - hu[box] <= GAP_LOW_HU
    cc, _ = ndimage.label(solid)
    # the canal-side voxel can be a partial-volumed edge that the gap test drops (3 mm
    # slices): the first solid voxel within ROOF_ENTER_MM behind it stands for the lamina
    ahead = np.hypot(rel @ roof.lateral, rel @ roof.normal) <= 1.0
    ahead &= (rel @ roof.back >= 0.0) & (rel @ roof.back <= ROOF_ENTER_MM) & (cc > 0)
    if not ahead.any():
        return
    first = np.argwhere(ahead)[int(np.argmin((rel @ roof.back)[ahead]))]
    sub = out[box]
    sub[(cc == cc[tuple(first)]) & (sub == 0)] = roof.value


def _slab_box(
    shape: tuple[int, ...], aff: FloatArray, point: FloatArray, half_mm: float
) -> tuple[tuple[slice, ...], npt.NDArray[np.intp], FloatArray] | None:
    """The index box within ``half_mm`` of ``point`` (patient mm), the point's index in it and
    the patient-mm offsets from the point of the box's voxel centres; ``None`` when the point
    is off the grid."""
    spacing = voxel_spacing(aff)
    c = np.rint(mm_to_index(aff, point)[0]).astype(int)
    r = np.ceil(half_mm / spacing).astype(int)
    lo, hi = np.maximum(c - r, 0), np.minimum(c + r + 1, shape)
    if np.any(hi <= lo) or np.any(c < lo) or np.any(c >= hi):
        return None
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    axes = [np.arange(a, b) for a, b in zip(lo, hi, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float64)
    rel: FloatArray = grid @ aff[:3, :3].T + aff[:3, 3] - point
    return box, c - lo, rel


def _paint_ring(
    out: npt.NDArray[np.int16],
    bone: BoolArray,
    aff: FloatArray,
    roof: Roof,
    hu: npt.NDArray[np.float32] | None,
    *,
    middle: FloatArray,
    first: npt.NDArray[np.uint8] | None,
) -> None:
    """Set ``roof.value`` on the canal's ring around ``middle`` (patient mm, the canal's
    middle; see :func:`canal_roof_markers`) up to the roof, in its pieces that touch the roof
    already painted with that value, where ``out`` is still 0 (and ``first`` does not hold the
    vertebra above)."""
    found = _slab_box(bone.shape, aff, middle, CANAL_MAX_MM + RING_MM)
    if found is None:
        return
    box, centre, rel = found
    spacing = voxel_spacing(aff)
    slab = np.abs(rel @ roof.normal) <= ROOF_HALF_THICKNESS_MM
    solid = bone[box]
    lumens, _ = ndimage.label(slab & ~solid)
    here = lumens[tuple(centre)]
    if here == 0:
        return
    lumen = lumens == here
    area = float(lumen.sum()) * float(np.prod(spacing)) / (2.0 * ROOF_HALF_THICKNESS_MM)
    if area > RING_MAX_LUMEN_MM2:
        return
    near = slab & solid & (ndimage.distance_transform_edt(~lumen, sampling=spacing) <= RING_MM)
    near &= rel @ roof.back <= float((roof.point - middle) @ roof.back)
    if hu is not None:
        closing = ndimage.grey_closing(hu[box], footprint=ndimage.generate_binary_structure(3, 2))
        near &= closing - hu[box] <= GAP_LOW_HU
    if first is not None and roof.value > 1:
        near &= first[box] != roof.value - 1
    pieces, _ = ndimage.label(near)
    sub = out[box]
    on_roof = np.unique(pieces[(sub == roof.value) & (pieces > 0)])
    sub[np.isin(pieces, on_roof) & (pieces > 0) & (sub == 0)] = roof.value
