"""Bone from Hounsfield units on the working grid (indexed [slice, row, col])."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import BoolArray, FloatArray
from inference.segment.thin import widen_coarse

CORTEX_HU = 250.0
CANCELLOUS_HU = 115.0
EDGE_FRACTION = 0.7
SMOOTH_MM = 0.7
PEAK_WINDOW_MM = 5.0
INNER_MM = 1.0
OUTER_MM = 1.5
GAP_DEPTH_HU = 60.0
STEP_FRACTION = 0.7
PROFILE_MM = 2.0
SOFT_FLOOR_HU = -100.0
HOLE_MM2 = 100.0


def bone_mask(hu: npt.NDArray[np.float32], spacing_mm: float = 1.0) -> BoolArray:
    """Bone = dense bone (> 250 HU after light smoothing) with the cavities it encloses filled,
    plus cancellous bone (> 115 HU) touching it.

    Filling the cortical shell keeps osteoporotic bodies (cancellous < 100 HU) whole; the disc
    spaces and the spinal canal stay open because they are not enclosed in 3-D.
    """
    smooth = ndimage.gaussian_filter(hu, sigma=SMOOTH_MM / spacing_mm)
    dense = smooth > CORTEX_HU
    soft = smooth > CANCELLOUS_HU
    labels, _ = ndimage.label(soft)
    touching = np.unique(labels[dense & soft])
    grown = np.isin(labels, touching[touching > 0]) | dense
    # a body's marrow is enclosed by cortex in both sagittal and coronal planes; a disc, the canal
    # and the foramina are open in at least one of them, so they stay empty
    # (closed first: a thin endplate partial-volumed in thick slices leaves gaps in the shell)
    shell = ndimage.binary_closing(grown, structure=np.ones((3, 1, 1), bool), iterations=2)
    filled: BoolArray = grown | (_fill_in_planes(shell, axis=1) & _fill_in_planes(shell, axis=2))
    # fill enclosed cavities slice by slice too (a shell broken in 3-D by a foramen) but only
    # small ones: the canal and the pelvic inlet are large holes and must stay open.
    per_slice = np.zeros_like(filled)
    for k in range(filled.shape[0]):
        per_slice[k] = ndimage.binary_fill_holes(filled[k])
    holes = per_slice & ~filled
    lab, n = ndimage.label(holes)
    if n:
        sizes = ndimage.sum(holes, lab, range(1, n + 1))
        small = np.concatenate([[False], sizes * spacing_mm**3 < 400.0])
        filled |= small[lab]
    # the border: see border_test
    edge = ndimage.binary_fill_holes(border_test(smooth, np.full(3, spacing_mm)))
    inner = ndimage.binary_erosion(filled, iterations=2)
    out: BoolArray = ndimage.binary_opening(edge | inner, iterations=1)
    return out


def border_test(smooth: npt.NDArray[np.float32], spacing: FloatArray) -> BoolArray:
    """Voxels brighter than the bone border level: ``max(CORTEX_HU, EDGE_FRACTION × local
    peak)``, the peak taken over a ``PEAK_WINDOW_MM`` box (``spacing``: mm per array axis).

    ``smooth`` is the CT after a ``SMOOTH_MM`` Gaussian. The blurred cortex spills ~1 mm beyond
    the bone; 70 % of the LOCAL cortical peak puts the border on the phantoms' true surface
    (thin pedicle walls are dimmer than thick cortex after blurring); 60 % left the mask about a
    voxel too wide, 80 % cut into the bone.
    """
    size = tuple(max(3, round(PEAK_WINDOW_MM / float(s))) for s in spacing)
    local_peak = ndimage.maximum_filter(smooth, size=size)
    out: BoolArray = smooth > np.maximum(CORTEX_HU, EDGE_FRACTION * local_peak)
    return out


@dataclass(frozen=True, slots=True)
class JointMaps:
    """What :func:`refine_border`'s joint-gap test reads from the CT alone (one grid): where it
    is above the bone border level (:func:`border_test` after the ``SMOOTH_MM`` Gaussian), and
    how much darker each voxel is than its grey closing (HU)."""

    above: BoolArray
    depth: npt.NDArray[np.float32]


def joint_maps(hu: npt.NDArray[np.float32], spacing: FloatArray) -> JointMaps:
    """:class:`JointMaps` of ``hu`` (``spacing``: mm per array axis)."""
    smooth = ndimage.gaussian_filter(hu.astype(np.float32), sigma=SMOOTH_MM / spacing)
    touch = _neighbours(spacing, INNER_MM, faces=False)
    depth: npt.NDArray[np.float32] = ndimage.grey_closing(smooth, footprint=touch) - smooth
    return JointMaps(border_test(smooth, spacing), depth)


def refine_border(
    labels: npt.NDArray[np.uint8],
    hu: npt.NDArray[np.float32],
    spacing: FloatArray,
    maps: JointMaps | None = None,
    *,
    widen: bool = True,
) -> npt.NDArray[np.uint8]:
    """Re-decide the labels' outer border on a finer grid than the one they were made on.

    ``labels`` (0 = background) and ``hu`` share one grid ([slice, row, col], ``spacing`` mm per
    axis), typically the native CT grid after a nearest-neighbour map from the 1 mm working
    grid, whose border is off by up to half a working voxel. The voxels on either side of the
    labelled/background border (within ``INNER_MM`` inside / ``OUTER_MM`` outside, and always
    the face neighbours, so a coarse voxel is decided too) are tested with
    :func:`inside_edge`: a labelled voxel whose centre lies outside the edge becomes
    background, a background voxel whose centre lies inside takes the neighbouring label (the
    largest, where two meet). Where two labels meet, their voxels below the
    :func:`border_test` level and ``GAP_DEPTH_HU`` darker than their grey closing become
    background (the gap of a joint); brighter ones, and marrow, keep their labels. ``maps``:
    :func:`joint_maps` of ``hu`` when the caller has them (computed here otherwise). With
    ``widen``, thin bone the border rule leaves out of coarse voxels is added last: rings round
    small holes, then narrow notches (:func:`inference.segment.thin.widen_coarse`: voxels of
    2 mm or more along some axis, vertebra labels only).
    """
    inside = labels > 0
    if not inside.any():
        return labels
    grown = ndimage.grey_dilation(labels, footprint=_neighbours(spacing, OUTER_MM))
    outer = (grown > 0) & ~inside
    near = _neighbours(spacing, INNER_MM)
    inner = inside & ~ndimage.binary_erosion(inside, near, border_value=1)
    kept = inside_edge(hu, inside, inner | outer, spacing)
    out = labels.copy()
    out[inner & ~kept] = 0
    # where two labels meet, a thin dark gap between brighter bone is the joint between two
    # bones the working grid bridged: background (marrow cut by the meeting is not thin)
    if maps is None:
        maps = joint_maps(hu, spacing)
    touch = _neighbours(spacing, INNER_MM, faces=False)
    low = ndimage.grey_erosion(np.where(inside, labels, 255).astype(np.uint8), footprint=touch)
    high = ndimage.grey_dilation(labels, footprint=touch)
    meet = inside & ((low != labels) | (high != labels)) & ~maps.above
    out[meet & (maps.depth > GAP_DEPTH_HU)] = 0
    take = outer & kept
    out[take] = grown[take]
    if widen:
        return widen_coarse(out, hu, spacing, fill_small_holes)
    return out


def inside_edge(
    hu: npt.NDArray[np.float32], inside: BoolArray, candidates: BoolArray, spacing: FloatArray
) -> BoolArray:
    """Which ``candidates`` voxels have their centre inside the bone edge (``spacing``: mm per
    array axis; the result is False off the candidates).

    The edge is found on the sub-voxel HU profile along the outward normal of ``inside`` (a
    Gaussian-smoothed mask), sampled by trilinear interpolation over ``±max(PROFILE_MM, the
    voxel's extent along the normal)``: the bone level ``P`` is the highest value from the
    centre inwards, the soft-tissue level ``S`` the lowest from the centre outwards (not below
    ``SOFT_FLOOR_HU``: gas next to fat is no deeper step), and the edge is where the profile
    falls to ``S + STEP_FRACTION × (P − S)``. A voxel is inside when its own value is at least
    that level: a voxel is centrally symmetric, so its centre is inside the edge exactly when
    at least half of it is, at any voxel size. The step is the local one (a dim cortex in
    coarse voxels is a small step above fat or muscle), not an absolute HU; 0.7 rather than
    0.5 because a cortex thinner than the blur spreads its half-maximum outwards (measured on
    the phantoms and on the 3 mm real CT against TotalSegmentator).
    """
    sp = np.asarray(spacing, dtype=np.float64)
    idx = np.argwhere(candidates)
    out = np.zeros(candidates.shape, dtype=bool)
    if len(idx) == 0:
        return out
    blurred = ndimage.gaussian_filter(inside.astype(np.float32), sigma=0.7 * float(sp.max()) / sp)
    grad = np.empty((len(idx), 3), dtype=np.float64)
    for axis in range(3):  # central differences of the blurred mask, at the candidates only
        hi, lo = idx.copy(), idx.copy()
        hi[:, axis] = np.minimum(hi[:, axis] + 1, candidates.shape[axis] - 1)
        lo[:, axis] = np.maximum(lo[:, axis] - 1, 0)
        diff = blurred[tuple(hi.T)] - blurred[tuple(lo.T)]
        grad[:, axis] = diff / ((hi[:, axis] - lo[:, axis]).clip(1) * sp[axis])
    norm = np.linalg.norm(grad, axis=1)
    ok = norm > 1e-6
    normal = -grad / np.where(ok, norm, 1.0)[:, None]  # outward, mm
    reach = np.maximum(PROFILE_MM, (np.abs(normal) * sp).sum(axis=1))
    k = int(np.ceil(float(reach.max()) / (0.5 * float(sp.min()))))
    step = (reach / k)[:, None] * normal / sp  # index units per sample
    vals = np.empty((2 * k + 1, len(idx)), dtype=np.float32)
    data = np.asarray(hu, dtype=np.float32)
    for i, t in enumerate(range(-k, k + 1)):
        pts = idx + t * step
        vals[i] = ndimage.map_coordinates(data, pts.T, order=1, mode="nearest")
    own = vals[k]
    peak = vals[: k + 1].max(axis=0)
    soft = np.maximum(vals[k:].min(axis=0), SOFT_FLOOR_HU)
    out[tuple(idx.T)] = ok & (own >= soft + STEP_FRACTION * (peak - soft))
    return out


def fill_small_holes(
    labels: npt.NDArray[np.uint8], spacing: FloatArray, max_mm2: float = HOLE_MM2
) -> npt.NDArray[np.uint8]:
    """Background holes of at most ``max_mm2`` enclosed by one label within a plane normal to
    an array axis (axial, then the two others) take that label (``spacing``: mm per axis).

    They are marrow darker than the border rule's level (fat, a vessel channel), the dark
    middle of a process inside its cortical ring in thick voxels, or a dimple where the
    labels' border cut into the bone; references count them as bone (on the real 3 mm CT
    97 % of the voxels so filled are TotalSegmentator bone). The spinal canal, the one large
    hole a vertebra encloses (in axial planes only), stays open.
    """
    out = labels.copy()
    for axis in range(3):
        plane = np.zeros((3, 3, 3), dtype=bool)
        index: list[int | slice] = [slice(None)] * 3
        index[axis] = 1
        plane[tuple(index)] = ndimage.generate_binary_structure(2, 1)
        pixel = float(np.prod(np.delete(np.asarray(spacing, dtype=np.float64), axis)))
        current = out.copy()
        for k, box in enumerate(ndimage.find_objects(current)):
            if box is not None:
                _fill_enclosed(out[box], current[box], k + 1, plane, max_mm2 / pixel)
    return out


def _fill_enclosed(
    out: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.uint8],
    value: int,
    plane: BoolArray,
    max_pixels: float,
) -> None:
    """Give ``value`` to the background of ``labels`` in the pieces of not-``value`` (connected
    by ``plane``) that stay off the box's in-plane sides and hold at most ``max_pixels``."""
    others = labels != value
    pieces, n = ndimage.label(others, structure=plane)
    if n == 0:
        return
    open_ids = [pieces[tuple(side)] for side in _sides(plane)]
    outside = np.zeros(n + 1, dtype=bool)
    outside[np.concatenate([ids.ravel() for ids in open_ids])] = True
    empty = others & (labels == 0)
    size = np.bincount(pieces[empty], minlength=n + 1)
    small = ~outside & (size > 0) & (size <= max_pixels)
    small[0] = False
    out[small[pieces] & empty] = value


