"""Read side of the job log: what the scheduler, workers and admin commands see.

Functions here run inside a transaction opened by :class:`storage.joblog.JobLog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

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
    Worker,
)
from storage.records import (
    ClaimedJob,
    DeliveryInfo,
    InstanceEventInfo,
    JobDetail,
    JobEventInfo,
    JobRef,
    JobSummary,
    OutputRecord,
    StageTimingInfo,
    StatusSummary,
    WorkerInfo,
)
from storage.states import DeliveryState, JobState

RECENT_FAILURES = 10


def _summary_select() -> Select[Job, str, str, str, str, Any]:
    counts = (
        select(Instance.series_id, func.count(Instance.id).label("n"))
        .group_by(Instance.series_id)
        .subquery()
    )
    return (
        select(
            Job,
            Study.study_uid,
            Series.series_uid,
            Series.modality,
            Series.calling_ae,
            func.coalesce(counts.c.n, 0),
        )
        .join(Series, Series.id == Job.series_id)
        .join(Study, Study.id == Series.study_id)
        .outerjoin(counts, counts.c.series_id == Job.series_id)
    )


def _summary(row: Sequence[Any]) -> JobSummary:
    job, study_uid, series_uid, modality, calling_ae, instances = row
    purged = job.instances_purged is not None  # retention deleted them: say how many there were
    return JobSummary(
        job_id=job.id,
        state=JobState(job.state),
        reason=job.reason,
        study_uid=study_uid,
        series_uid=series_uid,
        modality=modality,
        calling_ae=calling_ae,
        instances=int(job.instances_purged if purged else instances),
        attempts=job.attempts,
        worker=job.worker,
        created_at=job.created_at,
        updated_at=job.updated_at,
        spool_purged=purged,
    )


def quiet_jobs(session: Session, cutoff: datetime) -> list[JobRef]:
    rows = session.execute(
        _summary_select()
        .where(Job.state == JobState.RECEIVING.value, Job.last_instance_at <= cutoff)
        .order_by(Job.id)
    ).all()
    return [
        JobRef(
            job_id=job.id,
            study_uid=study_uid,
            series_uid=series_uid,
            modality=modality,
            calling_ae=calling_ae,
            instances=int(n),
            last_instance_at=job.last_instance_at,
        )
        for job, study_uid, series_uid, modality, calling_ae, n in rows
    ]


def claimed_job(session: Session, job_id: int, reclaimed_from: str | None) -> ClaimedJob:
    job, study_uid, series_uid, modality, calling_ae, _ = session.execute(
        _summary_select().where(Job.id == job_id)
    ).one()
    session.refresh(job)
    assert job.worker is not None and job.lease_until is not None
    return ClaimedJob(
        job_id=job.id,
        study_uid=study_uid,
        series_uid=series_uid,
        modality=modality,
        calling_ae=calling_ae,
        worker=job.worker,
        attempts=job.attempts,
        lease_until=job.lease_until,
        reclaimed_from=reclaimed_from,
    )


def job_summaries(
    session: Session,
    state: JobState | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[JobSummary]:
    statement = _summary_select()
    if state is not None:
        statement = statement.where(Job.state == JobState(state).value)
    if since is not None:
        statement = statement.where(Job.created_at >= since)
    if until is not None:
        statement = statement.where(Job.created_at < until)
    rows = session.execute(statement.order_by(Job.id.desc()).limit(limit)).all()
    return [_summary(row) for row in rows]


def job_detail(session: Session, job: Job) -> JobDetail:
    summary = _summary(session.execute(_summary_select().where(Job.id == job.id)).one())
    first, last = session.execute(
        select(func.min(Instance.received_at), func.max(Instance.received_at)).where(
            Instance.series_id == job.series_id
        )
    ).one()
    hosts = session.scalars(
        select(Instance.peer_host)
        .where(Instance.series_id == job.series_id)
        .distinct()
        .order_by(Instance.peer_host)
    ).all()
    if first is None:  # none in the spool (retention deleted them): when the series came
        first, last = job.series.first_received_at, job.series.last_received_at
    return JobDetail(
        summary=summary,
        lease_until=job.lease_until,
        peer_hosts=tuple(hosts),
        first_instance_at=_aware_or_none(first),
        last_instance_at=_aware_or_none(last),
        events=_events(session, job.id),
        stages=_stages(session, job.id),
        deliveries=_deliveries(session, job.id),
        instance_events=_instance_events(session, job.series_id),
        outputs=_outputs(session, job.id),
    )


def _aware_or_none(value: datetime | None) -> datetime | None:
    # Aggregates bypass the column type, so SQLite returns naive UTC (or a string) here.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _events(session: Session, job_id: int) -> tuple[JobEventInfo, ...]:
    rows = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    ).all()
    return tuple(
        JobEventInfo(
            at=e.at,
            source=JobState(e.source) if e.source is not None else None,
            target=JobState(e.target),
            reason=e.reason,
            worker=e.worker,
        )
        for e in rows
    )


def _stages(session: Session, job_id: int) -> tuple[StageTimingInfo, ...]:
    rows = session.scalars(
        select(StageTiming).where(StageTiming.job_id == job_id).order_by(StageTiming.id)
    ).all()
    return tuple(StageTimingInfo(t.stage, t.seconds, t.attempt, t.at) for t in rows)


def _deliveries(session: Session, job_id: int) -> tuple[DeliveryInfo, ...]:
    rows = session.scalars(
        select(Delivery).where(Delivery.job_id == job_id).order_by(Delivery.id)
    ).all()
    return tuple(
        DeliveryInfo(
            delivery_id=d.id,
            destination=d.destination,
            sop_instance_uid=d.sop_instance_uid,
            path=d.path,
            state=DeliveryState(d.state),
            attempts=d.attempts,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at,
            updated_at=d.updated_at,
        )
        for d in rows
    )


def _outputs(session: Session, job_id: int) -> tuple[OutputRecord, ...]:
    rows = session.scalars(select(Output).where(Output.job_id == job_id).order_by(Output.id))
    return tuple(OutputRecord(o.sop_instance_uid, o.sop_class_uid, o.path) for o in rows)


def _instance_events(session: Session, series_id: int) -> tuple[InstanceEventInfo, ...]:
    rows = session.execute(
        select(InstanceEvent, Instance.sop_instance_uid)
        .join(Instance, Instance.id == InstanceEvent.instance_id)
        .where(Instance.series_id == series_id)
        .order_by(InstanceEvent.id)
    ).all()
    return tuple(
        InstanceEventInfo(e.at, e.kind, uid, e.calling_ae, e.peer_host, e.sha256, e.size)
        for e, uid in rows
    )


def status(session: Session, now: datetime, live_within_s: float) -> StatusSummary:
    job_counts = {state.value: 0 for state in JobState}
    for state, count in session.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)):
        job_counts[state] = int(count)
    delivery_counts = {state.value: 0 for state in DeliveryState}
    for state, count in session.execute(
        select(Delivery.state, func.count(Delivery.id)).group_by(Delivery.state)
    ):
        delivery_counts[state] = int(count)
    failures = session.execute(
        _summary_select()
        .where(Job.state == JobState.FAILED.value)
        .order_by(Job.updated_at.desc(), Job.id.desc())
        .limit(RECENT_FAILURES)
    ).all()
    return StatusSummary(
        now=now,
        jobs_by_state=job_counts,
        deliveries_by_state=delivery_counts,
        workers=_live_workers(session, now - timedelta(seconds=live_within_s)),
        recent_failures=tuple(_summary(row) for row in failures),
    )


def _live_workers(session: Session, seen_after: datetime) -> tuple[WorkerInfo, ...]:
    held = {
        worker: (job_id, lease)
        for job_id, worker, lease in session.execute(
            select(Job.id, Job.worker, Job.lease_until).where(Job.state == JobState.RUNNING.value)
        )
        if worker is not None
    }
    rows = session.scalars(
        select(Worker).where(Worker.last_seen >= seen_after).order_by(Worker.worker)
    ).all()
    return tuple(
        WorkerInfo(
            worker=w.worker,
            last_seen=w.last_seen,
            job_id=held.get(w.worker, (None, None))[0],
            lease_until=held.get(w.worker, (None, None))[1],
        )
        for w in rows
    )
