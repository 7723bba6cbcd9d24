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
BARE_CR = ("line 1: a carriage return (CR) ends the header without a line feed (LF): the file's lines end in a "
           "bare CR, as classic Mac OS wrote them; expected LF or CRLF line ends (save it with Unix or Windows "
           "line ends)")
# a line of spaces and tabs at most (a few: a reader holds them back until it sees what ends them), ended or
# the file's last: right after a line end
BLANK_SPACES = 256
MAYBE_BLANK = re.compile(rb"\n[\n\r \t]")  # where a blank line may start: one scan of a chunk, most find none
BLANK_LINE = re.compile(rb"(?<=\n)(?:[ \t]{0,%d}\r?\n|[ \t]{1,%d}\r?\Z)" % (BLANK_SPACES, BLANK_SPACES))
# A staging table's line numbers, counted in records (the header is line 1; a record whose quoted field spans
# several lines is one), in the order COPY reads the rows; drawn 100,000 at a time (one backend draws them
# all, in order: no gap), not each from the sequence.
LINE = sql.SQL("line bigint GENERATED ALWAYS AS IDENTITY (START WITH 2 CACHE 100000)")


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


def _encoding_hint(data: bytes, offset: int, start: int) -> str:
    """What the byte at `start` of `data` (at `offset` in the file) says of the file's encoding, if anything:
    a UTF-16 byte order mark, or a letter of the Windows-1252 (Latin-1) spreadsheets save by default."""
    if offset == 0 and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "; the file is UTF-16 text (it starts with UTF-16's byte order mark): save it as UTF-8"
    char = data[start:start + 1].decode("cp1252", errors="replace")
    if char.isprintable() and char != "\ufffd":
        return f"; if the file was saved as Windows-1252 or Latin-1, this byte is {char!r} there: save it as UTF-8"
    return ""


