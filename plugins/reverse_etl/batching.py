"""Batches measured on the bytes a vendor receives: a request is cut when the next record would take its
body over the vendor's cap, however many records that is.

A load streams its pending records into a ``Batcher``; the adapter says how a request body grows with each
record (``BodySize``): a JSON array of the records' payloads by default, a CSV file for CSV imports. The
size is exact (the bytes the hook sends, compact JSON in UTF-8), so the cap can sit just under the vendor's
limit instead of far below a guess.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Protocol

from reverse_etl.ledger import Planned


class BodySize(Protocol):
    """A request body being filled: its size now, and with one more record."""

    total: int
    count: int

    def size_with(self, record: Planned) -> int: ...

    def add(self, record: Planned) -> None: ...


class JsonArraySize:
    """``[p1,p2,...]``: the records' payloads (compact JSON text as the ledger keeps it) joined by commas,
    in UTF-8, which is what ``json_array`` sends."""

    def __init__(self) -> None:
        self.total = 2  # "[" and "]"
        self.count = 0
        self._last: tuple[Planned | None, int] = (None, 0)

    def _bytes(self, record: Planned) -> int:
        if self._last[0] is not record:
            text = record.payload or ""
            # an ASCII text's UTF-8 is as long as the text: no copy to measure most payloads
            self._last = (record, len(text) if text.isascii() else len(text.encode("utf-8")))
        return self._last[1]

    def size_with(self, record: Planned) -> int:
        return self.total + self._bytes(record) + (1 if self.count else 0)

    def add(self, record: Planned) -> None:
        self.total = self.size_with(record)
        self.count += 1


class CsvSize:
    """A CSV file as ``csv.writer`` writes it (``lineterminator="\\n"``, UTF-8): a header row of every
    column the records brought so far, then one line per record with a cell for every column (empty when
    the record has no value). ``cells(record)`` gives the record's cells as text, as the file will hold."""

    def __init__(self, cells: Callable[[Planned], dict[str, str]], delimiter: str) -> None:
        self.cells = cells
        self.delimiter = delimiter
        self.columns: set[str] = set()
        self.header = 0  # bytes of the header's cells (quoted as needed)
        self.data = 0  # bytes of the records' cells
        self.count = 0
        self.total = 0
        self._last: tuple[Planned | None, int, list[str], int] = (None, 0, [], 0)

    def _line(self, values: list[str]) -> int:
        """Bytes of these cells as the writer quotes them, without delimiters and line end."""
        out = io.StringIO()
        csv.writer(out, delimiter=self.delimiter, lineterminator="\n").writerow(values)
        return len(out.getvalue().encode("utf-8")) - len(values)

    def _measure(self, record: Planned) -> tuple[int, list[str], int]:
        if self._last[0] is not record:
            row = self.cells(record)
            new = [c for c in row if c not in self.columns]
            self._last = (record, self._line(list(row.values())), new, self._line(new) if new else 0)
        return self._last[1:]

    def size_with(self, record: Planned) -> int:
        data, new, header = self._measure(record)
        columns = len(self.columns) + len(new)
        # every line (header included) holds columns - 1 delimiters and one "\n"
        return self.header + header + self.data + data + (self.count + 2) * columns

    def add(self, record: Planned) -> None:
        self.total = self.size_with(record)
        data, new, header = self._measure(record)
        self.columns.update(new)
        self.header += header
        self.data += data
        self.count += 1


def json_array(payloads: list[str | None]) -> bytes:
    """The body ``JsonArraySize`` measures: payloads already compact JSON (``canonical_json``), UTF-8."""
    return b"[" + b",".join((p or "null").encode("utf-8") for p in payloads) + b"]"


class Batcher:
    """Records into batches, per group (``group(record)``; groups never share a batch), each of at most
    ``limit`` records (None: no count cap) and ``max_bytes`` of body as ``new_size()`` measures it. A record
    that alone is over ``max_bytes`` goes alone (the vendor's refusal then fails that record only)."""

    def __init__(
        self,
        limit: int | None,
        max_bytes: int,
        new_size: Callable[[], BodySize],
        group: Callable[[Planned], str | None] = lambda record: None,
    ) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.new_size = new_size
        self.group = group
        self._open: dict[str | None, tuple[list[Planned], BodySize]] = {}

    def add(self, record: Planned) -> list[Planned] | None:
        """Add ``record``; return the batch it closed (full without it), if any."""
        key = self.group(record)
        batch, size = self._open.get(key) or ([], self.new_size())
        closed = None
        if batch and (
            (self.limit is not None and len(batch) >= self.limit) or size.size_with(record) > self.max_bytes
        ):
            closed = batch
            batch, size = [], self.new_size()
        size.add(record)
        batch.append(record)
        self._open[key] = (batch, size)
        return closed

    def rest(self) -> Iterator[list[Planned]]:
        """The batches still open, once every record was added."""
        still_open, self._open = self._open, {}
        for batch, _ in still_open.values():
            yield batch
