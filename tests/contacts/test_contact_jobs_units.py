"""The streaming CSV reader of import files: exactly csv.reader's records, whatever the chunking."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import AsyncIterator

import pytest

from switchboard.server.attachments.csvstream import CsvFormatError, CsvRecords, Record
from switchboard.server.attachments.store import split

pytestmark = pytest.mark.unit

_PIECES = ["a", "b", ",", '"', "\n", "\r\n", "\r", "é", "€", "x y", '""', " ", "\ufeff"]


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for piece in split(data, size):
        yield piece


async def _records(data: bytes, size: int) -> list[Record]:
    reader = CsvRecords(_chunks(data, size))
    records = []
    while (record := await reader.next()) is not None:
        records.append(record)
    return records


def _expected(text: str) -> list[list[str] | str]:
    """What csv.reader gives for the whole text (malformed records as their error)."""
    out: list[list[str] | str] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            out.append(next(reader))
        except StopIteration:
            return out
        except csv.Error as exc:
            out.append(f"malformed CSV: {exc}")


async def test_records_match_csv_reader_for_any_chunking() -> None:
    rng = random.Random(20261122)
    for _ in range(1500):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 60)))
        bom = "\ufeff" if rng.random() < 0.3 else ""
        expected = _expected(text.removeprefix("\ufeff") if not bom else text)
        for size in (1, 2, 5, 4096):
            got = await _records((bom + text).encode(), size)
            assert [r.cells if r.cells is not None else r.error for r in got] == expected, (
                text,
                size,
            )


async def test_line_numbers_are_where_records_start() -> None:
    data = b'h1,h2\r\na,"multi\nline"\r\n\r\nb,c\n'
    records = await _records(data, 3)
    assert [(r.line, r.cells) for r in records] == [
        (1, ["h1", "h2"]),
        (2, ["a", "multi\nline"]),
        (4, []),
        (5, ["b", "c"]),
    ]
    assert records[2].blank and not records[3].blank


async def test_peek_does_not_consume() -> None:
    reader = CsvRecords(_chunks(b"a\nb\n", 1))
    first = await reader.peek()
    assert first is not None and first.cells == ["a"]
    assert await reader.next() == first
    assert (await reader.next()) == Record(2, ["b"])
    assert await reader.peek() is None and await reader.next() is None


async def test_invalid_utf8_is_a_format_error() -> None:
    reader = CsvRecords(_chunks(b"a\n\xff\n", 2))
    assert (await reader.next()) == Record(1, ["a"])
    with pytest.raises(CsvFormatError, match="not UTF-8"):
        await reader.next()
