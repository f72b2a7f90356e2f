"""Write a HU volume as a CT series: single-frame CT Image Storage or one Enhanced CT multi-frame.

Used by the phantom generator, the tests and the benchmarks to produce realistic input series. The
volume convention is that of :mod:`dicom_io.volume`: ``hu[slice, row, column]`` and a 4×4
``affine`` mapping ``(slice, row, column, 1)`` to DICOM patient coordinates (LPS, millimetres). The
row and column steps of the affine must be orthogonal (they become ImageOrientationPatient); the
slice step may be oblique to the image plane, which gives a gantry-tilted series.

Outputs are reproducible: SOPInstanceUIDs are derived from the series UID and the slice index, dates
and times come from the spec, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from dicom_io.ct_writer_enhanced import enhanced_dataset
from dicom_io.geometry import PlaneGeometry, ds_values, plane_geometry

logger = logging.getLogger(__name__)

ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
UNCOMPRESSED_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
COMPRESSED_SYNTAXES = (RLELossless, JPEG2000Lossless, JPEGLSLossless)


@dataclass(frozen=True, slots=True)
class CTSeriesSpec:
    """Patient, study and series attributes of a CT series to write.

    ``uid_prefix`` is the root under which SOPInstanceUIDs are derived (deterministically, from
    the series UID and the slice index); it must end with a dot and leave room for the hash
    (≤ 32 characters).
    """

    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    series_number: int
    series_description: str
    body_part_examined: str
    institution_name: str = "spinenode phantom"
    manufacturer: str = "spinenode"
    kvp: float = 120.0
    slice_thickness_mm: float | None = None
    uid_prefix: str = PYDICOM_ROOT_UID


def sop_instance_uid(spec: CTSeriesSpec, index: int) -> str:
    """The SOPInstanceUID of slice ``index`` (0-based) of the series ``spec`` describes."""
    return str(generate_uid(spec.uid_prefix, [spec.series_instance_uid, "ct", str(index)]))


def stored_values(
    hu: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    slope: float,
    intercept: float,
    pixel_representation: int,
) -> npt.NDArray[np.uint16] | npt.NDArray[np.int16]:
    """HU → stored 16-bit values (``round((hu - intercept) / slope)``); out of range is an error."""
    if pixel_representation not in (0, 1):
        raise ValueError(f"pixel_representation must be 0 or 1, got {pixel_representation}")
    if slope == 0:
        raise ValueError("rescale slope must not be zero")
    dtype = np.dtype(np.uint16) if pixel_representation == 0 else np.dtype(np.int16)
    info = np.iinfo(dtype)
    values = np.rint((np.asarray(hu, dtype=np.float64) - intercept) / slope)
    lo, hi = float(values.min()), float(values.max())
    if lo < info.min or hi > info.max:
        raise ValueError(
            f"HU range maps to stored values {lo:.0f}…{hi:.0f}, outside {dtype} "
            f"({info.min}…{info.max}); change rescale_intercept/slope or pixel_representation"
        )
    if pixel_representation == 0:
        return values.astype(np.uint16)
    return values.astype(np.int16)


def _common_dataset(spec: CTSeriesSpec, geom: PlaneGeometry, sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = spec.patient_birth_date
    ds.PatientSex = spec.patient_sex
    ds.StudyInstanceUID = spec.study_instance_uid
    ds.StudyDate = spec.study_date
    ds.StudyTime = spec.study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = spec.study_id
    ds.AccessionNumber = spec.accession_number
    ds.Modality = "CT"
    ds.SeriesInstanceUID = spec.series_instance_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.series_description
    ds.BodyPartExamined = spec.body_part_examined
    ds.PatientPosition = "HFS"
    ds.SeriesDate = spec.study_date
    ds.SeriesTime = spec.study_time
    ds.FrameOfReferenceUID = spec.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = spec.manufacturer
    ds.InstitutionName = spec.institution_name
    ds.ManufacturerModelName = "spinenode ct_writer"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "1"
    ds.ContentDate = spec.study_date
    ds.ContentTime = spec.study_time
    ds.AcquisitionDateTime = spec.study_date + spec.study_time
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    return ds


def _voi(ds: Dataset) -> None:
    ds.WindowCenter = 400
    ds.WindowWidth = 1800
    ds.WindowCenterWidthExplanation = "BONE"


def _single_frame(
    spec: CTSeriesSpec, geom: PlaneGeometry, index: int, rescale: tuple[float, float]
) -> Dataset:
    ds = _common_dataset(spec, geom, CTImageStorage)
    ds.SOPInstanceUID = sop_instance_uid(spec, index)
    ds.InstanceNumber = index + 1
    ds.AcquisitionNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.KVP = spec.kvp
    ds.SliceThickness = _thickness(spec, geom)
    ds.PixelSpacing = ds_values(geom.pixel_spacing)
    ds.ImageOrientationPatient = ds_values(geom.orientation)
    ds.ImagePositionPatient = ds_values(geom.positions[index])
    ds.SliceLocation = ds_values(geom.slice_locations[index])[0]
    ds.RescaleIntercept = rescale[1]
    ds.RescaleSlope = rescale[0]
    ds.RescaleType = "HU"
    ds.ConvolutionKernel = "STANDARD"
    _voi(ds)
    return ds


def _thickness(spec: CTSeriesSpec, geom: PlaneGeometry) -> DSfloat:
    value = spec.slice_thickness_mm if spec.slice_thickness_mm is not None else geom.slice_spacing
    return ds_values(value)[0]


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    return meta


def _attach_pixels(ds: Dataset, pixels: npt.NDArray[np.integer], transfer_syntax: str) -> None:
    """Set Rows/Columns/PixelRepresentation and PixelData, encoded in ``transfer_syntax``."""
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    if transfer_syntax in UNCOMPRESSED_SYNTAXES:
        ds.PixelData = np.ascontiguousarray(pixels).astype("<" + pixels.dtype.str[1:]).tobytes()
        ds["PixelData"].VR = "OW"
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        return
    ds.compress(transfer_syntax, np.ascontiguousarray(pixels), generate_instance_uid=False)


def write_ct_series(
    hu: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    affine: npt.NDArray[np.float64],
    out_dir: Path,
    spec: CTSeriesSpec,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    enhanced: bool = False,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    pixel_representation: int = 0,
) -> list[Path]:
    """Write ``hu`` as a CT series into ``out_dir`` and return the written files in slice order.

    Parameters
    ----------
    hu:
        Hounsfield units indexed ``[slice, row, column]``.
    affine:
        4×4 index → LPS mm (see :mod:`dicom_io.volume`). The slice step may be oblique to the image
        plane (gantry tilt); the row and column steps must be orthogonal.
    out_dir:
        Created if missing. Files are named ``CT{index:04d}.dcm`` (``ECT.dcm`` when ``enhanced``).
    spec:
        Patient, study and series attributes.
    transfer_syntax:
        Explicit/Implicit VR Little Endian, RLE Lossless, JPEG 2000 Lossless or JPEG-LS Lossless.
    enhanced:
        Write one Enhanced CT Image Storage multi-frame instead of one file per slice.
    rescale_slope, rescale_intercept, pixel_representation:
        Stored value = ``round((hu - intercept) / slope)`` as uint16 (0) or int16 (1).

    Raises
    ------
    ValueError
        Bad arguments: not 3-D, HU out of the stored range, non-orthogonal in-plane axes, an
        unsupported transfer syntax.
    """
    volume = np.asarray(hu)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(
            f"hu must be a non-empty 3-D array [slice, row, column], got {volume.shape}"
        )
    if transfer_syntax not in UNCOMPRESSED_SYNTAXES + COMPRESSED_SYNTAXES:
        raise ValueError(f"transfer syntax {transfer_syntax} cannot be written by ct_writer")
    geom = plane_geometry(affine, volume.shape[0])
    convert = (rescale_slope, rescale_intercept, pixel_representation)
    stored_values(np.array([volume.min(), volume.max()]), *convert)  # range check, whole volume
    rescale = (float(rescale_slope), float(rescale_intercept))
    out_dir.mkdir(parents=True, exist_ok=True)
    if enhanced:
        ds = _common_dataset(spec, geom, ENHANCED_CT_IMAGE_STORAGE)
        ds.SOPInstanceUID = sop_instance_uid(spec, 0)
        enhanced_dataset(ds, spec, geom, rescale, _thickness(spec, geom))
        pixels = np.stack([stored_values(plane, *convert) for plane in volume])
        _attach_pixels(ds, pixels, transfer_syntax)
        path = out_dir / "ECT.dcm"
        ds.save_as(path, enforce_file_format=True)
        return [path]
    paths: list[Path] = []
    for index in range(volume.shape[0]):
        ds = _single_frame(spec, geom, index, rescale)
        _attach_pixels(ds, stored_values(volume[index], *convert), transfer_syntax)
        path = out_dir / f"CT{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.debug("wrote %d CT slices of series %s", len(paths), spec.series_instance_uid)
    return paths
