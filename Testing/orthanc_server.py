"""A real Orthanc PACS for tests: temporary storage, free local ports, DICOMweb plugin; start/stop/restart.

Used by test_pacs.py (and any test that needs a PACS):

    server = OrthancServer(tmp_path)   # skips the test when the Orthanc binary is absent
    server.start(); ...; server.stop()
"""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    def __init__(self, folder: Path, users: dict[str, str] | None = None):
        binary = shutil.which("Orthanc")
        if binary is None:
            pytest.skip("Orthanc is not installed: run Testing/system_deps.sh as root "
                        "(Debian packages orthanc, orthanc-dicomweb)")
        plugin = next((p for p in PLUGIN_CANDIDATES if Path(p).exists()), None)
        if plugin is None:
            pytest.skip("Orthanc's DICOMweb plugin is not installed: apt-get install orthanc-dicomweb")
        self.binary, self.folder = binary, Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = _free_port(), _free_port()
        self.config = self.folder / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "hccfusion-test", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": "HCCTEST", "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(users),
            "RegisteredUsers": users or {},
            "HttpServerEnabled": True, "DicomServerEnabled": True, "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "StorageCompression": False,
            "ConcurrentJobs": 1, "HttpThreadsCount": 4, "SaveJobs": False,
        }, indent=1))
        self.users = users or {}
        self.process: subprocess.Popen | None = None
        self.log = self.folder / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout: float = 30.0) -> "OrthancServer":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([self.binary, str(self.config)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start-up:\n{self.log.read_text()[-2000:]}")
            try:
                if self.get("/system").get("Version") and self.get("/plugins").count("dicom-web"):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer /system within {timeout} s:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def get(self, route: str):
        request = urllib.request.Request(self.url + route)
        if self.users:
            user, password = next(iter(self.users.items()))
            request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())
