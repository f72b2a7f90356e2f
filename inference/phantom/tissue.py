"""Soft tissue around the lumbar spine and tissue textures (LPS mm, HU).

Paint order matters (later regions win): fat envelopes, then muscles inside them (so muscles are
separated by fat planes as on CT), vessels, kidneys, bowel gas; the discs, canal and bones come
after. Values are typical non-contrast (or portal-venous, when ``contrast``) CT numbers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from inference.phantom.model import SoftRegion, Vertebra
from inference.phantom.shapes import Capsule, Ellipsoid, FloatArray, frame
from inference.phantom.spec import VertebraParams

MUSCLE_HU = 52.0
FAT_HU = -95.0
Frames = list[tuple[VertebraParams, FloatArray, FloatArray]]


def _chain(
    points: list[FloatArray], r0: float, r1: float, name: str, hu: float
) -> list[SoftRegion]:
    n = len(points) - 1
    out = []
    for k in range(n):
        ra = r0 + (r1 - r0) * k / max(n, 1)
        rb = r0 + (r1 - r0) * (k + 1) / max(n, 1)
        out.append(SoftRegion(name, Capsule(points[k], points[k + 1], ra, rb), hu))
    return out


def _abdominal(level: str) -> bool:
    return level == "T12" or level.startswith("L")


def muscles(frames: Frames, verts: list[Vertebra]) -> list[SoftRegion]:
    """Erector spinae / multifidus and psoas, each inside a 3 mm fat envelope."""
    out: list[SoftRegion] = []
    lumbar = [(p, v) for (p, _, _), v in zip(frames, verts, strict=True) if _abdominal(p.level)]
    for sx in (-1.0, 1.0):
        back = [
            v.to_world((sx * 24.0, -(p.body_depth / 2 + p.canal_depth + 22.0), 0.0))
            for (p, _, _), v in zip(frames, verts, strict=True)
        ]
        psoas = [
            v.to_world((sx * (p.body_width / 2 + 10.0 + 3.0 * k), 2.0 + 2.0 * k, 0.0))
            for k, (p, v) in enumerate(lumbar)
        ]
        out += _chain(back, 27.0, 27.0, "fat_envelope", FAT_HU)
        out += _chain(psoas, 10.0, 22.0, "fat_envelope", FAT_HU)
        out += _chain(back, 24.0, 24.0, "erector_spinae", MUSCLE_HU)
        out += _chain(psoas, 7.0, 19.0, "psoas", MUSCLE_HU)
        quadratus = [
            v.to_world((sx * (p.body_width / 2 + 38.0), -20.0, 0.0)) for p, v in lumbar[1:]
        ]
        out += _chain(quadratus, 9.0, 13.0, "quadratus_lumborum", MUSCLE_HU)
    return out


def organs(frames: Frames, verts: list[Vertebra], rng: np.random.Generator) -> list[SoftRegion]:
    """Aorta and IVC in front of the spine, kidneys beside L1–L2, a few bowel gas pockets."""
    contrast = bool(rng.random() < 0.5)
    blood = float(rng.uniform(140, 220)) if contrast else float(rng.uniform(35, 50))
    lumbar = [(p, v) for (p, _, _), v in zip(frames, verts, strict=True) if _abdominal(p.level)]
    out: list[SoftRegion] = []
    aorta = [v.to_world((-12.0, p.body_depth / 2 + 12.0, 0.0)) for p, v in lumbar[1:]]
    ivc = [v.to_world((22.0, p.body_depth / 2 + 10.0, 0.0)) for p, v in lumbar[1:]]
    out += _chain(aorta, 11.0, 9.0, "aorta", blood)
    out += _chain(ivc, 11.0, 12.0, "ivc", blood - 15.0)
    top = lumbar[min(1, len(lumbar) - 1)]
    kidney_hu = float(rng.uniform(130, 180)) if contrast else 32.0
    for sx, dz in ((1.0, -8.0), (-1.0, 8.0)):
        p, v = top
        centre = v.to_world((sx * (p.body_width / 2 + 48.0), -8.0, dz))
        axis = v.s + 0.35 * sx * v.r
        rot = frame(np.cross(axis, v.a), v.a)
        out.append(
            SoftRegion("kidney_fat", Ellipsoid(centre, rot, np.array([32.0, 28.0, 60.0])), FAT_HU)
        )
        out.append(
            SoftRegion("kidney", Ellipsoid(centre, rot, np.array([26.0, 22.0, 52.0])), kidney_hu)
        )
    for _ in range(int(rng.integers(3, 8))):
        p, v = lumbar[int(rng.integers(0, len(lumbar)))]
        ang = float(rng.uniform(-1.0, 1.0))
        local = (110.0 * math.sin(ang), 60.0 + 50.0 * math.cos(ang), float(rng.uniform(-20, 20)))
        radii = np.array([rng.uniform(6, 18), rng.uniform(5, 12), rng.uniform(8, 25)])
        out.append(SoftRegion("bowel_gas", Ellipsoid(v.to_world(local), v.rot, radii), -980.0))
    return out


VISCERA_CELL_MM = 9.0
_VISCERA_LO = np.array([-300.0, -300.0, -600.0])
_VISCERA_SHAPE = (67, 67, 134)


def visceral_fat_grid(seed: int) -> FloatArray:
    """Coarse smooth random field (cells of 9 mm over the LPS box ±300 × ±300 × ±600 mm)."""
    rng = np.random.default_rng([seed, 0xFA7])
    noise = rng.standard_normal(_VISCERA_SHAPE)
    field = ndimage.gaussian_filter(noise, 1.2, mode="wrap")
    field /= field.std()
    return np.asarray(1.0 / (1.0 + np.exp(-5.0 * (field - 0.3))))


def visceral_fat_field(p: FloatArray, grid: FloatArray) -> FloatArray:
    """Fat fraction of the viscera at LPS points ``p`` (N, 3), in [0, 1] (blobs of 1–4 cm)."""
    idx = ((p - _VISCERA_LO) / VISCERA_CELL_MM).T
    return np.asarray(ndimage.map_coordinates(grid, idx, order=1, mode="nearest"))
