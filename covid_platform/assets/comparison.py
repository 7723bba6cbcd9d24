"""`covid.source_comparison`: for each state and date, each cumulative measure (cases, deaths) as every loaded
source reports it, side by side, with their spread and a flag where they disagree by more than
COMPARISON_TOLERANCE of the largest.

It reads several datasets' clean tables (those declaring `measures`), joined by the canonical region
(`state_fips`), so it is one asset downstream of all of them: rebuilt after any of them loads. Its columns
follow the declarations (`<measure>_<dataset>` per source), so the table is made again when they change.
"""

import dagster as dg
from psycopg2 import sql

from covid_platform.assets.docs import OWNERS
from covid_platform.assets.policies import RETRY
from covid_platform.datasets import COMPARISON_TOLERANCE, MEASURES, Dataset
from covid_platform.engine.tables import column_list
from covid_platform.resources.warehouse import Warehouse

NAME = "source_comparison"
CHECK = "sources_agree"
LISTED = 10  # disagreements named in the check's description


def sources(datasets, measure: str) -> list[Dataset]:
    return [d for d in datasets if measure in d.measures]


def columns(datasets) -> list[tuple[str, str]]:
    """(name, type) of the table's columns, in order."""
    cols = [("state_fips", "text"), ("state_name", "text"), ("date", "date")]
    for measure in MEASURES:
        cols += [(f"{measure}_{d.name}", "bigint") for d in sources(datasets, measure)]
        cols += [(f"{measure}_sources", "integer"), (f"{measure}_low", "bigint"), (f"{measure}_high", "bigint"),
                 (f"{measure}_spread", "double precision"), (f"{measure}_disagree", "boolean")]
    return cols + [("last_file_id", "bigint")]


def _reported(datasets, present: set[str]) -> sql.Composed:
    """One row per (source, state, date) of the loaded tables: the source's value of each measure."""
    selects = []
    for d in datasets:
        if d.table not in present:
            continue
        values = [sql.SQL("{}::bigint AS {}").format(sql.Identifier(d.measures[m]) if m in d.measures else sql.SQL("NULL"),
                                                     sql.Identifier(f"m{i}")) for i, m in enumerate(MEASURES)]
        selects.append(sql.SQL("SELECT {name} AS source, state_fips, date, {values}, file_id FROM {table} "
                               "WHERE state_fips IS NOT NULL").format(
            name=sql.Literal(d.name), values=sql.SQL(", ").join(values), table=sql.Identifier("covid", d.table)))
    return sql.SQL(" UNION ALL ").join(selects)


def statement(datasets, present: set[str]) -> sql.Composed:
    """Fill the (emptied) table from the clean tables in `present` (the others: nothing loaded yet)."""
    compared = _compared_columns(datasets)
    per_source, per_measure, spread = [], [], []
    for i, measure in enumerate(MEASURES):
        m = sql.Identifier(f"m{i}")
        per_source += [sql.SQL("max({m}) FILTER (WHERE source = {s})").format(m=m, s=sql.Literal(d.name))
                       for d in sources(datasets, measure)]
        per_measure.append(sql.SQL("count({m})::int, min({m}), max({m})").format(m=m))
        n, low, high = (sql.Identifier(f"{measure}_{part}") for part in ("sources", "low", "high"))
        # the spread over the largest value, between two sources or more (0 when all are 0)
        share = sql.SQL("CASE WHEN {n} >= 2 THEN coalesce(({high} - {low})::double precision / nullif({high}, 0), 0) END"
                        ).format(n=n, low=low, high=high)
        spread.append(sql.SQL("{share}, coalesce({share} > {tolerance}, false)").format(
            share=share, tolerance=sql.Literal(COMPARISON_TOLERANCE)))
    return sql.SQL(
        "INSERT INTO {table} ({compared}, {judged}) SELECT {compared}, {spread} FROM ("
        " SELECT reported.state_fips, r.name, reported.date, {per_source}, {per_measure}, max(reported.file_id)"
        " FROM ({reported}) AS reported JOIN covid.regions AS r ON r.fips = reported.state_fips"
        " GROUP BY reported.state_fips, r.name, reported.date"
        ") AS compared ({compared})"
    ).format(
        table=sql.Identifier("covid", NAME),
        compared=column_list(compared),
        judged=column_list(f"{m}_{part}" for m in MEASURES for part in ("spread", "disagree")),
        spread=sql.SQL(", ").join(spread),
        per_source=sql.SQL(", ").join(per_source),
        per_measure=sql.SQL(", ").join(per_measure),
        reported=_reported(datasets, present),
    )


