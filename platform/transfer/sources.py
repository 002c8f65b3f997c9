"""Reading import files: CSV (delimiter and encoding detected) and JSON Lines.

A source yields rows as (row number, {column key: value}). Row numbers are
what a spreadsheet shows: in a CSV the header is row 1 and the first data row
is row 2 (a record with a quoted line break is still one row); in JSON Lines
the row number is the line number (the first line is 1).
"""

from __future__ import annotations

import codecs
import csv
import decimal
import io
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ..errors import XrmError

__all__ = ["CsvSource", "Format", "ImportFileError", "JsonLinesSource", "RecordsSource", "Source", "count_rows", "detect_format", "open_source"]

Format = Literal["csv", "jsonl"]
DELIMITERS = (",", ";", "\t")
_SCAN_BLOCK = 1 << 20


class ImportFileError(XrmError):
    """The file cannot be read as the format it claims (nothing was imported)."""


@dataclass
class Source:
    """Rows of one import file."""

    columns: dict[Any, str] = field(default_factory=dict)
    """Column key -> column name as the file writes it (grows while JSON Lines are read)."""
    encoding: str | None = None
    delimiter: str | None = None

    def rows(self) -> Iterator[tuple[int, dict[Any, Any]]]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


def detect_format(path: str | Path) -> Format:
    suffix = Path(path).suffix.lower()
    return "jsonl" if suffix in (".jsonl", ".ndjson", ".jsonlines") else "csv"


