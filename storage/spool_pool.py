"""Spool files made ahead of time: written with zeros and flushed, data, size and name, so that
filling one costs a flush of its data and no journal commit.

A spool write the usual way (:meth:`storage.spool.Spool.write_atomic`) waits for two journal
commits of the file system in series: the temporary file's ``fdatasync`` (its new blocks and its
size) and the folder's ``fsync`` after the rename. A pooled file already has its blocks (written,
not merely allocated: overwriting them changes no extent), its size and its name on disk, so
overwriting it in place and ``fdatasync`` leave only the data to flush (ext4 commits no
transaction for a ``fdatasync`` that changes no size and no block map; the times it changes are
not what ``fdatasync`` waits for). The writer then renames the filled file to its name in the
spool without a folder flush: until the journal's next commit the name may be lost by a power
loss, but the file is on disk under its pool name, and it carries what start-up recovery needs to
put it back (:func:`node.recovery.restore_pooled`): the caller writes a self-checking file (the
node's spool file meta holds the data set's length and checksum).

A filler thread of the process keeps up to ``files`` free files of one size in
``SPOOL.pool/<pid>-<random>/`` (beside the spool root, so nothing that walks the spool sees them),
making new ones when no file has been taken for :data:`IDLE_S`, and none before the process's
first write of the pool's size (an SCP that receives nothing, or only instances of another size,
writes nothing; the first series after a start is written the usual way, at the usual cost).
A file is taken for one write and never given back: the rename moves it out, a failure removes
it.

The pool's process holds an exclusive ``flock`` on its folder while the pool lives, so a folder
whose lock is free belongs to a process that is gone (the kernel drops the lock with the process,
however it ended). :func:`orphaned_folders` claims such folders: start-up recovery empties them
all, and a receiving process started again mid-run empties the one its dead predecessor left
(:func:`node.recovery.restore_pooled`) while the other processes' folders stay untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

#: Suffix of the pool folder beside the spool root.
POOL_DIR_SUFFIX = ".pool"
#: Pooled files are a multiple of this size (bytes).
SLOT_STEP = 64 * 1024
#: The size of the pool's first files: a 512 × 512 16-bit slice and up to 64 KiB of header.
DEFAULT_SLOT_BYTES = 9 * SLOT_STEP
#: The filler switches to another size after this many writes in a row found no file of the
#: pool's size and needed that other one (one odd instance, a scout, keeps the pool as it is).
SWITCH_AFTER = 8
#: A write takes a pooled file only when it leaves at most this much of it unused (bytes).
MAX_SLACK = 2 * SLOT_STEP
#: The filler flushes the pool folder once for this many new files.
BATCH = 8
#: Times :func:`lock_new_folder` makes its folder again when an orphan sweep removed it first.
LOCK_ATTEMPTS = 3
#: The filler makes new files only once no file was taken for this long (s): a burst of
#: instances spends the pool and the filler fills it again after the burst, off its path (while
#: instances keep coming with the pool empty, they are written the usual way, at the usual cost).
IDLE_S = 0.5
_ZEROS = bytes(SLOT_STEP)


def slot_for(nbytes: int) -> int:
    """The pooled file size that holds ``nbytes`` and at least 16 bytes more (a trailer)."""
    return -(-(nbytes + 16) // SLOT_STEP) * SLOT_STEP


class FilePool:
    """Free files of one size in ``folder``, made by a filler thread (see the module docstring).

    Parameters
    ----------
    folder
        This process's pool folder (made when missing; files already in it are left alone:
        start-up recovery deals with them).
    files
        How many free files the filler keeps ready.
    slot_bytes
        The size of the first files (a multiple of :data:`SLOT_STEP`); the filler switches to
        the size that :data:`SWITCH_AFTER` writes in a row needed and found no file of.
    reserve
        Bytes the filler leaves free on the file system (the SCP's free-space guard): below it
        it makes no file, so the pool never takes the space the usual writes need.
    """

    def __init__(
        self, folder: Path, files: int, slot_bytes: int = DEFAULT_SLOT_BYTES, reserve: int = 0
    ) -> None:
        self.folder = Path(folder)
        self.files = files
        self.reserve = reserve
        self._slot = slot_for(slot_bytes - 16)
        self._missed = (0, 0)  # the size the last writes in a row missed, how many
        self._free: list[Path] = []
        self._counter = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._taken_at: float | None = None  # no write yet: nothing is made before the first
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None  # the folder's flock, held while the pool lives

    def start(self, eager: bool = False) -> None:
        """Make and lock the folder, start the filler thread (a daemon); ``eager``: it makes
        files at once, not after the first write. When the folder cannot be made, the pool
        stays empty (a warning): every write goes the usual way."""
        try:
            self._lock_fd = lock_new_folder(self.folder)
        except OSError as exc:
            logger.warning("spool pool: cannot make %s (%s): no pooled files", self.folder, exc)
            return
        if eager:
            self._taken_at = -IDLE_S
        self._thread = threading.Thread(target=self._fill_loop, name="spool-pool", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the filler, remove the free files (nothing was written into them) and the
        folder, and let go of its lock."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._cond:
            free, self._free = self._free, []
        for path in free:
            _unlink(path)
        with contextlib.suppress(OSError):  # not empty (a failed write's file) or not there
            self.folder.rmdir()
        if self._lock_fd is not None:  # a file left in it: the next recovery takes it
            os.close(self._lock_fd)
            self._lock_fd = None

    def free_count(self) -> int:
        """How many free files are ready now."""
        with self._cond:
            return len(self._free)

    def take(self, nbytes: int) -> tuple[Path, int] | None:
        """A free file (and its size) for a write of ``nbytes`` and a trailer of at least 16
        bytes, or None (see ``slot_bytes``). Only a write that fits the pool's size (or makes
        it switch) starts the filler or holds it back: instances of another size do not make it
        write files nobody needs."""
        wanted = slot_for(nbytes)
        stale: list[Path] = []
        with self._cond:
            if wanted <= self._slot <= wanted + MAX_SLACK:
                self._missed = (0, 0)
                self._taken_at = time.monotonic()
                self._cond.notify_all()
                return (self._free.pop(), self._slot) if self._free else None
            size, count = self._missed
            self._missed = (wanted, count + 1 if size == wanted else 1)
            if self._missed[1] >= SWITCH_AFTER:
                self._slot, self._missed = wanted, (0, 0)
                stale, self._free = self._free, []
                self._taken_at = time.monotonic()
                self._cond.notify_all()
        for path in stale:
            _unlink(path)
        return None

    def _fill_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (
                    self._taken_at is None or len(self._free) >= self.files
                ):
                    self._cond.wait()
                if self._stopping or self._taken_at is None:
                    return
                busy = self._taken_at + IDLE_S - time.monotonic()
                if busy > 0:  # instances are arriving: fill the pool after them
                    self._cond.wait(busy)
                    continue
                slot, missing = self._slot, self.files - len(self._free)
            try:
                count = min(BATCH, missing, self._room(slot))
                if count <= 0:
                    with self._cond:
                        self._cond.wait(5.0)  # the disk is (nearly) full: look again later
                    continue
                made = self._make(slot, count)
            except OSError as exc:
                logger.warning("spool pool: cannot make files in %s: %s", self.folder, exc)
                with self._cond:
                    self._cond.wait(5.0)
                continue
            with self._cond:
                if slot == self._slot and not self._stopping:
                    self._free.extend(made)
                    made = []
            for path in made:  # the size changed (or closing) meanwhile
                _unlink(path)

    def _room(self, slot: int) -> int:
        """How many files of ``slot`` bytes fit above the reserve now."""
        probe = self.folder if self.folder.is_dir() else self.folder.parent
        while not probe.is_dir() and probe != probe.parent:
            probe = probe.parent
        stats = os.statvfs(probe)
        return max(0, (stats.f_bavail * stats.f_frsize - self.reserve) // slot)

    def _make(self, slot: int, count: int) -> list[Path]:
        """``count`` files of ``slot`` zero bytes, each flushed, then the folder flushed."""
        if not self.folder.is_dir():  # removed from outside: made and locked again
            fd = lock_new_folder(self.folder)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            self._lock_fd = fd
        made: list[Path] = []
        try:
            for _ in range(count):
                made.append(self._make_one(slot))
            fsync_dir(self.folder)
        except OSError:
            for path in made:
                _unlink(path)
            raise
        return made

    def _make_one(self, slot: int) -> Path:
        self._counter += 1
        path = self.folder / f"{self._counter:08d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            left = slot
            while left:  # written zeros: fallocate alone leaves unwritten extents
                left -= os.write(fd, _ZEROS[: min(left, SLOT_STEP)])
            os.fdatasync(fd)
        except OSError:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        return path


def pooled_files(pool_root: Path) -> Iterator[Path]:
    """Every file in every process's folder under ``pool_root`` (``SPOOL.pool``)."""
    if not pool_root.is_dir():
        return
    for folder in sorted(pool_root.iterdir()):
        if folder.is_dir() and not folder.is_symlink():
            yield from sorted(p for p in folder.iterdir() if p.is_file())


