"""Retention: the periodic sweep that keeps the node's disk from filling up over the years.

``spinenode serve`` runs :meth:`Retention.run` on its own thread (not an SCP thread): a first pass
a minute after start-up, then one every ``retention.interval_seconds``. Each pass

1. deletes the received instances (spool files and their job-log rows) of series whose jobs all
   ended more than ``retention.spool_days`` ago with no delivery pending (a series sent again
   later is a new arrival with a new job);
2. deletes the work folders (``work/job-N``: outputs, ``result.json``) of jobs that ended more than
   ``retention.outputs_days`` ago with no delivery pending;
3. when ``retention.joblog_days`` is set, deletes the job-log rows of series whose files are gone
   and whose jobs ended longer ago than that.

Nothing of a RECEIVING, QUEUED, RUNNING or DELIVERING job, or of a job with a pending delivery, is
touched; every rule is checked again under the job log's write lock at the moment of deletion.
Each deletion is a job event (``spinenode job ID`` shows it); each pass logs its counts at INFO and
writes them to ``data_dir/retention.json``, which ``spinenode status`` shows. A days setting of 0
keeps that kind of data forever.

A series being sent again is safe: the purge holds the SCP's instance locks of the series (a store
that has looked at an old file records its receipt before the file can go), and any receipt of the
series after the cut-off, a re-sent duplicate included, keeps the series
(:meth:`storage.retention.RetentionStore.purge_spool`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from node.settings import Settings
from storage.joblog import JobLog
from storage.retention import Freed, RetentionStore

logger = logging.getLogger(__name__)

#: Series handled per database round; a pass repeats rounds until nothing is left.
BATCH = 100
_JOB_FOLDER = re.compile(r"job-([1-9][0-9]*)")
STATUS_FILE = "retention.json"
#: The first pass waits this long after start-up: start-up work (spool reconciliation, the first
#: associations) goes first, and a node that keeps restarting does not sweep at every start.
FIRST_SWEEP_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one pass deleted (bytes as recorded for the spool, as found for work folders)."""

    at: datetime
    series: int = 0
    instances: int = 0
    spool_bytes: int = 0
    work_folders: int = 0
    work_bytes: int = 0
    jobs_forgotten: int = 0
    refused: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"at": self.at.isoformat()}


@dataclass(frozen=True, slots=True)
class RetentionPreview:
    """What a pass now would delete (for ``spinenode status``), and the last pass if known."""

    instances: int
    spool_bytes: int
    work_folders: int
    last_sweep: dict[str, Any] | None


def _days(days: float) -> timedelta:
    return timedelta(days=days)


