"""The native border of the working grid's labels (inference.segment.grid.to_native) on a
synthetic 3 mm CT, [slice, row, col] with a diagonal affine (LPS mm)."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from inference.geometry import bounding_box
from inference.segment import grid
from inference.segment.bone import JointMaps, joint_maps
from inference.segment.grid import REFINE_PASSES, to_native, working_volume
from inference.workers import WORKERS_ENV

SOFT_HU, BONE_HU = 40.0, 700.0
ROD = (slice(9, 12), slice(10, 12), slice(14, 20))  # native voxels of a process


def _column_with_a_process() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """A bone column through every slice (rows/cols 8..13) and a 6-voxel process sticking out
    of it along the columns, 3 mm voxels."""
    hu = np.full((20, 24, 24), SOFT_HU, dtype=np.float32)
    hu[:, 8:14, 8:14] = BONE_HU
    hu[ROD] = BONE_HU
    return hu, np.diag([3.0, 3.0, 3.0, 1.0])


def test_to_native_follows_a_process_beyond_the_working_label() -> None:
    hu, affine = _column_with_a_process()
    work = working_volume(hu, affine)
    # the working grid's label ends at the column (the process failed its bone floor)
    cols = np.arange(work.hu.shape[2])[None, None, :]
    coarse = ((work.hu > 370.0) & (cols <= 3 * 13)).astype(np.uint8)
    out = to_native(coarse, work)
    plain = to_native(coarse, work, refine=False)
    assert not plain[ROD].any()
    assert REFINE_PASSES >= 3
    # each pass takes the process one voxel further: three passes, three of its six voxels
    rod = out[ROD]
    taken = np.asarray(rod.any(axis=(0, 1)))
    assert taken[:3].all()
    assert rod[:, :, :3].all()
    # and nothing beside the bone: the soft tissue around the column and the process stays out
    assert not out[hu < BONE_HU].any()


def test_to_native_computes_the_joint_maps_once_while_the_box_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hu, affine = _column_with_a_process()
    work = working_volume(hu, affine)
    cols = np.arange(work.hu.shape[2])[None, None, :]
    coarse = ((work.hu > 370.0) & (cols <= 3 * 13)).astype(np.uint8)
    boxes: list[tuple[int, ...]] = []

    def counted(native_hu: npt.NDArray[np.float32], spacing: npt.NDArray[np.float64]) -> JointMaps:
        boxes.append(native_hu.shape)
        return joint_maps(native_hu, spacing)

    monkeypatch.setattr(grid, "joint_maps", counted)
    out = to_native(coarse, work)
    # every pass took the process a voxel further, so the labels' box grew each time; the
    # maps were made once, on a box wide enough for all passes (3 times on e71bc04)
    assert len(boxes) == 1
    assert out[ROD][:, :, :3].all()
    assert not out[hu < BONE_HU].any()


def test_to_native_with_the_joint_maps_in_a_thread_equals_the_serial_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # two bones meeting at a thin dark joint that the working grid bridged (label 1 above,
    # 2 below, the joint slice given to label 1); the joint maps are made in a thread while
    # the border test runs, and read after it
    hu = np.full((30, 36, 36), SOFT_HU, dtype=np.float32)
    hu[4:26, 10:26, 10:26] = BONE_HU
    hu[15, 12:24, 12:26] = SOFT_HU  # the joint, one slice thick, open on one side
    work = working_volume(hu, np.diag([1.0, 0.7, 0.7, 1.0]))
    bone = work.hu > 200.0
    coarse = np.zeros(work.hu.shape, dtype=np.uint8)
    coarse[:16][bone[:16]] = 1
    coarse[16:][bone[16:]] = 2
    coarse[15][bone[14]] = 1  # the bridged joint
    threads: list[str] = []

    def where(native_hu: npt.NDArray[np.float32], spacing: npt.NDArray[np.float64]) -> JointMaps:
        threads.append(threading.current_thread().name)
        return joint_maps(native_hu, spacing)

    monkeypatch.setattr(grid, "joint_maps", where)
    monkeypatch.setenv(WORKERS_ENV, "1")
    serial = to_native(coarse, work)
    monkeypatch.setenv(WORKERS_ENV, "2")
    threaded = to_native(coarse, work)
    assert threads[0] == threading.main_thread().name
    assert threads[1].startswith("joint-maps")
    assert np.array_equal(threaded, serial)
    assert (serial[5:14, 12:24, 12:24] == 1).all() and (serial[17:25, 12:24, 12:24] == 2).all()


def _nonzero_box(mask: np.ndarray, pad: int) -> tuple[slice, slice, slice]:
    """The bounding box as first written: from every non-zero voxel's index."""
    idx = np.nonzero(mask)
    lo = [max(0, int(i.min()) - pad) for i in idx]
    hi = [min(n, int(i.max()) + pad + 1) for i, n in zip(idx, mask.shape, strict=True)]
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))