class CheckedText:
    """What COPY reads: the landed bytes (hashed as they arrive), gunzipped on the fly when they are gzip,
    and checked on the way to be UTF-8 text without NUL bytes, so a bad byte is named by its offset.

    A check that fails inside COPY's read() reaches the caller only as COPY's generic error, so the
    rejection is also kept in `rejected`.

    Once told the header's field count (`fill_blank_lines`), a blank line outside a quoted field is given
    that many empty fields: COPY would stop at it (one field short of the header), as pandas and Python's
    csv module skip it. Its line keeps its number; the stager then removes the row (`empty_row`).
    """

    def __init__(self, raw: BinaryIO):
        self._landed = _Landed(raw)
        head = b""
        while len(head) < len(GZIP_MAGIC):  # a stream may give fewer bytes than asked
            chunk = self._landed.read(len(GZIP_MAGIC) - len(head))
            if not chunk:
                break
            head += chunk
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
        self._filler: bytes | None = None
        self._held = b""  # a chunk's last byte, "\r", until the next chunk says whether "\n" follows it
        self._previous = b"\n"  # the byte before the next chunk (the header's line end, at first)
        self._quoted = 0  # 1 inside a quoted field at the end of what read() returned
        self.maybe_empty = False  # a blank line filled, a line that starts with a comma or a space: `empty_row`s?

    def fill_blank_lines(self, fields: int) -> None:
        """From here on, a blank line becomes `fields` empty fields (a row of nulls for COPY)."""
        self._filler = b"," * (fields - 1) if fields > 1 else b'""'

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
            self._reject(f"line {line}: not valid UTF-8 at byte offset {at} (byte 0x{data[error.start]:02x})"
                         + _encoding_hint(data, at, error.start))
        self._carry = data[consumed:]

    def _reject(self, reason: str):
        self.rejected = FileRejected(reason)
        raise self.rejected

    def read(self, size: int = -1) -> bytes:
        while True:
            if self._buffer:
                chunk, self._buffer = self._buffer, b""
            else:
                chunk = self._next(size if size and size > 0 else CHUNK)
            if self._filler is None:
                return chunk
            chunk, self._held = self._held + chunk, b""
            if not self.at_end:  # held until the next chunk says whether a blank line or a CRLF ends there
                start = chunk.rfind(b"\n") + 1
                if ((start or self._previous == b"\n") and len(chunk) - start <= BLANK_SPACES + 1
                        and not chunk[start:].strip(b" \t\r")):
                    chunk, self._held = chunk[:start], chunk[start:]
                elif chunk.endswith(b"\r"):
                    chunk, self._held = chunk[:-1], b"\r"
            if chunk or self.at_end:  # an empty chunk ends COPY: only at the end
                return self._fill(chunk)

    def _fill(self, chunk: bytes) -> bytes:
        """The chunk with each blank line outside a quoted field given the filler's empty fields (a quote
        character's count says whether a position is inside a quoted field: "" inside one counts twice)."""
        pieces, copied, counted, quotes = [], 0, 0, self._quoted
        at_line_start = self._previous == b"\n" and chunk[:1] in (b"\n", b"\r", b" ", b"\t")
        if at_line_start or MAYBE_BLANK.search(chunk):
            for blank in BLANK_LINE.finditer(self._previous + chunk, 1):
                at = blank.start() - 1  # in chunk
                quotes += chunk.count(b'"', counted, at)
                counted = at
                if quotes % 2 == 0:
                    pieces += [chunk[copied:at], self._filler]
                    copied = at
        self._quoted = (quotes + chunk.count(b'"', counted)) % 2
        self.maybe_empty = self.maybe_empty or bool(pieces) or b"\n," in chunk or b"\n " in chunk or (
            self._previous == b"\n" and chunk[:1] in (b",", b" "))
        self._previous = chunk[-1:] or self._previous
        return b"".join([*pieces, chunk[copied:]]) if pieces else chunk

    def readline(self) -> bytes:
        """The first line, kept apart so COPY sees only data rows."""
        while b"\n" not in self._buffer:
            chunk = self._next(8192)
            if not chunk:
                break
            self._buffer += chunk
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise FileRejected(BARE_CR if b"\r" in self._buffer else
                                   f"line 1: no line end in the first {MAX_HEADER_BYTES} bytes; not a CSV header")
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
    typed: bool = False
    """COPY read the file straight into typed columns (`copy_typed`)."""
    gated_as_text: int = 0
    """Of a file COPYed so, the rows its gates' aggregate did not admit, gated as text (`gates.copy_checked`)."""
    empty_rows: int = 0
    """Lines without a value in any field (blank, or only commas), removed: no rows (`empty_row`)."""

    @property
    def columns(self) -> dict:
        """Where each column was found in the file, and how it was read (kept in the ledger)."""
        how = {"copied": "typed", "gated_as_text": self.gated_as_text} if self.typed else {"copied": "text"}
        empty = {"empty_rows": self.empty_rows} if self.empty_rows else {}
        return {"positions": self.positions, "file_date": self.file_date, "wide_dates": self.wide_dates, **how,
                **empty}


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


# A staged file lives in tables of `covid_staging`, all created and dropped here: the typed rows that passed
# the gates, which wait for the merge (`copy_typed`, or `create_typed` from the text COPY read, `stage`), and
# for a dataset with region_names the canonical region of each region value the file wrote.


def staging_table(file_id: int) -> sql.Composed:
    """The file's rows, typed and gated: what the merge reads (dropped once merged)."""
    return sql.SQL("covid_staging.{}").format(sql.Identifier(f"file_{file_id}"))


def text_table(file_id: int) -> sql.Composed:
    """The file as COPY read it: one text column per header field (dropped once typed)."""
    return sql.SQL("covid_staging.{}").format(sql.Identifier(f"text_{file_id}"))


def region_map(file_id: int) -> sql.Composed:
    """Each region value of the file's typed rows, with its canonical state_fips and state_name."""
    return sql.SQL("covid_staging.{}").format(sql.Identifier(f"regions_{file_id}"))


