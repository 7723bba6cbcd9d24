"""The blocking gates a staged file must pass before any of its rows reach a clean table.

Each gate is evaluated by set-based SQL over the staging table and, when it fails, names the column, the
line and what was expected, so the person who dropped the file can fix it.
"""

from dataclasses import dataclass, field

import psycopg2.extensions
from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.engine import dates, numbers, regions
from covid_platform.engine.staging import (
    CheckedText,
    StagedFile,
    copied_columns,
    copy_typed,
    create_region_map,
    create_typed,
    empty_row,
    region_map,
    region_map_values,
    remove_empty_rows,
    source_rows,
    staging_table,
    text_table,
    typed_count,
    zero_padded,
)

GATES = {
    "csv_readable": "The file is UTF-8 CSV text whose rows have as many fields as its header.",
    "required_columns": "The header names every column the dataset needs.",
    "not_empty": "The file holds at least one data row.",
    "keys_present": "Key columns (region and date) are never empty.",
    "regions_known": "Regions name a region of covid.regions, written as the dataset declares (full name, postal "
                     "code or FIPS), where it declares region_names.",
    "dates_valid": "Dates are real calendar dates written as the dataset declares (YYYY-MM-DD unless it declares "
                   "a date_format), not in the future nor after the day after the file's issue time.",
    "counts_valid": "Counts are non-negative whole numbers (or empty, where the dataset allows: not reported; "
                    "signed or decimal, where it declares so).",
    "keys_unique": "No two rows share a key with different values.",
}



# A field longer than this is not a count, a date or a name: the file is broken (or hostile).
MAX_FIELD_CHARS = 10_000
ROW_GATES = ("keys_present", "regions_known", "dates_valid", "counts_valid", "keys_unique")


@dataclass
class GateResult:
    name: str
    passed: bool
    reason: str = ""
    metadata: dict = field(default_factory=dict)
    blocking: bool = True
    """A failure that stops the file (ERROR in the UI); otherwise a warning: moot, or bad rows set aside."""
    detail: str = ""
    """For row gates: the lines and problems, without the verdict on the file."""


@dataclass
class Problem:
    gate: str
    column: str
    bad: sql.Composable
    """Condition on a source row that is true when the row has this problem."""
    expected: str
    file_level: bool = False
    """The whole file is unusable (whatever the share of rows like it)."""
    note: sql.Composable = field(default_factory=lambda: sql.SQL("''"))
    """Text appended to the reason after the value found (e.g. the nearest known region)."""
    surely_good: sql.Composable | None = None
    """A cheaper condition true only for rows without this problem: `bad` is evaluated where it is not."""


@dataclass
class Found:
    """One kind of problem found in a file."""

    gate: str
    line: int
    """The first line with it."""
    message: str
    """What is wrong on that line."""
    rows: int
    distinct: int
    other_line: int | None = None
    """The first line where this problem has another message (another value found), and that message."""
    other: str | None = None

    @property
    def detail(self) -> str:
        if self.gate == "keys_unique":  # the message already names every line of its key
            return self.message + (f" ({self.distinct - 1} more key(s) like it)" if self.distinct > 1 else "")
        said = f"line {self.line}, {self.message}"
        if self.rows == 1:
            return said
        if self.other is None:
            return f"{said} ({self.rows - 1} more like it)"
        # the same column and expectation, another value found: say which ("got '1,234'"), not "like it"
        # (the first ", got ": no expected text has one, a value may)
        found = self.other[self.other.find(", got ") + 2:] if ", got " in self.other else self.other
        return f"{said} ({self.rows - 1} more in that column, {self.distinct} different values found: line " \
               f"{self.other_line} {found})"


def evaluate(
    conn: psycopg2.extensions.connection, dataset: Dataset, staged: StagedFile, file_id: int, key: str
) -> list[GateResult]:
    """Every gate, in order; once a file-level gate fails, those that need its guarantee are not evaluated.

    Rows with bad values are moved from the staging table to `covid.rejected_rows` with their reasons,
    unless they are more than the dataset's `max_bad_row_share` of the file (of a stream's batch: unless every
    row is bad): then the row gates that saw them fail and the file is quarantined.
    """
    results = [GateResult("csv_readable", True)]
    if staged.missing:
        names = [" or ".join(repr(n) for n in (c, *dataset.aliases.get(c, ()))) for c in staged.missing]
        reason = (
            f"missing required column(s) {', '.join(names)}; "
            f"the header has {', '.join(repr(c) for c in staged.header) or 'no columns'}"
        )
        results.append(GateResult("required_columns", False, reason))
        return results  # the later gates need the columns: not evaluated
    results.append(GateResult("required_columns", True))
    if staged.rows == 0:
        results.append(GateResult("not_empty", False, "the file has a header but no data rows"))
        return results
    results.append(GateResult("not_empty", True, metadata={"rows": staged.rows}))

    with conn:  # the rejected rows leave the staging table and enter covid.rejected_rows together
        typed = type_rows(conn, dataset, staged, file_id)
        if typed:  # one pass, all good
            return passed(staged)
        return _row_gates(conn, dataset, staged, file_id, key, results,
                          keep=lambda: _keep_good_rows(conn, dataset, staged, file_id, typed=typed is False))


