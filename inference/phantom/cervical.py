"""Upper cervical anatomy: C1 (atlas), C2 (axis, with exact pediculoisthmic components), C3.

Local frames are (right, anterior, cranial) mm from each body centroid (C1: from the centre of its
ring), DICOM LPS in the world. The narrowest outer width of each C2 pediculoisthmic component is
the parameter ``C2Params.outer_width`` exactly; its cortex is ``C2Params.cortex_mm`` thick.
"""

from __future__ import annotations

import math

import numpy as np

from inference.phantom.lumbar import rotation, vertebra_rot
from inference.phantom.model import BonePart, Joint, PartId, Pedicle, SoftRegion, Vertebra, side_x
from inference.phantom.shapes import (
    Box,
    Capsule,
    Clipped,
    Ellipsoid,
    EllipticCylinder,
    EllipticRing,
    EllipticTube,
    FloatArray,
    HalfSpace,
    Subtract,
    frame,
)
from inference.phantom.spec import PhantomSpec
from inference.phantom.subaxial import articular, cervical_joint, subaxial
from inference.verse import LEVEL_TO_LABEL


def c2_component(spec: PhantomSpec, origin: FloatArray, rot: FloatArray, k: int) -> Pedicle:
    """Pediculoisthmic component ``k`` (0 = left, 1 = right) of C2."""
    side = ("left", "right")[k]
    sx = side_x(side)
    c2 = spec.c2
    centre = origin + rot @ np.array([sx * 11.5, -11.0, 2.0])
    m = -sx * rot[:, 0]
    d = rot[:, 1] + math.tan(math.radians(c2.medial_deg[k])) * m
    d = d + math.tan(math.radians(c2.cranial_deg[k])) * rot[:, 2]
    d = d / np.linalg.norm(d)
    u = np.cross(rot[:, 2], d)
    trot = frame(u, np.cross(d, u))
    w, h = c2.outer_width[k], c2.height[k]
    tube = EllipticTube(centre, trot, w / 2, h / 2, -8.0, 9.0, flat=1.5, flare=0.45)
    return Pedicle(side, centre, d, trot[:, 0], w, h, c2.cortex_mm[k], tube)


def _bifid_spinous(origin: FloatArray, rot: FloatArray) -> list[BonePart]:
    """C2's large spinous process with its two tubercles."""
    parts: list[BonePart] = []
    sp = Box(origin + rot @ np.array([0.0, -36.0, -5.0]), rot, np.array([4.0, 10.0, 6.5]), 2.5)
    parts.append(BonePart("spinous", sp, 1.2))
    for sx in (-1.0, 1.0):
        tip = Ellipsoid(
            origin + rot @ np.array([sx * 4.0, -45.0, -6.0]), rot, np.array([3.5, 3.5, 5.0])
        )
        parts.append(BonePart("spinous_tip", tip, 1.0))
    return parts


def _c2(spec: PhantomSpec, origin: FloatArray, rot: FloatArray, joints: list[Joint]) -> Vertebra:
    comps = [c2_component(spec, origin, rot, k) for k in (0, 1)]
    parts = [
        BonePart("body", EllipticCylinder(origin, rot, 8.0, 7.5, 10.0, 0.05, 0.6), 1.2),
        BonePart(
            "dens",
            Capsule(
                origin + rot @ np.array([0, 1.0, 6.0]),
                origin + rot @ np.array([0, 1.0, 22.0]),
                5.0,
                4.2,
            ),
            1.2,
        ),
    ]
    apex = origin + rot @ np.array([0.0, -27.0, -3.0])
    for comp, pid in zip(comps, (PartId.C2_ISTHMUS_LEFT, PartId.C2_ISTHMUS_RIGHT), strict=True):
        sx = side_x(comp.side)
        parts.append(BonePart("isthmus_" + comp.side, comp.shape, comp.cortex_mm, int(pid)))
        facet = Ellipsoid(
            origin + rot @ np.array([sx * 14.5, 2.5, 10.5]), rot, np.array([7.0, 7.5, 3.8])
        )
        parts.append(BonePart("superior_facet_" + comp.side, facet, 1.0))
        back = comp.centre - comp.axis * 8.0
        lam = apex - back
        lrot = frame(lam, rot[:, 2])
        mid = (apex + back) / 2
        parts.append(
            BonePart(
                "lamina_" + comp.side,
                Box(mid, lrot, np.array([float(np.linalg.norm(lam)) / 2 + 2.0, 6.0, 2.8]), 2.0),
                1.0,
            )
        )
        tp = Capsule(
            origin + rot @ np.array([sx * 9.0, -2.0, 2.0]),
            origin + rot @ np.array([sx * 22.0, -5.0, 0.0]),
            3.0,
            2.5,
        )
        parts.append(BonePart("transverse_" + comp.side, tp, 0.8))
    for joint in joints:
        comp = next(c for c in comps if c.side == joint.side)
        parts += articular(joint, True, comp.centre - comp.axis * 8.0)
    parts += _bifid_spinous(origin, rot)
    return Vertebra("C2", LEVEL_TO_LABEL["C2"], origin, rot, tuple(parts), tuple(comps))


