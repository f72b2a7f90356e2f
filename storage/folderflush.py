"""Group flushes of folders: writers renaming into one folder at once share one fsync."""

from __future__ import annotations

import errno
import itertools
import threading
from collections.abc import Callable
from pathlib import Path


class _Flush:
    """One fsync of a folder: whether it has ended, and its error."""

    __slots__ = ("error", "finished", "started_at")

    def __init__(self) -> None:
        self.finished = False
        self.error: OSError | None = None
        self.started_at = -1  # a tick of FolderFlushes.mark's clock, once started


class _FolderState:
    """The flush of one folder in progress, the next one (which writers join), its users."""

    __slots__ = ("next", "running", "users")

    def __init__(self) -> None:
        self.running: _Flush | None = None
        self.next: _Flush | None = None
        self.users = 0


class FolderFlushes:
    """Group flushes of folders, shared by the threads of one process.

    A writer takes a :meth:`mark` right after its rename and calls :meth:`flush` with it, which
    returns once a flush (fsync) of the folder that *started after the mark* has ended: the rename
    is then on disk. When the folder's running flush started after the mark, the writer waits for
    it; otherwise it joins the next flush of the folder, which it runs itself once none is running.
    So writers that rename into one folder while its flush runs share the following fsync, and a
    writer whose rename came just before a flush started shares that one, instead of each waiting
    for one of its own. A failed flush raises its error in every writer that waited for it.
    ``flushes`` and ``requests`` count fsyncs and calls (for the benches and tests).
    """

    def __init__(self, sync: Callable[[Path], None]) -> None:
        self._sync = sync
        self._cond = threading.Condition()
        self._folders: dict[Path, _FolderState] = {}
        self._ticks = itertools.count()
        self.flushes = 0
        self.requests = 0

    def mark(self) -> int:
        """A tick of this object's clock (take it after the rename, pass it to :meth:`flush`)."""
        return next(self._ticks)

    def flush(self, folder: Path, mark: int | None = None) -> None:
        """Return once a flush of ``folder`` that started after ``mark`` (None: after this call)
        has ended; raises that flush's error."""
        with self._cond:
            self.requests += 1
            state = self._folders.setdefault(folder, _FolderState())
            state.users += 1
            running = state.running
            if running is not None and mark is not None and running.started_at > mark:
                mine = running  # it started after the rename: it covers it
            else:
                if state.next is None:
                    state.next = _Flush()
                mine = state.next  # not started yet: it starts after this call
            try:
                while not mine.finished:
                    if state.running is None:
                        self._run(folder, state, mine)
                    else:
                        self._cond.wait()
            finally:
                state.users -= 1
                if not state.users:
                    del self._folders[folder]
        if mine.error is not None:
            raise mine.error

    def _run(self, folder: Path, state: _FolderState, flush: _Flush) -> None:
        """Run ``flush`` (called and returning with the condition held)."""
        state.running, state.next = flush, None
        flush.started_at = next(self._ticks)
        self.flushes += 1
        error: OSError | None = OSError(errno.EINTR, "the folder flush was interrupted")
        self._cond.release()
        try:
            self._sync(folder)
            error = None
        except OSError as exc:
            error = exc
        finally:
            self._cond.acquire()
            flush.error, flush.finished = error, True
            state.running = None
            self._cond.notify_all()
