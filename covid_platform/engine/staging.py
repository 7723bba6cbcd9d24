"""Stream one landed file into an unlogged staging table with COPY, hashing the bytes on the way."""

import codecs
import csv
import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import BinaryIO

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.engine import dates, numbers, regions
from covid_platform.engine.tables import base_columns

MAX_HEADER_BYTES = 64 * 1024
CHUNK = 1 << 20
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"


class FileRejected(Exception):
    """The file cannot be staged; the message says what and where, for a person to fix it."""


class _Landed:
    """The object's bytes as they were dropped: hashed and counted as they are read, with a pushback."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.pending = b""

    def read(self, size: int = -1) -> bytes:
        if self.pending:
            chunk, self.pending = self.pending, b""
            return chunk
        chunk = self.raw.read(size if size and size > 0 else CHUNK)
        self.sha256.update(chunk)
        self.bytes += len(chunk)
        return chunk


class CheckedText:
    """What COPY reads: the landed bytes (hashed as they arrive), gunzipped on the fly when they are gzip,
    and checked on the way to be UTF-8 text without NUL bytes, so a bad byte is named by its offset.

    A check that fails inside COPY's read() reaches the caller only as COPY's generic error, so the
    rejection is also kept in `rejected`.
    """

    def __init__(self, raw: BinaryIO):
        self._landed = _Landed(raw)
        head = self._landed.read(len(GZIP_MAGIC))
        self._landed.pending = head
        self.gzip = head == GZIP_MAGIC
        self._text = gzip.GzipFile(fileobj=self._landed, mode="rb") if self.gzip else self._landed
        self._buffer = b""
        self._carry = b""  # the start of a UTF-8 sequence cut by a chunk boundary
        self.offset = 0  # text bytes read so far
        self.lines = 0  # line ends read so far
        self.last_byte = b""
        self.at_end = False
        self.rejected: FileRejected | None = None

    def _next(self, size: int) -> bytes:
        try:
            chunk = self._text.read(size)
        except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            self._reject(f"not a readable gzip file after {self.offset} bytes: {error}")
        self._check(chunk)
        self.offset += len(chunk)
        self.lines += chunk.count(b"\n")
        if chunk:
            self.last_byte = chunk[-1:]
        else:
            self.at_end = True
        return chunk

    def _check(self, chunk: bytes) -> None:
        nul = chunk.find(b"\0")
        if nul >= 0:
            line = self.lines + chunk.count(b"\n", 0, nul) + 1
            self._reject(f"line {line}: a NUL byte at byte offset {self.offset + nul}; binary data, not CSV text")
        data = self._carry + chunk
        try:
            _, consumed = codecs.utf_8_decode(data, "strict", not chunk)
        except UnicodeDecodeError as error:
            line = self.lines + data.count(b"\n", 0, error.start) + 1
            at = self.offset - len(self._carry) + error.start
            self._reject(f"line {line}: not valid UTF-8 at byte offset {at} (byte 0x{data[error.start]:02x})")
        self._carry = data[consumed:]

    def _reject(self, reason: str):
        self.rejected = FileRejected(reason)
        raise self.rejected

    def read(self, size: int = -1) -> bytes:
        if self._buffer:
            chunk, self._buffer = self._buffer, b""
            return chunk
        return self._next(size if size and size > 0 else CHUNK)

    def readline(self) -> bytes:
        """The first line, kept apart so COPY sees only data rows."""
        while b"\n" not in self._buffer:
            chunk = self._next(8192)
            if not chunk:
                break
            self._buffer += chunk
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise FileRejected(f"line 1: no line end in the first {MAX_HEADER_BYTES} bytes; not a CSV header")
        line, sep, rest = self._buffer.partition(b"\n")
        self._buffer = rest
        return line + sep

    def drain(self) -> None:
        """Read the landed bytes to the end so the hash covers every byte even if COPY stopped early."""
        while self._landed.read(CHUNK):
            pass

    @property
    def bytes(self) -> int:
        """Bytes of the object as landed (compressed, for a gzip drop)."""
        return self._landed.bytes

    @property
    def hexdigest(self) -> str:
        return self._landed.sha256.hexdigest()


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
        """Where each column was found in the file (kept in the ledger)."""
        return {"positions": self.positions, "file_date": self.file_date, "wide_dates": self.wide_dates}


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


# A staged file lives in two tables of `covid_staging`, both created and dropped here: the text COPY read
# (`stage`), and the typed rows that passed the gates (`create_typed`), which wait for the merge.


def staging_table(file_id: int) -> sql.Composed:
    """The file's rows, typed and gated: what the merge reads (dropped once merged)."""
    return sql.SQL("covid_staging.{}").format(sql.Identifier(f"file_{file_id}"))


def text_table(file_id: int) -> sql.Composed:
    """The file as COPY read it: one text column per header field (dropped once typed)."""
    return sql.SQL("covid_staging.{}").format(sql.Identifier(f"text_{file_id}"))


