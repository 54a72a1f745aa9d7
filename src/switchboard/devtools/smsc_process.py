"""The development SMSC as a subprocess, for tests and benchmarks: a real SMPP peer over TCP,
with its HTTP control API for what it received (see switchboard.devtools.smsc)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SmscProcess:
    """The dev SMSC in a subprocess on free ports, and its control API."""

    def __init__(self, *extra: str) -> None:
        self.port, self.control_port = free_port(), free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.control_port}", timeout=5)

    def start(self) -> None:
        command = [sys.executable, "-m", "switchboard.devtools.smsc", "--port", str(self.port)]
        command += ["--control-port", str(self.control_port), *self.extra]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.http.get("/stats")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self.http.get("/stats").json()
        return result

    def messages(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.http.get("/messages").json()
        return result

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result
