"""Secondary capture objects: single-frame RGB (highdicom) and multi-frame true colour (pydicom).

Every image has its text burnt in (``BurnedInAnnotation = YES``), including the line
"Planning aid - verify before surgery". Patient and study attributes come from the source CT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MultiFrameTrueColorSecondaryCaptureImageStorage
from pydicom.valuerep import DSfloat

from dicom_io.derived import DISCLAIMER, DerivedSeries, finish
from dicom_io.sc.render import Plane
from dicom_io.seg.sop import Equipment

_LETTERS = (("R", "L"), ("A", "P"), ("F", "H"))  # LPS axes: negative, positive direction
_PATIENT_STUDY = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
FRAME_TIME_MS = 500.0  # the C2 slices play as a slow loop in viewers that animate multi-frames


@dataclass(frozen=True, slots=True)
class CaptureInfo:
    """Per-object identity of one secondary capture."""

    sop_instance_uid: str
    instance_number: int
    description: str


def orientation_letter(direction: npt.ArrayLike) -> str:
    """Patient-orientation letter (L/R, P/A, H/F) of the dominant axis of ``direction`` (LPS)."""
    d = np.asarray(direction, dtype=np.float64)
    axis = int(np.argmax(np.abs(d)))
    return _LETTERS[axis][int(d[axis] > 0)]


def single_frame(
    pixels: npt.NDArray[np.uint8],
    plane: Plane,
    reference: Dataset,
    info: CaptureInfo,
    *,
    series: DerivedSeries,
    equipment: Equipment,
) -> hd.sc.SCImage:
    """An RGB Secondary Capture Image; orientation letters from the first panel's ``plane``."""
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        sop_instance_uid=info.sop_instance_uid,
        instance_number=info.instance_number,
        manufacturer=equipment.manufacturer,
        patient_orientation=(orientation_letter(plane.u), orientation_letter(plane.v)),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=series.series_description,
        content_date=series.created.date(),
        content_time=series.created.time(),
    )
    # set here: from_ref_dataset annotates pixel_spacing as integers
    sc.PixelSpacing = [DSfloat(plane.pixel_mm, auto_format=True)] * 2
    _annotate(sc, info, equipment)
    finish(sc, series.created)
    return sc


def _annotate(ds: Dataset, info: CaptureInfo, equipment: Equipment) -> None:
    ds.BurnedInAnnotation = "YES"
    ds.Laterality = None  # type 2C: the spine is not a paired structure
    ds.ImageComments = f"{info.description}. {DISCLAIMER}."
    ds.DerivationDescription = DISCLAIMER
    ds.ManufacturerModelName = equipment.model_name
    ds.SoftwareVersions = equipment.software_version


def _patient_and_study(reference: Dataset) -> Dataset:
    """A new dataset with the patient and study attributes of ``reference`` (type 2: empty)."""
    ds = Dataset()
    for kw in _PATIENT_STUDY:
        if kw in reference:
            ds[kw] = reference[kw]
    for kw in _PATIENT_STUDY[1:-1]:  # all but SpecificCharacterSet and StudyDescription
        if kw not in ds:
            setattr(ds, kw, None)
    return ds


def multi_frame(
    frames: Sequence[npt.NDArray[np.uint8]],
    plane: Plane,
    reference: Dataset,
    info: CaptureInfo,
    *,
    series: DerivedSeries,
    equipment: Equipment,
) -> Dataset:
    """A Multi-frame True Color Secondary Capture Image of equally sized RGB ``frames``.

    ``plane`` is one of the frames' planes: its pixel size becomes the Pixel Spacing.
    """
    stack = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    ds = _patient_and_study(reference)
    ds.SOPClassUID = MultiFrameTrueColorSecondaryCaptureImageStorage
    ds.SOPInstanceUID = info.sop_instance_uid
    ds.InstanceCreationDate = ds.ContentDate = series.created.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = series.created.strftime("%H%M%S")
    ds.Modality = "OT"
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.series_description
    ds.Manufacturer = equipment.manufacturer
    ds.ConversionType = "WSD"
    ds.InstanceNumber = info.instance_number
    ds.PatientOrientation = None
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.NumberOfFrames = stack.shape[0]
    ds.Rows, ds.Columns = stack.shape[1], stack.shape[2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [plane.pixel_mm, plane.pixel_mm]
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = FRAME_TIME_MS
    _annotate(ds, info, equipment)
    ds.PixelData = stack.tobytes()
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    finish(ds, series.created)
    return ds
