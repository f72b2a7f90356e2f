"""The SCP's event-driven associations (node.fastassoc) over real associations on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from node import fastassoc
from node.fastassoc import EventDrivenAssociation, EventDrivenDUL
from node.fastdimse import StoreResponseDIMSE, encode_store_response
from node.scp import StorageSCP
from node.settings import Settings
from storage.joblog import JobLog
from tests.node.dicomnet import VERIFICATION, send, write_series


def test_installed_pynetdicom_is_the_reviewed_one() -> None:
    # Fails when a pynetdicom upgrade changes a function node.fastassoc relies on: review the new
    # source against node/fastassoc.py, then update REVIEWED_SOURCES (and the pin in pyproject).
    assert fastassoc.pynetdicom_mismatches() == [], pynetdicom.__version__


class _Node:
    def __init__(self, tmp_path: Path, network_timeout_s: float = 60.0) -> None:
        settings = Settings(
            data_dir=tmp_path / "var",
            port=0,  # a free port the system picks: settings.port once started
            bind_address="127.0.0.1",
            min_free_mb=0,
            network_timeout_s=network_timeout_s,
        )
        self.joblog = JobLog.open(settings.database_url)
        self.scp = StorageSCP(settings, self.joblog)
        self.scp.start()
        self.settings = settings.with_changes(port=self.scp.port)

    def acceptors(self) -> list[Association]:
        return [a for a in self.scp.ae.active_associations if a.is_acceptor]

    def stop(self) -> None:
        self.scp.stop()
        self.joblog.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[_Node]:
    running = _Node(tmp_path)
    yield running
    running.stop()


def _associate(port: int) -> Association:
    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPINENODE")
    assert assoc.is_established
    return assoc


def test_associations_are_event_driven_and_release_cleanly(node: _Node) -> None:
    assoc = _associate(node.settings.port)
    try:
        acceptors = node.acceptors()
        assert len(acceptors) == 1
        assert isinstance(acceptors[0], EventDrivenAssociation)
        assert isinstance(acceptors[0].dul, EventDrivenDUL)
        for _ in range(3):  # several requests on one association, each answered
            status = assoc.send_c_echo()
            assert status.Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released
    acceptors[0].join(10)
    assert not acceptors[0].is_alive()
    assert not acceptors[0].dul.is_alive()


def test_peer_abort_ends_the_acceptor(node: _Node) -> None:
    assoc = _associate(node.settings.port)
    acceptor = node.acceptors()[0]
    assoc.abort()
    acceptor.join(10)
    assert not acceptor.is_alive()
    assert acceptor.is_aborted


def test_stopping_the_scp_closes_an_idle_association(tmp_path: Path) -> None:
    running = _Node(tmp_path)
    assoc = _associate(running.settings.port)
    acceptor = running.acceptors()[0]
    running.stop()
    acceptor.join(10)
    assert not acceptor.is_alive()
    assoc.abort()


def test_a_series_over_one_association_is_stored(node: _Node, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "in", slices=8)
    assert send(node.settings.port, paths) == [0] * 8
    assert len(list(node.settings.spool_dir.rglob("*.dcm"))) == 8


def test_falls_back_to_pynetdicom_loops_when_its_source_changed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    changed = dict(fastassoc.REVIEWED_SOURCES, **{"Association._run_reactor": "0" * 16})
    monkeypatch.setattr(fastassoc, "REVIEWED_SOURCES", changed)
    with caplog.at_level(logging.WARNING, logger="node.scp"):
        running = _Node(tmp_path)
    try:
        assert "Association._run_reactor" in caplog.text
        assoc = _associate(running.settings.port)
        acceptor = running.acceptors()[0]
        assert not isinstance(acceptor, EventDrivenAssociation)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        paths = write_series(tmp_path / "in", slices=2)
        assert send(running.settings.port, paths) == [0, 0]
    finally:
        running.stop()


def test_an_idle_association_is_closed_after_the_network_timeout(tmp_path: Path) -> None:
    # The event-driven reactor still checks the idle timer while it waits.
    running = _Node(tmp_path, network_timeout_s=0.5)
    try:
        assoc = _associate(running.settings.port)
        acceptor = running.acceptors()[0]
        acceptor.join(10)
        assert not acceptor.is_alive()
        assoc.abort()
    finally:
        running.stop()


def _pynetdicom_response(primitive: C_STORE, context_id: int) -> list[tuple[int, bytes]]:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    pdatas = message.encode_msg(context_id, 16384)
    return [item for pdata in pdatas for item in pdata.presentation_data_value_list]


def test_store_response_bytes_are_pynetdicoms(tmp_path: Path) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.123"  # odd length: padded
    primitive.Status = 0x0000
    command = encode_store_response(primitive)
    assert command is not None
    assert [(3, b"\x03" + command)] == _pynetdicom_response(primitive, 3)
    primitive.Status = 0xA700
    setattr(primitive, "ErrorComment", "out of space")  # noqa: B010  (typed None in pynetdicom)
    assert encode_store_response(primitive) is None  # pynetdicom encodes it


def test_associations_send_store_responses_themselves(node: _Node, tmp_path: Path) -> None:
    assoc = _associate(node.settings.port)
    acceptor = node.acceptors()[0]
    assoc.release()
    assert isinstance(acceptor.dimse, StoreResponseDIMSE)
    paths = write_series(tmp_path / "in", slices=3)
    assert send(node.settings.port, paths) == [0, 0, 0]  # pynetdicom's SCU reads them
