"""Runs contact import and export jobs, in batches, each batch one transaction.

A worker claims a job with a lease (SKIP LOCKED on PostgreSQL, so replicas share the queue) and
renews it with every batch it commits. A batch's rows, the job's counters and resume point, and
its progress event commit together: after a crash or restart the job resumes exactly after the
last committed batch (an import skips the data rows it already read, an export continues after
the last contact id it wrote), so nothing is imported or exported twice and nothing is skipped.
A stopping worker finishes its batch and hands the job back at once; a dead one's lease runs out.

Files are streamed chunk by chunk from the database (imports) or appended chunk by chunk in the
batch's transaction (exports): memory does not grow with the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from switchboard.server.attachments.csvstream import CsvFormatError, CsvRecords
from switchboard.server.attachments.store import (
    AttachmentPurpose,
    AttachmentStore,
    split,
)
from switchboard.server.contacts.jobs import (
    CSV_CONTENT_TYPE,
    MAX_LISTED_FAILURES,
    ContactRows,
    GroupMembers,
    JobLost,
    JobRepository,
    due_query,
    job_event,
)
from switchboard.server.contacts.models import GroupType, JobKind, JobState
from switchboard.server.contacts.repository import contacts, groups
from switchboard.server.core.clock import Clock
from switchboard.server.core.db import Database
from switchboard.server.core.events import EventBus, EventLog
from switchboard.server.core.types import Row, T

log = logging.getLogger("switchboard.contacts.jobs")

_RETRIES = 3  # a batch that hit a transient database error (a lost race, a deadlock) is retried
FAILURES_HEADER = "line,reason\r\n"
_BUS_INTERVAL = 0.1  # seconds: the least time between looks prompted by other replicas' commits


class JobFailed(Exception):
    """The job cannot go on (bad file, group deleted): it ends FAILED with this message."""


@dataclass
class _Run:
    """A job in a worker's hands: `job` is the row as this worker last wrote it."""

    job: Row


