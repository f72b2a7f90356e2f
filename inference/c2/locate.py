"""Find C2 in a CT volume, its frame, and a seed line through each pediculoisthmic component.

Frame: LPS millimetres; volumes are indexed ``[slice, row, col]`` with a 4×4 affine
``(slice, row, col, 1)`` → LPS. The C2 frame has ``cranial`` (s), ``anterior`` (a) and ``left``
(= s × a, patient left) unit vectors. Work here is done on a coarse copy of the volume (about
1 mm voxels); the MPD itself is measured on the full-resolution HU volume (:mod:`.mpd`).

C2 is recognised by the core of its body and dens: bone deeper than ``CORE_MM`` below the
surface, the tallest such column, narrower at the top (the dens) than at the bottom (the body).
Cores stay apart where partial volume bridges the narrow C1–C2 and C2–C3 joints. The canal behind
the body gives the anterior direction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.c2.sections import BoolArray, FloatArray, unit
from inference.results import Side

logger = logging.getLogger(__name__)

C2_LABEL = 2
COARSE_MM = 1.0
BONE_HU = 300.0
# (threshold HU, closing iterations) tried in turn until C2 is found: thick slices and
# osteoporotic bone leave gaps in the cortical shell that the first pass cannot close.
SOLID_PASSES: tuple[tuple[float, int], ...] = ((300.0, 1), (250.0, 2), (200.0, 2))
# Core depths tried in turn: deeper cores part C2 from C1 where a thick slice merged them.
CORE_MM = (3.5, 4.0)
WINDOW_HALF_MM = 50.0
COLUMN_HEIGHT_MM = (20.0, 45.0)
COLUMN_RADIUS_MM = 12.0
MIN_COLUMN_MM3 = 300.0
DENS_MAX_MM = 16.0
# The C2 column lies on the patient's midline (the mandibular rami, also tall columns, do not).
MIDLINE_MM = 15.0
# The column's principal axis is trusted as C2's cranial axis up to this tilt from LPS +z.
MAX_TILT_DEG = 25.0
MEDIAL_DEG = 31.0
CRANIAL_DEG = 19.5


@dataclass(frozen=True, slots=True)
class C2Frame:
    """Where C2 is: ``origin`` (centroid of the C2 body), unit axes, LPS."""

    origin: FloatArray
    cranial: FloatArray
    anterior: FloatArray
    left: FloatArray


@dataclass(frozen=True, slots=True)
class CoarseGrid:
    """A copy of a volume on a grid of about ``COARSE_MM``: strided where the voxels are finer,
    linearly interpolated where they are coarser. ``data[k, i, j]`` ↔ LPS via ``affine``."""

    data: npt.NDArray[np.float32]
    affine: FloatArray
    steps: tuple[int, int, int]
    zoom: tuple[float, float, float]
    window: tuple[slice, slice, slice]

    @classmethod
    def from_volume(
        cls,
        hu: npt.NDArray[np.floating],
        affine: FloatArray,
        window: tuple[slice, slice, slice] | None = None,
    ) -> CoarseGrid:
        """The coarse copy of ``hu[window]`` (``window``: full-resolution index ranges)."""
        window = window or (slice(None), slice(None), slice(None))
        start = np.array([w.indices(n)[0] for w, n in zip(window, hu.shape, strict=True)])
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        k, i, j = (max(1, int(COARSE_MM / s + 1e-6)) for s in spacing)
        strided = np.asarray(hu[window][::k, ::i, ::j], dtype=np.float32)
        coarse = affine.copy()
        coarse[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
        coarse[:3, :3] = affine[:3, :3] * np.array([k, i, j], dtype=np.float64)
        shape = np.array(strided.shape)
        size = np.linalg.norm(coarse[:3, :3], axis=0)
        target = np.where(
            size > 1.25 * COARSE_MM, np.round((shape - 1) * size / COARSE_MM) + 1, shape
        )
        zoom = (target - 1) / np.maximum(shape - 1, 1)
        if np.any(zoom != 1.0):
            strided = ndimage.zoom(strided, zoom, order=1).astype(np.float32)
            coarse[:3, :3] = coarse[:3, :3] / zoom
        z = (float(zoom[0]), float(zoom[1]), float(zoom[2]))
        return cls(strided, coarse, (k, i, j), z, window)

    def take(self, array: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
        """A full-resolution label array on this grid (nearest neighbour)."""
        k, i, j = self.steps
        strided = array[self.window][::k, ::i, ::j]
        if self.zoom == (1.0, 1.0, 1.0):
            return strided
        out: npt.NDArray[np.integer] = ndimage.zoom(strided, self.zoom, order=0)
        return out

    @property
    def spacing(self) -> FloatArray:
        return np.asarray(np.linalg.norm(self.affine[:3, :3], axis=0))

    def world(self, index: npt.NDArray[np.integer] | FloatArray) -> FloatArray:
        """LPS points of (k, i, j) indices, shape ``(N, 3)``."""
        idx = np.asarray(index, dtype=np.float64)
        return np.asarray(idx @ self.affine[:3, :3].T + self.affine[:3, 3])

    def index(self, world: FloatArray) -> FloatArray:
        """Continuous (k, i, j) indices of LPS points ``(..., 3)``."""
        inv = np.linalg.inv(self.affine)
        return np.asarray(world @ inv[:3, :3].T + inv[:3, 3])


def midline_window(
    hu: npt.NDArray[np.floating], affine: FloatArray, half_mm: float = WINDOW_HALF_MM
) -> tuple[slice, slice, slice]:
    """Full-resolution index ranges keeping about ``half_mm`` either side of the patient's
    midline, along the grid axis closest to LPS x; C2 and its pedicles lie well inside.

    The midline is the median of the body (HU > −300) along that axis; 15 mm are added for
    obliquity of the grid.
    """
    sub = np.argwhere(np.asarray(hu[::4, ::4, ::4]) > -300.0) * 4
    if len(sub) == 0:
        return (slice(None), slice(None), slice(None))
    axis = int(np.argmax(np.abs(affine[0, :3]) / np.linalg.norm(affine[:3, :3], axis=0)))
    centre = float(np.median(sub[:, axis]))
    reach = (half_mm + 15.0) / abs(float(affine[0, axis]))
    window = [slice(None), slice(None), slice(None)]
    window[axis] = slice(max(0, int(centre - reach)), min(hu.shape[axis], int(centre + reach) + 1))
    return (window[0], window[1], window[2])


def solid_bone(
    grid: CoarseGrid,
    labels: npt.NDArray[np.integer] | None,
    threshold_hu: float = BONE_HU,
    closing: int = 1,
) -> BoolArray:
    """Bone with its marrow filled in.

    A marrow cavity is enclosed by cortex in any plane through it, while the spinal canal and
    the foramina are open in at least two of the three grid planes; so a voxel counts as solid
    when it is bone, or enclosed by bone in at least two of the axial / coronal / sagittal
    slices through it. (A 3-D hole fill alone fails as soon as the cortical shell has one gap.)
    With a label map, only the C2 voxels (VerSe id 2, on ``grid``) count as bone.
    """
    bone = grid.data >= threshold_hu
    if labels is not None:
        bone = np.asarray(grid.take(labels) == C2_LABEL)
    closed = ndimage.binary_closing(bone, iterations=closing) | bone
    votes = np.zeros(closed.shape, dtype=np.int8)
    for axis in range(3):
        structure = ndimage.generate_binary_structure(3, 1)  # 6-neighbours, then drop the two
        for end in (0, 2):  # along ``axis``: the fill then runs slice by slice
            centre = [1, 1, 1]
            centre[axis] = end
            structure[tuple(centre)] = False
        votes += ndimage.binary_fill_holes(closed, structure=structure).astype(np.int8)
    solid: BoolArray = closed | (votes >= 2)
    return solid


def find_c2_column(solid: BoolArray, dist: FloatArray, grid: CoarseGrid) -> BoolArray | None:
    """The core of the C2 body and dens, or ``None``.

    Cores (bone deeper than ``CORE_MM``) separate vertebrae across joints that partial volume
    bridges. Each core is trimmed to a vertical column under its highest point (the dens tip);
    C2's is tall, narrow at the top (the dens), wider at the bottom (the body) and on the
    patient's midline. The largest such column wins.
    """
    for depth in CORE_MM:
        column = _column_at_depth(solid, dist, grid, depth)
        if column is not None:
            return column
    return None


def _column_at_depth(
    solid: BoolArray, dist: FloatArray, grid: CoarseGrid, depth: float
) -> BoolArray | None:
    labels, count = ndimage.label(dist >= depth)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    voxel = float(np.prod(grid.spacing))
    midline = _midline_x(grid)
    best: npt.NDArray[np.intp] | None = None
    for label in np.flatnonzero(sizes * voxel >= MIN_COLUMN_MM3):
        if label == 0:
            continue
        idx = np.argwhere(labels == label)
        keep = _under_top(grid.world(idx))
        if abs(float(grid.world(idx[keep])[:, 0].mean()) - midline) > MIDLINE_MM:
            continue
        big = keep.sum() * voxel >= MIN_COLUMN_MM3 and (best is None or keep.sum() > len(best))
        if big and _looks_like_c2(grid.world(idx[keep])):
            best = idx[keep]
    if best is None:
        return None
    column = np.zeros(solid.shape, dtype=bool)
    column[tuple(best.T)] = True
    return column


def _midline_x(grid: CoarseGrid) -> float:
    """LPS x of the patient's midsagittal plane: the median x of the body (HU > −300)."""
    sub = grid.data[::2, ::2, ::2]
    idx = np.argwhere(sub > -300.0) * 2
    if len(idx) == 0:
        return 0.0
    return float(np.median(grid.world(idx)[:, 0]))