def create_typed(cur, dataset: Dataset, staged: StagedFile, file_id: int, distinct: bool) -> None:
    """Cast the staged text into `staging_table(file_id)`: dates in the dataset's format (`dates`), whole
    counts as bigint ("12.0" is 12: the gates admit only zeros after a decimal point), decimal ones as
    numeric, empty attributes and counts as null; with `region_names`, the canonical region's state_fips and
    state_name (null where the value names no region: a gate's bad row).

    distinct: one row per key, for a file whose conflicting keys the gates have set aside already (only
    exact duplicates remain); otherwise the cast fails on a whole count that is not one (the caller's
    savepoint), and a decimal that is not one is NaN (numeric's own input would take '1e5' and 'NaN')."""
    table = staging_table(file_id)
    columns = [sql.Identifier(c) for c in dataset.region]
    columns += [sql.SQL("nullif({c}, '') AS {c}").format(c=sql.Identifier(c)) for c in dataset.attributes]
    columns.append(sql.SQL("{} AS date").format(dates.date_value(dataset.date_format, sql.Identifier("date"))))
    for column in (*dataset.counts, *dataset.values):
        if column in dataset.decimals:
            count = ("CASE WHEN {c} = '' THEN NULL WHEN {c} ~ {ok} THEN {c}::numeric ELSE 'NaN'::numeric END AS {c}"
                     if not distinct else "nullif({c}, '')::numeric AS {c}")
        else:
            count = "split_part(nullif({c}, ''), '.', 1)::bigint AS {c}" if distinct else "nullif({c}, '')::bigint AS {c}"
        columns.append(sql.SQL(count).format(c=sql.Identifier(column), ok=sql.Literal(numbers.pattern(dataset, column))))
    columns += [sql.Identifier(c) for c in dataset.region_columns]
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} AS SELECT {}{} FROM ({}) AS s{}").format(
        table,
        sql.SQL("DISTINCT ON ({}) ").format(sql.SQL(", ").join(sql.Identifier(c) for c in dataset.key))
        if distinct else sql.SQL(""),
        sql.SQL(", ").join(columns),
        source_rows(dataset, staged),
        regions.canonical_join(dataset, "s") if dataset.region_names else sql.SQL(""),
    ))


def staged_rows(dataset: Dataset, file_id: int) -> sql.Composed:
    """The typed rows of one gated file (`create_typed`)."""
    columns = [sql.Identifier(c) for c in base_columns(dataset)]  # with the canonical region, if declared
    columns.append(sql.SQL("{}::bigint AS file_id").format(sql.Literal(file_id)))
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(columns), staging_table(file_id))


def drop(cur, file_id: int, typed: bool = True) -> None:
    """Drop the file's text table, and its typed rows too unless they still wait for the merge (CASCADE:
    the merge's view on them)."""
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(text_table(file_id)))
    if typed:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(staging_table(file_id)))


def parse_header(line: bytes) -> list[str]:
    """The header's field names (the reader has already checked that the bytes are UTF-8 text)."""
    text = line.removeprefix(BOM).decode("utf-8")
    fields = next(csv.reader([text.rstrip("\r\n")]), [])
    return [field.strip() for field in fields]


def date_from_file_name(key: str, fmt: str) -> str:
    stem = re.sub(r"\.csv(\.gz)?$", "", key.rsplit("/", 1)[-1], flags=re.IGNORECASE)
    try:
        return datetime.strptime(stem, fmt).date().isoformat()
    except ValueError as error:
        example = date(2020, 12, 31).strftime(fmt)
        raise FileRejected(f"file name {stem!r} does not hold the date this dataset expects (like {example})") from error


def stage(
    conn: psycopg2.extensions.connection, reader: CheckedText, file_id: int, dataset: Dataset, key: str
) -> StagedFile:
    """COPY the file into `covid_staging.text_<file_id>` (all text, one column per header field) and commit.

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
    table = text_table(file_id)
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
            cur.copy_expert(copy.as_string(conn), reader, size=CHUNK)
        except psycopg2.Error as error:
            if reader.rejected:  # our own check stopped COPY's read()
                conn.rollback()
                raise reader.rejected from None
            if isinstance(error, psycopg2.DataError):
                conn.rollback()
                raise FileRejected(copy_error_reason(error, header, reader)) from error
            raise  # a lost connection: no rollback on it, so the error shown is the real one
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
        rows = cur.fetchone()[0]
    conn.commit()
    return StagedFile(table, header, positions, missing, rows, file_date, wide_dates)


def copy_error_reason(error: psycopg2.Error, header: list[str], reader: CheckedText) -> str:
    """Turn PostgreSQL's COPY error into a line of the file and what was wrong with it."""
    message = error.diag.message_primary or str(error).strip()
    found = re.search(r"line (\d+)", error.diag.context or "")
    line = int(found.group(1)) + 1 if found else None
    where = f"line {line}: " if line else ""
    short = "missing data for column" in message or "unterminated CSV quoted field" in message
    if short and reader.at_end and reader.last_byte not in (b"\n", b"\r"):
        what = f"fewer fields than the header's {len(header)}" if "missing data" in message else "an unclosed quote"
        return f"{where}the file is truncated: its last record has no line end and {what}"
    if "extra data after last expected column" in message or "missing data for column" in message:
        message = f"expected {len(header)} fields like the header, {message}"
    return f"{where}{message}"
