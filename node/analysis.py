"""Load an analysis input, run the pipeline, write the outputs: the one path from CT to results.

Used by ``spinenode analyze`` and, through :mod:`node.default_analyzer`, by the worker. Wires
:mod:`dicom_io` (loading, SEG/SR/SC writers) and :mod:`inference` (NIfTI, analysis) together. The
outputs in the folder are ``result.json`` (the stable contract, LPS mm), ``labels.nii.gz`` (VerSe
ids) and, on request, ``dicom/`` (SEG, TID 1500 SR, secondary captures).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dicom_io.errors import DicomIOError
from dicom_io.outputs import OutputOptions, write_outputs
from dicom_io.report import AnalysisReport
from dicom_io.seg.sop import SegmentationKind
from dicom_io.series import load_series
from dicom_io.volume import CTVolume
from inference.errors import InferenceError
from inference.nifti import read_nifti, write_nifti
from inference.pipeline import AnalysisOutput, analyze_volume
from inference.settings import PlanningSettings

logger = logging.getLogger(__name__)


class AnalysisInputError(Exception):
    """The input cannot be read as a CT volume, or cannot give what was asked (message says why)."""


@dataclass(frozen=True, slots=True, eq=False)
class LoadedInput:
    """HU + affine (index → LPS mm); ``volume`` is the DICOM series when the input was DICOM."""

    hu: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    warnings: tuple[str, ...]
    volume: CTVolume | None


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """What to write besides ``result.json`` and ``labels.nii.gz``."""

    dicom: bool = False
    segmentation_kind: SegmentationKind = SegmentationKind.BINARY
    planning: PlanningSettings = field(default_factory=PlanningSettings)


@dataclass(frozen=True, slots=True, eq=False)
class AnalysisRun:
    """The analysis (loader warnings included), the DICOM files written, seconds per stage."""

    output: AnalysisOutput
    dicom_outputs: tuple[Path, ...]
    stage_seconds: dict[str, float]


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".nii", ".nii.gz"))


def load_input(source: Path | Sequence[Path]) -> LoadedInput:
    """A DICOM series (folder, file or files) or a NIfTI file as HU + affine (index → LPS mm)."""
    paths = [source] if isinstance(source, Path) else list(source)
    missing = [p for p in paths if not p.exists()]
    if missing or not paths:
        raise AnalysisInputError(f"{missing[0] if missing else 'input'} does not exist")
    try:
        if len(paths) == 1 and _is_nifti(paths[0]):
            array, affine = read_nifti(paths[0])
            return LoadedInput(np.asarray(array, dtype=np.float32), affine, (), None)
        volume = load_series(paths[0] if len(paths) == 1 else paths)
    except (DicomIOError, InferenceError) as exc:
        raise AnalysisInputError(f"cannot read {paths[0]}: {exc}") from exc
    return LoadedInput(volume.hu, volume.affine, tuple(volume.warnings), volume)


def run_analysis(
    source: Path | Sequence[Path], folder: Path, options: AnalysisOptions | None = None
) -> AnalysisRun:
    """Load, analyse, write; raises AnalysisInputError or InferenceError (NotApplicableError)."""
    options = options or AnalysisOptions()
    if options.dicom and isinstance(source, Path) and _is_nifti(source):
        raise AnalysisInputError("--dicom needs a DICOM input (the objects reference its images)")
    stages: dict[str, float] = {}
    started = time.perf_counter()
    loaded = load_input(source)
    stages["load"] = time.perf_counter() - started
    out = analyze_volume(loaded.hu, loaded.affine, options.planning)
    stages.update({f"analysis.{k}": v for k, v in out.result.timings_s.items()})
    result = dataclasses.replace(out.result, warnings=loaded.warnings + out.result.warnings)
    out = dataclasses.replace(out, result=result)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    write_nifti(folder / "labels.nii.gz", out.labels, loaded.affine)
    written: list[Path] = []
    if options.dicom and loaded.volume is not None:  # a NIfTI input was refused above
        started = time.perf_counter()
        written = write_outputs(
            loaded.volume,
            AnalysisReport.from_json(result.to_json()),
            out.labels,
            out.c2_parts,
            folder / "dicom",
            options=OutputOptions(segmentation_type=options.segmentation_kind),
        )
        stages["write_dicom"] = time.perf_counter() - started
    return AnalysisRun(out, tuple(written), stages)