def _row_gates(conn, dataset: Dataset, staged: StagedFile, file_id: int, key: str, results: list[GateResult],
               keep) -> list[GateResult]:
    """The row gates over the text of `staged` (in the caller's transaction): the bad rows found, set aside
    and `keep()` called to leave the typed rows of the others, unless they are too many; `results` (the
    file-level gates, passed) with the row gates' results after them."""
    found, lines_per_gate = _find_bad_rows(conn, dataset, staged, file_id)
    oversized = [f for f in found if f.gate == "csv_readable"]
    if oversized:
        results[0] = GateResult("csv_readable", False, oversized[0].detail)
        return results
    bad_lines = _count_rejects(conn)
    share = bad_lines / staged.rows
    # a stream's batch holds messages from anywhere, each its own: only a batch of nothing but bad ones stops
    stream_batch = bool(dataset.stream) and key.startswith(dataset.stream_folder)
    too_many = bad_lines == staged.rows if stream_batch else share > dataset.max_bad_row_share
    if bad_lines and not too_many:
        _set_aside(conn, staged, file_id, key)
    if not too_many:
        keep()
    if not too_many:
        verdict = f"{bad_lines} row(s) set aside in covid.rejected_rows"
    elif stream_batch:
        verdict = f"each of the batch's {staged.rows} rows has bad values"
    else:
        limit = dataset.max_bad_row_share
        verdict = (f"{bad_lines} of {staged.rows} rows ({_percent(share, limit)}) have bad values, more than "
                   f"the {limit:.0%} a file may have")
    for gate in ROW_GATES:
        seen = [f for f in found if f.gate == gate]
        if not seen:
            results.append(GateResult(gate, True, metadata={"rejected_rows": 0}))
            continue
        detail = "; ".join(f.detail for f in seen)
        rows = lines_per_gate[gate]  # a line with two bad counts is one row
        said = verdict if too_many or rows == bad_lines else \
            f"{rows} row(s) set aside in covid.rejected_rows by this gate ({bad_lines} by the gates in all)"
        results.append(
            GateResult(gate, False, f"{said}: {detail}", {"rejected_rows": rows}, blocking=too_many, detail=detail)
        )
    return results


def _percent(share: float, limit: float) -> str:
    """A share with the digits that tell it from the limit and from 100% (33 of 3,245 rows: 1.02%, not the
    1.0% it exceeds; 3,271 of 3,272: 99.97%, not 100.0%)."""
    for digits in (1, 2, 3):
        text = f"{share:.{digits}%}"
        if share in (limit, 1) or text not in (f"{limit:.{digits}%}", f"{1:.{digits}%}"):
            return text
    return text


# Cumulative deaths above cumulative cases on most rows of a file: no publisher's series (a state's first
# days at most), but its two columns swapped or mislabelled in the header. Loaded, each count would stand for
# the other in every table, summary and report; the file is quarantined instead (`counts_valid`).
SWAPPED = """
WITH m AS (SELECT s.line, s.{cases}::bigint AS c, s.{deaths}::bigint AS d FROM {table} AS s)
SELECT count(*) FILTER (WHERE d > c), count(*) FILTER (WHERE d IS NOT NULL AND c IS NOT NULL),
       (SELECT ARRAY[line, c, d] FROM m WHERE d > c ORDER BY line LIMIT 1)
FROM m
"""


def measures_swapped(conn, dataset: Dataset, staged: StagedFile, file_id: int) -> GateResult | None:
    """A failed `counts_valid` where the dataset's deaths exceed its cases on more than half the rows that
    report both (the measures it declares); None otherwise."""
    if not {"cases", "deaths"} <= dataset.measures.keys():
        return None
    cases, deaths = dataset.measures["cases"], dataset.measures["deaths"]
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL(SWAPPED).format(cases=sql.Identifier(cases), deaths=sql.Identifier(deaths),
                                            table=staging_table(file_id)))
        above, both, first = cur.fetchone()
    if above * 2 <= both:
        return None
    line, c, d = first
    return GateResult("counts_valid", False, (
        f"line {line}: {deaths} {d:,} is more than {cases} {c:,} (expected {deaths} at most {cases}), and so on "
        f"{above:,} of the {both:,} rows that report both: the two columns look swapped or mislabelled in the "
        f"header ({', '.join(staged.header)})"))


def passed(staged: StagedFile) -> list[GateResult]:
    """The gates' results for a file that passed them all."""
    return [
        GateResult("csv_readable", True),
        GateResult("required_columns", True),
        GateResult("not_empty", True, metadata={"rows": staged.rows}),
        *(GateResult(gate, True, metadata={"rejected_rows": 0}) for gate in ROW_GATES),
    ]


