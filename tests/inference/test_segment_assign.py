"""Bone → vertebra assignment (inference.segment.assign) on small synthetic grids (1 mm)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import bounding_box
from inference.segment.assign import OTHER, geodesic_labels, keep_connected

MARROW_HU = 200.0
CORTEX_HU = 1200.0
SPACING = np.ones(3)


def _touching_process() -> tuple[
    npt.NDArray[np.bool_], npt.NDArray[np.uint8], npt.NDArray[np.float32]
]:
    """Two "vertebrae" on a [slice, row, col] grid: A is a marrow block with a 40 mm marrow arm
    whose tip rests on B's block; the two touch through a 2-voxel cortical wall (one voxel of
    each), like an articular process tip resting on the neighbour's lamina."""
    shape = (12, 70, 40)
    bone = np.zeros(shape, dtype=bool)
    hu = np.full(shape, 40.0, dtype=np.float32)
    bone[1:11, 2:14, 2:14] = True  # A's block (rows 2..13)
    bone[3:9, 14:56, 4:10] = True  # A's arm, rows 14..55
    bone[1:11, 56:68, 2:30] = True  # B's block, rows 56..67
    hu[bone] = MARROW_HU
    hu[3:9, 55:57, 4:10] = CORTEX_HU  # the arm's end wall (row 55) and B's wall (row 56)
    markers = np.zeros(shape, dtype=np.uint8)
    markers[4:8, 5:10, 5:10] = 1
    markers[4:8, 60:65, 20:26] = 2
    return bone, markers, hu


def test_cortex_weighting_keeps_a_touching_process_with_its_own_vertebra() -> None:
    bone, markers, hu = _touching_process()
    weighted = geodesic_labels(bone, markers, SPACING, hu)
    plain = geodesic_labels(bone, markers, SPACING)
    tip = (slice(4, 8), slice(48, 55), slice(5, 9))  # the arm's last 7 mm, next to B
    assert np.all(weighted[tip] == 1)
    # the plain geodesic distance gives the tip to the vertebra it touches: the weight matters
    assert np.all(plain[tip] == 2)
    # B keeps its own wall and block either way
    assert np.all(weighted[4:8, 56:68, 2:30] == 2)
    assert np.all(weighted[~bone] == 0)


def test_a_thin_dark_gap_the_mask_bridges_is_a_barrier() -> None:
    """Walls too dim to count as cortex (400 HU): the 1-voxel gap between them (150 HU) is what
    keeps the arm's tip with its own vertebra; without the gap the tip goes to the one it
    touches. The gap overhangs the arm by a voxel: at a gap's rim the closing sees soft tissue
    and the gap is not weighted, so the rim must not touch the arm."""
    bone, markers, hu = _touching_process()
    hu[3:9, 54, 4:10] = 400.0  # the arm's end wall
    bone[2:10, 55, 3:11] = True
    hu[2:10, 55, 3:11] = 150.0  # the gap, inside the bone mask
    hu[2:10, 56, 3:11] = 400.0  # B's wall
    tip = (slice(4, 8), slice(47, 54), slice(5, 9))
    assert np.all(geodesic_labels(bone, markers, SPACING, hu)[tip] == 1)
    hu[2:10, 55, 3:11] = 400.0  # no gap
    assert np.all(geodesic_labels(bone, markers, SPACING, hu)[tip] == 2)


def test_every_connected_bone_voxel_is_labelled_and_detached_bone_is_left() -> None:
    bone, markers, hu = _touching_process()
    connected = bone.copy()
    bone[5, 30:40, 30:38] = True  # detached bone
    bone[2, 20, 11] = True  # touches the arm (cols 4..9) only along an edge: not face-connected
    bone[3, 20, 10] = True  # face-connected to the arm
    connected[3, 20, 10] = True
    for weighted in (hu, None):
        labels = geodesic_labels(bone, markers, SPACING, weighted)
        assert np.all(labels[5, 30:40, 30:38] == 0)
        assert labels[2, 20, 11] == 0
        assert np.all(labels[connected] > 0)
        assert np.all(labels[~bone] == 0)


def test_keep_connected_turns_bone_detached_from_its_core_into_other() -> None:
    labels = np.zeros((5, 20, 20), dtype=np.uint8)
    labels[1:4, 2:8, 2:8] = 1  # vertebra 1 with its core
    labels[1:4, 12:16, 12:16] = 1  # a piece labelled 1 but not touching its core
    markers = np.zeros(labels.shape, dtype=np.int16)
    markers[2, 4:6, 4:6] = 1
    out = keep_connected(labels.copy(), markers, 1)
    assert np.all(out[1:4, 2:8, 2:8] == 1)
    assert np.all(out[1:4, 12:16, 12:16] == OTHER)


def _keep_connected_plain(
    labels: npt.NDArray[np.uint8], markers: npt.NDArray[np.int16], n: int
) -> npt.NDArray[np.uint8]:
    """keep_connected as first written: each label found by a scan of the whole grid."""
    for k in range(1, n + 1):
        mine = labels == k
        if not mine.any():
            continue
        box = bounding_box(mine, 1)
        cc, _ = ndimage.label(mine[box])
        own = np.unique(cc[(markers[box] == k) & (cc > 0)])
        sub = labels[box]
        sub[(cc > 0) & ~np.isin(cc, own)] = OTHER
    return labels


def test_keep_connected_in_each_labels_box_equals_the_whole_grid_scan() -> None:
    rng = np.random.default_rng(5)
    for _ in range(3):
        labels = rng.integers(0, 6, size=(30, 40, 35)).astype(np.uint8)
        labels[rng.random(labels.shape) < 0.5] = 0  # scattered pieces, most stray
        labels[labels == 5] = OTHER
        markers = np.where(rng.random(labels.shape) < 0.05, labels, 0).astype(np.int16)
        expected = _keep_connected_plain(labels.copy(), markers, 4)
        assert (expected == OTHER).sum() > (labels == OTHER).sum()  # strays were moved
        assert np.array_equal(keep_connected(labels.copy(), markers, 4), expected)
