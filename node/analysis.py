"""Load an analysis input (DICOM folder or NIfTI file), run the pipeline, write the outputs.

Wires :mod:`dicom_io` (DICOM loading) and :mod:`inference` (NIfTI, analysis) together; the
outputs are ``result.json`` (the stable contract, LPS mm) and ``labels.nii.gz`` (VerSe ids).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dicom_io.errors import DicomIOError
from dicom_io.series import load_series
from inference.errors import InferenceError
from inference.nifti import read_nifti, write_nifti
from inference.pipeline import AnalysisOutput, analyze_volume
from inference.settings import PlanningSettings

logger = logging.getLogger(__name__)


class AnalysisInputError(Exception):
    """The input cannot be read as a CT volume (message says why)."""


@dataclass(frozen=True, slots=True)
class LoadedInput:
    hu: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    warnings: tuple[str, ...]


def load_input(path: Path) -> LoadedInput:
    """A DICOM series folder (or file) or a NIfTI file as HU + affine (index → LPS mm)."""
    if not path.exists():
        raise AnalysisInputError(f"{path} does not exist")
    name = path.name.lower()
    try:
        if path.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz")):
            array, affine = read_nifti(path)
            return LoadedInput(np.asarray(array, dtype=np.float32), affine, ())
        volume = load_series(path)
    except (DicomIOError, InferenceError) as exc:
        raise AnalysisInputError(f"cannot read {path}: {exc}") from exc
    return LoadedInput(volume.hu, volume.affine, tuple(volume.warnings))


def write_outputs(out: AnalysisOutput, affine: npt.NDArray[np.float64], folder: Path) -> None:
    """``folder/result.json`` and ``folder/labels.nii.gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(out.result.to_json(), indent=2) + "\n")
    write_nifti(folder / "labels.nii.gz", out.labels, affine)


def analyze_path(
    path: Path, folder: Path, settings: PlanningSettings | None = None
) -> AnalysisOutput:
    """Load, analyse and write; raises AnalysisInputError or InferenceError (NotApplicableError)."""
    loaded = load_input(path)
    out = analyze_volume(loaded.hu, loaded.affine, settings)
    if loaded.warnings:
        result = out.result
        merged = type(result)(
            engine=result.engine,
            version=result.version,
            vertebrae=result.vertebrae,
            screws=result.screws,
            c2=result.c2,
            warnings=loaded.warnings + result.warnings,
            timings_s=result.timings_s,
        )
        out = AnalysisOutput(merged, out.labels)
    write_outputs(out, loaded.affine, folder)
    return out
