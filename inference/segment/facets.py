"""Facet-joint markers: each articular process seeded for its own vertebra beside the joint
(working grid, indexed [slice, row, col]; ``aff`` maps indices to patient LPS mm).

A facet joint is a thin low-HU sheet between two cortical surfaces: the inferior articular
process (IAP) of the vertebra above on one side, the superior articular process (SAP) of the
vertebra below on the other. The bone mask bridges the sheet, and the IAP hangs down onto the
lamina of the vertebra below, so the growth from the cores reached the IAP's lower half from
below (phantoms: about 16 % of the IAP bone within 12 mm of the joint went to the vertebra
below, and the planner's head clearance to the vertebra above read too large). In the lumbar
spine the IAP lies medial to the SAP, in the thoracic spine behind it: the side of the sheet
towards the midline and the back belongs to the upper of the two vertebrae that meet there.

The joint's normal is taken as that direction (medial + posterior, 45 deg between; the
phantoms' lumbar joints lie within 25 deg of it) rather than fitted: the dark voxels of a joint
on the 1 mm working grid form a blob a few mm thick, not a plane. A sheet voxel is a deep gap
with cortex on both sides along that normal within 1.5 mm (the marrow inside a 7 mm process
is a gap between two cortices too, but wider). The bone within ``SIDE_MM`` on either side
becomes a marker of its vertebra for the second growth (instances.py), so the IAP grows from
its joint face instead of from the lamina it rests on. The lower side only where the first
growth gave it to the lower vertebra already: an SAP's tip touches the upper vertebra's pars
and pedicle, and seeded there the lower vertebra took them (the end-to-end test phantom, seed
11 at 2 mm: L4's pedicles went to L5, 527 -> 1198 L4 voxels in L5, 451 with the condition).

Where the markers do not fire (measured at a395a33, session 7): on the real 3 mm CT no joint
shows a gap at any level (in each pair's contact zone behind the column, voxels deeper than
``SHEET_DEPTH_HU``: 0-8 at T12/L1 .. L4/L5, 31 of 2007 at L5/S1, depth p90 38 HU; no sheet;
along TotalSegmentator's own L5/S1 boundary no HU valley either: the two neighbours' minimum
minus the voxel, p50 -174 / -33 HU on the two sides), and a 5 mm grey closing with 2.5/3.5 mm
side samples at 400/150 HU still pairs no sheet. On the phantoms the L5/S1 joint faces
cranially (normal . cranial 0.50-0.57, 31-35 deg off the expected normal; the other joints
0-22 deg): of its voxels deeper than ``SHEET_DEPTH_HU`` within 1.8 mm of the true plane 48/470
(seed 5, 1 mm) and 32/445 (seed 6, 3 mm slices) pass the side test, 30-40 % at the other
joints; in 3 mm slices the gap hardly shows (seed 6 right L5/S1: 776 -> 705 HU across it).
Normals from the centroid line's local direction gave 65/470 and 27/445; a third side sample
at 2.0 mm 97/470 and 58/445 but 4-6 times the sheet voxels elsewhere, and seed 6's L1-L5 Dice
fell 0.002-0.019 (0.953/0.947/0.934/0.937/0.927 -> 0.934/0.929/0.932/0.934/0.922).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import BoolArray, FloatArray, index_to_mm, unit, voxel_spacing

# a joint sheet voxel: bone this much darker than its 3x3x3 grey closing (the working grid's
# facet gaps read 230-400 HU deep in the median, 85-96 % of them above 100 HU; 3-5 % of other
# bone voxels, scattered single voxels of the marrow texture)
SHEET_DEPTH_HU = 100.0
SHEET_MIN_VOXELS = 15
# where joints are: behind the body centroids' line and off the midline (patient mm)
SHEET_BEHIND_MM = 15.0
SHEET_LATERAL_MM = 5.0
# and bone at least this bright on both sides of it along the expected joint normal (the
# brighter of the samples at these distances, mm), this much brighter than the voxel itself:
# seeds 5 (1 mm) / 1 (3 mm), sheet voxels within 1 voxel of the true joint space / elsewhere:
# 980/612 and 818/416 at 450/150 HU, 737/132 and 505/50 at 550/250 HU
SIDE_SAMPLES_MM = (1.0, 1.5)
SHEET_WALL_HU = 550.0
SHEET_CONTRAST_HU = 250.0
# bone this deep on either side of the sheet is seeded (mm), where it lies off the sheet along
# its normal (offset . normal at least ALONG_NORMAL of the offset: beyond a sheet's edge the
# bone is the neighbour's, e.g. L5's pars above S1's SAP; seeds 5 and 1, the IAP bone given to
# the vertebra below plus the SAP bone given to the one above, 6723 voxels at e71bc04, 3414
# with 0.5, 3107 with 0.8)
SIDE_MM = 3.0
ALONG_NORMAL = 0.8
# each of the two vertebrae must touch the sheet with this many voxels of the first growth
MIN_TOUCH = 5


def gap_depth(hu: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """How much darker each voxel is than its grey closing over the 3x3x3 box without corners
    (HU): thin dark gaps between brighter bone (a black top-hat)."""
    footprint = ndimage.generate_binary_structure(3, 2)
    out: npt.NDArray[np.float32] = (ndimage.grey_closing(hu, footprint=footprint) - hu).astype(
        np.float32
    )
    return out


def facet_markers(
    bone: BoolArray,
    first: npt.NDArray[np.uint8],
    hu: npt.NDArray[np.float32],
    depth: npt.NDArray[np.float32],
    aff: FloatArray,
    *,
    cents: FloatArray,
    cranial: FloatArray,
) -> npt.NDArray[np.int16]:
    """Markers on both sides of every facet-joint sheet: the upper vertebra's rank on the
    medial/posterior side, the lower one's on the other, ``SIDE_MM`` deep.

    ``first`` holds the ranks of a first growth (1 = most cranial, ``len(cents)`` vertebrae);
    it only says which two vertebrae meet at a sheet (the two ranks touching it, consecutive).
    ``depth`` is :func:`gap_depth` of the CT, ``cents`` the body centroids (patient mm,
    cranial first), ``cranial`` the patient-frame cranial unit vector.
    """
    out = np.zeros(bone.shape, dtype=np.int16)
    sheet = _sheet_voxels(bone, hu, depth, aff, (cents, cranial))
    comps, _ = ndimage.label(sheet, structure=np.ones((3, 3, 3), dtype=bool))
    spacing = voxel_spacing(aff)
    pad = np.ceil(SIDE_MM / spacing).astype(int) + 1
    lateral = unit(np.cross(cranial, [0.0, 1.0, 0.0]))
    back = unit(np.cross(lateral, cranial))
    for k, box in enumerate(ndimage.find_objects(comps), start=1):
        if box is None:
            continue
        big = tuple(
            slice(max(b.start - int(p), 0), min(b.stop + int(p), n))
            for b, p, n in zip(box, pad, bone.shape, strict=True)
        )
        mine = comps[big] == k
        if int(mine.sum()) < SHEET_MIN_VOXELS:
            continue
        pair = _pair(first[big], mine, len(cents))
        if pair is None:
            continue
        origin = np.array([s.start for s in big])
        centre = index_to_mm(aff, np.argwhere(mine) + origin).mean(axis=0)
        mid = _midline(centre[None, :], cents, cranial)[0]
        normal = unit(back - np.sign((centre - mid) @ lateral) * lateral)
        lower_ok = bone[big] & ~sheet[big] & (first[big] == pair[1])
        _paint_sides(
            out[big], (bone[big] & ~sheet[big], lower_ok), mine, normal, aff=aff, pair=pair
        )
    return out


def _sheet_voxels(
    bone: BoolArray,
    hu: npt.NDArray[np.float32],
    depth: npt.NDArray[np.float32],
    aff: FloatArray,
    geometry: tuple[FloatArray, FloatArray],
) -> BoolArray:
    """Joint-sheet voxels: deep-gap bone behind the column and off its midline, with bright
    bone on both sides along the expected joint normal (medial + posterior: ``_normal``).

    ``geometry`` is (body centroids cranial first, cranial unit vector), patient mm. The dark
    spots of the marrow's texture and the slits between laminae have no cortex on both sides
    along that normal."""
    cents, cranial = geometry
    sheet: BoolArray = bone & (depth > SHEET_DEPTH_HU)
    idx = np.argwhere(sheet)
    out = np.zeros(bone.shape, dtype=bool)
    if len(idx) == 0 or len(cents) < 2:
        return out
    pts = index_to_mm(aff, idx)
    rel = pts - _midline(pts, cents, cranial)
    lateral = unit(np.cross(cranial, [0.0, 1.0, 0.0]))
    back = unit(np.cross(lateral, cranial))
    keep = (rel @ back > SHEET_BEHIND_MM) & (np.abs(rel @ lateral) > SHEET_LATERAL_MM)
    idx, rel = idx[keep], rel[keep]
    normal = back[None, :] - np.sign(rel @ lateral)[:, None] * lateral[None, :]
    normal /= np.linalg.norm(normal, axis=1)[:, None]
    step = normal @ np.linalg.inv(aff[:3, :3]).T  # index units per mm along the normal
    own = hu[tuple(idx.T)]
    sides = []
    for sign in (1.0, -1.0):
        vals = [
            ndimage.map_coordinates(hu, (idx + sign * r * step).T, order=1, mode="nearest")
            for r in SIDE_SAMPLES_MM
        ]
        sides.append(np.max(vals, axis=0))
    low = np.minimum(sides[0], sides[1])
    ok = (low > SHEET_WALL_HU) & (low - own > SHEET_CONTRAST_HU)
    out[tuple(idx[ok].T)] = True
    return out


def _midline(pts: FloatArray, cents: FloatArray, cranial: FloatArray) -> FloatArray:
    """Points on the line through the body centroids at the heights of ``pts`` (patient mm)."""
    h = cents @ cranial
    order = np.argsort(h)
    ph = pts @ cranial
    return np.stack([np.interp(ph, h[order], cents[order, a]) for a in range(3)], axis=1)


def _pair(first: npt.NDArray[np.uint8], mine: BoolArray, n: int) -> tuple[int, int] | None:
    """The two consecutive ranks (upper, lower) whose first-growth bone touches the sheet."""
    touch = ndimage.binary_dilation(mine, np.ones((3, 3, 3), dtype=bool))
    lab = first[touch]
    counts = np.bincount(lab[(lab > 0) & (lab <= n)], minlength=n + 1)
    top = np.argsort(counts)[::-1][:2]
    if counts[top[1]] < MIN_TOUCH or abs(int(top[0]) - int(top[1])) != 1:
        return None
    return int(min(top)), int(max(top))


def _paint_sides(
    out: npt.NDArray[np.int16],
    bone: tuple[BoolArray, BoolArray],
    mine: BoolArray,
    normal: FloatArray,
    *,
    aff: FloatArray,
    pair: tuple[int, int],
) -> None:
    """Bone within ``SIDE_MM`` of the sheet ``mine`` (one box, ``out`` a view of it): the
    ``normal`` side gets the upper rank, the other the lower rank, where ``out`` is unset.
    ``bone``: (where either rank may go, where the lower one may go)."""
    spacing = voxel_spacing(aff)
    dist, near = ndimage.distance_transform_edt(~mine, sampling=spacing, return_indices=True)
    cand = bone[0] & (dist <= SIDE_MM) & (dist > 0)
    idx = np.argwhere(cand)
    if len(idx) == 0:
        return
    foot = near[:, cand].T
    offset = (idx - foot) * spacing  # index axes in mm; rotate to patient axes
    rot = aff[:3, :3] / spacing
    along = (offset @ rot.T) @ normal
    ok = np.abs(along) >= ALONG_NORMAL * np.linalg.norm(offset, axis=1)
    free = out[tuple(idx.T)] == 0
    upper = ok & free & (along > 0)
    lower = ok & free & (along < 0) & bone[1][tuple(idx.T)]
    out[tuple(idx[upper].T)] = pair[0]
    out[tuple(idx[lower].T)] = pair[1]