def create_region_map(cur, dataset: Dataset, file_id: int) -> None:
    """`region_map(file_id)` for a dataset with region_names: one row per distinct value of its region column
    in the typed rows, its state_fips and state_name null where it names no region (a gate's bad row). The
    merge reads the canonical region through it (`staged_rows`): a join with a table of a few rows costs less
    than storing two more columns for every row."""
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(region_map(file_id)))
    cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} AS {}").format(
        region_map(file_id), _canonical_regions(dataset, staging_table(file_id))))
    # Unanalyzed, it would look like hundreds of rows to the merge's planner, which then misjudges the join
    # (its sorts, and its backend's memory, grow with the rows it expects).
    cur.execute(sql.SQL("ANALYZE {}").format(region_map(file_id)))


def region_map_values(dataset: Dataset, file_id: int, rows: str) -> sql.Composed:
    """A statement adding to `create_region_map`'s map the region values of `rows` (a name in the statement
    it ends, with the region column) that it does not hold yet: for typed rows whose values changed, no scan
    of every row. A value no row holds any more stays, and matches no row."""
    (column,) = dataset.region_names
    new = sql.SQL("{rows} AS v WHERE NOT EXISTS (SELECT FROM {map} AS m WHERE m.{c} = v.{c})").format(
        rows=sql.Identifier(rows), map=region_map(file_id), c=sql.Identifier(column))
    return sql.SQL("INSERT INTO {} {}").format(region_map(file_id), _canonical_regions(dataset, new))


def _canonical_regions(dataset: Dataset, rows: sql.Composable) -> sql.Composed:
    """Each distinct value of the region column of `rows` (a FROM item), with its state_fips and state_name."""
    (column,) = dataset.region_names
    return sql.SQL(
        "SELECT s.{c}, _region.state_fips, _region.state_name FROM (SELECT DISTINCT {c} FROM {rows}) AS s{join}"
    ).format(c=sql.Identifier(column), rows=rows, join=regions.canonical_join(dataset, "s"))


def typed_count(dataset: Dataset, column: str) -> sql.Composable:
    """The trimmed text of a count as its stored type: whole counts bigint ("12.0" is 12: the gates admit only
    zeros after a decimal point), decimal ones numeric, empty ones null. Read only as the gates read it
    (`numbers.pattern`): otherwise a whole count's cast fails (the caller's savepoint; bigint's own input would
    take '+5' or '-0') and a decimal is NaN (numeric's own input would take '1e5' and 'NaN')."""
    if column in dataset.decimals:
        count = ("CASE WHEN coalesce({c}, '') = '' THEN NULL WHEN {c} ~ {ok} THEN {c}::numeric "
                 "ELSE 'NaN'::numeric END")
    else:  # '12.0' is 12; the last cast fails with the value in its message
        count = ("CASE WHEN coalesce({c}, '') = '' THEN NULL WHEN {plain} THEN {c}::bigint "
                 "WHEN {c} ~ {ok} THEN split_part({c}, '.', 1)::bigint "
                 "ELSE ('not a count: ' || {c})::bigint END")
    c = sql.Identifier(column)
    return sql.SQL(count).format(c=c, ok=sql.Literal(numbers.pattern(dataset, column)),
                                 plain=numbers.plain(dataset, column, c))


def create_typed(cur, dataset: Dataset, staged: StagedFile, file_id: int) -> None:
    """Cast the staged text into `staging_table(file_id)`: dates in the dataset's format (`dates`), counts as
    `typed_count` reads them, empty attributes as null (the canonical region: `create_region_map`).

    With `line`, the line each row was read from (the gates delete the lines they set aside)."""
    table = staging_table(file_id)
    columns = [sql.Identifier(c) for c in ("line", *dataset.region)]
    columns += [sql.SQL("nullif({c}, '') AS {c}").format(c=sql.Identifier(c)) for c in dataset.attributes]
    columns.append(sql.SQL("{} AS date").format(dates.date_value(dataset.date_format, sql.Identifier("date"))))
    columns += [sql.SQL("{} AS {}").format(typed_count(dataset, c), sql.Identifier(c))
                for c in (*dataset.counts, *dataset.values)]
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
    cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} AS SELECT {} FROM ({}) AS s").format(
        table, sql.SQL(", ").join(columns), source_rows(dataset, staged)
    ))


