"""Vintages: every version of every value of a clean table, stored as differences, and the tables as of a time.

`covid.<table>_history` holds a row for a key only where a file's values for it are new or differ from the
version before it in ledger order, with the file and its `issued_at` (the object's last-modified time in
the landing zone). A table as of T is, for each key, the latest version in ledger order issued at or before T,
with the derived columns recomputed by the merge's own SQL (`derived.derived_select`).

Three refinements keep that exact when the ledger's order and the issue times disagree:
- A version's `issued_at` is the earliest issue time of the files that reported it in a row (a later file in
  the ledger issued earlier, repeating the value, makes it visible from its own time).
- Runs merge in whatever order they finish: a file merged while an earlier file of its dataset is still in
  flight keeps all its rows (the earlier one may land between it and the version before). Once nothing before
  them is in flight, the rows that repeat the version before them are folded away by the next merge touching
  their keys.
- A file merged after a later file of the ledger (a quarantined file run again under a new rule) may lose its
  keys to that file, which repeated the version before it: that repeat becomes a version after the file's.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2.errors
from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.engine.derived import derived_select
from covid_platform.engine.staging import staged_rows
from covid_platform.engine.tables import (
    base_columns,
    column_list,
    columns,
    coverage_table,
    derived_columns,
    match,
    qualified,
)

# A file registered longer ago than this and still not settled is taken as abandoned (its run failed for
# good), not as in flight: it would otherwise keep every later file's rows whole forever.
IN_FLIGHT_HORIZON = "1 day"
LARGEST_REVISIONS = 10


def history_name(dataset: Dataset) -> str:
    return f"{dataset.table}_history"


def as_of_name(table: str) -> str:
    return f"{table}_as_of"


def backfill_name(dataset: Dataset) -> str:
    return f"{dataset.table}_backfill_profile"


def _history(dataset: Dataset) -> sql.Identifier:
    return sql.Identifier("covid", history_name(dataset))


def _values(dataset: Dataset) -> list[str]:
    """The base columns that are not the key: what a version is."""
    return [c for c in base_columns(dataset) if c not in dataset.key]


def _numbers(dataset: Dataset) -> list[str]:
    return [*dataset.counts, *dataset.values]


def previous(name: str) -> sql.Identifier:
    # a space cannot appear in a declared column's name: no clash
    return sql.Identifier(f"previous {name}")


# --- DDL -------------------------------------------------------------------------------------------------

def ddl(cur, dataset: Dataset) -> None:
    """The history table, seeded from the clean table when it is new beside a table loaded before vintages
    existed (those values' earlier versions are unknown: a replay rebuilds them), and the functions."""
    by_name = {c.name: c for c in columns(dataset)}
    definitions = [
        sql.SQL("{} {}{}").format(sql.Identifier(c.name), sql.SQL(c.type), sql.SQL("" if c.nullable else " NOT NULL"))
        for c in (by_name[name] for name in base_columns(dataset))
    ]
    cur.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {history} ({columns}, file_id bigint NOT NULL, issued_at timestamptz NOT NULL, "
        "CONSTRAINT {pkey} PRIMARY KEY ({key}, file_id))"
    ).format(history=_history(dataset), columns=sql.SQL(", ").join(definitions),
             pkey=sql.Identifier(f"{history_name(dataset)}_pkey"), key=column_list(dataset.key)))
    cur.execute(sql.SQL(
        "INSERT INTO {history} ({base}, file_id, issued_at) "
        "SELECT {t_base}, t.file_id, coalesce(f.issued_at, f.received_at) "
        "FROM {table} AS t JOIN covid.ingested_files AS f USING (file_id) "
        "WHERE NOT EXISTS (SELECT FROM {history})"
    ).format(history=_history(dataset), base=column_list(base_columns(dataset)),
             t_base=qualified("t", base_columns(dataset)),
             table=sql.Identifier("covid", dataset.table)))
    functions_ddl(cur, dataset)


