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
BONE_HU = 450.0
CORE_MM = 3.5
COLUMN_HEIGHT_MM = (20.0, 55.0)
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
    """A strided copy of a volume: ``data[k, i, j]`` ↔ LPS via ``affine``."""

    data: npt.NDArray[np.float32]
    affine: FloatArray
    steps: tuple[int, int, int]

    @classmethod
    def from_volume(cls, hu: npt.NDArray[np.floating], affine: FloatArray) -> CoarseGrid:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        k, i, j = (max(1, int(COARSE_MM / s + 1e-6)) for s in spacing)
        data = np.asarray(hu[::k, ::i, ::j], dtype=np.float32)
        coarse = affine.copy()
        coarse[:3, :3] = affine[:3, :3] * np.array([k, i, j], dtype=np.float64)
        return cls(data, coarse, (k, i, j))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index of a full-resolution array that gives this grid."""
        k, i, j = self.steps
        return (slice(None, None, k), slice(None, None, i), slice(None, None, j))

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


def solid_bone(grid: CoarseGrid, labels: npt.NDArray[np.integer] | None) -> BoolArray:
    """Bone with its marrow filled in (cortical shells closed, then 3-D holes filled).

    With a label map, only the C2 voxels (VerSe id 2, strided like ``grid``) count as bone.
    """
    if labels is not None:
        bone = np.asarray(labels[grid.slices] == C2_LABEL)
    else:
        bone = grid.data >= BONE_HU
    closed = ndimage.binary_closing(bone, iterations=1) | bone
    solid: BoolArray = ndimage.binary_fill_holes(closed)
    return solid


def find_c2_column(solid: BoolArray, dist: FloatArray, grid: CoarseGrid) -> BoolArray | None:
    """The core of the C2 body and dens: a tall, thick column narrower at the top, or ``None``.

    Cores (bone deeper than ``CORE_MM``) separate vertebrae across joints that partial volume
    bridges; C2's body and dens make the tallest core of the cervical spine.
    """
    labels, count = ndimage.label(dist >= CORE_MM)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    best, best_height = 0, 0.0
    for label in np.flatnonzero(sizes * float(np.prod(grid.spacing)) >= 300.0):
        if label == 0:
            continue
        pts = grid.world(np.argwhere(labels == label))
        axis = _principal_axis(pts)
        h = pts @ axis
        height = float(np.ptp(h))
        width = float(np.ptp(pts @ _orthogonal(axis)))
        if not COLUMN_HEIGHT_MM[0] <= height <= COLUMN_HEIGHT_MM[1] or width > 30.0:
            continue
        top = pts[h >= h.max() - 0.25 * height]
        bottom = pts[h <= h.min() + 0.4 * height]
        if _xy_width(top) < 0.8 * _xy_width(bottom) and height > best_height:
            best, best_height = int(label), height
    if best == 0:
        return None
    column: BoolArray = labels == best
    return column


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