def staged_rows(dataset: Dataset, file_id: int) -> sql.Composed:
    """The typed rows of one gated file (`copy_typed` or `create_typed`), with the canonical region if the
    dataset declares one (`create_region_map`)."""
    columns = [_staged_column(dataset, c) for c in base_columns(dataset)]
    columns.append(sql.SQL("{}::bigint AS file_id").format(sql.Literal(file_id)))
    rows = sql.SQL("SELECT {} FROM {} AS s").format(sql.SQL(", ").join(columns), staging_table(file_id))
    if not dataset.region_names:
        return rows
    (column,) = dataset.region_names
    return rows + sql.SQL(" LEFT JOIN {} AS m ON m.{c} = s.{c}").format(region_map(file_id),
                                                                       c=sql.Identifier(column))


def _staged_column(dataset: Dataset, column: str) -> sql.Composable:
    """A column of `staged_rows`: a count cast (those of `copy_typed` are text; those of `create_typed` typed
    already, no cast), the region as covid.regions writes it, the canonical region's columns from the map,
    an attribute with its leading zeros (`zero_pad`)."""
    c = sql.Identifier(column)
    if column in (*dataset.counts, *dataset.values):
        return sql.SQL("s.{c}::{t} AS {c}").format(c=c, t=sql.SQL(numbers.sql_type(dataset, column)))
    if column in dataset.region_names:
        return sql.SQL("{} AS {}").format(regions.canonical_value(dataset, "s", "m"), c)
    if column in dataset.zero_pad:
        return sql.SQL("{} AS {}").format(zero_padded(dataset, column, sql.Identifier("s", column)), c)
    return sql.Identifier("m" if column in dataset.region_columns else "s", column)


def zero_padded(dataset: Dataset, column: str, value: sql.Composable) -> sql.Composable:
    """An attribute's text with the leading zeros its `zero_pad` width gives digits ('5' → '05'), as stored."""
    # length() first: the pattern is tested on the short values only
    return sql.SQL("CASE WHEN length({v}) < {n} AND {v} ~ '^[0-9]+$' THEN lpad({v}, {n}, '0') ELSE {v} END").format(
        v=value, n=sql.Literal(dataset.zero_pad[column]))


def drop(cur, file_id: int, typed: bool = True) -> None:
    """Drop the file's text table, and its typed rows and region map too unless they still wait for the
    merge (CASCADE: the merge's view on them)."""
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(text_table(file_id)))
    if typed:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}, {} CASCADE").format(staging_table(file_id),
                                                                           region_map(file_id)))


def parse_header(line: bytes) -> list[str]:
    """The header's field names (the reader has already checked that the bytes are UTF-8 text)."""
    text = line.removeprefix(BOM).decode("utf-8").rstrip("\r\n")
    if "\r" in text:
        raise FileRejected(BARE_CR)
    fields = next(csv.reader([text]), [])  # text after a closing quote ("state" ,cases) kept, as pandas does
    if fields and "," in fields[-1] and text.count('"') % 2:  # a quote left open took the names after it
        raise FileRejected("line 1: a double quote opened in the header is not closed on its line; expected "
                           "the column names separated by commas, each quoted name closed")
    return [field.strip() for field in fields]


