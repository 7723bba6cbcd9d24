"""Merge staged files into a dataset's clean table and recompute the derived columns they affect.

A first load inserts every row with its derived columns. Later, only what changed is written: the rows whose
values are new or differ from the table's (`changes`), and the rows whose derived columns those changes reach
(`new_x` of the changed row and of the next row where x is reported; 7-row means of the 6 rows after that;
7-day ratios of the 6 days after it). Those windows are recomputed per island of nearby changes, seeded by
the 7 rows before it (reaching back past empty counts), and a row is written only if a value of it differs.
A file that repeats its whole history each day with a few revisions writes the few rows it changed.

Later files win each key, in ledger order, whatever order runs merge in: a row is replaced only by a later
file's. A file's unchanged rows keep the `file_id` of the file that first reported their values, so each merge
(and each duplicate file, `cover_as`) records, per region, the date range a file reported in full
(`<table>_coverage`): a file older than it merged later (a late run, a quarantined file loaded after a rule
change) does not win the keys it covers.
"""

from dataclasses import dataclass, field
from datetime import date

from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.engine import history, ledger, staging
from covid_platform.engine.derived import derived_select, has_windows
from covid_platform.engine.staging import staged_rows
from covid_platform.engine.tables import (
    add_year_partitions,
    base_columns,
    build_indexes_ddl,
    column_list,
    coverage_name,
    coverage_table,
    derived_columns,
    drop_indexes_ddl,
    match,
    qualified,
    table_ddl,
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

# What each file of the batch reported per region: the date range and the keys in it (one pass over the rows),
# by a hash of the regions, a few thousand: the planner, unable to count the canonical region's values (an
# expression over the region map), would take every row for a group of its own and sort them all first
# (15M county rows: 11.0 s against 8.2 s).
REPORTED = """
SET LOCAL enable_sort = off;
CREATE TEMP TABLE reported ON COMMIT DROP AS
SELECT file_id, {region}, min(date) AS first_date, max(date) AS last_date, count(*) AS keys
FROM incoming GROUP BY file_id, {region};
SET LOCAL enable_sort TO DEFAULT;
"""

# A first load's regions, numbered in their key order ("region id": no declared column has a space): its
# windows sort and partition the rows by that integer, not by the region's text (1.88M county rows: 10.6 s →
# 6.9 s on a slow machine), and insert them in key order. Read from `reported`, a row per region: not from
# the rows again (1.88M county rows: 2.0 s, a sort of every row by the region's text).
REGION_IDS = """
CREATE TEMP TABLE region_ids ON COMMIT DROP AS
SELECT {region}, row_number() OVER (ORDER BY {region}) AS "region id"
FROM (SELECT DISTINCT {region} FROM reported) AS r;
ANALYZE region_ids;
"""
# The rows get their region's id by a hash join: the planner would pick a merge join, which sorts every row
# by the region's text first (1.88M county rows: 8.7 s → 7.0 s). It joins the staged rows to their region
# map first (join_collapse_limit): a staged table has no statistics, and the planner would otherwise join the
# region ids on the county alone, 10M rows for 1.88M, then filter them by state (2.6 s against 0.9 s). Then
# the decreases counted by a scan of the table: counted as the rows are inserted (RETURNING into a CTE), they
# cost more, the CTE keeping every row it returns (15M county rows: 151 s against 126 + 4 s).
FIRST_LOAD = """
SET LOCAL enable_mergejoin = off; SET LOCAL join_collapse_limit = 1;
INSERT INTO {table} ({columns}) SELECT {columns} FROM ({derived}) AS windowed;
SET LOCAL enable_mergejoin TO DEFAULT; SET LOCAL join_collapse_limit TO DEFAULT;
SELECT count(*){decreases} FROM {table};
"""

# The incoming rows that win their key (no row of it yet, or one from an earlier file not covered by a later
# file) with values that are new or differ: kind 'added' or 'revised', beside the values they replace.
CHANGES = """
CREATE TEMP TABLE changes ON COMMIT DROP AS
SELECT i.*, CASE WHEN t.file_id IS NULL THEN 'added' ELSE 'revised' END AS kind, t.file_id AS previous_file,
       {previous}
FROM incoming AS i LEFT JOIN {table} AS t ON {key_match_it}
WHERE (t.file_id IS NULL OR (t.file_id < i.file_id AND ({i_values}) IS DISTINCT FROM ({t_values}){not_covered}));
ANALYZE changes;
"""
COVERED = """EXISTS (
    SELECT FROM {coverage} AS c WHERE {region_match_ic} AND c.file_id > i.file_id
    AND i.date BETWEEN c.first_date AND c.last_date)"""

# A region a file did not report in full between its first and last date (fewer keys than the table holds
# there): no coverage is recorded for it, so its unchanged rows are rewritten with the file's id (kind
# 'rewritten', values unchanged). With several files, every region is taken as partial.
PARTIAL_ONE = """
CREATE TEMP TABLE partial ON COMMIT DROP AS
SELECT r.file_id, {r_region} FROM reported AS r
LEFT JOIN (SELECT file_id, {region}, count(*) AS keys FROM changes WHERE kind = 'added' GROUP BY file_id, {region})
     AS added USING (file_id, {region})
WHERE r.keys < coalesce(added.keys, 0)
             + (SELECT count(*) FROM {table} AS t WHERE {region_match_rt} AND t.date BETWEEN r.first_date AND r.last_date);
"""
PARTIAL_MANY = "CREATE TEMP TABLE partial ON COMMIT DROP AS SELECT file_id, {region} FROM reported;"
REWRITE = """
INSERT INTO changes
SELECT i.*, 'rewritten', t.file_id, {previous}
FROM incoming AS i JOIN partial AS p ON {region_match_ip} AND p.file_id = i.file_id
JOIN {table} AS t ON {key_match_it}
WHERE t.file_id < i.file_id AND ({i_values}) IS NOT DISTINCT FROM ({t_values}){not_covered};
"""

# A region's coverage within a range the batch now covers is replaced by the batch's, unless it is the earliest
# of its range after a file of the dataset not loaded (quarantined, in flight; the latest such file before it
# says): should that file be merged, the values it loses to that coverage were repeated from then on
# (`history.RESTATE`).
COVERAGE = """
WITH unloaded AS MATERIALIZED (
    SELECT file_id FROM covid.ingested_files WHERE dataset = {dataset} AND status NOT IN ('loaded', 'duplicate')
)
DELETE FROM {coverage} AS c USING reported AS r
WHERE {region_match_rc} AND c.file_id < r.file_id AND c.first_date >= r.first_date AND c.last_date <= r.last_date
  AND NOT EXISTS (SELECT FROM partial AS p WHERE {region_match_rp} AND p.file_id = r.file_id)
  AND NOT EXISTS (
      SELECT FROM (SELECT max(u.file_id) AS file_id FROM unloaded AS u WHERE u.file_id < c.file_id) AS e
      WHERE e.file_id IS NOT NULL AND NOT EXISTS (
          SELECT FROM {coverage} AS c2
          WHERE {region_match_cc2} AND c2.file_id > e.file_id AND c2.file_id < c.file_id
            AND c2.first_date <= c.first_date AND c2.last_date >= c.last_date));
INSERT INTO {coverage} ({region}, file_id, first_date, last_date)
SELECT {r_region}, r.file_id, r.first_date, r.last_date FROM reported AS r
WHERE NOT EXISTS (SELECT FROM partial AS p WHERE {region_match_rp} AND p.file_id = r.file_id);
"""

# For each change, the rows whose derived columns it reaches: from `from_date` to `end_date`, read from
# `seed_start` (the rows the windows need before it). A region with many changes (a new region, a file of
# mostly new rows) is recomputed from its first change on instead: one range, not a few lookups per change.
RANGES = """
CREATE INDEX ON changes ({region}, date);
CREATE TEMP TABLE ranges ON COMMIT DROP AS
SELECT {region}, from_date, seed_start, CASE WHEN bulk THEN 'infinity' ELSE {end_date} END AS end_date
FROM (
    SELECT {c_region}, c.date AS from_date,
           coalesce(least(before.dates[{seed_rows}]{reach_back}), '-infinity') AS seed_start,
           bulk, CASE WHEN bulk THEN 'infinity' ELSE {next_reported} END AS next_reported,
           coalesce(after.dates, '{{}}') AS after
    FROM (
        SELECT *, count(*) OVER by_region > {many} AS bulk, date = min(date) OVER by_region AS first
        FROM changes WINDOW by_region AS (PARTITION BY {region})
    ) AS c
    -- the rows the window functions need to see before the change (the earliest: `dates[{seed_rows}]`; for a
    -- count that may be empty, the difference of the row after it reaches back to the latest row where the
    -- count is not: reach_back), and the rows after it, read by one index lookup each
    LEFT JOIN LATERAL (
        SELECT array_agg(date ORDER BY date DESC) AS dates{before_reported} FROM (
            SELECT t.date{before_counts} FROM {table} AS t WHERE {region_match_tc} AND t.date < c.date
            ORDER BY t.date DESC LIMIT {seed_rows}
        ) AS t
    ) AS before ON true
    LEFT JOIN LATERAL (
        SELECT array_agg(date ORDER BY date) AS dates{after_reported} FROM (
            SELECT t.date{after_counts} FROM {table} AS t WHERE {region_match_tc} AND t.date > c.date
            ORDER BY t.date LIMIT {ahead}
        ) AS t
    ) AS after ON true{next_rows}
    WHERE NOT bulk OR first
) AS c;

-- Nearby changes of a region share an island: their windows are computed together. An island's number is
-- unique in the batch (its region's islands cover disjoint dates): the islands' rows are sorted and their
-- windows partitioned by it, an integer, not by the region's text.
CREATE TEMP TABLE islands ON COMMIT DROP AS
SELECT {region}, row_number() OVER () AS island, min(seed_start) AS seed_start, min(from_date) AS from_date,
       max(end_date) AS end_date
FROM (
    SELECT *, count(*) FILTER (WHERE starts) OVER (PARTITION BY {region} ORDER BY seed_start, from_date) AS nth
    FROM (
        SELECT *, coalesce(seed_start > max(end_date) OVER (PARTITION BY {region} ORDER BY seed_start, from_date
                                                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), true) AS starts
        FROM ranges
    ) AS marked
) AS numbered
GROUP BY {region}, nth;
ANALYZE islands;
"""

# The islands' rows, each key's latest (a change, or the table's row), with the derived columns recomputed;
# written where any value differs from the table's. A key is in one island at most: (island, date) is a key.
ISLAND_ROWS = sql.SQL("""
SELECT DISTINCT ON (island, date) *
FROM (
    SELECT {t_base}, t.file_id, s.island, false AS is_change{t_old} FROM {table} AS t
    JOIN islands AS s ON {region_match_ts} AND t.date BETWEEN s.seed_start AND s.end_date
    UNION ALL
    SELECT {c_base}, c.file_id, s.island, true{no_old} FROM changes AS c
    JOIN islands AS s ON {region_match_cs} AND c.date BETWEEN s.seed_start AND s.end_date
) AS rows_
ORDER BY island, date, file_id DESC
""")
WRITE = """
CREATE TEMP TABLE written ON COMMIT DROP AS
SELECT {w_columns}
FROM ({derived}) AS w
JOIN islands AS s USING (island)
WHERE w.date BETWEEN s.from_date AND s.end_date AND (w.is_change{derived_differs});
-- its size known to the planner: the rows it replaces are looked up by their key, not by a merge join that
-- reads the table's whole key index (95,169 rows out of 1.88M: 1.6 s against 0.7 s)
ANALYZE written;
SELECT count(*){decreases} FROM written;
"""
REPLACE = """
DELETE FROM {table} AS t USING written AS w WHERE {key_match_wt};
INSERT INTO {table} ({columns}) SELECT {columns} FROM written;
"""
# Changes in one region above which the region is recomputed from its first change (each change's range
# costs a few index lookups; a county's whole series is a few hundred rows).
MANY_CHANGES = 30
# Rows read after each change: enough for the next row that reports each count and the 6 after it, unless
# a count is empty on several rows in a row (then looked up).
AHEAD = 13


def coverage_ddl(dataset: Dataset) -> sql.Composed:
    """The coverage table, and its index for the lookups of a region's files (`COVERED`, `COVERAGE`)."""
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} ({columns}, file_id bigint NOT NULL, first_date date NOT NULL, "
        "last_date date NOT NULL); CREATE INDEX IF NOT EXISTS {index} ON {table} ({region}, file_id)"
    ).format(table=coverage_table(dataset), index=sql.Identifier(f"{coverage_name(dataset)}_region_file_id"),
             columns=sql.SQL(", ").join(sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in dataset.region),
             region=column_list(dataset.region))


