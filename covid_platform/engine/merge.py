"""Merge staged files into a dataset's clean table and recompute the derived columns they affect.

For each region a file touches, only rows from its earliest changed date onward are rewritten; the rows
just before it (1 for the differences, 7 with 7-row or 7-day windows) are read to seed the window functions.
"""

from dataclasses import dataclass, field
from datetime import date

from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.engine import history, ledger, staging
from covid_platform.engine.derived import derived_select, has_windows
from covid_platform.engine.staging import staged_rows
from covid_platform.engine.tables import (
    base_columns,
    build_indexes_ddl,
    column_list,
    derived_columns,
    drop_indexes_ddl,
    table_ddl,
    year_partitions_ddl,
)

# Several files at once: the latest file's row wins each key. One file's keys are already unique (the
# gates reject conflicting keys and the typed table holds one row per key), so it is read in place.
INCOMING_MANY = """
CREATE TEMP TABLE incoming ON COMMIT DROP AS
SELECT DISTINCT ON ({key}) *
FROM ({staged}) AS staged
ORDER BY {key}, file_id DESC;
"""
INCOMING_ONE = "CREATE TEMP VIEW incoming AS {staged};"

# Each key's row from the latest file in the ledger, whether already in the table or incoming: runs merge in
# whatever order they finish, the result is that of loading in ledger order.
CANDIDATES = sql.SQL("""
SELECT DISTINCT ON ({key}) *
FROM (
    SELECT {t_base}, t.file_id
    FROM {table} AS t JOIN changed AS c ON {region_match_c} AND t.date >= c.window_start
    UNION ALL
    SELECT {base}, file_id FROM incoming
) AS candidates
ORDER BY {key}, file_id DESC
""")

MERGE = """
CREATE TEMP TABLE changed ON COMMIT DROP AS
SELECT {f_region}, f.from_date, coalesce(least(seed.date{reach_back}), '-infinity') AS window_start
FROM (SELECT {region}, min(date) AS from_date FROM incoming GROUP BY {region}) AS f
LEFT JOIN LATERAL (
    -- the earliest unchanged row the window functions need to see (for a count that may be empty, the
    -- difference of the row after it reaches back to the latest row where the count is not: reach_back)
    SELECT t.date FROM {table} AS t
    WHERE {region_match_f} AND t.date < f.from_date
    ORDER BY t.date DESC OFFSET {seed_rows} - 1 LIMIT 1
) AS seed ON true;
ANALYZE changed;  -- so the planner reaches a few regions of a large table through its key index

CREATE TEMP TABLE recomputed ON COMMIT DROP AS
SELECT {columns}
FROM ({derived}) AS windowed
JOIN changed USING ({region})
WHERE date >= changed.from_date;

-- Replace each touched region's rows from its earliest changed date on. A plain INSERT after the DELETE
-- costs half of INSERT … ON CONFLICT, whose speculative insertion dominates a large load.
DELETE FROM {table} AS t USING changed AS c WHERE {region_match_c} AND t.date >= c.from_date;
INSERT INTO {table} ({columns}) SELECT {columns} FROM recomputed;
"""


def _match(left: str, right: str, names) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, n), sql.Identifier(right, n)) for n in names
    )


def merge_statement(dataset: Dataset, staged: list[sql.Composed]) -> sql.Composed:
    """Merge the staged files' rows; the last statement's row count is the rows written."""
    derived = derived_columns(dataset)
    base = base_columns(dataset)
    reach_back = [
        sql.SQL(", (SELECT max(t.date) FROM {table} AS t WHERE {match} AND t.date <= seed.date AND {c} IS NOT NULL)")
        .format(table=sql.Identifier("covid", dataset.table), match=_match("t", "f", dataset.region),
                c=sql.Identifier("t", count))
        for count in dataset.new if count in dataset.nullable
    ]
    incoming = INCOMING_ONE if len(staged) == 1 else INCOMING_MANY
    parts = dict(
        key=column_list(dataset.key),
        region=column_list(dataset.region),
        f_region=sql.SQL(", ").join(sql.Identifier("f", n) for n in dataset.region),
        base=column_list(base),
        t_base=sql.SQL(", ").join(sql.Identifier("t", n) for n in base),
        columns=column_list([*base, *derived, "file_id"]),
        region_match_f=_match("t", "f", dataset.region),
        region_match_c=_match("t", "c", dataset.region),
        seed_rows=sql.Literal(7 if has_windows(dataset) else 1),
        reach_back=sql.Composed(reach_back),
        table=sql.Identifier("covid", dataset.table),
        staged=sql.SQL(" UNION ALL ").join(staged),
    )
    return sql.SQL(incoming + MERGE).format(derived=derived_select(dataset, CANDIDATES.format(**parts)), **parts)


