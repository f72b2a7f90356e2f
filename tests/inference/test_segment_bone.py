"""The bone border (inference.segment.bone, inference.segment.grid.to_native) on synthetic blurred
blocks whose true faces are known, on [slice, row, col] grids with a diagonal affine (LPS mm)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.segment.bone import bone_mask, fill_small_holes, refine_border
from inference.segment.grid import to_native, working_volume

SOFT_HU, CORTEX_HU, MARROW_HU = 40.0, 1000.0, 200.0
# a cortical box (faces at off-grid mm positions) with a 2 mm cortex around marrow
LO = np.array([10.3, 12.2, 14.6])
HI = np.array([34.1, 38.4, 41.9])
CORTEX_MM = 2.0


Floats = npt.NDArray[np.float64]


def _overlap(centres: Floats, step: float, lo: float, hi: float) -> Floats:
    """Fraction of each voxel interval [c − step/2, c + step/2] inside [lo, hi]."""
    a = np.maximum(centres - step / 2, lo)
    b = np.minimum(centres + step / 2, hi)
    out: Floats = np.clip(b - a, 0.0, None) / step
    return out


def _occupancy(shape: tuple[int, ...], spacing: Floats, lo: Floats, hi: Floats) -> Floats:
    axes = [
        _overlap(np.arange(n) * spacing[k], float(spacing[k]), float(lo[k]), float(hi[k]))
        for k, n in enumerate(shape)
    ]
    out: Floats = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return out


def _block(
    spacing: tuple[float, float, float], extent_mm: float = 48.0
) -> tuple[npt.NDArray[np.float32], Floats, npt.NDArray[np.bool_]]:
    """CT (partial volume + 0.5 mm Gaussian blur), affine (origin 0) and the true mask."""
    sp = np.asarray(spacing)
    shape = tuple(int(extent_mm / s) for s in sp)
    outer = _occupancy(shape, sp, LO, HI)
    inner = _occupancy(shape, sp, LO + CORTEX_MM, HI - CORTEX_MM)
    hu = SOFT_HU + (CORTEX_HU - SOFT_HU) * outer + (MARROW_HU - CORTEX_HU) * inner
    hu = ndimage.gaussian_filter(hu, sigma=0.5 / sp).astype(np.float32)
    centres = np.stack(
        np.meshgrid(*[np.arange(n) * sp[k] for k, n in enumerate(shape)], indexing="ij"), axis=-1
    )
    truth = np.all((centres > LO) & (centres < HI), axis=-1)
    affine = np.diag([*spacing, 1.0])
    return hu, affine, truth


def _dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    return float(2.0 * (a & b).sum() / (a.sum() + b.sum()))


def _faces(mask: npt.NDArray[np.bool_], spacing: Floats) -> Floats:
    """Mask faces (mm) per axis: outer edge of the first and last voxel along the middle line."""
    out = np.zeros((3, 2))
    mid = [n // 2 for n in mask.shape]
    for k in range(3):
        line = mask[tuple(slice(None) if j == k else mid[j] for j in range(3))]
        idx = np.flatnonzero(line)
        out[k] = (idx[0] - 0.5) * spacing[k], (idx[-1] + 0.5) * spacing[k]
    return out


def test_bone_mask_border_is_the_true_face_within_a_voxel() -> None:
    hu, _, truth = _block((1.0, 1.0, 1.0))
    mask = bone_mask(hu)
    faces = _faces(mask, np.ones(3))
    assert np.all(np.abs(faces[:, 0] - LO) <= 1.0)
    assert np.all(np.abs(faces[:, 1] - HI) <= 1.0)
    assert _dice(mask, truth) > 0.95


def test_refine_border_moves_an_offset_border_onto_the_true_face() -> None:
    sp = np.array([0.7, 0.7, 0.7])
    hu, _, truth = _block((0.7, 0.7, 0.7))
    # a border one voxel too wide on the low faces and one too tight on the high faces
    shifted = np.zeros_like(truth)
    shifted[:-1, :-1, :-1] = truth[1:, 1:, 1:]
    labels = shifted.astype(np.uint8) * 3
    out = refine_border(labels, hu, sp)
    assert set(np.unique(out)) == {0, 3}
    faces = _faces(out > 0, sp)
    assert np.all(np.abs(faces[:, 0] - LO) <= 0.5 * sp)
    assert np.all(np.abs(faces[:, 1] - HI) <= 0.5 * sp)
    assert _dice(out > 0, truth) > _dice(shifted, truth) + 0.02


def test_refine_border_keeps_the_border_between_two_labels() -> None:
    sp = np.array([0.7, 0.7, 0.7])
    hu, _, truth = _block((0.7, 0.7, 0.7))
    labels = truth.astype(np.uint8)
    labels[:, :, 40:] *= 2  # the block split in two at column 40
    out = refine_border(labels, hu, sp)
    inner = ndimage.binary_erosion(truth, iterations=3)
    assert np.array_equal(out[inner], labels[inner])


def test_to_native_puts_the_working_grid_border_on_the_native_face() -> None:
    hu, affine, truth = _block((0.8, 0.7, 0.7), extent_mm=46.0)
    # bone in every slice so that the working volume finds a "column": the block fills the
    # middle; pad the slices with a thin bright rod along the slice axis
    hu[:, 60:63, 60:63] = CORTEX_HU
    work = working_volume(hu, affine)
    coarse = (ndimage.gaussian_filter(work.hu, 0.7) > 520.0).astype(np.uint8)
    coarse[:, 55:, 55:] = 0  # not the rod
    coarse = ndimage.binary_fill_holes(coarse).astype(np.uint8)  # labels hold the marrow
    plain = to_native(coarse, work, refine=False) > 0
    refined = to_native(coarse, work) > 0
    # the edge at 70 % of the step lies ~0.2 mm inside this thick (2 mm) cortex's face, so
    # voxels within 0.1 mm inside it may go: no worse than the working grid, faces within 0.5
    assert _dice(refined, truth) >= _dice(plain, truth)
    faces = _faces(refined, np.array([0.8, 0.7, 0.7]))
    assert np.all(np.abs(faces[:, 0] - LO) <= 0.5)
    assert np.all(np.abs(faces[:, 1] - HI) <= 0.5)


def _two_blocks(gap_mm: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], Floats]:
    """Two cortical blocks side by side along the columns, ``gap_mm`` of soft tissue between
    them (a joint), labelled 1 and 2 with the gap bridged and cut in its middle."""
    sp = np.array([0.7, 0.7, 0.7])
    shape = (40, 40, 70)
    lo_a, hi_a = np.array([6.0, 6.0, 5.0]), np.array([22.0, 22.0, 22.3])
    lo_b = np.array([6.0, 6.0, 22.3 + gap_mm])
    hi_b = np.array([22.0, 22.0, 44.0])
    hu = np.full(shape, SOFT_HU)
    for lo, hi in ((lo_a, hi_a), (lo_b, hi_b)):
        outer = _occupancy(shape, sp, lo, hi)
        inner = _occupancy(shape, sp, lo + 1.5, hi - 1.5)
        hu += (CORTEX_HU - SOFT_HU) * outer + (MARROW_HU - CORTEX_HU) * inner
    hu = ndimage.gaussian_filter(hu, sigma=0.5 / sp)
    cols = np.arange(shape[2]) * sp[2]
    rows = np.arange(shape[0]) * sp[0]
    inside = (rows > 6.0) & (rows < 22.0)
    labels = np.zeros(shape, dtype=np.uint8)
    box = inside[:, None, None] & inside[None, :, None]
    cut = 22.3 + gap_mm / 2
    labels[box & ((cols > 5.0) & (cols <= cut))[None, None, :]] = 1
    labels[box & ((cols > cut) & (cols < 44.0))[None, None, :]] = 2
    return hu.astype(np.float32), labels, cols


def test_refine_border_opens_the_dark_gap_where_two_labels_meet() -> None:
    hu, labels, cols = _two_blocks(gap_mm=1.6)
    out = refine_border(labels, hu, np.array([0.7, 0.7, 0.7]))
    in_gap = np.abs(cols - 23.1) < 0.4  # the voxel at the gap centre
    mid = out[20, 20]
    assert not mid[in_gap].any()  # the joint space is background
    assert np.all(mid[(cols > 7.0) & (cols < 21.5)] == 1)
    assert np.all(mid[(cols > 24.7) & (cols < 42.0)] == 2)


def test_refine_border_keeps_bright_bone_where_two_labels_touch() -> None:
    hu, labels, cols = _two_blocks(gap_mm=0.0)
    out = refine_border(labels, hu, np.array([0.7, 0.7, 0.7]))
    mid = out[20, 20]
    assert np.all(mid[(cols > 7.0) & (cols < 42.0)] > 0)


def test_refine_border_decides_thick_slices_by_the_voxel_fraction_inside() -> None:
    """3 mm slices: the slice just past the true face (its voxel 34.5–37.5 mm, wholly outside
    the 34.1 mm face) loses its label, and the last slice inside (31.5–34.5 mm, 87 % inside)
    gets it back when missing."""
    sp = np.array([3.0, 0.7, 0.7])
    hu, _, truth = _block((3.0, 0.7, 0.7))
    top = int(np.flatnonzero(np.any(truth, axis=(1, 2)))[-1])
    extra = truth.astype(np.uint8)
    extra[top + 1] = extra[top]
    out = refine_border(extra, hu, sp)
    assert not out[top + 1].any()
    core = ndimage.binary_erosion(truth[top], iterations=2)
    assert np.all(out[top][core] == 1)
    missing = truth.astype(np.uint8)
    missing[top] = 0
    out = refine_border(missing, hu, sp)
    core = ndimage.binary_erosion(truth[top], iterations=2)
    assert np.all(out[top][core] == 1)
    assert not out[top + 1].any()


def _dim_block(spacing: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """A real-CT-like vertebral body on an isotropic grid: marrow 110 HU inside a 0.5 mm
    cortex of 700 HU, in muscle (20 HU), box partial volume plus a 0.7 mm blur. In 3 mm voxels
    its outer layer peaks at ~200–250 HU, the level of the real 3 mm CT's cortex."""
    sp = np.full(3, spacing)
    shape = tuple(int(48.0 / spacing) for _ in range(3))
    outer = _occupancy(shape, sp, LO, HI)
    inner = _occupancy(shape, sp, LO + 0.5, HI - 0.5)
    hu = 20.0 + (700.0 - 20.0) * outer + (110.0 - 700.0) * inner
    hu = ndimage.gaussian_filter(hu, sigma=0.7 / sp)
    centres = np.stack(np.meshgrid(*[np.arange(n) * spacing for n in shape], indexing="ij"), -1)
    truth = np.all((centres > LO) & (centres < HI), axis=-1)
    return hu.astype(np.float32), truth


