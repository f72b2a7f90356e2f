"""The whole spine (kind "full"): C1–C7, T1–T12 with ribs, L1–L5 (L6), S1, in LPS mm.

The thoracolumbar chain is built bottom-up from S1 as for the lumbar kind, with thoracic kyphosis
(−3.6° per segment); the cervical chain continues from T1 with the cervical lordosis of
``SEGMENTAL_LORDOSIS``. The body outline is a chest/abdomen ellipse that narrows to the neck
between T2 and C6 (``Anatomy.torso_knots``). The C7–T1 facet joints are not modelled.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from inference.phantom.cervical import c1_c2, neck_context
from inference.phantom.lumbar import chain_frames, vertebra_rot
from inference.phantom.model import BonePart, Joint, SoftRegion, Vertebra
from inference.phantom.shapes import Capsule, Ellipsoid, EllipticCylinder, FloatArray
from inference.phantom.spec import SEGMENTAL_LORDOSIS, PhantomSpec, VertebraParams
from inference.phantom.subaxial import BODY_HZ, cervical_joint, subaxial

Frame = tuple[VertebraParams, FloatArray, FloatArray]
Frame2 = tuple[FloatArray, FloatArray]  # origin, rotation
SUBAXIAL = (
    ("C7", 1.15, 26.0),
    ("C6", 1.1, 18.0),
    ("C5", 1.05, 15.0),
    ("C4", 1.0, 15.0),
    ("C3", 1.0, 16.0),
)
CERVICAL_DISC_MM = 5.0


def placed_frames(spec: PhantomSpec, target: FloatArray) -> list[Frame]:
    """Thoracolumbar frames (caudal → cranial) with the L3 body centroid at ``target``."""
    frames = chain_frames(spec)
    l3 = next(c for p, c, _ in frames if p.level == "L3")
    return [(p, c - l3 + target, rot) for p, c, rot in frames]


def _tilt(rot: FloatArray) -> float:
    """Anterior tilt (degrees) of a frame's s axis in the sagittal plane."""
    s = rot[:, 2]
    return math.degrees(math.atan2(-float(s[1]), float(s[2])))


Placed = tuple[str, float, float, FloatArray, FloatArray]  # level, scale, spinous, centre, rot


def _stack(spec: PhantomSpec, t1: Frame) -> tuple[list[Placed], list[SoftRegion], Frame2]:
    """C7 … C3 stacked on T1 by the cervical lordosis; their discs; the C2 origin and frame."""
    p1, below_c, below_rot = t1
    tilt = _tilt(below_rot)
    below_hz = p1.body_height / 2
    placed: list[Placed] = []
    discs: list[SoftRegion] = []
    for level, sc, spinous in SUBAXIAL:
        tilt -= SEGMENTAL_LORDOSIS[level] * spec.lordosis_scale
        rot = vertebra_rot(tilt, 0.0, 0.0)
        bis = below_rot[:, 2] + rot[:, 2]
        bis /= np.linalg.norm(bis)
        top = below_c + below_rot[:, 2] * below_hz
        centre = top + bis * CERVICAL_DISC_MM + rot[:, 2] * BODY_HZ * sc
        disc = EllipticCylinder(top + bis * CERVICAL_DISC_MM / 2, rot, 8.5 * sc, 8.0 * sc, 4.0)
        discs.append(SoftRegion(f"disc_{level}", disc, 85.0))
        placed.append((level, sc, spinous, centre, rot))
        below_c, below_rot, below_hz = centre, rot, BODY_HZ * sc
    rot2 = vertebra_rot(tilt - SEGMENTAL_LORDOSIS["C2"] * spec.lordosis_scale, 0.0, 0.0)
    c2_origin = below_c + below_rot[:, 2] * below_hz + rot2[:, 2] * (CERVICAL_DISC_MM + 10.0)
    return placed, discs, (c2_origin, rot2)


def cervical_chain(
    spec: PhantomSpec, t1: Frame
) -> tuple[list[Vertebra], list[Joint], list[SoftRegion]]:
    """C7 … C3 stacked on T1, then C2 and C1; with discs, canal, cord and airway."""
    placed, soft, (c2_origin, rot2) = _stack(spec, t1)
    joints: list[Joint] = []
    for k, (level, sc, _, centre, rot) in enumerate(placed):
        upper = "C2" if k == len(placed) - 1 else placed[k + 1][0]
        joints += [
            cervical_joint(upper, level, centre, rot, s, disc=CERVICAL_DISC_MM, sc=sc)
            for s in ("left", "right")
        ]
    verts: list[Vertebra] = []
    for level, sc, spinous, centre, rot in placed:
        above = [j for j in joints if j.lower == level]
        below = [j for j in joints if j.upper == level]
        verts.append(subaxial(level, centre, rot, (above, below), sc=sc, spinous_mm=spinous))
    verts += c1_c2(spec, c2_origin, rot2, [j for j in joints if j.upper == "C2"])
    verts = sorted(verts, key=lambda v: v.label)
    return verts, joints, soft + _cervical_soft(verts, t1)