def lock_new_folder(folder: Path) -> int:
    """Make ``folder`` (and its parents), flush its parent, and lock it (``flock``, exclusive):
    the locked descriptor. An orphan sweep may claim the folder between its making and its
    locking and remove it (it is empty): it is made again then (:data:`LOCK_ATTEMPTS` times).

    Raises
    ------
    OSError
        The folder cannot be made, opened or locked.
    """
    for _ in range(LOCK_ATTEMPTS):
        folder.mkdir(parents=True, exist_ok=True)
        fsync_dir(folder.parent)
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a sweep holds it only while it looks inside
            if os.fstat(fd).st_nlink > 0:
                return fd
        except OSError:
            os.close(fd)
            raise
        os.close(fd)  # removed by the sweep before this lock: make it again
    raise OSError(f"{folder} was removed {LOCK_ATTEMPTS} times as it was made")


@contextmanager
def orphaned_folders(pool_root: Path) -> Iterator[list[Path]]:
    """The pool folders under ``pool_root`` whose lock nobody holds (their process is gone),
    locked by this process until the block ends: nobody else empties them meanwhile."""
    held: list[tuple[Path, int]] = []
    try:
        if pool_root.is_dir():
            for folder in sorted(pool_root.iterdir()):
                fd = _try_lock(folder)
                if fd is not None:
                    held.append((folder, fd))
        yield [folder for folder, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)


def _try_lock(folder: Path) -> int | None:
    """``folder``'s descriptor, locked; None when it is locked already, or not a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # gone, a link, a file
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: its process runs
        os.close(fd)
        return None
    return fd


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (its names) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("spool pool: cannot remove %s: %s", path, exc)