def date_from_file_name(key: str, fmt: str) -> str:
    stem = re.sub(r"\.csv(\.gz)?$", "", key.rsplit("/", 1)[-1], flags=re.IGNORECASE)
    try:
        return datetime.strptime(stem, fmt).date().isoformat()
    except ValueError as error:
        example = date(2020, 12, 31).strftime(fmt)
        if "does not match format" in str(error) or "unconverted data" in str(error):
            raise FileRejected(f"file name {stem!r} does not hold the date this dataset expects (like {example})") from error
        raise FileRejected(f"file name {stem!r} is written like {example} but names no day ({error})") from error


# A wide file's header field that looks like a date: only digits and date separators, six digits or more. The
# CPS file's other columns (School, Latitude, CPS_School_ID, 7Total, 14Total, gTotal) all hold letters.
DATE_LIKE = re.compile(r"(?=(?:\D*\d){6})[\d./-]+")


def _field_read(header: list[str], lowered: list[str], name: str, column: str) -> int:
    """The position of the header's one field named `name` (whatever its case), read for `column`. Two such
    fields are ambiguous: whichever were read, the other's values would be lost without a word."""
    found = [i for i, field_name in enumerate(lowered, start=1) if field_name == name.lower()]
    if len(found) > 1:
        fields = " and ".join(f"field {i} {header[i - 1]!r}" for i in found)
        raise FileRejected(f"line 1, column {column!r}: expected one field named {name!r} (names match "
                           f"whatever their case), found {fields}; keep one")
    return found[0]


def _wide_date(name: str, fmt: str) -> str | None:
    """The date (YYYY-MM-DD) a wide file's column name holds, if it is written as `fmt` writes that date:
    strptime alone would also read 2021111 (no zeros) as 2021-11-01, whether or not 2021-01-11 was meant."""
    try:
        day = datetime.strptime(name, fmt)
    except ValueError:
        return None
    return day.date().isoformat() if day.strftime(fmt).lower() == name.lower() else None


def read_header(reader: CheckedText, dataset: Dataset, key: str, table: sql.Composed) -> StagedFile:
    """The file's first line, kept apart from the rows COPY reads into `table`: where each of the dataset's
    columns is (and which are missing), a wide file's date columns; `rows` is 0 until COPY has read them.

    A column is read from the field of its declared name, else of its first alias in the declared order that
    the header has: the publisher's current name, declared first, wins wherever the header puts it (JHU's
    2022 files carry Total_Test_Results beside an empty People_Tested). Other fields are ignored, repeated or
    not.

    Raises FileRejected for a file without a header, two fields of the name a column is read from, a wide
    file's field that looks like a date but is not written in the dataset's format (its values would be lost),
    or a file name without the date the dataset expects.
    """
    file_date = date_from_file_name(key, dataset.date_in_file_name) if dataset.date_in_file_name else None
    header = parse_header(reader.readline())
    if not any(header):
        raise FileRejected("the file is empty" if reader.bytes == 0 else "line 1: the header names no columns")
    reader.fill_blank_lines(len(header))
    lowered = [name.lower() for name in header]
    positions, missing = {}, []
    for column in dataset.source_columns:
        name = next((n for n in dataset.header_names(column) if n in lowered), None)
        if name is None:
            missing.append(column)
        else:
            positions[column] = _field_read(header, lowered, name, column)
    wide_dates = {}
    if dataset.wide:
        example = date(2020, 12, 31).strftime(dataset.wide)
        for i, name in enumerate(header, start=1):
            day = _wide_date(name, dataset.wide)
            if day in wide_dates:  # written alike (`_wide_date`): the same name
                _field_read(header, lowered, name, name)
            if day:
                wide_dates[day] = i
            elif DATE_LIKE.fullmatch(name):
                raise FileRejected(f"line 1, field {i}: expected a date column named like {example}, found "
                                   f"{name!r}, not a date written so (its values would not be read)")
        if not wide_dates:
            missing.append(f"date columns named like {example}")
        if dataset.wide_total and dataset.wide_total.lower() in lowered:
            total = dataset.wide_total
            positions[total] = _field_read(header, lowered, total, total)
    return StagedFile(table, header, positions, missing, 0, file_date, wide_dates)