def _c1(origin: FloatArray, rot: FloatArray) -> Vertebra:
    ring_c = origin + rot @ np.array([0.0, -11.0, 0.0])
    parts = [
        BonePart("anterior_arch", EllipticRing(ring_c, rot, 23.0, 22.5, 3.8, 5.0, y_min=8.0), 1.0),
        BonePart(
            "posterior_arch", EllipticRing(ring_c, rot, 23.0, 22.5, 3.8, 4.5, y_min=-1e9), 1.0
        ),
    ]
    for sx in (-1.0, 1.0):
        lm = Ellipsoid(
            origin + rot @ np.array([sx * 18.0, -2.0, 0.0]), rot, np.array([7.0, 9.5, 7.0])
        )
        parts.append(BonePart("lateral_mass", lm, 1.2))
        tp = Capsule(
            origin + rot @ np.array([sx * 22.0, -3.0, 1.0]),
            origin + rot @ np.array([sx * 38.0, -5.0, 1.0]),
            4.5,
            3.5,
        )
        parts.append(BonePart("transverse", tp, 1.0))
    return Vertebra("C1", LEVEL_TO_LABEL["C1"], origin, rot, tuple(parts), ())


def c1_c2(
    spec: PhantomSpec, c2_origin: FloatArray, rot2: FloatArray, joints: list[Joint]
) -> list[Vertebra]:
    """C1 and C2 for a C2 body at ``c2_origin`` with frame ``rot2``; ``joints`` = C2–C3 joints."""
    rot1 = rotation(rot2[:, 0], 6.0) @ rot2
    c1_origin = c2_origin + rot2 @ np.array([0.0, -2.0, 23.5])
    return [_c1(c1_origin, rot1), _c2(spec, c2_origin, rot2, joints)]


def build_cervical(
    spec: PhantomSpec, c2_origin: FloatArray
) -> tuple[list[Vertebra], list[Joint], list[SoftRegion]]:
    """C1–C3 with the C2 body centroid at ``c2_origin`` (LPS mm)."""
    axial = spec.axial_rotation_deg * 0.5
    rot2 = vertebra_rot(-4.0, 0.0, axial)
    rot1 = vertebra_rot(-10.0, 0.0, axial)
    rot3 = vertebra_rot(2.0, 0.0, axial)
    c1_origin = c2_origin + rot2 @ np.array([0.0, -2.0, 23.5])
    c3_origin = c2_origin - rot2[:, 2] * 10.0 - rot3[:, 2] * (4.5 + 7.0)
    joints = [cervical_joint("C2", "C3", c3_origin, rot3, s, disc=4.5) for s in ("left", "right")]
    verts = [*c1_c2(spec, c2_origin, rot2, joints), subaxial("C3", c3_origin, rot3, (joints, []))]
    soft = [
        SoftRegion(
            "disc_C2_C3", EllipticCylinder(c2_origin - rot2[:, 2] * 12.0, rot2, 8.0, 7.5, 3.5), 85.0
        ),
        SoftRegion(
            "canal",
            Capsule(
                c3_origin + rot3 @ np.array([0.0, -17.0, -12.0]),
                c1_origin + rot1 @ np.array([0.0, -20.0, 10.0]),
                9.0,
                9.5,
            ),
            10.0,
        ),
        SoftRegion(
            "cord",
            Capsule(
                c3_origin + rot3 @ np.array([0.0, -17.0, -12.0]),
                c1_origin + rot1 @ np.array([0.0, -20.0, 10.0]),
                5.0,
                5.5,
            ),
            35.0,
        ),
        SoftRegion(
            "pharynx",
            Capsule(
                c3_origin + rot3 @ np.array([0.0, 22.0, -14.0]),
                c1_origin + rot1 @ np.array([0.0, 25.0, 12.0]),
                7.0,
                9.0,
            ),
            -1000.0,
        ),
    ]
    return verts, joints, soft