def cover_as(cur, dataset: Dataset, file_id: int, duplicate_of: int) -> None:
    """A duplicate (the same bytes as the dataset's previous file, `duplicate_of`, loaded; not merged) still
    reported its rows: the date ranges of the regions it reported in full are its coverage, so that a file
    older than it in the ledger, merged later (a quarantined file run again), does not win the keys it
    repeated; and the versions it repeats are seen from its issue time if that is earlier (`history.repeat`).
    Read from its typed rows, before they are dropped; in the caller's transaction."""
    table = sql.Identifier("covid", dataset.table)
    lock(cur, dataset.table)
    cur.execute(sql.SQL("SELECT to_regclass({})").format(sql.Literal(table.as_string(cur))))
    if cur.fetchone()[0] is None:  # the file it repeats is not merged yet: nothing to cover
        return
    cur.execute(coverage_ddl(dataset))
    region = column_list(dataset.region)
    cur.execute(sql.SQL("""
        INSERT INTO {coverage} ({region}, file_id, first_date, last_date)
        SELECT {r_region}, %s, r.first_date, r.last_date
        FROM (SELECT {region}, min(date) AS first_date, max(date) AS last_date, count(*) AS keys
              FROM ({rows}) AS s GROUP BY {region}) AS r
        WHERE r.keys = (SELECT count(*) FROM {table} AS t
                        WHERE {region_match_rt} AND t.date BETWEEN r.first_date AND r.last_date)
    """).format(coverage=coverage_table(dataset), region=region, r_region=qualified("r", dataset.region),
                rows=staged_rows(dataset, file_id), table=table,
                region_match_rt=match("r", "t", dataset.region)), (file_id,))
    history.repeat(cur, dataset, file_id, duplicate_of)


