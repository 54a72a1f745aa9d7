"""What the benchmarks share: a server subprocess, Envoy in front of it, tokens, the seed's
template data, bare SQLite inserts for ceilings, percentiles, the machine line and result files.

Nothing here measures anything on its own; each bench/*.py decides what it times and prints.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchboard.server.app.platform import descriptor_set_path
from switchboard.server.core.auth import Role, TokenService
from switchboard.server.core.clock import SystemClock
from switchboard.server.edge.envoy import EnvoySettings

RESULTS = Path(__file__).parent / "results"
SECRET = "bench-secret-0123456789-0123456789-0123456789"

# seeds/001: the sample SMS template's base64 content
# (`Hi [(${name})], enter [(${resetLink})] to reset password`) and the arguments of its preview.
SEED_SMS_CONTENT = "SGkgWygke25hbWV9KV0sIGVudGVyIFsoJHtyZXNldExpbmt9KV0gdG8gcmVzZXQgcGFzc3dvcmQ="
SEED_PLAIN_ARGUMENTS: dict[str, Any] = {
    "name": "Juan",
    "subscriptions": ["ftth", "mobile", "health"],
    "resetLink": "https://password.com/reset/123456",
    "birthDate": "2022-04-25 12:00:00",
    "vipClient": False,
    "balance": 45.7,
    "birthCountry": "US",
}
SEED_ARGUMENTS: dict[str, Any] = {
    **SEED_PLAIN_ARGUMENTS,
    "attached.txt": "SG9sYSBQYWJsbyA6KQo=",
    "embedded_image_png": (
        "iVBORw0KGgoAAAANSUhEUgAAAAUAAAAFCAYAAACNbyblAAAAHElEQVQI12P4//8/w38GIAXDIBKE0DHxgljN"
        "BAAO9TXL0Y4OHwAAAABJRU5ErkJggg=="
    ),
    "qrArgument": "Text to convert into QR Code",
}
# The `password_reset` type's declaration of those arguments (resetLink sensitive).
SEED_TYPE_ARGUMENTS = [
    {"name": "name", "type": "String", "sensitive": False},
    {"name": "subscriptions", "type": "StringList", "sensitive": False},
    {"name": "resetLink", "type": "Link", "sensitive": True},
    {"name": "birthDate", "type": "Date", "sensitive": False},
    {"name": "vipClient", "type": "Boolean", "sensitive": False},
    {"name": "balance", "type": "Number", "sensitive": False},
    {"name": "birthCountry", "type": "LocaleRegion", "sensitive": False},
    {"name": "attached.txt", "type": "Attachment", "sensitive": False},
    {"name": "embedded_image_png", "type": "Image", "sensitive": False},
    {"name": "qrArgument", "type": "QrCode", "sensitive": False},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_serving(port: int, attempts: int = 200) -> None:
    """Until the gRPC health service answers SERVING (every 0.1 s, `attempts` times)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(attempts):
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


def _settings_env(database_url: str, work: Path, **settings: str) -> dict[str, str]:
    """The environment of a `switchboard` command: this one's, plus the database, the var
    directory, the bench's JWT secret and any other SWITCHBOARD_<NAME> settings."""
    return {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_VAR_DIR": str(work),
        "SWITCHBOARD_JWT_SECRET": SECRET,
        **{f"SWITCHBOARD_{name.upper()}": value for name, value in settings.items()},
    }


class Server:
    """`switchboard serve` as a subprocess on a fresh SQLite database in `work` (WAL,
    synchronous=FULL: the defaults), its log in work/server.log.

    `async with Server(work) as server:` waits until it serves and stops it on the way out;
    `wait_serving()` and `stop()` do the same by hand for a server that outlives one block.
    Keyword arguments are further settings: `routes=...` is SWITCHBOARD_ROUTES."""

    def __init__(self, work: Path, **settings: str) -> None:
        self.work = work
        self.db = work / "server.db"
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "switchboard.server.cli", "serve"],
            env=_settings_env(
                f"sqlite+aiosqlite:///{self.db}",
                work,
                grpc_port=str(self.port),
                log_level="WARNING",
                **settings,
            ),
            stderr=open(work / "server.log", "w"),  # noqa: SIM115 - lives as long as the server
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def wait_serving(self) -> None:
        await wait_serving(self.port)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)

    async def __aenter__(self) -> Server:
        try:
            await self.wait_serving()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop()


def envoy_settings(grpc_port: int) -> EnvoySettings:
    """Envoy on a free local port in front of one server, no access log."""
    return EnvoySettings(
        listen_port=free_port(),
        admin_port=free_port(),
        upstreams=[("127.0.0.1", grpc_port)],
        descriptor_path=descriptor_set_path(),
        listen_host="127.0.0.1",
        access_log_path="/dev/null",
    )


def token(org: str, role: Role = Role.CLIENT) -> str:
    return TokenService(SECRET, SystemClock()).issue(org=org, roles=[role], subject="bench")


def auth(org: str) -> list[tuple[str, str]]:
    """gRPC metadata of a CLIENT of `org`."""
    return [("authorization", f"Bearer {token(org)}")]


def migrate(db: Path, work: Path) -> None:
    """A fresh database with the server's schema (`switchboard db upgrade`)."""
    subprocess.run(
        [sys.executable, "-m", "switchboard.server.cli", "db", "upgrade"],
        env=_settings_env(f"sqlite:///{db}", work),
        check=True,
        capture_output=True,
    )


def epoch_micros(at: datetime) -> int:
    """UtcDateTime's SQLite form: integer microseconds since the epoch."""
    return (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def with_defaults(table: Any, given: list[str]) -> tuple[list[str], list[object]]:
    """`given` plus every other column with a constant model default, and those defaults: an
    INSERT's columns as the server would fill them."""
    defaults = {
        column.name: column.default.arg
        for column in table.columns
        if column.default is not None and not callable(column.default.arg)
    }
    rest = [name for name in defaults if name not in given]
    return given + rest, [defaults[name] for name in rest]


def bare_insert(
    db: Path,
    table: str,
    names: list[str],
    values: Sequence[tuple[object, ...]],
    batch: int,
    *,
    foreign_keys: bool = False,
) -> float:
    """Seconds an `executemany` INSERT of `values` takes in transactions of `batch` rows, with
    the server's pragmas (WAL, synchronous=FULL; foreign_keys when asked): a ceiling's core."""
    statement = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
        start = time.perf_counter()
        for offset in range(0, len(values), batch):
            conn.execute("BEGIN")
            conn.executemany(statement, values[offset : offset + batch])
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def rss(pid: int) -> int:
    """A process's resident set in bytes (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RssSampler:
    """Samples a process's VmRSS from /proc in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return rss(self._pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self._interval)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank value below which `fraction` of `values` lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def cores() -> str:
    """The machine as the Markdown reports name it: architecture and core count."""
    return f"{platform.machine()}, {os.cpu_count()} cores"


def platform_info() -> dict[str, str]:
    """The machine as the JSON results of the single-figure benchmarks name it."""
    return {"machine": platform.platform(), "python": platform.python_version()}


def emit(row: object) -> None:
    """One result row (a dataclass or a dict) as a JSON line on stdout, at once."""
    data = asdict(row) if is_dataclass(row) and not isinstance(row, type) else row
    print(json.dumps(data), flush=True)


def write_results(name: str, data: object, lines: list[str], *, indent: int = 2) -> None:
    """bench/results/<name>.json (`data`) and <name>.md (`lines`, newline-terminated)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=indent) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