def copy_checked(conn, reader: CheckedText, dataset: Dataset, file_id: int, key: str
                 ) -> tuple[StagedFile, list[GateResult]] | None:
    """A file read once: COPYed straight into typed columns (`staging.copy_typed`) and checked by one
    scan (`_typed_checks`); the staged file and the gates' results, committed.

    The usual good file passes that scan whole. Otherwise only the rows it could not admit (a row
    breaking a row gate, text with whitespace around it, a count not only digits, a date not written plainly,
    and the rows of a key that repeats) are gated as text, as `evaluate` gates a file: each problem named (its
    line, column, what was expected and what was found), the bad rows set aside, the others' values as the
    text path reads them (`_keep_checked`). The rows admitted are good whatever the others are.

    None, with nothing left behind, when the file cannot be COPYed so: then it is read again as text and
    gated by `evaluate`.
    """
    staged = copy_typed(conn, reader, file_id, dataset, key)
    if staged is None or staged.rows == 0:  # the text path says why
        conn.rollback()
        return None
    results = passed(staged)[:3]  # readable, its columns, not empty
    with conn:
        with conn.cursor() as cur:
            if dataset.region_names:
                create_region_map(cur, dataset, file_id)
            bad, repeated = _typed_checks(cur, dataset, file_id, copied=True,
                                          empty=empty_row(copied_columns(staged)))
            if bad:
                bad = _remove_empty(cur, staged, file_id)
                if staged.rows == 0:  # the text path says so
                    conn.rollback()
                    return None
            if not (bad or repeated):
                return staged, passed(staged)
            text = _stage_unadmitted(cur, dataset, staged, file_id, repeated)
        return staged, _row_gates(conn, dataset, text, file_id, key, results,
                                  keep=lambda: _keep_checked(conn, dataset, text, file_id))


def _typed_checks(cur, dataset: Dataset, file_id: int, copied: bool, empty: sql.Composable = sql.SQL("false")
                  ) -> tuple[bool, bool]:
    """One scan of the typed rows: whether any row breaks `_row_checks` or names a region that is not known,
    and whether a key repeats as written (a hash of each). The rows not admitted are kept, in the
    transaction's temporary table `unadmitted(line, row_at, empty)` (their line, where they are in the typed
    table, whether they are `empty`), for `_stage_unadmitted`: read by where they are, not by a second scan.
    copied: the rows of `copy_typed`, else of `create_typed`."""
    bad = _row_checks(dataset, copied, _last_day(cur, file_id)[0])
    if dataset.region_names:
        (column,) = dataset.region_names
        bad.append(sql.SQL("{c} IN (SELECT {c} FROM {map} WHERE state_fips IS NULL)").format(
            c=sql.Identifier(column), map=region_map(file_id)))
    # date::text is YYYY-MM-DD; no JIT: compiling the checks' expressions costs more than it saves (1.88M
    # rows: 1.4 s against 1.0 s)
    cur.execute("SET LOCAL DateStyle = 'ISO'; SET LOCAL jit = off")
    cur.execute(sql.SQL(
        "DROP TABLE IF EXISTS pg_temp.unadmitted; "
        "CREATE TEMP TABLE unadmitted ON COMMIT DROP AS SELECT line, ctid AS row_at, {empty} AS empty "
        "FROM {t} WHERE {bad}; "
        "SELECT EXISTS (SELECT FROM unadmitted), (SELECT count(DISTINCT {key}) < count({key}) FROM {t})"
    ).format(bad=_any_of(bad), key=_written_key(cur, dataset, file_id), t=staging_table(file_id), empty=empty))
    return cur.fetchone()


def _remove_empty(cur, staged: StagedFile, file_id: int) -> bool:
    """The lines `_typed_checks` did not admit that hold no value (`staging.empty_row`), out of the typed
    rows and of `unadmitted`; whether a line not admitted remains."""
    remove_empty_rows(cur, staged, staging_table(file_id),
                      sql.SQL("ctid = ANY(ARRAY(SELECT row_at FROM unadmitted WHERE empty))"))
    cur.execute("DELETE FROM unadmitted WHERE empty; SELECT EXISTS (SELECT FROM unadmitted)")
    return cur.fetchone()[0]


def _written_key(cur, dataset: Dataset, file_id: int) -> sql.Composable:
    """A hash of a typed row's key as written (two keys hashing alike only cost a closer look: the detailed
    gates, which find nothing wrong); its region as covid.regions knows it (`_region_key`) where the file
    writes a region two ways ('TEXAS', 'Texas'): reading every other file's as written costs less."""
    spelled_apart = False
    if dataset.region_names:
        cur.execute(sql.SQL("SELECT count(*) > count(DISTINCT state_fips) FROM {} WHERE state_fips IS NOT NULL")
                    .format(region_map(file_id)))
        spelled_apart = cur.fetchone()[0]
    return key_hash([_region_key(dataset, c, sql.Identifier(c)) if spelled_apart else sql.Identifier(c)
                     for c in dataset.region], seed=sql.SQL("date - DATE '2000-01-01'"))


def _region_key(dataset: Dataset, column: str, value: sql.Composable) -> sql.Composable:
    """A region column's value as a key compares it: a region as covid.regions knows it ('TEXAS' is 'Texas',
    stored so: `regions.canonical_value`), any other column as written."""
    return regions.key(dataset, value) if column in dataset.region_names else value


