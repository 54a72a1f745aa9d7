"""Domain errors and the one place they become gRPC statuses.

Services raise these; the RPC gateway turns them into a `google.rpc.Status` carrying one
`ErrorInfo` (reason = the documented code, metadata.http_status = the REST status) and, for
invalid input, a `BadRequest` naming every offending field. The Envoy edge renders that status
into each REST family's documented error body.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from switchboard.common.v1 import error_reason_pb2

Reason = error_reason_pb2.ErrorReason
ERROR_DOMAIN = "switchboard"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: `field` is a path in the client's own JSON names."""

    field: str
    description: str
    reason: str = "Invalid"  # short machine code: Required, Length, Invalid, Range, Format…


@dataclass
class DomainError(Exception):
    """Base of every error a client may see. Subclasses fix the codes; the message is free."""

    message: str
    violations: list[FieldViolation] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    reason: ClassVar[int] = Reason.ERROR_REASON_SERVER_ERROR

    def __str__(self) -> str:
        return self.message


class InvalidArgument(DomainError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    reason = Reason.ERROR_REASON_BAD_REQUEST


class FieldTooLong(InvalidArgument):
    reason = Reason.ERROR_REASON_FIELD_TOO_LONG


class MessageTooLarge(InvalidArgument):
    reason = Reason.ERROR_REASON_MESSAGE_TOO_LARGE


class AttachmentTooBig(InvalidArgument):
    """Attachment content larger than the configured limit (1019)."""

    reason = Reason.ERROR_REASON_ATTACHMENT_TOO_BIG


class InvalidTrackingUrl(InvalidArgument):
    """A message request's `track_links` body with a URL that cannot be tracked (1020)."""

    reason = Reason.ERROR_REASON_INVALID_TRACKING_URL


class InvalidCriteria(InvalidArgument):
    """A dynamic group's (or a list's) criteria expression is not valid (1017)."""

    reason = Reason.ERROR_REASON_INVALID_CRITERIA


class Unauthenticated(DomainError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    reason = Reason.ERROR_REASON_UNAUTHORIZED


class PaymentRequired(DomainError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 402
    reason = Reason.ERROR_REASON_INSUFFICIENT_CREDIT


class PermissionDenied(DomainError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    reason = Reason.ERROR_REASON_FORBIDDEN


class NotFound(DomainError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    reason = Reason.ERROR_REASON_NOT_FOUND


class StaleData(DomainError):
    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    reason = Reason.ERROR_REASON_STALE_DATA


class UniqueKeyViolated(DomainError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409
    reason = Reason.ERROR_REASON_UNIQUE_KEY_VIOLATED


class PreconditionFailed(DomainError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 412
    reason = Reason.ERROR_REASON_PRECONDITION_FAILED


@dataclass
class TooManyRequests(DomainError):
    """A request-rate limit refused the request; `retry_after` seconds is when to try again.

    gRPC clients get it as a `google.rpc.RetryInfo` detail and as `retry-after` metadata (whole
    seconds), which the transcoder passes to REST clients as the `Retry-After` header."""

    retry_after: float = 0.0

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    reason = Reason.ERROR_REASON_TOO_MANY_REQUESTS

    @property
    def retry_after_seconds(self) -> int:
        return retry_after_seconds(self.retry_after)


def retry_after_seconds(seconds: float) -> int:
    """HTTP Retry-After for a wait of `seconds`: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


class ServiceUnavailable(DomainError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    reason = Reason.ERROR_REASON_SERVICE_UNAVAILABLE


class StreamLagged(DomainError):
    """A stream's subscriber fell further behind than its buffer holds. The stream ends after an
    in-band `stream.lagged` event; `metadata["cursor"]` is where to resume (`after`) losing
    nothing."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 503
    reason = Reason.ERROR_REASON_SERVICE_UNAVAILABLE


class StreamClosing(DomainError):
    """The server is shutting down: the stream ends after an in-band `stream.closing` event
    whose cursor (also `metadata["cursor"]`) is where to resume, on this or another replica."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    reason = Reason.ERROR_REASON_SERVICE_UNAVAILABLE


class InternalError(DomainError):
    """Anything unexpected: the client sees a generic message, the log has the details."""


class ContentCorrupted(InternalError):
    """Stored content that fails its size or checksum check: never served as if it were fine."""

    grpc_code = grpc.StatusCode.DATA_LOSS


def validation_error(violations: list[FieldViolation], message: str | None = None) -> DomainError:
    """The error for a set of invalid fields: 1023 when only lengths are exceeded, else 400."""
    only_lengths = all(v.reason == "Length" for v in violations)
    summary = message or "; ".join(f"{v.field}: {v.description}" for v in violations)
    cls = FieldTooLong if violations and only_lengths else InvalidArgument
    return cls(summary, violations=violations)


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")),
    grpc.Status,  # type: ignore[misc]
):
    """What grpc_status.rpc_status.to_status builds, here with more trailing metadata."""


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


# An error travels in trailers (grpc-message, grpc-status-details-bin in base64), which every
# hop bounds: gRPC clients refuse metadata past 8 KiB, and Envoy resets the whole upstream
# HTTP/2 connection, failing every request in flight on it, when trailers outgrow its limit.
# So what an error carries is bounded here, whatever the client sent to cause it: the message
# and each field and description are cut (in UTF-8 bytes), and the violations listed stop at a
# budget, the last one saying how many more there were.
MAX_MESSAGE_BYTES = 512
MAX_FIELD_BYTES = 128
MAX_DESCRIPTION_BYTES = 256
MAX_VIOLATIONS_BYTES = 2048


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, on a character boundary, marked with '…'."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


def _bounded_violations(
    violations: list[FieldViolation],
) -> list[error_details_pb2.BadRequest.FieldViolation]:
    shown: list[error_details_pb2.BadRequest.FieldViolation] = []
    size = 0
    for index, v in enumerate(violations):
        item = error_details_pb2.BadRequest.FieldViolation(
            field=clip(v.field, MAX_FIELD_BYTES),
            description=clip(v.description, MAX_DESCRIPTION_BYTES),
            reason=v.reason,
        )
        size += item.ByteSize()
        if shown and size > MAX_VIOLATIONS_BYTES:
            rest = len(violations) - index
            more = f"and {rest} more invalid field{'s' if rest > 1 else ''}"
            shown.append(error_details_pb2.BadRequest.FieldViolation(description=more))
            break
        shown.append(item)
    return shown


def to_rpc_status(error: DomainError) -> grpc.Status:
    """The gRPC status (with rich details) a client receives for `error`, bounded in size."""
    info = error_details_pb2.ErrorInfo(
        reason=str(int(error.reason)),
        domain=ERROR_DOMAIN,
        metadata={
            "http_status": str(error.http_status),
            **{k: clip(v, MAX_FIELD_BYTES) for k, v in error.metadata.items()},
        },
    )
    details = [_pack(info)]
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=_bounded_violations(error.violations)
        )
        details.append(_pack(bad_request))
    retry_after = error.retry_after if isinstance(error, TooManyRequests) else 0.0
    if retry_after > 0:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    code: int = error.grpc_code.value[0]
    message = clip(error.message, MAX_MESSAGE_BYTES)
    status = rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))
    if isinstance(error, TooManyRequests) and retry_after > 0:
        # Sent before any initial metadata, so the RPC fails trailers-only and Envoy's transcoder
        # copies this into the REST response's headers (tests/core/test_rate_limits.py pins that).
        trailing = (*status.trailing_metadata, ("retry-after", str(error.retry_after_seconds)))
        return _Status(status.code, status.details, trailing)
    return status


def internal_status() -> grpc.Status:
    return to_rpc_status(InternalError("Internal server error. Please report"))


__all__ = [
    "AttachmentTooBig",
    "ContentCorrupted",
    "DomainError",
    "FieldTooLong",
    "FieldViolation",
    "InternalError",
    "InvalidArgument",
    "InvalidCriteria",
    "InvalidTrackingUrl",
    "MessageTooLarge",
    "NotFound",
    "PaymentRequired",
    "PermissionDenied",
    "PreconditionFailed",
    "ServiceUnavailable",
    "StaleData",
    "TooManyRequests",
    "Unauthenticated",
    "UniqueKeyViolated",
    "internal_status",
    "require_version",
    "retry_after_seconds",
    "to_rpc_status",
    "validation_error",
]


def require_version(current: int, expected: int | None, resource: str) -> None:
    """Optimistic locking: a write that expected another version fails with 409 / 1001."""
    if expected is not None and expected != current:
        raise StaleData(
            f"{resource} is at version {current}, not {expected}: refresh it and retry",
            metadata={"version_number": str(current)},
        )
