"""The outbox: deliveries to a pynetdicom PACS on 127.0.0.1, retried while it is down.

The PACS listens on a free port the system picks (port 0); "down" is a port that this test holds
bound and does not listen on (every connection to it is refused, and nobody else can take it):
the destination is then changed to the PACS's port, as an admin would point the node at it."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread

from node.scheduler import Scheduler
from node.scu import Outbox
from node.settings import Destination, SelectionRules, Settings, TLSSettings
from node.worker import Worker, load_analyzer
from storage.joblog import JobLog
from storage.spool import Spool
from storage.states import DeliveryState, JobState
from tests.node.dicomnet import PacsSCP, make_tls_chain, receive, write_series


@dataclass
class Env:
    settings: Settings
    joblog: JobLog
    job_id: int


def _to(env: Env, pacs: PacsSCP) -> Settings:
    """``env.settings`` with the destination on the port ``pacs`` bound."""
    destination = Destination("pacs", "PACS", "127.0.0.1", pacs.port)
    return env.settings.with_changes(destinations=(destination,))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    down = socket.socket()
    down.bind(("127.0.0.1", 0))  # bound, never listening: the destination is down
    settings = Settings(
        data_dir=tmp_path / "var",
        min_free_mb=0,
        selection=SelectionRules(min_slices=4),
        analyzer="tests.node.analyzers:mip",
        max_attempts=3,
        backoff_seconds=30.0,
        backoff_max_seconds=60.0,
        acse_timeout_s=5.0,
        network_timeout_s=5.0,
        destinations=(Destination("pacs", "PACS", "127.0.0.1", down.getsockname()[1]),),
    )
    joblog = JobLog.open(settings.database_url)
    receive(joblog, Spool(settings.spool_dir), write_series(tmp_path / "in", slices=5))
    Scheduler(joblog, settings).tick(datetime.now(UTC) + timedelta(hours=1))
    worker = Worker(settings, joblog, load_analyzer(settings.analyzer), "w-test")
    job_id = worker.run_once()
    assert job_id is not None
    yield Env(settings, joblog, job_id)
    joblog.close()
    down.close()


def test_delivered_to_the_senders_pacs(env: Env, tmp_path: Path) -> None:
    pacs = PacsSCP(tmp_path / "pacs", 0).start()
    try:
        assert Outbox(env.joblog, _to(env, pacs)).tick() == 1
    finally:
        pacs.stop()
    detail = env.joblog.job(env.job_id)
    assert detail.summary.state is JobState.DONE
    (delivery,) = detail.deliveries
    assert delivery.state is DeliveryState.SENT
    assert pacs.received == [delivery.sop_instance_uid]
    stored = dcmread(tmp_path / "pacs" / f"{delivery.sop_instance_uid}.dcm")
    assert stored.StudyInstanceUID == dcmread(delivery.path).StudyInstanceUID


def test_destination_down_is_retried_with_backoff_then_delivered(env: Env, tmp_path: Path) -> None:
    outbox = Outbox(env.joblog, env.settings)
    now = datetime.now(UTC)
    assert outbox.tick(now) == 1  # nobody listening
    (delivery,) = env.joblog.job(env.job_id).deliveries
    assert delivery.state is DeliveryState.PENDING
    assert delivery.attempts == 1 and "no association" in (delivery.last_error or "")
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at - now == timedelta(seconds=30)
    assert outbox.tick(now + timedelta(seconds=10)) == 0  # not due yet
    pacs = PacsSCP(tmp_path / "pacs", 0).start()
    try:
        assert Outbox(env.joblog, _to(env, pacs)).tick(now + timedelta(seconds=31)) == 1
    finally:
        pacs.stop()
    assert env.joblog.job(env.job_id).summary.state is JobState.DONE
    assert len(pacs.received) == 1


def test_gives_up_after_max_attempts_and_retry_rearms(env: Env, tmp_path: Path) -> None:
    outbox = Outbox(env.joblog, env.settings)
    now = datetime.now(UTC)
    for minutes in range(3):
        assert outbox.tick(now + timedelta(minutes=minutes * 2)) == 1
    detail = env.joblog.job(env.job_id)
    assert detail.summary.state is JobState.FAILED
    assert detail.deliveries[0].state is DeliveryState.FAILED
    env.joblog.retry(env.job_id)  # what `spinenode retry JOB` does
    pacs = PacsSCP(tmp_path / "pacs", 0).start()
    try:
        assert Outbox(env.joblog, _to(env, pacs)).tick(now + timedelta(minutes=10)) == 1
    finally:
        pacs.stop()
    assert env.joblog.job(env.job_id).summary.state is JobState.DONE


def test_delivery_over_tls(env: Env, tmp_path: Path) -> None:
    chain = make_tls_chain(tmp_path / "tls")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=chain["ca"])
    server.load_cert_chain(chain["server"], chain["server_key"])
    server.verify_mode = ssl.CERT_REQUIRED
    pacs = PacsSCP(tmp_path / "pacs", 0, ssl_context=server).start()
    tls = TLSSettings(enabled=True, cert=chain["client"], key=chain["client_key"], ca=chain["ca"])
    settings = env.settings.with_changes(
        tls=tls, destinations=(Destination("pacs", "PACS", "127.0.0.1", pacs.port, tls=True),)
    )
    try:
        assert Outbox(env.joblog, settings).tick() == 1
    finally:
        pacs.stop()
    assert env.joblog.job(env.job_id).summary.state is JobState.DONE
    assert len(pacs.received) == 1
