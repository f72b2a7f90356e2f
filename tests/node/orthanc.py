"""A real Orthanc (Debian ``orthanc``) on loopback for the end-to-end tests.

The test writes the JSON configuration into a tmp folder (DICOM and HTTP ports, remote access off,
storage in tmp, the node registered as a modality) and talks to it over its REST API.

Orthanc cannot listen on port 0, so :meth:`Orthanc.launch` picks two free ports, starts it and
checks that it is up: Orthanc exits when a port is taken (by another process between the pick
and its bind), and then it starts again on two other ports. "Up" means that ``/system`` answers
with this instance's own name; Orthanc opens its DICOM port before its HTTP port, so both are
its own by then.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: How long Orthanc may take to answer on its HTTP port.
START_TIMEOUT_S = 30.0
#: How many times :meth:`Orthanc.launch` starts it on other ports when a port was taken.
LAUNCH_ATTEMPTS = 5


def orthanc_available() -> bool:
    return Path(ORTHANC).is_file() and os.access(ORTHANC, os.X_OK)


class OrthancExitedError(RuntimeError):
    """Orthanc exited while it started (a port taken, a bad configuration); see its log."""


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (they may be taken before they are used: see launch)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Orthanc:
    """``Orthanc config.json`` as a child process; :meth:`get` / :meth:`post` its REST API."""

    def __init__(
        self,
        folder: Path,
        dicom_port: int,
        http_port: int,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        ae_title: str = "ORTHANC",
    ) -> None:
        """Start Orthanc on these ports and return once it answers.

        Raises
        ------
        OrthancExitedError
            It exited before it answered (with :meth:`launch`: started again elsewhere).
        RuntimeError
            It did not answer in :data:`START_TIMEOUT_S` (it is stopped).
        """
        folder.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{http_port}"
        self.dicom_port = dicom_port
        self.ae_title = ae_title
        self.name = f"spinenode-test-{os.getpid()}-{os.urandom(4).hex()}"
        config = {
            "Name": self.name,
            "DicomAet": ae_title,
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
            "DicomCheckCalledAet": False,
            "Plugins": [],
            "StableAge": 2,
            "ConcurrentJobs": 2,
        }
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.log = (folder / "orthanc.log").open("ab")  # earlier attempts' lines stay
        self.process = subprocess.Popen(
            [ORTHANC, str(folder / "orthanc.json")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self.process.poll() is not None:
                self.stop()
                raise OrthancExitedError(f"Orthanc exited; see {folder / 'orthanc.log'}")
            time.sleep(0.1)  # polling its REST API, not waiting in its place
        self.stop()
        raise RuntimeError(f"Orthanc did not start; see {folder / 'orthanc.log'}")

    @classmethod
    def launch(
        cls,
        folder: Path,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        ae_title: str = "ORTHANC",
    ) -> Orthanc:
        """Orthanc on two free ports, started again on others (:data:`LAUNCH_ATTEMPTS` times)
        when it exits because one was taken in between."""
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            dicom_port, http_port = _free_ports(2)
            try:
                return cls(folder, dicom_port, http_port, modalities, ae_title)
            except OrthancExitedError:
                if attempt == LAUNCH_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _answers(self) -> bool:
        """Whether this Orthanc (its own name, not whatever holds the port) answers."""
        try:
            system = self.get("/system")
        except (urllib.error.URLError, ConnectionError, ValueError):
            return False
        return isinstance(system, dict) and system.get("Name") == self.name

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        with _NO_PROXY.open(req, timeout=60) as response:
            data = response.read()
        return json.loads(data) if data else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: bytes | dict[str, Any] | str) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", path, data)

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Register (or change) a DICOM modality at run time, e.g. a node on a port it bound."""
        body = json.dumps({"AET": ae_title, "Host": host, "Port": port}).encode()
        self.request("PUT", f"/modalities/{name}", body)

    def upload(self, paths: list[Path]) -> str:
        """Upload files; the Orthanc ID of their study."""
        study = ""
        for path in paths:
            study = str(self.post("/instances", path.read_bytes())["ParentStudy"])
        return study

    def series_modalities(self, study_id: str) -> list[str]:
        series = self.get(f"/studies/{study_id}/series")
        return sorted(str(s["MainDicomTags"].get("Modality", "")) for s in series)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
