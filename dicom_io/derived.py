"""What every derived object (SEG, SR, SC) shares: its identity, its time stamp, its sources.

The writers work from the :class:`~dicom_io.volume.CTVolume` alone: :func:`source_datasets`
rebuilds, for each slice of the volume, a pixel-less dataset that carries the patient, study and
frame of reference of the series and the geometry of that slice on the volume grid (LPS mm), under
the SOP instance UID of the source image. highdicom needs such datasets to reference the sources
and to lay out the SEG frames; re-reading the spool files is not needed.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, DT, TM

from dicom_io.errors import DicomIOError
from dicom_io.volume import CTVolume

DISCLAIMER = "Planning aid - verify before surgery"

# Attributes whose value is the time the object was made; fixed so that outputs are reproducible.
_DATE_TIME_PAIRS = (
    ("InstanceCreationDate", "InstanceCreationTime"),
    ("ContentDate", "ContentTime"),
    ("SeriesDate", "SeriesTime"),
    ("DateOfSecondaryCapture", "TimeOfSecondaryCapture"),
)
_DATETIMES = ("ContributionDateTime", "VerificationDateTime", "ObservationDateTime")

# Per-slice attributes rebuilt from the volume grid; they are removed from the copied header.
_SLICE_ATTRIBUTES = (
    "PixelData",
    "SOPClassUID",
    "SOPInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceLocation",
    "InstanceNumber",
    "NumberOfFrames",
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
)


class SourceGeometryError(DicomIOError):
    """The volume cannot be described as a stack of source slices."""


@dataclass(frozen=True, slots=True)
class DerivedSeries:
    """Identity of one output series and its time stamp."""

    series_instance_uid: str
    series_number: int
    series_description: str
    created: datetime.datetime


def creation_time(volume: CTVolume, override: datetime.datetime | None) -> datetime.datetime:
    """The date and time written into every output object.

    ``override`` when given; otherwise the source series' date and time (then the study's), so that
    the same input always yields the same bytes. Falls back to 2000-01-01 00:00 when the source
    carries no date.
    """
    if override is not None:
        return override.replace(microsecond=0)
    header = volume.header
    for date_kw, time_kw in (("SeriesDate", "SeriesTime"), ("StudyDate", "StudyTime")):
        date_value = str(header.get(date_kw, "") or "")
        if len(date_value) == 8 and date_value.isdigit():
            time_value = str(header.get(time_kw, "") or "").split(".")[0].ljust(6, "0")
            if not (len(time_value) == 6 and time_value.isdigit()):
                time_value = "000000"
            try:
                return datetime.datetime.strptime(date_value + time_value, "%Y%m%d%H%M%S")
            except ValueError:
                continue
    return datetime.datetime(2000, 1, 1)


def _walk(ds: Dataset) -> Iterator[Dataset]:
    yield ds
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item)


def stamp(ds: Dataset, when: datetime.datetime) -> None:
    """Replace every creation/content time stamp in ``ds`` (recursively) with ``when``."""
    for item in _walk(ds):
        for date_kw, time_kw in _DATE_TIME_PAIRS:
            if date_kw in item:
                item[date_kw].value = DA(when.date())
            if time_kw in item:
                item[time_kw].value = TM(when.time())
        for kw in _DATETIMES:
            if kw in item:
                item[kw].value = DT(when)


def finish(ds: Dataset, when: datetime.datetime) -> None:
    """Give ``ds`` its series date and time and pin every time stamp to ``when``."""
    ds.SeriesDate = DA(when.date())
    ds.SeriesTime = TM(when.time())
    stamp(ds, when)


def slice_geometry(volume: CTVolume) -> tuple[list[float], list[float], np.ndarray]:
    """ImageOrientationPatient, PixelSpacing and one ImagePositionPatient per slice (LPS mm)."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    col_step = affine[:3, 1]  # down the image: between rows
    row_step = affine[:3, 2]  # across the image: between columns
    row_spacing = float(np.linalg.norm(col_step))
    col_spacing = float(np.linalg.norm(row_step))
    if row_spacing <= 0 or col_spacing <= 0:
        raise SourceGeometryError("the volume affine has a zero in-plane step", volume.affine)
    orientation = [float(v) for v in (*(row_step / col_spacing), *(col_step / row_spacing))]
    n_slices = volume.shape[0]
    index = np.zeros((n_slices, 4))
    index[:, 0] = np.arange(n_slices)
    index[:, 3] = 1.0
    positions = (affine @ index.T).T[:, :3]
    return orientation, [row_spacing, col_spacing], positions


def source_datasets(volume: CTVolume) -> list[Dataset]:
    """One pixel-less dataset per slice of ``volume``, as the writers' source images.

    Raises
    ------
    SourceGeometryError
        When the number of source references differs from the number of slices, or the sources are
        frames of one multi-frame image (not supported by the writers yet).
    """
    if len(volume.sources) != volume.shape[0]:
        raise SourceGeometryError(
            f"the volume has {volume.shape[0]} slices but {len(volume.sources)} source references",
            len(volume.sources),
        )
    if any(src.frame_number is not None for src in volume.sources):
        raise SourceGeometryError(
            "outputs for multi-frame (enhanced) CT sources are not supported yet; "
            "convert the series to single-frame CT images",
            volume.sources[0].sop_instance_uid,
        )
    orientation, spacing, positions = slice_geometry(volume)
    template = copy.deepcopy(volume.header)
    for kw in _SLICE_ATTRIBUTES:
        if kw in template:
            del template[kw]
    template.StudyInstanceUID = volume.study_instance_uid
    template.SeriesInstanceUID = volume.series_instance_uid
    template.FrameOfReferenceUID = volume.frame_of_reference_uid
    template.Modality = template.get("Modality") or "CT"
    template.Rows, template.Columns = volume.shape[1], volume.shape[2]
    template.ImageOrientationPatient = orientation
    template.PixelSpacing = spacing
    template.SliceThickness = volume.spacing[0]
    template.SamplesPerPixel = 1
    template.PhotometricInterpretation = "MONOCHROME2"
    template.BitsAllocated = 16
    template.BitsStored = 16
    template.HighBit = 15
    template.PixelRepresentation = 1
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber"):
        if kw not in template:
            setattr(template, kw, None)
    for kw in ("StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName"):
        if kw not in template:
            setattr(template, kw, None)
    out = []
    for i, src in enumerate(volume.sources):
        ds = Dataset()
        ds.update(template)  # new elements below; the template's elements are never modified
        ds.SOPClassUID = src.sop_class_uid
        ds.SOPInstanceUID = src.sop_instance_uid
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [float(v) for v in positions[i]]
        out.append(ds)
    return out


def replace_uids(ds: Dataset, keyword: str, new_uid: str) -> None:
    """Set every ``keyword`` element in ``ds`` (recursively) to ``new_uid``.

    highdicom makes some UIDs up at random (e.g. DimensionOrganizationUID); this pins them.
    """
    for item in _walk(ds):
        if keyword in item:
            item[keyword].value = new_uid
