"""The outbox sender: C-STORE of output instances to their destinations, retried with backoff.

Every output instance is a delivery row (job, destination, SOP Instance UID, file). The outbox
takes the due rows, sends them per destination over one association, and records each attempt:
success, or the error with the next attempt after an exponential backoff
(``Settings.backoff``); after ``max_attempts`` the delivery is given up (FAILED) and the job fails
with it, to be re-armed by ``spinenode retry JOB``.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from node.settings import Destination, Settings, SettingsError
from storage.joblog import JobLog
from storage.records import DeliveryRef

logger = logging.getLogger(__name__)

#: C-STORE statuses that mean the destination kept the instance (success and the warnings).
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


class Sender(Protocol):
    """Sends files to one destination; one result per file: ``None`` (stored) or the error."""

    def send(self, destination: Destination, paths: Sequence[Path]) -> list[str | None]: ...


def client_ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS towards a destination marked ``tls``: verify it with ``[tls] ca``, present our cert."""
    tls = settings.tls
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    if tls.cert is not None and tls.key is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


class DicomSender:
    """A pynetdicom SCU calling as the node's AE title."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, destination: Destination, paths: Sequence[Path]) -> list[str | None]:
        datasets: list[Dataset | str] = []
        for path in paths:
            try:
                datasets.append(dcmread(path))
            except (OSError, InvalidDicomError) as exc:
                datasets.append(f"cannot read {path}: {exc}")
        readable = [d for d in datasets if isinstance(d, Dataset)]
        if not readable:
            return [str(d) for d in datasets]
        ae = self._ae(readable)
        tls = (client_ssl_context(self.settings), destination.host) if destination.tls else None
        assoc = ae.associate(
            destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls
        )
        if not assoc.is_established:
            error = (
                f"no association with {destination.ae_title}@{destination.host}:{destination.port}"
            )
            return [d if isinstance(d, str) else error for d in datasets]
        try:
            return [d if isinstance(d, str) else _store(assoc, d) for d in datasets]
        finally:
            if assoc.is_established:
                assoc.release()

    def _ae(self, datasets: Sequence[Dataset]) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = self.settings.acse_timeout_s
        ae.dimse_timeout = self.settings.dimse_timeout_s
        ae.network_timeout = self.settings.network_timeout_s
        pairs = {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}
        for sop_class in sorted({c for c, _ in pairs}):
            own = [ts for c, ts in pairs if c == sop_class]
            syntaxes = list(dict.fromkeys([*own, ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
            ae.add_requested_context(sop_class, syntaxes)
        return ae


def _store(assoc: Association, ds: Dataset) -> str | None:
    if not assoc.is_established:
        return "association lost"
    try:
        rsp = assoc.send_c_store(ds)
    except (ValueError, RuntimeError) as exc:  # no accepted context for this SOP class/syntax
        return f"cannot send {ds.SOPClassUID}: {exc}"
    status = rsp.get("Status") if rsp else None
    if status is None:
        return "no response (timeout or aborted association)"
    if int(status) in STORED_STATUSES:
        return None
    return f"C-STORE status 0x{int(status):04X}"


class Outbox:
    """Sends due deliveries; :meth:`run` loops until stopped."""

    def __init__(self, joblog: JobLog, settings: Settings, sender: Sender | None = None) -> None:
        self.joblog = joblog
        self.settings = settings
        self.sender: Sender = sender or DicomSender(settings)

    def tick(self, now: datetime | None = None) -> int:
        """Attempt every due delivery once; returns how many were attempted."""
        now = now or datetime.now(UTC)
        due = self.joblog.due_deliveries(now)
        by_destination: dict[str, list[DeliveryRef]] = defaultdict(list)
        for ref in due:
            by_destination[ref.destination].append(ref)
        for name, refs in by_destination.items():
            try:
                destination = self.settings.destination(name)
            except SettingsError as exc:
                results: list[str | None] = [str(exc)] * len(refs)
            else:
                results = self._send(destination, refs)
            for ref, error in zip(refs, results, strict=True):
                self._record(ref, error, now)
        for job_id in sorted({ref.job_id for ref in due}):
            state = self.joblog.finish_if_delivered(job_id)
            if state is not None:
                logger.info("job %d: deliveries finished -> %s", job_id, state)
        return len(due)

    def _send(self, destination: Destination, refs: list[DeliveryRef]) -> list[str | None]:
        try:
            return self.sender.send(destination, [Path(r.path) for r in refs])
        except Exception as exc:  # recorded as the attempt's error, retried with backoff
            logger.exception("sending to %s failed", destination.name)
            return [f"{type(exc).__name__}: {exc}"] * len(refs)

    def _record(self, ref: DeliveryRef, error: str | None, now: datetime) -> None:
        attempts = ref.attempts + 1
        if error is None:
            self.joblog.delivery_attempted(ref.delivery_id, True, None, None)
            logger.debug("job %d: %s sent to %s", ref.job_id, ref.sop_instance_uid, ref.destination)
            return
        if attempts >= self.settings.max_attempts:
            next_at = None
            logger.error(
                "job %d: giving up sending %s to %s after %d attempts: %s",
                ref.job_id,
                ref.sop_instance_uid,
                ref.destination,
                attempts,
                error,
            )
        else:
            next_at = now + timedelta(seconds=self.settings.backoff(attempts))
            logger.warning(
                "job %d: sending to %s failed (attempt %d): %s; next try at %s",
                ref.job_id,
                ref.destination,
                attempts,
                error,
                next_at.isoformat(timespec="seconds"),
            )
        self.joblog.delivery_attempted(ref.delivery_id, False, error, next_at)

    def run(self, stop: threading.Event) -> None:
        """Call :meth:`tick` every ``delivery_poll_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # the loop must survive anything; the next pass tries again
                logger.exception("outbox: error; trying again")
            stop.wait(self.settings.delivery_poll_seconds)
