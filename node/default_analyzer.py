"""The node's default analysis behind the worker's :class:`~node.worker.Analyzer` seam.

Received series files → :func:`dicom_io.series.load_series` (HU volume, LPS mm) →
:func:`inference.pipeline.analyze_volume` (segmentation, labelling, screw plans) →
``result.json`` plus :func:`dicom_io.outputs.write_outputs` (SEG, TID 1500 SR, secondary captures,
UIDs derived from the series and the pipeline version). A volume without lumbosacral anatomy is
SKIPPED with the reason; unreadable input raises (the worker fails the job with the message).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from dicom_io.outputs import write_outputs
from dicom_io.report import AnalysisReport
from dicom_io.series import load_series
from inference.errors import NotApplicableError
from inference.pipeline import analyze_volume
from node.worker import AnalysisOutcome

logger = logging.getLogger(__name__)


def analyze(paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
    """Analyse one series; outputs under ``workdir/dicom``, ``workdir/result.json``."""
    stages: dict[str, float] = {}
    started = time.perf_counter()
    volume = load_series(list(paths))
    stages["load"] = time.perf_counter() - started
    try:
        out = analyze_volume(volume.hu, volume.affine)
    except NotApplicableError as exc:
        return AnalysisOutcome([], stages, skipped_reason=f"not applicable: {exc}")
    stages.update({f"analysis.{k}": v for k, v in out.result.timings_s.items()})
    result = out.result.to_json()
    (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    started = time.perf_counter()
    outputs = write_outputs(
        volume, AnalysisReport.from_json(result), out.labels, None, workdir / "dicom"
    )
    stages["write_dicom"] = time.perf_counter() - started
    logger.info(
        "series %s: %d vertebrae, %d screws, %d DICOM outputs",
        volume.series_instance_uid,
        len(out.result.vertebrae),
        len(out.result.screws),
        len(outputs),
    )
    return AnalysisOutcome(list(outputs), stages)
