"""Summary tables, each rebuilt from a dataset's clean table by one SQL file in `covid_platform/sql/`."""

import re

import dagster as dg

from covid_platform.assets.docs import OWNERS, summary_schema, table_metadata
from covid_platform.assets.policies import DATASET_TAG, RETRY, freshness
from covid_platform.datasets import Dataset
from covid_platform.engine.tables import summary_description, summary_sql
from covid_platform.resources.warehouse import Warehouse


def build_summary_asset(dataset: Dataset, name: str, upstream: list[str]) -> dg.AssetsDefinition:
    """`name`'s table rebuilt from `upstream` (the clean table, or other summaries of the dataset)."""
    statement = summary_sql(name)

    @dg.asset(
        name=name,
        deps=upstream,
        group_name="summaries",
        kinds={"postgres"},
        owners=OWNERS,
        tags={DATASET_TAG: dataset.name},
        freshness_policy=freshness(dataset),
        retry_policy=RETRY,
        description=summary_description(name),
    )
    def summary(warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.connect() as conn, conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"covid.{name}",))
            cur.execute(statement)
            metadata = {**table_metadata(cur, name), "dagster/column_schema": summary_schema(cur, name)}
        return dg.MaterializeResult(metadata=metadata)

    return summary


def build_summary_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    """A dataset's summaries; each depends on the dataset's tables its SQL reads (lineage from the SQL)."""
    return [build_summary_asset(dataset, name, _reads(dataset, name)) for name in dataset.summaries]


def _reads(dataset: Dataset, name: str) -> list[str]:
    statement = summary_sql(name)
    tables = (dataset.table, *dataset.summaries)
    return [t for t in tables if t != name and re.search(rf"\bcovid\.{t}\b", statement)]
