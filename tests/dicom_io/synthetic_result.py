"""A small synthetic CT, label maps and analysis result for the SEG/SR/SC writer tests.

The CT is 48 axial slices of 64 × 64 voxels (0.8 mm in-plane, 1 mm slices) in LPS: rows run
anterior → posterior (+y), columns patient right → left (+x), slices inferior → superior (+z).
L4 and L5 are bone blocks, C2 sits above them with two pediculoisthmic parts; L4 carries two screws.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from dicom_io.report import AnalysisReport
from dicom_io.volume import CTVolume, SourceInstance

SHAPE = (48, 64, 64)
STUDY_UID = "1.2.826.0.1.3680043.8.498.7001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.7001.1"
FOR_UID = "1.2.826.0.1.3680043.8.498.7001.2"


def affine() -> npt.NDArray[np.float64]:
    a = np.zeros((4, 4))
    a[:3, 0] = (0.0, 0.0, 1.0)  # slice step: superior
    a[:3, 1] = (0.0, 0.8, 0.0)  # row step: posterior
    a[:3, 2] = (0.8, 0.0, 0.0)  # column step: patient left
    a[:3, 3] = (-25.0, -25.0, -20.0)
    a[3, 3] = 1.0
    return a


def to_mm(index: tuple[float, float, float]) -> list[float]:
    """LPS mm of a (slice, row, column) index."""
    return [float(v) for v in (affine() @ np.array([*index, 1.0]))[:3]]


def header() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = "Writer^Test"
    ds.PatientID = "SN-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = STUDY_UID
    ds.StudyDate = "20240102"
    ds.StudyTime = "101010"
    ds.SeriesDate = "20240102"
    ds.SeriesTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "Phantom"
    ds.SeriesInstanceUID = SERIES_UID
    ds.SeriesNumber = 3
    ds.FrameOfReferenceUID = FOR_UID
    ds.BodyPartExamined = "SPINE"
    return ds


def volume() -> CTVolume:
    labels, _ = label_maps()
    hu = np.full(SHAPE, 40.0, dtype=np.float32)
    hu[labels > 0] = 400.0
    sources = tuple(
        SourceInstance(CTImageStorage, f"1.2.826.0.1.3680043.8.498.7001.3.{i + 1}")
        for i in range(SHAPE[0])
    )
    return CTVolume(hu, affine(), STUDY_UID, SERIES_UID, FOR_UID, sources, header())


def label_maps() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """(VerSe labels, parts: 5 = C2 isthmus left, 6 = right, 1 = a pedicle)."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[4:19, 10:50, 16:48] = 23  # L4
    labels[22:37, 10:50, 16:48] = 24  # L5
    labels[40:47, 14:46, 20:44] = 2  # C2
    parts = np.zeros(SHAPE, dtype=np.uint8)
    parts[41:45, 30:38, 36:41] = 5  # left is +x: high columns
    parts[41:45, 30:38, 23:28] = 6
    parts[10:14, 40:46, 38:44] = 1  # an L4 pedicle: not a C2 part, not in the SEG
    return labels, parts


@dataclass(frozen=True)
class ScrewIndex:
    level: str
    side: str
    entry: tuple[float, float, float]
    tip: tuple[float, float, float]


SCREWS = (
    ScrewIndex("L4", "left", (11.0, 46.0, 40.0), (11.0, 16.0, 34.0)),
    ScrewIndex("L4", "right", (11.0, 46.0, 24.0), (11.0, 16.0, 30.0)),
)


def result_json() -> dict[str, Any]:
    screws = []
    for k, s in enumerate(SCREWS):
        e, t = np.array(to_mm(s.entry)), np.array(to_mm(s.tip))
        screws.append(
            {
                "level": s.level,
                "side": s.side,
                "entry_mm": [round(v, 2) for v in e],
                "tip_mm": [round(v, 2) for v in t],
                "length_mm": 25.0,
                "diameter_mm": 5.5 - k,
                "channel_mm": round(float(np.linalg.norm(t - e)), 2),
                "pta_deg": 11.31 + k,
                "psa_deg": -1.5 + k,
                "gr_grade": "AB"[k],
                "breach_mm": 0.0 if k == 0 else 1.25,
                "breach_direction": None if k == 0 else "medial",
                "babu_grade": k,
            }
        )
    c2 = [
        {
            "side": side,
            "mpd_mm": mpd,
            "mpd_kind": "outer",
            "location_mm": to_mm((43.0, 34.0, col)),
            "axis_mm": [0.0, -1.0, 0.0],
            "risk": risk,
            "probability_feasible": prob,
            "method": "logistic",
        }
        for side, col, mpd, risk, prob in (
            ("left", 38.0, 5.82, "low", 0.91),
            ("right", 25.0, 4.1, "high", 0.22),
        )
    ]
    vertebrae = [
        {"level": lv, "label": lb, "centroid_mm": to_mm(c), "confidence": 0.9}
        for lv, lb, c in (("L4", 23, (11, 30, 32)), ("L5", 24, (29, 30, 32)))
    ]
    return {
        "frame": "LPS",
        "engine": "geometric",
        "version": "0.1.0",
        "vertebrae": vertebrae,
        "screws": screws,
        "c2": c2,
        "warnings": [],
        "timings_s": {},
    }


def report() -> AnalysisReport:
    return AnalysisReport.from_json(result_json())


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines dciodvfy prints for ``path``; skips the test when dciodvfy is absent."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]
