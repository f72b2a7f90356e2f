"""Values that cross the storage seam: what callers pass in and what the job log hands back.

All are frozen, slotted dataclasses; times are timezone-aware UTC. None of them holds a patient
name, ID or birth date: only UIDs, AE titles, hosts, modality, counts, paths and times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from storage.states import DeliveryState, JobState


def _jsonable(value: object) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


class _JSONMixin:
    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their values, times as ISO 8601 strings)."""
        result: dict[str, Any] = _jsonable(self)
        return result


@dataclass(frozen=True, slots=True)
class InstanceReceipt(_JSONMixin):
    """One received instance, already durably written to ``path`` in the spool."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    calling_ae: str
    peer_host: str
    path: str
    sha256: str
    size: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class JobRef(_JSONMixin):
    """A job as the scheduler sees it (the series it covers and what has arrived)."""

    job_id: int
    study_uid: str
    series_uid: str
    modality: str
    calling_ae: str
    instances: int
    last_instance_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimedJob(_JSONMixin):
    """A job a worker now holds a lease on."""

    job_id: int
    study_uid: str
    series_uid: str
    modality: str
    calling_ae: str
    worker: str
    attempts: int
    lease_until: datetime
    reclaimed_from: str | None  # the worker whose lease expired, when this is a re-claim


@dataclass(frozen=True, slots=True)
class DeliveryRequest(_JSONMixin):
    """One output instance (a file) to send to one destination (a name from the settings)."""

    destination: str
    sop_instance_uid: str
    path: str


@dataclass(frozen=True, slots=True)
class OutputRecord(_JSONMixin):
    """One instance a job produced (a SEG, SR or secondary capture file)."""

    sop_instance_uid: str
    sop_class_uid: str
    path: str


@dataclass(frozen=True, slots=True)
class DeliveryRef(_JSONMixin):
    """A delivery that is due: what the SCU sends, and how often it has tried already."""

    delivery_id: int
    job_id: int
    destination: str
    sop_instance_uid: str
    path: str
    attempts: int


@dataclass(frozen=True, slots=True)
class JobSummary(_JSONMixin):
    """One line of ``spinenode jobs``. ``instances``: the series' received instances in the spool;
    with ``spool_purged``, how many retention deleted (the job's files are gone)."""

    job_id: int
    state: JobState
    reason: str | None
    study_uid: str
    series_uid: str
    modality: str
    calling_ae: str
    instances: int
    attempts: int
    worker: str | None
    created_at: datetime
    updated_at: datetime
    spool_purged: bool = False


@dataclass(frozen=True, slots=True)
class JobEventInfo(_JSONMixin):
    """One timestamped transition of a job (``source`` is None for the creation event)."""

    at: datetime
    source: JobState | None
    target: JobState
    reason: str | None
    worker: str | None


@dataclass(frozen=True, slots=True)
class StageTimingInfo(_JSONMixin):
    """How long one stage of one attempt took, in seconds."""

    stage: str
    seconds: float
    attempt: int
    at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryInfo(_JSONMixin):
    """One output instance and where it stands with its destination."""

    delivery_id: int
    destination: str
    sop_instance_uid: str
    path: str
    state: DeliveryState
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class InstanceEventInfo(_JSONMixin):
    """Something notable about a received instance (a conflicting re-send)."""

    at: datetime
    kind: str
    sop_instance_uid: str
    calling_ae: str
    peer_host: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class JobDetail(_JSONMixin):
    """Everything ``spinenode job ID`` shows: the job, its timeline, timings and deliveries."""

    summary: JobSummary
    lease_until: datetime | None
    peer_hosts: tuple[str, ...]
    first_instance_at: datetime | None
    last_instance_at: datetime | None
    events: tuple[JobEventInfo, ...]
    stages: tuple[StageTimingInfo, ...]
    deliveries: tuple[DeliveryInfo, ...]
    instance_events: tuple[InstanceEventInfo, ...]
    outputs: tuple[OutputRecord, ...]  # recorded by record_outputs(), in that order


@dataclass(frozen=True, slots=True)
class WorkerInfo(_JSONMixin):
    """A worker seen recently (by a claim attempt or a heartbeat), and the job it holds if any."""

    worker: str
    last_seen: datetime
    job_id: int | None
    lease_until: datetime | None


@dataclass(frozen=True, slots=True)
class StatusSummary(_JSONMixin):
    """What ``spinenode status`` shows (the spool's free space is added by the caller)."""

    now: datetime
    jobs_by_state: Mapping[str, int]
    deliveries_by_state: Mapping[str, int]
    workers: tuple[WorkerInfo, ...]
    recent_failures: tuple[JobSummary, ...]