def _sides(plane: BoolArray) -> list[list[int | slice]]:
    """Index tuples of the first and last layer along each axis that ``plane`` connects."""
    out: list[list[int | slice]] = []
    for axis in range(3):
        index: list[int | slice] = [1, 1, 1]
        index[axis] = 0
        if plane[tuple(index)]:
            for end in (0, -1):
                side: list[int | slice] = [slice(None)] * 3
                side[axis] = end
                out.append(side)
    return out


def _neighbours(spacing: FloatArray, radius_mm: float, *, faces: bool = True) -> BoolArray:
    """3x3x3 footprint of the neighbours within ``radius_mm`` (``spacing``: mm per axis), with
    the six face neighbours too unless ``faces`` is False."""
    offsets = np.indices((3, 3, 3)).reshape(3, -1).T - 1
    dist = np.linalg.norm(offsets * np.asarray(spacing, dtype=np.float64), axis=1)
    near = dist <= radius_mm
    if faces:
        near |= np.abs(offsets).sum(axis=1) <= 1
    out: BoolArray = near.reshape(3, 3, 3)
    return out


def _fill_in_planes(mask: BoolArray, axis: int) -> BoolArray:
    """Fill holes within each plane normal to array ``axis`` (one call, in-plane connectivity)."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    index: list[int | slice] = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    out: BoolArray = ndimage.binary_fill_holes(mask, structure=structure)
    return out
