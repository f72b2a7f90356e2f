"""Retention in the job log and the spool: what finished work may go, and forgetting it.

A series' received instances may go when every job of the series is in a final state (DONE,
SKIPPED, FAILED), none of its deliveries is pending, and no job of the series changed since the
cut-off. Purging them deletes the spool files *and* their ``instances`` rows (with their conflict
events), inside one write transaction that checks the rule again under the lock: the job log never
points at a file that is gone, and a series sent again afterwards is a new arrival (new rows, a new
job) rather than a duplicate of something the node no longer has. Each purge is a job event
(``source`` = ``target`` = the job's state, reason ``retention: ...``) so ``spinenode job ID`` shows
it. Job-log rows themselves go only on request (:meth:`RetentionStore.purge_rows`), after the files.

Files are removed only under the spool root, resolved without following links out of it: a link is
removed itself, never its target.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import ColumnElement, Engine, delete, exists, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from storage.common import aware, utcnow
from storage.database import transaction
from storage.models import (
    Delivery,
    Instance,
    InstanceEvent,
    Job,
    JobEvent,
    Output,
    Series,
    StageTiming,
    Study,
)
from storage.spool import Spool
from storage.states import FINAL_STATES, DeliveryState

logger = logging.getLogger(__name__)

_FINAL = sorted(state.value for state in FINAL_STATES)
#: Ids per ``IN (...)`` list: well below SQLite's limit on bound variables.
_CHUNK = 500
#: The prefix of every job event retention writes.
EVENT_PREFIX = "retention: "
#: The start of the event that says a job's work folder (its outputs) was deleted.
WORK_PURGED = f"{EVENT_PREFIX}deleted the job's work folder"


@dataclass(frozen=True, slots=True)
class SpoolCandidate:
    """A finished series whose received instances may be deleted (sizes as recorded)."""

    series_id: int
    series_uid: str
    instances: int
    size: int


@dataclass(frozen=True, slots=True)
class Freed:
    """What one purge removed: files and bytes (``kept``: files refused, e.g. outside the spool)."""

    files: int
    size: int
    kept: int = 0


def _series_settled(ended_before: datetime) -> list[ColumnElement[bool]]:
    """Conditions on ``Series``: every job final, none changed since, no delivery pending, and
    nothing of it received since (a re-sent duplicate counts: its sender was told it is kept)."""
    active = exists().where(
        Job.series_id == Series.id, or_(Job.state.not_in(_FINAL), Job.updated_at >= ended_before)
    )
    pending = (
        exists()
        .where(Delivery.job_id == Job.id, Job.series_id == Series.id)
        .where(Delivery.state == DeliveryState.PENDING.value)
    )
    has_job = exists().where(Job.series_id == Series.id)
    quiet = or_(Series.last_received_at.is_(None), Series.last_received_at < ended_before)
    return [has_job, ~active, ~pending, quiet]


def _job_settled(ended_before: datetime) -> list[ColumnElement[bool]]:
    """Conditions on ``Job``: final, unchanged since the cut-off, no delivery pending."""
    pending = exists().where(
        Delivery.job_id == Job.id, Delivery.state == DeliveryState.PENDING.value
    )
    return [Job.state.in_(_FINAL), Job.updated_at < ended_before, ~pending]


class RetentionStore:
    """Retention queries and purges on the job log at ``engine`` and the spool at ``spool_root``."""

    def __init__(self, engine: Engine, spool_root: Path) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.spool_root = Path(spool_root).absolute()
        self._spool = Spool(self.spool_root)  # for its instance locks, shared with the SCP

    def close(self) -> None:
        """Close the spool's lock files (the store can still be used; they open again)."""
        self._spool.close()

    def _transaction(self, read_only: bool = False) -> AbstractContextManager[Session]:
        return transaction(self._sessions, read_only)

    # -- the spool -------------------------------------------------------------------------

    def spool_candidates(
        self, ended_before: datetime, limit: int = 100, after: int = 0
    ) -> list[SpoolCandidate]:
        """Finished series that still have received instances, by id above ``after``."""
        ended_before = aware(ended_before, "ended_before")
        statement = (
            select(Series.id, Series.series_uid, func.count(Instance.id), func.sum(Instance.size))
            .join(Instance, Instance.series_id == Series.id)
            .where(Series.id > after, *_series_settled(ended_before))
            .group_by(Series.id, Series.series_uid)
            .order_by(Series.id)
            .limit(limit)
        )
        with self._transaction(read_only=True) as session:
            rows = session.execute(statement).all()
        return [SpoolCandidate(int(i), uid, int(n), int(size or 0)) for i, uid, n, size in rows]

    def purge_spool(self, series_id: int, ended_before: datetime, policy: str) -> Freed | None:
        """Delete the series' spool files and instance rows if the rule still holds (else None).

        ``policy`` names the setting in the job event (e.g. ``retention.spool_days = 7``).
        The SCP's locks of the series' instances are held throughout (:meth:`Spool.instance_locks`):
        a store that has looked at one of these files (found it there, and recorded) records its
        receipt before the file can go, and that receipt keeps the series (received again).
        """
        ended_before = aware(ended_before, "ended_before")
        with self._transaction(read_only=True) as session:
            uids = set(
                session.scalars(
                    select(Instance.sop_instance_uid).where(Instance.series_id == series_id)
                )
            )
        with self._spool.instance_locks(uids):
            return self._purge_locked(series_id, ended_before, policy, uids)

    def _purge_locked(
        self, series_id: int, ended_before: datetime, policy: str, locked: set[str]
    ) -> Freed | None:
        with self._transaction() as session:
            # SQLite: the transaction holds the write lock already (BEGIN IMMEDIATE). Elsewhere,
            # lock the series row, which every receipt of the series updates first, then its
            # jobs: a receipt either committed before (and the check below sees it) or waits.
            session.execute(select(Series.id).where(Series.id == series_id).with_for_update())
            session.execute(select(Job.id).where(Job.series_id == series_id).with_for_update())
            settled = session.execute(
                select(Series.id).where(Series.id == series_id, *_series_settled(ended_before))
            ).first()
            if settled is None:
                return None  # a new instance or a retry came in meanwhile
            instances = session.scalars(
                select(Instance).where(Instance.series_id == series_id).order_by(Instance.id)
            ).all()
            if any(row.sop_instance_uid not in locked for row in instances):
                return None  # recorded since the locks were taken: the next pass looks again
            gone: list[int] = []
            freed, kept = 0, 0
            for row in instances:
                size = remove_inside(Path(row.path), self.spool_root)
                if size is None:
                    kept += 1
                    continue
                gone.append(row.id)
                freed += size
            _sync_folders({Path(row.path).parent for row in instances})
            _forget_instances(session, gone)
            result = Freed(len(gone), freed, kept)
            note = f"{EVENT_PREFIX}deleted {result.files} received instances"
            note += f" ({result.size / 1e6:.1f} MB) from the spool ({policy})"
            if kept:
                note += f"; {kept} files kept (outside the spool, or not removable)"
            if gone:  # a series whose files are all refused is not noted again at every pass
                jobs = session.scalars(select(Job).where(Job.series_id == series_id)).all()
                for job in jobs:  # what each job had, for `spinenode job(s)` (first purge only)
                    if job.instances_purged is None:
                        job.instances_purged = len(gone)
                _note_jobs(session, jobs, note)
        _remove_empty_folders({Path(row.path).parent for row in instances}, self.spool_root)
        return result

    # -- job work folders ------------------------------------------------------------------

    def settled_jobs(self, job_ids: Sequence[int], ended_before: datetime) -> list[int]:
        """Those of ``job_ids`` that are final, unchanged since the cut-off, nothing pending."""
        ended_before = aware(ended_before, "ended_before")
        settled: list[int] = []
        with self._transaction(read_only=True) as session:
            for start in range(0, len(job_ids), _CHUNK):
                chunk = list(job_ids[start : start + _CHUNK])
                statement = select(Job.id).where(Job.id.in_(chunk), *_job_settled(ended_before))
                settled.extend(int(i) for i in session.scalars(statement))
        return sorted(settled)

    def purge_work(
        self, job_id: int, ended_before: datetime, remove: Callable[[], Freed], what: str
    ) -> Freed | None:
        """Call ``remove`` (which deletes the job's work folder) if the job is still settled,
        under the job log's write lock (a concurrent ``retry`` waits), and record ``what`` it
        held; a later ``retry`` of the job's deliveries is refused with the reason."""
        ended_before = aware(ended_before, "ended_before")
        with self._transaction() as session:
            statement = select(Job).where(Job.id == job_id, *_job_settled(ended_before))
            job = session.scalars(statement.with_for_update()).first()
            if job is None:
                return None
            freed = remove()
            note = f"{WORK_PURGED} ({freed.files} files, {freed.size / 1e6:.1f} MB: {what})"
            _note_jobs(session, [job], note)
        return freed

    # -- job-log rows ----------------------------------------------------------------------

    def purge_rows(
        self, ended_before: datetime, keep: Callable[[int], bool], limit: int, after: int = 0
    ) -> tuple[int, int | None]:
        """Delete every row of finished series (ids above ``after``, at most ``limit`` looked at)
        whose instances are already purged and none of whose jobs ``keep`` wants kept (e.g. its
        work folder is still there); studies left without series go too. Returns how many jobs
        went, and the last series id looked at (None: no series left to look at)."""
        ended_before = aware(ended_before, "ended_before")
        has_instances = exists().where(Instance.series_id == Series.id)
        with self._transaction() as session:
            series_ids = session.scalars(
                select(Series.id)
                .where(Series.id > after, *_series_settled(ended_before), ~has_instances)
                .order_by(Series.id)
                .limit(limit)
            ).all()
            removed = 0
            for series_id in series_ids:
                job_ids = list(session.scalars(select(Job.id).where(Job.series_id == series_id)))
                if not any(keep(job_id) for job_id in job_ids):
                    _delete_series_rows(session, series_id, job_ids)
                    removed += len(job_ids)
        return removed, (series_ids[-1] if series_ids else None)

    def freeable(self, ended_before: datetime) -> Freed:
        """What a spool purge at ``ended_before`` would free (instances and recorded bytes)."""
        candidates = self.spool_candidates(ended_before, limit=1_000_000)
        return Freed(sum(c.instances for c in candidates), sum(c.size for c in candidates))


