"""The C-STORE handler: spool, record, then answer; durable before it says success.

Each received instance is written to the spool exactly as it came off the wire (file meta plus the
encoded dataset; no re-encoding), with a temporary file, fdatasync, rename and a folder fsync, then
recorded in the job log, and only then answered with success (0x0000). Any local failure answers a
failure status from :class:`StoreStatus`; a handler exception never escapes (pynetdicom would
answer 0xC211 for it, we answer our own code and log the traceback).

Several receiving processes may run this handler at once (:mod:`node.receivers`): writers of the
same SOP Instance UID take turns under :meth:`storage.spool.Spool.instance_lock`, and the job log's
transactions decide NEW, DUPLICATE or CONFLICT.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import weakref
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum
from io import BytesIO
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from node.spoolfile import (
    Provenance,
    content_sha256,
    encode_file_meta,
    file_content_sha256,
    padding_trailer,
)
from node.wireparse import WireIdentity, WireParseError, read_identity
from storage.errors import InvalidUIDError, SpoolError, StorageError
from storage.joblog import JobLog
from storage.records import InstanceReceipt
from storage.spool import Spool, WriteTimes, validate_uid
from storage.states import ReceiptOutcome

logger = logging.getLogger(__name__)

_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: The free-space guard reads the file system at most this often (s); in between it subtracts
#: what this handler wrote from the last reading (other writers are seen at the next reading).
FREE_SPACE_CHECK_S = 1.0


#: pydicom keywords of :class:`~node.wireparse.WireIdentity`'s fields, in its order.
_IDENTITY_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)


class StoreStatus(IntEnum):
    """C-STORE response statuses the SCP answers (PS3.4 B.2.3: A7xx out of resources,
    C000–CFFF cannot understand)."""

    SUCCESS = 0x0000
    OUT_OF_SPACE = 0xA700  # free-space guard, or the disk filled up while writing
    SPOOL_WRITE_FAILED = 0xA701  # any other failure writing the spool file
    JOB_LOG_FAILED = 0xA702  # the file is on disk but could not be recorded
    INTERNAL_ERROR = 0xA7FF  # an unexpected error in the handler (traceback logged)
    CANNOT_DECODE = 0xC210  # the dataset could not be parsed
    INVALID_UID = 0xC211  # a missing or malformed Study/Series/SOP Instance UID
    UID_MISMATCH = 0xC212  # the dataset's SOP class/instance differs from the command's
    CONFLICT = 0xC213  # another instance with this SOP Instance UID is kept; this one is not


class _RefusedError(Exception):
    """Raised inside the handler to answer ``status`` and log ``message``."""

    def __init__(self, status: StoreStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Received:
    """What arrived: the syntax, the data set as received, its checksum and the file meta
    naming the sender (and holding the checksum)."""

    syntax: str
    data: memoryview
    sha256: str
    meta: bytes


#: The steps :class:`StepTimes` times, in the order an instance goes through them: ``between``
#: is from the handler's answer to the previous instance of the association to its call for this
#: one (sending the response, the sender's next request and its data set, their decoding),
#: ``identify`` the UIDs, file meta and checksum, ``lock`` waiting for the instance's lock, then
#: the spool write's steps (:class:`storage.spool.WriteTimes`) and the receipt transaction.
STEPS = (
    "between",
    "identify",
    "lock",
    "create",
    "write",
    "fdatasync",
    "rename",
    "folder sync",
    "receipt",
)


class StepTimes:
    """How long each step of the handler took per instance (wall clock; mean and maximum), and
    how long the receipt transactions took (they include waiting for the job log's write lock
    while another process writes: compare one association with several)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = dict.fromkeys(STEPS, 0.0)
        self._max = dict.fromkeys(STEPS, 0.0)
        self._count = dict.fromkeys(STEPS, 0)
        self.over_10ms = 0  # receipts
        self.pooled = 0  # spool writes into pooled files

    def add(self, step: str, seconds: float) -> None:
        with self._lock:
            self._count[step] += 1
            self._total[step] += seconds
            self._max[step] = max(self._max[step], seconds)
            self.over_10ms += step == "receipt" and seconds > 0.01

    def add_write(self, times: WriteTimes) -> None:
        with self._lock:
            self.pooled += times.pooled
        for step, seconds in zip(
            STEPS[3:8],
            (times.create_s, times.write_s, times.datasync_s, times.rename_s, times.folder_sync_s),
            strict=True,
        ):
            self.add(step, seconds)

    def _mean_ms(self, step: str) -> float:
        return 1000 * self._total[step] / self._count[step] if self._count[step] else 0.0

    def summary(self) -> str:
        """The receipts' line (as before) and the steps' means and maxima in ms."""
        steps = ", ".join(
            f"{step} {self._mean_ms(step):.2f}/{1000 * self._max[step]:.1f}" for step in STEPS
        )
        return (
            f"{self._count['receipt']} receipt transactions took {self._mean_ms('receipt'):.2f} ms"
            f" on average, {1000 * self._max['receipt']:.1f} ms at most, {self.over_10ms} over"
            f" 10 ms; {self.pooled} of {self._count['write']} spool writes into pooled files;"
            f" per instance, mean/max ms: {steps}"
        )


