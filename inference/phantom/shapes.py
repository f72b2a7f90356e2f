"""Signed-distance primitives in DICOM LPS millimetres (negative inside, positive outside).

Each shape evaluates ``sdf(points)`` on an ``(N, 3)`` float array of LPS points and reports an
axis-aligned bounding box in LPS mm, so the rasteriser only evaluates it where it can be non-empty.
The zero level set of every primitive is exact; away from the surface the distance is a first-order
approximation (good to a few tenths of a millimetre within the 2 mm cortical band).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Points = npt.NDArray[np.floating]


class Shape(Protocol):
    """Anything with a signed distance and a bounding box (LPS mm)."""

    def sdf(self, p: Points) -> FloatArray: ...

    def bounds(self) -> tuple[FloatArray, FloatArray]: ...


def _local(p: Points, centre: FloatArray, rot: FloatArray) -> FloatArray:
    """LPS points → local coordinates (columns of ``rot`` are the local axes in LPS)."""
    return np.asarray((p - centre) @ rot, dtype=np.float64)


def _box_bounds(
    centre: FloatArray, rot: FloatArray, half: FloatArray
) -> tuple[FloatArray, FloatArray]:
    ext = np.abs(rot) @ half
    return centre - ext, centre + ext


def ellipse_sdf(
    x: FloatArray, y: FloatArray, a: FloatArray | float, b: FloatArray | float
) -> FloatArray:
    """Approximate 2-D signed distance to the ellipse x²/a² + y²/b² = 1 (exact zero set)."""
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    k0 = np.sqrt((x / a_arr) ** 2 + (y / b_arr) ** 2)
    k1 = np.sqrt((x / a_arr**2) ** 2 + (y / b_arr**2) ** 2)
    small = k1 < 1e-9
    ratio = np.where(small, np.minimum(a_arr, b_arr), k0 / np.where(small, 1.0, k1))
    return np.asarray((k0 - 1.0) * ratio, dtype=np.float64)


def _cap(d2: FloatArray, dz: FloatArray) -> FloatArray:
    """Combine an in-plane distance and an axial distance into a capped-solid distance."""
    outside = np.sqrt(np.maximum(d2, 0.0) ** 2 + np.maximum(dz, 0.0) ** 2)
    return np.asarray(outside + np.minimum(np.maximum(d2, dz), 0.0), dtype=np.float64)


def frame(x_axis: FloatArray, y_axis: FloatArray) -> FloatArray:
    """Right-handed orthonormal frame (columns x, y, z) from an x axis and an approximate y axis."""
    x = np.asarray(x_axis, dtype=np.float64)
    x = x / np.linalg.norm(x)
    y = np.asarray(y_axis, dtype=np.float64) - x * float(np.dot(x, y_axis))
    y = y / np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


@dataclass(frozen=True, slots=True, eq=False)
class EllipticCylinder:
    """Elliptic cylinder along local z with a waist and concave end faces (a vertebral body).

    ``rx``/``ry`` are the semi-axes at the end faces, ``hz`` the half height; the radii shrink by
    ``waist`` (fraction) at mid-height and both end faces dip by ``concavity`` mm at their centre.
    """

    centre: FloatArray
    rot: FloatArray
    rx: float
    ry: float
    hz: float
    waist: float = 0.0
    concavity: float = 0.0

    def sdf(self, p: Points) -> FloatArray:
        q = _local(p, self.centre, self.rot)
        zr = np.clip(q[:, 2] / self.hz, -1.0, 1.0)
        k = 1.0 - self.waist * (1.0 - zr**2)
        d2 = ellipse_sdf(q[:, 0], q[:, 1], self.rx * k, self.ry * k)
        rho2 = np.clip((q[:, 0] / self.rx) ** 2 + (q[:, 1] / self.ry) ** 2, 0.0, 1.0)
        top = self.hz - self.concavity * (1.0 - rho2)
        dz = np.abs(q[:, 2]) - top
        return _cap(d2, dz)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return _box_bounds(self.centre, self.rot, np.array([self.rx, self.ry, self.hz]) + 0.5)


@dataclass(frozen=True, slots=True, eq=False)
class EllipticTube:
    """Elliptic tube along local z between ``t0`` and ``t1`` (mm from ``centre``) — a pedicle.

    The cross-section is the ellipse with semi-axes ``a`` (local x, the width direction) and ``b``
    (local y, the height direction) for ``|t| <= flat``; beyond, both semi-axes grow by ``flare``
    mm per mm, so the narrowest section (the isthmus) is exactly ``2a × 2b`` and centred on
    ``centre``.
    """

    centre: FloatArray
    rot: FloatArray
    a: float
    b: float
    t0: float
    t1: float
    flat: float = 2.0
    flare: float = 0.35

    def sdf(self, p: Points) -> FloatArray:
        q = _local(p, self.centre, self.rot)
        t = q[:, 2]
        grow = self.flare * np.maximum(np.abs(t) - self.flat, 0.0)
        d2 = ellipse_sdf(q[:, 0], q[:, 1], self.a + grow, self.b + grow)
        dz = np.maximum(t - self.t1, self.t0 - t)
        return _cap(d2, dz)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        grow = self.flare * max(abs(self.t0), abs(self.t1)) + 0.5
        mid = self.centre + self.rot[:, 2] * (self.t0 + self.t1) / 2
        half = np.array([self.a + grow, self.b + grow, (self.t1 - self.t0) / 2 + 0.5])
        return _box_bounds(mid, self.rot, half)


@dataclass(frozen=True, slots=True, eq=False)
class Box:
    """Oriented box with rounded edges (``radius`` mm), half extents ``half`` in local axes."""

    centre: FloatArray
    rot: FloatArray
    half: FloatArray
    radius: float = 1.0

    def sdf(self, p: Points) -> FloatArray:
        q = np.abs(_local(p, self.centre, self.rot)) - (self.half - self.radius)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        return np.asarray(outside + inside - self.radius, dtype=np.float64)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return _box_bounds(self.centre, self.rot, np.asarray(self.half) + 0.5)


@dataclass(frozen=True, slots=True, eq=False)
class Capsule:
    """Segment ``p0``–``p1`` swept by a sphere of radius ``r0`` at ``p0`` tapering to ``r1``."""

    p0: FloatArray
    p1: FloatArray
    r0: float
    r1: float

    def sdf(self, p: Points) -> FloatArray:
        ab = self.p1 - self.p0
        h = np.clip(((p - self.p0) @ ab) / float(ab @ ab), 0.0, 1.0)
        d = np.linalg.norm(p - self.p0 - h[:, None] * ab, axis=1)
        return np.asarray(d - (self.r0 + (self.r1 - self.r0) * h), dtype=np.float64)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        r = max(self.r0, self.r1) + 0.5
        return np.minimum(self.p0, self.p1) - r, np.maximum(self.p0, self.p1) + r


@dataclass(frozen=True, slots=True, eq=False)
class Ellipsoid:
    """Ellipsoid with semi-axes ``radii`` along the local axes."""

    centre: FloatArray
    rot: FloatArray
    radii: FloatArray

    def sdf(self, p: Points) -> FloatArray:
        q = _local(p, self.centre, self.rot)
        k0 = np.linalg.norm(q / self.radii, axis=1)
        k1 = np.linalg.norm(q / self.radii**2, axis=1)
        small = k1 < 1e-9
        ratio = np.where(small, float(np.min(self.radii)), k0 / np.where(small, 1.0, k1))
        return np.asarray((k0 - 1.0) * ratio, dtype=np.float64)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return _box_bounds(self.centre, self.rot, np.asarray(self.radii) + 0.5)


@dataclass(frozen=True, slots=True, eq=False)
class EllipticRing:
    """A ring: tube of radius ``r`` around the ellipse (``ax``, ``ay``) in the local xy plane.

    Only the arc where local ``y >= y_min`` is kept (e.g. an arch open anteriorly).
    """

    centre: FloatArray
    rot: FloatArray
    ax: float
    ay: float
    r: float
    hz: float
    y_min: float = -1e9

    def sdf(self, p: Points) -> FloatArray:
        q = _local(p, self.centre, self.rot)
        e = np.abs(ellipse_sdf(q[:, 0], q[:, 1], self.ax, self.ay))
        d = np.sqrt((e / self.r) ** 2 + (q[:, 2] / self.hz) ** 2) - 1.0
        d = d * min(self.r, self.hz)
        return np.asarray(np.maximum(d, self.y_min - q[:, 1]), dtype=np.float64)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        half = np.array([self.ax + self.r, self.ay + self.r, self.hz]) + 0.5
        return _box_bounds(self.centre, self.rot, half)


@dataclass(frozen=True, slots=True, eq=False)
class HalfSpace:
    """Points with ``normal · (p − origin) <= 0`` are inside (unbounded)."""

    origin: FloatArray
    normal: FloatArray

    def sdf(self, p: Points) -> FloatArray:
        return np.asarray((p - self.origin) @ self.normal, dtype=np.float64)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return np.full(3, -np.inf), np.full(3, np.inf)


@dataclass(frozen=True, slots=True, eq=False)
class Clipped:
    """``shape`` intersected with half-spaces (bounds are those of ``shape``)."""

    shape: Shape
    clips: tuple[HalfSpace, ...] = field(default=())

    def sdf(self, p: Points) -> FloatArray:
        d = self.shape.sdf(p)
        for clip in self.clips:
            d = np.maximum(d, clip.sdf(p))
        return d

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return self.shape.bounds()


@dataclass(frozen=True, slots=True, eq=False)
class Subtract:
    """``shape`` minus ``hole``."""

    shape: Shape
    hole: Shape

    def sdf(self, p: Points) -> FloatArray:
        return np.asarray(np.maximum(self.shape.sdf(p), -self.hole.sdf(p)), dtype=np.float64)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return self.shape.bounds()