def test_the_labels_box_from_their_planes_is_the_bounding_box() -> None:
    rng = np.random.default_rng(4)
    for _ in range(40):
        shape = tuple(int(n) for n in rng.integers(1, 25, 3))
        labels = (rng.random(shape) < rng.choice([0.002, 0.05, 0.5])).astype(np.uint8) * 7
        if not labels.any():
            continue
        for pad in (0, 2, 5):
            assert bounding_box(labels, pad) == _nonzero_box(labels > 0, pad)


def test_to_native_continues_a_dim_thin_bar_in_coarse_voxels_only() -> None:
    """A transverse process partial-volumed to 200 HU, one voxel thick front to back (rows,
    LPS y), running out to the side (axis 0, LPS x) of a bone block in the axial plane (LPS z
    = axis 2): the border rule leaves it out; the ridge step gives it the block's label on
    3 mm voxels, not on thinner slices."""
    hu = np.full((20, 24, 24), SOFT_HU, dtype=np.float32)
    hu[4:10, 8:14, 8:14] = BONE_HU
    bar = (slice(10, 14), 10, slice(9, 12))
    hu[bar] = 200.0
    for affine, taken in (
        (np.diag([3.0, 3.0, 3.0, 1.0]), True),
        (np.diag([3.0, 3.0, 1.5, 1.0]), False),
    ):
        work = working_volume(hu, affine)
        out = to_native((work.hu > 370.0).astype(np.uint8), work)
        assert (out[bar] == 1).all() if taken else not out[bar].any()
        without = to_native((work.hu > 370.0).astype(np.uint8), work, ridges=False)
        assert not without[bar].any()
        assert not out[10:, 9].any() and not out[10:, 11].any()  # soft tissue beside it


def test_to_native_gives_a_bright_piece_over_a_dim_bridge_to_the_bone_it_touches() -> None:
    """3 mm voxels: L5's working label reaches a knob on the sacrum's top over a dim voxel;
    on the native grid the knob takes the sacrum's label (not with ``pieces=False``)."""
    hu = np.full((16, 16, 16), SOFT_HU, dtype=np.float32)
    native = np.zeros(hu.shape, dtype=np.uint8)
    native[8:14, 2:12, 2:14], native[0:6, 2:16, 2:14] = 24, 26
    hu[native > 0] = BONE_HU
    native[6:8, 13:15, 6:8], native[7, 12, 6] = 24, 24
    hu[6:8, 13:15, 6:8], hu[7, 12, 6] = BONE_HU, 120.0
    work = working_volume(hu, np.diag([3.0, 3.0, 3.0, 1.0]))
    start = [s.start for s in work.box]
    labels = ndimage.affine_transform(
        native, np.full(3, 1.0 / 3.0), offset=start, output_shape=work.hu.shape, order=0
    )
    assert (to_native(labels, work)[6:8, 13:15, 6:8] == 26).all()
    assert (to_native(labels, work, pieces=False)[6:8, 13:15, 6:8] == 24).all()