def _stage_unadmitted(cur, dataset: Dataset, staged: StagedFile, file_id: int, repeated: bool) -> StagedFile:
    """The rows of `copy_typed`'s table that `_typed_checks` did not admit, as the text path's staging
    table holds a file (`text_table(file_id)`: `line`, then c1, c2, … in the header's order), and every row
    of a key the text path would see repeated: those whose key as written repeats, and the admitted rows of
    an unadmitted row's key as the text path reads it (trimmed; its date's day, where it names one: make_date
    reads '   2010-10-10' as the year 2). Each with where it is in the typed table (`row_at`), also kept in
    the transaction's temporary table `gated(line, row_at)` for `_keep_checked` (the gates delete the
    lines they set aside from the text table)."""
    text = StagedFile(text_table(file_id), staged.header, staged.positions, [], staged.rows, typed=True)
    typed = staging_table(file_id)
    named = {c: f"c{i}" for i, c in enumerate(copied_columns(staged), start=1)}
    fields = sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.Identifier(c), sql.Identifier(n))
                                for c, n in named.items())
    trimmed = sql.SQL("btrim({})").format(sql.Identifier(named["_date"]))
    read_date = sql.SQL("CASE WHEN {} THEN {} END").format(dates.date_ok(dataset.date_format, trimmed),
                                                           dates.date_value(dataset.date_format, trimmed))
    read = sql.SQL(", ").join([
        *(_region_key(dataset, c, sql.SQL("btrim({})").format(sql.Identifier(named[c]))) for c in dataset.region),
        read_date,
    ])
    parts = dict(text=text.table, typed=typed, fields=fields, read=read, read_date=read_date,
                 k=_written_key(cur, dataset, file_id),
                 key=sql.SQL(", ").join([*(_region_key(dataset, c, sql.Identifier(c)) for c in dataset.region),
                                         sql.Identifier("date")]))
    cur.execute("SET LOCAL work_mem = '200MB'")  # and no JIT, as `_typed_checks` set it
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(text.table))
    cur.execute(sql.SQL(
        "CREATE UNLOGGED TABLE {text} AS SELECT line, {fields}, ctid AS row_at FROM {typed} "
        "WHERE ctid = ANY(ARRAY(SELECT row_at FROM unadmitted))").format(**parts))
    if repeated:  # grouped by a sort: a hash of 1.88M keys takes three times as long
        cur.execute("SET LOCAL enable_hashagg = off")
        cur.execute(sql.SQL(
            "INSERT INTO {text} SELECT line, {fields}, ctid FROM {typed} "
            "WHERE {k} IN (SELECT {k} FROM {typed} GROUP BY 1 HAVING count(*) > 1) "
            "AND line NOT IN (SELECT line FROM {text})").format(**parts))
        cur.execute("SET LOCAL enable_hashagg TO DEFAULT")
    cur.execute(sql.SQL(
        "ANALYZE {text}; "
        # the dates first, by a hash of the distinct ones (an array would be read through for each row): few
        # rows are left for the key's, which takes lower() of a region (1.88M county rows with 2 set aside:
        # 0.84 s → 0.42 s)
        "INSERT INTO {text} SELECT line, {fields}, ctid FROM {typed} "
        "WHERE date IN (SELECT DISTINCT {read_date} FROM {text}) "
        "AND ({key}) IN (SELECT {read} FROM {text}) AND line NOT IN (SELECT line FROM {text}); "
        "DROP TABLE IF EXISTS pg_temp.gated; "
        "CREATE TEMP TABLE gated ON COMMIT DROP AS SELECT line, row_at FROM {text}; "
        "SELECT count(*) FROM gated").format(**parts))
    staged.gated_as_text = cur.fetchone()[0]
    return text


def _keep_checked(conn, dataset: Dataset, text: StagedFile, file_id: int) -> None:
    """`copy_typed`'s rows less the lines the gates set aside (`_stage_unadmitted`'s bad rows) and the later
    copies of a row repeated exactly; the values of its other unadmitted rows as the text path reads them
    (trimmed, counts as `create_typed` casts them), and the region map of the values now there."""
    values = [*dataset.region, *dataset.attributes, "_date", *dataset.counts, *dataset.values]
    read = {c: sql.SQL("nullif({c}, '')").format(c=sql.Identifier(c)) for c in dataset.attributes}
    read["_date"] = sql.Identifier("date")  # trimmed: the day `copied_date` reads from it is the text path's
    read.update({c: sql.SQL("({})::text").format(typed_count(dataset, c)) for c in (*dataset.counts, *dataset.values)})
    update = sql.SQL("UPDATE {t} AS t SET {set} FROM (SELECT g.row_at, {read} FROM ({rows}) AS s "
                     "JOIN gated AS g USING (line)) AS k WHERE t.ctid = k.row_at").format(
        t=staging_table(file_id),
        set=sql.SQL(", ").join(sql.SQL("{c} = k.{c}").format(c=sql.Identifier(c)) for c in values),
        read=sql.SQL(", ").join(sql.SQL("{} AS {}").format(read.get(c, sql.Identifier(c)), sql.Identifier(c))
                                for c in values),
        rows=source_rows(dataset, text),
    )
    if dataset.region_names:  # the region values the update wrote, into the region map
        (column,) = dataset.region_names
        update = sql.SQL("WITH updated AS ({} RETURNING t.{}) {}").format(
            update, sql.Identifier(column), region_map_values(dataset, file_id, "updated"))
    with conn.cursor() as cur:
        _delete_kept_out(cur, file_id, gated=True)
        cur.execute(update)


