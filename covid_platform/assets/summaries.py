"""Summary aggregates built from the clean tables."""

from importlib import resources

import dagster as dg

from covid_platform.assets.policies import RETRY, freshness
from covid_platform.datasets import US_STATES
from covid_platform.resources.warehouse import Warehouse


@dg.asset(
    deps=[US_STATES.table],
    group_name="summaries",
    kinds={"postgres"},
    freshness_policy=freshness(US_STATES),
    retry_policy=RETRY,
)
def national_daily(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """`covid.national_daily`: one row per date, `cases`/`deaths` summed over the states present that date;
    `new_x` and `new_x_7d` defined as in `state_daily`, over the national series."""
    statement = resources.files("covid_platform.sql").joinpath("national_daily.sql").read_text()
    with warehouse.connect() as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('covid.national_daily'))")
        cur.execute(statement)
        cur.execute("SELECT count(*), max(date) FROM covid.national_daily")
        dates, latest = cur.fetchone()
    return dg.MaterializeResult(
        metadata={"dates": dg.MetadataValue.int(dates), "latest_date": str(latest)}
    )
