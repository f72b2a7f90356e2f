"""At start-up, record spool files whose receipt row is missing (see :mod:`storage.reconcile`).

Runs in :meth:`node.scp.StorageSCP.start` before the SCP listens. Each file's header gives its
UIDs and modality; the file meta gives the sender (Sending Application Entity Title and Sending
Presentation Address, written by the SCP); the checksum is :func:`node.spoolfile.content_sha256`'s
and
the receipt time is the file's modification time, so the series' quiet period has usually passed
and the scheduler judges it at its next pass. A file that cannot be read is left alone, with a
warning.

Before that, :func:`restore_pooled` empties the pool folders (:mod:`storage.spool_pool`) of the
processes that are gone (a folder whose lock nobody holds): a pooled file whose meta records its
data set's checksum and whose data set matches it (:func:`node.spoolfile.verified_sha256`) was
filled whole and flushed, and may have been acknowledged while its rename to its spool name was
not yet on disk: it is renamed there (the folder flushed), unless that name already holds the same
instance, or another one that the job log vouches for, or the job log vouches for another one
under that name. Every other pooled file (still zeros, or partly written: never acknowledged) is
removed, then the folder.

A receiving process that the acceptor starts again mid-run (:mod:`node.receiver`) does the same
for the folder its dead predecessor left (``record=True``: a file it puts back whose instance has
no receipt row is recorded, as start-up recovery records the spool's unrecorded files); the
running processes' folders are locked and left alone. Each file is judged and moved under its
instance's lock, so a receiver storing the same instance meanwhile waits for it.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from node.spoolfile import file_content_sha256, read_provenance, verified_sha256
from storage.errors import StorageError
from storage.joblog import JobLog
from storage.reconcile import record_recovered, unrecorded_files
from storage.records import InstanceReceipt
from storage.spool import Spool
from storage.states import ReceiptOutcome

logger = logging.getLogger(__name__)


def recover_spool(spool: Spool, joblog: JobLog) -> int:
    """Record every spool file that has no receipt row; returns how many were recorded.

    Raises
    ------
    StorageError
        The job log cannot be read or written.
    """
    restore_pooled(spool, joblog)
    recovered = 0
    synced: set[Path] = set()
    for path in unrecorded_files(joblog, spool):
        try:
            receipt = _receipt_of(path)
            if path.parent not in synced:  # its data was flushed before the rename; its name
                spool.sync_folder(path.parent)  # may not be: a re-send will be acknowledged
                synced.add(path.parent)
        except (OSError, InvalidDicomError, ValueError, StorageError) as exc:
            logger.warning("spool file %s has no receipt and cannot be read: %s", path, exc)
            continue
        if record_recovered(joblog, receipt) is ReceiptOutcome.NEW:
            recovered += 1
    return recovered


def restore_pooled(spool: Spool, joblog: JobLog, record: bool = False) -> int:
    """Rename the whole pooled files of the processes that are gone to their spool names and
    remove the others (see the module docstring); ``record``: record the renamed files that have
    no receipt row. Returns how many were renamed.

    Raises
    ------
    StorageError
        The job log cannot be read or written, or a file cannot be renamed.
    """
    restored = 0
    with spool.orphaned_pools() as folders:
        for folder in folders:
            files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
            kept = sum(_restore_one(spool, joblog, pooled, record) for pooled in files)
            if files:  # (an empty one may be a new pool's folder, just before its lock)
                logger.info(
                    "pool folder %s of a stopped process: %d of %d files restored to the spool",
                    folder.name,
                    kept,
                    len(files),
                )
            restored += kept
            with contextlib.suppress(OSError):  # something else in it: left, with its lock free
                folder.rmdir()
    return restored


def _restore_one(spool: Spool, joblog: JobLog, pooled: Path, record: bool) -> bool:
    """Rename ``pooled`` to its spool name if it belongs there (else remove it); whether it was."""
    try:
        found = _pooled_instance(spool, pooled)
    except (OSError, InvalidDicomError, ValueError, StorageError) as exc:
        logger.warning("pooled spool file %s cannot be read (%s): removed", pooled, exc)
        found = None
    if found is None:
        pooled.unlink(missing_ok=True)
        return False
    target, digest = found
    with spool.instance_lock(target.stem):
        if not _belongs(joblog, target, digest):
            pooled.unlink(missing_ok=True)
            return False
        try:
            spool.place_pooled(pooled, target)
        except OSError as exc:
            raise StorageError(f"cannot move {pooled} to {target}: {exc}", str(pooled)) from exc
        logger.info("pooled spool file %s restored as %s", pooled.name, target)
        if record and joblog.recorded_sha256(target.stem) is None:
            try:
                receipt = _receipt_of(target)
            except (OSError, InvalidDicomError, ValueError, StorageError) as exc:
                logger.warning("restored spool file %s cannot be recorded: %s", target, exc)
                return True
            record_recovered(joblog, receipt)  # a job log failure: StorageError, to the caller
    return True


def _pooled_instance(spool: Spool, pooled: Path) -> tuple[Path, str] | None:
    """A whole pooled file's spool name and checksum; None when it is not whole."""
    digest = verified_sha256(pooled)
    if digest is None:
        return None
    ds = dcmread(pooled, stop_before_pixels=True)
    target = spool.instance_path(
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")),
        str(ds.get("SOPInstanceUID", "")),
    )
    return target, digest


def _belongs(joblog: JobLog, target: Path, digest: str) -> bool:
    """Whether the whole pooled file of checksum ``digest`` is needed at ``target``."""
    recorded = joblog.recorded_sha256(target.stem)
    if not target.exists():
        return recorded is None or recorded == digest
    kept = file_content_sha256(target)
    if kept == digest:
        return False
    return kept is None or recorded == digest  # a damaged file there, or not the recorded one


def _receipt_of(path: Path) -> InstanceReceipt:
    ds = dcmread(path, stop_before_pixels=True)
    digest = file_content_sha256(path)
    if digest is None:
        raise StorageError(f"{path} has no file meta group length", str(path))
    uids = (str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID"))
    study, series = uids
    if path.parent.parent.name != study or path.parent.name != series:
        raise StorageError(f"{path}: its UIDs do not match its place in the spool", str(path))
    provenance = read_provenance(path)
    stat = path.stat()
    return InstanceReceipt(
        study_uid=study,
        series_uid=series,
        sop_instance_uid=path.stem,
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        modality=str(ds.get("Modality", "")),
        calling_ae=provenance.sending_ae,
        peer_host=provenance.sending_host,
        path=str(path),
        sha256=digest,
        size=stat.st_size,
        received_at=datetime.fromtimestamp(stat.st_mtime, UTC),
    )