def open_source(
    source: str | Path | IO[bytes],
    format: Format | None = None,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> Source:
    """Open a file path or a binary file object as a CSV or JSON Lines source."""
    if format is None:
        format = detect_format(source) if isinstance(source, (str, Path)) else "csv"
    if format not in ("csv", "jsonl"):
        raise XrmError(f"unknown import format {format!r} (use csv or jsonl)")
    if isinstance(source, (str, Path)):
        try:
            binary: IO[bytes] = open(source, "rb")  # noqa: SIM115 - closed by Source.close
        except OSError as error:
            raise ImportFileError(f"Cannot open {source}: {error.strerror}") from None
        owned = True
    else:
        binary, owned = source, False
    try:
        encoding = encoding or _detect_encoding(binary)
        text = io.TextIOWrapper(binary, encoding=encoding, newline="")
        if format == "csv":
            return CsvSource(text, encoding=encoding, delimiter=delimiter, owned=owned)
        return JsonLinesSource(text, encoding=encoding, owned=owned)
    except BaseException:
        if owned:
            binary.close()
        raise


def _detect_encoding(binary: IO[bytes]) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, else Windows-1252.

    A seekable file is scanned once (in blocks, memory stays flat) to tell UTF-8
    from Windows-1252; a stream that cannot seek is taken as UTF-8.
    """
    seekable = binary.seekable()
    start = binary.tell() if seekable else 0
    head = binary.peek(4)[:4] if hasattr(binary, "peek") else b""
    if not head and seekable:
        head = binary.read(4)
        binary.seek(start)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if not seekable:
        return "utf-8"
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while block := binary.read(_SCAN_BLOCK):
            decoder.decode(block)
        decoder.decode(b"", final=True)
        return "utf-8"
    except UnicodeDecodeError:
        return "cp1252"
    finally:
        binary.seek(start)


def _read_error(error: UnicodeError, encoding: str) -> ImportFileError:
    reason = error.reason if isinstance(error, UnicodeDecodeError) else str(error)
    return ImportFileError(f"The file is not valid {encoding} text ({reason}); give its encoding explicitly")


class CsvSource(Source):
    def __init__(self, text: io.TextIOWrapper, *, encoding: str, delimiter: str | None, owned: bool) -> None:
        super().__init__(encoding=encoding)
        self._text = text
        self._owned = owned
        try:
            header_lines = _first_record_lines(text)
        except UnicodeError as error:
            raise _read_error(error, encoding) from None
        header_text = "".join(header_lines)
        if delimiter is not None and len(delimiter) != 1:
            raise XrmError(f"the delimiter must be one character, not {delimiter!r}")
        self.delimiter = delimiter or _sniff_delimiter(header_text)
        self._reader = csv.reader(itertools.chain(header_lines, text), delimiter=self.delimiter)
        try:
            header = next(self._reader, None)
        except csv.Error as error:
            raise ImportFileError(f"Row 1 (the header) is not valid CSV: {error}") from None
        if not header or not any(h.strip() for h in header):
            raise ImportFileError("The file has no header row (row 1 must name the columns)")
        header[0] = header[0].lstrip("\ufeff")
        self.columns = {index: name.strip() for index, name in enumerate(header)}

    def rows(self) -> Iterator[tuple[int, dict[Any, Any]]]:
        width = len(self.columns)
        number = 1
        while True:
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as error:
                raise ImportFileError(f"Row {number + 1} is not valid CSV: {error}") from None
            except UnicodeError as error:
                raise _read_error(error, self.encoding or "utf-8") from None
            number += 1
            row: dict[Any, Any] = dict(enumerate(cells[:width]))
            extra = [c for c in cells[width:] if c.strip()]
            if extra:
                row[_EXTRA] = len(cells)
            yield number, row

    def close(self) -> None:
        if self._owned:
            self._text.close()
        else:
            self._text.detach()


_EXTRA = object()
"""Key of a CSV row that has more (non-empty) cells than the header."""


def _first_record_lines(text: IO[str]) -> list[str]:
    """The physical lines of the first CSV record (a quoted header cell may span lines)."""
    lines = []
    while True:
        line = text.readline()
        if not line:
            break
        lines.append(line)
        if "".join(lines).count('"') % 2 == 0:
            break
    return lines


def _sniff_delimiter(header: str) -> str:
    """The candidate (",", ";", tab) occurring most often outside quotes in the header; "," on a tie."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


class JsonLinesSource(Source):
    """One JSON object per line; blank lines are skipped."""

    def __init__(self, text: io.TextIOWrapper, *, encoding: str, owned: bool) -> None:
        super().__init__(encoding=encoding)
        self._text = text
        self._owned = owned

    def rows(self) -> Iterator[tuple[int, dict[Any, Any]]]:
        number = 0
        while True:
            try:
                line = self._text.readline()
            except UnicodeError as error:
                raise _read_error(error, self.encoding or "utf-8") from None
            if not line:
                return
            number += 1
            if number == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                value = json.loads(line, parse_float=decimal.Decimal)
            except json.JSONDecodeError as error:
                yield number, {_INVALID: f"is not valid JSON: {error.msg} at character {error.pos + 1}"}
                continue
            if not isinstance(value, dict):
                yield number, {_INVALID: "must be a JSON object (one record per line)"}
                continue
            for key in value:
                if key not in self.columns:
                    self.columns[key] = key
            yield number, value

    def close(self) -> None:
        if self._owned:
            self._text.close()
        else:
            self._text.detach()


_INVALID = object()
"""Key of a JSON Lines row that is not a JSON object; its value is the reason."""


class RecordsSource(Source):
    """Rows given as mappings in memory (row numbers count from 1)."""

    def __init__(self, records: Iterator[Mapping[str, Any]] | list[Mapping[str, Any]]) -> None:
        super().__init__()
        self._records = records

    def rows(self) -> Iterator[tuple[int, dict[Any, Any]]]:
        for number, record in enumerate(self._records, start=1):
            if not isinstance(record, Mapping):
                yield number, {_INVALID: "must be a mapping of column to value"}
                continue
            for key in record:
                if key not in self.columns:
                    self.columns[key] = str(key)
            yield number, dict(record)


def count_rows(path: str | Path, format: Format | None = None, *, encoding: str | None = None, delimiter: str | None = None) -> int:
    """Data rows in a file (for a progress bar); reads the file once."""
    source = open_source(path, format, encoding=encoding, delimiter=delimiter)
    try:
        return sum(1 for _ in source.rows())
    finally:
        source.close()
