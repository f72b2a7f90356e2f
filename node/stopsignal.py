"""SIGTERM and SIGINT as a :class:`threading.Event` set by a thread, never by the signal handler.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread is,
and that includes the few bytecodes of ``Event.wait`` that hold the event's condition lock (a plain
lock, taken on every pass of a timed wait). ``Event.set()`` called from the handler then waits for
a lock its own thread holds: the process hangs for good. ``serve`` and the workers wait on their
stop events in loops (once a second), so a SIGTERM landing in that window hung them; the window
grows when the machine is loaded and the thread is descheduled while it holds the lock.

:class:`SignalRelay` installs a handler that only takes note of the signal and writes one byte
to a socket pair (no lock taken); a relay thread reads the byte, logs the signal and sets the
event. An optional ``on_signal`` callback still runs in the handler, for what must happen in the
main thread (the worker raises there to interrupt an analysis).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalRelay:
    """Sets ``event`` from a thread when one of ``signals`` arrives (a context manager).

    Parameters
    ----------
    event
        What the signal sets.
    signals
        Which signals (installed on entry, the previous handlers restored on exit).
    on_signal
        Called in the handler, in the main thread, after the relay has been told: it may raise
        into whatever the main thread runs, and must take no lock.
    """

    def __init__(
        self,
        event: threading.Event,
        signals: Sequence[signal.Signals] = STOP_SIGNALS,
        on_signal: Callable[[signal.Signals], None] | None = None,
    ) -> None:
        self.event = event
        self.signals = tuple(signals)
        self.on_signal = on_signal
        self.received: signal.Signals | None = None
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._previous: dict[signal.Signals, Any] = {}
        self._thread = threading.Thread(target=self._relay, name="signal-relay", daemon=True)

    def __enter__(self) -> SignalRelay:
        self._thread.start()
        self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._write.close()  # the relay reads the end of the stream and returns
        self._thread.join()
        self._read.close()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """The handler: note the signal, wake the relay. No lock, no logging, no ``Event``."""
        self.received = signal.Signals(signum)
        with contextlib.suppress(OSError):  # a full buffer: the relay has bytes to read already
            self._write.send(bytes([signum]))
        if self.on_signal is not None:
            self.on_signal(self.received)

    def _relay(self) -> None:
        while True:
            try:
                data = self._read.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                logger.info("%s received; stopping", signal.Signals(signum).name)
            self.event.set()