def functions_ddl(cur, dataset: Dataset) -> None:
    """`covid.<table>_as_of(T)` and `covid.<table>_backfill_profile()`, replaced in place: a query that looked
    one up meanwhile still finds it (a dropped one fails it, "cache lookup failed for function"). Dropped
    first only where a column's type changed since it was made: CREATE OR REPLACE cannot change a result type."""
    for function, arguments, create in (
        (sql.Identifier("covid", as_of_name(dataset.table)), sql.SQL("timestamptz"), _as_of_function),
        (sql.Identifier("covid", backfill_name(dataset)), sql.SQL(""), _backfill_function),
    ):
        cur.execute("SAVEPOINT replace_function")
        try:
            cur.execute(create(dataset, function))
        except psycopg2.errors.InvalidFunctionDefinition:  # cannot change return type of existing function
            cur.execute("ROLLBACK TO SAVEPOINT replace_function")
            cur.execute(sql.SQL("DROP FUNCTION {}({})").format(function, arguments))
            cur.execute(create(dataset, function))
        cur.execute("RELEASE SAVEPOINT replace_function")


def drop_functions(cur, dataset: Dataset) -> None:
    cur.execute(sql.SQL("DROP FUNCTION IF EXISTS {}(timestamptz); DROP FUNCTION IF EXISTS {}()").format(
        sql.Identifier("covid", as_of_name(dataset.table)), sql.Identifier("covid", backfill_name(dataset))))


# SQL-language, STABLE, one SELECT: PostgreSQL inlines it into the caller's query, so a filter on the region
# columns reaches the history's key index (one state's series reads that state's versions only).
AS_OF = """
CREATE OR REPLACE FUNCTION {function}(as_of timestamptz) RETURNS TABLE ({result}) LANGUAGE sql STABLE AS $as_of$
SELECT {columns} FROM ({derived}) AS as_of_table
$as_of$;
COMMENT ON FUNCTION {function}(timestamptz) IS {comment}
"""
# Each key's version of the latest file in ledger order issued at or before T (the parameter, $1).
VERSIONS_AS_OF = """
SELECT DISTINCT ON ({key}) {base}, file_id FROM {history} WHERE issued_at <= $1 ORDER BY {key}, file_id DESC
"""


def _as_of_function(dataset: Dataset, function: sql.Identifier) -> sql.Composed:
    rows = sql.SQL(VERSIONS_AS_OF).format(key=column_list(dataset.key), base=column_list(base_columns(dataset)),
                                          history=_history(dataset))
    table_columns = columns(dataset)
    carried = {*base_columns(dataset), *derived_columns(dataset), "file_id"}
    return sql.SQL(AS_OF).format(
        function=function,
        result=sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in table_columns),
        # the clean table's columns in its order; one the merge does not carry (yet) is empty, as there
        columns=sql.SQL(", ").join(
            sql.Identifier(c.name) if c.name in carried else sql.SQL("NULL::{}").format(sql.SQL(c.type))
            for c in table_columns),
        derived=derived_select(dataset, rows),
        comment=sql.Literal(f"What covid.{dataset.table} held at the given time: each key's values from the "
                            "latest file (ledger order) issued at or before it, derived columns recomputed."),
    )


