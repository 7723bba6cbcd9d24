"""The blocking gates a staged file must pass before any of its rows reach a clean table.

Each gate is evaluated by set-based SQL over the staging table and, when it fails, names the column, the
line and what was expected, so the person who dropped the file can fix it.
"""

from dataclasses import dataclass, field

import psycopg2.extensions
from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.lib.staging import StagedFile, source_rows

GATES = {
    "csv_readable": "The file is UTF-8 CSV text whose rows have as many fields as its header.",
    "required_columns": "The header names every column the dataset needs.",
    "not_empty": "The file holds at least one data row.",
    "keys_present": "Key columns (region and date) are never empty.",
    "dates_valid": "Dates are real calendar dates written YYYY-MM-DD and not in the future.",
    "counts_valid": "Counts are non-negative whole numbers.",
    "keys_unique": "No two rows share a key with different values.",
}

# A YYYY-MM-DD string (optionally at midnight, as Socrata's floating timestamps are) that names a real day (PostgreSQL 15 has no pg_input_is_valid, and a bad cast
# would abort the whole scan). CASE guarantees the regex is tested before the arithmetic.
DATE_OK = """CASE WHEN {v} ~ '^[1-9][0-9][0-9][0-9]-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])(T00:00:00(\\.0+)?)?$'
  THEN substr({v}, 9, 2)::int <= extract(day FROM make_date(substr({v}, 1, 4)::int, substr({v}, 6, 2)::int, 1)
                                                  + interval '1 month - 1 day')
  ELSE false END"""
COUNT_OK = "coalesce({v} ~ '^[0-9]{{1,18}}(\\.0*)?$', false)"  # "12" or "12.0"; no sign, no fraction


@dataclass
class GateResult:
    name: str
    passed: bool
    reason: str = ""
    metadata: dict = field(default_factory=dict)
    evaluated: bool = True


def not_evaluated(name: str, because: str) -> GateResult:
    """A gate that an earlier failure made moot: shown as a warning, so the UI blames only the real failure."""
    return GateResult(name, False, f"not evaluated: {because}", evaluated=False)


def evaluate(conn: psycopg2.extensions.connection, dataset: Dataset, staged: StagedFile) -> list[GateResult]:
    """Every gate, in order; once one fails, those that need its guarantee are reported as not evaluated."""
    results = [GateResult("csv_readable", True)]
    if staged.missing:
        names = [" or ".join(repr(n) for n in (c, *dataset.aliases.get(c, ()))) for c in staged.missing]
        reason = (
            f"missing required column(s) {', '.join(names)}; "
            f"the header has {', '.join(repr(c) for c in staged.header) or 'no columns'}"
        )
        results.append(GateResult("required_columns", False, reason))
        return results + [not_evaluated(name, "required columns are missing") for name in list(GATES)[2:]]
    results.append(GateResult("required_columns", True))
    if staged.rows == 0:
        results.append(GateResult("not_empty", False, "the file has a header but no data rows"))
        return results + [not_evaluated(name, "the file has no rows") for name in list(GATES)[3:]]
    results.append(GateResult("not_empty", True, metadata={"rows": staged.rows}))

    row_gates = _row_gates(conn, dataset, staged)
    results += row_gates
    if not all(gate.passed for gate in row_gates):
        return results + [not_evaluated("keys_unique", "some rows have invalid values")]
    results.append(_keys_unique(conn, dataset, staged))
    return results


def _row_gates(conn, dataset: Dataset, staged: StagedFile) -> list[GateResult]:
    """One scan of the staged rows counts every kind of bad value and finds the first line of each."""
    rows = source_rows(dataset, staged)
    date = sql.Identifier("date")
    date_ok = sql.SQL(DATE_OK).format(v=date)
    problems: list[tuple[str, str, sql.Composable, str]] = []  # (gate, column, bad-row condition, expected)
    for column in dataset.key:
        condition = sql.SQL("coalesce({}, '') = ''").format(sql.Identifier(column))
        problems.append(("keys_present", column, condition, "a value (key columns cannot be empty)"))
    problems.append(("dates_valid", "date", sql.SQL("NOT ({})").format(date_ok), "a date written YYYY-MM-DD"))
    problems.append(
        (
            "dates_valid",
            "date",
            sql.SQL("CASE WHEN {} THEN {}::date > current_date ELSE false END").format(date_ok, date),
            "a date that is not in the future",
        )
    )
    for column in (*dataset.counts, *dataset.values):
        value = sql.Identifier(column)
        condition = sql.SQL("NOT {}").format(sql.SQL(COUNT_OK).format(v=value))
        if dataset.nullable_counts:
            condition = sql.SQL("{} <> '' AND {}").format(value, condition)
        problems.append(("counts_valid", column, condition, "a non-negative whole number"))

    aggregates = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {c}), min(line) FILTER (WHERE {c})").format(c=condition)
        for _, _, condition, _ in problems
    )
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM ({}) AS s").format(aggregates, rows))
        found = cur.fetchone()
        reasons: dict[str, list[str]] = {}
        bad_rows: dict[str, int] = {}
        for i, (gate, column, condition, expected) in enumerate(problems):
            count, line = found[2 * i], found[2 * i + 1]
            if not count:
                continue
            cur.execute(
                sql.SQL("SELECT {} FROM ({}) AS s WHERE line = %s AND {} LIMIT 1").format(
                    sql.Identifier(column), rows, condition
                ),
                (line,),
            )
            value = cur.fetchone()[0]
            shown = "an empty field" if value in (None, "") else repr(value)
            others = f" ({count - 1} more like it)" if count > 1 else ""
            reasons.setdefault(gate, []).append(
                f"column '{column}', line {line}: expected {expected}, got {shown}{others}"
            )
            bad_rows[gate] = bad_rows.get(gate, 0) + count
    return [
        GateResult(gate, gate not in reasons, "; ".join(reasons.get(gate, [])), {"bad_rows": bad_rows.get(gate, 0)})
        for gate in ("keys_present", "dates_valid", "counts_valid")
    ]


def _keys_unique(conn, dataset: Dataset, staged: StagedFile) -> GateResult:
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in dataset.key)
    values = sql.SQL(", ").join(sql.Identifier(c) for c in (*dataset.attributes, *dataset.counts, *dataset.values))
    query = sql.SQL(
        """
        SELECT {keys}, min(line), max(line), count(*) OVER ()
        FROM ({rows}) AS s
        GROUP BY {keys}
        HAVING count(DISTINCT ({values}, ''::text)) > 1  -- a row even for a single value column
        ORDER BY min(line)
        LIMIT 1
        """
    ).format(keys=keys, values=values, rows=source_rows(dataset, staged))
    with conn.cursor() as cur:
        cur.execute(query)
        row = cur.fetchone()
    if row is None:
        return GateResult("keys_unique", True)
    n = len(dataset.key)
    key = ", ".join(f"{name}={value!r}" for name, value in zip(dataset.key, row[:n]))
    first, last, conflicts = row[n], row[n + 1], row[n + 2]
    others = f" ({conflicts - 1} more key(s) like it)" if conflicts > 1 else ""
    reason = f"key ({key}) appears on lines {first} and {last} with different values{others}"
    return GateResult("keys_unique", False, reason, {"conflicting_keys": conflicts})
