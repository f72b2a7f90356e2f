"""Lumbosacral anatomy (optional T12 with ribs, L1–L5, optional L6, S1/sacrum) in LPS mm.

The spine is built bottom-up from S1: each vertebra is tilted from the one below by the
segmental lordosis of ALGORITHMS.md (scaled per phantom), so vertebra frames differ from the
scanner frame by tens of degrees at L5/S1, as in patients.
"""

from __future__ import annotations

import math

import numpy as np

from inference.phantom.model import BonePart, Joint, PartId, Pedicle, ThinWall, Vertebra, side_x
from inference.phantom.shapes import (
    Box,
    Capsule,
    Clipped,
    Ellipsoid,
    EllipticCylinder,
    EllipticTube,
    FloatArray,
    HalfSpace,
    Shape,
    Subtract,
    frame,
)
from inference.phantom.spec import SEGMENTAL_LORDOSIS, PhantomSpec, VertebraParams
from inference.verse import LEVEL_TO_LABEL

A0 = np.array([0.0, -1.0, 0.0])  # anterior in LPS
S0 = np.array([0.0, 0.0, 1.0])  # cranial in LPS
FACET_GAP_MM = 1.6
LATERAL_WALL_FACTOR = 0.5  # lateral pedicle cortex is about half the medial one


