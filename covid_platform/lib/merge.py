"""Merge staged files into a dataset's clean table and recompute the derived columns they affect.

For each region a file touches, only rows from its earliest changed date onward are rewritten; the rows
just before it (1 for the differences, 7 with 7-row or 7-day windows) are read to seed the window functions.
"""

from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.lib.staging import staging_table

# Several files at once: the latest file's row wins each key. One file's keys are already unique (the
# gates reject conflicting keys and the typed table holds one row per key), so it is read in place.
INCOMING_MANY = """
CREATE TEMP TABLE incoming ON COMMIT DROP AS
SELECT DISTINCT ON ({key}) *
FROM ({staged}) AS staged
ORDER BY {key}, file_id DESC;
"""
INCOMING_ONE = "CREATE TEMP VIEW incoming AS {staged};"

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
FROM (
    SELECT *, {windowed}
    FROM (
        SELECT *, {differences}
        FROM (
            -- Each key's row from the latest file in the ledger, whether already in the table or incoming:
            -- runs merge in whatever order they finish, the result is that of loading in ledger order.
            SELECT DISTINCT ON ({key}) *
            FROM (
                SELECT {t_base}, t.file_id
                FROM {table} AS t JOIN changed AS c ON {region_match_c} AND t.date >= c.window_start
                UNION ALL
                SELECT {base}, file_id FROM incoming
            ) AS candidates
            ORDER BY {key}, file_id DESC
        ) AS merged
        WINDOW by_region AS (PARTITION BY {region} ORDER BY date)
    ) AS with_differences
    WINDOW last_7_rows AS (PARTITION BY {region} ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
           last_7_days AS (PARTITION BY {region} ORDER BY date RANGE BETWEEN interval '6 days' PRECEDING AND CURRENT ROW)
) AS windowed
JOIN changed USING ({region})
WHERE date >= changed.from_date;

-- Replace each touched region's rows from its earliest changed date on. A plain INSERT after the DELETE
-- costs half of INSERT … ON CONFLICT, whose speculative insertion dominates a large load.
DELETE FROM {table} AS t USING changed AS c WHERE {region_match_c} AND t.date >= c.from_date;
INSERT INTO {table} ({columns}) SELECT {columns} FROM recomputed;
"""


def _ids(names) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _match(left: str, right: str, names) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, n), sql.Identifier(right, n)) for n in names
    )


def base_columns(dataset: Dataset) -> list[str]:
    return list(dataset.stored_columns)


def derived_columns(dataset: Dataset) -> list[str]:
    return [*dataset.new.values(), *dataset.rolling_columns, *dataset.ratios_7d]


def table_ddl(dataset: Dataset) -> sql.Composed:
    """The clean table and its indexes; a count, and what is derived from it, is NOT NULL unless the dataset
    declares it may be empty. A table created before a column was declared nullable loses the constraint
    (a catalog change, no rewrite)."""
    table = sql.Identifier("covid", dataset.table)
    numeric = [(c, "bigint") for c in (*dataset.counts, *dataset.values, *dataset.new.values())]
    numeric += [(c, "double precision") for c in (*dataset.rolling_columns, *dataset.ratios_7d)]
    columns = [sql.SQL("{} text NOT NULL").format(sql.Identifier(c)) for c in dataset.region]
    columns += [sql.SQL("{} text").format(sql.Identifier(c)) for c in dataset.attributes]
    columns.append(sql.SQL("date date NOT NULL"))
    columns += [
        sql.SQL("{} {}{}").format(sql.Identifier(c), sql.SQL(kind), sql.SQL("" if dataset.may_be_empty(c) else " NOT NULL"))
        for c, kind in numeric
    ]
    columns.append(sql.SQL("file_id bigint NOT NULL"))  # the ledger row of the file the values came from
    create = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, CONSTRAINT {} PRIMARY KEY ({})){}").format(
        table,
        sql.SQL(", ").join(columns),
        _primary_key(dataset),
        _ids(dataset.key),
        sql.SQL(" PARTITION BY RANGE (date)" if dataset.partition_by_year else ""),
    )
    relax = [
        sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(table, sql.Identifier(c))
        for c, _ in numeric if dataset.may_be_empty(c)
    ]
    return sql.SQL("; ").join([create, *relax, *_secondary_indexes(dataset)])


def _primary_key(dataset: Dataset) -> sql.Identifier:
    return sql.Identifier(f"{dataset.table}_pkey")


def _secondary_indexes(dataset: Dataset) -> list[sql.Composed]:
    return [
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier("_".join((dataset.table, *index))),
            sql.Identifier("covid", dataset.table),
            _ids(index),
        )
        for index in dataset.indexes
    ]


# A first load of millions of rows into an empty table: its indexes are dropped and built once the rows are
# in (in the same transaction), one sort each instead of millions of insertions at random places of an
# index larger than PostgreSQL's buffers. Readers of the (empty) table wait for the commit.
def drop_indexes_ddl(dataset: Dataset) -> sql.Composed:
    table = sql.Identifier("covid", dataset.table)
    drops = [sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, _primary_key(dataset))]
    drops += [sql.SQL("DROP INDEX {}").format(sql.Identifier("covid", "_".join((dataset.table, *index))))
              for index in dataset.indexes]
    return sql.SQL("; ").join(drops)


def build_indexes_ddl(dataset: Dataset) -> sql.Composed:
    return sql.SQL("; ").join([
        sql.SQL("SET LOCAL maintenance_work_mem = '256MB'"),
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            sql.Identifier("covid", dataset.table), _primary_key(dataset), _ids(dataset.key)
        ),
        *_secondary_indexes(dataset),
    ])


def year_partitions_ddl(dataset: Dataset, years: range) -> list[sql.Composed]:
    """A partition of the clean table for each year (created as the years arrive)."""
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier("covid", f"{dataset.table}_{year}"),
            sql.Identifier("covid", dataset.table),
            sql.Literal(f"{year}-01-01"),
            sql.Literal(f"{year + 1}-01-01"),
        )
        for year in years
    ]


def staged_rows(dataset: Dataset, file_id: int) -> sql.Composed:
    """The typed rows of one gated file (lib/gates.py: type_rows)."""
    columns = [sql.Identifier(c) for c in dataset.stored_columns]
    columns.append(sql.SQL("{}::bigint AS file_id").format(sql.Literal(file_id)))
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(columns), staging_table(file_id))


def _difference(dataset: Dataset, count: str, new: str) -> sql.Composed:
    """x minus x on the region's latest earlier date where x is not empty; x itself when there is none."""
    c, n = sql.Identifier(count), sql.Identifier(new)
    if count not in dataset.nullable:
        # Every row has x: the previous row's; on a region's first date (lag(date) is null), x itself.
        return sql.SQL("CASE WHEN lag(date) OVER by_region IS NULL THEN {c} ELSE {c} - lag({c}) OVER by_region END "
                       "AS {n}").format(c=c, n=n)
    # The latest non-empty x before the row, in the same sort as by_region (PostgreSQL has no IGNORE NULLS):
    # the largest (day number, x) pair over the rows before it, empty x left out; [2] is that x.
    return sql.SQL(
        "{c} - coalesce((max(CASE WHEN {c} IS NOT NULL THEN ARRAY[date - DATE '2000-01-01', {c}] END) OVER "
        "(by_region ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))[2], 0) AS {n}"
    ).format(c=c, n=n)


def merge_statement(dataset: Dataset, staged: list[sql.Composed]) -> sql.Composed:
    """Merge the staged files' rows; the last statement's row count is the rows written."""
    differences = [_difference(dataset, count, new) for count, new in dataset.new.items()]
    windowed = [
        sql.SQL("avg({n}) OVER last_7_rows AS {a}").format(n=sql.Identifier(n), a=sql.Identifier(f"{n}_7d"))
        for n in dataset.rolling_7d
    ]
    windowed += [
        sql.SQL("(sum({n}) OVER last_7_days / nullif(sum({d}) OVER last_7_days, 0))::double precision AS {r}")
        .format(n=sql.Identifier(num), d=sql.Identifier(den), r=sql.Identifier(ratio))
        for ratio, (num, den) in dataset.ratios_7d.items()
    ]
    derived = derived_columns(dataset)
    base = base_columns(dataset)
    reach_back = [
        sql.SQL(", (SELECT max(t.date) FROM {table} AS t WHERE {match} AND t.date <= seed.date AND {c} IS NOT NULL)")
        .format(table=sql.Identifier("covid", dataset.table), match=_match("t", "f", dataset.region),
                c=sql.Identifier("t", count))
        for count in dataset.new if count in dataset.nullable
    ]
    incoming = INCOMING_ONE if len(staged) == 1 else INCOMING_MANY
    return sql.SQL(incoming + MERGE).format(
        key=_ids(dataset.key),
        region=_ids(dataset.region),
        f_region=sql.SQL(", ").join(sql.Identifier("f", n) for n in dataset.region),
        base=_ids(base),
        t_base=sql.SQL(", ").join(sql.Identifier("t", n) for n in base),
        columns=_ids([*base, *derived, "file_id"]),
        region_match_f=_match("t", "f", dataset.region),
        region_match_c=_match("t", "c", dataset.region),
        seed_rows=sql.Literal(7 if windowed else 1),
        reach_back=sql.Composed(reach_back),
        table=sql.Identifier("covid", dataset.table),
        staged=sql.SQL(" UNION ALL ").join(staged),
        differences=sql.SQL(", ").join(differences) if differences else sql.SQL("NULL AS no_difference"),
        windowed=sql.SQL(", ").join(windowed or [sql.SQL("NULL AS no_window")]),
    )