class StoreHandler:
    """The EVT_C_STORE handler: spool, record, then answer (see the module docstring)."""

    def __init__(self, spool: Spool, joblog: JobLog, min_free_bytes: int) -> None:
        self.spool = spool
        self.joblog = joblog
        self.min_free_bytes = min_free_bytes
        self._free_read_at = -FREE_SPACE_CHECK_S
        self._free = 0
        self._written = 0  # bytes written since the last reading
        self.step_times = StepTimes()
        # when the handler last answered on each association (for the 'between' step)
        self._answered: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()

    def __call__(self, event: Event) -> int:
        called = time.perf_counter()
        answered = self._answered.get(event.assoc)
        if answered is not None:
            self.step_times.add("between", called - answered)
        try:
            return self._answer(event)
        finally:
            self._answered[event.assoc] = time.perf_counter()

    def _answer(self, event: Event) -> int:
        sop_uid = str(cast(C_STORE, event.request).AffectedSOPInstanceUID)
        try:
            return int(self._store(event))
        except _RefusedError as refusal:
            logger.warning(
                "refused instance %s from %s: %s (0x%04X)",
                sop_uid,
                event.assoc.requestor.ae_title,
                refusal,
                refusal.status,
            )
            return int(refusal.status)
        except Exception:  # the network boundary: never let it escape, never answer success
            logger.exception("unexpected error storing instance %s", sop_uid)
            return int(StoreStatus.INTERNAL_ERROR)

    def _store(self, event: Event) -> StoreStatus:
        started = time.perf_counter()
        self._check_free_space()
        received = _received(event)
        ident = _identify(event, received)
        try:
            path = self.spool.instance_path(
                ident.study_uid, ident.series_uid, ident.sop_instance_uid
            )
        except InvalidUIDError as exc:
            raise _RefusedError(StoreStatus.INVALID_UID, str(exc)) from exc
        receipt = InstanceReceipt(
            study_uid=ident.study_uid,
            series_uid=ident.series_uid,
            sop_instance_uid=ident.sop_instance_uid,
            sop_class_uid=ident.sop_class_uid,
            modality=ident.modality,
            calling_ae=str(event.assoc.requestor.ae_title),
            peer_host=str(event.assoc.requestor.address),
            path=str(path),
            sha256=received.sha256,
            size=len(received.meta) + len(received.data),
            received_at=datetime.now(UTC),
        )
        locking = time.perf_counter()
        self.step_times.add("identify", locking - started)
        try:
            with self.spool.instance_lock(ident.sop_instance_uid):
                self.step_times.add("lock", time.perf_counter() - locking)
                outcome = self._keep(path, received, receipt)
        except SpoolError as exc:  # the lock file could not be opened
            raise _RefusedError(StoreStatus.SPOOL_WRITE_FAILED, str(exc)) from exc
        if outcome is ReceiptOutcome.CONFLICT:
            raise _RefusedError(
                StoreStatus.CONFLICT,
                "a different instance with this SOP Instance UID was received before and is kept; "
                "the conflict is recorded in the job log",
            )
        logger.debug(
            "stored %s of series %s (%s)", ident.sop_instance_uid, ident.series_uid, outcome
        )
        return StoreStatus.SUCCESS

    def _check_free_space(self) -> None:
        now = time.monotonic()
        if now - self._free_read_at >= FREE_SPACE_CHECK_S:
            self._free, self._written, self._free_read_at = self.spool.free_bytes(), 0, now
        free = self._free - self._written
        if free < self.min_free_bytes:
            self._free_read_at = -FREE_SPACE_CHECK_S  # read again next time: space may be freed
            raise _RefusedError(
                StoreStatus.OUT_OF_SPACE,
                f"only {free} bytes free in the spool, below the guard of {self.min_free_bytes}",
            )

    def _keep(self, path: Path, data: _Received, receipt: InstanceReceipt) -> ReceiptOutcome:
        """Spool, then record: the file on disk always holds the bytes the job log vouches for."""
        if not path.exists():
            # A new instance (the usual case): the receipt's transaction looks the UID up.
            receipt = replace(receipt, size=self._write(path, data))
            outcome = self._record(receipt)
            if outcome is ReceiptOutcome.CONFLICT:
                # Recorded before with other bytes whose file is gone: ours must not pass for them.
                _remove(path)
            return outcome
        # A file under this UID already: a re-send, or a crash leftover that was never recorded.
        try:
            recorded = self.joblog.recorded_sha256(receipt.sop_instance_uid)
        except StorageError as exc:
            raise _RefusedError(StoreStatus.JOB_LOG_FAILED, str(exc)) from exc
        if recorded is not None and recorded != receipt.sha256:
            return self._record(receipt)  # CONFLICT: the first copy stays, the event is logged
        if recorded is None or file_content_sha256(path) != receipt.sha256:
            # A leftover never recorded (its name may not be on disk yet) or a damaged copy:
            # written again, flushes included, before the receipt.
            receipt = replace(receipt, size=self._write(path, data))
        return self._record(receipt)

    def _write(self, path: Path, data: _Received) -> int:
        """Write the spool file: when this returns, its data is on disk, and its name is, or
        start-up recovery can give it back from the data (a pooled file: :mod:`node.recovery`);
        the receipt is committed only after that. Returns the file's size on disk (a pooled
        file's is its pool size: what the receipt records, as start-up recovery does)."""
        try:
            times = self.spool.write_atomic(
                path, (data.meta, data.data), padding_trailer(data.syntax)
            )
        except SpoolError as exc:
            cause = exc.__cause__
            full = isinstance(cause, OSError) and cause.errno in _NO_SPACE_ERRNOS
            status = StoreStatus.OUT_OF_SPACE if full else StoreStatus.SPOOL_WRITE_FAILED
            raise _RefusedError(status, str(exc)) from exc
        self._written += len(data.meta) + len(data.data)
        self.step_times.add_write(times)
        return times.file_bytes

    def _record(self, receipt: InstanceReceipt) -> ReceiptOutcome:
        started = time.perf_counter()
        try:
            with self.spool.receipt_lock():  # receipts take turns here, not in SQLite's busy loop
                return self.joblog.record_instance(receipt)
        except (StorageError, SpoolError) as exc:  # SpoolError: the lock file cannot be opened
            raise _RefusedError(StoreStatus.JOB_LOG_FAILED, str(exc)) from exc
        finally:
            self.step_times.add("receipt", time.perf_counter() - started)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.error("could not remove %s after a conflict: %s", path, exc)


