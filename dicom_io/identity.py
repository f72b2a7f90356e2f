"""The identity of a series: SOP, Study, Series and Frame of Reference UIDs, checked or repaired.

Outputs (SEG, SR, SC) must reference their source by UID and land in the same study, so a series
whose UIDs are empty or malformed is refused — unless :attr:`LoadPolicy.repair_uids` asks for an
explicit, deterministic repair (stated in the volume's warnings).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.uid import PYDICOM_ROOT_UID, UID, generate_uid

from dicom_io.errors import MalformedDatasetError, NotApplicableError
from dicom_io.frames import Instance

logger = logging.getLogger(__name__)

REPAIR_ROOT = PYDICOM_ROOT_UID


@dataclass(frozen=True, slots=True)
class SeriesIdentity:
    """The checked UIDs of a series, and what was repaired."""

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    warnings: tuple[str, ...]


def is_valid_uid(value: object) -> bool:
    """True for a non-empty DICOM UID: ≤ 64 characters, digits and dots, no leading zeros."""
    return isinstance(value, str) and value != "" and UID(value).is_valid


def _text(inst: Instance, keyword: str) -> str:
    return str(inst.header.get(keyword, "") or "").strip()


def _meta(inst: Instance, keyword: str) -> str:
    meta = getattr(inst.header, "file_meta", None)
    return "" if meta is None else str(meta.get(keyword, "") or "").strip()


def _repair_sop(instances: Sequence[Instance], repair: bool) -> list[str]:
    """Check (and if asked, fill from the file meta header) SOP Class and Instance UIDs."""
    notes: list[str] = []
    for keyword, meta_keyword in (
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ("SOPClassUID", "MediaStorageSOPClassUID"),
    ):
        bad = [inst for inst in instances if not is_valid_uid(_text(inst, keyword))]
        if not bad:
            continue
        example = _text(bad[0], keyword)
        if not repair:
            raise MalformedDatasetError(
                f"{keyword} is empty or malformed ({example!r}) in {len(bad)} of "
                f"{len(instances)} instances (e.g. {bad[0].label}); fix the sending system, or "
                "load with LoadPolicy(repair_uids=True)",
                example,
            )
        for inst in bad:
            from_meta = _meta(inst, meta_keyword)
            if not is_valid_uid(from_meta):
                raise MalformedDatasetError(
                    f"{inst.label}: {keyword} is empty or malformed and the file meta header has "
                    "no usable copy; the instance cannot be identified",
                    from_meta,
                )
            setattr(inst.header, keyword, from_meta)
        notes.append(f"{keyword} repaired from the file meta header in {len(bad)} instances")
    return notes


def _series_level(
    instances: Sequence[Instance], keyword: str, derived_from: list[str], repair: bool
) -> tuple[str, str | None]:
    """The one value of a series-level UID; derived deterministically when asked to repair."""
    values = {_text(inst, keyword) for inst in instances}
    valid = {v for v in values if is_valid_uid(v)}
    if len(valid) > 1:
        raise NotApplicableError(
            f"the instances carry {len(valid)} different {keyword}s; one series has one "
            "(were two series or two scans mixed?)",
            sorted(valid),
        )
    if valid and len(values) == 1:
        return valid.pop(), None
    example = sorted(values - valid)[0] if values - valid else ""
    if not repair:
        raise MalformedDatasetError(
            f"{keyword} is empty or malformed ({example!r}); the node cannot reference this "
            "series. Fix the sending system, or load with LoadPolicy(repair_uids=True)",
            example,
        )
    value = str(generate_uid(REPAIR_ROOT, [keyword, *derived_from]))
    for inst in instances:
        setattr(inst.header, keyword, value)
    return value, f"{keyword} was empty or malformed ({example!r}); replaced by derived {value}"


def check_identity(instances: Sequence[Instance], repair: bool) -> SeriesIdentity:
    """Check the UIDs of one series' instances; repair them in their headers if ``repair``.

    Raises
    ------
    MalformedDatasetError
        An empty or malformed UID and ``repair`` is False (or nothing to repair it from).
    NotApplicableError
        The instances belong to more than one series or study.
    """
    notes = _repair_sop(instances, repair)
    sop_uids = sorted(_text(inst, "SOPInstanceUID") for inst in instances)
    series, note = _series_level(instances, "SeriesInstanceUID", sop_uids, repair)
    notes += [note] if note else []
    study, note = _series_level(instances, "StudyInstanceUID", sop_uids, repair)
    notes += [note] if note else []
    frame_of_reference, note = _series_level(instances, "FrameOfReferenceUID", [series], repair)
    notes += [note] if note else []
    for text in notes:
        logger.info("series %s: %s", series, text)
    return SeriesIdentity(study, series, frame_of_reference, tuple(notes))
