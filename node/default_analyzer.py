"""The node's default analysis behind the worker's :class:`~node.worker.Analyzer` seam.

Received series files → :func:`node.analysis.run_analysis` (load, segment, plan, assess C2,
``result.json``, SEG / TID 1500 SR / secondary captures with UIDs derived from the series and the
pipeline version). A volume with neither lumbosacral anatomy nor a measurable C2 is SKIPPED with
the reason; unreadable input raises (the worker fails the job with the message).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from inference.errors import NotApplicableError
from node.analysis import AnalysisOptions, run_analysis
from node.worker import AnalysisOutcome


def analyze(paths: Sequence[Path], workdir: Path) -> AnalysisOutcome:
    """Analyse one series; outputs under ``workdir/dicom``, ``workdir/result.json``."""
    try:
        run = run_analysis(list(paths), workdir, AnalysisOptions(dicom=True))
    except NotApplicableError as exc:
        return AnalysisOutcome([], {}, skipped_reason=f"not applicable: {exc}")
    return AnalysisOutcome(list(run.dicom_outputs), run.stage_seconds)
