"""Stored states of jobs, received instances and deliveries, and the allowed job transitions."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life (stored lower-case in the job log)."""

    RECEIVING = "receiving"
    QUEUED = "queued"
    RUNNING = "running"
    DELIVERING = "delivering"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class ReceiptOutcome(StrEnum):
    """What :meth:`storage.joblog.JobLog.record_instance` made of a received instance."""

    NEW = "new"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: nothing new recorded
    CONFLICT = "conflict"  # same SOP Instance UID, different bytes: an instance event, file kept


class DeliveryState(StrEnum):
    """State of one output instance on its way to one destination."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after the maximum number of attempts


#: Job states a job never leaves by itself (``retry`` re-opens FAILED).
FINAL_STATES = frozenset({JobState.DONE, JobState.SKIPPED, JobState.FAILED})

#: The transitions :meth:`~storage.joblog.JobLog.transition` accepts. RUNNING → RUNNING (a re-claim
#: after an expired lease) happens only inside :meth:`~storage.joblog.JobLog.claim`.
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.RECEIVING: frozenset({JobState.QUEUED, JobState.SKIPPED, JobState.FAILED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.SKIPPED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.DELIVERING, JobState.DONE, JobState.SKIPPED, JobState.FAILED}
    ),
    JobState.DELIVERING: frozenset({JobState.DONE, JobState.FAILED}),
    JobState.DONE: frozenset(),
    JobState.SKIPPED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.DELIVERING}),
}


def transition_allowed(source: JobState, target: JobState) -> bool:
    """Whether a job in ``source`` may move to ``target``."""
    return target in ALLOWED_TRANSITIONS[source]
