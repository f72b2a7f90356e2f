"""Thin bone in coarse voxels (inference.segment.thin): a ring of partial-volumed cortex round a
dark core next to a labelled body, and a notch in a body's back, on a 3 mm [slice, row, col]
grid."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.segment.bone import fill_small_holes, refine_border
from inference.segment.thin import (
    NOTCH_HU,
    RIDGE_HU,
    RING_HU,
    close_thin_rings,
    extend_ridges,
    fill_notches,
)

L5, SACRUM = 24, 26
FloatArr = npt.NDArray[np.float32]
COARSE = np.array([3.0, 3.0, 3.0])
SPACING = np.full(3, 3.0)


def _process(label: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """A labelled block (rows 5-11, cols 3-7, 500 HU) with an unlabelled 3x3-voxel ring of
    partial-volumed cortex (200 HU) round one fatty voxel (-60 HU) against its side, in soft
    tissue (40 HU); every slice alike."""
    hu = np.full((5, 20, 20), 40.0, dtype=np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[:, 5:12, 3:8] = label
    hu[:, 5:12, 3:8] = 500.0
    hu[:, 8:11, 8:11] = RING_HU + 50.0
    hu[:, 9, 9] = -60.0
    return labels, hu


def test_a_ring_round_a_dark_core_takes_the_vertebra_label() -> None:
    labels, hu = _process(L5)
    out = close_thin_rings(labels, hu, SPACING, fill_small_holes)
    assert np.all(out[:, 8:11, 8:11] == L5)  # the ring and its core
    assert np.array_equal(out[:, :, :8], labels[:, :, :8])  # nothing else moved
    assert not out[:, :, 11:].any()


def test_a_bright_rim_without_a_hole_stays_out() -> None:
    labels, hu = _process(L5)
    hu[:, 9, 9] = RING_HU + 50.0  # the core as bright as the ring: nothing enclosed
    out = close_thin_rings(labels, hu, SPACING, fill_small_holes)
    assert np.array_equal(out, labels)


def test_the_sacrum_is_not_widened() -> None:
    labels, hu = _process(SACRUM)
    out = close_thin_rings(labels, hu, SPACING, fill_small_holes)
    assert np.array_equal(out, labels)


def test_refine_border_adds_the_ring_only_when_widening() -> None:
    labels, hu = _process(L5)
    plain = refine_border(labels, hu, SPACING, widen=False)
    wide = refine_border(labels, hu, SPACING)
    assert np.all(plain[:, 9, 9] == 0)
    assert np.all(wide[:, 9, 9] == L5)


def test_a_gap_against_another_bone_is_not_a_hole() -> None:
    labels, hu = _process(L5)
    labels[2, 9, 9] = SACRUM  # the sacrum reaches into the ring's core in one slice
    out = close_thin_rings(labels, hu, SPACING, fill_small_holes)
    assert not np.any(out[:, 9, 9] == L5)


def _notched(width: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """A labelled body (rows 4-13, cols 4-15) with a notch ``width`` voxels wide and 2 deep cut
    into its back (rows 12-13) at ``NOTCH_HU`` + 40 HU (the dark back at the basivertebral
    foramen), in 0 HU surroundings (the canal's contents)."""
    hu = np.zeros((3, 20, 20), dtype=np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[:, 4:14, 4:16] = L5
    hu[:, 4:14, 4:16] = 300.0
    lo = 10 - width // 2
    labels[:, 12:14, lo : lo + width] = 0
    hu[:, 12:14, lo : lo + width] = NOTCH_HU + 40.0
    return labels, hu


def test_a_narrow_notch_in_the_back_of_a_body_takes_its_label() -> None:
    labels, hu = _notched(2)
    out = fill_notches(labels, hu)
    assert np.all(out[:, 12:14, 9:11] == L5)
    assert np.array_equal(out[:, :12], labels[:, :12])
    assert not out[:, 14:].any()  # nothing grows behind the body


def test_a_wide_gap_or_a_dark_notch_stays_open() -> None:
    labels, hu = _notched(6)  # as wide as a canal at 3 mm: 18 mm
    assert np.array_equal(fill_notches(labels, hu), labels)
    labels, hu = _notched(2)
    hu[:, 12:14, 9:11] = NOTCH_HU - 40.0  # fat or CSF
    assert np.array_equal(fill_notches(labels, hu), labels)


def test_fine_voxels_are_not_widened() -> None:
    labels, hu = _process(L5)
    out = refine_border(labels, hu, np.full(3, 1.0))  # the same ring in 1 mm voxels
    assert np.all(out[:, 9, 9] == 0)


def _bar(bar_hu: float, thick_rows: int = 1) -> tuple[npt.NDArray[np.uint8], FloatArr]:
    """A vertebra label (L5) beside a bar running out along the columns (axis 2) in slices
    4-5, ``thick_rows`` voxels front to back (axis 1), in muscle of 40 HU: 3 mm voxels."""
    hu = np.full((10, 16, 24), 40.0, dtype=np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[2:8, 4:12, 2:8] = 24
    hu[2:8, 4:12, 2:8] = 400.0
    hu[4:6, 8 : 8 + thick_rows, 8:16] = bar_hu
    return labels, hu


def test_a_thin_dim_bar_beside_a_vertebra_takes_its_label() -> None:
    labels, hu = _bar(200.0)
    out = extend_ridges(labels, hu, COARSE, across=1, axial=0)
    assert (out[4:6, 8, 8:13] == 24).all()  # 15 mm from the label: the ridges' reach
    assert (out[4:6, 8, 14:] == 0).all()
    assert (out[:4] == labels[:4]).all() and (out[6:] == labels[6:]).all()


def test_a_plateau_or_a_bar_below_the_floor_stays_out() -> None:
    wide, hu_wide = _bar(200.0, thick_rows=3)  # a bright block, no ridge front to back
    assert np.array_equal(extend_ridges(wide, hu_wide, COARSE, across=1, axial=0), wide)
    dim, hu_dim = _bar(RIDGE_HU - 30.0)
    assert np.array_equal(extend_ridges(dim, hu_dim, COARSE, across=1, axial=0), dim)


def test_a_ridge_touching_another_bone_or_in_fine_voxels_stays_out() -> None:
    labels, hu = _bar(200.0)
    labels[4:6, 6:11, 10:12] = 26  # the sacrum across the bar's path
    hu[4:6, 6:11, 10:12] = 400.0
    hu[4:6, 8, 10:12] = 200.0
    out = extend_ridges(labels, hu, COARSE, across=1, axial=0)
    assert np.array_equal(out, labels)  # one voxel beside the label only: no bar
    fine, hu_fine = _bar(200.0)
    spacing = np.array([3.0, 0.8, 0.8])
    assert np.array_equal(extend_ridges(fine, hu_fine, spacing, across=1, axial=0), fine)


def test_a_single_bright_voxel_beside_the_label_is_no_bar() -> None:
    """A ridge one voxel long (partial volume at a bone surface) stays out; two voxels long
    (a process' tip) is taken."""
    for length, taken in ((1, False), (2, True)):
        labels, hu = _bar(40.0)
        hu[4:6, 8, 8 : 8 + length] = 200.0
        out = extend_ridges(labels, hu, COARSE, across=1, axial=0)
        assert (out[4:6, 8, 8 : 8 + length] == L5).all() == taken
        assert out[4:6, 8, 8 : 8 + length].any() == taken
