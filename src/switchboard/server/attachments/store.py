"""Stored files: metadata rows, with content as ordered database chunks or as a file.

Job files are database chunks, written as they arrive. Messaging attachments' content is a file
in the attachment directory (attachments/files.py) that the row names; `chunks` reads either
kind, so a contact import reads a messaging attachment like its own upload.

Writes are synchronous and take the caller's transaction (see Database.run_write), so a chunk can
be committed together with whatever it belongs to (an export batch and its job's checkpoint, an
import job and its CSV). Reads are async and fetch one chunk per query: a file of any size is
streamed without ever being held in memory whole. Every read a client can reach is org-scoped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from switchboard.server.attachments.files import ContentDirectory, FileGone, StoredFile, missing
from switchboard.server.attachments.models import Attachment, AttachmentChunk, AttachmentState
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import NotFound, ServiceUnavailable
from switchboard.server.core.ids import new_id
from switchboard.server.core.types import Row

CHUNK_BYTES = 256 * 1024  # stored chunk size: big enough to be cheap, small enough to stream
_MAX_MOVES = 5  # re-uploads a download follows before it gives up (each one a new commit)

_attachments = table_of(Attachment)
_chunks = table_of(AttachmentChunk)
_a = _attachments.c
_k = _chunks.c


_NEXT_CHUNK = (
    select(_k.seq, _k.data)
    .where(_k.attachment_id == bindparam("id"), _k.seq >= bindparam("seq"))
    .order_by(_k.seq)
    .limit(1)
)


class AttachmentPurpose:
    CONTACT_IMPORT = "contact_import"
    CONTACT_EXPORT = "contact_export"
    CONTACT_IMPORT_FAILURES = "contact_import_failures"
    MESSAGING = "messaging"  # /messaging/attachments (also usable as a contact import file)


def split(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """`data` cut into stored-chunk-sized pieces (none when empty)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


