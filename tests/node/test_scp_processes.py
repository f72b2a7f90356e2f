"""The SCP in several receiving processes (node.receivers) over real associations on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.association import Association

from node import fastassoc
from node.fastassoc import EventDrivenRequestHandler
from node.receiver import DONE, READY, SERVE, STOP, Receiver
from node.receivers import ReceiverPool
from node.settings import AllowedPeer, Settings, TLSSettings
from node.spoolfile import file_content_sha256
from node.store import StoreStatus
from storage.joblog import JobLog
from storage.states import JobState
from tests.node.dicomnet import VERIFICATION, echo, make_tls_chain, send, wait_for, write_series


class Pool:
    """A :class:`ReceiverPool` and its job log on a tmp data dir, listening on a free port the
    system picks (:attr:`port`, and ``settings.port`` once started)."""

    def __init__(self, tmp_path: Path, **changes: object) -> None:
        base = Settings(data_dir=tmp_path / "var", port=0, bind_address="127.0.0.1", min_free_mb=0)
        settings = base.with_changes(scp_processes=2, **changes)
        self.joblog = JobLog.open(settings.database_url)
        self.pool = ReceiverPool(settings, self.joblog)
        self.pool.start()
        self.port = self.pool.port
        self.settings = settings.with_changes(port=self.port)

    def stop(self) -> None:
        self.pool.stop()
        self.joblog.close()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    allow = (AllowedPeer("PACS", "127.0.0.1"), AllowedPeer("WS1", "10.9.9.9"))
    running = Pool(tmp_path, max_associations=4, allow=allow)
    yield running
    running.stop()


def _associate(port: int, paths: list[Path]) -> Association:
    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(str(dcmread(paths[0]).SOPClassUID))
    ae.add_requested_context(VERIFICATION)
    return ae.associate("127.0.0.1", port, ae_title="SPINENODE")


def test_concurrent_associations_land_in_several_processes_and_are_recorded_once(
    pool: Pool, tmp_path: Path
) -> None:
    paths = write_series(tmp_path / "in", slices=8)
    datasets = [dcmread(p) for p in paths]
    associations = [_associate(pool.settings.port, paths) for _ in range(4)]
    assert all(a.is_established for a in associations)
    assert pool.pool.handed_over == [2, 2]  # the least loaded receiver gets the next one
    statuses: list[list[int]] = [[] for _ in associations]

    def store(index: int) -> None:  # every association sends the whole series, all at once
        order = datasets[index:] + datasets[:index]
        statuses[index] = [int(associations[index].send_c_store(d).Status) for d in order]
        associations[index].release()

    threads = [threading.Thread(target=store, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [[0] * 8] * 4
    (job,) = pool.joblog.jobs(state=JobState.RECEIVING)
    assert job.instances == 8  # one row per instance, 24 duplicates
    detail = pool.joblog.job(job.job_id)
    assert detail.instance_events == ()  # same bytes: duplicates, never a conflict
    files = sorted(pool.settings.spool_dir.rglob("*.dcm"))
    assert len(files) == 8 and not list(pool.settings.spool_dir.rglob(".partial-*"))
    sent = {
        str(d.SOPInstanceUID): file_content_sha256(p) for d, p in zip(datasets, paths, strict=True)
    }
    assert {f.stem: file_content_sha256(f) for f in files} == sent  # whole files, right bytes


def test_conflicting_instances_at_once_in_two_processes_keep_file_and_row_alike(
    pool: Pool, tmp_path: Path
) -> None:
    # Two senders, in two receiving processes, send different instances under the same SOP
    # Instance UIDs at the same moment: one of each pair is kept (success), the other is refused
    # as a conflict (an event), and the file kept is the one whose checksum is recorded.
    paths = write_series(tmp_path / "in", slices=8)
    variants: list[list[Dataset]] = [[], []]
    for path in paths:
        for index, variant in enumerate(variants):
            ds = dcmread(path)
            ds.SeriesDescription = f"variant {index}"
            variant.append(ds)
    associations = [_associate(pool.settings.port, paths) for _ in range(2)]
    assert pool.pool.handed_over == [1, 1]
    statuses: list[list[int]] = [[], []]

    def store(index: int) -> None:
        statuses[index] = [int(associations[index].send_c_store(d).Status) for d in variants[index]]
        associations[index].release()

    threads = [threading.Thread(target=store, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(sorted(pair) == [0, StoreStatus.CONFLICT] for pair in zip(*statuses, strict=True))
    (job,) = pool.joblog.jobs(state=JobState.RECEIVING)
    assert job.instances == 8
    assert len(pool.joblog.job(job.job_id).instance_events) == 8  # one conflict each
    for sent in variants[0]:
        uid = str(sent.SOPInstanceUID)
        (kept,) = pool.settings.spool_dir.rglob(f"{uid}.dcm")
        assert file_content_sha256(kept) == pool.joblog.recorded_sha256(uid)


def test_max_associations_are_counted_across_processes(tmp_path: Path) -> None:
    running = Pool(tmp_path, max_associations=2)
    port = running.port
    paths = write_series(tmp_path / "in", slices=1)
    try:
        first, second = _associate(port, paths), _associate(port, paths)
        assert first.is_established and second.is_established
        assert running.pool.handed_over == [1, 1]  # one in each process
        assert echo(port) is None  # the third is refused although each process has one
        first.release()
        # A free place again, at once: the receiver reports the release before it answers it.
        assert send(port, paths) == [0]
        second.release()
    finally:
        running.stop()


def test_a_peer_that_associates_again_right_after_its_release_is_accepted(tmp_path: Path) -> None:
    # At max_associations, each new association comes right after the release response of the
    # one before. Before the receiver reported a release ahead of its response, the serving
    # process still counted the released association and refused the next (most of the times).
    running = Pool(tmp_path, max_associations=1)
    port = running.port
    paths = write_series(tmp_path / "in", slices=1)
    try:
        for _ in range(12):
            association = _associate(port, paths)
            assert association.is_established
            assert int(association.send_c_echo().Status) == 0
            association.release()
        assert running.pool.handed_over[0] + running.pool.handed_over[1] == 12
    finally:
        running.stop()


def test_allowlist_and_called_ae_are_checked_in_the_receivers(pool: Pool) -> None:
    port = pool.settings.port
    assert echo(port, calling_ae="PACS") == 0
    assert echo(port, calling_ae="INTRUDER") is None
    assert echo(port, calling_ae="WS1") is None  # right AE, wrong host
    assert echo(port, calling_ae="PACS", called_ae="SOMEONE") is None
    assert sum(pool.pool.handed_over) == 4


def test_tls_association_through_a_receiver(tmp_path: Path) -> None:
    chain = make_tls_chain(tmp_path / "tls")
    tls = TLSSettings(enabled=True, cert=chain["server"], key=chain["server_key"], ca=chain["ca"])
    running = Pool(tmp_path, tls=tls)
    port = running.port
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=chain["ca"])
    client.load_cert_chain(chain["client"], chain["client_key"])
    try:
        paths = write_series(tmp_path / "in", slices=2)
        assert send(port, paths, ssl_context=client) == [0, 0]
        assert len(list(running.settings.spool_dir.rglob("*.dcm"))) == 2
        no_cert = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=chain["ca"])
        assert send(port, paths, ssl_context=no_cert) is None  # client cert required
        assert send(port, paths) is None  # plain TCP to a TLS port
        assert send(port, paths, ssl_context=client) == [0, 0]  # receivers still serve
    finally:
        running.stop()


def test_stop_ends_every_receiver(tmp_path: Path) -> None:
    running = Pool(tmp_path)
    port = running.port
    pids = running.pool.pids
    assert len(pids) == 2
    held = _associate(port, write_series(tmp_path / "in", slices=1))
    assert held.is_established
    running.stop()  # aborts the open association
    assert held.is_aborted or wait_for(lambda: held.is_aborted, timeout=10)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_receiver_falls_back_to_pynetdicom_loops_when_its_source_changed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The receiver run in this process (a spawned one cannot be patched): a connection handed
    # over on its channel is served with pynetdicom's own association loops.
    changed = dict(fastassoc.REVIEWED_SOURCES, **{"Association._run_reactor": "0" * 16})
    monkeypatch.setattr(fastassoc, "REVIEWED_SOURCES", changed)
    listener = socket.create_server(("127.0.0.1", 0))  # the acceptor's part, in this test
    port = int(listener.getsockname()[1])
    settings = Settings(data_dir=tmp_path / "var", port=port, min_free_mb=0)
    joblog = JobLog.open(settings.database_url)
    with caplog.at_level(logging.WARNING, logger="node.scp"):
        receiver = Receiver(settings, joblog, 0, ("127.0.0.1", port))
    assert "Association._run_reactor" in caplog.text
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stop = threading.Event()
    serving = threading.Thread(target=receiver.run, args=(theirs, stop))
    serving.start()
    assert ours.recv(64) == READY
    statuses: list[list[int] | None] = []
    paths = write_series(tmp_path / "in", slices=2)
    sender = threading.Thread(target=lambda: statuses.append(send(port, paths)))
    sender.start()
    conn, address = listener.accept()
    socket.send_fds(ours, [SERVE + json.dumps(list(address)).encode()], [conn.fileno()])
    conn.close()
    sender.join(30)
    assert statuses == [[0, 0]]
    assert ours.recv(64) == DONE + SERVE  # the acceptor is told when the connection closed
    handler = receiver._servers[SERVE].RequestHandlerClass
    assert isinstance(handler, type) and not issubclass(handler, EventDrivenRequestHandler)
    ours.send(STOP)
    serving.join(10)
    receiver.close()
    listener.close()
    joblog.close()


def test_a_receiver_that_dies_is_started_again(tmp_path: Path) -> None:
    running = Pool(tmp_path)
    port = running.port
    try:
        first, second = running.pool.pids
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: len(set(running.pool.pids) - {first, second}) == 1, timeout=60)
        assert second in running.pool.pids
        paths = write_series(tmp_path / "in", slices=2)
        for _ in range(3):  # whichever receiver gets them: all are served
            assert wait_for(lambda: send(port, paths) == [0, 0], timeout=30)
    finally:
        running.stop()
