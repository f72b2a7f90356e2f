"""The 1 mm working grid: a crop of the input around the spine, resampled with the same axes.

Both directions of resampling are axis-aligned (diagonal) affine transforms, so no coordinate
arrays of the full volume are ever built. Patient frame: whatever frame ``affine`` maps to (LPS).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.errors import NotApplicableError
from inference.geometry import BoolArray, FloatArray, bounding_box, index_to_mm, voxel_spacing
from inference.segment.bone import JointMaps, fill_small_holes, joint_maps, refine_border
from inference.segment.pieces import reassign_pieces
from inference.segment.thin import COARSE_MM, RIDGE_REACH_MM, extend_ridges
from inference.workers import worker_count

BONE_HU = 250.0
# the native border is re-decided until it stands, at most this many times: each pass adds at
# most one voxel layer outside the border it was given, and the voxels it adds have outer
# neighbours of their own that it never tested (on the 3 mm real CT: processes whose tips
# pass the border rule a voxel beyond where the working grid's label ended)
REFINE_PASSES = 3


@dataclass(frozen=True, slots=True)
class WorkingVolume:
    """A resampled crop: ``hu`` on a grid of ``spacing`` mm; ``affine`` index → patient mm.

    ``box`` is the crop in native indices and ``native_shape`` the full input shape;
    ``spine_point`` a patient-mm point on the spinal column's axis (mid-volume);
    ``native_hu`` the input inside ``box`` (a view where the input is float32), which
    :func:`to_native` uses to put the labels' border on the native grid.
    """

    hu: npt.NDArray[np.float32]
    affine: FloatArray
    box: tuple[slice, slice, slice]
    native_affine: FloatArray
    native_shape: tuple[int, int, int]
    spine_point: FloatArray
    native_hu: npt.NDArray[np.float32] | None = None


def spine_box(
    hu: npt.NDArray[np.floating], affine: FloatArray, margin_mm: float = 90.0
) -> tuple[tuple[slice, slice, slice], FloatArray]:
    """Native-index box (± ``margin_mm`` in-plane) around the spinal column, the in-plane region
    where dense bone is present in most slices (ribs, pelvis and contrast come and go), and a
    patient-mm point on that column."""
    bone = hu > BONE_HU
    if not bone.any():
        raise NotApplicableError("no bone in the volume (nothing above 250 HU)")
    frac = bone.mean(axis=0)
    core = frac >= min(0.35, 0.6 * float(frac.max()))
    labels, n = ndimage.label(core)
    sizes = ndimage.sum(frac, labels, range(1, n + 1))
    keep = labels == (int(np.argmax(sizes)) + 1)
    rows, cols = np.nonzero(keep)
    sp = voxel_spacing(affine)
    r0, c0 = float(rows.mean()), float(cols.mean())
    mr, mc = margin_mm / sp[1], margin_mm / sp[2]
    centre = index_to_mm(affine, [[hu.shape[0] / 2, r0, c0]])[0]
    box = (
        slice(0, hu.shape[0]),
        slice(max(0, int(r0 - mr)), min(hu.shape[1], int(np.ceil(r0 + mr)) + 1)),
        slice(max(0, int(c0 - mc)), min(hu.shape[2], int(np.ceil(c0 + mc)) + 1)),
    )
    return box, centre


def working_volume(
    hu: npt.NDArray[np.floating], affine: npt.ArrayLike, spacing: float = 1.0
) -> WorkingVolume:
    """Crop ``hu`` to the spine and resample it to ``spacing`` mm (trilinear), same axes."""
    aff = np.asarray(affine, dtype=np.float64)
    box, centre = spine_box(hu, aff)
    sub = np.asarray(hu[box], dtype=np.float32)
    native = voxel_spacing(aff)
    zoom = native / spacing
    shape = tuple(
        max(1, int(np.floor((n - 1) * z)) + 1) for n, z in zip(sub.shape, zoom, strict=True)
    )
    out = ndimage.affine_transform(
        sub, 1.0 / zoom, output_shape=shape, order=1, mode="nearest", prefilter=False
    ).astype(np.float32)
    w_aff = aff.copy()
    w_aff[:3, :3] = aff[:3, :3] / zoom
    start = np.array([s.start for s in box], dtype=np.float64)
    w_aff[:3, 3] = aff[:3, :3] @ start + aff[:3, 3]
    shape_in = (int(hu.shape[0]), int(hu.shape[1]), int(hu.shape[2]))
    return WorkingVolume(out, w_aff, box, aff, shape_in, centre, sub)


def to_native(
    labels: npt.NDArray[np.integer],
    work: WorkingVolume,
    *,
    refine: bool = True,
    ridges: bool = True,
    pieces: bool = True,
) -> npt.NDArray[np.uint8]:
    """Map a working-grid label map back onto the full native grid.

    Nearest neighbour, then (``refine`` and the native HU at hand) the outer border of the
    labels is re-decided on the native grid by the bone border rule
    (:func:`inference.segment.bone.refine_border`): the nearest-neighbour border is off by up
    to half a working voxel, which cost the phantoms about 0.015 Dice per level; then small
    holes enclosed in-plane by one label are filled
    (:func:`inference.segment.bone.fill_small_holes`). Both are repeated on their own result
    until it no longer changes (at most ``REFINE_PASSES`` times): a voxel a pass adds is
    border itself, with outer neighbours that pass did not test. Last, in voxels coarse along
    every axis, thin ridges continuing a label in the axial plane take it
    (:func:`inference.segment.thin.extend_ridges`: transverse processes; not with
    ``ridges=False``, for the benches' before/after), and bright pieces of a label joined to
    it only through dimmer voxels but touching another vertebra's bright bone take that
    vertebra's label (:func:`inference.segment.pieces.reassign_pieces`; not with
    ``pieces=False``).
    """
    native = voxel_spacing(work.native_affine)
    step = voxel_spacing(work.affine)
    box = work.box
    shape = tuple(int(s.stop - s.start) for s in box)
    sub = ndimage.affine_transform(
        labels.astype(np.uint8), native / step, output_shape=shape, order=0, mode="constant", cval=0
    )
    if refine and work.native_hu is not None and sub.any():
        # the joint maps once, on a box the passes' boxes stay inside (a pass adds at most one
        # voxel layer), cut to each pass's box
        maps: tuple[tuple[slice, ...], JointMaps] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="joint-maps") as pool:
            for _ in range(REFINE_PASSES):
                near = bounding_box(sub, 2)
                hu = work.native_hu[near]
                if maps is None or not _inside(near, maps[0]):
                    wide = bounding_box(sub, 2 + REFINE_PASSES)
                    maps = (wide, _joint_maps_of(work.native_hu[wide], native, pool))
                new = fill_small_holes(
                    refine_border(sub[near], hu, native, _cut(maps[1], near, maps[0])), native
                )
                if np.array_equal(new, sub[near]):
                    break
                sub[near] = new
        if ridges:
            sub = _ridges(sub, work.native_hu, work.native_affine)
        if pieces and float(native.min()) >= COARSE_MM:
            part = bounding_box(sub, 1)
            sub[part] = reassign_pieces(sub[part], work.native_hu[part], native)
    out = np.zeros(work.native_shape, dtype=np.uint8)
    out[box] = sub
    return out


def _ridges(
    sub: npt.NDArray[np.uint8], hu: npt.NDArray[np.float32], affine: FloatArray
) -> npt.NDArray[np.uint8]:
    """:func:`extend_ridges` on the labels' box (2 voxels plus the ridges' reach around it) of
    ``sub``, with the array axes nearest the patient's front-back (LPS y) and cranio-caudal (z)
    directions found from ``affine``."""
    spacing = voxel_spacing(affine)
    if float(spacing.min()) < COARSE_MM:
        return sub
    axes = np.abs(np.asarray(affine, dtype=np.float64)[:3, :3]) / spacing
    across, axial = int(np.argmax(axes[1])), int(np.argmax(axes[2]))
    pad = 2 + int(np.ceil(RIDGE_REACH_MM / float(spacing.min())))
    box = bounding_box(sub, pad)
    sub[box] = extend_ridges(sub[box], hu[box], spacing, across, axial)
    return sub


def _joint_maps_of(
    hu: npt.NDArray[np.float32], spacing: FloatArray, pool: ThreadPoolExecutor
) -> JointMaps:
    """:func:`joint_maps` of ``hu``, computed in ``pool``'s thread while the caller goes on
    (SciPy's filters release the GIL) where two workers are allowed
    (:func:`inference.workers.worker_count`): :func:`refine_border` reads them only after its
    border test, half of its time."""
    if worker_count() < 2:
        return joint_maps(hu, spacing)
    return _PendingMaps(pool.submit(joint_maps, hu, spacing), None)


class _PendingMaps(JointMaps):
    """:class:`JointMaps` that a thread is still computing (cut to ``part`` of its grid when
    given): reading ``above`` or ``depth`` waits for them."""

    __slots__ = ("_future", "_part")
    _future: Future[JointMaps]
    _part: tuple[slice, ...] | None

    def __init__(self, future: Future[JointMaps], part: tuple[slice, ...] | None) -> None:
        object.__setattr__(self, "_future", future)
        object.__setattr__(self, "_part", part)

    @property
    def above(self) -> BoolArray:
        maps: JointMaps = self._future.result()
        return maps.above if self._part is None else maps.above[self._part]

    @property
    def depth(self) -> npt.NDArray[np.float32]:
        maps: JointMaps = self._future.result()
        return maps.depth if self._part is None else maps.depth[self._part]


def _inside(box: tuple[slice, ...], outer: tuple[slice, ...]) -> bool:
    """Whether ``box`` lies within ``outer`` (index slices of one array)."""
    return all(b.start >= o.start and b.stop <= o.stop for b, o in zip(box, outer, strict=True))


def _cut(maps: JointMaps, box: tuple[slice, ...], outer: tuple[slice, ...]) -> JointMaps:
    """``maps`` of the box ``outer`` cut to ``box`` (which lies inside it)."""
    part = tuple(
        slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer, strict=True)
    )
    if isinstance(maps, _PendingMaps):  # still being computed: cut when read
        return _PendingMaps(maps._future, part)
    return JointMaps(maps.above[part], maps.depth[part])
