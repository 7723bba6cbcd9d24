"""The blocking gates a staged file must pass before any of its rows reach a clean table.

Each gate is evaluated by set-based SQL over the staging table and, when it fails, names the column, the
line and what was expected, so the person who dropped the file can fix it.
"""

from dataclasses import dataclass, field

import psycopg2.extensions
from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.engine import dates, numbers, regions
from covid_platform.engine.staging import StagedFile, create_typed, source_rows, staging_table

GATES = {
    "csv_readable": "The file is UTF-8 CSV text whose rows have as many fields as its header.",
    "required_columns": "The header names every column the dataset needs.",
    "not_empty": "The file holds at least one data row.",
    "keys_present": "Key columns (region and date) are never empty.",
    "regions_known": "Regions name a region of covid.regions, written as the dataset declares (full name, postal "
                     "code or FIPS), where it declares region_names.",
    "dates_valid": "Dates are real calendar dates written as the dataset declares (YYYY-MM-DD unless it declares "
                   "a date_format) and not in the future.",
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

    @property
    def detail(self) -> str:
        if self.gate == "keys_unique":  # the message already names every line of its key
            return self.message + (f" ({self.distinct - 1} more key(s) like it)" if self.distinct > 1 else "")
        return f"line {self.line}, {self.message}" + (f" ({self.rows - 1} more like it)" if self.rows > 1 else "")


def evaluate(
    conn: psycopg2.extensions.connection, dataset: Dataset, staged: StagedFile, file_id: int, key: str
) -> list[GateResult]:
    """Every gate, in order; once a file-level gate fails, those that need its guarantee are not evaluated.

    Rows with bad values are moved from the staging table to `covid.rejected_rows` with their reasons,
    unless they are more than the dataset's `max_bad_row_share` of the file: then the row gates that saw
    them fail and the file is quarantined.
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
        if type_rows(conn, dataset, staged, file_id, strict=True):  # the usual case: one pass, all good
            return results + [GateResult(gate, True, metadata={"rejected_rows": 0}) for gate in ROW_GATES]
        found = _find_bad_rows(conn, dataset, staged)
        oversized = [f for f in found if f.gate == "csv_readable"]
        if oversized:
            results[0] = GateResult("csv_readable", False, oversized[0].detail)
            return results
        bad_lines = _count_rejects(conn)
        share = bad_lines / staged.rows
        too_many = share > dataset.max_bad_row_share
        if bad_lines and not too_many:
            _set_aside(conn, staged, file_id, key)
        if not too_many:
            type_rows(conn, dataset, staged, file_id, strict=False)
    verdict = (
        f"{bad_lines} of {staged.rows} rows ({share:.1%}) have bad values, more than the "
        f"{dataset.max_bad_row_share:.0%} a file may have"
        if too_many
        else f"{bad_lines} row(s) set aside in covid.rejected_rows"
    )
    for gate in ROW_GATES:
        seen = [f for f in found if f.gate == gate]
        if not seen:
            results.append(GateResult(gate, True, metadata={"rejected_rows": 0}))
            continue
        detail = "; ".join(f.detail for f in seen)
        results.append(
            GateResult(gate, False, f"{verdict}: {detail}", {"rejected_rows": sum(f.rows for f in seen)},
                       blocking=too_many, detail=detail)
        )
    return results


def type_rows(conn, dataset: Dataset, staged: StagedFile, file_id: int, strict: bool) -> bool:
    """The typed rows the merge reads (`staging.create_typed`).

    strict: the fast path, tried first: plain casts, then one aggregate over the typed rows; any value that
    does not cast or breaks a gate drops the table and returns False, and the detailed (slower) gates find
    the bad rows. Not strict: after those gates have set the bad rows aside, when every cast is safe.
    """
    with conn.cursor() as cur:
        if not strict:
            create_typed(cur, dataset, staged, file_id, distinct=True)
            return True
        cur.execute("SAVEPOINT typed")
        try:
            create_typed(cur, dataset, staged, file_id, distinct=False)
        except psycopg2.DataError:  # a value that does not cast
            cur.execute("ROLLBACK TO SAVEPOINT typed")
            return False
        bad = [sql.SQL("coalesce({}, '') = ''").format(sql.Identifier(c)) for c in dataset.region]
        bad += [sql.SQL("length({}) > {}").format(sql.Identifier(c), sql.Literal(MAX_FIELD_CHARS))
                for c in (*dataset.region, *dataset.attributes)]
        bad.append(sql.SQL("date IS NULL OR date > current_date"))
        for c in (*dataset.counts, *dataset.values):
            checks = [] if c in dataset.signed else ["{c} < 0"]
            checks += [] if c in dataset.nullable else ["{c} IS NULL"]
            checks += ["{c} = 'NaN'"] if c in dataset.decimals else []  # create_typed's mark of a bad decimal
            if checks:
                bad.append(sql.SQL(" OR ".join(checks)).format(c=sql.Identifier(c)))
        bad += [sql.SQL("{} IS NULL").format(sql.Identifier(c)) for c in dataset.region_columns[:1]]
        key = sql.SQL(", ").join(sql.Identifier(c) for c in dataset.key)
        # Repeated keys by a hash aggregate: the planner, blind to a fresh table's size, would sort it.
        cur.execute("SET LOCAL enable_sort = off")
        cur.execute(
            sql.SQL(
                "SELECT EXISTS (SELECT FROM {t} WHERE {bad}) "
                "OR EXISTS (SELECT FROM {t} GROUP BY {key} HAVING count(*) > 1)"
            ).format(t=staging_table(file_id), bad=sql.SQL(" OR ").join(sql.SQL("({})").format(b) for b in bad),
                     key=key)
        )
        (any_bad,) = cur.fetchone()
        cur.execute("SET LOCAL enable_sort = on")
        if any_bad:
            cur.execute("ROLLBACK TO SAVEPOINT typed")
            return False
    return True


def reason_of(results: list[GateResult]) -> str:
    """Why a file is quarantined, from the gates that stopped it (row gates share one verdict)."""
    failed = [gate for gate in results if gate.blocking and not gate.passed]
    details = [gate.detail for gate in failed if gate.detail]
    if len(details) > 1:
        return failed[0].reason.removesuffix(failed[0].detail) + "; ".join(details)
    return "; ".join(gate.reason for gate in failed)


def _problems(dataset: Dataset, staged: StagedFile) -> list[Problem]:
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
    problems.append(Problem("dates_valid", "date", sql.SQL("NOT ({})").format(date_ok),
                            dates.expected(dataset.date_format)))
    problems.append(
        Problem("dates_valid", "date", sql.SQL("CASE WHEN {} THEN {}::date > current_date ELSE false END")
                .format(date_ok, date), "a date that is not in the future")
    )
    for column in (*dataset.counts, *dataset.values):
        value = sql.Identifier(column)
        condition = sql.SQL("NOT coalesce({} ~ {}, false)").format(value, sql.Literal(numbers.pattern(dataset, column)))
        if column in dataset.nullable:
            condition = sql.SQL("{} <> '' AND {}").format(value, condition)
        problems.append(Problem("counts_valid", column, condition, numbers.expected(dataset, column)))
    return problems


def _find_bad_rows(conn, dataset: Dataset, staged: StagedFile) -> list[Found]:
    """Fill the temp table `rejects(line, reasons)` with every line that has a problem (one scan of the file,
    one GROUP BY for conflicting keys), and sum them up per kind of problem."""
    problems = _problems(dataset, staged)
    rows = source_rows(dataset, staged)
    messages = [
        sql.SQL("CASE WHEN {bad} THEN {text} || CASE WHEN coalesce({v}, '') = '' THEN 'an empty field' "
                "ELSE quote_literal(left({v}, 60)) END || {note} END").format(
            bad=p.bad, v=sql.Identifier(p.column), note=p.note,
            text=sql.Literal(f"column '{p.column}': expected {p.expected}, got "),
        )
        for p in problems
    ]
    key = sql.SQL(", ").join(sql.Identifier(c) for c in dataset.key)
    values = sql.SQL(", ").join(sql.Identifier(c) for c in (*dataset.attributes, *dataset.counts, *dataset.values))
    key_text = sql.SQL(" || ', ' || ").join(
        sql.SQL("{} || '=' || quote_nullable({})").format(sql.Literal(c), sql.Identifier(c)) for c in dataset.key
    )
    with conn.cursor() as cur:
        if dataset.region_names:
            regions.suggest(cur, dataset, rows)
        cur.execute(
            sql.SQL(
                """
                CREATE TEMP TABLE rejects ON COMMIT DROP AS
                SELECT line, ARRAY[{messages}] AS reasons  -- a wide file's line has one row per date cell
                FROM ({rows}) AS s WHERE {any_bad} GROUP BY line;
                ALTER TABLE rejects ADD PRIMARY KEY (line);

                -- two rows with one key and different values: neither can be trusted
                INSERT INTO rejects (line, reasons)
                SELECT unnest(lines), array_fill(NULL::text, ARRAY[{n}]) || (
                    'key (' || key_text || ') appears on lines '
                    || CASE WHEN cardinality(lines) > 5
                            THEN array_to_string(lines[1:5], ', ') || ' and ' || cardinality(lines) - 5 || ' more'
                            ELSE array_to_string(lines[1:cardinality(lines) - 1], ', ') || ' and '
                                 || lines[cardinality(lines)] END
                    || ' with different values')
                FROM (
                    SELECT {key_text} AS key_text, array_agg(line ORDER BY line) AS lines
                    FROM ({rows}) AS s
                    GROUP BY {key}
                    HAVING count(DISTINCT ({values}, ''::text)) > 1  -- a row even for a single value column
                ) AS conflicts
                ON CONFLICT (line) DO UPDATE SET reasons = rejects.reasons[1:{n}] || EXCLUDED.reasons[{n1}];
                """
            ).format(
                messages=sql.SQL(", ").join(sql.SQL("string_agg({}, '; ')").format(m) for m in messages),
                rows=rows,
                any_bad=sql.SQL(" OR ").join(sql.SQL("({})").format(p.bad) for p in problems),
                n=sql.Literal(len(problems)),
                n1=sql.Literal(len(problems) + 1),
                key=key,
                values=values,
                key_text=key_text,
            )
        )
        # per kind of problem: rows, the first line and its message, distinct messages (keys, for conflicts)
        cur.execute(
            """
            SELECT i, count(*), min(line), (array_agg(reasons[i] ORDER BY line))[1], count(DISTINCT reasons[i])
            FROM rejects, generate_subscripts(reasons, 1) AS i
            WHERE reasons[i] IS NOT NULL
            GROUP BY i ORDER BY i
            """
        )
        found = cur.fetchall()
    gates = [p.gate for p in problems] + ["keys_unique"]
    return [Found(gates[i - 1], line, message, count, distinct) for i, count, line, message, distinct in found]


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