# For values k days after their date (issued_at's UTC day minus the date), the share already at their final
# value, as `<table>_as_of` would have shown them: each (key, column)'s versions in ledger order, repeats
# folded (seen from the earliest issue among them), a version seen from its lag until a later version's. An
# empty value is not reported: a key counts while the version seen is not empty, and is at its final value
# while that version is the final one. Counted by events (+1 where such a version starts to be seen, -1
# where it stops) summed over k, rather than one row per (value, k).
BACKFILL = """
CREATE OR REPLACE FUNCTION {function}() RETURNS TABLE (k integer, column_name text, reported bigint, at_final bigint,
                                             share double precision) LANGUAGE sql STABLE AS $backfill$
WITH versions AS (
    SELECT {key}, h.file_id, greatest(0, (h.issued_at AT TIME ZONE 'UTC')::date - h.date) AS lag, v.column_name, v.value
    FROM {history} AS h CROSS JOIN LATERAL (VALUES {unpivot}) AS v(column_name, value)
), runs AS (  -- a value repeated by files in a row is one version, seen from the earliest issue among them
    SELECT {key}, column_name, value, min(lag) AS lag, min(file_id) AS file_id
    FROM (
        SELECT *, count(*) FILTER (WHERE changed) OVER by_key AS run
        FROM (SELECT *, value IS DISTINCT FROM lag(value) OVER by_key OR lag(file_id) OVER by_key IS NULL AS changed
              FROM versions WINDOW by_key AS (PARTITION BY {key}, column_name ORDER BY file_id)) AS marked
        WINDOW by_key AS (PARTITION BY {key}, column_name ORDER BY file_id)
    ) AS numbered
    GROUP BY {key}, column_name, run, value
), seen AS (
    -- as of a lag, a value is its latest run in ledger order issued by then: a run is seen from its lag until
    -- a later run's (never, if a later run was issued before it); the runs of a value reported (not empty)
    SELECT * FROM (
        SELECT lag, column_name, value, min(lag) OVER later AS next_lag,
               value = last_value(value) OVER (by_key ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS final
        FROM runs
        WINDOW by_key AS (PARTITION BY {key}, column_name ORDER BY file_id),
               later AS (by_key ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
    ) AS runs_seen
    WHERE value IS NOT NULL AND (next_lag IS NULL OR next_lag > lag)
), events AS (
    SELECT lag AS k, column_name, 1 AS reported, final::int AS at_final FROM seen
    UNION ALL
    SELECT next_lag, column_name, -1, -final::int FROM seen WHERE next_lag IS NOT NULL
), per_day AS (
    SELECT d.k, c.column_name, coalesce(sum(e.reported), 0) AS reported, coalesce(sum(e.at_final), 0) AS at_final
    FROM generate_series(0, 60) AS d(k) CROSS JOIN (VALUES {names}) AS c(column_name)
    LEFT JOIN events AS e ON e.k = d.k AND e.column_name = c.column_name
    GROUP BY d.k, c.column_name
)
SELECT k, column_name, reported::bigint, at_final::bigint, at_final::double precision / nullif(reported, 0)
FROM (SELECT k, column_name, sum(reported) OVER by_k AS reported, sum(at_final) OVER by_k AS at_final
      FROM per_day WINDOW by_k AS (PARTITION BY column_name ORDER BY k)) AS cumulative
ORDER BY column_name, k
$backfill$
"""


def _backfill_function(dataset: Dataset, function: sql.Identifier) -> sql.Composed:
    numbers = _numbers(dataset)
    return sql.SQL(BACKFILL).format(
        function=function,
        key=column_list(dataset.key),
        history=_history(dataset),
        unpivot=sql.SQL(", ").join(
            sql.SQL("({}, h.{}::numeric)").format(sql.Literal(c), sql.Identifier(c)) for c in numbers),
        names=sql.SQL(", ").join(sql.SQL("({})").format(sql.Literal(c)) for c in numbers),
    )


# --- writing history -------------------------------------------------------------------------------------

@dataclass
class Revisions:
    """What one file changed in one table, against the version before it in ledger order."""

    keys_added: int = 0
    keys_revised: int = 0
    keys_unchanged: int = 0
    largest: list[dict] = field(default_factory=list)
    """The largest revisions of numbers: {region, date, column, old, new}, by absolute change."""


# The batch's files: their issue time, and the first file of the dataset still in flight (not in the batch):
# a version of a later file is kept whole.
FILES = """
CREATE TEMP TABLE vintage_files ON COMMIT DROP AS
SELECT f.file_id, f.issued_at, (
    SELECT min(e.file_id) FROM covid.ingested_files AS e
    WHERE e.dataset = %(dataset)s AND e.status IN ('received', 'staged') AND e.reason IS NULL
      AND e.received_at > now() - %(horizon)s::interval AND e.file_id <> ALL (%(batch)s)
) AS first_in_flight
FROM covid.ingested_files AS f WHERE f.file_id = ANY (%(batch)s);
-- its few rows known to the planner: a join with it streams the batch's rows (no sort of them by file_id)
ANALYZE vintage_files;
"""

