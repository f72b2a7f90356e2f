"""Body-mask helpers of ``inference.segment.column`` on synthetic volumes ([slice, row, col],
1 mm voxels)."""

from __future__ import annotations

import numpy as np

from inference.segment.column import trim_discs


def test_disc_voxels_next_to_a_body_are_taken_out_of_its_label() -> None:
    # a body (marrow 250 HU) labelled 1 together with a disc slab below it (150 HU: a disc
    # partial-volumed with its endplate on thick slices) and a dark process far behind it
    hu = np.full((40, 30, 60), 250.0, dtype=np.float32)
    hu[:10] = 150.0  # the disc slab, caudal to the body
    hu[:, :, 40:] = 150.0  # a process 20+ mm from the core: not a disc
    labels = np.ones(hu.shape, dtype=np.uint8)
    core_rank = np.zeros(hu.shape, dtype=np.int16)
    core_rank[14:36, 5:25, 5:25] = 1
    out = trim_discs(labels.copy(), core_rank, hu, np.ones(3))
    assert not out[2:10, 5:25, 5:25].any()  # the disc slab under the core: background
    assert (out[12:40, :, :40] == 1).all()  # the body's marrow stays
    assert (out[:, :, 45:] == 1).all()  # far from the core: left alone
    # a body of uniform marrow loses nothing
    same = trim_discs(labels.copy(), core_rank, np.full(hu.shape, 250.0, np.float32), np.ones(3))
    assert (same == 1).all()
