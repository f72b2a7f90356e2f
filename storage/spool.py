"""The spool: received instances as files under one root, named only by validated UIDs.

Layout: ``ROOT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. Files are written
atomically (temporary file in the same folder, fsync, rename, fsync of the folder), so a crash or
a full disk never leaves a partial instance under its final name.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from storage.errors import InvalidUIDError, SpoolError

logger = logging.getLogger(__name__)

MAX_UID_LENGTH = 64
_UID_PATTERN = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
#: Prefix of the temporary files; never a valid UID, so never mistaken for an instance.
TMP_PREFIX = ".partial-"


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

    def instance_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where the instance is kept; raises :class:`InvalidUIDError` for any invalid UID."""
        return (
            self.root
            / validate_uid(study_uid)
            / validate_uid(series_uid)
            / f"{validate_uid(sop_instance_uid)}.dcm"
        )

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` (inside the spool) so that it is either whole or absent.

        Raises
        ------
        SpoolError
            ``path`` is outside the spool, or any step failed (disk full, permissions, I/O); no
            temporary or partial file remains.
        """
        path = self._inside(path)
        try:
            self._make_dirs(path.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        except OSError as exc:
            raise SpoolError(f"cannot create a file in {path.parent}: {exc}", str(path)) from exc
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_name, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            _unlink_quietly(Path(tmp_name))
            raise SpoolError(f"cannot write {path}: {exc}", str(path)) from exc
        except BaseException:
            _unlink_quietly(Path(tmp_name))
            raise

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
            _fsync_dir(new.parent)  # the new folder's entry survives a crash


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:  # the original error matters more; this one is only logged
        logger.warning("could not remove temporary file %s: %s", path, exc)
