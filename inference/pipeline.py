"""``analyze_volume``: CT volume in, analysis result and vertebra label map out.

Input: ``hu`` indexed [slice, row, col] and a 4×4 affine index → DICOM LPS mm. Output coordinates
are LPS mm. Runs the weights-free lumbosacral engine (segmentation, labelling, planning, grading)
and, when the volume may show the axis (no lumbar spine found, or cervical / upper thoracic levels
in view), the C2 feasibility assessment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from inference.c2 import C2Assessment, C2Settings, assess_c2
from inference.c2.parts import pediculoisthmic_map
from inference.errors import InferenceError, NotApplicableError
from inference.lumbar.engine import LumbarOutput, NativeLabels, plan_lumbar
from inference.results import AnalysisResult, ScrewPlan, VertebraLabel
from inference.segment.assign import OTHER
from inference.segment.bone import bone_mask
from inference.segment.grid import WorkingVolume, to_native, working_volume
from inference.segment.instances import separate_vertebrae
from inference.segment.labelling import label_levels, merge_sacrum
from inference.settings import PlanningSettings
from inference.verse import LEVEL_TO_LABEL

logger = logging.getLogger(__name__)

ENGINE = "geometric"
VERSION = "0.1.0"
CRANIAL_LPS = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True, slots=True, eq=False)
class AnalysisOutput:
    """The result (``result.json``), the VerSe label map and the C2 parts map on the input grid.

    ``c2_parts``: 5 = left C2 pediculoisthmic component, 6 = right (see
    :mod:`inference.c2.parts`), or ``None`` when no C2 was measured.
    """

    result: AnalysisResult
    labels: npt.NDArray[np.uint8]
    c2_parts: npt.NDArray[np.uint8] | None = None


@dataclass
class Timer:
    """Wall time per stage (s)."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - start


@dataclass(frozen=True, slots=True, eq=False)
class Segmentation:
    """Vertebra instances on the working grid with their level names."""

    work: WorkingVolume
    instances: npt.NDArray[np.uint8]
    levels: tuple[str, ...]
    confidence: tuple[float, ...]
    centroids: npt.NDArray[np.float64]
    warnings: tuple[str, ...]

    def verse_labels(self) -> npt.NDArray[np.uint8]:
        """The instance map with VerSe ids (unknown levels and other bone → 0)."""
        lut = np.zeros(256, dtype=np.uint8)
        for k, level in enumerate(self.levels, start=1):
            lut[k] = LEVEL_TO_LABEL.get(level, 0)
        lut[OTHER] = 0
        out: npt.NDArray[np.uint8] = lut[self.instances]
        return out


def segment_volume(hu: npt.NDArray[np.floating], affine: npt.ArrayLike) -> Segmentation:
    """Bone, vertebra instances and level names (working grid, 1 mm)."""
    work = working_volume(hu, affine)
    bone = bone_mask(work.hu)
    inst = merge_sacrum(
        separate_vertebrae(bone, work.affine, CRANIAL_LPS, work.spine_point, hu=work.hu)
    )
    names = label_levels(inst, work.affine, CRANIAL_LPS)
    return Segmentation(
        work, inst.labels, names.levels, names.confidence, inst.centroids, names.warnings
    )


def _may_show_c2(seg: Segmentation | None, lumbar: list[str]) -> bool:
    """Worth the C2 search: no lumbar spine found, or levels above T11 in view."""
    if seg is None or not lumbar:
        return True
    upper = {f"T{i}" for i in range(1, 11)}
    return any(level.startswith("C") or level in upper for level in seg.levels)


def analyze_volume(
    hu: npt.NDArray[np.floating],
    affine: npt.ArrayLike,
    settings: PlanningSettings | None = None,
    c2_settings: C2Settings | None = None,
) -> AnalysisOutput:
    """Segment, label, plan and assess C2.

    Raises :class:`NotApplicableError` when the volume shows neither a lumbosacral vertebra nor a
    measurable C2; the message gives both reasons.
    """
    settings = settings or PlanningSettings()
    if hu.ndim != 3 or min(hu.shape) < 2:
        raise NotApplicableError(f"need a 3-D volume, got shape {hu.shape}", hu.shape)
    timer = Timer()
    seg: Segmentation | None = None
    lumbar_reason = ""
    with timer.stage("segment"):
        try:
            seg = segment_volume(hu, affine)
        except NotApplicableError as exc:
            lumbar_reason = str(exc)
    lumbar = [lv for lv in seg.levels if lv in settings.levels] if seg is not None else []
    if seg is not None and not lumbar:
        lumbar_reason = f"no lumbosacral vertebra found (saw {', '.join(seg.levels) or 'none'})"
    c2 = C2Assessment(findings=(), warnings=())
    c2_parts = None
    if _may_show_c2(seg, lumbar):
        with timer.stage("c2"):
            c2 = assess_c2(hu, affine, c2_settings)
            if c2.findings:
                c2_parts = pediculoisthmic_map(hu, affine, c2.findings, c2_settings)
    if not lumbar and not c2.findings:
        c2_reason = "; ".join(c2.warnings) or "no C2 found"
        raise NotApplicableError(f"{lumbar_reason}; C2: {c2_reason}", seg.levels if seg else ())
    vertebrae: tuple[VertebraLabel, ...] = ()
    screws: tuple[ScrewPlan, ...] = ()
    warnings: tuple[str, ...] = ()
    with timer.stage("labels"):
        labels = (
            to_native(seg.verse_labels(), seg.work)
            if seg is not None
            else np.zeros(hu.shape, dtype=np.uint8)
        )
    if seg is not None and lumbar:
        # the labels come first: the planner checks breaches against their native-grid walls
        with timer.stage("plan"):
            native = NativeLabels(labels, seg.work.native_affine)
            out: LumbarOutput = plan_lumbar(seg, settings, native)
        vertebrae, screws, warnings = out.vertebrae, out.screws, seg.warnings + out.warnings
    result = AnalysisResult(
        engine=ENGINE,
        version=VERSION,
        vertebrae=vertebrae,
        screws=screws,
        c2=c2.findings,
        warnings=warnings + c2.warnings,
        timings_s=dict(timer.stages),
    )
    return AnalysisOutput(result, labels, c2_parts)


__all__ = ["AnalysisOutput", "InferenceError", "NotApplicableError", "analyze_volume"]