def _delete_series_rows(session: Session, series_id: int, job_ids: Sequence[int]) -> None:
    for table in (JobEvent, StageTiming, Delivery, Output):
        session.execute(delete(table).where(table.job_id.in_(job_ids)))
    session.execute(delete(Job).where(Job.id.in_(job_ids)))
    study = session.scalars(select(Series.study_id).where(Series.id == series_id)).one()
    session.execute(delete(Series).where(Series.id == series_id))
    if session.execute(select(Series.id).where(Series.study_id == study)).first() is None:
        session.execute(delete(Study).where(Study.id == study))


def _forget_instances(session: Session, instance_ids: Sequence[int]) -> None:
    for start in range(0, len(instance_ids), _CHUNK):
        chunk = list(instance_ids[start : start + _CHUNK])
        session.execute(delete(InstanceEvent).where(InstanceEvent.instance_id.in_(chunk)))
        session.execute(delete(Instance).where(Instance.id.in_(chunk)))


def _note_jobs(session: Session, jobs: Sequence[Job], note: str) -> None:
    now = utcnow()
    for job in jobs:
        session.add(
            JobEvent(job_id=job.id, at=now, source=job.state, target=job.state, reason=note)
        )
        logger.info("job %d series %s: %s", job.id, job.series.series_uid, note)


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``'s folder, with every link resolved, lies inside ``root`` (resolved)."""
    path = Path(path)
    if not path.is_absolute() or os.path.normpath(path) != str(path):
        return False
    real_root = Path(os.path.realpath(root))
    real_parent = Path(os.path.realpath(path.parent))
    return real_parent.is_relative_to(real_root) and path.name not in ("", ".", "..")