def _received(event: Event) -> _Received:
    """The data set as received (a view, not a copy) and the spool file meta
    (:mod:`node.spoolfile`: it names the sender)."""
    request = cast(C_STORE, event.request)
    syntax = str(event.context.transfer_syntax)
    requestor = event.assoc.requestor
    provenance = Provenance(
        str(requestor.ae_title), str(event.assoc.acceptor.ae_title), str(requestor.address)
    )
    data = cast(BytesIO, request.DataSet).getbuffer()
    sha = content_sha256(syntax, data)
    meta = encode_file_meta(
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),
        syntax,
        provenance,
        (len(data), sha),
    )
    return _Received(syntax, data, sha, meta)


def _identify(event: Event, received: _Received) -> WireIdentity:
    """The UIDs and modality of the received instance, validated; raises :class:`_RefusedError`."""
    ident = _read_identity(event, received)
    request = cast(C_STORE, event.request)
    sop_uid = str(request.AffectedSOPInstanceUID)
    sop_class = str(request.AffectedSOPClassUID)
    ds_sop, ds_class = ident.sop_instance_uid, ident.sop_class_uid
    if (ds_sop and ds_sop != sop_uid) or (ds_class and ds_class != sop_class):
        raise _RefusedError(
            StoreStatus.UID_MISMATCH,
            "the dataset's SOP Class/Instance UID differ from the C-STORE request's",
        )
    dataset_uids = (("StudyInstanceUID", ident.study_uid), ("SeriesInstanceUID", ident.series_uid))
    for name, uid in dataset_uids:
        try:
            validate_uid(uid)
        except InvalidUIDError as exc:
            raise _RefusedError(StoreStatus.INVALID_UID, f"{name}: {exc}") from exc
    return WireIdentity(sop_class, sop_uid, ident.modality, ident.study_uid, ident.series_uid)


def _read_identity(event: Event, received: _Received) -> WireIdentity:
    """:func:`~node.wireparse.read_identity` on the received bytes; pydicom (``event.dataset``)
    for deflated data sets and whatever the fast reader declines."""
    if received.syntax != DeflatedExplicitVRLittleEndian:
        try:
            return read_identity(received.data, received.syntax == ImplicitVRLittleEndian)
        except (WireParseError, RecursionError) as exc:
            logger.debug("decoding with pydicom: %s", exc)
    try:
        ds: Dataset = event.dataset
        values = [str(ds.get(k, "") or "") for k in _IDENTITY_KEYWORDS]
    except Exception as exc:  # pydicom raises many types for malformed data
        raise _RefusedError(StoreStatus.CANNOT_DECODE, f"cannot decode the dataset: {exc}") from exc
    return WireIdentity(*values)
