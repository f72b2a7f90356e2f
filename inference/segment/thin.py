"""Thin bone in coarse voxels: rings round small holes and narrow notches, on the native grid
([slice, row, col], ``spacing`` mm per axis; no patient frame needed).

In coarse voxels (the real 3 mm CT) a thin process in cross-section is a ring of
partial-volumed cortex (150-300 HU) round fatty marrow. The border rule
(:func:`inference.segment.bone.inside_edge`) decides each voxel on its own step and leaves such
a ring out where the label does not already hold it; TotalSegmentator counts it as bone. The
evidence is the shape the voxels make with the label, not their HU alone: background voxels of
at least ``RING_HU`` within ``RING_LAYERS`` steps (26-neighbours) of a label that, with the
label, enclose a small in-plane hole (:func:`inference.segment.bone.fill_small_holes`) take the
label, and so does the hole; a bright rim beside soft tissue encloses nothing and stays out.

The back of a body at the basivertebral foramen is a notch of 80-150 HU between the body's
bright walls on coarse voxels (the real CT's L5): :func:`fill_notches` gives background voxels
of at least ``NOTCH_HU`` with one label within ``NOTCH_VOXELS`` on both sides along one in-plane
axis and on at least one side along the other that label (a notch at most a few voxels wide;
the spinal canal is wider), again unless they touch another bone.

Both only where the voxels are coarse (:func:`widen_coarse`: some spacing of at least
``COARSE_MM``): in finer voxels the cortex of a thin process reads as bone and the border rule
keeps it, and the rules only cost time (1.3 s CPU per border pass on the 512x512x300 phantom at
1 x 0.7 x 0.7 mm) and a few voxels of soft tissue.

A transverse process is a bar running laterally, a few mm thick front to back: in voxels that
are coarse along every axis its lateral part is partial-volumed down to 100-250 HU (the real
CT's L5: TotalSegmentator's voxels our border left out read -13 / 82 / 230 HU p10/50/90), so no
step rule keeps it. :func:`extend_ridges` follows such a ridge from the label outwards in the
axial plane: background voxels of at least ``RIDGE_HU`` that are ``RIDGE_STEP_HU`` brighter than
both their neighbours front and back (a plate seen edge-on, not the flat inside of a muscle)
take the label next to them, up to ``RIDGE_REACH_MM`` from it, unless they touch another bone,
where such a ridge runs at least ``RIDGE_MIN_STEPS`` voxels out (a single bright voxel beside
a bone surface seen edge-on is partial volume the phantoms' exact truth calls soft tissue: on
3 mm isotropic phantoms 1, 2 and 5 one-step ridges cost L1-L5 0.001-0.004 each, two-step ones
0.0003-0.0008; on the real CT L5 0.9006 against 0.8997 vs TS v2).
It runs once after the border passes (:func:`inference.segment.grid.to_native`) and only where
every spacing is at least ``COARSE_MM``: in fine in-plane voxels the process' cortex reads as bone.

Only vertebra labels up to ``LAST_WIDENED`` (VerSe L6) are widened: the sacrum's alae and the
pelvic ring hold holes of soft tissue (on the 3 mm isotropic phantoms the sacrum lost 0.04).
Measured with bench/bench_real_ct.py (real CT vs TotalSegmentator) and bench/segment_errors.py
(phantoms); bench/real_ct_rules.py holds the variants tried.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import FloatArray

RING_HU = 150.0
RING_LAYERS = 3
NOTCH_HU = 70.0
NOTCH_VOXELS = 2
COARSE_MM = 2.0
LAST_WIDENED = 25  # VerSe L6; the sacrum (26) and other bone (255) are left alone
# ridges (extend_ridges), measured on the real CT against TS v2 (bench/real_ct_rules.py)
RIDGE_HU = 150.0
RIDGE_STEP_HU = 20.0
RIDGE_REACH_MM = 15.0
RIDGE_MIN_STEPS = 2

HoleFiller = Callable[[npt.NDArray[np.uint8], FloatArray], npt.NDArray[np.uint8]]


def widen_coarse(
    labels: npt.NDArray[np.uint8],
    hu: npt.NDArray[np.float32],
    spacing: FloatArray,
    fill_holes: HoleFiller,
) -> npt.NDArray[np.uint8]:
    """:func:`close_thin_rings` then :func:`fill_notches` where some voxel spacing is at least
    ``COARSE_MM``; ``labels`` unchanged otherwise."""
    if float(np.max(spacing)) < COARSE_MM:
        return labels
    return fill_notches(close_thin_rings(labels, hu, spacing, fill_holes), hu)


def close_thin_rings(
    labels: npt.NDArray[np.uint8],
    hu: npt.NDArray[np.float32],
    spacing: FloatArray,
    fill_holes: HoleFiller,
) -> npt.NDArray[np.uint8]:
    """``labels`` with the small holes that a vertebra label and its ring of ``RING_HU``
    background voxels enclose in-plane, and the ring voxels touching them, given that label.

    ``fill_holes(labels, spacing)`` fills the holes a label encloses in-plane
    (:func:`inference.segment.bone.fill_small_holes`, passed in: bone.py calls this module).
    """
    widen = (labels > 0) & (labels <= LAST_WIDENED)
    if not widen.any():
        return labels
    tentative = np.where(widen, labels, 0).astype(np.uint8)
    free = (labels == 0) & (hu >= RING_HU)
    cube = np.ones((3, 3, 3), dtype=bool)
    for _ in range(RING_LAYERS):
        near = ndimage.grey_dilation(tentative, footprint=cube)
        take = free & (tentative == 0) & (near > 0)
        if not take.any():
            break
        tentative[take] = near[take]
    filled = fill_holes(tentative, spacing)
    holes = _own_holes((filled != tentative) & (labels == 0), filled, labels)
    if not holes.any():
        return labels
    ring = (tentative != 0) & ~widen & ndimage.binary_dilation(holes, cube)
    keep = holes | ring
    out = labels.copy()
    out[keep] = filled[keep]
    return out


def _own_holes(
    holes: npt.NDArray[np.bool_], filled: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]
) -> npt.NDArray[np.bool_]:
    """The pieces of ``holes`` (26-connected) none of whose voxels touches a voxel that
    ``labels`` gives to another bone than the one ``filled`` gives the voxel: a gap between
    two bones (a facet joint, L5's process against the sacrum) is not a hole in one of them."""
    cube = np.ones((3, 3, 3), dtype=bool)
    high = ndimage.grey_dilation(labels, footprint=cube)
    low = ndimage.grey_erosion(np.where(labels == 0, 255, labels).astype(np.uint8), footprint=cube)
    foreign = holes & ((high > filled) | ((low < filled) & (low > 0)))
    pieces, _ = ndimage.label(holes, structure=cube)
    bad = np.unique(pieces[foreign])
    out: npt.NDArray[np.bool_] = holes & ~np.isin(pieces, bad[bad > 0])
    return out


def fill_notches(
    labels: npt.NDArray[np.uint8], hu: npt.NDArray[np.float32]
) -> npt.NDArray[np.uint8]:
    """Background voxels of at least ``NOTCH_HU`` in an in-plane notch of one vertebra label
    (axis 0 = slices; see the module docstring) take that label, unless they touch another."""
    out = labels.copy()
    cand = (labels == 0) & (hu >= NOTCH_HU)
    k = NOTCH_VOXELS
    for value, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or value > LAST_WIDENED:
            continue
        big = tuple(slice(max(b.start - k, 0), b.stop + k) for b in box)
        mine = labels[big] == value
        (r_hi, r_lo), (c_hi, c_lo) = (
            [_within(mine, axis, k, sign) for sign in (1, -1)] for axis in (1, 2)
        )
        rows, cols = r_hi & r_lo, c_hi & c_lo
        take = ((rows & (c_hi | c_lo)) | (cols & (r_hi | r_lo))) & cand[big]
        view = out[big]
        view[take & (view == 0)] = value
    added = out != labels
    if not added.any():
        return labels
    kept = _own_holes(added, out, labels)
    final = labels.copy()
    final[kept] = out[kept]
    return final


def _within(mask: npt.NDArray[np.bool_], axis: int, k: int, sign: int) -> npt.NDArray[np.bool_]:
    """Where ``mask`` holds a voxel within ``k`` voxels along ``axis`` on the ``sign`` side
    (the voxel itself included)."""
    shape = [1, 1, 1]
    shape[axis] = 2 * k + 1
    foot = np.zeros(shape, dtype=bool)
    half: list[slice] = [slice(None)] * 3
    half[axis] = slice(k, None) if sign > 0 else slice(0, k + 1)
    foot[tuple(half)] = True
    out: npt.NDArray[np.bool_] = ndimage.maximum_filter(mask, footprint=foot)
    return out


def extend_ridges(
    labels: npt.NDArray[np.uint8],
    hu: npt.NDArray[np.float32],
    spacing: FloatArray,
    across: int,
    axial: int,
) -> npt.NDArray[np.uint8]:
    """``labels`` with the thin ridges that continue a vertebra label in the axial plane (see
    the module docstring) given that label; unchanged unless every spacing is at least
    ``COARSE_MM``.

    ``across``: the array axis nearest the patient's front-back direction (the ridge is
    brighter than its two neighbours along it); ``axial``: the array axis nearest the
    cranio-caudal one (growth stays within its planes). A ridge is taken only where it runs
    at least ``RIDGE_MIN_STEPS`` voxels out from the label (a bar, not one partial-volumed
    voxel on a bone surface seen edge-on).
    """
    sp = np.asarray(spacing, dtype=np.float64)
    if float(sp.min()) < COARSE_MM or across == axial:
        return labels
    pair = [1, 1, 1]
    pair[across] = 3
    sides = np.ones(pair, dtype=bool)
    sides.flat[1] = False  # the voxel itself: its two neighbours along ``across``
    flank = ndimage.maximum_filter(hu, footprint=sides, mode="nearest")
    ridge = (labels == 0) & (hu >= RIDGE_HU) & (hu - flank >= RIDGE_STEP_HU)
    if not ridge.any():
        return labels
    steps = max(round(RIDGE_REACH_MM / float(np.delete(sp, axial).max())), 1)
    grown, when = _grow_ridges(labels, ridge, axial, steps)
    added = _bars((labels == 0) & (grown > 0), when, axial)
    out = labels.copy()
    out[added] = grown[added]
    return out


def _grow_ridges(
    labels: npt.NDArray[np.uint8], ridge: npt.NDArray[np.bool_], axial: int, steps: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int16]]:
    """Vertebra labels grown over ``ridge`` voxels in the planes normal to ``axial`` (8
    neighbours), ``steps`` times, and the step at which each voxel was taken (0: not). A voxel
    touching two bones (a joint, the process against the sacrum) is left alone."""
    plane = [3, 3, 3]
    plane[axial] = 1
    foot = np.ones(plane, dtype=bool)
    grown = np.where((labels > 0) & (labels <= LAST_WIDENED), labels, 0).astype(np.uint8)
    low = ndimage.grey_erosion(np.where(labels == 0, 255, labels).astype(np.uint8), footprint=foot)
    high = ndimage.grey_dilation(labels, footprint=foot)
    when = np.zeros(labels.shape, dtype=np.int16)
    for step in range(1, steps + 1):
        near = ndimage.grey_dilation(grown, footprint=foot)
        alone = ((low == 255) | (low == near)) & ((high == 0) | (high == near))
        take = ridge & (grown == 0) & (near > 0) & alone
        if not take.any():
            break
        grown[take] = near[take]
        when[take] = step
    return grown, when


def _bars(
    added: npt.NDArray[np.bool_], when: npt.NDArray[np.int16], axial: int
) -> npt.NDArray[np.bool_]:
    """The pieces of ``added`` (8-connected within the planes normal to ``axial``) that reach
    at least ``RIDGE_MIN_STEPS`` steps from the label."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    cut: list[slice | int] = [slice(None)] * 3
    cut[axial] = 1
    structure[tuple(cut)] = True
    pieces, n = ndimage.label(added, structure=structure)
    if n == 0:
        return added
    reach = np.asarray(ndimage.maximum(when, pieces, index=np.arange(1, n + 1)))
    out: npt.NDArray[np.bool_] = np.isin(pieces, np.flatnonzero(reach >= RIDGE_MIN_STEPS) + 1)
    return out
