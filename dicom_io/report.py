"""The DICOM writers' view of an analysis result, parsed from the ``result.json`` dictionary.

:mod:`dicom_io` may not import :mod:`inference`, so ``node`` hands the writers
``AnalysisResult.to_json()`` and :meth:`AnalysisReport.from_json` turns it back into typed values.
The layout mirrors ``inference/results.py`` exactly. Coordinates are DICOM LPS millimetres.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dicom_io.errors import DicomIOError

Point = tuple[float, float, float]

REPORT_FRAME = "LPS"
SIDES = ("left", "right")
GR_GRADES = ("A", "B", "C", "D", "E")
BABU_GRADES = (0, 1, 2, 3)
MPD_KINDS = ("outer", "endosteal")
RISKS = ("low", "high")


class ReportFormatError(DicomIOError):
    """The result dictionary does not follow the ``result.json`` layout."""


def _point(value: Any, what: str) -> Point:
    try:
        x, y, z = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ReportFormatError(
            f"{what} must be three numbers (LPS mm), got {value!r}", value
        ) from exc
    return (x, y, z)


def _choice(value: Any, allowed: tuple[Any, ...], what: str) -> Any:
    if value not in allowed:
        raise ReportFormatError(f"{what} must be one of {allowed}, got {value!r}", value)
    return value


@dataclass(frozen=True, slots=True)
class ReportVertebra:
    """A labelled vertebra: ``level`` (e.g. ``"L4"``) and its VerSe ``label`` id."""

    level: str
    label: int
    centroid_mm: Point
    confidence: float

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ReportVertebra:
        return cls(
            level=str(d["level"]),
            label=int(d["label"]),
            centroid_mm=_point(d["centroid_mm"], "vertebra centroid_mm"),
            confidence=float(d["confidence"]),
        )


@dataclass(frozen=True, slots=True)
class ReportScrew:
    """One planned pedicle screw from entry to tip (LPS mm), with its sizes, angles and grades."""

    level: str
    side: str
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

    @property
    def name(self) -> str:
        """Short display name, e.g. ``"L4 left"``."""
        return f"{self.level} {self.side}"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ReportScrew:
        direction = d.get("breach_direction")
        return cls(
            level=str(d["level"]),
            side=_choice(d["side"], SIDES, "screw side"),
            entry_mm=_point(d["entry_mm"], "screw entry_mm"),
            tip_mm=_point(d["tip_mm"], "screw tip_mm"),
            length_mm=float(d["length_mm"]),
            diameter_mm=float(d["diameter_mm"]),
            channel_mm=float(d["channel_mm"]),
            pta_deg=float(d["pta_deg"]),
            psa_deg=float(d["psa_deg"]),
            gr_grade=_choice(d["gr_grade"], GR_GRADES, "GR grade"),
            breach_mm=float(d["breach_mm"]),
            breach_direction=None if direction is None else str(direction),
            babu_grade=_choice(int(d["babu_grade"]), BABU_GRADES, "Babu grade"),
        )


@dataclass(frozen=True, slots=True)
class ReportC2:
    """C2 pedicle screw feasibility for one side: the narrowest pediculoisthmic diameter (MPD).

    ``location_mm`` is the centre of the narrowest section and ``axis_mm`` the unit vector of the
    pedicle axis (LPS), pointing from entry (posterior) towards the body.
    """

    side: str
    mpd_mm: float
    mpd_kind: str
    location_mm: Point
    axis_mm: Point
    risk: str
    probability_feasible: float
    method: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ReportC2:
        return cls(
            side=_choice(d["side"], SIDES, "C2 side"),
            mpd_mm=float(d["mpd_mm"]),
            mpd_kind=_choice(d["mpd_kind"], MPD_KINDS, "MPD kind"),
            location_mm=_point(d["location_mm"], "C2 location_mm"),
            axis_mm=_point(d["axis_mm"], "C2 axis_mm"),
            risk=_choice(d["risk"], RISKS, "C2 risk"),
            probability_feasible=float(d["probability_feasible"]),
            method=str(d["method"]),
        )


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    """What the SEG, SR and SC writers need from ``result.json``.

    ``version`` is the pipeline version: with the engine and the source series UID it seeds every
    output UID (:attr:`uid_seed`), so writing the same result twice yields the same objects, while
    another version or engine (different content) yields new ones.
    """

    engine: str
    version: str
    vertebrae: tuple[ReportVertebra, ...] = ()
    screws: tuple[ReportScrew, ...] = ()
    c2: tuple[ReportC2, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def uid_seed(self) -> str:
        """What, besides the source series UID, makes the output UIDs: version and engine."""
        return f"{self.version}/{self.engine}"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AnalysisReport:
        """Parse the ``result.json`` dictionary (``AnalysisResult.to_json()``).

        Raises
        ------
        ReportFormatError
            When the frame is not LPS or a field is missing or malformed.
        """
        if d.get("frame") != REPORT_FRAME:
            raise ReportFormatError(
                f"result frame must be {REPORT_FRAME!r}, got {d.get('frame')!r}", d.get("frame")
            )
        try:
            return cls(
                engine=str(d["engine"]),
                version=str(d["version"]),
                vertebrae=tuple(ReportVertebra.from_json(v) for v in d.get("vertebrae", ())),
                screws=tuple(ReportScrew.from_json(s) for s in d.get("screws", ())),
                c2=tuple(ReportC2.from_json(c) for c in d.get("c2", ())),
                warnings=tuple(str(w) for w in d.get("warnings", ())),
            )
        except KeyError as exc:
            raise ReportFormatError(
                f"result.json lacks the field {exc.args[0]!r}", exc.args[0]
            ) from exc
