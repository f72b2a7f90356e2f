"""The outbox: one delivery row per (job, destination, output instance), with retry bookkeeping.

Functions here run inside a transaction opened by :class:`storage.joblog.JobLog`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from storage.common import apply_transition, series_uid, utcnow
from storage.errors import DeliveryNotFoundError
from storage.models import Delivery, Job, Output
from storage.records import DeliveryRef, DeliveryRequest, OutputRecord
from storage.spool import validate_uid
from storage.states import DeliveryState, JobState

logger = logging.getLogger(__name__)


def add_deliveries(
    session: Session, job_id: int, items: Sequence[DeliveryRequest], now: datetime
) -> None:
    """Add PENDING rows, due at once; an existing (job, destination, SOP UID) is left alone."""
    existing: set[tuple[str, str]] = {
        (destination, uid)
        for destination, uid in session.execute(
            select(Delivery.destination, Delivery.sop_instance_uid).where(Delivery.job_id == job_id)
        )
    }
    for item in items:
        key = (item.destination, validate_uid(item.sop_instance_uid))
        if key in existing:
            continue
        existing.add(key)
        session.add(
            Delivery(
                job_id=job_id,
                destination=item.destination,
                sop_instance_uid=item.sop_instance_uid,
                path=item.path,
                state=DeliveryState.PENDING.value,
                attempts=0,
                next_attempt_at=None,  # due at once, whatever clock the caller uses
                created_at=now,
                updated_at=now,
            )
        )


def record_outputs(
    session: Session, job_id: int, items: Sequence[OutputRecord], now: datetime
) -> None:
    """Add the job's outputs; an SOP Instance UID already recorded for the job is left alone."""
    known = set(session.scalars(select(Output.sop_instance_uid).where(Output.job_id == job_id)))
    for item in items:
        uid = validate_uid(item.sop_instance_uid)
        if uid in known:
            continue
        known.add(uid)
        session.add(
            Output(
                job_id=job_id,
                sop_instance_uid=uid,
                sop_class_uid=item.sop_class_uid,
                path=item.path,
                created_at=now,
            )
        )


def due_deliveries(session: Session, now: datetime, limit: int) -> list[DeliveryRef]:
    rows = session.scalars(
        select(Delivery)
        .join(Job, Job.id == Delivery.job_id)
        .where(
            Job.state == JobState.DELIVERING.value,
            Delivery.state == DeliveryState.PENDING.value,
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        )
        .order_by(Delivery.next_attempt_at.is_not(None), Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    )
    return [
        DeliveryRef(
            delivery_id=d.id,
            job_id=d.job_id,
            destination=d.destination,
            sop_instance_uid=d.sop_instance_uid,
            path=d.path,
            attempts=d.attempts,
        )
        for d in rows
    ]


def delivery_attempted(
    session: Session,
    delivery_id: int,
    ok: bool,
    error: str | None,
    next_attempt_at: datetime | None,
) -> None:
    delivery = session.get(Delivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise DeliveryNotFoundError(f"no delivery with id {delivery_id}", delivery_id)
    if delivery.state != DeliveryState.PENDING.value:
        logger.warning(
            "delivery %d of job %d is already %s; attempt not recorded",
            delivery_id,
            delivery.job_id,
            delivery.state,
        )
        return
    delivery.attempts += 1
    delivery.updated_at = utcnow()
    if ok:
        delivery.state = DeliveryState.SENT.value
        delivery.next_attempt_at = None
        return
    delivery.last_error = error
    delivery.next_attempt_at = next_attempt_at
    if next_attempt_at is None:
        delivery.state = DeliveryState.FAILED.value
        job = session.get(Job, delivery.job_id)
        logger.warning(
            "job %d series %s: gave up delivering %s to %s after %d attempts: %s",
            delivery.job_id,
            series_uid(job) if job is not None else "?",
            delivery.sop_instance_uid,
            delivery.destination,
            delivery.attempts,
            error,
        )


def finish_if_delivered(session: Session, job: Job) -> JobState | None:
    """DONE when all deliveries are SENT; FAILED when none is PENDING and some gave up."""
    if job.state != JobState.DELIVERING.value:
        return None
    counts = _counts_by_state(session, job.id)
    if counts.get(DeliveryState.PENDING.value, 0):
        return None
    failed = counts.get(DeliveryState.FAILED.value, 0)
    if failed:
        total = sum(counts.values())
        apply_transition(
            session,
            job,
            JobState.FAILED,
            f"{failed} of {total} deliveries gave up: {_first_error(session, job.id)}",
            None,
        )
        return JobState.FAILED
    sent = counts.get(DeliveryState.SENT.value, 0)
    reason = f"all {sent} deliveries sent" if sent else "nothing to deliver"
    apply_transition(session, job, JobState.DONE, reason, None)
    return JobState.DONE


def rearm_failed(session: Session, job_id: int, now: datetime) -> int:
    """Make the job's given-up deliveries PENDING again (attempts reset, due at once)."""
    failed = session.scalars(
        select(Delivery).where(
            Delivery.job_id == job_id, Delivery.state == DeliveryState.FAILED.value
        )
    ).all()
    for delivery in failed:
        delivery.state = DeliveryState.PENDING.value
        delivery.attempts = 0
        delivery.next_attempt_at = None
        delivery.updated_at = now
    return len(failed)


def _counts_by_state(session: Session, job_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.state, func.count(Delivery.id))
        .where(Delivery.job_id == job_id)
        .group_by(Delivery.state)
    )
    return {state: int(count) for state, count in rows}


def _first_error(session: Session, job_id: int) -> str:
    row = session.execute(
        select(Delivery.destination, Delivery.last_error)
        .where(Delivery.job_id == job_id, Delivery.state == DeliveryState.FAILED.value)
        .order_by(Delivery.id)
        .limit(1)
    ).first()
    return "" if row is None else f"{row[0]}: {row[1] or 'unknown error'}"
