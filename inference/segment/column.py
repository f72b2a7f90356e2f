"""Vertebral body interiors for finding the column ([slice, row, col] working grid, 1 mm).

The bone mask fills a body's marrow only where the cortical shell encloses it in sagittal and
coronal planes; thin or partial-volumed endplates (thick slices, low-density bone) leave it
open, and a body without its marrow is too thin to hold a core. The body's walls, though, run
along the spine and stay sharp in any slice thickness, so in each axial plane a body is a closed
cortical ring: filling those rings gives solid bodies. The spinal canal and the pelvic inlet are
rings too; they are told apart by what they hold (CSF and fat are darker than marrow) and, for
the inlet, by size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import BoolArray, bounding_box
from inference.segment.discs import split_at_disc_valleys

# dense-ring levels (HU after 0.7 mm smoothing): cortex, and cortex blurred across thick slices
RING_LEVELS_HU = (200.0, 150.0)
# low levels for low-density bone on thick slices (see body_mask); the last bounds the bridging
LOW_RING_LEVELS_HU = (120.0, 100.0)
BRIDGE_MM = 2.5
BRIDGE_MIN_FRACTION = 0.08
LOW_FILL_MIN_MM = 15.0
LOW_MIN_HOLE_MM2 = 2.0
MARROW_HU = 40.0
CSF_HU = 30.0
DARK_FRACTION = 0.05
MAX_RING_AREA_MM2 = 3000.0
PLATE_ABOVE_MARROW_HU = 100.0
PLATE_HU = 250.0
DISC_BELOW_MARROW_HU = 70.0
TALL_CORE = 1.6
TALL_DISC_BELOW_HU = 45.0
# disc voxels the bone mask took in next to a body (see trim_discs)
TRIM_BELOW_MARROW_HU = 70.0
TRIM_NEAR_CORE_MM = 12.0


def body_mask(
    hu: npt.NDArray[np.float32],
    bone: BoolArray,
    spacing_mm: float = 1.0,
) -> BoolArray:
    """``bone`` plus the marrow enclosed by a cortical ring in an axial plane (array axis 0 =
    slices). The rings themselves are not added: thin dense structures (contrast vessels)
    would join the vertebrae.

    A ring is dense bone (> 200 HU after 0.7 mm smoothing, no opening, so a 0.5 mm shell
    survives); a hole inside it is filled when its mean HU (1 mm smoothing) is above 40 HU
    (marrow, even osteoporotic, against CSF and fat), at most 5 % of it is below 30 HU (a body
    ring broken towards the canal joins the canal's hole) and its area is at most 3000 mm²
    (not the pelvic inlet); the filled marrow is closed across single-slice gaps along axis 0.
    Rings are looked for at 150 HU as well, for thin walls blurred across thick slices, and at
    120 and 100 HU for low-density bone on thick slices (walls 120–230 HU around 80–180 HU
    marrow, the real CT's T12): there, the marrow patches that trabeculae brighter than the
    level leave (holes of at least 2 mm²) are bridged within 2.5 mm (in outlines at least 8 %
    marrow, so not the noise specks of a contrast vessel), and only fills at least 15 mm tall
    along axis 0 are kept (a disc blurred with its endplates is a ring around 85 HU too, but
    thin).
    """
    smooth = ndimage.gaussian_filter(hu, 1.0 / spacing_mm)
    sharp = ndimage.gaussian_filter(hu, sigma=0.7 / spacing_mm)
    filled = np.zeros(hu.shape, dtype=bool)
    for level in RING_LEVELS_HU:
        filled |= _marrow_in_rings(sharp > level, smooth, spacing_mm)
    # in low-density bone on 3 mm slices the wall reads 120-230 HU around 80-180 HU marrow:
    # rings at the low levels too, with the patches that trabecular spots brighter than the
    # level leave closed inside the ring's outline; a disc partial-volumed with its endplates
    # is such a ring as well, so only fills as tall as a body count
    low = np.zeros(hu.shape, dtype=bool)
    for level in LOW_RING_LEVELS_HU:
        low |= _marrow_in_rings(sharp > level, smooth, spacing_mm, LOW_MIN_HOLE_MM2)
    low |= _bridge_patches(filled | low, sharp > LOW_RING_LEVELS_HU[-1], spacing_mm)
    filled |= _tall_parts(low & ~filled, LOW_FILL_MIN_MM / spacing_mm)
    # a ring open in one slice (a partial-volumed wall) leaves a gap across the body: close it
    marrow = filled | ndimage.binary_closing(filled, structure=np.ones((3, 1, 1), dtype=bool))
    out: BoolArray = bone | marrow
    return out


def _in_plane_disk(radius_mm: float, spacing_mm: float) -> BoolArray:
    """A disk of ``radius_mm`` in the plane of axes 1-2 (shape (1, m, m)) as a structure."""
    r = radius_mm / spacing_mm
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    disk: BoolArray = np.zeros((1, 2 * n + 1, 2 * n + 1), dtype=bool)
    disk[0] = yy**2 + xx**2 <= r * r
    return disk


def _tall_parts(mask: BoolArray, min_slices: float) -> BoolArray:
    """The face-connected parts of ``mask`` spanning at least ``min_slices`` along axis 0."""
    lab, n = ndimage.label(mask)
    keep = np.zeros(n + 1, dtype=bool)
    for k, box in enumerate(ndimage.find_objects(lab), start=1):
        keep[k] = box is not None and box[0].stop - box[0].start >= min_slices
    out: BoolArray = keep[lab]
    return out


def _bridge_patches(marrow: BoolArray, dense: BoolArray, spacing_mm: float) -> BoolArray:
    """Voxels within ``BRIDGE_MM`` (in-plane) of ``marrow`` inside the axial outline of
    ``dense`` (its in-plane filled holes), in outlines at least ``BRIDGE_MIN_FRACTION`` marrow:
    a body's marrow between bright trabeculae, not the noise specks of a contrast vessel (low
    -level holes under ``LOW_MIN_HOLE_MM2`` do not count: single-voxel specks)."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    outline = ndimage.binary_fill_holes(dense, structure=in_plane)
    lab, n = ndimage.label(outline, structure=in_plane)
    if n == 0:
        return np.zeros(dense.shape, dtype=bool)
    ids = np.arange(1, n + 1)
    frac = np.asarray(ndimage.mean(marrow, lab, ids))
    ok = np.concatenate([[False], frac >= BRIDGE_MIN_FRACTION])[lab]
    near = ndimage.binary_dilation(marrow, structure=_in_plane_disk(BRIDGE_MM, spacing_mm))
    out: BoolArray = near & ok
    return out


def _marrow_in_rings(
    dense: BoolArray,
    smooth: npt.NDArray[np.float32],
    spacing_mm: float,
    min_area_mm2: float = 0.0,
) -> BoolArray:
    """Holes of ``dense`` within axial planes that hold marrow (see :func:`body_mask`)."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    holes = ndimage.binary_fill_holes(dense, structure=in_plane) & ~dense
    lab, n = ndimage.label(holes, structure=in_plane)
    if n == 0:
        return np.zeros(dense.shape, dtype=bool)
    ids = np.arange(1, n + 1)
    area = np.asarray(ndimage.sum(holes, lab, ids)) * spacing_mm**2
    mean = np.asarray(ndimage.mean(smooth, lab, ids))
    dark = np.asarray(ndimage.sum(smooth < CSF_HU, lab, ids)) * spacing_mm**2
    ok = (area <= MAX_RING_AREA_MM2) & (mean > MARROW_HU) & (dark <= DARK_FRACTION * area)
    ok &= area >= min_area_mm2
    out: BoolArray = np.concatenate([[False], ok])[lab]
    return out


def split_at_endplates(
    cores: npt.NDArray[np.int32],
    smooth_hu: npt.NDArray[np.float32],
    voxel_mm3: float,
    min_piece_mm3: float = 1500.0,
) -> tuple[npt.NDArray[np.int32], int]:
    """Split body cores that run through a disc the masks fused (narrowed disc, thick slices).

    Inside a core (far from the body walls) the only dense plates are endplates and the only
    dark band a disc: voxels brighter than the core's median HU + 100 (at least 250 HU) or
    darker than its median − 70 HU, grown by one voxel, are taken out and the rest relabelled
    (osteoporotic marrow is as dark as a disc, but its endplates still shine). A core more than
    ``TALL_CORE`` times as tall (along array axis 0) as the median big core holds two bodies:
    when it does not split so, a disc darker than its median − 45 HU is enough (a disc partial
    -volumed with its endplates in thick slices). A core falls apart only into pieces of at
    least ``min_piece_mm3`` each; smaller crumbs (trabecular texture) are left out of the
    markers. Returns the new labels (1..n, same grid) and n.
    """
    out = np.zeros_like(cores)
    counts = np.bincount(cores.ravel())
    boxes = ndimage.find_objects(cores)
    min_voxels = min_piece_mm3 / voxel_mm3
    heights = [
        b[0].stop - b[0].start for k, b in enumerate(boxes, 1) if b and counts[k] >= 2 * min_voxels
    ]
    ref = float(np.median(heights)) if len(heights) >= 3 else np.inf
    n_out = 0
    for k, box in enumerate(boxes, start=1):
        if box is None:
            continue
        mine = cores[box] == k
        pieces = [mine]
        if counts[k] >= 2 * min_voxels:
            pieces = _pieces(mine, smooth_hu[box], min_voxels, DISC_BELOW_MARROW_HU) or pieces
            if len(pieces) == 1 and box[0].stop - box[0].start > TALL_CORE * ref:
                pieces = _pieces(mine, smooth_hu[box], min_voxels, TALL_DISC_BELOW_HU) or pieces
        for piece in pieces:
            n_out += 1
            out[box][piece] = n_out
    return out, n_out


def _pieces(
    mine: BoolArray, hu: npt.NDArray[np.float32], min_voxels: float, disc_below_hu: float
) -> list[BoolArray]:
    """The pieces of one core left after removing its plates, or [] when it does not split."""
    marrow = float(np.median(hu[mine]))
    limit = max(marrow + PLATE_ABOVE_MARROW_HU, PLATE_HU)
    odd = (hu >= limit) | (hu <= marrow - disc_below_hu)
    plate = ndimage.binary_dilation(mine & odd)
    lab, n = ndimage.label(mine & ~plate)
    if n < 2:
        return []
    sizes = np.bincount(lab.ravel())[1:]
    big = np.nonzero(sizes >= min_voxels)[0] + 1
    return [lab == i for i in big] if big.size >= 2 else []


def trim_discs(
    labels: npt.NDArray[np.uint8],
    core_rank: npt.NDArray[np.int16],
    smooth_hu: npt.NDArray[np.float32],
    spacing: npt.NDArray[np.float64],
) -> npt.NDArray[np.uint8]:
    """Take disc voxels out of the vertebrae they were labelled with (in place; returned).

    On thick slices a disc slice partial-volumed with its endplate reads as cancellous bone
    and the bone mask takes it in. Such a voxel is darker than its vertebra's marrow: a
    voxel labelled ``k`` within ``TRIM_NEAR_CORE_MM`` of its body core (``core_rank == k``)
    whose HU (``smooth_hu``, 1 mm smoothing) is more than ``TRIM_BELOW_MARROW_HU`` below the
    core's median is set to 0 (background). Far from the core (processes) nothing changes.
    First the border between consecutive bodies is put on their disc and the disc's voxels
    darker than its endplates cleared (:func:`inference.segment.discs.split_at_disc_valleys`).
    """
    split_at_disc_valleys(labels, core_rank, smooth_hu, spacing)
    for k in np.unique(core_rank[core_rank > 0]):
        core = core_rank == k
        marrow = float(np.median(smooth_hu[core]))
        mine = labels == k
        box = bounding_box(core | mine, 1)
        near = ndimage.distance_transform_edt(~core[box], sampling=spacing) <= TRIM_NEAR_CORE_MM
        dark = mine[box] & near & (smooth_hu[box] < marrow - TRIM_BELOW_MARROW_HU)
        labels[box][dark] = 0
    return labels