def type_rows(conn, dataset: Dataset, staged: StagedFile, file_id: int) -> bool | None:
    """The typed rows the merge reads (`staging.create_typed`), from the text path's staging table, and one
    scan of the row gates over them (`_typed_checks`): True when every row passes. False when some row breaks
    a gate: the typed rows stay, for `_keep_good_rows`. None when a value does not cast: nothing is typed. Either way the
    detailed (slower) gates then find the bad rows.
    """
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT typed")
        try:
            create_typed(cur, dataset, staged, file_id)
        except psycopg2.DataError:  # a value that does not cast
            cur.execute("ROLLBACK TO SAVEPOINT typed")
            return None
        if dataset.region_names:
            create_region_map(cur, dataset, file_id)
        return not any(_typed_checks(cur, dataset, file_id, copied=False))


def _keep_good_rows(conn, dataset: Dataset, staged: StagedFile, file_id: int, typed: bool) -> None:
    """The typed rows of the lines the gates kept (`_find_bad_rows`): those typed already less the rejected
    lines; or, where a value did not cast, the kept lines' text cast now that every value does. Of a row
    repeated exactly only its first line is kept."""
    with conn.cursor() as cur:
        if not typed:
            create_typed(cur, dataset, staged, file_id)
            if dataset.region_names:
                create_region_map(cur, dataset, file_id)
        _delete_kept_out(cur, file_id)


def _delete_kept_out(cur, file_id: int, gated: bool = False) -> None:
    """The rejected lines (`rejects`) and the later copies of a row repeated exactly, out of the typed rows;
    gated: found where they are by `_stage_unadmitted`'s `gated` (no scan of the typed rows)."""
    lines = sql.SQL("SELECT line FROM rejects UNION ALL SELECT unnest(lines[2:]) FROM repeats WHERE NOT conflict")
    where = sql.SQL("ctid = ANY(ARRAY(SELECT row_at FROM gated WHERE line IN ({})))" if gated else "line IN ({})")
    cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(staging_table(file_id), where.format(lines)))


def _last_day(cur, file_id: int) -> tuple[sql.Composable, str]:
    """The latest date a file's rows may name, and the gate's words for it: today, or the day after its issue
    time when that is earlier (a past vintage reports no later day: its `issued-at` mistyped, its versions
    would be seen before their days)."""
    cur.execute("SELECT (issued_at AT TIME ZONE 'UTC')::date + 1 FROM covid.ingested_files "
                "WHERE file_id = %s AND (issued_at AT TIME ZONE 'UTC')::date + 1 < current_date", (file_id,))
    row = cur.fetchone()
    if row is None:
        return sql.SQL("current_date"), "a date that is not in the future"
    return sql.Literal(row[0]), f"a date up to {row[0]}, the day after the file's issue time"


def _row_checks(dataset: Dataset, copied: bool, last: sql.Composable) -> list[sql.Composable]:
    """Conditions on a typed row, each true where the row breaks a row gate: keys present, dates not in the
    future, counts non-negative and present where not nullable (regions known and keys unique are checked
    apart: the region map, a hash of each key).

    copied: the rows COPY read as text (`staging.copy_typed`), so also true where the text path would read a
    value otherwise: text with whitespace around it (which the text path trims), a count that is not only
    digits ('12.0', '+5': the text path reads or rejects it), a YYYY-MM-DD date not written so (make_date
    also read its numbers from ' 1' or '+1')."""
    text = (*dataset.region, *dataset.attributes)
    bad = [sql.SQL("coalesce({}, '') = ''").format(sql.Identifier(c)) for c in dataset.region]
    bad += [sql.SQL("length({}) > {}").format(sql.Identifier(c), sql.Literal(MAX_FIELD_CHARS)) for c in text]
    if copied:
        bad += [sql.SQL("{c} LIKE ' %' OR {c} LIKE '% '").format(c=sql.Identifier(c)) for c in text]
    bad.append(sql.SQL("date IS NULL OR date > {}").format(last))
    if not dataset.date_format:  # the date's input reads '0999-01-01', the gates' YYYY-MM-DD a year from 1000
        bad.append(sql.SQL("date < DATE '1000-01-01'"))
    if copied:  # a field the text path finds too long (a midnight timestamp's zeros are not bounded)
        bad.append(sql.SQL("length(_date) > {}").format(sql.Literal(MAX_FIELD_CHARS)))
    if copied and not dataset.date_format:
        # as the text path reads them (dates.ISO_VALUE): YYYY-MM-DD, or at midnight (Socrata's timestamps)
        bad.append(sql.SQL(
            "CASE WHEN length(_date) = 10 THEN _date <> date::text "
            "ELSE left(_date, 10) <> date::text OR substr(_date, 11) !~ {} END"
        ).format(sql.Literal(r"^T00:00:00(\.0+)?$")))
    for column in (*dataset.counts, *dataset.values):
        c = sql.Identifier(column)
        checks = [] if column in dataset.nullable else [sql.SQL("{} IS NULL").format(c)]
        if copied:  # text (`staging.copy_typed`)
            checks.append(sql.SQL("NOT ({})").format(numbers.plain(dataset, column, c)))
        else:
            checks += [] if column in dataset.signed else [sql.SQL("{} < 0").format(c)]
            # create_typed's mark of a bad decimal
            checks += [sql.SQL("{} = 'NaN'").format(c)] if column in dataset.decimals else []
        if checks:
            bad.append(sql.SQL(" OR ").join(checks))
    return bad