def _under_top(pts: FloatArray) -> npt.NDArray[np.bool_]:
    """Points within ``COLUMN_RADIUS_MM`` (horizontally) of the top of ``pts`` and at most
    ``COLUMN_HEIGHT_MM[1]`` below it."""
    z = pts[:, 2]
    top = pts[z >= z.max() - 5.0, :2].mean(axis=0)
    horizontal = np.linalg.norm(pts[:, :2] - top, axis=1)
    return np.asarray((horizontal <= COLUMN_RADIUS_MM) & (z >= z.max() - COLUMN_HEIGHT_MM[1]))


def _looks_like_c2(pts: FloatArray) -> bool:
    h = pts[:, 2]
    height = float(np.ptp(h))
    if not COLUMN_HEIGHT_MM[0] <= height <= COLUMN_HEIGHT_MM[1]:
        return False
    top = _xy_width(pts[h >= h.max() - 0.25 * height])
    bottom = _xy_width(pts[h <= h.min() + 0.4 * height])
    return top <= DENS_MAX_MM and bottom >= top + 2.0


def _principal_axis(pts: FloatArray) -> FloatArray:
    """Unit axis of largest spread, pointing to LPS +z (cranial)."""
    centred = pts - pts.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axis = unit(vt[0])
    return axis if axis[2] >= 0 else -axis


