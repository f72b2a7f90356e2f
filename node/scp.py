"""The storage SCP: C-ECHO and C-STORE of CT, durable before it says success.

The C-STORE handler is :class:`node.store.StoreHandler` (spool, record, then answer). This module
builds the application entity (AE title, limits, presentation contexts: only CT Image Storage and
Enhanced CT Image Storage are negotiated, so other SOP classes are refused at association time, not
after the transfer), checks requestors against the allowlist, and runs the SCP in this process
(:class:`StorageSCP`; ``serve`` runs it in several processes instead, :mod:`node.receivers`).
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

import pynetdicom
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
from pynetdicom.events import Event
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from node.fastassoc import EventDrivenRequestHandler, pynetdicom_mismatches
from node.recovery import recover_spool
from node.settings import AllowedPeer, Settings
from node.store import StoreHandler, StoreStatus
from storage.joblog import JobLog
from storage.spool import Spool

__all__ = ["StorageSCP", "StoreHandler", "StoreStatus", "build_ae", "server_ssl_context"]

logger = logging.getLogger(__name__)

VERIFICATION = UID("1.2.840.10008.1.1")

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


def check_requestor(event: Event, allow: tuple[AllowedPeer, ...]) -> None:
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


def log_association(event: Event) -> None:
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
        # after recovery: it empties the pool folders
        self.spool.start_pool(self.settings.scp_pool_files, reserve=self.settings.min_free_bytes)
        handlers = [
            (evt.EVT_C_STORE, self.handler),
            (evt.EVT_REQUESTED, check_requestor, [self.settings.allow]),
            (evt.EVT_ACCEPTED, log_association),
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
            self.port,
            removed,
            recovered,
        )

    @property
    def port(self) -> int:
        """The port it listens on (the one the system chose when ``port`` is 0); 0 before
        :meth:`start`."""
        return 0 if self._server is None else int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop accepting; running associations are closed."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()
        self.spool.close()


def request_handler_class() -> type[RequestHandler]:
    """:class:`~node.fastassoc.EventDrivenRequestHandler` when the installed pynetdicom is the one
    :mod:`node.fastassoc` was reviewed against, else pynetdicom's own (polling; a warning)."""
    mismatches = pynetdicom_mismatches()
    if not mismatches:
        return EventDrivenRequestHandler
    logger.warning(
        "pynetdicom %s differs from the reviewed version in %s: associations use "
        "pynetdicom's polling loops (slower ingest)",
        pynetdicom.__version__,
        ", ".join(mismatches),
    )
    return RequestHandler


def _start_server(
    ae: AE,
    address: tuple[str, int],
    handlers: list[Any],
    ssl_context: ssl.SSLContext | None,
) -> ThreadedAssociationServer:
    """``ae.start_server(block=False)`` with the :func:`request_handler_class`."""
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=handlers,
        server_class=ThreadedAssociationServer,
        request_handler=request_handler_class(),
    )
    ae._servers.append(server)  # as start_server does: server.shutdown() removes it again
    thread = threading.Thread(target=server.serve_forever, name="SCP-acceptor", daemon=True)
    thread.start()
    return server
