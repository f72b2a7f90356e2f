"""Recording received instances: studies, series, instances, conflicts and the series' open job.

Functions here run inside a transaction opened by :class:`storage.joblog.JobLog`. The receipt
path is the hot one (one transaction per received instance, while the sender waits): it uses
SQLAlchemy Core statements on the session's connection, a handful per receipt, and marks its
transaction :data:`storage.database.DEFERRED_DURABILITY` — the spool file, fsync'd before the
receipt, is the durable truth, and :mod:`storage.reconcile` records spool files without a row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Connection, Engine, bindparam, case, insert, or_, select, update
from sqlalchemy.orm import Session

from storage.common import utcnow
from storage.database import DEFERRED_DURABILITY
from storage.models import Instance, InstanceEvent, Job, JobEvent, Series, Study, UTCDateTime
from storage.records import InstanceReceipt
from storage.states import JobState, ReceiptOutcome

logger = logging.getLogger(__name__)

#: InstanceEvent kind of an instance recorded at start-up from a spool file that had no row.
RECOVERED = "recovered"
# The receipt's statements, built once (building a statement costs more than running it).
_FIND_INSTANCE = select(Instance.id, Instance.sha256).where(
    Instance.sop_instance_uid == bindparam("uid")
)
_FIND_STUDY = select(Study.id).where(Study.study_uid == bindparam("uid"))
_FIND_OPEN_JOB = (
    select(Job.id)
    .where(
        Job.series_id == bindparam("series"),
        or_(Job.state == JobState.RECEIVING.value, Job.state == JobState.QUEUED.value),
    )
    .order_by(Job.id.desc())
    .limit(1)
    .with_for_update()
)
_RECEIVED_AT = bindparam("at", type_=UTCDateTime())
# Every receipt first marks its series as just received (re-sends included: retention keeps such
# a series). On PostgreSQL this also locks the series row, so the receipts of one series (the
# open-job check) and a retention purge of it take turns; SQLite holds the write lock already.
_TOUCH_SERIES = (
    update(Series)
    .where(Series.series_uid == bindparam("uid"))
    .values(
        last_received_at=case(
            (
                or_(Series.last_received_at.is_(None), Series.last_received_at < _RECEIVED_AT),
                _RECEIVED_AT,
            ),
            else_=Series.last_received_at,
        )
    )
    .returning(Series.id)  # the series' id when it exists: no separate look-up
)
_INSERT_STUDY = insert(Study).returning(Study.id)
_INSERT_SERIES = insert(Series).returning(Series.id)
_INSERT_JOB = insert(Job).returning(Job.id)
_INSERT_INSTANCE = insert(Instance).returning(Instance.id)
_TOUCH_JOB = (
    update(Job)
    .where(
        Job.id == bindparam("job"),
        or_(
            Job.last_instance_at.is_(None),
            Job.last_instance_at < bindparam("at", type_=UTCDateTime()),
        ),
    )
    .values(last_instance_at=bindparam("at", type_=UTCDateTime()))
)


def recorded_sha256(session: Session, sop_instance_uid: str) -> str | None:
    sha: str | None = session.execute(
        select(Instance.sha256).where(Instance.sop_instance_uid == sop_instance_uid)
    ).scalar_one_or_none()
    return sha


def recorded_uids(session: Session) -> Iterator[str]:
    """Every recorded SOP Instance UID."""
    yield from session.execute(select(Instance.sop_instance_uid)).scalars()


def record_instance(session: Session, r: InstanceReceipt) -> ReceiptOutcome:
    """NEW, DUPLICATE (same UID and bytes) or CONFLICT (same UID, other bytes; an event)."""
    conn = session.connection(execution_options={DEFERRED_DURABILITY: True})
    return _record(conn, r)[0]


def record_instance_in(engine: Engine, r: InstanceReceipt) -> ReceiptOutcome:
    """:func:`record_instance` in a transaction of its own on a Core connection of ``engine``:
    the SCP's hot path, without the ORM session's bookkeeping (about a third of a receipt's CPU).
    Errors propagate as SQLAlchemy raises them (the caller retries integrity errors)."""
    with engine.connect() as conn:
        conn.execution_options(**{DEFERRED_DURABILITY: True})
        with conn.begin():
            return _record(conn, r)[0]


def record_recovered(session: Session, r: InstanceReceipt) -> ReceiptOutcome:
    """Record an instance found in the spool without a row: NEW with a RECOVERED event (its
    ``at`` is now; the receipt's ``received_at`` is the file's modification time)."""
    outcome, instance_id = _record(session.connection(), r)
    if outcome is ReceiptOutcome.NEW:
        _add_event(session.connection(), instance_id, RECOVERED, r, utcnow())
    return outcome


def _record(conn: Connection, r: InstanceReceipt) -> tuple[ReceiptOutcome, int]:
    touched = conn.execute(_TOUCH_SERIES, {"uid": r.series_uid, "at": r.received_at})
    series_id: int | None = touched.scalar_one_or_none()
    existing = conn.execute(_FIND_INSTANCE, {"uid": r.sop_instance_uid}).first()
    if existing is not None:
        if existing.sha256 == r.sha256:
            return ReceiptOutcome.DUPLICATE, existing.id
        _add_event(conn, existing.id, ReceiptOutcome.CONFLICT.value, r, r.received_at)
        logger.warning(
            "instance %s re-sent by %s with different content; the first copy is kept",
            r.sop_instance_uid,
            r.calling_ae,
        )
        return ReceiptOutcome.CONFLICT, existing.id
    if series_id is None:
        series_id = _new_series(conn, r)
    job_id = _open_job(conn, series_id, r)
    values = {
        "series_id": series_id,
        "job_id": job_id,
        "sop_instance_uid": r.sop_instance_uid,
        "sop_class_uid": r.sop_class_uid,
        "calling_ae": r.calling_ae,
        "peer_host": r.peer_host,
        "received_at": r.received_at,
        "path": r.path,
        "sha256": r.sha256,
        "size": r.size,
    }
    instance_id: int = conn.execute(_INSERT_INSTANCE, values).scalar_one()
    conn.execute(_TOUCH_JOB, {"job": job_id, "at": r.received_at})
    return ReceiptOutcome.NEW, instance_id


def _add_event(
    conn: Connection, instance_id: int, kind: str, r: InstanceReceipt, at: datetime
) -> None:
    conn.execute(
        insert(InstanceEvent),
        {
            "instance_id": instance_id,
            "kind": kind,
            "at": at,
            "calling_ae": r.calling_ae,
            "peer_host": r.peer_host,
            "sha256": r.sha256,
            "size": r.size,
        },
    )


def _new_series(conn: Connection, r: InstanceReceipt) -> int:
    """Insert the series (and its study when new); its id."""
    study_id: int | None = conn.execute(_FIND_STUDY, {"uid": r.study_uid}).scalar_one_or_none()
    if study_id is None:
        study_id = conn.execute(
            _INSERT_STUDY, {"study_uid": r.study_uid, "first_received_at": r.received_at}
        ).scalar_one()
    values = {
        "study_id": study_id,
        "series_uid": r.series_uid,
        "modality": r.modality,
        "calling_ae": r.calling_ae,
        "first_received_at": r.received_at,
        "last_received_at": r.received_at,
    }
    new_id: int = conn.execute(_INSERT_SERIES, values).scalar_one()
    return new_id


def _open_job(conn: Connection, series_id: int, r: InstanceReceipt) -> int:
    """The job a new instance belongs to: the series' RECEIVING or QUEUED job (a queued job reads
    its instances when it starts), else a new RECEIVING job."""
    job_id: int | None = conn.execute(_FIND_OPEN_JOB, {"series": series_id}).scalar_one_or_none()
    if job_id is not None:
        return job_id
    now = utcnow()
    values = {
        "series_id": series_id,
        "state": JobState.RECEIVING.value,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
        "last_instance_at": r.received_at,
    }
    new_id: int = conn.execute(_INSERT_JOB, values).scalar_one()
    event = {
        "job_id": new_id,
        "at": now,
        "source": None,
        "target": JobState.RECEIVING.value,
        "reason": f"first instance from {r.calling_ae} ({r.peer_host})",
        "worker": None,
    }
    conn.execute(insert(JobEvent), event)
    logger.info("job %d opened for series %s", new_id, r.series_uid)
    return new_id
