"""Assemble the phantom's anatomy (bones, joints, discs, canal, muscles) from a spec, in LPS mm."""

from __future__ import annotations

import itertools

import numpy as np

from inference.errors import InferenceError
from inference.phantom.cervical import build_cervical, neck_context
from inference.phantom.fullspine import build_full_extras, placed_frames, torso_knots
from inference.phantom.lumbar import (
    build_vertebra,
    chain_frames,
    facet_joint,
    ilium_bones,
    rib_bones,
    sacrum_parts,
    thoracic_ribs,
)
from inference.phantom.model import Anatomy, BonePart, Joint, SoftRegion, Vertebra
from inference.phantom.shapes import Box, Capsule, Ellipsoid, EllipticCylinder, FloatArray
from inference.phantom.spec import PhantomKind, PhantomSpec, VertebraParams
from inference.phantom.tissue import muscles, organs

DISC_HU = 85.0
CSF_HU = 12.0
MUSCLE_HU = 52.0
TABLE_HU = 180.0


def _lumbar(
    spec: PhantomSpec, target: FloatArray
) -> tuple[list[Vertebra], list[BonePart], list[Joint], list[SoftRegion]]:
    frames = chain_frames(spec)
    mean = np.mean([c for _, c, _ in frames], axis=0)
    return thoracolumbar(spec, [(p, c - mean + target, rot) for p, c, rot in frames])


def thoracolumbar(
    spec: PhantomSpec, frames: list[tuple[VertebraParams, FloatArray, FloatArray]]
) -> tuple[list[Vertebra], list[BonePart], list[Joint], list[SoftRegion]]:
    """Vertebrae (with facet joints), sacrum, ilia, ribs and soft tissue of placed ``frames``."""
    joints: list[Joint] = []
    for lower, upper in itertools.pairwise(frames):
        joints += [facet_joint(upper, lower, side) for side in ("left", "right")]
    verts: list[Vertebra] = []
    extra: list[BonePart] = []
    for item in frames:
        level = item[0].level
        above = {j.side: j for j in joints if j.lower == level}
        below = {j.side: j for j in joints if j.upper == level}
        v = build_vertebra(item, above, below, spec)
        if level == "S1":
            v = Vertebra(
                v.level, v.label, v.origin, v.rot, v.parts + tuple(sacrum_parts(*item)), v.pedicles
            )
            extra += ilium_bones(v, item[0])
        if level == "T12" and spec.ribs:
            extra += rib_bones(v, item[0])
        elif level.startswith("T") and level != "T12":
            extra += thoracic_ribs(v, item[0])
        verts.append(v)
    soft = _lumbar_soft(frames, verts, spec)
    return verts, extra, joints, soft


def _lumbar_soft(
    frames: list[tuple[VertebraParams, FloatArray, FloatArray]],
    verts: list[Vertebra],
    spec: PhantomSpec,
) -> list[SoftRegion]:
    rng = np.random.default_rng([spec.seed, 0x0A6])
    soft: list[SoftRegion] = muscles(frames, verts) + organs(frames, verts, rng)
    for (pl, cl, rl), (pu, cu, ru) in itertools.pairwise(frames):
        bis = rl[:, 2] + ru[:, 2]
        bis /= np.linalg.norm(bis)
        top = cl + rl[:, 2] * pl.body_height / 2
        bottom = cu - ru[:, 2] * pu.body_height / 2
        mid = (top + bottom) / 2
        rot = np.stack([rl[:, 0], np.cross(bis, rl[:, 0]), bis], axis=1)
        half = float(np.linalg.norm(bottom - top)) / 2 + 2.0
        rx, ry = (
            (pl.body_width + pu.body_width) / 4 * 0.98,
            (pl.body_depth + pu.body_depth) / 4 * 0.98,
        )
        soft.append(
            SoftRegion(
                f"disc_{pu.level}_{pl.level}", EllipticCylinder(mid, rot, rx, ry, half), DISC_HU
            )
        )
        if spec.narrowed_disc == pu.level and rng.random() < 0.5:  # vacuum phenomenon
            gas = Ellipsoid(mid + rot[:, 1] * 0.2 * ry, rot, np.array([0.35 * rx, 0.3 * ry, 1.2]))
            soft.append(SoftRegion("disc_vacuum", gas, -850.0))
    canal_pts = [
        v.to_world((0.0, -(p.body_depth / 2 + p.canal_depth / 2), 0.0))
        for (p, _, _), v in zip(frames, verts, strict=True)
    ]
    for k in range(len(canal_pts) - 1):
        p = frames[k][0]
        r = min(p.canal_width, p.canal_depth * 1.3) / 2
        soft.append(SoftRegion("canal", Capsule(canal_pts[k], canal_pts[k + 1], r, r), CSF_HU))
    return soft


def _table(y: float) -> SoftRegion:
    """The CT table under the patient's back (LPS +y), a 7 mm carbon-fibre/foam board."""
    board = Box(np.array([0.0, y + 3.5, 0.0]), np.eye(3), np.array([230.0, 3.5, 5000.0]), 1.5)
    return SoftRegion("table", board, TABLE_HU)


def build_anatomy(spec: PhantomSpec) -> Anatomy:
    """The anatomy of ``spec`` with the torso centred on the LPS origin."""
    torso_depth = spec.torso_depth_mm
    knots: tuple[tuple[float, float, float, float, float], ...] = ()
    if spec.kind == PhantomKind.LUMBAR:
        target = np.array([0.0, torso_depth / 2 - spec.fat_mm - 78.0, 0.0])
        verts, extra, joints, soft = _lumbar(spec, target)
        radii = (spec.torso_width_mm / 2, torso_depth / 2)
    elif spec.kind == PhantomKind.CERVICAL:
        neck_depth = 0.5 * torso_depth
        verts, joints, soft = build_cervical(spec, np.array([0.0, 6.0, 0.0]))
        extra, context = neck_context(verts[0], verts[1], spec.seed)
        soft = context + soft
        radii = (0.19 * spec.torso_width_mm, neck_depth / 2)
    elif spec.kind == PhantomKind.FULL:
        target = np.array([0.0, torso_depth / 2 - spec.fat_mm - 78.0, 0.0])
        frames = placed_frames(spec, target)
        verts, extra, joints, soft = thoracolumbar(spec, frames)
        cverts, cjoints, (before, after), bones = build_full_extras(spec, frames, verts)
        soft = before + soft + after
        verts = sorted(cverts + verts, key=lambda v: v.label)
        joints, extra = cjoints + joints, bones + extra
        radii = (spec.torso_width_mm / 2, torso_depth / 2)
        knots = torso_knots(spec, verts)
    else:
        raise InferenceError(f"unknown phantom kind {spec.kind!r}", spec.kind)
    soft = [_table(radii[1] + (25.0 if spec.kind == PhantomKind.CERVICAL else 1.0)), *soft]
    lo = min(float(b.shape.bounds()[0][2]) for v in verts for b in v.parts)
    hi = max(float(b.shape.bounds()[1][2]) for v in verts for b in v.parts)
    if spec.kind == PhantomKind.CERVICAL:
        lo, hi = lo - 10.0, hi + 20.0  # C3/C4 disc below, skull base above
    comps = tuple(p for v in verts if v.level == "C2" for p in v.pedicles)
    return Anatomy(
        tuple(verts),
        tuple(extra),
        tuple(joints),
        tuple(soft),
        comps,
        np.zeros(3),
        radii,
        spec.fat_mm,
        (lo, hi),
        0.0 if spec.kind == PhantomKind.CERVICAL else 0.85,
        knots,
    )
