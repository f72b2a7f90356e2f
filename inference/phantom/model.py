"""The phantom's anatomy as exact geometry: vertebrae made of signed-distance parts (LPS mm).

Vertebra frames follow ALGORITHMS.md: columns of ``rot`` are ``r`` (patient right), ``a``
(anterior), ``s`` (cranial), so local coordinates are (right, anterior, cranial) millimetres
from the vertebral-body centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from inference.phantom.shapes import FloatArray, Shape


class PartId(IntEnum):
    """Values of the second label map (``parts``)."""

    NONE = 0
    PEDICLE_LEFT = 1
    PEDICLE_RIGHT = 2
    FACET_JOINT_LEFT = 3
    FACET_JOINT_RIGHT = 4
    C2_ISTHMUS_LEFT = 5
    C2_ISTHMUS_RIGHT = 6


SIDES: tuple[str, str] = ("left", "right")


def side_x(side: str) -> float:
    """Sign of the patient-right axis ``r`` pointing laterally on ``side`` (right = +1)."""
    return 1.0 if side == "right" else -1.0


@dataclass(frozen=True, slots=True, eq=False)
class ThinWall:
    """The cortex thins to ``factor`` × its thickness towards ``direction`` (unit, LPS) from
    ``centre``, over ``reach`` mm — the thin lateral pedicle wall."""

    centre: FloatArray
    direction: FloatArray
    reach: float
    factor: float

    def thickness(self, p: FloatArray, cortex: float) -> FloatArray:
        side = np.clip(((p - self.centre) @ self.direction) / self.reach, 0.0, 1.0)
        return np.asarray(cortex * (1.0 - (1.0 - self.factor) * side))


@dataclass(frozen=True, slots=True, eq=False)
class BonePart:
    """One solid piece of a bone; ``part_id`` marks it in the parts map (0 = not marked)."""

    name: str
    shape: Shape
    cortex_mm: float
    part_id: int = 0
    thin_wall: ThinWall | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Pedicle:
    """A pedicle (or C2 pediculoisthmic component) with its exact isthmus (LPS mm)."""

    side: str
    centre: FloatArray
    axis: FloatArray
    width_dir: FloatArray
    width: float
    height: float
    cortex_mm: float
    shape: Shape


@dataclass(frozen=True, slots=True, eq=False)
class Joint:
    """A facet joint between the IAP of ``upper`` and the SAP of ``lower`` (LPS mm).

    ``normal`` points from the SAP (lateral) towards the IAP (medial); the articular surfaces are
    the planes ``normal · (p − centre) = ±gap/2``.
    """

    upper: str
    lower: str
    side: str
    centre: FloatArray
    normal: FloatArray
    gap: float
    space: Shape


@dataclass(frozen=True, slots=True, eq=False)
class Vertebra:
    """One labelled bone (VerSe id ``label``) with its frame and parts."""

    level: str
    label: int
    origin: FloatArray
    rot: FloatArray
    parts: tuple[BonePart, ...]
    pedicles: tuple[Pedicle, ...]

    @property
    def s(self) -> FloatArray:
        return np.asarray(self.rot[:, 2])

    @property
    def a(self) -> FloatArray:
        return np.asarray(self.rot[:, 1])

    @property
    def r(self) -> FloatArray:
        return np.asarray(self.rot[:, 0])

    def to_world(self, local: tuple[float, float, float] | FloatArray) -> FloatArray:
        return np.asarray(self.origin + self.rot @ np.asarray(local, dtype=np.float64))

    def sdf(self, p: FloatArray) -> FloatArray:
        """Signed distance to the whole bone (union of its parts)."""
        d = np.full(len(p), np.inf)
        for part in self.parts:
            d = np.minimum(d, part.shape.sdf(p))
        return d


@dataclass(frozen=True, slots=True, eq=False)
class SoftRegion:
    """Soft tissue painted with ``hu`` (in list order, later wins)."""

    name: str
    shape: Shape
    hu: float
    part_id: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class Anatomy:
    """All bones, joints and soft tissue of a phantom, plus the torso cross-section (LPS mm)."""

    vertebrae: tuple[Vertebra, ...]
    extra_bones: tuple[BonePart, ...]
    joints: tuple[Joint, ...]
    soft: tuple[SoftRegion, ...]
    c2_components: tuple[Pedicle, ...]
    torso_centre: FloatArray
    torso_radii: tuple[float, float]
    fat_mm: float
    z_range: tuple[float, float]
    visceral_fat: float = 0.0
    torso_knots: tuple[tuple[float, float, float, float, float], ...] = ()

    def vertebra(self, level: str) -> Vertebra:
        for v in self.vertebrae:
            if v.level == level:
                return v
        raise KeyError(level)
