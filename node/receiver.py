"""One receiving process of the SCP: associations on connections the acceptor hands over.

:mod:`node.receivers` (in the serving process) accepts each TCP connection and passes its file
descriptor to one receiving process over a Unix ``SOCK_SEQPACKET`` socket pair (``SCM_RIGHTS``).
Messages on that channel, one per datagram:

- acceptor → receiver: ``A`` + the peer address as JSON, with the descriptor: serve an association;
  ``B`` + address, with the descriptor: the node is at ``max_associations``, reject the association
  (transient, local limit exceeded) as pynetdicom would; ``S``: stop.
- receiver → acceptor: ``R`` once it is ready; ``D`` + ``A``/``B`` when an association handed over
  ends (the acceptor counts associations across all receivers with these): once per connection,
  when the peer's A-RELEASE-RQ is read, *before* the A-RELEASE-RP goes out (a peer that
  associates again as soon as it has its release response finds its place free), else when the
  connection closes (abort, rejection, failure).

A receiver runs pynetdicom's association on the socket (event-driven when the installed pynetdicom
is the reviewed one, :func:`node.scp.request_handler_class`), with TLS, the allowlist and the
called-AE check as the in-process SCP, and its own job-log connection and spool handle. It stops on
``S``, on SIGTERM (its stop event set by a :class:`node.stopsignal.SignalRelay`, never by the
handler itself), and when the channel closes (the serving process is gone): it aborts its
associations (an instance stored but not yet answered is sent again by its sender: a duplicate) and
exits. Before it serves, it empties the spool pool folders of receiving processes that are gone
(:func:`node.recovery.restore_pooled`: the acceptor starts a receiver again when one dies, and
the dead one's pooled files would otherwise stay until the next start). It logs how long its
receipt transactions took (:class:`node.store.StepTimes`; they
wait for the job log's write lock while another process writes).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom import config as pydicom_config
from pynetdicom import _config as pynetdicom_config
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from node.recovery import restore_pooled
from node.scp import (
    build_ae,
    check_requestor,
    log_association,
    request_handler_class,
    server_ssl_context,
)
from node.settings import Settings
from node.stopsignal import SignalRelay
from node.store import StoreHandler
from storage.errors import StorageError
from storage.joblog import JobLog
from storage.spool import Spool

logger = logging.getLogger(__name__)

SERVE, BUSY, STOP, READY, DONE = b"A", b"B", b"S", b"R", b"D"
#: Largest message on the channel (a kind byte and an IPv6 address as JSON fit easily).
MESSAGE_BYTES = 512
#: How long a stopping receiver waits for its aborted associations' threads.
STOP_JOIN_S = 10.0
#: Associations a receiver may hold beyond ``max_associations`` (the acceptor enforces the limit
#: across receivers; rejections in progress count in pynetdicom's own check).
REJECTING_HEADROOM = 64


class _HandOverServer(ThreadedAssociationServer):
    """pynetdicom's server without a listening socket: connections come from the acceptor."""

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.close()  # never bound nor listened on

    def server_activate(self) -> None:
        return


def _reject_busy(event: Event) -> None:
    """EVT_REQUESTED of a connection over ``max_associations``: reject it (transient, service
    provider, local limit exceeded), as pynetdicom does in one process."""
    logger.warning(
        "rejected association from %s: max_associations reached", event.assoc.requestor.address
    )
    event.assoc.acse.send_reject(0x02, 0x03, 0x02)


class _Done:
    """Calls ``report`` (``D`` + kind to the acceptor) once per connection: at its release or
    at its end, whichever comes first."""

    def __init__(self, report: Callable[[], None]) -> None:
        self._report = report
        self._lock = threading.Lock()
        self._sent = False

    def send(self) -> None:
        with self._lock:
            if self._sent:
                return
            self._sent = True
        self._report()


