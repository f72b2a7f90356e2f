"""The storage SCP: C-ECHO and C-STORE of CT, durable before it says success.

Each received instance is written to the spool exactly as it came off the wire (file meta plus the
encoded dataset; no re-encoding), with a temporary file, fsync and rename, then recorded in the job
log, and only then answered with success (0x0000). Any local failure answers a failure status from
:class:`StoreStatus`; a handler exception never escapes (pynetdicom would answer 0xC211 for it, we
answer our own code and log the traceback). Only CT Image Storage and Enhanced CT Image Storage are
negotiated, so other SOP classes are refused at association time, not after the transfer.
"""

from __future__ import annotations

import errno
import logging
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pynetdicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from node.fastassoc import EventDrivenRequestHandler, pynetdicom_mismatches
from node.recovery import recover_spool
from node.settings import AllowedPeer, Settings
from node.spoolfile import Provenance, content_sha256, encode_file_meta, file_content_sha256
from storage.errors import InvalidUIDError, SpoolError, StorageError
from storage.joblog import JobLog
from storage.records import InstanceReceipt
from storage.spool import Spool, validate_uid
from storage.states import ReceiptOutcome

logger = logging.getLogger(__name__)

VERIFICATION = UID("1.2.840.10008.1.1")

_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
CT_STORAGE_CLASSES = (CTImageStorage, EnhancedCTImageStorage)
#: Uncompressed first (cheapest for both sides), then the lossless and lossy compressed syntaxes.
ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    JPEGLSNearLossless,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
]


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


@dataclass(frozen=True, slots=True)
class _Identity:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str


class _RefusedError(Exception):
    """Raised inside the handler to answer ``status`` and log ``message``."""

    def __init__(self, status: StoreStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class StoreHandler:
    """The EVT_C_STORE handler: spool, record, then answer (see the module docstring)."""

    def __init__(self, spool: Spool, joblog: JobLog, min_free_bytes: int) -> None:
        self.spool = spool
        self.joblog = joblog
        self.min_free_bytes = min_free_bytes
        # Two associations storing the same SOP Instance UID at once take turns (check, write,
        # record), so the file kept always matches the recorded checksum.
        self._locks = [threading.Lock() for _ in range(64)]

    def __call__(self, event: Event) -> int:
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
        free = self.spool.free_bytes()
        if free < self.min_free_bytes:
            raise _RefusedError(
                StoreStatus.OUT_OF_SPACE,
                f"only {free} bytes free in the spool, below the guard of {self.min_free_bytes}",
            )
        ident = _identify(event)
        try:
            path = self.spool.instance_path(
                ident.study_uid, ident.series_uid, ident.sop_instance_uid
            )
        except InvalidUIDError as exc:
            raise _RefusedError(StoreStatus.INVALID_UID, str(exc)) from exc
        data, digest = _encoded(event)
        receipt = InstanceReceipt(
            study_uid=ident.study_uid,
            series_uid=ident.series_uid,
            sop_instance_uid=ident.sop_instance_uid,
            sop_class_uid=ident.sop_class_uid,
            modality=ident.modality,
            calling_ae=str(event.assoc.requestor.ae_title),
            peer_host=str(event.assoc.requestor.address),
            path=str(path),
            sha256=digest,
            size=len(data),
            received_at=datetime.now(UTC),
        )
        with self._locks[hash(ident.sop_instance_uid) % len(self._locks)]:
            outcome = self._keep(path, data, receipt)
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

    def _keep(self, path: Path, data: bytes, receipt: InstanceReceipt) -> ReceiptOutcome:
        """Spool, then record: the file on disk always holds the bytes the job log vouches for."""
        if not path.exists():
            # A new instance (the usual case): the receipt's transaction looks the UID up.
            self._write(path, data)
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
        if file_content_sha256(path) != receipt.sha256:
            self._write(path, data)  # a leftover or damaged copy under this UID: replace it
        return self._record(receipt)

    def _write(self, path: Path, data: bytes) -> None:
        try:
            self.spool.write_atomic(path, data)
        except SpoolError as exc:
            cause = exc.__cause__
            full = isinstance(cause, OSError) and cause.errno in _NO_SPACE_ERRNOS
            status = StoreStatus.OUT_OF_SPACE if full else StoreStatus.SPOOL_WRITE_FAILED
            raise _RefusedError(status, str(exc)) from exc

    def _record(self, receipt: InstanceReceipt) -> ReceiptOutcome:
        try:
            return self.joblog.record_instance(receipt)
        except StorageError as exc:
            raise _RefusedError(StoreStatus.JOB_LOG_FAILED, str(exc)) from exc


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.error("could not remove %s after a conflict: %s", path, exc)


def _encoded(event: Event) -> tuple[bytes, str]:
    """The spool file's bytes (:mod:`node.spoolfile`: the data set as received behind file meta
    naming the sender) and the instance's :func:`~node.spoolfile.content_sha256`."""
    request = cast(C_STORE, event.request)
    stream = cast(BytesIO, request.DataSet).getvalue()
    syntax = str(event.context.transfer_syntax)
    requestor = event.assoc.requestor
    provenance = Provenance(
        str(requestor.ae_title), str(event.assoc.acceptor.ae_title), str(requestor.address)
    )
    meta = encode_file_meta(
        str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID), syntax, provenance
    )
    return meta + stream, content_sha256(syntax, stream)


