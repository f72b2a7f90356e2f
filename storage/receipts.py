"""Recording received instances: studies, series, instances, conflicts and the series' open job.

Functions here run inside a transaction opened by :class:`storage.joblog.JobLog`.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.common import utcnow
from storage.models import Instance, InstanceEvent, Job, JobEvent, Series, Study
from storage.records import InstanceReceipt
from storage.states import JobState, ReceiptOutcome

logger = logging.getLogger(__name__)


def recorded_sha256(session: Session, sop_instance_uid: str) -> str | None:
    sha: str | None = session.scalars(
        select(Instance.sha256).where(Instance.sop_instance_uid == sop_instance_uid)
    ).one_or_none()
    return sha


def record_instance(session: Session, r: InstanceReceipt) -> ReceiptOutcome:
    existing = session.scalars(
        select(Instance).where(Instance.sop_instance_uid == r.sop_instance_uid)
    ).one_or_none()
    if existing is not None:
        if existing.sha256 == r.sha256:
            return ReceiptOutcome.DUPLICATE
        session.add(
            InstanceEvent(
                instance_id=existing.id,
                kind=ReceiptOutcome.CONFLICT.value,
                at=r.received_at,
                calling_ae=r.calling_ae,
                peer_host=r.peer_host,
                sha256=r.sha256,
                size=r.size,
            )
        )
        logger.warning(
            "instance %s re-sent by %s with different content; the first copy is kept",
            r.sop_instance_uid,
            r.calling_ae,
        )
        return ReceiptOutcome.CONFLICT
    series = _series_for(session, r)
    job = _open_job(session, series, r)
    session.add(
        Instance(
            series_id=series.id,
            job_id=job.id,
            sop_instance_uid=r.sop_instance_uid,
            sop_class_uid=r.sop_class_uid,
            calling_ae=r.calling_ae,
            peer_host=r.peer_host,
            received_at=r.received_at,
            path=r.path,
            sha256=r.sha256,
            size=r.size,
        )
    )
    if job.last_instance_at is None or job.last_instance_at < r.received_at:
        job.last_instance_at = r.received_at
    return ReceiptOutcome.NEW


def _series_for(session: Session, r: InstanceReceipt) -> Series:
    series = session.scalars(select(Series).where(Series.series_uid == r.series_uid)).one_or_none()
    if series is not None:
        return series
    study = session.scalars(select(Study).where(Study.study_uid == r.study_uid)).one_or_none()
    if study is None:
        study = Study(study_uid=r.study_uid, first_received_at=r.received_at)
        session.add(study)
        session.flush()
    series = Series(
        study_id=study.id,
        series_uid=r.series_uid,
        modality=r.modality,
        calling_ae=r.calling_ae,
        first_received_at=r.received_at,
    )
    session.add(series)
    session.flush()
    return series


def _open_job(session: Session, series: Series, r: InstanceReceipt) -> Job:
    """The job a new instance belongs to: the series' RECEIVING or QUEUED job (a queued job reads
    its instances when it starts), else a new RECEIVING job."""
    job = session.scalars(
        select(Job)
        .where(
            Job.series_id == series.id,
            Job.state.in_([JobState.RECEIVING.value, JobState.QUEUED.value]),
        )
        .order_by(Job.id.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if job is not None:
        return job
    now = utcnow()
    job = Job(
        series_id=series.id,
        state=JobState.RECEIVING.value,
        attempts=0,
        created_at=now,
        updated_at=now,
        last_instance_at=r.received_at,
    )
    session.add(job)
    session.flush()
    session.add(
        JobEvent(
            job_id=job.id,
            at=now,
            source=None,
            target=JobState.RECEIVING.value,
            reason=f"first instance from {r.calling_ae} ({r.peer_host})",
            worker=None,
        )
    )
    logger.info("job %d opened for series %s", job.id, series.series_uid)
    return job