# The versions of every key the batch touches, the batch's and those in history, in ledger order: a row
# starts a version where it differs from the one before (or nothing comes before, or a file before it is in
# flight); a version is visible from the earliest issue time of its rows.
SEQUENCE = """
CREATE TEMP TABLE vintages ON COMMIT DROP AS
WITH observed AS (
    SELECT s.*, v.issued_at FROM ({staged}) AS s JOIN vintage_files AS v USING (file_id)
)
SELECT *, min(issued_at) OVER (PARTITION BY {key}, version) AS valid_from
FROM (
    SELECT *, count(*) FILTER (WHERE start) OVER (PARTITION BY {key} ORDER BY file_id) AS version
    FROM (
        SELECT *, changed OR (file_id > (SELECT min(first_in_flight) FROM vintage_files)) IS TRUE AS start
        FROM (
            SELECT *, previous_file IS NULL OR ({values}) IS DISTINCT FROM ({previous_values}) AS changed
            FROM (
                SELECT *, lag(file_id) OVER by_key AS previous_file, {lags}
                FROM (
                    SELECT {key}, {values}, file_id, issued_at, true AS is_new FROM observed
                    UNION ALL
                    SELECT {h_key}, {h_values}, h.file_id, h.issued_at, false FROM {history} AS h
                    WHERE EXISTS (SELECT FROM observed AS o WHERE {match})
                ) AS rows_
                WINDOW by_key AS (PARTITION BY {key} ORDER BY file_id)
            ) AS with_previous
        ) AS compared
    ) AS started
) AS numbered;
"""

WRITE = """
INSERT INTO {history} ({key}, {values}, file_id, issued_at)
SELECT {key}, {values}, file_id, valid_from FROM vintages WHERE is_new AND start;
"""
# After the batch's versions (and the repeats restated after them, `RESTATE`): the rows kept whole while a
# file before them was in flight, or a later version the batch's now equals, that repeat the version before
# them in history.
FOLD = """
DELETE FROM {history} AS h USING vintages AS v
WHERE NOT v.is_new AND NOT v.start AND {match} AND h.file_id = v.file_id
  AND EXISTS (SELECT FROM (SELECT {p_values} FROM {history} AS p WHERE {match_hp} AND p.file_id < h.file_id
                           ORDER BY p.file_id DESC LIMIT 1) AS p
              WHERE ({p_values}) IS NOT DISTINCT FROM ({h_values}));
UPDATE {history} AS h SET issued_at = v.valid_from FROM vintages AS v
WHERE NOT v.is_new AND v.start AND v.valid_from < v.issued_at AND {match} AND h.file_id = v.file_id;
"""

# A version the batch wrote that a later file kept out of the clean table (its coverage of the date, or its
# rewrite of a region it reported in part) by repeating the version before it, a repeat not kept when it
# merged: the repeat is a version again, after the batch's, at the earliest such file before the key's next
# version (a region's earliest coverage after a file not loaded is kept for it: `merge.COVERAGE`), from its
# issue time. What it repeated: the clean table's values where no version follows (they are that file's),
# else the version before the batch's.
RESTATE = """
INSERT INTO {history} ({key}, {values}, file_id, issued_at)
SELECT {v_key}, {restated}, w.file_id, coalesce(f.issued_at, f.received_at)
FROM (SELECT {key}, {values}, file_id FROM vintages WHERE is_new AND start) AS v
JOIN {table} AS t ON {match_vt}
CROSS JOIN LATERAL (
    SELECT min(h.file_id) AS file_id FROM {history} AS h WHERE {match_vh} AND h.file_id > v.file_id
) AS next_version
LEFT JOIN LATERAL (
    SELECT {h_values}, h.file_id FROM {history} AS h WHERE {match_vh} AND h.file_id < v.file_id
    ORDER BY h.file_id DESC LIMIT 1
) AS before ON true
CROSS JOIN LATERAL (
    SELECT min(later.file_id) AS file_id FROM (
        SELECT c.file_id FROM {coverage} AS c
        WHERE {region_match_tc} AND t.date BETWEEN c.first_date AND c.last_date
        UNION ALL
        SELECT t.file_id
    ) AS later
    WHERE later.file_id > v.file_id AND (next_version.file_id IS NULL OR later.file_id < next_version.file_id)
) AS w
JOIN covid.ingested_files AS f ON f.file_id = w.file_id
WHERE ({restated}) IS DISTINCT FROM ({v_values}) AND (next_version.file_id IS NULL OR before.file_id IS NOT NULL);
"""