@dataclass
class Merged:
    """What one merge did."""

    loaded: list[tuple[int, str, str, int]] = field(default_factory=list)
    """(file_id, key, partition_key, rows_loaded) of each file merged, now `loaded` in the ledger."""
    rows_in_files: int = 0
    rows_written: int = 0
    """Rows inserted or replaced in the clean table: the keys changed and the rows whose derived values they
    changed."""
    keys_changed: int = 0
    """Keys whose values the merge added or revised."""
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
    # sorts and hash joins of a full-history file in memory (the default 4MB spills them to disk; a hash
    # table no larger than a sort's memory), and no JIT: compiling these statements' expressions costs more
    # than it saves at these sizes
    cur.execute("SET LOCAL work_mem = '200MB'; SET LOCAL hash_mem_multiplier = 1; SET LOCAL jit = off")
    cur.execute(table_ddl(dataset))
    cur.execute(coverage_ddl(dataset))
    history.ddl(cur, dataset)
    incoming = INCOMING_ONE if len(staged) == 1 else INCOMING_MANY
    cur.execute(sql.SQL(incoming + REPORTED).format(
        key=column_list(dataset.key), region=column_list(dataset.region), staged=sql.SQL(" UNION ALL ").join(staged)))
    cur.execute("SELECT file_id, sum(keys)::bigint, min(first_date), max(last_date) FROM reported GROUP BY file_id")
    reported = {file_id: (keys, first, last) for file_id, keys, first, last in cur.fetchall()}
    first_date = min(first for _, first, _ in reported.values())
    last_date = max(last for _, _, last in reported.values())
    if dataset.partition_by_year:
        add_year_partitions(cur, dataset, range(first_date.year, last_date.year + 1))
    rows_in_files = sum(keys for keys, _, _ in reported.values())
    cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(table))
    first_load = cur.fetchone()[0]
    if first_load:
        counts, lost = _first_load(cur, dataset), {}
    else:
        counts, lost = _merge_changes(cur, dataset, file_ids, rows_in_files)
    rows_written, keys_changed, *decreases = counts
    # Beside the table, in its transaction: readers of the latest values read the clean table as before.
    compared = rows_in_files if len(file_ids) == 1 and not first_load else None
    if first_load and len(file_ids) == 1:
        # the file's rows are the table's now, typed and in key order within each year: the history reads
        # them there (no cast, and its key is built from rows nearly in its order: 3.76M rows, 18.6 s → 14.5 s)
        staged = [sql.SQL("SELECT {}, file_id FROM {}").format(column_list(base_columns(dataset)), table)]
    revisions = history.record(cur, dataset, file_ids, staged, compared, lost=any(lost.values()))
    won = {file_id: reported.get(file_id, (0,))[0] - lost.get(file_id, 0) for file_id in file_ids}
    loaded = ledger.mark_loaded(cur, won)
    merged = Merged(loaded, rows_in_files, rows_written, keys_changed, first_date, last_date,
                    dict(zip(dataset.new, decreases)), revisions)
    for file_id in file_ids:
        staging.drop(cur, file_id)  # with the view `incoming` of a single file
    # the next merge of the transaction (a replay's) makes its own
    temporary = ["reported", "region_ids", "changes", "partial", "ranges", "islands", "written"]
    temporary += ["incoming"] if len(file_ids) > 1 else []
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
        sql.SQL(", ").join(sql.Identifier("pg_temp", name) for name in temporary)))
    return merged


