"""Bone voxels → vertebrae: every bone voxel goes to the body core it reaches at the least cost
growing through bone (a weighted geodesic Voronoi on the full 1 mm working grid, indexed
[slice, row, col]); bone detached from its vertebra's core becomes ``OTHER``.

The cost of a step is its length in mm times the mean weight of its two voxels. Without HU every
bone voxel weighs 1 (plain geodesic distance). With HU, two kinds of voxel weigh up to
``1 + CORTEX_COST``: bright cortex, and thin dark gaps between brighter bone (a black top-hat:
a facet joint or the slit between a lamina and the neighbour's lamina, which the bone mask
bridges). A vertebra is one marrow space walled by cortex, so its own processes are reached from
its body through marrow, while where two vertebrae touch the way across passes two cortical
walls and the gap between them and costs more than the way round.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from inference.geometry import BoolArray, FloatArray, grown_box
from inference.segment.facets import gap_depth

OTHER = 255
# cortex weight ramp (HU on the working grid): blurred phantom cortex reads 600–1000 HU; on a
# 3 mm real CT few posterior-element voxels pass 500 HU, so the weighting stays out of the way
# there (300–600 HU made the real CT's levels worse, 500–800 HU left them as they were)
CORTEX_LOW_HU = 500.0
CORTEX_HIGH_HU = 800.0
# gap ramp: how much darker a voxel is than its 3x3x3 grey closing (a 1.6 mm facet gap reads
# about 400 HU darker on phantoms; 99 % of other bone voxels less than 255 HU); 50–250 HU beat
# 100–300 and 150–400 on phantoms with 2–3 mm slices and left the real CT as it was
GAP_LOW_HU = 50.0
GAP_HIGH_HU = 250.0
CORTEX_COST = 30.0
_STEPS = ((1, 0, 0), (0, 1, 0), (0, 0, 1))


def bone_weights(
    hu: npt.NDArray[np.float32], depth: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Per-voxel travel weight on the 1 mm grid of ``hu``: 1 in marrow, rising linearly to
    ``1 + CORTEX_COST`` with HU from ``CORTEX_LOW_HU`` to ``CORTEX_HIGH_HU`` (cortex) and with
    the depth below the 3x3x3 grey closing from ``GAP_LOW_HU`` to ``GAP_HIGH_HU`` (thin gaps).
    ``depth``: :func:`inference.segment.facets.gap_depth` of ``hu`` when the caller has it."""
    if depth is None:
        depth = gap_depth(hu)
    cortex = np.clip((hu - CORTEX_LOW_HU) / (CORTEX_HIGH_HU - CORTEX_LOW_HU), 0.0, 1.0)
    gap = np.clip((depth - GAP_LOW_HU) / (GAP_HIGH_HU - GAP_LOW_HU), 0.0, 1.0)
    out: npt.NDArray[np.float32] = (1.0 + CORTEX_COST * np.maximum(cortex, gap)).astype(np.float32)
    return out


def geodesic_labels(
    bone: BoolArray,
    markers: npt.NDArray[np.uint8],
    spacing: FloatArray,
    hu: npt.NDArray[np.float32] | None = None,
    *,
    weights: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.uint8]:
    """Each bone voxel gets the marker it reaches at the least cost through bone.

    ``markers`` holds labels (> 0) on seed voxels, ``spacing`` the grid step (mm) per axis,
    ``hu`` the CT on the same grid (weights cortex, see the module docstring) or ``None`` for the
    plain geodesic distance; ``weights``: :func:`bone_weights` of ``hu`` when the caller has
    them (``hu`` is then not read). Bone not face-connected to any marker stays 0.
    """
    out = np.zeros(bone.shape, dtype=np.uint8)
    n = int(np.count_nonzero(bone))
    seeds = bone & (markers > 0)
    if n == 0 or not seeds.any():
        return out
    index = np.full(bone.shape, -1, dtype=np.int32)
    index[bone] = np.arange(n, dtype=np.int32)
    if weights is None and hu is not None:
        weights = bone_weights(hu)
    weight = weights[bone] if weights is not None else np.ones(n, dtype=np.float32)
    graph = _graph(index, weight, np.asarray(spacing, dtype=np.float64), n)
    mine = markers[bone]
    src = np.flatnonzero(mine > 0)
    _, _, sources = csgraph.dijkstra(
        graph, directed=False, indices=src, min_only=True, return_predecessors=True
    )
    out[bone] = np.where(sources >= 0, mine[np.maximum(sources, 0)], 0)
    return out


def _graph(
    index: npt.NDArray[np.int32], weight: npt.NDArray[np.float32], spacing: FloatArray, n: int
) -> sparse.csr_matrix:
    """Face-neighbour graph of the bone voxels (``index`` ≥ 0), edge cost = step × mean weight."""
    rows, cols, costs = [], [], []
    shape = index.shape
    for axis, step in enumerate(_STEPS):
        lo = tuple(slice(0, shape[i] - step[i]) for i in range(3))
        hi = tuple(slice(step[i], shape[i]) for i in range(3))
        a, b = index[lo], index[hi]
        both = (a >= 0) & (b >= 0)
        a, b = a[both], b[both]
        rows.append(a)
        cols.append(b)
        costs.append(float(spacing[axis]) * 0.5 * (weight[a] + weight[b]))
    return sparse.csr_matrix(
        (np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def keep_connected(
    labels: npt.NDArray[np.uint8], markers: npt.NDArray[np.int16], n: int
) -> npt.NDArray[np.uint8]:
    """Keep, per vertebra, only the bone connected to its own core; the rest becomes OTHER."""
    boxes = ndimage.find_objects(labels)  # each label's box: the loop moves only its own voxels
    for k in range(1, n + 1):
        if k > len(boxes) or boxes[k - 1] is None:
            continue
        box = grown_box(boxes[k - 1], 1, labels.shape)
        cc, _ = ndimage.label(labels[box] == k)
        own = np.unique(cc[(markers[box] == k) & (cc > 0)])
        stray = (cc > 0) & ~np.isin(cc, own)
        sub = labels[box]
        sub[stray] = OTHER
    return labels
