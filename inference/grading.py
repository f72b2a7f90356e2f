"""Screw safety grades on final masks: Gertzbein–Robbins (breach) and Babu (facet joint).

One implementation shared by every engine. Patient frame (LPS mm); the vertebra frame gives the
breach direction. Grades follow ``ALGORITHMS.md``: GR A (no breach), B < 2 mm, C < 4, D < 6,
E ≥ 6 mm; Babu 0 not in the facet, 1 in the lateral facet, 2 into the articulation, 3 through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.geometry import (
    BoolArray,
    FloatArray,
    Frame,
    SignedDistance,
    VolumeSampler,
    bounding_box,
    crop_affine,
    index_to_mm,
    perpendicular_basis,
    unit,
    voxel_spacing,
)
from inference.results import Side

BREACH_TOLERANCE_MM = 0.25
ENTRY_SKIP_MM = 2.0  # the thread is graded from 2 mm past the entry (ALGORITHMS.md)
# the dorsal surface at an entry is curved (a ridge, the base of a process): the normal at the
# entry point alone understates how long the thread takes to enter; the angle counts as ≥ 30°
ENTRY_MIN_DEG = 30.0
SANDWICH_DEG = 135.0  # joint space: nearest bone of the two vertebrae at least this far apart
RING = 72  # thread points per turn (every 5°, Screw.surface_points' default)
GR_LIMITS_MM: tuple[tuple[float, str], ...] = ((2.0, "B"), (4.0, "C"), (6.0, "D"))


@dataclass(frozen=True, slots=True)
class Screw:
    """A screw as a cylinder from ``entry`` to ``tip`` (patient mm) of ``diameter`` mm."""

    entry: FloatArray
    tip: FloatArray
    diameter: float

    @property
    def direction(self) -> FloatArray:
        return unit(self.tip - self.entry)

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.tip - self.entry))

    def surface_points(
        self, start_mm: float = 2.0, step: float = 0.25, deg: float = 5.0
    ) -> FloatArray:
        """Points on the thread surface from ``start_mm`` past the entry to the tip."""
        return self._points(np.arange(start_mm, self.length + 1e-9, step), [self.diameter / 2], deg)

    def volume_points(self, step: float = 0.5) -> FloatArray:
        """Points filling the cylinder (axis, half and full radius), from the entry to the tip."""
        r = self.diameter / 2
        return self._points(np.arange(0.0, self.length + 1e-9, step), [0.0, r / 2, r], 20.0)

    def _points(self, t: FloatArray, radii: list[float], deg: float) -> FloatArray:
        d = self.direction
        u1, u2 = perpendicular_basis(d)
        theta = np.radians(np.arange(0.0, 360.0, deg))
        ring = np.concatenate(
            [rr * (np.cos(theta)[:, None] * u1 + np.sin(theta)[:, None] * u2) for rr in radii]
        )
        axis = self.entry + t[:, None] * d
        pts: FloatArray = (axis[:, None, :] + ring[None, :, :]).reshape(-1, 3)
        return pts


@dataclass(frozen=True, slots=True)
class GRResult:
    grade: str
    breach_mm: float
    direction: str | None


def gr_grade_of(breach_mm: float) -> str:
    """The Gertzbein–Robbins letter for a breach distance (mm) after the tolerance is applied."""
    if breach_mm <= 0.0:
        return "A"
    for limit, grade in GR_LIMITS_MM:
        if breach_mm < limit:
            return grade
    return "E"


def breach_direction(gradient: FloatArray, frame: Frame, side: Side) -> str:
    """Name of the dominant direction of ``gradient`` (outward normal) in the (m, a, s) frame."""
    m = frame.r if side is Side.LEFT else -frame.r
    comps = np.array([gradient @ m, gradient @ frame.a, gradient @ frame.s])
    k = int(np.argmax(np.abs(comps)))
    names = (("lateral", "medial"), ("posterior", "anterior"), ("inferior", "superior"))
    return names[k][int(comps[k] > 0)]


def gertzbein_robbins(
    phi: SignedDistance,
    screw: Screw,
    frame: Frame,
    side: Side,
    *,
    tolerance_mm: float = BREACH_TOLERANCE_MM,
) -> GRResult:
    """GR grade of ``screw`` against the vertebra whose signed distance is ``phi``.

    Breach b = max(0, max φ on the thread surface − 0.25 mm tolerance), surface sampled every
    0.25 mm × 5° from 2 mm past the entry to the tip. Not counted as breaches: thread that has not
    yet entered the bone near the entry (see :func:`_not_yet_entered`), and points whose outward
    normal is mainly posterior (the thread leaving the oblique entry cortex). A planner may ask
    for a smaller ``tolerance_mm`` to keep a margin; grades reported use the default.
    """
    if screw.length < ENTRY_SKIP_MM:
        return GRResult("A", 0.0, None)
    pts = screw.surface_points(start_mm=0.0)
    values = phi(pts)
    counted = ~_not_yet_entered(phi, screw, values)
    counted &= np.repeat(np.arange(0.0, screw.length + 1e-9, 0.25) >= ENTRY_SKIP_MM, RING)
    out = np.nonzero(counted & (values > tolerance_mm))[0]
    if out.size == 0:
        return GRResult("A", 0.0, None)
    grads = phi.gradient(pts[out])
    # the thread leaving the oblique posterior cortex at the entry is not a pedicle breach
    ga, gr_, gs = grads @ frame.a, np.abs(grads @ frame.r), np.abs(grads @ frame.s)
    wall = ~((-ga > gr_) & (-ga > gs))
    wall |= np.linalg.norm(grads, axis=1) < 1e-9
    if not wall.any():
        return GRResult("A", 0.0, None)
    out, grads = out[wall], grads[wall]
    worst = int(np.argmax(values[out]))
    breach = float(values[out[worst]]) - tolerance_mm
    grad = grads[worst]
    if np.linalg.norm(grad) < 1e-9:
        p = pts[out[worst]]
        grad = p - (screw.entry + ((p - screw.entry) @ screw.direction) * screw.direction)
    return GRResult(gr_grade_of(breach), breach, breach_direction(grad, frame, side))


def _not_yet_entered(phi: SignedDistance, screw: Screw, values: FloatArray) -> BoolArray:
    """Thread points (0.25 mm × 5° grid from the entry) that have not yet entered the bone.

    A screw meets the posterior cortex obliquely, so on the far side its thread lies outside the
    bone for the first r·tan(entry angle) mm: that is the entry, not a breach of the pedicle wall.
    A thread line counts from where it first enters the bone; the exemption ends
    r·tan(entry angle, 30° to 60°) + 1 mm past the entry, so a screw that misses the pedicle
    altogether still breaches.
    """
    grid = values.reshape(-1, RING)
    entered = np.maximum.accumulate(grid < 0.0, axis=0)
    normal = phi.gradient(screw.entry[None, :])[0]
    norm = float(np.linalg.norm(normal))
    cos = float(-(screw.direction @ normal) / norm) if norm > 1e-9 else 1.0
    angle = np.arccos(np.clip(cos, np.cos(np.radians(60.0)), np.cos(np.radians(ENTRY_MIN_DEG))))
    cap = screw.diameter / 2 * float(np.tan(angle)) + 1.0
    t = np.arange(grid.shape[0]) * 0.25
    out: BoolArray = (~entered & (t[:, None] <= cap)).reshape(-1)
    return out


@dataclass(frozen=True, slots=True)
class FacetJoint:
    """The facet joint at risk for one side of one vertebra, on a small grid (patient mm).

    ``joint`` = joint space J (non-bone within ``gap`` of both vertebrae whose nearest bones of the
    two lie on opposite sides, posterior to the body, on the side); ``facet`` = the lower
    vertebra's articular bone next to J; ``upper`` = the upper vertebra's bone next to J (its
    inferior articular process).
    """

    joint: VolumeSampler
    facet: VolumeSampler
    upper: VolumeSampler
    empty: bool


def facet_joint(
    lower: BoolArray,
    upper: BoolArray,
    affine: npt.ArrayLike,
    *,
    frame: Frame,
    side: Side,
    body_back_mm: float,
    gap: float = 1.5,
) -> FacetJoint:
    """The joint at risk between ``upper``'s inferior and ``lower``'s superior articular process.

    ``frame`` and ``body_back_mm`` are the lower vertebra's frame and the local ``a`` of its
    posterior body wall; only the region posterior to it on ``side`` counts.
    """
    spacing = voxel_spacing(affine)
    near = ndimage.binary_dilation(lower, iterations=max(1, int(np.ceil(gap / spacing.min()))))
    box = bounding_box((near & upper) | (lower & ndimage.binary_dilation(upper, iterations=2)), 6)
    lo, up = lower[box], upper[box]
    aff = crop_affine(affine, box)
    local = frame.to_local(index_to_mm(aff, np.argwhere(np.ones(lo.shape, dtype=bool)))).reshape(
        *lo.shape, 3
    )
    lateral = local[..., 0] * (-1.0 if side is Side.LEFT else 1.0)
    region = (local[..., 1] < body_back_mm) & (lateral > 2.0)
    joint = _sandwiched(lo, up, spacing, gap) & region
    d_joint = ndimage.distance_transform_edt(~joint, sampling=spacing)
    facet = lo & (d_joint <= 1.5) & region  # the articular surface next to the joint
    upper_near = up & (d_joint <= 3.0) & region
    return FacetJoint(
        joint=VolumeSampler(joint.astype(np.float32), aff, 0.0),
        facet=VolumeSampler(facet.astype(np.float32), aff, 0.0),
        upper=VolumeSampler(upper_near.astype(np.float32), aff, 0.0),
        empty=not bool(joint.any()),
    )


def _sandwiched(lo: BoolArray, up: BoolArray, spacing: FloatArray, gap: float) -> BoolArray:
    """Non-bone voxels within ``gap`` mm of both masks whose nearest ``lo`` and nearest ``up``
    bone lie on opposite sides (angle > ``SANDWICH_DEG``): the thin gap between two facing
    articular surfaces, not any place where the two vertebrae merely come close (a lamina edge
    near the process below, the entry region of a pedicle screw)."""
    d_lo, i_lo = ndimage.distance_transform_edt(~lo, sampling=spacing, return_indices=True)
    d_up, i_up = ndimage.distance_transform_edt(~up, sampling=spacing, return_indices=True)
    cand = ~lo & ~up & (d_lo <= gap) & (d_up <= gap)
    idx = np.nonzero(cand)
    here = np.stack(idx).astype(np.float64)
    to_lo = (i_lo[(slice(None), *idx)] - here) * spacing[:, None]
    to_up = (i_up[(slice(None), *idx)] - here) * spacing[:, None]
    norm = np.linalg.norm(to_lo, axis=0) * np.linalg.norm(to_up, axis=0)
    cos = (to_lo * to_up).sum(axis=0) / np.maximum(norm, 1e-9)
    out: BoolArray = np.zeros_like(cand)
    out[idx] = cos < np.cos(np.radians(SANDWICH_DEG))
    return out


def babu_grade(joint: FacetJoint, screw: Screw) -> int:
    """Babu grade of ``screw`` against the joint at risk: 0–3 (see the module docstring)."""
    if joint.empty:
        return 0
    pts = screw.volume_points()
    if (joint.upper(pts, order=0) > 0.5).any():
        return 3
    if (joint.joint(pts, order=0) > 0.5).any():
        return 2
    if (joint.facet(pts, order=0) > 0.5).any():
        return 1
    return 0