class AttachmentStore:
    def __init__(self, db: Database, files: ContentDirectory) -> None:
        self._db = db
        self.files = files

    # Writes: synchronous, inside the caller's transaction.

    def create(
        self,
        session: Session,
        *,
        org_id: str,
        application_id: str,
        purpose: str,
        content_type: str,
        now: datetime,
        filename: str = "",
        name: str = "",
    ) -> str:
        """A new, empty attachment in state CREATED; returns its id."""
        attachment_id = new_id("att_")
        session.connection().execute(
            insert(_attachments),
            {
                "id": attachment_id,
                "org_id": org_id,
                "purpose": purpose,
                "state": AttachmentState.CREATED.value,
                "content_type": content_type,
                "filename": filename,
                "name": name,
                "checksum": "",
                "size_bytes": 0,
                "application_id": application_id,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            },
        )
        return attachment_id

    def append(
        self, session: Session, attachment_id: str, pieces: Sequence[bytes], *, first_seq: int
    ) -> int:
        """Store `pieces` as chunks `first_seq`, `first_seq + 1`, …; returns the next free seq.

        Also adds their length to the attachment's size, so a file being written reports how far
        it got."""
        if not pieces:
            return first_seq
        connection = session.connection()
        connection.execute(
            insert(_chunks),
            [
                {"attachment_id": attachment_id, "seq": first_seq + i, "data": piece}
                for i, piece in enumerate(pieces)
            ],
        )
        connection.execute(
            update(_attachments)
            .where(_a.id == attachment_id)
            .values(size_bytes=_a.size_bytes + sum(len(p) for p in pieces))
        )
        return first_seq + len(pieces)

    def next_seq(self, session: Session, attachment_id: str) -> int:
        """The seq the next appended chunk takes."""
        query = select(func.coalesce(func.max(_k.seq) + 1, 0)).where(
            _k.attachment_id == attachment_id
        )
        return int(session.connection().execute(query).scalar_one())

    def finalize(self, session: Session, attachment_id: str, now: datetime) -> None:
        """The content is complete: UPLOADED (readable by whoever may read it)."""
        session.connection().execute(
            update(_attachments)
            .where(_a.id == attachment_id)
            .values(state=AttachmentState.UPLOADED.value, updated_at=now, version=_a.version + 1)
        )

    def use_file(
        self,
        session: Session,
        attachment_id: str,
        stored: StoredFile,
        *,
        now: datetime,
        changes: Mapping[str, Any] | None = None,
    ) -> str:
        """The attachment's content is now `stored` (a re-upload replaces the old content):
        location, size, checksum, UPLOADED, plus any metadata `changes`, in the caller's
        transaction. Returns the location it had before (to remove once this commits)."""
        connection = session.connection()
        previous = connection.execute(
            select(_a.location).where(_a.id == attachment_id)
        ).scalar_one()
        connection.execute(delete(_chunks).where(_k.attachment_id == attachment_id))
        connection.execute(
            update(_attachments)
            .where(_a.id == attachment_id)
            .values(
                location=stored.location,
                size_bytes=stored.size,
                checksum=stored.checksum,
                state=AttachmentState.UPLOADED.value,
                updated_at=now,
                version=_a.version + 1,
                **dict(changes or {}),
            )
        )
        return "" if previous == stored.location else str(previous)

    def delete(self, session: Session, org_id: str, attachment_ids: Sequence[str]) -> list[str]:
        """Remove the org's attachments and their chunks (the chunks explicitly: SQLite honours
        ON DELETE CASCADE only with foreign keys on, which a foreign tool may not set). Returns
        the locations of their files, to remove once this commits."""
        ids = [i for i in attachment_ids if i]
        if not ids:
            return []
        connection = session.connection()
        owned = select(_a.id).where(_a.org_id == org_id, _a.id.in_(ids))
        locations = connection.execute(
            select(_a.location).where(_a.org_id == org_id, _a.id.in_(ids), _a.location != "")
        ).scalars()
        files = [str(location) for location in locations]
        connection.execute(delete(_chunks).where(_k.attachment_id.in_(owned)))
        connection.execute(delete(_attachments).where(_a.org_id == org_id, _a.id.in_(ids)))
        return files

    def get_sync(self, session: Session, org_id: str, attachment_id: str) -> Row | None:
        query = select(_attachments).where(_a.org_id == org_id, _a.id == attachment_id)
        return session.connection().execute(query).mappings().one_or_none()

    # Reads: async, on read sessions.

    async def get(self, org_id: str, attachment_id: str) -> Row | None:
        """The org's attachment (metadata only), or None (also for another org's)."""
        async with self._db.read() as session:
            query = select(_attachments).where(_a.org_id == org_id, _a.id == attachment_id)
            return (await session.execute(query)).mappings().one_or_none()

    async def chunks(self, org_id: str, attachment_id: str) -> AsyncIterator[bytes]:
        """The attachment's content in order, one stored chunk per item (nothing for another
        org's attachment). Each chunk is its own short read, so no transaction stays open while
        the consumer works on a chunk."""
        attachment = await self.get(org_id, attachment_id)
        if attachment is None:
            return
        if attachment["location"]:
            async for piece in self._file_pieces(org_id, attachment):
                yield piece
            return
        seq = 0
        while True:
            async with self._db.read() as session:
                chunk = (
                    await session.execute(_NEXT_CHUNK, {"id": attachment_id, "seq": seq})
                ).first()
            if chunk is None:
                return
            seq = int(chunk.seq) + 1
            yield bytes(chunk.data)

    async def _file_pieces(self, org_id: str, attachment: Row) -> AsyncIterator[bytes]:
        """The content of the file `attachment` names. A re-upload (or DELETE) that commits
        between reading the row and opening its file removes that file: then the row is read
        again and the version it names now is served, whole. Only a file that the current row
        still names and that is missing is damage."""
        for _ in range(_MAX_MOVES):
            location = attachment["location"]
            pieces = self.files.read(
                location, size=attachment["size_bytes"], checksum=attachment["checksum"]
            )
            try:
                first = await anext(pieces, None)
            except FileGone:
                current = await self.get(org_id, attachment["id"])
                if current is None:
                    raise NotFound("attachment not found") from None
                if current["location"] == location or not current["location"]:
                    raise missing(location) from None
                attachment = current
                continue
            if first is not None:
                yield first
                async for piece in pieces:
                    yield piece
            return
        raise ServiceUnavailable("the attachment's content is being replaced: retry")

    async def file_locations(self) -> set[str]:
        """Every location a row names (what the attachment directory must keep)."""
        async with self._db.read() as session:
            query = select(_a.location).where(_a.location != "")
            return {str(location) for location in (await session.execute(query)).scalars()}

    async def sweep_files(self, *, older_than_seconds: float) -> int:
        """Remove files no attachment names (see ContentDirectory.sweep)."""
        named = await self.file_locations()
        return await self.files.sweep(named, older_than_seconds=older_than_seconds)