def _first_load(cur, dataset: Dataset) -> tuple[int, ...]:
    """Every incoming row into the empty table, its indexes built once after the rows; returns the rows
    written, the keys changed (the same) and the decreases of each count."""
    cur.execute(drop_indexes_ddl(dataset))
    columns = column_list([*base_columns(dataset), *derived_columns(dataset), "file_id"])
    region = column_list(dataset.region)
    cur.execute(sql.SQL(REGION_IDS).format(region=region))
    rows = sql.SQL('SELECT {}, file_id, "region id" FROM incoming JOIN region_ids USING ({})').format(
        column_list(base_columns(dataset)), region)
    derived = derived_select(dataset, rows, by=["region id"])
    cur.execute(sql.SQL(FIRST_LOAD).format(columns=columns, derived=derived,
                                           table=sql.Identifier("covid", dataset.table), decreases=_decreases(dataset)))
    rows_written, *decreases = cur.fetchone()
    cur.execute(build_indexes_ddl(dataset))
    # statistics now, for the next merge's plans (autovacuum would come later)
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier("covid", dataset.table)))
    return rows_written, rows_written, *decreases


def _merge_changes(cur, dataset: Dataset, file_ids: list[int], rows_in_files: int
                   ) -> tuple[tuple[int, ...], dict[int, int]]:
    """The batch's changes into a loaded table; returns the rows written, the keys changed and the decreases
    of each count, and, per file, its rows that a later file kept out."""
    table = sql.Identifier("covid", dataset.table)
    coverage = coverage_table(dataset)
    values = [c for c in base_columns(dataset) if c not in dataset.key]
    region = dataset.region
    # The coverage test costs a probe per incoming row: only made when a later file recorded one.
    cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE file_id > %s)").format(coverage), (min(file_ids),))
    covered = sql.SQL(COVERED).format(coverage=coverage, region_match_ic=match("i", "c", region)) \
        if cur.fetchone()[0] else None
    parts = dict(
        table=table, coverage=coverage, region=column_list(region),
        previous=sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.Identifier("t", c), history.previous(c)) for c in values),
        key_match_it=match("i", "t", dataset.key),
        i_values=qualified("i", values), t_values=qualified("t", values),
        not_covered=sql.SQL(" AND NOT {}").format(covered) if covered else sql.SQL(""),
        r_region=qualified("r", region), dataset=sql.Literal(dataset.name), region_match_cc2=match("c", "c2", region),
        region_match_rc=match("r", "c", region), region_match_rt=match("r", "t", region),
        region_match_ip=match("i", "p", region), region_match_rp=match("r", "p", region),
    )
    whole_table = _large_share(cur, dataset, rows_in_files)
    if whole_table:  # for this statement only (the statements after it look up a few rows each)
        cur.execute("SET LOCAL enable_mergejoin = off; SET LOCAL enable_nestloop = off")
    cur.execute(sql.SQL(CHANGES).format(**parts))
    if whole_table:
        cur.execute("SET LOCAL enable_mergejoin TO DEFAULT; SET LOCAL enable_nestloop TO DEFAULT")
    cur.execute("SELECT count(*) FROM changes")
    keys_changed = cur.fetchone()[0]
    partial = PARTIAL_ONE if len(file_ids) == 1 else PARTIAL_MANY
    cur.execute(sql.SQL(partial + REWRITE + COVERAGE).format(**parts))
    # each change's lookups are its own: a cache of their results never hits, and costs its misses
    cur.execute("SET LOCAL enable_memoize = off")
    cur.execute(_ranges(dataset))
    rows_written, *decreases = _write(cur, dataset)
    cur.execute("SET LOCAL enable_memoize TO DEFAULT")
    return (rows_written, keys_changed, *decreases), _lost(cur, dataset, file_ids, covered)