REVISIONS = """
INSERT INTO covid.revisions (file_id, table_name, keys_added, keys_revised, keys_unchanged, largest)
SELECT f.file_id, {table_name}, coalesce(c.added, 0), coalesce(c.revised, 0), {unchanged},
       coalesce(l.largest, '[]'::jsonb)
FROM vintage_files AS f
LEFT JOIN ({counts}) AS c USING (file_id)
LEFT JOIN (
    SELECT file_id, jsonb_agg(jsonb_build_object('region', region, 'date', date, 'column', column_name,
                                                 'old', old, 'new', new) ORDER BY rank) AS largest
    FROM (
        SELECT v.file_id, jsonb_build_object({region_pairs}) AS region, v.date, d.column_name, d.old, d.new,
               -- a value withdrawn (now empty) ranks by its size
               row_number() OVER (PARTITION BY v.file_id ORDER BY abs(coalesce(d.new, 0) - coalesce(d.old, 0)) DESC,
                                                                   {v_key}, d.column_name) AS rank
        FROM vintages AS v CROSS JOIN LATERAL (VALUES {unpivot}) AS d(column_name, old, new)
        WHERE v.is_new AND v.previous_file IS NOT NULL AND d.old IS DISTINCT FROM d.new
    ) AS ranked
    WHERE rank <= {largest}
    GROUP BY file_id
) AS l USING (file_id)
ON CONFLICT (file_id, table_name) DO UPDATE SET keys_added = EXCLUDED.keys_added,
    keys_revised = EXCLUDED.keys_revised, keys_unchanged = EXCLUDED.keys_unchanged, largest = EXCLUDED.largest
RETURNING file_id, keys_added, keys_revised, keys_unchanged, largest;
"""


# The one file of the batch follows every loaded file of its dataset, in ledger order and in issue time, and
# no file before it is in flight: its versions are its rows that differ from the clean table's (the latest
# version of each key), which the merge has just found (`changes`), so only those are read.
FOLLOWS = """
SELECT (v.first_in_flight IS NULL OR v.first_in_flight > v.file_id) AND v.file_id > coalesce(max(e.file_id), 0)
       AND v.issued_at >= coalesce(max(e.issued_at), '-infinity')
FROM vintage_files AS v LEFT JOIN covid.ingested_files AS e ON e.dataset = %(dataset)s AND e.status = 'loaded'
GROUP BY v.file_id, v.first_in_flight, v.issued_at
"""
COUNTS = """
SELECT file_id, count(*) FILTER (WHERE previous_file IS NULL) AS added,
       count(*) FILTER (WHERE previous_file IS NOT NULL AND changed) AS revised,
       count(*) FILTER (WHERE NOT changed) AS unchanged
FROM vintages WHERE is_new GROUP BY file_id
"""
# Into an empty history (a first load), every row of the one file is a version: every key added (counted
# as they are written, not read again: 15M county rows, 4.8 s).
FIRST = """
CREATE TEMP VIEW vintages AS
SELECT s.*, v.issued_at, true AS is_new, true AS changed, NULL::bigint AS previous_file, {no_previous}
FROM ({staged}) AS s JOIN vintage_files AS v USING (file_id);
INSERT INTO {history} ({key}, {values}, file_id, issued_at) SELECT {key}, {values}, file_id, issued_at FROM vintages;
"""
CHANGES = """
CREATE TEMP VIEW vintages AS
SELECT c.*, true AS is_new, true AS changed, v.issued_at FROM changes AS c JOIN vintage_files AS v USING (file_id)
WHERE c.kind <> 'rewritten';
INSERT INTO {history} ({key}, {values}, file_id, issued_at) SELECT {key}, {values}, file_id, issued_at FROM vintages;
"""