def _identify(event: Event) -> _Identity:
    """The UIDs and modality of the received instance, validated; raises :class:`_RefusedError`."""
    try:
        ds: Dataset = event.dataset
        study = str(ds.get("StudyInstanceUID", "") or "")
        series = str(ds.get("SeriesInstanceUID", "") or "")
        ds_sop = str(ds.get("SOPInstanceUID", "") or "")
        ds_class = str(ds.get("SOPClassUID", "") or "")
        modality = str(ds.get("Modality", "") or "")
    except Exception as exc:  # pydicom raises many types for malformed data
        raise _RefusedError(StoreStatus.CANNOT_DECODE, f"cannot decode the dataset: {exc}") from exc
    request = cast(C_STORE, event.request)
    sop_uid = str(request.AffectedSOPInstanceUID)
    sop_class = str(request.AffectedSOPClassUID)
    if (ds_sop and ds_sop != sop_uid) or (ds_class and ds_class != sop_class):
        raise _RefusedError(
            StoreStatus.UID_MISMATCH,
            "the dataset's SOP Class/Instance UID differ from the C-STORE request's",
        )
    for name, uid in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)):
        try:
            validate_uid(uid)
        except InvalidUIDError as exc:
            raise _RefusedError(StoreStatus.INVALID_UID, f"{name}: {exc}") from exc
    return _Identity(study, series, sop_uid, sop_class, modality)


def _check_requestor(event: Event, allow: tuple[AllowedPeer, ...]) -> None:
    """EVT_REQUESTED: reject an association from a peer not on the allowlist (empty: allow all)."""
    if not allow:
        return
    primitive = event.assoc.requestor.primitive
    calling = str(primitive.calling_ae_title).strip() if primitive else ""
    host = str(event.assoc.requestor.address)
    for peer in allow:
        if peer.ae_title == calling and (peer.host is None or peer.host == host):
            return
    logger.warning("rejected association from %r at %s: not on the allowlist", calling, host)
    event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE unknown


def _log_association(event: Event) -> None:
    requestor = event.assoc.requestor
    logger.info("association accepted from %r at %s", requestor.ae_title, requestor.address)


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The SCP's TLS context from ``[tls]``, or ``None`` when TLS is off."""
    tls = settings.tls
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca)
    assert tls.cert is not None and tls.key is not None  # checked by Settings validation
    context.load_cert_chain(tls.cert, tls.key)
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
    return context


MAX_RECEIVE_PDU_BYTES = 1 << 20


def build_ae(settings: Settings) -> AE:
    """The SCP's application entity: AE title, timeouts, limits and the CT presentation contexts."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.require_called_aet = settings.check_called_ae
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    # A CT slice is ~0.5 MB: pynetdicom's default 16 kB PDU cuts it into ~32 PDUs, each decoded in
    # Python; advertising a larger one lets the sender use fewer (peers may still send smaller).
    ae.maximum_pdu_size = MAX_RECEIVE_PDU_BYTES
    ae.add_supported_context(VERIFICATION)
    for sop_class in CT_STORAGE_CLASSES:
        ae.add_supported_context(sop_class, ACCEPTED_TRANSFER_SYNTAXES)
    return ae


class StorageSCP:
    """The node's listening side; :meth:`start` returns at once, :meth:`stop` closes it."""

    def __init__(self, settings: Settings, joblog: JobLog) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool_dir)
        self.handler = StoreHandler(self.spool, joblog, settings.min_free_bytes)
        self.ae = build_ae(settings)
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        """Record spool files left without a receipt (:mod:`node.recovery`), then listen on
        ``bind_address:port`` (TLS when ``[tls] enabled``)."""
        removed = self.spool.remove_partials()
        recovered = recover_spool(self.spool, self.handler.joblog)
        handlers = [
            (evt.EVT_C_STORE, self.handler),
            (evt.EVT_REQUESTED, _check_requestor, [self.settings.allow]),
            (evt.EVT_ACCEPTED, _log_association),
        ]
        self._server = _start_server(
            self.ae,
            (self.settings.bind_address, self.settings.port),
            handlers,
            server_ssl_context(self.settings),
        )
        logger.info(
            "SCP %s listening on %s:%d (%d partial spool files cleaned, %d recovered)",
            self.settings.ae_title,
            self.settings.bind_address,
            self.settings.port,
            removed,
            recovered,
        )

    def stop(self) -> None:
        """Stop accepting; running associations are closed."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()


def _start_server(
    ae: AE,
    address: tuple[str, int],
    handlers: list[Any],
    ssl_context: ssl.SSLContext | None,
) -> ThreadedAssociationServer:
    """``ae.start_server(block=False)``, with event-driven associations when the installed
    pynetdicom is the one :mod:`node.fastassoc` was reviewed against (else pynetdicom's own)."""
    mismatches = pynetdicom_mismatches()
    if mismatches:
        logger.warning(
            "pynetdicom %s differs from the reviewed version in %s: associations use "
            "pynetdicom's polling loops (slower ingest)",
            pynetdicom.__version__,
            ", ".join(mismatches),
        )
        plain = ae.start_server(
            address, block=False, evt_handlers=handlers, ssl_context=ssl_context
        )
        return cast(ThreadedAssociationServer, plain)  # block=False always returns the server
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=handlers,
        server_class=ThreadedAssociationServer,
        request_handler=EventDrivenRequestHandler,
    )
    ae._servers.append(server)  # as start_server does: server.shutdown() removes it again
    thread = threading.Thread(target=server.serve_forever, name="SCP-acceptor", daemon=True)
    thread.start()
    return server