def _large_share(cur, dataset: Dataset, rows: int) -> bool:
    """Whether the batch's rows are at least a quarter of the table's (its statistics' estimate): a file that
    repeats its whole history. Its comparison with the table is then a hash join, which reads the table once:
    the planner would otherwise pick a merge join, which sorts every incoming row (by text keys) and reads the
    table through its index, at twice the time (1.88M rows onto 1.88M: 4.9 s against 2.3 s, or 1.3 s with
    the parallel workers PostgreSQL starts for it)."""
    # a partitioned table's rows are its partitions' (pg_partition_tree has no row for a plain table)
    cur.execute("SELECT coalesce((SELECT sum(greatest(c.reltuples, 0)) FROM pg_partition_tree(%(t)s) AS p "
                "JOIN pg_class AS c ON c.oid = p.relid WHERE p.isleaf), "
                "(SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = %(t)s::regclass))",
                {"t": sql.Identifier("covid", dataset.table).as_string(cur)})
    return rows * 4 >= cur.fetchone()[0]


def _ranges(dataset: Dataset) -> sql.Composed:
    table = sql.Identifier("covid", dataset.table)
    region = dataset.region
    seed_rows = 7 if has_windows(dataset) else 1
    m_tc = match("t", "c", region)

    def read(counts, order: str) -> dict[str, sql.Composed]:
        """What a lookup of rows before or after a change reads of each count, and whether each row has it
        (`has <count>`, in the lookup's order)."""
        return {"counts": sql.Composed(sql.SQL(", t.{}").format(sql.Identifier(c)) for c in counts),
                "reported": sql.Composed(sql.SQL(", array_agg({} IS NOT NULL ORDER BY date {}) AS {}").format(
                    sql.Identifier(c), sql.SQL(order), sql.Identifier(f"has {c}")) for c in counts)}

    nullable = [count for count in dataset.new if count in dataset.nullable]
    before, after = read(nullable, "DESC"), read(dataset.new, "ASC")
    seed = sql.SQL("before.dates[{}]").format(sql.Literal(seed_rows))
    reach_back = [  # the seed row itself when it has the count, else the latest earlier row that has it
        sql.SQL(", CASE WHEN before.{has}[{n}] THEN {seed} ELSE (SELECT max(t.date) FROM {table} AS t WHERE {m_tc} "
                "AND t.date <= {seed} AND t.{x} IS NOT NULL) END").format(
            has=sql.Identifier(f"has {count}"), n=sql.Literal(seed_rows), seed=seed, table=table, m_tc=m_tc,
            x=sql.Identifier(count))
        for count in nullable
    ]
    # The next row after the change where each count is reported, in the merged table: the table's next
    # such row (`t_<x>`: among the rows read after it, else looked up) unless a change comes first (`c_<x>`)
    # or changed that row to empty (then the region is recomputed to its end: rare, and a superset). The last
    # row whose difference the change reaches.
    next_rows, nexts = [], []
    for n, count in enumerate(dataset.new):
        x = sql.Identifier(count)
        in_table, in_changes = sql.Identifier(f"t_{n}"), sql.Identifier(f"c_{n}")
        next_rows.append(sql.SQL(
            "\n    LEFT JOIN LATERAL (SELECT coalesce(after.dates[array_position(after.{has}, true)], "
            "CASE WHEN cardinality(after.dates) = {ahead} THEN (SELECT t.date FROM {table} AS t WHERE {m_tc} "
            "AND t.date > c.date AND t.{x} IS NOT NULL ORDER BY t.date LIMIT 1) END) AS date) AS {t} ON true"
            "\n    LEFT JOIN LATERAL (SELECT c2.date FROM changes AS c2 WHERE {m_c2c} AND c2.date > c.date AND c2.{x} IS NOT NULL "
            "ORDER BY c2.date LIMIT 1) AS {c} ON true"
        ).format(has=sql.Identifier(f"has {count}"), ahead=sql.Literal(AHEAD), table=table, m_tc=m_tc,
                 m_c2c=match("c2", "c", region), x=x, t=in_table, c=in_changes))
        nexts.append(sql.SQL(
            "CASE WHEN {t}.date IS NULL OR {c}.date <= {t}.date THEN coalesce({c}.date, 'infinity') "
            "WHEN EXISTS (SELECT FROM changes AS c3 WHERE {m_c3c} AND c3.date = {t}.date AND c3.{x} IS NULL) "
            "THEN 'infinity' ELSE {t}.date END"
        ).format(t=in_table, c=in_changes, x=x, m_c3c=match("c3", "c", region)))
    next_reported = sql.SQL("greatest({})").format(sql.SQL(", ").join(nexts)) if nexts else sql.SQL("c.date")
    end = sql.SQL("next_reported")
    if dataset.rolling_7d:  # the 6th row after it: the last whose 7-row window holds it
        end = sql.SQL(
            "coalesce((SELECT CASE WHEN k + 6 <= cardinality(c.after) THEN c.after[k + 6] "
            "WHEN cardinality(c.after) = {ahead} THEN (SELECT t.date FROM {table} AS t WHERE {m_tc} "
            "AND t.date > c.next_reported ORDER BY t.date OFFSET 5 LIMIT 1) END "
            "FROM (SELECT coalesce(array_position(c.after, c.next_reported), "
            "(SELECT count(*)::int FROM unnest(c.after) AS d WHERE d <= c.next_reported)) AS k) AS upto), "
            "'infinity')").format(ahead=sql.Literal(AHEAD), table=table, m_tc=m_tc)
    if dataset.ratios_7d:  # the 6 days after it (so the day 7 days after the change, whose ratio checks it, too)
        end = sql.SQL("greatest({}, c.next_reported + 6)").format(end)
    return sql.SQL(RANGES).format(
        table=table, region=column_list(region), c_region=qualified("c", region),
        reach_back=sql.Composed(reach_back), next_reported=next_reported, next_rows=sql.Composed(next_rows),
        before_counts=before["counts"], before_reported=before["reported"],
        after_counts=after["counts"], after_reported=after["reported"],
        end_date=end, region_match_tc=m_tc, ahead=sql.Literal(AHEAD),
        seed_rows=sql.Literal(seed_rows), many=sql.Literal(MANY_CHANGES),
    )