def _orthogonal(axis: FloatArray) -> FloatArray:
    ref = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    return unit(ref - axis * float(ref @ axis))


def _xy_width(pts: FloatArray) -> float:
    return float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])))


def estimate_frame(column: BoolArray, solid: BoolArray, grid: CoarseGrid) -> C2Frame:
    """C2 frame from the body/dens column and the canal behind it (LPS)."""
    pts = grid.world(np.argwhere(column))
    cranial = _principal_axis(pts)
    if cranial[2] < np.cos(np.radians(MAX_TILT_DEG)):
        cranial = np.array([0.0, 0.0, 1.0])
    h = pts @ cranial
    body = pts[h <= h.min() + 0.4 * float(np.ptp(h))].mean(axis=0)
    guess = unit(np.array([0.0, -1.0, 0.0]) - cranial * float(-cranial[1]))
    canal = _canal_centre(solid, grid, body, cranial)
    anterior = guess
    if canal is not None:
        step = body - canal
        step -= cranial * float(step @ cranial)
        if np.linalg.norm(step) > 3.0 and float(unit(step) @ guess) > 0.5:
            anterior = unit(step)
    else:
        logger.debug("no vertebral canal found behind C2; assuming LPS -y is anterior")
    return C2Frame(body, cranial, anterior, np.cross(cranial, anterior))


def _canal_centre(
    solid: BoolArray, grid: CoarseGrid, body: FloatArray, cranial: FloatArray
) -> FloatArray | None:
    """Centre (LPS) of the largest hole in the axial projection of a slab of bone at the body
    level, behind the body."""
    pts = grid.world(np.argwhere(solid))
    rel = (pts - body) @ cranial
    near = pts[(rel >= -2.0) & (rel <= 8.0) & (np.linalg.norm(pts - body, axis=1) <= 45.0)]
    if len(near) == 0:
        return None
    u = _orthogonal(cranial)
    v = np.cross(cranial, u)
    uv = np.stack([(near - body) @ u, (near - body) @ v], axis=1)
    uv0 = uv.min(axis=0) - 3.0
    ij = np.floor((uv - uv0) / COARSE_MM).astype(int)
    image = np.zeros(ij.max(axis=0) + 4, dtype=bool)
    image[ij[:, 0], ij[:, 1]] = True
    image = ndimage.binary_closing(image, iterations=1)
    holes = ndimage.binary_fill_holes(image) & ~image
    labels, count = ndimage.label(holes)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    biggest = int(np.argmax(sizes)) + 1
    if sizes[biggest - 1] * COARSE_MM**2 < 40.0:
        return None
    c = np.argwhere(labels == biggest).mean(axis=0) * COARSE_MM + uv0
    return np.asarray(body + c[0] * u + c[1] * v, dtype=np.float64)


def screw_direction(
    frame: C2Frame, side: Side, medial_deg: float, cranial_deg: float
) -> FloatArray:
    """Unit posterior → anterior screw direction, ``medial_deg`` towards the midline and
    ``cranial_deg`` up from the axial plane of the C2 frame."""
    lateral = frame.left if side is Side.LEFT else -frame.left
    m, c = np.radians(medial_deg), np.radians(cranial_deg)
    d = np.cos(c) * (np.cos(m) * frame.anterior - np.sin(m) * lateral) + np.sin(c) * frame.cranial
    return unit(d)
