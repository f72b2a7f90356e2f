"""The scheduler: a series is complete after a quiet period; selection rules queue or skip it.

A RECEIVING job whose series has had no new instance for ``Settings.quiet_seconds`` is judged on
the headers of its spooled files (no pixel data is read): modality, number of slices and the
largest gap between neighbouring slice positions along the slice normal (LPS mm). It becomes
QUEUED, or SKIPPED with the rule it failed as the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.settings import SelectionRules, Settings
from storage.errors import StorageError
from storage.joblog import JobLog
from storage.states import JobState

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    """What the selection rules look at; ``max_gap_mm`` is ``None`` below two positions."""

    modalities: tuple[str, ...]
    slices: int
    max_gap_mm: float | None
    problem: str | None = None


def _frames(ds: Dataset) -> list[tuple[list[float], list[float]]]:
    """(ImagePositionPatient, ImageOrientationPatient) of every frame of ``ds``."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
        frames = []
        for item in ds.PerFrameFunctionalGroupsSequence:
            orient_item = item if "PlaneOrientationSequence" in item else shared
            position = item.PlanePositionSequence[0].ImagePositionPatient
            orient = orient_item.PlaneOrientationSequence[0].ImageOrientationPatient
            frames.append(([float(v) for v in position], [float(v) for v in orient]))
        return frames
    return [
        (
            [float(v) for v in ds.ImagePositionPatient],
            [float(v) for v in ds.ImageOrientationPatient],
        )
    ]


def series_facts(paths: Sequence[Path]) -> SeriesFacts:
    """Modality, slice count and largest slice gap (mm, along the slice normal) of a series."""
    modalities: set[str] = set()
    frames: list[tuple[list[float], list[float]]] = []
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as exc:
            return SeriesFacts((), 0, None, f"cannot read {Path(path).name}: {exc}")
        modalities.add(str(ds.get("Modality", "") or ""))
        try:
            frames.extend(_frames(ds))
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            return SeriesFacts(
                tuple(sorted(modalities)),
                0,
                None,
                f"{Path(path).name} has no usable ImagePositionPatient/ImageOrientationPatient",
            )
    if len(frames) < 2:
        return SeriesFacts(tuple(sorted(modalities)), len(frames), None)
    orient = np.asarray(frames[0][1], dtype=float)
    normal = np.cross(orient[:3], orient[3:])
    along = np.sort(np.asarray([f[0] for f in frames], dtype=float) @ normal)
    gaps = np.diff(along)
    return SeriesFacts(tuple(sorted(modalities)), len(frames), float(gaps.max()))


def skip_reason(facts: SeriesFacts, rules: SelectionRules) -> str | None:
    """Why the series is not analysed, or ``None`` when every selection rule passes."""
    if facts.problem:
        return facts.problem
    wrong = [m for m in facts.modalities if m not in rules.modalities]
    if wrong or not facts.modalities:
        return (
            f"modality {'/'.join(facts.modalities) or '(none)'} is not analysed "
            f"(selection.modalities = {', '.join(rules.modalities)})"
        )
    if facts.slices < rules.min_slices:
        return f"{facts.slices} slices; at least {rules.min_slices} needed (selection.min_slices)"
    if facts.max_gap_mm is not None and facts.max_gap_mm > rules.max_slice_spacing_mm + 1e-3:
        return (
            f"slice spacing up to {facts.max_gap_mm:.2f} mm exceeds "
            f"{rules.max_slice_spacing_mm:.2f} mm (selection.max_slice_spacing_mm)"
        )
    return None


class Scheduler:
    """Moves quiet RECEIVING jobs to QUEUED or SKIPPED; :meth:`run` loops until stopped."""

    def __init__(self, joblog: JobLog, settings: Settings) -> None:
        self.joblog = joblog
        self.settings = settings

    def tick(self, now: datetime | None = None) -> list[tuple[int, JobState]]:
        """Judge every quiet job once; returns (job id, new state) for each."""
        now = now or datetime.now(UTC)
        decided: list[tuple[int, JobState]] = []
        for ref in self.joblog.quiet_jobs(self.settings.quiet_seconds, now):
            try:
                state = self._decide(ref.job_id, ref.series_uid)
            except StorageError:
                # e.g. the job moved on meanwhile; the others are still judged this round
                logger.exception("job %d series %s: not scheduled", ref.job_id, ref.series_uid)
                continue
            decided.append((ref.job_id, state))
        return decided

    def _decide(self, job_id: int, series_uid: str) -> JobState:
        paths = [Path(p) for p in self.joblog.job_instances(job_id)]
        facts = series_facts(paths)
        reason = skip_reason(facts, self.settings.selection)
        state = JobState.QUEUED if reason is None else JobState.SKIPPED
        self.joblog.transition(job_id, state, reason=reason)
        logger.info(
            "job %d series %s: %d files, %d slices -> %s%s",
            job_id,
            series_uid,
            len(paths),
            facts.slices,
            state,
            f" ({reason})" if reason else "",
        )
        return state

    def run(self, stop: threading.Event) -> None:
        """Call :meth:`tick` every ``scheduler_poll_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop must survive anything; the next pass tries again
                logger.exception("scheduler: error; trying again")
            stop.wait(self.settings.scheduler_poll_seconds)
