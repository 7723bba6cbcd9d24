"""Summary tables, each rebuilt from a dataset's clean table by one SQL file in `covid_platform/sql/`."""

from importlib import resources

import dagster as dg

from covid_platform.assets.policies import RETRY, freshness
from covid_platform.datasets import Dataset
from covid_platform.resources.warehouse import Warehouse


def _sql(name: str) -> str:
    return resources.files("covid_platform.sql").joinpath(f"{name}.sql").read_text()


def build_summary_asset(dataset: Dataset, name: str, upstream: str) -> dg.AssetsDefinition:
    """`name`'s table rebuilt from `upstream` (the clean table, or an earlier summary of the dataset)."""
    statement = _sql(name)
    description = "\n".join(
        line.removeprefix("-- ") for line in statement.splitlines() if line.startswith("--")
    )

    @dg.asset(
        name=name,
        deps=[upstream],
        group_name="summaries",
        kinds={"postgres"},
        freshness_policy=freshness(dataset),
        retry_policy=RETRY,
        description=description,
    )
    def summary(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.connect() as conn, conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"covid.{name}",))
            cur.execute(statement)
            cur.execute(f"SELECT count(*) FROM covid.{name}")  # name: a validated declaration, not input
            rows = cur.fetchone()[0]
        return dg.MaterializeResult(metadata={"rows": dg.MetadataValue.int(rows)})

    return summary


def build_summary_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    """A dataset's summaries in order: each one reads the clean table or the summary declared before it."""
    upstream = [dataset.table, *dataset.summaries]
    return [build_summary_asset(dataset, name, upstream[i]) for i, name in enumerate(dataset.summaries)]
