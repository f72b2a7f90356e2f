"""Vertebral body cores: bodies whose shell does not enclose the marrow in the bone mask are
filled from their axial cortical rings, and a core that runs through a disc fused in the mask
is split at the endplates."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from inference.errors import NotApplicableError
from inference.geometry import label_voxels
from inference.segment import instances
from inference.segment.assign import OTHER
from inference.segment.bone import bone_mask
from inference.segment.column import body_mask, split_at_endplates
from inference.segment.facets import gap_depth
from inference.segment.growth import midline_arch_markers
from inference.segment.instances import (
    above_a_base,
    core_trunk,
    separate_vertebrae,
)
from inference.segment.roofs import canal_roof_markers
from inference.workers import WORKERS_ENV

# index (slice, row, col) -> LPS (x = col, y = row, z = slice), 1 mm voxels
AFFINE = np.array(
    [[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
CRANIAL = np.array([0.0, 0.0, 1.0])
SIZE = 64
CENTRE = SIZE / 2


def _column(
    n: int,
    *,
    marrow_hu: float,
    endplate_hu: float,
    disc_mm: float = 10.0,
) -> tuple[npt.NDArray[np.float32], list[float]]:
    """``n`` cylindrical bodies (radius 17 mm, 24 mm tall, 1 mm cortical wall at 1000 HU,
    1 mm endplates at ``endplate_hu``) in muscle, discs of ``disc_mm`` at 85 HU; returns the
    HU volume [slice, row, col] and the body centres' z (mm)."""
    height, pitch = 24.0, 24.0 + disc_mm
    n_slices = int(n * pitch + 20)
    z = np.arange(n_slices, dtype=np.float32)[:, None, None]
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = np.hypot(yy - CENTRE, xx - CENTRE)[None]
    hu = np.full((n_slices, SIZE, SIZE), 40.0, dtype=np.float32)
    disc = (r <= 17.0) & (z >= 10.0) & (z < 10.0 + n * pitch - disc_mm)
    hu[np.broadcast_to(disc, hu.shape)] = 85.0
    centres = []
    for k in range(n):
        z0 = 10.0 + k * pitch
        inside = (z >= z0) & (z < z0 + height)
        body = inside & (r <= 17.0)
        hu[body] = marrow_hu
        hu[body & ((z < z0 + 1.0) | (z >= z0 + height - 1.0))] = endplate_hu
        hu[inside & (r > 16.0) & (r <= 17.0)] = 1000.0
        centres.append(z0 + height / 2)
    return hu, centres[::-1]  # cranial first, like the instances


def test_low_density_bodies_with_faint_endplates_are_found() -> None:
    # thick slices: endplates partial-volumed to 100 HU, so no shell encloses the marrow in
    # sagittal or coronal planes; the axial rings still do
    hu, centres = _column(5, marrow_hu=80.0, endplate_hu=100.0)
    bone = bone_mask(hu)
    spine = np.array([CENTRE, CENTRE, float(np.mean(centres))])
    with pytest.raises(NotApplicableError):
        separate_vertebrae(bone, AFFINE, CRANIAL, spine)
    assert body_mask(hu, bone)[int(centres[0]), int(CENTRE), int(CENTRE)]
    inst = separate_vertebrae(bone, AFFINE, CRANIAL, spine, hu=hu)
    assert len(inst.centroids) == 5
    np.testing.assert_allclose(inst.centroids[:, 2], centres, atol=2.0)


def test_a_disc_fused_in_the_mask_is_split_at_its_endplates() -> None:
    hu, centres = _column(4, marrow_hu=230.0, endplate_hu=1000.0, disc_mm=5.0)
    bone = hu > 60.0  # the discs are bone in this mask: every body fused with its neighbours
    spine = np.array([CENTRE, CENTRE, float(np.mean(centres))])
    fused = separate_vertebrae(bone, AFFINE, CRANIAL, spine)
    assert len(fused.centroids) < 4
    inst = separate_vertebrae(bone, AFFINE, CRANIAL, spine, hu=hu)
    assert len(inst.centroids) == 4
    np.testing.assert_allclose(inst.centroids[:, 2], centres, atol=3.0)


