"""Start-up reconciliation of the spool with the job log: spool files that have no receipt row.

A receipt is committed without waiting for the disk (:data:`storage.database.DEFERRED_DURABILITY`):
the durable truth of an acknowledged instance is its spool file, fsync'd (file and folder) before
the receipt. A power loss may therefore take the last receipts' rows but never their files; a
crash between the fsync and the commit leaves a file that was never acknowledged (its sender
sends it again). Either way, :func:`unrecorded_files` finds such files and
:func:`record_recovered` records each one as received, with a ``recovered`` instance event, in
the series' open job (a new RECEIVING job if it has none), which the scheduler then judges as
usual. Reading the files' headers is the caller's part (storage holds no DICOM content).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from storage import receipts
from storage.common import aware
from storage.database import READ_ONLY
from storage.errors import StorageError
from storage.joblog import JobLog
from storage.records import InstanceReceipt
from storage.spool import Spool, validate_uid
from storage.states import ReceiptOutcome

logger = logging.getLogger(__name__)


def unrecorded_files(joblog: JobLog, spool: Spool) -> list[Path]:
    """Instance files in the spool whose SOP Instance UID (the file name) has no receipt row."""
    try:
        with Session(joblog.engine) as session, session.begin():
            session.connection(execution_options={READ_ONLY: True})
            known = set(receipts.recorded_uids(session))
    except SQLAlchemyError as exc:
        raise StorageError(f"job log error: {exc}", type(exc).__name__) from exc
    return sorted(path for path in spool.instance_files() if path.stem not in known)


def record_recovered(joblog: JobLog, r: InstanceReceipt) -> ReceiptOutcome:
    """Record a spool file found without a row (see the module docstring); NEW, or DUPLICATE if
    it was recorded meanwhile."""
    for uid in (r.study_uid, r.series_uid, r.sop_instance_uid):
        validate_uid(uid)
    aware(r.received_at, "received_at")
    try:
        with Session(joblog.engine) as session, session.begin():
            outcome = receipts.record_recovered(session, r)
    except SQLAlchemyError as exc:
        raise StorageError(f"job log error: {exc}", type(exc).__name__) from exc
    if outcome is ReceiptOutcome.NEW:
        logger.warning(
            "recorded instance %s of series %s from the spool: its receipt was not in the job log",
            r.sop_instance_uid,
            r.series_uid,
        )
    return outcome