def stage(
    conn: psycopg2.extensions.connection, reader: CheckedText, file_id: int, dataset: Dataset, key: str
) -> StagedFile:
    """COPY the file into `covid_staging.text_<file_id>` (all text, one column per header field) and commit.

    Raises FileRejected when the bytes are not a CSV that COPY can read. The caller drains the reader.
    """
    staged = read_header(reader, dataset, key, text_table(file_id))
    names = [f"c{i}" for i in range(1, len(staged.header) + 1)]
    columns = [sql.Identifier(name) for name in names]
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staged.table))
        cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({}, {})").format(
            staged.table, LINE, sql.SQL(", ").join(sql.SQL("{} text").format(c) for c in columns)
        ))
        # FREEZE: the table is this transaction's, so its rows need no visibility hints set on the next read
        copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8', FREEZE)").format(
            staged.table, sql.SQL(", ").join(columns)
        )
        try:
            cur.copy_expert(copy.as_string(conn), reader, size=CHUNK)
        except psycopg2.Error as error:
            if reader.rejected:  # our own check stopped COPY's read()
                conn.rollback()
                raise reader.rejected from None
            if isinstance(error, psycopg2.DataError):
                conn.rollback()
                raise FileRejected(copy_error_reason(error, staged.header, reader)) from error
            raise  # a lost connection: no rollback on it, so the error shown is the real one
        staged.rows = cur.rowcount
        if reader.maybe_empty:  # else no row can be empty: no scan for them
            remove_empty_rows(cur, staged, staged.table, empty_row(names))
    conn.commit()
    return staged


def empty_row(fields: list[str]) -> sql.Composable:
    """True for a row without a value in any of its `fields`: a blank line (`CheckedText.fill_blank_lines`),
    or a line of commas as a spreadsheet writes below its data. It holds nothing to load or to reject."""
    return sql.SQL(" AND ").join(sql.SQL("coalesce(btrim({}, E' \\t'), '') = ''").format(sql.Identifier(f))
                                 for f in fields)


def remove_empty_rows(cur, staged: StagedFile, table: sql.Composable, which: sql.Composable) -> None:
    """Delete the rows of `table` that `which` says are `empty_row`s; `staged.rows` and `staged.empty_rows`
    count them."""
    cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table, which))
    staged.rows -= cur.rowcount
    staged.empty_rows += cur.rowcount


def copies_typed(dataset: Dataset) -> bool:
    """Whether the dataset's files may be COPYed straight into typed columns (`copy_typed`): a row per line
    with its date in a column, and whole counts (numeric's input would also read '1e5' and 'NaN', which the
    gates reject)."""
    return not (dataset.wide or dataset.date_in_file_name or dataset.decimals)


def copied_date(dataset: Dataset) -> sql.Composable:
    """The date of the copied text `_date`, as a generated column computes it while COPY reads each row (an
    immutable expression: not the text path's `::date`, which depends on DateStyle). In a declared format,
    as `dates` reads it (null where the text is not in it); else from the numbers where YYYY-MM-DD has them
    (an error where they are no numbers): the gates' aggregate checks that the text is written so."""
    text = sql.Identifier("_date")
    if dataset.date_format:
        return dates.date_value(dataset.date_format, text)
    return sql.SQL(
        "make_date(substr({t}, 1, 4)::int, substr({t}, 6, 2)::int, substr({t}, 9, 2)::int)"
    ).format(t=text)


def copied_columns(staged: StagedFile) -> list[str]:
    """The columns of `copy_typed`'s table, one per header field in the file's order: the dataset's column
    read from it (`_date` for the date's text), or `_c<n>`."""
    read_into = {position: column for column, position in staged.positions.items()}
    return ["_date" if read_into.get(i) == "date" else read_into.get(i) or f"_c{i}"
            for i in range(1, len(staged.header) + 1)]