def neck_context(c1: Vertebra, c2: Vertebra, seed: int) -> tuple[list[BonePart], list[SoftRegion]]:
    """Skull base (occipital squama with foramen magnum), mandible, neck muscles and vessels.

    Bones here carry no vertebra label; they give the field of view its real neighbours.
    """
    rng = np.random.default_rng([seed, 0xC1])
    up, ant = c1.s, c1.a
    skull_c = c1.origin + up * 48.0 + ant * 12.0
    outer = Ellipsoid(skull_c, c1.rot, np.array([70.0, 86.0, 62.0]))
    inner = Ellipsoid(skull_c, c1.rot, np.array([64.0, 80.0, 56.0]))
    shell = Subtract(outer, inner)
    fm = Capsule(c1.origin - up * 10.0 - ant * 12.0, c1.origin + up * 40.0 - ant * 16.0, 17.0, 17.0)
    base = Clipped(
        Subtract(shell, fm),
        (HalfSpace(c1.origin + up * 8.0, -up), HalfSpace(c1.origin + ant * 20.0, ant)),
    )
    mandible = EllipticRing(
        c2.origin + ant * 32.0 - c2.s * 4.0, c2.rot, 44.0, 46.0, 5.0, 13.0, y_min=-12.0
    )
    bones = [BonePart("occiput", base, 2.0), BonePart("mandible", mandible, 2.0)]
    blood = float(rng.uniform(150, 250)) if rng.random() < 0.5 else 42.0
    soft = [
        SoftRegion("head", Ellipsoid(skull_c, c1.rot, np.array([72.0, 88.0, 66.0])), 34.0),
        SoftRegion(
            "face",
            Ellipsoid(c2.origin + ant * 45.0 + up * 10.0, c2.rot, np.array([56.0, 50.0, 45.0])),
            40.0,
        ),
        SoftRegion(
            "posterior_fat",
            Ellipsoid(c2.origin - ant * 38.0, c2.rot, np.array([50.0, 31.0, 80.0])),
            -90.0,
        ),
        SoftRegion(
            "posterior_muscles",
            Ellipsoid(c2.origin - ant * 36.0, c2.rot, np.array([45.0, 27.0, 80.0])),
            52.0,
        ),
    ]
    soft += _neck_vessels_and_muscles(c1, c2, blood)
    return bones, soft


def _neck_vessels_and_muscles(c1: Vertebra, c2: Vertebra, blood: float) -> list[SoftRegion]:
    """Carotid arteries, jugular veins and sternocleidomastoid muscles."""
    soft: list[SoftRegion] = []
    for sx in (-1.0, 1.0):
        for name, x, y, r, hu in (
            ("carotid", 21.0, 14.0, 3.5, blood),
            ("jugular", 29.0, 8.0, 6.0, blood - 10),
        ):
            a = c2.to_world((sx * x, y, -40.0))
            b = c2.to_world((sx * x, y, 25.0))
            soft.append(SoftRegion(name, Capsule(a, b, r, r), hu))
        scm = Capsule(
            c2.to_world((sx * 40.0, 10.0, -45.0)), c1.to_world((sx * 48.0, -15.0, 10.0)), 9.0, 7.0
        )
        soft.append(SoftRegion("sternocleidomastoid", scm, 55.0))
    return soft
