"""Event-driven waits for the SCP's associations, in place of pynetdicom's 1 ms polling.

pynetdicom 3.0.4 polls. Its DUL thread sleeps ``_run_loop_delay`` (1 ms) whenever a loop found
nothing to do, and the acceptor's reactor (``Association._run_reactor``) sleeps a hard-coded 1 ms
on every loop. One C-STORE crosses such a wait about three times (message complete → handler;
response queued → sent; next request's first PDU → read): up to ~3 ms per instance, as much as
the node's whole durable path.

:class:`EventDrivenRequestHandler` (the server's request handler) turns the association it creates
into one that waits for work instead:

- the DUL thread blocks in ``select()`` on the peer's socket and a wake-up socket pair; every put
  on its event queue and its to-provider queue (the handler's response, a release, an abort)
  writes a byte to the wake-up socket;
- the reactor blocks on a :class:`threading.Event` set by every put on the DIMSE message queue and
  on the DUL's to-user queue (release and abort requests), and when the DUL thread ends.

The association's socket reads a PDU with as few ``recv_into`` calls as the kernel allows
(:class:`BulkReadSocket`) instead of pynetdicom's 4 KiB ``recv`` calls joined in a bytearray
(about 130 of them per 512 KiB CT slice), and its DIMSE provider encodes successful C-STORE
responses itself (:class:`node.fastdimse.StoreResponseDIMSE`).

Both waits end after :data:`IDLE_POLL_S` at the latest, so the timers (ARTIM, network idle) and
the kill flags are checked as before; an idle association wakes 2 × 50 times a second instead of
2 × 1000 (no busy loop). Nothing in site-packages changes. The code relies on the structure of a
few pynetdicom functions: their source digests are in :data:`REVIEWED_SOURCES`,
:func:`pynetdicom_mismatches` compares them with the installed pynetdicom, and the SCP falls back
to the plain handler (with a warning) when they differ; a test fails on such an upgrade too.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import queue
import select
import socket
import threading
from collections.abc import Callable
from typing import TypeVar, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler

from node.fastdimse import StoreResponseDIMSE

logger = logging.getLogger(__name__)

#: The longest an idle association waits before it checks its timers and kill flags again (s).
IDLE_POLL_S = 0.02

#: sha256 (first 16 hex digits) of the pynetdicom functions whose structure this module relies on
#: (pynetdicom 3.0.4).
#: ``Association._run_reactor`` is mirrored by :meth:`EventDrivenAssociation._run_reactor`; the
#: DUL loop calls ``_is_transport_event`` only when no primitive is pending, and puts events on
#: ``event_queue``; the request handler creates the association before starting it.
REVIEWED_SOURCES = {
    "Association._run_reactor": "f28838c5559e462a",
    "DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "DULServiceProvider._is_transport_event": "8725ed03bb8fbdef",
    "DULServiceProvider._process_recv_primitive": "4c0ebbb3e646e35e",
    "RequestHandler.handle": "034823fb4df3a874",
    "RequestHandler._create_association": "05c8d12b79863cdb",
    "AssociationSocket.recv": "6bc20a33b1b7cfe7",
    "DIMSEServiceProvider.send_msg": "a839cf2fb46976d9",
}

_T = TypeVar("_T")


def _source_digests() -> dict[str, str]:
    functions: dict[str, Callable[..., object]] = {
        "Association._run_reactor": Association._run_reactor,
        "DULServiceProvider.run_reactor": DULServiceProvider.run_reactor,
        "DULServiceProvider._is_transport_event": DULServiceProvider._is_transport_event,
        "DULServiceProvider._process_recv_primitive": DULServiceProvider._process_recv_primitive,
        "RequestHandler.handle": RequestHandler.handle,
        "RequestHandler._create_association": RequestHandler._create_association,
        "AssociationSocket.recv": AssociationSocket.recv,
        "DIMSEServiceProvider.send_msg": DIMSEServiceProvider.send_msg,
    }
    return {
        name: hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]
        for name, function in functions.items()
    }


def pynetdicom_mismatches() -> list[str]:
    """The reviewed pynetdicom functions whose source differs from the installed one (none: the
    event-driven association is safe to use)."""
    digests = _source_digests()
    return sorted(name for name, digest in REVIEWED_SOURCES.items() if digests.get(name) != digest)


class _Waker:
    """A socket pair the DUL thread selects on; :meth:`wake` (any thread) makes it readable.

    A wake-up is written only while the DUL thread is :attr:`waiting` (it then checks its queues
    after raising the flag and before ``select()``, so no put is missed) and only once until it is
    drained: a put from the DUL thread itself, or one while it is busy, costs no system call.
    """

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self.waiting = False
        self._signalled = False

    def fileno(self) -> int:
        return self._read.fileno()

    def wake(self) -> None:
        if not self.waiting or self._signalled:
            return
        self._signalled = True
        try:
            self._write.send(b"\0")
        except OSError:  # buffer full: a wake-up is pending anyway; closed: nobody waits any more
            return

    def drain(self) -> None:
        self._signalled = False  # first: a wake-up after this writes again
        try:
            while self._read.recv(4096):
                continue
        except OSError:  # BlockingIOError: drained
            return

    def close(self) -> None:
        self._read.close()
        self._write.close()


class _WakingQueue(queue.Queue[_T]):
    """A queue that calls ``wake`` after every put."""

    def __init__(self, wake: Callable[[], None], items: queue.Queue[_T]) -> None:
        super().__init__()
        self._wake = wake
        while True:  # take over what was queued before the swap (not yet read by anyone)
            try:
                super().put(items.get_nowait())
            except queue.Empty:
                break

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class EventDrivenDUL(DULServiceProvider):
    """The DUL provider whose idle wait is a ``select()`` on the socket and a wake-up socket."""

    _waker: _Waker
    _activity: threading.Event

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            self._waker.close()
            self._activity.set()  # the reactor checks whether the DUL is still alive

    def kill_dul(self) -> None:
        super().kill_dul()
        self._waker.wake()

    def _is_transport_event(self) -> bool:
        if super()._is_transport_event():
            return True
        return self._wait_for_work()

    def _wait_for_work(self) -> bool:
        """Block until there is something to do; True if a received PDU was queued as an event.

        Returns False (to the loop, which then runs the queued event or sleeps its usual delay)
        when an event or a primitive is pending, and after :data:`IDLE_POLL_S` without work.
        """
        transport = self.socket
        sock = transport.socket if transport is not None else None
        waker = self._waker
        while sock is not None and not self._kill_thread:
            fd = sock.fileno()
            if fd < 0:
                return False
            waker.waiting = True  # before the checks: a put after them writes a wake-up
            try:
                idle = self.event_queue.empty() and self.to_provider_queue.empty()
                readable = _select(fd, waker.fileno()) if idle else []
            finally:
                waker.waiting = False
            if not idle:
                if self.event_queue.empty():
                    self._process_recv_primitive()  # queue the primitive's event
                return False
            if readable is None:  # timed out, or the socket was closed meanwhile
                return False
            if fd in readable:
                return super()._is_transport_event()
            waker.drain()
        return False


def _select(fd: int, waker: int) -> list[int] | None:
    """The readable ones of ``fd`` and ``waker`` within :data:`IDLE_POLL_S`; None if neither is
    (or ``fd`` was closed meanwhile: the DUL loop's own check reports that)."""
    try:
        readable, _, _ = select.select([fd, waker], [], [], IDLE_POLL_S)
    except (OSError, ValueError):
        return None
    return readable or None


class EventDrivenAssociation(Association):
    """An acceptor whose reactor waits on an event instead of sleeping 1 ms per loop."""

    _activity: threading.Event

    def _run_reactor(self) -> None:
        # Mirrors pynetdicom 3.0.4's Association._run_reactor (see REVIEWED_SOURCES); only the
        # `time.sleep(0.001)` at the top of the loop became the wait on `_activity`.
        self._is_paused = False
        while not self._kill:
            self._activity.wait(IDLE_POLL_S)
            self._activity.clear()  # before the checks: a put after them sets it again
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))
            if self._reactor_should_stop():
                return

    def _reactor_should_stop(self) -> bool:
        # Mirrors the checks after serving a request in pynetdicom's _run_reactor.
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            logger.info("association released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            logger.info(
                "association aborted%s", " (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else ""
            )
            self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires for subscribers
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            logger.error("network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False


class BulkReadSocket(AssociationSocket):
    """An association socket whose :meth:`recv` reads into one buffer with ``recv_into``."""

    def recv(self, nr_bytes: int) -> bytearray:
        # As pynetdicom 3.0.4's AssociationSocket.recv (see REVIEWED_SOURCES): block until
        # `nr_bytes` are read, or return what was read when the peer closed the connection.
        sock = cast(socket.socket, self.socket)
        buffer = bytearray(nr_bytes)
        nr_read = 0
        with memoryview(buffer) as view:
            while nr_read < nr_bytes:
                got = sock.recv_into(view[nr_read:])
                if not got:
                    break
                nr_read += got
        if nr_read < nr_bytes:
            del buffer[nr_read:]
        return buffer


def make_event_driven(assoc: Association) -> None:
    """Turn a freshly created acceptor (threads not started yet) into an event-driven one."""
    dul = assoc.dul
    if assoc.is_alive() or dul.is_alive():
        raise RuntimeError("make_event_driven needs an association that has not started yet")
    activity = threading.Event()
    waker = _Waker()
    assoc.__class__ = EventDrivenAssociation
    dul.__class__ = EventDrivenDUL
    cast(EventDrivenAssociation, assoc)._activity = activity
    fast_dul = cast(EventDrivenDUL, dul)
    fast_dul._waker = waker
    fast_dul._activity = activity
    if isinstance(dul.socket, AssociationSocket):
        dul.socket.__class__ = BulkReadSocket
    if type(assoc.dimse) is DIMSEServiceProvider:
        assoc.dimse.__class__ = StoreResponseDIMSE
    dul.event_queue = _WakingQueue(waker.wake, dul.event_queue)
    dul.to_provider_queue = _WakingQueue(waker.wake, dul.to_provider_queue)
    dul.to_user_queue = _WakingQueue(activity.set, dul.to_user_queue)
    assoc.dimse.msg_queue = _WakingQueue(activity.set, assoc.dimse.msg_queue)


class EventDrivenRequestHandler(RequestHandler):
    """The server's request handler: associations as pynetdicom makes them, made event-driven."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        make_event_driven(assoc)
        return assoc