def test_split_at_endplates_needs_a_plate_across_the_core() -> None:
    hu = np.full((40, 20, 20), 200.0, dtype=np.float32)
    cores = np.zeros(hu.shape, dtype=np.int32)
    cores[2:38, 2:18, 2:18] = 1
    same, n = split_at_endplates(cores, hu, 1.0, min_piece_mm3=500.0)
    assert n == 1 and (same == 1).sum() == (cores == 1).sum()
    spotty = hu.copy()
    spotty[20, 5:9, 5:9] = 900.0  # a bright spot that does not span the core
    _, n = split_at_endplates(cores, spotty, 1.0, min_piece_mm3=500.0)
    assert n == 1
    plate = hu.copy()
    plate[19:21] = 900.0  # an endplate across the core
    halves, n = split_at_endplates(cores, plate, 1.0, min_piece_mm3=500.0)
    assert n == 2
    assert set(np.unique(halves[5])) == {0, 1} and set(np.unique(halves[34])) == {0, 2}
    dark = hu.copy()
    dark[18:22] = 85.0  # a disc band in normal marrow
    _, n = split_at_endplates(cores, dark, 1.0, min_piece_mm3=500.0)
    assert n == 2


def test_the_spinal_canal_is_not_filled_even_where_the_body_ring_opens_into_it() -> None:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    body = np.hypot(yy - 24.0, xx - CENTRE) <= 15.0  # rows grow posterior
    canal = np.hypot(yy - 46.0, xx - CENTRE) <= 7.0
    ring = (np.hypot(yy - 24.0, xx - CENTRE) > 14.0) & body
    ring |= (np.hypot(yy - 46.0, xx - CENTRE) > 6.0) & canal
    hu = np.full((12, SIZE, SIZE), 40.0, dtype=np.float32)
    hu[:, body] = 120.0
    hu[:, canal] = 12.0
    hu[:, ring] = 1000.0
    hu[6:, 38:41, int(CENTRE) - 3 : int(CENTRE) + 4] = 120.0  # body wall open towards the canal
    filled = body_mask(hu, np.zeros(hu.shape, dtype=bool))
    assert filled[3, 24, int(CENTRE)] and not filled[3, 46, int(CENTRE)]
    assert not filled[9, 46, int(CENTRE)]


def test_a_faint_wall_still_closes_the_ring() -> None:
    hu, centres = _column(2, marrow_hu=80.0, endplate_hu=100.0)
    hu[hu == 1000.0] = 360.0  # a thin wall: about 170 HU after the 0.7 mm smoothing
    filled = body_mask(hu, np.zeros(hu.shape, dtype=bool))
    assert filled[int(centres[0]), int(CENTRE), int(CENTRE)]
    assert not filled[2, int(CENTRE), int(CENTRE)]  # below the column: muscle, no ring


def test_low_contrast_body_with_bright_trabeculae_is_filled_whole() -> None:
    # 3 mm slices of low-density bone: the wall reads ~140 HU, below the 150 HU rings, and
    # trabecular spots brighter than the marrow break it into patches at the low ring levels
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = np.hypot(yy - CENTRE, xx - CENTRE)
    hu = np.full((16, SIZE, SIZE), 40.0, dtype=np.float32)
    hu[:, r <= 17.0] = 85.0
    hu[:, (r > 15.5) & (r <= 17.0)] = 140.0
    spots = np.zeros((SIZE, SIZE), dtype=bool)
    for cy, cx in [(26, 26), (26, 38), (38, 26), (38, 38), (32, 32), (32, 22), (22, 32)]:
        spots |= np.hypot(yy - cy, xx - cx) <= 2.0
    hu[:, spots] = 135.0
    filled = body_mask(hu, np.zeros(hu.shape, dtype=bool))
    interior = r <= 14.0
    assert filled[4:12][:, interior].mean() > 0.97
    assert not filled[8][r > 19.0].any()  # the muscle around it stays out


def test_a_split_spinous_process_goes_whole_to_the_vertebra_at_its_cranial_end() -> None:
    # two bodies (1 cranial, 2 caudal) 36 mm apart; behind them two spinous processes in the
    # midline; the upper one's caudal half carries the lower vertebra's label
    labels = np.zeros((90, 80, SIZE), dtype=np.uint8)  # [z, y (posterior), x]
    labels[55:75, 5:30, 20:44] = 1
    labels[19:39, 5:30, 20:44] = 2
    labels[44:64, 45:55, 30:34] = 1  # upper spinous process, hanging over the lower body
    labels[44:52, 45:55, 30:34] = 2  # ... its caudal part reached from below
    labels[10:28, 45:55, 30:34] = 2  # lower spinous process, one label: left alone
    cents = np.array([[32.0, 17.0, 65.0], [32.0, 17.0, 29.0]])  # (x, y, z) mm, cranial first
    arches = midline_arch_markers(labels, AFFINE, cents, CRANIAL)
    assert arches is not None
    assert (arches[44:64, 45:55, 30:34] == 1).all()
    assert not arches[10:28].any() and not arches[:, :40].any()
    labels[44:64, 45:55, 30:34] = 1
    assert midline_arch_markers(labels, AFFINE, cents, CRANIAL) is None