def test_refine_border_takes_the_dim_outer_layer_of_coarse_voxels() -> None:
    """3 mm voxels, a dim cortex (peak below 250 HU): labels one voxel short of the truth on
    every face (what the 1 mm working grid gave on the real CT) grow back onto the truth."""
    hu, truth = _dim_block(3.0)
    assert hu[truth].max() < 300.0
    short = ndimage.binary_erosion(truth).astype(np.uint8) * 4
    out = refine_border(short, hu, np.full(3, 3.0))
    assert set(np.unique(out)) == {0, 4}
    assert np.array_equal(_faces(out > 0, np.full(3, 3.0)), _faces(truth, np.full(3, 3.0)))
    # the block's edges are only diagonal to the short labels: out of the band, still missing
    assert _dice(out > 0, truth) > _dice(short > 0, truth) + 0.15


def test_refine_border_keeps_marrow_and_drops_the_layer_outside_at_1mm() -> None:
    """1 mm voxels, the same dim body: a border one voxel too wide shrinks onto the truth and
    the layer inside it (marrow at 110 HU, dimmer than the cortex beside it) stays."""
    hu, truth = _dim_block(1.0)
    for start in (ndimage.binary_dilation(truth), ndimage.binary_erosion(truth)):
        out = refine_border(start.astype(np.uint8), hu, np.ones(3))
        assert _dice(out > 0, truth) > 0.96  # from 0.88-0.90: faces within 0.2 mm


