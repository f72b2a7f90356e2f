"""DICOM <-> arrays: series assembly and checks, HU volume + affine, SEG/SR/SC writers."""

from dicom_io.ct_writer import CTSeriesSpec, write_ct_series
from dicom_io.policy import LoadPolicy, TiltPolicy
from dicom_io.series import SeriesFiles, find_series, load_series
from dicom_io.volume import CTVolume, SourceInstance

__all__ = [
    "CTSeriesSpec",
    "CTVolume",
    "LoadPolicy",
    "SeriesFiles",
    "SourceInstance",
    "TiltPolicy",
    "find_series",
    "load_series",
    "write_ct_series",
]