def test_a_core_through_a_faint_disc_twice_as_tall_as_the_others_is_split() -> None:
    # thick slices blur a disc with its endplates: it reads only ~55 HU below the marrow
    hu = np.full((150, 20, 20), 165.0, dtype=np.float32)
    cores = np.zeros(hu.shape, dtype=np.int32)
    for k, z0 in enumerate((2, 22, 42), start=1):
        cores[z0 : z0 + 16, 2:18, 2:18] = k
    cores[64:110, 2:18, 2:18] = 4  # two bodies fused across the disc at 85-89
    hu[85:90] = 110.0
    out, n = split_at_endplates(cores, hu, 1.0, min_piece_mm3=500.0)
    assert n == 5
    assert len({int(out[70, 9, 9]), int(out[104, 9, 9])}) == 2


def test_a_contrast_vessel_is_not_filled_as_marrow() -> None:
    # a 170 HU lumen with noise specks below the low ring levels: not a body's marrow
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = np.hypot(yy - CENTRE, xx - CENTRE)
    hu = np.full((16, SIZE, SIZE), 40.0, dtype=np.float32)
    hu[:, r <= 11.0] = 170.0
    hu += rng.normal(0.0, 80.0, hu.shape).astype(np.float32)
    filled = body_mask(hu, np.zeros(hu.shape, dtype=bool))
    assert filled[4:12][:, r <= 9.0].mean() < 0.3  # bridged whole without the marrow share


def test_a_thick_tube_in_front_of_the_column_is_not_a_vertebra() -> None:
    # a contrast-filled aorta the bone mask took in, touching the bodies' anterior walls
    n_slices, rows, cols = 150, 100, 64
    z = np.arange(n_slices)[:, None, None]
    yy, xx = np.mgrid[0:rows, 0:cols]
    body = (np.hypot(yy - 55.0, xx - 32.0) <= 15.0)[None]
    bone = np.zeros((n_slices, rows, cols), dtype=bool)
    centres = []
    for k in range(4):
        z0 = 10 + 34 * k
        bone |= body & (z >= z0) & (z < z0 + 24)
        centres.append(z0 + 12.0)
    tube = (np.hypot(yy - 28.0, xx - 32.0) <= 12.0)[None] & (z >= 5) & (z < 145)
    bone |= tube
    spine = np.array([32.0, 55.0, float(np.mean(centres))])
    inst = separate_vertebrae(bone, AFFINE, CRANIAL, spine)
    assert len(inst.centroids) == 4
    in_tube = inst.labels[np.broadcast_to(tube, bone.shape) & bone]
    assert (in_tube == OTHER).mean() > 0.9


def _arch_column(lamina: bool = True) -> tuple[npt.NDArray[np.float32], list[float]]:
    """Three bodies (marrow 250 HU in a 1 mm 1000 HU shell, radius 15 mm, 24 mm tall, 34 mm
    apart; LPS +y = posterior = rows) and, for the middle one, an arch: two thin pedicles that
    are all cortex (as on thick slices) to a lamina behind a 13 mm canal, which rests on a wide
    marrow-filled process of the caudal vertebra. Returns HU and the body centres' z."""
    n_slices, rows, cols = 130, 100, SIZE
    z = np.arange(n_slices)[:, None, None]
    yy, xx = np.mgrid[0:rows, 0:cols]
    r = np.hypot(yy - 40.0, xx - 32.0)[None]
    hu = np.full((n_slices, rows, cols), 40.0, dtype=np.float32)
    centres = []
    for k in range(3):
        z0 = 10 + 34 * k
        inside = (z >= z0) & (z < z0 + 24)
        hu[inside & (r <= 15.0)] = 1000.0
        hu[inside & (r <= 14.0) & (z >= z0 + 1) & (z < z0 + 23)] = 250.0
        centres.append(z0 + 12.0)
    zm = 10 + 34  # the middle body's bottom
    for x0 in (22, 40):  # pedicles, 3 x 3 mm, from the body wall to the lamina
        hu[zm + 10 : zm + 13, 50:70, x0 : x0 + 3] = 1000.0
    hu[zm : zm + 24, 56:68, 25:40] = 15.0  # the canal (CSF)
    if lamina:
        hu[zm + 4 : zm + 16, 68:72, 18:47] = 1000.0  # lamina, 4 mm thick
    # the caudal vertebra's process: marrow in a shell, joined to its body, under the lamina
    hu[zm - 26 : zm + 8, 72:80, 14:51] = 1000.0
    hu[zm - 25 : zm + 7, 73:79, 15:50] = 250.0
    hu[zm - 26 : zm - 10, 54:73, 24:41] = 1000.0
    hu[zm - 25 : zm - 11, 55:73, 25:40] = 250.0
    return hu, centres[::-1]


