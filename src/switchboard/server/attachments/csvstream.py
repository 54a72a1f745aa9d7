"""CSV records from a file that arrives as byte chunks, without ever holding the whole file.

The standard `csv` module parses; this module feeds it. Bytes are decoded incrementally (UTF-8, a
leading byte order mark tolerated) and cut into lines as a file opened with newline="" would, so
a chunk boundary inside a character, a CRLF or a quoted field changes nothing. The reader pulls
lines from a queue that is refilled between records: when the queue runs dry in the middle of a
record (a quoted field spanning lines that have not arrived yet), the lines that record took are
put back and the record is parsed again once more data is in. Records come out exactly as
`csv.reader` over the whole file gives them, with memory bounded by one chunk plus the longest
record.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

MAX_LINE_CHARS = 16 * 1024 * 1024  # a "line" longer than this is not CSV
# Lines as a file opened with newline="" (as the csv module asks) yields them: each ends in CRLF,
# CR or LF, which it keeps.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")


class CsvFormatError(Exception):
    """The file cannot be read as CSV text at all (not UTF-8, no line breaks)."""


@dataclass(frozen=True)
class Record:
    """One CSV record: `line` is the physical line it starts on (1-based). `cells` is None when
    the record is malformed, and `error` says why."""

    line: int
    cells: list[str] | None
    error: str | None = None

    @property
    def blank(self) -> bool:
        return self.cells is not None and not any(cell.strip() for cell in self.cells)


class _Lines:
    """The reader's input: lines handed out in order, remembering those the current record took."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()
        self.taken: list[str] = []
        self.starved = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if not self.queue:
            self.starved = True
            raise StopIteration
        line = self.queue.popleft()
        self.taken.append(line)
        return line

    def begin(self) -> None:
        self.taken.clear()
        self.starved = False

    def put_back(self) -> None:
        self.queue.extendleft(reversed(self.taken))
        self.taken.clear()


class CsvRecords:
    """`await records.next()` gives the next record, None at the end of the file."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._lines = _Lines()
        self._reader = csv.reader(self._lines)
        self._partial = ""  # text after the last line break seen
        self._eof = False
        self._lines_done = 0  # physical lines taken by the records returned so far
        self.bytes_read = 0
        self._peeked = False
        self._lookahead: Record | None = None

    async def peek(self) -> Record | None:
        """The record `next()` will return, without consuming it."""
        if not self._peeked:
            self._lookahead = await self._read()
            self._peeked = True
        return self._lookahead

    async def next(self) -> Record | None:
        if self._peeked:
            self._peeked = False
            return self._lookahead
        return await self._read()

    async def _read(self) -> Record | None:
        while True:
            self._lines.begin()
            try:
                cells = next(self._reader)
            except StopIteration:
                if self._eof:
                    return None
                await self._fill()
                continue
            except csv.Error as exc:
                record = Record(self._lines_done + 1, None, f"malformed CSV: {exc}")
                self._lines_done += len(self._lines.taken)
                return record
            if self._lines.starved and not self._eof:
                # The record is cut short by the data that has arrived so far: parse it again
                # once its remaining lines are in.
                self._lines.put_back()
                await self._fill()
                continue
            record = Record(self._lines_done + 1, cells)
            self._lines_done += len(self._lines.taken)
            return record

    async def _fill(self) -> None:
        chunk = await anext(self._chunks, None)
        try:
            if chunk is None:
                text = self._partial + self._decoder.decode(b"", final=True)
                self._eof = True
                self._partial = ""
                if text:
                    self._lines.queue.append(text)
                return
            self.bytes_read += len(chunk)
            text = self._partial + self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            line = self._lines_done + len(self._lines.queue) + 1
            raise CsvFormatError(
                f"the file is not UTF-8 text (invalid bytes on line {line} or after)"
            ) from exc
        lines = _LINE.findall(text)
        if text.endswith("\r"):
            lines.pop()  # a CR at the very end may be the first half of a CRLF: wait for more
        self._partial = text[sum(map(len, lines)) :]
        if len(self._partial) > MAX_LINE_CHARS:
            raise CsvFormatError(f"a line is longer than {MAX_LINE_CHARS} characters")
        self._lines.queue.extend(lines)
