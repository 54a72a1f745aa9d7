"""Messaging attachments: metadata CRUD, access tokens, content upload and download.

Content is a file in the attachment directory (`attachment_dir`, attachments/files.py) named by
its SHA-256, which the row keeps as `checksum`. An upload writes the file durably first, then
commits the row's move to it (CREATED → UPLOADED, with its event); the file a re-upload or a
DELETE leaves unnamed is removed after that commit, and a periodic sweep removes whatever a crash
left unnamed. Downloads check size and checksum, so damaged content is an error, not a download.
Contact import reads a messaging attachment through the same store as its own uploads.

The content URL carries an access token (AccessTokenService, owner ATTACHMENT), not a bearer
token. Unknown, expired, revoked (deleted with its attachment) and foreign tokens (another
owner's) are all 401. An upload is `multipart/form-data` with one file part (or, for
convenience, the raw bytes with their own content type); it is held in memory up to
`attachment_max_bytes` (larger → 400 / 1019) before it is written. A re-upload replaces the
content. DELETE removes the whole attachment: metadata, content and tokens.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from switchboard.server.attachments.models import Attachment, AttachmentState
from switchboard.server.attachments.store import AttachmentPurpose, AttachmentStore
from switchboard.server.contacts.models import TokenOwner
from switchboard.server.contacts.tokens import AccessTokenService
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import (
    AttachmentTooBig,
    InvalidArgument,
    NotFound,
    require_version,
)
from switchboard.server.core.events import EventLog
from switchboard.server.core.org_table import OrgTable
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row, Snapshot
from switchboard.server.core.validation import Checks

log = logging.getLogger(__name__)

attachments_table = table_of(Attachment)
_a = attachments_table.c

LIMITS = {"name": 256, "type": 128, "filename": 256}
_FILTER_COLUMNS = {"type": "content_type", "size": "size_bytes"}
_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
DEFAULT_TYPE = "application/octet-stream"

# Senders area hook: extra MIME rules of a sender type, (org, mime type) → refusal or None.
MimePolicy = Callable[[str, str], str | None]


def snapshot(row: Row) -> Snapshot:
    return {
        "id": row["id"],
        "name": row["name"],
        "type": row["content_type"],
        "size": row["size_bytes"],
        "filename": row["filename"],
        "state": row["state"],
        "checksum": row["checksum"],
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


class _Messaging(OrgTable):
    def scope(self, org_id: str) -> Any:
        return (_a.org_id == org_id) & (_a.purpose == AttachmentPurpose.MESSAGING)


@dataclass(frozen=True)
class Part:
    data: bytes
    content_type: str
    filename: str


def parse_upload(content_type: str, body: bytes) -> Part:
    """The file in an upload body: the one file part of a multipart/form-data body (its bytes
    untouched), or the whole body for any other content type."""
    main = content_type.split(";", 1)[0].strip().lower()
    if not main.startswith("multipart/"):
        return Part(body, main, "")
    found = re.search(r'boundary="?([^";]+)"?', content_type)
    if found is None:
        raise InvalidArgument("multipart upload without a boundary")
    delimiter = b"--" + found.group(1).encode()
    if body.startswith(delimiter):
        rest = body[len(delimiter) :]
    else:  # a preamble before the first delimiter line
        start = body.find(b"\r\n" + delimiter)
        if start < 0:
            raise InvalidArgument("malformed multipart body: no opening boundary")
        rest = body[start + 2 + len(delimiter) :]
    parts: list[Part] = []
    closed = False
    for piece in rest.split(b"\r\n" + delimiter):
        if piece.startswith(b"--"):
            closed = True  # the closing delimiter (an epilogue may follow)
            break
        line_end = piece.find(b"\r\n")  # transport padding after the delimiter, then CRLF
        if line_end < 0:
            raise InvalidArgument("malformed multipart body: a delimiter line has no end")
        piece = piece[line_end + 2 :]
        if piece.startswith(b"\r\n"):
            head, data = b"", piece[2:]
        else:
            head, sep, data = piece.partition(b"\r\n\r\n")
            if not sep:
                raise InvalidArgument("malformed multipart body: a part has no header end")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        name = re.search(r'filename="([^"]*)"', headers.get("content-disposition", ""))
        parts.append(
            Part(
                data,
                headers.get("content-type", "").split(";", 1)[0].strip().lower(),
                name.group(1) if name else "",
            )
        )
    if not closed:
        raise InvalidArgument("malformed multipart body: no closing boundary (truncated?)")
    if len(parts) != 1:
        raise InvalidArgument(f"a multipart upload must have exactly one part, not {len(parts)}")
    return parts[0]


class AttachmentService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        store: AttachmentStore,
        tokens: AccessTokenService,
        max_bytes: int,
        allowed_types: list[str],
        blocked_types: list[str],
    ) -> None:
        self._db = db
        self._clock = clock
        self.store = store
        self._tokens = tokens
        self.max_bytes = max_bytes
        self._allowed = [t.lower() for t in allowed_types]
        self._blocked = [t.lower() for t in blocked_types]
        self.mime_policy: MimePolicy | None = None
        self.rows = _Messaging(
            db=db,
            events=events,
            table=attachments_table,
            noun="attachment",
            event_prefix="attachment",
            snapshot=snapshot,
            unique_message="attachment conflict",
        )

    # -- MIME checks -----------------------------------------------------------------------------

    def mime_refusal(self, org_id: str, mime: str) -> str | None:
        """Why `mime` may not be an attachment's type, or None."""
        mime = mime.lower()
        if any(fnmatch.fnmatchcase(mime, pattern) for pattern in self._blocked):
            return f"type {mime} is not allowed for attachments"
        if self._allowed and not any(fnmatch.fnmatchcase(mime, p) for p in self._allowed):
            return f"type {mime} is not among the allowed attachment types"
        if self.mime_policy is not None:
            return self.mime_policy(org_id, mime)
        return None

    def _validate(self, org_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        checks = Checks()
        changes: dict[str, Any] = {}
        for name, limit in LIMITS.items():
            value = values.get(name)
            if isinstance(value, str):
                text = value.strip()
                checks.length(name, text, limit)
                changes["content_type" if name == "type" else name] = text
        mime = changes.get("content_type")
        if mime and checks.ok("type"):
            if not _MIME.match(mime):
                checks.fail("type", "must be a MIME type such as image/png", "Format")
            elif (refusal := self.mime_refusal(org_id, mime)) is not None:
                checks.fail("type", refusal)
            changes["content_type"] = mime.lower()
        checks.raise_if_failed()
        return changes

    # -- metadata --------------------------------------------------------------------------------

    async def create(self, org_id: str, application_id: str, values: Mapping[str, Any]) -> str:
        changes = self._validate(org_id, values)
        now = self._clock.now()

        def work(session: Session) -> str:
            attachment_id = self.store.create(
                session,
                org_id=org_id,
                application_id=application_id,
                purpose=AttachmentPurpose.MESSAGING,
                content_type=changes.get("content_type", ""),
                filename=changes.get("filename", ""),
                name=changes.get("name", ""),
                now=now,
            )
            row = self.rows.locked(session, org_id, attachment_id)
            self.rows.event(session, "created", row, now)
            return attachment_id

        return await self.rows.write(work)

    async def update(
        self,
        org_id: str,
        attachment_id: str,
        values: Mapping[str, Any],
        expected_version: int | None,
    ) -> None:
        changes = self._validate(org_id, values)
        now = self._clock.now()

        def work(session: Session) -> None:
            current = self.rows.locked(session, org_id, attachment_id)
            require_version(current["version"], expected_version, "attachment")
            row = dict(current) | changes | {"updated_at": now, "version": current["version"] + 1}
            session.execute(update(attachments_table).where(_a.id == attachment_id).values(row))
            self.rows.event(session, "updated", row, now)

        await self.rows.write(work)

    async def delete(self, org_id: str, attachment_id: str) -> None:
        now = self._clock.now()

        def work(session: Session) -> list[str]:
            current = self.rows.locked(session, org_id, attachment_id)
            self._tokens.delete_owned(session, org_id, TokenOwner.ATTACHMENT, attachment_id)
            files = self.store.delete(session, org_id, [attachment_id])
            self.rows.event(session, "deleted", current, now)
            return files

        await self.store.files.remove(await self.rows.write(work))

    async def get(self, org_id: str, attachment_id: str) -> Snapshot:
        return await self.rows.get(org_id, attachment_id)

    async def list_page(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[Snapshot], str]:
        return await self.rows.list_page(
            org_id, given, page, checks, columns=_FILTER_COLUMNS, integers=frozenset({"size"})
        )

    async def create_token(self, org_id: str, application_id: str, attachment_id: str) -> str:
        await self.rows.get(org_id, attachment_id)  # 404 for unknown or foreign ids
        return await self._tokens.create(
            org_id, application_id, TokenOwner.ATTACHMENT, attachment_id
        )

    # -- content ---------------------------------------------------------------------------------

    async def _by_token(self, token: str) -> Row:
        verified = await self._tokens.verify(token, TokenOwner.ATTACHMENT)
        row = await self.store.get(verified.org_id, verified.owner_id)
        if row is None or row["purpose"] != AttachmentPurpose.MESSAGING:
            raise NotFound("attachment not found")
        return row

    async def upload(self, token: str, content_type: str, pieces: AsyncIterator[bytes]) -> str:
        """Store the content an upload carries; returns the attachment id."""
        attachment = await self._by_token(token)
        org_id = attachment["org_id"]
        body = bytearray()
        # Room for the multipart framing around a file of the largest size.
        limit = self.max_bytes + 64 * 1024
        async for piece in pieces:
            body += piece
            if len(body) > limit:
                raise self._too_big()
        part = parse_upload(content_type, bytes(body))
        del body
        if len(part.data) > self.max_bytes:
            raise self._too_big()
        if not part.data:
            raise InvalidArgument("the upload has no content")
        changes: dict[str, Any] = {}
        mime = attachment["content_type"] or part.content_type or DEFAULT_TYPE
        if not attachment["content_type"]:
            changes["content_type"] = mime
        if part.filename and not attachment["filename"]:
            changes["filename"] = part.filename[: LIMITS["filename"]]
        if (refusal := self.mime_refusal(org_id, mime)) is not None:
            raise InvalidArgument(refusal)
        now = self._clock.now()
        stored = await self.store.files.write(attachment["id"], part.data)
        del part

        def work(session: Session) -> str:
            current = self.rows.locked(session, org_id, attachment["id"])
            previous = self.store.use_file(session, current["id"], stored, now=now, changes=changes)
            row = self.rows.locked(session, org_id, attachment["id"])
            self.rows.event(session, "uploaded", row, now)
            return previous

        try:
            previous = await self.rows.write(work)
        except BaseException:
            await self._forget_unnamed(stored.location)
            raise
        await self.store.files.remove([previous])
        return str(attachment["id"])

    async def _forget_unnamed(self, location: str) -> None:
        """Remove a just-written file whose commit failed, unless a row names it after all (an
        identical upload that committed); if even that cannot be read, the sweep will see."""
        try:
            if location not in await self.store.file_locations():
                await self.store.files.remove([location])
        except Exception:
            log.warning("left attachment file %s to the sweep", location, exc_info=True)

    def _too_big(self) -> AttachmentTooBig:
        return AttachmentTooBig(
            f"attachment content exceeds the limit of {self.max_bytes} bytes",
            metadata={"max_bytes": str(self.max_bytes)},
        )

    async def download(self, token: str) -> tuple[str, AsyncIterator[bytes]]:
        """The content type and the chunks of an UPLOADED attachment's content."""
        attachment = await self._by_token(token)
        if attachment["state"] != AttachmentState.UPLOADED.value:
            raise NotFound("the attachment has no content yet")
        chunks = self.store.chunks(attachment["org_id"], attachment["id"])
        return attachment["content_type"] or DEFAULT_TYPE, chunks
