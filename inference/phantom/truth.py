"""Ground truth of a phantom (DICOM LPS mm, degrees), computed on the exact geometry.

The reference screw follows ALGORITHMS.md: entry/exit are the bone crossings of the pedicle axis
(contiguous bone run through the isthmus), length = 0.8 × channel snapped down to 30–60 mm in
5 mm steps, diameter = largest of 4.5–7.5 mm (0.5 mm steps) whose radius is at most the smallest
axis-to-surface distance in the pedicle minus a 0.5 mm margin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from inference.phantom.model import Anatomy, Joint, PartId, Pedicle, Vertebra

Vec = tuple[float, float, float]

SCREW_LENGTHS = tuple(range(30, 65, 5))
SCREW_DIAMETERS = tuple(4.5 + 0.5 * k for k in range(7))
CORTICAL_MARGIN_MM = 0.5
MPD_CUTOFF_MM = 4.78


def _v(x: Any) -> Vec:
    a, b, c = (float(t) for t in x)
    return (a, b, c)


def _r(x: Vec, digits: int = 4) -> list[float]:
    return [round(t, digits) for t in x]


@dataclass(frozen=True, slots=True)
class ScrewTruth:
    entry: Vec
    tip: Vec
    exit: Vec
    channel_mm: float
    length_mm: float
    diameter_mm: float
    pta_deg: float
    psa_deg: float


@dataclass(frozen=True, slots=True)
class PedicleTruth:
    side: str
    isthmus_centre: Vec
    axis: Vec
    width_dir: Vec
    width_mm: float
    height_mm: float
    min_axis_to_surface_mm: float
    screw: ScrewTruth


@dataclass(frozen=True, slots=True)
class FacetTruth:
    upper: str
    lower: str
    side: str
    centre: Vec
    normal: Vec
    gap_mm: float


@dataclass(frozen=True, slots=True)
class VertebraTruth:
    level: str
    label: int
    s: Vec
    a: Vec
    r: Vec
    body_centroid: Vec
    pedicles: tuple[PedicleTruth, ...]
    facets_at_risk: tuple[FacetTruth, ...]


@dataclass(frozen=True, slots=True)
class C2SideTruth:
    side: str
    mpd_outer_mm: float
    mpd_endosteal_mm: float
    cortex_mm: float
    height_mm: float
    location: Vec
    axis: Vec
    width_dir: Vec
    risk_outer: str


@dataclass(frozen=True, slots=True)
class PhantomTruth:
    """Everything known exactly about a phantom; ``to_json()`` is the ``truth.json`` layout."""

    seed: int
    kind: str
    shape: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]
    vertebrae: tuple[VertebraTruth, ...]
    c2: tuple[C2SideTruth, ...]
    tissue: Mapping[str, float]
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def vertebra(self, level: str) -> VertebraTruth:
        for v in self.vertebrae:
            if v.level == level:
                return v
        raise KeyError(level)

    def to_json(self) -> dict[str, Any]:
        def clean(x: Any) -> Any:
            if isinstance(x, float):
                return round(x, 4)
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [clean(v) for v in x]
            return x

        body = asdict(self)
        body["tissue"] = dict(self.tissue)
        body["parameters"] = dict(self.parameters)
        return {
            "frame": "LPS",
            "units": "mm",
            "part_ids": {p.name.lower(): int(p) for p in PartId},
            **clean(body),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PhantomTruth:
        """Read back what :meth:`to_json` wrote."""
        verts = tuple(
            _plain(
                VertebraTruth,
                v,
                pedicles=tuple(
                    _plain(PedicleTruth, p, screw=_plain(ScrewTruth, p["screw"]))
                    for p in v["pedicles"]
                ),
                facets_at_risk=tuple(_plain(FacetTruth, f) for f in v["facets_at_risk"]),
            )
            for v in d["vertebrae"]
        )
        return cls(
            int(d["seed"]),
            d["kind"],
            (int(d["shape"][0]), int(d["shape"][1]), int(d["shape"][2])),
            tuple(tuple(float(t) for t in row) for row in d["affine"]),
            verts,
            tuple(_plain(C2SideTruth, c) for c in d["c2"]),
            {k: float(v) for k, v in d["tissue"].items()},
            dict(d.get("parameters", {})),
        )


_CASTS: dict[str, Any] = {"float": float, "int": int, "str": str, "Vec": _v}


def _plain(cls: Any, d: Mapping[str, Any], **given: Any) -> Any:
    """An instance of the truth dataclass ``cls`` from its JSON dict (``given`` fields as is)."""
    values = dict(given)
    for name, f in cls.__dataclass_fields__.items():
        if name not in values:
            values[name] = _CASTS[str(f.type)](d[name])
    return cls(**values)


def screw_angles(entry: np.ndarray, tip: np.ndarray, v: Vertebra, side: str) -> tuple[float, float]:
    """(PTA, PSA) in degrees of the screw entry→tip in the frame of ``v`` (ALGORITHMS.md)."""
    d = (tip - entry) / np.linalg.norm(tip - entry)
    m = v.r if side == "left" else -v.r
    pta = math.degrees(math.atan2(float(d @ m), float(d @ v.a)))
    psa = math.degrees(math.atan2(float(d @ v.s), float(d @ v.a)))
    return pta, psa


def channel(v: Vertebra, ped: Pedicle, step: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit of the pedicle axis through the bone run that contains the isthmus centre."""
    t = np.arange(-80.0, 100.0 + step, step)
    pts = ped.centre[None, :] + t[:, None] * ped.axis[None, :]
    d = v.sdf(pts)
    i0 = int(np.argmin(np.abs(t)))
    outside = d >= 0
    before = np.nonzero(outside[:i0])[0]
    after = np.nonzero(outside[i0:])[0]
    ib = int(before[-1]) if len(before) else 0
    ia = i0 + int(after[0]) if len(after) else len(t) - 1
    te = t[ib] + step * d[ib] / (d[ib] - d[ib + 1])
    tx = t[ia - 1] + step * d[ia - 1] / (d[ia - 1] - d[ia])
    return ped.centre + te * ped.axis, ped.centre + tx * ped.axis


