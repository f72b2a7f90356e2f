"""Bone voxels → vertebrae: every bone voxel goes to the body core it reaches first growing
through bone; bone detached from its vertebra's core becomes ``OTHER``."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import BoolArray, FloatArray, bounding_box

OTHER = 255


def geodesic_labels(
    bone: BoolArray, markers: npt.NDArray[np.uint8], spacing: FloatArray
) -> npt.NDArray[np.uint8]:
    """Each bone voxel gets the marker it reaches first growing through bone (geodesic Voronoi),
    computed on a 2 mm grid; bone the growth misses takes the nearest label (Euclidean)."""
    step = np.maximum(1, np.round(2.0 / spacing).astype(int))
    sl = tuple(slice(None, None, int(k)) for k in step)
    # a coarse voxel is bone when most of it is: joint gaps stay open, thin laminae survive
    coarse_bone = (
        ndimage.uniform_filter(bone.astype(np.float32), size=tuple(int(k) for k in step))[sl] >= 0.5
    )
    lab = markers[sl].copy()
    lab[~coarse_bone] = 0
    cross = ndimage.generate_binary_structure(3, 1)
    for _ in range(200):
        free = coarse_bone & (lab == 0)
        if not free.any():
            break
        grown = ndimage.grey_dilation(lab, footprint=cross)
        take = free & (grown > 0)
        if not take.any():
            break
        lab[take] = grown[take]
    full = np.zeros(bone.shape, dtype=np.uint8)
    up = lab
    for axis, k in enumerate(step):
        up = np.repeat(up, int(k), axis=axis)
    full[...] = up[: bone.shape[0], : bone.shape[1], : bone.shape[2]]
    # bone the coarse growth missed (thin edges): a few fine dilations within the bone
    for _ in range(3):
        free = bone & (full == 0)
        if not free.any():
            break
        grown = ndimage.grey_dilation(full, footprint=cross)
        full[free] = grown[free]
    out: npt.NDArray[np.uint8] = np.where(bone, full, 0).astype(np.uint8)
    return out


def keep_connected(
    labels: npt.NDArray[np.uint8], markers: npt.NDArray[np.int16], n: int
) -> npt.NDArray[np.uint8]:
    """Keep, per vertebra, only the bone connected to its own core; the rest becomes OTHER (the
    flood crosses soft tissue at maximal cost, so detached bone such as ribs lands anywhere)."""
    for k in range(1, n + 1):
        mine = labels == k
        if not mine.any():
            continue
        box = bounding_box(mine, 1)
        cc, _ = ndimage.label(mine[box])
        own = np.unique(cc[(markers[box] == k) & (cc > 0)])
        stray = (cc > 0) & ~np.isin(cc, own)
        sub = labels[box]
        sub[stray] = OTHER
    return labels