def _write(cur, dataset: Dataset) -> tuple[int, ...]:
    """The islands' rows whose values differ from the table's, replaced; returns their count and the
    decreases of each count among them."""
    table = sql.Identifier("covid", dataset.table)
    base = base_columns(dataset)
    derived = derived_columns(dataset)
    all_columns = [*base, *derived, "file_id"]
    old = [sql.Identifier(f"old {c}") for c in derived]
    rows = ISLAND_ROWS.format(
        table=table,
        t_base=qualified("t", base), c_base=qualified("c", base),
        t_old=sql.Composed([sql.SQL(", {} AS {}").format(sql.Identifier("t", c), o) for c, o in zip(derived, old)]),
        no_old=sql.Composed([sql.SQL(", NULL AS {}").format(o) for o in old]),
        region_match_ts=match("t", "s", dataset.region), region_match_cs=match("c", "s", dataset.region),
    )
    differs = sql.SQL(" OR ({}) IS DISTINCT FROM ({})").format(
        qualified("w", derived), sql.SQL(", ").join(sql.SQL("w.{}").format(o) for o in old)) if derived else sql.SQL("")
    cur.execute(sql.SQL(WRITE).format(
        derived=derived_select(dataset, rows, by=["island"]),
        w_columns=qualified("w", all_columns), derived_differs=differs,
        decreases=_decreases(dataset),
    ))
    counts = cur.fetchone()
    cur.execute(sql.SQL(REPLACE).format(table=table, columns=column_list(all_columns),
                                        key_match_wt=match("w", "t", dataset.key)))
    return counts


def _lost(cur, dataset: Dataset, file_ids: list[int], covered: sql.Composable | None) -> dict[int, int]:
    """Per file, its rows a later file's row or coverage kept out (none when the batch is the latest)."""
    cur.execute("SELECT max(file_id) FROM covid.ingested_files WHERE dataset = %s AND status = 'loaded'",
                (dataset.name,))
    latest = cur.fetchone()[0]
    if covered is None and (latest is None or latest < min(file_ids)):
        return {}
    cur.execute(sql.SQL(
        "SELECT i.file_id, count(*) FROM incoming AS i JOIN {table} AS t ON {match} "
        "WHERE t.file_id > i.file_id OR {covered} GROUP BY i.file_id"
    ).format(table=sql.Identifier("covid", dataset.table), match=match("i", "t", dataset.key),
             covered=covered or sql.SQL("false")))
    return dict(cur.fetchall())


def _decreases(dataset: Dataset) -> sql.Composed:
    """`, count of rows whose cumulative count fell since the region's previous date` for each count."""
    return sql.Composed([
        sql.SQL(", count(*) FILTER (WHERE {} < 0)").format(sql.Identifier(new)) for new in dataset.new.values()
    ])
