"""``serve``'s SCP in several processes: one acceptor, ``scp.processes`` receiving processes.

One Python process receives at about one core (the GIL), so ``serve`` spreads associations over
receiving processes (:mod:`node.receiver`). The serving process keeps the listening socket: it
accepts each connection and passes the descriptor to the receiver with the fewest connections
(``SCM_RIGHTS`` over a Unix socket pair per receiver). So the decisions that need the whole
picture stay in one place: ``max_associations`` is counted across all receivers (beyond it the
connection goes to a receiver with the order to reject it: transient, local limit exceeded, as
pynetdicom answers in one process), start-up recovery (:mod:`node.recovery`) runs once, here,
before anything listens, and the port is free as soon as this process is gone. Allowlist,
called-AE check and TLS are applied by the receiver on its connection, with the same settings.

Chosen over ``SO_REUSEPORT`` listeners in every process: the kernel spreads connections by a hash
of their addresses, so four associations from one PACS land on one process of two one time in
eight, the association limit needs shared counting, and connections queued on a listener whose
process stops are reset.

A receiver that dies is started again (after a growing delay if it keeps dying at once); the
connections it held are closed with it. :meth:`ReceiverPool.stop` stops accepting, tells every
receiver to stop (each aborts its associations and exits) and waits for them; a receiver that does
not exit in time is killed. Receivers also exit by themselves when the serving process is gone
(their channel closes), so none is left behind.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from node.receiver import BUSY, DONE, READY, SERVE, STOP, receiver_main
from node.recovery import recover_spool
from node.settings import Settings
from storage.joblog import JobLog
from storage.spool import Spool

logger = logging.getLogger(__name__)

#: How long :meth:`ReceiverPool.start` waits for every receiver to be ready.
READY_TIMEOUT_S = 60.0
#: How long a stopping receiver may take to abort its associations and exit before it is killed.
STOP_GRACE_S = 15.0
#: A receiver that exits sooner than this after its start counts as a crash loop.
QUICK_EXIT_S = 10.0
MAX_RESTART_DELAY_S = 60.0


def restart_backoff(quick_exits: int, lived_s: float) -> tuple[int, float]:
    """(quick exits in a row, seconds to wait) before starting a child again that exited after
    ``lived_s``: a child that keeps dying right after its start waits 2, 4, 8... s (up to a
    minute), so a broken installation does not spin; one that lived longer restarts at once."""
    quick = quick_exits + 1 if lived_s < QUICK_EXIT_S else 0
    return quick, (min(MAX_RESTART_DELAY_S, 2.0**quick) if quick else 0.0)


LISTEN_BACKLOG = 64


@dataclass
class _Child:
    """A receiving process as the acceptor sees it (touched only by the acceptor thread after
    :meth:`ReceiverPool.start`)."""

    index: int
    process: BaseProcess
    channel: socket.socket
    started_at: float
    ready: bool = False
    open: dict[bytes, int] = field(default_factory=lambda: {SERVE: 0, BUSY: 0})
    handed: int = 0  # connections handed over since it started

    @property
    def load(self) -> int:
        return self.open[SERVE] + self.open[BUSY]


class ReceiverPool:
    """The listening side of ``serve``: :meth:`start` returns once every receiver is ready."""

    def __init__(self, settings: Settings, joblog: JobLog, verbosity: int = 0) -> None:
        self.settings = settings
        self.joblog = joblog
        self.verbosity = verbosity
        self._context = multiprocessing.get_context("spawn")
        self._children: list[_Child | None] = [None] * settings.scp_processes
        self._quick_exits = [0] * settings.scp_processes
        self._restart_at = [0.0] * settings.scp_processes
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.handed_over = [0] * settings.scp_processes  # per receiver index, for tests/benches

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose when ``port`` is 0); 0 before
        :meth:`start`."""
        return 0 if self._listener is None else int(self._listener.getsockname()[1])

    @property
    def pids(self) -> list[int]:
        """Process ids of the running receivers."""
        return [c.process.pid for c in self._children if c is not None and c.process.pid]

    def start(self) -> None:
        """Recover the spool, listen, start the receivers and wait until they are ready."""
        spool = Spool(self.settings.spool_dir)
        removed = spool.remove_partials()
        recovered = recover_spool(spool, self.joblog)
        spool.close()
        self._listener = _bind(self.settings)
        for index in range(len(self._children)):
            self._spawn(index)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for child in self._children:
            assert child is not None
            child.channel.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                self._receive(child)
            except TimeoutError:
                logger.error("receiver %d did not start in time", child.index)
            child.channel.settimeout(None)
        self._listener.listen(
            LISTEN_BACKLOG
        )  # only now: a peer never waits for a starting receiver
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name="SCP-acceptor", daemon=True)
        self._thread.start()
        logger.info(
            "SCP %s listening on %s:%d with %d receiving processes "
            "(%d partial spool files cleaned, %d recovered)",
            self.settings.ae_title,
            self.settings.bind_address,
            self.port,
            len(self._children),
            removed,
            recovered,
        )

    def _spawn(self, index: int) -> None:
        assert self._listener is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        address = self._listener.getsockname()
        process = self._context.Process(
            target=receiver_main,
            args=(self.settings, index, self.verbosity, theirs, address),
            name=f"spinenode-receiver-{index}",
        )
        process.start()
        theirs.close()
        child = _Child(index, process, ours, time.monotonic())
        self._children[index] = child
        if self._thread is not None:  # a restart: the acceptor thread reads its messages
            self._selector.register(ours, selectors.EVENT_READ, child)
        logger.info("receiver %d started (pid %s)", index, process.pid)

    def _loop(self) -> None:
        for child in self._children:
            if child is not None:
                self._selector.register(child.channel, selectors.EVENT_READ, child)
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._wake_read.recv(64)
                elif isinstance(key.data, _Child):
                    self._read_pending(key.data)
            self._supervise()

    def _receive(self, child: _Child) -> None:
        """Read one message of ``child``: ready, or a connection done."""
        try:
            message = child.channel.recv(64)
        except TimeoutError:
            raise
        except OSError:
            message = b""
        self._handle(child, message)

    def _handle(self, child: _Child, message: bytes) -> None:
        if message == READY:
            child.ready = True
        elif message[:1] == DONE and message[1:] in child.open:
            child.open[message[1:]] = max(0, child.open[message[1:]] - 1)
        elif not message:  # the receiver is gone; _supervise starts it again
            self._forget(child)

    def _read_pending(self, child: _Child) -> None:
        """Handle every message already waiting on ``child``'s channel, without blocking.

        Also called before a connection is refused for ``max_associations``: a receiver says that
        an association was released before the peer has the release response, so a peer that
        associates again at once finds the place free even when the selector has not yet
        reported that message."""
        while True:
            try:
                message = child.channel.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            self._handle(child, message)
            if not message:
                return

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, address = self._listener.accept()
        except OSError as exc:  # e.g. out of descriptors, or the peer reset before accept
            logger.error("accepting a connection failed: %s", exc)
            return
        with conn:
            ready = [c for c in self._children if c is not None and c.ready]
            if not ready:
                logger.error("connection from %s closed: no receiving process is ready", address[0])
                return
            if sum(c.open[SERVE] for c in ready) >= self.settings.max_associations:
                for child in ready:
                    self._read_pending(child)
                ready = [c for c in ready if c.ready]
            if not ready:
                logger.error("connection from %s closed: no receiving process is ready", address[0])
                return
            child = min(ready, key=lambda c: (c.load, c.handed))
            open_total = sum(c.open[SERVE] for c in ready)
            kind = BUSY if open_total >= self.settings.max_associations else SERVE
            message = kind + json.dumps(list(address)).encode()
            try:
                socket.send_fds(child.channel, [message], [conn.fileno()])
            except OSError as exc:
                logger.error("handing a connection to receiver %d failed: %s", child.index, exc)
                return
            child.open[kind] += 1
            child.handed += 1
            self.handed_over[child.index] += 1
            if kind == BUSY:
                logger.warning(
                    "association from %s refused: max_associations (%d) reached",
                    address[0],
                    self.settings.max_associations,
                )

    def _forget(self, child: _Child) -> None:
        if child.ready or child.load:
            logger.error("receiver %d (pid %s) is gone", child.index, child.process.pid)
        child.ready = False
        child.open = {SERVE: 0, BUSY: 0}
        try:
            self._selector.unregister(child.channel)
        except (KeyError, ValueError):
            return

    def _supervise(self) -> None:
        """Start again the receivers that died (a growing delay when they die at once)."""
        now = time.monotonic()
        for index, child in enumerate(self._children):
            if child is not None and child.process.is_alive():
                continue
            if child is not None:
                self._forget(child)
                child.channel.close()
                child.process.join()
                lived = now - child.started_at
                self._quick_exits[index], delay = restart_backoff(self._quick_exits[index], lived)
                logger.error(
                    "receiver %d exited with %s after %.0f s; starting it again in %.0f s",
                    index,
                    child.process.exitcode,
                    lived,
                    delay,
                )
                self._children[index] = None
                self._restart_at[index] = now + delay
            if now >= self._restart_at[index] and not self._stopping.is_set():
                self._spawn(index)

    def stop(self) -> None:
        """Stop accepting, stop every receiver (they abort their associations), wait for them."""
        self._stopping.set()
        self._wake_write.send(b"\0")
        if self._thread is not None:
            self._thread.join()
        if self._listener is not None:
            self._listener.close()
        children = [c for c in self._children if c is not None]
        for child in children:
            try:
                child.channel.send(STOP)
            except OSError:  # already gone
                continue
        for child in children:
            child.process.join(STOP_GRACE_S)
            if child.process.is_alive():
                logger.error("receiver pid %s did not stop in time; killing it", child.process.pid)
                child.process.kill()
                child.process.join()
            child.channel.close()
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()


def _bind(settings: Settings) -> socket.socket:
    """The socket bound to ``bind_address:port`` (IPv6 when the address has a colon), not yet
    listening."""
    family = socket.AF_INET6 if ":" in settings.bind_address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.bind_address, settings.port))
    except OSError:
        sock.close()
        raise
    return sock
