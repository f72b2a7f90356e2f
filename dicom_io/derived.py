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
UNKNOWN_DEIDENTIFICATION = "Not stated by the source series"

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


_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
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
    """Give ``ds`` its series date and time, pin every time stamp to ``when``, and complete the
    de-identification attributes copied from the source."""
    ds.SeriesDate = DA(when.date())
    ds.SeriesTime = TM(when.time())
    stamp(ds, when)
    if (
        ds.get("PatientIdentityRemoved") == "YES"
        and not ds.get("DeidentificationMethod")
        and not ds.get("DeidentificationMethodCodeSequence")
    ):
        # Type 1C: a source that says "identity removed" without saying how would make every
        # output fail validation; say what we know instead of leaving it empty.
        ds.DeidentificationMethod = UNKNOWN_DEIDENTIFICATION


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


def is_aligned(volume: CTVolume) -> bool:
    """True when each slice of ``volume`` is one single-frame source image, in array order."""
    return len(volume.sources) == volume.shape[0] and all(
        src.frame_number is None for src in volume.sources
    )


def source_datasets(volume: CTVolume) -> list[Dataset]:
    """Pixel-less datasets standing for the source images of ``volume``.

    When :func:`is_aligned`, one per slice with that slice's geometry on the volume grid. Otherwise
    (the loader resampled the series, or the source is one multi-frame Enhanced CT) one per distinct
    source instance, in order, all carrying the geometry of the first slice: they serve as
    references only, and the SEG then takes its frame positions from the volume affine.

    Raises
    ------
    SourceGeometryError
        When the volume has no source references.
    """
    if not volume.sources:
        raise SourceGeometryError("the volume has no source image references", volume.shape)
    orientation, spacing, positions = slice_geometry(volume)
    template = _template(volume, orientation, spacing)
    if len({s.sop_instance_uid for s in volume.sources}) == 1 and volume.sources[0].frame_number:
        return [_multiframe(volume, template, positions)]
    if is_aligned(volume):
        refs = [(s.sop_class_uid, s.sop_instance_uid) for s in volume.sources]
    else:
        refs = list(dict.fromkeys((s.sop_class_uid, s.sop_instance_uid) for s in volume.sources))
        positions = np.repeat(positions[:1], len(refs), axis=0)
    out = []
    for i, (sop_class, sop_instance) in enumerate(refs):
        ds = Dataset()
        ds.update(template)  # new elements below; the template's elements are never modified
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_instance
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [float(v) for v in positions[i]]
        out.append(ds)
    return out


def _multiframe(volume: CTVolume, template: Dataset, positions: np.ndarray) -> Dataset:
    """One multi-frame source (Enhanced CT): frame ``k`` placed where its slice lies."""
    ds = Dataset()
    ds.update(template)
    src = volume.sources[0]
    ds.SOPClassUID = src.sop_class_uid
    ds.SOPInstanceUID = src.sop_instance_uid
    ds.InstanceNumber = 1
    frames = {s.frame_number or 1: positions[min(i, len(positions) - 1)]
              for i, s in enumerate(volume.sources)}  # fmt: skip
    count = max(frames)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = template.PixelSpacing
    measures.SliceThickness = template.SliceThickness
    shared.PixelMeasuresSequence = [measures]
    plane = Dataset()
    plane.ImageOrientationPatient = template.ImageOrientationPatient
    shared.PlaneOrientationSequence = [plane]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(1, count + 1):
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [float(v) for v in frames.get(k, positions[0])]
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.NumberOfFrames = count
    del ds.ImageOrientationPatient
    del ds.PixelSpacing
    return ds


def _template(volume: CTVolume, orientation: list[float], spacing: list[float]) -> Dataset:
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
    for kw in _TYPE2_PATIENT_STUDY:
        if kw not in template:
            setattr(template, kw, None)
    return template


def replace_uids(ds: Dataset, keyword: str, new_uid: str) -> None:
    """Set every ``keyword`` element in ``ds`` (recursively) to ``new_uid``.

    highdicom makes some UIDs up at random (e.g. DimensionOrganizationUID); this pins them.
    """
    for item in _walk(ds):
        if keyword in item:
            item[keyword].value = new_uid