def reference_screw(v: Vertebra, ped: Pedicle) -> ScrewTruth:
    entry, exit_ = channel(v, ped)
    lc = float(np.linalg.norm(exit_ - entry))
    fits = [n for n in SCREW_LENGTHS if n <= 0.8 * lc + 1e-9]
    length = float(fits[-1] if fits else SCREW_LENGTHS[0])
    min_dist = min(ped.width, ped.height) / 2
    sizes = [s for s in SCREW_DIAMETERS if s / 2 <= min_dist - CORTICAL_MARGIN_MM + 1e-9]
    diameter = float(sizes[-1] if sizes else SCREW_DIAMETERS[0])
    tip = entry + length * ped.axis
    pta, psa = screw_angles(entry, tip, v, ped.side)
    return ScrewTruth(_v(entry), _v(tip), _v(exit_), lc, length, diameter, pta, psa)


def _facet(j: Joint) -> FacetTruth:
    return FacetTruth(j.upper, j.lower, j.side, _v(j.centre), _v(j.normal), j.gap)


def body_centroid(v: Vertebra, step: float = 0.75) -> np.ndarray:
    """Volumetric centroid (LPS mm) of the vertebral body part, sampled in the body's frame."""
    body = next((p.shape for p in v.parts if p.name == "body"), None)
    if body is None:
        return np.asarray(v.origin)
    lo, hi = body.bounds()
    ext = float(np.max(hi - lo)) / 2 + step
    g = np.arange(-ext, ext + step / 2, step)
    total, count = np.zeros(3), 0
    for z in g:  # slab by slab keeps memory small
        uu, vv = np.meshgrid(g, g, indexing="ij")
        local = np.stack([uu.ravel(), vv.ravel(), np.full(uu.size, z)], axis=1)
        pts = v.origin + local @ v.rot.T
        inside = pts[body.sdf(pts) < 0]
        total += inside.sum(axis=0)
        count += len(inside)
    return total / max(count, 1)


def vertebra_truth(v: Vertebra, anatomy: Anatomy) -> VertebraTruth:
    peds: tuple[PedicleTruth, ...] = ()
    if v.level != "C2":
        peds = tuple(
            PedicleTruth(
                p.side,
                _v(p.centre),
                _v(p.axis),
                _v(p.width_dir),
                p.width,
                p.height,
                min(p.width, p.height) / 2,
                reference_screw(v, p),
            )
            for p in v.pedicles
        )
    facets = tuple(_facet(j) for j in anatomy.joints if j.lower == v.level)
    centroid = _v(body_centroid(v))
    return VertebraTruth(v.level, v.label, _v(v.s), _v(v.a), _v(v.r), centroid, peds, facets)


def c2_truth(p: Pedicle) -> C2SideTruth:
    endo = max(p.width - 2 * p.cortex_mm, 0.0)
    risk = "low" if p.width >= MPD_CUTOFF_MM else "high"
    return C2SideTruth(
        p.side,
        p.width,
        endo,
        p.cortex_mm,
        p.height,
        _v(p.centre),
        _v(p.axis),
        _v(p.width_dir),
        risk,
    )
