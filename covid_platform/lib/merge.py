"""Merge staged files into a dataset's clean table and recompute the derived columns they affect.

For each region a file touches, only rows from its earliest changed date onward are rewritten; the rows
just before it (1 for `new_x`, 7 with the 7-row average) are read to seed the window functions.
"""

from psycopg2 import sql

from covid_platform.datasets import Dataset
from covid_platform.lib.staging import staging_table

MERGE = """
CREATE TEMP TABLE incoming ON COMMIT DROP AS
SELECT DISTINCT ON ({key}) *
FROM ({staged}) AS staged
ORDER BY {key}, file_id DESC;   -- a later file wins

CREATE TEMP TABLE changed ON COMMIT DROP AS
SELECT {f_region}, f.from_date, coalesce(seed.date, '-infinity') AS window_start
FROM (SELECT {region}, min(date) AS from_date FROM incoming GROUP BY {region}) AS f
LEFT JOIN LATERAL (
    -- the earliest unchanged row the window functions need to see
    SELECT t.date FROM {table} AS t
    WHERE {region_match_f} AND t.date < f.from_date
    ORDER BY t.date DESC OFFSET {seed_rows} - 1 LIMIT 1
) AS seed ON true;

INSERT INTO {table} AS t ({region}, {attributes}, date, {counts}, {derived}, file_id)
SELECT {region}, {attributes}, date, {counts}, {derived}, file_id
FROM (
    SELECT *, {averages}
    FROM (
        SELECT *, {differences}
        FROM (
            SELECT {t_region}, {t_attributes}, t.date, {t_counts}, t.file_id
            FROM {table} AS t JOIN changed AS c ON {region_match_c} AND t.date >= c.window_start
            WHERE NOT EXISTS (
                SELECT 1 FROM incoming AS i WHERE {region_match_i} AND i.date = t.date)
            UNION ALL
            SELECT {region}, {attributes}, date, {counts}, file_id FROM incoming
        ) AS merged
        WINDOW by_region AS (PARTITION BY {region} ORDER BY date)
    ) AS with_differences
    WINDOW last_7_rows AS (PARTITION BY {region} ORDER BY date ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)
) AS recomputed
JOIN changed USING ({region})
WHERE date >= changed.from_date
ON CONFLICT ({key}) DO UPDATE SET {updates};
"""


def _ids(names) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _prefixed(alias: str, names) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(alias, n) for n in names)


def _match(left: str, right: str, names) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, n), sql.Identifier(right, n)) for n in names
    )


def derived_columns(dataset: Dataset) -> list[str]:
    columns = [f"new_{c}" for c in dataset.counts]
    if dataset.rolling_7d:
        columns += [f"new_{c}_7d" for c in dataset.counts]
    return columns


def staged_rows(dataset: Dataset, file_id: int, positions: dict[str, int]) -> sql.Composed:
    """Typed rows of one staged file (the gates have already proven every cast safe)."""

    def value(column: str) -> sql.Composed:
        return sql.SQL("btrim({})").format(sql.Identifier(f"c{positions[column]}"))

    columns = [sql.SQL("{} AS {}").format(value(c), sql.Identifier(c)) for c in dataset.region]
    columns += [sql.SQL("nullif({}, '') AS {}").format(value(c), sql.Identifier(c)) for c in dataset.attributes]
    columns.append(sql.SQL("{}::date AS date").format(value("date")))
    columns += [sql.SQL("{}::bigint AS {}").format(value(c), sql.Identifier(c)) for c in dataset.counts]
    columns.append(sql.SQL("{}::bigint AS file_id").format(sql.Literal(file_id)))
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(columns), staging_table(file_id))


def merge_statement(dataset: Dataset, staged: list[sql.Composed]) -> sql.Composed:
    counts = dataset.counts
    differences = [
        sql.SQL("{c} - coalesce(lag({c}) OVER by_region, 0) AS {n}").format(
            c=sql.Identifier(c), n=sql.Identifier(f"new_{c}")
        )
        for c in counts
    ]
    if dataset.rolling_7d:
        averages = [
            sql.SQL("avg({n}) OVER last_7_rows AS {a}").format(
                n=sql.Identifier(f"new_{c}"), a=sql.Identifier(f"new_{c}_7d")
            )
            for c in counts
        ]
    else:
        averages = [sql.SQL("NULL AS no_average")]
    derived = derived_columns(dataset)
    updates = [
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in (*dataset.attributes, *counts, *derived, "file_id")
    ]
    return sql.SQL(MERGE).format(
        key=_ids(dataset.key),
        region=_ids(dataset.region),
        attributes=_ids(dataset.attributes),
        counts=_ids(counts),
        derived=_ids(derived),
        t_region=_prefixed("t", dataset.region),
        t_attributes=_prefixed("t", dataset.attributes),
        t_counts=_prefixed("t", counts),
        f_region=_prefixed("f", dataset.region),
        region_match_f=_match("t", "f", dataset.region),
        region_match_c=_match("t", "c", dataset.region),
        region_match_i=_match("i", "t", dataset.region),
        seed_rows=sql.Literal(7 if dataset.rolling_7d else 1),
        table=sql.Identifier("covid", dataset.table),
        staged=sql.SQL(" UNION ALL ").join(staged),
        differences=sql.SQL(", ").join(differences),
        averages=sql.SQL(", ").join(averages),
        updates=sql.SQL(", ").join(updates),
    )