def _compared_columns(datasets) -> list[str]:
    """The inner SELECT's columns: state, date, every source's values, each measure's count, low and high."""
    names = ["state_fips", "state_name", "date"]
    for measure in MEASURES:
        names += [f"{measure}_{d.name}" for d in sources(datasets, measure)]
    for measure in MEASURES:
        names += [f"{measure}_sources", f"{measure}_low", f"{measure}_high"]
    return [*names, "last_file_id"]


def rebuild(cur, datasets) -> int:
    """Make the table (again, if the declarations changed its columns) and fill it; returns its rows."""
    cols = columns(datasets)
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"covid.{NAME}",))
    cur.execute("SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped", (f"covid.{NAME}",))
    (existing,) = cur.fetchone()
    table = sql.Identifier("covid", NAME)
    if existing != [name for name, _ in cols]:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
        cur.execute(sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (state_fips, date))").format(
            table, sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in cols)))
    cur.execute(sql.SQL("DELETE FROM {}").format(table))
    cur.execute("SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = 'covid' AND column_name = 'state_fips' AND table_name = ANY(%s)",
                ([d.table for d in datasets],))
    present = {name for (name,) in cur.fetchall()}
    if present:
        cur.execute(statement(datasets, present))
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
    return cur.fetchone()[0]


def disagreements(cur, datasets) -> tuple[int | None, list[str]]:
    """The latest load's file (the largest file_id behind any row) and the disagreements in its rows, as
    'New York 2020-12-05 cases: us_states 700,000, jhu_daily_us 690,000 (spread 1.4%)'."""
    table = sql.Identifier("covid", NAME)
    cur.execute(sql.SQL("SELECT max(last_file_id) FROM {}").format(table))
    (latest,) = cur.fetchone()
    found = []
    for measure in MEASURES:
        named = sources(datasets, measure)
        if not named:
            continue
        cur.execute(sql.SQL(
            "SELECT state_name, date, {spread}, {values} FROM {table} "
            "WHERE last_file_id = %s AND {disagree} ORDER BY {spread} DESC, state_name, date"
        ).format(spread=sql.Identifier(f"{measure}_spread"), disagree=sql.Identifier(f"{measure}_disagree"),
                 values=sql.SQL(", ").join(sql.Identifier(f"{measure}_{d.name}") for d in named), table=table),
            (latest,))
        for state, day, spread, *values in cur.fetchall():
            reported = ", ".join(f"{d.name} {v:,}" for d, v in zip(named, values) if v is not None)
            found.append(f"{state} {day} {measure}: {reported} (spread {spread:.1%})")
    return latest, found


def build_comparison_asset(datasets) -> dg.AssetsDefinition:
    compared = [d for d in datasets if d.measures]

    @dg.asset(
        name=NAME,
        deps=[d.table for d in compared],
        group_name="summaries",
        owners=OWNERS,
        kinds={"postgres"},
        retry_policy=RETRY,
        description=__doc__,
        check_specs=[dg.AssetCheckSpec(CHECK, asset=NAME, description=(
            f"The rows the latest load touched where sources disagree by more than {COMPARISON_TOLERANCE:.0%} "
            "(non-blocking: sources differ in what they count and when)."))],
    )
    def source_comparison(warehouse: Warehouse):
        with warehouse.connect() as conn, conn, conn.cursor() as cur:
            rows = rebuild(cur, compared)
            latest, found = disagreements(cur, compared)
            cur.execute("SELECT key FROM covid.ingested_files WHERE file_id = %s", (latest,))
            named = cur.fetchone()  # of any source: say which
        yield dg.MaterializeResult(metadata={"rows": dg.MetadataValue.int(rows)})
        yield dg.AssetCheckResult(
            check_name=CHECK,
            passed=not found,
            severity=dg.AssetCheckSeverity.WARN,
            description=(f"{len(found)} disagreement(s) in the rows of file {latest}"
                         f"{f' ({named[0]}, the newest file behind a row of any source)' if named else ''}: " + "; ".join(found[:LISTED])
                         + (f" and {len(found) - LISTED} more" if len(found) > LISTED else "")) if found else None,
            metadata={"disagreements": dg.MetadataValue.int(len(found)), "file_id": dg.MetadataValue.int(latest or 0)},
        )

    return source_comparison
