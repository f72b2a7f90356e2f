"""Bright pieces cut off from their vertebra (inference.segment.pieces) on a synthetic 3 mm
[slice, row, col] grid: L5 above the sacrum, a small bright knob of the sacrum reached by L5's
label over a dim bridge."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.segment.pieces import PIECE_HU, reassign_pieces

L5, S1 = 24, 26
COARSE = np.array([3.0, 3.0, 3.0])


def _knob(bridge_hu: float) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """L5 (slices 8-13) and S1 (slices 0-5) blocks of 500 HU in 40 HU tissue; a 2x2-voxel knob
    of 400 HU on S1's top (slices 6-7, rows 13-14) labelled L5, joined to L5 through one voxel
    of ``bridge_hu`` (slice 7, row 12, labelled L5)."""
    hu = np.full((16, 16, 16), 40.0, dtype=np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[8:14, 2:12, 2:14] = L5
    labels[0:6, 2:16, 2:14] = S1
    hu[labels > 0] = 500.0
    labels[6:8, 13:15, 6:8] = L5
    hu[6:8, 13:15, 6:8] = 400.0
    labels[7, 12, 6] = L5
    hu[7, 12, 6] = bridge_hu
    return labels, hu


def test_a_piece_joined_only_by_a_dim_bridge_goes_to_the_bone_it_touches() -> None:
    labels, hu = _knob(PIECE_HU - 80.0)
    out = reassign_pieces(labels, hu, COARSE)
    assert (out[6:8, 13:15, 6:8] == S1).all()
    assert out[7, 12, 6] == L5  # the dim bridge itself stays
    changed = out != labels
    changed[6:8, 13:15, 6:8] = False
    assert not changed.any()


def test_a_brightly_joined_piece_or_fine_voxels_keep_their_label() -> None:
    labels, hu = _knob(PIECE_HU + 200.0)
    assert np.array_equal(reassign_pieces(labels, hu, COARSE), labels)
    labels, hu = _knob(PIECE_HU - 80.0)
    fine = np.array([3.0, 0.8, 0.8])
    assert np.array_equal(reassign_pieces(labels, hu, fine), labels)


def test_a_piece_touching_no_other_vertebra_keeps_its_label() -> None:
    labels, hu = _knob(PIECE_HU - 80.0)
    hu[0:6] = 40.0  # the sacrum's block dim: nothing bright touches the knob
    assert np.array_equal(reassign_pieces(labels, hu, COARSE)[6:8], labels[6:8])