class Receiver:
    """Serves the connections handed over on ``channel`` until told to stop."""

    def __init__(
        self, settings: Settings, joblog: JobLog, index: int, address: tuple[Any, ...]
    ) -> None:
        self.index = index
        self.spool = Spool(settings.spool_dir)
        self.handler = StoreHandler(self.spool, joblog, settings.min_free_bytes)
        self._recover_pools(joblog)
        self.spool.start_pool(settings.scp_pool_files, reserve=settings.min_free_bytes)
        self.ssl_context = server_ssl_context(settings)
        self.ae = build_ae(settings)
        self.ae.maximum_associations = settings.max_associations + REJECTING_HEADROOM
        handler_class = _tracked(request_handler_class())
        serving = [
            (evt.EVT_C_STORE, self.handler),
            (evt.EVT_REQUESTED, check_requestor, [settings.allow]),
            (evt.EVT_ACCEPTED, log_association),
            (evt.EVT_ACSE_RECV, self._on_acse),
        ]
        self._servers = {
            SERVE: self._server(address, serving, handler_class),
            BUSY: self._server(address, [(evt.EVT_REQUESTED, _reject_busy)], handler_class),
        }
        self._threads: set[threading.Thread] = set()
        self._send_lock = threading.Lock()
        self._done: dict[socket.socket, _Done] = {}  # by the association's socket

    def _recover_pools(self, joblog: JobLog) -> None:
        """Empty the pool folders of the receiving processes that are gone (a receiver started
        again mid-run finds its predecessor's): whole files back to the spool (recorded when
        they have no receipt row), the rest removed (:func:`node.recovery.restore_pooled`). A
        failure is logged; the folder stays for the next start."""
        try:
            restored = restore_pooled(self.spool, joblog, record=True)
        except StorageError as exc:
            logger.error("receiver %d: pool folders of stopped processes: %s", self.index, exc)
            return
        if restored:
            logger.warning(
                "receiver %d: %d whole spool files of a stopped process restored to the spool",
                self.index,
                restored,
            )

    def _server(
        self, address: tuple[Any, ...], handlers: list[Any], handler: type[RequestHandler]
    ) -> ThreadedAssociationServer:
        return self.ae.make_server(
            address, evt_handlers=handlers, server_class=_HandOverServer, request_handler=handler
        )

    def run(self, channel: socket.socket, stop: threading.Event) -> None:
        """Serve what arrives on ``channel`` until ``S``, its closing, or ``stop``."""
        channel.settimeout(0.5)  # to notice `stop` (SIGTERM)
        self._send(channel, READY)
        while not stop.is_set():
            try:
                message, fds, _, _ = socket.recv_fds(channel, MESSAGE_BYTES, 1)
            except TimeoutError:
                continue
            except OSError as exc:
                logger.error("receiver %d: channel to the acceptor failed: %s", self.index, exc)
                return
            if not message or message[:1] == STOP:
                return
            if not fds:
                continue
            kind, address = message[:1], tuple(json.loads(message[1:]))
            thread = threading.Thread(
                target=self._serve,
                args=(channel, socket.socket(fileno=fds[0]), address, kind),
                name=f"receiver-{self.index}-connection",
                daemon=True,
            )
            self._threads.add(thread)
            thread.start()

    def _serve(
        self, channel: socket.socket, conn: socket.socket, address: tuple[Any, ...], kind: bytes
    ) -> None:
        """One connection: TLS handshake, the association, then ``D`` to the acceptor."""
        server = self._servers.get(kind, self._servers[BUSY])
        done = _Done(lambda: self._send(channel, DONE + kind))
        try:
            if self.ssl_context is not None:
                conn.settimeout(self.ae.acse_timeout)  # a peer that never completes the handshake
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
            self._done[conn] = done
            handler = server.RequestHandlerClass(conn, address, server)
            association = getattr(handler, "association", None)
            if isinstance(association, Association):
                association.join()
        except OSError as exc:  # ssl.SSLError included: a failed handshake, a reset peer
            logger.warning("connection from %s closed: %s", address[0], exc)
        except Exception:  # the network boundary: log it, keep serving the others
            logger.exception("receiver %d: error serving %s", self.index, address[0])
        finally:
            self._done.pop(conn, None)
            conn.close()
            done.send()
            self._threads.discard(threading.current_thread())

    def _on_acse(self, event: Event) -> None:
        """EVT_ACSE_RECV: an A-RELEASE-RQ is read in the reactor just before it answers it; the
        association's place is free from now on, so say so before the peer hears it."""
        primitive = event.primitive  # type: ignore[attr-defined]
        if not isinstance(primitive, A_RELEASE) or primitive.result is not None:
            return
        transport = event.assoc.dul.socket
        sock = transport.socket if transport is not None else None
        done = self._done.get(sock) if sock is not None else None
        if done is not None:
            done.send()

    def _send(self, channel: socket.socket, message: bytes) -> None:
        with self._send_lock:
            try:
                channel.send(message)
            except OSError:  # the acceptor is gone or stopping: nobody counts any more
                return

    def close(self) -> None:
        """Abort running associations, wait for their threads (bounded), close the spool."""
        for association in self.ae.active_associations:
            association.abort()
        deadline = time.monotonic() + STOP_JOIN_S
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
        self.spool.close()


def _tracked(handler: type[RequestHandler]) -> type[RequestHandler]:
    """``handler`` remembering the association it creates (``.association``), to wait for it."""

    class Tracked(handler):  # type: ignore[valid-type,misc]
        association: Association | None = None

        def _create_association(self) -> Association:
            created: Association = super()._create_association()
            self.association = created
            return created

    return Tracked


def _lean_libraries(verbosity: int) -> None:
    """Library settings of this process (it runs nothing but the SCP): below ``-vv`` pynetdicom
    binds no debug-logging handlers to every PDU and DIMSE message, and pydicom does not validate
    the command sets' values as it reads them (the SCP validates the UIDs it uses itself)."""
    if verbosity < 2:
        pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE


def receiver_main(
    settings: Settings,
    index: int,
    verbosity: int,
    channel: socket.socket,
    address: tuple[Any, ...],
) -> None:
    """Entry point of a receiving process (multiprocessing *spawn*); ``address`` is the listening
    address (host, port) the acceptor is bound to."""
    from node.cli import configure_logging

    configure_logging(verbosity)
    _lean_libraries(verbosity)
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the serving process stops us
    # SIGTERM sets `stop` from the relay's thread, never from the handler (node.stopsignal).
    with SignalRelay(stop, signals=(signal.SIGTERM,)):
        joblog = JobLog.open(settings.database_url)
        receiver = Receiver(settings, joblog, index, address)
        logger.info("receiver %d started", index)
        try:
            receiver.run(channel, stop)
        finally:
            receiver.close()
            joblog.close()
            channel.close()
            logger.info("receiver %d stopped: %s", index, receiver.handler.step_times.summary())