@dataclass
class Merged:
    """What one merge did."""

    loaded: list[tuple[int, str, str, int]] = field(default_factory=list)
    """(file_id, key, partition_key, rows_loaded) of each file merged, now `loaded` in the ledger."""
    rows_in_files: int = 0
    rows_written: int = 0
    first_date: date | None = None
    last_date: date | None = None
    decreases: dict[str, int] = field(default_factory=dict)
    """count → rows written whose cumulative count fell since the region's previous date (revisions)."""
    revisions: dict[int, history.Revisions] = field(default_factory=dict)
    """file_id → the keys it added, revised and left unchanged, and its largest revisions (`covid.revisions`)."""


def lock(cur, table: str, session: bool = False) -> None:
    """One writer per clean table at a time: a merge for its transaction, a replay for its session."""
    function = sql.SQL("pg_advisory_lock" if session else "pg_advisory_xact_lock")
    cur.execute(sql.SQL("SELECT {}(hashtext(%s))").format(function), (f"covid.{table}",))


def unlock(cur, table: str) -> None:
    cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"covid.{table}",))


def merge_pending(cur, dataset: Dataset) -> Merged:
    """Merge every staged file of the dataset, in ledger order, in the caller's transaction. A second run
    waits for the first one's lock, then merges what is still pending (often nothing)."""
    lock(cur, dataset.table)
    pending = ledger.claim_staged(cur, dataset.name)
    return merge_files(cur, dataset, pending) if pending else Merged(decreases=dict.fromkeys(dataset.new, 0))


def merge_files(cur, dataset: Dataset, file_ids: list[int]) -> Merged:
    """Merge these staged files into `covid.<dataset.table>` (created, and its year partitions, as
    needed), mark them loaded and drop their staging tables, in the caller's transaction."""
    staged = [staged_rows(dataset, file_id) for file_id in file_ids]
    table = sql.Identifier("covid", dataset.table)
    cur.execute(table_ddl(dataset))
    history.ddl(cur, dataset)
    if dataset.partition_by_year:
        cur.execute(sql.SQL("SELECT min(date), max(date) FROM ({}) AS s").format(sql.SQL(" UNION ALL ").join(staged)))
        first, last = cur.fetchone()
        for ddl in year_partitions_ddl(dataset, range(first.year, last.year + 1)):
            cur.execute(ddl)
    cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(table))
    first_load = cur.fetchone()[0]
    if first_load:
        cur.execute(drop_indexes_ddl(dataset))
    cur.execute(merge_statement(dataset, staged))
    rows_written = cur.rowcount
    if first_load:
        cur.execute(build_indexes_ddl(dataset))
    # Beside the table, in its transaction: readers of the latest values read the clean table as before.
    revisions = history.record(cur, dataset, file_ids, staged)
    loaded = ledger.mark_loaded(cur, file_ids)
    cur.execute("SELECT count(*), min(date), max(date) FROM incoming")
    rows_in_files, first_date, last_date = cur.fetchone()
    merged = Merged(loaded, rows_in_files, rows_written, first_date, last_date, _decreases(cur, dataset), revisions)
    for file_id in file_ids:
        staging.drop(cur, file_id)
    return merged


def _decreases(cur, dataset: Dataset) -> dict[str, int]:
    """Rows the merge wrote (`recomputed`) whose cumulative count fell since the region's previous date."""
    if not dataset.new:
        return {}
    cur.execute(
        sql.SQL("SELECT {} FROM recomputed").format(
            sql.SQL(", ").join(
                sql.SQL("count(*) FILTER (WHERE {} < 0)").format(sql.Identifier(new)) for new in dataset.new.values()
            )
        )
    )
    return dict(zip(dataset.new, cur.fetchone()))
