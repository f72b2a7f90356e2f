"""A real Orthanc (Debian ``orthanc``) on loopback for the end-to-end tests.

The test writes the JSON configuration into a tmp folder (DICOM and HTTP ports chosen free, remote
access off, storage in tmp, the node registered as a modality) and talks to it over its REST API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def orthanc_available() -> bool:
    return Path(ORTHANC).is_file() and os.access(ORTHANC, os.X_OK)


class Orthanc:
    """``Orthanc config.json`` as a child process; :meth:`get` / :meth:`post` its REST API."""

    def __init__(
        self,
        folder: Path,
        dicom_port: int,
        http_port: int,
        modalities: dict[str, tuple[str, str, int]],
        ae_title: str = "ORTHANC",
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{http_port}"
        self.dicom_port = dicom_port
        self.ae_title = ae_title
        config = {
            "Name": "spinenode-test",
            "DicomAet": ae_title,
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "storage"),
            "DicomModalities": {k: list(v) for k, v in modalities.items()},
            "DicomCheckCalledAet": False,
            "Plugins": [],
            "StableAge": 2,
            "ConcurrentJobs": 2,
        }
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        self.log = (folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [ORTHANC, str(folder / "orthanc.json")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not start; see {folder / 'orthanc.log'}")

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
