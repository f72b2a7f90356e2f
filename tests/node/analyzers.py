"""Analyzers for the node tests, named in settings as ``tests.node.analyzers:NAME``.

``mip`` is a small real analysis: it loads the received series with
:func:`dicom_io.series.load_series` (HU volume in LPS mm), takes the maximum intensity projection
along the slices and writes it as a Secondary Capture in the same study, with a UID derived from
the series UID (a re-run gives the same object). ``slow`` does the same after a long pause, so a
test can kill or stop the worker mid-job; it leaves a ``started`` marker in its work folder first
(holding the pid of the process that runs the analysis). ``noop`` returns at once with no output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_ROOT_UID, ExplicitVRLittleEndian, generate_uid

from dicom_io.series import load_series
from node.worker import AnalysisOutcome

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)


def _secondary_capture(first: Dataset, image: np.ndarray) -> Dataset:
    series_uid = str(first.SeriesInstanceUID)
    ds = Dataset()
    for keyword in COPIED:
        if keyword in first:
            setattr(ds, keyword, first.data_element(keyword).value)  # type: ignore[union-attr]
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid(PYDICOM_ROOT_UID, [series_uid, "mip", "sop"])
    ds.SeriesInstanceUID = generate_uid(PYDICOM_ROOT_UID, [series_uid, "mip", "series"])
    ds.Modality = "OT"
    ds.SeriesNumber = 901
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.SeriesDescription = "node test MIP"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(image.astype(np.uint16)).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def mip(paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
    started = time.perf_counter()
    volume = load_series(list(paths))
    loaded = time.perf_counter()
    projection = np.clip(volume.hu.max(axis=0) + 1024.0, 0, 65535)
    ds = _secondary_capture(volume.header, projection)
    out = workdir / "mip.dcm"
    ds.save_as(out, enforce_file_format=True)
    stages = {"load": loaded - started, "write": time.perf_counter() - loaded}
    return AnalysisOutcome(outputs=[out], stage_seconds=stages)


def slow(paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
    (workdir / "started").write_text(f"{os.getpid()}\n", encoding="ascii")
    time.sleep(120)
    return mip(paths, workdir)


def slow_once(paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
    """:func:`slow` on a job's first attempt, :func:`mip` on the next ones."""
    first_try = workdir.parent / f"{workdir.name}.attempted"
    if not first_try.exists():
        first_try.write_text("first attempt\n", encoding="ascii")
        return slow(paths, workdir)
    return mip(paths, workdir)


def noop(paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
    return AnalysisOutcome()


def imports_then_noop(paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
    """:func:`noop` after importing the default analysis (what a fresh process would pay)."""
    import node.default_analyzer  # noqa: F401

    return AnalysisOutcome()