def copy_typed(
    conn: psycopg2.extensions.connection, reader: CheckedText, file_id: int, dataset: Dataset, key: str
) -> StagedFile | None:
    """COPY the file straight into `staging_table(file_id)`, in a transaction left open for the gates
    (`gates.copy_checked` commits it or rolls it back): every field as text (`copied_columns`), with `line`
    and the date the text `_date` names (`copied_date`); an empty field is null, quoted or not (FORCE_NULL),
    as `create_typed` makes it. Nothing is trimmed and the counts stay text, cast as the merge reads them
    (`staged_rows`): bigint's own input would also read '+5', '-0' or (PostgreSQL 16) '1_000', which the gates
    reject. The gates' aggregate admits only digits and text without whitespace around it; the few rows it
    does not admit are gated as text (`gates.copy_checked`).

    None, with the transaction rolled back, when the file cannot be read so: no header, a column missing, a
    date whose numbers are no date, a CSV COPY cannot read, or bytes the reader rejects. The text path then
    reads the file again, from the archive, and says what is wrong and where.
    """
    try:
        staged = read_header(reader, dataset, key, staging_table(file_id))
    except FileRejected:
        return None
    read_into = set(staged.positions.values())
    if staged.missing or len(read_into) < len(staged.positions):  # a field named for two columns: text path
        return None
    columns = [sql.Identifier(c) for c in copied_columns(staged)]
    taken = [c for i, c in enumerate(columns, start=1) if i in read_into]
    fields = sql.SQL(", ").join(sql.SQL("{} text").format(c) for c in columns)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staged.table))
        cur.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({}, {}, date date GENERATED ALWAYS AS ({}) STORED)").format(
            staged.table, LINE, fields, copied_date(dataset)
        ))
        # FREEZE: as in `stage`
        copy = sql.SQL(
            "COPY {} ({}) FROM STDIN WITH (FORMAT csv, ENCODING 'UTF8', FREEZE, FORCE_NULL ({}))"
        ).format(staged.table, sql.SQL(", ").join(columns), sql.SQL(", ").join(taken))
        try:
            cur.copy_expert(copy.as_string(conn), reader, size=CHUNK)
        except psycopg2.Error as error:
            if reader.rejected or isinstance(error, psycopg2.DataError):
                conn.rollback()
                return None
            raise  # a lost connection: no rollback on it, so the error shown is the real one
        staged.rows = cur.rowcount
    staged.typed = True
    return staged


def copy_error_reason(error: psycopg2.Error, header: list[str], reader: CheckedText) -> str:
    """Turn PostgreSQL's COPY error into a line of the file and what was wrong with it."""
    message = error.diag.message_primary or str(error).strip()
    missing = re.search(r'missing data for column "c(\d+)"', message)  # the record's fields: the ones before it
    # the staging table's columns are c1…cN in the header's order: name the file's own
    message = re.sub(r'column "c(\d+)"', lambda m: f'column "{header[int(m.group(1)) - 1]}"'
                     if 0 < int(m.group(1)) <= len(header) else m.group(0), message)
    found = re.search(r"line (\d+)", error.diag.context or "")
    line = int(found.group(1)) + 1 if found else None
    where = f"line {line}: " if line else ""
    short = "missing data for column" in message or "unterminated CSV quoted field" in message
    if short and reader.at_end and reader.last_byte not in (b"\n", b"\r"):
        found = f" ({int(missing.group(1)) - 1})" if missing else ""
        what = f"fewer fields than the header's {len(header)}{found}" if missing else "an unclosed quote"
        return f"{where}the file is truncated: its last record has no line end and {what}"
    if "unquoted carriage return" in message and reader.at_end and reader.last_byte == b"\r":
        return (f"{where}the file is truncated: its last line ends in a carriage return (CR) without the line "
                "feed (LF) its other lines end with")
    if "extra data after last expected column" in message or "missing data for column" in message:
        message = f"expected {len(header)} fields like the header, {message}"
    return f"{where}{message}"