def remove_inside(path: Path, root: Path) -> int | None:
    """Remove the file ``path`` if it lies inside ``root``; the bytes freed (0: already gone), or
    None when it was refused (outside ``root``, a folder) or could not be removed. A link is
    removed, not its target."""
    if not inside(path, root):
        logger.warning("retention: %s is not inside %s; not removed", path, root)
        return None
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(info.st_mode):
        logger.warning("retention: %s is a folder; not removed", path)
        return None
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # e.g. permissions: keep its row, go on with the others
        logger.warning("retention: cannot remove %s: %s", path, exc)
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _sync_folders(folders: set[Path]) -> None:
    """Make the removals durable before the rows go: a removal lost to a power cut would bring
    back files without rows, which start-up reconciliation would take for new arrivals."""
    for folder in sorted(folders):
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue  # gone already, or not a folder: nothing of it can come back
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_empty_folders(folders: set[Path], root: Path) -> None:
    """Remove the series folders, then their study folders, where empty (never ``root``)."""
    real_root = Path(os.path.realpath(root))
    for level in (folders, {f.parent for f in folders}):
        for folder in sorted(level):
            real = Path(os.path.realpath(folder))
            if real == real_root or not real.is_relative_to(real_root) or folder.is_symlink():
                continue
            try:
                folder.rmdir()
            except OSError:
                continue  # not empty (another series of the study), or already gone
