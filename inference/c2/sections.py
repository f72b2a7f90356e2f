"""Oblique planar sections of a CT volume and their minimum caliper (Feret) width.

Frame: points and directions are DICOM LPS millimetres; volumes are indexed ``[slice, row, col]``
with a 4×4 affine mapping ``(slice, row, col, 1)`` to LPS. A section is a square grid of
``n × n`` pixels of ``grid_mm`` centred on a point, spanned by two unit vectors ``u`` (columns)
and ``v`` (rows) orthogonal to the plane normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def unit(vector: npt.ArrayLike) -> FloatArray:
    """``vector`` scaled to length 1 (LPS)."""
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise ValueError("a zero vector has no direction")
    return v / norm


def plane_basis(normal: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Two unit vectors ``(u, v)`` spanning the plane ⊥ ``normal``; deterministic for a normal.

    ``u`` is the component of LPS +x (patient left) orthogonal to the normal, falling back to +y
    when the normal is nearly along x, so section images keep a stable orientation.
    """
    n = unit(normal)
    ref = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = unit(ref - n * float(ref @ n))
    v = np.cross(n, u)
    return u, v


@dataclass(frozen=True, slots=True)
class Plane:
    """A square sampling grid in LPS.

    Pixel ``(i, j)`` sits at ``centre + (j - h)·g·u + (i - h)·g·v`` with ``h = (size - 1) / 2``.
    """

    centre: FloatArray
    u: FloatArray
    v: FloatArray
    size: int
    grid_mm: float

    @property
    def half(self) -> float:
        return (self.size - 1) / 2.0

    def points(self) -> FloatArray:
        """LPS coordinates of every pixel, shape ``(size, size, 3)``."""
        offs = (np.arange(self.size, dtype=np.float64) - self.half) * self.grid_mm
        return (
            self.centre[None, None, :]
            + offs[None, :, None] * self.u[None, None, :]
            + offs[:, None, None] * self.v[None, None, :]
        )

    def to_world(self, ij: FloatArray) -> FloatArray:
        """LPS points of pixel coordinates ``ij`` (``(..., 2)`` as row, column)."""
        rows = (ij[..., 0] - self.half) * self.grid_mm
        cols = (ij[..., 1] - self.half) * self.grid_mm
        return self.centre + cols[..., None] * self.u + rows[..., None] * self.v


def sample(
    volume: npt.NDArray[np.floating], affine: FloatArray, world: FloatArray, fill: float
) -> npt.NDArray[np.float32]:
    """Trilinear samples of ``volume`` at LPS points ``world`` (``(..., 3)``), ``fill`` outside."""
    inv = np.linalg.inv(affine)
    flat = world.reshape(-1, 3)
    idx = flat @ inv[:3, :3].T + inv[:3, 3]
    values = ndimage.map_coordinates(
        volume, idx.T, order=1, mode="constant", cval=fill, prefilter=False
    )
    out: npt.NDArray[np.float32] = values.reshape(world.shape[:-1]).astype(np.float32)
    return out


def inside_volume(shape: tuple[int, ...], affine: FloatArray, world: FloatArray) -> BoolArray:
    """Whether LPS points lie within the volume's voxel centres (no extrapolation)."""
    inv = np.linalg.inv(affine)
    idx = world.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
    upper = np.asarray(shape, dtype=np.float64) - 1.0
    ok: BoolArray = np.all((idx >= -1e-6) & (idx <= upper + 1e-6), axis=1)
    return ok.reshape(world.shape[:-1])


def component_at(mask: BoolArray, max_offset_px: int) -> BoolArray | None:
    """The connected component of ``mask`` holding the centre pixel, or the one nearest to it
    within ``max_offset_px``; ``None`` when there is none."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    c = mask.shape[0] // 2
    label = int(labels[c, c])
    if label == 0:
        lo, hi = max(c - max_offset_px, 0), c + max_offset_px + 1
        window = labels[lo:hi, lo:hi]
        if not window.any():
            return None
        ii, jj = np.nonzero(window)
        k = int(np.argmin((ii + lo - c) ** 2 + (jj + lo - c) ** 2))
        label = int(window[ii[k], jj[k]])
    out: BoolArray = labels == label
    return out


def boundary_points(mask: BoolArray) -> FloatArray:
    """Pixel coordinates ``(row, col)`` of the pixels of ``mask`` on its boundary."""
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    return np.argwhere(edge).astype(np.float64)


def min_feret(points: FloatArray) -> tuple[float, FloatArray]:
    """Minimum caliper width of a 2-D point set and the unit direction it is measured along.

    Rotating calipers on the convex hull: the minimum width of a convex polygon is attained with
    one caliper flush to a hull edge, so it is the smallest over edges of the largest distance of
    a hull vertex to that edge's line. Units are those of ``points``.
    """
    if len(points) < 3:
        return 0.0, np.array([1.0, 0.0])
    try:
        hull = ConvexHull(points)
    except QhullError:  # collinear points: a segment has width 0
        return 0.0, np.array([1.0, 0.0])
    verts = points[hull.vertices]
    edges = np.roll(verts, -1, axis=0) - verts
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    proj = normals @ verts.T  # (edges, vertices)
    widths = proj.max(axis=1) - proj.min(axis=1)
    k = int(np.argmin(widths))
    return float(widths[k]), normals[k]


def mask_width_mm(mask: BoolArray, grid_mm: float) -> tuple[float, FloatArray]:
    """Minimum Feret width (mm) of a pixel mask and its direction in (row, col) pixel axes.

    Pixel centres of the extreme pixels are one pixel apart less than the region they sample,
    so one pixel is added back.
    """
    pts = boundary_points(mask)
    if len(pts) == 0:
        return 0.0, np.array([1.0, 0.0])
    width, direction = min_feret(pts)
    return (width + 1.0) * grid_mm, direction