def record(cur, dataset: Dataset, file_ids: list[int], staged: list[sql.Composed], rows: int | None = None,
           lost: bool = False) -> dict[int, Revisions]:
    """Write the batch's new versions to history and each file's revisions to `covid.revisions`, in the
    merge's transaction (`staged`: each file's typed rows with its file_id, as the merge reads them; `rows`:
    the row count of a single file the merge compared with the table, leaving its differences in `changes`;
    `lost`: whether a later file kept some of the batch's rows out of the table)."""
    history = _history(dataset)
    values = _values(dataset)
    cur.execute(sql.SQL(FILES), {"dataset": dataset.name, "horizon": IN_FLIGHT_HORIZON, "batch": file_ids})
    follows = False
    if rows is not None and not lost:  # a file that lost rows follows a file the ledger does not call loaded
        cur.execute(FOLLOWS, {"dataset": dataset.name})
        follows = cur.fetchone()[0]
    cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(history))
    first = cur.fetchone()[0] and len(file_ids) == 1
    unchanged = sql.SQL("coalesce(c.unchanged, 0)")
    counts = sql.SQL(COUNTS)
    parts = dict(history=history, key=column_list(dataset.key), values=column_list(values))
    if follows:
        cur.execute(sql.SQL(CHANGES).format(**parts))
        # the file's rows that are not a change (a file with no change has no row in `vintages`)
        unchanged = sql.SQL("{} - coalesce(c.added, 0) - coalesce(c.revised, 0)").format(sql.Literal(rows))
    elif first:
        with _key_built_after(cur, dataset):
            cur.execute(sql.SQL(FIRST).format(
                staged=staged[0], **parts,
                no_previous=sql.SQL(", ").join(sql.SQL("NULL::numeric AS {}").format(previous(c)) for c in values)))
            counts = sql.SQL("SELECT file_id, {} AS added, 0 AS revised, 0 AS unchanged FROM vintage_files").format(
                sql.Literal(cur.rowcount))
    else:
        _sequence(cur, dataset, staged, lost)
    cur.execute(sql.SQL(REVISIONS).format(
        counts=counts,
        unchanged=unchanged,
        table_name=sql.Literal(dataset.table),
        region_pairs=sql.SQL(", ").join(sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier("v", c))
                                        for c in dataset.region),
        v_key=qualified("v", dataset.key),
        unpivot=sql.SQL(", ").join(
            sql.SQL("({}, {}::numeric, {}::numeric)").format(sql.Literal(c), sql.Identifier("v", f"previous {c}"),
                                                              sql.Identifier("v", c))
            for c in _numbers(dataset)),
        largest=sql.Literal(LARGEST_REVISIONS),
    ))
    revisions = {file_id: Revisions(added, revised, unchanged, largest)
                 for file_id, added, revised, unchanged, largest in cur.fetchall()}
    # the next merge of the transaction (a replay's) makes its own
    cur.execute(sql.SQL("DROP {} pg_temp.vintages; DROP TABLE pg_temp.vintage_files").format(
        sql.SQL("VIEW" if follows or first else "TABLE")))
    return revisions


# A duplicate (the bytes of the file before it, not merged) issued earlier than that file: the versions it
# repeats, each key's latest before it, are seen from its issue time (a version is seen from the earliest
# issue of the files that reported it in a row).
REPEATED = """
UPDATE {history} AS h SET issued_at = f.issued_at
FROM (
    SELECT DISTINCT ON ({h_key}) {h_key}, h.file_id
    FROM ({rows}) AS s JOIN {history} AS h ON {match} AND h.file_id < %(file_id)s
    ORDER BY {h_key}, h.file_id DESC
) AS v, covid.ingested_files AS f
WHERE f.file_id = %(file_id)s AND {match_hv} AND h.file_id = v.file_id AND h.issued_at > f.issued_at
"""


