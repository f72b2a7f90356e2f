"""Small helpers shared by the job log's modules."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from storage.errors import InvalidTransitionError, JobNotFoundError, StorageError
from storage.models import Job, JobEvent
from storage.states import JobState, transition_allowed

logger = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(when: datetime, name: str = "now") -> datetime:
    """``when`` in UTC; raises :class:`StorageError` for a naive datetime."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise StorageError(f"{name}={when!r} is naive: pass a timezone-aware UTC time", when)
    return when.astimezone(UTC)


def get_job(session: Session, job_id: int, lock: bool = True) -> Job:
    """The job row (locked where the backend can) or :class:`JobNotFoundError`."""
    job = session.get(Job, job_id, with_for_update=lock)
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}", job_id)
    return job


def apply_transition(
    session: Session,
    job: Job,
    target: JobState,
    reason: str | None,
    worker: str | None,
) -> None:
    """Move ``job`` to ``target`` after checking the life cycle; writes the event row."""
    source = JobState(job.state)
    if not transition_allowed(source, target):
        allowed = ", ".join(sorted(_allowed_names(source))) or "none (final state)"
        raise InvalidTransitionError(
            f"job {job.id}: {source} → {target} is not allowed (from {source}: {allowed})", job.id
        )
    now = utcnow()
    job.state = target.value
    job.reason = reason
    job.updated_at = now
    if target is not JobState.RUNNING:
        job.lease_until = None
    session.add(
        JobEvent(
            job_id=job.id,
            at=now,
            source=source.value,
            target=target.value,
            reason=reason,
            worker=worker,
        )
    )
    logger.info(
        "job %d series %s: %s → %s%s",
        job.id,
        series_uid(job),
        source,
        target,
        f" ({reason})" if reason else "",
    )


def series_uid(job: Job) -> str:
    """The job's series UID, for log lines (loads the series row within the session)."""
    return job.series.series_uid


def _allowed_names(source: JobState) -> list[str]:
    return [state.value for state in JobState if transition_allowed(source, state)]
