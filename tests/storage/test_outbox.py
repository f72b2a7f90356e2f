"""The outbox: delivery rows, backoff bookkeeping, giving up, finishing and retrying jobs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage.errors import (
    DeliveryNotFoundError,
    InvalidTransitionError,
    InvalidUIDError,
    JobNotFoundError,
)
from storage.joblog import JobLog
from storage.records import DeliveryRequest, OutputRecord
from storage.states import DeliveryState, JobState
from tests.storage.factory import T0, queued_jobs

NOW = T0 + timedelta(hours=1)
OUTPUTS = [DeliveryRequest("pacs", f"2.25.{n}", f"/work/1/out/{n}.dcm") for n in range(1, 4)]


def _delivering(log: JobLog, requests: list[DeliveryRequest] = OUTPUTS) -> int:
    (job_id,) = queued_jobs(log, 1)
    assert log.claim("w1", 60.0, NOW) is not None
    log.add_deliveries(job_id, requests)
    log.transition(job_id, JobState.DELIVERING, f"{len(requests)} outputs", worker="w1")
    return job_id


def test_deliveries_are_idempotent_and_due_only_while_delivering(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        (job_id,) = queued_jobs(log, 1)
        log.claim("w1", 60.0, NOW)
        log.add_deliveries(job_id, OUTPUTS)
        log.add_deliveries(job_id, [*OUTPUTS, DeliveryRequest("archive", "2.25.1", "/x.dcm")])
        assert len(log.job(job_id).deliveries) == 4
        assert log.due_deliveries(NOW + timedelta(days=1)) == []  # job still running
        log.transition(job_id, JobState.DELIVERING, worker="w1")
        due = log.due_deliveries(NOW + timedelta(days=1))
        assert [(d.destination, d.sop_instance_uid) for d in due] == [
            ("pacs", "2.25.1"),
            ("pacs", "2.25.2"),
            ("pacs", "2.25.3"),
            ("archive", "2.25.1"),
        ]
        assert all(d.attempts == 0 and d.job_id == job_id for d in due)
        assert len(log.due_deliveries(NOW + timedelta(days=1), limit=2)) == 2
        with pytest.raises(InvalidUIDError):
            log.add_deliveries(job_id, [DeliveryRequest("pacs", "../2.25", "/x.dcm")])


def test_failed_attempt_waits_for_backoff_then_succeeds(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        job_id = _delivering(log)
        first, *rest = log.due_deliveries(NOW + timedelta(days=1))
        retry_at = NOW + timedelta(days=1, seconds=20)
        log.delivery_attempted(first.delivery_id, False, "association rejected", retry_at)
        for d in rest:
            log.delivery_attempted(d.delivery_id, True, None, None)
        assert log.finish_if_delivered(job_id) is None  # one still pending
        assert log.due_deliveries(retry_at - timedelta(seconds=1)) == []
        (again,) = log.due_deliveries(retry_at)
        assert (again.delivery_id, again.attempts) == (first.delivery_id, 1)
        info = next(d for d in log.job(job_id).deliveries if d.delivery_id == first.delivery_id)
        assert (info.state, info.last_error, info.next_attempt_at) == (
            DeliveryState.PENDING,
            "association rejected",
            retry_at,
        )
        log.delivery_attempted(first.delivery_id, True, None, None)
        assert log.finish_if_delivered(job_id) is JobState.DONE
        detail = log.job(job_id)
        assert detail.summary.state is JobState.DONE
        assert [d.state for d in detail.deliveries] == [DeliveryState.SENT] * 3
        assert [d.attempts for d in detail.deliveries] == [2, 1, 1]
        assert log.finish_if_delivered(job_id) is None


def test_giving_up_fails_the_job_and_retry_rearms_the_deliveries(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        job_id = _delivering(log)
        first, second, third = log.due_deliveries(NOW + timedelta(days=1))
        log.delivery_attempted(first.delivery_id, False, "connection refused", None)
        assert log.finish_if_delivered(job_id) is None  # others still pending
        log.delivery_attempted(second.delivery_id, True, None, None)
        log.delivery_attempted(third.delivery_id, True, None, None)
        assert log.finish_if_delivered(job_id) is JobState.FAILED
        summary = log.job(job_id).summary
        assert summary.state is JobState.FAILED
        assert summary.reason == "1 of 3 deliveries gave up: pacs: connection refused"
        assert log.due_deliveries(NOW + timedelta(days=1)) == []
        log.retry(job_id)
        assert log.job(job_id).summary.state is JobState.DELIVERING
        (rearmed,) = log.due_deliveries(NOW + timedelta(days=1))
        assert (rearmed.delivery_id, rearmed.attempts) == (first.delivery_id, 0)
        log.delivery_attempted(first.delivery_id, True, None, None)
        assert log.finish_if_delivered(job_id) is JobState.DONE
        targets = [e.target for e in log.job(job_id).events]
        assert targets[-3:] == [JobState.FAILED, JobState.DELIVERING, JobState.DONE]


def test_retry_of_a_failed_analysis_requeues_with_attempts_reset(any_db_url: str) -> None:
    with JobLog.open(any_db_url) as log:
        (job_id,) = queued_jobs(log, 1)
        log.claim("w1", 60.0, NOW)
        log.transition(job_id, JobState.FAILED, "segmentation crashed", worker="w1")
        log.retry(job_id)
        summary = log.job(job_id).summary
        assert (summary.state, summary.attempts) == (JobState.QUEUED, 0)
        claimed = log.claim("w2", 60.0, NOW)
        assert claimed is not None and claimed.attempts == 1
        with pytest.raises(InvalidTransitionError):
            log.retry(job_id)  # running, not failed


def test_job_without_deliveries_finishes_done_and_unknown_delivery_is_an_error(
    any_db_url: str,
) -> None:
    with JobLog.open(any_db_url) as log:
        job_id = _delivering(log, [])
        assert log.finish_if_delivered(job_id) is JobState.DONE
        with pytest.raises(DeliveryNotFoundError):
            log.delivery_attempted(999, True, None, None)


def test_outputs_are_recorded_once_per_uid_in_order(any_db_url: str) -> None:
    seg = OutputRecord("2.25.7", "1.2.840.10008.5.1.4.1.1.66.4", "/work/1/seg.dcm")
    sr = OutputRecord("2.25.8", "1.2.840.10008.5.1.4.1.1.88.33", "/work/1/sr.dcm")
    with JobLog.open(any_db_url) as log:
        (job_id,) = queued_jobs(log, 1)
        log.record_outputs(job_id, [seg, sr])
        log.record_outputs(job_id, [sr])
        assert log.job(job_id).outputs == (seg, sr)
        with pytest.raises(InvalidUIDError):
            log.record_outputs(job_id, [OutputRecord("2.25/../x", "1.2", "/x")])
        with pytest.raises(JobNotFoundError):
            log.record_outputs(job_id + 1, [seg])
