"""Audio that plays into calls: uploaded messaging attachments (source_type ATTACHMENT), read
from the attachment store so a play lasts as long as its WAV file. URLs are not fetched (the
sandbox gives them a fixed length: media.AUDIO_FALLBACK_SECONDS)."""

from __future__ import annotations

from sqlalchemy import select

from switchboard.server.attachments.models import Attachment, AttachmentState
from switchboard.server.attachments.store import AttachmentStore
from switchboard.server.calling.media import Audio, AudioSource
from switchboard.server.core.db import Database, table_of
from switchboard.server.core.errors import FieldViolation, InvalidArgument

_attachments = table_of(Attachment)


class AttachmentAudio:
    def __init__(self, db: Database, store: AttachmentStore) -> None:
        self._db = db
        self._store = store

    async def for_org(self, org_id: str, media: Audio) -> bytes | None:
        """The bytes of an ATTACHMENT source of `org_id` (400 on `source` when it is not the
        org's uploaded attachment); None for a URL."""
        if media.source_type != AudioSource.ATTACHMENT:
            return None
        row = await self._store.get(org_id, media.source)
        if row is None or row["state"] != AttachmentState.UPLOADED.value:
            message = f"attachment {media.source!r} is not an uploaded attachment of yours"
            raise InvalidArgument(message, violations=[FieldViolation("source", message)])
        return b"".join([piece async for piece in self._store.chunks(org_id, media.source)])

    async def any_org(self, media: Audio) -> bytes | None:
        """The carrier's hook: the engine checked ownership when the play was requested."""
        if media.source_type != AudioSource.ATTACHMENT:
            return None
        async with self._db.read() as session:
            query = select(_attachments.c.org_id).where(_attachments.c.id == media.source)
            org_id = (await session.execute(query)).scalar()
        return None if org_id is None else await self.for_org(str(org_id), media)


__all__ = ["AttachmentAudio"]
