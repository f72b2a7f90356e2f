"""Read the measurement groups of a TID 1500 report back into plain values.

Works on any TID 1500 SR (ours or another toolkit's, e.g. dcmqi's); used by the read-back tests and
by anyone who wants the numbers without walking the content tree. Coordinates are in the SR's frame
of reference (LPS mm).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from dicom_io.errors import DicomIOError

CodeKey = tuple[str, str]  # (CodingSchemeDesignator, CodeValue)

_MEASUREMENT_GROUP = ("DCM", "125007")
_SITE = ("SCT", "363698007")
_TRACKING_ID = ("DCM", "112039")
_TRACKING_UID = ("DCM", "112040")
_FINDING = ("DCM", "121071")
# SNOMED CT codes, and the retired SNOMED-RT forms that older writers (e.g. dcmqi) still use.
_FINDING_SITE = {("SCT", "363698007"), ("SRT", "G-C0E3")}
_LATERALITY = {("SCT", "272741003"), ("SRT", "G-C171")}
_METHOD = {("SCT", "370129005"), ("SRT", "G-C036")}


class NotAMeasurementReportError(DicomIOError):
    """The dataset is not a structured report with TID 1500 measurement groups."""


@dataclass(frozen=True, slots=True)
class ReadMeasurement:
    """A NUM item: value, UCUM unit code, optional method code and inferred-from coordinates."""

    value: float
    unit: str
    method: CodeKey | None
    coordinates: dict[CodeKey, tuple[str, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReadGroup:
    """One TID 1501 measurement group as read back."""

    tracking_id: str
    tracking_uid: str
    finding: CodeKey | None
    finding_site: CodeKey | None
    laterality: CodeKey | None
    measurements: dict[CodeKey, ReadMeasurement]
    evaluations: dict[CodeKey, CodeKey]


def _key(item: Dataset, attribute: str = "ConceptNameCodeSequence") -> CodeKey:
    code = item[attribute][0]
    return (str(code.CodingSchemeDesignator), str(code.CodeValue))


def _children(item: Dataset) -> Iterator[Dataset]:
    yield from item.get("ContentSequence", [])


def _measurement(item: Dataset) -> ReadMeasurement:
    measured = item.MeasuredValueSequence[0]
    method: CodeKey | None = None
    coordinates: dict[CodeKey, tuple[str, np.ndarray]] = {}
    for child in _children(item):
        if child.ValueType == "CODE" and _key(child) in _METHOD:
            method = _key(child, "ConceptCodeSequence")
        elif child.ValueType == "SCOORD3D":
            points = np.asarray(child.GraphicData, dtype=np.float64).reshape(-1, 3)
            coordinates[_key(child)] = (str(child.GraphicType), points)
    return ReadMeasurement(
        value=float(measured.NumericValue),
        unit=str(measured.MeasurementUnitsCodeSequence[0].CodeValue),
        method=method,
        coordinates=coordinates,
    )


def _group(container: Dataset) -> ReadGroup:
    texts: dict[CodeKey, str] = {}
    codes: dict[CodeKey, CodeKey] = {}
    measurements: dict[CodeKey, ReadMeasurement] = {}
    laterality: CodeKey | None = None
    for item in _children(container):
        key = _key(item)
        if item.ValueType in ("TEXT", "UIDREF"):
            texts[key] = str(item.TextValue if item.ValueType == "TEXT" else item.UID)
        elif item.ValueType == "NUM" and "MeasuredValueSequence" in item:
            measurements[key] = _measurement(item)
        elif item.ValueType == "CODE":
            if key in _FINDING_SITE:
                key = _SITE
                for child in _children(item):
                    if child.ValueType == "CODE" and _key(child) in _LATERALITY:
                        laterality = _key(child, "ConceptCodeSequence")
            codes[key] = _key(item, "ConceptCodeSequence")
    finding = codes.pop(_FINDING, None)
    site = codes.pop(_SITE, None)
    return ReadGroup(
        tracking_id=texts.get(_TRACKING_ID, ""),
        tracking_uid=texts.get(_TRACKING_UID, ""),
        finding=finding,
        finding_site=site,
        laterality=laterality,
        measurements=measurements,
        evaluations=codes,
    )


def _containers(item: Dataset) -> Iterator[Dataset]:
    for child in _children(item):
        if child.ValueType == "CONTAINER":
            if _key(child) == _MEASUREMENT_GROUP:
                yield child
            else:
                yield from _containers(child)


def measurement_groups(sr: Dataset) -> list[ReadGroup]:
    """All measurement groups of ``sr``, in document order.

    Raises
    ------
    NotAMeasurementReportError
        When ``sr`` is not an SR document with a ``Imaging Measurement Report`` root.
    """
    if sr.get("Modality") != "SR" or "ContentSequence" not in sr:
        raise NotAMeasurementReportError("not an SR document with content", sr.get("Modality"))
    if _key(sr) != ("DCM", "126000"):
        raise NotAMeasurementReportError(
            "the SR is not a TID 1500 Imaging Measurement Report", _key(sr)
        )
    return [_group(c) for c in _containers(sr)]