def test_to_native_fills_small_holes_enclosed_in_plane_but_not_a_canal() -> None:
    """A fat-filled channel of 4.4 mm² through the marrow (the border rule leaves it open) is
    labelled; a 141 mm² one (a canal) stays background."""
    hu, affine, _ = _block((0.8, 0.7, 0.7), extent_mm=46.0)
    hu[:, 60:63, 60:63] = CORTEX_HU  # the "column" rod, as above
    small = (slice(20, 40), slice(44, 47), slice(48, 51))
    canal = (slice(20, 40), slice(22, 39), slice(24, 41))
    hu[small] = -50.0
    hu[canal] = -50.0
    work = working_volume(hu, affine)
    coarse = ndimage.binary_fill_holes(ndimage.gaussian_filter(work.hu, 0.7) > 520.0)
    coarse[:, 55:, 55:] = False
    coarse &= work.hu > 0.0  # the working labels leave both channels open
    out = to_native(coarse.astype(np.uint8), work)
    assert np.all(out[small] == 1)
    assert not out[canal][:, 2:-2, 2:-2].any()
    plain = to_native(coarse.astype(np.uint8), work, refine=False)
    assert not plain[small][:, 1:-1, 1:-1].any()


def test_fill_small_holes_fills_per_label_within_planes() -> None:
    labels = np.zeros((12, 20, 40), dtype=np.uint8)
    labels[1:11, 2:14, 2:14] = 1
    labels[1:11, 2:14, 17:38] = 2
    labels[3:9, 5:7, 5:7] = 0  # an axial hole of 4 mm² through label 1 (open at its ends)
    labels[3:5, 1:14, 9:11] = 0  # enclosed only in planes normal to the row axis
    labels[0:12, 4:15, 20:30] = 0  # 110 mm² axial, open at both ends: a canal
    labels[:, :, 15] = 0
    out = fill_small_holes(labels, np.array([3.0, 1.0, 1.0]))
    assert np.all(out[3:9, 5:7, 5:7] == 1)
    assert np.all(out[3:5, 2:14, 9:11] == 1)
    assert not out[:, 4:14, 20:30].any()
    assert np.array_equal(out[:, :, 14:17], labels[:, :, 14:17])
