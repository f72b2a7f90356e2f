"""Subaxial cervical vertebrae (C3–C7) and their facet joints, in LPS mm.

Local frames are (right, anterior, cranial) from the body centroid. Facet joints are inclined 45°
(the superior articular surfaces face up and back), with a 1.4 mm gap.
"""

from __future__ import annotations

import math

import numpy as np

from inference.phantom.model import BonePart, Joint, Vertebra, side_x
from inference.phantom.shapes import (
    Box,
    Capsule,
    Clipped,
    EllipticCylinder,
    FloatArray,
    HalfSpace,
    frame,
)
from inference.verse import LEVEL_TO_LABEL

CERVICAL_GAP_MM = 1.4
BODY_HZ = 7.0


def cervical_joint(
    upper: str,
    lower: str,
    origin: FloatArray,
    rot: FloatArray,
    side: str,
    *,
    disc: float,
    sc: float = 1.0,
) -> Joint:
    """Facet joint between ``upper`` and ``lower``, placed in the lower vertebra's frame."""
    sx = side_x(side)
    local = np.array([sx * 15.5 * sc, -15.0 * sc, BODY_HZ * sc + disc / 2 + 1.0])
    centre = origin + rot @ local
    normal = (rot[:, 2] - rot[:, 1]) / math.sqrt(2.0)
    jrot = frame(rot[:, 0], normal)
    space = Box(centre, jrot, np.array([5.5, CERVICAL_GAP_MM / 2 + 0.01, 5.5]) * (1, 1, 1), 0.5)
    return Joint(upper, lower, side, centre, normal, CERVICAL_GAP_MM, space)


def articular(joint: Joint, above: bool, anchor: FloatArray) -> list[BonePart]:
    """Articular process on one side of a joint plane (IAP above, SAP below), strutted to
    ``anchor``."""
    jrot = frame(np.cross(joint.normal, np.array([0.0, 0.0, 1.0])), joint.normal)
    sign = 1.0 if above else -1.0
    centre = joint.centre + sign * joint.normal * (joint.gap / 2 + 3.0)
    clip = HalfSpace(joint.centre + sign * joint.normal * joint.gap / 2, -sign * joint.normal)
    box = Box(centre, jrot, np.array([6.0, 3.0, 6.0]), 1.5)
    strut = Capsule(anchor, centre, 3.5, 3.5)
    name = ("iap_" if above else "sap_") + joint.side
    return [
        BonePart(name, Clipped(box, (clip,)), 1.0),
        BonePart(name + "_strut", Clipped(strut, (clip,)), 1.0),
    ]


def _clips(side: str, above: list[Joint], below: list[Joint]) -> tuple[HalfSpace, ...]:
    """Half-spaces keeping a lateral mass out of the joint spaces on ``side``."""
    out = [HalfSpace(j.centre - j.normal * j.gap / 2, j.normal) for j in above if j.side == side]
    out += [HalfSpace(j.centre + j.normal * j.gap / 2, -j.normal) for j in below if j.side == side]
    return tuple(out)


def subaxial(
    level: str,
    origin: FloatArray,
    rot: FloatArray,
    joints: tuple[list[Joint], list[Joint]],
    *,
    sc: float = 1.0,
    spinous_mm: float = 16.0,
) -> Vertebra:
    """A C3–C7 vertebra; ``joints`` = (joints with the level above, joints with the level below)."""
    above, below = joints
    parts = [
        BonePart(
            "body", EllipticCylinder(origin, rot, 8.5 * sc, 8.0 * sc, BODY_HZ * sc, 0.05, 0.8), 1.0
        )
    ]
    apex = origin + rot @ np.array([0.0, -28.0 * sc, 0.0])
    for side in ("left", "right"):
        sx = side_x(side)
        pillar_c = origin + rot @ np.array([sx * 15.0 * sc, -15.0 * sc, 0.0])
        pillar = Box(pillar_c, rot, np.array([5.0, 5.5, 6.5]) * sc, 2.0)
        parts.append(BonePart("pillar_" + side, Clipped(pillar, _clips(side, above, below)), 1.0))
        ped = Capsule(origin + rot @ np.array([sx * 6.0 * sc, -4.0 * sc, 1.0]), pillar_c, 3.0, 3.0)
        parts.append(BonePart("pedicle_" + side, ped, 0.8))
        tp = Capsule(
            origin + rot @ np.array([sx * 8.0 * sc, -1.0, 0.0]),
            origin + rot @ np.array([sx * 23.0 * sc, -6.0, -1.0]),
            2.5,
            2.0,
        )
        parts.append(BonePart("transverse_" + side, tp, 0.8))
        for joint in above:
            if joint.side == side:
                parts += articular(joint, False, pillar_c)
        for joint in below:
            if joint.side == side:
                parts += articular(joint, True, pillar_c)
        lam = apex - pillar_c
        half = np.array([float(np.linalg.norm(lam)) / 2, 5.0 * sc, 2.5])
        parts.append(
            BonePart(
                "lamina_" + side, Box((apex + pillar_c) / 2, frame(lam, rot[:, 2]), half, 2.0), 1.0
            )
        )
    sp_c = origin + rot @ np.array([0.0, -28.0 * sc - spinous_mm / 2 + 3.0, -3.0])
    parts.append(
        BonePart("spinous", Box(sp_c, rot, np.array([3.5, spinous_mm / 2, 4.5]), 2.0), 1.0)
    )
    return Vertebra(level, LEVEL_TO_LABEL[level], origin, rot, tuple(parts), ())
