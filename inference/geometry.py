"""Small geometric helpers shared by the planning engines.

Conventions: volumes are indexed ``[slice, row, col]``; a ``4×4`` affine maps the homogeneous index
``(slice, row, col, 1)`` to patient millimetres (DICOM LPS unless a caller says otherwise). Every
point argument and result here is in that patient frame, in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.errors import InferenceError

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def unit(v: npt.ArrayLike) -> FloatArray:
    """``v`` scaled to length 1 (raises on a zero vector)."""
    a = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(a))
    if n < 1e-12:
        raise InferenceError("cannot normalise a zero vector", a.tolist())
    return a / n


def voxel_spacing(affine: npt.ArrayLike) -> FloatArray:
    """Voxel size in mm along (slice, row, col)."""
    out: FloatArray = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return out


def index_to_mm(affine: npt.ArrayLike, index: npt.ArrayLike) -> FloatArray:
    """Map (N, 3) voxel indices (float allowed) to (N, 3) patient mm."""
    aff = np.asarray(affine, dtype=np.float64)
    idx = np.atleast_2d(np.asarray(index, dtype=np.float64))
    out: FloatArray = idx @ aff[:3, :3].T + aff[:3, 3]
    return out


def mm_to_index(affine: npt.ArrayLike, points: npt.ArrayLike) -> FloatArray:
    """Map (N, 3) patient mm to continuous voxel indices."""
    aff = np.asarray(affine, dtype=np.float64)
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    out: FloatArray = (pts - aff[:3, 3]) @ np.linalg.inv(aff[:3, :3]).T
    return out


def bounding_box(mask: npt.NDArray[Any], pad: int = 0) -> tuple[slice, slice, slice]:
    """Index slices of the smallest box holding ``mask`` (its non-zero voxels), grown by ``pad``
    voxels (clipped). Found from the occupied planes along each axis: three reductions instead
    of every voxel's index."""
    tight = []
    for axis in range(3):
        planes = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if planes.size == 0:
            raise InferenceError("empty mask has no bounding box")
        tight.append(slice(int(planes[0]), int(planes[-1]) + 1))
    return grown_box(tuple(tight), pad, mask.shape)


def grown_box(
    box: tuple[slice, ...], pad: int, shape: tuple[int, ...]
) -> tuple[slice, slice, slice]:
    """``box`` (3 index slices, start and stop set) grown by ``pad`` voxels, clipped to
    ``shape``."""
    lo = [max(0, int(b.start) - pad) for b in box]
    hi = [min(n, int(b.stop) + pad) for b, n in zip(box, shape, strict=True)]
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))


def label_voxels(
    labels: npt.NDArray[np.integer], value: int, box: tuple[slice, ...] | None
) -> npt.NDArray[np.intp]:
    """``np.argwhere(labels == value)``, searched only in ``box`` (its box from
    ``ndimage.find_objects``, which holds them all; None: none), in the same order."""
    if box is None:
        return np.zeros((0, labels.ndim), dtype=np.intp)
    out: npt.NDArray[np.intp] = np.argwhere(labels[box] == value) + [b.start for b in box]
    return out


def crop_affine(affine: npt.ArrayLike, box: tuple[slice, slice, slice]) -> FloatArray:
    """Affine of the sub-volume ``volume[box]``."""
    aff = np.array(affine, dtype=np.float64)
    start = [float(s.start or 0) for s in box]
    aff[:3, 3] = index_to_mm(aff, [start])[0]
    return aff


@dataclass(frozen=True, slots=True)
class Frame:
    """An orthonormal frame in the patient frame: origin and unit axes r (patient right), a
    (anterior), s (cranial); ``r = a × s``."""

    origin: FloatArray
    r: FloatArray
    a: FloatArray
    s: FloatArray

    @property
    def rotation(self) -> FloatArray:
        """Rows r, a, s: ``rotation @ (p - origin)`` gives local (r, a, s) coordinates."""
        return np.stack([self.r, self.a, self.s])

    def to_local(self, points: npt.ArrayLike) -> FloatArray:
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        out: FloatArray = (pts - self.origin) @ self.rotation.T
        return out

    def to_patient(self, local: npt.ArrayLike) -> FloatArray:
        loc = np.atleast_2d(np.asarray(local, dtype=np.float64))
        out: FloatArray = loc @ self.rotation + self.origin
        return out


