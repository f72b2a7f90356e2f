"""Thin processes in coarse voxels: rings round small holes, on the native grid ([slice, row,
col], ``spacing`` mm per axis; no patient frame needed).

In coarse voxels (the real 3 mm CT) a thin process in cross-section is a ring of
partial-volumed cortex (150-300 HU) round fatty marrow. The border rule
(:func:`inference.segment.bone.inside_edge`) decides each voxel on its own step and leaves such
a ring out where the label does not already hold it; TotalSegmentator counts it as bone. The
evidence is the shape the voxels make with the label, not their HU alone: background voxels of
at least ``RING_HU`` within ``RING_LAYERS`` steps (26-neighbours) of a label that, with the
label, enclose a small in-plane hole (:func:`inference.segment.bone.fill_small_holes`) take the
label, and so does the hole; a bright rim beside soft tissue encloses nothing and stays out.

Only vertebra labels up to ``LAST_WIDENED`` (VerSe L6) are widened: the sacrum's alae and the
pelvic ring hold holes of soft tissue (on the 3 mm isotropic phantoms the sacrum lost 0.04).
Measured by bench/real_ct_rules.py (``ringlumbar``: real CT vs TotalSegmentator v2, phantoms
at 3 mm isotropic and bench_lumbar's 3 mm-slice seed).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import FloatArray

RING_HU = 150.0
RING_LAYERS = 3
LAST_WIDENED = 25  # VerSe L6; the sacrum (26) and other bone (255) are left alone

HoleFiller = Callable[[npt.NDArray[np.uint8], FloatArray], npt.NDArray[np.uint8]]


def close_thin_rings(
    labels: npt.NDArray[np.uint8],
    hu: npt.NDArray[np.float32],
    spacing: FloatArray,
    fill_holes: HoleFiller,
) -> npt.NDArray[np.uint8]:
    """``labels`` with the small holes that a vertebra label and its ring of ``RING_HU``
    background voxels enclose in-plane, and the ring voxels touching them, given that label.

    ``fill_holes(labels, spacing)`` fills the holes a label encloses in-plane
    (:func:`inference.segment.bone.fill_small_holes`, passed in: bone.py calls this module).
    """
    widen = (labels > 0) & (labels <= LAST_WIDENED)
    if not widen.any():
        return labels
    tentative = np.where(widen, labels, 0).astype(np.uint8)
    free = (labels == 0) & (hu >= RING_HU)
    cube = np.ones((3, 3, 3), dtype=bool)
    for _ in range(RING_LAYERS):
        near = ndimage.grey_dilation(tentative, footprint=cube)
        take = free & (tentative == 0) & (near > 0)
        if not take.any():
            break
        tentative[take] = near[take]
    filled = fill_holes(tentative, spacing)
    holes = _own_holes((filled != tentative) & (labels == 0), filled, labels)
    if not holes.any():
        return labels
    ring = (tentative != 0) & ~widen & ndimage.binary_dilation(holes, cube)
    keep = holes | ring
    out = labels.copy()
    out[keep] = filled[keep]
    return out


def _own_holes(
    holes: npt.NDArray[np.bool_], filled: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]
) -> npt.NDArray[np.bool_]:
    """The pieces of ``holes`` (26-connected) none of whose voxels touches a voxel that
    ``labels`` gives to another bone than the one ``filled`` gives the voxel: a gap between
    two bones (a facet joint, L5's process against the sacrum) is not a hole in one of them."""
    cube = np.ones((3, 3, 3), dtype=bool)
    high = ndimage.grey_dilation(labels, footprint=cube)
    low = ndimage.grey_erosion(np.where(labels == 0, 255, labels).astype(np.uint8), footprint=cube)
    foreign = holes & ((high > filled) | ((low < filled) & (low > 0)))
    pieces, _ = ndimage.label(holes, structure=cube)
    bad = np.unique(pieces[foreign])
    out: npt.NDArray[np.bool_] = holes & ~np.isin(pieces, bad[bad > 0])
    return out
