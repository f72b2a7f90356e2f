"""At start-up, record spool files whose receipt row is missing (see :mod:`storage.reconcile`).

Runs in :meth:`node.scp.StorageSCP.start` before the SCP listens. Each file's header gives its
UIDs and modality; the file meta gives the sender (Sending Application Entity Title and Sending
Presentation Address, written by the SCP); the checksum is :func:`node.spoolfile.content_sha256`'s
and
the receipt time is the file's modification time, so the series' quiet period has usually passed
and the scheduler judges it at its next pass. A file that cannot be read is left alone, with a
warning.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from node.spoolfile import file_content_sha256, read_provenance
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
