"""Configuration: environment variables prefixed `SWITCHBOARD_` (or a `.env` file)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of a server process, with the embedded defaults the run command relies on."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/switchboard.db",
        description="SQLAlchemy URL; postgresql:// URLs use asyncpg.",
    )
    var_dir: Path = Field(default=Path("./var"), description="Runtime files: SQLite db, secrets.")
    grpc_host: str = Field(default="127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(default=50051, description="gRPC port (0 picks a free one).")
    http_port: int = Field(default=8080, description="Envoy's REST + gRPC port (run command).")
    envoy_admin_port: int = Field(default=9901, description="Envoy admin port on 127.0.0.1.")
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret for bearer tokens; generated into var/jwt-secret when unset.",
    )
    jwt_public_key_file: Path | None = Field(
        default=None, description="PEM public key: also accept RS256 tokens signed by its pair."
    )
    log_level: str = Field(default="INFO", description="Python log level.")
    clock_offset_seconds: float = Field(
        default=0.0,
        description="Seconds the platform's clock runs ahead of the machine's (negative: behind), "
        "for tests and demos at another instant; every process of a deployment must share it.",
    )
    sqlite_synchronous: str = Field(
        default="FULL", description="SQLite synchronous pragma; FULL makes accepted durable."
    )
    group_commit_max_batch: int = Field(default=256, description="Most writes in one commit.")
    drain_seconds: float = Field(default=10.0, description="Grace period for in-flight RPCs.")
    sms_max_content_length: int = Field(default=1600, description="Most characters per SMS.")
    sms_max_batch: int = Field(default=1000, description="Most messages per SendSms request.")
    sms_default_region: str | None = Field(
        default=None, description="ISO region for numbers without a country code (e.g. ZA)."
    )
    routes: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Delivery routes as JSON: route name → provider (type smpp, clickatell, "
        'grandcom, smtp, whatsapp or sandbox, and its parameters) or {"same_as": route}. '
        "Unconfigured routes are sandboxes. See README § Delivery.",
    )
    sandbox_delivery_delay: float = Field(
        default=1.0, description="Seconds before the sandbox provider reports DELIVERED."
    )
    messaging_sandbox_provisioning: bool = Field(
        default=True,
        description="Sandbox mode for sender IDs: new ones are provisioned (ACTIVE) at once "
        "instead of waiting PENDING_IMPLEMENTATION for the Admin ProvisionSenderId RPC.",
    )
    dispatcher_poll_seconds: float = Field(
        default=1.0, description="How often workers look for due work without a wake-up."
    )
    dispatcher_batch: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="Messages the delivery engine claims per round: larger batches go faster, "
        "and are also the most a crash can make a provider receive twice.",
    )
    dispatcher_max_attempts: int = Field(
        default=5, description="Submits per message before a transient failure becomes FAILED."
    )
    dispatcher_retry_base_seconds: float = Field(
        default=2.0, description="First retry delay after a transient failure; doubles per try."
    )
    access_token_ttl_seconds: int = Field(
        default=3600, description="Lifetime of access tokens (attachment content, contacts)."
    )
    attachment_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        description="Largest messaging attachment content accepted (larger → 400 / 1019).",
    )
    attachment_dir: Path | None = Field(
        default=None,
        description="Directory of messaging attachment content (files named by SHA-256); "
        "var_dir/attachments when unset. Replicas must share it.",
    )
    attachment_sweep_seconds: float = Field(
        default=3600.0,
        description="How often (and after how long) files no attachment names are removed.",
    )
    attachment_allowed_types: list[str] = Field(
        default_factory=list,
        description='MIME types attachments may have, as JSON (["image/*", "application/pdf"]); '
        "empty: any type not blocked.",
    )
    attachment_blocked_types: list[str] = Field(
        default_factory=lambda: [
            "application/x-msdownload",
            "application/x-msdos-program",
            "application/x-sh",
            "application/x-executable",
        ],
        description="MIME types attachments may never have, as JSON (wildcards like text/*).",
    )
    contact_job_batch_rows: int = Field(
        default=1000, description="Contacts an import/export job handles per transaction."
    )
    contact_job_poll_seconds: float = Field(
        default=1.0, description="How often job workers look for queued jobs without a wake-up."
    )
    contact_job_lease_seconds: float = Field(
        default=60.0, description="A running job not renewed for this long is resumed elsewhere."
    )
    stream_poll_seconds: float = Field(
        default=1.0, description="How often streams re-read the event log without a wake-up."
    )
    stream_buffer_events: int = Field(
        default=1000,
        ge=1,
        description="Events a stream subscriber may fall behind before it is told "
        "`stream.lagged` (with the cursor to resume from) and its stream ends.",
    )
    default_language: str = Field(
        default="en",
        description="Communications: the org default language a channel falls back to when the "
        "type has no stable template in the requested one (then en).",
    )
    org_default_languages: dict[str, str] = Field(
        default_factory=dict,
        description='Per-org default languages, as JSON: {"yoigo": "es"} (else default_language).',
    )
    communications_secret: SecretStr | None = Field(
        default=None,
        description="Secret the keys of QR tokens and sealed renderings derive from (HKDF); the "
        "JWT secret when unset. Changing it invalidates QR tokens and queued communications.",
    )
    qr_token_ttl_seconds: int = Field(
        default=30 * 86400, description="Lifetime of a communication's qrToken."
    )
    public_base_url: str = Field(
        default="http://localhost:8080",
        description="Public base URL of the edge: short links (/s/{code}) and QR image links.",
    )
    email_from: str = Field(
        default="no-reply@switchboard.local",
        description="Sender address of communications' emails (the name is the senderInfo).",
    )
    communications_shorten_links: bool = Field(
        default=True,
        description="Shorten the non-sensitive Link arguments an SMS template uses (/s/{code}).",
    )

    webhooks_allow_private_urls: bool = Field(
        default=False,
        description="Event handlers: allow http and loopback, private and link-local receiver "
        "URLs (tests and local sandboxes only; never on a shared deployment).",
    )
    webhooks_attempt_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Event handlers: the most one webhook attempt may take."
    )
    webhooks_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        min_length=1,
        description="Event handlers: the delay before each attempt (JSON list; the first is the "
        "first attempt's), each with ±jitter; after the last a delivery is DEAD.",
    )
    webhooks_retry_jitter: float = Field(
        default=0.1, ge=0, le=1, description="Event handlers: relative jitter of retry delays."
    )
    webhooks_disable_after_seconds: float = Field(
        default=5 * 86400.0,
        gt=0,
        description="Event handlers: a handler failing continuously this long is disabled.",
    )
    webhooks_max_in_flight: int = Field(
        default=256, ge=1, description="Event handlers: concurrent attempts per server process."
    )
    webhooks_max_in_flight_per_handler: int = Field(
        default=16, ge=1, description="Event handlers: concurrent attempts to one handler."
    )
    webhooks_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Event handlers: how often the dispatcher looks for due work unwoken.",
    )

    rate_limit_per_token: float = Field(
        default=5000.0,
        ge=0,
        description="Requests per second one bearer token may make (HTTP 429 / RESOURCE_EXHAUSTED "
        "beyond); 0: no limit. Shared by every server process on one PostgreSQL.",
    )
    rate_limit_per_token_burst: float | None = Field(
        default=None,
        ge=1,
        description="Requests a token may make at once after idling (one second's worth if unset).",
    )
    rate_limit_per_org: float = Field(
        default=10000.0,
        ge=0,
        description="Requests per second all of an org's tokens together may make; 0: no limit.",
    )
    rate_limit_per_org_burst: float | None = Field(
        default=None,
        ge=1,
        description="Requests an org may make at once after idling (one second's worth if unset).",
    )
    rate_limit_lease_seconds: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="PostgreSQL: each process takes this many seconds' worth of a limit from the "
        "shared counter at a time; larger means fewer database writes and a looser limit.",
    )

    def sealing_secret(self) -> str:
        """What sealed values' keys derive from: the communications secret, else the JWT one."""
        if self.communications_secret is not None:
            return self.communications_secret.get_secret_value()
        return self.resolved_jwt_secret()

    def resolved_attachment_dir(self) -> Path:
        return (
            self.attachment_dir if self.attachment_dir is not None else self.var_dir / "attachments"
        )

    def jwt_secret_file(self) -> Path:
        """Where the server keeps the secret it generated (when none is configured)."""
        return self.var_dir / "jwt-secret"

    def existing_jwt_secret(self) -> str | None:
        """The configured secret, else the one kept under var/; None when there is neither."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.jwt_secret_file()
        return path.read_text().strip() if path.exists() else None

    def resolved_jwt_secret(self) -> str:
        """The configured secret, else one generated once and kept under var/."""
        existing = self.existing_jwt_secret()
        if existing is not None:
            return existing
        path = self.jwt_secret_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        path.write_text(secret)
        path.chmod(0o600)
        return secret
