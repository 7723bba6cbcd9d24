"""Stream one landed file into an unlogged staging table with COPY, hashing the bytes on the way."""

import csv
import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import BinaryIO

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from covid_platform.datasets import Dataset

MAX_HEADER_BYTES = 64 * 1024
BOM = b"\xef\xbb\xbf"


class FileRejected(Exception):
    """The file cannot be staged; the message says what and where, for a person to fix it."""


class HashingReader:
    """File-like wrapper that hashes and counts the bytes COPY pulls through it."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self._buffer = b""

    def _pull(self, size: int) -> bytes:
        chunk = self.raw.read(size)
        self.sha256.update(chunk)
        self.bytes += len(chunk)
        return chunk

    def read(self, size: int = -1) -> bytes:
        if self._buffer:
            chunk, self._buffer = self._buffer, b""
            return chunk
        return self._pull(size if size and size > 0 else 1 << 20)

    def readline(self) -> bytes:
        """The first line, kept apart so COPY sees only data rows."""
        while b"\n" not in self._buffer:
            chunk = self._pull(8192)
            if not chunk:
                break
            self._buffer += chunk
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise FileRejected(f"line 1: no line end in the first {MAX_HEADER_BYTES} bytes; not a CSV header")
        line, sep, rest = self._buffer.partition(b"\n")
        self._buffer = rest
        return line + sep

    def drain(self) -> None:
        """Read to the end so the hash covers every byte even if COPY stopped early."""
        while self.read(1 << 20):
            pass

    @property
    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


@dataclass
class StagedFile:
    table: sql.Composed
    header: list[str]
    positions: dict[str, int]
    """Dataset column → staging column number (c1, c2, …)."""
    missing: list[str]
    rows: int
    file_date: str | None = None
    """The date of every row, for sources that name it in the file name (YYYY-MM-DD)."""
    wide_dates: dict[str, int] = field(default_factory=dict)
    """For wide files: date (YYYY-MM-DD) → staging column number of that date's column."""

    @property
    def columns(self) -> dict:
        """What the merge needs to read the staging table again (kept in the ledger)."""
        return {"positions": self.positions, "file_date": self.file_date, "wide_dates": self.wide_dates}

    @classmethod
    def from_ledger(cls, file_id: int, columns: dict) -> "StagedFile":
        return cls(staging_table(file_id), [], columns["positions"], [], 0, columns["file_date"],
                   columns["wide_dates"])


def source_rows(dataset: Dataset, staged: StagedFile) -> sql.Composed:
    """The staged file as rows of trimmed text named by the dataset's columns, plus `line`, whatever the
    layout: a wide file yields one row per (line, date column)."""
    wide = dataset.values[0] if dataset.wide else None
    columns = [sql.SQL("line")]
    for column in dataset.stored_columns:
        if column == "date" and staged.file_date:
            value = sql.Literal(staged.file_date)
        elif column == "date" and wide:
            value = sql.SQL("wide.date")
        elif column == wide:
            value = sql.SQL("btrim(wide.value)")
        else:
            value = sql.SQL("btrim({})").format(sql.Identifier(f"c{staged.positions[column]}"))
        columns.append(sql.SQL("{} AS {}").format(value, sql.Identifier(column)))
    source = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(columns), staged.table)
    if not wide:
        return source
    cells = sql.SQL(", ").join(
        sql.SQL("({}, {})").format(sql.Literal(day), sql.Identifier(f"c{position}"))
        for day, position in staged.wide_dates.items()
    )
    return source + sql.SQL(" CROSS JOIN LATERAL (VALUES {}) AS wide (date, value)").format(cells)


def staging_table(file_id: int) -> sql.Composed:
    return sql.SQL("covid_staging.{}").format(sql.Identifier(f"file_{file_id}"))


def parse_header(line: bytes) -> list[str]:
    if line.startswith(BOM):
        line = line[len(BOM) :]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileRejected(f"line 1: not valid UTF-8 at byte offset {error.start}") from error
    if "\x00" in text:
        raise FileRejected("line 1: contains NUL bytes; not a CSV text file")
    fields = next(csv.reader([text.rstrip("\r\n")]), [])
    return [field.strip() for field in fields]


def date_from_file_name(key: str, fmt: str) -> str:
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    try:
        return datetime.strptime(stem, fmt).date().isoformat()
    except ValueError as error:
        example = date(2020, 12, 31).strftime(fmt)
        raise FileRejected(f"file name {stem!r} does not hold the date this dataset expects (like {example})") from error


def stage(
    conn: psycopg2.extensions.connection, reader: HashingReader, file_id: int, dataset: Dataset, key: str
) -> StagedFile:
    """COPY the file into `covid_staging.file_<file_id>` (all text, one column per header field) and commit.

    Raises FileRejected when the bytes are not a CSV that COPY can read. The caller drains the reader.
    """
    file_date = date_from_file_name(key, dataset.date_in_file_name) if dataset.date_in_file_name else None
    header = parse_header(reader.readline())
    if not any(header):
        raise FileRejected("the file is empty" if reader.bytes == 0 else "line 1: the header names no columns")
    lowered = [name.lower() for name in header]
    positions, missing = {}, []
    for column in dataset.source_columns:
        found = [i for i, name in enumerate(lowered, start=1) if name in dataset.header_names(column)]
        if found:
            positions[column] = found[0]
        else:
            missing.append(column)
    wide_dates = {}
    if dataset.wide:
        for i, name in enumerate(header, start=1):
            try:
                wide_dates[datetime.strptime(name, dataset.wide).date().isoformat()] = i
            except ValueError:
                continue
        if not wide_dates:
            missing.append(f"date columns named like {date(2020, 12, 31).strftime(dataset.wide)}")
        if dataset.wide_total and dataset.wide_total.lower() in lowered:
            positions[dataset.wide_total] = lowered.index(dataset.wide_total.lower()) + 1
    table = staging_table(file_id)
    columns = [sql.Identifier(f"c{i}") for i in range(1, len(header) + 1)]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        cur.execute(
            sql.SQL(
                # line numbers count the header as line 1, as an editor would show them
                "CREATE UNLOGGED TABLE {} (line bigint GENERATED ALWAYS AS IDENTITY (START WITH 2), {})"
            ).format(table, sql.SQL(", ").join(sql.SQL("{} text").format(c) for c in columns))
        )
        copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8')").format(
            table, sql.SQL(", ").join(columns)
        )
        try:
            cur.copy_expert(copy.as_string(conn), reader, size=1 << 20)
        except psycopg2.DataError as error:
            conn.rollback()
            raise FileRejected(copy_error_reason(error, header)) from error
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        rows = cur.fetchone()[0]
    conn.commit()
    return StagedFile(table, header, positions, missing, rows, file_date, wide_dates)


def copy_error_reason(error: psycopg2.Error, header: list[str]) -> str:
    """Turn PostgreSQL's COPY error into a line of the file and what was wrong with it."""
    message = error.diag.message_primary or str(error).strip()
    found = re.search(r"line (\d+)", error.diag.context or "")
    where = f"line {int(found.group(1)) + 1}: " if found else ""
    if "extra data after last expected column" in message or "missing data for column" in message:
        message = f"expected {len(header)} fields like the header, {message}"
    return f"{where}{message}"
