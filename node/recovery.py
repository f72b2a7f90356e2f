"""At start-up, record spool files whose receipt row is missing (see :mod:`storage.reconcile`).

Runs in :meth:`node.scp.StorageSCP.start` before the SCP listens. Each file's header gives its
UIDs and modality; the file meta gives the sender (Sending Application Entity Title and Sending
Presentation Address, written by the SCP); the checksum is :func:`node.spoolfile.content_sha256`'s
and
the receipt time is the file's modification time, so the series' quiet period has usually passed
and the scheduler judges it at its next pass. A file that cannot be read is left alone, with a
warning.

Before that, :func:`restore_pooled` empties the pool folders (:mod:`storage.spool_pool`): a
pooled file whose meta records its data set's checksum and whose data set matches it
(:func:`node.spoolfile.verified_sha256`) was filled whole and flushed, and may have been
acknowledged while its rename to its spool name was not yet on disk: it is renamed there (the
folder flushed), unless that name already holds the same instance, or another one that the job log
vouches for. Every other pooled file (still zeros, or partly written: never acknowledged) is
removed.
"""

from __future__ import annotations

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


def restore_pooled(spool: Spool, joblog: JobLog) -> int:
    """Rename the whole pooled files to their spool names and remove the others (see the module
    docstring); returns how many were renamed.

    Raises
    ------
    StorageError
        The job log cannot be read, or a file cannot be renamed.
    """
    restored = 0
    for pooled in spool.pooled_files():
        try:
            target = _pooled_target(spool, joblog, pooled)
        except (OSError, InvalidDicomError, ValueError, StorageError) as exc:
            logger.warning("pooled spool file %s cannot be read (%s): removed", pooled, exc)
            target = None
        if target is None:
            pooled.unlink(missing_ok=True)
            continue
        try:
            spool.place_pooled(pooled, target)
        except OSError as exc:
            raise StorageError(f"cannot move {pooled} to {target}: {exc}", str(pooled)) from exc
        logger.info("pooled spool file %s restored as %s", pooled.name, target)
        restored += 1
    spool.remove_empty_pool_folders()
    return restored


def _pooled_target(spool: Spool, joblog: JobLog, pooled: Path) -> Path | None:
    """Where a whole pooled file belongs; None when it is not whole or is not needed there."""
    digest = verified_sha256(pooled)
    if digest is None:
        return None
    ds = dcmread(pooled, stop_before_pixels=True)
    sop = str(ds.get("SOPInstanceUID", ""))
    target = spool.instance_path(
        str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")), sop
    )
    if target.exists():
        kept = file_content_sha256(target)
        if kept == digest:
            return None
        if kept is not None and joblog.recorded_sha256(sop) != digest:
            return None  # the file there is the one recorded (or neither is)
    return target


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