def repeat(cur, dataset: Dataset, file_id: int, duplicate_of: int) -> None:
    """A duplicate's issue time given to the versions it repeats (`REPEATED`), from its typed rows; only where
    it was issued before the file it repeats (else no version it repeats is seen later than it)."""
    cur.execute("SELECT d.issued_at < o.issued_at FROM covid.ingested_files AS d, covid.ingested_files AS o "
                "WHERE d.file_id = %s AND o.file_id = %s", (file_id, duplicate_of))
    row = cur.fetchone()
    if row and row[0]:
        cur.execute(sql.SQL(REPEATED).format(
            history=_history(dataset), rows=staged_rows(dataset, file_id), h_key=qualified("h", dataset.key),
            match=match("s", "h", dataset.key), match_hv=match("h", "v", dataset.key)), {"file_id": file_id})


def _sequence(cur, dataset: Dataset, staged: list[sql.Composed], lost: bool) -> None:
    """Every key the batch reports, its versions in the batch and in history (`SEQUENCE`), written; and the
    later files' repeats that keep the table's values after the batch's (`RESTATE`)."""
    history = _history(dataset)
    values = _values(dataset)
    cur.execute(sql.SQL(SEQUENCE).format(
        staged=sql.SQL(" UNION ALL ").join(staged),
        key=column_list(dataset.key),
        values=column_list(values),
        previous_values=column_list(f"previous {c}" for c in values),
        lags=sql.SQL(", ").join(sql.SQL("lag({}) OVER by_key AS {}").format(sql.Identifier(c), previous(c))
                                for c in values),
        h_key=qualified("h", dataset.key),
        h_values=qualified("h", values),
        history=history,
        match=match("o", "h", dataset.key),
    ))
    cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(history))
    write = sql.SQL(WRITE).format(history=history, key=column_list(dataset.key), values=column_list(values))
    if cur.fetchone()[0]:
        with _key_built_after(cur, dataset):
            cur.execute(write)
        return
    cur.execute(write)
    if lost:  # a later file kept some of the batch's rows out: the table does not hold its latest versions
        _restate(cur, dataset)
    cur.execute(sql.SQL(FOLD).format(history=history, match=match("v", "h", dataset.key),
                                     match_hp=match("h", "p", dataset.key), p_values=qualified("p", values),
                                     h_values=qualified("h", values)))


def _restate(cur, dataset: Dataset) -> None:
    history = _history(dataset)
    values = _values(dataset)
    restated = sql.SQL(", ").join(
        sql.SQL("CASE WHEN next_version.file_id IS NULL THEN t.{c} ELSE before.{c} END").format(c=sql.Identifier(c))
        for c in values)
    cur.execute(sql.SQL(RESTATE).format(
        history=history, key=column_list(dataset.key), values=column_list(values), v_key=qualified("v", dataset.key),
        v_values=qualified("v", values), h_values=qualified("h", values), restated=restated,
        table=sql.Identifier("covid", dataset.table),
        coverage=coverage_table(dataset), match_vh=match("v", "h", dataset.key), match_vt=match("v", "t", dataset.key),
        region_match_tc=match("t", "c", dataset.region),
    ))


@contextmanager
def _key_built_after(cur, dataset: Dataset):
    """Into an empty history, as into an empty clean table: the key index built once, after the rows."""
    history = _history(dataset)
    pkey = sql.Identifier(f"{history_name(dataset)}_pkey")
    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(history, pkey))
    yield
    cur.execute(sql.SQL("SET LOCAL maintenance_work_mem = '256MB'; ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({}, file_id)")
                .format(history, pkey, column_list(dataset.key)))


def rename_revisions(cur, built: str, table: str) -> None:
    """A replay's revisions (recorded under the table built aside) become the table's, in the swap."""
    cur.execute("DELETE FROM covid.revisions WHERE table_name = %s", (table,))
    cur.execute("UPDATE covid.revisions SET table_name = %s WHERE table_name = %s", (table, built))