def _cervical_soft(verts: list[Vertebra], t1: Frame) -> list[SoftRegion]:
    """Canal with cord from C1 to T1, pharynx and trachea."""
    p1, c1_, rot1 = t1
    soft: list[SoftRegion] = []
    canal = [v.to_world((0.0, -17.0, 0.0)) for v in verts]
    canal.append(c1_ + rot1 @ np.array([0.0, -(p1.body_depth / 2 + 8.0), 0.0]))
    for a, b in itertools.pairwise(canal):
        soft.append(SoftRegion("canal", Capsule(a, b, 8.5, 8.5), 10.0))
        soft.append(SoftRegion("cord", Capsule(a, b, 5.0, 5.0), 35.0))
    airway = [
        verts[0].to_world((0.0, 26.0, 5.0)),
        verts[3].to_world((0.0, 24.0, 0.0)),
        c1_ + rot1 @ np.array([0.0, p1.body_depth / 2 + 18.0, -40.0]),
    ]
    soft.append(SoftRegion("pharynx", Capsule(airway[0], airway[1], 9.0, 8.0), -1000.0))
    soft.append(SoftRegion("trachea", Capsule(airway[1], airway[2], 8.0, 9.0), -1000.0))
    return soft


def chest(frames: list[Frame], verts: list[Vertebra], seed: int) -> list[SoftRegion]:
    """Lungs, heart and descending aorta in front of the thoracic spine."""
    by = {v.level: v for v in verts}
    rng = np.random.default_rng([seed, 0xC4E])
    t6, t8 = by["T6"], by["T8"]
    out: list[SoftRegion] = []
    for sx in (-1.0, 1.0):
        lung = Ellipsoid(
            t6.to_world((sx * 72.0, 45.0, -15.0)), t6.rot, np.array([58.0, 78.0, 125.0])
        )
        out.append(SoftRegion("lung", lung, float(rng.uniform(-880, -820))))
    out.append(
        SoftRegion(
            "heart",
            Ellipsoid(t8.to_world((-25.0, 95.0, 5.0)), t8.rot, np.array([58.0, 48.0, 55.0])),
            42.0,
        )
    )
    depth = {p.level: p.body_depth for p, _, _ in frames}
    aorta = [by[f"T{k}"].to_world((-18.0, depth[f"T{k}"] / 2 + 12.0, 0.0)) for k in range(4, 13)]
    for a, b in itertools.pairwise(aorta):
        out.append(SoftRegion("aorta", Capsule(a, b, 11.0, 11.0), 45.0))
    return out


def torso_knots(
    spec: PhantomSpec, verts: list[Vertebra]
) -> tuple[tuple[float, float, float, float, float], ...]:
    """(z, centre x, centre y, semi-axis x, semi-axis y) of the body outline along LPS z."""
    by = {v.level: v for v in verts}
    chest_r = (spec.torso_width_mm / 2, spec.torso_depth_mm / 2)
    neck_r = (0.19 * spec.torso_width_mm, 0.25 * spec.torso_depth_mm)
    c4 = by["C4"].origin
    z_t2, z_c6 = float(by["T2"].origin[2]), float(by["C6"].origin[2])
    lo = min(float(v.origin[2]) for v in verts) - 400.0
    hi = max(float(v.origin[2]) for v in verts) + 400.0
    return (
        (lo, 0.0, 0.0, *chest_r),
        (z_t2, 0.0, 0.0, *chest_r),
        (z_c6, float(c4[0]), float(c4[1]) - 6.0, *neck_r),
        (hi, float(c4[0]), float(c4[1]) - 6.0, *neck_r),
    )


def build_full_extras(
    spec: PhantomSpec, frames: list[Frame], tl_verts: list[Vertebra]
) -> tuple[list[Vertebra], list[Joint], tuple[list[SoftRegion], list[SoftRegion]], list[BonePart]]:
    """Cervical vertebrae and joints, soft tissue to paint (before, after) the thoracolumbar
    soft tissue, and the skull base / mandible, for kind full."""
    cverts, cjoints, csoft = cervical_chain(spec, frames[-1])
    bones, context = neck_context(cverts[0], cverts[1], spec.seed)
    return cverts, cjoints, (context + chest(frames, tl_verts, spec.seed), csoft), bones
