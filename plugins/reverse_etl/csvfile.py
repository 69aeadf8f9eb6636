"""CSV files for vendors that take batches of files: UTF-8 without BOM, one header row, one line per
record, split into numbered parts of at most ``max_lines`` lines, optionally gzipped.

Two rules keep a file safe to load and to open:
- a line break inside a value (``\\r\\n``, ``\\n``, ``\\r``) is folded to one space: a file must hold no
  multi-line values;
- a value that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-`` or ``@``) gets a
  leading ``'``, unless it is a plain number such as ``+33612345678`` or ``-12.5``, which runs nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMULA_START = ("=", "+", "-", "@")
PLAIN_NUMBER = re.compile(r"[+-]?[0-9][0-9 .,()/-]*")
LINE_BREAK = re.compile(r"\r\n|\r|\n")
PART = "PARTNUMBER"


@dataclass
class CellStats:
    folded: int = 0
    neutralised: int = 0


def cell(value: Any, stats: CellStats) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value)
    if "\n" in text or "\r" in text:
        text = LINE_BREAK.sub(" ", text)
        stats.folded += 1
    if text.startswith(FORMULA_START) and not PLAIN_NUMBER.fullmatch(text):
        text = "'" + text
        stats.neutralised += 1
    return text


def file_names(pattern: str, date: str, parts: int, gzipped: bool) -> list[str]:
    """Names of a window's parts: ``{part}`` is empty for a single file, else ``_01``, ``_02``..."""
    if parts > 1 and "{part}" not in pattern:
        raise ValueError(f"file_pattern {pattern!r} has no {{part}}: it cannot name {parts} parts")
    suffix = ".gz" if gzipped else ""
    if parts == 1:
        return [pattern.format(date=date, part="") + suffix]
    return [pattern.format(date=date, part=f"_{n:02d}") + suffix for n in range(1, parts + 1)]


def window_regex(pattern: str, date: str) -> re.Pattern:
    """Every name a window's files may have had: any part number, gzipped or not."""
    literal = re.escape(pattern.format(date=date, part=PART))
    return re.compile(literal.replace(PART, r"(?:_\d+)?") + r"(?:\.gz)?")


@dataclass
class CsvParts:
    """Write rows into ``folder/part-NNNNN.csv`` files of at most ``max_lines`` lines (header included)."""

    folder: Path
    header: list[str]
    delimiter: str = ";"
    max_lines: int = 200_000
    gzipped: bool = False
    stats: CellStats = field(default_factory=CellStats)
    paths: list[Path] = field(default_factory=list)
    rows: int = 0
    _handle: Any = None
    _writer: Any = None
    _lines: int = 0

    def __post_init__(self) -> None:
        if self.max_lines < 2:
            raise ValueError("max_lines must leave room for the header and one row")
        self.folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        path = self.folder / f"part-{len(self.paths) + 1:05d}.csv{'.gz' if self.gzipped else ''}"
        raw = gzip.open(path, "wb", compresslevel=6) if self.gzipped else open(path, "wb")  # noqa: SIM115
        self._handle = io.TextIOWrapper(raw, encoding="utf-8", newline="")  # no BOM
        self._writer = csv.writer(self._handle, delimiter=self.delimiter, lineterminator="\n")
        self._writer.writerow(self.header)
        self._lines = 1
        self.paths.append(path)

    def write(self, values: list[Any]) -> None:
        if self._handle is None or self._lines >= self.max_lines:
            self.close_part()
            self._open()
        self._writer.writerow([cell(v, self.stats) for v in values])
        self._lines += 1
        self.rows += 1

    def close_part(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> list[Path]:
        self.close_part()
        return self.paths