def rotation(axis: FloatArray, deg: float) -> FloatArray:
    """Rotation matrix about a unit ``axis`` by ``deg`` degrees (right-hand rule)."""
    x, y, z = axis / np.linalg.norm(axis)
    t = math.radians(deg)
    c, s, C = math.cos(t), math.sin(t), 1 - math.cos(t)
    return np.array(
        [
            [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
            [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
            [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
        ]
    )


def vertebra_rot(tilt_deg: float, coronal_deg: float, axial_deg: float) -> FloatArray:
    """Frame (columns r, a, s) tilted anteriorly by ``tilt_deg`` (s towards a), then rolled
    about a (scoliosis) and rotated about s (axial rotation)."""
    r0 = np.cross(A0, S0)
    base = np.stack([r0, A0, S0], axis=1)
    rot = rotation(r0, -tilt_deg) @ base
    rot = rotation(rot[:, 1], coronal_deg) @ rot
    return np.asarray(rotation(rot[:, 2], axial_deg) @ rot)


def pedicle_axis(rot: FloatArray, side: str, pta: float, psa: float) -> FloatArray:
    """Unit axis (posterior → anterior) with the given PTA/PSA in the frame ``rot``."""
    r, a, s = rot[:, 0], rot[:, 1], rot[:, 2]
    m = -side_x(side) * r
    d = a + math.tan(math.radians(pta)) * m + math.tan(math.radians(psa)) * s
    return np.asarray(d / np.linalg.norm(d))


def chain_frames(spec: PhantomSpec) -> list[tuple[VertebraParams, FloatArray, FloatArray]]:
    """(params, body centroid, frame) per level, caudal to cranial, before centring."""
    levels = list(reversed(spec.levels))
    n = len(levels)
    out: list[tuple[VertebraParams, FloatArray, FloatArray]] = []
    tilt = spec.sacral_slope_deg
    centre = np.zeros(3)
    for k, p in enumerate(levels):
        shape = math.sin(math.pi * k / max(n - 1, 1))
        rot = vertebra_rot(tilt, spec.scoliosis_deg * shape, spec.axial_rotation_deg * shape)
        if out:
            below_p, below_c, below_rot = out[-1]
            disc = p.disc_below * (0.45 if spec.narrowed_disc == p.level else 1.0)
            bis = below_rot[:, 2] + rot[:, 2]
            bis /= np.linalg.norm(bis)
            top = below_c + below_rot[:, 2] * below_p.body_height / 2
            centre = top + bis * disc + rot[:, 2] * p.body_height / 2
            if spec.listhesis_level == p.level:  # anterolisthesis: slips forward on the one below
                centre = centre + rot[:, 1] * spec.listhesis_mm
        out.append((p, centre, rot))
        if k + 1 < n:
            above = levels[k + 1]
            tilt -= SEGMENTAL_LORDOSIS.get(above.level, 0.0) * spec.lordosis_scale
    return out


def _local_box(
    origin: FloatArray,
    rot: FloatArray,
    centre: tuple[float, ...],
    half: tuple[float, ...],
    radius: float,
) -> Box:
    return Box(origin + rot @ np.asarray(centre), rot, np.asarray(half, dtype=np.float64), radius)


def _reach(body: Shape, start: FloatArray, axis: FloatArray) -> float:
    """Distance along ``axis`` from ``start`` to 2 mm inside ``body`` (at least 14 mm)."""
    t = np.arange(0.0, 60.0, 0.25)
    deep = np.nonzero(body.sdf(start[None] + t[:, None] * axis[None]) < -2.0)[0]
    return max(14.0, float(t[deep[0]]) + 1.0 if len(deep) else 14.0)


def build_pedicle(
    p: VertebraParams, origin: FloatArray, rot: FloatArray, side: str, body: Shape
) -> Pedicle:
    """The pedicle tube of ``side``: isthmus 5 mm behind the posterior body wall, reaching at
    least 2 mm into ``body``."""
    sx = side_x(side)
    width = p.pedicle_width_of(side)
    local = np.array(
        [
            sx * (p.canal_width / 2 + width / 2),
            -(p.body_depth / 2 + 5.0),
            0.12 * p.body_height,
        ]
    )
    centre = origin + rot @ local
    d = pedicle_axis(rot, side, p.pta_deg, p.psa_deg)
    u = np.cross(rot[:, 2], d)
    tube_rot = frame(u, np.cross(d, u))
    reach = _reach(body, centre, d)
    tube = EllipticTube(centre, tube_rot, width / 2, p.pedicle_height / 2, -12.0, reach)
    return Pedicle(
        side, centre, d, tube_rot[:, 0], width, p.pedicle_height, 0.8 * p.cortex_mm, tube
    )


def facet_joint(
    upper: tuple[VertebraParams, FloatArray, FloatArray],
    lower: tuple[VertebraParams, FloatArray, FloatArray],
    side: str,
) -> Joint:
    """The joint between the IAP of ``upper`` and the SAP of ``lower`` (in ``lower``'s frame)."""
    p, origin, rot = lower
    pu, origin_u, rot_u = upper
    sx = side_x(side)
    x = sx * (p.canal_width / 2 + 0.3 * p.pedicle_width + 3.0)
    y = -(p.body_depth / 2 + 5.0 + max(10.0, 0.4 * p.pedicle_height + 5.0))
    top = origin + rot @ np.array([x, y, 0.12 * p.body_height + p.pedicle_height / 2])
    bottom = origin_u + rot_u @ np.array([x, y, 0.12 * pu.body_height - pu.pedicle_height / 2])
    centre = (top + bottom) / 2 + rot[:, 2] * 0.5
    beta = math.radians(min(max(p.facet_angle_deg, 5.0), 70.0))
    normal = math.cos(beta) * (-sx * rot[:, 0]) + math.sin(beta) * (-rot[:, 1])
    jrot = frame(np.cross(normal, rot[:, 2]), normal)
    space = Box(centre, jrot, np.array([6.0, FACET_GAP_MM / 2 + 0.01, 5.0]), 0.5)
    return Joint(upper[0].level, p.level, side, centre, normal, FACET_GAP_MM, space)


def _sap(joint: Joint, rot: FloatArray, ped: Pedicle) -> list[BonePart]:
    """Superior articular process: lateral to the joint plane, joined to the pedicle's back end."""
    jrot = frame(np.cross(joint.normal, rot[:, 2]), joint.normal)
    up = rot[:, 2]
    jz = float(joint.centre @ up)
    # from 5 mm below the joint centre (but clear of the pedicle's top) to 9 mm above it
    bottom = max(jz - 5.0, float(ped.centre @ up) + ped.height / 2 + 1.5)
    top = jz + 9.0
    bottom = min(bottom, top - 6.0)
    centre = joint.centre - joint.normal * (joint.gap / 2 + 3.5) + up * ((bottom + top) / 2 - jz)
    box = Box(centre, jrot, np.array([7.0, 3.5, (top - bottom) / 2]), 2.0)
    clip = HalfSpace(joint.centre - joint.normal * joint.gap / 2, joint.normal)
    base = Capsule(ped.centre - ped.axis * 10.0, centre - rot[:, 2] * 5.0, 4.5, 4.0)
    return [
        BonePart("sap_" + joint.side, Clipped(box, (clip,)), 1.2),
        BonePart("sap_base_" + joint.side, Clipped(base, (clip,)), 1.2),
    ]


def _iap(
    joint: Joint, rot: FloatArray, origin: FloatArray, lamina_mid: FloatArray
) -> list[BonePart]:
    """Inferior articular process: medial to the joint plane, hanging from the lamina."""
    jrot = frame(np.cross(joint.normal, rot[:, 2]), joint.normal)
    centre = joint.centre + joint.normal * (joint.gap / 2 + 3.5) - rot[:, 2] * 3.0
    box = Box(centre, jrot, np.array([6.5, 3.5, 8.0]), 2.0)
    clip = HalfSpace(joint.centre + joint.normal * joint.gap / 2, -joint.normal)
    strut = Capsule(lamina_mid, centre + rot[:, 2] * 4.0, 4.5, 4.0)
    return [
        BonePart("iap_" + joint.side, Clipped(box, (clip,)), 1.2),
        BonePart("iap_strut_" + joint.side, Clipped(strut, (clip,)), 1.2),
    ]


def posterior_elements(
    p: VertebraParams, origin: FloatArray, rot: FloatArray, peds: list[Pedicle]
) -> tuple[list[BonePart], dict[str, FloatArray]]:
    """Laminae, spinous and transverse processes; returns the lamina midpoints per side."""
    parts: list[BonePart] = []
    mids: dict[str, FloatArray] = {}
    y_back = -(p.body_depth / 2 + p.canal_depth + 3.0)
    apex = origin + rot @ np.array([0.0, y_back, 0.0])
    for ped in peds:
        back = ped.centre - ped.axis * 11.0
        mid = (back + apex) / 2
        mids[ped.side] = mid
        lam_x = apex - back
        lrot = frame(lam_x, rot[:, 2])
        half = (float(np.linalg.norm(lam_x)) / 2 + 3.0, 0.42 * p.body_height, 3.5)
        parts.append(BonePart("lamina_" + ped.side, Box(mid, lrot, np.asarray(half), 2.5), 1.2))
        if p.tp_length > 0:
            sx = side_x(ped.side)
            tip = back + rot @ np.array([sx * p.tp_length, -0.25 * p.tp_length, 0.0])
            parts.append(BonePart("transverse_" + ped.side, Capsule(back, tip, 5.0, 3.2), 1.0))
    # spinous process: slopes caudally (15°), thicker at its base than at its tip
    sp_len = 0.9 * p.body_depth
    sp_rot = rotation(rot[:, 0], 15.0) @ rot
    base = apex + rot[:, 2] * (-0.05 * p.body_height)
    sp_centre = base + sp_rot @ np.array([0.0, -(sp_len / 2 - 2.0), 0.0])
    sp = Box(sp_centre, sp_rot, np.array([2.8, sp_len / 2, 0.34 * p.body_height]), 2.5)
    root = Capsule(base, base + sp_rot @ np.array([0.0, -0.4 * sp_len, 0.0]), 4.5, 3.0)
    parts += [BonePart("spinous", sp, 1.2), BonePart("spinous_root", root, 1.2)]
    return parts, mids


def build_vertebra(
    item: tuple[VertebraParams, FloatArray, FloatArray],
    joint_above: dict[str, Joint],
    joint_below: dict[str, Joint],
    spec: PhantomSpec,
) -> Vertebra:
    """All parts of one lumbar (or T12/L6) vertebra."""
    p, origin, rot = item
    cylinder = EllipticCylinder(
        origin, rot, p.body_width / 2, p.body_depth / 2, p.body_height / 2, 0.07, 1.2
    )
    # kidney-shaped axial section: a shallow (2 mm) concavity of the posterior wall at the canal
    notch_c = origin + rot @ np.array([0.0, -(p.body_depth / 2 + 2.0), 0.0])
    notch = EllipticCylinder(notch_c, rot, 0.26 * p.body_width, 4.0, p.body_height)
    body = Subtract(cylinder, notch)
    parts = [BonePart("body", body, 0.5 * p.cortex_mm)]
    peds = [build_pedicle(p, origin, rot, side, body) for side in ("left", "right")]
    for ped, pid in zip(peds, (PartId.PEDICLE_LEFT, PartId.PEDICLE_RIGHT), strict=True):
        lateral = (
            -ped.width_dir if side_x(ped.side) * (ped.width_dir @ rot[:, 0]) < 0 else ped.width_dir
        )
        wall = ThinWall(ped.centre, lateral, ped.width / 2, LATERAL_WALL_FACTOR)
        parts.append(BonePart("pedicle_" + ped.side, ped.shape, ped.cortex_mm, int(pid), wall))
    post, mids = posterior_elements(p, origin, rot, peds)
    parts += post
    for ped in peds:
        if ped.side in joint_above:
            parts += _sap(joint_above[ped.side], rot, ped)
        else:
            free_c = ped.centre - ped.axis * 10.0 + rot[:, 2] * 10.0
            parts.append(
                BonePart(
                    "sap_" + ped.side, Capsule(ped.centre - ped.axis * 10.0, free_c, 4.5, 3.5), 1.2
                )
            )
        if ped.side in joint_below:
            parts += _iap(joint_below[ped.side], rot, origin, mids[ped.side])
    if spec.osteophytes:
        for sign in (1.0, -1.0):
            bump = origin + rot @ np.array(
                [0.0, p.body_depth / 2 - 1.0, sign * (p.body_height / 2 - 1.0)]
            )
            parts.append(
                BonePart(
                    "osteophyte",
                    Ellipsoid(bump, rot, np.array([0.35 * p.body_width, 3.0, 2.5])),
                    1.5,
                )
            )
    return Vertebra(p.level, LEVEL_TO_LABEL[p.level], origin, rot, tuple(parts), tuple(peds))


def rib_bones(v: Vertebra, p: VertebraParams) -> list[BonePart]:
    """Short floating twelfth ribs from the T12 costovertebral joints, running lateral-caudal."""
    out: list[BonePart] = []
    for side in ("left", "right"):
        sx = side_x(side)
        pts = [
            v.to_world((sx * (p.body_width / 2 + 3.0), -p.body_depth / 2 + 2.0, 2.0)),
            v.to_world((sx * (p.body_width / 2 + 30.0), -p.body_depth / 2 - 10.0, -8.0)),
            v.to_world((sx * (p.body_width / 2 + 65.0), -p.body_depth / 2 + 0.0, -30.0)),
            v.to_world((sx * (p.body_width / 2 + 85.0), p.body_depth / 2 + 15.0, -55.0)),
        ]
        for k in range(3):
            out.append(
                BonePart("rib12_" + side, Capsule(pts[k], pts[k + 1], 5.0 - k, 4.5 - k), 1.0)
            )
    return out


def sacrum_parts(p: VertebraParams, origin: FloatArray, rot: FloatArray) -> list[BonePart]:
    """Alae, lower sacrum and median crest of S1/sacrum (label 26)."""
    parts: list[BonePart] = []
    for side in ("left", "right"):
        sx = side_x(side)
        ala = _local_box(
            origin, rot, (sx * (p.body_width / 2 + 14.0), -6.0, -4.0), (18.0, 14.0, 14.0), 5.0
        )
        parts.append(BonePart("ala_" + side, ala, 1.2))
        wing = _local_box(
            origin, rot, (sx * (p.body_width / 2 + 24.0), -22.0, -22.0), (12.0, 14.0, 22.0), 5.0
        )
        parts.append(BonePart("sacral_wing_" + side, wing, 1.2))
    krot = rotation(rot[:, 0], 25.0) @ rot
    lower = Ellipsoid(
        origin + rot @ np.array([0.0, -14.0, -48.0]),
        krot,
        np.array([0.42 * p.body_width, 13.0, 40.0]),
    )
    parts.append(BonePart("lower_sacrum", lower, 1.2))
    crest = _local_box(
        origin, krot, (0.0, -(p.body_depth / 2 + p.canal_depth + 6.0), -28.0), (4.0, 5.0, 30.0), 3.0
    )
    parts.append(BonePart("median_crest", crest, 1.2))
    return parts


def ilium_bones(s1: Vertebra, p: VertebraParams) -> list[BonePart]:
    """Iliac wings beside the sacrum (bone without a vertebra label), with an SI joint gap."""
    out: list[BonePart] = []
    for side in ("left", "right"):
        sx = side_x(side)
        centre = s1.to_world((sx * (p.body_width / 2 + 62.0), -30.0, 10.0))
        wrot = rotation(s1.s, sx * 30.0) @ s1.rot
        out.append(
            BonePart("ilium_" + side, Box(centre, wrot, np.array([30.0, 5.0, 45.0]), 4.0), 1.3)
        )
        body = s1.to_world((sx * (p.body_width / 2 + 50.0), -10.0, -45.0))
        out.append(
            BonePart(
                "ilium_body_" + side, Ellipsoid(body, s1.rot, np.array([18.0, 22.0, 22.0])), 1.5
            )
        )
    return out


def thoracic_ribs(v: Vertebra, p: VertebraParams) -> list[BonePart]:
    """Ribs of a thoracic vertebra T1–T11: head at the body, tubercle at the transverse process,
    angle, lateral and anterior arcs sloping caudally (bone without a vertebra label)."""
    k = int(p.level[1:])
    f = 0.55 + 0.45 * min(k, 7) / 7
    out: list[BonePart] = []
    for side in ("left", "right"):
        sx = side_x(side)
        w, d = p.body_width / 2, p.body_depth / 2
        pts = [
            v.to_world((sx * (w + 3.0), -d + 3.0, 0.45 * p.body_height)),
            v.to_world((sx * (w + 20.0), -d - 14.0, 0.2 * p.body_height)),
            v.to_world((sx * (w + 50.0 * f), -d - 12.0, -10.0)),
            v.to_world((sx * (w + 100.0 * f), d + 35.0 * f, -30.0)),
            v.to_world((sx * (w + 60.0 * f), d + 105.0 * f, -55.0)),
        ]
        for j in range(len(pts) - 1):
            out.append(BonePart(f"rib{k}_{side}", Capsule(pts[j], pts[j + 1], 5.0, 4.5), 1.0))
    return out
