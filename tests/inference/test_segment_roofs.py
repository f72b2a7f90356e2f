"""Canal-roof markers: the lamina behind each canal, the canal's ring (pedicles) in front of it,
and a roof whose canal-side edge is a dim partial-volumed voxel."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.segment.roofs import canal_roof_markers

# index (slice, row, col) -> LPS (x = col, y = row, z = slice), 1 mm voxels; +y = posterior
AFFINE = np.array(
    [[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
CRANIAL = np.array([0.0, 0.0, 1.0])
# the vertebra: body centroid at slice 22, row 40, col 32; the canal rows 56-67, cols 25-39
CENTS = np.array([[32.0, 40.0, 22.0], [32.0, 40.0, -20.0]])  # cranial first (the 2nd: below)
PEDICLE_FRONT = (slice(21, 24), slice(52, 59))  # slices, rows: > 8 mm in front of the lamina


def _vertebra(*, both_pedicles: bool = True) -> npt.NDArray[np.float32]:
    """A body (radius 15 mm, slices 10-33, 1000 HU shell, 250 HU marrow), two pedicles 14 mm
    tall from the body to a lamina (rows 68-71) behind a 12 x 15 mm canal, in 40 HU tissue."""
    hu = np.full((50, 90, 64), 40.0, dtype=np.float32)
    z = np.arange(50)[:, None, None]
    yy, xx = np.mgrid[0:90, 0:64]
    r = np.hypot(yy - 40.0, xx - 32.0)[None]
    inside = (z >= 10) & (z < 34)
    hu[inside & (r <= 15.0)] = 1000.0
    hu[inside & (r <= 14.0) & (z >= 11) & (z < 33)] = 250.0
    for x0 in (21, 40) if both_pedicles else (21,):
        hu[15:29, 48:70, x0 : x0 + 4] = 1000.0
    hu[14:30, 68:72, 18:47] = 1000.0
    return hu


def test_the_canal_ring_marks_the_pedicles_in_front_of_the_lamina() -> None:
    hu = _vertebra()
    roofs = canal_roof_markers(hu > 150.0, AFFINE, CENTS, CRANIAL, hu)
    assert set(np.unique(roofs)) == {0, 1}
    for cols in (slice(21, 25), slice(40, 44)):  # both pedicles, well in front of the lamina
        assert (roofs[(*PEDICLE_FRONT, cols)] == 1).mean() > 0.9
    idx = np.argwhere(roofs == 1)
    assert idx[:, 1].max() < 72  # nothing behind the lamina
    assert np.abs(idx[:, 0] - 22).max() <= 1.5  # one slab at the body's centroid


def test_an_open_canal_gets_no_ring() -> None:
    # one pedicle missing: the lumen runs out of the canal (a foramen), no ring is seeded
    hu = _vertebra(both_pedicles=False)
    roofs = canal_roof_markers(hu > 150.0, AFFINE, CENTS, CRANIAL, hu)
    assert (roofs == 1).any()  # the roof itself
    assert not (roofs[(*PEDICLE_FRONT, slice(21, 25))] == 1).any()


def test_a_roof_behind_a_dim_canal_side_voxel_is_still_seeded() -> None:
    # on thick slices the lamina's canal-side voxel where the ray meets it can read partial
    # -volumed: above the bone level but far below its grey closing (brighter on both sides),
    # which the gap test drops; the roof then starts at the first solid voxel behind it
    hu = _vertebra()
    hu[14:30, 68, 32] = 300.0
    roofs = canal_roof_markers(hu > 150.0, AFFINE, CENTS, CRANIAL, hu)
    assert (roofs[21:24, 69:72, 25:40] == 1).mean() > 0.9


def test_the_ring_leaves_what_a_first_growth_gave_to_the_vertebra_above() -> None:
    # rank 2's ring: bone the first growth gave to rank 1 (an inferior articular process of
    # the vertebra above beside this canal) is not seeded; bone given to rank 3 is
    hu = _vertebra()
    first = np.full(hu.shape, 2, dtype=np.uint8)
    first[:, :, 40:44] = 1  # the right pedicle, as the vertebra above's
    first[:, :, 21:25] = 3  # the left pedicle, as the vertebra below's
    cents = np.array([[32.0, 40.0, 64.0], *CENTS])  # a vertebra above (no canal in view)
    roofs = canal_roof_markers(hu > 150.0, AFFINE, cents, CRANIAL, hu, first=first)
    assert (roofs[(*PEDICLE_FRONT, slice(21, 25))] == 2).mean() > 0.9
    assert not (roofs[(*PEDICLE_FRONT, slice(40, 44))] > 0).any()
    only_roof = canal_roof_markers(hu > 150.0, AFFINE, cents, CRANIAL, hu, rings={1})
    assert (only_roof == 2).any()
    assert not (only_roof[(*PEDICLE_FRONT, slice(21, 25))] > 0).any()