def test_canal_roof_markers_sit_on_the_lamina_behind_each_canal() -> None:
    hu, centres = _arch_column()
    bone = hu > 150.0
    cents = np.array([[32.0, 40.0, c] for c in centres])
    roofs = canal_roof_markers(bone, AFFINE, cents, CRANIAL)
    assert set(np.unique(roofs)) == {0, 2}  # only the middle vertebra has a canal roof
    idx = np.argwhere(roofs == 2)
    assert idx[:, 1].max() < 72 and (idx[:, 1] >= 68).any()  # lamina, not the process behind
    assert idx[:, 1].min() > 55  # nor the body (its pedicles' back ends may join)
    assert np.abs(idx[:, 0] - centres[1]).max() <= 1.5  # in the slab at the body's height
    hu_open, _ = _arch_column(lamina=False)
    assert not canal_roof_markers(hu_open > 150.0, AFFINE, cents, CRANIAL).any()


def test_an_arch_on_thin_cortical_pedicles_stays_with_its_own_body() -> None:
    # without the roof marker the lamina is reached more cheaply from the caudal vertebra's
    # marrow (two shells) than along 13 mm of all-cortex pedicle
    hu, centres = _arch_column()
    bone = hu > 150.0
    spine = np.array([32.0, 40.0, float(np.mean(centres))])
    inst = separate_vertebrae(bone, AFFINE, CRANIAL, spine, hu=hu)
    assert len(inst.centroids) == 3
    zm = 10 + 34
    lamina = inst.labels[zm + 4 : zm + 16, 68:72, 18:47]
    assert (lamina == 2).mean() > 0.6
    assert (lamina[5:] == 2).all()  # all of it above where it rests on the process
    assert (inst.labels[zm - 20 : zm - 12, 74:78, 20:45] == 3).all()  # the process stays


def test_a_core_piece_beyond_a_thin_neck_is_not_a_marker() -> None:
    # a body core (20 mm cube) reaching through a 1-voxel neck into a neighbour's thick
    # bone (a 6 mm cube): the far piece goes, the body stays whole
    cores = np.zeros((40, 40, 40), dtype=np.int32)
    cores[5:25, 10:30, 10:30] = 3
    cores[25:30, 20, 20] = 3
    cores[30:36, 17:23, 17:23] = 3
    box = ndimage.find_objects(cores)[2]
    trunk = core_trunk(cores, 3, box)
    assert trunk[5:25, 10:30, 10:30].all()
    assert not trunk[29:].any()
    assert core_trunk(cores, 3, None).sum() == 0
    cores[30:] = 0  # no far piece: the core is kept as it is, thin parts too
    assert (core_trunk(cores, 3, box) == (cores == 3)).all()


def test_only_a_vertebra_above_a_much_larger_core_gets_its_canal_ring() -> None:
    ranks = np.zeros((10, 10, 160), dtype=np.int16)
    for k, width in enumerate((8, 9, 10, 30, 6), start=1):  # rank 4 = the sacral base
        start = 32 * (k - 1)
        ranks[:, :, start : start + width] = k
    assert above_a_base(ranks) == {3}


def test_two_workers_give_the_serial_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    # the CT's maps in a thread beside the body mask, the core radii shared with a forked
    # child: the same instances as one process computing everything in turn
    hu, centres = _arch_column()
    bone = hu > 150.0
    spine = np.array([32.0, 40.0, float(np.mean(centres))])
    threads: list[str] = []

    def depth_where(ct: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        threads.append(threading.current_thread().name)
        return gap_depth(ct)

    monkeypatch.setattr(instances, "gap_depth", depth_where)
    monkeypatch.setenv(WORKERS_ENV, "1")
    serial = separate_vertebrae(bone, AFFINE, CRANIAL, spine, hu=hu)
    monkeypatch.setenv(WORKERS_ENV, "2")
    shared = separate_vertebrae(bone, AFFINE, CRANIAL, spine, hu=hu)
    assert threads[0] == threading.main_thread().name and threads[1].startswith("hu-maps")
    assert len(serial.centroids) == 3
    assert np.array_equal(shared.labels, serial.labels)
    for a, b in (
        (shared.centroids, serial.centroids),
        (shared.core_extent_mm, serial.core_extent_mm),
        (shared.width_mm, serial.width_mm),
    ):
        assert np.array_equal(a, b)


def test_voxels_in_a_box_are_the_whole_grid_argwhere() -> None:
    rng = np.random.default_rng(8)
    labels = (rng.random((20, 30, 25)) * 4).astype(np.int32) * (rng.random((20, 30, 25)) < 0.1)
    boxes = ndimage.find_objects(labels)
    for k in range(1, 4):
        got = label_voxels(labels, k, boxes[k - 1])
        assert np.array_equal(got, np.argwhere(labels == k))
    assert label_voxels(labels, 9, None).shape == (0, 3)