def orthonormal_frame(
    origin: npt.ArrayLike, anterior: npt.ArrayLike, cranial: npt.ArrayLike
) -> Frame:
    """Frame with ``s`` = cranial, ``a`` = anterior made ⊥ s, ``r = a × s``."""
    s = unit(cranial)
    a = unit(np.asarray(anterior, dtype=np.float64) - np.dot(anterior, s) * s)
    r = unit(np.cross(a, s))
    return Frame(np.asarray(origin, dtype=np.float64), r, a, s)


class VolumeSampler:
    """Trilinear (or nearest) sampling of a volume at patient-mm points; outside = ``outside``."""

    def __init__(self, values: npt.NDArray[np.floating], affine: npt.ArrayLike, outside: float):
        self.values = values
        self.affine = np.asarray(affine, dtype=np.float64)
        self.outside = outside
        self._inv = np.linalg.inv(self.affine)

    def __call__(self, points: npt.ArrayLike, order: int = 1) -> FloatArray:
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        idx = pts @ self._inv[:3, :3].T + self._inv[:3, 3]
        out: FloatArray = ndimage.map_coordinates(
            self.values, idx.T, order=order, mode="constant", cval=self.outside
        ).astype(np.float64)
        return out


class SignedDistance:
    """Signed distance to the surface of a binary mask, mm, positive outside, negative inside.

    Computed with Euclidean distance transforms on a crop around the mask; the surface is taken
    half a voxel outside the boundary voxel centres.
    """

    def __init__(self, mask: BoolArray, affine: npt.ArrayLike, pad_mm: float = 12.0) -> None:
        spacing = voxel_spacing(affine)
        pad = int(np.ceil(pad_mm / float(spacing.min())))
        box = bounding_box(mask, pad)
        sub = mask[box]
        half = 0.5 * float(spacing.mean())
        inside = ndimage.distance_transform_edt(sub, sampling=spacing)
        outside = ndimage.distance_transform_edt(~sub, sampling=spacing)
        phi = np.where(sub, half - inside, outside - half).astype(np.float32)
        self.sampler = VolumeSampler(phi, crop_affine(affine, box), outside=pad_mm)

    def __call__(self, points: npt.ArrayLike) -> FloatArray:
        return self.sampler(points)

    def gradient(self, points: npt.ArrayLike, h: float = 0.5) -> FloatArray:
        """Central-difference gradient (N, 3) of φ at ``points`` in the patient frame."""
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        grad = np.zeros_like(pts)
        for k in range(3):
            e = np.zeros(3)
            e[k] = h
            grad[:, k] = (self(pts + e) - self(pts - e)) / (2 * h)
        return grad


def ray_exit(
    inside: VolumeSampler,
    origin: npt.ArrayLike,
    direction: npt.ArrayLike,
    max_mm: float,
    step: float,
) -> float:
    """Distance from ``origin`` (inside the mask) along ``direction`` to where the mask is left.

    ``inside`` samples a 0/1 mask (nearest neighbour). Returns ``max_mm`` if never left.
    """
    d = unit(direction)
    t = np.arange(0.0, max_mm + step, step)
    pts = np.asarray(origin, dtype=np.float64) + t[:, None] * d
    vals = inside(pts, order=0) > 0.5
    out = np.nonzero(~vals)[0]
    if out.size == 0:
        return float(max_mm)
    return float(t[out[0]] - 0.5 * step)


def perpendicular_basis(axis: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Two unit vectors completing ``axis`` to a right-handed orthonormal basis."""
    d = unit(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u1 = unit(np.cross(d, helper))
    u2 = unit(np.cross(d, u1))
    return u1, u2


def segment_distance(p0: FloatArray, p1: FloatArray, q0: FloatArray, q1: FloatArray) -> float:
    """Shortest distance between segments p0–p1 and q0–q1 (sampled, 0.25 mm accuracy)."""
    n = max(2, int(np.ceil(max(np.linalg.norm(p1 - p0), np.linalg.norm(q1 - q0)) / 0.25)) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    a = p0 + t * (p1 - p0)
    b = q0 + t * (q1 - q0)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    return float(np.sqrt(d2.min()))
