"""Helpers for the node's network tests: small synthetic CT series, a pynetdicom SCU, a PACS SCP.

Everything runs for real on 127.0.0.1: the "PACS" is a pynetdicom storage SCP that keeps what it
receives in a folder.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from dicom_io.ct_writer import CTSeriesSpec, write_ct_series
from node.spoolfile import file_content_sha256
from storage.joblog import JobLog
from storage.records import InstanceReceipt
from storage.spool import Spool

STUDY_UID = "1.2.826.0.1.3680043.8.498.7001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.7001.2"
VERIFICATION = "1.2.840.10008.1.1"


def series_spec(series_uid: str = SERIES_UID, study_uid: str = STUDY_UID) -> CTSeriesSpec:
    return CTSeriesSpec(
        patient_name="Test^Node",
        patient_id="NODE-TEST-1",
        patient_birth_date="19700101",
        patient_sex="O",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=series_uid + ".9",
        study_date="20260101",
        study_time="120000",
        accession_number="A1",
        study_id="1",
        series_number=3,
        series_description="node test",
        body_part_examined="LSPINE",
    )


def axial_affine(spacing: tuple[float, float, float] = (2.0, 1.0, 1.0)) -> npt.NDArray[np.float64]:
    """Axial, slices going up (+z superior in LPS), index → LPS mm."""
    affine = np.eye(4)
    affine[:3, 0] = (0.0, 0.0, spacing[0])
    affine[:3, 1] = (0.0, spacing[1], 0.0)
    affine[:3, 2] = (spacing[2], 0.0, 0.0)
    affine[:3, 3] = (-16.0, -16.0, 100.0)
    return affine


def write_series(
    out_dir: Path,
    slices: int = 6,
    *,
    size: int = 32,
    series_uid: str = SERIES_UID,
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
    transfer_syntax: str = ExplicitVRLittleEndian,
    enhanced: bool = False,
) -> list[Path]:
    """A small synthetic CT series: a bright block in noise, ``slices`` × ``size`` × ``size``."""
    rng = np.random.default_rng(7)
    hu = rng.integers(-1000, 100, size=(slices, size, size)).astype(np.float32)
    hu[:, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1200.0
    return write_ct_series(
        hu,
        axial_affine(spacing),
        out_dir,
        series_spec(series_uid),
        transfer_syntax=transfer_syntax,
        enhanced=enhanced,
    )


def send(
    port: int,
    paths: Sequence[Path],
    calling_ae: str = "PACS",
    called_ae: str = "SPINENODE",
    ssl_context: ssl.SSLContext | None = None,
) -> list[int] | None:
    """C-STORE ``paths`` to 127.0.0.1:port; the statuses, or ``None`` if not associated."""
    datasets = [dcmread(p) for p in paths]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class, syntax in {
        (str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets
    }:
        ae.add_requested_context(sop_class, [syntax])
    tls = (ssl_context, "127.0.0.1") if ssl_context else None
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, tls_args=tls)
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(ds).get("Status", -1)) for ds in datasets]
    finally:
        assoc.release()


def echo(port: int, calling_ae: str = "PACS", called_ae: str = "SPINENODE") -> int | None:
    """C-ECHO; the status, or ``None`` if the association was not established."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().get("Status", -1))
    finally:
        assoc.release()


class PacsSCP:
    """A pynetdicom storage SCP acting as the PACS; keeps every instance it receives in a folder."""

    def __init__(
        self,
        folder: Path,
        port: int,
        ae_title: str = "PACS",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.folder = folder
        self.port = port
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(VERIFICATION)
        self._server: ThreadedAssociationServer | None = None
        self.received: list[str] = []
        self._lock = threading.Lock()

    def _on_store(self, event: Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(self.folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        with self._lock:
            self.received.append(str(ds.SOPInstanceUID))
        return 0x0000

    def start(self) -> PacsSCP:
        """Listen; with ``port`` 0 on a free port the system picks, then :attr:`port`."""
        handlers = [(evt.EVT_C_STORE, self._on_store)]
        server = self.ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=handlers,  # type: ignore[arg-type]
            ssl_context=self.ssl_context,
        )
        assert server is not None  # block=False returns the server
        self._server = server
        self.port = int(server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, step: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def make_tls_chain(folder: Path) -> dict[str, Path]:
    """A self-signed CA and server/client certificates for 127.0.0.1, made with ``openssl``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {n: folder / f"{n}.pem" for n in ("ca", "ca_key", "server", "server_key")}
    paths |= {n: folder / f"{n}.pem" for n in ("client", "client_key")}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    ca_ext = ("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", str(paths["ca_key"]), "-out", str(paths["ca"]), *ca_ext)  # fmt: skip
    for name in ("server", "client"):
        csr = folder / f"{name}.csr"
        ext = folder / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="ascii")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(paths[f"{name}_key"]), "-out", str(csr))  # fmt: skip
        run("x509", "-req", "-in", str(csr), "-CA", str(paths["ca"]), "-CAkey",
            str(paths["ca_key"]), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
            "-out", str(paths[name]))  # fmt: skip
    return paths


def receive(joblog: JobLog, spool: Spool, paths: Sequence[Path], calling_ae: str = "PACS") -> None:
    """What the SCP does for each file (spool, then record), without the network."""
    for path in paths:
        data = path.read_bytes()
        ds = dcmread(path, stop_before_pixels=True)
        target = spool.instance_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        spool.write_atomic(target, data)
        receipt = InstanceReceipt(
            study_uid=str(ds.StudyInstanceUID),
            series_uid=str(ds.SeriesInstanceUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            modality=str(ds.Modality),
            calling_ae=calling_ae,
            peer_host="127.0.0.1",
            path=str(target),
            # what the SCP records: transfer syntax + data set
            sha256=file_content_sha256(target) or "",
            size=len(data),
            received_at=datetime.now(UTC),
        )
        joblog.record_instance(receipt)
