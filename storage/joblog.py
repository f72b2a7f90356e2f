"""The job log facade: receipts, the job queue with leases, stage timings and the outbox.

Every public method is one database transaction and is safe to call from several processes at
once (SQLite in WAL mode with ``BEGIN IMMEDIATE``; on PostgreSQL the claim uses
``FOR UPDATE SKIP LOCKED``). Times are timezone-aware UTC.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage import outbox, queries, receipts
from storage.common import apply_transition, aware, get_job, utcnow
from storage.database import create_database_engine, transaction
from storage.errors import InvalidTransitionError, LeaseLostError, StorageError
from storage.migrations import recorded_version
from storage.models import Delivery, Instance, Job, JobEvent, StageTiming
from storage.models import Worker as WorkerRow
from storage.records import (
    ClaimedJob,
    DeliveryRef,
    DeliveryRequest,
    InstanceReceipt,
    JobDetail,
    JobRef,
    JobSummary,
    OutputRecord,
    StatusSummary,
)
from storage.retention import WORK_PURGED
from storage.spool import validate_uid
from storage.states import DeliveryState, JobState, ReceiptOutcome

logger = logging.getLogger(__name__)

_INSERT_RETRIES = 3


class JobLog:
    """The node's job log. Create with :meth:`open`; close with :meth:`close` (or ``with``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, create: bool = True) -> JobLog:
        """Open the job log at the SQLAlchemy ``url``, creating its tables if needed.

        With ``create=False`` a SQLite file that does not exist yet is a :class:`StorageError`
        instead of a new empty job log (what admin commands want).
        """
        return cls(create_database_engine(url, create=create))

    def close(self) -> None:
        """Close every pooled connection (call before forking, and at shutdown)."""
        self._engine.dispose()

    def __enter__(self) -> JobLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def location(self) -> str:
        """The job log's URL without its password (for admins: which database this is)."""
        return self._engine.url.render_as_string(hide_password=True)

    def schema_version(self) -> int | None:
        """The schema version the job log records (:mod:`storage.migrations`)."""
        with self._engine.connect() as conn:
            return recorded_version(conn)

    def _transaction(self, read_only: bool = False) -> AbstractContextManager[Session]:
        return transaction(self._sessions, read_only)

    # -- receiving -------------------------------------------------------------------------

    def record_instance(self, r: InstanceReceipt) -> ReceiptOutcome:
        """Record a received instance already durably written to ``r.path``.

        NEW: the row is added, and the series' open job is created if it has none (RECEIVING;
        a series whose last job started or ended gets a new one). DUPLICATE: same SOP Instance UID
        and same sha256, nothing recorded. CONFLICT: same UID, other bytes; an instance event is
        recorded and the stored file is kept as it is.
        """
        for uid in (r.study_uid, r.series_uid, r.sop_instance_uid):
            validate_uid(uid)
        aware(r.received_at, "received_at")
        for attempt in range(_INSERT_RETRIES):
            try:
                return receipts.record_instance_in(self._engine, r)
            except IntegrityError:
                # Another process inserted the same study/series/instance first; look again.
                if attempt == _INSERT_RETRIES - 1:
                    raise StorageError(
                        f"instance {r.sop_instance_uid}: conflicting concurrent inserts",
                        r.sop_instance_uid,
                    ) from None
            except SQLAlchemyError as exc:
                raise StorageError(f"job log error: {exc}", type(exc).__name__) from exc
        raise AssertionError("unreachable")

    def recorded_sha256(self, sop_instance_uid: str) -> str | None:
        """The checksum recorded for an instance, or None if it was never recorded."""
        with self._transaction(read_only=True) as session:
            return receipts.recorded_sha256(session, sop_instance_uid)

    def quiet_jobs(self, quiet_s: float, now: datetime) -> list[JobRef]:
        """RECEIVING jobs whose series has had no new instance for ``quiet_s`` seconds."""
        cutoff = aware(now) - timedelta(seconds=quiet_s)
        with self._transaction(read_only=True) as session:
            return queries.quiet_jobs(session, cutoff)

    # -- the queue -------------------------------------------------------------------------

    def transition(
        self, job_id: int, to: JobState, reason: str | None = None, worker: str | None = None
    ) -> None:
        """Move a job to ``to``, validated against the life cycle; writes a job event.

        Raises
        ------
        InvalidTransitionError
            The life cycle does not allow it (RUNNING is entered only by :meth:`claim`).
        LeaseLostError
            ``worker`` is given, the job is RUNNING, and another worker holds it.
        JobNotFoundError
            No such job.
        """
        to = JobState(to)
        if to is JobState.RUNNING:
            raise InvalidTransitionError(f"job {job_id}: use claim() to start running it", job_id)
        with self._transaction() as session:
            job = get_job(session, job_id)
            _check_holder(job, worker)
            apply_transition(session, job, to, reason, worker)

    def claim(self, worker_id: str, lease_s: float, now: datetime) -> ClaimedJob | None:
        """Atomically take the oldest QUEUED job, or a RUNNING one whose lease expired.

        The job becomes RUNNING with ``lease_until = now + lease_s`` and one more attempt. Also
        records that ``worker_id`` is alive (for :meth:`status`). None when nothing is claimable.
        """
        now = aware(now)
        lease_until = now + timedelta(seconds=lease_s)
        with self._transaction() as session:
            _touch_worker(session, worker_id, now)
            claimable = or_(
                Job.state == JobState.QUEUED.value,
                and_(Job.state == JobState.RUNNING.value, Job.lease_until < now),
            )
            candidate = select(Job.id, Job.state, Job.worker).where(claimable).order_by(Job.id)
            if session.get_bind().dialect.name == "postgresql":
                candidate = candidate.with_for_update(skip_locked=True)
            row = session.execute(candidate.limit(1)).first()
            if row is None:
                return None
            job_id, previous_state, previous_worker = row
            reclaimed = previous_worker if previous_state == JobState.RUNNING.value else None
            reason = (
                f"lease of {reclaimed} expired, re-claimed by {worker_id}"
                if reclaimed is not None
                else f"claimed by {worker_id}"
            )
            # Conditional on the job still being claimable: on SQLite the write lock is already
            # held (BEGIN IMMEDIATE), on PostgreSQL the row is locked; the check keeps it atomic
            # on any other backend too.
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, claimable)
                .values(
                    state=JobState.RUNNING.value,
                    reason=reason,
                    worker=worker_id,
                    lease_until=lease_until,
                    attempts=Job.attempts + 1,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None  # lost a race on a backend without locking; the caller polls again
            session.add(
                JobEvent(
                    job_id=job_id,
                    at=now,
                    source=previous_state,
                    target=JobState.RUNNING.value,
                    reason=reason,
                    worker=worker_id,
                )
            )
            claimed = queries.claimed_job(session, job_id, reclaimed)
        logger.info("job %d %s (series %s)", job_id, reason, claimed.series_uid)
        return claimed

    def heartbeat(self, job_id: int, worker_id: str, lease_s: float, now: datetime) -> bool:
        """Extend the lease; False when the worker no longer holds the job (stop working on it)."""
        now = aware(now)
        with self._transaction() as session:
            _touch_worker(session, worker_id, now)
            result = session.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.state == JobState.RUNNING.value,
                    Job.worker == worker_id,
                )
                .values(lease_until=now + timedelta(seconds=lease_s))
                .execution_options(synchronize_session=False)
            )
            held: bool = result.rowcount == 1  # type: ignore[attr-defined]
        if not held:
            logger.warning("job %d: worker %s lost its lease", job_id, worker_id)
        return held

    def release(self, job_id: int, worker_id: str, reason: str) -> None:
        """RUNNING → QUEUED by the worker holding it (e.g. on SIGTERM); :class:`LeaseLostError`
        if another worker holds it now."""
        with self._transaction() as session:
            job = get_job(session, job_id)
            _check_holder(job, worker_id, require_running=True)
            apply_transition(session, job, JobState.QUEUED, reason, worker_id)

    def record_stage(self, job_id: int, stage: str, seconds: float) -> None:
        """Record how long ``stage`` of the job's current attempt took."""
        if not math.isfinite(seconds) or seconds < 0:
            raise StorageError(f"job {job_id}: stage {stage!r} took {seconds!r} s?", seconds)
        with self._transaction() as session:
            job = get_job(session, job_id, lock=False)
            session.add(
                StageTiming(
                    job_id=job_id, stage=stage, seconds=seconds, attempt=job.attempts, at=utcnow()
                )
            )

    def job_instances(self, job_id: int) -> list[str]:
        """Spool paths of every instance of the job's series, in arrival order."""
        with self._transaction(read_only=True) as session:
            job = get_job(session, job_id, lock=False)
            paths = session.scalars(
                select(Instance.path)
                .where(Instance.series_id == job.series_id)
                .order_by(Instance.id)
            )
            return list(paths)

    # -- outputs and the outbox ------------------------------------------------------------

    def record_outputs(self, job_id: int, items: Sequence[OutputRecord]) -> None:
        """Record the instances the job produced (shown by :meth:`job` whether or not they are
        delivered anywhere); idempotent per (job, SOP Instance UID)."""
        with self._transaction() as session:
            get_job(session, job_id)
            outbox.record_outputs(session, job_id, items, utcnow())

    def add_deliveries(self, job_id: int, items: Sequence[DeliveryRequest]) -> None:
        """Queue output instances for delivery; idempotent per (job, destination, SOP UID)."""
        with self._transaction() as session:
            get_job(session, job_id)
            outbox.add_deliveries(session, job_id, items, utcnow())

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[DeliveryRef]:
        """PENDING deliveries of DELIVERING jobs whose next attempt is due, oldest first."""
        with self._transaction(read_only=True) as session:
            return outbox.due_deliveries(session, aware(now), limit)

    def delivery_attempted(
        self, delivery_id: int, ok: bool, error: str | None, next_attempt_at: datetime | None
    ) -> None:
        """Record one send attempt: SENT if ``ok``; else PENDING until ``next_attempt_at``, or
        FAILED (given up) when it is None."""
        if next_attempt_at is not None:
            next_attempt_at = aware(next_attempt_at, "next_attempt_at")
        with self._transaction() as session:
            outbox.delivery_attempted(session, delivery_id, ok, error, next_attempt_at)

    def finish_if_delivered(self, job_id: int) -> JobState | None:
        """DELIVERING → DONE when every delivery is SENT, → FAILED when none is pending and any
        gave up; returns the new state, or None when nothing changed."""
        with self._transaction() as session:
            return outbox.finish_if_delivered(session, get_job(session, job_id))

    def retry(self, job_id: int) -> None:
        """FAILED → DELIVERING with its given-up deliveries re-armed, or → QUEUED (attempts
        reset) when no delivery gave up. :class:`InvalidTransitionError` if it is not FAILED."""
        with self._transaction() as session:
            job = get_job(session, job_id)
            if job.state != JobState.FAILED.value:
                raise InvalidTransitionError(
                    f"job {job_id} is {job.state}; only failed jobs can be retried", job_id
                )
            _check_retry_inputs(session, job)
            rearmed = outbox.rearm_failed(session, job_id, utcnow())
            if rearmed:
                reason = f"retry requested: {rearmed} deliveries re-armed"
                apply_transition(session, job, JobState.DELIVERING, reason, None)
            else:
                job.attempts = 0
                apply_transition(session, job, JobState.QUEUED, "retry requested", None)

    # -- reading ---------------------------------------------------------------------------

    def jobs(
        self,
        state: JobState | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[JobSummary]:
        """Jobs created in [since, until), newest first, optionally only those in ``state``."""
        since = aware(since, "since") if since is not None else None
        until = aware(until, "until") if until is not None else None
        with self._transaction(read_only=True) as session:
            return queries.job_summaries(session, state, since, until, limit)

    def job(self, job_id: int) -> JobDetail:
        """Everything about one job; :class:`JobNotFoundError` if there is none."""
        with self._transaction(read_only=True) as session:
            return queries.job_detail(session, get_job(session, job_id, lock=False))

    def status(self, now: datetime, live_within_s: float = 300.0) -> StatusSummary:
        """Queue depth per state, workers seen within ``live_within_s``, recent failures."""
        with self._transaction(read_only=True) as session:
            return queries.status(session, aware(now), live_within_s)


def _check_retry_inputs(session: Session, job: Job) -> None:
    """Refuse a retry whose files retention has deleted, and say what to do instead."""
    gave_up = select(Delivery.id).where(
        Delivery.job_id == job.id, Delivery.state == DeliveryState.FAILED.value
    )
    if session.execute(gave_up.limit(1)).first() is not None:
        purged = select(JobEvent.id).where(
            JobEvent.job_id == job.id, JobEvent.reason.startswith(WORK_PURGED, autoescape=True)
        )
        what = "its outputs were deleted (retention.outputs_days)"
    else:
        purged = select(Instance.id).where(Instance.series_id == job.series_id)
        what = "its received instances were deleted (retention.spool_days)"
        purged = select(Job.id).where(Job.id == job.id, ~purged.exists())
    if session.execute(purged.limit(1)).first() is not None:
        raise InvalidTransitionError(
            f"job {job.id} cannot be retried: {what}; send the series again from the PACS "
            "(it becomes a new job)",
            job.id,
        )


def _check_holder(job: Job, worker: str | None, require_running: bool = False) -> None:
    if require_running and job.state != JobState.RUNNING.value:
        raise InvalidTransitionError(f"job {job.id} is {job.state}, not running", job.id)
    if worker is not None and job.state == JobState.RUNNING.value and job.worker != worker:
        raise LeaseLostError(
            f"job {job.id} is held by {job.worker}, not {worker} (its lease expired and it was "
            "re-claimed)",
            job.id,
        )


def _touch_worker(session: Session, worker_id: str, now: datetime) -> None:
    row = session.get(WorkerRow, worker_id)
    if row is None:
        session.add(WorkerRow(worker=worker_id, last_seen=now))
    else:
        row.last_seen = max(row.last_seen, now)
