"""Bone from Hounsfield units on the working grid (indexed [slice, row, col])."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import BoolArray

CORTEX_HU = 250.0
CANCELLOUS_HU = 115.0
EDGE_FRACTION = 0.7


def bone_mask(hu: npt.NDArray[np.float32], spacing_mm: float = 1.0) -> BoolArray:
    """Bone = dense bone (> 250 HU after light smoothing) with the cavities it encloses filled,
    plus cancellous bone (> 115 HU) touching it.

    Filling the cortical shell keeps osteoporotic bodies (cancellous < 100 HU) whole; the disc
    spaces and the spinal canal stay open because they are not enclosed in 3-D.
    """
    smooth = ndimage.gaussian_filter(hu, sigma=0.7 / spacing_mm)
    dense = smooth > CORTEX_HU
    soft = smooth > CANCELLOUS_HU
    labels, _ = ndimage.label(soft)
    touching = np.unique(labels[dense & soft])
    grown = np.isin(labels, touching[touching > 0]) | dense
    # a body's marrow is enclosed by cortex in both sagittal and coronal planes; a disc, the canal
    # and the foramina are open in at least one of them, so they stay empty
    # (closed first: a thin endplate partial-volumed in thick slices leaves gaps in the shell)
    shell = ndimage.binary_closing(grown, structure=np.ones((3, 1, 1), bool), iterations=2)
    filled: BoolArray = grown | (_fill_in_planes(shell, axis=1) & _fill_in_planes(shell, axis=2))
    # fill enclosed cavities slice by slice too (a shell broken in 3-D by a foramen) but only
    # small ones: the canal and the pelvic inlet are large holes and must stay open.
    per_slice = np.zeros_like(filled)
    for k in range(filled.shape[0]):
        per_slice[k] = ndimage.binary_fill_holes(filled[k])
    holes = per_slice & ~filled
    lab, n = ndimage.label(holes)
    if n:
        sizes = ndimage.sum(holes, lab, range(1, n + 1))
        small = np.concatenate([[False], sizes * spacing_mm**3 < 400.0])
        filled |= small[lab]
    # the blurred cortex spills ~1 mm beyond the bone: put the border at 70 % of the LOCAL
    # cortical peak (thin pedicle walls are dimmer than thick cortex after blurring); 60 % left
    # the mask about a voxel too wide on the phantoms, 80 % cut into the bone
    local_peak = ndimage.maximum_filter(smooth, size=max(3, round(5.0 / spacing_mm)))
    edge = ndimage.binary_fill_holes(smooth > np.maximum(CORTEX_HU, EDGE_FRACTION * local_peak))
    inner = ndimage.binary_erosion(filled, iterations=2)
    out: BoolArray = ndimage.binary_opening(edge | inner, iterations=1)
    return out


def _fill_in_planes(mask: BoolArray, axis: int) -> BoolArray:
    """Fill holes within each plane normal to array ``axis`` (one call, in-plane connectivity)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    index: list[int | slice] = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    out: BoolArray = ndimage.binary_fill_holes(mask, structure=structure)
    return out
