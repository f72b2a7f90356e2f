"""The spool: received instances as files under one root, named only by validated UIDs.

Layout: ``ROOT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Files are written
atomically (temporary file in the same folder, fdatasync, rename, fsync of the folder), so a crash
or a full disk never leaves a partial instance under its final name; every step runs in the
writer's own thread and has ended when :meth:`Spool.write_atomic` returns.
:meth:`Spool.instance_lock` makes writers of the same SOP Instance UID take turns, across threads
and processes (lock files in ``ROOT.locks``, a folder beside the spool, so the spool holds nothing
but instances).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from storage.errors import InvalidUIDError, SpoolError
from storage.spool_pool import (
    DEFAULT_SLOT_BYTES,
    POOL_DIR_SUFFIX,
    FilePool,
    fsync_dir,
    orphaned_folders,
    pooled_files,
)

logger = logging.getLogger(__name__)

MAX_UID_LENGTH = 64
_UID_PATTERN = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
#: Prefix of the temporary files; never a valid UID, so never mistaken for an instance.
TMP_PREFIX = ".partial-"
#: What follows the data in a pooled file: given the bytes left after the data, the bytes to
#: write there (they must make the rest of the file, zeros, part of the file's format), or None
#: when the data cannot be padded so (the write then goes the usual way).
Trailer = Callable[[int], bytes | None]
#: Suffix of the folder of the instance lock files, beside the spool root.
LOCK_DIR_SUFFIX = ".locks"
#: Instance UIDs share this many lock files (by CRC-32): two UIDs rarely wait for each other.
LOCK_STRIPES = 64
#: Times :meth:`Spool.write_atomic` creates the folders and the temporary file when the folder
#: vanishes in between (retention removes an empty series folder at that moment).
CREATE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class WriteTimes:
    """Seconds each step of one :meth:`Spool.write_atomic` took (wall clock)."""

    create_s: float  # the folders (when missing) and the temporary file
    write_s: float
    datasync_s: float  # fdatasync of the temporary file
    rename_s: float
    folder_sync_s: float  # fsync of the folder after the rename
    pooled: bool = False  # written into a pooled file (:mod:`storage.spool_pool`)
    #: The file's size on disk: the data's length, or the pooled file's (padded) size. What
    #: deleting the file frees, and what the job log records (retention's preview sums it).
    file_bytes: int = 0


def validate_uid(uid: str) -> str:
    """Return ``uid`` if it is a valid DICOM UID (PS3.5 §9.1), else raise :class:`InvalidUIDError`.

    A valid UID is 1 to 64 characters of digits and dots, in components without a leading zero
    (except the component ``0``). This is what makes a UID from the wire safe as a file name.
    """
    if not isinstance(uid, str):
        raise InvalidUIDError(f"UID must be a string, got {type(uid).__name__}", uid)
    if not uid:
        raise InvalidUIDError("UID is empty", uid)
    if len(uid) > MAX_UID_LENGTH:
        raise InvalidUIDError(
            f"UID is {len(uid)} characters long; DICOM allows at most {MAX_UID_LENGTH}", uid
        )
    if not _UID_PATTERN.fullmatch(uid):
        raise InvalidUIDError(
            f"UID {uid!r} is not a DICOM UID: only digits and dots, no empty components, "
            "no leading zeros",
            uid,
        )
    return uid


class Spool:
    """Files under ``root``; paths are built only from validated UIDs.

    Parameters
    ----------
    root
        The spool folder; created (with its parents) on the first write.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.pool_root = self.root.with_name(self.root.name + POOL_DIR_SUFFIX)
        self._locks = _StripeLocks(self.root.with_name(self.root.name + LOCK_DIR_SUFFIX))
        self._pool: FilePool | None = None

    def start_pool(
        self,
        files: int,
        slot_bytes: int = DEFAULT_SLOT_BYTES,
        eager: bool = False,
        reserve: int = 0,
    ) -> None:
        """Keep ``files`` pooled files ready for :meth:`write_atomic` (:mod:`storage.spool_pool`;
        ``slot_bytes`` the size of the first ones), in a folder of this process under
        :attr:`pool_root`; 0 keeps none. The files are made after the first write (at once when
        ``eager``), and only while more than ``reserve`` bytes stay free. Start it after
        start-up recovery, which empties the pool folders."""
        if files > 0 and self._pool is None:
            folder = self.pool_root / f"{os.getpid()}-{os.urandom(4).hex()}"
            self._pool = FilePool(folder, files, slot_bytes, reserve)
            self._pool.start(eager)

    def pool_free(self) -> int:
        """How many pooled files are ready now (0 without a pool)."""
        return 0 if self._pool is None else self._pool.free_count()

    def close(self) -> None:
        """Close the lock files this object opened (it can still be used; they open again) and
        stop the pool (its free files are removed)."""
        self._locks.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def pooled_files(self) -> list[Path]:
        """Every file in the pool folders of every process."""
        return list(pooled_files(self.pool_root))

    def orphaned_pools(self) -> AbstractContextManager[list[Path]]:
        """The pool folders of processes that are gone (recovery's input), locked by this
        process until the block ends (:func:`storage.spool_pool.orphaned_folders`)."""
        return orphaned_folders(self.pool_root)

    @contextmanager
    def receipt_lock(self) -> Iterator[None]:
        """Hold the lock every receiving thread and process takes around its receipt transaction.

        The job log's write lock would serialise the receipts anyway, but a SQLite writer that
        finds it taken polls with growing sleeps (1, 2, 5, 10 ... 100 ms); a waiter on this lock
        is woken as soon as it is released. Take it inside :meth:`instance_lock`, never around it.
        """
        with self._locks.hold_receipts():
            yield

    @contextmanager
    def instance_lock(self, sop_instance_uid: str) -> Iterator[None]:
        """Hold the lock of ``sop_instance_uid``: every thread of every process using this spool
        that holds it for the same UID waits (``flock`` on a lock file, after a thread lock)."""
        with self._locks.hold(sop_instance_uid):
            yield

    @contextmanager
    def instance_locks(self, sop_instance_uids: Iterable[str]) -> Iterator[None]:
        """Hold the locks of all these UIDs at once (retention, while it deletes a series' files:
        a writer that has looked at a file finishes before it goes). Taken in a fixed order, and
        writers hold one at a time, so nobody waits in a circle."""
        with self._locks.hold_all(sop_instance_uids):
            yield

    def instance_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where the instance is kept; raises :class:`InvalidUIDError` for any invalid UID."""
        return (
            self.root
            / validate_uid(study_uid)
            / validate_uid(series_uid)
            / f"{validate_uid(sop_instance_uid)}.dcm"
        )

    def write_atomic(
        self,
        path: Path,
        data: bytes | Sequence[bytes | memoryview],
        trailer: Trailer | None = None,
    ) -> WriteTimes:
        """Write ``data`` (bytes, or buffers written one after the other) to ``path`` (inside the
        spool) so that it is either whole or absent; returns how long each step took.

        The steps run in this thread, one after the other: temporary file, write, fdatasync,
        rename, fsync of the folder. When it returns, the data and the file's name are on disk.
        With a pool (:meth:`start_pool`) and a ``trailer``, a pooled file that fits is used
        instead: write (``data``, then the trailer), fdatasync, rename, no folder fsync. When it
        returns, the data is on disk, under ``path`` or under its pool name (a power loss may
        lose the rename; start-up recovery renames it again: the caller's data must let it).

        Raises
        ------
        SpoolError
            ``path`` is outside the spool, or any step failed (disk full, permissions, I/O); no
            temporary or partial file remains, and when the folder's fsync failed the renamed file
            is removed too.
        """
        path = self._inside(path)
        parts: list[bytes | memoryview] = [data] if isinstance(data, bytes) else list(data)
        if trailer is not None and self._pool is not None:
            written = self._write_pooled(self._pool, path, parts, trailer)
            if written is not None:
                return written
        started = time.perf_counter()
        fd, tmp_name = self._create_temporary(path.parent)
        marks = [started, time.perf_counter()]
        renamed = False
        try:
            try:
                for part in parts:
                    _write_all(fd, part)
                marks.append(time.perf_counter())
                # The data and the size (what reading it back needs), not the times: fdatasync.
                os.fdatasync(fd)
            finally:
                os.close(fd)
            marks.append(time.perf_counter())
            self._replace(tmp_name, path)
            marks.append(time.perf_counter())
            renamed = True
            self.sync_folder(path.parent)
        except OSError as exc:
            _unlink_quietly(Path(tmp_name))
            if renamed:  # the name may not be on disk: a re-send must not find it and pass it
                _unlink_quietly(path)
            raise SpoolError(f"cannot write {path}: {exc}", str(path)) from exc
        except BaseException:
            _unlink_quietly(Path(tmp_name))
            raise
        return _write_times(marks, time.perf_counter(), sum(len(part) for part in parts))

    def _write_pooled(
        self, pool: FilePool, path: Path, parts: list[bytes | memoryview], trailer: Trailer
    ) -> WriteTimes | None:
        """Fill a pooled file and rename it to ``path``; None when no pooled file fits."""
        size = sum(len(part) for part in parts)
        taken = pool.take(size)
        if taken is None:
            return None
        pooled, slot = taken
        tail = trailer(slot - size)
        if tail is None or size + len(tail) > slot:
            _unlink_quietly(pooled)
            return None
        started = time.perf_counter()
        try:
            fd = os.open(pooled, os.O_WRONLY)
            try:
                for part in [*parts, tail]:
                    _write_all(fd, part)
                written = time.perf_counter()
                os.fdatasync(fd)  # overwritten blocks, same size: the data only
            finally:
                os.close(fd)
            synced = time.perf_counter()
            self._move_in(pooled, path)
        except OSError as exc:
            _unlink_quietly(pooled)
            raise SpoolError(f"cannot write {path}: {exc}", str(path)) from exc
        except BaseException:
            _unlink_quietly(pooled)
            raise
        renamed = time.perf_counter()
        steps = (0.0, written - started, synced - written, renamed - synced, 0.0)
        return WriteTimes(*steps, pooled=True, file_bytes=slot)

    def _move_in(self, pooled: Path, path: Path) -> None:
        """Rename a filled pooled file to ``path`` (folders made when missing, again when
        retention removes the empty series folder in between)."""
        attempt = 1
        while True:
            try:
                self._make_dirs(path.parent)
                self._replace(str(pooled), path)
                return
            except FileNotFoundError:
                if attempt >= CREATE_ATTEMPTS or not pooled.exists():
                    raise
                logger.info("spool folder %s went away while a file was moved in", path.parent)
                attempt += 1

    def place_pooled(self, pooled: Path, path: Path) -> None:
        """Start-up recovery: rename a filled pooled file to ``path`` and flush the folder."""
        self._move_in(pooled, self._inside(path))
        fsync_dir(path.parent)

    def _create_temporary(self, folder: Path) -> tuple[int, str]:
        """A new temporary file in ``folder`` (made when missing): its descriptor and name.

        Retention removes a series folder once it is empty; when that happens between making the
        folder and creating the file, the folder is made again (:data:`CREATE_ATTEMPTS` times).
        """
        attempt = 1
        while True:
            try:
                self._make_dirs(folder)
                return tempfile.mkstemp(prefix=TMP_PREFIX, dir=folder)
            except FileNotFoundError as exc:
                if attempt >= CREATE_ATTEMPTS:
                    raise SpoolError(
                        f"cannot create a file in {folder}: {exc}", str(folder)
                    ) from exc
                logger.info("spool folder %s went away while a file was made in it", folder)
                attempt += 1
            except OSError as exc:
                raise SpoolError(f"cannot create a file in {folder}: {exc}", str(folder)) from exc

    def _replace(self, tmp_name: str, path: Path) -> None:
        """Rename the written temporary file to its final name (a seam for the tests' records)."""
        os.replace(tmp_name, path)

    def sync_folder(self, folder: Path) -> None:
        """fsync ``folder``: the names renamed or created in it are on disk when this returns."""
        fsync_dir(folder)

    def free_bytes(self) -> int:
        """Bytes available to this process on the spool's file system."""
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        stats = os.statvfs(probe)
        return stats.f_bavail * stats.f_frsize

    def remove_partials(self) -> int:
        """Delete temporary files left by a crash mid-write; returns how many were removed."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for tmp in self.root.rglob(f"{TMP_PREFIX}*"):
            _unlink_quietly(tmp)
            removed += 1
        if removed:
            logger.info("removed %d partial spool files under %s", removed, self.root)
        return removed

    def instance_files(self) -> Iterator[Path]:
        """Every instance file in the spool (``ROOT/STUDY/SERIES/SOP.dcm``, all three valid UIDs;
        temporary files and anything else are left out)."""
        if not self.root.is_dir():
            return
        for path in self.root.glob("*/*/*.dcm"):
            study, series = path.parent.parent.name, path.parent.name
            if all(_UID_PATTERN.fullmatch(uid) for uid in (study, series, path.stem)):
                yield path

    def _inside(self, path: Path) -> Path:
        path = Path(path).absolute()
        if os.path.normpath(path) != str(path) or not path.is_relative_to(self.root):
            raise SpoolError(f"{path} is not a plain path inside the spool {self.root}", str(path))
        if path == self.root or path.name.startswith(TMP_PREFIX):
            raise SpoolError(f"{path} is not a file name the spool can use", str(path))
        return path

    def _make_dirs(self, folder: Path) -> None:
        missing: list[Path] = []
        probe = folder
        while not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue  # another process made it in the meantime
            fsync_dir(new.parent)  # the new folder's entry survives a crash


class _StripeLocks:
    """:data:`LOCK_STRIPES` locks for instances and one more for receipts, each a thread lock plus
    ``flock`` on a file (opened lazily, once per process): the thread lock first, because
    ``flock`` does not exclude the threads sharing one open file."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._threads = [threading.Lock() for _ in range(LOCK_STRIPES + 1)]
        self._fds: dict[int, int] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._hold_stripe(_stripe(key)):
            yield

    @contextmanager
    def hold_all(self, keys: Iterable[str]) -> Iterator[None]:
        with ExitStack() as stack:
            for stripe in sorted({_stripe(key) for key in keys}):  # ascending: no lock cycles
                stack.enter_context(self._hold_stripe(stripe))
            yield

    def hold_receipts(self) -> AbstractContextManager[None]:
        """The extra stripe, which no instance UID maps to."""
        return self._hold_stripe(LOCK_STRIPES)

    @contextmanager
    def _hold_stripe(self, stripe: int) -> Iterator[None]:
        with self._threads[stripe]:
            fd = self._fds.get(stripe)
            if fd is None:
                fd = self._open(stripe)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self, stripe: int) -> int:
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._folder / f"{stripe:02d}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot open the lock files in {self._folder}: {exc}") from exc
        self._fds[stripe] = fd  # under the stripe's thread lock: opened once
        return fd

    def close(self) -> None:
        for stripe in list(self._fds):
            with self._threads[stripe]:
                os.close(self._fds.pop(stripe))


def _write_times(marks: list[float], flushed: float, size: int) -> WriteTimes:
    started, created, written, synced, renamed = marks
    return WriteTimes(
        created - started,
        written - created,
        synced - written,
        renamed - synced,
        flushed - renamed,
        file_bytes=size,
    )


def _stripe(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "replace")) % LOCK_STRIPES


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # the original error matters more; this one is only logged
        logger.warning("could not remove temporary file %s: %s", path, exc)