class Retention:
    """The sweep over one node's data (see the module docstring)."""

    def __init__(self, joblog: JobLog, settings: Settings) -> None:
        self.settings = settings
        self.rules = settings.retention
        self.store = RetentionStore(joblog.engine, settings.spool_dir)

    def sweep(self, now: datetime | None = None) -> SweepReport:
        """One pass at ``now`` (default: the current time); returns what it deleted."""
        now = now or datetime.now(UTC)
        counts: dict[str, int] = {}
        if self.rules.spool_days:
            counts |= self._spool(now - _days(self.rules.spool_days))
        if self.rules.outputs_days:
            counts |= self._work(now - _days(self.rules.outputs_days))
        if self.rules.joblog_days:
            counts["jobs_forgotten"] = self._rows(now - _days(self.rules.joblog_days))
        report = SweepReport(at=now, **counts)
        logger.info(
            "retention: %d series (%d instances, %.1f MB) purged from the spool, %d work folders "
            "(%.1f MB), %d jobs dropped from the job log, %d files refused",
            report.series,
            report.instances,
            report.spool_bytes / 1e6,
            report.work_folders,
            report.work_bytes / 1e6,
            report.jobs_forgotten,
            report.refused,
        )
        _write_status(self.settings.data_dir / STATUS_FILE, report)
        return report

    def _spool(self, ended_before: datetime) -> dict[str, int]:
        policy = f"retention.spool_days = {self.rules.spool_days:g}"
        series = files = size = refused = after = 0
        while batch := self.store.spool_candidates(ended_before, BATCH, after=after):
            after = batch[-1].series_id  # a series with refused files is not asked for again
            for candidate in batch:
                freed = self.store.purge_spool(candidate.series_id, ended_before, policy)
                if freed is None:
                    continue
                series += 1 if freed.files else 0
                files, size, refused = files + freed.files, size + freed.size, refused + freed.kept
        return {"series": series, "instances": files, "spool_bytes": size, "refused": refused}

    def _work(self, ended_before: datetime) -> dict[str, int]:
        folders = job_folders(self.settings.work_dir)
        policy = f"retention.outputs_days = {self.rules.outputs_days:g}"
        what = f"outputs and result.json; {policy}"
        count = size = 0
        for job_id in self.store.settled_jobs(sorted(folders), ended_before):
            remove = functools.partial(remove_folder, folders[job_id], self.settings.work_dir)
            try:
                freed = self.store.purge_work(job_id, ended_before, remove, what)
            except OSError as exc:  # this folder stays; the others are still handled
                logger.warning("job %d: retention: work folder not removed: %s", job_id, exc)
                continue
            if freed is not None:
                count, size = count + 1, size + freed.size
        return {"work_folders": count, "work_bytes": size}

    def _rows(self, ended_before: datetime) -> int:
        folders = job_folders(self.settings.work_dir)
        total, after = 0, 0
        while True:
            removed, last = self.store.purge_rows(ended_before, folders.__contains__, BATCH, after)
            total += removed
            if last is None:
                return total
            after = last

    def preview(self, now: datetime) -> RetentionPreview:
        """What a pass at ``now`` would delete, and the last pass's report (``None``: none)."""
        freed = (
            self.store.freeable(now - _days(self.rules.spool_days))
            if self.rules.spool_days
            else Freed(0, 0)
        )
        folders = job_folders(self.settings.work_dir) if self.rules.outputs_days else {}
        settled = self.store.settled_jobs(
            sorted(folders), now - _days(self.rules.outputs_days or 0)
        )
        return RetentionPreview(freed.files, freed.size, len(settled), last_sweep(self.settings))

    def run(self, stop: threading.Event, first_after_s: float = FIRST_SWEEP_AFTER_S) -> None:
        """Sweep after ``first_after_s``, then every ``retention.interval_seconds``, until ``stop``
        is set."""
        if stop.wait(min(first_after_s, self.rules.interval_seconds)):
            return
        try:
            while not stop.is_set():
                try:
                    self.sweep()
                except Exception:  # the loop must survive anything; the next pass tries again
                    logger.exception("retention: sweep failed; trying again in the next pass")
                stop.wait(self.rules.interval_seconds)
        finally:
            self.store.close()


def job_folders(work_dir: Path) -> dict[int, Path]:
    """The ``job-N`` folders directly in ``work_dir`` (links are not folders here)."""
    try:
        entries = list(os.scandir(work_dir))
    except FileNotFoundError:
        return {}
    found: dict[int, Path] = {}
    for entry in entries:
        match = _JOB_FOLDER.fullmatch(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            found[int(match.group(1))] = Path(entry.path)
    return found


def remove_folder(folder: Path, parent: Path) -> Freed:
    """Delete ``folder`` (a real folder directly in ``parent``) with everything in it, without
    following links; returns the files and bytes it held.

    Raises
    ------
    OSError
        ``folder`` is a link or not directly in ``parent``, or it could not be removed.
    """
    if folder.is_symlink() or os.path.realpath(folder.parent) != os.path.realpath(parent):
        raise OSError(f"{folder} is not a folder directly in {parent}; not removed")
    files = size = 0
    for root, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            info = os.lstat(os.path.join(root, name))
            files, size = files + 1, size + info.st_size
    shutil.rmtree(folder)  # removes links found inside, never what they point to
    return Freed(files, size)


def _write_status(path: Path, report: SweepReport) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # only what `status` shows is lost
        logger.warning("retention: cannot write %s: %s", path, exc)


def last_sweep(settings: Settings) -> dict[str, Any] | None:
    """The last pass's report as written to ``data_dir/retention.json``, or None."""
    try:
        data = json.loads((settings.data_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
