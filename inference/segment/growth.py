"""The geodesic growths that give every bone voxel its vertebra (working grid, [slice, row,
col], affine → LPS mm): the first from the body cores, the second with every arch seeded on its
own canal roof (``roofs.py``), every articular process on its own side of its facet joint
(``facets.py``) and a spinous process that the first growth split between two vertebrae given
whole to the vertebra at its cranial end (:func:`midline_arch_markers`).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import BoolArray, FloatArray, index_to_mm, unit, voxel_spacing
from inference.segment.assign import geodesic_labels
from inference.segment.facets import facet_markers
from inference.segment.roofs import canal_roof_markers
from inference.workers import worker_count

logger = logging.getLogger(__name__)

# midsagittal slab for the spinous processes (see midline_arch_markers)
ARCH_HALF_WIDTH_MM = 3.0
ARCH_BEHIND_MM = 25.0
ARCH_MAX_PITCH = 0.9


def grow_vertebrae(
    bone: BoolArray,
    markers: npt.NDArray[np.int16],
    aff: FloatArray,
    cents: FloatArray,
    cranial: FloatArray,
    *,
    hu: npt.NDArray[np.float32] | None,
    depth: npt.NDArray[np.float32] | None,
    weights: npt.NDArray[np.float32] | None,
    ringed: set[int],
) -> npt.NDArray[np.uint8]:
    """The geodesic growth from the body-core ``markers`` (ranks, ``OTHER``), grown again from
    the arches' and articular processes' own markers where there are any (``markers`` gets
    them, in place)."""
    spacing = voxel_spacing(aff)
    labels = geodesic_labels(bone, markers.astype(np.uint8), spacing, weights=weights)
    with ThreadPoolExecutor(1, thread_name_prefix="arches") as pool:  # both only read labels
        arches_later = (
            pool.submit(midline_arch_markers, labels, aff, cents, cranial)
            if worker_count() >= 2
            else None
        )
        roofs = _own_markers(bone, labels, aff, cents, cranial, hu=hu, depth=depth, ringed=ringed)
        arches = (
            arches_later.result()
            if arches_later is not None
            else midline_arch_markers(labels, aff, cents, cranial)
        )
    if roofs.any() or arches is not None:  # arches seeded on their own roofs: grow again
        free = (roofs > 0) & (markers == 0)
        markers[free] = roofs[free]
        if arches is not None:  # spinous processes split between two vertebrae
            markers[arches > 0] = arches[arches > 0]
        labels = geodesic_labels(bone, markers.astype(np.uint8), spacing, weights=weights)
    return labels


def _own_markers(
    bone: BoolArray,
    first: npt.NDArray[np.uint8],
    aff: FloatArray,
    cents: FloatArray,
    cranial: FloatArray,
    *,
    hu: npt.NDArray[np.float32] | None,
    depth: npt.NDArray[np.float32] | None,
    ringed: set[int],
) -> npt.NDArray[np.int16]:
    """Markers for the second growth (ranks, 0 elsewhere): every arch on its canal roof
    (``roofs.py``), and with ``depth`` (:func:`gap_depth` of ``hu``) the articular processes
    on their own side of each facet joint (``facets.py``) where no roof marker is."""
    out = canal_roof_markers(bone, aff, cents, cranial, hu, first=first, rings=ringed)
    if hu is not None and depth is not None:
        facets = facet_markers(bone, first, hu, depth, aff, cents=cents, cranial=cranial)
        free = (facets > 0) & (out == 0)
        out[free] = facets[free]
    return out


def midline_arch_markers(
    labels: npt.NDArray[np.uint8], aff: FloatArray, cents: FloatArray, cranial: FloatArray
) -> npt.NDArray[np.int16] | None:
    """Whole-arch markers for spinous processes that the growth split between two vertebrae.

    In the midsagittal slab (within ``ARCH_HALF_WIDTH_MM`` of the line through the body
    centroids ``cents``, cranial first, patient mm) and more than ``ARCH_BEHIND_MM`` behind it,
    each connected piece of bone is one vertebra's lamina junction and spinous process: the
    interspinous gap parts it from its neighbours. A spinous process hangs caudally over the
    vertebra below, whose front reaches its tip first through the facets, so a piece holding
    two labels belongs to the one at its cranial end (the lamina junction). Returns markers
    (that label on the whole piece, 0 elsewhere) or ``None`` when no piece is split. Pieces
    taller than ``ARCH_MAX_PITCH`` vertebra pitches (two processes touching) are left alone.
    """
    n = len(cents)
    if n < 2:
        return None
    idx = np.argwhere((labels > 0) & (labels <= n))
    pts = index_to_mm(aff, idx)
    h = pts @ cranial
    order = np.argsort(cents @ cranial)
    ch = (cents @ cranial)[order]
    mid = np.stack([np.interp(h, ch, cents[order, a]) for a in range(3)], axis=1)
    rel = pts - mid
    lateral = unit(np.cross(cranial, [0.0, 1.0, 0.0]))
    posterior = unit(np.cross(lateral, cranial))  # LPS +y when cranial is +z
    near = (np.abs(rel @ lateral) <= ARCH_HALF_WIDTH_MM) & (rel @ posterior > ARCH_BEHIND_MM)
    slab = np.zeros(labels.shape, dtype=bool)
    slab[tuple(idx[near].T)] = True
    pieces, n_pieces = ndimage.label(slab)
    pitch = float(np.median(np.abs(np.diff(ch))))
    out = np.zeros(labels.shape, dtype=np.int16)
    split = False
    for k, box in enumerate(ndimage.find_objects(pieces), start=1):
        if box is None:
            continue
        mine = pieces[box] == k
        lab = labels[box][mine]
        hk = index_to_mm(aff, np.argwhere(mine) + [s.start for s in box]) @ cranial
        if np.unique(lab).size < 2 or np.ptp(hk) > ARCH_MAX_PITCH * pitch:
            continue
        top = lab[hk >= np.percentile(hk, 75)]
        out[box][mine] = int(np.bincount(top).argmax())
        split = True
    logger.debug("midline arch pieces: %d, split: %s", n_pieces, split)
    return out if split else None
