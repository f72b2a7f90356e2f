"""Typed results of an analysis, and their JSON form (``result.json``, a stable contract).

Coordinates are DICOM LPS millimetres. ``AnalysisResult.to_json()`` produces exactly the documented
``result.json`` layout; ``from_json`` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Point = tuple[float, float, float]

RESULT_FRAME = "LPS"


class Side(StrEnum):
    LEFT = "left"
    RIGHT = "right"


class MPDKind(StrEnum):
    OUTER = "outer"
    ENDOSTEAL = "endosteal"


class Risk(StrEnum):
    LOW = "low"
    HIGH = "high"


def _point(value: Any) -> Point:
    x, y, z = (float(v) for v in value)
    return (x, y, z)


def _rounded(p: Point, digits: int = 2) -> list[float]:
    return [round(v, digits) for v in p]


@dataclass(frozen=True, slots=True)
class VertebraLabel:
    """A vertebra found and labelled; ``label`` is its VerSe id (L1..L5 = 20..24, S1 = 26)."""

    level: str
    label: int
    centroid_mm: Point
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "label": self.label,
            "centroid_mm": _rounded(self.centroid_mm),
            "confidence": round(self.confidence, 3),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VertebraLabel:
        return cls(d["level"], int(d["label"]), _point(d["centroid_mm"]), float(d["confidence"]))


@dataclass(frozen=True, slots=True)
class ScrewPlan:
    """One planned pedicle screw, graded against the final masks."""

    level: str
    side: Side
    entry_mm: Point
    tip_mm: Point
    length_mm: float
    diameter_mm: float
    channel_mm: float
    pta_deg: float
    psa_deg: float
    gr_grade: str
    breach_mm: float
    breach_direction: str | None
    babu_grade: int

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "side": str(self.side),
            "entry_mm": _rounded(self.entry_mm),
            "tip_mm": _rounded(self.tip_mm),
            "length_mm": self.length_mm,
            "diameter_mm": self.diameter_mm,
            "channel_mm": round(self.channel_mm, 2),
            "pta_deg": round(self.pta_deg, 2),
            "psa_deg": round(self.psa_deg, 2),
            "gr_grade": self.gr_grade,
            "breach_mm": round(self.breach_mm, 2),
            "breach_direction": self.breach_direction,
            "babu_grade": self.babu_grade,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ScrewPlan:
        return cls(
            level=d["level"],
            side=Side(d["side"]),
            entry_mm=_point(d["entry_mm"]),
            tip_mm=_point(d["tip_mm"]),
            length_mm=float(d["length_mm"]),
            diameter_mm=float(d["diameter_mm"]),
            channel_mm=float(d["channel_mm"]),
            pta_deg=float(d["pta_deg"]),
            psa_deg=float(d["psa_deg"]),
            gr_grade=d["gr_grade"],
            breach_mm=float(d["breach_mm"]),
            breach_direction=d["breach_direction"],
            babu_grade=int(d["babu_grade"]),
        )


@dataclass(frozen=True, slots=True)
class C2Finding:
    """Feasibility of one C2 pedicle screw: narrowest pediculoisthmic diameter and risk."""

    side: Side
    mpd_mm: float
    mpd_kind: MPDKind
    location_mm: Point
    axis_mm: Point
    risk: Risk
    probability_feasible: float
    method: str

    def to_json(self) -> dict[str, Any]:
        return {
            "side": str(self.side),
            "mpd_mm": round(self.mpd_mm, 2),
            "mpd_kind": str(self.mpd_kind),
            "location_mm": _rounded(self.location_mm),
            "axis_mm": _rounded(self.axis_mm, 4),
            "risk": str(self.risk),
            "probability_feasible": round(self.probability_feasible, 4),
            "method": self.method,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> C2Finding:
        return cls(
            side=Side(d["side"]),
            mpd_mm=float(d["mpd_mm"]),
            mpd_kind=MPDKind(d["mpd_kind"]),
            location_mm=_point(d["location_mm"]),
            axis_mm=_point(d["axis_mm"]),
            risk=Risk(d["risk"]),
            probability_feasible=float(d["probability_feasible"]),
            method=d["method"],
        )


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """Everything ``result.json`` holds."""

    engine: str
    version: str
    vertebrae: tuple[VertebraLabel, ...] = ()
    screws: tuple[ScrewPlan, ...] = ()
    c2: tuple[C2Finding, ...] = ()
    warnings: tuple[str, ...] = ()
    timings_s: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": RESULT_FRAME,
            "engine": self.engine,
            "version": self.version,
            "vertebrae": [v.to_json() for v in self.vertebrae],
            "screws": [s.to_json() for s in self.screws],
            "c2": [c.to_json() for c in self.c2],
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AnalysisResult:
        if d.get("frame") != RESULT_FRAME:
            raise ValueError(f"result.json frame must be {RESULT_FRAME!r}, got {d.get('frame')!r}")
        return cls(
            engine=d["engine"],
            version=d["version"],
            vertebrae=tuple(VertebraLabel.from_json(v) for v in d["vertebrae"]),
            screws=tuple(ScrewPlan.from_json(s) for s in d["screws"]),
            c2=tuple(C2Finding.from_json(c) for c in d["c2"]),
            warnings=tuple(d["warnings"]),
            timings_s={k: float(v) for k, v in d["timings_s"].items()},
        )
