"""Contact import and export jobs: creating, listing, deleting them, and their files.

The work itself is done by workers/contact_jobs.py; this module holds what both sides share: the
job table's statements, snapshots (the job as clients see it, also the event payload), events.

A job is leased while it runs. Every write of a running job goes through `advance`, which bumps
`version` only if it is still the version the worker last wrote: a job that was deleted, or taken
over by another worker after its lease ran out, fails the check and the worker's transaction is
rolled back, so no batch is ever applied twice.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import Select, and_, delete, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from switchboard.server.attachments.models import AttachmentState
from switchboard.server.attachments.store import (
    CHUNK_BYTES,
    AttachmentPurpose,
    AttachmentStore,
    split,
)
from switchboard.server.contacts.models import (
    ContactGroupRecord,
    ContactJobRecord,
    GroupType,
    JobKind,
    JobState,
)
from switchboard.server.core import listing
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database, for_update, table_of
from switchboard.server.core.errors import FieldViolation, InvalidArgument, NotFound
from switchboard.server.core.events import EventLog, NewEvent
from switchboard.server.core.ids import new_id
from switchboard.server.core.protomap import iso
from switchboard.server.core.types import Row
from switchboard.server.core.validation import Checks

jobs = table_of(ContactJobRecord)
groups = table_of(ContactGroupRecord)
_j = jobs.c
_g = groups.c

MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # an import file
MAX_UPLOAD_PIECE = 1024 * 1024  # one message of UploadContactImportFile
_UPLOAD_FLUSH = 1024 * 1024  # bytes buffered before they are written as stored chunks
MAX_LISTED_FAILURES = 100  # failed rows a job lists itself; the failures file has them all
CSV_CONTENT_TYPE = "text/csv"

_FILTER_COLUMNS = {
    "created_date": "created_at",
    "last_updated_date": "updated_at",
    "started_date": "started_at",
    "completed_date": "completed_at",
}
_FILTER_TIMES = frozenset(_FILTER_COLUMNS)


class JobLost(Exception):
    """The job was deleted, or another worker took it over: stop working on it."""


class ContactRows(Protocol):
    """What jobs need from ContactService (import_batch runs inside the job's transaction)."""

    CSV_COLUMNS: ClassVar[list[str]]

    def import_batch(
        self,
        session: Session,
        *,
        org_id: str,
        application_id: str,
        rows: Sequence[Mapping[str, str]],
        group_id: str | None,
        now: datetime,
    ) -> Sequence[Any]: ...

    @staticmethod
    def csv_row(row: Mapping[str, Any]) -> list[str]: ...


class GroupMembers(Protocol):
    """What exports need from GroupService: a group's members as a SELECT over `contacts`."""

    def member_query(self, group: Row) -> Select[Any]: ...


# -- snapshots and events -------------------------------------------------------------------------


def _event_prefix(kind: str) -> str:
    return "contact_import_job" if kind == JobKind.IMPORT.value else "contact_export_job"


def import_snapshot(row: Row) -> dict[str, Any]:
    """An import job as clients see it (proto field names of ContactImportJob)."""
    finished = row["state"] in (JobState.COMPLETED.value, JobState.FAILED.value)
    return {
        "id": row["id"],
        "contact_group_id": row["contact_group_id"],
        "import_attachment_id": row["attachment_id"],
        # The failures file is written as the job goes; it is complete (and named) at the end.
        "failures_attachment_id": row["failures_attachment_id"] if finished else "",
        "state": row["state"],
        "imported_count": row["created_count"] + row["updated_count"],
        "failed_count": row["failed_count"],
        "rows_read": row["rows_read"],
        "created_count": row["created_count"],
        "updated_count": row["updated_count"],
        "failures": list(row["failures"] or []),
        "failure_details": row["failure_details"],
        "started_date": iso(row["started_at"]),
        "completed_date": iso(row["completed_at"]),
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def export_snapshot(row: Row) -> dict[str, Any]:
    """An export job as clients see it (proto field names of ContactExportJob)."""
    return {
        "id": row["id"],
        "contact_group_id": row["contact_group_id"],
        "export_attachment_id": row["attachment_id"],
        "state": row["state"],
        "exported_count": row["exported_count"],
        "failure_details": row["failure_details"],
        "started_date": iso(row["started_at"]),
        "completed_date": iso(row["completed_at"]),
        "application_id": row["application_id"],
        "created_date": iso(row["created_at"]),
        "last_updated_date": iso(row["updated_at"]),
        "version_number": row["version"],
    }


def snapshot(row: Row) -> dict[str, Any]:
    return import_snapshot(row) if row["kind"] == JobKind.IMPORT.value else export_snapshot(row)


def job_event(row: Row, what: str, now: datetime) -> NewEvent:
    """`contact_import_job.<what>` or `contact_export_job.<what>`, carrying the job's snapshot."""
    return NewEvent(
        org_id=row["org_id"],
        type=f"{_event_prefix(row['kind'])}.{what}",
        resource_id=row["id"],
        payload=snapshot(row),
        occurred_at=now,
    )


# -- statements -----------------------------------------------------------------------------------


class JobRepository:
    """The contact_jobs table. Client reads are org- and kind-scoped; claims serve every org."""

    def insert(self, session: Session, values: Mapping[str, Any]) -> Row:
        statement = insert(jobs).values(dict(values)).returning(*jobs.c)
        return session.connection().execute(statement).mappings().one()

    def find(self, session: Session, org_id: str, kind: JobKind, job_id: str) -> Row | None:
        query = select(jobs).where(_j.org_id == org_id, _j.kind == kind.value, _j.id == job_id)
        query = for_update(session, query)
        return session.connection().execute(query).mappings().one_or_none()

    def advance(self, session: Session, job: Row, now: datetime, **values: Any) -> Row:
        """Write `values` to the job if nobody else did since `job` was read (its version);
        returns the job as written. Raises JobLost otherwise."""
        statement = (
            update(jobs)
            .where(_j.id == job["id"], _j.version == job["version"])
            .values(**values, version=_j.version + 1, updated_at=now)
            .returning(*jobs.c)
        )
        row = session.connection().execute(statement).mappings().one_or_none()
        if row is None:
            raise JobLost(job["id"])
        return row

    def hold(self, session: Session, job: Row, lease_until: datetime | None) -> Row:
        """Renew (or, with None, release) the lease of a job still at `job`'s version, and lock
        it for the rest of the transaction. Raises JobLost if the job changed hands or is gone."""
        statement = (
            update(jobs)
            .where(_j.id == job["id"], _j.version == job["version"])
            .values(lease_until=lease_until)
            .returning(*jobs.c)
        )
        row = session.connection().execute(statement).mappings().one_or_none()
        if row is None:
            raise JobLost(job["id"])
        return row

    def claim(self, session: Session, *, now: datetime, lease_until: datetime) -> Row | None:
        """Lease the oldest queued job, or a running one whose worker stopped renewing it."""
        due = (
            select(_j.id)
            .where(
                or_(
                    _j.state == JobState.CREATED.value,
                    and_(
                        _j.state == JobState.RUNNING.value,
                        or_(_j.lease_until.is_(None), _j.lease_until <= now),
                    ),
                )
            )
            .order_by(_j.id)
            .limit(1)
        )
        due = for_update(session, due, skip_locked=True)
        connection = session.connection()
        statement = (
            update(jobs)
            .where(_j.id == due.scalar_subquery())
            .values(
                state=JobState.RUNNING.value,
                lease_until=lease_until,
                started_at=func.coalesce(_j.started_at, literal(now, _j.started_at.type)),
                version=_j.version + 1,
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        return connection.execute(statement).mappings().one_or_none()

    def delete(self, session: Session, job_id: str) -> None:
        session.connection().execute(delete(jobs).where(_j.id == job_id))

    def attachment_in_use(self, session: Session, attachment_id: str, but: str) -> bool:
        query = select(_j.id).where(_j.attachment_id == attachment_id, _j.id != but).limit(1)
        return session.connection().execute(query).first() is not None

    def group(self, session: Session, org_id: str, group_id: str) -> Row | None:
        query = select(groups).where(_g.org_id == org_id, _g.id == group_id)
        return session.connection().execute(query).mappings().one_or_none()


def due_query(now: datetime) -> Select[Any]:
    """Whether any job is waiting for a worker (a read, to avoid claiming when idle)."""
    return (
        select(_j.id)
        .where(
            or_(
                _j.state == JobState.CREATED.value,
                and_(
                    _j.state == JobState.RUNNING.value,
                    or_(_j.lease_until.is_(None), _j.lease_until <= now),
                ),
            )
        )
        .limit(1)
    )


# -- the service ----------------------------------------------------------------------------------


class ContactJobService:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        clock: Clock,
        store: AttachmentStore,
        repository: JobRepository | None = None,
        on_job_created: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self.store = store
        self.repository = repository or JobRepository()
        self._wake = on_job_created  # wakes the job worker

    async def _commit(self, work: Callable[[Session], Any]) -> Any:
        """Run `work` in one transaction (its events wake their readers: see Database)."""
        return await self._db.run_write(work)

    # -- files --------------------------------------------------------------------------------

    async def upload(
        self, org_id: str, application_id: str, pieces: AsyncIterator[bytes]
    ) -> tuple[str, int]:
        """Store an uploaded import file as it arrives; returns its attachment id and size.

        At most _UPLOAD_FLUSH bytes (plus one piece) are in memory; an upload that fails or is
        abandoned leaves nothing behind."""
        now = self._clock.now()
        attachment_id = await self._db.run_write(
            lambda session: self.store.create(
                session,
                org_id=org_id,
                application_id=application_id,
                purpose=AttachmentPurpose.CONTACT_IMPORT,
                content_type=CSV_CONTENT_TYPE,
                now=now,
            )
        )
        try:
            buffer = bytearray()
            size = 0
            seq = 0
            async for piece in pieces:
                if len(piece) > MAX_UPLOAD_PIECE:
                    raise _invalid("data", f"a message carries at most {MAX_UPLOAD_PIECE} bytes")
                size += len(piece)
                if size > MAX_UPLOAD_BYTES:
                    raise _invalid("data", f"the file is larger than {MAX_UPLOAD_BYTES} bytes")
                buffer += piece
                if len(buffer) >= _UPLOAD_FLUSH:
                    whole = len(buffer) - len(buffer) % CHUNK_BYTES  # the rest waits for more
                    chunks = split(bytes(buffer[:whole]))
                    del buffer[:whole]
                    seq = await self._db.run_write(
                        functools.partial(
                            self.store.append,
                            attachment_id=attachment_id,
                            pieces=chunks,
                            first_seq=seq,
                        )
                    )
            if size == 0:
                raise _invalid("data", "the file is empty")
            rest = split(bytes(buffer))

            def finish(session: Session) -> None:
                self.store.append(session, attachment_id, rest, first_seq=seq)
                self.store.finalize(session, attachment_id, self._clock.now())

            await self._db.run_write(finish)
        except BaseException:
            cleanup = self._db.run_write(
                lambda session: self.store.delete(session, org_id, [attachment_id])
            )
            await asyncio.shield(cleanup)
            raise
        return attachment_id, size

    # -- import jobs --------------------------------------------------------------------------

    async def create_import(
        self,
        org_id: str,
        application_id: str,
        *,
        contact_group_id: str,
        import_attachment_id: str,
        csv_text: str,
    ) -> str:
        checks = Checks()
        if import_attachment_id and csv_text:
            checks.fail("csv", "give either import_attachment_id or csv, not both")
        elif not import_attachment_id and not csv_text:
            checks.fail(
                "import_attachment_id",
                "is required (or give the file's content as csv)",
                "Required",
            )
        data = csv_text.encode() if csv_text else b""
        if len(data) > MAX_UPLOAD_BYTES:
            checks.fail("csv", f"is larger than {MAX_UPLOAD_BYTES} bytes", "Range")
        checks.raise_if_failed()
        now = self._clock.now()

        def work(session: Session) -> str:
            if contact_group_id:
                self._require_group(session, org_id, contact_group_id, static=True)
            if import_attachment_id:
                attachment_id = import_attachment_id
                self._require_import_file(session, org_id, attachment_id)
            else:
                attachment_id = self.store.create(
                    session,
                    org_id=org_id,
                    application_id=application_id,
                    purpose=AttachmentPurpose.CONTACT_IMPORT,
                    content_type=CSV_CONTENT_TYPE,
                    now=now,
                )
                self.store.append(session, attachment_id, split(data), first_seq=0)
                self.store.finalize(session, attachment_id, now)
            row = self.repository.insert(
                session,
                _new_job(JobKind.IMPORT, org_id, application_id, contact_group_id, now)
                | {"attachment_id": attachment_id},
            )
            self._events.append(session, [job_event(row, "created", now)])
            return str(row["id"])

        job_id: str = await self._commit(work)
        self._wake()
        return job_id

    async def get_import(self, org_id: str, job_id: str) -> dict[str, Any]:
        return import_snapshot(await self._get(org_id, JobKind.IMPORT, job_id))

    async def list_imports(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[dict[str, Any]], str]:
        rows, token = await self._list(org_id, JobKind.IMPORT, given, page, checks)
        return [import_snapshot(r) for r in rows], token

    async def delete_import(self, org_id: str, job_id: str) -> None:
        await self._delete(org_id, JobKind.IMPORT, job_id)

    # -- export jobs --------------------------------------------------------------------------

    async def create_export(self, org_id: str, application_id: str, contact_group_id: str) -> str:
        now = self._clock.now()

        def work(session: Session) -> str:
            if contact_group_id:
                self._require_group(session, org_id, contact_group_id, static=False)
            attachment_id = self.store.create(
                session,
                org_id=org_id,
                application_id=application_id,
                purpose=AttachmentPurpose.CONTACT_EXPORT,
                content_type=CSV_CONTENT_TYPE,
                now=now,
                filename="contacts.csv",
            )
            row = self.repository.insert(
                session,
                _new_job(JobKind.EXPORT, org_id, application_id, contact_group_id, now)
                | {"attachment_id": attachment_id},
            )
            self._events.append(session, [job_event(row, "created", now)])
            return str(row["id"])

        job_id: str = await self._commit(work)
        self._wake()
        return job_id

    async def get_export(self, org_id: str, job_id: str) -> dict[str, Any]:
        return export_snapshot(await self._get(org_id, JobKind.EXPORT, job_id))

    async def list_exports(
        self, org_id: str, given: Mapping[str, str], page: listing.Page, checks: Checks
    ) -> tuple[list[dict[str, Any]], str]:
        rows, token = await self._list(org_id, JobKind.EXPORT, given, page, checks)
        return [export_snapshot(r) for r in rows], token

    async def delete_export(self, org_id: str, job_id: str) -> None:
        await self._delete(org_id, JobKind.EXPORT, job_id)

    async def export_file(self, org_id: str, job_id: str) -> AsyncIterator[bytes]:
        """The CSV of a COMPLETED export, chunk by chunk. Raises before the first chunk: 404 for
        an unknown (or another org's) job, 400 while it is not COMPLETED."""
        job = await self._get(org_id, JobKind.EXPORT, job_id)
        if job["state"] != JobState.COMPLETED.value:
            raise InvalidArgument(
                f"export job {job_id!r} is {job['state']}: its file can be downloaded once the "
                "job is COMPLETED",
                violations=[FieldViolation("job_id", "the export is not COMPLETED", "State")],
            )
        attachment = await self.store.get(org_id, job["attachment_id"])
        if attachment is None:
            raise NotFound(f"the file of export job {job_id!r} no longer exists")
        return self._whole_file(org_id, attachment)

    async def failures_file(self, org_id: str, job_id: str) -> AsyncIterator[bytes]:
        """The CSV of an import's failed rows, chunk by chunk. Raises before the first chunk:
        404 for an unknown job or one without failures, 400 while it is still running."""
        job = await self._get(org_id, JobKind.IMPORT, job_id)
        if job["state"] not in (JobState.COMPLETED.value, JobState.FAILED.value):
            raise InvalidArgument(
                f"import job {job_id!r} is {job['state']}: its failures can be downloaded once "
                "it has finished",
                violations=[FieldViolation("job_id", "the import has not finished", "State")],
            )
        attachment = (
            await self.store.get(org_id, job["failures_attachment_id"])
            if job["failures_attachment_id"]
            else None
        )
        if attachment is None:
            raise NotFound(f"import job {job_id!r} has no failed rows")
        return self._whole_file(org_id, attachment)

    async def _whole_file(self, org_id: str, attachment: Row) -> AsyncIterator[bytes]:
        """The file's chunks; an error rather than a short file if it is deleted meanwhile."""
        sent = 0
        async for chunk in self.store.chunks(org_id, attachment["id"]):
            sent += len(chunk)
            yield chunk
        if sent != attachment["size_bytes"]:
            raise NotFound("the export was deleted during the download")

    # -- shared -------------------------------------------------------------------------------

    async def _get(self, org_id: str, kind: JobKind, job_id: str) -> Row:
        query = select(jobs).where(_j.org_id == org_id, _j.kind == kind.value, _j.id == job_id)
        async with self._db.read() as session:
            row = (await session.execute(query)).mappings().one_or_none()
        if row is None:
            raise NotFound(f"{_noun(kind)} {job_id!r} not found")
        return row

    async def _list(
        self,
        org_id: str,
        kind: JobKind,
        given: Mapping[str, str],
        page: listing.Page,
        checks: Checks,
    ) -> tuple[list[Row], str]:
        clauses = listing.filters(checks, jobs, given, columns=_FILTER_COLUMNS, times=_FILTER_TIMES)
        checks.raise_if_failed()
        query = select(jobs).where(_j.org_id == org_id, _j.kind == kind.value, *clauses)
        async with self._db.read() as session:
            rows = list((await session.execute(listing.paged(query, jobs, page))).mappings())
        return rows[: page.limit], listing.next_page_token(rows, page)

    async def _delete(self, org_id: str, kind: JobKind, job_id: str) -> None:
        """Remove the job and its files. A running job's worker notices at its next batch (its
        write finds the job gone) and stops; what it committed before stays."""
        now = self._clock.now()

        def work(session: Session) -> None:
            job = self.repository.find(session, org_id, kind, job_id)
            if job is None:
                raise NotFound(f"{_noun(kind)} {job_id!r} not found")
            self.repository.delete(session, job_id)  # first: it is what a worker's write locks
            files = [job["failures_attachment_id"]]
            attachment = self.store.get_sync(session, org_id, job["attachment_id"])
            # A file may serve several jobs (one upload imported twice, an export re-imported):
            # it goes with the last job of its own kind that uses it.
            own = (
                AttachmentPurpose.CONTACT_IMPORT
                if kind == JobKind.IMPORT
                else AttachmentPurpose.CONTACT_EXPORT
            )
            if (
                attachment is not None
                and attachment["purpose"] == own
                and not self.repository.attachment_in_use(session, attachment["id"], job_id)
            ):
                files.append(attachment["id"])
            self.store.delete(session, org_id, files)
            self._events.append(session, [job_event(job, "deleted", now)])

        await self._commit(work)

    def _require_group(self, session: Session, org_id: str, group_id: str, *, static: bool) -> None:
        group = self.repository.group(session, org_id, group_id)
        if group is None:
            raise NotFound(f"contact group {group_id!r} not found")
        if static and group["type"] != GroupType.STATIC.value:
            raise _invalid(
                "contact_group_id",
                f"group {group_id!r} is {group['type']}: imported contacts can only be added "
                "to a STATIC group",
            )

    def _require_import_file(self, session: Session, org_id: str, attachment_id: str) -> None:
        attachment = self.store.get_sync(session, org_id, attachment_id)
        if attachment is None:
            raise NotFound(f"attachment {attachment_id!r} not found")
        if attachment["state"] != AttachmentState.UPLOADED.value:
            raise _invalid(
                "import_attachment_id",
                f"attachment {attachment_id!r} is {attachment['state']}, not UPLOADED",
            )


def _new_job(
    kind: JobKind, org_id: str, application_id: str, contact_group_id: str, now: datetime
) -> dict[str, Any]:
    return {
        "id": new_id("cij_" if kind == JobKind.IMPORT else "cej_"),
        "org_id": org_id,
        "kind": kind.value,
        "contact_group_id": contact_group_id,
        "state": JobState.CREATED.value,
        "failures": [],
        "application_id": application_id,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }


def _noun(kind: JobKind) -> str:
    return "contact import job" if kind == JobKind.IMPORT else "contact export job"


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field}: {description}", violations=[FieldViolation(field, description)]
    )
