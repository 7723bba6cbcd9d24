"""Clean tables: every staged file of a dataset merged in, later files winning, derived columns recomputed."""

from dataclasses import dataclass

import dagster as dg
from psycopg2 import sql

from covid_platform.assets.policies import RETRY, freshness
from covid_platform.assets.raw import raw_asset_key
from covid_platform.datasets import Dataset
from covid_platform.lib import ledger
from covid_platform.lib.merge import (
    build_indexes_ddl, derived_columns, drop_indexes_ddl, merge_statement, staged_rows, table_ddl, year_partitions_ddl,
)
from covid_platform.lib.staging import staging_table
from covid_platform.resources.warehouse import Warehouse


def build_clean_asset(dataset: Dataset) -> dg.AssetsDefinition:
    region = ", ".join(dataset.region)
    derived = ", ".join(derived_columns(dataset)) or "none"

    revisions = (
        [dg.AssetCheckSpec("cumulative_revisions", asset=dataset.table, description=(
            "Cumulative counts lower than on the region's previous date, in the rows a load wrote "
            "(revisions: kept as reported, the difference negative)."))]
        if dataset.new else []
    )

    @dg.asset(
        name=dataset.table,
        check_specs=revisions,
        deps=[raw_asset_key(dataset)],
        group_name="clean",
        kinds={"postgres"},
        output_required=False,
        freshness_policy=freshness(dataset),
        retry_policy=RETRY,
        description=f"`covid.{dataset.table}`: one row per ({region}, date), the latest value any file "
        f"reported. Derived: {derived}. `new_x` = x minus x on the region's previous date present (x on "
        "its first date, null when x or the previous x is null; negative revisions kept); `*_7d` = mean "
        "over the row and the 6 rows before it for the region; 7-day ratios sum both sides over the 7 "
        "calendar days ending on the row's date.",
    )
    def clean(context: dg.AssetExecutionContext, warehouse: Warehouse):
        with warehouse.connect() as conn, ledger.transaction(conn) as cur:
            merged = _merge_pending(cur, dataset)
        if merged is None:
            # Another run's merge took this run's file along (runs overlap), or the file was a duplicate.
            context.log.info(f"No staged {dataset.name} file to merge: {dataset.table} is unchanged")
        else:
            yield dg.MaterializeResult(metadata=merged.metadata)
        if revisions:
            decreases = merged.decreases if merged else dict.fromkeys(dataset.new, 0)
            revised = {count: n for count, n in decreases.items() if n}
            yield dg.AssetCheckResult(
                check_name="cumulative_revisions",
                passed=not revised,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(f"{n} decrease(s) of cumulative '{c}' (kept as reported)" for c, n in revised.items())
                or (None if merged else "no rows written by this run"),
                metadata={f"decreases_{count}": n for count, n in decreases.items()},
            )

    return clean


@dataclass
class Merged:
    metadata: dict
    decreases: dict[str, int]


def _merge_pending(cur, dataset: Dataset) -> Merged | None:
    """Merge every staged file of the dataset in one transaction (the caller's); None when there is none."""
    # One merge per table at a time; a second run waits, then merges what is still pending.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"covid.{dataset.table}",))
    cur.execute(
        """
        SELECT file_id FROM covid.ingested_files
        WHERE dataset = %s AND status = 'staged'
        ORDER BY file_id
        FOR UPDATE
        """,
        (dataset.name,),
    )
    pending = [file_id for (file_id,) in cur.fetchall()]
    if not pending:
        return None
    staged = [staged_rows(dataset, file_id) for file_id in pending]
    cur.execute(table_ddl(dataset))
    if dataset.partition_by_year:
        cur.execute(sql.SQL("SELECT min(date), max(date) FROM ({}) AS s").format(sql.SQL(" UNION ALL ").join(staged)))
        first, last = cur.fetchone()
        for ddl in year_partitions_ddl(dataset, range(first.year, last.year + 1)):
            cur.execute(ddl)
    cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(sql.Identifier("covid", dataset.table)))
    first_load = cur.fetchone()[0]
    if first_load:
        cur.execute(drop_indexes_ddl(dataset))
    cur.execute(merge_statement(dataset, staged))
    rows_written = cur.rowcount
    if first_load:
        cur.execute(build_indexes_ddl(dataset))
    cur.execute(
        """
        UPDATE covid.ingested_files AS f
        SET status = 'loaded', processed_at = now(), rows_loaded = coalesce(won.rows, 0)
        FROM (SELECT unnest(%s::bigint[]) AS file_id) AS p
        LEFT JOIN (SELECT file_id, count(*) AS rows FROM recomputed GROUP BY file_id) AS won USING (file_id)
        WHERE f.file_id = p.file_id
        """,
        (pending,),
    )
    cur.execute("SELECT count(*), min(date), max(date) FROM incoming")
    incoming, first_date, last_date = cur.fetchone()
    decreases = _decreases(cur, dataset)
    for file_id in pending:
        cur.execute(sql.SQL("DROP TABLE {} CASCADE").format(staging_table(file_id)))  # and the view on it
    return Merged(
        metadata={
            "files_merged": dg.MetadataValue.int(len(pending)),
            "rows_in_files": dg.MetadataValue.int(incoming),
            "rows_written": dg.MetadataValue.int(rows_written),
            "first_date": str(first_date),
            "last_date": str(last_date),
        },
        decreases=decreases,
    )


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