@dataclass
class _Batch:
    """Data rows of an import batch: those to import, and those that failed to parse."""

    rows: list[dict[str, str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # line of each of `rows`
    failures: list[tuple[int, str]] = field(default_factory=list)
    read: int = 0  # data rows consumed (the job's resume point moves by this much)


class ContactJobWorker:
    def __init__(
        self,
        *,
        db: Database,
        events: EventLog,
        bus: EventBus,
        clock: Clock,
        store: AttachmentStore,
        contacts_service: ContactRows,
        groups_service: GroupMembers,
        batch_rows: int,
        poll_seconds: float,
        lease_seconds: float,
        concurrency: int = 2,
        repository: JobRepository | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._bus = bus
        self._clock = clock
        self._store = store
        self._contacts = contacts_service
        self._groups = groups_service
        self._batch_rows = max(1, batch_rows)
        self._poll_seconds = poll_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._concurrency = concurrency
        self._repository = repository or JobRepository()
        self._columns = frozenset(contacts_service.CSV_COLUMNS)
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._run(), name=f"contact-jobs-{i}")
            for i in range(self._concurrency)
        ]

    async def stop(self) -> None:
        """Let each runner finish the batch in hand and hand its job back, then return."""
        self._stopping = True
        self._wakeup.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def wake(self) -> None:
        """A job was queued in this process: look at once instead of at the next poll."""
        self._wakeup.set()

    async def _run(self) -> None:
        # Woken at once by jobs created in this process; on PostgreSQL also by other replicas'
        # commits (their notifications), which are many, so those only trigger a cheap look
        # (a read) and at most every _BUS_INTERVAL; polling is the backstop.
        listen_bus = self._db.dialect == "postgresql"
        while not self._stopping:
            bus = self._bus.waiter()
            self._wakeup.clear()
            try:
                worked = await self.run_once()
            except Exception:
                log.exception("contact job runner failed; retrying")
                worked = False
            if worked or self._stopping:
                continue
            waits = {asyncio.ensure_future(self._wakeup.wait())}
            if listen_bus:
                waits.add(asyncio.ensure_future(bus.wait()))
            try:
                await asyncio.wait(
                    waits, timeout=self._poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
            if listen_bus and not self._wakeup.is_set():
                await asyncio.sleep(_BUS_INTERVAL)

    async def run_once(self) -> bool:
        """Claim one job and work on it until it ends or this worker stops; False when idle."""
        async with self._db.read() as session:
            if (await session.execute(due_query(self._clock.now()))).first() is None:
                return False
        job = await self._db.run_write(
            lambda session: self._repository.claim(
                session, now=self._clock.now(), lease_until=self._lease_until()
            )
        )
        if job is None:
            return False  # another worker was quicker
        run = _Run(job)
        log.info("contact job claimed", extra={"job_id": job["id"], "kind": job["kind"]})
        try:
            if job["kind"] == JobKind.IMPORT.value:
                await self._import(run)
            else:
                await self._export(run)
        except JobLost:
            log.info("contact job deleted or taken over; stopped", extra={"job_id": job["id"]})
        except JobFailed as exc:
            await self._fail(run, str(exc))
        except Exception:
            log.exception("contact job crashed", extra={"job_id": job["id"]})
            await self._fail(run, "internal error while running the job")
        return True

    # -- shared by both kinds -----------------------------------------------------------------

    def _lease_until(self) -> datetime:
        return self._clock.now() + self._lease

    async def _write(self, work: Callable[[Session], T]) -> T:
        """One transaction; a transient database error (a lost race on a unique key, a deadlock,
        a busy database) is retried a few times before it is raised."""
        for attempt in range(_RETRIES):
            try:
                result = await self._db.run_write(work)
            except (IntegrityError, OperationalError) as exc:
                if attempt == _RETRIES - 1:
                    raise
                log.warning("contact job batch failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.1 * 2**attempt)
                continue
            return result  # its events woke their readers at commit (Database)
        raise AssertionError("unreachable")

    async def _fail(self, run: _Run, details: str) -> None:
        """End the job FAILED, unless it is no longer this worker's."""

        def work(session: Session) -> Row:
            now = self._clock.now()
            if run.job["failures_attachment_id"]:  # the rows that failed so far stay readable
                self._store.finalize(session, run.job["failures_attachment_id"], now)
            row = self._repository.advance(
                session,
                run.job,
                now,
                state=JobState.FAILED.value,
                failure_details=details[:4000],
                lease_until=None,
                completed_at=now,
            )
            self._events.append(session, [job_event(row, "failed", now)])
            return row

        with contextlib.suppress(JobLost):
            run.job = await self._write(work)

    async def _hand_back(self, run: _Run) -> None:
        """Stopping: release the lease, so the next worker (or process) resumes at once."""

        def work(session: Session) -> Row:
            return self._repository.hold(session, run.job, None)

        with contextlib.suppress(JobLost):
            run.job = await self._db.run_write(work)

    def _require_group(self, session: Session, job: Row, *, static: bool) -> Row | None:
        if not job["contact_group_id"]:
            return None
        group = self._repository.group(session, job["org_id"], job["contact_group_id"])
        if group is None:
            raise JobFailed(f"contact group {job['contact_group_id']!r} was deleted")
        if static and group["type"] != GroupType.STATIC.value:
            raise JobFailed(f"contact group {job['contact_group_id']!r} is not STATIC")
        return group

    # -- imports ------------------------------------------------------------------------------

    async def _import(self, run: _Run) -> None:
        org_id, attachment_id = run.job["org_id"], run.job["attachment_id"]
        if await self._store.get(org_id, attachment_id) is None:
            raise JobFailed(f"the import file {attachment_id!r} no longer exists")
        records = CsvRecords(self._store.chunks(org_id, attachment_id))
        try:
            header = await self._header(records)
            await self._skip(records, run.job["rows_read"])
            done = False
            while not done:
                if self._stopping:
                    await self._hand_back(run)
                    return
                batch, done = await self._read_batch(records, header)
                run.job = await self._write(
                    functools.partial(self._import_batch, job=run.job, batch=batch, done=done)
                )
        except CsvFormatError as exc:
            raise JobFailed(str(exc)) from exc

    async def _skip(self, records: CsvRecords, rows: int) -> None:
        """Resuming: pass over the data rows an earlier run already imported."""
        while rows > 0:
            record = await records.next()
            if record is None:
                return
            if not record.blank:
                rows -= 1

    async def _header(self, records: CsvRecords) -> list[str]:
        record = await records.next()
        while record is not None and record.blank:
            record = await records.next()
        if record is None:
            raise JobFailed("the file is empty: the first row must name the columns")
        if record.cells is None:
            raise JobFailed(f"the header row is not valid CSV ({record.error})")
        names = [cell.strip().lower() for cell in record.cells]
        problems = []
        unnamed = [str(i + 1) for i, name in enumerate(names) if not name]
        if unnamed:
            problems.append(f"columns without a name: {', '.join(unnamed)}")
        unknown = sorted({n for n in names if n and n not in self._columns})
        if unknown:
            problems.append(f"unknown columns: {', '.join(unknown)}")
        duplicate = sorted({n for n in names if n and names.count(n) > 1})
        if duplicate:
            problems.append(f"duplicate columns: {', '.join(duplicate)}")
        if problems:
            allowed = ", ".join(self._contacts.CSV_COLUMNS)
            raise JobFailed(f"bad header row: {'; '.join(problems)} (columns are: {allowed})")
        return names

    async def _read_batch(self, records: CsvRecords, header: list[str]) -> tuple[_Batch, bool]:
        batch = _Batch()
        width = len(header)
        while batch.read < self._batch_rows:
            record = await records.next()
            if record is None:
                return batch, True
            if record.blank:
                continue
            batch.read += 1
            if record.cells is None:
                batch.failures.append((record.line, record.error or "malformed CSV"))
            elif len(record.cells) > width:
                reason = f"has {len(record.cells)} values but the header names {width} columns"
                batch.failures.append((record.line, reason))
            else:
                cells = record.cells + [""] * (width - len(record.cells))
                batch.rows.append(dict(zip(header, cells, strict=True)))
                batch.lines.append(record.line)
        # A full batch that ends the file completes the job in the same transaction.
        return batch, await records.peek() is None

    def _import_batch(self, session: Session, *, job: Row, batch: _Batch, done: bool) -> Row:
        """One transaction: renew the lease, import the rows, count, record failures, report."""
        now = self._clock.now()
        job = self._repository.hold(session, job, self._lease_until())
        group = self._require_group(session, job, static=True)
        outcomes = self._contacts.import_batch(
            session,
            org_id=job["org_id"],
            application_id=job["application_id"],
            rows=batch.rows,
            group_id=group["id"] if group is not None else None,
            now=now,
        )
        failures = list(batch.failures)
        created = updated = 0
        for line, outcome in zip(batch.lines, outcomes, strict=True):
            if outcome.error is not None:
                failures.append((line, outcome.error))
            elif outcome.created:
                created += 1
            else:
                updated += 1
        failures.sort()
        values: dict[str, Any] = {
            "rows_read": job["rows_read"] + batch.read,
            "created_count": job["created_count"] + created,
            "updated_count": job["updated_count"] + updated,
            "failed_count": job["failed_count"] + len(failures),
        }
        listed = list(job["failures"] or [])
        if failures and len(listed) < MAX_LISTED_FAILURES:
            listed += [f"line {line}: {reason}" for line, reason in failures]
            values["failures"] = listed[:MAX_LISTED_FAILURES]
        failures_file = job["failures_attachment_id"]
        if failures:
            failures_file = self._append_failures(session, job, failures, now)
            values["failures_attachment_id"] = failures_file
        now = self._clock.now()  # the batch's work is done: what follows is stamped now
        if done:
            if failures_file:
                self._store.finalize(session, failures_file, now)
            values |= {
                "state": JobState.COMPLETED.value,
                "lease_until": None,
                "completed_at": now,
            }
        row = self._repository.advance(session, job, now, **values)
        self._events.append(session, [job_event(row, "completed" if done else "progress", now)])
        return row

    def _append_failures(
        self, session: Session, job: Row, failures: Sequence[tuple[int, str]], now: datetime
    ) -> str:
        """Add the batch's failed rows to the job's failures CSV (created on the first)."""
        attachment_id: str = job["failures_attachment_id"]
        text = io.StringIO()
        if not attachment_id:
            attachment_id = self._store.create(
                session,
                org_id=job["org_id"],
                application_id=job["application_id"],
                purpose=AttachmentPurpose.CONTACT_IMPORT_FAILURES,
                content_type=CSV_CONTENT_TYPE,
                now=now,
                filename="failures.csv",
            )
            text.write(FAILURES_HEADER)
        csv.writer(text).writerows(failures)
        seq = self._store.next_seq(session, attachment_id)
        self._store.append(session, attachment_id, split(text.getvalue().encode()), first_seq=seq)
        return attachment_id

    # -- exports ------------------------------------------------------------------------------

    async def _export(self, run: _Run) -> None:
        done = False
        while not done:
            if self._stopping:
                await self._hand_back(run)
                return
            job = run.job
            query = await self._export_query(job)
            if job["checkpoint"]:
                query = query.where(contacts.c.id > job["checkpoint"])
            query = query.order_by(contacts.c.id).limit(self._batch_rows)
            async with self._db.read() as session:
                rows = list((await session.execute(query)).mappings())
            text = io.StringIO()
            writer = csv.writer(text)
            for row in rows:
                writer.writerow(self._contacts.csv_row(row))
            done = len(rows) < self._batch_rows
            run.job = await self._write(
                functools.partial(
                    self._export_batch,
                    job=job,
                    data=text.getvalue().encode(),
                    count=len(rows),
                    last_id=rows[-1]["id"] if rows else job["checkpoint"],
                    done=done,
                )
            )

    async def _export_query(self, job: Row) -> Select[Any]:
        """The contacts to export: the org's, or the group's members."""
        if not job["contact_group_id"]:
            return select(contacts).where(contacts.c.org_id == job["org_id"])
        async with self._db.read() as session:
            group = (
                (
                    await session.execute(
                        select(groups).where(
                            groups.c.org_id == job["org_id"],
                            groups.c.id == job["contact_group_id"],
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
        if group is None:
            raise JobFailed(f"contact group {job['contact_group_id']!r} was deleted")
        return self._groups.member_query(group)

    def _export_batch(
        self, session: Session, *, job: Row, data: bytes, count: int, last_id: str, done: bool
    ) -> Row:
        """One transaction: renew the lease, append the rows to the file, move the checkpoint."""
        now = self._clock.now()
        job = self._repository.hold(session, job, self._lease_until())
        attachment_id = job["attachment_id"]
        attachment = self._store.get_sync(session, job["org_id"], attachment_id)
        if attachment is None:
            raise JobFailed(f"the export file {attachment_id!r} no longer exists")
        if attachment["size_bytes"] == 0:
            header = io.StringIO()
            csv.writer(header).writerow(self._contacts.CSV_COLUMNS)
            data = header.getvalue().encode() + data
        seq = self._store.next_seq(session, attachment_id)
        self._store.append(session, attachment_id, split(data), first_seq=seq)
        now = self._clock.now()
        values: dict[str, Any] = {
            "exported_count": job["exported_count"] + count,
            "checkpoint": last_id,
        }
        if done:
            self._store.finalize(session, attachment_id, now)
            values |= {
                "state": JobState.COMPLETED.value,
                "lease_until": None,
                "completed_at": now,
            }
        row = self._repository.advance(session, job, now, **values)
        self._events.append(session, [job_event(row, "completed" if done else "progress", now)])
        return row