def _as_stored(dataset: Dataset, column: str) -> sql.Composable:
    """A value column's text as it is stored: '5' and '05' are one FIPS code of width 2."""
    c = sql.Identifier(column)
    return zero_padded(dataset, column, c) if column in dataset.zero_pad else c


def _differs(dataset: Dataset, column: str) -> sql.Composable:
    """Among a repeated key's rows, where `column` differs: "cases: '179510' on line 12, '179517' on line 57"
    (its first 5 lines, as the message names them: a key on 40 lines would repeat 40 values on each)."""
    c = _as_stored(dataset, column)
    return sql.SQL(
        "CASE WHEN count(DISTINCT coalesce(nullif({c}, ''), chr(1))) > 1 THEN {name} || ': ' || array_to_string(("
        "array_agg(coalesce(quote_literal(left(nullif({c}, ''), 60)), 'empty') || ' on line ' || line ORDER BY line)"
        ")[1:5], ', ') || CASE WHEN count(*) > 5 THEN ', …' ELSE '' END END"
    ).format(c=c, name=sql.Literal(column))


def _any_of(checks: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(" OR ").join(sql.SQL("({})").format(check) for check in checks)


def key_hash(texts: list[sql.Composable], seed: sql.Composable = sql.Literal(0)) -> sql.Composable:
    """A 64-bit hash of a key's columns, as text: each column's hash seeds the next one's. Two keys hashing
    alike only cost a closer look."""
    key = seed
    for text in reversed(texts):
        key = sql.SQL("hashtextextended({}, {})").format(text, key)
    return key


def reason_of(results: list[GateResult]) -> str:
    """Why a file is quarantined, from the gates that stopped it (row gates share one verdict)."""
    failed = [gate for gate in results if gate.blocking and not gate.passed]
    details = [gate.detail for gate in failed if gate.detail]
    if len(details) > 1:
        return failed[0].reason.removesuffix(failed[0].detail) + "; ".join(details)
    return "; ".join(gate.reason for gate in failed)


def _problems(dataset: Dataset, staged: StagedFile, last: tuple[sql.Composable, str]) -> list[Problem]:
    date = sql.Identifier("date")
    date_ok = dates.date_ok(dataset.date_format, date)
    problems = [
        Problem("csv_readable", column, sql.SQL("length({}) > {}").format(sql.Identifier(column), sql.Literal(MAX_FIELD_CHARS)),
                f"a field of at most {MAX_FIELD_CHARS:,} characters", file_level=True)
        for column in dataset.stored_columns
    ]
    problems += [
        Problem("keys_present", column, sql.SQL("coalesce({}, '') = ''").format(sql.Identifier(column)),
                "a value (key columns cannot be empty)")
        for column in dataset.key
    ]
    if dataset.region_names:
        (column,) = dataset.region_names
        problems.append(Problem("regions_known", column, regions.unknown(dataset, "s"), regions.expected(dataset),
                                note=regions.nearest_note(dataset, "s")))
    good_date = sql.SQL("{} IN (SELECT _text FROM good_dates)").format(date)  # `_find_good_dates`
    problems.append(Problem("dates_valid", "date", sql.SQL("NOT ({})").format(date_ok),
                            dates.expected(dataset.date_format), surely_good=good_date,
                            note=dates.no_such_day(dataset.date_format, date)))
    problems.append(
        Problem("dates_valid", "date", sql.SQL("CASE WHEN {} THEN {} > {} ELSE false END")
                .format(date_ok, dates.date_value(dataset.date_format, date), last[0]), last[1],
                surely_good=good_date)
    )
    for column in (*dataset.counts, *dataset.values):
        value = sql.Identifier(column)
        condition = sql.SQL("NOT coalesce({} ~ {}, false)").format(value, sql.Literal(numbers.pattern(dataset, column)))
        if column in dataset.nullable:
            condition = sql.SQL("{} <> '' AND {}").format(value, condition)
        # only digits: what the pattern admits (not null: a null or empty count may be bad)
        good = None if column in dataset.decimals else numbers.plain(dataset, column, value)
        # digits that bigint cannot hold: say so, the kind alone would be a puzzle
        too_long = sql.SQL(r"CASE WHEN {v} ~ '^-?[0-9]{{19,}}(\.0*)?$' THEN ': more than 18 digits' ELSE '' END"
                           ).format(v=value)
        problems.append(Problem("counts_valid", column, condition, numbers.expected(dataset, column),
                                note=sql.SQL("''") if column in dataset.decimals else too_long, surely_good=good))
    return problems


def _find_bad_rows(conn, dataset: Dataset, staged: StagedFile, file_id: int
                   ) -> tuple[list[Found], dict[str, int]]:
    """Fill the temp table `rejects(line, reasons)` with every line that has a problem (one scan of the file,
    and one of the rows whose key repeats), and sum them up per kind of problem; and the lines per gate. The
    temp table `repeats(key_text, lines, conflict)` keeps each repeated key: exact repeats of one row are not problems,
    but only their first line is kept (`_keep_good_rows`)."""
    with conn.cursor() as cur:
        last = _last_day(cur, file_id)
    problems = _problems(dataset, staged, last)
    rows = source_rows(dataset, staged)
    messages = [
        sql.SQL("CASE WHEN {bad} THEN {text} || CASE WHEN coalesce({v}, '') = '' THEN 'an empty field' "
                "ELSE quote_literal(left({v}, 60)) END || {note} END").format(
            bad=p.bad, v=sql.Identifier(p.column), note=p.note,
            text=sql.Literal(f"column '{p.column}': expected {p.expected}, got "),
        )
        for p in problems
    ]
    # as they load: empty, quoted or not (or spaces, trimmed), is null
    values = sql.SQL(", ").join(sql.SQL("nullif({}, '')").format(_as_stored(dataset, c))
                                for c in (*dataset.attributes, *dataset.counts, *dataset.values))
    key_text = sql.SQL(" || ', ' || ").join(
        sql.SQL("{} || '=' || quote_nullable({})").format(sql.Literal(c), sql.Identifier(c)) for c in dataset.key
    )
    with conn.cursor() as cur:
        # Distinct values and repeated keys by hash aggregates, in memory (the default 4MB would sort), with no
        # JIT (compiling these expressions costs more than it saves).
        cur.execute("SET LOCAL work_mem = '200MB'; SET LOCAL jit = off; SET LOCAL enable_sort = off")
        if dataset.region_names:
            regions.find_unknown(cur, dataset, rows)
        _find_good_dates(cur, dataset, rows, last[0])
        # Repeated keys: each key's hash (fixed-size groups) first, then only the rows of the hashes seen twice
        # grouped by key (a sort of every row by its key would cost far more).
        # A key's date is the day it names (two spellings of one day are one key: '3/1/2021', '03/01/2021').
        # (a text naming no day is never one: '2021-03-01' in a file of %m/%d/%Y is no key of 03/01/2021's)
        day = sql.SQL("coalesce(g._day::text, 'not a day: ' || s.date)")
        key = [day if c == "date" else _region_key(dataset, c, sql.Identifier("s", c)) for c in dataset.key]
        hash = key_hash([sql.SQL("coalesce({}, '')").format(c) for c in key])
        rows_with_day = sql.SQL("({}) AS s LEFT JOIN good_dates AS g ON g._text = s.date").format(rows)
        cur.execute(sql.SQL("CREATE TEMP TABLE repeated ON COMMIT DROP AS "
                            "SELECT {hash} AS hash FROM {rows} GROUP BY 1 HAVING count(*) > 1; "
                            "ANALYZE repeated").format(hash=hash, rows=rows_with_day))
        cur.execute("SET LOCAL enable_sort = on")
        cur.execute(
            sql.SQL(
                """
                CREATE TEMP TABLE repeats ON COMMIT DROP AS
                SELECT min({key_text}) AS key_text, array_agg(line ORDER BY line) AS lines,
                       count(DISTINCT ({values}, ''::text)) > 1 AS conflict,  -- a row even for one value column
                       concat_ws('; ', {differs}) AS differs
                FROM {rows_with_day}
                WHERE {hash} IN (SELECT hash FROM repeated)
                GROUP BY {key} HAVING count(*) > 1;

                CREATE TEMP TABLE rejects ON COMMIT DROP AS
                SELECT line, ARRAY[{messages}] AS reasons  -- a wide file's line has one row per date cell
                FROM ({rows} OFFSET 0) AS s  -- kept a subquery: each field trimmed once, not at each use
                WHERE {any_bad} GROUP BY line;
                ALTER TABLE rejects ADD PRIMARY KEY (line);

                -- two rows with one key and different values: neither can be trusted; a line once, with its
                -- first such key (a wide file's line holds a key per date cell: a school's id on two lines
                -- repeats each of its dates)
                INSERT INTO rejects (line, reasons)
                SELECT line, array_fill(NULL::text, ARRAY[{n}]) || (array_agg(message ORDER BY key_text))[1]
                FROM (
                    SELECT unnest(lines) AS line, key_text, 'key (' || key_text || ') appears on lines '
                        || CASE WHEN cardinality(lines) > 5
                                THEN array_to_string(lines[1:5], ', ') || ' and ' || cardinality(lines) - 5 || ' more'
                                ELSE array_to_string(lines[1:cardinality(lines) - 1], ', ') || ' and '
                                     || lines[cardinality(lines)] END
                        || ' with different values (' || differs || ')' AS message
                    FROM repeats WHERE conflict
                ) AS conflicts
                GROUP BY line
                ON CONFLICT (line) DO UPDATE SET reasons = rejects.reasons[1:{n}] || EXCLUDED.reasons[{n1}];
                """
            ).format(
                # DISTINCT: a wide line's empty key is one problem, not one per date cell
                messages=sql.SQL(", ").join(sql.SQL("string_agg(DISTINCT {}, '; ')").format(m) for m in messages),
                rows=rows,
                any_bad=sql.SQL(" OR ").join(
                    # evaluated left to right: the cheap condition first, for each row
                    sql.SQL("({})").format(p.bad) if p.surely_good is None
                    else sql.SQL("(NOT coalesce({}, false) AND ({}))").format(p.surely_good, p.bad)
                    for p in problems
                ),
                n=sql.Literal(len(problems)),
                n1=sql.Literal(len(problems) + 1),
                key=sql.SQL(", ").join(key),
                rows_with_day=rows_with_day,
                values=values,
                differs=sql.SQL(", ").join(
                    _differs(dataset, c) for c in (*dataset.attributes, *dataset.counts, *dataset.values)),
                key_text=key_text,
                hash=hash,
            )
        )
        # per kind of problem: rows, the first line and its message, distinct messages (keys, for conflicts),
        # and the first line whose message differs (another value: '1,234' after an empty field)
        cur.execute(
            """
            SELECT i, count(*), min(line), min(first), count(DISTINCT message),
                   min(line) FILTER (WHERE message <> first),
                   (array_agg(message ORDER BY line) FILTER (WHERE message <> first))[1]
            FROM (
                SELECT i, line, reasons[i] AS message,
                       first_value(reasons[i]) OVER (PARTITION BY i ORDER BY line) AS first
                FROM rejects, generate_subscripts(reasons, 1) AS i
                WHERE reasons[i] IS NOT NULL
            ) AS problems
            GROUP BY i ORDER BY i
            """
        )
        found = cur.fetchall()
        gates = [p.gate for p in problems] + ["keys_unique"]
        cur.execute("SELECT (%s::text[])[i], count(DISTINCT line) FROM rejects, "
                    "generate_subscripts(reasons, 1) AS i WHERE reasons[i] IS NOT NULL GROUP BY 1", (gates,))
        lines_per_gate = dict(cur.fetchall())
    return [Found(gates[i - 1], line, message, count, distinct, other_line, other)
            for i, count, line, message, distinct, other_line, other in found], lines_per_gate


def _find_good_dates(cur, dataset: Dataset, rows: sql.Composable, last: sql.Composable) -> None:
    """The temp table `good_dates(_text, _day)` (dropped at commit): each distinct date text of the file that
    is a date written as declared and not in the future, and the day it names. A file has few distinct
    dates: each is checked once, not each row's."""
    text = sql.Identifier("_text")
    date_ok = dates.date_ok(dataset.date_format, text)
    cur.execute(sql.SQL(
        # MATERIALIZED: the condition is not pushed down to every row
        "CREATE TEMP TABLE good_dates ON COMMIT DROP AS WITH d AS MATERIALIZED (SELECT DISTINCT date AS _text "
        "FROM ({rows}) AS s) SELECT _text, {day} AS _day FROM d "
        "WHERE CASE WHEN {ok} THEN NOT {day} > {last} ELSE false END; "
        "ANALYZE good_dates"
    ).format(rows=rows, ok=date_ok, day=dates.date_value(dataset.date_format, text), last=last))


def _count_rejects(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM rejects")
        return cur.fetchone()[0]


def _set_aside(conn, staged: StagedFile, file_id: int, key: str) -> None:
    """Move the rejected lines out of the staging table into `covid.rejected_rows`, the line rebuilt as CSV."""
    fields = sql.SQL(", ").join(
        sql.SQL("""CASE WHEN {c} ~ '[",\r\n]' THEN '"' || replace({c}, '"', '""') || '"' ELSE coalesce({c}, '') END""")
        .format(c=sql.Identifier("s", f"c{i}"))
        for i in range(1, len(staged.header) + 1)
    )
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                """
                DELETE FROM covid.rejected_rows WHERE file_id = %(file_id)s;  -- a retried run starts over
                INSERT INTO covid.rejected_rows (file_id, key, line, reason, raw_line)
                SELECT %(file_id)s, %(key)s, r.line, array_to_string(r.reasons, '; '), concat_ws(',', {fields})
                FROM rejects AS r JOIN {table} AS s USING (line);
                DELETE FROM {table} WHERE line IN (SELECT line FROM rejects);
                """
            ).format(fields=fields, table=staged.table),
            {"file_id": file_id, "key": key},
        )
