"""Attachment content as files in a configurable directory, named by their SHA-256.

The database row is the truth; a file only backs it. A file is written completely (temporary
name, fsync, atomic rename to `<fan>/<attachment id>/<sha256>.<upload>`, a random name per
upload) before the transaction that points the row at it commits, so a committed row never
names a missing or partial file. What a crash can leave behind is the opposite: a file no row
names (written, then the commit failed, or replaced/deleted and not yet removed). `sweep`
removes those, so the directory converges on the database. Reads check the size before the
first byte and the checksum at the end: a damaged file is an error (gRPC DATA_LOSS), never
silently served.

All file work runs in worker threads, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from switchboard.server.core.errors import ContentCorrupted

log = logging.getLogger(__name__)

READ_BYTES = 256 * 1024  # one streamed piece
_TMP = ".tmp"  # in-progress writes, under the root so the rename never crosses file systems


@dataclass(frozen=True)
class StoredFile:
    location: str  # relative to the root: what the attachment row stores
    size: int
    checksum: str  # hex SHA-256


def location_for(attachment_id: str, checksum: str, upload: str) -> str:
    # Two hex characters of fan-out keep any one directory small. Each upload has its own file,
    # even with the same content: racing re-uploads of X, Y, X would otherwise share X's file,
    # and Y's cleanup of the first X would delete the file the second X's row is about to name.
    fan = hashlib.sha256(attachment_id.encode()).hexdigest()[:2]
    return f"{fan}/{attachment_id}/{checksum}.{upload}"


class ContentDirectory:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, location: str) -> Path:
        path = (self.root / location).resolve()
        if self.root not in path.parents:  # a row can only ever name a file under the root
            raise ValueError(f"attachment location {location!r} is outside the directory")
        return path

    # -- writing ---------------------------------------------------------------------------------

    async def write(self, attachment_id: str, data: bytes) -> StoredFile:
        """`data` durably on disk under its checksum; the row may name it once this returns."""
        return await asyncio.to_thread(self._write, attachment_id, data)

    def _write(self, attachment_id: str, data: bytes) -> StoredFile:
        checksum = hashlib.sha256(data).hexdigest()
        location = location_for(attachment_id, checksum, secrets.token_hex(6))
        final = self.path(location)
        tmp_dir = self.root / _TMP
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"{attachment_id}.{os.getpid()}.{time.monotonic_ns()}"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return StoredFile(location, len(data), checksum)

    async def remove(self, locations: Iterable[str]) -> None:
        """Delete files no row names any more (missing ones are fine)."""
        wanted = [loc for loc in locations if loc]
        if wanted:
            await asyncio.to_thread(self._remove, wanted)

    def _remove(self, locations: list[str]) -> None:
        for location in locations:
            path = self.path(location)
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # the attachment's directory, once empty
                path.parent.rmdir()

    # -- reading ---------------------------------------------------------------------------------

    async def read(self, location: str, *, size: int, checksum: str) -> AsyncIterator[bytes]:
        """The file's bytes in order, checked against the row's size and checksum. FileGone
        (before the first byte) when there is no such file: the caller decides whether that is
        damage or a row that has moved on meanwhile (see AttachmentStore.chunks). Once open,
        the file reads whole even if it is removed (POSIX keeps an open file's data)."""
        path = self.path(location)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise FileGone(location) from None
        try:
            actual = os.fstat(handle.fileno()).st_size
            if actual != size:
                raise _corrupted(location, f"has {actual} bytes, not {size}")
            digest = hashlib.sha256()
            # One piece is held back until the next is read, and the last until the checksum
            # matched: a damaged file never reaches a client complete.
            held = b""
            while piece := await asyncio.to_thread(handle.read, READ_BYTES):
                digest.update(piece)
                if held:
                    yield held
                held = piece
            if digest.hexdigest() != checksum:
                raise _corrupted(location, "does not match its checksum")
            if held:
                yield held
        finally:
            handle.close()

    # -- reconciling -----------------------------------------------------------------------------

    async def sweep(self, named: set[str], *, older_than_seconds: float) -> int:
        """Remove files (and abandoned temporary files) older than the grace period that no row
        names; returns how many went. The grace period covers a write whose commit is still on
        its way."""
        return await asyncio.to_thread(self._sweep, named, time.time() - older_than_seconds)

    def _sweep(self, named: set[str], cutoff: float) -> int:
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in [p for p in self.root.rglob("*") if p.is_file()]:
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:  # removed meanwhile (a DELETE, a re-upload)
                continue
            location = path.relative_to(self.root).as_posix()
            if location in named:
                continue
            path.unlink(missing_ok=True)
            removed += 1
            if path.parent != self.root / _TMP:
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
        if removed:
            log.info("removed %d attachment files no attachment names", removed)
        return removed


class FileGone(Exception):
    """A file a row named is not there."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def missing(location: str) -> ContentCorrupted:
    """The error for a file that a row still names and that is not there."""
    return _corrupted(location, "is missing")


def _corrupted(location: str, what: str) -> ContentCorrupted:
    log.error("attachment file %s %s", location, what)
    return ContentCorrupted("the attachment content is damaged; it cannot be read")


def _fsync_dir(path: Path) -> None:
    """Make a rename into `path` durable (POSIX needs the directory synced too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
